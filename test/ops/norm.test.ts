import { suite } from "uvu";
import { getEngine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { randArray } from "../reference/ops.ts";
import { groupNormRef, layerNormRef, softmaxRef } from "../reference/norm.ts";
import { ErrorTally, withEnv, withLimits } from "../lib/harness.ts";
import { GROUP_NORM_KERNELS, LAYER_NORM_KERNELS, type GroupNormKernel } from "../../engine/ops/norm.ts";
import { float32ToHalfArray, roundToHalf } from "../../engine/half.ts";
import type { Engine } from "../../engine/engine.ts";
import type { Activation } from "../../engine/ops/elementwise.ts";

const t = suite("norm");

// The worst errors seen per op, printed once at the end (the numbers the engine note quotes).
const errors = new ErrorTally();
t.after(() => errors.print());

/** Uploads `a` as f16 (when half) and returns the values the GPU sees. */
function param(e: Engine, a: Float32Array, half: boolean) {
  if (!half) return { t: e.upload(a, [a.length]), v: a };
  return { t: e.upload(float32ToHalfArray(a), [a.length], "f16"), v: Float32Array.from(a, roundToHalf) };
}

// [shape, groups, affine, act]; shapes are not tile multiples; the 4097 cases
// make a group longer than one reduction chunk (the merge path).
const GN_CASES: [number[], number, boolean, Activation][] = [
  [[1, 1, 1], 1, true, "none"],
  [[2, 6], 3, true, "none"],
  [[1, 32, 7, 9], 32, false, "none"],
  [[2, 64, 5, 5], 32, true, "silu"],
  [[3, 6, 77], 2, true, "none"],
  [[1, 8, 4097], 4, true, "silu"],
  [[1, 3, 2, 4097], 1, false, "none"],
  // planes of a multiple of 256 elements: gn_apply's ALIGNED path (per-step channel)
  [[1, 64, 16, 16], 32, true, "silu"],
  [[2, 6, 512], 3, true, "none"],
  [[1, 4, 8, 96], 2, false, "silu"],
  // planes shorter than a gn_apply run (16): runs cross several planes
  [[2, 10, 3], 5, true, "silu"],
  [[1, 3, 1, 1], 3, true, "none"],
  // groups of several 8 192-element gn_stats chunks, the last one partial; planes not multiples of 16
  [[1, 2, 3, 8200], 1, true, "silu"],
  [[2, 4, 16384], 2, false, "none"],
  // a group just over gn_fused's limit (2^18 elements): split even when fused is asked for
  [[1, 2, 131076], 1, false, "none"],
];

// Each case on both kernels (fused takes planes of whole vec4s; the others fall back to split).
for (const [shape, groups, affine, act] of GN_CASES) {
  for (const [half, impl] of [[false, "split"], [true, "split"], [false, "fused"], [true, "fused"]] as [boolean, GroupNormKernel][]) {
    if (half && !affine) continue;
    t(`groupNorm[${impl}] ${JSON.stringify(shape)} g=${groups} ${affine ? (half ? "f16 affine" : "f32 affine") : "plain"} ${act}`, async () => {
      const e = await getEngine();
      const [N, C] = shape;
      const S = shape.slice(2).reduce((a, b) => a * b, 1);
      const x = randArray(N * C * S, 11, 2);
      for (let i = 0; i < x.length; i++) x[i] += 0.5; // a non-zero mean
      const w = affine ? param(e, randArray(C, 12), half) : null;
      const b = affine ? param(e, randArray(C, 13), half) : null;
      const tx = e.upload(x, shape);
      const y = ops.groupNorm(tx, groups, w?.t, b?.t, 1e-5, act, impl);
      if (y.shape.join() !== shape.join()) throw new Error(`shape ${y.shape}`);
      const got = await y.read();
      errors.check("groupNorm", "", got, groupNormRef(x, N, C, S, groups, w?.v, b?.v, 1e-5, act), 2e-5, 2e-5);
      tx.dispose(); y.dispose(); w?.t.dispose(); b?.t.dispose();
    });
  }
}

// Both group_norm merges (a thread per row: CPU default; a workgroup per row:
// GPU default) on multi-chunk groups, vec4 and scalar partials, a large mean.
t("groupNorm: thread and workgroup merges agree with the reference", async () => {
  const e = await getEngine();
  for (const merge of ["thread", "workgroup"]) {
    await withEnv({ SSD_DEPTH_KERNEL_GROUP_NORM_MERGE: merge }, async () => {
      for (const [N, C, S, g, mean] of [[1, 6, 8200, 2, 0.5], [2, 4, 16384, 2, 0.5], [1, 3, 8193, 1, 300], [2, 8, 33, 4, 300], [2, 10, 3, 5, 0]]) {
        const x = randArray(N * C * S, 31, 2);
        for (let i = 0; i < x.length; i++) x[i] = Math.fround(x[i] + mean);
        const tx = e.upload(x, [N, C, S]);
        const got = await ops.groupNorm(tx, g, undefined, undefined, 1e-6, "none", "split").read();
        errors.check(`groupNorm (${merge} merge)`, `[${N},${C},${S}] mean ${mean}`, got, groupNormRef(x, N, C, S, g, undefined, undefined, 1e-6), mean > 1 ? 2e-4 : 2e-5, 0);
        tx.dispose();
      }
    });
  }
});

// A large mean with small spread: E[x²]−E[x]² in f32 loses most digits here
// (the naive formula's error is ~1e-2 on these values); Welford + Chan keeps ~1e-5.
t("groupNorm is stable for a large mean (single and multi-chunk groups, both kernels)", async () => {
  const e = await getEngine();
  for (const impl of GROUP_NORM_KERNELS) {
    for (const [N, C, S, g] of [[2, 8, 33, 4], [1, 4, 4097, 1], [1, 3, 8193, 1], [2, 8, 36, 4], [1, 4, 8192, 1]]) {
      const x = randArray(N * C * S, 21);
      for (let i = 0; i < x.length; i++) x[i] = Math.fround(300 + x[i]);
      const tx = e.upload(x, [N, C, S]);
      const got = await ops.groupNorm(tx, g, undefined, undefined, 1e-6, "none", impl).read();
      errors.check(`groupNorm[${impl}] (mean 300)`, `[${N},${C},${S}]`, got, groupNormRef(x, N, C, S, g, undefined, undefined, 1e-6), 2e-4, 0);
      tx.dispose();
    }
  }
});

t("groupNorm reads f16 inputs (native or packed) and writes f16 activations where native, on both kernels", async () => {
  const e = await getEngine();
  for (const [[N, C, S, g], impl] of GROUP_NORM_KERNELS.flatMap((k) => [[1, 6, 1029, 3], [2, 4, 256, 2]].map((c) => [c, k] as const))) {
    const x = Float32Array.from(randArray(N * C * S, 41, 2), roundToHalf);
    const w = param(e, randArray(C, 42), true), b = param(e, randArray(C, 43), false);
    const tx = e.upload(float32ToHalfArray(x), [N, C, S], "f16");
    const ref = groupNormRef(x, N, C, S, g, w.v, b.v, 1e-5, "silu");
    errors.check("groupNorm", `f16 input (${impl})`, await ops.groupNorm(tx, g, w.t, b.t, 1e-5, "silu", impl).read(), ref, 2e-5, 2e-5);
    if (e.gpu.f16) {
      const saved = e.precision;
      e.precision = { ...saved, activations: "f16" };
      try {
        const y = ops.groupNorm(tx, g, w.t, b.t, 1e-5, "silu", impl);
        if (y.dtype !== "f16") throw new Error(`dtype ${y.dtype}`);
        // one f16 rounding of the result
        errors.check("groupNorm", "f16 output", await y.read(), ref, 1e-3, 1e-3);
      } finally {
        e.precision = saved;
      }
    }
    tx.dispose(); w.t.dispose(); b.t.dispose();
  }
});

t("groupNorm, layerNorm and softmax split over windows when bindings and grids are limited", async () => {
  const e = await getEngine();
  await withLimits(e, { maxStorageBufferBindingSize: 16384, maxComputeWorkgroupsPerDimension: 7 }, async () => {
    // 36 012 f32 = 141 KiB against 16 KiB bindings; a group (6 002) spans windows
    const [N, C, S, g] = [2, 6, 3001, 3];
    const x = randArray(N * C * S, 31, 3);
    const w = param(e, randArray(C, 32), true), b = param(e, randArray(C, 33), true);
    const tx = e.upload(x, [N, C, S]);
    const got = await ops.groupNorm(tx, g, w.t, b.t, 1e-5, "silu").read();
    errors.check("groupNorm", "limited", got, groupNormRef(x, N, C, S, g, w.v, b.v, 1e-5, "silu"), 2e-5, 2e-5);
    // aligned planes (S = 1 024): windows of 4 096 elements start on plane steps
    {
      const [N2, C2, S2, g2] = [2, 6, 1024, 3];
      const x2 = randArray(N2 * C2 * S2, 37, 2);
      const tx2 = e.upload(x2, [N2, C2, S2]);
      errors.check("groupNorm", "limited, aligned", await ops.groupNorm(tx2, g2, w.t, b.t, 1e-5, "silu").read(), groupNormRef(x2, N2, C2, S2, g2, w.v, b.v, 1e-5, "silu"), 2e-5, 2e-5);
      tx2.dispose();
    }
    // rows of 333 (two per window), more rows than the folded grid's x extent
    const D = 333, rows = 50;
    const lx = randArray(rows * D, 34, 4);
    const lw = param(e, randArray(D, 35), true), lb = param(e, randArray(D, 36), false);
    const tl = e.upload(lx, [rows, D]);
    errors.check("layerNorm", "limited", await ops.layerNorm(tl, lw.t, lb.t, 1e-5).read(), layerNormRef(lx, D, lw.v, lb.v, 1e-5), 2e-5, 2e-5);
    errors.check("softmax", "limited", await ops.softmax(tl).read(), softmaxRef(lx, D), 1e-7, 1e-5);
    tx.dispose(); tl.dispose();
  });
});

const LN_CASES: [number, number][] = [[1, 1], [7, 4], [77, 77], [5, 320], [3, 768], [2, 2048], [2, 4097], [4097, 5], [130, 640]];
// Each case on both kernels: a workgroup per row (GPUs), a thread per row (CPU drivers; vec4s where D % 4 = 0).
for (const [rows, D] of LN_CASES) {
  for (const [mode, impl] of LAYER_NORM_KERNELS.flatMap((k) => (["plain", "f32", "f16"] as const).map((m) => [m, k] as const))) {
    t(`layerNorm[${impl}] [${rows}, ${D}] ${mode}`, async () => {
      const e = await getEngine();
      const x = randArray(rows * D, 41, 2);
      for (let i = 0; i < x.length; i++) x[i] += 1.5;
      const w = mode === "plain" ? null : param(e, randArray(D, 42), mode === "f16");
      const b = mode === "plain" ? null : param(e, randArray(D, 43), mode === "f16");
      const tx = e.upload(x, [1, rows, D]);
      const got = await ops.layerNorm(tx, w?.t, b?.t, 1e-5, impl).read();
      errors.check("layerNorm", "", got, layerNormRef(x, D, w?.v, b?.v, 1e-5), 2e-5, 2e-5);
      tx.dispose(); w?.t.dispose(); b?.t.dispose();
    });
  }
}

const SM_CASES: [number, number, number][] = [[1, 1, 1], [3, 5, 1], [77, 77, 8], [2, 4097, 4], [4097, 3, 1], [4, 300, 200]];
for (const [rows, D, scale] of SM_CASES) {
  t(`softmax [${rows}, ${D}] x${scale}`, async () => {
    const e = await getEngine();
    // scale 200 makes exp(x) overflow f32 unless the row max is subtracted
    const x = randArray(rows * D, 51, scale);
    const tx = e.upload(x, [rows, D]);
    const got = await ops.softmax(tx).read();
    errors.check("softmax", "", got, softmaxRef(x, D), 1e-7, 1e-5);
    tx.dispose();
  });
}

t("groupNorm, layerNorm and softmax fold grids over 65535-style limits", async () => {
  const e = await getEngine();
  await withLimits(e, { maxComputeWorkgroupsPerDimension: 12 }, async () => {
    // 32 stats chunks, 16 merge rows, 257 apply workgroups (folded into 3-D), 77 rows: all above 12
    const [N, C, S, g] = [2, 8, 4097, 8];
    const x = randArray(N * C * S, 61, 2);
    const w = param(e, randArray(C, 62), false), b = param(e, randArray(C, 63), false);
    const tx = e.upload(x, [N, C, S]);
    errors.check("groupNorm", "folded", await ops.groupNorm(tx, g, w.t, b.t, 1e-5).read(), groupNormRef(x, N, C, S, g, w.v, b.v, 1e-5), 2e-5, 2e-5);
    const D = 19, rows = 77;
    const lx = randArray(rows * D, 64, 3);
    const tl = e.upload(lx, [rows, D]);
    errors.check("layerNorm", "folded", await ops.layerNorm(tl, undefined, undefined, 1e-5).read(), layerNormRef(lx, D, undefined, undefined, 1e-5), 2e-5, 2e-5);
    errors.check("softmax", "folded", await ops.softmax(tl).read(), softmaxRef(lx, D), 1e-7, 1e-5);
    tx.dispose(); tl.dispose();
  });
});

t("norms reject bad shapes with E_SHAPE", async () => {
  const e = await getEngine();
  const x = e.upload(new Float32Array(12), [1, 6, 2]);
  for (const f of [() => ops.groupNorm(x, 4, undefined, undefined, 1e-5), () => ops.groupNorm(x, 3, e.upload(new Float32Array(5), [5]), undefined, 1e-5),
    () => ops.layerNorm(x, e.upload(new Float32Array(6), [6]), undefined, 1e-5)]) {
    let code = "";
    try { f(); } catch (err: any) { code = err.code; }
    if (code !== "E_SHAPE") throw new Error(`expected E_SHAPE, got '${code}'`);
  }
  x.dispose();
});

t.run();
