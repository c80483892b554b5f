// DPT depth estimation as transformers defines it (modeling_dpt.py, modeling_bit.py):
//
//   DPTForDepthEstimation
//     dpt.embeddings        ViT: patch conv + [CLS] + position embeddings (bilinearly resized to the grid)
//                           hybrid (is_hybrid): BiT ResNet stem+stages (weight-standardised convs,
//                           TF "SAME" padding) -> 1×1 projection of the last stage -> tokens
//     dpt.encoder.layer.i   pre-LN ViT blocks; hidden_states = (embeddings, after layer 1, ..., after layer L)
//     neck.reassemble_stage readout (project / add / ignore) -> tokens to a map -> 1×1 projection ->
//                           resize (transposed conv ×f, identity, or 3×3 stride-1/f conv)
//     neck.convs.i          3×3 to fusion_hidden_size
//     neck.fusion_stage     deepest first: (+ residual unit of the skip) -> residual unit -> ×2 bilinear
//                           (align_corners) -> 1×1 projection
//     head.head             conv3×3 (F -> F/2), ×2 bilinear, conv3×3 (-> 32), ReLU, conv1×1 (-> 1), ReLU
//
// The neck feeds on un-normed hidden states (hidden_states[1:][i] for i in backbone_out_indices);
// the hybrid takes BiT stages 1 and 2 as its first two maps instead. Sizes all come from config.json;
// weight names are transformers' state_dict keys. The neck pieces are shared with Depth Anything.

import type { Tensor } from "../../engine/tensor.ts";
import * as ops from "../../engine/ops/index.ts";
import { activationFromConfig, type Activation } from "../../engine/ops/elementwise.ts";
import { SsdError } from "../../engine/errors.ts";
import { getEngine } from "../../engine/engine.ts";
import { Attention, Conv2d, GroupNorm, LayerNorm, Linear, toTokens, fromTokens, type Trace } from "../nn.ts";
import { WeightStore, type WeightStoreOptions, type WeightView } from "../../weights/store.ts";

export type { Trace };

// ------------------------------------------------------------------ config

export interface BitConfig {
  num_channels: number;
  embedding_size: number;
  hidden_sizes: number[];
  depths: number[];
  layer_type: "preactivation" | "bottleneck";
  hidden_act: string;
  global_padding: string | null;
  num_groups: number;
  embedding_dynamic_padding: boolean;
  output_stride: number;
  width_factor: number;
  out_indices: number[];
}

export interface DPTConfig {
  model_type: string;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  intermediate_size: number;
  hidden_act: string;
  layer_norm_eps: number;
  image_size: number | [number, number];
  patch_size: number;
  num_channels: number;
  qkv_bias: boolean;
  is_hybrid: boolean;
  backbone_out_indices: number[];
  readout_type: "project" | "add" | "ignore";
  reassemble_factors: number[];
  neck_hidden_sizes: number[];
  fusion_hidden_size: number;
  head_in_index: number;
  use_batch_norm_in_fusion_residual: boolean;
  use_bias_in_fusion_residual: boolean | null;
  add_projection: boolean;
  neck_ignore_stages: number[];
  backbone_config: BitConfig | null;
  backbone_featmap_shape: number[] | null;
}

const BIT_DEFAULTS = {
  num_channels: 3, embedding_size: 64, hidden_sizes: [256, 512, 1024, 2048], depths: [3, 4, 6, 3], layer_type: "preactivation",
  hidden_act: "relu", global_padding: null, num_groups: 32, embedding_dynamic_padding: false, output_stride: 32, width_factor: 1,
};

function bad(source: string, msg: string): SsdError {
  return new SsdError("E_BAD_CONFIG", `${source}: ${msg}`);
}

function posInt(source: string, k: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) throw bad(source, `'${k}' must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** BitConfig with transformers' defaults; out_indices from out_features when absent. */
export function parseBitConfig(raw: Record<string, any>, source: string): BitConfig {
  const c: any = { ...BIT_DEFAULTS, ...raw };
  const stageNames: string[] = raw.stage_names ?? ["stem", ...c.hidden_sizes.map((_: number, i: number) => `stage${i + 1}`)];
  let outIdx: number[] | undefined = raw.out_indices;
  if (!outIdx && raw.out_features) outIdx = (raw.out_features as string[]).map((f) => stageNames.indexOf(f));
  if (!outIdx) outIdx = [stageNames.length - 1];
  if (outIdx.some((i) => !Number.isInteger(i) || i < 0 || i >= stageNames.length)) throw bad(source, `backbone out_indices/out_features ${JSON.stringify(raw.out_indices ?? raw.out_features)} name no BiT stage`);
  if (c.layer_type !== "preactivation" && c.layer_type !== "bottleneck") throw bad(source, `BiT layer_type '${c.layer_type}' is not preactivation or bottleneck`);
  if (c.depths.length !== c.hidden_sizes.length) throw bad(source, "BiT depths and hidden_sizes differ in length");
  activationFromConfig(String(c.hidden_act));
  return { ...c, out_indices: outIdx };
}

/** Reads a DPTConfig dict (transformers' defaults), checking what the model relies on. */
export function parseDPTConfig(raw: Record<string, any>, source = "config.json"): DPTConfig {
  const isHybrid = !!raw.is_hybrid;
  const cfg: any = {
    hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072, hidden_act: "gelu",
    layer_norm_eps: 1e-12, image_size: 384, patch_size: 16, num_channels: 3, qkv_bias: true,
    backbone_out_indices: [2, 5, 8, 11], readout_type: "project", reassemble_factors: [4, 2, 1, 0.5],
    neck_hidden_sizes: [96, 192, 384, 768], fusion_hidden_size: 256, head_in_index: -1,
    use_batch_norm_in_fusion_residual: false, use_bias_in_fusion_residual: null, add_projection: false,
    neck_ignore_stages: [0, 1], backbone_featmap_shape: [1, 1024, 24, 24],
    ...raw, is_hybrid: isHybrid,
  };
  if (!isHybrid && raw.neck_ignore_stages === undefined) cfg.neck_ignore_stages = [];
  if (raw.model_type !== undefined && raw.model_type !== "dpt") throw bad(source, `model_type '${raw.model_type}' is not 'dpt'`);
  for (const k of ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size", "num_channels", "fusion_hidden_size"]) posInt(source, k, cfg[k]);
  if (cfg.hidden_size % cfg.num_attention_heads) throw bad(source, `hidden_size ${cfg.hidden_size} is not divisible by num_attention_heads ${cfg.num_attention_heads}`);
  if (!["project", "add", "ignore"].includes(cfg.readout_type)) throw bad(source, `readout_type '${cfg.readout_type}' is not project, add or ignore`);
  if (cfg.neck_hidden_sizes.length !== cfg.reassemble_factors.length) throw bad(source, "neck_hidden_sizes and reassemble_factors differ in length");
  if (cfg.backbone_out_indices.length !== cfg.neck_hidden_sizes.length) throw bad(source, "backbone_out_indices and neck_hidden_sizes differ in length");
  activationFromConfig(String(cfg.hidden_act));
  if (isHybrid) {
    if (cfg.readout_type !== "project") throw bad(source, `readout type '${cfg.readout_type}' is not supported for DPT-Hybrid (transformers allows only 'project')`);
    // DPTConfig's hybrid default backbone
    const bc = raw.backbone_config ?? { global_padding: "same", layer_type: "bottleneck", depths: [3, 4, 9], out_features: ["stage1", "stage2", "stage3"], embedding_dynamic_padding: true };
    if (bc.model_type !== undefined && bc.model_type !== "bit") throw bad(source, `a hybrid DPT needs a BiT backbone, got '${bc.model_type}'`);
    cfg.backbone_config = parseBitConfig(bc, source);
    if (cfg.backbone_config.out_indices.length !== 3) throw bad(source, `the hybrid's BiT backbone must output 3 feature maps, got ${cfg.backbone_config.out_indices.length}`);
  } else {
    if (raw.backbone_config || raw.backbone) throw bad(source, "DPT with an AutoBackbone (backbone_config, not hybrid) is not supported; use a ViT or hybrid DPT, or Depth Anything");
    cfg.backbone_config = null;
  }
  return cfg as DPTConfig;
}

// ------------------------------------------------------------------ shared helpers

/** [B, C, H, W] -> resized to size, bilinear or bicubic as F.interpolate. */
function interp(x: Tensor, size: [number, number], mode: "bilinear" | "bicubic", alignCorners: boolean): Tensor {
  return ops.interpolate(x, { size, mode, alignCorners });
}

/**
 * How ViT-style embeddings end: cls_token [1, 1, C], repeated over the batch,
 * put before tokens [B, N, C], and pos [1, 1 + N, C] added -> [B, 1 + N, C].
 * Disposes tokens and pos.
 */
export function withClsAndPositions(cls: Tensor, tokens: Tensor, pos: Tensor): Tensor {
  const B = tokens.dim(0);
  const c = ops.copy(cls.reshape([1, 1, cls.dim(-1)]));
  const cb = B === 1 ? c : ops.concat(new Array(B).fill(c), 0);
  if (cb !== c) c.dispose();
  const cat = ops.concat([cb, tokens], 1);
  cb.dispose(); tokens.dispose();
  const y = ops.add(cat, pos);
  cat.dispose(); pos.dispose();
  return y;
}

/**
 * position_embeddings [1, 1+N, C] with the N = g×g grid resized to gh×gw
 * (F.interpolate, align_corners=False) -> [1, 1 + gh·gw, C]. Resizing to the
 * same grid is an identity for both modes and is skipped.
 */
export function resizePosEmbed(pos: Tensor, gh: number, gw: number, mode: "bilinear" | "bicubic"): Tensor {
  const C = pos.dim(-1);
  const n = pos.dim(1) - 1;
  const g = Math.floor(Math.sqrt(n) + 1e-9);
  const p = ops.copy(pos);
  if (g === gh && g === gw && g * g === n) return p;
  if (g * g !== n) throw new SsdError("E_SHAPE", `position embeddings: ${n} positions are not a square grid`);
  const tok = ops.slice(p, 1, 0, 1);
  const grid = ops.slice(p, 1, 1, 1 + n);
  p.dispose();
  const gridMap = grid.reshape([1, g, g, C]);
  const nchw = ops.permute(gridMap, [0, 3, 1, 2]);
  grid.dispose(); gridMap.dispose();
  const r = interp(nchw, [gh, gw], mode, false);
  nchw.dispose();
  const nhwc = ops.permute(r, [0, 2, 3, 1]);
  r.dispose();
  const rows = nhwc.reshape([1, gh * gw, C]);
  const y = ops.concat([tok, rows], 1);
  tok.dispose(); nhwc.dispose(); rows.dispose();
  return y;
}

/** ConvTranspose2d (PyTorch weight [Cin, Cout, k, k]). */
export class ConvTranspose2d {
  constructor(readonly weight: Tensor, readonly bias: Tensor | undefined, readonly stride: number) {}
  static async load(w: WeightView, channels: number, kernel: number, stride: number): Promise<ConvTranspose2d> {
    const weight = await w.take("weight", [channels, channels, kernel, kernel]);
    return new ConvTranspose2d(weight, w.has("bias") ? await w.take("bias", [channels]) : undefined, stride);
  }
  forward(x: Tensor): Tensor {
    return ops.convTranspose2d(x, this.weight, { bias: this.bias, stride: this.stride });
  }
}

/** BatchNorm2d in eval mode as a per-channel affine map computed once at load (x·scale + shift). */
export class BatchNorm2d {
  constructor(readonly scale: Tensor, readonly shift: Tensor) {}
  static async load(w: WeightView, channels: number, eps = 1e-5): Promise<BatchNorm2d> {
    const mean = await w.takeHost("running_mean", [channels]);
    const variance = await w.takeHost("running_var", [channels]);
    const weight = w.has("weight") ? await w.takeHost("weight", [channels]) : new Float32Array(channels).fill(1);
    const bias = w.has("bias") ? await w.takeHost("bias", [channels]) : new Float32Array(channels);
    if (w.has("num_batches_tracked")) w.skip("num_batches_tracked");
    const scale = new Float32Array(channels), shift = new Float32Array(channels);
    for (let c = 0; c < channels; c++) {
      const s = Math.fround(weight[c] / Math.fround(Math.sqrt(Math.fround(variance[c] + eps))));
      scale[c] = s;
      shift[c] = Math.fround(bias[c] - Math.fround(mean[c] * s));
    }
    const engine = await getEngine();
    return new BatchNorm2d(engine.upload(scale, [1, channels, 1, 1], "f32", { persistent: true }), engine.upload(shift, [1, channels, 1, 1], "f32", { persistent: true }));
  }
  forward(x: Tensor, act: Activation = "none"): Tensor {
    const m = ops.mul(x, this.scale);
    const y = ops.add(m, this.shift, act);
    m.dispose();
    return y;
  }
}

// ------------------------------------------------------------------ ViT encoder (DPT and DINOv2 share the names)

/** attention.attention.{query,key,value} + attention.output.dense */
export async function loadViTAttention(w: WeightView, hidden: number, heads: number): Promise<Attention> {
  return Attention.load(w, heads, { q: "attention.query", k: "attention.key", v: "attention.value", out: "output.dense" }, undefined, { query: hidden });
}

/** DPTViTLayer: h += attn(layernorm_before(h)); h += output(act(intermediate(layernorm_after(h)))). */
export class DPTViTLayer {
  constructor(
    readonly layernorm_before: LayerNorm, readonly attention: Attention,
    readonly layernorm_after: LayerNorm, readonly intermediate: Linear, readonly output: Linear, readonly act: Activation,
  ) {}
  static async load(w: WeightView, cfg: DPTConfig): Promise<DPTViTLayer> {
    const d = cfg.hidden_size;
    return new DPTViTLayer(
      await LayerNorm.load(w.sub("layernorm_before"), cfg.layer_norm_eps, d),
      await loadViTAttention(w.sub("attention"), d, cfg.num_attention_heads),
      await LayerNorm.load(w.sub("layernorm_after"), cfg.layer_norm_eps, d),
      await Linear.load(w.sub("intermediate.dense"), d, cfg.intermediate_size),
      await Linear.load(w.sub("output.dense"), cfg.intermediate_size, d),
      activationFromConfig(cfg.hidden_act),
    );
  }
  forward(h: Tensor): Tensor {
    let n = this.layernorm_before.forward(h);
    const h1 = this.attention.forward(n, undefined, { residual: h });
    n.dispose();
    n = this.layernorm_after.forward(h1);
    const i = this.intermediate.forward(n, this.act);
    n.dispose();
    const y = this.output.forward(i, undefined, h1);
    i.dispose(); h1.dispose();
    return y;
  }
}

// ------------------------------------------------------------------ BiT (hybrid stem)

/** transformers' bit.get_padding_value: [static padding, dynamic TF "SAME"]. */
function bitPadding(padding: string | null, kernel: number, stride: number, dilation: number): [number, boolean] {
  const sym = Math.floor(((stride - 1) + dilation * (kernel - 1)) / 2);
  if (padding === null || padding === undefined) return [sym, false];
  const p = padding.toLowerCase();
  if (p === "same") {
    if (stride === 1 && (dilation * (kernel - 1)) % 2 === 0) return [sym, false];
    return [0, true];
  }
  if (p === "valid") return [0, false];
  return [sym, false];
}

/** DynamicPad2d: TF "SAME" total padding, the odd pixel on the bottom/right, value 0. */
function dynamicPad(x: Tensor, kernel: number, stride: number, dilation: number): Tensor | null {
  const pad = (n: number) => Math.max((Math.ceil(n / stride) - 1) * stride + (kernel - 1) * dilation + 1 - n, 0);
  const ph = pad(x.dim(2)), pw = pad(x.dim(3));
  if (ph <= 0 && pw <= 0) return null;
  return ops.pad2d(x, [Math.floor(pw / 2), pw - Math.floor(pw / 2), Math.floor(ph / 2), ph - Math.floor(ph / 2)], 0);
}

/** WeightStandardizedConv2d: the weight standardised once at load (eps 1e-8 everywhere BiT builds one). */
export class WeightStandardizedConv2d {
  constructor(readonly weight: Tensor, readonly kernel: number, readonly stride: number, readonly dilation: number, readonly padding: number, readonly dynamic: boolean) {}
  static async load(w: WeightView, o: { inChannels: number; outChannels: number; kernel: number; stride?: number; dilation?: number; globalPadding: string | null; eps?: number }): Promise<WeightStandardizedConv2d> {
    const stride = o.stride ?? 1, dilation = o.dilation ?? 1;
    const raw = await w.take("weight", [o.outChannels, o.inChannels, o.kernel, o.kernel]);
    const weight = ops.standardizeWeight(raw, o.eps ?? 1e-8);
    // the raw weight's buffer is destroyed on dispose: submit the standardisation first
    raw.engine.flush();
    raw.dispose();
    const [padding, dynamic] = bitPadding(o.globalPadding, o.kernel, stride, dilation);
    return new WeightStandardizedConv2d(weight, o.kernel, stride, dilation, padding, dynamic);
  }
  forward(x: Tensor, opts: { residual?: Tensor; act?: Activation } = {}): Tensor {
    const p = this.dynamic ? dynamicPad(x, this.kernel, this.stride, this.dilation) : null;
    const y = ops.conv2d(p ?? x, this.weight, { stride: this.stride, padding: this.padding, dilation: this.dilation, residual: opts.residual, act: opts.act });
    p?.dispose();
    return y;
  }
}

/** make_div: channels rounded to a multiple of 8 (not below 90% of the value). */
function makeDiv(value: number, divisor = 8): number {
  let v = Math.max(divisor, Math.floor(Math.floor(value + divisor / 2) / divisor) * divisor);
  if (v < 0.9 * value) v += divisor;
  return v;
}

interface BitLayer { forward(x: Tensor): Tensor }

/** BitBottleneckLayer (non-pre-activation, as ViT-hybrid): conv-GN-act ×2, conv-GN, + shortcut, act. */
class BitBottleneckLayer implements BitLayer {
  constructor(
    readonly downsample: { conv: WeightStandardizedConv2d; norm: GroupNorm } | null,
    readonly conv1: WeightStandardizedConv2d, readonly norm1: GroupNorm,
    readonly conv2: WeightStandardizedConv2d, readonly norm2: GroupNorm,
    readonly conv3: WeightStandardizedConv2d, readonly norm3: GroupNorm,
    readonly act: Activation,
  ) {}
  static async load(w: WeightView, c: BitConfig, inCh: number, outCh: number, stride: number, firstDilation: number, isFirst: boolean): Promise<BitBottleneckLayer> {
    const mid = makeDiv(outCh * 0.25);
    const gp = c.global_padding;
    const gn = (name: string, ch: number) => GroupNorm.load(w.sub(name), c.num_groups, 1e-5, ch);
    const downsample = isFirst ? {
      conv: await WeightStandardizedConv2d.load(w.sub("downsample.conv"), { inChannels: inCh, outChannels: outCh, kernel: 1, stride, globalPadding: gp }),
      norm: await gn("downsample.norm", outCh),
    } : null;
    return new BitBottleneckLayer(
      downsample,
      await WeightStandardizedConv2d.load(w.sub("conv1"), { inChannels: inCh, outChannels: mid, kernel: 1, globalPadding: gp }), await gn("norm1", mid),
      await WeightStandardizedConv2d.load(w.sub("conv2"), { inChannels: mid, outChannels: mid, kernel: 3, stride, dilation: firstDilation, globalPadding: gp }), await gn("norm2", mid),
      await WeightStandardizedConv2d.load(w.sub("conv3"), { inChannels: mid, outChannels: outCh, kernel: 1, globalPadding: gp }), await gn("norm3", outCh),
      activationFromConfig(c.hidden_act),
    );
  }
  forward(x: Tensor): Tensor {
    let shortcut = x;
    if (this.downsample) {
      const s = this.downsample.conv.forward(x);
      shortcut = this.downsample.norm.forward(s);
      s.dispose();
    }
    let h = this.conv1.forward(x);
    let n = this.norm1.forward(h, this.act);
    h.dispose();
    h = this.conv2.forward(n);
    n.dispose();
    n = this.norm2.forward(h, this.act);
    h.dispose();
    h = this.conv3.forward(n);
    n.dispose();
    n = this.norm3.forward(h);
    h.dispose();
    const y = ops.add(n, shortcut, this.act);
    n.dispose();
    if (shortcut !== x) shortcut.dispose();
    return y;
  }
}

/** BitPreActivationBottleneckLayer (ResNet v2): GN-act first; the shortcut convolves the pre-activation. */
class BitPreActivationBottleneckLayer implements BitLayer {
  constructor(
    readonly downsample: WeightStandardizedConv2d | null,
    readonly norm1: GroupNorm, readonly conv1: WeightStandardizedConv2d,
    readonly norm2: GroupNorm, readonly conv2: WeightStandardizedConv2d,
    readonly norm3: GroupNorm, readonly conv3: WeightStandardizedConv2d,
    readonly act: Activation,
  ) {}
  static async load(w: WeightView, c: BitConfig, inCh: number, outCh: number, stride: number, isFirst: boolean): Promise<BitPreActivationBottleneckLayer> {
    const mid = makeDiv(outCh * 0.25);
    const gp = c.global_padding;
    const gn = (name: string, ch: number) => GroupNorm.load(w.sub(name), c.num_groups, 1e-5, ch);
    return new BitPreActivationBottleneckLayer(
      isFirst ? await WeightStandardizedConv2d.load(w.sub("downsample.conv"), { inChannels: inCh, outChannels: outCh, kernel: 1, stride, globalPadding: gp }) : null,
      await gn("norm1", inCh), await WeightStandardizedConv2d.load(w.sub("conv1"), { inChannels: inCh, outChannels: mid, kernel: 1, globalPadding: gp }),
      await gn("norm2", mid), await WeightStandardizedConv2d.load(w.sub("conv2"), { inChannels: mid, outChannels: mid, kernel: 3, stride, globalPadding: gp }),
      await gn("norm3", mid), await WeightStandardizedConv2d.load(w.sub("conv3"), { inChannels: mid, outChannels: outCh, kernel: 1, globalPadding: gp }),
      activationFromConfig(c.hidden_act),
    );
  }
  forward(x: Tensor): Tensor {
    const pre = this.norm1.forward(x, this.act);
    const shortcut = this.downsample ? this.downsample.forward(pre) : x;
    let h = this.conv1.forward(pre);
    pre.dispose();
    let n = this.norm2.forward(h, this.act);
    h.dispose();
    h = this.conv2.forward(n);
    n.dispose();
    n = this.norm3.forward(h, this.act);
    h.dispose();
    const y = this.conv3.forward(n, { residual: shortcut });
    n.dispose();
    if (shortcut !== x) shortcut.dispose();
    return y;
  }
}

/** BitBackbone (bit.embedder + bit.encoder.stages); feature maps = the stage outputs named by out_indices. */
export class BitBackbone {
  constructor(
    readonly config: BitConfig,
    readonly convolution: WeightStandardizedConv2d,
    readonly norm: GroupNorm | null,
    readonly stages: BitLayer[][],
  ) {}
  static async load(w: WeightView, c: BitConfig): Promise<BitBackbone> {
    const bit = w.sub("bit");
    const emb = bit.sub("embedder");
    const convolution = await WeightStandardizedConv2d.load(emb.sub("convolution"), { inChannels: c.num_channels, outChannels: c.embedding_size, kernel: 7, stride: 2, globalPadding: c.global_padding });
    const norm = c.layer_type === "preactivation" ? null : await GroupNorm.load(emb.sub("norm"), c.num_groups, 1e-5, c.embedding_size);
    const stages: BitLayer[][] = [];
    let prev = c.embedding_size, currentStride = 4, dilation = 1;
    for (let s = 0; s < c.depths.length; s++) {
      const out = makeDiv(c.hidden_sizes[s] * c.width_factor);
      let stride = s === 0 ? 1 : 2;
      if (currentStride >= c.output_stride) { dilation *= stride; stride = 1; }
      let firstDilation = dilation === 1 || dilation === 2 ? 1 : 2;
      const layers: BitLayer[] = [];
      for (let l = 0; l < c.depths[s]; l++) {
        const lw = bit.sub(`encoder.stages.${s}.layers.${l}`);
        const st = l === 0 ? stride : 1;
        layers.push(c.layer_type === "bottleneck"
          ? await BitBottleneckLayer.load(lw, c, prev, out, st, firstDilation, l === 0)
          : await BitPreActivationBottleneckLayer.load(lw, c, prev, out, st, l === 0));
        prev = out;
        firstDilation = dilation;
      }
      stages.push(layers);
      currentStride *= stride;
    }
    // BitModel's final norm (pre-activation only) feeds the pooler, never the feature maps.
    if (c.layer_type === "preactivation") bit.skip("norm.");
    return new BitBackbone(c, convolution, norm, stages);
  }
  get channels(): number[] {
    return this.config.out_indices.map((i) => (i === 0 ? this.config.embedding_size : makeDiv(this.config.hidden_sizes[i - 1] * this.config.width_factor)));
  }
  /** x [B, C, H, W] -> the feature maps named by out_indices */
  forward(x: Tensor, trace?: Trace): Tensor[] {
    const c = this.config;
    let h = this.convolution.forward(x);
    if (!c.global_padding || c.global_padding.toUpperCase() !== "SAME") {
      const p = ops.pad2d(h, [1, 1, 1, 1], 0);
      h.dispose();
      h = p;
    }
    if (this.norm) {
      const n = this.norm.forward(h, activationFromConfig(c.hidden_act));
      h.dispose();
      h = n;
    }
    const pooled = c.embedding_dynamic_padding
      ? ops.maxPool2d(h, { kernel: 3, stride: 2, same: true, padValue: 0 })
      : ops.maxPool2d(h, { kernel: 3, stride: 2, padding: 0 });
    h.dispose();
    trace?.("bit.embedder", pooled);
    const hidden: Tensor[] = [pooled];
    let cur = pooled;
    for (const stage of this.stages) {
      for (const layer of stage) {
        const next = layer.forward(cur);
        if (!hidden.includes(cur)) cur.dispose();
        cur = next;
      }
      hidden.push(cur);
    }
    const maps = c.out_indices.map((i) => hidden[i]);
    for (const t of hidden) if (!maps.includes(t)) t.dispose();
    maps.forEach((m, i) => trace?.(`bit_feature_maps.${i}`, m));
    return maps;
  }
}

// ------------------------------------------------------------------ embeddings

function imageSize(cfg: { image_size: number | [number, number] }): [number, number] {
  const s = cfg.image_size;
  return Array.isArray(s) ? [s[0], s[1]] : [s, s];
}

/**
 * ViT-style patch embeddings (transformers' DPTViTEmbeddings and
 * Dinov2Embeddings): a p×p, stride-p patch conv, [CLS] in front, and the
 * position embeddings of the pretraining grid (`positions` patches) resized
 * to the input's grid by `mode` (F.interpolate, align_corners=False).
 */
export class PatchEmbeddings {
  constructor(
    readonly cls_token: Tensor, readonly projection: Conv2d, readonly position_embeddings: Tensor,
    readonly patchSize: number, readonly mode: "bilinear" | "bicubic", readonly model: string,
  ) {}
  static async load(w: WeightView, o: { model: string; hidden: number; patch: number; channels: number; positions: number; mode: "bilinear" | "bicubic" }): Promise<PatchEmbeddings> {
    const { hidden: d, patch: p } = o;
    return new PatchEmbeddings(
      await w.take("cls_token", [1, 1, d]),
      await Conv2d.load(w.sub("patch_embeddings.projection"), { stride: p, inChannels: o.channels, outChannels: d, kernel: p }),
      await w.take("position_embeddings", [1, o.positions + 1, d]),
      p, o.mode, o.model,
    );
  }
  /** pixel values [B, channels, H, W] -> tokens [B, 1 + (H/p)·(W/p), hidden] */
  forward(px: Tensor): Tensor {
    const [, , H, W] = px.shape;
    const gh = Math.floor(H / this.patchSize), gw = Math.floor(W / this.patchSize);
    if (gh < 1 || gw < 1) throw new SsdError("E_BAD_PARAM", `${this.model}: input ${W}x${H} is smaller than one ${this.patchSize}-pixel patch`);
    const conv = this.projection.forward(px);
    const tokens = toTokens(conv);
    conv.dispose();
    return withClsAndPositions(this.cls_token, tokens, resizePosEmbed(this.position_embeddings, gh, gw, this.mode));
  }
}

/** DPTViTEmbeddings: position embeddings resized bilinearly to the input's grid. */
function loadViTEmbeddings(w: WeightView, cfg: DPTConfig): Promise<PatchEmbeddings> {
  const p = cfg.patch_size;
  const [ih, iw] = imageSize(cfg);
  return PatchEmbeddings.load(w, { model: "DPT", hidden: cfg.hidden_size, patch: p, channels: cfg.num_channels, positions: Math.floor(ih / p) * Math.floor(iw / p), mode: "bilinear" });
}

/** DPTViTHybridEmbeddings: BiT backbone; its last map projected to tokens; its first two kept for the neck. */
export class DPTViTHybridEmbeddings {
  constructor(
    readonly backbone: BitBackbone, readonly projection: Conv2d,
    readonly cls_token: Tensor, readonly position_embeddings: Tensor,
    readonly imageSize: [number, number], readonly patchSize: number,
  ) {}
  static async load(w: WeightView, cfg: DPTConfig): Promise<DPTViTHybridEmbeddings> {
    const d = cfg.hidden_size, p = cfg.patch_size;
    const [ih, iw] = imageSize(cfg);
    const n = Math.floor(ih / p) * Math.floor(iw / p);
    const backbone = await BitBackbone.load(w.sub("backbone"), cfg.backbone_config!);
    const featureDim = cfg.backbone_featmap_shape?.[1] ?? backbone.channels[backbone.channels.length - 1];
    return new DPTViTHybridEmbeddings(
      backbone,
      await Conv2d.load(w.sub("projection"), { inChannels: featureDim, outChannels: d, kernel: 1 }),
      await w.take("cls_token", [1, 1, d]),
      await w.take("position_embeddings", [1, n + 1, d]),
      [ih, iw], p,
    );
  }
  /** -> [tokens [B, 1+N, C], [stage map 0, stage map 1]] */
  forward(px: Tensor, trace?: Trace): [Tensor, Tensor[]] {
    const [, , H, W] = px.shape;
    const [ih, iw] = this.imageSize;
    if (H !== ih || W !== iw) {
      throw new SsdError("E_BAD_PARAM", `DPT-hybrid takes exactly its image_size ${iw}x${ih}; got ${W}x${H} (transformers refuses other sizes for the hybrid; use --size ${ih} or leave --size out)`);
    }
    const pos = resizePosEmbed(this.position_embeddings, Math.floor(H / this.patchSize), Math.floor(W / this.patchSize), "bilinear");
    const maps = this.backbone.forward(px, trace);
    const feat = maps[maps.length - 1];
    const proj = this.projection.forward(feat);
    const tokens = toTokens(proj);
    proj.dispose();
    if (tokens.dim(1) !== pos.dim(1) - 1) throw new SsdError("E_SHAPE", `DPT-hybrid: the backbone gives ${tokens.dim(1)} tokens, the position embeddings have ${pos.dim(1) - 1}`);
    const y = withClsAndPositions(this.cls_token, tokens, pos);
    for (let i = 2; i < maps.length - 1; i++) maps[i].dispose();
    feat.dispose();
    return [y, [maps[0], maps[1]]];
  }
}

// ------------------------------------------------------------------ neck

/** DPTReassembleLayer: 1×1 projection, then ×factor transposed conv, identity, or a stride-1/factor 3×3 conv. */
export class DPTReassembleLayer {
  constructor(readonly projection: Conv2d, readonly resize: ConvTranspose2d | Conv2d | null) {}
  static async load(w: WeightView, inChannels: number, channels: number, factor: number): Promise<DPTReassembleLayer> {
    const projection = await Conv2d.load(w.sub("projection"), { inChannels, outChannels: channels, kernel: 1 });
    let resize: ConvTranspose2d | Conv2d | null = null;
    if (factor > 1) {
      if (!Number.isInteger(factor)) throw new SsdError("E_BAD_CONFIG", `reassemble factor ${factor} is not an integer`);
      resize = await ConvTranspose2d.load(w.sub("resize"), channels, factor, factor);
    } else if (factor < 1) {
      resize = await Conv2d.load(w.sub("resize"), { stride: Math.trunc(1 / factor), padding: 1, inChannels: channels, outChannels: channels, kernel: 3 });
    }
    return new DPTReassembleLayer(projection, resize);
  }
  forward(x: Tensor): Tensor {
    const p = this.projection.forward(x);
    if (!this.resize) return p;
    const y = this.resize.forward(p);
    p.dispose();
    return y;
  }
}

/** DPTPreActResidualLayer: x + conv2(act(bn2?(conv1(act(bn1?(x)))))) — BN after each conv when configured. */
export class DPTPreActResidualLayer {
  constructor(readonly convolution1: Conv2d, readonly convolution2: Conv2d, readonly batch_norm1: BatchNorm2d | null, readonly batch_norm2: BatchNorm2d | null) {}
  static async load(w: WeightView, channels: number, useBatchNorm = false, useBias: boolean | null = null): Promise<DPTPreActResidualLayer> {
    const bias = useBias ?? !useBatchNorm;
    const conv = async (n: string) => {
      const c = await Conv2d.load(w.sub(n), { padding: 1, inChannels: channels, outChannels: channels, kernel: 3 });
      if (bias && !c.bias) throw new SsdError("E_MISSING_WEIGHT", `weight '${n}.bias' is missing under the fusion residual unit`);
      return c;
    };
    return new DPTPreActResidualLayer(
      await conv("convolution1"), await conv("convolution2"),
      useBatchNorm ? await BatchNorm2d.load(w.sub("batch_norm1"), channels) : null,
      useBatchNorm ? await BatchNorm2d.load(w.sub("batch_norm2"), channels) : null,
    );
  }
  forward(x: Tensor): Tensor {
    const a = ops.relu(x);
    let h: Tensor;
    if (this.batch_norm1) {
      const c = this.convolution1.forward(a);
      h = this.batch_norm1.forward(c, "relu");
      c.dispose();
    } else h = this.convolution1.forward(a, undefined, "relu");
    a.dispose();
    let y: Tensor;
    if (this.batch_norm2) {
      const c = this.convolution2.forward(h);
      const b = this.batch_norm2.forward(c);
      y = ops.add(b, x);
      c.dispose(); b.dispose();
    } else y = this.convolution2.forward(h, x);
    h.dispose();
    return y;
  }
}

/**
 * DPTFeatureFusionLayer: (+ residual_layer1(skip), the skip bilinearly resized
 * when its shape differs) -> residual_layer2 -> bilinear ×2 (or to `size`,
 * align_corners=True) -> 1×1 projection.
 */
export class DPTFeatureFusionLayer {
  constructor(readonly projection: Conv2d, readonly residual_layer1: DPTPreActResidualLayer, readonly residual_layer2: DPTPreActResidualLayer) {}
  static async load(w: WeightView, channels: number, useBatchNorm = false, useBias: boolean | null = null): Promise<DPTFeatureFusionLayer> {
    return new DPTFeatureFusionLayer(
      await Conv2d.load(w.sub("projection"), { inChannels: channels, outChannels: channels, kernel: 1 }),
      await DPTPreActResidualLayer.load(w.sub("residual_layer1"), channels, useBatchNorm, useBias),
      await DPTPreActResidualLayer.load(w.sub("residual_layer2"), channels, useBatchNorm, useBias),
    );
  }
  forward(hidden: Tensor, residual?: Tensor, size?: [number, number]): Tensor {
    let h = hidden;
    if (residual) {
      let r = residual;
      if (r.dim(2) !== h.dim(2) || r.dim(3) !== h.dim(3)) r = interp(residual, [h.dim(2), h.dim(3)], "bilinear", false);
      const u = this.residual_layer1.forward(r);
      if (r !== residual) r.dispose();
      h = ops.add(hidden, u);
      u.dispose();
    }
    const h2 = this.residual_layer2.forward(h);
    if (h !== hidden) h.dispose();
    const up = interp(h2, size ?? [h2.dim(2) * 2, h2.dim(3) * 2], "bilinear", true);
    h2.dispose();
    const y = this.projection.forward(up);
    up.dispose();
    return y;
  }
}

export class DPTReassembleStage {
  constructor(
    readonly config: DPTConfig,
    readonly layers: (DPTReassembleLayer | null)[],
    readonly readout_projects: ({ w1: Tensor; w2: Tensor; bias: Tensor } | null)[],
    readonly act: Activation,
  ) {}
  static async load(w: WeightView, cfg: DPTConfig): Promise<DPTReassembleStage> {
    const d = cfg.hidden_size;
    const layers: (DPTReassembleLayer | null)[] = [];
    const readouts: ({ w1: Tensor; w2: Tensor; bias: Tensor } | null)[] = [];
    const e = await getEngine();
    for (let i = 0; i < cfg.neck_hidden_sizes.length; i++) {
      // the hybrid's first two stages are BiT maps passed through (nn.Identity)
      const identity = cfg.is_hybrid && i <= 1;
      layers.push(identity ? null : await DPTReassembleLayer.load(w.sub(`layers.${i}`), d, cfg.neck_hidden_sizes[i], cfg.reassemble_factors[i]));
      if (cfg.readout_type === "project" && !identity) {
        // Linear(2C -> C) on cat(tokens, cls): split once at load into the token half and the
        // readout half, so the [CLS] term is computed once per image instead of per token.
        const rw = w.sub(`readout_projects.${i}.0`);
        const full = await rw.takeHost("weight", [d, 2 * d]);
        const w1 = new Float32Array(d * d), w2 = new Float32Array(d * d);
        for (let o = 0; o < d; o++) {
          w1.set(full.subarray(o * 2 * d, o * 2 * d + d), o * d);
          w2.set(full.subarray(o * 2 * d + d, (o + 1) * 2 * d), o * d);
        }
        const bias = await rw.takeHost("bias", [d]);
        readouts.push({
          w1: e.upload(w1, [d, d], "f32", { persistent: true }),
          w2: e.upload(w2, [d, d], "f32", { persistent: true }),
          bias: e.upload(bias, [d], "f32", { persistent: true }),
        });
      } else readouts.push(null);
    }
    return new DPTReassembleStage(cfg, layers, readouts, activationFromConfig(cfg.hidden_act));
  }
  /** hidden: [B, 1+N, C] tokens (or, for ignored stages, maps); grid = the patch grid */
  forward(hidden: Tensor[], gh: number, gw: number): Tensor[] {
    return hidden.map((x, i) => {
      if (this.config.neck_ignore_stages.includes(i)) return x;
      const [B, n1] = x.shape;
      if (n1 - 1 !== gh * gw) throw new SsdError("E_SHAPE", `DPT reassemble: ${n1 - 1} tokens for a ${gh}x${gw} grid`);
      const cls = ops.slice(x, 1, 0, 1);
      const tok = ops.slice(x, 1, 1, n1);
      let t: Tensor;
      const ro = this.readout_projects[i];
      if (this.config.readout_type === "project" && ro) {
        const a = ops.linear(tok, ro.w1);
        const b = ops.linear(cls, ro.w2, ro.bias);
        t = ops.add(a, b, this.act);
        a.dispose(); b.dispose();
      } else if (this.config.readout_type === "add") {
        t = ops.add(tok, cls);
      } else t = ops.copy(tok);
      cls.dispose(); tok.dispose();
      const map = fromTokens(t, gh, gw);
      t.dispose();
      const layer = this.layers[i];
      if (!layer) return map;
      const y = layer.forward(map);
      map.dispose();
      if (y.dim(0) !== B || y.dim(1) !== this.config.neck_hidden_sizes[i]) throw new SsdError("E_SHAPE", `DPT reassemble ${i}: output [${y.shape}]`);
      return y;
    });
  }
}

export class DPTNeck {
  constructor(readonly reassemble_stage: DPTReassembleStage, readonly convs: Conv2d[], readonly fusion: DPTFeatureFusionLayer[]) {}
  static async load(w: WeightView, cfg: DPTConfig): Promise<DPTNeck> {
    const F = cfg.fusion_hidden_size;
    const convs: Conv2d[] = [];
    for (let i = 0; i < cfg.neck_hidden_sizes.length; i++) {
      convs.push(await Conv2d.load(w.sub(`convs.${i}`), { padding: 1, inChannels: cfg.neck_hidden_sizes[i], outChannels: F, kernel: 3 }));
    }
    const fusion: DPTFeatureFusionLayer[] = [];
    for (let i = 0; i < cfg.neck_hidden_sizes.length; i++) {
      fusion.push(await DPTFeatureFusionLayer.load(w.sub(`fusion_stage.layers.${i}`), F, cfg.use_batch_norm_in_fusion_residual, cfg.use_bias_in_fusion_residual));
    }
    return new DPTNeck(await DPTReassembleStage.load(w.sub("reassemble_stage"), cfg), convs, fusion);
  }
  forward(hidden: Tensor[], gh: number, gw: number, trace?: Trace): Tensor[] {
    const maps = this.reassemble_stage.forward(hidden, gh, gw);
    maps.forEach((m, i) => trace?.(`reassemble.${i}`, m));
    const features = maps.map((m, i) => {
      const f = this.convs[i].forward(m);
      trace?.(`neck.convs.${i}`, f);
      return f;
    });
    for (let i = 0; i < maps.length; i++) if (!hidden.includes(maps[i])) maps[i].dispose();
    return fuse(this.fusion, features, false, trace);
  }
}

/**
 * The fusion stage: deepest map first, each layer fed the previous fused map and
 * the next skip. DPT upsamples every layer ×2; Depth Anything (`toNextSize`)
 * upsamples layers 0..n-2 to the next map's size and the last one ×2.
 */
export function fuse(layers: DPTFeatureFusionLayer[], features: Tensor[], toNextSize: boolean, trace?: Trace): Tensor[] {
  const rev = features.slice().reverse();
  const out: Tensor[] = [];
  let fused: Tensor | null = null;
  rev.forEach((f, idx) => {
    const size: [number, number] | undefined = toNextSize && idx !== rev.length - 1 ? [rev[idx + 1].dim(2), rev[idx + 1].dim(3)] : undefined;
    fused = fused === null ? layers[idx].forward(f, undefined, size) : layers[idx].forward(fused, f, size);
    trace?.(`fusion.${idx}`, fused);
    out.push(fused);
  });
  for (const f of features) f.dispose();
  return out;
}

export class DPTDepthEstimationHead {
  constructor(readonly projection: Conv2d | null, readonly conv0: Conv2d, readonly conv2: Conv2d, readonly conv4: Conv2d, readonly headInIndex: number) {}
  static async load(w: WeightView, cfg: DPTConfig): Promise<DPTDepthEstimationHead> {
    const F = cfg.fusion_hidden_size;
    const half = Math.floor(F / 2);
    return new DPTDepthEstimationHead(
      cfg.add_projection ? await Conv2d.load(w.sub("projection"), { padding: 1, inChannels: 256, outChannels: 256, kernel: 3 }) : null,
      await Conv2d.load(w.sub("head.0"), { padding: 1, inChannels: F, outChannels: half, kernel: 3 }),
      await Conv2d.load(w.sub("head.2"), { padding: 1, inChannels: half, outChannels: 32, kernel: 3 }),
      await Conv2d.load(w.sub("head.4"), { inChannels: 32, outChannels: 1, kernel: 1 }),
      cfg.head_in_index,
    );
  }
  /** fused maps -> predicted depth [B, H, W] */
  forward(fused: Tensor[], trace?: Trace): Tensor {
    const i = this.headInIndex < 0 ? fused.length + this.headInIndex : this.headInIndex;
    let x = fused[i];
    if (!x) throw new SsdError("E_BAD_CONFIG", `head_in_index ${this.headInIndex} for ${fused.length} fused maps`);
    if (this.projection) x = this.projection.forward(x, undefined, "relu");
    const c0 = this.conv0.forward(x);
    if (x !== fused[i]) x.dispose();
    trace?.("head.conv0", c0);
    const up = interp(c0, [c0.dim(2) * 2, c0.dim(3) * 2], "bilinear", true);
    c0.dispose();
    const c2 = this.conv2.forward(up, undefined, "relu");
    up.dispose();
    const c4 = this.conv4.forward(c2, undefined, "relu");
    c2.dispose();
    const y = c4.reshape([c4.dim(0), c4.dim(2), c4.dim(3)]);
    c4.dispose();
    return y;
  }
}

// ------------------------------------------------------------------ model

export interface DepthOutput {
  /** [B, H, W] */
  predictedDepth: Tensor;
  /** embeddings, then the output of each encoder layer [B, 1+N, C] (only with outputHiddenStates) */
  hiddenStates?: Tensor[];
}

export interface DepthForwardOptions {
  trace?: Trace;
  outputHiddenStates?: boolean;
}

export class DPTForDepthEstimation {
  constructor(
    readonly config: DPTConfig,
    readonly embeddings: PatchEmbeddings | DPTViTHybridEmbeddings,
    readonly layers: DPTViTLayer[],
    readonly neck: DPTNeck,
    readonly head: DPTDepthEstimationHead,
  ) {}

  static async load(w: WeightView, cfg: DPTConfig): Promise<DPTForDepthEstimation> {
    const dpt = w.sub("dpt");
    const embeddings = cfg.is_hybrid ? await DPTViTHybridEmbeddings.load(dpt.sub("embeddings"), cfg) : await loadViTEmbeddings(dpt.sub("embeddings"), cfg);
    const layers: DPTViTLayer[] = [];
    for (let i = 0; i < cfg.num_hidden_layers; i++) layers.push(await DPTViTLayer.load(dpt.sub(`encoder.layer.${i}`), cfg));
    // DPTModel's final layernorm and pooler feed nothing the depth head uses.
    dpt.skip("layernorm.");
    dpt.skip("pooler.");
    // segmentation-only heads a checkpoint may carry
    w.skip("auxiliary_head.");
    return new DPTForDepthEstimation(cfg, embeddings, layers, await DPTNeck.load(w.sub("neck"), cfg), await DPTDepthEstimationHead.load(w.sub("head"), cfg));
  }

  /** Loads a transformers folder (config.json + safetensors). */
  static async fromPretrained(dir: string, opts: WeightStoreOptions & { warn?: (m: string) => void } = {}): Promise<DPTForDepthEstimation> {
    return WeightStore.loadModel(dir, parseDPTConfig, (store, cfg) => DPTForDepthEstimation.load(store, cfg), { label: opts.label ?? "depth model", ...opts });
  }


  /** The only input size the model takes ([H, W]), or null when it resizes its position embeddings. */
  get fixedInputSize(): [number, number] | null {
    return this.config.is_hybrid ? imageSize(this.config) : null;
  }

  /** pixel_values [B, 3, H, W] -> predicted_depth [B, 2·(H/p)·…] (the head doubles the last fused map) */
  forward(px: Tensor, opts: DepthForwardOptions = {}): DepthOutput {
    const cfg = this.config;
    const { trace } = opts;
    if (px.rank !== 4 || px.dim(1) !== cfg.num_channels) throw new SsdError("E_SHAPE", `DPT: pixel_values must be [B, ${cfg.num_channels}, H, W], got [${px.shape}]`);
    let h: Tensor;
    let bitMaps: Tensor[] = [];
    if (this.embeddings instanceof DPTViTHybridEmbeddings) [h, bitMaps] = this.embeddings.forward(px, trace);
    else h = this.embeddings.forward(px);
    const hidden: Tensor[] = [h];
    for (const layer of this.layers) {
      h = layer.forward(h);
      hidden.push(h);
    }
    hidden.forEach((t, i) => trace?.(`hidden_states.${i}`, t));
    const after = hidden.slice(1);
    const picked = cfg.is_hybrid
      ? [...bitMaps, ...after.filter((_, idx) => cfg.backbone_out_indices.slice(2).includes(idx))]
      : after.filter((_, idx) => cfg.backbone_out_indices.includes(idx));
    if (picked.length !== cfg.neck_hidden_sizes.length) throw new SsdError("E_BAD_CONFIG", `DPT: backbone_out_indices ${JSON.stringify(cfg.backbone_out_indices)} pick ${picked.length} of ${after.length} hidden states for ${cfg.neck_hidden_sizes.length} neck stages`);
    // the patch grid: the hybrid's token grid is square (it takes only image_size)
    const n = hidden[0].dim(1) - 1;
    let gh: number, gw: number;
    if (cfg.is_hybrid) gh = gw = Math.floor(Math.sqrt(n) + 1e-9);
    else { gh = Math.floor(px.dim(2) / cfg.patch_size); gw = Math.floor(px.dim(3) / cfg.patch_size); }
    const fused = this.neck.forward(picked, gh, gw, trace);
    for (const m of bitMaps) m.dispose();
    const predictedDepth = this.head.forward(fused, trace);
    for (const f of fused) f.dispose();
    if (opts.outputHiddenStates) return { predictedDepth, hiddenStates: hidden };
    for (const t of hidden) t.dispose();
    return { predictedDepth };
  }
}
