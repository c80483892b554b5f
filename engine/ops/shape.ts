// Shape and data-movement ops: concat, slice, chunk, permute, pad2d, gather,
// selectRows, timestepEmbedding, reduce. Copies keep the input's dtype and
// move raw bits (shaders/shape.wgsl); f16 copies work on packed-f16 devices
// too. Tensors larger than maxStorageBufferBindingSize are handled by binding
// aligned sub-ranges, one dispatch per piece.

import { SsdError } from "../errors.ts";
import type { Engine, Binding } from "../engine.ts";
import type { Tensor, DType } from "../tensor.ts";
import { Tensor as TensorClass, Storage, DTYPE_BYTES, shapeStr, numelOf } from "../tensor.ts";
import type { KernelSpec } from "../kernel.ts";
import { actDtype, ceilDiv, collapseDims } from "./util.ts";
import { floatToHalf } from "../half.ts";
import * as resizeImpl from "./resize.ts";

// ------------------------------------------------------------------ helpers

function normDim(op: string, dim: number, rank: number): number {
  const d = dim < 0 ? dim + rank : dim;
  if (!Number.isInteger(d) || d < 0 || d >= rank) throw new SsdError("E_SHAPE", `${op}: dim ${dim} out of range for rank ${rank}`);
  return d;
}

function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array(shape.length);
  let st = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = st; st *= shape[i]; }
  return s;
}

/** A byte range bound for one piece: offset aligned down, size rounded up to whole words, clamped to the buffer. */
function bindRange(t: Tensor, firstByte: number, endByte: number): { binding: Binding; base: number } {
  const align = t.engine.gpu.limits.minStorageBufferOffsetAlignment;
  const off = Math.floor(firstByte / align) * align;
  const end = Math.min(Math.ceil(endByte / 4) * 4, t.buffer.size);
  return { binding: { tensor: t, byteOffset: off, byteSize: Math.max(4, end - off) }, base: off };
}

/** Largest n in [lo, hi] with ok(n), assuming ok is monotone (true up to some point); lo - 1 if none. */
function largest(lo: number, hi: number, ok: (n: number) => boolean): number {
  if (ok(hi)) return hi;
  let a = lo - 1, b = hi; // ok(a) assumed, !ok(b)
  while (b - a > 1) {
    const m = Math.floor((a + b) / 2);
    if (ok(m)) a = m; else b = m;
  }
  return a;
}

/**
 * An output for raw-bit copies. Engine.empty refuses f16 without shader-f16
 * because kernels cannot store packed halves one at a time; the copy kernels
 * write whole words, so a copy of an f16 tensor may stay f16 there too.
 */
function emptyRaw(e: Engine, shape: readonly number[], dtype: DType): Tensor {
  if (dtype !== "f16" || e.gpu.f16) return e.empty(shape, dtype);
  const bytes = Math.max(4, numelOf(shape) * 2);
  return new TensorClass(e, shape.slice(), dtype, new Storage(e.pool.acquire(bytes), bytes, true));
}

// ------------------------------------------------------------------ strided copy

const COPY: KernelSpec = {
  file: "shape",
  entry: "copy",
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"], ["q0", "u32"], ["l", "u32"], ["c0", "u32"], ["c1", "u32"], ["ra", "u32"], ["wpr", "u32"],
    ["rh", "u32"], ["ps", "u32"], ["s", "u32"], ["dstOff", "u32"], ["dstBind", "u32"], ["srcOff", "u32"], ["srcBind", "u32"],
    ["d1", "u32"], ["d2", "u32"], ["d3", "u32"], ["d4", "u32"], ["d5", "u32"],
    ["s0", "u32"], ["s1", "u32"], ["s2", "u32"], ["s3", "u32"], ["s4", "u32"], ["s5", "u32"]],
};

/**
 * The geometry of one copy (see shaders/shape.wgsl): `rows * l` region elements;
 * source offsets from `dims`/`strides` (6 dims, row-major over the region);
 * destination row r at dstOff + floor(r / rh) * ps + (r % rh) * s.
 */
interface CopyGeom {
  rows: number;
  l: number;
  rh: number;
  ps: number;
  s: number;
  dstOff: number;
  srcOff: number;
  dims: number[]; // 6
  strides: number[]; // 6
}

function srcBox(g: CopyGeom, q0: number, q1: number): [number, number] {
  const [lo, hi] = offsetRange(g.dims, g.strides, q0, q1);
  return [g.srcOff + lo, g.srcOff + hi - 1];
}

/**
 * [min, max + 1) of sum_k i_k * strides_k over the row-major indices
 * q in [q0, q1) of `dims` (strides >= 0; broadcast and permuted strides make
 * the offset non-monotone in q, so this is not just offset(q0)..offset(q1-1)).
 * The range splits at the first dim k where q0 and q1-1 differ: i_k = a_k with
 * a suffix >= a's, a_k < i_k < b_k with any suffix, i_k = b_k with a suffix <= b's.
 */
export function offsetRange(dims: readonly number[], strides: readonly number[], q0: number, q1: number): [number, number] {
  const r = dims.length;
  const a = unflatN(q0, dims), b = unflatN(q1 - 1, dims);
  const full = (j: number) => { let m = 0; for (let l = j; l < r; l++) m += (dims[l] - 1) * strides[l]; return m; };
  // min over suffixes (from dim j) lexicographically >= a's suffix
  const minGE = (j: number): number => (j >= r ? 0 : Math.min(a[j] * strides[j] + minGE(j + 1), a[j] + 1 < dims[j] ? (a[j] + 1) * strides[j] : Infinity));
  // max over suffixes lexicographically <= b's suffix
  const maxLE = (j: number): number => (j >= r ? 0 : Math.max(b[j] * strides[j] + maxLE(j + 1), b[j] > 0 ? (b[j] - 1) * strides[j] + full(j + 1) : -Infinity));
  let k = 0, pre = 0;
  while (k < r && a[k] === b[k]) { pre += a[k] * strides[k]; k++; }
  if (k === r) return [pre, pre + 1];
  const lo = pre + Math.min(a[k] * strides[k] + minGE(k + 1), (a[k] + 1) * strides[k]);
  const hi = pre + Math.max(b[k] * strides[k] + maxLE(k + 1), (b[k] - 1) * strides[k] + full(k + 1));
  return [lo, hi + 1];
}

function unflatN(q: number, dims: readonly number[]): number[] {
  const idx = new Array(dims.length).fill(0);
  for (let k = dims.length - 1; k > 0; k--) { idx[k] = q % dims[k]; q = Math.floor(q / dims[k]); }
  idx[0] = q;
  return idx;
}

const dstOf = (g: CopyGeom, row: number, col: number) => g.dstOff + Math.floor(row / g.rh) * g.ps + (row % g.rh) * g.s + col;

/** Encodes the copy `g` from src to dst (both of the same element size), split into pieces that fit the binding limit. */
function runCopy(src: Tensor, dst: Tensor, g: CopyGeom, label: string): void {
  const e = src.engine;
  const es = DTYPE_BYTES[src.dtype];
  if (DTYPE_BYTES[dst.dtype] !== es) throw new SsdError("E_INTERNAL", `${label}: copy between ${src.dtype} and ${dst.dtype}`);
  if (g.rows * g.l === 0) return;
  const maxBind = e.gpu.limits.maxStorageBufferBindingSize;
  const align = e.gpu.limits.minStorageBufferOffsetAlignment;
  // bytes a binding of elements [lo, hi] occupies once its start is aligned down
  const span = (lo: number, hi: number) => Math.ceil(((hi + 1) * es) / 4) * 4 - Math.floor((lo * es) / align) * align;
  const fits = (r: number, c0: number, r1: number, c1: number) => {
    // region rows r..r1-1 (columns [c0, c1) when a single row)
    const [slo, shi] = srcBox(g, r * g.l + c0, (r1 - 1) * g.l + c1);
    return span(slo, shi) <= maxBind && span(dstOf(g, r, c0), dstOf(g, r1 - 1, c1 - 1)) <= maxBind;
  };
  const es16 = es === 2;
  // leading dims of extent 1 (collapseDims pads with them) need no index arithmetic
  let nd = 6;
  while (nd > 1 && g.dims[6 - nd] === 1) nd--;
  const piece = (r: number, r1: number, c0: number, c1: number) => {
    const [slo, shi] = srcBox(g, r * g.l + c0, (r1 - 1) * g.l + c1);
    const sb = bindRange(src, slo * es, (shi + 1) * es);
    const db = bindRange(dst, dstOf(g, r, c0) * es, (dstOf(g, r1 - 1, c1 - 1) + 1) * es);
    const rows = r1 - r;
    const wpr = Math.floor((c1 - c0) / 2) + 1;
    const n = es16 ? rows * wpr : rows === 1 ? c1 - c0 : rows * g.l;
    const [, d1, d2, d3, d4, d5] = g.dims;
    e.run(COPY, { dtypes: ["u32", "u32"], overrides: { ES16: es16 ? 1 : 0, ND: nd } }, [sb.binding, db.binding], {
      n, q0: r * g.l + c0, l: g.l, c0, c1, ra: r, wpr, rh: g.rh, ps: g.ps, s: g.s,
      dstOff: g.dstOff, dstBind: db.base / es, srcOff: g.srcOff, srcBind: sb.base / es,
      d1, d2, d3, d4, d5, s0: g.strides[0], s1: g.strides[1], s2: g.strides[2], s3: g.strides[3], s4: g.strides[4], s5: g.strides[5],
    }, [ceilDiv(n, 256)], label);
  };
  for (let r = 0; r < g.rows;) {
    const k = largest(1, g.rows - r, (k) => fits(r, 0, r + k, g.l));
    if (k >= 1) {
      piece(r, r + k, 0, g.l);
      r += k;
      continue;
    }
    // a single row does not fit: split its columns
    for (let c = 0; c < g.l;) {
      const m = largest(1, g.l - c, (m) => fits(r, c, r + 1, c + m));
      if (m < 1) throw new SsdError("E_LIMITS", `${label}: one element span exceeds maxStorageBufferBindingSize`);
      piece(r, r + 1, c, c + m);
      c += m;
    }
    r++;
  }
}

/**
 * Copies the strided view (shape, srcStrides, srcOff) of `src` into `dst`
 * rows of length l (see CopyGeom). Uses buffer-to-buffer copies when the
 * source view is one contiguous block and the rows are few and 4-byte aligned.
 */
function copyView(src: Tensor, shape: readonly number[], srcStrides: number[], srcOff: number, dst: Tensor,
  dstGeom: { rows: number; l: number; rh: number; ps: number; s: number; dstOff: number }, label: string): void {
  const n = numelOf(shape);
  if (n === 0) return;
  const c = collapseDims(shape, [srcStrides], 6);
  if (!c) throw new SsdError("E_SHAPE", `${label}: view ${shapeStr(shape)} has more than 6 non-mergeable dims`);
  const es = DTYPE_BYTES[src.dtype];
  const contiguousSrc = c.dims.every((d, i) => i === 5 || d === 1) && (c.strides[0][5] === 1 || c.dims[5] === 1);
  const g: CopyGeom = { ...dstGeom, srcOff, dims: c.dims, strides: c.strides[0] };
  if (contiguousSrc && dstGeom.rows <= 8) {
    const L = dstGeom.l * es;
    const aligned = (srcOff * es) % 4 === 0 && L % 4 === 0 &&
      Array.from({ length: dstGeom.rows }, (_, r) => (dstOf(g, r, 0) * es) % 4 === 0).every(Boolean);
    if (aligned) {
      for (let r = 0; r < dstGeom.rows; r++) src.engine.copy(src, (srcOff + r * dstGeom.l) * es, dst, dstOf(g, r, 0) * es, L);
      return;
    }
  }
  runCopy(src, dst, g, label);
}

const contiguousDst = (n: number) => ({ rows: 1, l: n, rh: 1, ps: 0, s: 0, dstOff: 0 });

// ------------------------------------------------------------------ public ops

/** concatenation along `dim` (negative counts from the end) */
export function concat(xs: Tensor[], dim: number): Tensor {
  if (xs.length === 0) throw new SsdError("E_SHAPE", "concat: no tensors");
  const rank = xs[0].rank;
  const d = normDim("concat", dim, rank);
  for (const x of xs) {
    if (x.rank !== rank || x.shape.some((s, i) => i !== d && s !== xs[0].shape[i])) {
      throw new SsdError("E_SHAPE", `concat along ${dim}: ${xs.map((t) => shapeStr(t.shape)).join(" vs ")}`);
    }
  }
  // mixed float dtypes promote to f32, as torch.cat does
  const dtypes = new Set(xs.map((x) => x.dtype));
  let inputs = xs;
  let dtype: DType = xs[0].dtype;
  if (dtypes.size > 1) {
    if ([...dtypes].some((t) => t !== "f32" && t !== "f16")) throw new SsdError("E_DTYPE", `concat: mixed dtypes ${[...dtypes].join(", ")}`);
    dtype = "f32";
    inputs = xs.map((x) => (x.dtype === "f32" ? x : cast(x, "f32")));
  }
  const e = xs[0].engine;
  const total = inputs.reduce((a, x) => a + x.shape[d], 0);
  const outShape = xs[0].shape.slice();
  outShape[d] = total;
  const y = emptyRaw(e, outShape, dtype);
  const outer = numelOf(outShape.slice(0, d));
  const inner = numelOf(outShape.slice(d + 1));
  let off = 0;
  for (const x of inputs) {
    const ck = x.shape[d];
    if (ck > 0 && outer * inner > 0) {
      // rows = outer blocks; each is a contiguous run of ck*inner elements in x and in y
      copyView(x, [x.numel], [1], 0, y, { rows: outer, l: ck * inner, rh: outer, ps: 0, s: total * inner, dstOff: off * inner }, "concat");
    }
    off += ck;
  }
  for (let i = 0; i < inputs.length; i++) if (inputs[i] !== xs[i]) inputs[i].dispose();
  return y;
}

/** x[..., start:end, ...] along `dim`, copied */
export function slice(x: Tensor, dim: number, start: number, end: number): Tensor {
  const d = normDim("slice", dim, x.rank);
  const size = x.shape[d];
  // Python slice semantics: negatives count from the end, out-of-range bounds clamp
  const clampIdx = (i: number) => Math.min(Math.max(i < 0 ? i + size : i, 0), size);
  const s = clampIdx(start);
  const en = Math.max(s, clampIdx(end));
  const outShape = x.shape.slice();
  outShape[d] = en - s;
  const y = emptyRaw(x.engine, outShape, x.dtype);
  const st = contiguousStrides(x.shape);
  copyView(x, outShape, st, s * st[d], y, contiguousDst(y.numel), "slice");
  return y;
}

/** torch.chunk along `dim`: pieces of ceil(size / n) (the last may be smaller, and there may be fewer than n) */
export function chunk(x: Tensor, n: number, dim: number): Tensor[] {
  if (!Number.isInteger(n) || n < 1) throw new SsdError("E_SHAPE", `chunk: n must be a positive integer, got ${n}`);
  const d = normDim("chunk", dim, x.rank);
  const size = x.shape[d];
  const step = Math.ceil(size / n);
  const out: Tensor[] = [];
  if (size === 0) return [slice(x, d, 0, 0)];
  for (let s = 0; s < size; s += step) out.push(slice(x, d, s, s + step));
  return out;
}

/** torch.permute */
export function permute(x: Tensor, dims: number[]): Tensor {
  const r = x.rank;
  const p = dims.map((d) => normDim("permute", d, r));
  if (p.length !== r || new Set(p).size !== r) throw new SsdError("E_SHAPE", `permute: [${dims.join(", ")}] is not a permutation of ${r} dims`);
  const outShape = p.map((d) => x.shape[d]);
  const st = contiguousStrides(x.shape);
  const y = emptyRaw(x.engine, outShape, x.dtype);
  const view = p.map((d) => st[d]);
  if (!transpose4(x, outShape, view, y)) copyView(x, outShape, view, 0, y, contiguousDst(y.numel), "permute");
  return y;
}

const TRANSPOSE4: KernelSpec = {
  file: "shape", entry: "transpose4",
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["B", "u32"], ["A", "u32"], ["C", "u32"]],
};

/**
 * The permutes that are batched 2-D transposes of 32-bit elements with both
 * sides a multiple of 4 (y[b][c][a] = x[b][a][c]: the linears' transposes on
 * CPU drivers, NCHW ↔ NHWC) take the 4×4-tile kernel when both tensors fit a
 * binding. Returns false where the general copy must do it.
 */
function transpose4(x: Tensor, outShape: number[], view: number[], y: Tensor): boolean {
  if (DTYPE_BYTES[x.dtype] !== 4 || x.numel === 0) return false;
  const c = collapseDims(outShape, [view], 3);
  if (!c) return false;
  const [B, C, A] = c.dims, [sb, s1, s2] = c.strides[0];
  // y[b][c][a] reads x at b·A·C + c·1 + a·C: x is [B][A][C]
  if (s1 !== 1 || s2 !== C || (B > 1 && sb !== A * C) || A % 4 || C % 4) return false;
  const e = x.engine;
  if (![x, y].every((t) => t.byteSize <= e.gpu.limits.maxStorageBufferBindingSize)) return false;
  const dt = x.dtype === "f32" ? "u32" : x.dtype; // moved as bits
  const tiles = B * (A / 4) * (C / 4);
  e.run(TRANSPOSE4, { dtypes: [dt, dt], vec4: [true, true] }, [x, y], { B, A, C }, [ceilDiv(tiles, 64)], "permute.transpose4",
    { flops: 0, bytes: 2 * x.byteSize });
  return true;
}

const FILL: KernelSpec = { file: "shape", entry: "fill", bindings: [{ name: "Y", access: "read_write" }], params: [["n", "u32"], ["pattern", "u32"]] };

/** Fills a tensor's storage with `value` in its dtype, piecewise under the binding limit. */
function fill(y: Tensor, value: number): void {
  const e = y.engine;
  let pattern: number;
  if (y.dtype === "f32") pattern = new Uint32Array(new Float32Array([value]).buffer)[0];
  else if (y.dtype === "f16") { const h = floatToHalf(value); pattern = (h | (h << 16)) >>> 0; }
  else pattern = y.dtype === "i32" ? value | 0 : value >>> 0;
  const words = Math.ceil(y.byteSize / 4);
  const align = e.gpu.limits.minStorageBufferOffsetAlignment;
  const per = Math.max(1, Math.floor(e.gpu.limits.maxStorageBufferBindingSize / align) * align / 4);
  for (let w = 0; w < words; w += per) {
    const n = Math.min(per, words - w);
    e.run(FILL, { dtypes: ["u32"] }, [{ tensor: y, byteOffset: w * 4, byteSize: n * 4 }], { n, pattern }, [ceilDiv(n, 256)], "fill");
  }
}


/** constant padding of the last two dims: [left, right, top, bottom] as F.pad (negative values crop) */
export function pad2d(x: Tensor, pads: [number, number, number, number], value = 0): Tensor {
  if (x.rank < 2) throw new SsdError("E_SHAPE", `pad2d: input must have at least 2 dims, got ${shapeStr(x.shape)}`);
  const [left, right, top, bottom] = pads;
  const H = x.dim(-2), W = x.dim(-1);
  const Ho = H + top + bottom, Wo = W + left + right;
  if (Ho < 0 || Wo < 0) throw new SsdError("E_SHAPE", `pad2d: pads [${pads.join(", ")}] leave a negative size for ${shapeStr(x.shape)}`);
  const planes = numelOf(x.shape.slice(0, -2));
  const y = emptyRaw(x.engine, [...x.shape.slice(0, -2), Ho, Wo], x.dtype);
  // the part of x that lands inside y (negative pads crop x)
  const h0 = Math.max(0, -top), h1 = Math.min(H, H + bottom);
  const w0 = Math.max(0, -left), w1 = Math.min(W, W + right);
  const hh = h1 - h0, ww = w1 - w0;
  const inner = hh > 0 && ww > 0 && planes > 0;
  if (!inner || Ho !== hh || Wo !== ww) fill(y, value);
  if (inner) {
    const dstOff = (h0 + top) * Wo + (w0 + left);
    copyView(x, [planes, hh, ww], [H * W, W, 1], h0 * W + w0, y,
      { rows: planes * hh, l: ww, rh: hh, ps: Ho * Wo, s: Wo, dstOff }, "pad2d");
  }
  return y;
}

const CAST: KernelSpec = {
  file: "shape", entry: "cast_float",
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"]],
};

/** A copy converted to another float dtype (f16 output needs native shader-f16). */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) {
    const y = emptyRaw(x.engine, x.shape, dtype);
    copyView(x, [x.numel], [1], 0, y, contiguousDst(x.numel), "cast");
    return y;
  }
  const e = x.engine;
  if (![x.dtype, dtype].every((t) => t === "f32" || t === "f16")) throw new SsdError("E_DTYPE", `cast: ${x.dtype} -> ${dtype} is not supported`);
  const y = e.empty(x.shape, dtype);
  // pieces of a whole number of 256-byte blocks in both dtypes
  const align = e.gpu.limits.minStorageBufferOffsetAlignment;
  const unit = align / 2; // elements per aligned block of f16 (f32 blocks are half as many, so this aligns both)
  const per = Math.max(unit, Math.floor(e.gpu.limits.maxStorageBufferBindingSize / 4 / unit) * unit);
  for (let i = 0; i < x.numel; i += per) {
    const n = Math.min(per, x.numel - i);
    const xs = DTYPE_BYTES[x.dtype], ys = DTYPE_BYTES[dtype];
    e.run(CAST, { dtypes: [x.dtype, dtype] }, [
      { tensor: x, byteOffset: i * xs, byteSize: Math.min(Math.ceil((n * xs) / 4) * 4, x.buffer.size - i * xs) },
      { tensor: y, byteOffset: i * ys, byteSize: Math.min(Math.ceil((n * ys) / 4) * 4, y.buffer.size - i * ys) },
    ], { n }, [ceilDiv(n, 256)], "cast");
  }
  return y;
}

const GATHER: KernelSpec = {
  file: "shape", entry: "gather",
  bindings: [{ name: "T", access: "read" }, { name: "I", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"], ["d", "u32"], ["rowa", "u32"], ["r0", "u32"], ["r1", "u32"], ["v", "u32"], ["zero", "u32"], ["tBind", "u32"], ["yBind", "u32"]],
};


/**
 * embedding lookup: table [V, D] (f32/f16), ids u32/i32 [...] -> [..., D] in
 * the activation dtype. Ids outside [0, V) give zero rows. A table larger than
 * the binding limit (bigG's 49408 x 1280 in f32 is 253 MB) is bound in row
 * ranges, one dispatch each.
 */
export function gather(table: Tensor, ids: Tensor): Tensor {
  if (table.rank !== 2) throw new SsdError("E_SHAPE", `gather: table must be [V, D], got ${shapeStr(table.shape)}`);
  if (ids.dtype !== "u32" && ids.dtype !== "i32") throw new SsdError("E_DTYPE", `gather: ids must be u32 or i32, got ${ids.dtype}`);
  if (table.dtype !== "f32" && table.dtype !== "f16") throw new SsdError("E_DTYPE", `gather: table must be f32 or f16, got ${table.dtype}`);
  const e = table.engine;
  const [V, D] = table.shape;
  const N = ids.numel;
  const y = e.empty([...ids.shape, D], actDtype(table));
  if (N === 0 || D === 0) return y;
  const maxBind = e.gpu.limits.maxStorageBufferBindingSize;
  const align = e.gpu.limits.minStorageBufferOffsetAlignment;
  if (ids.byteSize > maxBind) throw new SsdError("E_LIMITS", `gather: ${N} ids exceed the binding limit`);
  const tRow = D * DTYPE_BYTES[table.dtype], yRow = D * DTYPE_BYTES[y.dtype];
  // the most rows from row r on whose bytes fit one binding that starts at an aligned offset
  const rowsFrom = (r: number, rowBytes: number, limit: number) =>
    Math.min(limit - r, Math.floor((maxBind + (Math.floor((r * rowBytes) / align) * align) - r * rowBytes) / rowBytes));
  for (let ra = 0; ra < N;) {
    const rows = rowsFrom(ra, yRow, N);
    if (rows < 1) throw new SsdError("E_LIMITS", `gather: rows of ${D} elements exceed the binding limit`);
    const yb = bindRange(y, ra * yRow, (ra + rows) * yRow);
    for (let r0 = 0; r0 < V;) {
      const k = rowsFrom(r0, tRow, V);
      if (k < 1) throw new SsdError("E_LIMITS", `gather: rows of ${D} elements exceed the binding limit`);
      const tb = bindRange(table, r0 * tRow, (r0 + k) * tRow);
      const n = rows * D;
      e.run(GATHER, { dtypes: [table.dtype, ids.dtype, y.dtype] }, [tb.binding, ids, yb.binding],
        { n, d: D, rowa: ra, r0, r1: r0 + k, v: V, zero: r0 === 0 ? 1 : 0, tBind: tb.base / DTYPE_BYTES[table.dtype], yBind: yb.base / DTYPE_BYTES[y.dtype] },
        [ceilDiv(n, 256)], "gather");
      r0 += k;
    }
    ra += rows;
  }
  return y;
}

/** rows of x [N, D] at the given host indices -> [len, D] (same dtype as x) */
export function selectRows(x: Tensor, rows: number[]): Tensor {
  if (x.rank !== 2) throw new SsdError("E_SHAPE", `selectRows: x must be [N, D], got ${shapeStr(x.shape)}`);
  const [N, D] = x.shape;
  const y = emptyRaw(x.engine, [rows.length, D], x.dtype);
  rows.forEach((r, i) => {
    const rr = r < 0 ? r + N : r;
    if (!Number.isInteger(rr) || rr < 0 || rr >= N) throw new SsdError("E_SHAPE", `selectRows: row ${r} out of range for ${N} rows`);
    copyView(x, [D], [1], rr * D, y, { rows: 1, l: D, rh: 1, ps: 0, s: 0, dstOff: i * D }, "selectRows");
  });
  return y;
}

// ------------------------------------------------------------------ timestep embedding

const TIMESTEP_F: KernelSpec = {
  file: "shape", entry: "timestep_f",
  bindings: [{ name: "T", access: "read" }, { name: "F", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["n", "u32"], ["dim", "u32"], ["half", "u32"], ["flip", "u32"], ["scale", "f32"]],
};
const TIMESTEP_I: KernelSpec = { ...TIMESTEP_F, entry: "timestep_i" };

/**
 * torch's float32 frequency table exp(-ln(max_period) * arange(half) / (half - shift)):
 * each step rounded to f32 as torch's CPU kernels do (python scalars become f32).
 */
function timestepFrequencies(half: number, downscaleFreqShift: number, maxPeriod: number): Float32Array {
  const f = Math.fround;
  const c = f(-Math.log(maxPeriod));
  const den = f(half - downscaleFreqShift);
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) out[i] = f(Math.exp(f(f(c * i) / den)));
  return out;
}

const freqCache = new WeakMap<Engine, Map<string, Tensor>>();

/** diffusers' get_timestep_embedding: t [N] -> [N, dim] */
export function timestepEmbedding(t: Tensor, dim: number, opts: { flipSinToCos: boolean; downscaleFreqShift: number; scale?: number; maxPeriod?: number }): Tensor {
  if (t.rank !== 1) throw new SsdError("E_SHAPE", `timestepEmbedding: timesteps must be 1-D, got ${shapeStr(t.shape)}`);
  const e = t.engine;
  const half = Math.floor(dim / 2);
  const maxPeriod = opts.maxPeriod ?? 10000;
  const key = `${half}:${opts.downscaleFreqShift}:${maxPeriod}`;
  let cache = freqCache.get(e);
  if (!cache) freqCache.set(e, (cache = new Map()));
  let freqs = cache.get(key);
  if (!freqs || freqs.isDisposed) {
    // persistent: uploaded once, outside the pool, so it cannot alias a pooled buffer still in use
    freqs = e.upload(half ? timestepFrequencies(half, opts.downscaleFreqShift, maxPeriod) : new Float32Array(1), [Math.max(1, half)], "f32", { persistent: true });
    cache.set(key, freqs);
  }
  const y = e.empty([t.shape[0], dim], actDtype(t));
  const n = y.numel;
  if (n === 0) return y;
  const isInt = t.dtype === "u32" || t.dtype === "i32";
  e.run(isInt ? TIMESTEP_I : TIMESTEP_F, { dtypes: [t.dtype, "f32", y.dtype], overrides: isInt ? { SIGNED: t.dtype === "i32" ? 1 : 0 } : {} }, [t, freqs, y],
    { n, dim, half, flip: opts.flipSinToCos ? 1 : 0, scale: opts.scale ?? 1 }, [ceilDiv(n, 256)], "timestepEmbedding");
  return y;
}

// ------------------------------------------------------------------ resize (engine/ops/resize.ts)

/** nearest upsampling by an integer factor, or to an explicit size (F.interpolate mode="nearest") */
export function upsampleNearest(x: Tensor, opts: { scale?: number; size?: [number, number] }): Tensor { return resizeImpl.upsampleNearest(x, opts); }
/** F.interpolate bilinear/bicubic (antialias off) on NCHW */
export function interpolate(x: Tensor, opts: { size: [number, number]; mode: "bilinear" | "bicubic"; alignCorners: boolean; scaleFactor?: [number, number] }): Tensor { return resizeImpl.interpolate(x, opts); }

// ------------------------------------------------------------------ reductions

const REDUCE_PARAMS: [string, "u32" | "f32"][] = [["n", "u32"], ["r", "u32"], ["ii", "u32"], ["g", "u32"], ["seg", "u32"],
  ["oa", "u32"], ["sa", "u32"], ["gs", "u32"], ["xBind", "u32"], ["yBind", "u32"], ["init", "f32"], ["post", "f32"]];
const REDUCE_WG: KernelSpec = { file: "reduce", entry: "reduce_wg", bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }], params: REDUCE_PARAMS as [string, "u32" | "f32"][] };
const REDUCE_COL: KernelSpec = { ...REDUCE_WG, entry: "reduce_col" };
const REDUCE_OP = { sum: 0, mean: 0, min: 1, max: 2 } as const;
/** rows this short go to the column kernel whatever I is */
const THREAD_R = 64;
/** r per workgroup segment (16 per thread): longer rows become several partials and another pass */
const SEG = 4096;
/** r per column-kernel thread */
const COL_SEG = 1024;

/**
 * min/max/mean/sum over all elements, or over the given dims (kept as size 1;
 * reducing everything gives all dims of size 1). Sums accumulate in f32 per
 * thread then pairwise in workgroup memory. NaN propagation of min/max is the
 * driver's.
 */
export function reduce(x: Tensor, op: "min" | "max" | "mean" | "sum", dims?: number[]): Tensor {
  if (x.dtype !== "f32" && x.dtype !== "f16") throw new SsdError("E_DTYPE", `reduce: ${x.dtype} input is not supported`);
  const e = x.engine;
  const rank = x.rank;
  const red = [...new Set((dims ?? x.shape.map((_, i) => i)).map((d) => normDim("reduce", d, rank)))].sort((a, b) => a - b);
  const outShape = x.shape.map((s, i) => (red.includes(i) ? 1 : s));
  if (x.numel === 0) throw new SsdError("E_SHAPE", `reduce: empty input ${shapeStr(x.shape)}`);
  // view as [O, R, I]: the reduced dims must be adjacent (ignoring size-1 dims), else move them last
  const big = red.filter((d) => x.shape[d] > 1);
  let src = x;
  let O: number, R: number, I: number;
  const adjacent = big.length === 0 || x.shape.every((s, i) => s === 1 || big.includes(i) || i < big[0] || i > big[big.length - 1]);
  if (adjacent) {
    const a = big.length ? big[0] : rank, b = big.length ? big[big.length - 1] : rank - 1;
    O = numelOf(x.shape.slice(0, a));
    R = numelOf(x.shape.slice(a, b + 1));
    I = numelOf(x.shape.slice(b + 1));
  } else {
    const keep = x.shape.map((_, i) => i).filter((i) => !red.includes(i));
    src = permute(x, [...keep, ...red]);
    O = numelOf(keep.map((i) => x.shape[i]));
    R = numelOf(red.map((i) => x.shape[i]));
    I = 1;
  }
  const R0 = R;
  const init = op === "min" ? Infinity : op === "max" ? -Infinity : 0;
  const variant = (dt: DType[]) => ({ dtypes: dt, overrides: { OP: REDUCE_OP[op] } });
  const maxBind = e.gpu.limits.maxStorageBufferBindingSize;
  const align = e.gpu.limits.minStorageBufferOffsetAlignment;
  const span = (t: Tensor, lo: number, hi: number) => {
    const es = DTYPE_BYTES[t.dtype];
    return Math.ceil((hi * es) / 4) * 4 - Math.floor((lo * es) / align) * align;
  };
  const bind = (t: Tensor, lo: number, hi: number) => bindRange(t, lo * DTYPE_BYTES[t.dtype], hi * DTYPE_BYTES[t.dtype]);
  let cur = src;
  for (;;) {
    // Column kernel (a thread per output column, looping over a segment of r)
    // when there are many inner columns — adjacent threads read adjacent
    // elements — or short rows; else a workgroup per (output, segment).
    const columns = I >= 16 || R <= THREAD_R;
    // segment length: bounded by the work one thread / workgroup should do and by the binding limit
    const bySize = Math.floor((maxBind - align) / (I * DTYPE_BYTES[cur.dtype]));
    const seg = Math.max(1, Math.min(columns ? COL_SEG : SEG, bySize));
    const final = R <= seg;
    const post = final && op === "mean" ? 1 / R0 : 1;
    const G = ceilDiv(R, seg);
    const y = final ? e.empty(outShape, actDtype(x)) : e.empty([O * I * G], "f32");
    const run = (oa: number, ob: number, sa: number, sb: number) => {
      const xlo = (oa * R + sa * seg) * I, xhi = ((ob - 1) * R + Math.min(R, sb * seg)) * I;
      const ylo = (oa * G + sa) * I, yhi = ((ob - 1) * G + sb) * I;
      return { xlo, xhi, ylo, yhi, ok: span(cur, xlo, xhi) <= maxBind && span(y, ylo, yhi) <= maxBind };
    };
    const dispatch = (oa: number, ob: number, sa: number, sb: number) => {
      const p = run(oa, ob, sa, sb);
      const xb = bind(cur, p.xlo, p.xhi), yb = bind(y, p.ylo, p.yhi);
      const n = (ob - oa) * I * (sb - sa); // outputs (columns x segments) of this piece
      e.run(columns ? REDUCE_COL : REDUCE_WG, variant([cur.dtype, y.dtype]), [xb.binding, yb.binding], {
        n, r: R, ii: I, g: G, seg: seg, oa, sa, gs: sb - sa, xBind: xb.base / DTYPE_BYTES[cur.dtype], yBind: yb.base / DTYPE_BYTES[y.dtype], init, post,
      }, [columns ? ceilDiv(n, 256) : n], `reduce.${op}`);
    };
    for (let oa = 0; oa < O;) {
      const k = largest(1, O - oa, (k) => run(oa, oa + k, 0, G).ok);
      if (k >= 1) { dispatch(oa, oa + k, 0, G); oa += k; continue; }
      for (let sa = 0; sa < G;) {
        const m = largest(1, G - sa, (m) => run(oa, oa + 1, sa, sa + m).ok);
        if (m < 1) throw new SsdError("E_LIMITS", `reduce over ${shapeStr(x.shape)}: one segment exceeds the binding limit`);
        dispatch(oa, oa + 1, sa, sa + m);
        sa += m;
      }
      oa++;
    }
    if (cur !== x) cur.dispose();
    if (final) return y;
    cur = y; // partials [O, G, I]
    R = G;
  }
}
