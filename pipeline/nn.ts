// Building blocks shared by every model. Each module has
// `static load(w, config...)` reading its weights from a prefix view whose key
// names mirror diffusers/transformers (`w.sub("to_q").take("weight")`), and a
// `forward` in PyTorch shape order. Nothing here touches a GPUBuffer.

import type { Tensor } from "../engine/tensor.ts";
import * as ops from "../engine/ops/index.ts";
import type { Activation } from "../engine/ops/elementwise.ts";

/** What a module needs from weights/store.ts's WeightStore (a prefix view). */
export interface Weights {
  sub(prefix: string): Weights;
  /** the tensor named `prefix.name`; E_MISSING_WEIGHT / E_SHAPE when absent or of another shape */
  take(name: string, expectedShape?: readonly number[]): Tensor;
  has(name: string): boolean;
}

export class Linear {
  constructor(readonly weight: Tensor, readonly bias: Tensor | undefined) {}
  static load(w: Weights, inFeatures?: number, outFeatures?: number, bias = true): Linear {
    const weight = w.take("weight", inFeatures && outFeatures ? [outFeatures, inFeatures] : undefined);
    return new Linear(weight, bias && w.has("bias") ? w.take("bias", [weight.shape[0]]) : undefined);
  }
  get outFeatures(): number {
    return this.weight.shape[0];
  }
  forward(x: Tensor, act?: Activation, residual?: Tensor): Tensor {
    return ops.linear(x, this.weight, this.bias, act, residual);
  }
}

export class Conv2d {
  constructor(readonly weight: Tensor, readonly bias: Tensor | undefined, readonly stride: number, readonly padding: number) {}
  /** PyTorch Conv2d; kernel size comes from the weight's shape. */
  static load(w: Weights, opts: { stride?: number; padding?: number; inChannels?: number; outChannels?: number } = {}): Conv2d {
    const weight = w.take("weight");
    return new Conv2d(weight, w.has("bias") ? w.take("bias", [weight.shape[0]]) : undefined, opts.stride ?? 1, opts.padding ?? 0);
  }
  get outChannels(): number {
    return this.weight.shape[0];
  }
  forward(x: Tensor, residual?: Tensor, act?: Activation): Tensor {
    return ops.conv2d(x, this.weight, { bias: this.bias, stride: this.stride, padding: this.padding, residual, act });
  }
}

export class GroupNorm {
  constructor(readonly groups: number, readonly eps: number, readonly weight?: Tensor, readonly bias?: Tensor) {}
  static load(w: Weights, groups: number, eps: number): GroupNorm {
    return new GroupNorm(groups, eps, w.has("weight") ? w.take("weight") : undefined, w.has("bias") ? w.take("bias") : undefined);
  }
  forward(x: Tensor, act: Activation = "none"): Tensor {
    return ops.groupNorm(x, this.groups, this.weight, this.bias, this.eps, act);
  }
}

export class LayerNorm {
  constructor(readonly eps: number, readonly weight?: Tensor, readonly bias?: Tensor) {}
  static load(w: Weights, eps: number, dim?: number): LayerNorm {
    return new LayerNorm(eps, w.has("weight") ? w.take("weight", dim ? [dim] : undefined) : undefined, w.has("bias") ? w.take("bias", dim ? [dim] : undefined) : undefined);
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
  static load(w: Weights, heads: number, names = { q: "to_q", k: "to_k", v: "to_v", out: "to_out.0" }, scale?: number): Attention {
    return new Attention(heads, Linear.load(w.sub(names.q)), Linear.load(w.sub(names.k)), Linear.load(w.sub(names.v)), Linear.load(w.sub(names.out)), scale);
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
