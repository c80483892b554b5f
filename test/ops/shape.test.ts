import { suite } from "uvu";
import { getEngine, type Engine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { cast } from "../../engine/ops/shape.ts";
import type { Tensor } from "../../engine/tensor.ts";
import { randArray } from "../reference/ops.ts";
import { concatRef, sliceRef, permuteRef, pad2dRef, gatherRef, timestepRef, reduceRef, absSumRef } from "../reference/shape.ts";
import { assertClose, withLimits } from "../lib/harness.ts";
import { float32ToHalfArray, roundToHalf } from "../../engine/half.ts";

const t = suite("shape");
const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** Random values of `shape` in `dtype`: the tensor and its exact host values. */
function rand(e: Engine, shape: number[], dtype: "f32" | "f16", seed: number): { t: Tensor; v: number[]; shape: number[] } {
  const a = randArray(numel(shape), seed, 4);
  if (dtype === "f16") return { t: e.upload(float32ToHalfArray(a), shape, "f16"), v: Array.from(a, roundToHalf), shape };
  return { t: e.upload(a, shape, "f32"), v: Array.from(a), shape };
}

function assertShape(name: string, y: Tensor, shape: number[]): void {
  if (y.shape.join() !== shape.join()) throw new Error(`${name}: shape [${y.shape}] != [${shape}]`);
}

/** Exact comparison (data movement must not change a bit). */
async function exact(name: string, y: Tensor, ref: { data: ArrayLike<number>; shape: number[] } | ArrayLike<number>, shape?: number[]): Promise<void> {
  const r = "data" in (ref as any) ? (ref as any) : { data: ref, shape: shape! };
  assertShape(name, y, r.shape);
  assertClose(name, await y.read(), r.data, 0, 0);
}

const DTYPES: ("f32" | "f16")[] = ["f32", "f16"];

// ------------------------------------------------------------------ concat

const CONCAT_CASES: { shapes: number[][]; dim: number }[] = [
  { shapes: [[2, 3, 5], [2, 4, 5]], dim: 1 },
  { shapes: [[2, 3, 5], [2, 3, 1], [2, 3, 7]], dim: -1 },
  { shapes: [[1, 77, 3], [2, 77, 3]], dim: 0 },
  { shapes: [[3, 1, 7, 5], [3, 2, 7, 5], [3, 1, 7, 5]], dim: 1 }, // odd blocks: f16 rows start mid-word
  { shapes: [[1, 4097], [1, 3]], dim: 1 },
  { shapes: [[5], [1], [3]], dim: 0 },
];

for (const dt of DTYPES) {
  for (const { shapes, dim } of CONCAT_CASES) {
    t(`concat ${dt} ${shapes.map((s) => `[${s}]`).join("+")} dim ${dim}`, async () => {
      const e = await getEngine();
      const xs = shapes.map((s, i) => rand(e, s, dt, 10 + i));
      const y = ops.concat(xs.map((x) => x.t), dim);
      if (y.dtype !== dt) throw new Error(`dtype ${y.dtype}`);
      const d = dim < 0 ? dim + shapes[0].length : dim;
      await exact("concat", y, concatRef(xs.map((x) => ({ data: x.v, shape: x.shape })), d));
    });
  }
}

t("concat of f16 and f32 promotes to f32; mismatched shapes are E_SHAPE", async () => {
  const e = await getEngine();
  const a = rand(e, [3, 5], "f16", 1), b = rand(e, [3, 2], "f32", 2);
  const y = ops.concat([a.t, b.t], 1);
  if (y.dtype !== "f32") throw new Error(`dtype ${y.dtype}`);
  await exact("mixed", y, concatRef([{ data: a.v, shape: a.shape }, { data: b.v, shape: b.shape }], 1));
  let code = "";
  try { ops.concat([a.t, rand(e, [4, 2], "f32", 3).t], 1); } catch (err: any) { code = err.code; }
  if (code !== "E_SHAPE") throw new Error(`expected E_SHAPE, got '${code}'`);
});

// ------------------------------------------------------------------ slice / chunk

const SLICE_CASES: { shape: number[]; dim: number; start: number; end: number; want: [number, number] }[] = [
  { shape: [2, 77, 9], dim: 1, start: 3, end: 40, want: [3, 40] },
  { shape: [2, 77, 9], dim: -1, start: 1, end: 8, want: [1, 8] },
  { shape: [3, 5, 7], dim: 0, start: 1, end: 3, want: [1, 3] }, // contiguous block
  { shape: [4097, 3], dim: 0, start: -5, end: 1 << 30, want: [4092, 4097] }, // python bounds
  { shape: [1, 5, 1, 7], dim: 3, start: 0, end: -1, want: [0, 6] },
  { shape: [6, 4], dim: 1, start: 3, end: 1, want: [3, 3] }, // empty
];

for (const dt of DTYPES) {
  for (const c of SLICE_CASES) {
    t(`slice ${dt} [${c.shape}] dim ${c.dim} ${c.start}:${c.end}`, async () => {
      const e = await getEngine();
      const x = rand(e, c.shape, dt, 3);
      const y = ops.slice(x.t, c.dim, c.start, c.end);
      const d = c.dim < 0 ? c.dim + c.shape.length : c.dim;
      const os = c.shape.slice(); os[d] = c.want[1] - c.want[0];
      await exact("slice", y, sliceRef(x.v, c.shape, d, c.want[0], c.want[1]), os);
    });
  }
}

t("chunk follows torch.chunk (ceil-sized pieces, possibly fewer)", async () => {
  const e = await getEngine();
  for (const [size, n, want] of [[7, 3, [3, 3, 1]], [5, 4, [2, 2, 1]], [6, 2, [3, 3]], [1, 3, [1]]] as [number, number, number[]][]) {
    for (const dt of DTYPES) {
      const x = rand(e, [3, size, 5], dt, 4);
      const parts = ops.chunk(x.t, n, 1);
      if (parts.map((p) => p.shape[1]).join() !== want.join()) throw new Error(`chunk ${size}/${n}: got ${parts.map((p) => p.shape[1])}`);
      let s = 0;
      for (const p of parts) {
        await exact(`chunk ${dt} ${size}/${n}`, p, sliceRef(x.v, [3, size, 5], 1, s, s + p.shape[1]), [3, p.shape[1], 5]);
        s += p.shape[1];
      }
    }
  }
});

// ------------------------------------------------------------------ permute

const PERMUTE_CASES: { shape: number[]; perm: number[] }[] = [
  { shape: [77, 5], perm: [1, 0] },
  { shape: [3, 77, 5], perm: [2, 0, 1] },
  { shape: [2, 3, 5, 7], perm: [0, 2, 3, 1] }, // NCHW -> NHWC
  { shape: [2, 7, 3, 5], perm: [0, 3, 1, 2] },
  { shape: [2, 3, 2, 5, 3, 7], perm: [5, 4, 3, 2, 1, 0] },
  { shape: [2, 3, 1, 5, 1, 3], perm: [1, 0, 3, 2, 5, 4] },
  { shape: [1, 4097, 3], perm: [2, 1, 0] },
  { shape: [4, 5], perm: [0, 1] }, // identity
  // batched 2-D transposes with both sides a multiple of 4: 32-bit dtypes take the 4×4-tile kernel
  { shape: [36, 20], perm: [1, 0] },
  { shape: [2, 12, 4, 8], perm: [0, 2, 3, 1] }, // NCHW -> NHWC, B = 2
  { shape: [3, 8, 4], perm: [0, 2, 1] },
  { shape: [2, 4, 3, 4], perm: [2, 0, 1, 3] }, // not a transpose of two blocks: the general copy
];

for (const dt of DTYPES) {
  for (const c of PERMUTE_CASES) {
    t(`permute ${dt} [${c.shape}] -> [${c.perm}]`, async () => {
      const e = await getEngine();
      const x = rand(e, c.shape, dt, 5);
      const y = ops.permute(x.t, c.perm);
      await exact("permute", y, permuteRef(x.v, c.shape, c.perm), c.perm.map((p) => c.shape[p]));
    });
  }
}

// ------------------------------------------------------------------ pad2d

const PAD_CASES: { shape: number[]; pads: [number, number, number, number]; value: number }[] = [
  { shape: [1, 3, 5, 7], pads: [0, 1, 0, 1], value: 0 }, // VAE Downsample2D
  { shape: [2, 3, 4, 5], pads: [2, 1, 3, 0], value: -1.5 },
  { shape: [3, 4, 5], pads: [-1, 2, 1, -2], value: 0.25 }, // negative pads crop
  { shape: [77, 1], pads: [1, 1, 1, 1], value: 0 },
  { shape: [2, 3], pads: [-2, -1, 0, 0], value: 7 }, // everything cropped away
];

for (const dt of DTYPES) {
  for (const c of PAD_CASES) {
    t(`pad2d ${dt} [${c.shape}] pads [${c.pads}] value ${c.value}`, async () => {
      const e = await getEngine();
      const x = rand(e, c.shape, dt, 6);
      const y = ops.pad2d(x.t, c.pads, c.value);
      const [l, r, tp, b] = c.pads;
      const os = [...c.shape.slice(0, -2), c.shape[c.shape.length - 2] + tp + b, c.shape[c.shape.length - 1] + l + r];
      await exact("pad2d", y, pad2dRef(x.v, c.shape, c.pads, c.value), os);
    });
  }
}

// ------------------------------------------------------------------ gather / selectRows

for (const dt of DTYPES) {
  for (const idt of ["u32", "i32"] as const) {
    t(`gather ${dt} table, ${idt} ids (out-of-range ids give zeros)`, async () => {
      const e = await getEngine();
      const V = 77, D = 13;
      const tab = rand(e, [V, D], dt, 7);
      const ids = [0, 76, 5, 5, 40, 1, 77, 1000, ...(idt === "i32" ? [-1] : [])];
      const ti = e.upload(idt === "i32" ? Int32Array.from(ids) : Uint32Array.from(ids), [1, ids.length], idt);
      const y = ops.gather(tab.t, ti);
      if (y.dtype !== "f32") throw new Error(`dtype ${y.dtype}`);
      await exact("gather", y, gatherRef(tab.v, V, D, ids), [1, ids.length, D]);
    });
  }
}

t("selectRows picks host-given rows (CLIP EOS pooling)", async () => {
  const e = await getEngine();
  for (const dt of DTYPES) {
    for (const D of [7, 32]) {
      const x = rand(e, [2 * 77, D], dt, 8);
      const rows = [76, 77 + 3, -1];
      const y = ops.selectRows(x.t, rows);
      const ref = rows.flatMap((r) => x.v.slice(((r + 154) % 154) * D, ((r + 154) % 154) * D + D));
      await exact(`selectRows ${dt} D=${D}`, y, ref, [3, D]);
    }
  }
});

// ------------------------------------------------------------------ timestep embedding

const TS = [0, 1, 999, 500.5, 261, 37.25];
const TEMB_CASES = [
  { dim: 320, flipSinToCos: true, downscaleFreqShift: 0 }, // SDXL UNet time_proj
  { dim: 256, flipSinToCos: true, downscaleFreqShift: 0 }, // SDXL add_time_proj (time ids)
  { dim: 7, flipSinToCos: false, downscaleFreqShift: 1 },
  { dim: 33, flipSinToCos: true, downscaleFreqShift: 1, scale: 2, maxPeriod: 5000 },
  { dim: 1, flipSinToCos: false, downscaleFreqShift: 1 },
];

for (const c of TEMB_CASES) {
  t(`timestepEmbedding dim ${c.dim} flip=${c.flipSinToCos} shift=${c.downscaleFreqShift}${c.scale ? ` scale=${c.scale}` : ""}`, async () => {
    const e = await getEngine();
    const y = ops.timestepEmbedding(e.upload(Float32Array.from(TS), [TS.length]), c.dim, c);
    assertShape("temb", y, [TS.length, c.dim]);
    const r = assertClose("temb", await y.read(), timestepRef(TS, c.dim, c), 1e-6, 0);
    if (c.dim === 320) console.log(`    timestepEmbedding max_abs=${r.maxAbs.toExponential(2)}`);
  });
}

t("timestepEmbedding with integer timesteps (u32, i32)", async () => {
  const e = await getEngine();
  const ts = [999, 0, 501];
  for (const dt of ["u32", "i32"] as const) {
    const tt = e.upload(dt === "u32" ? Uint32Array.from(ts) : Int32Array.from(ts), [3], dt);
    const o = { flipSinToCos: true, downscaleFreqShift: 0 };
    assertClose(`temb ${dt}`, await ops.timestepEmbedding(tt, 320, o).read(), timestepRef(ts, 320, o), 1e-6, 0);
  }
});

// ------------------------------------------------------------------ reductions

const REDUCE_CASES: { shape: number[]; dims?: number[] }[] = [
  { shape: [4097, 3] }, // all, one workgroup pass with 4 segments + a short second pass
  { shape: [1] },
  { shape: [2, 77, 33], dims: [1] }, // R = 77 (workgroups), inner 33
  { shape: [2, 77, 33], dims: [2] }, // R = 33 (thread per output)
  { shape: [2, 77, 33], dims: [0, 2] }, // non-adjacent: permuted first
  { shape: [2, 77, 33], dims: [-2, -1] },
  { shape: [3, 9000], dims: [1] }, // 3 segments per row
  { shape: [300001] }, // 74 partials: two workgroup passes
  { shape: [1, 5, 1, 7], dims: [0, 2] }, // only size-1 dims reduced
  { shape: [3, 100, 300], dims: [1] }, // many inner columns: thread per output
];

for (const dt of DTYPES) {
  for (const c of REDUCE_CASES) {
    t(`reduce ${dt} [${c.shape}] dims ${c.dims ? `[${c.dims}]` : "all"}`, async () => {
      const e = await getEngine();
      const x = rand(e, c.shape, dt, 9);
      const abs = absSumRef(x.v, c.shape, c.dims);
      const os = c.shape.map((s, i) => (!c.dims || c.dims.map((d) => (d < 0 ? d + c.shape.length : d)).includes(i) ? 1 : s));
      for (const op of ["min", "max", "sum", "mean"] as const) {
        const y = ops.reduce(x.t, op, c.dims);
        assertShape(`reduce ${op}`, y, os);
        const ref = reduceRef(x.v, c.shape, op, c.dims);
        const got = await y.read();
        if (op === "min" || op === "max") assertClose(`reduce ${op}`, got, ref, 0, 0);
        else {
          // f32 summation: error bounded by a few ulps of Σ|x| (pairwise-ish order)
          const cnt = numel(c.shape) / ref.length;
          const tol = abs.map((a) => (2e-7 * Math.log2(cnt + 1) * a + 1e-30) / (op === "mean" ? cnt : 1));
          for (let i = 0; i < ref.length; i++) {
            if (!(Math.abs(got[i] - ref[i]) <= tol[i])) throw new Error(`reduce ${op} [${i}]: got ${got[i]} want ${ref[i]} (tol ${tol[i]})`);
          }
        }
      }
    });
  }
}

// ------------------------------------------------------------------ limits

t("every op splits work under forced-low binding and workgroup limits", async () => {
  const e = await getEngine();
  // 1 KiB bindings (256 f32) and 8 workgroups per grid dimension: every op below
  // needs several bound pieces and folded grids.
  await withLimits(e, { maxStorageBufferBindingSize: 1024, maxComputeWorkgroupsPerDimension: 8 }, async () => {
    for (const dt of DTYPES) {
      const a = rand(e, [3, 37, 11], dt, 21), b = rand(e, [3, 5, 11], dt, 22);
      await exact(`concat ${dt}`, ops.concat([a.t, b.t], 1), concatRef([{ data: a.v, shape: a.shape }, { data: b.v, shape: b.shape }], 1));
      await exact(`concat last ${dt}`, ops.concat([b.t, a.t], 1), concatRef([{ data: b.v, shape: b.shape }, { data: a.v, shape: a.shape }], 1));
      await exact(`slice ${dt}`, ops.slice(a.t, 1, 3, 36), sliceRef(a.v, a.shape, 1, 3, 36), [3, 33, 11]);
      await exact(`slice0 ${dt}`, ops.slice(a.t, 2, 1, 10), sliceRef(a.v, a.shape, 2, 1, 10), [3, 37, 9]);
      await exact(`permute ${dt}`, ops.permute(a.t, [2, 0, 1]), permuteRef(a.v, a.shape, [2, 0, 1]), [11, 3, 37]);
      const big = rand(e, [2, 300, 7], dt, 23); // a full transpose: each output row spans the whole source
      await exact(`transpose ${dt}`, ops.permute(big.t, [2, 1, 0]), permuteRef(big.v, big.shape, [2, 1, 0]), [7, 300, 2]);
      await exact(`pad2d ${dt}`, ops.pad2d(a.t, [1, 2, 3, 1], 0.5), pad2dRef(a.v, a.shape, [1, 2, 3, 1], 0.5), [3, 41, 14]);
      const tab = rand(e, [300, 13], dt, 24);
      const ids = Array.from({ length: 100 }, (_, i) => (i * 37) % 300);
      await exact(`gather ${dt}`, ops.gather(tab.t, e.upload(Uint32Array.from(ids), [100], "u32")), gatherRef(tab.v, 300, 13, ids), [100, 13]);
      const r = rand(e, [5000], dt, 25);
      await exact(`reduce max ${dt}`, ops.reduce(r.t, "max"), reduceRef(r.v, r.shape, "max"), [1]);
      const m = rand(e, [3, 700, 5], dt, 26);
      assertClose(`reduce mean ${dt}`, await ops.reduce(m.t, "mean", [1]).read(), reduceRef(m.v, m.shape, "mean", [1]), 1e-6, 1e-5);
      await exact(`cast ${dt}`, cast(a.t, "f32"), a.v, a.shape);
    }
  });
});

t("reduce over a middle dim splits rows and segments under a forced-low binding limit", async () => {
  const e = await getEngine();
  await withLimits(e, { maxStorageBufferBindingSize: 8192 }, async () => {
    for (const dt of DTYPES) {
      for (const shape of [[3, 40, 300], [3, 4, 300], [2, 9000, 1]]) {
        const x = rand(e, shape, dt, 27);
        for (const op of ["max", "mean"] as const) {
          const got = await ops.reduce(x.t, op, [1]).read();
          assertClose(`reduce ${op} ${dt} [${shape}]`, got, reduceRef(x.v, shape, op, [1]), op === "max" ? 0 : 1e-6, op === "max" ? 0 : 1e-5);
        }
      }
    }
  });
});

t("cast f32 -> f16 (native shader-f16 only)", async () => {
  const e = await getEngine();
  if (!e.gpu.f16) return; // packed f16 cannot be written; SwiftShader leg
  const x = rand(e, [3, 77], "f32", 30);
  await exact("cast", cast(x.t, "f16"), x.v.map(roundToHalf), [3, 77]);
});

t.run();
