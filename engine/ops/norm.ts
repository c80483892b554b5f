// Normalisations and softmax (shaders/norm.wgsl).
//
// Every op here works on windows of its tensors (aligned sub-ranges bound
// with an element offset), so tensors larger than maxStorageBufferBindingSize
// are processed in several dispatches; grids are 1-D and folded by the engine.

import { tunedChoice } from "../autotune.ts";
import { SsdError } from "../errors.ts";
import type { Tensor } from "../tensor.ts";
import { DTYPE_BYTES, shapeStr } from "../tensor.ts";
import type { BindRange } from "../engine.ts";
import type { KernelSpec } from "../kernel.ts";
import { ACT, type Activation } from "./elementwise.ts";
import { actDtype, ceilDiv } from "./util.ts";


/**
 * An aligned bind range of `t` holding elements [start, start + count), and
 * the index of element `start` inside it. Shared with attention.ts.
 */
export function bindWindow(t: Tensor, start: number, count: number): { bind: BindRange; off: number } {
  const eb = DTYPE_BYTES[t.dtype];
  const align = t.engine.gpu.limits.minStorageBufferOffsetAlignment;
  const startByte = start * eb;
  const byteOffset = Math.floor(startByte / align) * align;
  const endByte = Math.ceil(((start + count) * eb) / 4) * 4;
  return { bind: { tensor: t, byteOffset, byteSize: Math.max(4, endByte - byteOffset) }, off: (startByte - byteOffset) / eb };
}

/** Most elements of the widest of `ts` that one window may hold (alignment slack included). */
export function windowElems(ts: Tensor[]): number {
  const lim = ts[0].engine.gpu.limits;
  const eb = Math.max(...ts.map((t) => DTYPE_BYTES[t.dtype]));
  return Math.floor((lim.maxStorageBufferBindingSize - lim.minStorageBufferOffsetAlignment) / eb);
}

const GN_STATS: KernelSpec = {
  file: "norm", entry: "gn_stats",
  bindings: [{ name: "X", access: "read" }, { name: "PART", access: "read_write" }],
  params: [["nchunks", "u32"], ["c0", "u32"], ["cpr", "u32"], ["gsz", "u32"], ["L", "u32"], ["base", "u32"], ["xoff", "u32"]],
};
const GN_MERGE: KernelSpec = {
  file: "norm", entry: "gn_merge",
  bindings: [{ name: "PART", access: "read" }, { name: "STATS", access: "read_write" }],
  params: [["rows", "u32"], ["r0", "u32"], ["cpr", "u32"], ["L", "u32"], ["gsz", "u32"], ["tw", "u32"], ["pt", "u32"], ["vw", "u32"], ["eps", "f32"]],
};
const GN_MERGE_WG: KernelSpec = { ...GN_MERGE, entry: "gn_merge_wg" };
const GN_APPLY: KernelSpec = {
  file: "norm", entry: "gn_apply",
  bindings: [{ name: "X", access: "read" }, { name: "STATS", access: "read" }, { name: "W", access: "read" }, { name: "B", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["count", "u32"], ["base", "u32"], ["xoff", "u32"], ["yoff", "u32"], ["S", "u32"], ["C", "u32"], ["cg", "u32"]],
};
const GN_FUSED: KernelSpec = {
  file: "norm", entry: "gn_fused",
  bindings: [{ name: "X", access: "read" }, { name: "W", access: "read" }, { name: "B", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["rows", "u32"], ["gsz", "u32"], ["S", "u32"], ["C", "u32"], ["cg", "u32"], ["xoff", "u32"], ["yoff", "u32"], ["eps", "f32"]],
};
const LAYER_NORM: KernelSpec = {
  file: "norm", entry: "layer_norm",
  bindings: [{ name: "X", access: "read" }, { name: "W", access: "read" }, { name: "B", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["rows", "u32"], ["D", "u32"], ["xoff", "u32"], ["yoff", "u32"], ["eps", "f32"]],
};
const LAYER_NORM_ROWS: KernelSpec = { ...LAYER_NORM, entry: "layer_norm_rows" };
/** layer_norm_rows: threads (rows) per workgroup */
const LN_RWG = 64;
const SOFTMAX: KernelSpec = {
  file: "norm", entry: "softmax",
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["rows", "u32"], ["D", "u32"], ["xoff", "u32"], ["yoff", "u32"]],
};

// Tunables, measured on lavapipe and SwiftShader (bench kernels --only group_norm,copy):
// per-invocation and per-barrier costs dominate there, so threads do many
// elements each and gn_stats has no barriers.
/** gn_stats: threads per workgroup, and elements per thread. */
const GN_WG = 256, GN_PT = 32;
/** Elements per gn_stats workgroup (one chunk). */
const GN_CHUNK = GN_WG * GN_PT;
/** gn_apply: threads per workgroup and consecutive elements per thread. */
const GN_AWG = 256, GN_EA = 16;
/** gn_merge: threads (one per row) per workgroup; gn_merge_wg (GPUs): threads per row. */
const GN_MWG = 64, GN_MWG_GPU = 256;
/**
 * gn_fused: threads per workgroup (16–64 alike on lavapipe, 128 and 256 slower), and
 * the largest group it takes (elements): 1 MiB of f32, the L2 of a core here.
 */
const GN_FWG = 64, GN_FUSED_MAX = 1 << 18;

function checkParam(op: string, name: string, t: Tensor | undefined, n: number): void {
  if (t && t.numel !== n) throw new SsdError("E_SHAPE", `${op}: ${name} ${shapeStr(t.shape)} must have ${n} elements`);
}

/**
 * group_norm's kernels: `split` (gn_stats, gn_merge, gn_apply: any size, fills
 * a GPU) or `fused` (gn_fused, a workgroup per group, for CPU drivers; taken
 * where a group is at most GN_FUSED_MAX elements and planes hold whole vec4s,
 * else split).
 */
export type GroupNormKernel = "split" | "fused";
export const GROUP_NORM_KERNELS: GroupNormKernel[] = ["split", "fused"];

/** GroupNorm over x [N, C, ...spatial]; weight/bias [C]; optional fused activation (silu); `impl` forces a kernel (tests, tuning). */
export function groupNorm(x: Tensor, groups: number, weight: Tensor | undefined, bias: Tensor | undefined, eps: number, act: Activation = "none", impl?: GroupNormKernel): Tensor {
  const e = x.engine;
  if (x.rank < 2) throw new SsdError("E_SHAPE", `groupNorm: input must be [N, C, ...], got ${shapeStr(x.shape)}`);
  const N = x.dim(0), C = x.dim(1);
  if (!Number.isInteger(groups) || groups < 1 || C % groups) throw new SsdError("E_SHAPE", `groupNorm: ${C} channels do not split into ${groups} groups`);
  checkParam("groupNorm", "weight", weight, C);
  checkParam("groupNorm", "bias", bias, C);
  const y = e.empty(x.shape, actDtype(x));
  if (x.numel === 0) return y;
  const S = x.numel / (N * C);
  const gsz = (C / groups) * S;
  const rows = N * groups;
  const maxEl = windowElems([x, y]);
  if (S % 4 === 0 && gsz <= GN_FUSED_MAX && x.numel <= maxEl && (impl ?? tunedChoice(e, "group_norm", GROUP_NORM_KERNELS)) === "fused") {
    const wx = bindWindow(x, 0, x.numel), wy = bindWindow(y, 0, y.numel);
    if (wx.off % 4 === 0 && wy.off % 4 === 0) {
      const w = weight ?? e.placeholder(), b = bias ?? e.placeholder();
      e.run(GN_FUSED, {
        dtypes: [x.dtype, w.dtype, b.dtype, y.dtype], vec4: [true, false, false, true],
        overrides: { WG: GN_FWG, ACT: ACT[act], HAS_W: weight ? 1 : 0, HAS_B: bias ? 1 : 0 },
      }, [wx.bind, w, b, wy.bind], { rows, gsz, S, C, cg: C / groups, xoff: wx.off, yoff: wy.off, eps }, [rows], "group_norm.fused",
      { flops: 8 * x.numel, bytes: x.numel * (DTYPE_BYTES[x.dtype] + DTYPE_BYTES[y.dtype]) });
      return y;
    }
  }
  const L = Math.min(gsz, GN_CHUNK, maxEl);
  const cpr = ceilDiv(gsz, L);
  const total = rows * cpr;
  const part = e.empty([total * GN_WG * 2], "f32");

  // statistics: chunks in flat order are contiguous, so a run of chunks is one
  // window; with gsz a multiple of 4 every window starts and ends on a vec4
  const v4 = gsz % 4 === 0;
  const startOf = (c: number) => Math.floor(c / cpr) * gsz + (c % cpr) * L;
  const endOf = (c: number) => startOf(c) + Math.min(L, gsz - (c % cpr) * L);
  // a dispatch's partials (GN_WG per chunk) must fit one binding too
  const partMax = Math.floor(e.gpu.limits.maxStorageBufferBindingSize / (GN_WG * 8));
  const perDispatch = Math.max(1, Math.min(Math.floor(maxEl / L), partMax));
  for (let c0 = 0; c0 < total; c0 += perDispatch) {
    const n = Math.min(perDispatch, total - c0);
    const base = startOf(c0);
    const w = bindWindow(x, base, endOf(c0 + n - 1) - base);
    const pw = bindWindow(part, c0 * GN_WG * 2, n * GN_WG * 2);
    e.run(GN_STATS, { dtypes: [x.dtype, "f32"], vec4: [v4, false], overrides: { WG: GN_WG, V4: v4 ? 1 : 0 } }, [w.bind, pw.bind],
      { nchunks: n, c0, cpr, gsz, L, base, xoff: w.off }, [n], "group_norm.stats",
      { flops: 4 * (endOf(c0 + n - 1) - base), bytes: (endOf(c0 + n - 1) - base) * DTYPE_BYTES[x.dtype] + n * GN_WG * 8 });
  }
  const stats = e.empty([rows * 2], "f32");
  const rowsPerMerge = Math.max(1, Math.floor(partMax / cpr));
  // a workgroup per row on GPUs (a thread's dependent chain over thousands of
  // partials idles them: 0.9 ms per call on an H200), a thread per row elsewhere
  const perRow = tunedChoice(e, "group_norm_merge", ["thread", "workgroup"]) === "workgroup";
  for (let r0 = 0; r0 < rows; r0 += rowsPerMerge) {
    const n = Math.min(rowsPerMerge, rows - r0);
    const pw = bindWindow(part, r0 * cpr * GN_WG * 2, n * cpr * GN_WG * 2);
    e.run(perRow ? GN_MERGE_WG : GN_MERGE, { dtypes: ["f32", "f32"], overrides: { WG: perRow ? GN_MWG_GPU : GN_MWG } }, [pw.bind, stats],
      { rows: n, r0, cpr, L, gsz, tw: GN_WG, pt: GN_PT, vw: v4 ? 4 : 1, eps }, perRow ? [n] : [ceilDiv(n, GN_MWG)], "group_norm.merge",
      { flops: 8 * n * cpr * GN_WG, bytes: 8 * n * cpr * GN_WG + 8 * n });
  }

  const w = weight ?? e.placeholder(), b = bias ?? e.placeholder();
  // ALIGNED (S a multiple of GN_EA, a multiple of 4): windows start on
  // multiples of GN_EA and hold whole vec4s, so X and Y are stored as vec4s
  const aligned = S % GN_EA === 0;
  const variant = {
    dtypes: [x.dtype, "f32", w.dtype, b.dtype, y.dtype] as Tensor["dtype"][],
    vec4: [aligned, false, false, false, aligned],
    overrides: { WG: GN_AWG, EA: GN_EA, ALIGNED: aligned ? 1 : 0, ACT: ACT[act], HAS_W: weight ? 1 : 0, HAS_B: bias ? 1 : 0 },
  };
  const per = GN_AWG * GN_EA;
  // windows start at multiples of GN_EA (ALIGNED runs stay inside a plane)
  const step = Math.max(GN_EA, Math.floor(maxEl / GN_EA) * GN_EA);
  const xb = DTYPE_BYTES[x.dtype], yb = DTYPE_BYTES[y.dtype];
  for (let base = 0; base < x.numel; base += step) {
    const count = Math.min(step, x.numel - base);
    const wx = bindWindow(x, base, count), wy = bindWindow(y, base, count);
    e.run(GN_APPLY, variant, [wx.bind, stats, w, b, wy.bind], { count, base, xoff: wx.off, yoff: wy.off, S, C, cg: C / groups }, [ceilDiv(count, per)], "group_norm.apply",
      { flops: 4 * count, bytes: count * (xb + yb) });
  }
  part.dispose();
  stats.dispose();
  return y;
}

/** Threads for a row of D: about 4+ elements each, at least 32, at most 256. */
function rowThreads(D: number): number {
  return D >= 1024 ? 256 : D >= 256 ? 128 : D >= 64 ? 64 : 32;
}

/** One window of whole rows: x's and y's bind ranges (with offsets), and how many rows it holds. */
type RowWindow = { wx: { bind: BindRange; off: number }; wy: { bind: BindRange; off: number }; n: number; D: number };

/** y = a row-wise op of x over its last dim, `run` encoding each window of whole rows (one binding each). */
function rowWindows(op: string, x: Tensor, run: (w: RowWindow, y: Tensor) => void): Tensor {
  const e = x.engine;
  if (x.rank < 1) throw new SsdError("E_SHAPE", `${op}: input must have at least one dimension`);
  const y = e.empty(x.shape, actDtype(x));
  const D = x.dim(-1);
  if (x.numel === 0) return y;
  const rows = x.numel / D;
  const maxEl = windowElems([x, y]);
  if (D > maxEl) throw new SsdError("E_LIMITS", `${op}: a row of ${D} elements exceeds maxStorageBufferBindingSize`);
  const perDispatch = Math.floor(maxEl / D);
  for (let r0 = 0; r0 < rows; r0 += perDispatch) {
    const n = Math.min(perDispatch, rows - r0);
    run({ wx: bindWindow(x, r0 * D, n * D), wy: bindWindow(y, r0 * D, n * D), n, D }, y);
  }
  return y;
}

/** Runs a one-workgroup-per-row kernel over windows of whole rows. */
function rowwise(op: string, spec: KernelSpec, x: Tensor, extra: Tensor[], overrides: Record<string, number>, params: Record<string, number>): Tensor {
  const overridesWg = { WG: rowThreads(x.dim(-1)), ...overrides };
  return rowWindows(op, x, ({ wx, wy, n, D }, y) => {
    const variant = { dtypes: [x.dtype, ...extra.map((t) => t.dtype), y.dtype], overrides: overridesWg };
    x.engine.run(spec, variant, [wx.bind, ...extra, wy.bind], { ...params, rows: n, D, xoff: wx.off, yoff: wy.off }, [n], op);
  });
}

/** layer_norm's kernels: a workgroup per row (GPUs) or a thread per row (`rows`, CPU drivers). */
export type LayerNormKernel = "workgroup" | "rows";
export const LAYER_NORM_KERNELS: LayerNormKernel[] = ["workgroup", "rows"];

/** LayerNorm over the last dim; weight/bias [D]; `impl` forces a kernel (tests, tuning). */
export function layerNorm(x: Tensor, weight: Tensor | undefined, bias: Tensor | undefined, eps: number, impl?: LayerNormKernel): Tensor {
  const D = x.dim(-1);
  checkParam("layerNorm", "weight", weight, D);
  checkParam("layerNorm", "bias", bias, D);
  const e = x.engine;
  const extra = [weight ?? e.placeholder(), bias ?? e.placeholder()];
  const flags = { HAS_W: weight ? 1 : 0, HAS_B: bias ? 1 : 0 };
  if ((impl ?? tunedChoice(e, "layer_norm", LAYER_NORM_KERNELS)) === "workgroup") return rowwise("layer_norm", LAYER_NORM, x, extra, flags, { eps });
  // a thread per row; vec4s where rows and windows allow
  return rowWindows("layer_norm", x, ({ wx, wy, n }, y) => {
    const v4 = D % 4 === 0 && wx.off % 4 === 0 && wy.off % 4 === 0;
    e.run(LAYER_NORM_ROWS, {
      dtypes: [x.dtype, extra[0].dtype, extra[1].dtype, y.dtype], vec4: [v4, v4 && !!weight, v4 && !!bias, v4],
      overrides: { WG: LN_RWG, RV4: v4 ? 1 : 0, ...flags },
    }, [wx.bind, ...extra, wy.bind], { rows: n, D, xoff: wx.off, yoff: wy.off, eps }, [ceilDiv(n, LN_RWG)], "layer_norm",
    { flops: 8 * n * D, bytes: n * D * (DTYPE_BYTES[x.dtype] + DTYPE_BYTES[y.dtype]) });
  });
}

/** softmax over the last dim */
export function softmax(x: Tensor): Tensor {
  return rowwise("softmax", SOFTMAX, x, [], {}, {});
}
