// Depth Anything (V1/V2) as transformers defines it (modeling_depth_anything.py, modeling_dinov2.py):
//
//   DepthAnythingForDepthEstimation
//     backbone              Dinov2Backbone: patch conv + [CLS] + position embeddings (bicubic-resized
//                           to the grid), pre-LN blocks with layer scale; feature maps =
//                           layernorm(hidden_states[i]) for i in out_indices, kept as tokens
//     neck.reassemble_stage drop [CLS] -> tokens to a map -> 1×1 projection -> resize
//     neck.convs.i          3×3 to fusion_hidden_size (no bias)
//     neck.fusion_stage     as DPT's, but layers 0..n-2 upsample to the next map's size
//     head                  conv1 (F -> F/2) -> bilinear to the patch grid × patch_size
//                           (align_corners) -> conv2 -> ReLU -> conv3 -> ReLU (relative) or
//                           sigmoid (metric), × max_depth
//
// Layout as `depth-anything/Depth-Anything-V2-Small-hf`; sizes from config.json.

import type { Tensor } from "../../engine/tensor.ts";
import * as ops from "../../engine/ops/index.ts";
import { activationFromConfig, type Activation } from "../../engine/ops/elementwise.ts";
import { SsdError } from "../../engine/errors.ts";
import { Conv2d, LayerNorm, Linear, fromTokens, type Attention } from "../nn.ts";
import { WeightStore, type WeightStoreOptions, type WeightView } from "../../weights/store.ts";
import {
  DPTFeatureFusionLayer, DPTReassembleLayer, fuse, loadViTAttention, PatchEmbeddings,
  type DepthForwardOptions, type DepthOutput, type Trace,
} from "./dpt.ts";

// ------------------------------------------------------------------ config

export interface Dinov2Config {
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  mlp_ratio: number;
  hidden_act: string;
  layer_norm_eps: number;
  image_size: number;
  patch_size: number;
  num_channels: number;
  qkv_bias: boolean;
  layerscale_value: number;
  use_swiglu_ffn: boolean;
  apply_layernorm: boolean;
  out_indices: number[];
}

export interface DepthAnythingConfig {
  model_type: "depth_anything";
  backbone_config: Dinov2Config;
  patch_size: number;
  reassemble_hidden_size: number;
  reassemble_factors: number[];
  neck_hidden_sizes: number[];
  fusion_hidden_size: number;
  head_in_index: number;
  head_hidden_size: number;
  depth_estimation_type: "relative" | "metric";
  max_depth: number;
}

function bad(source: string, msg: string): SsdError {
  return new SsdError("E_BAD_CONFIG", `${source}: ${msg}`);
}

/** Dinov2Config with transformers' defaults; out_indices from out_features when absent. */
export function parseDinov2Config(raw: Record<string, any>, source: string): Dinov2Config {
  const c: any = {
    hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, mlp_ratio: 4, hidden_act: "gelu", layer_norm_eps: 1e-6,
    image_size: 224, patch_size: 14, num_channels: 3, qkv_bias: true, layerscale_value: 1.0, use_swiglu_ffn: false, apply_layernorm: true,
    ...raw,
  };
  if (raw.model_type !== undefined && raw.model_type !== "dinov2") throw bad(source, `Depth Anything needs a DINOv2 backbone, got '${raw.model_type}'`);
  for (const k of ["hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "num_channels", "image_size"]) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) throw bad(source, `backbone_config '${k}' must be a positive integer, got ${JSON.stringify(c[k])}`);
  }
  if (c.hidden_size % c.num_attention_heads) throw bad(source, `backbone hidden_size ${c.hidden_size} is not divisible by ${c.num_attention_heads} heads`);
  const stageNames: string[] = raw.stage_names ?? ["stem", ...Array.from({ length: c.num_hidden_layers }, (_, i) => `stage${i + 1}`)];
  let out: number[] | undefined = raw.out_indices;
  if (!out && raw.out_features) out = (raw.out_features as string[]).map((f) => stageNames.indexOf(f));
  if (!out) out = [stageNames.length - 1];
  if (out.some((i) => !Number.isInteger(i) || i < 0 || i > c.num_hidden_layers)) throw bad(source, `backbone out_indices ${JSON.stringify(out)} name no DINOv2 stage`);
  activationFromConfig(String(c.hidden_act));
  return { ...c, out_indices: out };
}

export function parseDepthAnythingConfig(raw: Record<string, any>, source = "config.json"): DepthAnythingConfig {
  if (raw.model_type !== "depth_anything") throw bad(source, `model_type '${raw.model_type}' is not 'depth_anything'`);
  if (!raw.backbone_config) throw bad(source, "no backbone_config (a named backbone without its config is not supported; the -hf checkpoints carry it)");
  const bb = parseDinov2Config(raw.backbone_config, source);
  const cfg: any = {
    patch_size: 14, reassemble_hidden_size: 384, reassemble_factors: [4, 2, 1, 0.5], neck_hidden_sizes: [48, 96, 192, 384],
    fusion_hidden_size: 64, head_in_index: -1, head_hidden_size: 32, depth_estimation_type: "relative", max_depth: null,
    ...raw, backbone_config: bb,
  };
  if (cfg.neck_hidden_sizes.length !== cfg.reassemble_factors.length) throw bad(source, "neck_hidden_sizes and reassemble_factors differ in length");
  if (bb.out_indices.length !== cfg.neck_hidden_sizes.length) throw bad(source, `the backbone gives ${bb.out_indices.length} feature maps for ${cfg.neck_hidden_sizes.length} neck stages`);
  if (cfg.depth_estimation_type !== "relative" && cfg.depth_estimation_type !== "metric") throw bad(source, `depth_estimation_type '${cfg.depth_estimation_type}' is not relative or metric`);
  // DepthAnythingConfig: max_depth defaults to 1 (relative) / 20 (metric)
  if (cfg.max_depth === null || cfg.max_depth === undefined) cfg.max_depth = cfg.depth_estimation_type === "metric" ? 20 : 1;
  return cfg as DepthAnythingConfig;
}

// ------------------------------------------------------------------ DINOv2 backbone

/**
 * Dinov2Embeddings: patch conv + [CLS] + position embeddings, resized as
 * transformers' Dinov2Embeddings.interpolate_pos_encoding does in the version
 * the fixtures record: F.interpolate(size=(H//p, W//p), bicubic,
 * align_corners=False) in float32. Older releases passed
 * scale_factor=((H//p + 0.1)/√N, ...) instead, which moves the sampling points
 * slightly. The library skips the resize when the token count matches and
 * H == W; an equal-size bicubic resize is an identity, so skipping whenever the
 * grid is unchanged (resizePosEmbed) gives the same values.
 */
async function loadDinov2Embeddings(w: WeightView, c: Dinov2Config): Promise<PatchEmbeddings> {
  // mask_token is only used for masked-image pre-training
  if (w.has("mask_token")) w.skip("mask_token");
  const p = c.patch_size;
  return PatchEmbeddings.load(w, { model: "Depth Anything", hidden: c.hidden_size, patch: p, channels: c.num_channels, positions: Math.floor(c.image_size / p) ** 2, mode: "bicubic" });
}

/** Dinov2MLP (fc1, act, fc2) or Dinov2SwiGLUFFN (weights_in, silu(x1)·x2, weights_out). */
class Dinov2Mlp {
  constructor(readonly fc1: Linear, readonly fc2: Linear, readonly act: Activation, readonly swiglu: boolean) {}
  static async load(w: WeightView, c: Dinov2Config): Promise<Dinov2Mlp> {
    const d = c.hidden_size;
    let hidden = Math.trunc(d * c.mlp_ratio);
    if (c.use_swiglu_ffn) {
      hidden = Math.floor((Math.trunc(hidden * 2 / 3) + 7) / 8) * 8;
      return new Dinov2Mlp(await Linear.load(w.sub("weights_in"), d, 2 * hidden), await Linear.load(w.sub("weights_out"), hidden, d), "silu", true);
    }
    return new Dinov2Mlp(await Linear.load(w.sub("fc1"), d, hidden), await Linear.load(w.sub("fc2"), hidden, d), activationFromConfig(c.hidden_act), false);
  }
  forward(x: Tensor): Tensor {
    if (!this.swiglu) {
      const h = this.fc1.forward(x, this.act);
      const y = this.fc2.forward(h);
      h.dispose();
      return y;
    }
    const h = this.fc1.forward(x);
    const half = h.dim(-1) / 2;
    const x1 = ops.slice(h, -1, 0, half), x2 = ops.slice(h, -1, half, 2 * half);
    h.dispose();
    const s = ops.silu(x1);
    const g = ops.mul(s, x2);
    x1.dispose(); x2.dispose(); s.dispose();
    const y = this.fc2.forward(g);
    g.dispose();
    return y;
  }
}

/** Dinov2Layer: h += λ1·attn(norm1(h)); h += λ2·mlp(norm2(h)). */
export class Dinov2Layer {
  constructor(
    readonly norm1: LayerNorm, readonly attention: Attention, readonly lambda1: Tensor,
    readonly norm2: LayerNorm, readonly mlp: Dinov2Mlp, readonly lambda2: Tensor,
  ) {}
  static async load(w: WeightView, c: Dinov2Config): Promise<Dinov2Layer> {
    const d = c.hidden_size;
    return new Dinov2Layer(
      await LayerNorm.load(w.sub("norm1"), c.layer_norm_eps, d),
      await loadViTAttention(w.sub("attention"), d, c.num_attention_heads),
      await w.take("layer_scale1.lambda1", [d]),
      await LayerNorm.load(w.sub("norm2"), c.layer_norm_eps, d),
      await Dinov2Mlp.load(w.sub("mlp"), c),
      await w.take("layer_scale2.lambda1", [d]),
    );
  }
  forward(h: Tensor): Tensor {
    let n = this.norm1.forward(h);
    const a = this.attention.forward(n);
    n.dispose();
    let s = ops.mul(a, this.lambda1);
    a.dispose();
    const h1 = ops.add(s, h);
    s.dispose();
    n = this.norm2.forward(h1);
    const m = this.mlp.forward(n);
    n.dispose();
    s = ops.mul(m, this.lambda2);
    m.dispose();
    const y = ops.add(s, h1);
    s.dispose(); h1.dispose();
    return y;
  }
}

/** Dinov2Backbone: feature maps = layernorm(hidden_states[i]) for i in out_indices, as tokens [B, 1+N, C]. */
export class Dinov2Backbone {
  constructor(readonly config: Dinov2Config, readonly embeddings: PatchEmbeddings, readonly layers: Dinov2Layer[], readonly layernorm: LayerNorm) {}
  static async load(w: WeightView, c: Dinov2Config): Promise<Dinov2Backbone> {
    const layers: Dinov2Layer[] = [];
    for (let i = 0; i < c.num_hidden_layers; i++) layers.push(await Dinov2Layer.load(w.sub(`encoder.layer.${i}`), c));
    return new Dinov2Backbone(c, await loadDinov2Embeddings(w.sub("embeddings"), c), layers, await LayerNorm.load(w.sub("layernorm"), c.layer_norm_eps, c.hidden_size));
  }
  forward(px: Tensor, trace?: Trace): { featureMaps: Tensor[]; hiddenStates: Tensor[] } {
    let h = this.embeddings.forward(px);
    trace?.("backbone.embeddings", h);
    const hidden: Tensor[] = [h];
    for (const layer of this.layers) {
      h = layer.forward(h);
      hidden.push(h);
    }
    const featureMaps = this.config.out_indices.map((i) => (this.config.apply_layernorm ? this.layernorm.forward(hidden[i]) : ops.copy(hidden[i])));
    featureMaps.forEach((f, i) => trace?.(`feature_maps.${i}`, f));
    return { featureMaps, hiddenStates: hidden };
  }
}

// ------------------------------------------------------------------ neck and head

export class DepthAnythingNeck {
  constructor(readonly layers: DPTReassembleLayer[], readonly convs: Conv2d[], readonly fusion: DPTFeatureFusionLayer[]) {}
  static async load(w: WeightView, c: DepthAnythingConfig): Promise<DepthAnythingNeck> {
    const F = c.fusion_hidden_size;
    const layers: DPTReassembleLayer[] = [], convs: Conv2d[] = [], fusion: DPTFeatureFusionLayer[] = [];
    for (let i = 0; i < c.neck_hidden_sizes.length; i++) {
      layers.push(await DPTReassembleLayer.load(w.sub(`reassemble_stage.layers.${i}`), c.reassemble_hidden_size, c.neck_hidden_sizes[i], c.reassemble_factors[i]));
      convs.push(await Conv2d.load(w.sub(`convs.${i}`), { padding: 1, inChannels: c.neck_hidden_sizes[i], outChannels: F, kernel: 3 }));
      fusion.push(await DPTFeatureFusionLayer.load(w.sub(`fusion_stage.layers.${i}`), F, false, true));
    }
    return new DepthAnythingNeck(layers, convs, fusion);
  }
  /** feature maps [B, 1+N, C] -> fused maps, deepest first */
  forward(featureMaps: Tensor[], gh: number, gw: number, trace?: Trace): Tensor[] {
    const features = featureMaps.map((x, i) => {
      const n1 = x.dim(1);
      if (n1 - 1 !== gh * gw) throw new SsdError("E_SHAPE", `Depth Anything reassemble: ${n1 - 1} tokens for a ${gh}x${gw} grid`);
      const tok = ops.slice(x, 1, 1, n1);
      const map = fromTokens(tok, gh, gw);
      tok.dispose();
      const r = this.layers[i].forward(map);
      map.dispose();
      trace?.(`reassemble.${i}`, r);
      const f = this.convs[i].forward(r);
      r.dispose();
      trace?.(`neck.convs.${i}`, f);
      return f;
    });
    return fuse(this.fusion, features, true, trace);
  }
}

export class DepthAnythingDepthEstimationHead {
  constructor(
    readonly conv1: Conv2d, readonly conv2: Conv2d, readonly conv3: Conv2d,
    readonly config: DepthAnythingConfig,
  ) {}
  static async load(w: WeightView, c: DepthAnythingConfig): Promise<DepthAnythingDepthEstimationHead> {
    const F = c.fusion_hidden_size, half = Math.floor(F / 2);
    return new DepthAnythingDepthEstimationHead(
      await Conv2d.load(w.sub("conv1"), { padding: 1, inChannels: F, outChannels: half, kernel: 3 }),
      await Conv2d.load(w.sub("conv2"), { padding: 1, inChannels: half, outChannels: c.head_hidden_size, kernel: 3 }),
      await Conv2d.load(w.sub("conv3"), { inChannels: c.head_hidden_size, outChannels: 1, kernel: 1 }),
      c,
    );
  }
  forward(fused: Tensor[], gh: number, gw: number, trace?: Trace): Tensor {
    const c = this.config;
    const idx = c.head_in_index < 0 ? fused.length + c.head_in_index : c.head_in_index;
    const x = fused[idx];
    if (!x) throw new SsdError("E_BAD_CONFIG", `head_in_index ${c.head_in_index} for ${fused.length} fused maps`);
    const c1 = this.conv1.forward(x);
    trace?.("head.conv1", c1);
    const up = ops.interpolate(c1, { size: [gh * c.patch_size, gw * c.patch_size], mode: "bilinear", alignCorners: true });
    c1.dispose();
    const c2 = this.conv2.forward(up, undefined, "relu");
    up.dispose();
    let y: Tensor;
    if (c.depth_estimation_type === "relative") {
      y = this.conv3.forward(c2, undefined, "relu");
      if (c.max_depth !== 1) {
        const s = ops.scale(y, c.max_depth);
        y.dispose();
        y = s;
      }
    } else {
      const logits = this.conv3.forward(c2);
      y = sigmoidTimes(logits, c.max_depth);
      logits.dispose();
    }
    c2.dispose();
    const out = y.reshape([y.dim(0), y.dim(2), y.dim(3)]);
    y.dispose();
    return out;
  }
}

/**
 * sigmoid(x)·m from existing ops: 1 / (1 + e^(−x)) with e^(−x) = pow(e, −x)
 * (the op library has no sigmoid; only metric checkpoints use it).
 */
function sigmoidTimes(x: Tensor, m: number): Tensor {
  const e = x.engine;
  const base = e.upload(new Float32Array([Math.E]), [1, 1, 1, 1]);
  const num = e.upload(new Float32Array([m]), [1, 1, 1, 1]);
  const neg = ops.scale(x, -1);
  const ex = ops.pow(base, neg);
  const den = ops.scale(ex, 1, 1);
  const y = ops.div(num, den);
  base.dispose(); num.dispose(); neg.dispose(); ex.dispose(); den.dispose();
  return y;
}

// ------------------------------------------------------------------ model

export class DepthAnythingForDepthEstimation {
  constructor(
    readonly config: DepthAnythingConfig,
    readonly backbone: Dinov2Backbone,
    readonly neck: DepthAnythingNeck,
    readonly head: DepthAnythingDepthEstimationHead,
  ) {}

  static async load(w: WeightView, cfg: DepthAnythingConfig): Promise<DepthAnythingForDepthEstimation> {
    return new DepthAnythingForDepthEstimation(
      cfg,
      await Dinov2Backbone.load(w.sub("backbone"), cfg.backbone_config),
      await DepthAnythingNeck.load(w.sub("neck"), cfg),
      await DepthAnythingDepthEstimationHead.load(w.sub("head"), cfg),
    );
  }

  static async fromPretrained(dir: string, opts: WeightStoreOptions & { warn?: (m: string) => void } = {}): Promise<DepthAnythingForDepthEstimation> {
    return WeightStore.loadModel(dir, parseDepthAnythingConfig, (store, cfg) => DepthAnythingForDepthEstimation.load(store, cfg), { label: opts.label ?? "depth model", ...opts });
  }


  /** Depth Anything resizes its position embeddings: any size of at least one patch. */
  get fixedInputSize(): [number, number] | null {
    return null;
  }

  /** pixel_values [B, 3, H, W] -> predicted_depth [B, (H/p)·p, (W/p)·p] */
  forward(px: Tensor, opts: DepthForwardOptions = {}): DepthOutput {
    const bb = this.config.backbone_config;
    if (px.rank !== 4 || px.dim(1) !== bb.num_channels) throw new SsdError("E_SHAPE", `Depth Anything: pixel_values must be [B, ${bb.num_channels}, H, W], got [${px.shape}]`);
    const { featureMaps, hiddenStates } = this.backbone.forward(px, opts.trace);
    // DepthAnythingForDepthEstimation uses its own patch_size for the grid
    const p = this.config.patch_size;
    const gh = Math.floor(px.dim(2) / p), gw = Math.floor(px.dim(3) / p);
    const fused = this.neck.forward(featureMaps, gh, gw, opts.trace);
    for (const f of featureMaps) f.dispose();
    const predictedDepth = this.head.forward(fused, gh, gw, opts.trace);
    for (const f of fused) f.dispose();
    if (opts.outputHiddenStates) return { predictedDepth, hiddenStates };
    for (const h of hiddenStates) h.dispose();
    return { predictedDepth };
  }
}
