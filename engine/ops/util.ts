// Small helpers shared by op wrappers.

import { SsdError } from "../errors.ts";
import type { Tensor, DType } from "../tensor.ts";
import { shapeStr } from "../tensor.ts";
import type { Engine } from "../engine.ts";
import { forcedChoice } from "../autotune.ts";

export const ceilDiv = (a: number, b: number) => Math.ceil(a / b);

/** The dtype of activations an op writes (the engine's precision policy). */
export function actDtype(x: Tensor): DType {
  return x.engine.precision.activations;
}

export function assertShape(op: string, t: Tensor, rank: number, what = "input"): void {
  if (t.rank !== rank) throw new SsdError("E_SHAPE", `${op}: ${what} must be ${rank}-D, got ${shapeStr(t.shape)}`);
}

export function broadcastShapes(a: readonly number[], b: readonly number[], op: string): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new SsdError("E_SHAPE", `${op}: shapes ${shapeStr(a)} and ${shapeStr(b)} do not broadcast`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Strides of `shape` broadcast to `out` (0 on broadcast dims). */
export function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const s: number[] = new Array(out.length).fill(0);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const oi = out.length - shape.length + i;
    s[oi] = shape[i] === 1 ? 0 : stride;
    stride *= shape[i];
  }
  return s;
}

/**
 * Merges adjacent dims that every operand walks contiguously, then pads to
 * `rank` dims with leading 1s. Returns null if more than `rank` dims remain.
 */
export function collapseDims(out: readonly number[], strides: number[][], rank = 4): { dims: number[]; strides: number[][] } | null {
  const dims: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let i = 0; i < out.length; i++) {
    if (out[i] === 1) continue;
    const last = dims.length - 1;
    if (last >= 0 && strides.every((s, k) => st[k][last] === s[i] * out[i])) {
      dims[last] *= out[i];
      strides.forEach((s, k) => (st[k][last] = s[i]));
    } else {
      dims.push(out[i]);
      strides.forEach((s, k) => st[k].push(s[i]));
    }
  }
  if (dims.length > rank) return null;
  while (dims.length < rank) {
    dims.unshift(1);
    st.forEach((s) => s.unshift(0));
  }
  return { dims, strides: st };
}

/**
 * conv2d's `sg` kernel broadcasts values loaded by 8 lanes of a subgroup: it
 * needs the subgroups feature with subgroups of at least 8 invocations
 * (lavapipe on AVX2: 8; SwiftShader: 4).
 */
export const hasSubgroups8 = (e: Engine): boolean => e.gpu.subgroups && e.gpu.subgroupMinSize >= 8;

/**
 * Split-K parts of a `wide` GEMM or conv: forced by the op's option, else by
 * SSD_DEPTH_KERNEL_<KEY> (one of `allowed`); else, on GPUs, doubled (up to 4)
 * while `size · parts` stays under `fill` and each part keeps at least
 * `minDepth` of K; 1 on CPU drivers. The callers say what size and fill they
 * measured their rule in (matmul: invocations, conv2d: workgroups).
 */
export function splitParts(e: Engine, r: { op: string; key: string; allowed: number[]; forced?: number; size: number; fill: number; K: number; minDepth: number }): number {
  const f = r.forced ?? Number(forcedChoice(r.key, r.allowed.map(String)) ?? 0);
  if (f) {
    if (!r.allowed.includes(f)) throw new SsdError("E_BAD_PARAM", `${r.op}: split ${f}: use one of ${r.allowed.join(", ")}`);
    return f;
  }
  if (e.gpu.report.kind !== "gpu") return 1;
  let s = 1;
  while (s < 4 && r.size * s < r.fill && r.K / (2 * s) >= r.minDepth) s *= 2;
  return s;
}
