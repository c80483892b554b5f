// The precision policy: one value, passed down from the CLI to every model.
//
// Default: activations f32; weights keep their file's dtype (F16 stays f16 —
// native where the device has shader-f16, packed two per u32 otherwise; F32
// stays f32; BF16 is widened to f32, since f16 cannot hold its range);
// accumulation is always f32. `fp16` activations are an opt-in for speed on
// devices with native f16 and are never what the fixtures test.

import type { DType } from "./tensor.ts";
import type { StDtype } from "../weights/safetensors.ts";
import { SsdError } from "./errors.ts";

export interface PrecisionPolicy {
  /** dtype of activations (intermediate tensors) */
  activations: "f32" | "f16";
  /** storage of weights: keep the file's dtype, or force one */
  weights: "keep" | "f32" | "f16";
}

export function defaultPrecision(): PrecisionPolicy {
  return { activations: "f32", weights: "keep" };
}

export function parsePrecision(name: string, nativeF16: boolean): PrecisionPolicy {
  switch (name) {
    case "fp32": case "f32": return { activations: "f32", weights: "keep" };
    case "fp32-weights": return { activations: "f32", weights: "f32" };
    case "fp16": case "f16":
      if (!nativeF16) throw new SsdError("E_BAD_PARAM", "--precision fp16 needs an adapter with shader-f16 (lavapipe has it, SwiftShader has not); use --precision fp32");
      return { activations: "f16", weights: "f16" };
    default:
      throw new SsdError("E_BAD_PARAM", `unknown --precision '${name}'; use fp32 (default), fp32-weights or fp16`);
  }
}

/** Storage dtype of a weight read from a file of dtype `file`. */
export function weightDtype(file: StDtype, policy: PrecisionPolicy): DType {
  if (policy.weights === "f32") return "f32";
  if (policy.weights === "f16") return "f16";
  return file === "F16" ? "f16" : "f32";
}
