// Fused multi-head scaled-dot-product attention (shaders/attention.wgsl).
import type { Tensor } from "../tensor.ts";
import { shapeStr } from "../tensor.ts";
import { SsdError } from "../errors.ts";
import type { KernelSpec } from "../kernel.ts";
import { actDtype, ceilDiv } from "./util.ts";
import { bindWindow, windowElems } from "./norm.ts";

export interface AttentionOptions {
  heads: number;
  /** default 1/sqrt(headDim) */
  scale?: number;
  /** causal mask (CLIP text) */
  causal?: boolean;
}

const FLASH: KernelSpec = {
  file: "attention", entry: "flash",
  bindings: [{ name: "Q", access: "read" }, { name: "K", access: "read" }, { name: "V", access: "read" }, { name: "O", access: "read_write" }],
  params: [["total", "u32"], ["ndc", "u32"], ["nqb", "u32"], ["H", "u32"], ["d", "u32"], ["ld", "u32"], ["nq", "u32"], ["Nk", "u32"],
    ["qpos0", "u32"], ["qoff", "u32"], ["koff", "u32"], ["voff", "u32"], ["ooff", "u32"], ["sq", "u32"], ["sk", "u32"], ["scale2", "f32"]],
};

/** Tiles: BQ query rows × BKV keys per block, d streamed in DT slices, DO output columns per workgroup. */
interface Tiles { BQ: number; BKV: number; DT: number; DO: number }

/**
 * Narrow heads (the tiny fixtures' 4, SD's 40 is above) get 32 output columns
 * and taller query tiles so fewer threads idle; everything else 64 columns
 * (SDXL/CLIP's 64 in one chunk; wider heads are split into 64-wide chunks).
 */
function tilesFor(d: number): Tiles {
  return d <= 32 ? { BQ: 64, BKV: 16, DT: 16, DO: 32 } : { BQ: 32, BKV: 32, DT: 32, DO: 64 };
}

function overridesFor(tl: Tiles, causal: boolean, maxShared: number): Record<string, number> {
  const WG = (tl.BQ / 2) * (tl.BKV / 4);
  // the kernel's fixed 2×4 (S) and 4×4 (O) thread tiles must cover both tiles with the same threads
  if (WG !== (tl.BQ / 4) * (tl.DO / 4) || tl.BQ % 4 || tl.BKV % 4) throw new SsdError("E_INTERNAL", `attention: inconsistent tiles ${JSON.stringify(tl)}`);
  const shared = 4 * (Math.max(tl.BQ * tl.DT + tl.DT * tl.BKV, tl.BKV * tl.DO) + tl.BQ * tl.BKV + 3 * tl.BQ);
  if (shared > maxShared) throw new SsdError("E_LIMITS", `attention: tiles need ${shared} bytes of workgroup memory, the adapter allows ${maxShared}`);
  return { ...tl, WG, CAUSAL: causal ? 1 : 0 };
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
  const tl = tilesFor(d);
  const variant = { dtypes: [q.dtype, k.dtype, v.dtype, out.dtype], overrides: overridesFor(tl, causal, e.gpu.limits.maxComputeWorkgroupStorageSize) };

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
      e.run(FLASH, variant, [wq.bind, wk.bind, wv.bind, wo.bind], {
        total, ndc, nqb, H, d, ld, nq: nrr, Nk, qpos0: r0,
        qoff: wq.off, koff: wk.off, voff: wv.off, ooff: wo.off, sq: perQ, sk: perK, scale2,
      }, [total], "attention");
    }
  }
  return out;
}
