// A whole generation as the CLI and the server run it: resolve and load the
// models once (a `Generator` keeps them resident), then per request: read the
// image, choose the output size, estimate depth (or take a given depth map),
// run depthToImage, and encode PNGs with their parameters.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { SsdError } from "../engine/errors.ts";
import { getEngine } from "../engine/engine.ts";
import { resolveModel, resolveComponent, type ResolveOptions } from "../weights/resolve.ts";
import { loadDepth2Img } from "./load.ts";
import { depthToImage, type Depth2ImgModels } from "./depth2img.ts";
import { loadDepthEstimator, type DepthEstimator } from "./depth.ts";
import { dptPreprocess, depthToControl } from "./depth_processing.ts";
import { resolveScheduler } from "./schedulers/index.ts";
import { TorchGenerator } from "./rng.ts";
import { encodePng, type RgbImage } from "./image.ts";
import type { PixelImage } from "./resample.ts";
import type { GenerationRequest } from "./request.ts";

export const DEFAULT_MODEL = "segmind/SSD-1B";
export const DEFAULT_CONTROLNET = "diffusers/controlnet-depth-sdxl-1.0-small";
export const DEFAULT_DEPTH_MODEL = "Intel/dpt-hybrid-midas";
/** Outputs above this many pixels are scaled down (keeping the aspect ratio). */
export const MAX_DEFAULT_PIXELS = 1024 * 1024;

export interface ModelSpecs {
  model?: string;
  controlnet?: string;
  depthModel?: string;
  vae?: string;
  offline?: boolean;
}

export interface LoadedModels {
  pipe: Depth2ImgModels;
  depth: DepthEstimator | null;
  names: { model: string; controlnet: string; depthModel: string; vae: string | null };
}

const PIPELINE_COMPONENTS = ["unet", "vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"];

/**
 * Resolves (cache / download) and loads every model. A `controlnet/` or
 * `depth/` folder inside a local --model folder wins over the hub defaults.
 */
export async function loadModels(specs: ModelSpecs, opts: { needDepth: boolean; log?: (m: string) => void }): Promise<LoadedModels> {
  const log = opts.log ?? (() => {});
  const r: ResolveOptions = { offline: specs.offline || undefined, log: (l: string) => log(l) } as ResolveOptions;
  const modelSpec = specs.model ?? DEFAULT_MODEL;
  const model = await resolveModel(modelSpec, { ...r, components: PIPELINE_COMPONENTS });
  const inside = (name: string) => (model.kind === "pipeline" && existsSync(join(model.root, name, "config.json")) ? join(model.root, name) : null);
  const controlnetName = specs.controlnet ?? (inside("controlnet") ? `${modelSpec}/controlnet` : DEFAULT_CONTROLNET);
  const controlnetDir = specs.controlnet ? await resolveComponent(specs.controlnet, null, r) : inside("controlnet") ?? (await resolveComponent(DEFAULT_CONTROLNET, null, r));
  const vaeDir = specs.vae ? await resolveComponent(specs.vae, null, r) : undefined;
  let depth: DepthEstimator | null = null;
  let depthName = "";
  if (opts.needDepth) {
    depthName = specs.depthModel ?? (inside("depth") ? `${modelSpec}/depth` : DEFAULT_DEPTH_MODEL);
    const depthDir = specs.depthModel ? await resolveComponent(specs.depthModel, null, r) : inside("depth") ?? (await resolveComponent(DEFAULT_DEPTH_MODEL, null, r));
    log(`loading depth model ${depthName}`);
    depth = await loadDepthEstimator(depthDir, { warn: log });
  }
  log(`loading ${modelSpec} (text encoders, UNet, VAE) and ControlNet ${controlnetName}`);
  const pipe = await loadDepth2Img({ model: model.root, controlnet: controlnetDir, vae: vaeDir }, { warn: log, onComponent: (n) => log(`  ${n}`) });
  return { pipe, depth, names: { model: modelSpec, controlnet: controlnetName, depthModel: depthName, vae: specs.vae ?? null } };
}

/** The output size: explicit, or the input's rounded down to a multiple of 8, scaled down above ~1024². */
export function outputSize(req: { width: number | null; height: number | null }, input: { width: number; height: number } | null, note: (m: string) => void): { width: number; height: number } {
  if (req.width && req.height) return { width: req.width, height: req.height };
  if (!input) {
    if (req.width || req.height) throw new SsdError("E_BAD_PARAM", "give both --width and --height, or an image to take the size from");
    throw new SsdError("E_BAD_PARAM", "no size: give --image, --depth-map or --width/--height");
  }
  let w = input.width, h = input.height;
  if (req.width) { h = Math.round((h * req.width) / w); w = req.width; }
  else if (req.height) { w = Math.round((w * req.height) / h); h = req.height; }
  else if (w * h > MAX_DEFAULT_PIXELS) {
    const s = Math.sqrt(MAX_DEFAULT_PIXELS / (w * h));
    const nw = Math.floor((w * s) / 8) * 8, nh = Math.floor((h * s) / 8) * 8;
    note(`the input is ${w}x${h}; generating at ${nw}x${nh} (about 1024² pixels, same aspect ratio); pass --width/--height to choose`);
    w = nw; h = nh;
  }
  const ow = w - (w % 8), oh = h - (h % 8);
  if (ow < 8 || oh < 8) throw new SsdError("E_BAD_PARAM", `the image (${input.width}x${input.height}) is too small; the output needs at least 8x8`);
  return { width: ow, height: oh };
}

export interface GenerateInputs {
  request: GenerationRequest;
  image: PixelImage | null;
  /** a user-supplied depth map (gray or RGB, 8-bit) */
  depthMap: PixelImage | null;
  onStep?: (i: number, n: number) => void;
  note?: (m: string) => void;
  /** record the denoising step once and replay it (default true; see depth2img.ts) */
  replay?: boolean;
}

export interface GenerateOutput {
  images: RgbImage[];
  /** one PNG per image, with its parameters text chunk */
  pngs: Uint8Array[];
  /** the 8-bit depth map used as control (H×W gray) */
  depth: PixelImage;
  depthPng: Uint8Array;
  seed: bigint;
  width: number;
  height: number;
  timesteps: number[];
  timings: Record<string, number>;
  parameters: string[];
}

/** A random seed for "-1"/absent seeds: 32 bits, what torch would use of a larger one anyway. */
export function randomSeed(): bigint {
  return BigInt(randomBytes(4).readUInt32LE(0));
}

/** A1111's `parameters` text, which tools such as PNG Info read. */
export function a1111Parameters(r: GenerationRequest, seed: bigint, index: number, size: { width: number; height: number }, names: LoadedModels["names"]): string {
  const sched = resolveScheduler(r.scheduler);
  const lines = [r.prompt];
  if (r.negativePrompt) lines.push(`Negative prompt: ${r.negativePrompt}`);
  const kv: [string, string | number][] = [
    ["Steps", r.steps], ["Sampler", sched.name], ["CFG scale", r.guidance], ["Seed", seed.toString()],
    ["Size", `${size.width}x${size.height}`], ["Model", names.model], ["Denoising strength", r.strength],
    ["ControlNet", names.controlnet], ["ControlNet weight", r.controlnetScale],
    ["ControlNet guidance", `${r.controlStart}-${r.controlEnd}`], ["Depth model", names.depthModel || "given depth map"],
    ["Batch index", index], ["Batch size", r.batch], ["Version", "ssd-depth"],
  ];
  lines.push(kv.map(([k, v]) => `${k}: ${v}`).join(", "));
  return lines.join("\n");
}

export async function generate(models: LoadedModels, inp: GenerateInputs): Promise<GenerateOutput> {
  const r = inp.request;
  const note = inp.note ?? (() => {});
  const timings: Record<string, number> = {};
  const tick = (name: string, t0: number) => (timings[name] = Math.round(performance.now() - t0));
  const src = inp.image ?? inp.depthMap;
  const size = outputSize(r, src, note);
  const seed = r.seed ?? randomSeed();

  // depth map at the output size: given, or estimated from the image
  let t0 = performance.now();
  let depth: PixelImage;
  if (inp.depthMap) {
    depth = inp.depthMap;
  } else {
    if (!inp.image) throw new SsdError("E_BAD_PARAM", "give --image (its depth is estimated) or --depth-map");
    if (!models.depth) throw new SsdError("E_INTERNAL", "no depth model loaded");
    const est = models.depth;
    const pre = dptPreprocess(inp.image, est.preprocessor);
    const e = await getEngine();
    const { data, h, w } = await e.scope(async () => {
      const out = est.model.forward(e.upload(pre.pixelValues, pre.shape));
      const d = out.predictedDepth;
      return { data: await d.read(), h: d.dim(1), w: d.dim(2) };
    });
    // diffusers' depth example: bicubic to the output size, min–max normalise, 8-bit (truncated)
    const post = depthToControl(data, 1, h, w, size.height, size.width);
    depth = { width: size.width, height: size.height, channels: 1, data: post.u8 };
  }
  tick("depth", t0);

  t0 = performance.now();
  const res = await depthToImage(models.pipe, {
    prompt: r.prompt,
    negativePrompt: r.negativePrompt,
    image: inp.image,
    control: depth,
    width: size.width,
    height: size.height,
    steps: r.steps,
    guidance: r.guidance,
    strength: r.strength,
    controlnetScale: r.controlnetScale,
    controlStart: r.controlStart,
    controlEnd: r.controlEnd,
    guessMode: r.guessMode,
    scheduler: r.scheduler,
    generator: new TorchGenerator(seed),
    batch: r.batch,
    onStep: inp.onStep ? (i, n) => inp.onStep!(i, n) : undefined,
    replay: inp.replay,
  });
  tick("denoise_and_decode", t0);

  const parameters = res.images.map((_, i) => a1111Parameters(r, seed, i, size, models.names));
  const pngs = res.images.map((img, i) => encodePng(img, { text: { parameters: parameters[i], "ssd-depth": JSON.stringify({ ...jsonRequest(r), seed: seed.toString(), index: i, width: size.width, height: size.height, models: models.names }) } }));
  const depthPng = encodePng({ width: depth.width, height: depth.height, channels: depth.channels, data: depth.data }, { gray: true });
  return { images: res.images, pngs, depth, depthPng, seed, width: size.width, height: size.height, timesteps: res.timesteps, timings, parameters };
}

/** The request as JSON-safe values (seed as text). */
export function jsonRequest(r: GenerationRequest): Record<string, unknown> {
  return {
    prompt: r.prompt, negative_prompt: r.negativePrompt, num_inference_steps: r.steps, guidance_scale: r.guidance, strength: r.strength,
    controlnet_conditioning_scale: r.controlnetScale, control_guidance_start: r.controlStart, control_guidance_end: r.controlEnd,
    guess_mode: r.guessMode, scheduler: r.scheduler, samples: r.batch,
  };
}
