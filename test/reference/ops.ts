// Plain float64 CPU references for the kernel tests. Written for clarity, not speed.

export function erf(x: number): number {
  // Abramowitz–Stegun 7.1.26 is too coarse for a reference; use the series /
  // continued fraction pair, accurate to ~1e-15.
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let sum = x, term = x, k = 0;
    while (Math.abs(term) > 1e-17 * Math.abs(sum)) {
      k++;
      term *= (-x * x) / k;
      sum += term / (2 * k + 1);
      if (k > 200) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz)
  const z = ax;
  let f = z, C = z, D = 0;
  const tiny = 1e-300;
  for (let n = 1; n < 300; n++) {
    const an = n / 2;
    D = z + an * D; if (D === 0) D = tiny; D = 1 / D;
    C = z + an / C; if (C === 0) C = tiny;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-z * z) / (f * Math.sqrt(Math.PI));
  return Math.sign(x) * (1 - erfc);
}

export function act(x: number, name: string): number {
  switch (name) {
    case "silu": return x / (1 + Math.exp(-x));
    case "gelu": return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case "gelu_tanh": return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    case "quick_gelu": return x / (1 + Math.exp(-1.702 * x));
    case "relu": return Math.max(x, 0);
    default: return x;
  }
}

/** C = act(A·op(B) + bias) + R, batched over the leading dim of A. */
export function matmulRef(a: ArrayLike<number>, b: ArrayLike<number>, batch: number, M: number, N: number, K: number,
  o: { transB?: boolean; bBatched?: boolean; bias?: ArrayLike<number>; act?: string; residual?: ArrayLike<number> } = {}): Float64Array {
  const c = new Float64Array(batch * M * N);
  for (let bt = 0; bt < batch; bt++) {
    const bo = o.bBatched ? bt * N * K : 0;
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[bt * M * K + m * K + k] * (o.transB ? b[bo + n * K + k] : b[bo + k * N + n]);
      if (o.bias) s += o.bias[n];
      s = act(s, o.act ?? "none");
      const i = bt * M * N + m * N + n;
      if (o.residual) s += o.residual[i];
      c[i] = s;
    }
  }
  return c;
}

/** A deterministic pseudo-random array in [-1, 1) (xorshift32). */
export function randArray(n: number, seed = 1, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return out;
}
