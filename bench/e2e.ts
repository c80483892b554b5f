// `npm run bench -- e2e --synthetic [--size 512] [--steps 2] [--guidance 7.5] [--direct]`
//
// The whole depth-to-image pipeline at real size without downloads: SSD-1B's
// UNet, the depth ControlNet-small, the SDXL VAE, CLIP-L + bigG text encoders
// and DPT-hybrid, each built from its real config (bench/configs/) with seeded
// random f16 weights; one generation timed per stage (depth, text, VAE encode,
// denoising steps of UNet + ControlNet, VAE decode) with peak memory. The
// step is recorded once and replayed, as generate does; --direct encodes every
// op of every step instead.

import { join } from "node:path";
import { getEngine } from "../engine/engine.ts";
import * as ops from "../engine/ops/index.ts";
import { readJsonFile } from "../weights/json.ts";
import { UNet2DConditionModel } from "../pipeline/models/unet.ts";
import { ControlNetModel } from "../pipeline/models/controlnet.ts";
import { AutoencoderKL } from "../pipeline/models/vae.ts";
import { CLIPTextModel, parseCLIPTextConfig } from "../pipeline/models/clip.ts";
import { DPTForDepthEstimation, parseDPTConfig } from "../pipeline/models/dpt.ts";
import { ClipTokenizer } from "../pipeline/tokenizer.ts";
import { depthToImage } from "../pipeline/depth2img.ts";
import { depthToControl } from "../pipeline/depth_processing.ts";
import { TorchGenerator } from "../pipeline/rng.ts";
import { SyntheticWeights, type SyntheticRoot } from "./synthetic.ts";
import { ROOT_DIR, fmtMs } from "./common.ts";

const cfgDir = join(ROOT_DIR, "bench", "configs");
const gb = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

export async function benchE2e(a: { direct?: boolean; size?: number; steps?: number; guidance?: number; json?: string }): Promise<void> {
  const size = a.size ?? 512;
  const steps = a.steps ?? 2;
  const e = await getEngine();
  const rep = e.gpu.report;
  console.log(`e2e bench on ${rep.name} (${rep.driver}), ${rep.runtime} / ${rep.implementation}: ${size}², ${steps} steps, synthetic f16 weights, f32 activations`);
  const root: SyntheticRoot = { engine: e, seed: 1, params: 0 };
  const built: Record<string, number> = {};
  const build = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const p0 = root.params, t0 = performance.now();
    const m = await f();
    built[name] = root.params - p0;
    console.log(`  ${name}: ${((root.params - p0) / 1e6).toFixed(0)} M parameters (${fmtMs(performance.now() - t0)})`);
    return m;
  };
  const unet = await build("unet", async () => UNet2DConditionModel.load(new SyntheticWeights(root), await readJsonFile(join(cfgDir, "ssd1b-unet.json"))));
  const controlnet = await build("controlnet", async () => ControlNetModel.load(new SyntheticWeights(root), await readJsonFile(join(cfgDir, "controlnet-depth-small.json"))));
  const vae = await build("vae", async () => AutoencoderKL.load(new SyntheticWeights(root), await readJsonFile(join(cfgDir, "sdxl-vae.json"))));
  const te1 = await build("text_encoder", async () => CLIPTextModel.load(new SyntheticWeights(root) as any, parseCLIPTextConfig(await readJsonFile(join(cfgDir, "clip-vit-l.json")))));
  const te2 = await build("text_encoder_2", async () => CLIPTextModel.load(new SyntheticWeights(root) as any, parseCLIPTextConfig(await readJsonFile(join(cfgDir, "clip-bigg.json")))));
  const dpt = await build("depth (dpt-hybrid)", async () => DPTForDepthEstimation.load(new SyntheticWeights(root) as any, parseDPTConfig(await readJsonFile(join(cfgDir, "dpt-hybrid-midas.json")))));
  const tokDir = join(ROOT_DIR, "test", "fixtures", "e2e-ssd1b-depth-tiny");
  const tok1 = await ClipTokenizer.load(join(tokDir, "tokenizer")), tok2 = await ClipTokenizer.load(join(tokDir, "tokenizer_2"));
  console.log(`  weights on the GPU: ${gb(e.weightBytes)}`);

  // a synthetic input image
  const img = { width: size, height: size, channels: 3, data: new Uint8Array(size * size * 3) };
  for (let i = 0; i < size * size; i++) { img.data[i * 3] = (i * 7) & 255; img.data[i * 3 + 1] = (i >> 5) & 255; img.data[i * 3 + 2] = 128; }

  const times: Record<string, number> = {};
  e.pool.resetPeak();
  const t0 = performance.now();
  // depth at the model's 384² input, resized to the output as the CLI does
  const px = e.upload(new Float32Array(3 * 384 * 384).fill(0.1), [1, 3, 384, 384]);
  const pred = dpt.forward(px).predictedDepth;
  const depthData = await pred.read();
  const ctl = depthToControl(depthData, 1, pred.dim(1), pred.dim(2), size, size);
  times.depth = performance.now() - t0;
  pred.dispose(); px.dispose();
  const control = { width: size, height: size, channels: 1, data: ctl.u8 };
  const text = { tokenizer: tok1, text_encoder: te1, tokenizer_2: tok2, text_encoder_2: te2, forceZerosForEmptyPrompt: true };
  const res = await depthToImage({ unet, controlnet, vae, text, schedulerConfig: {} }, {
    prompt: "a photo of a cabin by a lake", negativePrompt: null, image: img, control, width: size, height: size,
    steps: steps, guidance: a.guidance ?? 7.5, strength: 1, controlnetScale: 0.5, scheduler: "euler",
    generator: new TorchGenerator(1), stageTimes: times, replay: !a.direct,
  });
  const total = performance.now() - t0;
  const mem = e.memory();
  const nSteps = res.timesteps.length;
  console.log(`stages (ms): ${Object.entries(times).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ")}`);
  console.log(`per denoising step (UNet + ControlNet, CFG batch ${a.guidance !== undefined && a.guidance <= 1 ? 1 : 2}, ${a.direct ? "encoded directly" : "recorded once, replayed"}): ${(times.denoise_steps / nSteps).toFixed(0)} ms`);
  console.log(`total ${(total / 1000).toFixed(1)} s; peak activations ${gb(mem.peak)} (pool ${gb(mem.peakAllocated)}), weights ${gb(mem.weights)}`);
  if (a.json) {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(a.json, JSON.stringify({ adapter: rep, size, steps: nSteps, replay: !a.direct, stages_ms: times, step_ms: times.denoise_steps / nSteps, total_ms: total, memory: mem, params: built }, null, 2));
  }
  void ops;
}
