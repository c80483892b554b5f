// Splitting work around the binding-size limit: ops bind aligned sub-ranges of
// a tensor's storage (BindRange) and pass the element offset of the range to
// the kernel, which subtracts it from the absolute index it computes. This
// keeps one index formula in each kernel whether or not the tensor was split.

import type { Engine, BindRange } from "../engine.ts";
import type { Tensor } from "../tensor.ts";
import { DTYPE_BYTES, type DType } from "../tensor.ts";
import { SsdError } from "../errors.ts";

/** Largest v in [1, hi] with ok(v) (ok monotone: true up to some v), 0 if none. */
export function maxFit(hi: number, ok: (v: number) => boolean): number {
  if (hi < 1 || !ok(1)) return 0;
  let lo = 1;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (ok(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Whether `elems` consecutive elements of `dtype`, starting anywhere, can be
 * bound: the range is widened down to the offset alignment, so the worst case
 * adds almost one alignment unit.
 */
export function spanFits(e: Engine, elems: number, dtype: DType): boolean {
  const lim = e.gpu.limits;
  return Math.ceil((elems * DTYPE_BYTES[dtype]) / 4) * 4 + lim.minStorageBufferOffsetAlignment <= lim.maxStorageBufferBindingSize;
}

/** The whole tensor fits one binding. */
export function wholeFits(e: Engine, t: Tensor): boolean {
  return Math.ceil(t.byteSize / 4) * 4 <= e.gpu.limits.maxStorageBufferBindingSize;
}

/**
 * Binds elements [start, end) of t: returns the binding and `base`, the
 * element index at which the bound range begins.
 */
export function bindSpan(t: Tensor, start: number, end: number): { bind: BindRange; base: number } {
  const eb = DTYPE_BYTES[t.dtype];
  const align = t.engine.gpu.limits.minStorageBufferOffsetAlignment;
  const byteOffset = Math.floor((start * eb) / align) * align;
  const byteEnd = Math.min(Math.ceil((end * eb) / 4) * 4, Math.ceil(t.byteSize / 4) * 4);
  return { bind: { tensor: t, byteOffset, byteSize: Math.max(4, byteEnd - byteOffset) }, base: byteOffset / eb };
}

/** Whole-tensor binding with base 0. */
export function bindWhole(t: Tensor): { bind: Tensor; base: number } {
  return { bind: t, base: 0 };
}

export interface PlaneRowsJob {
  /** first plane and count */
  p0: number;
  np: number;
  /** first output row and count */
  r0: number;
  nr: number;
}

/**
 * Plans a gather op over `planes` independent planes (N·C of NCHW) whose
 * output row range [r0, r0+nr) reads input rows inRows(r0, nr): whole when
 * everything fits one binding, else runs of planes, else row bands of one plane.
 */
export function planPlaneRows(e: Engine, g: {
  planes: number; Hin: number; Win: number; Ho: number; Wo: number;
  inDtype: DType; outDtype: DType; inRows: (r0: number, nr: number) => [number, number];
}): PlaneRowsJob[] {
  const inPlane = g.Hin * g.Win, outPlane = g.Ho * g.Wo;
  const inFit = (np: number, r0: number, nr: number) => {
    const [lo, hi] = g.inRows(r0, nr);
    return spanFits(e, (np - 1) * inPlane + (hi - lo) * g.Win, g.inDtype);
  };
  const outFit = (np: number, nr: number) => spanFits(e, (np - 1) * outPlane + nr * g.Wo, g.outDtype);
  const jobs: PlaneRowsJob[] = [];
  const np = maxFit(g.planes, (n) => inFit(n, 0, g.Ho) && outFit(n, g.Ho));
  if (np > 0) {
    for (let p0 = 0; p0 < g.planes; p0 += np) jobs.push({ p0, np: Math.min(np, g.planes - p0), r0: 0, nr: g.Ho });
    return jobs;
  }
  // One plane does not fit: bands of output rows. The input rows a band needs
  // can vary with its position (borders), so each band is sized where it starts.
  for (let p0 = 0; p0 < g.planes; p0++) {
    for (let r0 = 0; r0 < g.Ho;) {
      const nr = maxFit(g.Ho - r0, (n) => inFit(1, r0, n) && outFit(1, n));
      if (nr === 0) throw new SsdError("E_LIMITS", `one output row of ${g.Wo} elements (reading ${g.Win}-wide input rows) does not fit maxStorageBufferBindingSize`);
      jobs.push({ p0, np: 1, r0, nr });
      r0 += nr;
    }
  }
  return jobs;
}
