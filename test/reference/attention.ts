// float64 reference for multi-head attention on the [B, N, heads*d] layout.

/**
 * q [B, Nq, H*d], k/v [B, Nk, H*d] -> [B, Nq, H*d];
 * causal: query i sees keys j ≤ i (top-left aligned, as torch's is_causal).
 */
export function attentionRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, B: number, Nq: number, Nk: number, H: number, d: number,
  scale = 1 / Math.sqrt(d), causal = false): Float64Array {
  const ld = H * d;
  const out = new Float64Array(B * Nq * ld);
  const s = new Float64Array(Nk);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < Nq; i++) {
    const qo = (b * Nq + i) * ld + h * d;
    let m = -Infinity;
    for (let j = 0; j < Nk; j++) {
      if (causal && j > i) { s[j] = -Infinity; continue; }
      const ko = (b * Nk + j) * ld + h * d;
      let dot = 0;
      for (let c = 0; c < d; c++) dot += q[qo + c] * k[ko + c];
      s[j] = dot * scale;
      m = Math.max(m, s[j]);
    }
    let sum = 0;
    for (let j = 0; j < Nk; j++) { s[j] = Math.exp(s[j] - m); sum += s[j]; }
    for (let c = 0; c < d; c++) {
      let acc = 0;
      for (let j = 0; j < Nk; j++) if (s[j] !== 0) acc += s[j] * v[(b * Nk + j) * ld + h * d + c];
      out[qo + c] = acc / sum;
    }
  }
  return out;
}
