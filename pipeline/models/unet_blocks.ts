// diffusers' unet_2d_blocks.py: the down, mid and up blocks shared by
// UNet2DConditionModel, ControlNetModel and AutoencoderKL. Module names match
// the checkpoint keys (resnets.i, attentions.i, downsamplers.0, upsamplers.0).

import type { Tensor } from "../../engine/tensor.ts";
import * as ops from "../../engine/ops/index.ts";
import { SsdError } from "../../engine/errors.ts";
import {
  Attention, Downsample2D, GroupNorm, ResnetBlock2D, Transformer2DModel, Upsample2D,
  fromTokens, toTokens, type Weights,
} from "../nn.ts";

/** What every block of a UNet level needs to know. */
export interface BlockConfig {
  inChannels: number;
  outChannels: number;
  /** time embedding width (null: no time embedding, the VAE) */
  tembChannels: number | null;
  numLayers: number;
  groups: number;
  eps: number;
  /** transformer layers per attention (one entry per resnet); absent for blocks without attention */
  transformerLayers?: number[];
  heads?: number;
  linearProjection?: boolean;
  crossAttentionDim?: number;
}

async function loadAttentions(w: Weights, cfg: BlockConfig): Promise<Transformer2DModel[]> {
  const out: Transformer2DModel[] = [];
  if (!cfg.transformerLayers || cfg.heads === undefined) throw new SsdError("E_BAD_CONFIG", "cross-attention block without transformer layers or heads");
  for (let i = 0; i < cfg.numLayers; i++) {
    out.push(await Transformer2DModel.load(w.sub(`attentions.${i}`), {
      channels: cfg.outChannels, heads: cfg.heads, layers: cfg.transformerLayers[i], groups: cfg.groups, linearProjection: !!cfg.linearProjection,
      crossAttentionDim: requireDim(cfg.crossAttentionDim),
    }));
  }
  return out;
}

/**
 * DownBlock2D / CrossAttnDownBlock2D / DownEncoderBlock2D: resnets (each
 * followed by a Transformer2DModel when it has cross-attention), then an
 * optional stride-2 downsampler. Returns the block's output and every
 * intermediate that the UNet keeps for its skip connections.
 */
export class DownBlock {
  constructor(readonly resnets: ResnetBlock2D[], readonly attentions: Transformer2DModel[] | null, readonly downsampler: Downsample2D | null) {}
  static async load(w: Weights, type: string, cfg: BlockConfig & { addDownsample: boolean; downsamplePadding: number }): Promise<DownBlock> {
    if (!["DownBlock2D", "CrossAttnDownBlock2D", "DownEncoderBlock2D"].includes(type)) {
      throw new SsdError("E_BAD_CONFIG", `down block type '${type}' is not supported (DownBlock2D, CrossAttnDownBlock2D, DownEncoderBlock2D)`);
    }
    const resnets: ResnetBlock2D[] = [];
    for (let i = 0; i < cfg.numLayers; i++) {
      resnets.push(await ResnetBlock2D.load(w.sub(`resnets.${i}`), {
        inChannels: i === 0 ? cfg.inChannels : cfg.outChannels, outChannels: cfg.outChannels, tembChannels: cfg.tembChannels, groups: cfg.groups, eps: cfg.eps,
      }));
    }
    const attentions = type === "CrossAttnDownBlock2D" ? await loadAttentions(w, cfg) : null;
    const downsampler = cfg.addDownsample ? await Downsample2D.load(w.sub("downsamplers.0"), cfg.outChannels, cfg.downsamplePadding) : null;
    return new DownBlock(resnets, attentions, downsampler);
  }
  get hasCrossAttention(): boolean {
    return this.attentions !== null;
  }
  /** -> the output, and the states the up path (or the ControlNet's zero convs) takes; all fresh tensors. */
  forward(x: Tensor, temb: Tensor | undefined, context?: Tensor): { hidden: Tensor; states: Tensor[] } {
    const states: Tensor[] = [];
    let h = x;
    this.resnets.forEach((resnet, i) => {
      let next = resnet.forward(h, temb);
      if (this.attentions) {
        const a = this.attentions[i].forward(next, requireContext(context));
        next.dispose();
        next = a;
      }
      states.push(next);
      h = next;
    });
    if (this.downsampler) {
      h = this.downsampler.forward(h);
      states.push(h);
    }
    if (h === x) h = ops.copy(x); // no layers at all: still hand back a tensor the caller owns
    // the last state is the output: hand it back twice, as a view the caller may dispose separately
    return { hidden: h.reshape(h.shape), states };
  }
}

/**
 * UpBlock2D / CrossAttnUpBlock2D / UpDecoderBlock2D: each resnet takes the
 * running state concatenated (on channels) with the next skip connection
 * (none in the VAE decoder), then an optional upsampler to an explicit size.
 */
export class UpBlock {
  constructor(readonly resnets: ResnetBlock2D[], readonly attentions: Transformer2DModel[] | null, readonly upsampler: Upsample2D | null) {}
  /**
   * `prevOutputChannels`: channels arriving from below; `skipChannels[i]`: those of the
   * skip connection resnet i concatenates (empty for UpDecoderBlock2D).
   */
  static async load(w: Weights, type: string, cfg: BlockConfig & { prevOutputChannels: number; skipChannels: number[]; addUpsample: boolean }): Promise<UpBlock> {
    if (!["UpBlock2D", "CrossAttnUpBlock2D", "UpDecoderBlock2D"].includes(type)) {
      throw new SsdError("E_BAD_CONFIG", `up block type '${type}' is not supported (UpBlock2D, CrossAttnUpBlock2D, UpDecoderBlock2D)`);
    }
    const resnets: ResnetBlock2D[] = [];
    for (let i = 0; i < cfg.numLayers; i++) {
      const resIn = i === 0 ? cfg.prevOutputChannels : cfg.outChannels;
      resnets.push(await ResnetBlock2D.load(w.sub(`resnets.${i}`), {
        inChannels: resIn + (cfg.skipChannels[i] ?? 0), outChannels: cfg.outChannels, tembChannels: cfg.tembChannels, groups: cfg.groups, eps: cfg.eps,
      }));
    }
    const attentions = type === "CrossAttnUpBlock2D" ? await loadAttentions(w, cfg) : null;
    const upsampler = cfg.addUpsample ? await Upsample2D.load(w.sub("upsamplers.0"), cfg.outChannels) : null;
    return new UpBlock(resnets, attentions, upsampler);
  }
  get numResnets(): number {
    return this.resnets.length;
  }
  /** `skips` in the order the resnets use them (the last down state first); `upsampleSize` for the upsampler. */
  forward(x: Tensor, skips: Tensor[], temb: Tensor | undefined, context?: Tensor, upsampleSize?: [number, number]): Tensor {
    let h = x;
    this.resnets.forEach((resnet, i) => {
      let inp = h;
      if (skips[i]) inp = ops.concat([h, skips[i]], 1);
      let next = resnet.forward(inp, temb);
      if (inp !== h) inp.dispose();
      if (this.attentions) {
        const a = this.attentions[i].forward(next, requireContext(context));
        next.dispose();
        next = a;
      }
      if (h !== x) h.dispose();
      h = next;
    });
    if (this.upsampler) {
      const u = this.upsampler.forward(h, upsampleSize);
      if (h !== x) h.dispose();
      h = u;
    }
    return h === x ? ops.copy(x) : h;
  }
}

/** The VAE mid block's attention: diffusers Attention with group_norm, one head, residual connection. */
export class SpatialSelfAttention {
  constructor(readonly groupNorm: GroupNorm, readonly attn: Attention) {}
  static async load(w: Weights, channels: number, headDim: number, groups: number, eps: number): Promise<SpatialSelfAttention> {
    return new SpatialSelfAttention(await GroupNorm.load(w.sub("group_norm"), groups, eps, channels), await Attention.load(w, channels / headDim, undefined, undefined, { query: channels }));
  }
  forward(x: Tensor): Tensor {
    const [, , H, W] = x.shape;
    const n = this.groupNorm.forward(x);
    const tokens = toTokens(n);
    n.dispose();
    const a = this.attn.forward(tokens);
    tokens.dispose();
    const img = fromTokens(a, H, W);
    a.dispose();
    const y = ops.add(img, x); // residual_connection; rescale_output_factor is 1
    img.dispose();
    return y;
  }
}

/**
 * UNetMidBlock2DCrossAttn (resnet, then attention+resnet per layer) and
 * UNetMidBlock2D (resnet, then self-attention+resnet per layer; the UNet builds
 * it with 0 layers and no attention: a single resnet, as in SSD-1B).
 */
export class MidBlock {
  constructor(
    readonly resnets: ResnetBlock2D[],
    readonly crossAttentions: Transformer2DModel[] | null,
    readonly selfAttentions: (SpatialSelfAttention | null)[],
  ) {}
  static async load(w: Weights, type: string, cfg: {
    channels: number; tembChannels: number | null; groups: number; eps: number; numLayers: number;
    transformerLayers?: number[]; heads?: number; linearProjection?: boolean; crossAttentionDim?: number;
    /** UNetMidBlock2D: self-attention between resnets (the VAE) */
    addAttention?: boolean; attentionHeadDim?: number; outputScaleFactor?: number;
  }): Promise<MidBlock> {
    const resnet = (i: number) => ResnetBlock2D.load(w.sub(`resnets.${i}`), {
      inChannels: cfg.channels, outChannels: cfg.channels, tembChannels: cfg.tembChannels, groups: cfg.groups, eps: cfg.eps, outputScaleFactor: cfg.outputScaleFactor,
    });
    const resnets = [await resnet(0)];
    if (type === "UNetMidBlock2DCrossAttn") {
      const attns: Transformer2DModel[] = [];
      for (let i = 0; i < cfg.numLayers; i++) {
        attns.push(await Transformer2DModel.load(w.sub(`attentions.${i}`), {
          channels: cfg.channels, heads: cfg.heads!, layers: cfg.transformerLayers![i], groups: cfg.groups, linearProjection: !!cfg.linearProjection,
          crossAttentionDim: requireDim(cfg.crossAttentionDim),
        }));
        resnets.push(await resnet(i + 1));
      }
      return new MidBlock(resnets, attns, []);
    }
    if (type === "UNetMidBlock2D") {
      const attns: (SpatialSelfAttention | null)[] = [];
      for (let i = 0; i < cfg.numLayers; i++) {
        attns.push(cfg.addAttention ? await SpatialSelfAttention.load(w.sub(`attentions.${i}`), cfg.channels, cfg.attentionHeadDim ?? cfg.channels, cfg.groups, cfg.eps) : null);
        resnets.push(await resnet(i + 1));
      }
      return new MidBlock(resnets, null, attns);
    }
    throw new SsdError("E_BAD_CONFIG", `mid_block_type '${type}' is not supported (UNetMidBlock2DCrossAttn, UNetMidBlock2D)`);
  }
  get hasCrossAttention(): boolean {
    return this.crossAttentions !== null;
  }
  forward(x: Tensor, temb: Tensor | undefined, context?: Tensor): Tensor {
    let h = this.resnets[0].forward(x, temb);
    for (let i = 1; i < this.resnets.length; i++) {
      const attn = this.crossAttentions ? this.crossAttentions[i - 1] : this.selfAttentions[i - 1];
      if (attn) {
        const a = attn instanceof Transformer2DModel ? attn.forward(h, requireContext(context)) : attn.forward(h);
        h.dispose();
        h = a;
      }
      const r = this.resnets[i].forward(h, temb);
      h.dispose();
      h = r;
    }
    return h;
  }
}

function requireDim(d: number | undefined): number {
  if (!d) throw new SsdError("E_BAD_CONFIG", "a cross-attention block needs cross_attention_dim");
  return d;
}

function requireContext(context: Tensor | undefined): Tensor {
  if (!context) throw new SsdError("E_BAD_PARAM", "a cross-attention block needs encoder_hidden_states");
  return context;
}

// ------------------------------------------------------------------ config helpers

/** An int or a per-level list -> per-level list (diffusers' `[x] * len(down_block_types)`). */
export function perLevel<T>(v: T | T[], n: number, name: string): T[] {
  if (Array.isArray(v)) {
    if (v.length !== n) throw new SsdError("E_BAD_CONFIG", `${name} has ${v.length} entries for ${n} blocks`);
    return v;
  }
  return new Array(n).fill(v);
}

/** transformer layers of one block: an int for all its attentions, or one per attention. */
export function perLayer(v: number | number[], numLayers: number, name: string): number[] {
  if (Array.isArray(v)) {
    if (v.length < numLayers) throw new SsdError("E_BAD_CONFIG", `${name}: ${v.length} entries for ${numLayers} attention layers`);
    return v.slice(0, numLayers);
  }
  return new Array(numLayers).fill(v);
}
