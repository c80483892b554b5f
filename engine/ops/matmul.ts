// matmul and linear: batched, optional transposed B, fused bias, activation and
// residual add in the epilogue; split over batches, row ranges and (for
// transposed B) column ranges when an operand exceeds the binding limit.

import { SsdError } from "../errors.ts";
import { Tensor, type DType } from "../tensor.ts";
import type { Engine } from "../engine.ts";
import { shapeStr } from "../tensor.ts";
import { vec4Bytes, type KernelSpec, type KernelVariant } from "../kernel.ts";
import type { Binding } from "../engine.ts";
import { ACT, type Activation } from "./elementwise.ts";
import { actDtype, ceilDiv, splitParts } from "./util.ts";
import { bindSpan, spanFits, wholeFits, maxFit } from "./split.ts";
import { tunedChoice, forcedChoice, tunedEntry } from "../autotune.ts";
import { linearT, SERIAL_SCRATCH } from "./conv.ts";
import { permute } from "./shape.ts";

const BINDINGS = [
  { name: "A", access: "read" as const },
  { name: "B", access: "read" as const },
  { name: "BIAS", access: "read" as const },
  { name: "R", access: "read" as const },
  { name: "C", access: "read_write" as const },
];
const PARAMS: KernelSpec["params"] = [
  ["M", "u32"], ["N", "u32"], ["K", "u32"], ["lda", "u32"], ["ldb", "u32"], ["ldc", "u32"],
  ["sa", "u32"], ["sb", "u32"], ["sc", "u32"], ["oa", "u32"], ["ob", "u32"], ["oc", "u32"], ["obias", "u32"],
  // split-K (`wide` with KSPLIT > 1, `split_sum`): K per part, elements per workspace slice
  ["kc", "u32"], ["sw", "u32"],
];
export const MATMUL_KERNELS = {
  tiled: { file: "matmul", entry: "tiled", bindings: BINDINGS, params: PARAMS } as KernelSpec,
  reg: { file: "matmul", entry: "reg", bindings: BINDINGS, params: PARAMS } as KernelSpec,
  small_m: { file: "matmul", entry: "small_m", bindings: BINDINGS, params: PARAMS } as KernelSpec,
  wide: { file: "matmul", entry: "wide", bindings: BINDINGS, params: PARAMS } as KernelSpec,
  split_sum: { file: "matmul", entry: "split_sum", bindings: BINDINGS, params: PARAMS } as KernelSpec,
  // `wide` with a split tail: W takes the tail's raw part sums; hy = block rows run whole
  wide_hyb: { file: "matmul", entry: "wide_hyb", bindings: [...BINDINGS, { name: "W", access: "read_write" }], params: [...PARAMS, ["hy", "u32"]] } as KernelSpec,
  // `wide` with a serial tail: W holds serial split-K's counters and slots (from sw); hy = blocks run whole
  wide_ser: { file: "matmul", entry: "wide_ser", bindings: [...BINDINGS, { name: "W", access: "read_write", atomic: true }], params: [...PARAMS, ["hy", "u32"]] } as KernelSpec,
};

/**
 * Tiles of the `wide` kernel, named BMxBN k<K step> t<columns per thread>
 * (every thread computes 8 rows). The autotuner picks one per adapter
 * (op `matmul_tile`, env SSD_DEPTH_KERNEL_MATMUL_TILE); a tile the device
 * cannot run (threads, workgroup memory) is left out.
 */
export const WIDE_TILES = ["128x128k8t8", "128x128k16t8", "128x64k8t8", "128x64k16t8", "128x64k16t4", "64x128k8t8", "64x128k16t8", "64x256k8t8", "64x64k8t8", "64x64k16t4", "256x64k16t8"];

interface WideTile { name: string; bm: number; bn: number; overrides: { GW_X: number; GW_Y: number; GK: number; GTN: number } }

export function parseWideTile(name: string): WideTile {
  const m = /^(\d+)x(\d+)k(\d+)t(4|8)$/.exec(name);
  if (!m) throw new SsdError("E_BAD_PARAM", `matmul tile '${name}': expected BMxBNk<K>t<4|8>, e.g. 128x128k8t8`);
  const [bm, bn, gk, gtn] = m.slice(1).map(Number);
  const tile = { name, bm, bn, overrides: { GW_X: bn / gtn, GW_Y: bm / 8, GK: gk, GTN: gtn } };
  const threads = tile.overrides.GW_X * tile.overrides.GW_Y;
  // rounds of staging slots per operand and K step (the last round may be partial)
  const rounds = (rows: number) => Math.ceil((rows * gk) / 4 / threads);
  const ok = bm % 8 === 0 && bn % gtn === 0 && (gk === 8 || gk === 16) && [rounds(bm), rounds(bn)].every((r) => r <= 4);
  if (!ok) throw new SsdError("E_BAD_PARAM", `matmul tile '${name}': K steps of 8 or 16, and each of its ${threads} threads can stage at most 4 vec4s of each operand per K step`);
  return tile;
}

/** Workgroup memory (bytes) and threads a tile needs; see the `wide` kernel. */
function wideFits(e: Engine, t: WideTile): boolean {
  const o = t.overrides;
  const bytes = 16 * 2 * o.GK * (2 * o.GW_Y + 1 + (o.GTN * o.GW_X) / 4 + 1);
  return bytes <= e.gpu.limits.maxComputeWorkgroupStorageSize && o.GW_X * o.GW_Y <= e.gpu.limits.maxComputeInvocationsPerWorkgroup;
}

/** The `wide` tiles this device can run (tuning candidates). */
export function wideTiles(e: Engine): string[] {
  return WIDE_TILES.filter((n) => wideFits(e, parseWideTile(n)));
}
/** Workgroup shape of the register-blocked kernel (WGSL override constants). */
const REG_WG = { x: 16, y: 16 };
/** Rows × columns of C one workgroup of each kernel covers. */
const BLOCK: Record<string, [number, number]> = { tiled: [64, 64], reg: [4 * REG_WG.y, 4 * REG_WG.x], small_m: [1, 4] };

export type MatmulKernel = "tiled" | "reg" | "small_m" | "wide" | "t1x1";
/** The kernels the autotuner chooses among for M > 4. */
export const MATMUL_CHOICES: MatmulKernel[] = ["reg", "t1x1", "tiled", "wide"];

export interface MatmulOptions {
  /** B is [.., N, K] (PyTorch Linear weight layout) */
  transB?: boolean;
  bias?: Tensor;
  act?: Activation;
  /** added after the activation; same shape as the output */
  residual?: Tensor;
  /** force a kernel (tests, benches); default: the autotuned choice for this adapter */
  kernel?: MatmulKernel;
  /** `wide` only: force a tile (WIDE_TILES); default: the autotuned one */
  tile?: string;
  /** `wide` only: force the split-K factor (SPLITS: 1 to 4); default: the shape's tuned plan, else kSplit's rule */
  split?: number;
  /**
   * `wide` only, with split > 1: run only the grid's last `tail` block rows in
   * `split` parts and the others whole (wide_hyb: one batch or B shared, whole
   * blocks and vec4 rows; otherwise plain split-K); default: the shape's tuned plan
   */
  tail?: number;
  /**
   * `wide` only, with split > 1: run the last `serialTail` blocks of C
   * (row-major, whole blocks first) in `split` parts that add their sums
   * inside the dispatch (wide_ser: one batch or B shared; otherwise plain
   * split-K), the others whole; default: the shape's tuned plan
   */
  serialTail?: number;
}

/**
 * a: [..., M, K] or [M, K] (shared); b: [K, N] / [N, K] (shared) or
 * [batch, K, N] / [batch, N, K] (batched). Returns [..., M, N].
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const e = a.engine;
  if (a.rank < 2 || b.rank < 2) throw new SsdError("E_SHAPE", `matmul: operands must be at least 2-D, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  const M = a.dim(-2), K = a.dim(-1);
  const transB = !!opts.transB;
  const N = transB ? b.dim(-2) : b.dim(-1);
  const Kb = transB ? b.dim(-1) : b.dim(-2);
  if (Kb !== K) throw new SsdError("E_SHAPE", `matmul: ${shapeStr(a.shape)} x ${shapeStr(b.shape)}${transB ? "ᵀ" : ""}: inner sizes ${K} and ${Kb} differ`);
  const aBatch = a.numel / (M * K);
  const bBatch = b.numel / (N * K);
  const batch = Math.max(aBatch, bBatch);
  if ((aBatch !== 1 && aBatch !== batch) || (bBatch !== 1 && bBatch !== batch)) throw new SsdError("E_SHAPE", `matmul: batch of ${shapeStr(b.shape)} does not match ${shapeStr(a.shape)}`);
  // A shared and B batched (1×1 conv: W[O, C] · X[n][C, HW]) takes B's leading dims.
  const outShape = aBatch === 1 && bBatch > 1 ? [...b.shape.slice(0, -2), M, N] : [...a.shape.slice(0, -1), N];
  if (opts.bias && opts.bias.numel !== N) throw new SsdError("E_SHAPE", `matmul: bias ${shapeStr(opts.bias.shape)} for ${N} outputs`);
  if (opts.residual && opts.residual.numel !== batch * M * N) throw new SsdError("E_SHAPE", `matmul: residual ${shapeStr(opts.residual.shape)} for output ${shapeStr(outShape)}`);
  let kernel: MatmulKernel = opts.kernel ?? (M <= 4 ? "small_m" : (tunedChoice(e, "matmul", MATMUL_CHOICES) as MatmulKernel));
  if (kernel === "t1x1") {
    if (transB && bBatch === 1 && batch * M * N > 0) return linearAsConv(a, b, N, K, outShape, opts);
    kernel = "reg"; // the conv route needs shared [N, K] weights
  }
  const c = e.empty(outShape, actDtype(a));
  if (c.numel === 0) return c;
  const bias = opts.bias ?? e.placeholder();
  const res = opts.residual ?? e.placeholder();
  const spec = MATMUL_KERNELS[kernel as keyof typeof MATMUL_KERNELS];
  const plan = kernel === "wide" ? widePlan(e, planKey(batch, M, N, K, transB, a.dtype, b.dtype), opts) : null;
  const tile = plan ? plan.tile : null;
  const variant = {
    dtypes: [a.dtype, b.dtype, bias.dtype, res.dtype, c.dtype],
    overrides: {
      ACT: ACT[opts.act ?? "none"], HAS_BIAS: opts.bias ? 1 : 0, HAS_RES: opts.residual ? 1 : 0, TRANS_B: transB ? 1 : 0,
      ...(kernel === "reg" ? { WG_X: REG_WG.x, WG_Y: REG_WG.y } : {}),
      ...(tile ? { ...tile.overrides, ALIGNED: 0, EXACT: 0, C4: 0, WIDE_BT: transB ? 1 : 0 } : {}),
    },
  };
  const sa = aBatch === 1 ? 0 : M * K, sb = bBatch === 1 ? 0 : N * K, sc = M * N;
  const eb = (t: Tensor) => t.byteSize;
  const [bm, bn] = tile ? [tile.bm, tile.bn] : BLOCK[kernel];
  const ldb = transB ? K : N;

  // One dispatch when every operand fits its binding.
  if ([a, b, c, opts.bias, opts.residual].every((t) => !t || wholeFits(e, t))) {
    // `wide` reads A and B as vec4s when rows (and for B [K, N] columns) come in
    // whole vec4s; without bounds checks when the blocks and K steps cover the
    // GEMM exactly; and stores C (reading R) as vec4s when rows are whole vec4s.
    if (tile) {
      const aligned = K % 4 === 0 && (transB || N % 4 === 0);
      const c4 = N % 4 === 0;
      variant.overrides.ALIGNED = aligned ? 1 : 0;
      variant.overrides.EXACT = aligned && M % tile.bm === 0 && N % tile.bn === 0 && K % tile.overrides.GK === 0 ? 1 : 0;
      variant.overrides.C4 = c4 ? 1 : 0;
      (variant as KernelVariant).vec4 = [aligned, aligned, false, c4 && !!opts.residual, c4];
    }
    const params = { M, N, K, lda: K, ldb, ldc: N, sa, sb, sc, oa: 0, ob: 0, oc: 0, obias: 0, kc: K, sw: 0 };
    const grid: [number, number, number] = [ceilDiv(N, bn), ceilDiv(M, bm), batch];
    const label = `matmul:${kernel}${tile ? `:${tile.name}` : ""}:${batch}x${M}x${N}x${K}${transB ? "T" : ""}`;
    const cost = { flops: 2 * batch * M * N * K, bytes: eb(a) + eb(b) + eb(c) + (opts.bias ? eb(opts.bias) : 0) + (opts.residual ? eb(opts.residual) : 0) };
    const split = !tile ? 1 : (plan!.tail || plan!.serialTail) && plan!.split ? plan!.split : kSplit(e, grid[0] * grid[1] * batch * tile.overrides.GW_X * tile.overrides.GW_Y, K, plan!.split);
    // Split tails (wide_hyb, wide_ser): with B shared, a batch of A [batch, M, K] is one GEMM of batch·M rows.
    const tail = plan?.tail ?? 0, rowsAll = bBatch === 1 ? batch * M : M;
    const flat = { ...params, M: rowsAll, sa: 0, sc: 0 };
    if (split > 1 && plan?.serialTail && (batch === 1 || bBatch === 1)) {
      // blocks [0, hy) whole, the last T in parts (serial split-K: a counter
      // per thread of each tail block, then a slot of 64 words per thread for
      // each part of each; wide_serial.wgsl), on a 1-D range of workgroups
      const threads = tile!.overrides.GW_X * tile!.overrides.GW_Y;
      const blocks = ceilDiv(rowsAll, bm) * grid[0], T = Math.min(plan.serialTail, blocks), hy = blocks - T;
      const sw = Math.ceil((T * threads) / 64) * 64, words = sw + T * split * 64 * threads;
      const maxWg = e.gpu.limits.maxComputeWorkgroupsPerDimension, n = hy + T * split;
      if (spanFits(e, words, "u32") && n <= maxWg * maxWg) {
        const kc = Math.ceil(K / split / tile!.overrides.GK) * tile!.overrides.GK;
        e.run(MATMUL_KERNELS.wide_ser, { dtypes: [...variant.dtypes, "u32"], vec4: [...(variant as KernelVariant).vec4!, false], overrides: { ...variant.overrides, KSPLIT: split } },
          [a, b, bias, res, c, e.zeroScratch(SERIAL_SCRATCH, words * 4)], { ...flat, kc, sw, hy },
          n <= maxWg ? [n, 1, 1] : [maxWg, ceilDiv(n, maxWg), 1], `${label}:serial${T}x${split}`, cost);
        return c;
      }
    }
    if (split > 1 && tail > 0 && (batch === 1 || bBatch === 1) && variant.overrides.EXACT && variant.overrides.C4 && tail < rowsAll / bm && spanFits(e, split * tail * bm * N, "f32")) {
      // block rows [0, hy) whole into C, the last `tail` in parts into a workspace, which split_sum adds into their rows of C
      const hy = rowsAll / bm - tail, sw = tail * bm * N;
      const ws = e.empty([split * sw], "f32");
      const kc = Math.ceil(K / split / tile!.overrides.GK) * tile!.overrides.GK;
      const vw = (variant as KernelVariant).vec4!;
      e.run(MATMUL_KERNELS.wide_hyb, { dtypes: [...variant.dtypes, "f32"], vec4: [...vw, true], overrides: { ...variant.overrides, KSPLIT: split } },
        [a, b, bias, res, c, ws], { ...flat, kc, sw, hy }, [grid[0], hy + tail * split, 1], `${label}:tail${tail}x${split}`, cost);
      splitSum(e, ws, bias, res, c, split, variant.overrides, !!opts.residual, { ...flat, M: tail * bm, oc: hy * bm * N, sw }, `matmul:split_sum:${tail * bm}x${N}`);
      ws.dispose();
      return c;
    }
    if (split > 1) {
      // split-K: the parts' raw sums into a workspace, then split_sum adds them and applies the epilogue
      const total = batch * M * N;
      if (spanFits(e, split * total, "f32")) {
        const ws = e.empty([split * total], "f32");
        const kc = Math.ceil(K / split / tile!.overrides.GK) * tile!.overrides.GK;
        const vw = (variant as KernelVariant).vec4!;
        e.run(spec, { dtypes: [a.dtype, b.dtype, bias.dtype, res.dtype, "f32"], vec4: [vw[0], vw[1], false, false, vw[4]], overrides: { ...variant.overrides, ACT: 0, HAS_BIAS: 0, HAS_RES: 0, KSPLIT: split } },
          [a, b, bias, res, ws], { ...params, kc, sw: total }, [grid[0], grid[1], batch * split], `${label}:split${split}`, cost);
        splitSum(e, ws, bias, res, c, split, variant.overrides, !!opts.residual, { ...params, sw: total }, `matmul:split_sum:${batch}x${M}x${N}`);
        ws.dispose();
        return c;
      }
    }
    e.run(spec, variant, [a, b, bias, res, c], params, grid, label, cost);
    return c;
  }

  // Otherwise per batch item, in column ranges (B rows when transposed) and row ranges.
  // B[n, k] splits into row ranges; B[k, n] would need strided columns, so it must fit whole.
  const cols = transB ? maxFit(N, (nn) => spanFits(e, nn * K, b.dtype)) : spanFits(e, K * N, b.dtype) ? N : 0;
  if (cols === 0) throw new SsdError("E_LIMITS", `matmul: B ${shapeStr(b.shape)} does not fit one binding (${e.gpu.limits.maxStorageBufferBindingSize} bytes) and cannot be split in this layout`);
  const rowsFit = (nm: number) => spanFits(e, nm * K, a.dtype) && spanFits(e, (nm - 1) * N + cols, c.dtype) && (!opts.residual || spanFits(e, (nm - 1) * N + cols, opts.residual.dtype));
  const rows = kernel === "small_m" ? Math.min(M, 4) : maxFit(M, rowsFit);
  if (rows === 0) throw new SsdError("E_LIMITS", `matmul: one row of ${shapeStr(a.shape)} does not fit one binding`);
  for (let bi = 0; bi < batch; bi++) {
    for (let n0 = 0; n0 < N; n0 += cols) {
      const nn = Math.min(cols, N - n0);
      const bStart = bi * sb + (transB ? n0 * K : 0);
      const bs = bindSpan(b, bStart, bStart + (transB ? nn * K : K * N));
      const biasB = opts.bias ? bindSpan(opts.bias, n0, n0 + nn) : { bind: bias, base: n0 };
      for (let m0 = 0; m0 < M; m0 += rows) {
        const nm = Math.min(rows, M - m0);
        const aStart = bi * sa + m0 * K;
        const as = bindSpan(a, aStart, aStart + nm * K);
        const cStart = bi * sc + m0 * N + n0, cEnd = bi * sc + (m0 + nm - 1) * N + n0 + nn;
        const cs = bindSpan(c, cStart, cEnd);
        const rs = opts.residual ? bindSpan(opts.residual, cStart, cEnd) : null;
        const binds: Binding[] = [as.bind, bs.bind, biasB.bind, rs ? rs.bind : res, cs.bind];
        const params = {
          M: nm, N: nn, K, lda: K, ldb, ldc: N, sa: 0, sb: 0, sc: 0,
          oa: aStart - as.base, ob: bStart - bs.base, oc: cStart - cs.base, obias: opts.bias ? n0 - biasB.base : 0, kc: K, sw: 0,
        };
        if (rs && rs.base !== cs.base) throw new SsdError("E_INTERNAL", "matmul: residual and output ranges disagree");
        e.run(spec, variant, binds, params, [ceilDiv(nn, bn), ceilDiv(nm, bm), 1], "matmul", {
          flops: 2 * nm * nn * K,
          bytes: (nm * K + nn * K + nm * nn * (opts.residual ? 2 : 1)) * 4,
        });
      }
    }
  }
  return c;
}

/**
 * One dispatch of the `wide` kernel on operands described by strides, for ops
 * whose operands are views matmul's shapes cannot express (attention's
 * per-head Q·Kᵀ and P·V read Q, K and V in place):
 *   C[b][m, n] = Σ_k A[oa + b·sa + m·lda + k] · (transB ? B[ob + b·sb + n·ldb + k] : B[ob + b·sb + k·ldb + n])
 *   stored at C[oc + b·sc + m·ldc + n]
 * The caller's bindings must hold every element it names. `tileName`: the
 * `wide` tile (default: the tuned matmul tile).
 */
export interface RawMatmul {
  batch: number; M: number; N: number; K: number; transB: boolean;
  lda: number; ldb: number; ldc: number; sa: number; sb: number; sc: number; oa: number; ob: number; oc: number;
}

const bindBytes = (b: Binding): number => (b instanceof Tensor ? b.storage.byteSize : b.byteSize);

export function rawMatmul(e: Engine, g: RawMatmul, bindings: { a: Binding; b: Binding; c: Binding }, dtypes: [DType, DType, DType], label: string, cost: { flops: number; bytes: number }, tileName?: string): void {
  const tile = wideTile(e, tileName);
  const maxWg = e.gpu.limits.maxComputeWorkgroupsPerDimension;
  const grid: [number, number, number] = [ceilDiv(g.N, tile.bn), ceilDiv(g.M, tile.bm), g.batch];
  if (grid.some((n) => n > maxWg)) throw new SsdError("E_LIMITS", `${label}: a ${g.batch}×${g.M}×${g.N} GEMM needs a grid of [${grid}] workgroups, more than ${maxWg} per dimension`);
  // vec4 loads: every A and B index a thread forms is 4-aligned, and the bindings hold whole vec4s
  const m4 = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  const aligned = m4(g.K, g.lda, g.ldb, g.sa, g.sb, g.oa, g.ob) && (g.transB || g.N % 4 === 0) &&
    bindBytes(bindings.a) % vec4Bytes(dtypes[0]) === 0 && bindBytes(bindings.b) % vec4Bytes(dtypes[1]) === 0;
  const exact = aligned && g.M % tile.bm === 0 && g.N % tile.bn === 0 && g.K % tile.overrides.GK === 0;
  const c4 = m4(g.N, g.ldc, g.sc, g.oc) && bindBytes(bindings.c) % vec4Bytes(dtypes[2]) === 0;
  const ph = e.placeholder();
  e.run(MATMUL_KERNELS.wide, {
    dtypes: [dtypes[0], dtypes[1], ph.dtype, ph.dtype, dtypes[2]],
    vec4: [aligned, aligned, false, false, c4],
    overrides: { ACT: 0, HAS_BIAS: 0, HAS_RES: 0, TRANS_B: g.transB ? 1 : 0, WIDE_BT: g.transB ? 1 : 0, ALIGNED: aligned ? 1 : 0, EXACT: exact ? 1 : 0, C4: c4 ? 1 : 0, ...tile.overrides },
  }, [bindings.a, bindings.b, ph, ph, bindings.c], {
    M: g.M, N: g.N, K: g.K, lda: g.lda, ldb: g.ldb, ldc: g.ldc, sa: g.sa, sb: g.sb, sc: g.sc, oa: g.oa, ob: g.ob, oc: g.oc, obias: 0, kc: g.K, sw: 0,
  }, grid, label, cost);
}

/**
 * Split-K's second pass: C[oc + i] = epilogue(Σ_s ws[s·sw + i]) for i < sw
 * (params.sw outputs: the whole of C, or a split tail's rows from params.oc).
 */
function splitSum(e: Engine, ws: Tensor, bias: Tensor, res: Tensor, c: Tensor, split: number, o: Record<string, number>, hasRes: boolean, params: Record<string, number>, label: string): void {
  const ph = e.placeholder();
  // four outputs of a row per invocation where rows are whole vec4s
  const v4 = params.N % 4 === 0;
  e.run(MATMUL_KERNELS.split_sum, { dtypes: ["f32", ph.dtype, bias.dtype, res.dtype, c.dtype], vec4: [v4, false, false, v4 && hasRes, v4], overrides: { ACT: o.ACT, HAS_BIAS: o.HAS_BIAS, HAS_RES: o.HAS_RES, KSPLIT: split, V4: v4 ? 1 : 0, C4: v4 ? 1 : 0 } },
    [ws, ph, bias, res, c], params, [ceilDiv(params.sw, v4 ? 1024 : 256)], label, { flops: 0, bytes: (split + 1) * params.sw * 4 });
}

/**
 * Split-K part counts a `wide` GEMM may run in. kSplit's rule only doubles
 * (1, 2, 4); 3 is there for the tuned plans: a grid's last wave of
 * workgroups may come out fuller in 3 parts than in 2 or 4 (4096×1280×1280 on
 * the 64×256 tile: 320 workgroups per part), which only a timing on the
 * device can tell.
 */
export const SPLITS = [1, 2, 3, 4];
/** Part counts of a split tail (plans "<tile>/<parts>r<rows>" and "<tile>/<parts>s<blocks>"): finer pieces even out a last wave better. */
export const TAIL_SPLITS = [2, 3, 4, 5, 6, 7, 8];
type Plan = { tile: string; split: number; tail?: number; serialTail?: number };
const planOk = (p: Omit<Plan, "tile">) => {
  const tail = p.tail ?? p.serialTail;
  return tail !== undefined ? tail > 0 && TAIL_SPLITS.includes(p.split) && !(p.tail !== undefined && p.serialTail !== undefined) : SPLITS.includes(p.split);
};

/**
 * Split-K factor of a `wide` GEMM whose grid has `threads` invocations: on
 * GPUs, doubled (up to 4) while the grid stays under SPLIT_FILL invocations
 * and each part keeps at least 256 of K. Measured on an H200 with the tuned
 * 128×64 tile (kernel time; README): grids of about a fifth of a wave gained
 * (1024×1280×1280: 31.5 → 38.7 % of FP32 peak in 4 parts; 1024×5120×1280:
 * 31.7 → 48.2 %), grids of 0.6 to 1.2 waves lost (4096×1280×1280: 51.2 →
 * 45.7 %; 4096×640×640: 41.1 → 37.1 % in 2 parts). Forced by the option or
 * SSD_DEPTH_KERNEL_MATMUL_SPLIT.
 */
const SPLIT_FILL = 2 ** 15; // about half a wave of an H200: 132 SMs × 512 invocations (128 registers each)
function kSplit(e: Engine, threads: number, K: number, forced?: number): number {
  return splitParts(e, { op: "matmul", key: "matmul_split", allowed: SPLITS, forced, size: threads, fill: SPLIT_FILL, K, minDepth: 256 });
}

/**
 * Per-shape plans. Where a `wide` GEMM is fastest depends on its shape as
 * well as the adapter: how many workgroups the GPU holds at once decides
 * whether a grid fills it, and WebGPU does not say. On an H200 (README) the
 * 64×256 tile ran 4096×640→5120 at 61 % of FP32 peak against 56 % for the
 * tuned 128×64 one, and 4096×1280×1280 fastest in 2 split-K parts, which
 * cost the 128×64 tile speed on the same shape; and a plan tuned with f32
 * weights ran the same shape with f16 weights at 45 % of peak, against 53 %
 * for the tuned tile. So a tuning run also times a few plans per GEMM shape
 * and operand dtypes it is given ("<tile>/<split-K parts>") and caches the
 * fastest under their key; a GEMM without one takes the tuned tile and
 * kSplit's rule.
 */
export function planKey(batch: number, M: number, N: number, K: number, transB: boolean, aDtype: DType, bDtype: DType): string {
  return `matmul_plan:${batch}x${M}x${N}x${K}${transB ? "T" : ""}:${aDtype}.${bDtype}`;
}

/**
 * The plans a tuning run times for a GEMM [batch, M, K] · [N, K]ᵀ (B shared,
 * like a Linear's weight): a few tiles, each in SPLITS parts of at least 256
 * of K, and split tails (tailPlans) on the batch·M rows for two of them.
 */
export function planCandidates(e: Engine, batch: number, M: number, N: number, K: number): string[] {
  const can = wideTiles(e);
  const tiles = [...new Set([tunedChoice(e, "matmul_tile", can), "64x256k8t8", "128x128k8t8", "128x64k8t8"])].filter((t) => can.includes(t));
  const splits = SPLITS.filter((s) => s === 1 || K / s >= 256);
  const plans = tiles.flatMap((t) => splits.map((s) => `${t}/${s}`));
  // split tails on the first two tiles, where wide_hyb can run the shape (see tailPlans)
  return [...plans, ...tiles.slice(0, 2).flatMap((t) => tailPlans(parseWideTile(t), batch * M, N, K))];
}

/**
 * Split-tail plans of a tile on a GEMM: the last 1/8, 3/16, 1/5 or 1/4 of
 * the grid's block rows in 2, 4 or 7 parts (each part at least 128 deep).
 * Which tail evens out the last wave depends on how many workgroups the GPU
 * runs at once, which WebGPU does not say, hence the tuning. On an H200
 * (4096×1280×1280, 64x256k8t8, kernel time): whole 50.1 % of FP32 peak, in 2
 * split-K parts 56.2 %, the last 12 of 64 block rows in 2 parts 59.1 %; the
 * last 8 rows (tiles left for a third workgroup per SM) 48.9 %.
 */
function tailPlans(t: WideTile, M: number, N: number, K: number): string[] {
  const rows = M / t.bm;
  if (!Number.isInteger(rows) || N % t.bn !== 0 || N % 4 !== 0 || K % t.overrides.GK !== 0 || K % 4 !== 0 || rows < 8) return [];
  const tails = [...new Set([1 / 8, 3 / 16, 1 / 5, 1 / 4].map((f) => Math.round(rows * f)))];
  return tails.flatMap((r) => [2, 4, 7].filter((p) => K / p >= 128).map((p) => `${t.name}/${p}r${r}`));
}

/**
 * A tuning's second round after a split tail won: where `plan` has a tail of
 * R block rows (wide_hyb) on a GEMM of `rows` (batch·M) rows and N columns,
 * the serial tails (wide_ser) of the same tile and parts whose edge lies
 * within a block row of it: from (R − 1)·gx + 1 to (R + 1)·gx − 1 blocks (gx
 * blocks a row), all of them or 9 evenly spaced, R·gx (the same edge without
 * the second pass) among them. A tail whose whole blocks are exactly the
 * waves the GPU runs at once needs an edge inside a block row (4096×1280 on
 * 64×256 blocks: 320, on an H200's 132 SMs 2 × 132 whole and 56 in parts).
 * Other plans: none.
 */
export function serialTailPlans(plan: string, rows: number, N: number): string[] {
  const p = parsePlan(plan);
  if (p.tail === undefined) return [];
  const t = parseWideTile(p.tile);
  const gx = Math.ceil(N / t.bn), blocks = Math.ceil(rows / t.bm) * gx;
  const lo = (p.tail - 1) * gx + 1, hi = Math.min(blocks - 1, (p.tail + 1) * gx - 1);
  if (hi < lo) return [];
  const n = Math.min(9, hi - lo + 1);
  const tails = [...new Set(Array.from({ length: n }, (_, i) => lo + (n === 1 ? 0 : Math.round((i * (hi - lo)) / (n - 1)))))];
  return tails.map((b) => `${p.tile}/${p.split}s${b}`);
}

/**
 * "<tile>/<parts>", "<tile>/<parts>r<tail block rows>" (wide_hyb) or
 * "<tile>/<parts>s<tail blocks>" (wide_ser) → its options.
 */
export function parsePlan(plan: string, what = "matmul plan"): Plan {
  const m = /^([^/]+)\/(\d+)(?:([rs])(\d+))?$/.exec(plan);
  if (!m) throw new SsdError("E_BAD_PARAM", `${what} '${plan}': expected <tile>/<parts>, <tile>/<parts>r<tail block rows> or <tile>/<parts>s<tail blocks>, e.g. 64x256k8t8/2, 64x256k8t8/4r12 or 64x256k8t8/7s56`);
  return { tile: m[1], split: Number(m[2]), ...(m[3] === "r" ? { tail: Number(m[4]) } : m[3] === "s" ? { serialTail: Number(m[4]) } : {}) };
}

/**
 * A `wide` GEMM's tile, split and tail: forced (options, env), else the shape's
 * tuned plan, else the tuned tile and kSplit's rule. SSD_DEPTH_KERNEL_MATMUL_PLAN
 * forces a whole plan on every `wide` GEMM; SSD_DEPTH_KERNEL_MATMUL_TILE a
 * tile. Both take any tile that parses, not only WIDE_TILES (benches trying
 * new ones); a malformed one is refused like a malformed option.
 */
function widePlan(e: Engine, key: string, opts: MatmulOptions): { tile: WideTile; split?: number; tail?: number; serialTail?: number } {
  const envPlan = process.env.SSD_DEPTH_KERNEL_MATMUL_PLAN || undefined;
  if (envPlan && opts.tile === undefined && opts.split === undefined) {
    const p = parsePlan(envPlan);
    if (!planOk(p)) throw new SsdError("E_BAD_PARAM", `SSD_DEPTH_KERNEL_MATMUL_PLAN=${envPlan}: split-K parts must be one of ${SPLITS.join(", ")} (${TAIL_SPLITS.join(", ")} with a tail of at least one block row or block)`);
    return { tile: wideTile(e, p.tile), split: p.split, tail: p.tail, serialTail: p.serialTail };
  }
  const envTile = process.env.SSD_DEPTH_KERNEL_MATMUL_TILE || undefined;
  const forced = opts.tile !== undefined || opts.split !== undefined || envTile !== undefined || forcedChoice("matmul_split", SPLITS.map(String));
  if (!forced) {
    const p = tunedEntry(e, key);
    // a cache entry this version cannot read is passed over like a missing one
    const plan = p ? (() => { try { return parsePlan(p); } catch { return null; } })() : null;
    if (plan && wideTiles(e).includes(plan.tile) && planOk(plan)) return { tile: parseWideTile(plan.tile), split: plan.split, tail: plan.tail, serialTail: plan.serialTail };
  }
  if ((opts.tail !== undefined || opts.serialTail !== undefined) && !planOk({ split: opts.split ?? 0, tail: opts.tail, serialTail: opts.serialTail })) {
    throw new SsdError("E_BAD_PARAM", `matmul: tail ${opts.tail ?? "-"}, serialTail ${opts.serialTail ?? "-"}, split ${opts.split ?? "-"}: give one kind of tail, of at least 1, with split ${TAIL_SPLITS.join(", ")}`);
  }
  return { tile: wideTile(e, opts.tile ?? envTile), split: opts.split, tail: opts.tail, serialTail: opts.serialTail };
}

/** The tile `wide` runs with: forced, else tuned for this adapter among those it can run. */
function wideTile(e: Tensor["engine"], forced?: string): WideTile {
  if (forced) {
    const t = parseWideTile(forced);
    if (!wideFits(e, t)) throw new SsdError("E_LIMITS", `matmul tile ${forced} needs more threads or workgroup memory than this device allows`);
    return t;
  }
  return parseWideTile(tunedChoice(e, "matmul_tile", wideTiles(e)));
}

/**
 * `t1x1` (CPU drivers): A·Bᵀ as a 1×1 convolution with A's rows as pixels,
 * run on the conv2d `reg` or `sg` kernel (weights shared by a workgroup, adjacent
 * lanes on adjacent pixels: more FMAs per load than any matmul kernel there).
 * Costs a transpose of A (one memory pass); the result is written in place
 * with bias, activation and residual fused (conv.ts linearT).
 */
function linearAsConv(a: Tensor, w: Tensor, N: number, K: number, outShape: number[], opts: MatmulOptions): Tensor {
  const rows = a.numel / K;
  const a2 = a.reshape([rows, K]);
  const xt = permute(a2, [1, 0]);
  a2.dispose();
  const res = opts.residual?.reshape([rows, N]);
  const y = linearT(xt, w, { bias: opts.bias, act: opts.act, residual: res });
  xt.dispose(); res?.dispose();
  const out = y.reshape(outShape);
  y.dispose();
  return out;
}

/** PyTorch Linear: y = x · Wᵀ + b, W [out, in]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor, act?: Activation, residual?: Tensor): Tensor {
  return matmul(x, weight, { transB: true, bias, act, residual });
}
