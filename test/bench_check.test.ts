// bench/check.ts: the check every `bench kernels` row's output gets. It must
// pass what our kernels compute, for every kind of row and dtype, and fail the
// ways a fast kernel goes wrong: a K part lost, a block of C never written,
// NaN. And --profile's kernel time per pass of a row, and the JSON of a run
// over several drivers.
import { suite } from "uvu";
import { getEngine } from "../engine/engine.ts";
import * as ops from "../engine/ops/index.ts";
import { checkCase, checkLine, samplePositions, CHECK_SAMPLES } from "../bench/check.ts";
import { prepareOurs, benchKernels, type KernelCase } from "../bench/kernels.ts";
import { withEnv, ROOT, FULL_GPU_KERNEL_TESTS } from "./lib/harness.ts";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const t = suite("bench check");

const CASES: KernelCase[] = [
  { name: "linear", kind: "matmul", p: { m: 37, k: 70, n: 19 } },
  { name: "conv3x3", kind: "conv", p: { n: 1, cin: 6, cout: 5, h: 9, w: 7, k: 3 } },
  { name: "conv1x1", kind: "conv", p: { n: 1, cin: 6, cout: 5, h: 4, w: 4, k: 1 } },
  { name: "attention", kind: "attention", p: { b: 1, nq: 20, nk: 13, heads: 2, d: 8 } },
  { name: "group_norm", kind: "group_norm", p: { n: 1, c: 8, h: 5, w: 5, groups: 4 } },
  { name: "layer_norm", kind: "layer_norm", p: { rows: 9, d: 24 } },
  { name: "copy", kind: "copy", p: { n: 100 } },
  { name: "copy (shader)", kind: "copy", p: { n: 100, shader: 1 } },
];

t("sample positions: deterministic, distinct, the first and last among them", () => {
  const a = samplePositions(1000), b = samplePositions(1000);
  if (a.join() !== b.join() || a.length !== CHECK_SAMPLES || new Set(a).size !== a.length) throw new Error(`positions ${a}`);
  if (!a.includes(0) || !a.includes(999) || a.some((i) => i < 0 || i >= 1000 || !Number.isInteger(i))) throw new Error(`positions ${a}`);
  if (samplePositions(5).sort().join() !== "0,1,2,3,4") throw new Error(`of 5: ${samplePositions(5)}`);
});

t("our kernels' outputs pass, every kind of row, f32, f16 and f16 weights", async () => {
  const e = await getEngine();
  for (const dtype of ["f32", "f16", "f16w"] as const) for (const c of CASES) {
    const { run, inputs, host } = prepareOurs(e, c, dtype);
    const y = run();
    const out = await y.read();
    y.dispose();
    for (const x of inputs) x.dispose();
    const r = checkCase(c, host, out, dtype);
    if (!r.ok || r.samples !== Math.min(out.length, CHECK_SAMPLES)) throw new Error(`${c.name} ${dtype}: ${checkLine(r)}`);
  }
});

t("fails a sum missing one of 7 K parts, an unwritten last block, and NaN", async () => {
  const e = await getEngine();
  const c: KernelCase = { name: "linear", kind: "matmul", p: { m: 64, k: 70, n: 40 } };
  const { run, inputs, host } = prepareOurs(e, c, "f32");
  const good = await run().read();
  // the product over the first 60 of K only (a lost seventh part)
  const keep = 60;
  const cut = (d: Float32Array, rows: number) => Float32Array.from({ length: rows * keep }, (_, i) => d[Math.floor(i / keep) * c.p.k + (i % keep)]);
  const part = await ops.linear(e.upload(cut(host[0].data, c.p.m), [c.p.m, keep]), e.upload(cut(host[1].data, c.p.n), [c.p.n, keep])).read();
  const unwritten = good.slice();
  unwritten.fill(0, (c.p.m - 16) * c.p.n); // the last rows, as a block of C that no workgroup stored
  const nan = good.slice();
  nan[nan.length - 1] = NaN;
  if (!checkCase(c, host, good, "f32").ok) throw new Error(`good: ${checkLine(checkCase(c, host, good, "f32"))}`);
  for (const [what, out] of [["a lost K part", part], ["an unwritten block", unwritten], ["NaN", nan]] as const) {
    const r = checkCase(c, host, out, "f32");
    if (r.ok || !checkLine(r).startsWith("CHECK FAILED")) throw new Error(`${what} passed: ${checkLine(r)}`);
  }
  for (const x of inputs) x.dispose();
});

t("--profile: a split GEMM's row has each pass's kernel time, adding up to the row's", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // a `wide` GEMM in 2 K parts, on lavapipe (timestamp queries)
  const e = await getEngine();
  if (!e.gpu.timestamps) throw new Error(`${e.gpu.report.name}: no timestamp queries`);
  const bench = (profile: boolean) => withEnv({ SSD_DEPTH_KERNEL_MATMUL: "wide", SSD_DEPTH_KERNEL_MATMUL_SPLIT: "2" }, () =>
    benchKernels({ short: true, only: "linear", profile, iters: 1, reps: 1 }));
  const [row] = await bench(true);
  if (!row?.gpuMs || !row.kernels) throw new Error(`no kernel time: ${JSON.stringify(row)}`);
  const labels = row.kernels.map((k) => k.label);
  const wide = row.kernels.find((k) => k.label.startsWith("matmul:wide:")), sum = row.kernels.find((k) => k.label.startsWith("matmul:split_sum:"));
  if (row.kernels.length !== 2 || !wide || !sum) throw new Error(`passes ${labels}`);
  if (!(wide.gflops > 0 && sum.gflops === 0 && sum.gbps > 0)) throw new Error(`rates ${JSON.stringify(row.kernels)}`);
  const total = row.kernels.reduce((a, k) => a + k.ms, 0);
  if (Math.abs(total - row.gpuMs) > 1e-9 * Math.max(1, row.gpuMs)) throw new Error(`passes ${total} ms, row ${row.gpuMs} ms`);
  // the same kernels in one pass: timed too, and not more than both passes with the gap between them can take
  if (!(row.onePassMs! > 0 && row.onePassMs! < 5 * total)) throw new Error(`one pass ${row.onePassMs} ms, passes ${total} ms`);
  // without --profile a CPU adapter's row is wall time only
  const [plain] = await bench(false);
  if (plain.gpuMs !== undefined || plain.kernels !== undefined || plain.onePassMs !== undefined || !plain.ms) throw new Error(`without --profile: ${JSON.stringify(plain)}`);
});

t("--driver: --json gets each leg's own JSON under its name, for tiles as for kernels", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // child processes on lavapipe
  const dir = mkdtempSync(join(tmpdir(), "ssd-bench-json-"));
  try {
    const run = (args: string[]) => {
      const json = join(dir, `${args[0]}.json`);
      const r = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "bench", "main.ts"), ...args, "--driver", "lavapipe", "--json", json], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
      if (r.status !== 0) throw new Error(`bench ${args.join(" ")}: exit ${r.status}\n${r.stdout}${r.stderr}`);
      const legs = JSON.parse(readFileSync(json, "utf8"));
      if (!Array.isArray(legs) || legs.length !== 1 || legs[0].leg !== "node+lavapipe" || !/llvmpipe/.test(legs[0].adapter?.name)) throw new Error(`${args[0]}: ${JSON.stringify(legs).slice(0, 300)}`);
      return legs[0];
    };
    const tiles = run(["tiles", "--tiles", "tiled", "--only", "linear", "--size", "64", "--iters", "1", "--cap", "50"]);
    const rows = tiles.results?.[0]?.rows ?? [];
    if (tiles.results.length !== 1 || tiles.results[0].tile !== "tiled" || rows.length === 0 || !rows.every((r: any) => r.name.startsWith("linear") && r.ms > 0 && r.check?.ok)) throw new Error(`tiles: ${JSON.stringify(tiles).slice(0, 300)}`);
    const kernels = run(["kernels", "--short", "--only", "layer_norm", "--iters", "1"]);
    if (kernels.rows?.length !== 1 || kernels.rows[0].kind !== "layer_norm" || !(kernels.rows[0].ms > 0)) throw new Error(`kernels: ${JSON.stringify(kernels).slice(0, 300)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

t.run();
