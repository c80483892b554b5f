import { suite } from "uvu";
import { getEngine, type Engine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { randArray } from "../reference/ops.ts";
import { upsampleNearestRef, interpolateRef } from "../reference/conv.ts";
import { ErrorTally, withLimits } from "../lib/harness.ts";
import { float32ToHalfArray, roundToHalf } from "../../engine/half.ts";

const t = suite("resize");

// Largest error seen per op, printed at the end.
const errors = new ErrorTally();

type Shape = [number, number, number, number];

async function nearestCase(e: Engine, xs: Shape, o: { scale?: number; size?: [number, number] }, seed: number, f16 = false) {
  let x = randArray(xs.reduce((a, b) => a * b), seed);
  if (f16) x = Float32Array.from(x, roundToHalf);
  const Ho = o.size ? o.size[0] : Math.floor(xs[2] * (o.scale ?? 2)), Wo = o.size ? o.size[1] : Math.floor(xs[3] * (o.scale ?? 2));
  const ref = upsampleNearestRef(x, xs, Ho, Wo, o.size ? undefined : (o.scale ?? 2));
  const tx = f16 ? e.upload(float32ToHalfArray(x), xs, "f16") : e.upload(x, xs);
  const y = ops.upsampleNearest(tx, o);
  const label = `nearest [${xs}] -> [${Ho}, ${Wo}]${o.size ? " (size)" : ` (scale ${o.scale ?? 2})`}${f16 ? " f16 input" : ""}`;
  if (y.shape.join() !== [xs[0], xs[1], Ho, Wo].join()) throw new Error(`${label}: shape [${y.shape}]`);
  // a copy: exact, or the wrong pixel was taken
  errors.check("upsample_nearest", label, await y.read(), ref, 0, 0);
}

const NEAREST: [Shape, { scale?: number; size?: [number, number] }][] = [
  [[1, 3, 5, 7], { scale: 2 }],
  [[2, 2, 1, 4097], {}],
  [[1, 1, 1, 1], { scale: 2 }],
  [[1, 4, 63, 63], { size: [125, 125] }], // UNet upsample_size at 1000 px
  [[1, 2, 32, 17], { size: [63, 33] }],
  [[1, 2, 10, 11], { size: [3, 7] }],     // downscale
  [[1, 1, 7, 5], { size: [13, 77] }],
  [[1, 2, 6, 5], { scale: 3 }],
];

NEAREST.forEach(([xs, o], i) => {
  t(`upsampleNearest [${xs}] ${JSON.stringify(o)}`, async () => {
    const e = await getEngine();
    await e.scope(() => nearestCase(e, xs, o, 10 + i, i === 3));
  });
});

async function interpCase(e: Engine, xs: Shape, size: [number, number], mode: "bilinear" | "bicubic", alignCorners: boolean, seed: number) {
  const x = randArray(xs.reduce((a, b) => a * b), seed);
  const ref = interpolateRef(x, xs, size[0], size[1], mode, alignCorners);
  const y = ops.interpolate(e.upload(x, xs), { size, mode, alignCorners });
  const label = `${mode} [${xs}] -> [${size}] align_corners=${alignCorners}`;
  if (y.shape.join() !== [xs[0], xs[1], ...size].join()) throw new Error(`${label}: shape [${y.shape}]`);
  // f32 weights and sums of 4 or 16 taps of values in [-1, 1] (bicubic weights reach 1.1 in sum of magnitudes)
  errors.check(mode, label, await y.read(), ref, mode === "bicubic" ? 4e-6 : 2e-6, 1e-6);
}

const INTERP: [Shape, [number, number]][] = [
  [[1, 3, 24, 24], [97, 61]],   // upscale, odd targets
  [[2, 2, 37, 41], [16, 15]],   // downscale
  [[1, 1, 1, 1], [3, 5]],
  [[1, 2, 5, 6], [1, 1]],       // align_corners with one output: scale 0
  [[1, 1, 3, 4097], [5, 2049]], // one long odd dim
  [[1, 3, 16, 16], [384, 384].map((v) => v / 8) as [number, number]],
];

for (const mode of ["bilinear", "bicubic"] as const) {
  for (const alignCorners of [false, true]) {
    INTERP.forEach(([xs, size], i) => {
      t(`${mode} [${xs}] -> [${size}] align_corners=${alignCorners}`, async () => {
        const e = await getEngine();
        await e.scope(() => interpCase(e, xs, size, mode, alignCorners, 50 + i));
      });
    });
  }
}

// scale_factor given (nn.Upsample): without align_corners PyTorch maps with
// 1/scale_factor, not in/out; 5·2.5 and 7·2.5 are not integers, so they differ.
for (const mode of ["bilinear", "bicubic"] as const) {
  t(`${mode} with a scale factor 2.5`, async () => {
    const e = await getEngine();
    await e.scope(async () => {
      const xs: Shape = [1, 2, 5, 7];
      const x = randArray(70, 77);
      const size: [number, number] = [Math.floor(5 * 2.5), Math.floor(7 * 2.5)];
      const ref = interpolateRef(x, xs, size[0], size[1], mode, false, [2.5, 2.5]);
      const y = ops.interpolate(e.upload(x, xs), { size, mode, alignCorners: false, scaleFactor: [2.5, 2.5] });
      errors.check(mode, `${mode} scale 2.5`, await y.read(), ref, 4e-6, 1e-6);
    });
  });
}

t("resize splits work when tensors exceed the binding limit", async () => {
  const e = await getEngine();
  await withLimits(e, { maxStorageBufferBindingSize: 1 << 16, maxComputeWorkgroupsPerDimension: 9 }, async () => {
    await e.scope(async () => {
      await nearestCase(e, [2, 6, 30, 31], { scale: 2 }, 200);          // plane runs
      await nearestCase(e, [1, 2, 70, 65], { size: [141, 131] }, 201);   // row bands of one plane
      await interpCase(e, [1, 2, 60, 61], [150, 131], "bilinear", false, 202);
      await interpCase(e, [1, 1, 140, 133], [130, 129], "bicubic", true, 203);
      await interpCase(e, [1, 1, 133, 140], [150, 141], "bicubic", false, 204);
    });
  });
});

t("interpolate rejects bad sizes with E_BAD_PARAM", async () => {
  const e = await getEngine();
  let code = "";
  try { ops.interpolate(e.upload(new Float32Array(4), [1, 1, 2, 2]), { size: [0, 3], mode: "bilinear", alignCorners: false }); } catch (err: any) { code = err.code; }
  if (code !== "E_BAD_PARAM") throw new Error(`expected E_BAD_PARAM, got '${code}'`);
});

t.after(() => errors.print());

t.run();
