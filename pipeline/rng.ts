// A port of PyTorch's CPU generator (torch.Generator("cpu")), so that a seed
// means the same noise here as in diffusers.
//
// What torch does (1.13 … 2.x, CPUGeneratorImpl + DistributionTemplates.h):
// - manual_seed(s): MT19937 initialised with the LOW 32 BITS of s (init_genrand),
//   and both cached normal samples cleared.
// - random(): one 32-bit MT output; random64(): two outputs a, b as (a << 32) | b.
// - uniform float32 = (random() & 0xFFFFFF) · 2⁻²⁴; uniform float64 =
//   (random64() & (2⁵³−1)) · 2⁻⁵³.
// - randn float32 with numel ≥ 16 (contiguous): fill all slots with uniform
//   floats, then a 16-wide Box–Muller per block of 16 (first 8 slots give u1,
//   last 8 give u2); when numel % 16 ≠ 0 the last 16 slots are redrawn and
//   transformed again. On x86 torch runs the AVX2 kernel, whose log/sin/cos are
//   the Cephes polynomials of avx_mathfun.h, compiled with FMA contraction: we
//   emulate that in float32 bit for bit (kernel "avx2", the default). The scalar
//   kernel (ATEN_CPU_CAPABILITY=default, non-x86) is available as "scalar".
// - randn with numel < 16: a serial double-precision Box–Muller per element,
//   whose second value is cached in the generator and used by the next element
//   (even across calls); the ≥ 16 path neither uses nor clears that cache.

import { SsdError } from "../engine/errors.ts";

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER = 0x80000000;
const LOWER = 0x7fffffff;

const TWO_POW_M24 = 2 ** -24;
const TWO_POW_M53 = 2 ** -53;
const TWO_POW_32 = 2 ** 32;
const U64_MASK = (1n << 64n) - 1n;

export type NormalKernel = "avx2" | "scalar";

/**
 * Parses a seed the way a user types it ("42", "0x2a", "-1", 42n) into an
 * unsigned 64-bit BigInt, as torch.Generator.manual_seed accepts it (negative
 * seeds ≥ −2⁶³ wrap to two's complement). Strings never pass through a float.
 */
export function parseSeed(text: string | number | bigint): bigint {
  let v: bigint;
  if (typeof text === "bigint") v = text;
  else if (typeof text === "number") {
    if (!Number.isSafeInteger(text)) {
      throw new SsdError("E_BAD_PARAM", `seed ${text} is not an integer that a number can hold exactly; pass it as a string or BigInt`);
    }
    v = BigInt(text);
  } else {
    const s = text.trim();
    if (!/^[+-]?(?:\d+|0[xX][0-9a-fA-F]+)$/.test(s)) {
      throw new SsdError("E_BAD_PARAM", `seed '${text}' is not an integer (decimal or 0x hex)`);
    }
    const neg = s.startsWith("-");
    const body = s.replace(/^[+-]/, "");
    v = BigInt(body);
    if (neg) v = -v;
  }
  if (v < -(1n << 63n) || v > U64_MASK) {
    throw new SsdError("E_BAD_PARAM", `seed ${v} is out of range: use an integer in [-2^63, 2^64 - 1] as torch does`);
  }
  return v & U64_MASK;
}

/** The Mersenne Twister torch uses (standard MT19937, init_genrand seeding). */
export class MT19937 {
  private readonly mt = new Uint32Array(N);
  private index = N;

  constructor(seed32 = 5489) {
    this.seed(seed32);
  }

  seed(seed32: number): void {
    const mt = this.mt;
    mt[0] = seed32 >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      // Math.imul keeps 1812433253 * prev exact mod 2^32.
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.index = N;
  }

  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & UPPER) | (mt[(i + 1) % N] & LOWER);
      mt[i] = mt[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    this.index = 0;
  }

  /** Next tempered 32-bit output, as an unsigned number. */
  nextU32(): number {
    if (this.index >= N) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  clone(): MT19937 {
    const c = new MT19937(0);
    c.mt.set(this.mt);
    c.index = this.index;
    return c;
  }
}

// ---------------------------------------------------------------------------
// float32 arithmetic. A double holds the exact product of two floats, and
// rounding a double result of +, −, ×, ÷, √ on floats to float is correctly
// rounded (53 ≥ 2·24 + 2), so Math.fround of the double op is the float op.
// A fused multiply-add needs care: a·b + c rounded to double and then to float
// can round twice the wrong way when the double lands exactly on a float tie.

const f32 = Math.fround;
const tieBuf = new Float32Array(1);
const tieBits = new Int32Array(tieBuf.buffer);

/** The float32 next to `x` (a float32) in the direction of `toward`. */
function nextFloat32(x: number, toward: number): number {
  if (x === toward) return x;
  if (x === 0) return toward > 0 ? 2 ** -149 : -(2 ** -149);
  tieBuf[0] = x;
  tieBits[0] += (toward > x) === (x > 0) ? 1 : -1;
  return tieBuf[0];
}

/** fmaf(a, b, c) for float32 inputs: a·b + c rounded once to float32. */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b; // exact: 24 + 24 bits ≤ 53
  const s = p + c;
  // TwoSum: the exact rounding error of s = p + c.
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb);
  const r = f32(s);
  if (err === 0 || r === s) return r;
  const other = nextFloat32(r, s);
  if ((r + other) / 2 !== s) return r; // not a tie: single rounding was right
  // s sits on a tie only because of the first rounding: the sign of err decides.
  return err > 0 ? Math.max(r, other) : Math.min(r, other);
}

// Cephes single-precision constants of avx_mathfun.h (as float32).
const SQRTHF = f32(0.707106781186547524);
const LOG_P = [
  7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
  -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
].map(f32);
const LOG_Q1 = f32(-2.12194440e-4);
const LOG_Q2 = f32(0.693359375);
const MINUS_DP1 = f32(-0.78515625);
const MINUS_DP2 = f32(-2.4187564849853515625e-4);
const MINUS_DP3 = f32(-3.77489497744594108e-8);
const SINCOF = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(f32);
const COSCOF = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2].map(f32);
const FOPI = f32(1.27323954473516);
const TWO_PI_F32 = f32(2 * Math.PI);
const MIN_NORM_POS = 2 ** -126;

const bitsBuf = new Float32Array(1);
const bitsU32 = new Uint32Array(bitsBuf.buffer);

/**
 * log256_ps of avx_mathfun.h for one lane, with the contractions GCC makes
 * under -mfma: every `y*x + p` of the Horner chain is one FMA, and so is the
 * `y*z + e*q1` step (with e*q1 rounded first).
 */
export function logAvx2(xIn: number): number {
  if (!(xIn > 0)) return NaN; // x ≤ 0 → the invalid mask gives NaN
  bitsBuf[0] = Math.max(xIn, MIN_NORM_POS);
  const bits = bitsU32[0];
  let e = f32(((bits >>> 23) - 0x7f) + 1);
  bitsU32[0] = (bits & ~0x7f800000) | 0x3f000000; // mantissa with 0.5's exponent: [0.5, 1)
  let x = bitsBuf[0];
  const lt = x < SQRTHF;
  const tmp0 = lt ? x : 0;
  x = f32(x - 1);
  if (lt) e = f32(e - 1);
  x = f32(x + tmp0);
  const z = f32(x * x);
  let y = LOG_P[0];
  for (let k = 1; k < LOG_P.length; k++) y = fma32(y, x, LOG_P[k]);
  y = f32(y * x);
  y = fma32(y, z, f32(e * LOG_Q1));
  y = f32(y - f32(z * 0.5));
  x = f32(x + y);
  x = fma32(e, LOG_Q2, x);
  return x;
}

/**
 * sincos256_ps of avx_mathfun.h for one lane (x ≥ 0 here: theta = 2π·u), with
 * the GCC FMA contractions: the three-part range reduction, both Horner chains,
 * `y*z − 0.5·z` of the cosine polynomial and `y2*x + x` of the sine polynomial.
 */
export function sincosAvx2(xIn: number): [number, number] {
  const negIn = xIn < 0;
  let x = Math.abs(xIn);
  let j = Math.trunc(f32(x * FOPI)) | 0;
  j = (j + 1) & ~1;
  const y0 = j; // exact as a float (small integer)
  const swapSin = (j & 4) !== 0;
  const polyIsSin = (j & 2) === 0; // sine comes from the sine polynomial
  const cosNeg = ((j - 2) & 4) === 0;
  x = fma32(y0, MINUS_DP1, x);
  x = fma32(y0, MINUS_DP2, x);
  x = fma32(y0, MINUS_DP3, x);
  const z = f32(x * x);
  let yc = fma32(COSCOF[0], z, COSCOF[1]);
  yc = fma32(yc, z, COSCOF[2]);
  yc = f32(yc * z);
  yc = fma32(yc, z, -f32(z * 0.5));
  yc = f32(yc + 1);
  let ys = fma32(SINCOF[0], z, SINCOF[1]);
  ys = fma32(ys, z, SINCOF[2]);
  ys = f32(ys * z);
  ys = fma32(ys, x, x);
  let s = polyIsSin ? ys : yc;
  let c = polyIsSin ? yc : ys;
  if (negIn !== swapSin) s = -s;
  if (cosNeg) c = -c;
  return [s, c];
}

/** One 16-value block of torch's AVX2 normal_fill_16 (mean 0, std 1), in place. */
function normalFill16Avx2(d: Float32Array, off: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - d[off + j]);
    const u2 = d[off + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * logAvx2(u1))));
    const theta = f32(TWO_PI_F32 * u2);
    const [s, c] = sincosAvx2(theta);
    // `+ 0` mirrors the fmadd with mean 0 (turns −0 into +0 as torch does).
    d[off + j] = f32(radius * c) + 0;
    d[off + j + 8] = f32(radius * s) + 0;
  }
}

/** The scalar (DEFAULT capability) normal_fill_16: float libm calls, theta via double. */
function normalFill16Scalar(d: Float32Array, off: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - d[off + j]);
    const u2 = d[off + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
    const theta = f32(2 * Math.PI * u2);
    d[off + j] = f32(f32(radius * f32(Math.cos(theta))) * 1 + 0);
    d[off + j + 8] = f32(f32(radius * f32(Math.sin(theta))) * 1 + 0);
  }
}

export interface RandnOptions {
  /** Which torch CPU kernel to reproduce for numel ≥ 16 (default "avx2", x86 torch). */
  kernel?: NormalKernel;
}

function numelOf(shape: number | readonly number[]): number {
  const dims = typeof shape === "number" ? [shape] : shape;
  let n = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new SsdError("E_BAD_PARAM", `bad tensor shape ${JSON.stringify(dims)}`);
    n *= d;
  }
  return n;
}

/** torch.Generator("cpu"): MT19937 plus the cached double normal sample. */
export class TorchGenerator {
  private engine = new MT19937();
  private nextDoubleNormal: number | null = null;
  private seedValue: bigint = 67280421310721n; // torch's default_rng_seed_val

  constructor(seed?: string | number | bigint) {
    this.manualSeed(seed ?? this.seedValue);
  }

  /** generator.manual_seed(seed): low 32 bits seed MT19937; caches are cleared. */
  manualSeed(seed: string | number | bigint): this {
    const s = parseSeed(seed);
    this.seedValue = s;
    this.engine = new MT19937(Number(s & 0xffffffffn));
    this.nextDoubleNormal = null;
    return this;
  }

  initialSeed(): bigint {
    return this.seedValue;
  }

  /** A copy with the same state (the copy and the original then draw the same numbers). */
  clone(): TorchGenerator {
    const g = new TorchGenerator(0);
    g.engine = this.engine.clone();
    g.nextDoubleNormal = this.nextDoubleNormal;
    g.seedValue = this.seedValue;
    return g;
  }

  /** generator->random(): one raw 32-bit output. */
  nextU32(): number {
    return this.engine.nextU32();
  }

  /** uniform_real_distribution<float>(0, 1): 24 random bits, one draw. */
  uniformFloat32(): number {
    return (this.engine.nextU32() & 0xffffff) * TWO_POW_M24;
  }

  /** uniform_real_distribution<double>(0, 1): 53 bits of random64(), two draws. */
  uniformFloat64(): number {
    const hi = this.engine.nextU32();
    const lo = this.engine.nextU32();
    return ((hi & 0x1fffff) * TWO_POW_32 + lo) * TWO_POW_M53;
  }

  /** normal_distribution<double>(0, 1) with torch's cached second value. */
  normalDouble(): number {
    if (this.nextDoubleNormal !== null) {
      const v = this.nextDoubleNormal;
      this.nextDoubleNormal = null;
      return v;
    }
    const u1 = this.uniformFloat64();
    const u2 = this.uniformFloat64();
    const r = Math.sqrt(-2 * Math.log(1 - u2));
    const theta = 2 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** torch.rand(shape, generator=g) in float32, C order. */
  rand(shape: number | readonly number[]): Float32Array {
    const n = numelOf(shape);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat32();
    return out;
  }

  /** torch.randn(shape, generator=g, dtype=float32), contiguous. */
  randn(shape: number | readonly number[], options: RandnOptions = {}): Float32Array {
    const n = numelOf(shape);
    const out = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
      return out;
    }
    const fill = (options.kernel ?? "avx2") === "avx2" ? normalFill16Avx2 : normalFill16Scalar;
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat32();
    for (let i = 0; i + 16 <= n; i += 16) fill(out, i);
    if (n % 16 !== 0) {
      const off = n - 16;
      for (let i = 0; i < 16; i++) out[off + i] = this.uniformFloat32();
      fill(out, off);
    }
    return out;
  }
}

/**
 * diffusers.utils.torch_utils.randn_tensor on the CPU: one generator draws the
 * whole shape; a list draws one batch row per generator (a list of one is the
 * same as that generator).
 */
export function randnTensor(
  shape: readonly number[],
  generator: TorchGenerator | readonly TorchGenerator[],
  options: RandnOptions = {},
): Float32Array {
  if (!Array.isArray(generator)) return (generator as TorchGenerator).randn(shape, options);
  const gens = generator as readonly TorchGenerator[];
  if (gens.length === 1) return gens[0].randn(shape, options);
  const batch = shape[0] ?? 0;
  if (gens.length !== batch) {
    throw new SsdError("E_BAD_PARAM", `randn_tensor: ${gens.length} generators for a batch of ${batch}; pass one generator per batch item`);
  }
  const rowShape = [1, ...shape.slice(1)];
  const rowN = numelOf(rowShape);
  const out = new Float32Array(rowN * batch);
  for (let b = 0; b < batch; b++) out.set(gens[b].randn(rowShape, options), b * rowN);
  return out;
}
