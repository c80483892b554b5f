// Normalisations and softmax. CONTRACT STUB: implemented by the norm work.
import type { Tensor } from "../tensor.ts";
import type { Activation } from "./elementwise.ts";
import { SsdError } from "../errors.ts";

/** GroupNorm over x [N, C, ...spatial]; weight/bias [C]; optional fused activation (silu). */
export function groupNorm(x: Tensor, groups: number, weight: Tensor | undefined, bias: Tensor | undefined, eps: number, act: Activation = "none"): Tensor {
  throw new SsdError("E_INTERNAL", "groupNorm: not implemented yet");
}
/** LayerNorm over the last dim; weight/bias [D]. */
export function layerNorm(x: Tensor, weight: Tensor | undefined, bias: Tensor | undefined, eps: number): Tensor {
  throw new SsdError("E_INTERNAL", "layerNorm: not implemented yet");
}
/** softmax over the last dim */
export function softmax(x: Tensor): Tensor {
  throw new SsdError("E_INTERNAL", "softmax: not implemented yet");
}
