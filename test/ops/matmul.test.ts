import { suite } from "uvu";
import { getEngine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { matmulRef, randArray } from "../reference/ops.ts";
import { assertClose, FULL_GPU_KERNEL_TESTS, withDispatchLabels, withLimits } from "../lib/harness.ts";
import { float32ToHalfArray, roundToHalf } from "../../engine/half.ts";
import { wideTiles, type MatmulOptions } from "../../engine/ops/matmul.ts";
import { SERIAL_SCRATCH } from "../../engine/ops/conv.ts";
import type { Engine } from "../../engine/engine.ts";

const t = suite("matmul");

/**
 * A `wide` GEMM [batch, M, K] · B with bias, gelu and residual (B shared;
 * [N, K] with transB, else [K, N]; f16 weights rounded in the reference too),
 * checked against the float64 reference; returns the kernels it dispatched.
 */
async function wideChecked(e: Engine, [batch, M, N, K]: number[], transB: boolean, half: boolean, opts: MatmulOptions, seed: number): Promise<string[]> {
  const a = randArray(batch * M * K, seed), b = randArray(N * K, seed + 1), bias = randArray(N, seed + 2), r = randArray(batch * M * N, seed + 3);
  const ta = e.upload(a, [batch, M, K]);
  const tb = half ? e.upload(float32ToHalfArray(b), transB ? [N, K] : [K, N], "f16") : e.upload(b, transB ? [N, K] : [K, N]);
  const tbias = e.upload(bias, [N]), tr = e.upload(r, [batch, M, N]);
  try {
    const { result: y, labels } = await withDispatchLabels(e, () => ops.matmul(ta, tb, { ...opts, transB, kernel: "wide", bias: tbias, act: "gelu", residual: tr }).read());
    const ref = matmulRef(a, half ? Array.from(b, roundToHalf) : b, batch, M, N, K, { transB, bias, act: "gelu", residual: r });
    assertClose(`wide ${JSON.stringify(opts)} ${batch}x${M}x${N}x${K} transB=${transB} f16=${half}`, y, ref, 1e-5 * Math.sqrt(K) + 1e-6, 1e-5);
    return labels;
  } finally {
    for (const x of [ta, tb, tbias, tr]) x.dispose();
  }
}

// Shapes that are not tile multiples: 1, odd sizes, 77, and one long odd dim.
const CASES: [number, number, number, number][] = [
  [1, 1, 1, 1], [1, 3, 5, 7], [2, 77, 33, 65], [1, 4097, 3, 8], [1, 65, 130, 77], [1, 300, 259, 40], [3, 2, 4097, 5], [1, 4, 1280, 320],
];

for (const [batch, M, N, K] of CASES) {
  for (const transB of [false, true]) for (const kernel of (FULL_GPU_KERNEL_TESTS ? ["tiled", "reg", "wide", "t1x1"] : ["tiled", "reg", "t1x1"]) as ("tiled" | "reg" | "wide" | "t1x1")[]) {
    t(`f32 ${batch}x${M}x${N}x${K} transB=${transB} ${kernel}`, async () => {
      const e = await getEngine();
      const a = randArray(batch * M * K, 1), b = randArray(N * K, 2);
      const ta = e.upload(a, [batch, M, K]);
      const tb = e.upload(b, transB ? [N, K] : [K, N]);
      const y = await ops.matmul(ta, tb, { transB, kernel: M <= 4 && kernel === "tiled" ? "small_m" : kernel }).read();
      const ref = matmulRef(a, b, batch, M, N, K, { transB });
      assertClose("matmul", y, ref, 1e-5 * Math.sqrt(K) + 1e-6, 1e-5);
      ta.dispose(); tb.dispose();
    });
  }
}

t("linear with f16 weights, bias, activations and residual (both kernels)", async () => {
  const e = await getEngine();
  for (const kernel of ["tiled", "reg", "wide", "t1x1"] as const) for (const act of ["silu", "gelu", "gelu_tanh", "quick_gelu"] as const) {
    const M = 37, N = 19, K = 45;
    const x = randArray(M * K, 3), w = randArray(N * K, 4), bias = randArray(N, 5), r = randArray(M * N, 6);
    const wHalf = Array.from(w, roundToHalf);
    const tw = e.upload(float32ToHalfArray(w), [N, K], "f16");
    const tb = e.upload(float32ToHalfArray(bias), [N], "f16");
    const y = await ops.matmul(e.upload(x, [M, K]), tw, { transB: true, bias: tb, act, residual: e.upload(r, [M, N]), kernel }).read();
    const ref = matmulRef(x, wHalf, 1, M, N, K, { transB: true, bias: Array.from(bias, roundToHalf), act, residual: r });
    assertClose(`linear ${act}`, y, ref, 2e-5, 1e-5);
  }
});

// Every `wide` tile the device can run, on shapes that are and are not whole
// tiles and vec4s (ALIGNED path: K, and N for B [K, N], multiples of 4), with
// f16 weights (packed on devices without shader-f16) and the fused epilogue.
t("wide: every tile, aligned and unaligned, both B layouts, f16 weights", async () => {
  const e = await getEngine();
  const tiles = wideTiles(e);
  if (tiles.length < 4) throw new Error(`only ${tiles.length} wide tiles fit this device`);
  const shapes: [number, number, number, number][] = [[2, 130, 68, 40], [1, 67, 129, 37], [1, 256, 128, 24], [1, 5, 9, 3]];
  // The default tile in every combination; each other tile once, on an unaligned
  // or a multi-tile shape in turn, rotating the combinations (every pipeline
  // compile costs seconds on CPU drivers).
  const combos: [boolean, boolean][] = [[true, false], [false, true], [true, true], [false, false]];
  const runs: [string, [number, number, number, number], boolean, boolean][] = [];
  for (const s of shapes) for (const [transB, half] of combos) runs.push([tiles[0], s, transB, half]);
  tiles.slice(1).forEach((tile, i) => runs.push([tile, shapes[i % 2], ...combos[i % combos.length]]));
  // other legs: one aligned packed/native-f16 case and one unaligned f32 case
  for (const [tile, [batch, M, N, K], transB, half] of FULL_GPU_KERNEL_TESTS ? runs : [runs[6], runs[1]]) {
    await wideChecked(e, [batch, M, N, K], transB, half, { tile }, 21);
  }
});

t("wide: a malformed or oversized tile is refused with a clear error", async () => {
  const e = await getEngine();
  const x = e.upload(randArray(8 * 8, 1), [8, 8]);
  // 12x7: not whole threads; 8x64k4t8: K steps of 4; 8x64k8t8: 8 threads would stage 16 vec4s of B; 512x512: 4096 threads
  for (const [tile, code] of [["12x7k3t8", "E_BAD_PARAM"], ["8x64k4t8", "E_BAD_PARAM"], ["8x64k8t8", "E_BAD_PARAM"], ["512x512k16t8", "E_LIMITS"]] as const) {
    let got = "";
    try { ops.matmul(x, x, { kernel: "wide", tile }); } catch (err: any) { got = err.code; }
    if (got !== code) throw new Error(`${tile}: expected ${code}, got '${got}'`);
  }
  x.dispose();
});

// Split-K: the `wide` pass writes each part's raw sums to a workspace and
// `split_sum` adds them and applies bias, activation and residual. Parts of
// unequal length (the last one ends inside a K step), batches, both B layouts.
t("wide split-K: 2, 3 and 4 parts match the reference, epilogue fused once", async () => {
  const e = await getEngine();
  const tile = wideTiles(e)[0];
  // the last case: 4 parts of a K of 12, so parts start past K and must sum nothing
  const cases: [number, number, number, number, number, boolean, boolean][] = [[2, 2, 67, 130, 600, true, true], [3, 1, 33, 72, 300, true, false], [4, 1, 40, 64, 256, false, false], [4, 1, 5, 9, 12, true, false]];
  for (const [split, batch, M, N, K, transB, half] of cases) {
    const labels = await wideChecked(e, [batch, M, N, K], transB, half, { tile, split }, 31);
    if (!labels.some((l) => l.includes(`split${split}`)) || !labels.some((l) => l.startsWith("matmul:split_sum"))) throw new Error(`split ${split}: dispatched ${labels.join(", ")}`);
  }
  let got = "";
  try { ops.matmul(e.upload(randArray(64, 1), [8, 8]), e.upload(randArray(64, 2), [8, 8]), { kernel: "wide", split: 5 }); } catch (err: any) { got = err.code; }
  if (got !== "E_BAD_PARAM") throw new Error(`split 5: expected E_BAD_PARAM, got '${got}'`);
});

// Split tails (wide_hyb): the grid's first block rows whole, the last `tail`
// in parts whose raw sums split_sum adds into their rows. Parts of unequal
// length, 2 to 8 parts, both B layouts, f16 weights, a batch of A against a
// shared B (one GEMM of batch·M rows); shapes wide_hyb cannot run (ragged,
// batched B) take plain split-K; a malformed plan is refused.
t("wide split tail: whole rows plus a tail in parts, matches the reference", async () => {
  const e = await getEngine();
  const tile = "64x64k8t8";
  const cases: [number, number, number, number, number, number, boolean, boolean, string][] = [
    // batch, M, N, K, split, tail, transB, f16, the dispatch expected
    [1, 256, 128, 200, 2, 1, true, false, "tail1x2"], [1, 320, 64, 96, 3, 3, false, true, "tail3x3"],
    [1, 256, 128, 72, 7, 2, true, true, "tail2x7"], [2, 128, 64, 64, 8, 1, true, false, "tail1x8"],
    [1, 250, 128, 200, 2, 1, true, false, "split2"], // rows not whole blocks
  ];
  const selected = FULL_GPU_KERNEL_TESTS ? cases : [cases[2], cases[3]];
  for (const [batch, M, N, K, split, tail, transB, half, want] of selected) {
    const labels = await wideChecked(e, [batch, M, N, K], transB, half, { tile, split, tail }, 41);
    if (!labels.some((l) => l.endsWith(`:${want}`)) || !labels.some((l) => l.startsWith("matmul:split_sum"))) throw new Error(`tail ${tail} in ${split}: dispatched ${labels.join(", ")}`);
  }
  // a batched B is not one GEMM of batch·M rows: plain split-K
  const ta = e.upload(randArray(2 * 64 * 32, 45), [2, 64, 32]), tb = e.upload(randArray(2 * 64 * 32, 46), [2, 64, 32]);
  const { result: y, labels } = await withDispatchLabels(e, () => ops.matmul(ta, tb, { transB: true, kernel: "wide", tile, split: 2, tail: 1 }).read());
  assertClose("batched B with a tail plan", y, matmulRef(await ta.read(), await tb.read(), 2, 64, 64, 32, { transB: true, bBatched: true }), 1e-4, 1e-5);
  if (!labels.some((l) => l.endsWith(":split2"))) throw new Error(`batched B: dispatched ${labels.join(", ")}`);
  for (const [split, tail] of [[1, 2], [9, 2], [2, 0]]) {
    let got = "";
    try { ops.matmul(ta, tb, { transB: true, kernel: "wide", tile, split, tail }); } catch (err: any) { got = err.code; }
    if (got !== "E_BAD_PARAM") throw new Error(`split ${split} tail ${tail}: expected E_BAD_PARAM, got '${got}'`);
  }
  ta.dispose(); tb.dispose();
});

// Serial tails (wide_ser): the first blocks of C whole, the last `serialTail`
// (any count of blocks, not only whole block rows, and not only shapes the
// blocks cover exactly) in parts that add their sums inside the dispatch.
// 2 to 8 parts, parts past K, both B layouts, f16 weights, a batch of A
// against a shared B, a tail larger than C (every block in parts), a grid
// folded into 2-D; one dispatch, run twice (the scratch must be left zeroed
// for the next), and the scratch all zeros afterwards; a batched B takes
// plain split-K; malformed requests are refused.
t("wide serial tail: whole blocks plus a tail in parts added in the dispatch, matches the reference", async () => {
  const e = await getEngine();
  const tile = "64x64k8t8";
  const cases: [number, number, number, number, number, number, boolean, boolean, string][] = [
    // batch, M, N, K, split, serialTail, transB, f16, the dispatch expected
    [1, 256, 128, 200, 2, 3, true, false, "serial3x2"], [1, 250, 130, 72, 7, 5, false, true, "serial5x7"],
    [2, 96, 64, 64, 8, 100, true, false, "serial3x8"], [1, 320, 192, 96, 3, 7, false, false, "serial7x3"],
  ];
  const selected = FULL_GPU_KERNEL_TESTS ? cases : [cases[1], cases[2]];
  for (const [batch, M, N, K, split, serialTail, transB, half, want] of selected) {
    for (let run = 0; run < 2; run++) {
      const labels = await wideChecked(e, [batch, M, N, K], transB, half, { tile, split, serialTail }, 51 + run);
      if (labels.length !== 1 || !labels[0].endsWith(`:${want}`)) throw new Error(`serial tail ${serialTail} in ${split}: dispatched ${labels.join(", ")}`);
    }
    const scratch = await e.zeroScratch(SERIAL_SCRATCH, 4).read();
    const dirty = scratch.findIndex((v) => v !== 0);
    if (dirty >= 0) throw new Error(`serial tail ${serialTail} in ${split}: scratch word ${dirty} is ${scratch[dirty]} after the dispatch`);
  }
  // more workgroups than a grid dimension holds: folded into rows, the padding idle
  const folded = await withLimits(e, { maxComputeWorkgroupsPerDimension: 5 }, () => wideChecked(e, [1, 192, 128, 64], true, false, { tile, split: 3, serialTail: 4 }, 55));
  if (!folded[0]?.endsWith(":serial4x3")) throw new Error(`folded grid: dispatched ${folded.join(", ")}`);
  // a batched B is not one GEMM of batch·M rows: plain split-K
  const ta = e.upload(randArray(2 * 64 * 32, 56), [2, 64, 32]), tb = e.upload(randArray(2 * 64 * 32, 57), [2, 64, 32]);
  const { result: y, labels } = await withDispatchLabels(e, () => ops.matmul(ta, tb, { transB: true, kernel: "wide", tile, split: 2, serialTail: 1 }).read());
  assertClose("batched B with a serial tail plan", y, matmulRef(await ta.read(), await tb.read(), 2, 64, 64, 32, { transB: true, bBatched: true }), 1e-4, 1e-5);
  if (!labels.some((l) => l.endsWith(":split2"))) throw new Error(`batched B: dispatched ${labels.join(", ")}`);
  for (const opts of [{ split: 1, serialTail: 2 }, { split: 9, serialTail: 2 }, { split: 2, serialTail: 0 }, { split: 2, serialTail: 2, tail: 1 }]) {
    let got = "";
    try { ops.matmul(ta, tb, { transB: true, kernel: "wide", tile, ...opts }); } catch (err: any) { got = err.code; }
    if (got !== "E_BAD_PARAM") throw new Error(`${JSON.stringify(opts)}: expected E_BAD_PARAM, got '${got}'`);
  }
  ta.dispose(); tb.dispose();
});

t("batched B (attention-like)", async () => {
  const e = await getEngine();
  const batch = 3, M = 17, N = 9, K = 70;
  const a = randArray(batch * M * K, 7), b = randArray(batch * N * K, 8);
  const y = await ops.matmul(e.upload(a, [batch, M, K]), e.upload(b, [batch, N, K]), { transB: true }).read();
  assertClose("bmm", y, matmulRef(a, b, batch, M, N, K, { transB: true, bBatched: true }), 1e-5, 1e-5);
});

t("shared A, batched B (1x1 conv as W · X[n])", async () => {
  const e = await getEngine();
  const batch = 2, M = 6, N = 67, K = 9; // M = out channels, N = pixels, K = in channels
  const w = randArray(M * K, 9), x = randArray(batch * K * N, 10);
  const y = ops.matmul(e.upload(w, [M, K]), e.upload(x, [batch, K, N]));
  if (y.shape.join() !== [batch, M, N].join()) throw new Error(`shape ${y.shape}`);
  const out = await y.read();
  for (let b = 0; b < batch; b++) {
    const ref = matmulRef(w, x.subarray(b * K * N, (b + 1) * K * N), 1, M, N, K);
    assertClose(`batch ${b}`, out.subarray(b * M * N, (b + 1) * M * N), ref, 1e-5, 1e-5);
  }
});

t("splits over batches, rows and columns when operands exceed the binding limit", async () => {
  const e = await getEngine();
  await withLimits(e, { maxStorageBufferBindingSize: 4096 }, async () => {
    for (const kernel of ["tiled", "reg", "wide", "t1x1"] as const) for (const transB of [true, false]) {
      const batch = 2, M = 37, N = transB ? 300 : 20, K = 19;
      const a = randArray(batch * M * K, 11), b = randArray(N * K, 12), bias = randArray(N, 13), r = randArray(batch * M * N, 14);
      const y = await ops.matmul(e.upload(a, [batch, M, K]), e.upload(b, transB ? [N, K] : [K, N]), { transB, bias: e.upload(bias, [N]), residual: e.upload(r, [batch, M, N]), act: "silu", kernel }).read();
      assertClose(`split ${kernel} transB=${transB}`, y, matmulRef(a, b, batch, M, N, K, { transB, bias, act: "silu", residual: r }), 1e-5, 1e-5);
    }
  });
});

t("rejects mismatched shapes with E_SHAPE", async () => {
  const e = await getEngine();
  let code = "";
  try { ops.matmul(e.upload(new Float32Array(6), [2, 3]), e.upload(new Float32Array(8), [4, 2])); } catch (err: any) { code = err.code; }
  if (code !== "E_SHAPE") throw new Error(`expected E_SHAPE, got '${code}'`);
});

t("every kernel leaves no temporaries behind (bias, activation, residual)", async () => {
  const e = await getEngine();
  const x = e.upload(randArray(77 * 33, 1), [1, 77, 33]), w = e.upload(randArray(65 * 33, 2), [65, 33]);
  const bias = e.upload(randArray(65, 3), [65]), res = e.upload(randArray(77 * 65, 4), [1, 77, 65]);
  for (const kernel of ["tiled", "reg", "wide", "t1x1"] as const) {
    await e.sync();
    const before = e.memory().live;
    ops.matmul(x, w, { transB: true, bias, act: "gelu", residual: res, kernel }).dispose();
    await e.sync();
    if (e.memory().live !== before) throw new Error(`${kernel}: ${e.memory().live - before} pool bytes still in use`);
  }
});

t.run();
