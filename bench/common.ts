// Shared by the benchmarks.
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import type { AdapterReport } from "../engine/device.ts";

export const ROOT_DIR = dirname(dirname(fileURLToPath(import.meta.url)));

/** The adapter as every suite's first line names it: CPU drivers are never GPU figures, and how Dawn waited matters there. */
export function adapterLine(r: AdapterReport): string {
  return `${r.name} (${r.driver}, ${r.kind.toUpperCase()}), runtime ${r.runtime} / ${r.implementation}${r.polling === "wgpu" ? "" : `, Dawn polling ${r.polling}`}`;
}

export interface BenchRow {
  name: string;
  kind: string;
  params: Record<string, number>;
  adapter: string;
  driver: string;
  runtime: string;
  flops: number;
  bytes: number;
  ms?: number;
  msMin?: number;
  msMax?: number;
  error?: string;
  tfjsMs?: number;
  tfjs?: string;
  numpyMs?: number;
  numpy?: string;
  /** "gpu" or "cpu": never quote a CPU adapter's row as a GPU figure */
  kindOfAdapter?: string;
  dtype?: string;
  /** GPU adapters with timestamp queries (any such adapter with --profile): the op's kernels' GPU time (ms per op, one sample of `reps` ops) */
  gpuMs?: number;
  /** where the op ran more than one kernel: gpuMs by dispatch label (kernel and shape), ms per op, slowest first */
  kernels?: { label: string; ms: number; gflops: number; gbps: number }[];
  /**
   * where the op ran more than one kernel: its GPU time with its kernels in one
   * pass (Profiler.group), as the engine encodes them unprofiled, ms per op;
   * gpuMs sums per-kernel passes, each with a pass boundary of its own
   */
  onePassMs?: number;
  /** onePassMs's GFLOP/s as a percentage of --peak */
  onePassPeakPct?: number;
  /** dispatches per timed sample (ms is per dispatch) */
  reps?: number;
  /** GFLOP/s as a percentage of --peak (from gpuMs where measured, else from ms) */
  peakPct?: number;
  /** GB/s as a percentage of the copy row's */
  copyPct?: number;
  /** the output checked at sampled positions against a float64 reference (bench/check.ts); maxErr "Infinity"/"NaN" as text */
  check?: { ok: boolean; samples: number; maxErr: number | string; line: string };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function fmtMs(ms: number): string {
  return ms >= 100 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(2)} ms`;
}

/** Deterministic data in [-1, 1). */
export function randomData(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    a[i] = (s / 4294967296) * 2 - 1;
  }
  return a;
}
