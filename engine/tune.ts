// The autotuning run: times every candidate kernel of matmul, conv2d and
// attention (self and to 77 text tokens) on shapes SSD-1B runs (scaled by `scale`, so tests stay small),
// and stores the fastest per adapter through autotune.ts's cache. Run by
// `ssd-depth info --tune` and `npm run bench -- tune`.

import type { Engine } from "./engine.ts";
import type { Tensor } from "./tensor.ts";
import { tune, type TuneResult } from "./autotune.ts";
import * as ops from "./ops/index.ts";
import { MATMUL_CHOICES, type MatmulKernel } from "./ops/matmul.ts";
import { convKernels, type ConvKernel } from "./ops/conv.ts";
import { attentionKernels, type AttentionKernel } from "./ops/attention.ts";

/** Candidates per op on this device; each op ignores a cached choice that is not among its own. */
export function tuneCandidates(e: Engine): Record<"matmul" | "conv2d" | "attention" | "attention_short", string[]> {
  return { matmul: MATMUL_CHOICES, conv2d: convKernels(e), attention: attentionKernels(64), attention_short: attentionKernels(64) };
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
  const results: TuneResult[] = [];
  const cands = tuneCandidates(e);
  const drop = (t: Tensor) => t.dispose();
  try {
    // transformer linears of the 640-channel level (1024 tokens at 512²): 640 → 640 and GEGLU's 640 → 5120
    const x = up([dim(1024 * g * g, 5), dim(640, 4)], 1), w = up([dim(640, 4), dim(640, 4)], 2), w8 = up([dim(5120, 4), dim(640, 4)], 8);
    results.push(await tune(e, "matmul", cands.matmul, (k) => {
      drop(ops.matmul(x, w, { transB: true, kernel: k as MatmulKernel }));
      drop(ops.matmul(x, w8, { transB: true, kernel: k as MatmulKernel }));
    }, opts.reps));
    // resnet conv 3×3 320 → 320 at the 320-channel level (64² latents at 512²)
    const hw = dim(32 * g, 3), c = dim(320, 4);
    const xi = up([1, c, hw, hw], 3), wc = up([c, c, 3, 3], 4);
    results.push(await tune(e, "conv2d", cands.conv2d, (k) => drop(ops.conv2d(xi, wc, { padding: 1, kernel: k as ConvKernel })), opts.reps));
    // self-attention 1024 tokens × 10 heads × 64 (the head dim is what selects kernels: keep 64)
    const t = dim(1024 * g * g, 4), heads = Math.max(1, Math.round(10 * Math.min(1, s * 4)));
    const q = up([1, t, heads * 64], 5), kk = up([1, t, heads * 64], 6), v = up([1, t, heads * 64], 7);
    results.push(await tune(e, "attention", cands.attention, (k) => drop(ops.attention(q, kk, v, { heads, impl: k as AttentionKernel })), opts.reps));
    // cross-attention of those tokens to the 77 text tokens
    const kx = up([1, 77, heads * 64], 9), vx = up([1, 77, heads * 64], 10);
    results.push(await tune(e, "attention_short", cands.attention_short, (k) => drop(ops.attention(q, kx, vx, { heads, impl: k as AttentionKernel })), opts.reps));
  } finally {
    for (const t of keep) t.dispose();
  }
  for (const r of results) {
    opts.log?.(`${r.op.padEnd(15)} → ${r.choice.padEnd(8)} (${Object.entries(r.ms).map(([k, ms]) => `${k} ${ms.toFixed(2)} ms`).join(", ")})`);
  }
  return results;
}
