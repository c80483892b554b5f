// Float64 CPU references for convolutions, pooling, weight standardisation and
// resizing, written straight from PyTorch's definitions. Clarity over speed.

import { act } from "./ops.ts";

export interface Conv2dRefOpts {
  stride?: [number, number]; padding?: [number, number]; dilation?: [number, number]; groups?: number;
  bias?: ArrayLike<number>; act?: string; residual?: ArrayLike<number>;
}

/** F.conv2d on NCHW, weight [O, C/groups, kH, kW]; then act, then + residual. */
export function conv2dRef(x: ArrayLike<number>, xs: number[], w: ArrayLike<number>, ws: number[], o: Conv2dRefOpts = {}): { y: Float64Array; shape: number[] } {
  const [N, C, H, W] = xs, [O, Cg, kH, kW] = ws;
  const [sh, sw] = o.stride ?? [1, 1], [ph, pw] = o.padding ?? [0, 0], [dh, dw] = o.dilation ?? [1, 1];
  const G = o.groups ?? 1, Og = O / G;
  const Ho = Math.floor((H + 2 * ph - dh * (kH - 1) - 1) / sh) + 1, Wo = Math.floor((W + 2 * pw - dw * (kW - 1) - 1) / sw) + 1;
  const y = new Float64Array(N * O * Ho * Wo);
  for (let n = 0; n < N; n++) for (let oc = 0; oc < O; oc++) {
    const g = Math.floor(oc / Og);
    for (let oy = 0; oy < Ho; oy++) for (let ox = 0; ox < Wo; ox++) {
      let s = o.bias ? o.bias[oc] : 0;
      for (let c = 0; c < Cg; c++) for (let kh = 0; kh < kH; kh++) {
        const iy = oy * sh - ph + kh * dh;
        if (iy < 0 || iy >= H) continue;
        for (let kw = 0; kw < kW; kw++) {
          const ix = ox * sw - pw + kw * dw;
          if (ix < 0 || ix >= W) continue;
          s += x[((n * C + g * Cg + c) * H + iy) * W + ix] * w[((oc * Cg + c) * kH + kh) * kW + kw];
        }
      }
      const i = ((n * O + oc) * Ho + oy) * Wo + ox;
      y[i] = act(s, o.act ?? "none") + (o.residual ? o.residual[i] : 0);
    }
  }
  return { y, shape: [N, O, Ho, Wo] };
}

/** F.conv_transpose2d on NCHW, weight [C, O, kH, kW], as the scatter it is defined by. */
export function convTranspose2dRef(x: ArrayLike<number>, xs: number[], w: ArrayLike<number>, ws: number[],
  o: { stride?: [number, number]; padding?: [number, number]; outputPadding?: [number, number]; bias?: ArrayLike<number> } = {}): { y: Float64Array; shape: number[] } {
  const [N, C, H, W] = xs, [, O, kH, kW] = ws;
  const [sh, sw] = o.stride ?? [1, 1], [ph, pw] = o.padding ?? [0, 0], [oph, opw] = o.outputPadding ?? [0, 0];
  const Ho = (H - 1) * sh - 2 * ph + kH + oph, Wo = (W - 1) * sw - 2 * pw + kW + opw;
  const y = new Float64Array(N * O * Ho * Wo);
  for (let n = 0; n < N; n++) for (let oc = 0; oc < O; oc++) y.fill(o.bias ? o.bias[oc] : 0, (n * O + oc) * Ho * Wo, (n * O + oc + 1) * Ho * Wo);
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) for (let iy = 0; iy < H; iy++) for (let ix = 0; ix < W; ix++) {
    const v = x[((n * C + c) * H + iy) * W + ix];
    for (let oc = 0; oc < O; oc++) for (let kh = 0; kh < kH; kh++) {
      const oy = iy * sh - ph + kh;
      if (oy < 0 || oy >= Ho) continue;
      for (let kw = 0; kw < kW; kw++) {
        const ox = ix * sw - pw + kw;
        if (ox < 0 || ox >= Wo) continue;
        y[((n * O + oc) * Ho + oy) * Wo + ox] += v * w[((c * O + oc) * kH + kh) * kW + kw];
      }
    }
  }
  return { y, shape: [N, O, Ho, Wo] };
}

/**
 * Max pooling. same: transformers' DynamicPad2d (total pad
 * max((ceil(in/s) - 1)·s + k - in, 0), half on top/left rounded down) with
 * pad value `padValue`, then an unpadded pool; else PyTorch's max_pool2d with
 * implicit -inf padding.
 */
export function maxPool2dRef(x: ArrayLike<number>, xs: number[], k: number, s: number, o: { padding?: number; same?: boolean; padValue?: number } = {}): { y: Float64Array; shape: number[] } {
  const [N, C, H, W] = xs;
  let pt = o.padding ?? 0, pl = pt, pb = pt, pr = pt, padValue = -Infinity;
  if (o.same) {
    const th = Math.max((Math.ceil(H / s) - 1) * s + k - H, 0), tw = Math.max((Math.ceil(W / s) - 1) * s + k - W, 0);
    pt = Math.floor(th / 2); pb = th - pt; pl = Math.floor(tw / 2); pr = tw - pl;
    padValue = o.padValue ?? -Infinity;
  }
  const Hp = H + pt + pb, Wp = W + pl + pr;
  const Ho = Math.floor((Hp - k) / s) + 1, Wo = Math.floor((Wp - k) / s) + 1;
  const y = new Float64Array(N * C * Ho * Wo);
  for (let p = 0; p < N * C; p++) for (let oy = 0; oy < Ho; oy++) for (let ox = 0; ox < Wo; ox++) {
    let m = -Infinity;
    for (let ky = 0; ky < k; ky++) for (let kx = 0; kx < k; kx++) {
      const iy = oy * s + ky - pt, ix = ox * s + kx - pl;
      const v = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[(p * H + iy) * W + ix] : padValue;
      m = Math.max(m, v);
    }
    y[(p * Ho + oy) * Wo + ox] = m;
  }
  return { y, shape: [N, C, Ho, Wo] };
}

/** batch_norm(w.reshape(1, O, -1), training=True, eps): per output channel, biased variance. */
export function standardizeRef(w: ArrayLike<number>, O: number, eps: number): Float64Array {
  const K = w.length / O;
  const y = new Float64Array(w.length);
  for (let o = 0; o < O; o++) {
    let mean = 0;
    for (let k = 0; k < K; k++) mean += w[o * K + k];
    mean /= K;
    let v = 0;
    for (let k = 0; k < K; k++) v += (w[o * K + k] - mean) ** 2;
    v /= K;
    for (let k = 0; k < K; k++) y[o * K + k] = (w[o * K + k] - mean) / Math.sqrt(v + eps);
  }
  return y;
}

// ------------------------------------------------------------------ resize

/**
 * Source index of F.interpolate(mode="nearest"): floor(dst · scale) in float32
 * arithmetic as PyTorch computes it, scale = 1/scale_factor when a factor is
 * given, else in/out; clamped to in - 1.
 */
export function nearestSrc(dst: number, inSize: number, outSize: number, scaleFactor?: number): number {
  const f = Math.fround;
  const scale = scaleFactor ? f(1 / scaleFactor) : f(inSize / outSize);
  return Math.min(Math.floor(f(dst * scale)), inSize - 1);
}

export function upsampleNearestRef(x: ArrayLike<number>, xs: number[], Ho: number, Wo: number, scaleFactor?: number): Float64Array {
  const [N, C, H, W] = xs;
  const y = new Float64Array(N * C * Ho * Wo);
  for (let p = 0; p < N * C; p++) for (let oy = 0; oy < Ho; oy++) {
    const iy = nearestSrc(oy, H, Ho, scaleFactor);
    for (let ox = 0; ox < Wo; ox++) y[(p * Ho + oy) * Wo + ox] = x[(p * H + iy) * W + nearestSrc(ox, W, Wo, scaleFactor)];
  }
  return y;
}

/**
 * PyTorch's area_pixel_compute_source_index for a given size, in float32 as
 * its float kernels compute it (a float64 coordinate would be "more exact"
 * than PyTorch by up to ~1e-4 pixels at 4096-wide inputs, far above f32
 * output rounding). The interpolation itself stays float64.
 */
function srcCoord(dst: number, inSize: number, outSize: number, alignCorners: boolean, cubic: boolean, scaleFactor?: number): number {
  const f = Math.fround;
  if (alignCorners) return outSize > 1 ? f(f((inSize - 1) / (outSize - 1)) * dst) : 0;
  const scale = scaleFactor ? f(1 / scaleFactor) : f(inSize / outSize);
  const s = f(f(scale * f(dst + 0.5)) - 0.5);
  return !cubic && s < 0 ? 0 : s;
}

function cubicWeights(t: number): number[] {
  const A = -0.75;
  const c1 = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const c2 = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return [c2(t + 1), c1(t), c1(1 - t), c2(2 - t)];
}

/** F.interpolate(size=(Ho, Wo) or scale_factor, mode="bilinear" | "bicubic", align_corners, antialias=False) on NCHW. */
export function interpolateRef(x: ArrayLike<number>, xs: number[], Ho: number, Wo: number, mode: "bilinear" | "bicubic", alignCorners: boolean, scaleFactor?: [number, number]): Float64Array {
  const [N, C, H, W] = xs;
  const y = new Float64Array(N * C * Ho * Wo);
  const at = (p: number, iy: number, ix: number) =>
    x[(p * H + Math.min(Math.max(iy, 0), H - 1)) * W + Math.min(Math.max(ix, 0), W - 1)];
  for (let p = 0; p < N * C; p++) for (let oy = 0; oy < Ho; oy++) for (let ox = 0; ox < Wo; ox++) {
    let v = 0;
    if (mode === "bilinear") {
      const sy = srcCoord(oy, H, Ho, alignCorners, false, scaleFactor?.[0]), sx = srcCoord(ox, W, Wo, alignCorners, false, scaleFactor?.[1]);
      const y0 = Math.floor(sy), x0 = Math.floor(sx);
      const y1 = y0 + (y0 < H - 1 ? 1 : 0), x1 = x0 + (x0 < W - 1 ? 1 : 0);
      const ly = sy - y0, lx = sx - x0;
      v = (1 - ly) * ((1 - lx) * at(p, y0, x0) + lx * at(p, y0, x1)) + ly * ((1 - lx) * at(p, y1, x0) + lx * at(p, y1, x1));
    } else {
      const sy = srcCoord(oy, H, Ho, alignCorners, true, scaleFactor?.[0]), sx = srcCoord(ox, W, Wo, alignCorners, true, scaleFactor?.[1]);
      const y0 = Math.floor(sy), x0 = Math.floor(sx);
      const wy = cubicWeights(sy - y0), wx = cubicWeights(sx - x0);
      for (let i = 0; i < 4; i++) {
        let row = 0;
        for (let j = 0; j < 4; j++) row += wx[j] * at(p, y0 - 1 + i, x0 - 1 + j);
        v += wy[i] * row;
      }
    }
    y[(p * Ho + oy) * Wo + ox] = v;
  }
  return y;
}

/** F.pad(x, [left, right, top, bottom], value) on NCHW. */
export function pad2dRef(x: ArrayLike<number>, xs: number[], [l, r, tp, bt]: [number, number, number, number], value = 0): { y: Float64Array; shape: number[] } {
  const [N, C, H, W] = xs;
  const Hp = H + tp + bt, Wp = W + l + r;
  const y = new Float64Array(N * C * Hp * Wp).fill(value);
  for (let p = 0; p < N * C; p++) for (let iy = 0; iy < H; iy++) for (let ix = 0; ix < W; ix++) y[(p * Hp + iy + tp) * Wp + ix + l] = x[(p * H + iy) * W + ix];
  return { y, shape: [N, C, Hp, Wp] };
}
