// CPU references for the shape ops: exact index arithmetic on plain arrays
// (data movement must match bit for bit), float64 math for reductions, and a
// float32 emulation of torch's timestep-embedding frequencies.

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array(shape.length);
  let st = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = st; st *= shape[i]; }
  return s;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Calls fn(index tuple, flat index) for every element of `shape` in row-major order. */
function forEachIndex(shape: readonly number[], fn: (idx: number[], flat: number) => void): void {
  const n = numel(shape);
  const idx = new Array(shape.length).fill(0);
  for (let f = 0; f < n; f++) {
    fn(idx, f);
    for (let k = shape.length - 1; k >= 0; k--) {
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
}

export function concatRef(xs: { data: ArrayLike<number>; shape: number[] }[], dim: number): { data: number[]; shape: number[] } {
  const shape = xs[0].shape.slice();
  shape[dim] = xs.reduce((a, x) => a + x.shape[dim], 0);
  const out = new Array(numel(shape)).fill(NaN);
  const ost = stridesOf(shape);
  let off = 0;
  for (const x of xs) {
    forEachIndex(x.shape, (idx, f) => {
      let o = 0;
      idx.forEach((v, k) => (o += (k === dim ? v + off : v) * ost[k]));
      out[o] = x.data[f];
    });
    off += x.shape[dim];
  }
  return { data: out, shape };
}

export function sliceRef(data: ArrayLike<number>, shape: number[], dim: number, start: number, end: number): number[] {
  const os = shape.slice();
  os[dim] = end - start;
  const st = stridesOf(shape);
  const out: number[] = [];
  forEachIndex(os, (idx) => {
    let o = 0;
    idx.forEach((v, k) => (o += (k === dim ? v + start : v) * st[k]));
    out.push(data[o]);
  });
  return out;
}

export function permuteRef(data: ArrayLike<number>, shape: number[], perm: number[]): number[] {
  const os = perm.map((p) => shape[p]);
  const st = stridesOf(shape);
  const out: number[] = [];
  forEachIndex(os, (idx) => {
    let o = 0;
    idx.forEach((v, k) => (o += v * st[perm[k]]));
    out.push(data[o]);
  });
  return out;
}

/** F.pad(x, [left, right, top, bottom], value) on the last two dims (negative pads crop). */
export function pad2dRef(data: ArrayLike<number>, shape: number[], pads: [number, number, number, number], value: number): number[] {
  const [l, r, t, b] = pads;
  const H = shape[shape.length - 2], W = shape[shape.length - 1];
  const Ho = H + t + b, Wo = W + l + r;
  const planes = numel(shape.slice(0, -2));
  const out: number[] = [];
  for (let p = 0; p < planes; p++) for (let h = 0; h < Ho; h++) for (let w = 0; w < Wo; w++) {
    const sh = h - t, sw = w - l;
    out.push(sh >= 0 && sh < H && sw >= 0 && sw < W ? data[p * H * W + sh * W + sw] : value);
  }
  return out;
}

/** Embedding lookup; ids outside [0, V) give zero rows (the engine's documented choice). */
export function gatherRef(table: ArrayLike<number>, V: number, D: number, ids: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    for (let d = 0; d < D; d++) out.push(id >= 0 && id < V ? table[id * D + d] : 0);
  }
  return out;
}

/**
 * diffusers get_timestep_embedding (v0.27.2): the frequency table and the
 * products t * freq, scale * (.) are rounded to float32 as torch does; sin
 * and cos of that float32 argument are float64.
 */
export function timestepRef(ts: ArrayLike<number>, dim: number, o: { flipSinToCos: boolean; downscaleFreqShift: number; scale?: number; maxPeriod?: number }): number[] {
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  const c = f(-Math.log(o.maxPeriod ?? 10000));
  const den = f(half - o.downscaleFreqShift);
  const freq = Array.from({ length: half }, (_, i) => f(Math.exp(f(f(c * i) / den))));
  const out: number[] = [];
  for (let b = 0; b < ts.length; b++) {
    const args = freq.map((fr) => f(f(o.scale ?? 1) * f(f(ts[b]) * fr)));
    const sin = args.map(Math.sin), cos = args.map(Math.cos);
    out.push(...(o.flipSinToCos ? [...cos, ...sin] : [...sin, ...cos]));
    if (dim % 2) out.push(0);
  }
  return out;
}

/** Reduction over `dims` (all when undefined), in float64; returns values in keepdim layout. */
export function reduceRef(data: ArrayLike<number>, shape: number[], op: "min" | "max" | "mean" | "sum", dims?: number[]): number[] {
  const red = (dims ?? shape.map((_, i) => i)).map((d) => (d < 0 ? d + shape.length : d));
  const os = shape.map((s, i) => (red.includes(i) ? 1 : s));
  const ost = stridesOf(os);
  const n = numel(os);
  const acc = new Array(n).fill(op === "min" ? Infinity : op === "max" ? -Infinity : 0);
  forEachIndex(shape, (idx, f) => {
    let o = 0;
    idx.forEach((v, k) => (o += (red.includes(k) ? 0 : v) * ost[k]));
    const v = data[f];
    acc[o] = op === "min" ? Math.min(acc[o], v) : op === "max" ? Math.max(acc[o], v) : acc[o] + v;
  });
  if (op === "mean") {
    const cnt = numel(shape) / n;
    for (let i = 0; i < n; i++) acc[i] /= cnt;
  }
  return acc;
}

/** Σ|x| per output of a reduction: the scale of float32 summation error. */
export function absSumRef(data: ArrayLike<number>, shape: number[], dims?: number[]): number[] {
  return reduceRef(Array.from(data, Math.abs), shape, "sum", dims);
}
