// Host-side resampling.
//
// 1. `resizePil`: Pillow 9.4's `Image.resize` on 8-bit L / RGB images, bit for bit.
//    Pillow resamples separably with an antialiasing filter whose support grows with
//    the downscale factor; coefficients are computed in double, normalised per output
//    pixel, then turned into 22-bit fixed point (PRECISION_BITS = 32 - 8 - 2) and
//    accumulated in integers; the horizontal pass runs first (only over the rows the
//    vertical pass will read), then the vertical pass. NEAREST goes through Pillow's
//    affine "scale" path instead. DPT pre-processing and diffusers' VaeImageProcessor
//    (LANCZOS) both resize this way, so matching it is what makes pixel_values exact.
// 2. `interpolateBicubicTorch`: torch.nn.functional.interpolate(mode="bicubic",
//    align_corners=False) on float32 NCHW host arrays (cubic a = -0.75, border clamp,
//    float32 arithmetic in the CPU kernel's order).

import { SsdError } from "../engine/errors.ts";

export type PilFilter = "nearest" | "box" | "bilinear" | "hamming" | "bicubic" | "lanczos";

/** Pillow's integer resample codes (Image.Resampling), as stored in preprocessor configs. */
export const PIL_FILTER_BY_CODE: Readonly<Record<number, PilFilter>> = {
  0: "nearest",
  1: "lanczos",
  2: "bilinear",
  3: "bicubic",
  4: "box",
  5: "hamming",
};

/** Maps a Pillow resample code or name ("LANCZOS", "bicubic", 3) to a filter. */
export function pilFilter(v: number | string): PilFilter {
  if (typeof v === "number") {
    const f = PIL_FILTER_BY_CODE[v];
    if (!f) throw new SsdError("E_BAD_PARAM", `unknown Pillow resample code ${v} (0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)`);
    return f;
  }
  const s = v.toLowerCase().replace(/^(pil\.)?(image\.)?(resampling\.)?/, "");
  const alias: Record<string, PilFilter> = { antialias: "lanczos", linear: "bilinear", cubic: "bicubic" };
  const f = (["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] as const).find((x) => x === s) ?? alias[s];
  if (!f) throw new SsdError("E_BAD_PARAM", `unknown resample filter '${v}'`);
  return f;
}

/** An 8-bit image, rows top to bottom, channels interleaved (HWC). */
export interface PixelImage {
  width: number;
  height: number;
  /** 1 (L) or 3 (RGB) */
  channels: number;
  data: Uint8Array;
}

interface Filter {
  fn: (x: number) => number;
  support: number;
}

const F32_054 = Math.fround(0.54);
const F32_046 = Math.fround(0.46);

const sinc = (x: number): number => {
  if (x === 0) return 1;
  x = x * Math.PI;
  return Math.sin(x) / x;
};

const FILTERS: Record<Exclude<PilFilter, "nearest">, Filter> = {
  box: { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: {
    support: 1,
    fn: (x) => {
      if (x < 0) x = -x;
      return x < 1 ? 1 - x : 0;
    },
  },
  hamming: {
    support: 1,
    fn: (x) => {
      if (x < 0) x = -x;
      if (x === 0) return 1;
      if (x >= 1) return 0;
      x = x * Math.PI;
      // Pillow writes these constants as C floats (0.54f, 0.46f)
      return (Math.sin(x) / x) * (F32_054 + F32_046 * Math.cos(x));
    },
  },
  bicubic: {
    support: 2,
    fn: (x) => {
      const a = -0.5; // Pillow's cubic; PyTorch uses -0.75
      if (x < 0) x = -x;
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  lanczos: { support: 3, fn: (x) => (-3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

const PRECISION_BITS = 32 - 8 - 2;

interface Coeffs {
  /** first source index per output index */
  min: Int32Array;
  /** number of taps per output index */
  count: Int32Array;
  ksize: number;
  /** fixed-point weights, ksize per output index */
  k: Int32Array;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc. `in0`, `in1` are C floats (the box). */
function precompute(inSize: number, in0: number, in1: number, outSize: number, f: Filter): Coeffs {
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = f.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const min = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const v = f.fn((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? w[x] / ww : w[x];
      // round half away from zero, then truncate, as (int)(±0.5 + v * 2^22)
      k[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    min[xx] = xmin;
    count[xx] = xmax;
  }
  return { min, count, ksize, k };
}

function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Horizontal pass over source rows [y0, y0 + rows). */
function horizontal(src: PixelImage, y0: number, rows: number, outW: number, c: Coeffs): PixelImage {
  const ch = src.channels;
  const out = new Uint8Array(outW * rows * ch);
  const half = 1 << (PRECISION_BITS - 1);
  const data = src.data, kk = c.k, mins = c.min, counts = c.count, ksize = c.ksize;
  const rowLen = src.width * ch;
  for (let yy = 0; yy < rows; yy++) {
    const rowBase = (yy + y0) * rowLen;
    let o = yy * outW * ch;
    for (let xx = 0; xx < outW; xx++) {
      const n = counts[xx], kb = xx * ksize;
      let p = rowBase + mins[xx] * ch;
      if (ch === 3) {
        // the three bands share the taps, as Pillow's 8bpc loop does
        let s0 = half, s1 = half, s2 = half;
        for (let x = 0; x < n; x++, p += 3) {
          const k = kk[kb + x];
          s0 += data[p] * k;
          s1 += data[p + 1] * k;
          s2 += data[p + 2] * k;
        }
        out[o++] = clip8(s0);
        out[o++] = clip8(s1);
        out[o++] = clip8(s2);
      } else {
        let s0 = half;
        for (let x = 0; x < n; x++, p++) s0 += data[p] * kk[kb + x];
        out[o++] = clip8(s0);
      }
    }
  }
  return { width: outW, height: rows, channels: ch, data: out };
}

/** Vertical pass; `c.min` is relative to the first row of `src`. Accumulates whole rows for locality. */
function vertical(src: PixelImage, outH: number, c: Coeffs, rowShift: number): PixelImage {
  const ch = src.channels;
  const w = src.width;
  const stride = w * ch;
  const out = new Uint8Array(stride * outH);
  const half = 1 << (PRECISION_BITS - 1);
  const data = src.data, kk = c.k;
  // int32 like Pillow's `int ss`; valid coefficients keep the sums in range
  const acc = new Int32Array(stride);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = c.min[yy] - rowShift, n = c.count[yy], kb = yy * c.ksize;
    acc.fill(half);
    for (let y = 0; y < n; y++) {
      const k = kk[kb + y];
      const r = (ymin + y) * stride;
      for (let i = 0; i < stride; i++) acc[i] += data[r + i] * k;
    }
    const o = yy * stride;
    for (let i = 0; i < stride; i++) out[o + i] = clip8(acc[i]);
  }
  return { width: w, height: outH, channels: ch, data: out };
}

/** Pillow's nearest-neighbour resize (affine scale path, pixel centres, fill outside with 0). */
function nearest(src: PixelImage, outW: number, outH: number, box: number[]): PixelImage {
  const ch = src.channels;
  const a0 = Math.fround(box[2] - box[0]) / outW;
  const a4 = Math.fround(box[3] - box[1]) / outH;
  const coord = (v: number) => (v < 0 ? -1 : Math.trunc(v));
  const xin = new Int32Array(outW).fill(-1);
  let xo = box[0] + a0 * 0.5;
  for (let x = 0; x < outW; x++) {
    const xi = coord(xo);
    if (xi >= 0 && xi < src.width) xin[x] = xi;
    xo += a0;
  }
  const out = new Uint8Array(outW * outH * ch);
  let yo = box[1] + a4 * 0.5;
  for (let y = 0; y < outH; y++) {
    const yi = coord(yo);
    if (yi >= 0 && yi < src.height) {
      for (let x = 0; x < outW; x++) {
        if (xin[x] < 0) continue;
        const s = (yi * src.width + xin[x]) * ch, d = (y * outW + x) * ch;
        for (let b = 0; b < ch; b++) out[d + b] = src.data[s + b];
      }
    }
    yo += a4;
  }
  return { width: outW, height: outH, channels: ch, data: out };
}

/**
 * `Image.resize((width, height), filter, box)` of Pillow 9.4 for 8-bit L or RGB images,
 * bit-exact. `box` = [left, top, right, bottom] in source pixels (floats), default the whole image.
 */
export function resizePil(src: PixelImage, width: number, height: number, filter: PilFilter | number, box?: [number, number, number, number]): PixelImage {
  const f: PilFilter = typeof filter === "number" ? pilFilter(filter) : filter;
  if (src.channels !== 1 && src.channels !== 3) {
    // Pillow resizes RGBA/LA premultiplied; callers convert to RGB first as diffusers does.
    throw new SsdError("E_BAD_PARAM", `resizePil handles L and RGB images, got ${src.channels} channels`);
  }
  if (src.data.length !== src.width * src.height * src.channels) {
    throw new SsdError("E_SHAPE", `image data has ${src.data.length} bytes, ${src.width}x${src.height}x${src.channels} needs ${src.width * src.height * src.channels}`);
  }
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new SsdError("E_BAD_PARAM", `resize target must be positive integers, got ${width}x${height}`);
  }
  const bx = (box ?? [0, 0, src.width, src.height]).map((v) => Math.fround(v));
  if (bx[0] < 0 || bx[1] < 0) throw new SsdError("E_BAD_PARAM", "resize box offset can't be negative");
  if (bx[2] > src.width || bx[3] > src.height) throw new SsdError("E_BAD_PARAM", "resize box can't exceed the image size");
  if (bx[2] - bx[0] < 0 || bx[3] - bx[1] < 0) throw new SsdError("E_BAD_PARAM", "resize box can't be empty");

  const copy = (): PixelImage => ({ ...src, data: src.data.slice() });
  // Image.resize returns a copy when nothing changes
  if (width === src.width && height === src.height && bx[0] === 0 && bx[1] === 0 && bx[2] === src.width && bx[3] === src.height) return copy();
  // _imaging.c: an integer box of exactly the output size is a crop
  if (Number.isInteger(bx[0]) && Number.isInteger(bx[1]) && bx[2] - bx[0] === width && bx[3] - bx[1] === height) {
    const out = new Uint8Array(width * height * src.channels);
    for (let y = 0; y < height; y++) {
      const s = ((y + bx[1]) * src.width + bx[0]) * src.channels;
      out.set(src.data.subarray(s, s + width * src.channels), y * width * src.channels);
    }
    return { width, height, channels: src.channels, data: out };
  }
  if (f === "nearest") return nearest(src, width, height, bx);

  const filt = FILTERS[f];
  // Pillow compares box[2] with the OUTPUT width here; reproduced as is.
  const needH = width !== src.width || bx[0] !== 0 || bx[2] !== width;
  const needV = height !== src.height || bx[1] !== 0 || bx[3] !== height;
  const cv = precompute(src.height, bx[1], bx[3], height, filt);
  const yFirst = cv.min[0];
  const yLast = cv.min[height - 1] + cv.count[height - 1];
  let img = src;
  let shift = 0;
  if (needH) {
    const chz = precompute(src.width, bx[0], bx[2], width, filt);
    img = horizontal(src, yFirst, yLast - yFirst, width, chz);
    shift = yFirst;
  }
  if (needV) img = vertical(img, height, cv, shift);
  return img === src ? copy() : img;
}

// ---------------------------------------------------------------------------------
// PyTorch-style float interpolation

const f32 = Math.fround;

/** torch's get_cubic_upsample_coefficients in float32 (A = -0.75). */
function cubicCoeffs(t: number): [number, number, number, number] {
  const A = f32(-0.75);
  const conv1 = (x: number) => f32(f32(f32(f32(f32(f32(A + 2) * x) - f32(A + 3)) * x) * x) + 1);
  const conv2 = (x: number) => f32(f32(f32(f32(f32(f32(A * x) - f32(5 * A)) * x) + f32(8 * A)) * x) - f32(4 * A));
  const x1 = t;
  const x2 = f32(1 - t);
  return [conv2(f32(x1 + 1)), conv1(x1), conv1(x2), conv2(f32(x2 + 1))];
}

function cubicTaps(inSize: number, outSize: number): { idx: Int32Array; w: Float32Array } {
  // area_pixel_compute_scale / source_index with align_corners=False, in float32
  const scale = f32(inSize / outSize);
  const idx = new Int32Array(outSize * 4);
  const w = new Float32Array(outSize * 4);
  for (let i = 0; i < outSize; i++) {
    const real = f32(f32(scale * f32(i + 0.5)) - 0.5);
    const i0 = Math.floor(real);
    const c = cubicCoeffs(f32(real - i0));
    for (let j = 0; j < 4; j++) {
      idx[i * 4 + j] = Math.min(Math.max(i0 - 1 + j, 0), inSize - 1);
      w[i * 4 + j] = c[j];
    }
  }
  return { idx, w };
}

/**
 * `F.interpolate(x, size=(outH, outW), mode="bicubic", align_corners=False)` on a float32
 * NCHW array of `planes` = N·C planes of h×w. Accumulates in float32 in the order of
 * PyTorch's CPU kernel (rows outer, columns inner).
 */
export function interpolateBicubicTorch(src: Float32Array, planes: number, h: number, w: number, outH: number, outW: number): Float32Array {
  if (src.length !== planes * h * w) throw new SsdError("E_SHAPE", `interpolate: input has ${src.length} values, expected ${planes}x${h}x${w}`);
  const ty = cubicTaps(h, outH);
  const tx = cubicTaps(w, outW);
  const out = new Float32Array(planes * outH * outW);
  for (let p = 0; p < planes; p++) {
    const base = p * h * w;
    for (let oy = 0; oy < outH; oy++) {
      for (let ox = 0; ox < outW; ox++) {
        let acc = 0;
        for (let i = 0; i < 4; i++) {
          const row = base + ty.idx[oy * 4 + i] * w;
          let inner = f32(src[row + tx.idx[ox * 4]] * tx.w[ox * 4]);
          for (let j = 1; j < 4; j++) inner = f32(inner + f32(src[row + tx.idx[ox * 4 + j]] * tx.w[ox * 4 + j]));
          acc = i === 0 ? f32(inner * ty.w[oy * 4]) : f32(acc + f32(inner * ty.w[oy * 4 + i]));
        }
        out[(p * outH + oy) * outW + ox] = acc;
      }
    }
  }
  return out;
}
