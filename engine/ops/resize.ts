// Resizing as PyTorch's F.interpolate on NCHW (antialias off): nearest (the
// UNet's 2× upsampling, or an explicit size when a latent side is odd),
// bilinear and bicubic with align_corners either way (DPT's heads and
// preprocessing). Kernels in shaders/resize.wgsl; big tensors are processed
// in plane runs or row bands (split.ts).

import type { Tensor } from "../tensor.ts";
import { shapeStr } from "../tensor.ts";
import type { KernelSpec } from "../kernel.ts";
import { SsdError } from "../errors.ts";
import { actDtype, assertShape, ceilDiv } from "./util.ts";
import { bindSpan, planPlaneRows } from "./split.ts";

const spec = (entry: string): KernelSpec => ({
  file: "resize",
  entry,
  bindings: [{ name: "X", access: "read" }, { name: "Y", access: "read_write" }],
  params: [["Hin", "u32"], ["Win", "u32"], ["Ho", "u32"], ["Wo", "u32"], ["p0", "u32"], ["r0", "u32"], ["nr", "u32"], ["n", "u32"],
    ["xBase", "u32"], ["yBase", "u32"], ["sy", "f32"], ["sx", "f32"]],
});
const KERNELS = { nearest: spec("nearest"), bilinear: spec("bilinear"), bicubic: spec("bicubic") };

function checkSize(op: string, size: readonly number[]): void {
  if (size.length !== 2 || size.some((v) => !Number.isInteger(v) || v < 1)) throw new SsdError("E_BAD_PARAM", `${op}: size must be two positive integers, got [${size.join(", ")}]`);
}

/**
 * Encodes one resize. `scale` maps an output index to a source coordinate as
 * PyTorch's area_pixel_compute_scale; `taps` = [rows before, rows after] the
 * floor of the source coordinate that the mode reads (for planning bands).
 */
function resize(x: Tensor, mode: keyof typeof KERNELS, Ho: number, Wo: number, sy: number, sx: number, alignCorners: boolean, taps: [number, number]): Tensor {
  const e = x.engine;
  const [N, C, H, W] = x.shape;
  const y = e.empty([N, C, Ho, Wo], actDtype(x));
  // Source row of output row r, widened by one row each side: the host's
  // float64 estimate may round differently from the kernel's f32.
  const srcRow = (r: number) => {
    const s = mode === "nearest" ? r * sy : alignCorners ? r * sy : sy * (r + 0.5) - 0.5;
    return Math.floor(s);
  };
  const inRows = (r0: number, nr: number): [number, number] => {
    const lo = Math.min(Math.max(srcRow(r0) - taps[0] - 1, 0), H - 1);
    const hi = Math.max(Math.min(srcRow(r0 + nr - 1) + taps[1] + 2, H), lo + 1);
    return [lo, hi];
  };
  const jobs = planPlaneRows(e, { planes: N * C, Hin: H, Win: W, Ho, Wo, inDtype: x.dtype, outDtype: y.dtype, inRows });
  for (const j of jobs) {
    const [lo, hi] = j.np === N * C && j.nr === Ho ? [0, H] : inRows(j.r0, j.nr);
    const xs = bindSpan(x, j.p0 * H * W + lo * W, (j.p0 + j.np - 1) * H * W + hi * W);
    const ys = bindSpan(y, j.p0 * Ho * Wo + j.r0 * Wo, (j.p0 + j.np - 1) * Ho * Wo + (j.r0 + j.nr) * Wo);
    const n = j.np * j.nr * Wo;
    e.run(KERNELS[mode], { dtypes: [x.dtype, y.dtype], overrides: mode === "nearest" ? {} : { ALIGN_CORNERS: alignCorners ? 1 : 0 } }, [xs.bind, ys.bind], {
      Hin: H, Win: W, Ho, Wo, p0: j.p0, r0: j.r0, nr: j.nr, n, xBase: xs.base, yBase: ys.base, sy, sx,
    }, [ceilDiv(n, 256)], `interpolate.${mode}`);
  }
  return y;
}

/**
 * Nearest upsampling (F.interpolate mode="nearest"): by a scale factor
 * (output floor(in·scale), source floor(dst / scale)) or to an explicit size
 * (source floor(dst · in/out)), both in f32 as PyTorch, clamped to in - 1.
 */
export function upsampleNearest(x: Tensor, opts: { scale?: number; size?: [number, number] }): Tensor {
  assertShape("upsampleNearest", x, 4);
  const [, , H, W] = x.shape;
  const f = Math.fround;
  if (opts.size) {
    checkSize("upsampleNearest", opts.size);
    const [Ho, Wo] = opts.size;
    return resize(x, "nearest", Ho, Wo, f(H / Ho), f(W / Wo), false, [0, 0]);
  }
  const s = opts.scale ?? 2;
  if (!(s > 0)) throw new SsdError("E_BAD_PARAM", `upsampleNearest: scale must be positive, got ${s}`);
  const Ho = Math.floor(H * s), Wo = Math.floor(W * s);
  if (Ho < 1 || Wo < 1) throw new SsdError("E_SHAPE", `upsampleNearest: scale ${s} leaves nothing of ${shapeStr(x.shape)}`);
  return resize(x, "nearest", Ho, Wo, f(1 / s), f(1 / s), false, [0, 0]);
}

/**
 * F.interpolate(mode="bilinear" | "bicubic", align_corners, antialias=False)
 * on NCHW to `size`. When the caller's PyTorch code passes a scale_factor
 * (e.g. nn.Upsample(scale_factor=2)), give it as `scaleFactor` too: without
 * align_corners PyTorch then maps coordinates with 1/scale_factor rather than
 * in/out, which differs when in·scale is not an integer.
 */
export function interpolate(x: Tensor, opts: { size: [number, number]; mode: "bilinear" | "bicubic"; alignCorners: boolean; scaleFactor?: [number, number] }): Tensor {
  assertShape("interpolate", x, 4);
  checkSize("interpolate", opts.size);
  if (opts.mode !== "bilinear" && opts.mode !== "bicubic") throw new SsdError("E_BAD_PARAM", `interpolate: mode '${opts.mode}' is not bilinear or bicubic (use upsampleNearest for nearest)`);
  const [, , H, W] = x.shape;
  const [Ho, Wo] = opts.size;
  const sf = opts.scaleFactor;
  if (sf && !(sf[0] > 0 && sf[1] > 0)) throw new SsdError("E_BAD_PARAM", `interpolate: scaleFactor must be positive, got [${sf.join(", ")}]`);
  const f = Math.fround;
  // area_pixel_compute_scale
  const scale = (i: number, o: number, s?: number) =>
    opts.alignCorners ? (o > 1 ? f((i - 1) / (o - 1)) : 0) : s ? f(1 / s) : f(i / o);
  const taps: [number, number] = opts.mode === "bicubic" ? [1, 2] : [0, 1];
  return resize(x, opts.mode, Ho, Wo, scale(H, Ho, sf?.[0]), scale(W, Wo, sf?.[1]), opts.alignCorners, taps);
}
