// float64 references for GroupNorm, LayerNorm and softmax (two-pass variance,
// biased, as PyTorch normalises).

import { act } from "./ops.ts";

/** x [N, C, S] flattened; weight/bias [C] or undefined. */
export function groupNormRef(x: ArrayLike<number>, N: number, C: number, S: number, groups: number,
  weight: ArrayLike<number> | undefined, bias: ArrayLike<number> | undefined, eps: number, activation = "none"): Float64Array {
  const y = new Float64Array(N * C * S);
  const cg = C / groups, gsz = cg * S;
  for (let r = 0; r < N * groups; r++) {
    const o = r * gsz;
    let mean = 0;
    for (let i = 0; i < gsz; i++) mean += x[o + i];
    mean /= gsz;
    let v = 0;
    for (let i = 0; i < gsz; i++) v += (x[o + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / gsz + eps);
    for (let i = 0; i < gsz; i++) {
      const c = (r % groups) * cg + Math.floor(i / S);
      let t = (x[o + i] - mean) * rstd;
      if (weight) t *= weight[c];
      if (bias) t += bias[c];
      y[o + i] = act(t, activation);
    }
  }
  return y;
}

/** Rows of D: (x - mean) / sqrt(var + eps) * w + b. */
export function layerNormRef(x: ArrayLike<number>, D: number, weight: ArrayLike<number> | undefined, bias: ArrayLike<number> | undefined, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += D) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[o + i];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x[o + i] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / D + eps);
    for (let i = 0; i < D; i++) y[o + i] = (x[o + i] - mean) * rstd * (weight ? weight[i] : 1) + (bias ? bias[i] : 0);
  }
  return y;
}

/** softmax over rows of D */
export function softmaxRef(x: ArrayLike<number>, D: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let o = 0; o < x.length; o += D) {
    let m = -Infinity;
    for (let i = 0; i < D; i++) m = Math.max(m, x[o + i]);
    let s = 0;
    for (let i = 0; i < D; i++) s += Math.exp(x[o + i] - m);
    for (let i = 0; i < D; i++) y[o + i] = Math.exp(x[o + i] - m) / s;
  }
  return y;
}
