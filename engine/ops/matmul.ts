// matmul and linear: batched, optional transposed B, fused bias, activation and
// residual add in the epilogue.

import { SsdError } from "../errors.ts";
import type { Tensor } from "../tensor.ts";
import { shapeStr } from "../tensor.ts";
import type { KernelSpec } from "../kernel.ts";
import { ACT, type Activation } from "./elementwise.ts";
import { actDtype, ceilDiv } from "./util.ts";

const BINDINGS = [
  { name: "A", access: "read" as const },
  { name: "B", access: "read" as const },
  { name: "BIAS", access: "read" as const },
  { name: "R", access: "read" as const },
  { name: "C", access: "read_write" as const },
];
const PARAMS: KernelSpec["params"] = [["M", "u32"], ["N", "u32"], ["K", "u32"], ["lda", "u32"], ["ldb", "u32"], ["ldc", "u32"], ["sa", "u32"], ["sb", "u32"], ["sc", "u32"]];
const TILED: KernelSpec = { file: "matmul", entry: "tiled", bindings: BINDINGS, params: PARAMS };
const SMALL_M: KernelSpec = { file: "matmul", entry: "small_m", bindings: BINDINGS, params: PARAMS };

export interface MatmulOptions {
  /** B is [.., N, K] (PyTorch Linear weight layout) */
  transB?: boolean;
  bias?: Tensor;
  act?: Activation;
  /** added after the activation; same shape as the output */
  residual?: Tensor;
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
  const c = e.empty(outShape, actDtype(a));
  const bias = opts.bias ?? e.placeholder();
  const res = opts.residual ?? e.placeholder();
  const variant = {
    dtypes: [a.dtype, b.dtype, bias.dtype, res.dtype, c.dtype],
    overrides: { ACT: ACT[opts.act ?? "none"], HAS_BIAS: opts.bias ? 1 : 0, HAS_RES: opts.residual ? 1 : 0, TRANS_B: transB ? 1 : 0 },
  };
  const params = { M, N, K, lda: K, ldb: transB ? K : N, ldc: N, sa: aBatch === 1 ? 0 : M * K, sb: bBatch === 1 ? 0 : N * K, sc: M * N };
  const eb = (t: Tensor) => t.byteSize;
  const cost = {
    flops: 2 * batch * M * N * K,
    bytes: eb(a) + eb(b) + eb(c) + (opts.bias ? eb(opts.bias) : 0) + (opts.residual ? eb(opts.residual) : 0),
  };
  if (M <= 4) e.run(SMALL_M, variant, [a, b, bias, res, c], params, [ceilDiv(N, 4), M, batch], "matmul", cost);
  else e.run(TILED, variant, [a, b, bias, res, c], params, [ceilDiv(N, 64), ceilDiv(M, 64), batch], "matmul", cost);
  return c;
}

/** PyTorch Linear: y = x · Wᵀ + b, W [out, in]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor, act?: Activation, residual?: Tensor): Tensor {
  return matmul(x, weight, { transB: true, bias, act, residual });
}
