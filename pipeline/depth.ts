// Depth estimation end to end: image -> DPTImageProcessor pre-processing ->
// depth model (family from config.json's model_type: "dpt" or "depth_anything")
// -> predicted depth -> bicubic resize to the image size, per-image min–max
// normalisation and the 8-bit map, as diffusers' depth-ControlNet examples do.

import { join } from "node:path";
import { existsSync } from "node:fs";
import { getEngine } from "../engine/engine.ts";
import { SsdError } from "../engine/errors.ts";
import type { Tensor } from "../engine/tensor.ts";
import { readJsonFile } from "../weights/json.ts";
import type { WeightStoreOptions } from "../weights/store.ts";
import { DPTForDepthEstimation } from "./models/dpt.ts";
import { DepthAnythingForDepthEstimation } from "./models/depth_anything.ts";
import { depthToControl, dptPreprocess, dptResizePlan, type DptPreprocessConfig } from "./depth_processing.ts";
import type { PixelImage } from "./resample.ts";

export type DepthFamily = "dpt" | "depth_anything";

export interface DepthEstimator {
  family: DepthFamily;
  dir: string;
  model: DPTForDepthEstimation | DepthAnythingForDepthEstimation;
  preprocessor: DptPreprocessConfig;
  /** the only input size the model takes ([H, W]), or null */
  fixedInputSize: [number, number] | null;
}

/** DPTImageProcessor's defaults, used when a folder has no preprocessor_config.json. */
function defaultPreprocessor(family: DepthFamily, raw: Record<string, any>): DptPreprocessConfig {
  if (family === "depth_anything") {
    return { do_resize: true, size: { height: 518, width: 518 }, keep_aspect_ratio: true, ensure_multiple_of: raw.patch_size ?? 14, resample: 3, image_mean: [0.485, 0.456, 0.406], image_std: [0.229, 0.224, 0.225] };
  }
  const s = Array.isArray(raw.image_size) ? raw.image_size : [raw.image_size ?? 384, raw.image_size ?? 384];
  return { do_resize: true, size: { height: s[0], width: s[1] }, keep_aspect_ratio: false, ensure_multiple_of: 1, resample: 3, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5] };
}

/** Loads a depth model folder (config.json, safetensors weights, preprocessor_config.json). */
export async function loadDepthEstimator(dir: string, opts: WeightStoreOptions & { warn?: (m: string) => void } = {}): Promise<DepthEstimator> {
  const cfgPath = join(dir, "config.json");
  if (!existsSync(cfgPath)) throw new SsdError("E_MODEL_NOT_FOUND", `${dir} has no config.json; a depth model folder holds config.json, model.safetensors and preprocessor_config.json`);
  const raw = await readJsonFile<Record<string, any>>(cfgPath);
  const type = raw.model_type;
  let family: DepthFamily;
  let model: DPTForDepthEstimation | DepthAnythingForDepthEstimation;
  if (type === "dpt") {
    family = "dpt";
    model = await DPTForDepthEstimation.fromPretrained(dir, opts);
  } else if (type === "depth_anything") {
    family = "depth_anything";
    model = await DepthAnythingForDepthEstimation.fromPretrained(dir, opts);
  } else {
    throw new SsdError("E_BAD_CONFIG", `${cfgPath}: model_type '${type}' is not a supported depth model (dpt: DPT/MiDaS v3, depth_anything: Depth Anything)`);
  }
  const ppPath = join(dir, "preprocessor_config.json");
  const preprocessor = existsSync(ppPath) ? await readJsonFile<DptPreprocessConfig>(ppPath) : defaultPreprocessor(family, raw);
  return { family, dir, model, preprocessor, fixedInputSize: model.fixedInputSize };
}

export interface DepthResult {
  family: DepthFamily;
  /** the model's output (1, h, w), before any resizing */
  predictedDepth: Float32Array;
  predictedShape: [number, number];
  /** the model input size [H, W] after pre-processing */
  inputSize: [number, number];
  /** bicubic-resized to the image and min–max normalised to [0, 1] (near = 1), H×W */
  normalized: Float32Array;
  /** trunc(clip(normalized·255)) H×W, the 8-bit depth map diffusers' examples save */
  u8: Uint8Array;
  width: number;
  height: number;
  /** milliseconds */
  timings: { preprocess: number; model: number; postprocess: number };
}

/**
 * The pre-processing target for `size` (a square target, as DPTImageProcessor's
 * size={height: N, width: N}); E_BAD_PARAM when the model cannot take it.
 */
function checkedTarget(est: DepthEstimator, img: PixelImage, size?: number): { height: number; width: number } | undefined {
  if (size !== undefined && (!Number.isInteger(size) || size < 1 || size > 4096)) {
    throw new SsdError("E_BAD_PARAM", `--size must be an integer from 1 to 4096, got ${size}`);
  }
  const target = size !== undefined ? { height: size, width: size } : undefined;
  const fixed = est.fixedInputSize;
  if (fixed) {
    const pp = target ? { ...est.preprocessor, size: target } : est.preprocessor;
    const plan = dptResizePlan(pp, img.height, img.width);
    const [h, w] = plan ? [plan.height, plan.width] : [img.height, img.width];
    if (h !== fixed[0] || w !== fixed[1]) {
      throw new SsdError("E_BAD_PARAM", `${est.dir} is a DPT-hybrid model, which takes exactly ${fixed[1]}x${fixed[0]} input; ${size !== undefined ? `--size ${size}` : "its preprocessor_config.json"} gives ${w}x${h} (leave --size out or pass --size ${fixed[0]})`);
    }
  }
  return target;
}

/**
 * Runs the depth model on an 8-bit RGB image. `modelOrDir` is a loaded
 * estimator or a model folder; `size` overrides the pre-processing target size.
 */
export async function estimateDepth(modelOrDir: string | DepthEstimator, image: PixelImage, opts: { size?: number } = {}): Promise<DepthResult> {
  const est = typeof modelOrDir === "string" ? await loadDepthEstimator(modelOrDir) : modelOrDir;
  const target = checkedTarget(est, image, opts.size);
  const t0 = performance.now();
  const pre = dptPreprocess(image, est.preprocessor, target);
  const t1 = performance.now();
  const e = await getEngine();
  const [, , H, W] = pre.shape;
  const { data, shape } = await e.scope(async () => {
    const px: Tensor = e.upload(pre.pixelValues, pre.shape);
    const out = est.model.forward(px);
    const d = out.predictedDepth;
    return { data: await d.read(), shape: [d.dim(1), d.dim(2)] as [number, number] };
  });
  const t2 = performance.now();
  const post = depthToControl(data, 1, shape[0], shape[1], image.height, image.width);
  const t3 = performance.now();
  return {
    family: est.family,
    predictedDepth: data,
    predictedShape: shape,
    inputSize: [H, W],
    normalized: post.normalized,
    u8: post.u8,
    width: image.width,
    height: image.height,
    timings: { preprocess: t1 - t0, model: t2 - t1, postprocess: t3 - t2 },
  };
}

/** The normalised map as 16-bit samples: trunc(clip(x·65535)), NaN -> 0 (MiDaS' write_depth with bits=2). */
export function depthTo16(normalized: Float32Array): Uint16Array {
  const out = new Uint16Array(normalized.length);
  for (let i = 0; i < normalized.length; i++) {
    const s = Math.fround(normalized[i] * 65535);
    out[i] = !(s > 0) ? 0 : s >= 65535 ? 65535 : Math.trunc(s);
  }
  return out;
}
