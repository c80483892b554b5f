// Convolutions and pooling (NCHW). CONTRACT STUB: implemented by the conv work.
import type { Tensor } from "../tensor.ts";
import type { Activation } from "./elementwise.ts";
import { SsdError } from "../errors.ts";

export interface Conv2dOptions {
  bias?: Tensor;
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
  act?: Activation;
  /** added after the activation; same shape as the output */
  residual?: Tensor;
}
/** x [N, C, H, W], weight [O, C/groups, kH, kW] (PyTorch layout) -> [N, O, Ho, Wo] */
export function conv2d(x: Tensor, weight: Tensor, opts: Conv2dOptions = {}): Tensor {
  throw new SsdError("E_INTERNAL", "conv2d: not implemented yet");
}
/** x [N, C, H, W], weight [C, O, kH, kW] (PyTorch ConvTranspose2d layout) */
export function convTranspose2d(x: Tensor, weight: Tensor, opts: { bias?: Tensor; stride?: number | [number, number]; padding?: number | [number, number]; outputPadding?: number | [number, number] } = {}): Tensor {
  throw new SsdError("E_INTERNAL", "convTranspose2d: not implemented yet");
}
/** max pooling; `same: true` = TensorFlow-style SAME padding (pad value -inf) as BiT's stem */
export function maxPool2d(x: Tensor, opts: { kernel: number; stride: number; padding?: number; same?: boolean }): Tensor {
  throw new SsdError("E_INTERNAL", "maxPool2d: not implemented yet");
}
/** Weight standardisation (BiT): per output channel (w - mean) / sqrt(var + eps), biased var. Done once at load. */
export function standardizeWeight(weight: Tensor, eps: number): Tensor {
  throw new SsdError("E_INTERNAL", "standardizeWeight: not implemented yet");
}
