// depthToImage against every pipeline-* fixture: each variant of case.json
// (img2img / txt2img, its scheduler config, strength, guidance, scale, seed)
// with the given prompt embeddings; per-step latents, the prepared latents and
// the final image compared within the variant's tolerances.

import { suite } from "uvu";
import { basename, join } from "node:path";
import { fixtureDirs, FixtureReport } from "./lib/harness.ts";
import { readJsonFile } from "../weights/json.ts";
import { readAllFloat32 } from "../weights/safetensors.ts";
import { loadImage } from "../pipeline/image.ts";
import { loadDepth2Img } from "../pipeline/load.ts";
import { depthToImage } from "../pipeline/depth2img.ts";
import { TorchGenerator } from "../pipeline/rng.ts";
import { getEngine } from "../engine/engine.ts";
import type { Tensor } from "../engine/tensor.ts";

const t = suite("pipeline");

/** "PIL.Image.open('x.png')" -> x.png */
const fileOf = (s: string) => /'([^']+)'/.exec(s)?.[1] ?? null;
/** "torch.Generator('cpu').manual_seed(42)" -> 42 */
const seedOf = (s: string) => BigInt(/manual_seed\((\d+)\)/.exec(s)![1]);

/** output_type="np": (decoded / 2 + 0.5).clamp(0, 1) as (B, H, W, 3) */
function npImage(dec: { data: Float32Array; shape: number[] }): Float32Array {
  const [B, C, H, W] = dec.shape;
  const got = new Float32Array(B * H * W * C);
  for (let b = 0; b < B; b++) for (let c = 0; c < C; c++) for (let i = 0; i < H * W; i++) {
    const x = Math.fround(Math.fround(dec.data[(b * C + c) * H * W + i] / 2) + 0.5);
    got[(b * H * W + i) * C + c] = Math.min(1, Math.max(0, x));
  }
  return got;
}

for (const dir of fixtureDirs(/^pipeline-/)) {
  t(basename(dir), async () => {
    const meta = await readJsonFile(join(dir, "case.json"));
    const io = await readAllFloat32(join(dir, "io.safetensors"));
    await getEngine();
    const report = new FixtureReport(dir);
    const models = await loadDepth2Img({ model: dir, text: false }, { warn: (m) => report.fail(m) });
    const get = (n: string) => { const x = io.get(n); if (!x) throw new Error(`io.safetensors has no '${n}'`); return { data: x.data, shape: x.shape }; };
    for (const [variant, v] of Object.entries<any>(meta.variants)) {
      const kw = v.call_kwargs;
      const tol = meta.tolerance[variant] ?? {};
      const per = tol.detail?.per_tensor ?? {};
      const tolOf = (name: string) => {
        const x = per[`${variant}.${name}`] ?? tol[name];
        return x ? { atol: x.suggested_atol, rtol: x.suggested_rtol ?? 0 } : null;
      };
      const img2img = v.pipeline_class.includes("Img2Img");
      const controlFile = fileOf(img2img ? kw.control_image : kw.image)!;
      const control = await loadImage(join(dir, controlFile));
      const image = img2img ? await loadImage(join(dir, fileOf(kw.image)!)) : null;
      const schedulerClass = String(v.scheduler).split(".")[0];
      const embed = (k: string) => (kw[k] ? get(String(kw[k]).replace(/^io: /, "")) : null);
      const traced = new Map<string, Float32Array>();
      const decoded = new Map<string, { data: Float32Array; shape: number[] }>();
      const res = await depthToImage({ ...models, schedulerConfig: v.scheduler_config }, {
        embeds: { prompt: embed("prompt_embeds")!, pooled: embed("pooled_prompt_embeds")!, negative: embed("negative_prompt_embeds"), negativePooled: embed("negative_pooled_prompt_embeds") },
        image, control,
        steps: kw.num_inference_steps, guidance: kw.guidance_scale, strength: kw.strength ?? 1, controlnetScale: kw.controlnet_conditioning_scale,
        scheduler: schedulerClass, generator: new TorchGenerator(seedOf(kw.generator)),
        trace: async (name: string, x: Tensor) => {
          if (name === "decoded") decoded.set(variant, { data: await x.read(), shape: [...x.shape] });
          else if (io.has(`${variant}.${name}`) || io.has(`shared.${name}`)) traced.set(name, await x.read());
        },
      });
      let compared = 0;
      for (const [name, got] of traced) {
        const key = io.has(`${variant}.${name}`) ? `${variant}.${name}` : `shared.${name}`;
        const tl = tolOf(name) ?? { atol: 1e-4, rtol: 1e-3 };
        report.add(`${variant}: ${name}`, got, io.get(key)!.data, tl.atol, tl.rtol);
        compared++;
      }
      // the final image, (B, H, W, 3) float in [0, 1] as output_type="np": (decoded / 2 + 0.5).clamp(0, 1)
      if (io.has(`${variant}.image`)) {
        const ref = io.get(`${variant}.image`)!;
        const dec = decoded.get(variant);
        if (!dec) report.fail(`${variant}: the decoded image was not traced`);
        else {
          const tl = tolOf("image")!;
          report.add(`${variant}: image`, npImage(dec), ref.data, tl.atol, tl.rtol);
          compared++;
        }
      }
      if (io.has(`${variant}.timesteps`)) {
        report.add(`${variant}: timesteps`, res.timesteps, io.get(`${variant}.timesteps`)!.data, 0, 0);
      }
      // the same call encoded op by op every step (no recorded replay) gives the same image
      if (variant === Object.keys(meta.variants)[0] && io.has(`${variant}.image`)) {
        let direct: { data: Float32Array; shape: number[] } | null = null;
        await depthToImage({ ...models, schedulerConfig: v.scheduler_config }, {
          embeds: { prompt: embed("prompt_embeds")!, pooled: embed("pooled_prompt_embeds")!, negative: embed("negative_prompt_embeds"), negativePooled: embed("negative_pooled_prompt_embeds") },
          image, control,
          steps: kw.num_inference_steps, guidance: kw.guidance_scale, strength: kw.strength ?? 1, controlnetScale: kw.controlnet_conditioning_scale,
          scheduler: schedulerClass, generator: new TorchGenerator(seedOf(kw.generator)), replay: false,
          trace: async (name: string, x: Tensor) => { if (name === "decoded") direct = { data: await x.read(), shape: [...x.shape] }; },
        });
        const tl = tolOf("image");
        if (!direct || !tl) report.fail(`${variant}: direct-encoding run gave no decoded image`);
        else report.add(`${variant}: image (encoded directly, no replay)`, npImage(direct), io.get(`${variant}.image`)!.data, tl.atol, tl.rtol);
      }
      if (compared === 0) report.fail(`${variant}: nothing compared`);
    }
    report.finish();
  });
}

// Paths no fixture takes: guess mode (ControlNet on the conditional half only,
// other timestep/time-id tensors) and a control window (the recorded step is
// re-recorded when its ControlNet scale changes). Replay must equal direct encoding.
for (const dir of fixtureDirs(/^pipeline-/)) {
  t(`${basename(dir)}: replay equals direct encoding in guess mode with a control window`, async () => {
    const meta = await readJsonFile(join(dir, "case.json"));
    const io = await readAllFloat32(join(dir, "io.safetensors"));
    const models = await loadDepth2Img({ model: dir, text: false }, { warn: () => {} });
    const [, v] = Object.entries<any>(meta.variants).find(([, x]) => x.call_kwargs.guidance_scale > 1)!;
    const kw = v.call_kwargs;
    const get = (n: string) => { const x = io.get(String(n).replace(/^io: /, ""))!; return { data: x.data, shape: x.shape }; };
    const img2img = v.pipeline_class.includes("Img2Img");
    const control = await loadImage(join(dir, fileOf(img2img ? kw.control_image : kw.image)!));
    const image = img2img ? await loadImage(join(dir, fileOf(kw.image)!)) : null;
    const run = async (replay: boolean) => {
      let out: Float32Array | null = null;
      await depthToImage({ ...models, schedulerConfig: v.scheduler_config }, {
        embeds: { prompt: get(kw.prompt_embeds), pooled: get(kw.pooled_prompt_embeds), negative: kw.negative_prompt_embeds ? get(kw.negative_prompt_embeds) : null, negativePooled: kw.negative_pooled_prompt_embeds ? get(kw.negative_pooled_prompt_embeds) : null },
        image, control, steps: 4, guidance: kw.guidance_scale, strength: 1, controlnetScale: 0.7, guessMode: true, controlStart: 0, controlEnd: 0.5,
        scheduler: String(v.scheduler).split(".")[0], generator: new TorchGenerator(seedOf(kw.generator)), replay,
        trace: async (name: string, x: Tensor) => { if (name === "decoded") out = await x.read(); },
      });
      return out as unknown as Float32Array;
    };
    const a = await run(true), b = await run(false);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    if (!(worst <= 1e-5)) throw new Error(`replayed and direct images differ by ${worst}`);
  });
}

t.run();
