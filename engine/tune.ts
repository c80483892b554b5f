// The autotuning run: times every candidate kernel of matmul, conv2d (and on
// GPUs every tile of their `wide` kernels, of flash attention and of the `mm`
// attention's GEMMs) and
// attention (self and to 77 text tokens; where `rowblock` wins the latter, also
// its keys per step), group_norm and layer_norm on shapes SSD-1B runs (scaled by `scale`, so tests stay small),
// and stores the fastest per adapter through autotune.ts's cache. Run by
// `ssd-depth info --tune` and `npm run bench -- tune`.

import type { Engine } from "./engine.ts";
import type { Tensor, DType } from "./tensor.ts";
import { float32ToHalfArray } from "./half.ts";
import { tune, type TuneResult } from "./autotune.ts";
import * as ops from "./ops/index.ts";
import { MATMUL_CHOICES, wideTiles, planKey, planCandidates, parsePlan, serialTailPlans, type MatmulKernel } from "./ops/matmul.ts";
import { convKernels, convWideTiles, convPlanKey, convPlanCandidates, convTailPlans, type ConvKernel } from "./ops/conv.ts";
import { attentionKernels, flashTiles, ROWBLOCK_KEYS, type AttentionKernel } from "./ops/attention.ts";
import { GROUP_NORM_KERNELS, LAYER_NORM_KERNELS, type GroupNormKernel, type LayerNormKernel } from "./ops/norm.ts";

/** Candidates per op on this device; each op ignores a cached choice that is not among its own. */
export function tuneCandidates(e: Engine): Record<"matmul" | "conv2d" | "attention" | "attention_short" | "rowblock_keys" | "group_norm" | "layer_norm", string[]> {
  // conv2d `wide` and attention `mm` are GPU kernels: never faster on CPU drivers, where they only cost tuning time
  const gpu = e.gpu.report.kind === "gpu";
  const att = attentionKernels(64).filter((k) => gpu || k !== "mm");
  return { matmul: MATMUL_CHOICES, conv2d: convKernels(e).filter((k) => gpu || k !== "wide"), attention: att, attention_short: att, rowblock_keys: ROWBLOCK_KEYS, group_norm: GROUP_NORM_KERNELS, layer_norm: LAYER_NORM_KERNELS };
}

function det(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) { s = (s * 1664525 + 1013904223) >>> 0; a[i] = s / 2 ** 31 - 1; }
  return a;
}

export interface TuneOptions {
  /** 1 = the SSD-1B shapes at 512² on CPU drivers, 1024² on GPUs; tests pass a small fraction */
  scale?: number;
  reps?: number;
  log?: (line: string) => void;
  /**
   * GPUs: GEMM shapes [batch, M, N, K] (A [batch, M, K] times a shared Bᵀ [N, K])
   * to time `wide` plans on (matmul.ts planKey). Default: the transformer
   * linears of SSD-1B's 640- and 1280-channel levels at the tuning size,
   * for one image and for two (classifier-free guidance).
   */
  gemms?: [number, number, number, number][];
  /**
   * GPUs: convs [images, C, side, O, k] (stride 1, padding (k − 1)/2) to time
   * conv plans on (conv.ts convPlanKey). Default: every 3×3 conv of SSD-1B's
   * UNet at the tuning size (ssd1bConvs), one image and two.
   */
  convs?: [number, number, number, number, number][];
}

/**
 * The default `convs`: the 3×3 convs of SSD-1B's UNet at latent side `side`
 * (below), one image and two (classifier-free guidance runs two).
 */
export function ssd1bConvs(side: number): [number, number, number, number, number][] {
  const out: [number, number, number, number, number][] = [];
  // [in, out, output side] of SSD-1B (block_out_channels 320, 640, 1280): the resnets' C → C convs
  // (also the down blocks' stride-2 downsamplers and the up blocks' upsamplers, as the same GEMMs: their
  // plans are keyed by output pixels, convPlanKey), the down blocks' first convs into a wider level,
  // and the up blocks' first convs on a skip concatenation
  const levels: [number, number, number][] = [[320, 320, side], [640, 640, side / 2], [1280, 1280, side / 4], [320, 320, side / 2], [640, 640, side / 4], [1280, 1280, side / 2], [640, 640, side]];
  const widen: [number, number, number][] = [[320, 640, side / 2], [640, 1280, side / 4]];
  const skips: [number, number, number][] = [[2560, 1280, side / 4], [1920, 1280, side / 4], [1920, 640, side / 2], [1280, 640, side / 2], [960, 640, side / 2], [960, 320, side], [640, 320, side]];
  for (const n of [1, 2]) for (const [c, o, s] of [...levels, ...widen, ...skips]) out.push([n, c, Math.max(1, Math.round(s)), o, 3]);
  return out;
}

/**
 * Times the conv plans on each conv [images, C, side, O, k] in two rounds
 * (conv.ts convPlanCandidates: tiles whole and in serial parts; then the
 * winner against convTailPlans, the serial tails on its tile), with f32 activations and
 * each of the weight dtypes, and caches the fastest under its convPlanKey.
 * 1×1 convs without a bias run as matmuls (their plans are matmul's), so k > 1.
 */
export async function tuneConvPlans(e: Engine, convs: [number, number, number, number, number][], reps?: number, weights: DType[] = ["f32", "f16"], clock: "wall" | "kernels" = e.gpu.timestamps ? "kernels" : "wall", onResult?: (r: TuneResult) => void): Promise<TuneResult[]> {
  const out: TuneResult[] = [];
  for (const [n, C, side, O, k] of convs) for (const wd of weights) {
    const x = e.upload(det(n * C * side * side, 16), [n, C, side, side]);
    const wf = det(O * C * k * k, 17), w = wd === "f16" ? e.upload(float32ToHalfArray(wf), [O, C, k, k], "f16") : e.upload(wf, [O, C, k, k]);
    try {
      const key = convPlanKey(n, O, side * side, C, k, k, x.dtype, w.dtype);
      const r = await tuneRounds(e, key, convPlanCandidates(e, n, O, side * side, C * k * k), (first) => convTailPlans(parsePlan(first).tile, n, O, side * side, C * k * k), (plan) => {
        const p = parsePlan(plan);
        ops.conv2d(x, w, { padding: (k - 1) / 2, kernel: "wide", tile: p.tile, split: p.split, serialTail: p.serialTail }).dispose();
      }, reps, clock);
      out.push(r);
      onResult?.(r);
    } finally {
      x.dispose(); w.dispose();
    }
  }
  return out;
}

/** The default `gemms`: q/k/v/out, GEGLU and feed-forward out at both transformer levels, batch 1 and 2. */
export function ssd1bGemms(tokens: number): [number, number, number, number][] {
  const out: [number, number, number, number][] = [];
  for (const batch of [1, 2]) for (const [t, c] of [[tokens, 640], [Math.max(1, Math.round(tokens / 4)), 1280]]) {
    out.push([batch, t, c, c], [batch, t, 8 * c, c], [batch, t, c, 4 * c]);
  }
  return out;
}

/**
 * Times the `wide` plans (matmul.ts planCandidates) on each GEMM shape
 * [batch, M, N, K], with f32 activations and each of the weight dtypes
 * (SSD-1B's weights are f16; the benches also run f32 ones), and caches the
 * fastest under its planKey (where a split tail wins, after a second round
 * against serial tails near its edge: tunePlanRounds). Plans are rated by the
 * kernels' own time where the device has timestamp queries: on the H200,
 * wall time per call (which also holds the host's work around the kernels) rated
 * 64x256k8t8 on 4096×640→5120 at 1.20 ms and 128x128k8t8 at 0.86 ms, while
 * their kernels took 0.65 and 0.72 ms; the pipeline replays its step, so the
 * kernels are what it pays.
 */
export async function tunePlans(e: Engine, gemms: [number, number, number, number][], reps?: number, weights: DType[] = ["f32", "f16"], clock: "wall" | "kernels" = e.gpu.timestamps ? "kernels" : "wall", onResult?: (r: TuneResult) => void): Promise<TuneResult[]> {
  const out: TuneResult[] = [];
  for (const [batch, M, N, K] of gemms) for (const wd of weights) {
    const a = e.upload(det(batch * M * K, 14), [batch, M, K]);
    const bf = det(N * K, 15), b = wd === "f16" ? e.upload(float32ToHalfArray(bf), [N, K], "f16") : e.upload(bf, [N, K]);
    try {
      const r = await tunePlanRounds(e, planKey(batch, M, N, K, true, a.dtype, b.dtype), planCandidates(e, batch, M, N, K), batch * M, N, (p) => ops.matmul(a, b, { transB: true, kernel: "wide", ...parsePlan(p) }).dispose(), reps, clock);
      out.push(r);
      onResult?.(r);
    } finally {
      a.dispose(); b.dispose();
    }
  }
  return out;
}

/**
 * Times `plans` under `key`, then the first round's choice against
 * `next(choice)` (none: one round), and caches the faster of that round. The
 * result holds both rounds' times.
 */
export async function tuneRounds(e: Engine, key: string, plans: string[], next: (choice: string) => string[], run: (plan: string) => void, reps?: number, clock: "wall" | "kernels" = "wall"): Promise<TuneResult> {
  const first = await tune(e, key, plans, run, reps, clock);
  const near = next(first.choice).filter((p) => p !== first.choice);
  if (!near.length) return first;
  const second = await tune(e, key, [first.choice, ...near], run, reps, clock);
  return { ...second, ms: { ...first.ms, ...second.ms } };
}

/**
 * Times `plans` for one GEMM shape (`rows` = batch·M, N) under `key`; where a
 * split tail wins, a second round times it against the serial tails near its
 * edge (matmul.ts serialTailPlans; one pipeline per parts count, so cheap),
 * and the faster of that round is cached. The result holds both rounds' times.
 */
export function tunePlanRounds(e: Engine, key: string, plans: string[], rows: number, N: number, run: (plan: string) => void, reps?: number, clock: "wall" | "kernels" = "wall"): Promise<TuneResult> {
  return tuneRounds(e, key, plans, (choice) => serialTailPlans(choice, rows, N), run, reps, clock);
}

/** Measures and caches the kernel choice of each tunable op for this adapter. */
export async function tuneKernels(e: Engine, opts: TuneOptions = {}): Promise<TuneResult[]> {
  const s = opts.scale ?? 1;
  const dim = (x: number, min = 1) => Math.max(min, Math.round(x * s));
  // a GPU needs the 1024² shapes to fill its cores: 4× the tokens, 2× the side
  const g = e.gpu.report.kind === "gpu" ? 2 : 1;
  const keep: Tensor[] = [];
  const up = (shape: number[], seed: number) => {
    const t = e.upload(det(shape.reduce((a, b) => a * b, 1), seed), shape);
    keep.push(t);
    return t;
  };
  // each choice is logged as it is made, so a run stopped part-way still shows what it measured
  const results: TuneResult[] = [];
  const done = (r: TuneResult) => { results.push(r); opts.log?.(tuneLine(r)); };
  const cands = tuneCandidates(e);
  // GPU tiles are rated by the kernels' own time where the device stamps them, as plans are (tunePlans)
  const tileClock = e.gpu.timestamps ? "kernels" : "wall";
  const drop = (t: Tensor) => t.dispose();
  try {
    // transformer linears of the 640-channel level (1024 tokens at 512²): 640 → 640 and GEGLU's 640 → 5120
    const x = up([dim(1024 * g * g, 5), dim(640, 4)], 1), w = up([dim(640, 4), dim(640, 4)], 2), w8 = up([dim(5120, 4), dim(640, 4)], 8);
    // GPUs first choose the `wide` kernel's tile (CPU drivers do not run `wide` by default)
    if (e.gpu.report.kind === "gpu") {
      done(await tune(e, "matmul_tile", wideTiles(e), (tile) => {
        drop(ops.matmul(x, w, { transB: true, kernel: "wide", tile }));
        drop(ops.matmul(x, w8, { transB: true, kernel: "wide", tile }));
      }, opts.reps, tileClock));
    }
    // GPUs: a `wide` plan (tile, split-K parts) per GEMM shape, with the tuned tile among the candidates
    if (e.gpu.report.kind === "gpu") await tunePlans(e, opts.gemms ?? ssd1bGemms(dim(1024 * g * g, 4)), opts.reps, undefined, undefined, done);
    done(await tune(e, "matmul", cands.matmul, (k) => {
      drop(ops.matmul(x, w, { transB: true, kernel: k as MatmulKernel }));
      drop(ops.matmul(x, w8, { transB: true, kernel: k as MatmulKernel }));
    }, opts.reps));
    // resnet conv 3×3 320 → 320 at the 320-channel level (32² here at scale 1 on CPU drivers);
    // GPUs: SSD-1B at 1024², the 320-channel level at 128² and the 1280-channel one at 32²
    const convs: [Tensor, Tensor][] = [];
    for (const [c0, hw0] of e.gpu.report.kind === "gpu" ? [[320, 128], [1280, 32]] : [[320, 32 * g]]) {
      const hw = dim(hw0, 3), c = dim(c0, 4);
      convs.push([up([1, c, hw, hw], 3), up([c, c, 3, 3], 4)]);
    }
    if (e.gpu.report.kind === "gpu") {
      done(await tune(e, "conv_tile", convWideTiles(e), (tile) => { for (const [xi, wc] of convs) drop(ops.conv2d(xi, wc, { padding: 1, kernel: "wide", tile })); }, opts.reps, tileClock));
      // then a plan (tile, serial parts, serial tail) per conv shape, with the tuned tile among the candidates
      await tuneConvPlans(e, (opts.convs ?? ssd1bConvs(dim(64 * g, 4))).filter((c) => c[4] > 1), opts.reps, undefined, undefined, done);
    }
    done(await tune(e, "conv2d", cands.conv2d, (k) => { for (const [xi, wc] of convs) drop(ops.conv2d(xi, wc, { padding: 1, kernel: k as ConvKernel })); }, opts.reps));
    // self-attention 1024 tokens × 10 heads × 64 (the head dim is what selects kernels: keep 64)
    const t = dim(1024 * g * g, 4), heads = Math.max(1, Math.round(10 * Math.min(1, s * 4)));
    const q = up([1, t, heads * 64], 5), kk = up([1, t, heads * 64], 6), v = up([1, t, heads * 64], 7);
    if (e.gpu.report.kind === "gpu") {
      done(await tune(e, "flash_tile", flashTiles(e), (tile) => drop(ops.attention(q, kk, v, { heads, impl: "flash", tile })), opts.reps, tileClock));
      // the `wide` tile of `mm`'s two GEMMs (Q·Kᵀ with K = 64, P·V with N = 64), timed on the attention itself
      done(await tune(e, "mm_tile", wideTiles(e), (tile) => drop(ops.attention(q, kk, v, { heads, impl: "mm", tile })), opts.reps, tileClock));
    }
    done(await tune(e, "attention", cands.attention, (k) => drop(ops.attention(q, kk, v, { heads, impl: k as AttentionKernel })), opts.reps));
    // cross-attention of those tokens to the 77 text tokens
    const kx = up([1, 77, heads * 64], 9), vx = up([1, 77, heads * 64], 10);
    const short = await tune(e, "attention_short", cands.attention_short, (k) => drop(ops.attention(q, kx, vx, { heads, impl: k as AttentionKernel })), opts.reps);
    done(short);
    // where rowblock won, its keys per online-softmax step on the same call
    if (short.choice === "rowblock") {
      done(await tune(e, "rowblock_keys", cands.rowblock_keys, (kb) => drop(ops.attention(q, kx, vx, { heads, impl: "rowblock", tile: kb })), opts.reps));
    }
    // group_norm (32 groups, SiLU) on the 320-channel level's activation
    const hn = 2 * dim(32 * g), cn = Math.max(32, dim(320, 32)); // even sides: planes of whole vec4s, as fused needs
    const xn = up([1, cn, hn, hn], 11), gw = up([cn], 12), gb = up([cn], 13);
    done(await tune(e, "group_norm", cands.group_norm, (k) => drop(ops.groupNorm(xn, 32, gw, gb, 1e-5, "silu", k as GroupNormKernel)), opts.reps));
    // the transformer blocks' layer_norm over those 640-wide tokens
    done(await tune(e, "layer_norm", cands.layer_norm, (k) => drop(ops.layerNorm(x, undefined, undefined, 1e-5, k as LayerNormKernel)), opts.reps));
  } finally {
    for (const t of keep) t.dispose();
  }
  return results;
}

/** One line per tuned op: its choice, then every candidate's time. */
export function tuneLine(r: TuneResult): string {
  return `${r.op.padEnd(15)} → ${r.choice.padEnd(13)} (${Object.entries(r.ms).map(([k, ms]) => `${k} ${ms.toFixed(2)} ms`).join(", ")}${r.clock === "kernels" ? "; kernel time" : ""})`;
}
