// `npm run bench -- replay [--size 512] [--steps 3]`: a denoising-step-like
// sequence at real size — an SSD-1B ResnetBlock2D (640 channels, time
// embedding) followed by a Transformer2DModel (2 layers, 10 heads, cross-
// attention to 77 × 2048) on the level-1 latent of a --size image — encoded
// directly each step ("before") and recorded once then replayed ("after").
// Prints the CPU time spent encoding per step and the wall time per step.

import { getEngine } from "../engine/engine.ts";
import { record } from "../engine/record.ts";
import { ResnetBlock2D, Transformer2DModel } from "../pipeline/nn.ts";
import { SyntheticWeights } from "./synthetic.ts";
import { randomData, median } from "./common.ts";

export async function benchReplay(a: { size?: number; steps?: number; json?: string }): Promise<void> {
  const size = a.size ?? 512;
  const steps = a.steps ?? 3;
  const e = await getEngine();
  const rep = e.gpu.report;
  const C = 640, H = size / 16, ctxDim = 2048, temb = 1280;
  const root = { engine: e, seed: 7, params: 0 };
  const resnet = await ResnetBlock2D.load(new SyntheticWeights(root).sub("resnet"), { inChannels: C, outChannels: C, tembChannels: temb, groups: 32, eps: 1e-5 });
  const attn = await Transformer2DModel.load(new SyntheticWeights(root).sub("attn"), { channels: C, heads: 10, layers: 2, groups: 32, linearProjection: true, crossAttentionDim: ctxDim });
  const x = e.upload(randomData(2 * C * H * H, 1), [2, C, H, H]);
  const t = e.upload(randomData(2 * temb, 2), [2, temb]);
  const ctx = e.upload(randomData(2 * 77 * ctxDim, 3), [2, 77, ctxDim]);
  const step = () => attn.forward(resnet.forward(x, t), ctx);
  console.log(`replay bench on ${rep.name} (${rep.driver}), ${rep.runtime}: resnet + 2-layer transformer, 640 ch at ${H}², batch 2 (${(root.params / 1e6).toFixed(0)} M params)`);

  // before: encode through the op wrappers every step
  await e.scope(async () => { step(); await e.sync(); }); // warm-up compiles pipelines
  const encBefore: number[] = [], wallBefore: number[] = [];
  const d0 = e.stats.dispatches;
  for (let i = 0; i < steps; i++) {
    const w0 = performance.now();
    await e.scope(async () => {
      const c0 = performance.now();
      step();
      e.flush();
      encBefore.push(performance.now() - c0);
      await e.sync();
    });
    wallBefore.push(performance.now() - w0);
  }
  const perStep = (e.stats.dispatches - d0) / steps;

  // after: record once, replay
  const rec = record(e, step);
  await e.sync();
  const encAfter: number[] = [], wallAfter: number[] = [];
  for (let i = 0; i < steps; i++) {
    e.write(x, randomData(2 * C * H * H, 10 + i));
    const w0 = performance.now();
    rec.replay();
    encAfter.push(performance.now() - w0);
    await e.sync();
    wallAfter.push(performance.now() - w0);
  }
  rec.dispose();
  const f = (v: number[]) => `${median(v).toFixed(2)} ms`;
  console.log(`dispatches per step: ${perStep}`);
  console.log(`CPU encoding per step: direct ${f(encBefore)}, replay ${f(encAfter)} (${(median(encBefore) / Math.max(median(encAfter), 1e-3)).toFixed(1)}× less)`);
  console.log(`wall per step (GPU bound on CPU drivers): direct ${f(wallBefore)}, replay ${f(wallAfter)}`);
  if (a.json) {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(a.json, JSON.stringify({ adapter: rep, size, dispatchesPerStep: perStep, encodeMs: { direct: median(encBefore), replay: median(encAfter) }, wallMs: { direct: median(wallBefore), replay: median(wallAfter) } }, null, 2));
  }
}
