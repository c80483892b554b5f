import { suite } from "uvu";
import { getEngine, type Engine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import type { Tensor } from "../../engine/tensor.ts";
import { act, randArray } from "../reference/ops.ts";
import { stridesOf } from "../reference/shape.ts";
import { assertClose, withLimits } from "../lib/harness.ts";
import { float32ToHalfArray, roundToHalf } from "../../engine/half.ts";

const t = suite("elementwise");
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function rand(e: Engine, shape: number[], dtype: "f32" | "f16", seed: number, scale = 1, offset = 0): { t: Tensor; v: number[] } {
  const a = randArray(numel(shape), seed, scale).map((x) => x + offset);
  if (dtype === "f16") return { t: e.upload(float32ToHalfArray(a), shape, "f16"), v: Array.from(a, roundToHalf) };
  return { t: e.upload(a, shape, "f32"), v: Array.from(a) };
}

/** float64 broadcasting reference */
function broadcastRef(a: number[], as: number[], b: number[], bs: number[], f: (x: number, y: number) => number): { data: number[]; shape: number[] } {
  const r = Math.max(as.length, bs.length);
  const pa = [...Array(r - as.length).fill(1), ...as], pb = [...Array(r - bs.length).fill(1), ...bs];
  const out = pa.map((d, i) => Math.max(d, pb[i]));
  const sa = stridesOf(pa), sb = stridesOf(pb);
  const data: number[] = [];
  const idx = new Array(r).fill(0);
  for (let n = 0; n < numel(out); n++) {
    let ia = 0, ib = 0;
    for (let k = 0; k < r; k++) { ia += (pa[k] === 1 ? 0 : idx[k]) * sa[k]; ib += (pb[k] === 1 ? 0 : idx[k]) * sb[k]; }
    data.push(f(a[ia], b[ib]));
    for (let k = r - 1; k >= 0; k--) { if (++idx[k] < out[k]) break; idx[k] = 0; }
  }
  return { data, shape: out };
}

function assertShape(name: string, y: Tensor, shape: number[]): void {
  if (y.shape.join() !== shape.join()) throw new Error(`${name}: shape [${y.shape}] != [${shape}]`);
}

const BIN: Record<string, [(a: Tensor, b: Tensor) => Tensor, (x: number, y: number) => number]> = {
  add: [ops.add, (x, y) => x + y],
  sub: [ops.sub, (x, y) => x - y],
  mul: [ops.mul, (x, y) => x * y],
  div: [ops.div, (x, y) => x / y],
  max: [ops.maximum, Math.max],
  min: [ops.minimum, Math.min],
};

const BCAST: [number[], number[]][] = [
  [[2, 3, 5], [2, 3, 5]],
  [[2, 3, 5], [5]],
  [[2, 1, 5], [3, 1]],
  [[77, 1], [1, 33]],
  [[4097], [1]],
  [[1], [2, 3]],
  [[2, 3, 1, 5, 7], [3, 1, 1, 7]], // rank 5 that collapses to 4 dims
  [[1, 7, 1, 1], [2, 7, 3, 5]], // channel bias on NCHW
  // several workgroups of 8-output runs; runs cross every collapsed dim; a partial last run
  [[3, 5, 1, 683], [5, 7, 1]],
];

for (const [name, [fn, ref]] of Object.entries(BIN)) {
  for (const [as, bs] of BCAST) {
    for (const [da, db] of [["f32", "f32"], ["f16", "f32"], ["f32", "f16"]] as const) {
      t(`${name} [${as}] ${da} with [${bs}] ${db}`, async () => {
        const e = await getEngine();
        const a = rand(e, as, da, 1);
        // divisors kept away from 0 so the comparison is about the kernel, not cancellation
        const b = name === "div" ? rand(e, bs, db, 2, 0.5, 1) : rand(e, bs, db, 2);
        const y = fn(a.t, b.t);
        const r = broadcastRef(a.v, as, b.v, bs, ref);
        assertShape(name, y, r.shape);
        // inputs are exact f32/f16 values; one f32 rounding of the result (division: 2.5 ulp in WGSL)
        assertClose(name, await y.read(), r.data, 0, name === "div" ? 3e-7 : 6e-8);
      });
    }
  }
}

t("add with a fused activation", async () => {
  const e = await getEngine();
  for (const a_ of ["silu", "gelu", "relu"] as const) {
    const a = rand(e, [3, 77, 5], "f32", 3, 4), b = rand(e, [5], "f32", 4, 4);
    const y = ops.add(a.t, b.t, a_);
    const r = broadcastRef(a.v, [3, 77, 5], b.v, [5], (x, z) => act(Math.fround(x + z), a_));
    assertClose(`add+${a_}`, await y.read(), r.data, 2e-6, 2e-6);
  }
});

t("pow: positive bases, negative bases with integer exponents, zero exponent", async () => {
  const e = await getEngine();
  const base = [2, 0.5, 3, -2, -2, -0.5, 0, 0, 7, -3];
  const ex = [3, -1.5, 0.25, 2, 3, -2, 0, 2, 0, 0];
  const y = ops.pow(e.upload(Float32Array.from(base), [10]), e.upload(Float32Array.from(ex), [10]));
  assertClose("pow", await y.read(), base.map((b, i) => b ** ex[i]), 1e-6, 2e-6);
});

// ------------------------------------------------------------------ unary

const ACTS = ["silu", "gelu", "gelu_tanh", "quick_gelu", "relu"] as const;
const EXTREMES = [0, -0, 1e-30, -1e-30, 1e-3, -1e-3, 3, -3, 5.5, -5.5, 9.9, -9.9, 20, -20, 88, -88, 100, -100, 1e4, -1e4];

// 4097 (+ 20 extremes for f32) elements take the scalar kernel, 4096 (+ 20) the vec4 one
for (const dt of ["f32", "f16"] as const) {
  for (const a_ of ACTS) for (const n of [4097, 4096]) {
    t(`${a_} ${dt} on [-8, 8] and extremes, ${n}`, async () => {
      const e = await getEngine();
      const r = rand(e, [n], dt, 5, 8);
      // the reference sees the f32 values the GPU sees
      const vals = dt === "f32" ? Array.from(Float32Array.from([...r.v, ...EXTREMES])) : r.v;
      const x = dt === "f32" ? e.upload(Float32Array.from(vals), [vals.length]) : r.t;
      const y = ops.unary(x, a_);
      // gelu's erf approximation and exp/tanh built-ins: a few f32 ulps
      const rep = a_ === "relu"
        ? assertClose(a_, await y.read(), vals.map((v) => act(v, a_)), 0, 0)
        : assertClose(a_, await y.read(), vals.map((v) => act(v, a_)), 1e-6, 4e-6);
      if (dt === "f32") console.log(`    ${a_}: max_abs=${rep.maxAbs.toExponential(2)} max_rel=${rep.maxRel.toExponential(2)}`);
    });
  }
}

t("silu / gelu / quickGelu / relu wrappers pick the right activation", async () => {
  const e = await getEngine();
  const x = rand(e, [1, 77], "f32", 6, 4);
  const cases: [Tensor, string][] = [[ops.silu(x.t), "silu"], [ops.gelu(x.t), "gelu"], [ops.gelu(x.t, "tanh"), "gelu_tanh"], [ops.quickGelu(x.t), "quick_gelu"], [ops.relu(x.t), "relu"]];
  for (const [y, name] of cases) assertClose(name, await y.read(), x.v.map((v) => act(v, name)), 1e-6, 4e-6);
});

t("scale, clamp, copy and affine+activation", async () => {
  const e = await getEngine();
  for (const dt of ["f32", "f16"] as const) {
    const x = rand(e, [3, 5, 77], dt, 7, 3);
    const f = Math.fround;
    assertClose("scale", await ops.scale(x.t, 0.18215).read(), x.v.map((v) => v * f(0.18215)), 0, 6e-8);
    assertClose("scale+beta", await ops.scale(x.t, 0.5, 0.5).read(), x.v.map((v) => v * 0.5 + 0.5), 1e-7, 6e-8);
    assertClose("clamp", await ops.clamp(x.t, -0.3, 0.7).read(), x.v.map((v) => Math.min(Math.max(v, f(-0.3)), f(0.7))), 0, 0);
    assertClose("clamp -inf..1", await ops.clamp(x.t, -Infinity, 1).read(), x.v.map((v) => Math.min(v, 1)), 0, 0);
    assertClose("copy", await ops.copy(x.t).read(), x.v, 0, 0);
    assertClose("silu(2x-1) in [0, 1]", await ops.unary(x.t, "silu", 2, -1, 0, 1).read(), x.v.map((v) => Math.min(Math.max(act(2 * v - 1, "silu"), 0), 1)), 1e-6, 4e-6);
  }
});

t("lincomb with 1 to 4 terms and a constant", async () => {
  const e = await getEngine();
  const xs = [0, 1, 2, 3].map((i) => rand(e, [2, 4097], i === 2 ? "f16" : "f32", 10 + i));
  const cs = [0.7, -1.25, 3, 1e-3];
  for (let k = 1; k <= 4; k++) {
    const y = ops.lincomb(xs.slice(0, k).map((x, i) => [cs[i], x.t] as [number, Tensor]), k === 3 ? 0.5 : 0);
    const ref = xs[0].v.map((_, j) => xs.slice(0, k).reduce((s, x, i) => s + Math.fround(cs[i]) * x.v[j], k === 3 ? 0.5 : 0));
    assertClose(`lincomb k=${k}`, await y.read(), ref, 1e-6, 1e-6);
  }
});

t("geglu: hidden * act(gate) on the last dim, f32 and f16 inputs", async () => {
  const e = await getEngine();
  for (const dt of ["f32", "f16"] as const) {
    for (const [rows, h] of [[1, 1], [3 * 77, 33], [2, 1280], [701, 3]]) {
      const x = rand(e, [rows, 2 * h], dt, 20, 3);
      for (const a_ of ["gelu", "gelu_tanh", "silu"] as const) {
        const y = ops.geglu(x.t, a_);
        assertShape("geglu", y, [rows, h]);
        const ref: number[] = [];
        for (let r = 0; r < rows; r++) for (let c = 0; c < h; c++) ref.push(x.v[r * 2 * h + c] * act(x.v[r * 2 * h + h + c], a_));
        assertClose(`geglu ${a_} ${dt} ${rows}x${h}`, await y.read(), ref, 2e-6, 4e-6);
      }
    }
  }
});

t("f16 activations (native shader-f16 only): outputs rounded to half", async () => {
  const e = await getEngine();
  if (!e.gpu.f16) return; // the SwiftShader leg has no native f16
  const saved = e.precision;
  e.precision = { ...saved, activations: "f16" };
  try {
    const a = rand(e, [3, 77], "f16", 30, 2), b = rand(e, [77], "f32", 31);
    const y = ops.add(a.t, b.t, "silu");
    if (y.dtype !== "f16") throw new Error(`dtype ${y.dtype}`);
    const ref = broadcastRef(a.v, [3, 77], b.v, [77], (x, z) => act(x + z, "silu"));
    // one f16 rounding of the result: relative 2^-11
    assertClose("add silu f16", await y.read(), ref.data, 1e-4, 1e-3);
  } finally {
    e.precision = saved;
  }
});

t("ops split work under forced-low binding and workgroup limits", async () => {
  const e = await getEngine();
  // 4 KiB bindings (1024 f32; pieces are multiples of 128 outputs, so geglu's input rows need a few KiB)
  // and 8 workgroups per grid dimension: several pieces and folded grids
  await withLimits(e, { maxStorageBufferBindingSize: 4096, maxComputeWorkgroupsPerDimension: 8 }, async () => {
    for (const dt of ["f32", "f16"] as const) {
      const big = rand(e, [3, 7, 11, 53], dt, 40), bias = rand(e, [1, 7, 1, 1], "f32", 41), row = rand(e, [53], dt, 42);
      const other = rand(e, [3, 7, 11, 53], "f32", 43);
      for (const [name, a, as, b, bs] of [
        ["big+bias", big, [3, 7, 11, 53], bias, [1, 7, 1, 1]],
        ["row*big", row, [53], big, [3, 7, 11, 53]],
        ["big-other", big, [3, 7, 11, 53], other, [3, 7, 11, 53]],
      ] as [string, { t: Tensor; v: number[] }, number[], { t: Tensor; v: number[] }, number[]][]) {
        const f = name.includes("+") ? ops.add : name.includes("*") ? ops.mul : ops.sub;
        const r = broadcastRef(a.v, as, b.v, bs, name.includes("+") ? (x, y) => x + y : name.includes("*") ? (x, y) => x * y : (x, y) => x - y);
        assertClose(`${name} ${dt}`, await f(a.t, b.t).read(), r.data, 0, 6e-8);
      }
      assertClose(`silu ${dt}`, await ops.silu(big.t).read(), big.v.map((v) => act(v, "silu")), 1e-6, 4e-6);
      const big4 = rand(e, [3, 7, 11, 52], dt, 45); // a multiple of 4: vec4 pieces
      assertClose(`silu ${dt} (vec4)`, await ops.silu(big4.t).read(), big4.v.map((v) => act(v, "silu")), 1e-6, 4e-6);
      assertClose(`lincomb ${dt}`, await ops.lincomb([[0.5, big.t], [2, other.t]], 1).read(), big.v.map((v, i) => 0.5 * v + 2 * other.v[i] + 1), 1e-6, 1e-6);
      const g = rand(e, [3, 77, 2 * 45], dt, 44);
      const ref: number[] = [];
      for (let r = 0; r < 231; r++) for (let c = 0; c < 45; c++) ref.push(g.v[r * 90 + c] * act(g.v[r * 90 + 45 + c], "gelu"));
      assertClose(`geglu ${dt}`, await ops.geglu(g.t).read(), ref, 2e-6, 4e-6);
    }
  });
});

t("rejects shapes that do not broadcast with E_SHAPE", async () => {
  const e = await getEngine();
  let code = "";
  try { ops.add(e.upload(new Float32Array(6), [2, 3]), e.upload(new Float32Array(4), [4])); } catch (err: any) { code = err.code; }
  if (code !== "E_SHAPE") throw new Error(`expected E_SHAPE, got '${code}'`);
});

t.run();
