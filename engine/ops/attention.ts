// Multi-head scaled-dot-product attention (shaders/attention.wgsl): for head
// dims up to 128 a fused flash kernel (workgroup-memory tiles, suits GPUs) or
// one of three paths for CPU drivers: `rows` (a query row per thread, head
// dims a multiple of 4; short key sequences on SwiftShader), `rowblock` (8
// query rows per thread, so each per-lane K/V load feeds 8 rows; short key
// sequences on lavapipe) and `gemm` (Q·Kᵀ and P·V on conv2d's barrier-free
// GEMM kernel with a row softmax between; long key sequences on both),
// chosen per adapter by autotune; for wider heads a blocked path that
// materialises scores only for a block of query rows. All take the
// [B, N, heads*d] layout of Linear outputs directly (no permutes).
import type { Tensor } from "../tensor.ts";
import type { Engine } from "../engine.ts";
import { shapeStr } from "../tensor.ts";
import { SsdError } from "../errors.ts";
import type { KernelSpec } from "../kernel.ts";
import { actDtype, ceilDiv } from "./util.ts";
import { bindWindow, windowElems } from "./norm.ts";
import { forcedChoice, tunedChoice, tunedEntry } from "../autotune.ts";
import { DTYPE_BYTES } from "../tensor.ts";
import { rawGemm, regKernel } from "./conv.ts";
import { permute } from "./shape.ts";
import { rawMatmul, wideTiles } from "./matmul.ts";

export interface AttentionOptions {
  heads: number;
  /** default 1/sqrt(headDim) */
  scale?: number;
  /** causal mask (CLIP text) */
  causal?: boolean;
  /**
   * kernel choice, for tests and benchmarks; default by head dim: up to 128
   * the adapter's tuned choice of flash, rows (needs d % 4 == 0), rowblock
   * and gemm (tuned apart for short key sequences), blocked above
   */
  impl?: "auto" | AttentionKernel | "blocked";
  /**
   * force a tile (default the tuned one): flash with heads wider than 32, one
   * of FLASH_TILES; mm, the `wide` tile of its two GEMMs (WIDE_TILES);
   * rowblock, its keys per step (ROWBLOCK_KEYS)
   */
  tile?: string;
}

const FLASH: KernelSpec = {
  file: "attention", entry: "flash",
  bindings: [{ name: "Q", access: "read" }, { name: "K", access: "read" }, { name: "V", access: "read" }, { name: "O", access: "read_write" }],
  params: [["total", "u32"], ["ndc", "u32"], ["nqb", "u32"], ["H", "u32"], ["d", "u32"], ["ld", "u32"], ["nq", "u32"], ["Nk", "u32"],
    ["qpos0", "u32"], ["qoff", "u32"], ["koff", "u32"], ["voff", "u32"], ["ooff", "u32"], ["sq", "u32"], ["sk", "u32"], ["scale2", "f32"], ["causal", "u32"]],
};

/** The kernels for head dims up to 128 (autotune candidates). */
export type AttentionKernel = "flash" | "rows" | "rowblock" | "gemm" | "mm";

/**
 * The kernels that take head dim d. Self-attention ("attention") and attention
 * to at most SHORT_KEYS keys ("attention_short": cross-attention to the 77
 * text tokens, CLIP) are tuned apart: on CPU drivers the two-GEMM path wins
 * on long key sequences (~1.3× rowblock on lavapipe, 2× rows on SwiftShader
 * at 1024 keys) and loses on 77 keys, where most of its pixel blocks idle.
 */
export const attentionKernels = (d: number): AttentionKernel[] => (d % 4 === 0 ? ["rows", "flash", "rowblock", "gemm", "mm"] : ["flash", "rowblock", "gemm", "mm"]);
const SHORT_KEYS = 128;

const ROWS: KernelSpec = { ...FLASH, entry: "rows" };
/** query rows per workgroup of the rows kernel (RQ in the shader) */
const ROWS_RQ = 64;
const ROWBLOCK: KernelSpec = { ...FLASH, entry: "rowblock" };
/**
 * rowblock: 4·RG query rows per invocation (RG is a const in the shader, kept
 * equal), WGR invocations per workgroup
 * (one SIMD group of lavapipe's 8 lanes, so short sequences idle few lanes).
 */
const ROWBLOCK_RG = 2, ROWBLOCK_WG = 8;
/**
 * rowblock's keys per online-softmax step (override KB, at most the shader's
 * KB_MAX), tuned per adapter (op `rowblock_keys`). Each step rescales a
 * thread's 8 accumulator rows once. `bench kernels --only cross-attn` on
 * lavapipe (SSD_DEPTH_KERNEL_ROWBLOCK_KEYS, medians, 1024×20×64 → 77 and
 * 4096×10×64 → 77): through Dawn 57 / 95–110 ms with 4 keys, 41–48 / 78 with
 * 8, 38–43 / 70–81 with 16; through Deno's wgpu 64 / 115 with 4, 58 / 104
 * with 8, 110 / 207 with 16. (32 keys, which need bigger arrays, lost to 16
 * through Dawn.)
 */
export const ROWBLOCK_KEYS = ["4", "8", "16"];

const SCORES: KernelSpec = {
  file: "attention", entry: "scores",
  bindings: [{ name: "Q", access: "read" }, { name: "K", access: "read" }, { name: "S", access: "read_write" }],
  params: [["total", "u32"], ["ntn", "u32"], ["R", "u32"], ["Nk", "u32"], ["d", "u32"], ["ld", "u32"], ["qoff", "u32"], ["koff", "u32"], ["qpos0", "u32"], ["scale", "f32"], ["causal", "u32"]],
};
const SOFTMAX_ROWS: KernelSpec = {
  file: "attention", entry: "softmax_rows",
  bindings: [{ name: "S", access: "read_write" }],
  params: [["R", "u32"], ["Nk", "u32"]],
};
const SOFTMAX_LANES: KernelSpec = {
  file: "attention", entry: "softmax_lanes",
  bindings: [{ name: "S", access: "read_write" }],
  params: [["R", "u32"], ["Nk", "u32"], ["qpos0", "u32"], ["scale2", "f32"], ["causal", "u32"]],
};
const SOFTMAX_WG: KernelSpec = {
  file: "attention", entry: "softmax_wg",
  bindings: [{ name: "S", access: "read_write" }],
  params: [["rows", "u32"], ["R", "u32"], ["Nk", "u32"], ["qpos0", "u32"], ["scale2", "f32"], ["causal", "u32"]],
};
/** Scores the `mm` path may hold at once (all heads of a block of query rows). */
const MM_SCORE_BYTES = 512 << 20;
const PV: KernelSpec = {
  file: "attention", entry: "pv",
  bindings: [{ name: "S", access: "read" }, { name: "V", access: "read" }, { name: "O", access: "read_write" }],
  params: [["total", "u32"], ["ntn", "u32"], ["R", "u32"], ["Nk", "u32"], ["d", "u32"], ["ld", "u32"], ["voff", "u32"], ["ooff", "u32"]],
};

/** Heads wider than this take the blocked path (flash would recompute Q Kᵀ per 64-wide d-chunk). */
const FLASH_MAX_D = 128;
/** Cap on the score block of the blocked path (1 024 rows × 16 384 keys). */
const SCORE_BLOCK_BYTES = 64 << 20;

/** Tiles: BQ query rows × BKV keys per block, d streamed in DT slices, DO output columns per workgroup. */
interface Tiles { BQ: number; BKV: number; DT: number; DO: number }

/**
 * Narrow heads (the tiny fixtures' 4, SD's 40 is above) get 32 output columns
 * and taller query tiles so fewer threads idle; everything else 64 columns
 * (SDXL/CLIP's 64 in one chunk; wider heads are split into 64-wide chunks).
 */
function tilesFor(e: Engine, d: number, forced?: string): Tiles {
  if (d <= 32) return { BQ: 64, BKV: 16, DT: 16, DO: 32 };
  if (forced && !FLASH_TILES.includes(forced)) throw new SsdError("E_BAD_PARAM", `attention: unknown flash tile '${forced}' (one of ${FLASH_TILES.join(", ")})`);
  return parseFlashTile(forced ?? tunedChoice(e, "flash_tile", flashTiles(e)));
}

/**
 * Flash tiles for heads wider than 32, named BQxBKVxDTxDO; the first is the
 * default, the autotuner times the others on GPUs (op `flash_tile`, env
 * SSD_DEPTH_KERNEL_FLASH_TILE). DO = 2·BKV keeps the kernel's thread tiles consistent.
 */
export const FLASH_TILES = ["32x32x32x64", "64x32x32x64", "64x32x16x64", "128x32x16x64", "64x16x16x32"];

function parseFlashTile(name: string): Tiles {
  const [BQ, BKV, DT, DO] = name.split("x").map(Number);
  return { BQ, BKV, DT, DO };
}

/** The flash tiles this device can run (threads and workgroup memory). */
export function flashTiles(e: Engine): string[] {
  return FLASH_TILES.filter((n) => {
    const tl = parseFlashTile(n);
    return (tl.BQ / 2) * (tl.BKV / 4) <= e.gpu.limits.maxComputeInvocationsPerWorkgroup && flashShared(tl) <= e.gpu.limits.maxComputeWorkgroupStorageSize;
  });
}

/** Workgroup memory of the flash kernel for these tiles (see shaders/attention.wgsl). */
function flashShared(tl: Tiles): number {
  return 4 * (Math.max(tl.BQ * (tl.DT + 1) + tl.DT * (tl.BKV + 1), tl.BKV * tl.DO) + tl.BQ * tl.BKV + 3 * tl.BQ);
}

function overridesFor(tl: Tiles, maxShared: number): Record<string, number> {
  const WG = (tl.BQ / 2) * (tl.BKV / 4);
  // the kernel's fixed 2×4 (S) and 4×4 (O) thread tiles must cover both tiles with the same threads
  if (WG !== (tl.BQ / 4) * (tl.DO / 4) || tl.BQ % 4 || tl.BKV % 4) throw new SsdError("E_INTERNAL", `attention: inconsistent tiles ${JSON.stringify(tl)}`);
  const shared = flashShared(tl);
  if (shared > maxShared) throw new SsdError("E_LIMITS", `attention: tiles need ${shared} bytes of workgroup memory, the adapter allows ${maxShared}`);
  return { ...tl, WG };
}

/**
 * q [B, Nq, heads*d], k/v [B, Nk, heads*d] (the layout of to_q/to_k/to_v
 * outputs) -> [B, Nq, heads*d]. Never materialises Nq×Nk for long sequences.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  const e = q.engine;
  const H = opts.heads;
  if (q.rank !== 3 || k.rank !== 3 || v.rank !== 3) {
    throw new SsdError("E_SHAPE", `attention: q, k, v must be [B, N, heads*d], got ${shapeStr(q.shape)}, ${shapeStr(k.shape)}, ${shapeStr(v.shape)}`);
  }
  const [B, Nq, ld] = q.shape;
  const Nk = k.dim(1);
  if (k.dim(0) !== B || v.dim(0) !== B || k.dim(2) !== ld || v.dim(2) !== ld || v.dim(1) !== Nk) {
    throw new SsdError("E_SHAPE", `attention: k ${shapeStr(k.shape)} and v ${shapeStr(v.shape)} do not match q ${shapeStr(q.shape)} (same batch and width; k and v the same length)`);
  }
  if (!Number.isInteger(H) || H < 1 || ld % H) throw new SsdError("E_SHAPE", `attention: width ${ld} does not split into ${H} heads`);
  if (Nk === 0) throw new SsdError("E_SHAPE", "attention: no keys");
  const d = ld / H;
  const out = e.empty(q.shape, actDtype(q));
  if (out.numel === 0) return out;
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  const causal = !!opts.causal;
  const impl = opts.impl && opts.impl !== "auto" ? opts.impl : d > FLASH_MAX_D ? "blocked"
    : tunedChoice(e, Nk > SHORT_KEYS ? "attention" : "attention_short", attentionKernels(d));
  if (impl === "blocked") {
    blocked(q, k, v, out, H, d, scale, causal);
    return out;
  }
  if (impl === "gemm") {
    viaGemm(q, k, v, out, H, d, scale, causal);
    return out;
  }
  if (impl === "mm") {
    viaWideMatmul(q, k, v, out, H, d, scale, causal, mmTile(e, opts.tile));
    return out;
  }
  if (impl === "rows" && (d % 4 !== 0 || d > FLASH_MAX_D)) throw new SsdError("E_BAD_PARAM", `attention: the rows kernel needs a head dim that is a multiple of 4 and at most ${FLASH_MAX_D}, got ${d}`);
  if (impl === "rowblock" && d > FLASH_MAX_D) throw new SsdError("E_BAD_PARAM", `attention: the rowblock kernel needs a head dim of at most ${FLASH_MAX_D}, got ${d}`);
  // rows / rowblock: one workgroup per BQ query rows of a (batch, head), all of d; flash: BQ rows × DO columns
  const dtypes = [q.dtype, k.dtype, v.dtype, out.dtype];
  const { spec, tl, overrides }: { spec: KernelSpec; tl: { BQ: number; DO: number }; overrides: Record<string, number> } = impl === "rows" ? { spec: ROWS, tl: { BQ: ROWS_RQ, DO: d }, overrides: { D4: d / 4 } }
    : impl === "rowblock" ? { spec: ROWBLOCK, tl: { BQ: 4 * ROWBLOCK_RG * ROWBLOCK_WG, DO: d }, overrides: { WGR: ROWBLOCK_WG, KB: rowblockKeys(e, opts.tile) } }
    : (() => { const tl = tilesFor(e, d, opts.tile); return { spec: FLASH, tl, overrides: overridesFor(tl, e.gpu.limits.maxComputeWorkgroupStorageSize) }; })();
  const variant = { dtypes, overrides };
  const elB = (t: Tensor) => DTYPE_BYTES[t.dtype];

  // Split over batches, then over query rows, so each bound range fits
  // maxStorageBufferBindingSize; a batch's keys and values are bound whole.
  const maxEl = windowElems([q, k, v, out]);
  const perQ = Nq * ld, perK = Nk * ld;
  if (perK > maxEl) throw new SsdError("E_LIMITS", `attention: the keys of one batch item (${shapeStr([Nk, ld])}) exceed maxStorageBufferBindingSize; split the sequence`);
  const nb = Math.max(1, Math.min(Math.floor(maxEl / perQ), Math.floor(maxEl / perK)));
  const nr = perQ <= maxEl ? Nq : Math.floor(maxEl / ld / tl.BQ) * tl.BQ;
  if (nr < 1) throw new SsdError("E_LIMITS", `attention: ${tl.BQ} query rows of ${ld} exceed maxStorageBufferBindingSize`);
  const ndc = ceilDiv(d, tl.DO);
  const scale2 = scale * Math.LOG2E;
  for (let b0 = 0; b0 < B; b0 += nb) {
    const nbb = Math.min(nb, B - b0);
    const wk = bindWindow(k, b0 * perK, nbb * perK), wv = bindWindow(v, b0 * perK, nbb * perK);
    for (let r0 = 0; r0 < Nq; r0 += nr) {
      const nrr = Math.min(nr, Nq - r0);
      const start = b0 * perQ + r0 * ld, count = (nbb - 1) * perQ + nrr * ld;
      const wq = bindWindow(q, start, count), wo = bindWindow(out, start, count);
      const nqb = ceilDiv(nrr, tl.BQ);
      const total = nbb * H * nqb * ndc;
      e.run(spec, variant, [wq.bind, wk.bind, wv.bind, wo.bind], {
        total, ndc, nqb, H, d, ld, nq: nrr, Nk, qpos0: r0,
        qoff: wq.off, koff: wk.off, voff: wv.off, ooff: wo.off, sq: perQ, sk: perK, scale2, causal: causal ? 1 : 0,
      }, [total], impl === "flash" ? "attention" : impl === "rowblock" ? `attention.rowblock:k${overrides.KB}` : `attention.${impl}`, {
        // Q Kᵀ and P V, 2 FLOPs per multiply-add each (the causal mask's skipped half still counted, as the peers do)
        flops: 4 * nbb * H * nrr * Nk * d,
        bytes: nbb * nrr * ld * (elB(q) + elB(out)) + nbb * Nk * ld * (elB(k) + elB(v)),
      });
    }
  }
  return out;
}

/** rowblock's keys per step: forced (option, SSD_DEPTH_KERNEL_ROWBLOCK_KEYS), else tuned for this adapter. */
function rowblockKeys(e: Engine, forced?: string): number {
  if (forced !== undefined && !ROWBLOCK_KEYS.includes(forced)) throw new SsdError("E_BAD_PARAM", `attention: rowblock takes ${ROWBLOCK_KEYS.join(", ")} keys per step, not '${forced}'`);
  return Number(forced ?? tunedChoice(e, "rowblock_keys", ROWBLOCK_KEYS));
}

/**
 * The `wide` tile of `mm`'s GEMMs: forced (option, SSD_DEPTH_KERNEL_MM_TILE),
 * else tuned on self-attention itself (op `mm_tile`), else the tuned matmul
 * tile. Its own choice because its GEMMs are unlike the linears the matmul
 * tile is tuned on (K = 64 for Q·Kᵀ, N = 64 for P·V): on an H200, P·V of
 * SSD-1B's UNet step took 25.7 ms on 128x64k8t8 and 63 ms on 64x256k8t8,
 * each the matmul tile of a tuning run (README).
 */
function mmTile(e: Engine, forced?: string): string {
  const tiles = wideTiles(e);
  if (forced !== undefined && !tiles.includes(forced)) throw new SsdError("E_BAD_PARAM", `attention: '${forced}' is not one of this device's wide tiles (${tiles.join(", ")})`);
  const cached = tunedEntry(e, "mm_tile");
  return forced ?? forcedChoice("mm_tile", tiles) ?? (cached && tiles.includes(cached) ? cached : tunedChoice(e, "matmul_tile", tiles));
}

/**
 * `mm` (GPUs): per batch item and block of query rows, S = Q·Kᵀ for all heads
 * in one dispatch of matmul's `wide` kernel (Q and K read in place: head h is
 * a batch with offset h·d), a softmax with a workgroup per score row, then
 * O = P·V, again one `wide` dispatch over the heads, written straight into
 * each head's columns. Holds up to MM_SCORE_BYTES of scores.
 */
function viaWideMatmul(q: Tensor, k: Tensor, v: Tensor, out: Tensor, H: number, d: number, scale: number, causal: boolean, tile: string): void {
  const e = q.engine;
  const ld = q.dim(2), Nk = k.dim(1);
  const elB = (t: Tensor) => DTYPE_BYTES[t.dtype];
  const scale2 = scale * Math.LOG2E;
  forScoreBlocks(q, k, v, out, 128, Infinity, ({ r0, rr, wq, wk, wv, wo }, S) => {
    rawMatmul(e, { batch: H, M: rr, N: Nk, K: d, transB: true, lda: ld, ldb: ld, ldc: Nk, sa: d, sb: d, sc: rr * Nk, oa: wq.off, ob: wk.off, oc: 0 },
      { a: wq.bind, b: wk.bind, c: S }, [q.dtype, k.dtype, "f32"], `attention.qk:${tile}`,
      { flops: 2 * H * rr * Nk * d, bytes: (rr * elB(q) + Nk * elB(k)) * d * H + H * rr * Nk * 4 }, tile);
    e.run(SOFTMAX_WG, { dtypes: ["f32"] }, [S], { rows: H * rr, R: rr, Nk, qpos0: r0, scale2, causal: causal ? 1 : 0 }, [H * rr], "attention.softmax",
      { flops: 5 * H * rr * Nk, bytes: 12 * H * rr * Nk });
    rawMatmul(e, { batch: H, M: rr, N: d, K: Nk, transB: false, lda: Nk, ldb: ld, ldc: ld, sa: rr * Nk, sb: d, sc: d, oa: 0, ob: wv.off, oc: wo.off },
      { a: S, b: wv.bind, c: wo.bind }, ["f32", v.dtype, out.dtype], `attention.pv:${tile}`,
      { flops: 2 * H * rr * Nk * d, bytes: H * rr * Nk * 4 + (Nk * elB(v) + rr * elB(out)) * d * H }, tile);
  }, H, MM_SCORE_BYTES);
}

/** The bound ranges of one score block: batch item b, query rows [r0, r0 + rr). */
interface ScoreBlock {
  b: number; r0: number; rr: number;
  wq: ReturnType<typeof bindWindow>; wk: ReturnType<typeof bindWindow>; wv: ReturnType<typeof bindWindow>; wo: ReturnType<typeof bindWindow>;
}

/**
 * The paths that materialise scores: a block of R query rows × all Nk keys
 * (of `heads` heads at once, or one head at a time) per step, R sized to the
 * binding limit and `capBytes`, at most `maxR`, a multiple of `tile` when
 * there are several blocks, in one f32 buffer that every head and block
 * reuses (dispatches on one queue run in order). Calls `each` per block.
 */
function forScoreBlocks(q: Tensor, k: Tensor, v: Tensor, out: Tensor, tile: number, maxR: number, each: (blk: ScoreBlock, S: Tensor) => void,
  heads = 1, capBytes = SCORE_BLOCK_BYTES): void {
  const e = q.engine;
  const [B, Nq, ld] = q.shape;
  const Nk = k.dim(1);
  const maxEl = windowElems([q, k, v, out]);
  const perQ = Nq * ld, perK = Nk * ld;
  if (perK > maxEl) throw new SsdError("E_LIMITS", `attention: the keys of one batch item (${shapeStr([Nk, ld])}) exceed maxStorageBufferBindingSize; split the sequence`);
  const lim = e.gpu.limits;
  const scoreEl = Math.floor(Math.min(lim.maxStorageBufferBindingSize - lim.minStorageBufferOffsetAlignment, lim.maxBufferSize, capBytes) / 4);
  let R = Math.min(Nq, Math.floor(scoreEl / (heads * Nk)), Math.floor(maxEl / ld), maxR);
  if (R < 1) throw new SsdError("E_LIMITS", `attention: one row of ${Nk} scores exceeds maxStorageBufferBindingSize`);
  if (R < Nq && R > tile) R -= R % tile; // several blocks: whole tiles each
  const S = e.empty([heads * R * Nk], "f32");
  try {
    for (let b = 0; b < B; b++) {
      const wk = bindWindow(k, b * perK, perK), wv = bindWindow(v, b * perK, perK);
      for (let r0 = 0; r0 < Nq; r0 += R) {
        const rr = Math.min(R, Nq - r0);
        const wq = bindWindow(q, b * perQ + r0 * ld, rr * ld), wo = bindWindow(out, b * perQ + r0 * ld, rr * ld);
        each({ b, r0, rr, wq, wk, wv, wo }, S);
      }
    }
  } finally {
    S.dispose();
  }
}

/**
 * Wide heads: per (batch, head) and score block, S = scale·Q Kᵀ [R, Nk] is
 * softmaxed in place and multiplied by V, each step tiled through workgroup
 * memory.
 */
function blocked(q: Tensor, k: Tensor, v: Tensor, out: Tensor, H: number, d: number, scale: number, causal: boolean): void {
  const e = q.engine;
  const ld = q.dim(2), Nk = k.dim(1);
  const ntnS = ceilDiv(Nk, 64), ntnO = ceilDiv(d, 64);
  forScoreBlocks(q, k, v, out, 64, Infinity, ({ r0, rr, wq, wk, wv, wo }, S) => { // whole 64-row tiles
    const ntm = ceilDiv(rr, 64);
    for (let h = 0; h < H; h++) {
      e.run(SCORES, { dtypes: [q.dtype, k.dtype, "f32"] }, [wq.bind, wk.bind, S],
        { total: ntm * ntnS, ntn: ntnS, R: rr, Nk, d, ld, qoff: wq.off + h * d, koff: wk.off + h * d, qpos0: r0, scale, causal: causal ? 1 : 0 }, [ntm * ntnS], "attention.scores",
        { flops: 2 * rr * Nk * d, bytes: (rr + Nk) * d * 4 + rr * Nk * 4 });
      // max, exp and sum: about 5 operations per score; read and written once
      e.run(SOFTMAX_ROWS, { dtypes: ["f32"] }, [S], { R: rr, Nk }, [rr], "attention.softmax", { flops: 5 * rr * Nk, bytes: 8 * rr * Nk });
      e.run(PV, { dtypes: ["f32", v.dtype, out.dtype] }, [S, wv.bind, wo.bind],
        { total: ntm * ntnO, ntn: ntnO, R: rr, Nk, d, ld, voff: wv.off + h * d, ooff: wo.off + h * d }, [ntm * ntnO], "attention.pv",
        { flops: 2 * rr * Nk * d, bytes: rr * Nk * 4 + (Nk + rr) * d * 4 });
    }
  });
}

/**
 * `gemm` (CPU drivers, long key sequences): per (batch, head) and score
 * block, S = Q·Kᵀ [R, Nk] and O = softmax(S)·V as two GEMMs on conv2d's
 * barrier-free kernel (`sg` where the device has subgroups of 8, else `reg`),
 * the fastest GEMM there, with a barrier-free row softmax between. Q, K and V
 * are read in place through strides (Q as the GEMM's per-workgroup operand,
 * K and V as its per-lane one) and the output rows land straight in their
 * head's columns; only the score block is extra memory.
 */
function viaGemm(q: Tensor, k: Tensor, v: Tensor, out: Tensor, H: number, d: number, scale: number, causal: boolean): void {
  const e = q.engine;
  const [, Nq, ld] = q.shape;
  const Nk = k.dim(1);
  const perQ = Nq * ld, perK = Nk * ld;
  const kernel = regKernel(e) as "reg" | "sg";
  const elB = (t: Tensor) => DTYPE_BYTES[t.dtype];
  const scale2 = scale * Math.LOG2E;
  const v4 = Nk % 4 === 0; // score rows of whole vec4s
  // Kᵀ (one batched transpose, 4×4 tiles) lets Q·Kᵀ load 4 adjacent keys at once: ~1.5× on lavapipe
  const kt = v4 && ld % 4 === 0 && DTYPE_BYTES[k.dtype] === 4 ? permute(k, [0, 2, 1]) : null;
  // whole 16-row register blocks; the GEMM grids are not folded, so a block's rows must fit one axis
  forScoreBlocks(q, k, v, out, 16, 16 * e.gpu.limits.maxComputeWorkgroupsPerDimension, ({ b, r0, rr, wq, wk, wv, wo }, S) => {
    for (let h = 0; h < H; h++) {
      // S[m, j] = Σ_c Q[b, r0 + m, h·d + c] · K[b, j, h·d + c], K read in place
      // (a gather per key) or from Kᵀ[b, h·d + c, j] (runs of 4 keys per load)
      const xk = kt ? {
        x: bindWindow(kt, b * perK, perK),
        g: { b0: b * H + h, Cin: d, xsC: Nk, xsN: 1, xoff: 0, xBase: b * perK, Cout: rr, yBase: (b * H + h) * rr * Nk },
      } : {
        x: wk,
        g: { b0: b, Cin: perK, xsC: 1, xsN: ld, xoff: h * d, xBase: b * perK, Cout: rr, yBase: b * rr * Nk },
      };
      rawGemm(e, kernel, {
        K: d, on: rr, npix: Nk,
        wsO: ld, wsC: 1, wOff: wq.off + h * d, wBase: 0, o0: 0,
        ...xk.g, xBase: xk.g.xBase - xk.x.off, ysM: Nk, ysN: 1, yOff: 0,
      }, { x: xk.x.bind, w: wq.bind, y: S }, [k.dtype, q.dtype, "f32"], "attention.qk",
      { flops: 2 * rr * Nk * d, bytes: (rr * elB(q) + Nk * elB(k)) * d + rr * Nk * 4 });
      e.run(SOFTMAX_LANES, { dtypes: ["f32"], vec4: [v4], overrides: { V4: v4 ? 1 : 0 } }, [S], { R: rr, Nk, qpos0: r0, scale2, causal: causal ? 1 : 0 }, [ceilDiv(rr, 64)], "attention.softmax",
        { flops: 5 * rr * Nk, bytes: 12 * rr * Nk });
      // O[b, r0 + m, h·d + c] = Σ_j P[m, j] · V[b, j, h·d + c]
      rawGemm(e, kernel, {
        K: Nk, on: rr, npix: d,
        wsO: Nk, wsC: 1, wOff: 0, wBase: r0 * Nk, o0: r0,
        b0: b, Cin: Nk, xsC: ld, xsN: 1, xoff: h * d, xBase: b * perK - wv.off,
        Cout: Nq, ysM: ld, ysN: 1, yOff: h * d, yBase: b * perQ + r0 * ld - wo.off,
      }, { x: wv.bind, w: S, y: wo.bind }, [v.dtype, "f32", out.dtype], "attention.pv",
      { flops: 2 * rr * Nk * d, bytes: rr * Nk * 4 + (Nk * elB(v) + rr * elB(out)) * d });
    }
  });
  kt?.dispose();
}
