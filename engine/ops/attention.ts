// Fused multi-head scaled-dot-product attention. CONTRACT STUB: implemented by the attention work.
import type { Tensor } from "../tensor.ts";
import { SsdError } from "../errors.ts";

export interface AttentionOptions {
  heads: number;
  /** default 1/sqrt(headDim) */
  scale?: number;
  /** causal mask (CLIP text) */
  causal?: boolean;
}
/**
 * q [B, Nq, heads*d], k/v [B, Nk, heads*d] (the layout of to_q/to_k/to_v
 * outputs) -> [B, Nq, heads*d]. Never materialises Nq×Nk for long sequences.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  throw new SsdError("E_INTERNAL", "attention: not implemented yet");
}
