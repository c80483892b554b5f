// Convolutions and pooling (NCHW, PyTorch weight layouts read in place).
//
// conv2d and conv_transpose2d share one implicit-GEMM kernel
// (shaders/conv2d.wgsl): the host describes how reduction taps map to input
// positions and where outputs go, the kernel does the tiling. 1×1 stride-1
// convolutions without bias are plain matmuls (W[O, C] · X[n][C, H·W]) and go
// through ops.matmul where the conv kernel is `tiled` (GPUs); matmul's bias is
// per column, a conv's per row, so 1×1 convs with a bias stay on the conv
// kernel, which handles them as a GEMM with a single tap. On CPU drivers
// (`reg`, `sg`) every 1×1 conv stays on the conv kernel, which is faster there.
//
// Large tensors: when an operand is bigger than one binding, the work is
// split per image and group, into output-row bands, output-channel ranges and
// input-channel ranges (partial sums accumulate in the output, see ACCUM in
// the shader), each binding an aligned sub-range (split.ts).

import { Tensor } from "../tensor.ts";
import { DTYPE_BYTES, shapeStr, type DType } from "../tensor.ts";
import type { Engine, Binding } from "../engine.ts";
import { vec4Bytes, type KernelSpec } from "../kernel.ts";
import { ACT, type Activation } from "./elementwise.ts";
import { matmul, parseWideTile, parsePlan, wideTiles } from "./matmul.ts";
import { SsdError } from "../errors.ts";
import { actDtype, assertShape, ceilDiv, hasSubgroups8, splitParts } from "./util.ts";
import { bindSpan, maxFit, planPlaneRows, spanFits, wholeFits } from "./split.ts";
import { forcedChoice, tunedChoice, tunedEntry } from "../autotune.ts";

/**
 * `tiled`: 64×64 workgroup tiles through workgroup memory (and `conv2d_small`
 * for ≤ 8 output channels per group); `reg`: barrier-free 16×8 register blocks
 * read straight from global memory (CPU drivers); `sg`: `reg` with each step's
 * weights loaded by 8 lanes of a subgroup and broadcast (lavapipe; needs
 * subgroups of at least 8). See shaders/conv2d.wgsl.
 */
export type ConvKernel = "tiled" | "reg" | "sg" | "wide";

export interface Conv2dOptions {
  bias?: Tensor;
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  /**
   * TensorFlow-style SAME padding as transformers' DynamicPad2d (BiT with
   * global_padding "same"): out = ceil(in / stride), total padding
   * max((out - 1)·stride + (k - 1)·dilation + 1 - in, 0), the odd pixel at
   * the bottom/right. Replaces `padding`.
   */
  same?: boolean;
  groups?: number;
  act?: Activation;
  /** added after the activation; same shape as the output */
  residual?: Tensor;
  /** force a kernel (tests, benches); default: the autotuned choice for this adapter */
  kernel?: ConvKernel;
  /** `wide` only: force a tile (convWideTiles); default: the autotuned one */
  tile?: string;
  /** `wide` only: force serial split-K in 1, 2 or 4 parts (also SSD_DEPTH_KERNEL_CONV_SPLIT; convs that fit one dispatch); default: the shape's tuned plan, else convSplit's rule */
  split?: number;
  /**
   * `wide` only, with split 2 or 4: only the last `serialTail` blocks run in
   * parts (conv2d_wide_st), the others whole; convs that fit one dispatch;
   * default: the shape's tuned plan
   */
  serialTail?: number;
}

const pair = (v: number | [number, number] | undefined, d: number): [number, number] =>
  v === undefined ? [d, d] : typeof v === "number" ? [v, v] : [v[0], v[1]];

function checkInt(op: string, what: string, v: number[], min: number): void {
  for (const x of v) if (!Number.isInteger(x) || x < min) throw new SsdError("E_BAD_PARAM", `${op}: ${what} must be integers >= ${min}, got [${v.join(", ")}]`);
}

const GEMM_BINDINGS: KernelSpec["bindings"] = [
    { name: "X", access: "read" },
    { name: "WT", access: "read" },
    { name: "BIAS", access: "read" },
    { name: "R", access: "read" },
    { name: "Y", access: "read_write" },
];
const GEMM_PARAMS: KernelSpec["params"] = [
    ["Cin", "u32"], ["Hin", "u32"], ["Win", "u32"], ["xsC", "u32"], ["Cout", "u32"], ["Ho", "u32"], ["Wo", "u32"], ["Cg", "u32"], ["Og", "u32"],
    ["c0", "u32"], ["cn", "u32"], ["o0", "u32"], ["on", "u32"], ["TH", "u32"], ["TW", "u32"],
    ["ysc", "u32"], ["yoff", "i32"], ["xsc", "u32"], ["xoff", "i32"], ["tyStep", "i32"], ["txStep", "i32"],
    ["wsO", "u32"], ["wsC", "u32"], ["wsA", "u32"], ["wsB", "u32"], ["wOff", "u32"],
    ["oys", "u32"], ["oyo", "u32"], ["oxs", "u32"], ["oxo", "u32"], ["r0", "u32"], ["rowLen", "u32"], ["npix", "u32"],
    ["G", "u32"], ["g0", "u32"], ["b0", "u32"], ["xBase", "u32"], ["wBase", "u32"], ["yBase", "u32"], ["rBase", "u32"],
];
const GEMM: KernelSpec = { file: "conv2d", entry: "conv2d", bindings: GEMM_BINDINGS, params: GEMM_PARAMS };
/** at most SMALL_M output channels per group: a thread per pixel, all channels at once */
const GEMM_SMALL: KernelSpec = { file: "conv2d", entry: "conv2d_small", bindings: GEMM_BINDINGS, params: GEMM_PARAMS };
const SMALL_M = 8;
const GEMM_REG: KernelSpec = { file: "conv2d", entry: "conv2d_reg", bindings: GEMM_BINDINGS, params: GEMM_PARAMS };
const GEMM_SG: KernelSpec = { file: "conv2d", entry: "conv2d_sg", bindings: GEMM_BINDINGS, params: GEMM_PARAMS, enables: ["subgroups"] };
const GEMM_WIDE: KernelSpec = { file: "conv2d", entry: "conv2d_wide", bindings: GEMM_BINDINGS, params: GEMM_PARAMS };
/** conv2d_wide in parts along K (serial split-K); W: its counters and slots, kc: K per part, sw: where the slots start in W */
const GEMM_WIDE_SK: KernelSpec = { file: "conv2d", entry: "conv2d_wide_sk", bindings: [...GEMM_BINDINGS, { name: "W", access: "read_write", atomic: true }], params: [...GEMM_PARAMS, ["kc", "u32"], ["sw", "u32"]] };
/** conv2d_wide_sk for the last blocks only (a serial tail): hy blocks whole, nb blocks in all */
const GEMM_WIDE_ST: KernelSpec = { ...GEMM_WIDE_SK, entry: "conv2d_wide_st", params: [...GEMM_WIDE_SK.params, ["hy", "u32"], ["nb", "u32"]] };
/** The scratch buffer (Engine.zeroScratch) of serial split-K's counters and slots. */
export const SERIAL_SCRATCH = "wide:serial";
/** conv2d_reg: output channels and pixels per thread */
const REG_M = 16, REG_P = 8;
/** conv2d_reg's lanes per workgroup (LW): 64, fewer (down to a SIMD width of 8) for outputs of fewer than 64·REG_P pixels */
const regLanes = (npix: number) => Math.min(64, Math.max(8, 2 ** Math.ceil(Math.log2(ceilDiv(npix, REG_P)))));

/** The conv kernels this device can run. */
export const convKernels = (e: Engine): ConvKernel[] => (hasSubgroups8(e) ? ["reg", "sg", "tiled", "wide"] : ["reg", "tiled", "wide"]);

/**
 * conv2d_wide's tiles: matmul's `wide` tiles (WIDE_TILES) in which a thread
 * stages one vec4 of B per step (see the kernel); tuned apart (op `conv_tile`,
 * env SSD_DEPTH_KERNEL_CONV_TILE).
 */
export function convWideTiles(e: Engine): string[] {
  return wideTiles(e).filter((n) => {
    const { overrides: o } = parseWideTile(n);
    return o.GTN * o.GW_X * o.GK === 4 * o.GW_X * o.GW_Y;
  });
}

type WideTileT = ReturnType<typeof parseWideTile>;

/** Fewer conv2d_wide workgroups than this run in parts along K on GPUs, else on a narrower tile or the `tiled` kernel (see runGemm). */
const WIDE_MIN_WORKGROUPS = 256;

/**
 * Serial split-K parts of a whole conv2d_wide dispatch of `blocks` workgroups
 * and reduction depth K: forced (option, SSD_DEPTH_KERNEL_CONV_SPLIT), else on
 * GPUs, for grids under WIDE_MIN_WORKGROUPS, doubled (up to 4) while the grid
 * has under CONV_SPLIT_FILL workgroups and each part keeps at least 512 of K;
 * 1 on CPU drivers. Measured on an H200 (kernel time, one image; README):
 * 1280→1280 at 32² (80 blocks of 128×128) 22.1 → 27.9 % of FP32 peak in 4
 * parts, 640→640 at 64² (160 blocks) 29.8 → 33.6 % in 4 parts (28.8 % in 2,
 * another run); 320→320 at 128² (384 blocks) lost in 2 parts.
 */
const CONV_SPLIT_FILL = 512;
function convSplit(e: Engine, blocks: number, K: number, forced?: number): number {
  return splitParts(e, { op: "conv2d", key: "conv_split", allowed: [1, 2, 4], forced, size: blocks, fill: CONV_SPLIT_FILL, K, minDepth: 512 });
}

/** conv2d_wide's tile: the one asked for (option or env SSD_DEPTH_KERNEL_CONV_TILE), else the tuned one. */
function convTile(e: Engine, asked?: string): { tile: ReturnType<typeof parseWideTile>; forced: boolean } {
  const options = convWideTiles(e);
  if (asked && !options.includes(asked)) throw new SsdError("E_BAD_PARAM", `conv2d: tile '${asked}' is not one of this device's conv tiles (${options.join(", ")})`);
  const forced = asked ?? forcedChoice("conv_tile", options);
  return { tile: parseWideTile(forced ?? tunedChoice(e, "conv_tile", options)), forced: !!forced };
}

/**
 * Per-shape conv plans, as matmul's `wide` plans: which tile, how many
 * serial split-K parts and how many of the last blocks run in them (a
 * serial tail, conv2d_wide_st) depend on how many workgroups the GPU runs at
 * once, which WebGPU does not say. A tuning run times convPlanCandidates on
 * the convs it is given and caches the fastest under the GEMM the conv is
 * (images·groups × output channels × pixels × channels and taps) and its
 * dtypes; a conv without one takes the tuned tile and convSplit's rule.
 */
export function convPlanKey(images: number, O: number, npix: number, C: number, kH: number, kW: number, xDtype: DType, wDtype: DType): string {
  return `conv_plan:${images}x${O}x${npix}x${C}k${kH}x${kW}:${xDtype}.${wDtype}`;
}

/** Serial parts a conv plan may name: 1 (whole), 2 or 4 (convSplit's counts). */
const CONV_SPLITS = [1, 2, 4];
const convPlanOk = (p: { split: number; tail?: number; serialTail?: number }) => p.tail === undefined && CONV_SPLITS.includes(p.split) && (p.serialTail === undefined || (p.serialTail > 0 && p.split > 1));

/**
 * The plans a tuning run times first for a conv whose GEMM is `images` × O
 * output channels × `npix` pixels × K (channels · taps): the tuned conv tile
 * and one other (128x128k8t8, else 128x64k8t8) whole and in 2 and 4 serial
 * parts of at least 256 of K. Serial tails (convTailPlans) follow in a second
 * round, on the tile that won the first: on an H200 the tile tuning chose
 * 128x64k8t8 by 1 % (3.11 against 3.14 ms), tails were then offered on it
 * alone, and 320→320 at 128² ran 1.36–1.44 ms on the plan picked against
 * 1.28 ms on 128x128k8t8/2s128 (README).
 */
export function convPlanCandidates(e: Engine, images: number, O: number, npix: number, K: number): string[] {
  const can = convWideTiles(e);
  const tiles = [...new Set([tunedChoice(e, "conv_tile", can), "128x128k8t8", "128x64k8t8"])].filter((t) => can.includes(t)).slice(0, 2);
  return tiles.flatMap((t) => CONV_SPLITS.filter((s) => s === 1 || K / s >= 256).map((s) => `${t}/${s}`));
}

/**
 * The serial tails of a conv's second tuning round, on `tile`: the last 1/8,
 * 1/6, 1/4, 1/3 and 1/2 of its blocks in 2 and 4 parts (each part at least
 * 128 deep). On an H200 the 3×3 convs ran at 26–33 % of FP32 peak with the
 * rule alone (README); 320→320 at 128² on 128×128 blocks is 384 of them, a
 * wave and a half at two per SM, which a tail can even out.
 */
export function convTailPlans(tile: string, images: number, O: number, npix: number, K: number): string[] {
  const t = parseWideTile(tile);
  const nb = ceilDiv(npix, t.bn) * ceilDiv(O, t.bm) * images;
  const tails = [...new Set([1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2].map((f) => Math.round(nb * f)))].filter((b) => b >= 1 && b < nb);
  return tails.flatMap((b) => [2, 4].filter((p) => K / p >= 128).map((p) => `${tile}/${p}s${b}`));
}

/**
 * conv2d_wide's tile, serial parts and serial tail: forced (options, env
 * SSD_DEPTH_KERNEL_CONV_PLAN for a whole plan, SSD_DEPTH_KERNEL_CONV_TILE /
 * _CONV_SPLIT), else the shape's tuned plan, else the tuned tile (split and
 * tail then come from convSplit's rule). `asGiven`: run the tile as it is,
 * even on a grid the rule would move to a narrower one.
 */
function convWidePlan(e: Engine, key: string, ops: Operands): { tile: WideTileT; asGiven: boolean; split?: number; serialTail?: number } {
  const bad = (what: string) => new SsdError("E_BAD_PARAM", `${what}: serial parts must be one of ${CONV_SPLITS.join(", ")}, and a serial tail of at least one block needs 2 or 4 of them`);
  const envPlan = process.env.SSD_DEPTH_KERNEL_CONV_PLAN || undefined;
  if (envPlan && ops.tile === undefined && ops.split === undefined && ops.serialTail === undefined) {
    const p = parsePlan(envPlan, "SSD_DEPTH_KERNEL_CONV_PLAN");
    if (!convPlanOk(p)) throw bad(`SSD_DEPTH_KERNEL_CONV_PLAN=${envPlan}`);
    return { tile: convTile(e, p.tile).tile, asGiven: true, split: p.split, serialTail: p.serialTail };
  }
  if (ops.serialTail !== undefined && !convPlanOk({ split: ops.split ?? 0, serialTail: ops.serialTail })) throw bad(`conv2d: serial tail ${ops.serialTail} in ${ops.split} parts`);
  const forced = ops.tile !== undefined || ops.split !== undefined || ops.serialTail !== undefined ||
    forcedChoice("conv_tile", convWideTiles(e)) !== undefined || forcedChoice("conv_split", CONV_SPLITS.map(String)) !== undefined;
  if (!forced) {
    const c = tunedEntry(e, key);
    // a cache entry this version cannot read is passed over like a missing one
    const p = c ? (() => { try { return parsePlan(c); } catch { return null; } })() : null;
    if (p && convWideTiles(e).includes(p.tile) && convPlanOk(p)) return { tile: parseWideTile(p.tile), asGiven: true, split: p.split, serialTail: p.serialTail };
  }
  const t = convTile(e, ops.tile);
  return { tile: t.tile, asGiven: t.forced, split: ops.split, serialTail: ops.serialTail };
}

const pickKernel = (e: Engine, forced?: ConvKernel): ConvKernel => {
  if (forced === "sg" && !hasSubgroups8(e)) throw new SsdError("E_BAD_PARAM", "conv2d: kernel 'sg' needs subgroups of at least 8 invocations, which this device lacks");
  return forced ?? (tunedChoice(e, "conv2d", convKernels(e)) as ConvKernel);
};

/** The barrier-free kernel for CPU drivers (sg where the device has it), for callers that want one whatever the tuned choice. */
export const regKernel = (e: Engine): ConvKernel => {
  const k = pickKernel(e);
  return k === "tiled" || k === "wide" ? (hasSubgroups8(e) ? "sg" : "reg") : k;
};

/** How the implicit GEMM maps (tap, pixel) to input and output positions; see shaders/conv2d.wgsl. */
interface Geom {
  N: number; Cin: number; Hin: number; Win: number; Cout: number; Ho: number; Wo: number;
  groups: number; Cg: number; Og: number;
  TH: number; TW: number; ysc: number; yoff: number; tyStep: number; xsc: number; xoff: number; txStep: number;
  wsO: number; wsC: number; wsA: number; wsB: number; wOff: number;
  /** weight elements one (output, input) channel pair spans */
  wTaps: number;
  oys: number; oyo: number; oxs: number; oxo: number;
  /** rows of the dispatch's pixel space and pixels per row */
  rows: number; rowLen: number;
  /** input rows [lo, hi) that output rows [r0, r0+nr) of the pixel space read */
  inRows(r0: number, nr: number): [number, number];
}

interface Operands { x: Tensor; w: Tensor; bias?: Tensor; res?: Tensor; y: Tensor; act: Activation; kernel?: ConvKernel; tile?: string; split?: number; serialTail?: number }

function outRows(g: Geom, r0: number, nr: number): [number, number] {
  return [r0 * g.oys + g.oyo, (r0 + nr - 1) * g.oys + g.oyo + 1];
}

function clampRows(lo: number, hi: number, H: number): [number, number] {
  lo = Math.min(Math.max(lo, 0), H - 1);
  hi = Math.max(Math.min(hi, H), lo + 1);
  return [lo, hi];
}

/** Encodes the implicit GEMM for one geometry, whole or split (see file comment). */
function runGemm(e: Engine, g: Geom, ops: Operands): void {
  if (g.rows <= 0 || g.rowLen <= 0) return;
  const maxWg = e.gpu.limits.maxComputeWorkgroupsPerDimension;
  const { x, w, y, res } = ops;
  const bias = ops.bias ?? e.placeholder();
  const r = res ?? e.placeholder();
  const dtypes: DType[] = [x.dtype, w.dtype, bias.dtype, r.dtype, y.dtype];
  const fixed = {
    Cin: g.Cin, Hin: g.Hin, Win: g.Win, xsC: g.Hin * g.Win, Cout: g.Cout, Ho: g.Ho, Wo: g.Wo, Cg: g.Cg, Og: g.Og, TH: g.TH, TW: g.TW,
    ysc: g.ysc, yoff: g.yoff, xsc: g.xsc, xoff: g.xoff, tyStep: g.tyStep, txStep: g.txStep,
    wsO: g.wsO, wsC: g.wsC, wsA: g.wsA, wsB: g.wsB, wOff: g.wOff, oys: g.oys, oyo: g.oyo, oxs: g.oxs, oxo: g.oxo, rowLen: g.rowLen,
  };
  // Workgroup blocks (pixels tN × output channels tM): the 64×64 tiled
  // kernel, or one pixel per thread with all (≤ 8) output channels when a
  // 64-row tile would be mostly empty; reg: 16 channels × LW lanes of 8 pixels.
  const kernel = pickKernel(e, ops.kernel);
  const small = (kernel === "tiled" || kernel === "wide") && g.Og <= SMALL_M;
  const lanes = regLanes(g.rows * g.rowLen);
  const regLike = kernel === "reg" || kernel === "sg";
  // wide on a grid of few workgroups leaves a big GPU partly idle. Under
  // WIDE_MIN_WORKGROUPS of the tuned tile: on GPUs its blocks in parts along
  // K (convSplit; whole dispatches); otherwise (split 1) the tile of half its
  // width (fewer pixels per block) where that fills them, else tiled's 64×64
  // blocks. H200, kernel time (README): 640→640 at 64² 15.1 TFLOP/s tiled,
  // 19.8 on 128×64 (320 blocks), 22.5 on 128×128 in 4 parts; 1280 channels at
  // 32² (160 blocks of 128×64) 14.8 tiled, 12.7 wide, 18.7 on 128×128 in 4 parts.
  // A forced tile (option or SSD_DEPTH_KERNEL_CONV_TILE: tests, benches) or a
  // plan (the shape's tuned one, or forced) runs as given.
  const K = g.Cg * g.TH * g.TW;
  const wt = kernel === "wide" && !small ? convWidePlan(e, convPlanKey(g.N * g.groups, g.Og, g.rows * g.rowLen, g.Cg, g.TH, g.TW, x.dtype, w.dtype), ops) : null;
  const blocks = (t: WideTileT) => ceilDiv(g.rows * g.rowLen, t.bn) * ceilDiv(g.Og, t.bm) * g.N * g.groups;
  // serial split-K (whole dispatches of the tuned or forced tile only): a small grid in parts instead of a narrower tile
  const split = wt ? convSplit(e, blocks(wt.tile), K, wt.split) : 1;
  let tile = wt && (wt.asGiven || split > 1 || blocks(wt.tile) >= WIDE_MIN_WORKGROUPS) ? wt.tile : null;
  if (wt && !tile) {
    const half = `${wt.tile.bm}x${wt.tile.bn / 2}k${wt.tile.overrides.GK}t${wt.tile.overrides.GTN}`;
    if (convWideTiles(e).includes(half) && blocks(parseWideTile(half)) >= WIDE_MIN_WORKGROUPS) tile = parseWideTile(half);
  }
  const [spec, label, tN, tM]: [KernelSpec, string, number, number] = kernel === "reg" ? [GEMM_REG, "conv2d.reg", REG_P * lanes, REG_M]
    : kernel === "sg" ? [GEMM_SG, "conv2d.sg", REG_P * lanes, REG_M]
    : small ? [GEMM_SMALL, "conv2d.small", 256, SMALL_M]
    // wide: the tile and the GEMM (as convPlanKey names it), so a profile tells the shapes apart
    : tile ? [GEMM_WIDE, `conv2d.wide:${tile.name}:${g.N * g.groups}x${g.Og}x${g.rows * g.rowLen}x${g.Cg}k${g.TH}x${g.TW}`, tile.bn, tile.bm] : [GEMM, "conv2d", 64, 64];
  // wide: A rows straight from the weights when their taps are contiguous in k
  const wRows = g.wsB === 1 && g.wsA === g.TW && g.wsC === g.TH * g.TW;
  // reg / sg, whole dispatch only, planes of whole vec4s. PX4: each lane's
  // runs of 4 adjacent pixels read as vec4s, for a 1×1 stride-1 unpadded GEMM
  // over contiguous pixels (one load per run) or with ROW3: 3 column taps at
  // -1, 0, +1, stride 1 along x, output and input rows of whole vec4s (3×3
  // pad-1 convs; 3 loads per run, tap row and channel serve all 3 taps)
  const vec4Planes = (g.rows * g.rowLen) % 4 === 0 && (g.Hin * g.Win) % 4 === 0 && x.numel % 4 === 0;
  const row3 = regLike && vec4Planes && g.TW === 3 && g.txStep === 1 && g.xoff === -1 && g.xsc === 1 && g.rowLen % 4 === 0 && g.Win % 4 === 0;
  const px4 = regLike && vec4Planes && (row3 || (g.TH === 1 && g.TW === 1 && g.ysc === 1 && g.xsc === 1 && g.yoff === 0 && g.xoff === 0 && g.rowLen === g.Win));
  const overrides = (first: boolean, last: boolean, whole = false) => ({
    ...(regLike ? { LW: lanes, PX4: whole && px4 ? 1 : 0, ROW3: whole && row3 ? 1 : 0 } : {}),
    ...(tile ? { ...tile.overrides, WIDE_BT: 0, W_ROWS: wRows ? 1 : 0, KH: g.TH, KW: g.TW } : {}),
    ACT: last ? ACT[ops.act] : 0, HAS_BIAS: first && !!ops.bias ? 1 : 0, HAS_RES: last && !!res ? 1 : 0, ACCUM: first ? 0 : 1,
  });
  const eb = (t: Tensor) => t.byteSize;
  const elB = (t: Tensor) => DTYPE_BYTES[t.dtype];
  const taps = g.TH * g.TW;
  // reg / sg: the channel blocks of one pixel block are adjacent workgroups, so
  // they find its input in cache (1×1 convs at 128²: 1.45× on lavapipe)
  const grid = (npix: number, on: number, z: number): [number, number, number] =>
    regLike ? [ceilDiv(on, tM), ceilDiv(npix, tN), z] : [ceilDiv(npix, tN), ceilDiv(on, tM), z];
  const whole = wholeFits(e, x) && wholeFits(e, w) && wholeFits(e, y) && (!res || wholeFits(e, res)) &&
    ceilDiv(g.rows * g.rowLen, tN) <= maxWg && ceilDiv(g.Og, tM) <= maxWg && g.N * g.groups <= maxWg;
  if (whole) {
    const gr = grid(g.rows * g.rowLen, g.Og, g.N * g.groups);
    // serial split-K: a counter per thread of each block in parts, then a
    // slot of 64 words per thread for each part of each (wide_serial.wgsl);
    // every block (conv2d_wide_sk), or a serial tail: only the last T of the
    // nb blocks, on a 1-D range of workgroups (conv2d_wide_st)
    const nb = gr[0] * gr[1] * gr[2], T = Math.min(wt?.serialTail ?? 0, nb), n = nb - T + T * split;
    const scratch = (blocks: number) => {
      const threads = blocks * (tile ? tile.overrides.GW_X * tile.overrides.GW_Y : 0), sw = Math.ceil(threads / 64) * 64;
      return { sw, words: sw + threads * split * 64 };
    };
    const kc = tile ? Math.ceil(K / split / tile.overrides.GK) * tile.overrides.GK : 0;
    const st = !!tile && split > 1 && T > 0 && spanFits(e, scratch(T).words, "u32") && n <= maxWg * maxWg;
    const serial = !st && !!tile && split > 1 && spanFits(e, scratch(nb).words, "u32") && gr[0] * split <= maxWg;
    const ws = scratch(st ? T : nb);
    const sk: { spec: KernelSpec; params: Record<string, number>; grid: [number, number, number]; label: string } | null = st ? {
      spec: GEMM_WIDE_ST, params: { kc, sw: ws.sw, hy: nb - T, nb }, grid: n <= maxWg ? [n, 1, 1] : [maxWg, ceilDiv(n, maxWg), 1], label: `${label}:serial${T}x${split}`,
    } : serial ? {
      spec: GEMM_WIDE_SK, params: { kc, sw: ws.sw }, grid: [gr[0] * split, gr[1], gr[2]], label: `${label}:serial${split}`,
    } : null;
    e.run(sk?.spec ?? spec, {
      dtypes: sk ? [...dtypes, "u32"] : dtypes, vec4: [px4, false, false, false, false, ...(sk ? [false] : [])],
      overrides: sk ? { ...overrides(true, true, true), KSPLIT: split } : overrides(true, true, true),
    }, [x, w, bias, r, y, ...(sk ? [e.zeroScratch(SERIAL_SCRATCH, ws.words * 4)] : [])], {
      ...fixed, ...sk?.params, c0: 0, cn: g.Cg, o0: 0, on: g.Og, r0: 0, npix: g.rows * g.rowLen, G: g.groups, g0: 0, b0: 0, xBase: 0, wBase: 0, yBase: 0, rBase: 0,
    }, sk?.grid ?? gr, sk?.label ?? label, {
      flops: 2 * g.N * g.groups * g.Og * g.rows * g.rowLen * g.Cg * taps,
      // conv_transpose2d's phases each write only their share of Y
      bytes: eb(x) + eb(w) + (ops.bias ? eb(ops.bias) : 0) + g.N * g.Cout * g.rows * g.rowLen * (elB(y) + (res ? elB(res) : 0)),
    });
    return;
  }

  const inPlane = g.Hin * g.Win, outPlane = g.Ho * g.Wo;
  const inFit = (cn: number, r0: number, nr: number) => {
    const [lo, hi] = clampRows(...g.inRows(r0, nr), g.Hin);
    return spanFits(e, (cn - 1) * inPlane + (hi - lo) * g.Win, x.dtype);
  };
  const outFit = (on: number, r0: number, nr: number) => {
    const [lo, hi] = outRows(g, r0, nr);
    const n = (on - 1) * outPlane + (hi - lo) * g.Wo;
    return spanFits(e, n, y.dtype) && (!res || spanFits(e, n, res.dtype));
  };
  const wFit = (on: number, cn: number) => spanFits(e, (on - 1) * g.wsO + (cn - 1) * g.wsC + g.wTaps, w.dtype);
  const limitErr = (what: string) => new SsdError("E_LIMITS", `conv2d ${shapeStr(x.shape)} * ${shapeStr(w.shape)}: ${what} does not fit maxStorageBufferBindingSize (${e.gpu.limits.maxStorageBufferBindingSize})`);

  // Input channels per pass: as many as fit with every input row; when not
  // even one plane fits, one channel at a time in row bands.
  const cn = Math.max(1, maxFit(g.Cg, (c) => inFit(c, 0, g.rows) && wFit(1, c)));
  if (!wFit(1, cn)) throw limitErr("one filter");
  const nChunks = Math.ceil(g.Cg / cn);
  for (let b = 0; b < g.N; b++) {
    for (let gi = 0; gi < g.groups; gi++) {
      for (let r0 = 0; r0 < g.rows;) {
        const nr = maxFit(g.rows - r0, (n) => inFit(cn, r0, n) && outFit(1, r0, n) && ceilDiv(n * g.rowLen, tN) <= maxWg);
        if (nr === 0) throw limitErr("one output row");
        const on = maxFit(g.Og, (o) => outFit(o, r0, nr) && wFit(o, cn) && ceilDiv(o, tM) <= maxWg);
        if (on === 0) throw limitErr("one output channel");
        const [ilo, ihi] = clampRows(...g.inRows(r0, nr), g.Hin);
        const [olo, ohi] = outRows(g, r0, nr);
        for (let o0 = 0; o0 < g.Og; o0 += on) {
          const onn = Math.min(on, g.Og - o0);
          const oA = gi * g.Og + o0, oB = oA + onn - 1;
          const ys = bindSpan(y, (b * g.Cout + oA) * outPlane + olo * g.Wo, (b * g.Cout + oB) * outPlane + ohi * g.Wo);
          const rs = res ? bindSpan(res, (b * g.Cout + oA) * outPlane + olo * g.Wo, (b * g.Cout + oB) * outPlane + ohi * g.Wo) : null;
          for (let ci = 0; ci < nChunks; ci++) {
            const c0 = ci * cn, cnn = Math.min(cn, g.Cg - c0);
            const cA = gi * g.Cg + c0, cB = cA + cnn - 1;
            const xs = bindSpan(x, (b * g.Cin + cA) * inPlane + ilo * g.Win, (b * g.Cin + cB) * inPlane + ihi * g.Win);
            const ws = bindSpan(w, oA * g.wsO + c0 * g.wsC, oB * g.wsO + (c0 + cnn - 1) * g.wsC + g.wTaps);
            const bindings: Binding[] = [xs.bind, ws.bind, bias, rs ? rs.bind : r, ys.bind];
            e.run(spec, { dtypes, overrides: overrides(ci === 0, ci === nChunks - 1) }, bindings, {
              ...fixed, c0, cn: cnn, o0, on: onn, r0, npix: nr * g.rowLen, G: 1, g0: gi, b0: b,
              xBase: xs.base, wBase: ws.base, yBase: ys.base, rBase: rs ? rs.base : 0,
            }, grid(nr * g.rowLen, onn, 1), `${label}.split`, {
              flops: 2 * onn * nr * g.rowLen * cnn * taps,
              bytes: cnn * (ihi - ilo) * g.Win * elB(x) + cnn * onn * taps * elB(w) + onn * nr * g.rowLen * (elB(y) * (ci === 0 ? 1 : 2) + (ci === nChunks - 1 && res ? elB(res) : 0)) + (ci === 0 && ops.bias ? onn * elB(ops.bias) : 0),
            });
          }
        }
        r0 += nr;
      }
    }
  }
}

/**
 * One dispatch of the barrier-free GEMM (`reg` or `sg`) for ops that are not
 * convolutions but whose operands the kernel's index arithmetic can describe
 * (attention's Q·Kᵀ and P·V read Q, K and V in place):
 *   C[m, n] = Σ_k A[m, k]·B[k, n],  m < on, n < npix, k < K
 *   A[m, k] = WT[(o0 + m)·wsO + k·wsC + wOff − wBase]
 *   B[k, n] = X[(b0·Cin + k)·xsC + n·xsN + xoff − xBase]
 *   C[m, n] → Y[(b0·Cout + o0 + m)·ysM + n·ysN + yOff − yBase]
 * The pixels are one row (xsN = 1, Hin = 1) or one column (Win = xsN, and
 * then xoff < xsN) of the conv's input geometry, and likewise for the output.
 * The caller's bindings must fit.
 */
export interface RawGemm {
  K: number; on: number; npix: number;
  wsO: number; wsC: number; wOff: number; wBase: number; o0: number;
  b0: number; Cin: number; xsC: number; xsN: number; xoff: number; xBase: number;
  Cout: number; ysM: number; ysN: number; yOff: number; yBase: number;
}

export function rawGemm(e: Engine, kernel: "reg" | "sg", g: RawGemm, bindings: { x: Binding; w: Binding; y: Binding }, dtypes: [DType, DType, DType], label: string, cost: { flops: number; bytes: number }): void {
  const spec = kernel === "sg" ? GEMM_SG : GEMM_REG;
  const lanes = regLanes(g.npix);
  const grid: [number, number, number] = [ceilDiv(g.on, REG_M), ceilDiv(g.npix, REG_P * lanes), 1];
  const maxWg = e.gpu.limits.maxComputeWorkgroupsPerDimension;
  if (grid[0] > maxWg || grid[1] > maxWg) throw new SsdError("E_LIMITS", `${label}: a ${g.on}×${g.npix} GEMM needs a grid of [${grid.slice(0, 2)}] workgroups, more than ${maxWg} per dimension`);
  if (g.xsN !== 1 && g.xoff >= g.xsN) throw new SsdError("E_INTERNAL", `${label}: column offset ${g.xoff} must be below the pixel stride ${g.xsN}`);
  // pixel n at input (iy, ix) = (0, n + xoff) or (n, xoff); output pixel (jr, i) = (0, n) or (n, 0)
  const row = g.xsN === 1;
  // PX4 (see the shader): one row of pixels read from 4-aligned offsets, X holding whole vec4s
  const xBytes = bindings.x instanceof Tensor ? Math.ceil(bindings.x.storage.byteSize / 4) * 4 : bindings.x.byteSize;
  const px4 = row && g.npix % 4 === 0 && g.xoff % 4 === 0 && g.xsC % 4 === 0 && g.xBase % 4 === 0 && xBytes % vec4Bytes(dtypes[0]) === 0;
  const geom = row
    ? { Hin: 1, Win: g.xoff + g.npix, rowLen: g.npix, Ho: 1, Wo: g.ysM, oys: 0, oxs: g.ysN }
    : { Hin: g.npix, Win: g.xsN, rowLen: 1, Ho: g.ysM, Wo: 1, oys: g.ysN, oxs: 0 };
  e.run(spec, { dtypes: [dtypes[0], dtypes[1], "f32", "f32", dtypes[2]], vec4: [px4, false, false, false, false], overrides: { LW: lanes, PX4: px4 ? 1 : 0, ACT: 0, HAS_BIAS: 0, HAS_RES: 0, ACCUM: 0 } },
    [bindings.x, bindings.w, e.placeholder(), e.placeholder(), bindings.y], {
      ...geom, Cin: g.Cin, xsC: g.xsC, Cout: g.Cout, Cg: g.K, Og: g.on, c0: 0, cn: g.K, o0: g.o0, on: g.on, TH: 1, TW: 1,
      ysc: 1, yoff: 0, xsc: 1, xoff: g.xoff, tyStep: 0, txStep: 0, wsO: g.wsO, wsC: g.wsC, wsA: 0, wsB: 0, wOff: g.wOff,
      oyo: 0, oxo: g.yOff, r0: 0, npix: g.npix, G: 1, g0: 0, b0: g.b0,
      xBase: g.xBase, wBase: g.wBase, yBase: g.yBase, rBase: 0,
    }, grid, label, cost);
}

/** x [N, C, H, W], weight [O, C/groups, kH, kW] (PyTorch layout) -> [N, O, Ho, Wo] */
export function conv2d(x: Tensor, weight: Tensor, opts: Conv2dOptions = {}): Tensor {
  const e = x.engine;
  assertShape("conv2d", x, 4);
  assertShape("conv2d", weight, 4, "weight");
  const [N, C, H, W] = x.shape;
  const [O, Cg, kH, kW] = weight.shape;
  const groups = opts.groups ?? 1;
  const [sh, sw] = pair(opts.stride, 1), [dh, dw] = pair(opts.dilation, 1);
  let [ph, pw] = pair(opts.padding, 0);
  checkInt("conv2d", "stride and dilation", [sh, sw, dh, dw, groups], 1);
  checkInt("conv2d", "padding", [ph, pw], 0);
  // With SAME the bottom/right padding may be one more than the top/left: the
  // kernel reads zeros past the input's end anyway, so only the top/left
  // offset and the output size change.
  let padH = 2 * ph, padW = 2 * pw;
  if (opts.same) {
    if (opts.padding) throw new SsdError("E_BAD_PARAM", "conv2d: give either same or padding");
    padH = Math.max((Math.ceil(H / sh) - 1) * sh + (kH - 1) * dh + 1 - H, 0);
    padW = Math.max((Math.ceil(W / sw) - 1) * sw + (kW - 1) * dw + 1 - W, 0);
    ph = Math.floor(padH / 2); pw = Math.floor(padW / 2);
  }
  if (C % groups || O % groups || Cg !== C / groups) {
    throw new SsdError("E_SHAPE", `conv2d: input ${shapeStr(x.shape)} and weight ${shapeStr(weight.shape)} do not match with groups=${groups} (weight dim 1 must be C/groups)`);
  }
  const Ho = Math.floor((H + padH - dh * (kH - 1) - 1) / sh) + 1;
  const Wo = Math.floor((W + padW - dw * (kW - 1) - 1) / sw) + 1;
  if (Ho <= 0 || Wo <= 0) throw new SsdError("E_SHAPE", `conv2d: a ${kH}x${kW} kernel (dilation ${dh}x${dw}, padding ${ph}x${pw}) does not fit input ${shapeStr(x.shape)}`);
  if (opts.bias && opts.bias.numel !== O) throw new SsdError("E_SHAPE", `conv2d: bias ${shapeStr(opts.bias.shape)} for ${O} output channels`);
  const outShape = [N, O, Ho, Wo];
  if (opts.residual && opts.residual.numel !== N * O * Ho * Wo) throw new SsdError("E_SHAPE", `conv2d: residual ${shapeStr(opts.residual.shape)} for output ${shapeStr(outShape)}`);

  // On CPU drivers conv2d_reg beats the matmul kernels on 1×1 convs too (2-8×);
  // GPU kernels hand them to matmul (`wide` to matmul's `wide`, with its vec4 loads).
  const picked = pickKernel(e, opts.kernel);
  if (kH === 1 && kW === 1 && sh === 1 && sw === 1 && padH === 0 && padW === 0 && groups === 1 && !opts.bias && (picked === "tiled" || picked === "wide") &&
    wholeFits(e, x) && wholeFits(e, weight) && (!opts.residual || wholeFits(e, opts.residual)) && N * O * H * W * 4 <= e.gpu.limits.maxStorageBufferBindingSize &&
    Math.ceil(H * W / 64) <= e.gpu.limits.maxComputeWorkgroupsPerDimension) {
    return viaMatmul(x, weight, opts.act ?? "none", opts.residual, outShape, picked === "wide" ? "wide" : undefined);
  }

  const y = e.empty(outShape, actDtype(x));
  runGemm(e, {
    N, Cin: C, Hin: H, Win: W, Cout: O, Ho, Wo, groups, Cg, Og: O / groups,
    TH: kH, TW: kW, ysc: sh, yoff: -ph, tyStep: dh, xsc: sw, xoff: -pw, txStep: dw,
    wsO: Cg * kH * kW, wsC: kH * kW, wsA: kW, wsB: 1, wOff: 0, wTaps: kH * kW,
    oys: 1, oyo: 0, oxs: 1, oxo: 0, rows: Ho, rowLen: Wo,
    inRows: (r0, nr) => [r0 * sh - ph, (r0 + nr - 1) * sh - ph + (kH - 1) * dh + 1],
  }, { x, w: weight, bias: opts.bias, res: opts.residual, y, act: opts.act ?? "none", kernel: opts.kernel, tile: opts.tile, split: opts.split, serialTail: opts.serialTail });
  return y;
}

/**
 * A linear layer on the barrier-free GEMM (CPU drivers):
 *   y[m, n] = act(Σ_k x[m, k]·w[n, k] + bias[n]) + residual[m, n]
 * from xT = xᵀ [K, M], so the M rows are pixels of one column of planes
 * (Hin = M, Win = 1) and with PX4 a lane loads 4 adjacent rows in one vec4.
 * The output is written straight into y's row-major [M, N]: output channel
 * n of pixel m at n + m·N (one-pixel planes, Ho = Wo = 1, pixel row stride
 * oys = N), so there is no transpose back and the residual add is fused.
 */
export function linearT(xT: Tensor, w: Tensor, opts: { bias?: Tensor; act?: Activation; residual?: Tensor; kernel?: ConvKernel } = {}): Tensor {
  const e = xT.engine;
  const [K, M] = xT.shape, N = w.dim(0);
  if (xT.rank !== 2 || w.rank !== 2 || w.dim(1) !== K) throw new SsdError("E_SHAPE", `linearT: xᵀ ${shapeStr(xT.shape)} and weight ${shapeStr(w.shape)} do not match`);
  const y = e.empty([M, N], actDtype(xT));
  runGemm(e, {
    N: 1, Cin: K, Hin: M, Win: 1, Cout: N, Ho: 1, Wo: 1, groups: 1, Cg: K, Og: N,
    TH: 1, TW: 1, ysc: 1, yoff: 0, tyStep: 0, xsc: 1, xoff: 0, txStep: 0,
    wsO: K, wsC: 1, wsA: 0, wsB: 0, wOff: 0, wTaps: 1,
    oys: N, oyo: 0, oxs: 0, oxo: 0, rows: M, rowLen: 1,
    inRows: (r0, nr) => [r0, r0 + nr],
  }, { x: xT, w, bias: opts.bias, res: opts.residual, y, act: opts.act ?? "none", kernel: opts.kernel ?? regKernel(e) });
  return y;
}

/** 1×1 convolution as W[O, C] · X[n][C, H·W] (matmul with a shared A and a batched B). */
function viaMatmul(x: Tensor, weight: Tensor, act: Activation, residual: Tensor | undefined, outShape: number[], kernel?: "wide"): Tensor {
  const [N, C, H, W] = x.shape;
  const O = weight.dim(0);
  const views: Tensor[] = [weight.reshape([O, C]), x.reshape([N, C, H * W])];
  if (residual) views.push(residual.reshape([N, O, H * W]));
  const y = matmul(views[0], views[1], { act, residual: views[2], kernel });
  const out = y.reshape(outShape);
  y.dispose();
  for (const v of views) v.dispose();
  return out;
}

/** x [N, C, H, W], weight [C, O, kH, kW] (PyTorch ConvTranspose2d layout) */
export function convTranspose2d(x: Tensor, weight: Tensor, opts: { bias?: Tensor; stride?: number | [number, number]; padding?: number | [number, number]; outputPadding?: number | [number, number]; kernel?: ConvKernel; tile?: string } = {}): Tensor {
  const e = x.engine;
  assertShape("convTranspose2d", x, 4);
  assertShape("convTranspose2d", weight, 4, "weight");
  const [N, C, H, W] = x.shape;
  const [Cw, O, kH, kW] = weight.shape;
  const [sh, sw] = pair(opts.stride, 1), [ph, pw] = pair(opts.padding, 0), [oph, opw] = pair(opts.outputPadding, 0);
  checkInt("convTranspose2d", "stride", [sh, sw], 1);
  checkInt("convTranspose2d", "padding", [ph, pw, oph, opw], 0);
  if (Cw !== C) throw new SsdError("E_SHAPE", `convTranspose2d: weight ${shapeStr(weight.shape)} is for ${Cw} input channels, input ${shapeStr(x.shape)} has ${C}`);
  if (oph >= sh || opw >= sw) throw new SsdError("E_BAD_PARAM", `convTranspose2d: output padding (${oph}, ${opw}) must be smaller than the stride (${sh}, ${sw})`);
  const Ho = (H - 1) * sh - 2 * ph + kH + oph;
  const Wo = (W - 1) * sw - 2 * pw + kW + opw;
  if (Ho <= 0 || Wo <= 0) throw new SsdError("E_SHAPE", `convTranspose2d: output of input ${shapeStr(x.shape)} would be empty`);
  if (opts.bias && opts.bias.numel !== O) throw new SsdError("E_SHAPE", `convTranspose2d: bias ${shapeStr(opts.bias.shape)} for ${O} output channels`);
  const y = e.empty([N, O, Ho, Wo], actDtype(x));
  // One GEMM per output phase (oy mod sh, ox mod sw): output row oy = py + sh·j
  // receives taps kh ≡ (py + ph) mod sh, i.e. kh = kh0 + a·sh, from input row
  // iy = (oy + ph - kh) / sh = j + q - a.
  for (let py = 0; py < Math.min(sh, Ho); py++) {
    const kh0 = (py + ph) % sh, qy = Math.floor((py + ph) / sh);
    const TH = kh0 < kH ? Math.ceil((kH - kh0) / sh) : 0;
    for (let px = 0; px < Math.min(sw, Wo); px++) {
      const kw0 = (px + pw) % sw, qx = Math.floor((px + pw) / sw);
      const TW = kw0 < kW ? Math.ceil((kW - kw0) / sw) : 0;
      runGemm(e, {
        N, Cin: C, Hin: H, Win: W, Cout: O, Ho, Wo, groups: 1, Cg: C, Og: O,
        TH: TH && TW ? TH : 0, TW: Math.max(TW, 1), ysc: 1, yoff: qy, tyStep: -1, xsc: 1, xoff: qx, txStep: -1,
        wsO: kH * kW, wsC: O * kH * kW, wsA: sh * kW, wsB: sw, wOff: Math.min(kh0 * kW + kw0, kH * kW - 1), wTaps: kH * kW,
        oys: sh, oyo: py, oxs: sw, oxo: px, rows: Math.ceil((Ho - py) / sh), rowLen: Math.ceil((Wo - px) / sw),
        inRows: (r0, nr) => [r0 + qy - TH + 1, r0 + nr + qy],
      }, { x, w: weight, bias: opts.bias, y, act: "none", kernel: opts.kernel, tile: opts.tile });
    }
  }
  return y;
}

const POOL: KernelSpec = {
  file: "pool",
  entry: "max_pool",
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["Hin", "u32"], ["Win", "u32"], ["Ho", "u32"], ["Wo", "u32"], ["k", "u32"], ["s", "u32"], ["padT", "u32"], ["padL", "u32"],
    ["p0", "u32"], ["r0", "u32"], ["nr", "u32"], ["n", "u32"], ["xBase", "u32"], ["yBase", "u32"], ["padValue", "f32"]],
};

/**
 * Max pooling. `same: true` is TensorFlow-style SAME padding as BiT's
 * DynamicPad2d: out = ceil(in / stride), total padding
 * max((out - 1)·stride + kernel - in, 0), the odd pixel on the bottom/right.
 * Padded positions hold `padValue` (default -inf, i.e. ignored, as PyTorch's
 * own `padding` and TF's SAME; BiT pads with 0 but pools after a ReLU, where
 * both give the same result). `act` is applied to the pooled value.
 */
export function maxPool2d(x: Tensor, opts: { kernel: number; stride: number; padding?: number; same?: boolean; padValue?: number; act?: Activation }): Tensor {
  const e = x.engine;
  assertShape("maxPool2d", x, 4);
  const [N, C, H, W] = x.shape;
  const { kernel: k, stride: s } = opts;
  checkInt("maxPool2d", "kernel and stride", [k, s], 1);
  let padT: number, padL: number, Ho: number, Wo: number;
  if (opts.same) {
    if (opts.padding) throw new SsdError("E_BAD_PARAM", "maxPool2d: give either same or padding");
    Ho = Math.ceil(H / s); Wo = Math.ceil(W / s);
    padT = Math.floor(Math.max((Ho - 1) * s + k - H, 0) / 2);
    padL = Math.floor(Math.max((Wo - 1) * s + k - W, 0) / 2);
  } else {
    const p = opts.padding ?? 0;
    checkInt("maxPool2d", "padding", [p], 0);
    if (2 * p > k) throw new SsdError("E_BAD_PARAM", `maxPool2d: padding ${p} must be at most half the kernel ${k}`);
    padT = padL = p;
    Ho = Math.floor((H + 2 * p - k) / s) + 1; Wo = Math.floor((W + 2 * p - k) / s) + 1;
  }
  if (Ho <= 0 || Wo <= 0) throw new SsdError("E_SHAPE", `maxPool2d: kernel ${k} does not fit input ${shapeStr(x.shape)}`);
  const y = e.empty([N, C, Ho, Wo], actDtype(x));
  const jobs = planPlaneRows(e, {
    planes: N * C, Hin: H, Win: W, Ho, Wo, inDtype: x.dtype, outDtype: y.dtype,
    inRows: (r0, nr) => clampRows(r0 * s - padT, (r0 + nr - 1) * s - padT + k, H),
  });
  const padValue = opts.padValue ?? -Infinity;
  for (const j of jobs) {
    const [lo, hi] = clampRows(j.r0 * s - padT, (j.r0 + j.nr - 1) * s - padT + k, H);
    const xs = bindSpan(x, j.p0 * H * W + lo * W, (j.p0 + j.np - 1) * H * W + hi * W);
    const ys = bindSpan(y, j.p0 * Ho * Wo + j.r0 * Wo, (j.p0 + j.np - 1) * Ho * Wo + (j.r0 + j.nr) * Wo);
    const n = j.np * j.nr * Wo;
    e.run(POOL, { dtypes: [x.dtype, y.dtype], overrides: { ACT: ACT[opts.act ?? "none"], PAD_INF: padValue === -Infinity ? 1 : 0 } }, [xs.bind, ys.bind], {
      Hin: H, Win: W, Ho, Wo, k, s, padT, padL, p0: j.p0, r0: j.r0, nr: j.nr, n, xBase: xs.base, yBase: ys.base,
      padValue: Number.isFinite(padValue) ? padValue : 0,
    }, [ceilDiv(n, 256)], "max_pool2d");
  }
  return y;
}

const STANDARDIZE: KernelSpec = {
  file: "standardize",
  entry: "standardize",
  bindings: [{ name: "WT", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["O", "u32"], ["K", "u32"], ["eps", "f32"]],
};

/**
 * Weight standardisation (BiT's WeightStandardizedConv2d, i.e. batch_norm in
 * training mode over each output channel): (w - mean) / sqrt(var + eps),
 * biased variance over C·kH·kW. Done once at load; the result is a persistent
 * f32 weight (f32 keeps the standardised values exact enough whatever the
 * file's dtype, and can be written on every device).
 */
export function standardizeWeight(weight: Tensor, eps: number): Tensor {
  const e = weight.engine;
  if (weight.rank < 2) throw new SsdError("E_SHAPE", `standardizeWeight: weight ${shapeStr(weight.shape)} must have an output-channel dim and at least one more`);
  const O = weight.dim(0), K = weight.numel / O;
  if (!wholeFits(e, weight)) throw new SsdError("E_LIMITS", `standardizeWeight: weight ${shapeStr(weight.shape)} exceeds maxStorageBufferBindingSize`);
  const y = e.upload(new Float32Array(weight.numel), weight.shape, "f32", { persistent: true });
  e.run(STANDARDIZE, { dtypes: [weight.dtype, "f32"] }, [weight, y], { O, K, eps }, [O], "standardize_weight");
  return y;
}
