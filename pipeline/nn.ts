// Building blocks shared by every model. Each module has
// `static async load(w, config...)` reading its weights from a prefix view whose key
// names mirror diffusers/transformers (`w.sub("to_q").take("weight")`), and a
// `forward` in PyTorch shape order that only encodes GPU work (no readback), so a
// whole denoising step can be recorded in one go. Nothing here touches a GPUBuffer.
//
// Ownership: a forward never disposes its inputs; it returns a fresh tensor and
// disposes its own temporaries.

import type { Tensor } from "../engine/tensor.ts";
import * as ops from "../engine/ops/index.ts";
import type { Activation } from "../engine/ops/elementwise.ts";
import { SsdError } from "../engine/errors.ts";
import { fma32 } from "./rng.ts";

/** What a module needs from weights/store.ts's WeightStore (a prefix view). */
export interface Weights {
  sub(prefix: string): Weights;
  /** the tensor named `prefix.name`; E_MISSING_WEIGHT / E_SHAPE when absent or of another shape */
  take(name: string, expectedShape?: readonly number[]): Promise<Tensor> | Tensor;
  has(name: string): boolean;
}

/** Optional hook a model calls with named intermediates (diffusers module names); tests compare them. */
export type Trace = (name: string, t: Tensor) => void;

export class Linear {
  constructor(readonly weight: Tensor, readonly bias: Tensor | undefined) {}
  static async load(w: Weights, inFeatures?: number, outFeatures?: number, bias = true): Promise<Linear> {
    const weight = await w.take("weight", inFeatures && outFeatures ? [outFeatures, inFeatures] : undefined);
    return new Linear(weight, bias && w.has("bias") ? await w.take("bias", [weight.shape[0]]) : undefined);
  }
  get outFeatures(): number {
    return this.weight.shape[0];
  }
  get inFeatures(): number {
    return this.weight.shape[1];
  }
  forward(x: Tensor, act?: Activation, residual?: Tensor): Tensor {
    return ops.linear(x, this.weight, this.bias, act, residual);
  }
}

export class Conv2d {
  constructor(readonly weight: Tensor, readonly bias: Tensor | undefined, readonly stride: number, readonly padding: number) {}
  /** PyTorch Conv2d; kernel size comes from the weight's shape (checked against `kernel` when given). */
  static async load(w: Weights, opts: { stride?: number; padding?: number; inChannels?: number; outChannels?: number; kernel?: number } = {}): Promise<Conv2d> {
    const { inChannels: i, outChannels: o, kernel: k } = opts;
    const expected = i !== undefined && o !== undefined && k !== undefined ? [o, i, k, k] : undefined;
    const weight = await w.take("weight", expected);
    return new Conv2d(weight, w.has("bias") ? await w.take("bias", [weight.shape[0]]) : undefined, opts.stride ?? 1, opts.padding ?? 0);
  }
  get outChannels(): number {
    return this.weight.shape[0];
  }
  get inChannels(): number {
    return this.weight.shape[1];
  }
  /** y = act(conv(x) + bias) + residual */
  forward(x: Tensor, residual?: Tensor, act?: Activation): Tensor {
    return ops.conv2d(x, this.weight, { bias: this.bias, stride: this.stride, padding: this.padding, residual, act });
  }
}

export class GroupNorm {
  constructor(readonly groups: number, readonly eps: number, readonly weight?: Tensor, readonly bias?: Tensor) {}
  static async load(w: Weights, groups: number, eps: number, channels?: number): Promise<GroupNorm> {
    const shape = channels ? [channels] : undefined;
    if (channels !== undefined && channels % groups !== 0) {
      throw new SsdError("E_BAD_CONFIG", `GroupNorm: ${channels} channels do not split into ${groups} groups (norm_num_groups in config.json)`);
    }
    return new GroupNorm(groups, eps, w.has("weight") ? await w.take("weight", shape) : undefined, w.has("bias") ? await w.take("bias", shape) : undefined);
  }
  forward(x: Tensor, act: Activation = "none"): Tensor {
    return ops.groupNorm(x, this.groups, this.weight, this.bias, this.eps, act);
  }
}

export class LayerNorm {
  constructor(readonly eps: number, readonly weight?: Tensor, readonly bias?: Tensor) {}
  static async load(w: Weights, eps: number, dim?: number): Promise<LayerNorm> {
    return new LayerNorm(eps, w.has("weight") ? await w.take("weight", dim ? [dim] : undefined) : undefined, w.has("bias") ? await w.take("bias", dim ? [dim] : undefined) : undefined);
  }
  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/**
 * Multi-head attention with diffusers' names (to_q, to_k, to_v, to_out.0);
 * transformers-style models pass their own names through `names`.
 * x [B, N, C], context [B, M, Cc] (cross-attention) -> [B, N, C].
 */
export class Attention {
  constructor(
    readonly heads: number,
    readonly q: Linear,
    readonly k: Linear,
    readonly v: Linear,
    readonly out: Linear,
    readonly scale?: number,
  ) {}
  /** `dims` (query width, context width, inner width) checks the weights' shapes when given. */
  static async load(w: Weights, heads: number, names = { q: "to_q", k: "to_k", v: "to_v", out: "to_out.0" }, scale?: number, dims?: { query: number; context?: number; inner?: number }): Promise<Attention> {
    const d = dims?.query, ctx = dims?.context ?? d, inner = dims?.inner ?? d;
    const q = await Linear.load(w.sub(names.q), d, inner);
    const k = await Linear.load(w.sub(names.k), ctx, inner);
    const v = await Linear.load(w.sub(names.v), ctx, inner);
    const out = await Linear.load(w.sub(names.out), inner, d);
    if (q.outFeatures % heads !== 0) throw new SsdError("E_BAD_CONFIG", `attention: ${q.outFeatures} features do not split into ${heads} heads`);
    return new Attention(heads, q, k, v, out, scale);
  }
  /** `residual` is added by the output projection's epilogue. */
  forward(x: Tensor, context?: Tensor, opts: { causal?: boolean; residual?: Tensor } = {}): Tensor {
    const ctx = context ?? x;
    const q = this.q.forward(x);
    const k = this.k.forward(ctx);
    const v = this.v.forward(ctx);
    const a = ops.attention(q, k, v, { heads: this.heads, causal: opts.causal, scale: this.scale });
    q.dispose(); k.dispose(); v.dispose();
    const y = this.out.forward(a, undefined, opts.residual);
    a.dispose();
    return y;
  }
}

// ------------------------------------------------------------------ diffusers blocks

/** diffusers FeedForward with GEGLU: net.0.proj (dim -> 2·inner), GEGLU, net.2 (inner -> dim). */
export class FeedForward {
  constructor(readonly proj: Linear, readonly out: Linear) {}
  static async load(w: Weights, dim: number, mult = 4): Promise<FeedForward> {
    const inner = dim * mult;
    const proj = await Linear.load(w.sub("net.0.proj"), dim, 2 * inner);
    return new FeedForward(proj, await Linear.load(w.sub("net.2"), inner, dim));
  }
  forward(x: Tensor, residual?: Tensor): Tensor {
    const h = this.proj.forward(x);
    const g = ops.geglu(h, "gelu"); // hidden * gelu(gate), exact gelu as diffusers' GEGLU
    h.dispose();
    const y = this.out.forward(g, undefined, residual);
    g.dispose();
    return y;
  }
}

/**
 * diffusers BasicTransformerBlock (norm_type "layer_norm"): self-attention,
 * cross-attention on the text, GEGLU feed-forward; each pre-normed, each with a
 * residual (fused into the output projection).
 */
export class BasicTransformerBlock {
  constructor(
    readonly norm1: LayerNorm, readonly attn1: Attention,
    readonly norm2: LayerNorm, readonly attn2: Attention,
    readonly norm3: LayerNorm, readonly ff: FeedForward,
  ) {}
  static async load(w: Weights, dim: number, heads: number, crossAttentionDim: number): Promise<BasicTransformerBlock> {
    const eps = 1e-5; // BasicTransformerBlock's norm_eps default, which Transformer2DModel keeps
    return new BasicTransformerBlock(
      await LayerNorm.load(w.sub("norm1"), eps, dim), await Attention.load(w.sub("attn1"), heads, undefined, undefined, { query: dim }),
      await LayerNorm.load(w.sub("norm2"), eps, dim), await Attention.load(w.sub("attn2"), heads, undefined, undefined, { query: dim, context: crossAttentionDim }),
      await LayerNorm.load(w.sub("norm3"), eps, dim), await FeedForward.load(w.sub("ff"), dim),
    );
  }
  /** x [B, N, dim], context [B, M, cross_attention_dim] */
  forward(x: Tensor, context: Tensor): Tensor {
    let n = this.norm1.forward(x);
    const h1 = this.attn1.forward(n, undefined, { residual: x });
    n.dispose();
    n = this.norm2.forward(h1);
    const h2 = this.attn2.forward(n, context, { residual: h1 });
    n.dispose(); h1.dispose();
    n = this.norm3.forward(h2);
    const h3 = this.ff.forward(n, h2);
    n.dispose(); h2.dispose();
    return h3;
  }
}

/**
 * diffusers Transformer2DModel on continuous (latent) input:
 * GroupNorm(eps 1e-6) -> proj_in -> transformer_blocks -> proj_out -> + input.
 * proj_in/proj_out are Linear with `use_linear_projection`, 1×1 Conv2d otherwise.
 * With 0 layers it still normalises and projects (not an identity).
 */
export class Transformer2DModel {
  constructor(
    readonly norm: GroupNorm,
    readonly projIn: Linear | Conv2d,
    readonly blocks: BasicTransformerBlock[],
    readonly projOut: Linear | Conv2d,
  ) {}
  static async load(w: Weights, cfg: { channels: number; heads: number; layers: number; groups: number; linearProjection: boolean; crossAttentionDim: number }): Promise<Transformer2DModel> {
    const { channels, heads, layers, groups, linearProjection, crossAttentionDim } = cfg;
    const norm = await GroupNorm.load(w.sub("norm"), groups, 1e-6, channels);
    const projIn = linearProjection ? await Linear.load(w.sub("proj_in"), channels, channels) : await Conv2d.load(w.sub("proj_in"), { inChannels: channels, outChannels: channels, kernel: 1 });
    const inner = linearProjection ? (projIn as Linear).outFeatures : (projIn as Conv2d).outChannels;
    const blocks: BasicTransformerBlock[] = [];
    for (let i = 0; i < layers; i++) blocks.push(await BasicTransformerBlock.load(w.sub(`transformer_blocks.${i}`), inner, heads, crossAttentionDim));
    const projOut = linearProjection ? await Linear.load(w.sub("proj_out"), inner, channels) : await Conv2d.load(w.sub("proj_out"), { inChannels: inner, outChannels: channels, kernel: 1 });
    return new Transformer2DModel(norm, projIn, blocks, projOut);
  }
  /** x [B, C, H, W], context [B, M, Cc] -> [B, C, H, W] */
  forward(x: Tensor, context: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const n = this.norm.forward(x);
    let h: Tensor;
    if (this.projIn instanceof Linear) {
      const tokens = toTokens(n);
      h = this.projIn.forward(tokens);
      tokens.dispose();
    } else {
      const p = this.projIn.forward(n);
      h = toTokens(p);
      p.dispose();
    }
    n.dispose();
    for (const block of this.blocks) {
      const next = block.forward(h, context);
      h.dispose();
      h = next;
    }
    let y: Tensor;
    if (this.projOut instanceof Linear) {
      const o = this.projOut.forward(h);
      y = fromTokens(o, H, W);
      o.dispose();
      const r = ops.add(y, x);
      y.dispose();
      y = r;
    } else {
      const img = fromTokens(h, H, W);
      y = this.projOut.forward(img, x);
      img.dispose();
    }
    h.dispose();
    if (y.shape[1] !== C || y.shape[0] !== B) throw new SsdError("E_SHAPE", `Transformer2DModel: output ${y.shape} for input ${x.shape}`);
    return y;
  }
}

/** [B, C, H, W] -> [B, H·W, C] */
export function toTokens(x: Tensor): Tensor {
  const [B, C, H, W] = x.shape;
  const v = x.reshape([B, C, H * W]);
  const t = ops.permute(v, [0, 2, 1]);
  v.dispose();
  return t;
}

/** [B, H·W, C] -> [B, C, H, W] */
export function fromTokens(x: Tensor, H: number, W: number): Tensor {
  const [B, , C] = x.shape;
  const t = ops.permute(x, [0, 2, 1]);
  const y = t.reshape([B, C, H, W]);
  t.dispose();
  return y;
}

/**
 * diffusers ResnetBlock2D (time_embedding_norm "default"):
 * GN-SiLU-conv1 (+ time_emb_proj(SiLU(temb)) per channel), GN-SiLU-conv2,
 * + shortcut (1×1 conv_shortcut when channels change), / output_scale_factor.
 */
export class ResnetBlock2D {
  constructor(
    readonly norm1: GroupNorm, readonly conv1: Conv2d,
    readonly timeEmbProj: Linear | undefined,
    readonly norm2: GroupNorm, readonly conv2: Conv2d,
    readonly convShortcut: Conv2d | undefined,
    readonly outputScaleFactor: number,
  ) {}
  static async load(w: Weights, cfg: { inChannels: number; outChannels: number; tembChannels: number | null; groups: number; eps: number; outputScaleFactor?: number }): Promise<ResnetBlock2D> {
    const { inChannels: i, outChannels: o, groups, eps } = cfg;
    return new ResnetBlock2D(
      await GroupNorm.load(w.sub("norm1"), groups, eps, i),
      await Conv2d.load(w.sub("conv1"), { padding: 1, inChannels: i, outChannels: o, kernel: 3 }),
      cfg.tembChannels ? await Linear.load(w.sub("time_emb_proj"), cfg.tembChannels, o) : undefined,
      await GroupNorm.load(w.sub("norm2"), groups, eps, o),
      await Conv2d.load(w.sub("conv2"), { padding: 1, inChannels: o, outChannels: o, kernel: 3 }),
      i !== o ? await Conv2d.load(w.sub("conv_shortcut"), { inChannels: i, outChannels: o, kernel: 1 }) : undefined,
      cfg.outputScaleFactor ?? 1,
    );
  }
  /** x [B, Cin, H, W], temb [B, T] (before the SiLU) -> [B, Cout, H, W] */
  forward(x: Tensor, temb?: Tensor): Tensor {
    let h = this.norm1.forward(x, "silu");
    let c = this.conv1.forward(h);
    h.dispose();
    if (temb && this.timeEmbProj) {
      const a = ops.silu(temb);
      const t = this.timeEmbProj.forward(a);
      a.dispose();
      const t4 = t.reshape([t.shape[0], t.shape[1], 1, 1]);
      t.dispose();
      h = ops.add(c, t4);
      t4.dispose(); c.dispose();
      c = h;
    }
    h = this.norm2.forward(c, "silu");
    c.dispose();
    const shortcut = this.convShortcut ? this.convShortcut.forward(x) : x;
    let y = this.conv2.forward(h, shortcut);
    h.dispose();
    if (shortcut !== x) shortcut.dispose();
    if (this.outputScaleFactor !== 1) {
      const s = ops.scale(y, 1 / this.outputScaleFactor);
      y.dispose();
      y = s;
    }
    return y;
  }
}

/** diffusers Downsample2D (use_conv): 3×3 stride-2 conv; padding 0 pads right and bottom by one first (the VAE's). */
export class Downsample2D {
  constructor(readonly conv: Conv2d, readonly padding: number) {}
  static async load(w: Weights, channels: number, padding: number, outChannels = channels): Promise<Downsample2D> {
    return new Downsample2D(await Conv2d.load(w.sub("conv"), { stride: 2, padding, inChannels: channels, outChannels, kernel: 3 }), padding);
  }
  forward(x: Tensor): Tensor {
    if (this.padding !== 0) return this.conv.forward(x);
    const p = ops.pad2d(x, [0, 1, 0, 1], 0);
    const y = this.conv.forward(p);
    p.dispose();
    return y;
  }
}

/** diffusers Upsample2D (use_conv): nearest ×2 (or to an explicit size, for odd sides), then 3×3 conv. */
export class Upsample2D {
  constructor(readonly conv: Conv2d) {}
  static async load(w: Weights, channels: number, outChannels = channels): Promise<Upsample2D> {
    return new Upsample2D(await Conv2d.load(w.sub("conv"), { padding: 1, inChannels: channels, outChannels, kernel: 3 }));
  }
  forward(x: Tensor, size?: [number, number]): Tensor {
    const u = ops.upsampleNearest(x, size ? { size } : { scale: 2 });
    const y = this.conv.forward(u);
    u.dispose();
    return y;
  }
}

// ------------------------------------------------------------------ timestep embedding

const f32 = Math.fround;
const R_LN2F = f32(1.442695040888963407359924681001892137426645954152985934135449406931);
const L2UF = f32(0.693145751953125);
const L2LF = f32(1.428606765330187045e-6);
const EXP_C = [0.000198527617612853646278381, 0.00139304355252534151077271, 0.00833336077630519866943359, 0.0416664853692054748535156, 0.166666671633720397949219, 0.5].map(f32);

/**
 * expf as torch computes it on x86 (SLEEF's expf_u10 with FMA): the frequencies
 * of the sinusoidal embedding feed arguments near 1000, so one ulp of a
 * frequency moves sin() by ~1e-4; matching torch's exp bit for bit matters.
 */
export function expf32(xIn: number): number {
  const d = f32(xIn);
  if (d < -104) return 0;
  if (d > 100) return Infinity;
  const t = f32(d * R_LN2F);
  let q = Math.round(t);
  if (Math.abs(t % 1) === 0.5 && q % 2 !== 0) q -= 1; // round half to even (cvtps_epi32)
  let s = fma32(q, -L2UF, d);
  s = fma32(q, -L2LF, s);
  let u = EXP_C[0];
  for (let k = 1; k < EXP_C.length; k++) u = fma32(u, s, EXP_C[k]);
  u = f32(1 + fma32(f32(s * s), u, s));
  return f32(u * 2 ** q);
}

/**
 * diffusers Timesteps / get_timestep_embedding on the host, in float32 as torch
 * computes it: timesteps are host values (the scheduler's), and the GPU's
 * sin/cos of arguments near 1000 are not accurate enough. -> [N, dim]
 */
export function timestepEmbeddingHost(timesteps: ArrayLike<number>, dim: number, opts: { flipSinToCos: boolean; downscaleFreqShift: number; scale?: number; maxPeriod?: number }): Float32Array {
  const half = Math.floor(dim / 2);
  const scale = f32(opts.scale ?? 1);
  const c = f32(-Math.log(opts.maxPeriod ?? 10000));
  const denom = f32(half - opts.downscaleFreqShift);
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = expf32(f32(f32(c * i) / denom));
  const out = new Float32Array(timesteps.length * dim); // an odd dim keeps a zero last column (diffusers' pad)
  for (let b = 0; b < timesteps.length; b++) {
    const t = f32(timesteps[b]);
    for (let i = 0; i < half; i++) {
      const a = f32(f32(t * freqs[i]) * scale);
      const s = f32(Math.sin(a)), co = f32(Math.cos(a));
      out[b * dim + (opts.flipSinToCos ? half + i : i)] = s;
      out[b * dim + (opts.flipSinToCos ? i : half + i)] = co;
    }
  }
  return out;
}

/** diffusers TimestepEmbedding: linear_1 -> act -> linear_2. */
export class TimestepEmbedding {
  constructor(readonly linear1: Linear, readonly linear2: Linear, readonly act: Activation) {}
  static async load(w: Weights, inChannels: number, timeEmbedDim: number, act: Activation = "silu"): Promise<TimestepEmbedding> {
    return new TimestepEmbedding(await Linear.load(w.sub("linear_1"), inChannels, timeEmbedDim), await Linear.load(w.sub("linear_2"), timeEmbedDim, timeEmbedDim), act);
  }
  forward(x: Tensor): Tensor {
    const h = this.linear1.forward(x, this.act);
    const y = this.linear2.forward(h);
    h.dispose();
    return y;
  }
}
