// diffusers AutoencoderKL (v0.27.2):
//
//   image ─ encoder (conv_in, DownEncoderBlock2D…, mid block with self-attention, GN·SiLU, conv_out)
//         ─ quant_conv ─ moments = mean ‖ logvar ─ DiagonalGaussianDistribution
//   latents ─ post_quant_conv ─ decoder (conv_in, mid block, UpDecoderBlock2D…, GN·SiLU, conv_out) ─ image
//
// With tiling on (diffusers' enable_tiling()), large inputs are cut into
// overlapping tiles of the config's sample_size, each run through the
// encoder/decoder on its own (GroupNorm statistics per tile), the overlaps
// blended linearly (blend_v with the tile above, blend_h with the tile to the
// left, both already blended) and the tiles cropped and concatenated.

import type { Tensor } from "../../engine/tensor.ts";
import type { Engine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { SsdError } from "../../engine/errors.ts";
import { activationFromConfig } from "../../engine/ops/elementwise.ts";
import { Conv2d, GroupNorm, type Trace, type Weights } from "../nn.ts";
import { DownBlock, MidBlock, UpBlock } from "./unet_blocks.ts";

export interface AutoencoderKLConfig {
  in_channels: number;
  out_channels: number;
  latent_channels: number;
  block_out_channels: number[];
  down_block_types: string[];
  up_block_types: string[];
  layers_per_block: number;
  norm_num_groups: number;
  act_fn?: string;
  sample_size: number | number[];
  scaling_factor?: number;
  shift_factor?: number | null;
  force_upcast?: boolean;
  use_quant_conv?: boolean;
  use_post_quant_conv?: boolean;
  mid_block_add_attention?: boolean;
  [key: string]: unknown;
}

const VAE_EPS = 1e-6; // the VAE's resnets and norms use 1e-6 whatever the config

export class Encoder {
  constructor(readonly convIn: Conv2d, readonly downBlocks: DownBlock[], readonly midBlock: MidBlock, readonly convNormOut: GroupNorm, readonly convOut: Conv2d) {}
  static async load(w: Weights, cfg: AutoencoderKLConfig): Promise<Encoder> {
    const C = cfg.block_out_channels, n = C.length, g = cfg.norm_num_groups;
    if (cfg.down_block_types.length !== n) throw new SsdError("E_BAD_CONFIG", `down_block_types has ${cfg.down_block_types.length} entries for ${n} block_out_channels`);
    const convIn = await Conv2d.load(w.sub("conv_in"), { padding: 1, inChannels: cfg.in_channels, outChannels: C[0], kernel: 3 });
    const downBlocks: DownBlock[] = [];
    for (let i = 0; i < n; i++) {
      downBlocks.push(await DownBlock.load(w.sub(`down_blocks.${i}`), cfg.down_block_types[i], {
        inChannels: i === 0 ? C[0] : C[i - 1], outChannels: C[i], tembChannels: null, numLayers: cfg.layers_per_block, groups: g, eps: VAE_EPS,
        addDownsample: i < n - 1, downsamplePadding: 0,
      }));
    }
    const midBlock = await loadVaeMid(w.sub("mid_block"), cfg);
    const convNormOut = await GroupNorm.load(w.sub("conv_norm_out"), g, VAE_EPS, C[n - 1]);
    const convOut = await Conv2d.load(w.sub("conv_out"), { padding: 1, inChannels: C[n - 1], outChannels: 2 * cfg.latent_channels, kernel: 3 });
    return new Encoder(convIn, downBlocks, midBlock, convNormOut, convOut);
  }
  forward(x: Tensor, trace?: Trace): Tensor {
    let h = this.convIn.forward(x);
    trace?.("encoder.conv_in", h);
    this.downBlocks.forEach((b, i) => {
      const r = b.forward(h, undefined);
      h.dispose();
      for (const s of r.states) s.dispose();
      h = r.hidden;
      trace?.(`encoder.down_blocks.${i}`, h);
    });
    const m = this.midBlock.forward(h, undefined);
    h.dispose();
    trace?.("encoder.mid_block", m);
    const n = this.convNormOut.forward(m, "silu");
    m.dispose();
    const y = this.convOut.forward(n);
    n.dispose();
    trace?.("encoder.conv_out", y);
    return y;
  }
}

export class Decoder {
  constructor(readonly convIn: Conv2d, readonly midBlock: MidBlock, readonly upBlocks: UpBlock[], readonly convNormOut: GroupNorm, readonly convOut: Conv2d) {}
  static async load(w: Weights, cfg: AutoencoderKLConfig): Promise<Decoder> {
    const C = cfg.block_out_channels, n = C.length, g = cfg.norm_num_groups;
    if (cfg.up_block_types.length !== n) throw new SsdError("E_BAD_CONFIG", `up_block_types has ${cfg.up_block_types.length} entries for ${n} block_out_channels`);
    const rev = C.slice().reverse();
    const convIn = await Conv2d.load(w.sub("conv_in"), { padding: 1, inChannels: cfg.latent_channels, outChannels: rev[0], kernel: 3 });
    const midBlock = await loadVaeMid(w.sub("mid_block"), cfg);
    const upBlocks: UpBlock[] = [];
    let out = rev[0];
    for (let i = 0; i < n; i++) {
      const prev = out;
      out = rev[i];
      upBlocks.push(await UpBlock.load(w.sub(`up_blocks.${i}`), cfg.up_block_types[i], {
        inChannels: prev, outChannels: out, prevOutputChannels: prev, skipChannels: [], tembChannels: null,
        numLayers: cfg.layers_per_block + 1, groups: g, eps: VAE_EPS, addUpsample: i < n - 1,
      }));
    }
    const convNormOut = await GroupNorm.load(w.sub("conv_norm_out"), g, VAE_EPS, C[0]);
    const convOut = await Conv2d.load(w.sub("conv_out"), { padding: 1, inChannels: C[0], outChannels: cfg.out_channels, kernel: 3 });
    return new Decoder(convIn, midBlock, upBlocks, convNormOut, convOut);
  }
  forward(z: Tensor, trace?: Trace): Tensor {
    const c = this.convIn.forward(z);
    trace?.("decoder.conv_in", c);
    let h = this.midBlock.forward(c, undefined);
    c.dispose();
    trace?.("decoder.mid_block", h);
    this.upBlocks.forEach((b, i) => {
      const u = b.forward(h, [], undefined);
      h.dispose();
      h = u;
      trace?.(`decoder.up_blocks.${i}`, h);
    });
    const n = this.convNormOut.forward(h, "silu");
    h.dispose();
    const y = this.convOut.forward(n);
    n.dispose();
    trace?.("decoder.conv_out", y);
    return y;
  }
}

function loadVaeMid(w: Weights, cfg: AutoencoderKLConfig): Promise<MidBlock> {
  const C = cfg.block_out_channels[cfg.block_out_channels.length - 1];
  activationFromConfig(cfg.act_fn ?? "silu"); // the blocks use SiLU; reject anything else early
  if ((cfg.act_fn ?? "silu") !== "silu") throw new SsdError("E_BAD_CONFIG", `AutoencoderKL: act_fn '${cfg.act_fn}' is not supported (silu)`);
  return MidBlock.load(w, "UNetMidBlock2D", {
    channels: C, tembChannels: null, groups: cfg.norm_num_groups, eps: VAE_EPS, numLayers: 1,
    addAttention: cfg.mid_block_add_attention ?? true, attentionHeadDim: C,
  });
}

/** DiagonalGaussianDistribution over moments [B, 2C, h, w]: mean, logvar clamped to [-30, 20], std. */
export class DiagonalGaussian {
  readonly mean: Tensor;
  readonly logvar: Tensor;
  readonly std: Tensor;
  constructor(moments: Tensor) {
    const [mean, lv] = ops.chunk(moments, 2, 1);
    this.mean = mean;
    this.logvar = ops.clamp(lv, -30, 20);
    lv.dispose();
    const e = moments.engine.upload(new Float32Array([Math.E]), [1]);
    const half = ops.scale(this.logvar, 0.5);
    this.std = ops.pow(e, half); // exp(0.5·logvar)
    e.dispose(); half.dispose();
  }
  /** mean + std · noise, `noise` drawn by the caller (randn_tensor over mean's shape). */
  sample(noise: Tensor): Tensor {
    const s = ops.mul(this.std, noise);
    const y = ops.add(this.mean, s);
    s.dispose();
    return y;
  }
  dispose(): void {
    this.mean.dispose(); this.logvar.dispose(); this.std.dispose();
  }
}

export interface TilingOptions {
  /** image-space tile side; default: the config's sample_size (diffusers' tile_sample_min_size) */
  tileSampleMinSize?: number;
  /** default 0.25 */
  overlapFactor?: number;
}

export class AutoencoderKL {
  /** diffusers' enable_tiling(); tile sizes follow the config unless overridden */
  tiling: TilingOptions | null = null;
  /**
   * diffusers' enable_slicing(): a batch is encoded/decoded one row at a time.
   * Every layer is per-sample, so results are identical; on by default because
   * it halves the decoder's peak memory for a CFG-sized batch.
   */
  slicing = true;

  constructor(
    readonly config: AutoencoderKLConfig,
    readonly encoder: Encoder,
    readonly decoder: Decoder,
    readonly quantConv: Conv2d | null,
    readonly postQuantConv: Conv2d | null,
  ) {}

  static async load(w: Weights, cfg: AutoencoderKLConfig): Promise<AutoencoderKL> {
    const lc = cfg.latent_channels;
    const encoder = await Encoder.load(w.sub("encoder"), cfg);
    const decoder = await Decoder.load(w.sub("decoder"), cfg);
    const quantConv = cfg.use_quant_conv ?? true ? await Conv2d.load(w.sub("quant_conv"), { inChannels: 2 * lc, outChannels: 2 * lc, kernel: 1 }) : null;
    const postQuantConv = cfg.use_post_quant_conv ?? true ? await Conv2d.load(w.sub("post_quant_conv"), { inChannels: lc, outChannels: lc, kernel: 1 }) : null;
    return new AutoencoderKL(cfg, encoder, decoder, quantConv, postQuantConv);
  }

  get scalingFactor(): number {
    return this.config.scaling_factor ?? 0.18215;
  }
  /** 2^(levels − 1) */
  get scaleFactor(): number {
    return 2 ** (this.config.block_out_channels.length - 1);
  }

  enableTiling(opts: TilingOptions = {}): void {
    this.tiling = opts;
  }
  disableTiling(): void {
    this.tiling = null;
  }

  private tileSizes(): { sample: number; latent: number; overlap: number } {
    const ss = this.config.sample_size;
    const sample = this.tiling?.tileSampleMinSize ?? (Array.isArray(ss) ? ss[0] : ss);
    return { sample, latent: Math.trunc(sample / this.scaleFactor), overlap: this.tiling?.overlapFactor ?? 0.25 };
  }

  /** image [B, C, H, W] in [-1, 1] -> moments [B, 2·latent_channels, h, w] (latent_dist.parameters) */
  encodeMoments(x: Tensor, opts: { trace?: Trace } = {}): Tensor {
    if (this.slicing && x.shape[0] > 1) return perRow(x, (r) => this.encodeMoments(r, opts));
    return this.upcast(x.engine, () => {
      const t = this.tileSizes();
      if (this.tiling && (x.shape[3] > t.sample || x.shape[2] > t.sample)) {
        return tiled(x, t.sample, Math.trunc(t.sample * (1 - t.overlap)), Math.trunc(t.latent * t.overlap), t.latent - Math.trunc(t.latent * t.overlap), (tile) => this.encodeTile(tile));
      }
      return this.encodeTile(x, opts.trace);
    });
  }

  /** vae.encode(x).latent_dist */
  encode(x: Tensor, opts: { trace?: Trace } = {}): DiagonalGaussian {
    const m = this.encodeMoments(x, opts);
    const d = this.upcast(x.engine, () => new DiagonalGaussian(m));
    m.dispose();
    return d;
  }

  /** latents [B, latent_channels, h, w] (already divided by scaling_factor) -> image [B, C, H, W] */
  decode(z: Tensor, opts: { trace?: Trace } = {}): Tensor {
    if (this.slicing && z.shape[0] > 1) return perRow(z, (r) => this.decode(r, opts));
    return this.upcast(z.engine, () => {
      const t = this.tileSizes();
      if (this.tiling && (z.shape[3] > t.latent || z.shape[2] > t.latent)) {
        return tiled(z, t.latent, Math.trunc(t.latent * (1 - t.overlap)), Math.trunc(t.sample * t.overlap), t.sample - Math.trunc(t.sample * t.overlap), (tile) => this.decodeTile(tile));
      }
      return this.decodeTile(z, opts.trace);
    });
  }

  private encodeTile(x: Tensor, trace?: Trace): Tensor {
    const h = this.encoder.forward(x, trace);
    if (!this.quantConv) return h;
    const m = this.quantConv.forward(h);
    h.dispose();
    trace?.("quant_conv", m);
    return m;
  }

  private decodeTile(z: Tensor, trace?: Trace): Tensor {
    let p = z;
    if (this.postQuantConv) {
      p = this.postQuantConv.forward(z);
      trace?.("post_quant_conv", p);
    }
    const y = this.decoder.forward(p, trace);
    if (p !== z) p.dispose();
    return y;
  }

  /** force_upcast: the SDXL VAE overflows in fp16, so it runs with f32 activations whatever the policy. */
  private upcast<T>(engine: Engine, fn: () => T): T {
    const policy = engine.precision;
    if (!this.config.force_upcast || policy.activations === "f32") return fn();
    engine.precision = { ...policy, activations: "f32" };
    try {
      return fn();
    } finally {
      engine.precision = policy;
    }
  }
}

/** fn on each batch row of x, results concatenated on the batch dim. */
function perRow(x: Tensor, fn: (row: Tensor) => Tensor): Tensor {
  const outs: Tensor[] = [];
  for (let b = 0; b < x.shape[0]; b++) {
    const row = ops.slice(x, 0, b, b + 1);
    outs.push(fn(row));
    row.dispose();
  }
  const y = ops.concat(outs, 0);
  for (const o of outs) o.dispose();
  return y;
}

/**
 * diffusers' tiled_encode / tiled_decode: tiles of `tileIn` input pixels every
 * `stride` pixels, each through `run`; every tile blended with the (blended)
 * tile above and to its left over `blend` output pixels, cropped to `limit`,
 * and concatenated. Rows are processed as they are produced, so at most two
 * rows of output tiles are alive.
 */
function tiled(x: Tensor, tileIn: number, stride: number, blend: number, limit: number, run: (tile: Tensor) => Tensor): Tensor {
  const [, , H, W] = x.shape;
  const resultRows: Tensor[] = [];
  let above: Tensor[] | null = null;
  for (let i = 0; i < H; i += stride) {
    const row: Tensor[] = [];
    const cropped: Tensor[] = [];
    for (let j = 0, k = 0; j < W; j += stride, k++) {
      const r = ops.slice(x, 2, i, Math.min(i + tileIn, H));
      const tileInput = ops.slice(r, 3, j, Math.min(j + tileIn, W));
      r.dispose();
      let tile = run(tileInput);
      tileInput.dispose();
      if (above) tile = replace(tile, blendV(above[k], tile, blend));
      if (k > 0) tile = replace(tile, blendH(row[k - 1], tile, blend));
      row.push(tile);
      cropped.push(crop(tile, limit));
    }
    if (above) for (const t of above) t.dispose();
    above = row;
    resultRows.push(ops.concat(cropped, 3));
    for (const c of cropped) c.dispose();
  }
  if (above) for (const t of above) t.dispose();
  const y = ops.concat(resultRows, 2);
  for (const r of resultRows) r.dispose();
  return y;
}

function replace(old: Tensor, next: Tensor): Tensor {
  if (next !== old) old.dispose();
  return next;
}

/** b with its first `extent` rows (dim 2) or columns (dim 3) ramped from a's last ones: a·(1 − y/e) + b·(y/e). */
function blendAlong(dim: 2 | 3, a: Tensor, b: Tensor, extent: number): Tensor {
  const e = Math.min(a.shape[dim], b.shape[dim], extent);
  if (e <= 0) return b;
  const eng = b.engine;
  const wB = new Float32Array(e), wA = new Float32Array(e);
  for (let y = 0; y < e; y++) { wB[y] = y / e; wA[y] = 1 - y / e; }
  const wshape = dim === 2 ? [1, 1, e, 1] : [1, 1, 1, e];
  const tA = eng.upload(wA, wshape), tB = eng.upload(wB, wshape);
  const aEdge = ops.slice(a, dim, a.shape[dim] - e, a.shape[dim]);
  const bEdge = ops.slice(b, dim, 0, e);
  const pa = ops.mul(aEdge, tA), pb = ops.mul(bEdge, tB);
  const mixed = ops.add(pa, pb);
  for (const t of [tA, tB, aEdge, bEdge, pa, pb]) t.dispose();
  if (e === b.shape[dim]) return mixed;
  const rest = ops.slice(b, dim, e, b.shape[dim]);
  const y = ops.concat([mixed, rest], dim);
  mixed.dispose(); rest.dispose();
  return y;
}
const blendV = (a: Tensor, b: Tensor, e: number) => blendAlong(2, a, b, e);
const blendH = (a: Tensor, b: Tensor, e: number) => blendAlong(3, a, b, e);

function crop(t: Tensor, limit: number): Tensor {
  const r = ops.slice(t, 2, 0, Math.min(limit, t.shape[2]));
  const c = ops.slice(r, 3, 0, Math.min(limit, t.shape[3]));
  r.dispose();
  return c;
}
