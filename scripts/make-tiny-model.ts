// `npm run make-tiny-model -- DIR [--seed N] [--fp16] [--from TEMPLATE]`
//
// Writes a tiny but complete SSD-1B-shaped depth-to-image model folder —
// model_index.json, unet/ (UNetMidBlock2D, per-layer and reversed transformer
// depths), controlnet/, vae/, scheduler/ (Euler), text_encoder/ (CLIP-L form,
// quick_gelu), text_encoder_2/ (bigG form, projection), tokenizer{,_2}/ with the
// real CLIP vocabulary, depth/ (DPT-hybrid with its preprocessor) — with seeded
// random weights, so the CLI, the server and the README quick start run on a
// fresh machine without downloads.
//
// The layout (configs, tensor names and shapes) is the e2e fixture's, which
// diffusers and transformers themselves wrote; every weight is drawn anew from
// a seeded torch-compatible generator with the template tensor's own mean and
// standard deviation (so norms stay near 1 and activations stay sane), and
// written by our own safetensors writer: the same loading path as a real
// checkpoint then reads it back.

import { mkdir, readdir, copyFile, stat, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SafetensorsFile, writeSafetensors, type WriteEntry } from "../weights/safetensors.ts";
import { float32ToHalfArray } from "../engine/half.ts";
import { TorchGenerator } from "../pipeline/rng.ts";
import { SsdError } from "../engine/errors.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
export const DEFAULT_TEMPLATE = join(ROOT, "test", "fixtures", "e2e-ssd1b-depth-tiny");
/** Parts of the template that are its test data, not the model. */
const NOT_MODEL = new Set(["inputs", "expected", "case.json"]);

export interface MakeTinyOptions {
  seed?: bigint;
  /** also write diffusers' fp16 variant files (diffusion_pytorch_model.fp16.safetensors) */
  fp16?: boolean;
  template?: string;
  log?: (m: string) => void;
}

async function randomLike(file: string, out: string, gen: TorchGenerator, fp16: boolean): Promise<number> {
  const src = await SafetensorsFile.open(file);
  const entries: Record<string, WriteEntry> = {};
  let params = 0;
  try {
    for (const info of [...src.tensors.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const tmpl = await src.readFloat32(info.name);
      let mean = 0, sq = 0;
      for (const v of tmpl) { mean += v; sq += v * v; }
      const n = Math.max(1, tmpl.length);
      mean /= n;
      const std = Math.sqrt(Math.max(0, sq / n - mean * mean));
      const x = gen.randn([tmpl.length]);
      for (let i = 0; i < x.length; i++) x[i] = Math.fround(mean + std * x[i]);
      params += x.length;
      entries[info.name] = fp16 ? { dtype: "F16", shape: info.shape, data: float32ToHalfArray(x) } : { dtype: "F32", shape: info.shape, data: x };
    }
  } finally {
    await src.close();
  }
  await writeSafetensors(out, entries, { format: "pt", note: "ssd-depth make-tiny-model: seeded random weights" });
  return params;
}

async function copyTree(src: string, dst: string, gen: TorchGenerator, o: MakeTinyOptions, top = true): Promise<number> {
  await mkdir(dst, { recursive: true });
  let params = 0;
  for (const name of (await readdir(src)).sort()) {
    if (top && NOT_MODEL.has(name)) continue;
    const s = join(src, name), d = join(dst, name);
    if ((await stat(s)).isDirectory()) params += await copyTree(s, d, gen, o, false);
    else if (name.endsWith(".safetensors")) {
      params += await randomLike(s, d, gen, false);
      if (o.fp16 && name === "diffusion_pytorch_model.safetensors") await randomLike(s, join(dst, "diffusion_pytorch_model.fp16.safetensors"), gen.clone(), true);
    } else await copyFile(s, d);
  }
  return params;
}

export async function makeTinyModel(dir: string, o: MakeTinyOptions = {}): Promise<{ dir: string; params: number }> {
  const template = o.template ?? DEFAULT_TEMPLATE;
  if (!existsSync(join(template, "model_index.json"))) throw new SsdError("E_MODEL_NOT_FOUND", `template ${template} is not a model folder (no model_index.json)`);
  const gen = new TorchGenerator(o.seed ?? 20240101n);
  const params = await copyTree(template, dir, gen, o);
  await writeFile(join(dir, "README.txt"), [
    "A tiny SSD-1B-shaped depth-to-image model with random weights, made by `npm run make-tiny-model`.",
    "It exercises every component (text encoders, UNet, depth ControlNet, VAE, DPT-hybrid depth) at toy size:",
    "its pictures are noise-like. Real weights give real pictures: see the README (segmind/SSD-1B).",
    "",
  ].join("\n"));
  o.log?.(`wrote ${dir}: ${(params / 1e6).toFixed(2)} M random parameters (seed ${o.seed ?? 20240101n})`);
  return { dir, params };
}

const isMain = process.argv[1] && /make-tiny-model\.ts$/.test(process.argv[1]);
if (isMain) {
  const args = process.argv.slice(2);
  const flag = (n: string) => { const i = args.indexOf(n); return i >= 0 ? args.splice(i, 2)[1] : undefined; };
  const seed = flag("--seed");
  const from = flag("--from");
  const fp16 = args.includes("--fp16");
  const dir = args.filter((a) => !a.startsWith("--"))[0] ?? "models/tiny-ssd1b-depth";
  try {
    await makeTinyModel(resolve(dir), { seed: seed ? BigInt(seed) : undefined, fp16, template: from, log: (m) => console.log(m) });
  } catch (e: any) {
    console.error(e instanceof SsdError ? `${e.code}: ${e.message}` : e);
    process.exit(1);
  }
}
