// Depth-to-image with SSD-1B (or any SDXL UNet) and a depth ControlNet: the
// semantics of diffusers' StableDiffusionXLControlNetImg2ImgPipeline, and of
// StableDiffusionXLControlNetPipeline (text-to-image with control) when no init
// image is given. One readable function, `depthToImage`:
//
//   control image (depth, [0,1], 3 channels) ─┐
//   prompts → CLIP-L ‖ bigG → embeds, pooled ─┤
//   init image → VAE encode → sample × scale → add_noise(t₀)     (img2img)
//                or randn × init_noise_sigma                       (txt2img)
//   for t: ControlNet → residuals → UNet → CFG → scheduler step    (no readback)
//   latents / scale → VAE decode → image
//
// Random draws come from one torch-compatible CPU generator, in diffusers' order:
// VAE sample, add_noise noise, then whatever the scheduler draws per step.

import type { Tensor } from "../engine/tensor.ts";
import type { Engine } from "../engine/engine.ts";
import * as ops from "../engine/ops/index.ts";
import { SsdError } from "../engine/errors.ts";
import { record, type Recording } from "../engine/record.ts";
import type { UNet2DConditionModel, AddedCond } from "./models/unet.ts";
import type { ControlNetModel } from "./models/controlnet.ts";
import type { AutoencoderKL } from "./models/vae.ts";
import { encodePrompt, type SDXLTextEncoders } from "./prompt.ts";
import { createScheduler, img2imgTimesteps, type SchedulerConfig } from "./schedulers/index.ts";
import { TensorScheduler } from "./schedulers/tensor.ts";
import { TorchGenerator, randnTensor } from "./rng.ts";
import { vaePreprocess, chwToImage, type RgbImage } from "./image.ts";
import type { PixelImage } from "./resample.ts";

export interface Depth2ImgModels {
  unet: UNet2DConditionModel;
  controlnet: ControlNetModel;
  vae: AutoencoderKL;
  /** null when prompt embeddings are given directly */
  text: SDXLTextEncoders | null;
  /** the model folder's scheduler/scheduler_config.json */
  schedulerConfig: SchedulerConfig;
}

/** Prompt embeddings given directly (diffusers' prompt_embeds & co.), host arrays. */
export interface GivenEmbeds {
  prompt: { data: Float32Array; shape: number[] };
  pooled: { data: Float32Array; shape: number[] };
  negative: { data: Float32Array; shape: number[] } | null;
  negativePooled: { data: Float32Array; shape: number[] } | null;
}

export interface Depth2ImgParams {
  prompt?: string;
  negativePrompt?: string | null;
  embeds?: GivenEmbeds;
  /** init image (img2img); null/undefined = text-to-image with control */
  image?: PixelImage | null;
  /** the control image (the depth map, gray or RGB, 8-bit) */
  control: PixelImage;
  /** output size; defaults to the control image's size */
  width?: number;
  height?: number;
  steps: number;
  /** ≤ 1 disables classifier-free guidance, as in diffusers */
  guidance: number;
  strength: number;
  controlnetScale: number;
  controlStart?: number;
  controlEnd?: number;
  guessMode?: boolean;
  /** a scheduler name (CLI, Segmind or diffusers), made from the model's scheduler config */
  scheduler: string;
  /** overrides applied on top of the scheduler config (diffusers' from_config kwargs) */
  schedulerOverrides?: SchedulerConfig;
  generator: TorchGenerator;
  /** num_images_per_prompt */
  batch?: number;
  /** SDXL micro-conditioning; default (H, W), (0, 0), (H, W) */
  originalSize?: [number, number];
  cropTopLeft?: [number, number];
  targetSize?: [number, number];
  /** called after each step (for progress); `sync` waits for the GPU without reading back */
  onStep?: (i: number, n: number, t: number) => void | Promise<void>;
  /** benchmarks: when given, the GPU is synced at stage boundaries and each stage's ms recorded here */
  stageTimes?: Record<string, number>;
  /** debug/test hook: named intermediates (forces readbacks; never used in production) */
  trace?: (name: string, t: Tensor) => void | Promise<void>;
  /**
   * Record the step's model evaluation once and replay it (default true);
   * false encodes every op of every step afresh. Same kernels, same numbers.
   */
  replay?: boolean;
}

export interface Depth2ImgResult {
  images: RgbImage[];
  /** final latents (host), [B, C, h, w] */
  latents: Float32Array;
  timesteps: number[];
  width: number;
  height: number;
}

const CONTROL_CHANNELS = 3;

/** repeat each row of x `n` times along dim 0 (torch repeat_interleave) */
function repeatRows(x: Tensor, n: number): Tensor {
  if (n === 1) return ops.copy(x);
  const rows = ops.chunk(x, x.dim(0), 0);
  const out = ops.concat(rows.flatMap((r) => new Array<Tensor>(n).fill(r)), 0);
  for (const r of rows) r.dispose();
  return out;
}

/** diffusers' controlnet_keep for one ControlNet */
export function controlnetKeep(n: number, start: number, end: number): number[] {
  const keep: number[] = [];
  for (let i = 0; i < n; i++) keep.push(1 - (i / n < start || (i + 1) / n > end ? 1 : 0));
  return keep;
}

export async function depthToImage(m: Depth2ImgModels, p: Depth2ImgParams): Promise<Depth2ImgResult> {
  const e: Engine = m.unet.convIn.weight.engine;
  const batch = p.batch ?? 1;
  const cfg = p.guidance > 1;
  const guess = !!p.guessMode || !!(m.controlnet.config as any).global_pool_conditions;
  const vaeScale = m.vae.scaleFactor;
  const trace = p.trace;

  const st = p.stageTimes;
  let mark = performance.now();
  const stage = async (name: string) => {
    if (!st) return;
    await e.sync();
    const now = performance.now();
    st[name] = (st[name] ?? 0) + (now - mark);
    mark = now;
  };

  return await e.scope(async () => {
    // 1. control image: VaeImageProcessor(do_normalize=False, do_convert_rgb=True).preprocess
    const height = p.height ?? p.control.height - (p.control.height % vaeScale);
    const width = p.width ?? p.control.width - (p.control.width % vaeScale);
    const ctl = vaePreprocess(p.control, { width, height, vaeScaleFactor: vaeScale, normalize: false });
    const control1 = e.upload(ctl.data, [1, CONTROL_CHANNELS, height, width]);
    const controlB = repeatRows(control1, batch);
    const controlImage = cfg && !guess ? ops.concat([controlB, controlB], 0) : controlB;
    if (trace) await trace("control_image_prepared", controlImage);

    // 2. prompt embeddings: [negative; positive] for CFG
    await stage("control_prep");
    const emb = await promptEmbeddings(e, m, p, batch, cfg);
    await stage("text_encoders");
    const encoderHiddenStates = emb.hidden;
    if (trace) await trace("encoder_hidden_states", encoderHiddenStates);

    // SDXL micro-conditioning: original size, crop top-left, target size (same for the negative rows)
    const orig = p.originalSize ?? [height, width];
    const crop = p.cropTopLeft ?? [0, 0];
    const target = p.targetSize ?? [height, width];
    const row = [...orig, ...crop, ...target];
    const rows = cfg ? 2 * batch : batch;
    const timeIds = new Float32Array(rows * 6);
    for (let r = 0; r < rows; r++) timeIds.set(row, r * 6);
    const added = { textEmbeds: emb.pooled, timeIds };

    // 3. scheduler and timesteps
    const scheduler = createScheduler(p.scheduler, m.schedulerConfig, p.schedulerOverrides ?? {});
    scheduler.setTimesteps(p.steps);
    const img2img = !!p.image;
    const { timesteps } = img2img ? img2imgTimesteps(scheduler, p.steps, p.strength) : { timesteps: scheduler.timesteps.slice() };
    if (timesteps.length === 0) throw new SsdError("E_BAD_PARAM", `strength ${p.strength} with ${p.steps} steps leaves no denoising step`);
    const sched = new TensorScheduler(scheduler);
    const lc = m.unet.cfg.in_channels;
    const latentShape = [batch, lc, height / vaeScale, width / vaeScale];

    // 4. initial latents
    let latents: Tensor;
    if (img2img) {
      const init = vaePreprocess(p.image!, { width, height, vaeScaleFactor: vaeScale });
      const x = e.upload(init.data, [1, 3, height, width]);
      if (trace) await trace("vae_image_input", x);
      const dist = m.vae.encode(x);
      const eps = e.upload(randnTensor(dist.mean.shape, p.generator), dist.mean.shape); // draw 1: latent_dist.sample
      const sample = dist.sample(eps);
      const init1 = ops.scale(sample, m.vae.scalingFactor);
      const initLatents = repeatRows(init1, batch);
      if (trace) await trace("init_latents", initLatents);
      const noise = e.upload(randnTensor(latentShape, p.generator), latentShape); // draw 2: add_noise
      if (trace) await trace("noise", noise);
      latents = sched.addNoise(initLatents, noise, timesteps[0]);
    } else {
      const noise = e.upload(randnTensor(latentShape, p.generator), latentShape);
      latents = ops.scale(noise, scheduler.initNoiseSigma);
    }
    if (trace) await trace("prepared_latents", latents);
    await stage(img2img ? "vae_encode" : "initial_noise");

    // 5. denoising loop. A step's model evaluation (ControlNet → residuals →
    // UNet → CFG) is recorded once and replayed with that step's inputs copied
    // into fixed tensors (engine/record.ts): no op wrappers, shape checks or
    // bind-group lookups per step. Scalars baked into a recording (the
    // ControlNet scale) re-record it when they change.
    const keep = controlnetKeep(timesteps.length, p.controlStart ?? 0, p.controlEnd ?? 1);
    const [condHidden, condAdded] = guess && cfg ? condHalf(encoderHiddenStates, added, batch) : [encoderHiddenStates, added];
    const evalModel = (modelInput: Tensor, controlInput: Tensor, tModel: number | Tensor, tControl: number | Tensor, addedM: AddedCond, addedC: AddedCond, condScale: number) => {
      let { downBlockResSamples: down, midBlockResSample: mid } = m.controlnet.forward(controlInput, tControl, condHidden, controlImage, {
        conditioningScale: condScale, guessMode: guess, added: addedC,
      });
      if (guess && cfg) {
        // the unconditional half gets no control
        down = down.map((d) => ops.concat([ops.scale(d, 0), d], 0));
        mid = ops.concat([ops.scale(mid, 0), mid], 0);
      }
      const noisePred = m.unet.forward(modelInput, tModel, encoderHiddenStates, addedM, down, mid);
      let guided = noisePred;
      if (cfg) {
        // uncond + g · (text − uncond), in diffusers' order of operations
        const [uncond, text] = ops.chunk(noisePred, 2, 0);
        const diff = ops.sub(text, uncond);
        guided = ops.lincomb([[1, uncond], [p.guidance, diff]]);
      }
      return { guided, noisePred, down0: down[0], mid };
    };
    // the recorded step's inputs: latents, timesteps and time ids as GPU tensors
    const useReplay = p.replay ?? true;
    const rows2 = cfg ? 2 * batch : batch, ctlRows = guess && cfg ? batch : rows2;
    type StepInputs = { model: Tensor; control: Tensor; tModel: Tensor; tControl: Tensor; idsModel: Tensor; idsControl: Tensor };
    let io: StepInputs | null = null;
    const own = (t: Tensor) => { e.untrack(t); return t; }; // lives across steps; disposed below
    const makeInputs = (modelInput: Tensor, controlInput: Tensor): StepInputs => {
      const model = own(e.empty(modelInput.shape, modelInput.dtype));
      const control = controlInput === modelInput ? model : own(e.empty(controlInput.shape, controlInput.dtype));
      const tModel = own(e.upload(new Float32Array(rows2), [rows2]));
      const tControl = ctlRows === rows2 ? tModel : own(e.upload(new Float32Array(ctlRows), [ctlRows]));
      const idsModel = own(e.upload(Float32Array.from(added.timeIds), [added.timeIds.length]));
      const idsControl = ctlRows === rows2 ? idsModel : own(e.upload(Float32Array.from(condAdded.timeIds), [condAdded.timeIds.length]));
      return { model, control, tModel, tControl, idsModel, idsControl };
    };
    let rec: Recording<ReturnType<typeof evalModel>> | null = null;
    let recScale = NaN;
    try {
      for (let i = 0; i < timesteps.length; i++) {
        const t = timesteps[i];
        const next = await e.scope(async () => {
          const doubled = cfg ? ops.concat([latents, latents], 0) : latents;
          const modelInput = sched.scaleModelInput(doubled, t);
          if (trace) await trace(`step${i}.latent_model_input`, modelInput);
          const controlInput = guess && cfg ? sched.scaleModelInput(latents, t) : modelInput;
          const condScale = p.controlnetScale * keep[i];
          let out: ReturnType<typeof evalModel>;
          if (useReplay) {
            io ??= makeInputs(modelInput, controlInput);
            e.copy(modelInput, 0, io.model, 0, io.model.byteSize);
            if (io.control !== io.model) e.copy(controlInput, 0, io.control, 0, io.control.byteSize);
            e.write(io.tModel, new Float32Array(rows2).fill(t));
            if (io.tControl !== io.tModel) e.write(io.tControl, new Float32Array(ctlRows).fill(t));
            if (rec && recScale === condScale) out = rec.replay();
            else {
              rec?.dispose();
              const x = io;
              rec = record(e, () => evalModel(x.model, x.control, x.tModel, x.tControl,
                { textEmbeds: added.textEmbeds, timeIds: x.idsModel }, { textEmbeds: condAdded.textEmbeds, timeIds: x.idsControl }, condScale));
              recScale = condScale;
              out = rec.outputs;
            }
          } else out = evalModel(modelInput, controlInput, t, t, added, condAdded, condScale);
          if (trace && i === 0) {
            await trace("step0.controlnet_down_block_res_samples.0", out.down0);
            await trace("step0.controlnet_mid_block_res_sample", out.mid);
          }
          if (trace) await trace(`step${i}.noise_pred_uncond_text`, out.noisePred);
          const stepped = sched.step(out.guided, t, latents, { generator: p.generator, shape: latentShape });
          if (trace) await trace(`step${i}.latents`, stepped);
          // the scheduler's multistep state lives on across steps
          return { stepped, state: sched.stateTensors() };
        });
        latents.dispose();
        latents = next.stepped;
        await stage("denoise_steps");
        if (p.onStep) {
          await e.sync(); // progress timing only: no data comes back
          await p.onStep(i, timesteps.length, t);
        }
      }
    } finally {
      (rec as Recording<unknown> | null)?.dispose();
      const left = io as StepInputs | null;
      if (left) for (const t of new Set(Object.values(left))) t.dispose();
    }
    sched.dispose();

    // 6. decode: latents / scaling_factor → VAE → [0, 1] → 8-bit
    const z = ops.scale(latents, 1 / m.vae.scalingFactor);
    const decoded = m.vae.decode(z);
    await stage("vae_decode");
    if (trace) await trace("decoded", decoded);
    const pixels = await decoded.read();
    const finalLatents = await latents.read();
    const C = decoded.dim(1), H = decoded.dim(2), W = decoded.dim(3);
    const images: RgbImage[] = [];
    for (let b = 0; b < decoded.dim(0); b++) {
      images.push(chwToImage(pixels.subarray(b * C * H * W, (b + 1) * C * H * W), C, H, W) as RgbImage);
    }
    return { images, latents: finalLatents, timesteps, width, height };
  });
}

/** The conditional half (second) of the CFG batch, for guess mode. */
function condHalf(hidden: Tensor, added: { textEmbeds: Tensor; timeIds: Float32Array }, batch: number): [Tensor, { textEmbeds: Tensor; timeIds: Float32Array }] {
  const h = ops.slice(hidden, 0, batch, 2 * batch);
  const te = ops.slice(added.textEmbeds, 0, batch, 2 * batch);
  return [h, { textEmbeds: te, timeIds: added.timeIds.slice(batch * 6) }];
}

async function promptEmbeddings(e: Engine, m: Depth2ImgModels, p: Depth2ImgParams, batch: number, cfg: boolean): Promise<{ hidden: Tensor; pooled: Tensor }> {
  let pos: Tensor, pooled: Tensor, neg: Tensor | null, negPooled: Tensor | null;
  if (p.embeds) {
    const up = (x: { data: Float32Array; shape: number[] }) => e.upload(x.data, x.shape);
    pos = repeatRows(up(p.embeds.prompt), batch);
    pooled = repeatRows(up(p.embeds.pooled), batch);
    const zeros = (t: Tensor) => ops.scale(t, 0);
    neg = cfg ? (p.embeds.negative ? repeatRows(up(p.embeds.negative), batch) : zeros(pos)) : null;
    negPooled = cfg ? (p.embeds.negativePooled ? repeatRows(up(p.embeds.negativePooled), batch) : zeros(pooled)) : null;
  } else {
    if (!m.text) throw new SsdError("E_INTERNAL", "no text encoders loaded and no prompt embeddings given");
    if (p.prompt === undefined) throw new SsdError("E_BAD_PARAM", "a prompt is required");
    const r = await encodePrompt(m.text, p.prompt, p.negativePrompt ?? null, { numImagesPerPrompt: batch, doClassifierFreeGuidance: cfg });
    pos = r.promptEmbeds;
    pooled = r.pooledPromptEmbeds;
    neg = r.negativePromptEmbeds;
    negPooled = r.negativePooledPromptEmbeds;
  }
  if (!cfg) return { hidden: pos, pooled };
  return { hidden: ops.concat([neg!, pos], 0), pooled: ops.concat([negPooled!, pooled], 0) };
}
