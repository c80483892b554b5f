// Real-size models without downloads: weights made up on request, so a model
// built from a real config.json runs at its true size with seeded random f16
// weights (what real checkpoints hold).

import type { Engine } from "../engine/engine.ts";
import type { Tensor } from "../engine/tensor.ts";
import { SsdError } from "../engine/errors.ts";
import { halfToFloat } from "../engine/half.ts";
import type { Weights } from "../pipeline/nn.ts";

export interface SyntheticRoot {
  engine: Engine;
  seed: number;
  params: number;
}

/**
 * Every tensor a module asks for, of the shape it expects, filled with seeded
 * random halves of magnitude 2^-7..2^-6 (random sign), so activations stay
 * finite. `has` answers as the libraries' checkpoints would: every module has
 * its bias except diffusers' attention q/k/v projections, BiT's
 * weight-standardised convolutions and DPT's neck convolutions; BatchNorm
 * counters are absent.
 */
export class SyntheticWeights implements Weights {
  constructor(private readonly root: SyntheticRoot, private readonly prefix = "") {}
  sub(prefix: string): SyntheticWeights {
    return new SyntheticWeights(this.root, this.prefix ? `${this.prefix}.${prefix}` : prefix);
  }
  has(name: string): boolean {
    if (name === "num_batches_tracked" || name === "mask_token") return false;
    if (name !== "bias") return true;
    const p = this.prefix;
    if (/(^|\.)attn[12]\.to_[qkv]$/.test(p)) return false;
    if (/backbone\.bit\./.test(p) && /(convolution|conv[123]|downsample\.conv)$/.test(p)) return false;
    if (/neck\.convs\.\d+$/.test(p)) return false;
    return true;
  }
  skip(_name: string): void {}
  private bits(name: string, shape?: readonly number[]): Uint16Array {
    const key = this.prefix ? `${this.prefix}.${name}` : name;
    if (!shape || shape.some((d) => d < 0)) throw new SsdError("E_INTERNAL", `synthetic weights: '${key}' was requested without its shape`);
    const n = shape.reduce((a, b) => a * b, 1);
    const bits = new Uint16Array(n);
    let s = (++this.root.seed * 2654435761) >>> 0 || 1;
    for (let i = 0; i < n; i++) {
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
      bits[i] = (s & 0x83ff) | 0x2000; // sign, exponent 8 (2^-7), random mantissa
    }
    this.root.params += n;
    return bits;
  }
  take(name: string, shape?: readonly number[]): Tensor {
    return this.root.engine.upload(this.bits(name, shape), shape!, "f16", { persistent: true });
  }
  async takeHost(name: string, shape?: readonly number[]): Promise<Float32Array> {
    // BatchNorm running variance must stay positive
    const b = this.bits(name, shape);
    const out = Float32Array.from(b, (h) => halfToFloat(h));
    if (name === "running_var") for (let i = 0; i < out.length; i++) out[i] = 1 + Math.abs(out[i]);
    return out;
  }
}
