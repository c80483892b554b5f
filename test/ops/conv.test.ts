import { suite } from "uvu";
import { getEngine, type Engine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { randArray } from "../reference/ops.ts";
import { conv2dRef, convTranspose2dRef, maxPool2dRef, standardizeRef, pad2dRef } from "../reference/conv.ts";
import { assertClose, ErrorTally, withEnv, withDispatchLabels, withLimits, withOverrides, FULL_GPU_KERNEL_TESTS } from "../lib/harness.ts";
import { parseWideTile } from "../../engine/ops/matmul.ts";
import { float32ToHalfArray, roundToHalf } from "../../engine/half.ts";
import type { Activation } from "../../engine/ops/elementwise.ts";
import { convKernels, convWideTiles, SERIAL_SCRATCH, type ConvKernel } from "../../engine/ops/conv.ts";
import { Profiler } from "../../engine/profiler.ts";
import { record } from "../../engine/record.ts";

// Every case runs on each kernel this device can run (sg needs subgroups of
// at least 8: lavapipe has them, SwiftShader not), whatever its default.
// (wide: all of its tests on the full legs, the representative subset's first case elsewhere)
const KERNELS = convKernels(await getEngine()).filter((k) => k !== "wide" || FULL_GPU_KERNEL_TESTS);
// conv2d_wide (a GPU kernel) compiles slowly on CPU drivers: it runs a
// representative subset of CASES below, the split and grid-limit tests, and
// every tile, rather than every case of the matrix.
const MATRIX = KERNELS.filter((k) => k !== "wide");
const REG_KERNELS = KERNELS.filter((k) => k === "reg" || k === "sg");
// `wide` hands grids of few workgroups to `tiled` unless a tile is forced: force one, so these cases run conv2d_wide
const WIDE_TILE = convWideTiles(await getEngine())[0];
const tileFor = (k: ConvKernel) => (k === "wide" ? WIDE_TILE : undefined);

const t = suite("conv");

// Largest error seen per op, printed at the end (the numbers the engine note quotes).
const errors = new ErrorTally();

interface ConvCase {
  x: [number, number, number, number]; O: number; k: [number, number]; stride?: number; pad?: number; dil?: number; groups?: number;
  bias?: boolean; act?: Activation; res?: boolean; f16?: boolean;
}

// Shapes that are not tile multiples (1, odd, 77, one long odd dim), kernels
// 1/3/4/7, strides 1/2, padding 0/1/3, plus dilation and groups.
const CASES: ConvCase[] = [
  { x: [1, 1, 1, 1], O: 1, k: [1, 1] },
  { x: [1, 3, 5, 7], O: 4, k: [3, 3], pad: 1 },
  { x: [2, 5, 17, 13], O: 77, k: [3, 3], stride: 2, pad: 1, bias: true, act: "relu" },
  { x: [1, 4, 7, 4097], O: 3, k: [3, 3], pad: 1, bias: true },
  { x: [1, 3, 31, 29], O: 8, k: [7, 7], stride: 2, pad: 3, f16: true },
  { x: [1, 6, 16, 15], O: 5, k: [4, 4], stride: 2, pad: 1, bias: true, f16: true },
  { x: [2, 33, 9, 11], O: 65, k: [1, 1], bias: true, act: "silu", res: true },
  { x: [2, 33, 9, 11], O: 65, k: [1, 1], act: "gelu", res: true, f16: true },
  { x: [1, 9, 4097, 1], O: 2, k: [1, 1], stride: 2 },
  // 1×1 over planes of a multiple of 4 pixels: reg/sg read runs of 4 pixels as vec4s (PX4)
  { x: [2, 33, 8, 10], O: 65, k: [1, 1], bias: true, act: "silu", res: true },
  { x: [1, 8, 6, 6], O: 6, k: [1, 1], groups: 2, bias: true, f16: true },
  // 1×1 with input channels a multiple of 4, with and without PX4
  { x: [1, 40, 4, 6], O: 20, k: [1, 1], bias: true, act: "gelu", res: true },
  { x: [1, 12, 5, 7], O: 17, k: [1, 1], bias: true, f16: true },
  { x: [1, 4, 12, 10], O: 6, k: [3, 2], pad: 2, dil: 2, bias: true },
  { x: [2, 6, 9, 8], O: 18, k: [3, 3], pad: 1, groups: 2, bias: true, res: true },
  { x: [1, 4, 9, 8], O: 6, k: [3, 3], pad: 1, groups: 2, bias: true },
  { x: [1, 5, 8, 9], O: 5, k: [3, 3], stride: 2, pad: 1, groups: 5, bias: true },
  { x: [1, 64, 20, 21], O: 80, k: [3, 3], pad: 1, bias: true, act: "silu", res: true, f16: true },
];

async function runConvCase(e: Engine, c: ConvCase, seed: number, label: string, kernel: ConvKernel, split?: number, serialTail?: number) {
  const [N, C, H, W] = c.x;
  const groups = c.groups ?? 1;
  const [kH, kW] = c.k;
  const wShape = [c.O, C / groups, kH, kW];
  const x = randArray(N * C * H * W, seed);
  let w = randArray(wShape.reduce((a, b) => a * b), seed + 1, 1 / Math.sqrt((C / groups) * kH * kW));
  let bias = c.bias ? randArray(c.O, seed + 2) : undefined;
  if (c.f16) {
    w = Float32Array.from(w, roundToHalf);
    if (bias) bias = Float32Array.from(bias, roundToHalf);
  }
  const s = c.stride ?? 1, p = c.pad ?? 0, d = c.dil ?? 1;
  const ref0 = conv2dRef(x, c.x, w, wShape, { stride: [s, s], padding: [p, p], dilation: [d, d], groups, bias, act: c.act });
  const res = c.res ? randArray(ref0.y.length, seed + 3) : undefined;
  const ref = res ? ref0.y.map((v, i) => v + res[i]) : ref0.y;
  const dt = c.f16 ? "f16" : "f32";
  const tw = c.f16 ? e.upload(float32ToHalfArray(w), wShape, "f16") : e.upload(w, wShape);
  const tb = bias ? (c.f16 ? e.upload(float32ToHalfArray(bias), [c.O], "f16") : e.upload(bias, [c.O])) : undefined;
  const y = ops.conv2d(e.upload(x, c.x), tw, {
    stride: s, padding: p, dilation: d, groups, bias: tb, act: c.act, residual: res ? e.upload(res, ref0.shape) : undefined, kernel, tile: tileFor(kernel), split, serialTail,
  });
  if (y.shape.join() !== ref0.shape.join()) throw new Error(`${label}: shape [${y.shape}] expected [${ref0.shape}] (${dt})`);
  const K = (C / groups) * kH * kW;
  errors.check("conv2d", label, await y.read(), ref, 2e-6 * Math.sqrt(K) + 2e-6, 1e-5);
}

for (const kernel of MATRIX) {
  CASES.forEach((c, i) => {
    const label = `conv2d[${kernel}] x[${c.x}] O=${c.O} k=${c.k.join("x")} s=${c.stride ?? 1} p=${c.pad ?? 0}` +
      `${c.dil ? ` d=${c.dil}` : ""}${c.groups ? ` g=${c.groups}` : ""}${c.bias ? " bias" : ""}${c.act ? ` ${c.act}` : ""}${c.res ? " +res" : ""} ${c.f16 ? "f16" : "f32"} weights`;
    t(label, async () => {
      const e = await getEngine();
      await e.scope(() => runConvCase(e, c, 100 + 10 * i, label, kernel));
    });
  });
}

// conv2d_wide on the cases that reach its distinct paths: strided with more
// channels than a tile row, 1×1 with bias and residual (without bias: matmul's
// wide), groups, f16 weights with a residual, and dilated non-square taps.
const WIDE_CASES = [2, 6, 7, 15, 17].map((i) => CASES[i]);
t("conv2d[wide] on a representative subset of the cases", async () => {
  const e = await getEngine();
  const cases = [...WIDE_CASES, { x: [1, 4, 12, 10], O: 20, k: [3, 2], pad: 2, dil: 2, bias: true } as ConvCase];
  for (const [j, c] of (FULL_GPU_KERNEL_TESTS ? cases : cases.slice(-1)).entries()) {
    await e.scope(() => runConvCase(e, c, 1700 + 10 * j, `conv2d[wide] x[${c.x}] O=${c.O}`, "wide"));
  }
});

// A grid of few conv2d_wide workgroups (under 256 of the tuned tile) goes to
// the tile of half its width where that makes 256, else to the 64×64 `tiled`
// kernel (dispatch label `conv2d`), unless a tile is forced, by option or by
// env (host logic: on the full legs only).
if (FULL_GPU_KERNEL_TESTS) t("conv2d[wide]: small grids on a narrower tile or tiled unless a tile is forced", async () => {
  const e = await getEngine();
  const kernelsOf = async (opts: { tile?: string }, xs = [1, 8, 6, 6], ws = [16, 8, 3, 3]) => {
    const p = new Profiler(e, { detail: true }).start();
    await e.scope(async () => {
      const x = e.upload(randArray(xs.reduce((a, b) => a * b), 1), xs);
      const w = e.upload(randArray(ws.reduce((a, b) => a * b), 2), ws);
      const y = await ops.conv2d(x, w, { padding: (ws[2] - 1) / 2, kernel: "wide", ...opts }).read();
      const ref = await ops.conv2d(x, w, { padding: (ws[2] - 1) / 2, kernel: "tiled" }).read();
      assertClose(`conv2d[wide] ${xs} * ${ws}`, y, ref, 1e-5, 1e-5);
    });
    return (await p.report()).map((r) => r.op.split(" ")[0]).join();
  };
  // the tuned tile's half-width twin: a 3×3 conv over one row of 256 of its blocks' pixels (1×1 convs run as matmuls)
  const { tunedChoice } = await import("../../engine/autotune.ts");
  const tuned = tunedChoice(e, "conv_tile", convWideTiles(e));
  const m = /^(\d+)x(\d+)(k\d+t\d+)$/.exec(tuned)!;
  const half = `${m[1]}x${Number(m[2]) / 2}${m[3]}`;
  if (convWideTiles(e).includes(half)) {
    const mid = await kernelsOf({}, [1, 8, 1, 256 * (Number(m[2]) / 2)], [16, 8, 3, 3]);
    if (!mid.includes(`conv2d.wide:${half}`)) throw new Error(`a grid of 128 ${tuned} blocks ran ${mid}, expected ${half}`);
  }
  const tiled = await kernelsOf({});
  const byOption = await kernelsOf({ tile: WIDE_TILE });
  const byEnv = await withEnv({ SSD_DEPTH_KERNEL_CONV_TILE: WIDE_TILE }, () => kernelsOf({}));
  if (!/^conv2d\b/.test(tiled) || tiled.includes("wide")) throw new Error(`small grid ran ${tiled}, expected the tiled kernel`);
  if (!byOption.includes("conv2d.wide") || !byEnv.includes("conv2d.wide")) throw new Error(`forced tile ran ${byOption} (option), ${byEnv} (env)`);
});

// Serial split-K on conv2d_wide (shaders/wide_serial.wgsl): 2 and 4 parts of
// K = channels × taps, the last part ending inside a K step, with bias,
// activation and residual applied once by the part that adds the sums; one
// dispatch, and the shared scratch all zeros afterwards. The legs other than
// Node + lavapipe run one case: Deno's naga once panicked building this entry.
t("conv2d[wide] serial split-K: 2 and 4 parts, one dispatch, scratch left zeroed", async () => {
  const e = await getEngine();
  const cases: [ConvCase, number][] = [
    [{ x: [2, 20, 9, 11], O: 24, k: [3, 3], pad: 1, bias: true, act: "silu", res: true }, 2],
    [{ x: [1, 21, 8, 8], O: 70, k: [3, 3], stride: 2, pad: 1, bias: true, f16: true }, 4],
    [{ x: [1, 300, 5, 6], O: 9, k: [1, 1], bias: true, act: "gelu" }, 4],
  ];
  for (const [i, [c, split]] of cases.entries()) {
    if (!FULL_GPU_KERNEL_TESTS && i !== 2) continue;
    const labels: string[] = [];
    e.onDispatch = (label, _pass, phase) => { if (phase === "begin") labels.push(label); };
    try {
      await e.scope(() => runConvCase(e, c, 900 + 10 * i, `conv2d[wide] serial ${split} x[${c.x}] O=${c.O} k=${c.k.join("x")}`, "wide", split));
    } finally {
      e.onDispatch = null;
    }
    if (labels.length !== 1 || !labels[0].endsWith(`:serial${split}`)) throw new Error(`split ${split} x[${c.x}]: dispatched ${labels.join(", ")}`);
    const scratch = await e.zeroScratch(SERIAL_SCRATCH, 4).read();
    const dirty = scratch.findIndex((v) => v !== 0);
    if (dirty >= 0) throw new Error(`split ${split} x[${c.x}]: scratch word ${dirty} is ${scratch[dirty]} after the dispatch`);
  }
  // a count the kernel does not take is the caller's error, named as such
  let code = "";
  try { ops.conv2d(e.upload(randArray(2 * 20 * 99, 1), [2, 20, 9, 11]), e.upload(randArray(24 * 180, 2), [24, 20, 3, 3]), { padding: 1, kernel: "wide", tile: WIDE_TILE, split: 3 }); } catch (err: any) { code = err.code; }
  if (code !== "E_BAD_PARAM") throw new Error(`split 3: expected E_BAD_PARAM, got '${code}'`);
});

// Serial tails (conv2d_wide_st): the first blocks (pixel blocks fastest, then
// channel blocks, then images and groups) whole, the last `serialTail` in 2
// or 4 parts added through the scratch; tails that end inside an image,
// cover several channel blocks, more than the blocks (all in parts), groups,
// stride 2 with f16 weights, parts past K, a grid folded into 2-D. One
// dispatch each, the scratch all zeros afterwards; malformed tails refused.
// The legs other than Node + lavapipe run the smallest case (it compiles the
// entry under wgpu/naga and SwiftShader's packed f16).
t("conv2d[wide] serial tail: whole blocks plus the last ones in parts, one dispatch, scratch left zeroed", async () => {
  const e = await getEngine();
  const t0 = parseWideTile(WIDE_TILE);
  const cases: [ConvCase, number, number][] = [
    [{ x: [2, 20, 16, 17], O: 24, k: [3, 3], pad: 1, bias: true, act: "silu", res: true }, 2, 4],
    [{ x: [1, 21, 24, 24], O: t0.bm + 12, k: [3, 3], stride: 2, pad: 1, bias: true, f16: true }, 4, 3],
    [{ x: [2, 8, 12, 12], O: 24, k: [3, 3], pad: 1, groups: 2, bias: true }, 2, 100],
    [{ x: [1, 1, 20, 20], O: 9, k: [3, 3], pad: 1, bias: true }, 4, 2], // K = 9: the last two parts past K
  ];
  const run = async ([c, split, tail]: [ConvCase, number, number], i: number, want: (nb: number) => string) => {
    const { labels } = await withDispatchLabels(e, () => e.scope(() => runConvCase(e, c, 1900 + 10 * i, `conv2d[wide] serial tail ${tail}x${split} x[${c.x}] O=${c.O}`, "wide", split, tail)));
    const [N, C, H, W] = c.x, s = c.stride ?? 1, p = c.pad ?? 0, g = c.groups ?? 1;
    const Ho = Math.floor((H + 2 * p - c.k[0]) / s) + 1, Wo = Math.floor((W + 2 * p - c.k[1]) / s) + 1;
    const nb = Math.ceil((Ho * Wo) / t0.bn) * Math.ceil(c.O / g / t0.bm) * N * g;
    if (labels.length !== 1 || !labels[0].endsWith(want(nb))) throw new Error(`tail ${tail} in ${split} x[${c.x}]: dispatched ${labels.join(", ")} (want …${want(nb)})`);
    const scratch = await e.zeroScratch(SERIAL_SCRATCH, 4).read();
    const dirty = scratch.findIndex((v) => v !== 0);
    if (dirty >= 0) throw new Error(`tail ${tail} in ${split} x[${c.x}]: scratch word ${dirty} is ${scratch[dirty]} after the dispatch`);
  };
  for (const [i, cs] of cases.entries()) if (FULL_GPU_KERNEL_TESTS || i === 3) await run(cs, i, (nb) => `:serial${Math.min(cs[2], nb)}x${cs[1]}`);
  // more workgroups than a grid dimension holds: folded into rows, the padding idle
  if (FULL_GPU_KERNEL_TESTS) await withLimits(e, { maxComputeWorkgroupsPerDimension: 5 }, () => run(cases[0], 9, () => ":serial4x2"));
  for (const [split, serialTail] of [[1, 2], [2, 0], [3, 2]]) {
    let code = "";
    try { ops.conv2d(e.upload(randArray(2 * 20 * 99, 1), [2, 20, 9, 11]), e.upload(randArray(24 * 180, 2), [24, 20, 3, 3]), { padding: 1, kernel: "wide", tile: WIDE_TILE, split, serialTail }); } catch (err: any) { code = err.code; }
    if (code !== "E_BAD_PARAM") throw new Error(`split ${split} serial tail ${serialTail}: expected E_BAD_PARAM, got '${code}'`);
  }
});

// wide_serial's second gather, every word waited for: on a GPU the taker goes
// there when another part's word is not yet visible to it, which never
// happens on CPU drivers, so the tests force it (override WSK_RECHECK). It
// must give the first gather's bits and leave the scratch zeroed, for
// conv2d_wide_sk, conv2d_wide_st and matmul's wide_ser, on every leg.
t("wide_serial: the waiting gather (forced) gives the same bits as the first, scratch left zeroed", async () => {
  const e = await getEngine();
  await e.scope(async () => {
    const conv = (xs: number[], ws: number[], seed: number, opts: ops.Conv2dOptions) => {
      const x = e.upload(randArray(xs.reduce((a, b) => a * b), seed), xs), w = e.upload(randArray(ws.reduce((a, b) => a * b), seed + 1), ws);
      const b = e.upload(randArray(ws[0], seed + 2), [ws[0]]);
      return () => ops.conv2d(x, w, { bias: b, kernel: "wide", tile: WIDE_TILE, ...opts });
    };
    const a = e.upload(randArray(250 * 72, 75), [1, 250, 72]), bm = e.upload(randArray(72 * 130, 76), [72, 130]);
    const cases: [string, () => ReturnType<typeof ops.matmul>, string][] = [
      ["conv2d_wide_sk", conv([1, 300, 5, 6], [9, 300, 1, 1], 71, { act: "gelu", split: 4 }), ":serial4"],
      ["conv2d_wide_st", conv([1, 1, 20, 20], [9, 1, 3, 3], 72, { padding: 1, split: 4, serialTail: 2 }), ":serial2x4"],
      ["wide_ser", () => ops.matmul(a, bm, { kernel: "wide", tile: "64x64k8t8", split: 7, serialTail: 5 }), ":serial5x7"],
    ];
    for (const [entry, run, want] of cases) {
      const first = await withDispatchLabels(e, () => run().read());
      const compiled = e.kernels.size;
      const waited = await withOverrides(e, [entry], { WSK_RECHECK: 1 }, () => withDispatchLabels(e, () => run().read()));
      if (e.kernels.size !== compiled + 1) throw new Error(`${entry}: the forced gather compiled ${e.kernels.size - compiled} kernels, not a variant of its own`);
      for (const { labels } of [first, waited]) if (labels.length !== 1 || !labels[0].endsWith(want)) throw new Error(`${entry}: dispatched ${labels.join(", ")}`);
      const i = waited.result.findIndex((v, j) => !Object.is(v, first.result[j]));
      if (i >= 0) throw new Error(`${entry}: output ${i} is ${waited.result[i]} through the waiting gather, ${first.result[i]} through the first`);
      const scratch = await e.zeroScratch(SERIAL_SCRATCH, 4).read();
      const dirty = scratch.findIndex((v) => v !== 0);
      if (dirty >= 0) throw new Error(`${entry}: scratch word ${dirty} is ${scratch[dirty]} after the waiting gather`);
    }
  });
});

// The scratch is persistent: a recorded serial conv replays correctly, also
// after a bigger serial conv has replaced the scratch with a larger one (the
// recording keeps the buffer its bind group names).
if (FULL_GPU_KERNEL_TESTS) t("conv2d[wide] serial split-K: recorded and replayed, also after the scratch has grown", async () => {
  const e = await getEngine();
  await e.scope(async () => {
    const xs = [2, 20, 9, 11], ws = [24, 20, 3, 3];
    const x = e.upload(randArray(2 * 20 * 99, 61), xs), w = e.upload(randArray(24 * 180, 62), ws), b = e.upload(randArray(24, 63), [24]);
    const opts = { padding: 1, bias: b, act: "silu" as const, kernel: "wide" as const, tile: WIDE_TILE, split: 2 };
    const rec = record(e, () => ops.conv2d(x, w, opts));
    const same = (what: string, got: Float32Array, want: Float32Array) => {
      const i = got.findIndex((v, j) => !Object.is(v, want[j]));
      if (i >= 0) throw new Error(`${what}: output ${i} is ${got[i]}, a direct run gives ${want[i]}`);
    };
    same("recorded run", await rec.outputs.read(), await ops.conv2d(x, w, opts).read());
    const before = e.zeroScratch(SERIAL_SCRATCH, 4);
    const big = e.upload(randArray(2 * 20 * 48 * 48, 64), [2, 20, 48, 48]);
    const yBig = await ops.conv2d(big, w, opts).read();
    if (e.zeroScratch(SERIAL_SCRATCH, 4) === before) throw new Error("the bigger conv did not grow the scratch");
    errors.check("conv2d", "serial split-K after growth", yBig, conv2dRef(await big.read(), [2, 20, 48, 48], await w.read(), ws, { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1, bias: await b.read(), act: "silu" }).y, 2e-6 * Math.sqrt(180) + 2e-6, 1e-5);
    for (let round = 0; round < 2; round++) {
      e.write(x, randArray(2 * 20 * 99, 70 + round));
      rec.replay();
      same(`replay ${round}`, await rec.outputs.read(), await ops.conv2d(x, w, opts).read());
    }
    rec.dispose();
  });
});

// conv2d_reg computes 16 output channels × 8 pixels per thread, the pixels
// LW lanes apart with LW = 8..64 chosen from the pixel count: every channel
// remainder of 16 (with and without groups), pixel counts under one lane row,
// at each LW and just past a whole workgroup (8·64 = 512 pixels), padding on
// every side of small and odd planes, f16 weights, 1×1 (a single tap), and
// input channels past one 32-channel reduction block.
for (const kernel of REG_KERNELS) t(`conv2d[${kernel}] every remainder of its 16-channel × 8-pixel thread block`, async () => {
  const e = await getEngine();
  await e.scope(async () => {
    for (let O = 1; O <= 17; O++) {
      await runConvCase(e, { x: [1, 3, 3, 5], O, k: [3, 3], pad: 1, bias: O % 2 === 1, f16: O % 3 === 0 }, 1400 + O, `O=${O}`, kernel);
    }
    const shapes: [[number, number, number, number], number, [number, number], number][] = [
      [[1, 2, 1, 1], 31, [3, 3], 1], [[1, 2, 1, 7], 33, [3, 3], 1], [[2, 3, 3, 3], 18, [3, 3], 1], [[1, 2, 4, 17], 20, [3, 3], 1],
      [[1, 2, 13, 19], 7, [3, 3], 1], [[1, 2, 16, 32], 16, [3, 3], 1], [[1, 2, 17, 31], 48, [3, 3], 1], [[1, 2, 19, 27], 5, [5, 3], 2],
      [[1, 5, 23, 23], 35, [1, 1], 0], [[2, 4, 2, 3], 17, [1, 1], 0],
    ];
    for (const [x, O, k, pad] of shapes) await runConvCase(e, { x, O, k, pad, res: true, act: "silu" }, 1450 + O, `x[${x}] O=${O}`, kernel);
    await runConvCase(e, { x: [2, 12, 7, 9], O: 36, k: [3, 3], pad: 1, groups: 3, bias: true, res: true }, 1490, "groups Og=12", kernel);
    await runConvCase(e, { x: [1, 34, 6, 5], O: 34, k: [3, 3], pad: 1, groups: 2, f16: true }, 1495, "groups Og=17 f16", kernel);
    // the reduction runs in blocks of 32 input channels (REG_CB), taps inside: two whole blocks and a partial one, with padding
    await runConvCase(e, { x: [1, 77, 5, 6], O: 18, k: [3, 3], pad: 1, bias: true }, 1497, "77 channels = 2 blocks + 13", kernel);
    await runConvCase(e, { x: [1, 70, 5, 6], O: 20, k: [3, 2], pad: 1, groups: 2, f16: true }, 1498, "groups Cg=35 = a block + 3", kernel);
  });
});

// reg / sg load a 3×3 pad-1 conv's inputs as vec4s (ROW3) where output rows
// are whole runs of 4 pixels and input rows whole vec4s: one vec4 per run and
// its two neighbours serve the 3 column taps. One image and two (padding reads
// before the first and after the last vec4 of X: clamped, then masked), bias,
// activation and residual, f16 weights, a reduction past one 32-channel block,
// odd channel counts, groups, planes one run wide; 5×5 pad 2 and dilation 2 on
// such planes take the gather path.
for (const kernel of REG_KERNELS) t(`conv2d[${kernel}] 3×3 pad 1 from vec4 runs (ROW3), and wider taps beside it`, async () => {
  const e = await getEngine();
  await e.scope(async () => {
    await runConvCase(e, { x: [2, 5, 6, 8], O: 18, k: [3, 3], pad: 1, bias: true, res: true, act: "silu" }, 1510, "3x3 pad 1, two images", kernel);
    await runConvCase(e, { x: [2, 5, 6, 8], O: 17, k: [3, 3], pad: 1, f16: true }, 1515, "3x3 pad 1 f16", kernel);
    await runConvCase(e, { x: [1, 3, 8, 12], O: 7, k: [5, 5], pad: 2, bias: true }, 1520, "5x5 pad 2", kernel);
    await runConvCase(e, { x: [1, 4, 10, 8], O: 9, k: [3, 3], pad: 2, dil: 2 }, 1525, "3x3 dilation 2", kernel);
    await runConvCase(e, { x: [1, 37, 4, 4], O: 20, k: [3, 3], pad: 1, f16: true }, 1530, "37 channels = a block + 5", kernel);
    await runConvCase(e, { x: [1, 6, 8, 16], O: 12, k: [3, 3], pad: 1, groups: 3, bias: true }, 1535, "groups", kernel);
  });
});

for (const kernel of KERNELS) t(`conv2d[${kernel}] splits work when tensors exceed the binding limit`, async () => {
  const e = await getEngine();
  await withLimits(e, { maxStorageBufferBindingSize: 1 << 16 }, async () => {
    await e.scope(async () => {
      // Whole tensor over the limit, images fit: per-image and output-channel splits.
      await runConvCase(e, { x: [2, 8, 40, 40], O: 16, k: [3, 3], pad: 1, bias: true, act: "silu", res: true }, 500, "split per image", kernel);
      // One input plane over the limit (130² f32 = 67.6 KB): input-channel chunks
      // accumulating in the output, in row bands; bias/act/residual must land once.
      await runConvCase(e, { x: [1, 3, 130, 130], O: 4, k: [3, 3], stride: 2, pad: 1, bias: true, act: "silu", res: true }, 510, "split rows + channels", kernel);
      await runConvCase(e, { x: [1, 2, 131, 129], O: 3, k: [3, 3], pad: 1, bias: true, f16: true }, 515, "split rows, stride 1", kernel);
      // Weight over the limit (40·64·9 f32 = 92 KB): output- and input-channel chunks.
      await runConvCase(e, { x: [1, 64, 6, 7], O: 40, k: [3, 3], pad: 1, bias: true, act: "relu", res: true }, 520, "split weights", kernel);
      // 1×1 without bias would be a matmul, which does not split: stays on the conv kernel.
      await runConvCase(e, { x: [1, 20, 30, 31], O: 24, k: [1, 1], res: true }, 530, "split 1x1", kernel);
    });
  });
});

// conv2d_wide with every tile the device can run (the GPU tuner's candidates):
// a 3×3 conv with more channels and pixels than one tile, and a strided,
// grouped one whose weights are not read as rows (W_ROWS off: conv_transpose2d
// has that too).
if (FULL_GPU_KERNEL_TESTS) t("conv2d[wide] every tile", async () => {
  const e = await getEngine();
  const tiles = convWideTiles(e);
  if (tiles.length < 2) throw new Error(`only ${tiles.length} conv tiles fit this device`);
  for (const [i, tile] of tiles.entries()) {
    await e.scope(async () => {
      for (const [c, seed] of [[{ x: [2, 12, 19, 21], O: 150, k: [3, 3], pad: 1, bias: true, act: "silu", res: true, f16: i % 2 === 1 }, 1600], [{ x: [1, 8, 13, 12], O: 140, k: [3, 3], stride: 2, pad: 1, groups: 2, bias: true }, 1610]] as [ConvCase, number][]) {
        const [N, C, H, W] = c.x;
        const groups = c.groups ?? 1, [kh, kw] = c.k, s = c.stride ?? 1, p = c.pad ?? 0;
        const x = randArray(N * C * H * W, seed + i), w = randArray(c.O * (C / groups) * kh * kw, seed + 1, 0.3), bias = randArray(c.O, seed + 2);
        const wRef = c.f16 ? Float32Array.from(w, roundToHalf) : w;
        const ref0 = conv2dRef(x, c.x, wRef, [c.O, C / groups, kh, kw], { stride: [s, s], padding: [p, p], groups, bias, act: c.act });
        const res = c.res ? randArray(ref0.y.length, seed + 3) : null;
        const want = res ? ref0.y.map((v, j) => v + res[j]) : ref0.y;
        const tw = c.f16 ? e.upload(float32ToHalfArray(w), [c.O, C / groups, kh, kw], "f16") : e.upload(w, [c.O, C / groups, kh, kw]);
        const y = ops.conv2d(e.upload(x, c.x), tw, { stride: s, padding: p, groups, bias: e.upload(bias, [c.O]), act: c.act, residual: res ? e.upload(res, ref0.shape) : undefined, kernel: "wide", tile });
        errors.check("conv2d", `wide ${tile} x[${c.x}]`, await y.read(), want, 2e-6 * Math.sqrt((C / groups) * kh * kw) + 2e-6, 1e-5);
      }
    });
  }
});

for (const kernel of KERNELS) t(`conv2d[${kernel}] with few workgroups per dimension allowed`, async () => {
  const e = await getEngine();
  await withLimits(e, { maxComputeWorkgroupsPerDimension: 3 }, async () => {
    await e.scope(async () => {
      await runConvCase(e, { x: [2, 3, 33, 35], O: 5, k: [3, 3], pad: 1, bias: true }, 540, "grid limit, few channels", kernel);
      await runConvCase(e, { x: [2, 3, 33, 35], O: 70, k: [3, 3], pad: 1, bias: true, act: "relu" }, 545, "grid limit, many channels", kernel);
    });
  });
});

// BiT (DPT-hybrid) convolutions with global_padding "same": the stem's 7×7
// stride 2 and the strided 3×3 pad dynamically, one more at the bottom/right.
for (const [xs, O, k, s, d] of [[[1, 3, 32, 30], 8, 7, 2, 1], [[2, 5, 12, 13], 9, 3, 2, 1], [[1, 4, 9, 10], 70, 3, 1, 2], [[1, 6, 8, 7], 5, 1, 2, 1]] as [[number, number, number, number], number, number, number, number][]) {
  for (const kernel of MATRIX) t(`conv2d[${kernel}] SAME padding x[${xs}] O=${O} k=${k} s=${s} d=${d}`, async () => {
    const e = await getEngine();
    await e.scope(async () => {
      const [N, C, H, W] = xs;
      const x = randArray(N * C * H * W, 1300 + k), w = randArray(O * C * k * k, 1301 + k, 0.3), bias = randArray(O, 1302);
      const th = Math.max((Math.ceil(H / s) - 1) * s + (k - 1) * d + 1 - H, 0), tw = Math.max((Math.ceil(W / s) - 1) * s + (k - 1) * d + 1 - W, 0);
      const xp = pad2dRef(x, xs, [Math.floor(tw / 2), tw - Math.floor(tw / 2), Math.floor(th / 2), th - Math.floor(th / 2)]);
      const ref = conv2dRef(xp.y, xp.shape, w, [O, C, k, k], { stride: [s, s], dilation: [d, d], bias });
      if (ref.shape[2] !== Math.ceil(H / s) || ref.shape[3] !== Math.ceil(W / s)) throw new Error("reference SAME size");
      const y = ops.conv2d(e.upload(x, xs), e.upload(w, [O, C, k, k]), { stride: s, dilation: d, same: true, bias: e.upload(bias, [O]), kernel, tile: tileFor(kernel) });
      if (y.shape.join() !== ref.shape.join()) throw new Error(`shape [${y.shape}] expected [${ref.shape}]`);
      errors.check("conv2d", `SAME [${xs}] k=${k} s=${s}`, await y.read(), ref.y, 2e-6 * Math.sqrt(C * k * k) + 2e-6, 1e-5);
    });
  });
}

t("conv2d rejects mismatched weights with E_SHAPE", async () => {
  const e = await getEngine();
  let code = "";
  try { ops.conv2d(e.upload(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]), e.upload(new Float32Array(5 * 2 * 9), [5, 2, 3, 3])); } catch (err: any) { code = err.code; }
  if (code !== "E_SHAPE") throw new Error(`expected E_SHAPE, got '${code}'`);
});

// f16 activations are an opt-in (--precision fp16) for devices with native
// shader-f16; SwiftShader has none, so there these tests are not registered.
const nativeF16 = (await getEngine()).gpu.f16;
if (nativeF16) {
  for (const kernel of MATRIX) t(`conv2d[${kernel}] with f16 activations (opt-in precision), whole and split`, async () => {
    const e = await getEngine();
    const saved = e.precision;
    e.precision = { ...saved, activations: "f16" };
    try {
      await e.scope(async () => {
        for (const [xs, O, split] of [[[1, 16, 9, 11], 24, false], [[1, 3, 130, 130], 4, true], [[1, 40, 20, 21], 12, true]] as [[number, number, number, number], number, boolean][]) {
          const [N, C, H, W] = xs;
          const x = Float32Array.from(randArray(N * C * H * W, 1200 + O), roundToHalf);
          const w = Float32Array.from(randArray(O * C * 9, 1201 + O, 1 / Math.sqrt(C * 9)), roundToHalf);
          const bias = Float32Array.from(randArray(O, 1202 + O), roundToHalf);
          const ref0 = conv2dRef(x, xs, w, [O, C, 3, 3], { padding: [1, 1], bias, act: "silu" });
          const res = Float32Array.from(randArray(ref0.y.length, 1203 + O), roundToHalf);
          const run = async () => {
            const y = ops.conv2d(e.upload(float32ToHalfArray(x), xs, "f16"), e.upload(float32ToHalfArray(w), [O, C, 3, 3], "f16"), {
              padding: 1, bias: e.upload(float32ToHalfArray(bias), [O], "f16"), act: "silu", residual: e.upload(float32ToHalfArray(res), ref0.shape, "f16"), kernel,
            });
            if (y.dtype !== "f16") throw new Error(`output dtype ${y.dtype}`);
            return y.read();
          };
          const got = split ? await (async () => { let r!: Float32Array; await withLimits(e, { maxStorageBufferBindingSize: 1 << 15 }, async () => { r = await run(); }); return r; })() : await run();
          // f16 output rounding (2^-11 relative) plus f16 partial sums when the reduction is split
          errors.check("conv2d (f16 activations)", `f16 activations [${xs}] O=${O}${split ? " split" : ""}`, got, ref0.y.map((v, i) => v + res[i]), 4e-3, 2e-3);
        }
      });
    } finally {
      e.precision = saved;
    }
  });
}

// ------------------------------------------------------------ transposed

interface ConvTCase { x: [number, number, number, number]; O: number; k: number; s: number; p?: number; op?: number; bias?: boolean; f16?: boolean }
const TCASES: ConvTCase[] = [
  { x: [1, 8, 5, 7], O: 6, k: 4, s: 4, bias: true },          // DPT reassemble: kernel == stride
  { x: [2, 3, 4, 5], O: 5, k: 2, s: 2, f16: true, bias: true },
  { x: [1, 4, 6, 5], O: 3, k: 3, s: 2, p: 1, op: 1, bias: true },
  { x: [1, 2, 3, 3], O: 2, k: 1, s: 3, bias: true },          // kernel < stride: phases with no taps hold the bias
  { x: [1, 5, 4, 4], O: 3, k: 5, s: 2, p: 2 },
  { x: [1, 1, 1, 1], O: 1, k: 1, s: 1 },
  { x: [1, 77, 3, 9], O: 65, k: 2, s: 2, bias: true, f16: true },
];

async function runConvTCase(e: Engine, c: ConvTCase, seed: number, label: string, kernel: ConvKernel) {
  const [, C] = c.x;
  const wShape = [C, c.O, c.k, c.k];
  const x = randArray(c.x.reduce((a, b) => a * b), seed);
  let w = randArray(C * c.O * c.k * c.k, seed + 1, 0.5);
  let bias = c.bias ? randArray(c.O, seed + 2) : undefined;
  if (c.f16) { w = Float32Array.from(w, roundToHalf); if (bias) bias = Float32Array.from(bias, roundToHalf); }
  const ref = convTranspose2dRef(x, c.x, w, wShape, { stride: [c.s, c.s], padding: [c.p ?? 0, c.p ?? 0], outputPadding: [c.op ?? 0, c.op ?? 0], bias });
  const tw = c.f16 ? e.upload(float32ToHalfArray(w), wShape, "f16") : e.upload(w, wShape);
  const tb = bias ? e.upload(bias, [c.O]) : undefined;
  const y = ops.convTranspose2d(e.upload(x, c.x), tw, { stride: c.s, padding: c.p ?? 0, outputPadding: c.op ?? 0, bias: tb, kernel, tile: tileFor(kernel) });
  if (y.shape.join() !== ref.shape.join()) throw new Error(`${label}: shape [${y.shape}] expected [${ref.shape}]`);
  errors.check("conv_transpose2d", label, await y.read(), ref.y, 2e-6 * Math.sqrt(C * c.k * c.k) + 2e-6, 1e-5);
}

for (const kernel of MATRIX) TCASES.forEach((c, i) => {
  const label = `convTranspose2d[${kernel}] x[${c.x}] O=${c.O} k=${c.k} s=${c.s} p=${c.p ?? 0} op=${c.op ?? 0}${c.bias ? " bias" : ""} ${c.f16 ? "f16" : "f32"} weights`;
  t(label, async () => {
    const e = await getEngine();
    await e.scope(() => runConvTCase(e, c, 700 + 10 * i, label, kernel));
  });
});

for (const kernel of KERNELS) t(`convTranspose2d[${kernel}] splits work when tensors exceed the binding limit`, async () => {
  const e = await getEngine();
  await withLimits(e, { maxStorageBufferBindingSize: 1 << 16 }, async () => {
    await e.scope(async () => {
      await runConvTCase(e, { x: [2, 16, 12, 13], O: 12, k: 4, s: 4, bias: true }, 800, "split convT k=s", kernel);
      await runConvTCase(e, { x: [1, 3, 70, 70], O: 2, k: 3, s: 2, p: 1, op: 1, bias: true }, 810, "split convT rows", kernel);
    });
  });
});

// ------------------------------------------------------------ pooling

interface PoolCase { x: [number, number, number, number]; k: number; s: number; p?: number; same?: boolean; padValue?: number; act?: Activation }
const PCASES: PoolCase[] = [
  { x: [1, 3, 9, 10], k: 3, s: 2, same: true },
  { x: [2, 2, 8, 8], k: 3, s: 2, same: true },
  { x: [1, 1, 1, 1], k: 3, s: 2, same: true },
  { x: [1, 4, 57, 4097], k: 3, s: 2, same: true, padValue: 0, act: "relu" }, // BiT stem: pad 0 after a ReLU
  { x: [1, 2, 11, 12], k: 3, s: 2, same: true, padValue: 0 },                // pad 0 without ReLU differs from -inf
  { x: [1, 3, 11, 12], k: 2, s: 2 },
  { x: [2, 3, 13, 9], k: 3, s: 2, p: 1 },
  { x: [1, 2, 10, 11], k: 4, s: 3, same: true },
];

async function runPoolCase(e: Engine, c: PoolCase, seed: number, label: string) {
  const x = randArray(c.x.reduce((a, b) => a * b), seed);
  const ref = maxPool2dRef(x, c.x, c.k, c.s, { padding: c.p, same: c.same, padValue: c.padValue });
  const want = c.act === "relu" ? ref.y.map((v) => Math.max(v, 0)) : ref.y;
  const y = ops.maxPool2d(e.upload(x, c.x), { kernel: c.k, stride: c.s, padding: c.p, same: c.same, padValue: c.padValue, act: c.act });
  if (y.shape.join() !== ref.shape.join()) throw new Error(`${label}: shape [${y.shape}] expected [${ref.shape}]`);
  errors.check("max_pool2d", label, await y.read(), want, 0, 0);
}

PCASES.forEach((c, i) => {
  const label = `maxPool2d x[${c.x}] k=${c.k} s=${c.s}${c.same ? " SAME" : ` p=${c.p ?? 0}`}${c.padValue !== undefined ? ` pad=${c.padValue}` : ""}${c.act ? ` ${c.act}` : ""}`;
  t(label, async () => {
    const e = await getEngine();
    await e.scope(() => runPoolCase(e, c, 900 + 10 * i, label));
  });
});

t("maxPool2d splits work when tensors exceed the binding limit", async () => {
  const e = await getEngine();
  await withLimits(e, { maxStorageBufferBindingSize: 1 << 16, maxComputeWorkgroupsPerDimension: 7 }, async () => {
    await e.scope(async () => {
      await runPoolCase(e, { x: [2, 6, 40, 41], k: 3, s: 2, same: true }, 950, "split pool planes");
      await runPoolCase(e, { x: [1, 2, 150, 131], k: 3, s: 2, same: true }, 960, "split pool rows");
    });
  });
});

// ------------------------------------------------------------ standardisation

t("standardizeWeight matches batch_norm(training) over each output channel", async () => {
  const e = await getEngine();
  await e.scope(async () => {
    for (const [shape, f16, offset] of [[[7, 5, 3, 3], false, 0], [[9, 3, 7, 7], true, 0], [[4, 300, 1, 1], false, 0], [[3, 2, 3, 3], false, 100]] as [number[], boolean, number][]) {
      const n = shape.reduce((a, b) => a * b);
      // an offset far above the spread: a one-pass E[w²] - E[w]² would lose the variance
      let w = randArray(n, 1000 + n, 0.05).map((v) => v + offset);
      if (f16) w = Float32Array.from(w, roundToHalf);
      const tw = f16 ? e.upload(float32ToHalfArray(w), shape, "f16") : e.upload(w, shape);
      const ys = ops.standardizeWeight(tw, 1e-8);
      if (ys.shape.join() !== shape.join()) throw new Error(`shape [${ys.shape}]`);
      const ref = standardizeRef(w, shape[0], 1e-8);
      // values are O(1): f32 rounding of (w - mean) dominates; with the offset w itself carries ~1e-5 absolute rounding
      errors.check(offset ? "standardize_weight (mean 100, std 0.03)" : "standardize_weight", `standardize [${shape}] ${f16 ? "f16" : "f32"} offset ${offset}`, await ys.read(), ref, offset ? 2e-3 : 2e-5, 1e-5);
      ys.dispose();
    }
  });
});

t.after(() => errors.print());

t.run();
