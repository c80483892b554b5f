// matmul and linear: batched, optional transposed B, fused bias, activation and
// residual add in the epilogue; split over batches, row ranges and (for
// transposed B) column ranges when an operand exceeds the binding limit.

import { SsdError } from "../errors.ts";
import type { Tensor } from "../tensor.ts";
import { shapeStr } from "../tensor.ts";
import type { KernelSpec } from "../kernel.ts";
import type { Binding } from "../engine.ts";
import { ACT, type Activation } from "./elementwise.ts";
import { actDtype, ceilDiv } from "./util.ts";
import { bindSpan, spanFits, wholeFits, maxFit } from "./split.ts";
import { tunedChoice } from "../autotune.ts";
import { conv2d, regKernel } from "./conv.ts";
import { permute } from "./shape.ts";
import { add } from "./elementwise.ts";

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
];
export const MATMUL_KERNELS = {
  tiled: { file: "matmul", entry: "tiled", bindings: BINDINGS, params: PARAMS } as KernelSpec,
  reg: { file: "matmul", entry: "reg", bindings: BINDINGS, params: PARAMS } as KernelSpec,
  small_m: { file: "matmul", entry: "small_m", bindings: BINDINGS, params: PARAMS } as KernelSpec,
  wide: { file: "matmul", entry: "wide", bindings: BINDINGS, params: PARAMS } as KernelSpec,
};
/** Workgroup shape of the register-blocked kernel (WGSL override constants). */
const REG_WG = { x: 16, y: 16 };
/** Rows × columns of C one workgroup of each kernel covers. */
const BLOCK = { tiled: [64, 64], reg: [4 * REG_WG.y, 4 * REG_WG.x], small_m: [1, 4], wide: [128, 128] } as const;

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
  const spec = MATMUL_KERNELS[kernel];
  const variant = {
    dtypes: [a.dtype, b.dtype, bias.dtype, res.dtype, c.dtype],
    overrides: {
      ACT: ACT[opts.act ?? "none"], HAS_BIAS: opts.bias ? 1 : 0, HAS_RES: opts.residual ? 1 : 0, TRANS_B: transB ? 1 : 0,
      ...(kernel === "reg" ? { WG_X: REG_WG.x, WG_Y: REG_WG.y } : {}),
    },
  };
  const sa = aBatch === 1 ? 0 : M * K, sb = bBatch === 1 ? 0 : N * K, sc = M * N;
  const eb = (t: Tensor) => t.byteSize;
  const [bm, bn] = BLOCK[kernel];
  const ldb = transB ? K : N;

  // One dispatch when every operand fits its binding.
  if ([a, b, c, opts.bias, opts.residual].every((t) => !t || wholeFits(e, t))) {
    e.run(spec, variant, [a, b, bias, res, c], { M, N, K, lda: K, ldb, ldc: N, sa, sb, sc, oa: 0, ob: 0, oc: 0, obias: 0 },
      [ceilDiv(N, bn), ceilDiv(M, bm), batch], `matmul:${kernel}:${batch}x${M}x${N}x${K}${transB ? "T" : ""}`,
      { flops: 2 * batch * M * N * K, bytes: eb(a) + eb(b) + eb(c) + (opts.bias ? eb(opts.bias) : 0) + (opts.residual ? eb(opts.residual) : 0) });
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
          oa: aStart - as.base, ob: bStart - bs.base, oc: cStart - cs.base, obias: opts.bias ? n0 - biasB.base : 0,
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
 * `t1x1` (CPU drivers): A·Bᵀ as a 1×1 convolution with A's rows as pixels,
 * run on the conv2d `reg` or `sg` kernel (weights shared by a workgroup, adjacent
 * lanes on adjacent pixels: more FMAs per load than any matmul kernel there).
 * Costs a transpose of A and of the result, one memory pass each.
 */
function linearAsConv(a: Tensor, w: Tensor, N: number, K: number, outShape: number[], opts: MatmulOptions): Tensor {
  const rows = a.numel / K;
  const a2 = a.reshape([rows, K]);
  const xt = permute(a2, [1, 0]);
  a2.dispose();
  const x4 = xt.reshape([1, K, rows, 1]);
  xt.dispose();
  const w4 = w.reshape([N, K, 1, 1]);
  const y = conv2d(x4, w4, { bias: opts.bias, act: opts.act, kernel: regKernel(a.engine) });
  x4.dispose(); w4.dispose();
  const y2 = y.reshape([N, rows]);
  y.dispose();
  let out = permute(y2, [1, 0]);
  y2.dispose();
  if (opts.residual) {
    const r2 = opts.residual.reshape([rows, N]);
    const sum = add(out, r2);
    r2.dispose(); out.dispose();
    out = sum;
  }
  const res = out.reshape(outShape);
  out.dispose();
  return res;
}

/** PyTorch Linear: y = x · Wᵀ + b, W [out, in]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor, act?: Activation, residual?: Tensor): Tensor {
  return matmul(x, weight, { transB: true, bias, act, residual });
}
