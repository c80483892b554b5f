// `npm run bench -- unet --synthetic CONFIG [--size 512|1024] [--batch 2]
//                       [--controlnet CONFIG] [--vae CONFIG] [--only unet,controlnet,vae]
//                       [--replay N]`
//
// Real-size denoiser timings without downloads: each model is built from a real
// config.json with seeded random f16 weights (what real checkpoints hold), and
// one UNet step, one ControlNet step and one VAE decode are timed on this
// adapter. A warm-up pass at a small size compiles the kernels first. GFLOP are
// what the ops declare (OpCost), so GFLOP/s is counted work over wall time;
// peak bytes are the activation pool's peak during the timed call, plus weights.
// With --replay N the real UNet step is also recorded once (timestep and
// time_ids as GPU tensors) and replayed N times with new timesteps: CPU
// encoding time per step, direct against replayed.

import { join } from "node:path";
import { getEngine, type Engine } from "../engine/engine.ts";
import type { Tensor } from "../engine/tensor.ts";
import { SsdError } from "../engine/errors.ts";
import { readJsonFile } from "../weights/json.ts";
import { Attention, Conv2d, Linear, type Weights } from "../pipeline/nn.ts";
import { UNet2DConditionModel } from "../pipeline/models/unet.ts";
import { ControlNetModel } from "../pipeline/models/controlnet.ts";
import { AutoencoderKL } from "../pipeline/models/vae.ts";
import { ROOT_DIR, fmtMs, randomData, median, adapterLine } from "./common.ts";
import { SyntheticWeights } from "./synthetic.ts";
import { record } from "../engine/record.ts";
import { parsePrecision } from "../engine/precision.ts";
import { Profiler, formatProfile } from "../engine/profiler.ts";


/**
 * FLOPs of the model graph, counted at the module level whatever the kernels
 * declare: Linear 2·M·N·K, Conv2d 2·outputs·(C/groups)·kH·kW, attention core
 * 4·B·Nq·Nk·inner (QKᵀ and P·V; its projections are Linears).
 */
const graphFlops = { linear: 0, conv: 0, attention: 0 };
function countGraphFlops(): void {
  const lin = Linear.prototype.forward;
  Linear.prototype.forward = function (this: Linear, x, act, residual) {
    const y = lin.call(this, x, act, residual);
    graphFlops.linear += 2 * (y.numel / this.outFeatures) * this.outFeatures * this.inFeatures;
    return y;
  };
  const conv = Conv2d.prototype.forward;
  Conv2d.prototype.forward = function (this: Conv2d, x, residual, act) {
    const y = conv.call(this, x, residual, act);
    const [, c, kh, kw] = this.weight.shape;
    graphFlops.conv += 2 * y.numel * c * kh * kw;
    return y;
  };
  const att = Attention.prototype.forward;
  Attention.prototype.forward = function (this: Attention, x, context, opts) {
    const y = att.call(this, x, context, opts);
    const nk = (context ?? x).shape[1];
    graphFlops.attention += 4 * x.shape[0] * x.shape[1] * nk * this.q.outFeatures;
    return y;
  };
}

interface Timing { name: string; ms: number; gflop: number; graph: { linear: number; conv: number; attention: number }; peak: number; dispatches: number; byOp: Map<string, { n: number; flops: number }>; declared: number }

/** Encodes `fn` once and waits for the GPU: wall time, declared FLOPs, activation peak, dispatches by op. */
async function timed(e: Engine, name: string, fn: () => Tensor[]): Promise<Timing> {
  await e.sync();
  e.pool.resetPeak();
  const f0 = e.stats.flops, d0 = e.stats.dispatches;
  const g0 = { ...graphFlops };
  const byOp = new Map<string, { n: number; flops: number }>();
  const prev = e.onDispatch;
  e.onDispatch = (label, pass, phase, cost) => {
    prev?.(label, pass, phase, cost);
    if (phase !== "begin") return;
    const op = label.split(/[.:|]/)[0];
    const r = byOp.get(op) ?? { n: 0, flops: 0 };
    r.n++;
    r.flops += cost?.flops ?? 0;
    byOp.set(op, r);
  };
  const t0 = performance.now();
  const outs = fn();
  await e.sync();
  const ms = performance.now() - t0;
  e.onDispatch = prev;
  const peak = e.memory().peak;
  for (const o of outs) o.dispose();
  const graph = { linear: (graphFlops.linear - g0.linear) / 1e9, conv: (graphFlops.conv - g0.conv) / 1e9, attention: (graphFlops.attention - g0.attention) / 1e9 };
  return { name, ms, gflop: graph.linear + graph.conv + graph.attention, graph, peak, dispatches: e.stats.dispatches - d0, byOp, declared: (e.stats.flops - f0) / 1e9 };
}

const gb = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

function report(t: Timing, weightsBytes: number): void {
  console.log(`${t.name}: ${fmtMs(t.ms)}, ${t.gflop.toFixed(1)} GFLOP (conv ${t.graph.conv.toFixed(1)}, linear ${t.graph.linear.toFixed(1)}, attention ${t.graph.attention.toFixed(1)}), ${(t.gflop / (t.ms / 1000)).toFixed(1)} GFLOP/s, ${t.dispatches} dispatches, peak activations ${gb(t.peak)} + weights ${gb(weightsBytes)}`);
  console.log(`    dispatches by op (FLOPs as the kernels declare them, ${t.declared.toFixed(1)} GFLOP in all):`);
  const rows = [...t.byOp.entries()].sort((a, b) => b[1].n - a[1].n);
  for (const [op, r] of rows) console.log(`    ${op.padEnd(18)} ${String(r.n).padStart(5)} dispatches  ${(r.flops / 1e9).toFixed(1).padStart(8)} GFLOP`);
}

/** Direct encoding against record-once/replay of the same UNet step: CPU encode ms and wall ms per step. */
async function replayUnet(e: Engine, unet: UNet2DConditionModel, x: { sample: Tensor; context: Tensor; added?: { textEmbeds: Tensor; timeIds: ArrayLike<number> } }, steps: number) {
  const B = x.sample.shape[0];
  const t = e.upload(new Float32Array(B).fill(999), [B]);
  const ids = x.added ? e.upload(Float32Array.from(x.added.timeIds), [x.added.timeIds.length]) : undefined;
  const added = x.added && ids ? { textEmbeds: x.added.textEmbeds, timeIds: ids } : undefined;
  const step = () => unet.forward(x.sample, t, x.context, added);
  const direct = { enc: [] as number[], wall: [] as number[] };
  for (let i = 0; i < steps; i++) {
    e.write(t, new Float32Array(B).fill(999 - 50 * i));
    await e.scope(async () => {
      const w0 = performance.now();
      step();
      e.flush();
      direct.enc.push(performance.now() - w0);
      await e.sync();
      direct.wall.push(performance.now() - w0);
    });
  }
  const rec = record(e, step);
  await e.sync();
  const replay = { enc: [] as number[], wall: [] as number[] };
  for (let i = 0; i < steps; i++) {
    e.write(t, new Float32Array(B).fill(999 - 50 * i));
    const w0 = performance.now();
    rec.replay();
    replay.enc.push(performance.now() - w0);
    await e.sync();
    replay.wall.push(performance.now() - w0);
  }
  const dispatches = rec.dispatches;
  rec.dispose();
  t.dispose(); ids?.dispose();
  const m = (v: number[]) => median(v);
  console.log(`unet step recorded once (${dispatches} dispatches) and replayed ${steps}×: CPU encoding per step direct ${fmtMs(m(direct.enc))}, replay ${fmtMs(m(replay.enc))} (${(m(direct.enc) / Math.max(m(replay.enc), 1e-3)).toFixed(1)}× less); wall per step direct ${fmtMs(m(direct.wall))}, replay ${fmtMs(m(replay.wall))}`);
  return { dispatches, encodeMs: { direct: m(direct.enc), replay: m(replay.enc) }, wallMs: { direct: m(direct.wall), replay: m(replay.wall) } };
}

export async function benchUnet(a: { synthetic?: string; size?: number; batch?: number; controlnet?: string; vae?: string; only?: string; json?: string; replay?: number; precision?: string; profile?: boolean }): Promise<void> {
  if (!a.synthetic) throw new SsdError("E_BAD_PARAM", "bench unet needs --synthetic CONFIG (e.g. bench/configs/ssd1b-unet.json)");
  const size = a.size ?? 512;
  const batch = a.batch ?? 1;
  const only = new Set((a.only ?? "unet,controlnet,vae").split(",").map((s) => s.trim()));
  const e = await getEngine();
  if (a.precision) e.precision = parsePrecision(a.precision, e.gpu.f16);
  countGraphFlops();
  const rep = e.gpu.report;
  console.log(`adapter: ${adapterLine(rep)}; image ${size}², batch ${batch}; activations ${e.precision.activations}, synthetic f16 weights`);
  const unetCfg = await readJsonFile(a.synthetic);
  const cnCfg = await readJsonFile(a.controlnet ?? join(ROOT_DIR, "bench", "configs", "controlnet-depth-small.json"));
  const vaeCfg = await readJsonFile(a.vae ?? join(ROOT_DIR, "bench", "configs", "sdxl-vae.json"));
  const vaeScale = 2 ** (vaeCfg.block_out_channels.length - 1);
  if (size % (vaeScale * 2 ** (unetCfg.block_out_channels.length - 1))) throw new SsdError("E_BAD_PARAM", `--size ${size} must be a multiple of ${vaeScale * 2 ** (unetCfg.block_out_channels.length - 1)}`);
  const crossDim = Array.isArray(unetCfg.cross_attention_dim) ? unetCfg.cross_attention_dim[0] : unetCfg.cross_attention_dim;
  const textDim = (unetCfg.projection_class_embeddings_input_dim ?? 0) - 6 * (unetCfg.addition_time_embed_dim ?? 0);
  const all: { t: Timing; weights: number }[] = [];
  let replayResult: Awaited<ReturnType<typeof replayUnet>> | undefined;

  const inputs = (s: number) => {
    const l = s / vaeScale;
    return {
      sample: e.upload(randomData(batch * unetCfg.in_channels * l * l, 1), [batch, unetCfg.in_channels, l, l]),
      context: e.upload(randomData(batch * 77 * crossDim, 2), [batch, 77, crossDim]),
      added: textDim > 0 ? { textEmbeds: e.upload(randomData(batch * textDim, 3), [batch, textDim]), timeIds: new Array(batch).fill([s, s, 0, 0, s, s]).flat() } : undefined,
      cond: e.upload(randomData(batch * 3 * s * s, 4).map((v) => (v + 1) / 2), [batch, 3, s, s]),
      latents: e.upload(randomData(batch * vaeCfg.latent_channels * l * l, 5), [batch, vaeCfg.latent_channels, l, l]),
    };
  };
  const warm = vaeScale * 2 ** (unetCfg.block_out_channels.length - 1) * 2;
  const big = inputs(size), small = inputs(warm);

  if (only.has("unet")) {
    const w0 = e.weightBytes, root = { engine: e, seed: 1, params: 0 };
    const t0 = performance.now();
    const unet = await UNet2DConditionModel.load(new SyntheticWeights(root), unetCfg);
    console.log(`unet: ${(root.params / 1e6).toFixed(0)} M parameters built in ${fmtMs(performance.now() - t0)}`);
    const step = (x: ReturnType<typeof inputs>) => [unet.forward(x.sample, 999, x.context, x.added)];
    await timed(e, "warm-up", () => step(small));
    const t = await timed(e, `unet (${a.synthetic.split("/").pop()}) ${size}² x${batch}`, () => step(big));
    report(t, e.weightBytes - w0);
    all.push({ t, weights: e.weightBytes - w0 });
    if (a.replay) replayResult = await replayUnet(e, unet, big, a.replay);
    if (a.profile) {
      // GPU time per dispatch label (kernel and shape), the 20 largest
      const prof = new Profiler(e, { detail: true }).start();
      const outs = step(big);
      const rows = await prof.report();
      for (const o of outs) o.dispose();
      console.log(formatProfile(rows.slice(0, 20), prof.mode));
    }
  }
  if (only.has("controlnet")) {
    const w0 = e.weightBytes, root = { engine: e, seed: 1000, params: 0 };
    const cn = await ControlNetModel.load(new SyntheticWeights(root), cnCfg);
    console.log(`controlnet: ${(root.params / 1e6).toFixed(0)} M parameters`);
    const step = (x: ReturnType<typeof inputs>) => {
      const r = cn.forward(x.sample, 999, x.context, x.cond, { added: x.added });
      return [...r.downBlockResSamples, r.midBlockResSample];
    };
    await timed(e, "warm-up", () => step(small));
    const t = await timed(e, `controlnet (${(a.controlnet ?? "controlnet-depth-small.json").split("/").pop()}) ${size}² x${batch}`, () => step(big));
    report(t, e.weightBytes - w0);
    all.push({ t, weights: e.weightBytes - w0 });
  }
  if (only.has("vae")) {
    const w0 = e.weightBytes, root = { engine: e, seed: 2000, params: 0 };
    const vae = await AutoencoderKL.load(new SyntheticWeights(root), vaeCfg);
    console.log(`vae: ${(root.params / 1e6).toFixed(0)} M parameters`);
    await timed(e, "warm-up", () => [vae.decode(small.latents)]);
    const t = await timed(e, `vae decode (${(a.vae ?? "sdxl-vae.json").split("/").pop()}) ${size}² x${batch}`, () => [vae.decode(big.latents)]);
    report(t, e.weightBytes - w0);
    all.push({ t, weights: e.weightBytes - w0 });
  }
  const peak = Math.max(0, ...all.map((x) => x.t.peak));
  console.log(`total: weights ${gb(e.weightBytes)}, largest activation peak ${gb(peak)}, sum ${gb(e.weightBytes + peak)}`);
  if (a.json) {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(a.json, JSON.stringify({ adapter: rep, size, batch, weightsBytes: e.weightBytes, peakActivationBytes: peak, rows: all.map(({ t, weights }) => ({ name: t.name, ms: t.ms, gflop: t.gflop, graph: t.graph, gflops: t.gflop / (t.ms / 1000), dispatches: t.dispatches, peakBytes: t.peak, weightsBytes: weights })), replay: replayResult }, null, 2));
  }
}
