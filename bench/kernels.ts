// `npm run bench -- kernels`: the kernel shapes SSD-1B really runs, enumerated
// from its UNet config (bench/configs/ssd1b-unet.json), timed on this adapter,
// optionally side by side with TensorFlow.js's WebGPU backend on the same
// adapter in the same process (--vs tfjs) and with numpy/OpenBLAS on the same
// CPU cores (--vs numpy). FLOPs and bytes are what the ops declare (OpCost).

import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { getEngine, type Engine } from "../engine/engine.ts";
import { SsdError } from "../engine/errors.ts";
import { gpuInstance, runtime } from "../engine/device.ts";
import type { Tensor } from "../engine/tensor.ts";
import * as ops from "../engine/ops/index.ts";
import { Profiler } from "../engine/profiler.ts";
import { ROOT_DIR, median, randomData, fmtMs, adapterLine, type BenchRow } from "./common.ts";
import { checkCase, checkLine, type HostInput } from "./check.ts";

export interface KernelCase {
  name: string;
  kind: "matmul" | "conv" | "attention" | "group_norm" | "layer_norm" | "copy";
  /** shape parameters, also handed to the tfjs and numpy peers */
  p: Record<string, number>;
}

/** Enumerates the distinct kernel shapes of one UNet step from the config. */
export function enumerateCases(cfg: any, size: number, short = false): KernelCase[] {
  const L = size / 8;
  const ch: number[] = cfg.block_out_channels;
  const heads: number[] = Array.isArray(cfg.attention_head_dim) ? cfg.attention_head_dim : ch.map(() => cfg.attention_head_dim);
  const seen = new Set<string>();
  const out: KernelCase[] = [];
  const add = (c: KernelCase) => {
    const key = c.kind + JSON.stringify(c.p);
    if (!seen.has(key)) { seen.add(key); out.push(c); }
  };
  ch.forEach((c, i) => {
    const r = L >> i;
    add({ name: `conv3x3 ${c}->${c} @${r}²`, kind: "conv", p: { n: 1, cin: c, cout: c, h: r, w: r, k: 3 } });
    add({ name: `group_norm 32g ${c}x${r}²`, kind: "group_norm", p: { n: 1, c, h: r, w: r, groups: cfg.norm_num_groups ?? 32 } });
    if (cfg.down_block_types[i].startsWith("CrossAttn")) {
      const t = r * r, hd = heads[i], d = c / hd;
      add({ name: `self-attn ${t}x${hd}x${d}`, kind: "attention", p: { b: 1, nq: t, nk: t, heads: hd, d } });
      add({ name: `cross-attn ${t}x${hd}x${d} ->77`, kind: "attention", p: { b: 1, nq: t, nk: 77, heads: hd, d } });
      add({ name: `layer_norm ${t}x${c}`, kind: "layer_norm", p: { rows: t, d: c } });
      add({ name: `linear ${t}x${c}->${c}`, kind: "matmul", p: { m: t, k: c, n: c } });
      add({ name: `linear GEGLU ${t}x${c}->${8 * c}`, kind: "matmul", p: { m: t, k: c, n: 8 * c } });
      add({ name: `linear ff-out ${t}x${4 * c}->${c}`, kind: "matmul", p: { m: t, k: 4 * c, n: c } });
    }
  });
  // up blocks: skip-concat 3x3 convs and 1x1 shortcuts (diffusers' channel bookkeeping)
  const rev = [...ch].reverse();
  let prev = rev[0];
  rev.forEach((c, i) => {
    const input = rev[Math.min(i + 1, rev.length - 1)];
    const r = L >> (ch.length - 1 - i);
    for (let k = 0; k <= cfg.layers_per_block; k++) {
      const skip = k === cfg.layers_per_block ? input : c;
      const cin = (k === 0 ? prev : c) + skip;
      add({ name: `conv3x3 skip ${cin}->${c} @${r}²`, kind: "conv", p: { n: 1, cin, cout: c, h: r, w: r, k: 3 } });
      add({ name: `conv1x1 ${cin}->${c} @${r}²`, kind: "conv", p: { n: 1, cin, cout: c, h: r, w: r, k: 1 } });
    }
    prev = c;
  });
  // The adapter's copy bandwidth, on the largest activation group_norm sees:
  // the yardstick for the memory-bound rows.
  const gn = out.filter((c) => c.kind === "group_norm").sort((a, b) => b.p.c * b.p.h * b.p.w - a.p.c * a.p.h * a.p.w)[0];
  if (gn) {
    const n = gn.p.c * gn.p.h * gn.p.w, mib = ((n * 4) / 2 ** 20).toFixed(1);
    add({ name: `copy ${mib} MiB`, kind: "copy", p: { n } });
    add({ name: `copy ${mib} MiB (shader)`, kind: "copy", p: { n, shader: 1 } });
  }
  if (short) {
    // CI's short mode: one small row per kernel family.
    const kinds = new Set<string>();
    return out.filter((c) => !kinds.has(c.kind) && (kinds.add(c.kind), true));
  }
  // The reference shape for "percent of the adapter's peak" (issue: 4096×1280×1280).
  add({ name: `matmul peak 4096x1280x1280`, kind: "matmul", p: { m: 4096, k: 1280, n: 1280 } });
  return out;
}

function costOf(c: KernelCase): { flops: number; bytes: number } {
  const p = c.p;
  switch (c.kind) {
    case "matmul": return { flops: 2 * p.m * p.n * p.k, bytes: 4 * (p.m * p.k + p.n * p.k + p.m * p.n) };
    case "conv": return { flops: 2 * p.n * p.cout * p.h * p.w * p.cin * p.k * p.k, bytes: 4 * (p.n * p.cin * p.h * p.w + p.cout * p.cin * p.k * p.k + p.n * p.cout * p.h * p.w) };
    case "attention": return { flops: 4 * p.b * p.heads * p.nq * p.nk * p.d, bytes: 4 * p.b * p.heads * p.d * (2 * p.nq + 2 * p.nk) };
    case "group_norm": return { flops: 8 * p.n * p.c * p.h * p.w, bytes: 8 * p.n * p.c * p.h * p.w };
    case "copy": return { flops: 0, bytes: 8 * p.n };
    case "layer_norm": return { flops: 8 * p.rows * p.d, bytes: 8 * p.rows * p.d };
  }
}

/**
 * Builds the inputs once and returns a function that encodes the op, and the
 * inputs' host data (in upload order) for the reference check.
 */
export function prepareOurs(e: Engine, c: KernelCase, dtype: "f32" | "f16" | "f16w"): { run: () => Tensor; inputs: Tensor[]; host: HostInput[] } {
  const host: HostInput[] = [];
  // f16w: weights (the second operand of matmul and conv) f16, activations f32
  const up = (n: number, shape: number[], seed: number) => {
    const weight = (c.kind === "matmul" || c.kind === "conv") && (seed === 2 || seed === 4);
    const half = dtype === "f16" || (dtype === "f16w" && weight);
    const data = randomData(n, seed);
    host.push({ data, half });
    // f16 straight from the host (packed two per u32 where the device has no shader-f16)
    return e.upload(data, shape, half ? "f16" : "f32");
  };
  return { ...prepareOp(e, c, up), host };
}

function prepareOp(e: Engine, c: KernelCase, up: (n: number, shape: number[], seed: number) => Tensor): { run: () => Tensor; inputs: Tensor[] } {
  const p = c.p;
  switch (c.kind) {
    case "matmul": {
      const x = up(p.m * p.k, [p.m, p.k], 1), w = up(p.n * p.k, [p.n, p.k], 2);
      return { inputs: [x, w], run: () => ops.linear(x, w) };
    }
    case "conv": {
      const x = up(p.n * p.cin * p.h * p.w, [p.n, p.cin, p.h, p.w], 3), w = up(p.cout * p.cin * p.k * p.k, [p.cout, p.cin, p.k, p.k], 4);
      return { inputs: [x, w], run: () => ops.conv2d(x, w, { padding: (p.k - 1) / 2 }) };
    }
    case "attention": {
      const q = up(p.b * p.nq * p.heads * p.d, [p.b, p.nq, p.heads * p.d], 5);
      const k = up(p.b * p.nk * p.heads * p.d, [p.b, p.nk, p.heads * p.d], 6);
      const v = up(p.b * p.nk * p.heads * p.d, [p.b, p.nk, p.heads * p.d], 7);
      return { inputs: [q, k, v], run: () => ops.attention(q, k, v, { heads: p.heads }) };
    }
    case "group_norm": {
      const x = up(p.n * p.c * p.h * p.w, [p.n, p.c, p.h, p.w], 8);
      return { inputs: [x], run: () => ops.groupNorm(x, p.groups, undefined, undefined, 1e-5) };
    }
    case "layer_norm": {
      const x = up(p.rows * p.d, [p.rows, p.d], 10);
      return { inputs: [x], run: () => ops.layerNorm(x, undefined, undefined, 1e-5) };
    }
    case "copy": {
      const x = up(p.n, [p.n], 9);
      // copyBufferToBuffer (the driver's memcpy), or the best a kernel moves (elementwise copy)
      if (p.shader) return { inputs: [x], run: () => ops.copy(x) };
      return { inputs: [x], run: () => { const y = e.empty(x.shape, x.dtype); e.copy(x, 0, y, 0, x.byteSize); return y; } };
    }
  }
}

/**
 * Times `once` (one dispatch of the op, not awaited) in samples of `reps`
 * dispatches followed by one `sync`, so the submit-and-read-back round trip is
 * spread over the dispatches. Without a fixed `reps`, a sample is made about
 * 40 ms long (at most 20 dispatches). Returns per-dispatch times.
 */
async function timeIt(once: () => void, sync: () => Promise<void>, capMs: number, maxIters: number, reps?: number): Promise<{ times: number[]; reps: number }> {
  const t0 = performance.now();
  once(); // warm-up: compiles pipelines
  await sync();
  const t1 = performance.now();
  once();
  await sync();
  const single = performance.now() - t1;
  // a dispatch longer than the cap is itself the one sample (rows of seconds
  // to minutes on CPU drivers would otherwise run a third time)
  if (single > capMs && !reps) return { times: [single], reps: 1 };
  const r = reps ?? Math.max(1, Math.min(20, Math.floor(40 / Math.max(single, 1e-3))));
  const times: number[] = [];
  const start = performance.now();
  while (times.length < maxIters) {
    const ts = performance.now();
    for (let i = 0; i < r; i++) once();
    await sync();
    times.push((performance.now() - ts) / r);
    if (performance.now() - start > capMs || performance.now() - t0 > 3 * capMs) break;
  }
  return { times, reps: r };
}

// ------------------------------------------------------------------- peers

async function loadTfjs(): Promise<any> {
  const g = globalThis as any;
  if (!g.navigator) g.navigator = { userAgent: runtime };
  if (!g.navigator.gpu) Object.defineProperty(g.navigator, "gpu", { value: gpuInstance(), configurable: true });
  const tf = await import("@tensorflow/tfjs-core");
  await import("@tensorflow/tfjs-backend-webgpu");
  await tf.setBackend("webgpu");
  await tf.ready();
  return tf;
}

function tfjsCase(tf: any, c: KernelCase, maxBind: number): { run: () => any; dispose: () => void } | string {
  const p = c.p;
  const r = (shape: number[]) => tf.randomUniform(shape, -1, 1);
  switch (c.kind) {
    case "matmul": { const a = r([p.m, p.k]), b = r([p.n, p.k]); return { run: () => tf.matMul(a, b, false, true), dispose: () => { a.dispose(); b.dispose(); } }; }
    case "conv": { const x = r([p.n, p.h, p.w, p.cin]), w = r([p.k, p.k, p.cin, p.cout]); return { run: () => tf.conv2d(x, w, 1, "same"), dispose: () => { x.dispose(); w.dispose(); } }; }
    case "attention": {
      const scores = p.b * p.heads * p.nq * p.nk * 4;
      if (scores > maxBind) return `fails (its matmul+softmax+matmul composition needs the whole ${(scores / 2 ** 20).toFixed(0)} MiB score matrix; the adapter binds at most ${(maxBind / 2 ** 20).toFixed(0)} MiB)`;
      const q = r([p.b * p.heads, p.nq, p.d]), k = r([p.b * p.heads, p.nk, p.d]), v = r([p.b * p.heads, p.nk, p.d]);
      const s = 1 / Math.sqrt(p.d);
      return { run: () => tf.tidy(() => tf.matMul(tf.softmax(tf.mul(tf.matMul(q, k, false, true), s)), v)), dispose: () => { q.dispose(); k.dispose(); v.dispose(); } };
    }
    case "copy": { const x = r([p.n]); return { run: () => tf.clone(tf.add(x, 0)), dispose: () => x.dispose() }; }
    case "layer_norm": {
      const x = r([p.rows, p.d]);
      return { run: () => tf.tidy(() => { const m = tf.moments(x, 1, true); return tf.div(tf.sub(x, m.mean), tf.sqrt(tf.add(m.variance, 1e-5))); }), dispose: () => x.dispose() };
    }
    case "group_norm": {
      const x = r([p.n, p.groups, (p.c / p.groups) * p.h * p.w]);
      return { run: () => tf.tidy(() => { const m = tf.moments(x, 2, true); return tf.div(tf.sub(x, m.mean), tf.sqrt(tf.add(m.variance, 1e-5))); }), dispose: () => x.dispose() };
    }
  }
}

function numpyPeer(cases: KernelCase[], capMs: number): Record<string, number | string> {
  const script = join(ROOT_DIR, "bench", "numpy_peer.py");
  const env = { ...process.env };
  // These force a slower OpenBLAS kernel on some CPUs (see the env notes).
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync("python3", [script, String(capMs)], { input: JSON.stringify(cases), env, encoding: "utf8", maxBuffer: 1 << 24 });
  if (r.status !== 0) return Object.fromEntries(cases.map((c) => [c.name, `unavailable (${(r.stderr || r.error?.message || "python3 failed").trim().split("\n").pop()})`]));
  return JSON.parse(r.stdout);
}

// ------------------------------------------------------------------- driver

export async function benchKernels(args: { size?: number; json?: string; vs?: string[]; short?: boolean; cap?: number; iters?: number; config?: string; reps?: number; dtype?: string; peak?: number; only?: string; check?: boolean; profile?: boolean }): Promise<BenchRow[]> {
  const e = await getEngine();
  const report = e.gpu.report;
  const dtype = args.dtype === "f16" || args.dtype === "f16w" ? args.dtype : "f32";
  if (args.dtype && !["f16", "f16w", "f32"].includes(args.dtype)) throw new SsdError("E_BAD_PARAM", `--dtype ${args.dtype}: use f32, f16 (activations and weights) or f16w (f16 weights, f32 activations)`);
  // A fast op takes less than a submit-and-read-back round trip: samples hold
  // several dispatches (--reps, else as many as make ~40 ms, at most 20).
  const fixedReps = args.reps ? Math.max(1, Math.floor(args.reps)) : undefined;
  const size = args.size ?? (report.driver === "swiftshader" ? 512 : 1024);
  const cfgPath = args.config ?? join(ROOT_DIR, "bench", "configs", "ssd1b-unet.json");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8"));
  const only = args.only ? args.only.split(",").map((x) => x.trim()).filter(Boolean) : [];
  const cases = enumerateCases(cfg, args.short ? 256 : size, args.short).filter((c) => only.length === 0 || only.some((o) => c.name.includes(o)));
  const capMs = args.cap ?? (args.short ? 2000 : 15000);
  const iters = args.iters ?? (args.short ? 2 : 5);
  const vs = new Set(args.vs ?? []);
  const tf = vs.has("tfjs") ? await loadTfjs().catch((err) => { console.log(`tfjs: unavailable (${err?.message ?? err})`); return null; }) : null;
  const numpy = vs.has("numpy") ? numpyPeer(cases, capMs) : null;
  console.log(`adapter: ${adapterLine(report)}; size ${args.short ? "short" : size}; ${dtype}; ${fixedReps ? `${fixedReps} dispatches` : "up to 20 dispatches (~40 ms)"} per timed sample, one sync`);
  let copyGBs = 0, shaderGBs = 0;
  const rows: BenchRow[] = [];
  for (const c of cases) {
    const cost = costOf(c);
    const el = dtype === "f16" ? 2 : 4; // f16w: bytes as declared by f32 (weights are the smaller part)
    const row: BenchRow = { name: c.name, kind: c.kind, params: c.p, adapter: report.name, driver: report.driver, runtime: report.runtime, kindOfAdapter: report.kind, dtype, flops: cost.flops, bytes: (cost.bytes * el) / 4 };
    try {
      const { run, inputs, host } = prepareOurs(e, c, dtype);
      const before = { ...e.stats };
      let calls = 0;
      const { times, reps } = await timeIt(() => { run().dispose(); calls++; }, () => e.sync(), capMs, iters, fixedReps);
      row.reps = reps;
      // the ops' own declaration
      const declared = (e.stats.flops - before.flops) / calls;
      if (declared > 0) row.flops = declared;
      row.ms = median(times); row.msMin = Math.min(...times); row.msMax = Math.max(...times);
      // On a GPU, wall time per op also holds the host's encoding, which a fast kernel
      // does not hide: one more sample under the profiler reads the kernels' own time
      // (on any adapter with timestamp queries under --profile), per kernel where the
      // op runs several (a split GEMM's passes).
      if (e.gpu.timestamps && (report.kind === "gpu" || args.profile)) {
        const prof = new Profiler(e, { detail: true }).start();
        for (let i = 0; i < reps; i++) run().dispose();
        const byKernel = await prof.report();
        // an op of no kernel (a buffer copy) has no kernel time, not 0 ms
        if (byKernel.length > 0) row.gpuMs = byKernel.reduce((a, r) => a + r.ms, 0) / reps;
        if (byKernel.length > 1) {
          row.kernels = byKernel.map((r) => ({ label: r.op, ms: r.ms / reps, gflops: r.gflops, gbps: r.gbps }));
          // and the op as the engine encodes it unprofiled: its kernels in one pass
          const one = new Profiler(e).start();
          for (let i = 0; i < reps; i++) one.group("op", () => run()).dispose();
          row.onePassMs = (await one.report()).reduce((a, r) => a + r.ms, 0) / reps;
        }
      }
      if (c.kind === "copy" && !c.p.shader) copyGBs = row.bytes / row.ms / 1e6;
      if (c.kind === "copy" && c.p.shader) shaderGBs = row.bytes / row.ms / 1e6;
      if (args.peak && row.flops) row.peakPct = (100 * row.flops) / (row.gpuMs ?? row.ms) / 1e6 / args.peak;
      if (args.peak && row.flops && row.onePassMs) row.onePassPeakPct = (100 * row.flops) / row.onePassMs / 1e6 / args.peak;
      // what was timed, checked once more at sampled outputs (bench/check.ts)
      if (args.check !== false) {
        const y = run();
        const out = await y.read();
        y.dispose();
        const r = checkCase(c, host, out, dtype);
        row.check = { ok: r.ok, samples: r.samples, maxErr: Number.isFinite(r.maxErr) ? r.maxErr : String(r.maxErr), line: checkLine(r) };
      }
      for (const t of inputs) t.dispose();
    } catch (err: any) {
      row.error = `${err?.code ?? ""} ${err?.message ?? err}`.trim();
    }
    if (tf) {
      const tc = tfjsCase(tf, c, e.gpu.limits.maxStorageBufferBindingSize);
      if (typeof tc === "string") row.tfjs = tc;
      else {
        try {
          // the same samples for tfjs: `reps` ops, then one read-back of the last
          let last: any = null;
          const { times } = await timeIt(() => { last?.dispose(); last = tc.run(); }, async () => { await last.data(); }, capMs, iters, row.reps ?? fixedReps);
          last?.dispose();
          row.tfjsMs = median(times);
        } catch (err: any) {
          row.tfjs = `fails (${String(err?.message ?? err).slice(0, 120)})`;
        }
        tc.dispose();
      }
    }
    if (numpy) {
      const v = numpy[c.name];
      if (typeof v === "number") row.numpyMs = v; else row.numpy = v;
    }
    rows.push(row);
    if (c.kind !== "copy") printRow(row);
  }
  // Memory-bound rows against the copy bandwidth (the copy row runs last but prints first).
  for (const r of rows) if (r.kind === "copy") printRow(r);
  for (const r of rows) if (r.kind === "group_norm" && r.ms && copyGBs > 0) {
    const gbs = r.bytes / r.ms / 1e6;
    r.copyPct = (100 * gbs) / copyGBs;
    console.log(`  ${r.name}: ${r.copyPct.toFixed(0)}% of the copy bandwidth (${copyGBs.toFixed(1)} GB/s)${shaderGBs > 0 ? `, ${((100 * gbs) / shaderGBs).toFixed(0)}% of a copy kernel's (${shaderGBs.toFixed(1)} GB/s)` : ""}`);
  }
  const wrong = rows.filter((r) => r.check && !r.check.ok);
  if (rows.some((r) => r.check)) console.log(wrong.length ? `check: ${wrong.length} row(s) gave wrong results: ${wrong.map((r) => r.name).join("; ")}` : `check: every timed row matched the float64 reference`);
  // a row of ours that could not run (its error is in the row) fails the run too
  const broken = rows.filter((r) => r.error);
  if (broken.length) console.log(`error: ${broken.length} row(s) did not run: ${broken.map((r) => r.name).join("; ")}`);
  if (wrong.length || broken.length) process.exitCode = 1;
  if (args.json) writeFileSync(args.json, JSON.stringify({ adapter: report, size, dtype, rows }, null, 2));
  return rows;
}

/**
 * `bench tiles`: the linear rows, the 4096×1280×1280 reference and the 3×3
 * convs once per `wide` tile this device can run (convs only with the tiles
 * conv2d_wide takes), then a table of GFLOP/s per row and tile. Entries of
 * --tiles that name another matmul kernel (tiled, reg) run that kernel and
 * conv2d's `tiled` instead, as a baseline.
 */
export async function benchTiles(args: { tiles?: string; splits?: string; plans?: string; only?: string; json?: string; cap?: number; iters?: number; dtype?: string; peak?: number; size?: number; check?: boolean; profile?: boolean }): Promise<void> {
  const e = await getEngine();
  const { wideTiles, MATMUL_KERNELS } = await import("../engine/ops/matmul.ts");
  const { convWideTiles } = await import("../engine/ops/conv.ts");
  const tiles = args.tiles ? args.tiles.split(",").map((x) => x.trim()).filter(Boolean) : wideTiles(e);
  // --splits: each wide tile in each of these split-K part counts (matmul rows;
  // columns "<tile>/<parts>", the tuned plans' names); else the engine's choice
  const splits = args.splits ? args.splits.split(",").map((x) => x.trim()).filter(Boolean) : [""];
  const only = (args.only ?? "peak,linear,conv3x3").split(",");
  const ENV = ["SSD_DEPTH_KERNEL_MATMUL", "SSD_DEPTH_KERNEL_MATMUL_TILE", "SSD_DEPTH_KERNEL_MATMUL_SPLIT", "SSD_DEPTH_KERNEL_MATMUL_PLAN", "SSD_DEPTH_KERNEL_CONV2D", "SSD_DEPTH_KERNEL_CONV_TILE"];
  const saved = ENV.map((k) => process.env[k]);
  const results: { tile: string; rows: BenchRow[] }[] = [];
  try {
    for (const tile of tiles) {
      const other = tile in MATMUL_KERNELS && tile !== "wide";
      for (const split of other ? [""] : splits) {
        const conv = !split && (other || convWideTiles(e).includes(tile));
        // only what the column's name says is forced (a caller's SSD_DEPTH_KERNEL_MATMUL_PLAN would override the tile)
        ENV.forEach((k) => delete process.env[k]);
        Object.assign(process.env, other
          ? { SSD_DEPTH_KERNEL_MATMUL: tile, SSD_DEPTH_KERNEL_CONV2D: "tiled" }
          : { SSD_DEPTH_KERNEL_MATMUL: "wide", SSD_DEPTH_KERNEL_MATMUL_TILE: tile, SSD_DEPTH_KERNEL_CONV2D: "wide", SSD_DEPTH_KERNEL_CONV_TILE: tile });
        if (split) process.env.SSD_DEPTH_KERNEL_MATMUL_SPLIT = split;
        const name = split ? `${tile}/${split}` : tile;
        console.log(`--- ${other ? `kernel ${tile}` : `wide ${name}`}`);
        const o = only.filter((x) => conv || !x.startsWith("conv")).join(",");
        const rows = o ? await benchKernels({ ...args, only: o, cap: args.cap ?? 3000, iters: args.iters ?? 3 }) : [];
        results.push({ tile: name, rows });
      }
    }
    // --plans: whole `wide` plans (engine/ops/matmul.ts parsePlan, split tails included), matmul rows only
    for (const plan of args.plans ? args.plans.split(",").map((x) => x.trim()).filter(Boolean) : []) {
      ENV.forEach((k) => delete process.env[k]);
      Object.assign(process.env, { SSD_DEPTH_KERNEL_MATMUL: "wide", SSD_DEPTH_KERNEL_MATMUL_PLAN: plan });
      console.log(`--- wide plan ${plan}`);
      const o = only.filter((x) => !x.startsWith("conv")).join(",");
      results.push({ tile: plan, rows: o ? await benchKernels({ ...args, only: o, cap: args.cap ?? 3000, iters: args.iters ?? 3 }) : [] });
    }
  } finally {
    ENV.forEach((k, i) => { if (saved[i] === undefined) delete process.env[k]; else process.env[k] = saved[i]; });
  }
  const names = [...new Set(results.flatMap((x) => x.rows.map((r) => r.name)))];
  const ms = (r?: BenchRow) => r?.gpuMs ?? r?.ms;
  const gf = (r?: BenchRow) => (ms(r) ? r!.flops / ms(r)! / 1e6 : 0);
  const cell = (r?: BenchRow) => (ms(r) ? gf(r).toFixed(gf(r) < 100 ? 1 : 0) : "-").padStart(13);
  const timed = results.some((x) => x.rows.some((r) => r.gpuMs !== undefined)) ? "kernel time, timestamp queries" : "wall time";
  // a table of rows × tiles (columns), one cell per row of each
  const table = (title: string, at: (r?: BenchRow) => string) => {
    console.log(`\n${title}`);
    console.log(["row".padEnd(32), ...results.map((x) => x.tile.padStart(13))].join(" "));
    for (const n of names) console.log([n.padEnd(32), ...results.map((x) => at(x.rows.find((r) => r.name === n)))].join(" "));
  };
  table(`GFLOP/s per tile (${e.gpu.report.name}, ${e.gpu.report.kind.toUpperCase()}; ${timed})`, cell);
  // multi-kernel rows (split plans) once more, their kernels in one pass as the engine runs them
  if (results.some((x) => x.rows.some((r) => r.onePassMs !== undefined))) {
    table(`GFLOP/s per plan, a split op's kernels in one pass (${e.gpu.report.name}; kernel time, timestamp queries)`,
      (r) => (r?.onePassMs ? (r.flops / r.onePassMs / 1e6).toFixed(0) : r?.gpuMs ? "(one kernel)" : "-").padStart(13));
  }
  if (args.json) writeFileSync(args.json, JSON.stringify({ adapter: e.gpu.report, results }, null, 2));
}

function rate(row: BenchRow, ms: number): string {
  return row.kind === "group_norm" || row.kind === "layer_norm" || row.kind === "copy" ? `${(row.bytes / ms / 1e6).toFixed(2)} GB/s` : `${(row.flops / ms / 1e6).toFixed(2)} GFLOP/s`;
}

function printRow(r: BenchRow): void {
  let s = `${r.name.padEnd(34)} `;
  if (r.error) s += `ours: ERROR ${r.error}`;
  else s += `ours ${fmtMs(r.ms!)} [${fmtMs(r.msMin!)}..${fmtMs(r.msMax!)}] ${rate(r, r.ms!).padStart(15)}${r.reps && r.reps > 1 ? ` (×${r.reps})` : ""}`;
  if (r.tfjsMs !== undefined) s += ` | tfjs ${fmtMs(r.tfjsMs)} ${rate(r, r.tfjsMs).padStart(15)} ratio ${r.ms ? (r.tfjsMs / r.ms).toFixed(2) : "-"}×`;
  else if (r.tfjs) s += ` | tfjs: ${r.tfjs}`;
  if (r.numpyMs !== undefined) s += ` | numpy ${fmtMs(r.numpyMs)} (ours = ${r.ms ? ((100 * r.numpyMs) / r.ms).toFixed(1) : "-"}% of it)`;
  else if (r.numpy) s += ` | numpy: ${r.numpy}`;
  if (r.gpuMs !== undefined) s += ` | kernels ${fmtMs(r.gpuMs)} ${rate(r, r.gpuMs).padStart(15)}`;
  if (r.peakPct !== undefined) s += ` | ${r.peakPct.toFixed(1)}% of the given peak${r.gpuMs !== undefined ? " (kernel time)" : ""}`;
  if (r.onePassMs !== undefined) s += ` | one pass ${fmtMs(r.onePassMs)} ${rate(r, r.onePassMs).trim()}${r.onePassPeakPct !== undefined ? ` ${r.onePassPeakPct.toFixed(1)}%` : ""}`;
  if (r.check) s += ` | ${r.check.line}`;
  console.log(s);
  // a split GEMM's passes, each with its own rate (GB/s for a pass that declares no FLOPs)
  for (const k of r.kernels ?? []) console.log(`    ${k.label.padEnd(48)} ${fmtMs(k.ms).padStart(10)} ${k.gflops > 0 ? `${k.gflops.toFixed(2)} GFLOP/s` : `${k.gbps.toFixed(2)} GB/s`}`);
}
