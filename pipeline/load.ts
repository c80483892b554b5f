// Loading a depth-to-image pipeline from folders: each component is a
// diffusers/transformers folder (config.json + safetensors weights, fp16
// variant preferred per the precision policy) read through one WeightStore,
// which reports missing keys as errors and unused keys as warnings.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { SsdError } from "../engine/errors.ts";
import { WeightStore, type WeightStoreOptions } from "../weights/store.ts";
import { readJsonFile } from "../weights/json.ts";
import { UNet2DConditionModel } from "./models/unet.ts";
import { ControlNetModel } from "./models/controlnet.ts";
import { AutoencoderKL } from "./models/vae.ts";
import { loadSDXLTextEncoders } from "./prompt.ts";
import type { Depth2ImgModels } from "./depth2img.ts";
import type { SchedulerConfig } from "./schedulers/index.ts";

export interface LoadOptions extends WeightStoreOptions {
  warn?: (message: string) => void;
  /** called before each component loads */
  onComponent?: (name: string) => void;
}

/** Loads one component folder with `load(store, config)` (see WeightStore.loadModel). */
export function loadComponent<T>(dir: string, name: string, load: (store: WeightStore, cfg: any) => Promise<T>, opts: LoadOptions = {}): Promise<T> {
  const { onComponent, ...rest } = opts;
  onComponent?.(name);
  return WeightStore.loadModel(dir, (raw) => raw, load, { ...rest, label: name });
}

export interface PipelineFolders {
  /** the diffusers pipeline folder (model_index.json, unet/, vae/, scheduler/, text encoders) */
  model: string;
  /** ControlNet folder; default <model>/controlnet */
  controlnet?: string;
  /** VAE folder; default <model>/vae */
  vae?: string;
  /** load the text encoders (false when prompt embeddings are given) */
  text?: boolean;
}

export async function loadDepth2Img(f: PipelineFolders, opts: LoadOptions = {}): Promise<Depth2ImgModels> {
  const controlnetDir = f.controlnet ?? join(f.model, "controlnet");
  if (!existsSync(controlnetDir)) throw new SsdError("E_MODEL_NOT_FOUND", `no ControlNet: ${controlnetDir} does not exist (pass --controlnet DIR|ID)`);
  const schedPath = join(f.model, "scheduler", "scheduler_config.json");
  if (!existsSync(schedPath)) throw new SsdError("E_MODEL_NOT_FOUND", `${f.model} has no scheduler/scheduler_config.json`);
  const schedulerConfig = await readJsonFile<SchedulerConfig>(schedPath);
  const text = f.text === false ? null : await loadSDXLTextEncoders(f.model, { ...opts });
  const unet = await loadComponent(join(f.model, "unet"), "unet", (s, c) => UNet2DConditionModel.load(s, c), opts);
  const controlnet = await loadComponent(controlnetDir, "controlnet", (s, c) => ControlNetModel.load(s, c), opts);
  // The SDXL VAE overflows in f16 activations: its config says force_upcast, and our activations are f32 by default.
  const vae = await loadComponent(f.vae ?? join(f.model, "vae"), "vae", (s, c) => AutoencoderKL.load(s, c), opts);
  return { unet, controlnet, vae, text, schedulerConfig };
}
