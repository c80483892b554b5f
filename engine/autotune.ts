// Per-adapter kernel choices. An op with several kernels (or tile settings)
// asks `tunedChoice`; the answer comes from a small measured tuning run cached
// on disk keyed by adapter, runtime and implementation
// ($SSD_DEPTH_CACHE or ~/.cache/ssd-depth/tuning.json), or else from a
// default that suits the adapter's kind. `tune()` measures; `ssd-depth info
// --tune` and the benches call it.

import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { homedir } from "node:os";
import type { Engine } from "./engine.ts";
import { Profiler } from "./profiler.ts";
import { SsdError } from "./errors.ts";

type Choices = Record<string, string>;

export function cachePath(): string {
  const base = process.env.SSD_DEPTH_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "ssd-depth");
  return join(base, "tuning.json");
}

export function adapterKey(e: Engine): string {
  const r = e.gpu.report;
  return `${r.runtime}|${r.implementation}|${r.name}|${r.vendor}|${r.architecture}`;
}

const loaded = new WeakMap<Engine, Choices>();

function readAll(): Record<string, Choices> {
  try {
    return JSON.parse(readFileSync(cachePath(), "utf8"));
  } catch {
    return {};
  }
}

function choicesOf(e: Engine): Choices {
  let c = loaded.get(e);
  if (!c) {
    c = readAll()[adapterKey(e)] ?? {};
    loaded.set(e, c);
  }
  return c;
}

/** Forgets this engine's loaded choices (the next lookup re-reads the cache). */
export function reloadChoices(e: Engine): void {
  loaded.delete(e);
}

/**
 * Defaults before tuning: CPU drivers pay a fiber switch per barrier, so they
 * get barrier-free kernels; a driver's own entry (measured there) beats its
 * kind's, and a driver's entry for one runtime ("lavapipe@deno") beats both.
 */
const DEFAULTS: Record<string, { cpu: string; gpu: string; [driverAtRuntime: string]: string }> = {
  // t1x1: linears as 1×1 convs on conv2d's reg kernel (1.2–2× reg on lavapipe, 2.7× on SwiftShader)
  matmul: { cpu: "t1x1", gpu: "wide" },
  // sg: reg with weights loaded once per subgroup (1.3–1.7× reg on lavapipe; needs subgroups of ≥ 8)
  // wide (GPUs): the tiled GEMM core, small grids on tiled (H200 UNet step at 1024²: conv 196 ms, tiled alone 219 ms)
  conv2d: { cpu: "reg", gpu: "wide", lavapipe: "sg" },
  // self-attention; gemm: Q·Kᵀ and P·V on conv2d's reg/sg GEMM (1024 keys: 1.3× rowblock on lavapipe, 2× rows on SwiftShader)
  // mm (GPUs): the two GEMMs on matmul's `wide` kernel, all heads per dispatch (H200, 4096 tokens × 10 heads: 3.5 ms, flash 6.9)
  attention: { cpu: "gemm", gpu: "mm" },
  // at most 128 keys (cross-attention to text, CLIP); rowblock: 8 query rows per invocation
  // (lavapipe loads storage per lane; ~3x rows there, 2x slower on SwiftShader)
  attention_short: { cpu: "rows", gpu: "flash", lavapipe: "rowblock" },
  // rowblock's keys per online-softmax step (ops/attention.ts ROWBLOCK_KEYS): on lavapipe
  // through Dawn 16 ran cross-attention 1.3–1.5× faster than 4; through Deno's wgpu 8 ran
  // 1.1× faster than 4 and 16 ran 1.7× slower
  rowblock_keys: { cpu: "4", gpu: "4", lavapipe: "16", "lavapipe@deno": "8" },
  // group_norm's merge of partial sums: a thread per row (no barriers) or a workgroup per row
  // (H200: 0.9 ms a call with a thread per row on SSD-1B's 1024² activations)
  group_norm_merge: { cpu: "thread", gpu: "workgroup" },
  // split: statistics, merge, apply; fused: a workgroup per group (its second sweep from cache):
  // lavapipe 1.1–1.6× split on SSD-1B's activations, SwiftShader slower
  group_norm: { cpu: "split", gpu: "split", lavapipe: "fused" },
  // a workgroup per row (two tree sums) or a thread per row without barriers
  // (lavapipe, [4096, 640]: 58 ms a workgroup per row)
  layer_norm: { cpu: "rows", gpu: "workgroup" },
  // the `wide` kernels' tiles (engine/ops/matmul.ts WIDE_TILES) and flash attention's
  // (ops/attention.ts FLASH_TILES), as the H200's tuning runs chose them (sessions 5 and 8)
  matmul_tile: { cpu: "128x128k8t8", gpu: "128x64k8t8" },
  conv_tile: { cpu: "128x128k8t8", gpu: "128x128k8t8" },
  flash_tile: { cpu: "32x32x32x64", gpu: "64x32x32x64" },
};

/** The choice env SSD_DEPTH_KERNEL_<OP> forces for `op`, if it names one of `options`. */
export function forcedChoice(op: string, options: string[]): string | undefined {
  const forced = process.env[`SSD_DEPTH_KERNEL_${op.toUpperCase()}`];
  return forced && options.includes(forced) ? forced : undefined;
}

/** The cached choice stored under `key` for this adapter, if a tuning run made one (no default, no env). */
export function tunedEntry(e: Engine, key: string): string | undefined {
  return choicesOf(e)[key];
}

/** The kernel `op` should use on this adapter (env SSD_DEPTH_KERNEL_<OP> forces one). */
export function tunedChoice(e: Engine, op: string, options: string[]): string {
  const forced = forcedChoice(op, options);
  if (forced) return forced;
  const c = choicesOf(e)[op];
  if (c && options.includes(c)) return c;
  const d = DEFAULTS[op];
  const r = e.gpu.report;
  // most specific first: driver and runtime ("lavapipe@deno"), driver, adapter kind
  const pick = d ? (d[`${r.driver}@${r.runtime}`] ?? d[r.driver] ?? (r.kind === "cpu" ? d.cpu : d.gpu)) : options[0];
  return options.includes(pick) ? pick : options[0];
}

export interface TuneResult {
  op: string;
  choice: string;
  ms: Record<string, number>;
  /** what `ms` is: wall time per call, or the kernels' own time per call (timestamp queries) */
  clock: "wall" | "kernels";
}

/**
 * Times each candidate with `run` (which encodes one call) and stores the
 * fastest for this adapter. `run` must use the candidate it is given.
 */
export async function tune(e: Engine, op: string, candidates: string[], run: (candidate: string) => void, reps = 3, clock: "wall" | "kernels" = "wall"): Promise<TuneResult> {
  if (clock === "kernels" && !e.gpu.timestamps) throw new SsdError("E_INTERNAL", `tune ${op}: kernel time needs timestamp queries, which this device lacks`);
  const ms: Record<string, number> = {};
  for (const cand of candidates) {
    run(cand);
    await e.sync(); // compile + warm
    // A sample is at least `reps` calls and ~20 ms (on a GPU a few calls take
    // less than one submit-and-wait); the best of 3 samples counts. With
    // clock "kernels" a sample is the calls' GPU time, per call, stamped by
    // the profiler with each call's dispatches in one pass (Profiler.group),
    // as they run unprofiled: a split GEMM's two kernels with the barrier
    // between them, not with a pass boundary each.
    let best = Infinity;
    for (let s = 0; s < 3; s++) {
      const prof = clock === "kernels" ? new Profiler(e).start() : null;
      let n = 0;
      const t0 = performance.now();
      do {
        for (let i = 0; i < reps; i++) {
          if (prof) prof.group("call", () => run(cand));
          else run(cand);
        }
        n += reps;
        await e.sync();
      } while (performance.now() - t0 < 20 && n < 64 * reps);
      const wall = performance.now() - t0;
      best = Math.min(best, prof ? (await prof.report()).reduce((a, r) => a + r.ms, 0) / n : wall / n);
      if (wall > 2000) break; // slow candidates: one sample is enough
    }
    ms[cand] = best;
  }
  const choice = candidates.reduce((best, c) => (ms[c] < ms[best] ? c : best), candidates[0]);
  const all = readAll();
  const key = adapterKey(e);
  all[key] = { ...(all[key] ?? {}), [op]: choice };
  choicesOf(e)[op] = choice;
  try {
    mkdirSync(dirname(cachePath()), { recursive: true });
    writeFileSync(cachePath(), JSON.stringify(all, null, 2));
  } catch {
    // a read-only home only loses the cache, not the choice for this process
  }
  return { op, choice, ms, clock };
}
