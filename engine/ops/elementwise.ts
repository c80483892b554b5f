// Elementwise ops: broadcasting binary ops, unary activations with an affine
// pre-transform, linear combinations (scheduler steps, CFG) and GEGLU.

import { SsdError } from "../errors.ts";
import type { Tensor } from "../tensor.ts";
import { shapeStr } from "../tensor.ts";
import type { KernelSpec } from "../kernel.ts";
import { actDtype, broadcastShapes, broadcastStrides, collapseDims, ceilDiv } from "./util.ts";

export const ACT = { none: 0, silu: 1, gelu: 2, gelu_tanh: 3, quick_gelu: 4, relu: 5 } as const;
export type Activation = keyof typeof ACT;

/** Maps config activation names (transformers/diffusers) to our codes. */
export function activationFromConfig(name: string): Activation {
  switch (name) {
    case "silu": case "swish": return "silu";
    case "gelu": return "gelu";
    case "gelu_new": case "gelu_pytorch_tanh": case "gelu-approximate": case "gelu_tanh": return "gelu_tanh";
    case "quick_gelu": return "quick_gelu";
    case "relu": return "relu";
    case "none": case "linear": case "identity": return "none";
    default: throw new SsdError("E_BAD_CONFIG", `unsupported activation '${name}'`);
  }
}

const BIN_OP = { add: 0, sub: 1, mul: 2, div: 3, max: 4, min: 5, pow: 6 } as const;
type BinOp = keyof typeof BIN_OP;

const BINARY: KernelSpec = {
  file: "elementwise",
  entry: "binary",
  bindings: [{ name: "A", access: "read" }, { name: "B", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"], ["d1", "u32"], ["d2", "u32"], ["d3", "u32"],
    ["a0", "u32"], ["a1", "u32"], ["a2", "u32"], ["a3", "u32"],
    ["b0", "u32"], ["b1", "u32"], ["b2", "u32"], ["b3", "u32"], ["alpha", "f32"]],
};

function binary(op: BinOp, a: Tensor, b: Tensor, act: Activation = "none", alpha = 1): Tensor {
  const e = a.engine;
  const out = broadcastShapes(a.shape, b.shape, op);
  const c = collapseDims(out, [broadcastStrides(a.shape, out), broadcastStrides(b.shape, out)]);
  if (!c) throw new SsdError("E_SHAPE", `${op}: broadcasting ${shapeStr(a.shape)} with ${shapeStr(b.shape)} needs more than 4 dims`);
  const y = e.empty(out, actDtype(a));
  const [sa, sb] = c.strides;
  const n = y.numel;
  e.run(BINARY, { dtypes: [a.dtype, b.dtype, y.dtype], overrides: { OP: BIN_OP[op], ACT: ACT[act] } }, [a, b, y],
    { n, d1: c.dims[1], d2: c.dims[2], d3: c.dims[3], a0: sa[0], a1: sa[1], a2: sa[2], a3: sa[3], b0: sb[0], b1: sb[1], b2: sb[2], b3: sb[3], alpha },
    [ceilDiv(n, 256)], `binary.${op}`);
  return y;
}

export const add = (a: Tensor, b: Tensor, act: Activation = "none") => binary("add", a, b, act);
export const sub = (a: Tensor, b: Tensor) => binary("sub", a, b);
export const mul = (a: Tensor, b: Tensor) => binary("mul", a, b);
export const div = (a: Tensor, b: Tensor) => binary("div", a, b);
export const maximum = (a: Tensor, b: Tensor) => binary("max", a, b);
export const minimum = (a: Tensor, b: Tensor) => binary("min", a, b);
export const pow = (a: Tensor, b: Tensor) => binary("pow", a, b);

const UNARY: KernelSpec = {
  file: "elementwise",
  entry: "unary",
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"], ["alpha", "f32"], ["beta", "f32"], ["lo", "f32"], ["hi", "f32"]],
};

/** y = clamp(act(x * alpha + beta), lo, hi) */
export function unary(x: Tensor, act: Activation, alpha = 1, beta = 0, lo = -Infinity, hi = Infinity): Tensor {
  const e = x.engine;
  const y = e.empty(x.shape, actDtype(x));
  const F = 3.4028234663852886e38;
  e.run(UNARY, { dtypes: [x.dtype, y.dtype], overrides: { ACT: ACT[act] } }, [x, y],
    { n: x.numel, alpha, beta, lo: Math.max(lo, -F), hi: Math.min(hi, F) }, [ceilDiv(x.numel, 256)], `unary.${act}`);
  return y;
}

export const silu = (x: Tensor) => unary(x, "silu");
export const gelu = (x: Tensor, approximate: "none" | "tanh" = "none") => unary(x, approximate === "tanh" ? "gelu_tanh" : "gelu");
export const quickGelu = (x: Tensor) => unary(x, "quick_gelu");
export const relu = (x: Tensor) => unary(x, "relu");
/** y = x * alpha + beta */
export const scale = (x: Tensor, alpha: number, beta = 0) => unary(x, "none", alpha, beta);
export const clamp = (x: Tensor, lo: number, hi: number) => unary(x, "none", 1, 0, lo, hi);
/** A copy in the activation dtype (also converts f16 weights to f32 activations). */
export const copy = (x: Tensor) => unary(x, "none");

const LINCOMB: KernelSpec = {
  file: "elementwise",
  entry: "lincomb",
  bindings: [{ name: "X0", access: "read" }, { name: "X1", access: "read" }, { name: "X2", access: "read" }, { name: "X3", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"], ["k", "u32"], ["c0", "f32"], ["c1", "f32"], ["c2", "f32"], ["c3", "f32"], ["c4", "f32"]],
};

/** y = Σ coef_i · x_i + constant, all x_i of one shape (at most 4 terms). */
export function lincomb(terms: [number, Tensor][], constant = 0): Tensor {
  if (terms.length < 1 || terms.length > 4) throw new SsdError("E_INTERNAL", `lincomb takes 1 to 4 terms, got ${terms.length}`);
  const x0 = terms[0][1];
  for (const [, t] of terms) if (t.numel !== x0.numel) throw new SsdError("E_SHAPE", `lincomb: ${shapeStr(t.shape)} vs ${shapeStr(x0.shape)}`);
  const e = x0.engine;
  const y = e.empty(x0.shape, actDtype(x0));
  const xs = [0, 1, 2, 3].map((i) => terms[i]?.[1] ?? x0);
  const cs = [0, 1, 2, 3].map((i) => terms[i]?.[0] ?? 0);
  e.run(LINCOMB, { dtypes: [...xs.map((t) => t.dtype), y.dtype] }, [...xs, y],
    { n: y.numel, k: terms.length, c0: cs[0], c1: cs[1], c2: cs[2], c3: cs[3], c4: constant }, [ceilDiv(y.numel, 256)], "lincomb");
  return y;
}

const GEGLU: KernelSpec = {
  file: "elementwise",
  entry: "geglu",
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"], ["h", "u32"]],
};

/** GEGLU: x[..., 2H] -> x[..., :H] * act(x[..., H:]) (diffusers' GEGLU uses exact gelu). */
export function geglu(x: Tensor, act: Activation = "gelu"): Tensor {
  const h2 = x.dim(-1);
  if (h2 % 2) throw new SsdError("E_SHAPE", `geglu: last dim ${h2} is odd`);
  const shape = [...x.shape.slice(0, -1), h2 / 2];
  const e = x.engine;
  const y = e.empty(shape, actDtype(x));
  e.run(GEGLU, { dtypes: [x.dtype, y.dtype], overrides: { ACT: ACT[act] } }, [x, y], { n: y.numel, h: h2 / 2 }, [ceilDiv(y.numel, 256)], "geglu");
  return y;
}
