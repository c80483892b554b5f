// diffusers UNet2DConditionModel (v0.27.2), built entirely from its config.json:
// SDXL, SSD-1B (asymmetric up path, single-resnet mid block), Segmind-Vega.
//
//   t ─ time_proj ─ time_embedding ─┐
//   (text_embeds ‖ add_time_proj(time_ids)) ─ add_embedding ─ + ─ emb
//   sample ─ conv_in ─ down_blocks ──(skips)──┐
//                         └─ mid_block ─ up_blocks ─ GN·SiLU ─ conv_out
//
// A ControlNet adds its residuals to the skips and to the mid block output.

import { Tensor, shapeStr } from "../../engine/tensor.ts";
import * as ops from "../../engine/ops/index.ts";
import { SsdError } from "../../engine/errors.ts";
import { activationFromConfig, type Activation } from "../../engine/ops/elementwise.ts";
import { Conv2d, GroupNorm, TimestepEmbedding, timestepEmbeddingHost, type Trace, type Weights } from "../nn.ts";
import { DownBlock, MidBlock, UpBlock, perLayer, perLevel } from "./unet_blocks.ts";

/** The config.json fields we read (diffusers names). */
export interface UNetConfig {
  in_channels: number;
  /** absent in ControlNet configs */
  out_channels?: number;
  block_out_channels: number[];
  down_block_types: string[];
  /** absent in ControlNet configs */
  up_block_types?: string[];
  mid_block_type?: string | null;
  layers_per_block: number | number[];
  transformer_layers_per_block?: number | (number | number[])[];
  reverse_transformer_layers_per_block?: (number | number[])[] | null;
  attention_head_dim?: number | number[] | null;
  num_attention_heads?: number | number[] | null;
  cross_attention_dim: number | number[];
  norm_num_groups: number;
  norm_eps: number;
  act_fn?: string;
  flip_sin_to_cos?: boolean;
  freq_shift?: number;
  downsample_padding?: number;
  mid_block_scale_factor?: number;
  use_linear_projection?: boolean;
  addition_embed_type?: string | null;
  addition_time_embed_dim?: number | null;
  projection_class_embeddings_input_dim?: number | null;
  conv_in_kernel?: number;
  conv_out_kernel?: number;
  [key: string]: unknown;
}

/** Everything the UNet (and the ControlNet, which copies its down half) derives from the config. */
export interface UNetLayout {
  levels: number;
  channels: number[];
  layersPerBlock: number[];
  /** heads per level (diffusers: num_attention_heads, or attention_head_dim in SDXL-era configs) */
  heads: number[];
  crossAttentionDim: number[];
  /** per level, per attention */
  downTransformerLayers: number[][];
  /** per up block, per attention (reverse_transformer_layers_per_block, or the down lists reversed) */
  upTransformerLayers: number[][];
  /** the mid block's transformer layers (per attention) */
  midTransformerLayers: number[];
  timeEmbedDim: number;
  act: Activation;
}

/** Rejects config features this port does not implement, with a clear message, instead of computing something else. */
export function checkSupported(cfg: Record<string, unknown>, what: string): void {
  const unsupported: [string, (v: unknown) => boolean][] = [
    ["class_embed_type", (v) => v != null],
    ["encoder_hid_dim_type", (v) => v != null],
    ["time_cond_proj_dim", (v) => v != null],
    ["time_embedding_type", (v) => v != null && v !== "positional"],
    ["time_embedding_dim", (v) => v != null],
    ["timestep_post_act", (v) => v != null],
    ["time_embedding_act_fn", (v) => v != null],
    ["resnet_time_scale_shift", (v) => v != null && v !== "default"],
    ["only_cross_attention", (v) => v === true || (Array.isArray(v) && v.some(Boolean))],
    ["dual_cross_attention", (v) => v === true],
    ["attention_type", (v) => v != null && v !== "default"],
    ["center_input_sample", (v) => v === true],
    ["class_embeddings_concat", (v) => v === true],
    ["resnet_skip_time_act", (v) => v === true],
    ["resnet_out_scale_factor", (v) => v != null && v !== 1],
    ["cross_attention_norm", (v) => v != null],
    ["num_class_embeds", (v) => v != null],
  ];
  for (const [k, bad] of unsupported) {
    if (bad(cfg[k])) throw new SsdError("E_BAD_CONFIG", `${what}: ${k}=${JSON.stringify(cfg[k])} is not supported by this port`);
  }
  const add = cfg.addition_embed_type;
  if (add != null && add !== "text_time") throw new SsdError("E_BAD_CONFIG", `${what}: addition_embed_type '${add}' is not supported (only "text_time", SDXL's)`);
}

export function unetLayout(cfg: UNetConfig): UNetLayout {
  const levels = cfg.down_block_types.length;
  const channels = cfg.block_out_channels;
  if (channels.length !== levels) throw new SsdError("E_BAD_CONFIG", `block_out_channels has ${channels.length} entries for ${levels} down blocks`);
  const layersPerBlock = perLevel(cfg.layers_per_block, levels, "layers_per_block");
  // SDXL-era configs name the number of heads attention_head_dim (diffusers keeps the quirk).
  const headsCfg = cfg.num_attention_heads ?? cfg.attention_head_dim ?? 8; // diffusers default attention_head_dim=8
  const heads = perLevel(headsCfg, levels, "num_attention_heads / attention_head_dim");
  const crossAttentionDim = perLevel(cfg.cross_attention_dim, levels, "cross_attention_dim");
  const tl = perLevel(cfg.transformer_layers_per_block ?? 1, levels, "transformer_layers_per_block");
  const downTransformerLayers = tl.map((v, i) => perLayer(v, layersPerBlock[i], `transformer_layers_per_block[${i}]`));
  const revLayers = layersPerBlock.slice().reverse();
  // Up-block depths matter only to a UNet (a ControlNet has no up blocks, and its
  // config carries no reverse_transformer_layers_per_block): computed on first use.
  const upLayers = (): number[][] => {
    let reverse = cfg.reverse_transformer_layers_per_block ?? null;
    if (reverse === null) {
      if (tl.some((v) => Array.isArray(v))) throw new SsdError("E_BAD_CONFIG", "a per-layer transformer_layers_per_block needs reverse_transformer_layers_per_block (asymmetric UNet)");
      reverse = tl.slice().reverse();
    }
    return perLevel(reverse, levels, "reverse_transformer_layers_per_block").map((v, i) => perLayer(v, revLayers[i] + 1, `reverse_transformer_layers_per_block[${i}]`));
  };
  // The mid block's depth matters only to UNetMidBlock2DCrossAttn (one layer: the first entry of a per-layer list).
  const lastTl = tl[levels - 1];
  const midTransformerLayers = Array.isArray(lastTl) ? [lastTl[0]] : perLayer(lastTl, 1, "transformer_layers_per_block[-1]");
  return { levels, channels, layersPerBlock, heads, crossAttentionDim, downTransformerLayers, get upTransformerLayers() { return upLayers(); }, midTransformerLayers, timeEmbedDim: channels[0] * 4, act: activationFromConfig(cfg.act_fn ?? "silu") };
}

/**
 * The part shared with ControlNetModel: time and text-time embeddings, conv_in,
 * the down blocks and the mid block, with the same names.
 */
export class UNetEncoder {
  constructor(
    readonly cfg: UNetConfig,
    readonly layout: UNetLayout,
    readonly timeEmbedding: TimestepEmbedding,
    readonly addEmbedding: TimestepEmbedding | null,
    readonly convIn: Conv2d,
    readonly downBlocks: DownBlock[],
    readonly midBlock: MidBlock | null,
  ) {}

  static async loadParts(w: Weights, cfg: UNetConfig, what: string) {
    checkSupported(cfg, what);
    const L = unetLayout(cfg);
    const c0 = L.channels[0];
    const timeEmbedding = await TimestepEmbedding.load(w.sub("time_embedding"), c0, L.timeEmbedDim, L.act);
    let addEmbedding: TimestepEmbedding | null = null;
    if (cfg.addition_embed_type === "text_time") {
      if (!cfg.addition_time_embed_dim || !cfg.projection_class_embeddings_input_dim) {
        throw new SsdError("E_BAD_CONFIG", `${what}: addition_embed_type "text_time" needs addition_time_embed_dim and projection_class_embeddings_input_dim`);
      }
      addEmbedding = await TimestepEmbedding.load(w.sub("add_embedding"), cfg.projection_class_embeddings_input_dim, L.timeEmbedDim, L.act);
    }
    const k = cfg.conv_in_kernel ?? 3;
    const convIn = await Conv2d.load(w.sub("conv_in"), { padding: (k - 1) >> 1, inChannels: cfg.in_channels, outChannels: c0, kernel: k });
    const downBlocks: DownBlock[] = [];
    for (let i = 0; i < L.levels; i++) {
      downBlocks.push(await DownBlock.load(w.sub(`down_blocks.${i}`), cfg.down_block_types[i], {
        inChannels: i === 0 ? c0 : L.channels[i - 1], outChannels: L.channels[i], tembChannels: L.timeEmbedDim,
        numLayers: L.layersPerBlock[i], groups: cfg.norm_num_groups, eps: cfg.norm_eps,
        transformerLayers: L.downTransformerLayers[i], heads: L.heads[i], linearProjection: !!cfg.use_linear_projection, crossAttentionDim: L.crossAttentionDim[i],
        addDownsample: i < L.levels - 1, downsamplePadding: cfg.downsample_padding ?? 1,
      }));
    }
    const midType = cfg.mid_block_type === undefined ? "UNetMidBlock2DCrossAttn" : cfg.mid_block_type;
    const cTop = L.channels[L.levels - 1];
    const midBlock = midType === null ? null : await MidBlock.load(w.sub("mid_block"), midType, {
      channels: cTop, tembChannels: L.timeEmbedDim, groups: cfg.norm_num_groups, eps: cfg.norm_eps,
      // the UNet builds UNetMidBlock2D with num_layers=0 and no attention: one resnet
      numLayers: midType === "UNetMidBlock2DCrossAttn" ? 1 : 0,
      transformerLayers: L.midTransformerLayers, heads: L.heads[L.levels - 1], linearProjection: !!cfg.use_linear_projection, crossAttentionDim: L.crossAttentionDim[L.levels - 1],
      outputScaleFactor: cfg.mid_block_scale_factor ?? 1,
    });
    return { L, timeEmbedding, addEmbedding, convIn, downBlocks, midBlock };
  }

  /**
   * emb = time_embedding(time_proj(t)) + add_embedding(text_embeds ‖ add_time_proj(time_ids)).
   * `timestep`: one value for the batch or one per row; `timeIds`: B×6 values, row-major.
   * Given as Tensors (f32 [B] and [B·6]), the sinusoidal projections run on
   * the GPU and the whole step can be recorded once and replayed
   * (engine/record.ts) with new values written into those tensors.
   */
  embed(batch: number, timestep: number | ArrayLike<number> | Tensor, added: AddedCond | undefined, trace?: Trace): Tensor {
    const e = this.convIn.weight.engine;
    const cfg = this.cfg;
    const sin = { flipSinToCos: cfg.flip_sin_to_cos ?? true, downscaleFreqShift: cfg.freq_shift ?? 0 };
    const c0 = this.layout.channels[0];
    let tProj: Tensor;
    if (timestep instanceof Tensor) {
      if (timestep.rank !== 1 || timestep.numel !== batch) throw new SsdError("E_SHAPE", `timestep tensor ${shapeStr(timestep.shape)} for a batch of ${batch}: one value per row`);
      tProj = ops.timestepEmbedding(timestep, c0, sin);
    } else {
      const ts = typeof timestep === "number" ? new Array(batch).fill(timestep) : Array.from(timestep);
      if (ts.length === 1 && batch > 1) while (ts.length < batch) ts.push(ts[0]);
      if (ts.length !== batch) throw new SsdError("E_SHAPE", `timestep: ${ts.length} values for a batch of ${batch}`);
      tProj = e.upload(timestepEmbeddingHost(ts, c0, sin), [batch, c0]);
    }
    trace?.("time_proj", tProj);
    let emb = this.timeEmbedding.forward(tProj);
    tProj.dispose();
    trace?.("time_embedding", emb);
    if (this.addEmbedding) {
      if (!added) throw new SsdError("E_BAD_PARAM", 'addition_embed_type "text_time" needs added_cond_kwargs text_embeds and time_ids');
      const dim = cfg.addition_time_embed_dim!;
      const nIds = added.timeIds instanceof Tensor ? added.timeIds.numel : added.timeIds.length;
      if (nIds % batch !== 0) throw new SsdError("E_SHAPE", `time_ids: ${nIds} values for a batch of ${batch}`);
      const perRow = nIds / batch;
      const timeProj = added.timeIds instanceof Tensor
        ? ops.timestepEmbedding(added.timeIds.reshape([nIds]), dim, sin)
        : e.upload(timestepEmbeddingHost(Array.from(added.timeIds), dim, sin), [nIds, dim]);
      trace?.("add_time_proj", timeProj);
      const timeEmbeds = timeProj.reshape([batch, perRow * dim]);
      timeProj.dispose();
      if (added.textEmbeds.shape[0] !== batch) throw new SsdError("E_SHAPE", `text_embeds ${added.textEmbeds.shape} for a batch of ${batch}`);
      const addEmbeds = ops.concat([added.textEmbeds, timeEmbeds], -1);
      timeEmbeds.dispose();
      const aug = this.addEmbedding.forward(addEmbeds);
      addEmbeds.dispose();
      trace?.("add_embedding", aug);
      const sum = ops.add(emb, aug);
      emb.dispose(); aug.dispose();
      emb = sum;
    }
    trace?.("temb", emb);
    return emb;
  }

  /** conv_in(sample) (+ a ControlNet's condition), down blocks -> skip states and the last hidden state. */
  down(h: Tensor, emb: Tensor, context: Tensor, trace?: Trace): { hidden: Tensor; states: Tensor[] } {
    const states: Tensor[] = [h];
    let cur = h;
    this.downBlocks.forEach((block, i) => {
      const r = block.forward(cur, emb, block.hasCrossAttention ? context : undefined);
      if (cur !== h) cur.dispose();
      states.push(...r.states);
      cur = r.hidden;
      trace?.(`down_blocks.${i}`, cur);
    });
    return { hidden: cur === h ? h.reshape(h.shape) : cur, states };
  }

  mid(h: Tensor, emb: Tensor, context: Tensor, trace?: Trace): Tensor {
    const y = this.midBlock ? this.midBlock.forward(h, emb, this.midBlock.hasCrossAttention ? context : undefined) : ops.copy(h);
    trace?.("mid_block", y);
    return y;
  }
}

/** SDXL's added_cond_kwargs: pooled text embeddings [B, D] and time ids (B × 6 host values). */
export interface AddedCond {
  textEmbeds: Tensor;
  /** B×6 values; a Tensor (f32, [B·6]) keeps host uploads out of a recorded step */
  timeIds: ArrayLike<number> | Tensor;
}

export class UNet2DConditionModel extends UNetEncoder {
  constructor(
    base: UNetEncoder,
    readonly upBlocks: UpBlock[],
    readonly convNormOut: GroupNorm,
    readonly convOut: Conv2d,
  ) {
    super(base.cfg, base.layout, base.timeEmbedding, base.addEmbedding, base.convIn, base.downBlocks, base.midBlock);
  }

  static async load(w: Weights, cfg: UNetConfig): Promise<UNet2DConditionModel> {
    const p = await UNetEncoder.loadParts(w, cfg, "UNet2DConditionModel");
    const L = p.L;
    const upTypes = cfg.up_block_types ?? [];
    if (upTypes.length !== L.levels) throw new SsdError("E_BAD_CONFIG", `up_block_types has ${upTypes.length} entries for ${L.levels} levels`);
    // Channels of every skip state, in the order the down path produces them.
    const skipChannels: number[] = [L.channels[0]];
    for (let i = 0; i < L.levels; i++) {
      for (let j = 0; j < L.layersPerBlock[i]; j++) skipChannels.push(L.channels[i]);
      if (i < L.levels - 1) skipChannels.push(L.channels[i]);
    }
    const rev = L.channels.slice().reverse();
    const revHeads = L.heads.slice().reverse();
    const revCross = L.crossAttentionDim.slice().reverse();
    const revLayers = L.layersPerBlock.slice().reverse();
    const upBlocks: UpBlock[] = [];
    let outC = rev[0];
    for (let i = 0; i < L.levels; i++) {
      const prev = outC;
      outC = rev[i];
      const n = revLayers[i] + 1;
      const skips = skipChannels.splice(skipChannels.length - n, n).reverse();
      upBlocks.push(await UpBlock.load(w.sub(`up_blocks.${i}`), upTypes[i], {
        inChannels: rev[Math.min(i + 1, L.levels - 1)], outChannels: outC, prevOutputChannels: prev, skipChannels: skips,
        tembChannels: L.timeEmbedDim, numLayers: n, groups: cfg.norm_num_groups, eps: cfg.norm_eps,
        transformerLayers: L.upTransformerLayers[i], heads: revHeads[i], linearProjection: !!cfg.use_linear_projection, crossAttentionDim: revCross[i],
        addUpsample: i < L.levels - 1,
      }));
    }
    const convNormOut = await GroupNorm.load(w.sub("conv_norm_out"), cfg.norm_num_groups, cfg.norm_eps, L.channels[0]);
    const k = cfg.conv_out_kernel ?? 3;
    const convOut = await Conv2d.load(w.sub("conv_out"), { padding: (k - 1) >> 1, inChannels: L.channels[0], outChannels: cfg.out_channels ?? cfg.in_channels, kernel: k });
    const base = new UNetEncoder(cfg, L, p.timeEmbedding, p.addEmbedding, p.convIn, p.downBlocks, p.midBlock);
    return new UNet2DConditionModel(base, upBlocks, convNormOut, convOut);
  }

  /**
   * diffusers UNet2DConditionModel.forward(sample, timestep, encoder_hidden_states,
   * added_cond_kwargs, down_block_additional_residuals, mid_block_additional_residual).
   * Encodes GPU work only; returns the predicted noise [B, out_channels, H, W].
   */
  forward(
    sample: Tensor,
    timestep: number | ArrayLike<number> | Tensor,
    encoderHiddenStates: Tensor,
    added?: AddedCond,
    downBlockAdditionalResiduals?: Tensor[],
    midBlockAdditionalResidual?: Tensor,
    opts: { trace?: Trace } = {},
  ): Tensor {
    const trace = opts.trace;
    const B = sample.shape[0];
    const emb = this.embed(B, timestep, added, trace);
    const h0 = this.convIn.forward(sample);
    trace?.("conv_in", h0);
    const { hidden, states: rawStates } = this.down(h0, emb, encoderHiddenStates, trace);

    let states = rawStates;
    const isControlnet = downBlockAdditionalResiduals !== undefined && midBlockAdditionalResidual !== undefined;
    if (isControlnet) {
      if (downBlockAdditionalResiduals.length !== rawStates.length) {
        throw new SsdError("E_SHAPE", `down_block_additional_residuals: ${downBlockAdditionalResiduals.length} tensors for ${rawStates.length} skip connections`);
      }
      states = rawStates.map((s, i) => ops.add(s, downBlockAdditionalResiduals[i]));
      for (const s of rawStates) s.dispose();
    }

    let h = this.mid(hidden, emb, encoderHiddenStates, trace);
    hidden.dispose();
    if (isControlnet) {
      const r = ops.add(h, midBlockAdditionalResidual);
      h.dispose();
      h = r;
    }

    this.upBlocks.forEach((block, i) => {
      const n = block.numResnets;
      const skips = states.splice(states.length - n, n).reverse();
      // The upsampler goes to the size of the next skip: odd latent sides round-trip exactly.
      const next = states[states.length - 1];
      const size: [number, number] | undefined = block.upsampler && next ? [next.shape[2], next.shape[3]] : undefined;
      const y = block.forward(h, skips, emb, encoderHiddenStates, size);
      h.dispose();
      for (const s of skips) s.dispose();
      h = y;
      trace?.(`up_blocks.${i}`, h);
    });
    for (const s of states) s.dispose();
    emb.dispose();

    const n = this.convNormOut.forward(h, "silu");
    h.dispose();
    const out = this.convOut.forward(n);
    n.dispose();
    trace?.("out", out);
    return out;
  }
}

