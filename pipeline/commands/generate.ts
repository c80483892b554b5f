// `ssd-depth generate`: an image and a prompt in, a new image that keeps the
// original's composition out. Every parameter is validated before anything
// loads; outputs are written atomically (temp file + rename).

import type { CommandModule } from "yargs";
import { readFile, access, constants, stat } from "node:fs/promises";
import { dirname, extname, resolve } from "node:path";
import { SsdError } from "../../engine/errors.ts";
import { getEngine } from "../../engine/engine.ts";
import { applyRequestObject, defaultRequest, parseRequestText, parseSeed, validateRequest, type GenerationRequest } from "../request.ts";
import { resolveScheduler } from "../schedulers/index.ts";
import { loadImage, writeFileAtomic } from "../image.ts";
import { generate, loadModels, jsonRequest, DEFAULT_MODEL, DEFAULT_CONTROLNET, DEFAULT_DEPTH_MODEL } from "../generate.ts";
import { Progress } from "../progress.ts";
import { Profiler, formatProfile } from "../../engine/profiler.ts";

interface GenerateArgs {
  image?: string;
  prompt?: string;
  request?: string;
  "negative-prompt"?: string;
  steps?: number;
  guidance?: number;
  seed?: string;
  strength?: number;
  "controlnet-scale"?: number;
  "control-start"?: number;
  "control-end"?: number;
  "guess-mode"?: boolean;
  scheduler?: string;
  width?: number;
  height?: number;
  batch?: number;
  model?: string;
  controlnet?: string;
  "depth-model"?: string;
  vae?: string;
  "depth-map"?: string;
  out: string;
  "save-depth"?: string;
  json?: boolean;
  offline?: boolean;
  profile?: boolean;
  replay?: boolean;
}

/** out.png for one image; out-0.png, out-1.png, … for a batch. */
export function outputPaths(out: string, n: number): string[] {
  if (n === 1) return [out];
  const ext = extname(out) || ".png";
  const stem = out.slice(0, out.length - extname(out).length);
  return Array.from({ length: n }, (_, i) => `${stem}-${i}${ext}`);
}

async function checkWritable(path: string, flag: string): Promise<void> {
  const dir = dirname(resolve(path));
  try {
    await access(dir, constants.W_OK);
  } catch {
    throw new SsdError("E_BAD_PARAM", `${flag} ${path}: the folder ${dir} does not exist or is not writable`);
  }
  try {
    if ((await stat(path)).isDirectory()) throw new SsdError("E_BAD_PARAM", `${flag} ${path} is a folder; give a file name such as out.png`);
  } catch (e) {
    if (e instanceof SsdError) throw e;
  }
}

async function checkReadable(path: string, flag: string): Promise<void> {
  try {
    await access(path, constants.R_OK);
  } catch {
    throw new SsdError("E_BAD_PARAM", `${flag} ${path}: no such file (or not readable)`);
  }
}

/** The request: --request file first, then every flag given on the command line. */
export async function requestFromArgs(a: GenerateArgs, warn: (m: string) => void): Promise<GenerationRequest> {
  let r = defaultRequest();
  if (a.request) {
    await checkReadable(a.request, "--request");
    r = applyRequestObject(r, parseRequestText(await readFile(a.request, "utf8"), a.request), warn);
  }
  if (a.prompt !== undefined) r.prompt = a.prompt;
  if (a["negative-prompt"] !== undefined) r.negativePrompt = a["negative-prompt"];
  if (a.seed !== undefined) r.seed = parseSeed(String(a.seed), "--seed");
  if (a.steps !== undefined) r.steps = a.steps;
  if (a.guidance !== undefined) r.guidance = a.guidance;
  if (a.strength !== undefined) r.strength = a.strength;
  if (a["controlnet-scale"] !== undefined) r.controlnetScale = a["controlnet-scale"];
  if (a["control-start"] !== undefined) r.controlStart = a["control-start"];
  if (a["control-end"] !== undefined) r.controlEnd = a["control-end"];
  if (a["guess-mode"] !== undefined) r.guessMode = a["guess-mode"];
  if (a.scheduler !== undefined) r.scheduler = a.scheduler;
  if (a.width !== undefined) r.width = a.width;
  if (a.height !== undefined) r.height = a.height;
  if (a.batch !== undefined) r.batch = a.batch;
  for (const [k, v] of [["--steps", a.steps], ["--guidance", a.guidance], ["--strength", a.strength], ["--controlnet-scale", a["controlnet-scale"]], ["--width", a.width], ["--height", a.height], ["--batch", a.batch]] as const) {
    if (v !== undefined && Number.isNaN(v)) throw new SsdError("E_BAD_PARAM", `${k} must be a number`);
  }
  return r;
}

export const generateCommand: CommandModule<{}, GenerateArgs> = {
  command: "generate",
  describe: "depth-guided image generation: an image (its depth map) and a prompt in, a new image out",
  builder: (y) => y
    .option("image", { type: "string", describe: "input image (PNG or JPEG); its depth map guides the composition" })
    .option("prompt", { alias: "p", type: "string", describe: "what to draw" })
    .option("request", { type: "string", describe: "a JSON request (diffusers' or Segmind's field names); flags override it" })
    .option("negative-prompt", { alias: "n", type: "string" })
    .option("steps", { type: "number", describe: "denoising steps (default 30)" })
    .option("guidance", { type: "number", describe: "classifier-free guidance scale (default 7.5; ≤ 1 disables it)" })
    .option("seed", { type: "string", describe: "integer seed (any 64-bit value; torch uses its low 32 bits); default random" })
    .option("strength", { type: "number", describe: "how much of the init image is replaced, (0, 1] (default 1.0)" })
    .option("controlnet-scale", { type: "number", describe: "ControlNet conditioning scale (default 0.5)" })
    .option("control-start", { type: "number", describe: "fraction of steps before the ControlNet starts (default 0)" })
    .option("control-end", { type: "number", describe: "fraction of steps after which it stops (default 1)" })
    .option("guess-mode", { type: "boolean", describe: "ControlNet guess mode" })
    .option("scheduler", { type: "string", describe: "ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, dpmpp_2m_sde, dpmpp_2m_sde_karras, unipc (or Segmind's names)" })
    .option("width", { type: "number", describe: "output width, a multiple of 8 (default: the input's)" })
    .option("height", { type: "number", describe: "output height, a multiple of 8 (default: the input's)" })
    .option("batch", { type: "number", describe: "images per prompt, drawn from one generator (default 1)" })
    .option("model", { type: "string", describe: `diffusers SDXL/SSD-1B folder or hub id (default ${DEFAULT_MODEL})` })
    .option("controlnet", { type: "string", describe: `depth ControlNet folder or hub id (default: <model>/controlnet, else ${DEFAULT_CONTROLNET})` })
    .option("depth-model", { type: "string", describe: `DPT / Depth Anything folder or hub id (default: <model>/depth, else ${DEFAULT_DEPTH_MODEL})` })
    .option("vae", { type: "string", describe: "another VAE folder or hub id (e.g. madebyollin/sdxl-vae-fp16-fix)" })
    .option("depth-map", { type: "string", describe: "use this depth map (8-bit or 16-bit gray PNG) instead of estimating one" })
    .option("out", { alias: "o", type: "string", default: "out.png", describe: "output PNG (out-0.png, out-1.png, … for a batch)" })
    .option("save-depth", { type: "string", describe: "also write the depth map used (8-bit gray PNG)" })
    .option("json", { type: "boolean", describe: "print a machine-readable result" })
    .option("offline", { type: "boolean", describe: "never download (also HF_HUB_OFFLINE=1)" })
    .option("profile", { type: "boolean", describe: "print GPU time per op (timestamp queries where the adapter has them); encodes every step directly" })
    .option("replay", { type: "boolean", default: true, describe: "record the denoising step once and replay it each step (--no-replay encodes every op every step)" }) as any,
  handler: async (a) => {
    const quiet = !!a.json;
    const log = (m: string) => { if (!quiet) console.error(m); };
    const t0 = performance.now();
    // 1. everything checked before any model loads
    const req = await requestFromArgs(a, log);
    validateRequest(req);
    resolveScheduler(req.scheduler);
    if (!a.image && !a["depth-map"]) throw new SsdError("E_BAD_PARAM", "give --image (and its depth is estimated) or --depth-map (text-to-image with control)");
    if (a.image) await checkReadable(a.image, "--image");
    if (a["depth-map"]) await checkReadable(a["depth-map"], "--depth-map");
    const outs = outputPaths(a.out, req.batch);
    for (const o of outs) await checkWritable(o, "--out");
    if (a["save-depth"]) await checkWritable(a["save-depth"], "--save-depth");
    const image = a.image ? await loadImage(a.image) : null;
    const depthMap = a["depth-map"] ? await loadImage(a["depth-map"], { gray16: "scale" }) : null;
    if (!image && req.strength < 1) log("note: no --image, so this is text-to-image with control; --strength is ignored");

    // 2. models
    const engine = await getEngine();
    log(`adapter: ${engine.gpu.report.name} (${engine.gpu.report.runtime})`);
    const tLoad = performance.now();
    const models = await loadModels({ model: a.model, controlnet: a.controlnet, depthModel: a["depth-model"], vae: a.vae, offline: a.offline }, { needDepth: !depthMap, log });
    const loadMs = performance.now() - tLoad;

    // 3. generate
    const profiler = a.profile ? new Profiler(engine).start() : null;
    const progress = new Progress(quiet ? "none" : "auto", "denoising");
    const out = await generate(models, {
      request: req, image, depthMap,
      onStep: (i, n) => progress.update(i + 1, n),
      note: log,
      // the profiler sees dispatches as they are encoded: a replayed step would hide them
      replay: a.replay !== false && !a.profile,
    });
    progress.done();
    if (profiler) console.error(formatProfile(await profiler.report(), profiler.mode));

    // 4. outputs, each atomically
    for (let i = 0; i < outs.length; i++) await writeFileAtomic(outs[i], out.pngs[i]);
    if (a["save-depth"]) await writeFileAtomic(a["save-depth"], out.depthPng);
    const totalMs = performance.now() - t0;
    const mem = engine.memory();
    if (a.json) {
      console.log(JSON.stringify({
        outputs: outs, depth: a["save-depth"] ?? null, seed: out.seed.toString(), width: out.width, height: out.height,
        request: jsonRequest(req), timesteps: out.timesteps, models: models.names, adapter: engine.gpu.report.name,
        timings_ms: { load: Math.round(loadMs), ...out.timings, total: Math.round(totalMs) },
        peak_activation_bytes: mem.peak, weight_bytes: mem.weights,
      }, null, 2));
    } else {
      console.log(`wrote ${outs.join(", ")}${a["save-depth"] ? ` and ${a["save-depth"]}` : ""} (${out.width}x${out.height}, seed ${out.seed}, ${(totalMs / 1000).toFixed(1)} s)`);
    }
  },
};
