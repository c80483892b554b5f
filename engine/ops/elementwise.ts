// Elementwise ops: broadcasting binary ops, unary activations with an affine
// pre-transform, linear combinations (scheduler steps, CFG) and GEGLU.

import { SsdError } from "../errors.ts";
import type { Tensor } from "../tensor.ts";
import { shapeStr } from "../tensor.ts";
import type { KernelSpec } from "../kernel.ts";
import type { Engine, Binding } from "../engine.ts";
import { DTYPE_BYTES } from "../tensor.ts";
import { actDtype, broadcastShapes, broadcastStrides, collapseDims, ceilDiv } from "./util.ts";
import { offsetRange } from "./shape.ts";

// ---------------------------------------------------------------- pieces
// Tensors larger than maxStorageBufferBindingSize are processed in pieces of
// the output, each bound as an aligned sub-range (the VAE decoder at 1024²
// has 1 GiB f32 activations; lavapipe/SwiftShader bind at most 128 MiB).

/** Output pieces start at multiples of 128 elements: 256-byte aligned in f16 and f32 alike. */
const PIECE = 128;

/** Bytes a binding of elements [lo, hi) of t occupies once its start is aligned down. */
function spanBytes(t: Tensor, lo: number, hi: number): number {
  const es = DTYPE_BYTES[t.dtype];
  const align = t.engine.gpu.limits.minStorageBufferOffsetAlignment;
  return Math.ceil((hi * es) / 4) * 4 - Math.floor((lo * es) / align) * align;
}

/** Elements [lo, hi) of t bound with an aligned start; `base` is the element index of the binding's first byte. */
function rangeOf(t: Tensor, lo: number, hi: number): { binding: Binding; base: number } {
  const es = DTYPE_BYTES[t.dtype];
  const align = t.engine.gpu.limits.minStorageBufferOffsetAlignment;
  const off = Math.floor((lo * es) / align) * align;
  const end = Math.min(Math.ceil((hi * es) / 4) * 4, t.buffer.size);
  return { binding: { tensor: t, byteOffset: off, byteSize: Math.max(4, end - off) }, base: off / es };
}

/** Output ranges [q0, q1) covering [0, n) for which fits(q0, q1) holds (fits is monotone in the range). */
function pieces(e: Engine, n: number, fits: (q0: number, q1: number) => boolean, label: string): [number, number][] {
  const out: [number, number][] = [];
  for (let q0 = 0; q0 < n;) {
    if (fits(q0, n)) { out.push([q0, n]); break; }
    let a = 0, b = Math.ceil((n - q0) / PIECE); // fits(a blocks) assumed, !fits(b blocks)
    while (b - a > 1) {
      const m = Math.floor((a + b) / 2);
      if (fits(q0, Math.min(n, q0 + m * PIECE))) a = m; else b = m;
    }
    if (a < 1) throw new SsdError("E_LIMITS", `${label}: ${PIECE} elements exceed maxStorageBufferBindingSize (${e.gpu.limits.maxStorageBufferBindingSize})`);
    out.push([q0, q0 + a * PIECE]);
    q0 += a * PIECE;
  }
  return out;
}

const wholeFits = (ts: Tensor[]) => ts.every((t) => Math.ceil(t.storage.byteSize / 4) * 4 <= t.engine.gpu.limits.maxStorageBufferBindingSize);

const offsetBox = offsetRange;

/** Outputs per workgroup: 256 threads of EW = 8 consecutive outputs (shaders/elementwise.wgsl). */
const PER_WG = 256 * 8;

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
    ["b0", "u32"], ["b1", "u32"], ["b2", "u32"], ["b3", "u32"], ["alpha", "f32"], ["q0", "u32"], ["aBind", "u32"], ["bBind", "u32"]],
};

function binary(op: BinOp, a: Tensor, b: Tensor, act: Activation = "none", alpha = 1): Tensor {
  const e = a.engine;
  const out = broadcastShapes(a.shape, b.shape, op);
  const c = collapseDims(out, [broadcastStrides(a.shape, out), broadcastStrides(b.shape, out)]);
  if (!c) throw new SsdError("E_SHAPE", `${op}: broadcasting ${shapeStr(a.shape)} with ${shapeStr(b.shape)} needs more than 4 dims`);
  const y = e.empty(out, actDtype(a));
  const [sa, sb] = c.strides;
  const n = y.numel;
  const variant = { dtypes: [a.dtype, b.dtype, y.dtype], overrides: { OP: BIN_OP[op], ACT: ACT[act] } };
  const params = { n, d1: c.dims[1], d2: c.dims[2], d3: c.dims[3], a0: sa[0], a1: sa[1], a2: sa[2], a3: sa[3], b0: sb[0], b1: sb[1], b2: sb[2], b3: sb[3], alpha, q0: 0, aBind: 0, bBind: 0 };
  if (wholeFits([a, b, y])) {
    e.run(BINARY, variant, [a, b, y], params, [ceilDiv(n, PER_WG)], `binary.${op}`);
    return y;
  }
  const max = e.gpu.limits.maxStorageBufferBindingSize;
  const fits = (q0: number, q1: number) => spanBytes(y, q0, q1) <= max &&
    spanBytes(a, ...offsetBox(c.dims, sa, q0, q1)) <= max && spanBytes(b, ...offsetBox(c.dims, sb, q0, q1)) <= max;
  for (const [q0, q1] of pieces(e, n, fits, `binary.${op}`)) {
    const ra = rangeOf(a, ...offsetBox(c.dims, sa, q0, q1)), rb = rangeOf(b, ...offsetBox(c.dims, sb, q0, q1)), ry = rangeOf(y, q0, q1);
    e.run(BINARY, variant, [ra.binding, rb.binding, ry.binding], { ...params, n: q1 - q0, q0, aBind: ra.base, bBind: rb.base }, [ceilDiv(q1 - q0, PER_WG)], `binary.${op}`);
  }
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
  const params = { n: x.numel, alpha, beta, lo: Math.max(lo, -F), hi: Math.min(hi, F) };
  // x and y are indexed alike: each piece binds both from its first element
  // (128-element aligned); with n a multiple of 4 every piece holds whole vec4s
  const v4 = x.numel % 4 === 0;
  for (const [q0, q1] of sameIndexPieces([x, y])) {
    e.run(UNARY, { dtypes: [x.dtype, y.dtype], vec4: [v4, v4], overrides: { ACT: ACT[act], V4: v4 ? 1 : 0 } }, q0 === 0 && q1 === x.numel ? [x, y] : [rangeOf(x, q0, q1).binding, rangeOf(y, q0, q1).binding],
      { ...params, n: q1 - q0 }, [ceilDiv(q1 - q0, PER_WG)], `unary.${act}`);
  }
  return y;
}

/** Pieces of tensors indexed alike (whole when everything fits one binding). */
function sameIndexPieces(ts: Tensor[]): [number, number][] {
  const n = ts[0].numel;
  if (n === 0) return [];
  if (wholeFits(ts)) return [[0, n]];
  const max = ts[0].engine.gpu.limits.maxStorageBufferBindingSize;
  return pieces(ts[0].engine, n, (q0, q1) => ts.every((t) => spanBytes(t, q0, q1) <= max), "elementwise");
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
  for (const [q0, q1] of sameIndexPieces([...xs, y])) {
    const whole = q0 === 0 && q1 === y.numel;
    e.run(LINCOMB, { dtypes: [...xs.map((t) => t.dtype), y.dtype] }, [...xs, y].map((t) => (whole ? t : rangeOf(t, q0, q1).binding)),
      { n: q1 - q0, k: terms.length, c0: cs[0], c1: cs[1], c2: cs[2], c3: cs[3], c4: constant }, [ceilDiv(q1 - q0, PER_WG)], "lincomb");
  }
  return y;
}

const GEGLU: KernelSpec = {
  file: "elementwise",
  entry: "geglu",
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"], ["h", "u32"], ["q0", "u32"], ["xBind", "u32"]],
};

/** GEGLU: x[..., 2H] -> x[..., :H] * act(x[..., H:]) (diffusers' GEGLU uses exact gelu). */
export function geglu(x: Tensor, act: Activation = "gelu"): Tensor {
  const h2 = x.dim(-1);
  if (h2 % 2) throw new SsdError("E_SHAPE", `geglu: last dim ${h2} is odd`);
  const shape = [...x.shape.slice(0, -1), h2 / 2];
  const e = x.engine;
  const y = e.empty(shape, actDtype(x));
  const h = h2 / 2, n = y.numel;
  const variant = { dtypes: [x.dtype, y.dtype], overrides: { ACT: ACT[act] } };
  if (wholeFits([x, y])) {
    e.run(GEGLU, variant, [x, y], { n, h, q0: 0, xBind: 0 }, [ceilDiv(n, PER_WG)], "geglu");
    return y;
  }
  // input rows of the outputs [q0, q1)
  const xRange = (q0: number, q1: number): [number, number] => [Math.floor(q0 / h) * h2, (Math.floor((q1 - 1) / h) + 1) * h2];
  const max = e.gpu.limits.maxStorageBufferBindingSize;
  for (const [q0, q1] of pieces(e, n, (q0, q1) => spanBytes(y, q0, q1) <= max && spanBytes(x, ...xRange(q0, q1)) <= max, "geglu")) {
    const rx = rangeOf(x, ...xRange(q0, q1));
    e.run(GEGLU, variant, [rx.binding, rangeOf(y, q0, q1).binding], { n: q1 - q0, h, q0, xBind: rx.base }, [ceilDiv(q1 - q0, PER_WG)], "geglu");
  }
  return y;
}
