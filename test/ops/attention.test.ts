import { suite } from "uvu";
import { getEngine, type Engine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { randArray } from "../reference/ops.ts";
import { attentionRef } from "../reference/attention.ts";
import { flashTiles, ROWBLOCK_KEYS } from "../../engine/ops/attention.ts";
import { FULL_GPU_KERNEL_TESTS, assertClose, fmt, withLimits } from "../lib/harness.ts";
import { float32ToHalfArray, roundToHalf } from "../../engine/half.ts";

const t = suite("attention");

let worstAbs = 0, worstRel = 0;
t.after(() => console.log(`  attention: max_abs=${fmt(worstAbs)} max_rel=${fmt(worstRel)}`));

interface Case { B: number; Nq: number; Nk: number; H: number; d: number; causal?: boolean; scale?: number; amp?: number; f16?: boolean; impl?: "flash" | "rows" | "rowblock" | "gemm" | "mm" | "blocked"; tile?: string }

async function runCase(e: Engine, c: Case, seed: number): Promise<void> {
  const ld = c.H * c.d;
  const amp = c.amp ?? 1;
  let q = randArray(c.B * c.Nq * ld, seed, amp), k = randArray(c.B * c.Nk * ld, seed + 1, amp), v = randArray(c.B * c.Nk * ld, seed + 2);
  const up = (a: Float32Array, n: number) => c.f16 ? e.upload(float32ToHalfArray(a), [c.B, n, ld], "f16") : e.upload(a, [c.B, n, ld]);
  const tq = up(q, c.Nq), tk = up(k, c.Nk), tv = up(v, c.Nk);
  if (c.f16) { q = q.map(roundToHalf); k = k.map(roundToHalf); v = v.map(roundToHalf); }
  const y = ops.attention(tq, tk, tv, { heads: c.H, causal: c.causal, scale: c.scale, impl: c.impl, tile: c.tile });
  if (y.shape.join() !== [c.B, c.Nq, ld].join()) throw new Error(`shape ${y.shape}`);
  const got = await y.read();
  const ref = attentionRef(q, k, v, c.B, c.Nq, c.Nk, c.H, c.d, c.scale ?? 1 / Math.sqrt(c.d), !!c.causal);
  // outputs are convex combinations of v (|v| < 1); f32 dot products of length d
  const r = assertClose(`attention ${JSON.stringify(c)}`, got, ref, 2e-6 * Math.sqrt(c.d) * amp * amp + 1e-6, 1e-5);
  worstAbs = Math.max(worstAbs, r.maxAbs); worstRel = Math.max(worstRel, r.maxRel);
  tq.dispose(); tk.dispose(); tv.dispose(); y.dispose();
}

// Not tile multiples: 1, odd sizes, 77 keys, one long odd axis (4097) against a short one.
const CASES: Case[] = [
  { B: 1, Nq: 1, Nk: 1, H: 1, d: 1 },
  { B: 2, Nq: 5, Nk: 3, H: 3, d: 1 },
  { B: 2, Nq: 9, Nk: 9, H: 2, d: 4, causal: true },        // tiny bigG CLIP
  { B: 1, Nq: 77, Nk: 77, H: 3, d: 64, causal: true },     // CLIP text
  { B: 2, Nq: 100, Nk: 77, H: 2, d: 64 },                  // cross-attention, 77 keys
  { B: 1, Nq: 333, Nk: 333, H: 1, d: 64 },                 // self-attention, several blocks both ways
  { B: 1, Nq: 3, Nk: 4097, H: 2, d: 8 },                   // long keys
  { B: 1, Nq: 4097, Nk: 5, H: 1, d: 4 },                   // long queries
  { B: 1, Nq: 70, Nk: 45, H: 2, d: 40 },
  { B: 1, Nq: 37, Nk: 50, H: 2, d: 80, causal: true },     // two d-chunks, the second partial
  { B: 1, Nq: 33, Nk: 29, H: 2, d: 160 },                  // wide heads: the blocked path
  { B: 1, Nq: 40, Nk: 41, H: 1, d: 512 },                  // the SDXL VAE mid-block head
  { B: 2, Nq: 45, Nk: 77, H: 2, d: 160, causal: true },
  { B: 1, Nq: 20, Nk: 70, H: 3, d: 17, causal: true },     // causal with more keys than queries
  // keys and widths a multiple of 4: gemm's vec4 paths (Kᵀ, score rows)
  { B: 2, Nq: 33, Nk: 128, H: 2, d: 64 },
  { B: 1, Nq: 70, Nk: 64, H: 3, d: 12, causal: true },
];
// Head dims up to 128 run on each fused kernel explicitly (rows needs d % 4 == 0;
// rowblock takes any, and its 8-row blocks leave partial blocks on most of these
// row counts), whatever this adapter's default; wider ones on their default
// (blocked). The two-GEMM path takes any head dim, and its 16-row × 8-pixel
// register blocks leave partial blocks on most of these sizes.
// mm (the GPU path) on every case where the GPU kernels get full coverage (see harness.ts)
const MM = (c: Case): Case[] => (FULL_GPU_KERNEL_TESTS ? [{ ...c, impl: "mm" }] : []);
const fusedFor = (c: Case): Case[] => c.d > 128 ? [c, { ...c, impl: "gemm" }, ...MM(c)]
  : [{ ...c, impl: "flash" }, ...(c.d % 4 === 0 ? [{ ...c, impl: "rows" as const }] : []), { ...c, impl: "rowblock" }, { ...c, impl: "gemm" }, ...MM(c)];
CASES.forEach((c, i) => fusedFor(c).forEach((ci) => t(`attention ${JSON.stringify(ci)}`, async () => runCase(await getEngine(), ci, 100 + 7 * i))));

// Both kernels are reachable for any head dim (impl); each is checked off its default range too.
const OTHER_PATH: Case[] = [
  { B: 1, Nq: 33, Nk: 29, H: 2, d: 160, impl: "flash" },   // split-d: 3 chunks, the last partial
  { B: 1, Nq: 40, Nk: 41, H: 1, d: 512, impl: "flash", causal: true },
  { B: 2, Nq: 77, Nk: 77, H: 3, d: 64, impl: "blocked", causal: true },
  { B: 1, Nq: 3, Nk: 4097, H: 2, d: 8, impl: "blocked" },
  { B: 1, Nq: 130, Nk: 5, H: 2, d: 1, impl: "blocked" },
  { B: 1, Nq: 33, Nk: 29, H: 1, d: 128, impl: "rows", causal: true }, // the widest head rows takes
  { B: 1, Nq: 33, Nk: 29, H: 1, d: 128, impl: "rowblock", causal: true }, // and rowblock
  { B: 2, Nq: 67, Nk: 3, H: 2, d: 6, impl: "rowblock", causal: true },  // fewer keys than a 4-key step past row 3
];
OTHER_PATH.forEach((c, i) => t(`attention ${JSON.stringify(c)}`, async () => runCase(await getEngine(), c, 200 + 7 * i)));

// rowblock with each keys-per-step count: key counts that are not multiples of
// it (77), fewer keys than one step (3), causal rows that see only part of a
// step, partial row blocks, an odd head dim.
t("rowblock: every keys-per-step count", async () => {
  const e = await getEngine();
  for (const [i, tile] of ROWBLOCK_KEYS.entries()) {
    await runCase(e, { B: 2, Nq: 37, Nk: 77, H: 2, d: 64, impl: "rowblock", tile }, 500 + 10 * i);
    await runCase(e, { B: 1, Nq: 21, Nk: 3, H: 3, d: 7, impl: "rowblock", tile }, 501 + 10 * i);
    await runCase(e, { B: 1, Nq: 45, Nk: 45, H: 1, d: 40, causal: true, impl: "rowblock", tile }, 502 + 10 * i);
  }
});

// Every flash tile this device can run (the GPU tuner's candidates), on blocks
// that are not tile multiples both ways: causal, or split over d, in turn.
if (FULL_GPU_KERNEL_TESTS) t("flash: every tile", async () => {
  const e = await getEngine();
  const tiles = flashTiles(e);
  if (tiles.length < 3) throw new Error(`only ${tiles.length} flash tiles fit this device`);
  for (const [i, tile] of tiles.entries()) {
    await runCase(e, i % 2 ? { B: 1, Nq: 133, Nk: 70, H: 2, d: 64, causal: true, impl: "flash", tile } : { B: 1, Nq: 45, Nk: 37, H: 1, d: 96, impl: "flash", tile }, 400 + i);
  }
});

t("attention with large scores stays finite (max-subtracted online softmax)", async () => {
  // q·k up to ~64·9 = 576 · scale 1 → exp overflows f32 without the running max
  for (const impl of ["flash", "rows", "rowblock", "gemm", "mm", "blocked"] as const) await runCase(await getEngine(), { B: 1, Nq: 50, Nk: 70, H: 1, d: 64, amp: 3, scale: 1, impl }, 300);
});

t("attention with an explicit scale and f16 inputs", async () => {
  const e = await getEngine();
  for (const impl of ["flash", "rows", "rowblock", "gemm", "mm"] as const) {
    await runCase(e, { B: 2, Nq: 19, Nk: 77, H: 2, d: 64, scale: 0.3, impl }, 310);
    // f16 storage is read natively on lavapipe and unpacked from u32 pairs on SwiftShader
    await runCase(e, { B: 1, Nq: 21, Nk: 13, H: 2, d: 40, f16: true, impl }, 320);
  }
  // rowblock and gemm read any head dim: odd widths from packed f16 pairs, causal
  await runCase(e, { B: 2, Nq: 13, Nk: 11, H: 3, d: 7, f16: true, causal: true, impl: "rowblock" }, 330);
  await runCase(e, { B: 2, Nq: 13, Nk: 11, H: 3, d: 7, f16: true, causal: true, impl: "gemm" }, 330);
  await runCase(e, { B: 2, Nq: 13, Nk: 11, H: 3, d: 7, f16: true, causal: true, impl: "mm" }, 330);
});

t("attention splits over batches and rows when bindings and grids are limited", async () => {
  const e = await getEngine();
  // q is 2×300×32 f32 = 75 KiB, K of a batch 12.5 KiB: 16 KiB bindings force
  // one batch per dispatch and 64-row slices of q (the causal mask must then
  // use the slice's global row numbers).
  await withLimits(e, { maxStorageBufferBindingSize: 16384, maxComputeWorkgroupsPerDimension: 4 }, async () => {
    for (const impl of (FULL_GPU_KERNEL_TESTS ? ["flash", "rows", "rowblock", "gemm", "mm"] : ["flash", "rows", "rowblock", "gemm"]) as Case["impl"][]) {
      await runCase(e, { B: 2, Nq: 300, Nk: 100, H: 1, d: 32, causal: true, impl }, 400);
      await runCase(e, { B: 3, Nq: 7, Nk: 11, H: 4, d: 16, impl }, 410); // whole batches per dispatch, folded grid
    }
    // blocked: score blocks of 40 rows (4 032 floats / 100 keys), 8 of them per batch item
    await runCase(e, { B: 2, Nq: 300, Nk: 100, H: 1, d: 32, causal: true, impl: "blocked" }, 420);
    await runCase(e, { B: 1, Nq: 20, Nk: 12, H: 2, d: 160 }, 430); // blocked by default: q in two 12-row blocks
    // gemm: score blocks of 32 rows (whole 16-row blocks of 4 032 / 100 keys), causal across blocks
    await runCase(e, { B: 2, Nq: 300, Nk: 100, H: 3, d: 8, causal: true, impl: "gemm" }, 440);
    // mm: all 3 heads' scores per block, 13 rows (4 032 / 300), causal across blocks and heads
    // (on every leg: mm's one case there, which compiles it under wgpu/naga and SwiftShader)
    await runCase(e, { B: 2, Nq: 300, Nk: 100, H: 3, d: 8, causal: true, impl: "mm" }, 450);
  });
});

t("attention rejects mismatched shapes with E_SHAPE", async () => {
  const e = await getEngine();
  const q = e.upload(new Float32Array(2 * 3 * 8), [2, 3, 8]);
  const k = e.upload(new Float32Array(2 * 5 * 8), [2, 5, 8]);
  const kBad = e.upload(new Float32Array(2 * 5 * 6), [2, 5, 6]);
  for (const f of [() => ops.attention(q, kBad, kBad, { heads: 2 }), () => ops.attention(q, k, k, { heads: 3 }), () => ops.attention(q, k, q, { heads: 2 })]) {
    let code = "";
    try { f(); } catch (err: any) { code = err.code; }
    if (code !== "E_SHAPE") throw new Error(`expected E_SHAPE, got '${code}'`);
  }
  q.dispose(); k.dispose(); kBad.dispose();
});

t.run();
