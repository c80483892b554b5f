// Shape and data-movement ops. CONTRACT STUB: implemented by the shape-ops work.
import type { Tensor } from "../tensor.ts";
import { SsdError } from "../errors.ts";

const todo = (n: string): never => { throw new SsdError("E_INTERNAL", `${n}: not implemented yet`); };

/** concatenation along `dim` (negative counts from the end) */
export function concat(xs: Tensor[], dim: number): Tensor { return todo("concat"); }
/** x[..., start:end, ...] along `dim`, copied */
export function slice(x: Tensor, dim: number, start: number, end: number): Tensor { return todo("slice"); }
/** torch.chunk along `dim` into n equal parts */
export function chunk(x: Tensor, n: number, dim: number): Tensor[] { return todo("chunk"); }
/** torch.permute */
export function permute(x: Tensor, dims: number[]): Tensor { return todo("permute"); }
/** constant padding of the last two dims: [left, right, top, bottom] as F.pad */
export function pad2d(x: Tensor, pads: [number, number, number, number], value = 0): Tensor { return todo("pad2d"); }
/** embedding lookup: table [V, D] (f32/f16), ids u32/i32 [...] -> [..., D] */
export function gather(table: Tensor, ids: Tensor): Tensor { return todo("gather"); }
/** rows of x [N, D] at the given host indices -> [len, D] */
export function selectRows(x: Tensor, rows: number[]): Tensor { return todo("selectRows"); }
/** diffusers' get_timestep_embedding: t [N] -> [N, dim] */
export function timestepEmbedding(t: Tensor, dim: number, opts: { flipSinToCos: boolean; downscaleFreqShift: number; scale?: number; maxPeriod?: number }): Tensor { return todo("timestepEmbedding"); }
/** nearest upsampling by an integer factor, or to an explicit size (F.interpolate mode="nearest") */
export function upsampleNearest(x: Tensor, opts: { scale?: number; size?: [number, number] }): Tensor { return todo("upsampleNearest"); }
/** F.interpolate bilinear/bicubic (antialias off) on NCHW */
export function interpolate(x: Tensor, opts: { size: [number, number]; mode: "bilinear" | "bicubic"; alignCorners: boolean }): Tensor { return todo("interpolate"); }
/** min/max/mean/sum over all elements, or over the given dims (kept as size 1) */
export function reduce(x: Tensor, op: "min" | "max" | "mean" | "sum", dims?: number[]): Tensor { return todo("reduce"); }
