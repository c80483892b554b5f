// Host-side depth processing around the depth model.
//
// Pre-processing = transformers' DPTImageProcessor.preprocess driven by a
// preprocessor_config.json dict: resize (Pillow, on the uint8 image), rescale
// (float64 product cast to float32), normalize (float32), optional pad, NCHW.
// Post-processing = what diffusers' SDXL depth-ControlNet examples do with
// `predicted_depth`: bicubic interpolate (torch semantics) to the output size,
// per-image min–max normalise, then the 8-bit PNG the user saves (×255 clipped and
// TRUNCATED), read back as /255 and replicated to 3 channels.

import { SsdError } from "../engine/errors.ts";
import { resizePil, pilFilter, interpolateBicubicTorch, type PixelImage, type PilFilter } from "./resample.ts";

export interface DptPreprocessConfig {
  do_resize?: boolean;
  size?: number | { height?: number; width?: number; shortest_edge?: number };
  keep_aspect_ratio?: boolean;
  ensure_multiple_of?: number;
  resample?: number | string;
  do_rescale?: boolean;
  rescale_factor?: number;
  do_normalize?: boolean;
  image_mean?: number | number[];
  image_std?: number | number[];
  do_pad?: boolean;
  size_divisor?: number | null;
  [k: string]: unknown;
}

export interface PreprocessResult {
  /** float32 NCHW, N = 1 */
  pixelValues: Float32Array;
  shape: [number, number, number, number];
  /** the uint8 image after the Pillow resize (before rescale/normalize) */
  resized: PixelImage;
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; fix exact halves to the even neighbour
  if (Math.abs(x % 1) === 0.5) return 2 * Math.round(x / 2);
  return r;
}

/** transformers' DPT get_resize_output_image_size → [height, width]. */
export function dptOutputSize(inH: number, inW: number, outH: number, outW: number, keepAspect: boolean, multiple: number): [number, number] {
  const toMultiple = (v: number): number => {
    let x = roundHalfEven(v / multiple) * multiple;
    if (x < 0) x = Math.ceil(v / multiple) * multiple;
    return x;
  };
  let sh = outH / inH;
  let sw = outW / inW;
  if (keepAspect) {
    // scale as little as possible
    if (Math.abs(1 - sw) < Math.abs(1 - sh)) sh = sw;
    else sw = sh;
  }
  return [toMultiple(sh * inH), toMultiple(sw * inW)];
}

function targetSize(cfg: DptPreprocessConfig): [number, number] {
  const s = cfg.size ?? 384;
  if (typeof s === "number") return [s, s];
  if (s.height !== undefined && s.width !== undefined) return [s.height, s.width];
  if (s.shortest_edge !== undefined) return [s.shortest_edge, s.shortest_edge];
  throw new SsdError("E_BAD_CONFIG", `preprocessor_config size ${JSON.stringify(s)} has no height/width`);
}

function perChannel(v: number | number[] | undefined, dflt: number[], what: string): number[] {
  if (v === undefined) return dflt;
  const a = typeof v === "number" ? [v, v, v] : v;
  if (a.length !== 3) throw new SsdError("E_BAD_CONFIG", `preprocessor_config ${what} must have 3 values, got ${JSON.stringify(v)}`);
  return a;
}

/** The resize target and filter the config implies for an image of inH×inW. */
export function dptResizePlan(cfg: DptPreprocessConfig, inH: number, inW: number): { height: number; width: number; filter: PilFilter } | null {
  if (cfg.do_resize === false) return null;
  const [th, tw] = targetSize(cfg);
  const [h, w] = dptOutputSize(inH, inW, th, tw, !!cfg.keep_aspect_ratio, cfg.ensure_multiple_of ?? 1);
  if (h < 1 || w < 1) throw new SsdError("E_BAD_PARAM", `depth pre-processing would resize ${inW}x${inH} to ${w}x${h}`);
  return { height: h, width: w, filter: pilFilter(cfg.resample ?? 3) };
}

/** DPTImageProcessor.preprocess for one RGB uint8 image. `size` overrides the config's target size. */
export function dptPreprocess(img: PixelImage, cfg: DptPreprocessConfig, size?: { height: number; width: number }): PreprocessResult {
  if (img.channels !== 3) throw new SsdError("E_BAD_PARAM", `depth pre-processing needs an RGB image, got ${img.channels} channels`);
  const c = size ? { ...cfg, size: { height: size.height, width: size.width } } : cfg;
  const plan = dptResizePlan(c, img.height, img.width);
  const resized = plan ? resizePil(img, plan.width, plan.height, plan.filter) : img;
  const doRescale = c.do_rescale ?? true;
  const factor = c.rescale_factor ?? 1 / 255;
  const doNorm = c.do_normalize ?? true;
  const mean = perChannel(c.image_mean, [0.5, 0.5, 0.5], "image_mean").map(Math.fround);
  const std = perChannel(c.image_std, [0.5, 0.5, 0.5], "image_std").map(Math.fround);
  const H = resized.height, W = resized.width;
  const plane = new Float32Array(3 * H * W);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      for (let ch = 0; ch < 3; ch++) {
        const u = resized.data[(y * W + x) * 3 + ch];
        // rescale: float64 product, stored as float32; normalize in float32
        let v = doRescale ? Math.fround(u * factor) : u;
        if (doNorm) v = Math.fround(Math.fround(v - mean[ch]) / std[ch]);
        plane[(ch * H + y) * W + x] = v;
      }
    }
  }
  let pixelValues = plane;
  let outH = H, outW = W;
  const divisor = c.size_divisor;
  if (c.do_pad && divisor) {
    // zero padding split evenly (extra on the bottom/right), after normalisation
    outH = Math.ceil(H / divisor) * divisor;
    outW = Math.ceil(W / divisor) * divisor;
    const top = Math.floor((outH - H) / 2), left = Math.floor((outW - W) / 2);
    pixelValues = new Float32Array(3 * outH * outW);
    for (let ch = 0; ch < 3; ch++) {
      for (let y = 0; y < H; y++) {
        pixelValues.set(plane.subarray((ch * H + y) * W, (ch * H + y + 1) * W), (ch * outH + y + top) * outW + left);
      }
    }
  }
  return { pixelValues, shape: [1, 3, outH, outW], resized };
}

export interface DepthControl {
  /** min–max normalised depth after interpolation, float32 (N, 1, H, W) */
  normalized: Float32Array;
  /** the 8-bit depth map, (N, H, W): trunc(clip(x·255, 0, 255)) */
  u8: Uint8Array;
  /** the control image the ControlNet gets: u8 / 255 in float32, replicated to (N, 3, H, W) */
  control: Float32Array;
  shape: [number, number, number, number];
}

/**
 * diffusers' get_depth_map post-processing of `predicted_depth` (N, h, w):
 * bicubic resize to outH×outW, per-image min–max normalise, 8-bit quantisation.
 */
export function depthToControl(predicted: Float32Array, n: number, h: number, w: number, outH: number, outW: number): DepthControl {
  const interp = interpolateBicubicTorch(predicted, n, h, w, outH, outW);
  const hw = outH * outW;
  const normalized = new Float32Array(n * hw);
  const u8 = new Uint8Array(n * hw);
  const control = new Float32Array(n * 3 * hw);
  for (let b = 0; b < n; b++) {
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < hw; i++) {
      const v = interp[b * hw + i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const range = Math.fround(hi - lo);
    for (let i = 0; i < hw; i++) {
      // float32 like torch; a flat map gives NaN there too, which quantises to 0 below
      const v = Math.fround(Math.fround(interp[b * hw + i] - lo) / range);
      normalized[b * hw + i] = v;
      const q = quantize8(v);
      u8[b * hw + i] = q;
      const c = Math.fround(q / 255);
      for (let ch = 0; ch < 3; ch++) control[(b * 3 + ch) * hw + i] = c;
    }
  }
  return { normalized, u8, control, shape: [n, 3, outH, outW] };
}

/** numpy's `(x * 255.0).clip(0, 255).astype(np.uint8)` on float32 x: truncation, not rounding. */
export function quantize8(x: number): number {
  const s = Math.fround(x * 255);
  if (!(s > 0)) return 0; // also NaN, whose uint8 cast is 0 on x86
  if (s >= 255) return 255;
  return Math.trunc(s);
}

/** A 16-bit depth map (for `--16bit` output): round(x·65535), clipped; NaN → 0. */
export function quantize16(normalized: Float32Array): Uint16Array {
  const out = new Uint16Array(normalized.length);
  for (let i = 0; i < normalized.length; i++) {
    const v = Math.round(normalized[i] * 65535);
    out[i] = v > 0 ? (v > 65535 ? 65535 : v) : 0;
  }
  return out;
}

/** The control image from an 8-bit grayscale or RGB depth image: x/255 as float32 (1, 3, H, W). */
export function controlFromImage(img: PixelImage): Float32Array {
  const hw = img.width * img.height;
  const out = new Float32Array(3 * hw);
  for (let i = 0; i < hw; i++) {
    for (let ch = 0; ch < 3; ch++) {
      const v = img.channels === 1 ? img.data[i] : img.data[i * img.channels + ch];
      out[ch * hw + i] = Math.fround(v / 255);
    }
  }
  return out;
}
