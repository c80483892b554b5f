// `bench kernels` checks what it times: each row's output, read back once
// after the timing, is compared at sampled positions with a float64
// reference computed here from the same host data. A fast kernel that returns
// wrong sums (a lost split-K part, a block of C never written, a race in a
// serial split-K on a GPU the CPU drivers never model) is reported as such,
// never quoted as a speed.
//
// Errors are scaled to the size of what they can come from, so one tolerance
// serves every shape: a dot product's error by the root of the sum of its
// squared terms (the typical size of a random-sign sum, so rounding in f32
// stays near 1e-6 of it at any depth, while a missing part of K is a large
// fraction of it), attention's by the same measure of its weighted values,
// normalised outputs (group_norm, layer_norm) and copies absolutely.

import { roundToHalf } from "../engine/half.ts";
import type { KernelCase } from "./kernels.ts";

/** Host data of one input as uploaded; `half`: uploaded as f16, so the reference rounds it the same way. */
export interface HostInput { data: Float32Array; half: boolean }

export interface CheckResult {
  ok: boolean;
  samples: number;
  /** the largest scaled error, and the tolerance it is held to */
  maxErr: number;
  tol: number;
  /** where the largest error is: output index, what the kernel gave, the reference */
  worst: { index: number; got: number; want: number };
}

/** Scaled error allowed: f32 outputs, or f16 ones (dtype "f16": activations stored as f16). */
export const CHECK_TOL = { f32: 1e-3, f16: 2e-2 };
/** Output positions checked per row: the first, the last and evenly spread pseudo-random ones. */
export const CHECK_SAMPLES = 64;

/** Sample positions in [0, n): deterministic, so a failure reproduces. */
export function samplePositions(n: number, count = CHECK_SAMPLES): number[] {
  const out = new Set<number>([0, n - 1]);
  let s = 0x9e3779b9;
  while (out.size < Math.min(n, count)) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.add(Math.floor((s / 2 ** 32) * n));
  }
  return [...out];
}

/**
 * The reference value of output element i of case `c`, and the scale its
 * error is measured against. Inputs in the order bench/kernels.ts uploads
 * them: matmul x [m, k], w [n, k] (y = x·wᵀ); conv x [n, cin, h, w],
 * w [cout, cin, k, k] (stride 1, padding (k − 1)/2); attention q, k, v
 * [b, tokens, heads·d]; group_norm x [n, c, h, w]; layer_norm x [rows, d];
 * copy x [n].
 */
function referenceOf(c: KernelCase, inputs: HostInput[]): (i: number) => { want: number; scale: number } {
  const p = c.p;
  const at = (t: number, i: number) => (inputs[t].half ? roundToHalf(inputs[t].data[i]) : inputs[t].data[i]);
  const dot = (terms: (add: (x: number) => void) => void) => {
    let sum = 0, sq = 0;
    terms((x) => { sum += x; sq += x * x; });
    return { want: sum, scale: Math.sqrt(sq) || 1 };
  };
  switch (c.kind) {
    case "matmul":
      return (i) => {
        const m = Math.floor(i / p.n), n = i % p.n;
        return dot((add) => { for (let k = 0; k < p.k; k++) add(at(0, m * p.k + k) * at(1, n * p.k + k)); });
      };
    case "conv":
      return (i) => {
        const hw = p.h * p.w, pad = (p.k - 1) / 2;
        const b = Math.floor(i / (p.cout * hw)), o = Math.floor(i / hw) % p.cout, y = Math.floor((i % hw) / p.w), x = i % p.w;
        return dot((add) => {
          for (let ci = 0; ci < p.cin; ci++) for (let ky = 0; ky < p.k; ky++) for (let kx = 0; kx < p.k; kx++) {
            const iy = y + ky - pad, ix = x + kx - pad;
            if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
            add(at(0, ((b * p.cin + ci) * p.h + iy) * p.w + ix) * at(1, ((o * p.cin + ci) * p.k + ky) * p.k + kx));
          }
        });
      };
    case "attention":
      return (i) => {
        const hd = p.heads * p.d;
        const b = Math.floor(i / (p.nq * hd)), q = Math.floor(i / hd) % p.nq, h = Math.floor((i % hd) / p.d), dd = i % p.d;
        const s = new Float64Array(p.nk);
        let max = -Infinity;
        for (let j = 0; j < p.nk; j++) {
          let acc = 0;
          for (let e = 0; e < p.d; e++) acc += at(0, (b * p.nq + q) * hd + h * p.d + e) * at(1, (b * p.nk + j) * hd + h * p.d + e);
          s[j] = acc / Math.sqrt(p.d);
          max = Math.max(max, s[j]);
        }
        let z = 0;
        for (let j = 0; j < p.nk; j++) { s[j] = Math.exp(s[j] - max); z += s[j]; }
        return dot((add) => { for (let j = 0; j < p.nk; j++) add((s[j] / z) * at(2, (b * p.nk + j) * hd + h * p.d + dd)); });
      };
    case "group_norm":
    case "layer_norm": {
      // mean and variance of each group (or row) that a sample falls in, once
      const size = c.kind === "group_norm" ? (p.c / p.groups) * p.h * p.w : p.d;
      const stats = new Map<number, { mean: number; inv: number }>();
      return (i) => {
        const g = Math.floor(i / size);
        let st = stats.get(g);
        if (!st) {
          let sum = 0, sq = 0;
          for (let j = g * size; j < (g + 1) * size; j++) { const v = at(0, j); sum += v; sq += v * v; }
          const mean = sum / size;
          st = { mean, inv: 1 / Math.sqrt(Math.max(0, sq / size - mean * mean) + 1e-5) };
          stats.set(g, st);
        }
        return { want: (at(0, i) - st.mean) * st.inv, scale: 1 };
      };
    }
    case "copy":
      return (i) => ({ want: at(0, i), scale: 1 });
  }
}

/** Checks `out` (the row's output, read back as f32) at the sample positions. */
export function checkCase(c: KernelCase, inputs: HostInput[], out: Float32Array, dtype: "f32" | "f16" | "f16w"): CheckResult {
  const ref = referenceOf(c, inputs);
  const tol = dtype === "f16" ? CHECK_TOL.f16 : CHECK_TOL.f32;
  const positions = samplePositions(out.length);
  let maxErr = -1, worst = { index: 0, got: 0, want: 0 };
  for (const i of positions) {
    const { want, scale } = ref(i);
    const got = out[i];
    // NaN and infinities are wrong whatever the tolerance
    const err = Number.isFinite(got) ? Math.abs(got - want) / scale : Infinity;
    if (err > maxErr) { maxErr = err; worst = { index: i, got, want }; }
  }
  return { ok: maxErr <= tol, samples: positions.length, maxErr, tol, worst };
}

/** One line for the bench's row: "check ok (64 samples, max err 3.1e-7)" or what went wrong. */
export function checkLine(r: CheckResult): string {
  const err = Number.isFinite(r.maxErr) ? r.maxErr.toExponential(1) : String(r.maxErr);
  if (r.ok) return `check ok (${r.samples} samples, max err ${err})`;
  return `CHECK FAILED: output ${r.worst.index} is ${r.worst.got}, the float64 reference ${r.worst.want.toPrecision(6)} (scaled err ${err} > ${r.tol}; ${r.samples} samples)`;
}
