// diffusers ControlNetModel (v0.27.2), SDXL form: the UNet's embeddings, conv_in,
// down blocks and mid block (a copy of the UNet's encoder, same names), plus
//
//   controlnet_cond ─ controlnet_cond_embedding (conv·SiLU stack) ─┐
//   sample ─ conv_in ──────────────────────────────────────────────+─ down_blocks ─ mid_block
//   every skip state ─ controlnet_down_blocks.i (zero 1×1 conv) ─ × scale ─> down residuals
//   mid output       ─ controlnet_mid_block     (zero 1×1 conv) ─ × scale ─> mid residual
//
// `-small` depth ControlNets have 0 transformer layers: each Transformer2DModel
// still normalises and projects (see nn.ts).

import type { Tensor } from "../../engine/tensor.ts";
import * as ops from "../../engine/ops/index.ts";
import { SsdError } from "../../engine/errors.ts";
import { Conv2d, type Trace, type Weights } from "../nn.ts";
import { UNetEncoder, type AddedCond, type UNetConfig } from "./unet.ts";

export interface ControlNetConfig extends UNetConfig {
  conditioning_channels?: number;
  conditioning_embedding_out_channels?: number[];
  controlnet_conditioning_channel_order?: string;
  global_pool_conditions?: boolean;
}

/** ControlNetConditioningEmbedding: conv_in, (conv, stride-2 conv) per level, conv_out; SiLU between all. */
export class ControlNetConditioningEmbedding {
  constructor(readonly convIn: Conv2d, readonly blocks: Conv2d[], readonly convOut: Conv2d) {}
  static async load(w: Weights, conditioningChannels: number, channels: number[], embeddingChannels: number): Promise<ControlNetConditioningEmbedding> {
    const convIn = await Conv2d.load(w.sub("conv_in"), { padding: 1, inChannels: conditioningChannels, outChannels: channels[0], kernel: 3 });
    const blocks: Conv2d[] = [];
    for (let i = 0; i < channels.length - 1; i++) {
      blocks.push(await Conv2d.load(w.sub(`blocks.${2 * i}`), { padding: 1, inChannels: channels[i], outChannels: channels[i], kernel: 3 }));
      blocks.push(await Conv2d.load(w.sub(`blocks.${2 * i + 1}`), { padding: 1, stride: 2, inChannels: channels[i], outChannels: channels[i + 1], kernel: 3 }));
    }
    const convOut = await Conv2d.load(w.sub("conv_out"), { padding: 1, inChannels: channels[channels.length - 1], outChannels: embeddingChannels, kernel: 3 });
    return new ControlNetConditioningEmbedding(convIn, blocks, convOut);
  }
  /** `residual` (conv_in(sample)) is added by conv_out's epilogue when given. */
  forward(cond: Tensor, residual?: Tensor): Tensor {
    let h = this.convIn.forward(cond, undefined, "silu");
    for (const b of this.blocks) {
      const n = b.forward(h, undefined, "silu");
      h.dispose();
      h = n;
    }
    const y = this.convOut.forward(h, residual);
    h.dispose();
    return y;
  }
}

export interface ControlNetOutput {
  downBlockResSamples: Tensor[];
  midBlockResSample: Tensor;
}

export class ControlNetModel extends UNetEncoder {
  constructor(
    base: UNetEncoder,
    readonly condEmbedding: ControlNetConditioningEmbedding,
    readonly controlnetDownBlocks: Conv2d[],
    readonly controlnetMidBlock: Conv2d,
  ) {
    super(base.cfg, base.layout, base.timeEmbedding, base.addEmbedding, base.convIn, base.downBlocks, base.midBlock);
  }

  get config(): ControlNetConfig {
    return this.cfg as ControlNetConfig;
  }

  static async load(w: Weights, cfg: ControlNetConfig): Promise<ControlNetModel> {
    const order = cfg.controlnet_conditioning_channel_order ?? "rgb";
    if (order !== "rgb" && order !== "bgr") throw new SsdError("E_BAD_CONFIG", `controlnet_conditioning_channel_order '${order}' is not rgb or bgr`);
    // ControlNetModel's config has no up blocks or out channels; the shared loader reads only the down half.
    const p = await UNetEncoder.loadParts(w, cfg, "ControlNetModel");
    const L = p.L;
    const condEmbedding = await ControlNetConditioningEmbedding.load(
      w.sub("controlnet_cond_embedding"), cfg.conditioning_channels ?? 3, cfg.conditioning_embedding_out_channels ?? [16, 32, 96, 256], L.channels[0],
    );
    // One zero conv per skip state: conv_in's output, every resnet of every level, every downsampler.
    const zero = (name: string, c: number) => Conv2d.load(w.sub(name), { inChannels: c, outChannels: c, kernel: 1 });
    const controlnetDownBlocks: Conv2d[] = [];
    let k = 0;
    controlnetDownBlocks.push(await zero(`controlnet_down_blocks.${k++}`, L.channels[0]));
    for (let i = 0; i < L.levels; i++) {
      for (let j = 0; j < L.layersPerBlock[i]; j++) controlnetDownBlocks.push(await zero(`controlnet_down_blocks.${k++}`, L.channels[i]));
      if (i < L.levels - 1) controlnetDownBlocks.push(await zero(`controlnet_down_blocks.${k++}`, L.channels[i]));
    }
    const controlnetMidBlock = await zero("controlnet_mid_block", L.channels[L.levels - 1]);
    const base = new UNetEncoder(cfg, L, p.timeEmbedding, p.addEmbedding, p.convIn, p.downBlocks, p.midBlock);
    return new ControlNetModel(base, condEmbedding, controlnetDownBlocks, controlnetMidBlock);
  }

  /**
   * diffusers ControlNetModel.forward(sample, timestep, encoder_hidden_states,
   * controlnet_cond, conditioning_scale, guess_mode, added_cond_kwargs) ->
   * (down_block_res_samples, mid_block_res_sample), already scaled.
   */
  forward(
    sample: Tensor,
    timestep: number | ArrayLike<number> | Tensor,
    encoderHiddenStates: Tensor,
    controlnetCond: Tensor,
    opts: { conditioningScale?: number; guessMode?: boolean; added?: AddedCond; trace?: Trace } = {},
  ): ControlNetOutput {
    const { trace } = opts;
    const scale = opts.conditioningScale ?? 1;
    const B = sample.shape[0];
    const emb = this.embed(B, timestep, opts.added, trace);

    let cond = controlnetCond;
    if ((this.config.controlnet_conditioning_channel_order ?? "rgb") === "bgr") {
      const parts = ops.chunk(controlnetCond, controlnetCond.shape[1], 1);
      cond = ops.concat(parts.reverse(), 1);
      for (const p of parts) p.dispose();
    }
    const h0 = this.convIn.forward(sample);
    trace?.("conv_in", h0);
    let h: Tensor;
    if (trace) {
      const c = this.condEmbedding.forward(cond);
      trace("controlnet_cond_embedding", c);
      h = ops.add(h0, c);
      c.dispose();
    } else {
      h = this.condEmbedding.forward(cond, h0); // conv_out(...) + conv_in(sample), fused
    }
    h0.dispose();
    if (cond !== controlnetCond) cond.dispose();

    const { hidden, states } = this.down(h, emb, encoderHiddenStates, trace);
    const mid = this.mid(hidden, emb, encoderHiddenStates, trace);
    hidden.dispose();
    emb.dispose();

    if (states.length !== this.controlnetDownBlocks.length) throw new SsdError("E_INTERNAL", `${states.length} skip states for ${this.controlnetDownBlocks.length} zero convs`);
    // guess mode: scales = logspace(-1, 0, n + 1) · conditioning_scale, in float32 as torch.logspace.
    const n = states.length;
    const scales = opts.guessMode && !this.config.global_pool_conditions ? logspace32(-1, 0, n + 1).map((s) => Math.fround(s * Math.fround(scale))) : new Array(n + 1).fill(scale);
    const downBlockResSamples = states.map((s, i) => {
      const r = this.controlnetDownBlocks[i].forward(s);
      s.dispose();
      return scaled(r, scales[i]);
    });
    const midBlockResSample = scaled(this.controlnetMidBlock.forward(mid), scales[n]);
    mid.dispose();
    if (this.config.global_pool_conditions) {
      const pool = (t: Tensor) => { const m = ops.reduce(t, "mean", [2, 3]); t.dispose(); return m; };
      return { downBlockResSamples: downBlockResSamples.map(pool), midBlockResSample: pool(midBlockResSample) };
    }
    return { downBlockResSamples, midBlockResSample };
  }
}

function scaled(t: Tensor, s: number): Tensor {
  if (s === 1) return t;
  const y = ops.scale(t, s);
  t.dispose();
  return y;
}

/** torch.logspace(start, end, steps) in float32 (base 10), as torch's CPU kernel computes it. */
export function logspace32(start: number, end: number, steps: number): number[] {
  const f = Math.fround;
  if (steps === 1) return [f(10 ** start)];
  const step = f(f(end - start) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const e = i < half ? f(f(start) + f(step * i)) : f(f(end) - f(step * (steps - i - 1)));
    out.push(f(Math.pow(10, e)));
  }
  return out;
}
