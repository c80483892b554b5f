// A Tensor: logical shape in PyTorch order, a dtype, and GPU storage.
//
// Storage dtypes: f32; f16 (native `array<f16>` where the device has
// shader-f16, otherwise the same bytes read as `array<u32>` and unpacked with
// unpack2x16float — the byte layout is identical, only the WGSL view differs);
// u32/i32 for indices. Reshape shares storage; dispose() returns the buffer to
// the pool when the last view is gone.

import type { Engine } from "./engine.ts";
import { SsdError } from "./errors.ts";

export type DType = "f32" | "f16" | "u32" | "i32";

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, u32: 4, i32: 4 };

export class Storage {
  refs = 1;
  /** held by a Recording: dispose() leaves the buffer to it */
  pinned = false;
  constructor(
    readonly buffer: GPUBuffer,
    readonly byteSize: number,
    /** pooled storage goes back to the pool; weights are owned and destroyed */
    readonly pooled: boolean,
  ) {}
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

let nextTensorId = 1;

export class Tensor {
  readonly id = nextTensorId++;
  private disposed = false;
  /** Persistent tensors (weights) are never collected by Engine.scope(). */
  persistent = false;

  constructor(
    readonly engine: Engine,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly storage: Storage,
  ) {
    engine.track(this);
  }

  get numel(): number {
    return numelOf(this.shape);
  }
  get byteSize(): number {
    return this.numel * DTYPE_BYTES[this.dtype];
  }
  get buffer(): GPUBuffer {
    if (this.disposed) throw new SsdError("E_INTERNAL", `tensor #${this.id} ${shapeStr(this.shape)} used after dispose()`);
    return this.storage.buffer;
  }
  get rank(): number {
    return this.shape.length;
  }
  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Size of dimension d (negative counts from the end). */
  dim(d: number): number {
    return this.shape[d < 0 ? this.shape.length + d : d];
  }

  /** Same storage, another shape with the same number of elements (-1 infers one dim). */
  reshape(shape: readonly number[]): Tensor {
    const s = shape.slice();
    const inf = s.indexOf(-1);
    if (inf >= 0) s[inf] = this.numel / numelOf(s.filter((_, i) => i !== inf));
    if (numelOf(s) !== this.numel || s.some((d) => !Number.isInteger(d) || d < 0)) {
      throw new SsdError("E_SHAPE", `cannot reshape ${shapeStr(this.shape)} to ${shapeStr(shape)}`);
    }
    this.storage.refs++;
    const t = new Tensor(this.engine, s, this.dtype, this.storage);
    t.persistent = this.persistent;
    return t;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.engine.untrack(this);
    if (--this.storage.refs === 0) this.engine.freeStorage(this.storage);
  }

  /** Reads the tensor back as float32 (f16 widened, integers converted). */
  read(): Promise<Float32Array> {
    return this.engine.read(this);
  }

  toString(): string {
    return `Tensor(${shapeStr(this.shape)}, ${this.dtype})`;
  }
}
