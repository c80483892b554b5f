// The engine: one device, a buffer pool, the kernel cache, and the executor that
// records dispatches into command encoders without readback, submitting in
// chunks while encoding. Uniform parameters of a chunk go into one arena
// written by a single queue.writeBuffer before the chunk is submitted (queue
// order makes reuse of the arena by the next chunk safe), bound with dynamic
// offsets so bind groups can be cached.

import { SsdError } from "./errors.ts";
import { getGpu, checkGpu, type Gpu, type DeviceOptions } from "./device.ts";
import { markWait } from "./poll.ts";
import { BufferPool } from "./pool.ts";
import { KernelCache, vec4Bytes, type KernelSpec, type KernelVariant } from "./kernel.ts";
import { Tensor, Storage, DTYPE_BYTES, numelOf, type DType } from "./tensor.ts";
import { float32ToHalfArray, halfArrayToFloat32 } from "./half.ts";
import { defaultPrecision, type PrecisionPolicy } from "./precision.ts";

const PARAM_SLOT = 256; // minUniformBufferOffsetAlignment on every adapter we know
const CHUNK_DISPATCHES = 96;

/** A tensor bound whole, or an aligned sub-range of its storage. */
export interface BindRange {
  tensor: Tensor;
  /** byte offset into the tensor's storage; a multiple of minStorageBufferOffsetAlignment */
  byteOffset: number;
  byteSize: number;
}
export type Binding = Tensor | BindRange;

export interface DispatchStats {
  dispatches: number;
  submits: number;
  /** FLOPs and bytes declared by the ops encoded so far (see OpCost) */
  flops: number;
  bytes: number;
}

/**
 * What an op declares about one dispatch: floating-point operations (a
 * multiply-add counts 2) and bytes it must move at least (inputs read once,
 * outputs written once). Benchmarks and the profiler turn these into GFLOP/s
 * and GB/s; nothing is guessed from timings.
 */
export interface OpCost {
  flops: number;
  bytes: number;
}

/** One captured command of a Recording. */
export type RecordedCommand =
  | { kind: "dispatch"; pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; dynamicOffset: number | null; grid: [number, number, number]; params: ArrayBuffer }
  | { kind: "copy"; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; bytes: number };

/** What the executor calls when a profiler is installed (engine/profiler.ts). */
export interface ProfilerHooks {
  /**
   * Timestamp writes for a new pass that begins with this dispatch, or null:
   * no timestamps (wall time per chunk), or the dispatch joins the stamped
   * pass already open (`passOpen`) of a group (Profiler.group).
   */
  beginDispatch(label: string, cost: OpCost | undefined, passOpen: boolean): GPUComputePassTimestampWrites | null;
  /** whether a stamped pass ends after its dispatch (false inside a group, whose dispatches share one pass) */
  readonly passPerDispatch: boolean;
  beforeSubmit(encoder: GPUCommandEncoder): void;
  afterSubmit(): void;
}

export class Engine {
  readonly pool: BufferPool;
  readonly kernels: KernelCache;
  precision: PrecisionPolicy = defaultPrecision();
  readonly stats: DispatchStats = { dispatches: 0, submits: 0, flops: 0, bytes: 0 };

  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private chunkDispatches = 0;
  /** the uniform arena (bind groups name it with dynamic offsets) */
  readonly arena: GPUBuffer;
  private arenaCpu: ArrayBuffer;
  private arenaF32: Float32Array;
  private arenaU32: Uint32Array;
  private arenaI32: Int32Array;
  private bindGroups = new Map<string, GPUBindGroup>();
  private scopes: Set<Tensor>[] = [];
  /** profiling hook (engine/profiler.ts installs one) */
  onDispatch: ((label: string, pass: GPUComputePassEncoder, phase: "begin" | "end", cost?: OpCost) => void) | null = null;

  private constructor(readonly gpu: Gpu) {
    const device = gpu.device;
    this.pool = new BufferPool(device, gpu.limits.maxBufferSize);
    this.kernels = new KernelCache(device, gpu.f16, () => {});
    this.arena = device.createBuffer({ size: PARAM_SLOT * CHUNK_DISPATCHES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.arenaCpu = new ArrayBuffer(PARAM_SLOT * CHUNK_DISPATCHES);
    this.arenaF32 = new Float32Array(this.arenaCpu);
    this.arenaU32 = new Uint32Array(this.arenaCpu);
    this.arenaI32 = new Int32Array(this.arenaCpu);
  }

  static async create(opts: DeviceOptions = {}): Promise<Engine> {
    return new Engine(await getGpu(opts));
  }

  get device(): GPUDevice {
    return this.gpu.device;
  }

  // ---------------------------------------------------------------- tensors

  /** An uninitialised tensor from the pool. */
  empty(shape: readonly number[], dtype: DType = "f32"): Tensor {
    if (dtype === "f16" && !this.gpu.f16) {
      throw new SsdError("E_INTERNAL", "f16 activations need the shader-f16 feature; this adapter has none (use --precision fp32)");
    }
    const bytes = Math.max(4, numelOf(shape) * DTYPE_BYTES[dtype]);
    return new Tensor(this, shape.slice(), dtype, new Storage(this.pool.acquire(bytes), bytes, true));
  }

  /** Uploads host data. `data` is float32 values (converted to f16 when dtype is f16), f16 bits (Uint16Array), or u32/i32. */
  upload(data: Float32Array | Uint16Array | Uint32Array | Int32Array, shape: readonly number[], dtype?: DType, opts: { persistent?: boolean } = {}): Tensor {
    const n = numelOf(shape);
    if (data.length !== n) throw new SsdError("E_SHAPE", `upload: ${data.length} values for shape [${shape.join(", ")}] (${n} elements)`);
    const dt: DType = dtype ?? (data instanceof Float32Array ? "f32" : data instanceof Uint16Array ? "f16" : data instanceof Int32Array ? "i32" : "u32");
    let bytes: ArrayBufferView;
    if (dt === "f16") bytes = data instanceof Uint16Array ? data : float32ToHalfArray(data);
    else if (dt === "f32") bytes = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
    else bytes = data;
    const byteSize = n * DTYPE_BYTES[dt];
    const padded = Math.max(4, Math.ceil(byteSize / 4) * 4);
    let t: Tensor;
    if (opts.persistent) {
      const buf = this.device.createBuffer({ size: Math.max(16, Math.ceil(padded / 16) * 16), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      t = new Tensor(this, shape.slice(), dt, new Storage(buf, byteSize, false));
      t.persistent = true;
      this.untrack(t);
      this.weightBytes += buf.size;
    } else {
      if (this.recording) throw new SsdError("E_INTERNAL", "upload() inside a Recording: host data written during recording would not be replayed; upload inputs before recording and write new values into them");
      // storage f16 on a device without shader-f16 is fine for inputs: kernels read it packed
      // A pooled buffer may still be read by commands encoded but not submitted, and
      // queue.writeBuffer would land before them: submit those first.
      this.flush();
      t = new Tensor(this, shape.slice(), dt, new Storage(this.pool.acquire(padded), byteSize, true));
    }
    this.writeBytes(t.storage.buffer, 0, bytes);
    return t;
  }

  /** Overwrites a tensor's contents with host values (inputs of a Recording, state). */
  write(t: Tensor, data: Float32Array | Uint16Array | Uint32Array | Int32Array): void {
    if (data.length !== t.numel) throw new SsdError("E_SHAPE", `write: ${data.length} values into a tensor of ${t.numel}`);
    let bytes: ArrayBufferView = data;
    if (t.dtype === "f16" && data instanceof Float32Array) bytes = float32ToHalfArray(data);
    else if (t.dtype === "f32" && !(data instanceof Float32Array)) bytes = Float32Array.from(data as ArrayLike<number>);
    // commands encoded but not yet submitted may still read the old contents
    this.flush();
    this.writeBytes(t.buffer, 0, bytes);
  }

  /** Bytes held by persistent (weight) buffers. */
  weightBytes = 0;

  private placeholders = new Map<DType, Tensor>();
  /**
   * A tiny persistent tensor to bind where a kernel's optional input is absent
   * (a buffer may not be bound read-only and writable in one dispatch).
   */
  placeholder(dtype: DType = "f32"): Tensor {
    let t = this.placeholders.get(dtype);
    if (!t) {
      t = this.upload(dtype === "f16" ? new Uint16Array(8) : dtype === "f32" ? new Float32Array(4) : new Uint32Array(4), [dtype === "f16" ? 8 : 4], dtype, { persistent: true });
      this.placeholders.set(dtype, t);
    }
    return t;
  }

  private scratches = new Map<string, Tensor>();
  /** Bytes held by zeroScratch buffers. */
  scratchBytes = 0;
  /**
   * A persistent u32 buffer of at least `bytes` for kernels that leave it as
   * they found it (serial split-K's counters and slots, which must read 0
   * between dispatches): zero when created, since WebGPU zeroes new buffers.
   * One per name, grown by replacement (at least doubling); the old one is
   * not destroyed, since a Recording's bind groups may still name it.
   */
  zeroScratch(name: string, bytes: number): Tensor {
    const old = this.scratches.get(name);
    if (old && old.storage.byteSize >= bytes) return old;
    const size = Math.ceil(Math.max(bytes, 2 * (old?.storage.byteSize ?? 0)) / 256) * 256;
    if (size > this.gpu.limits.maxStorageBufferBindingSize) throw new SsdError("E_LIMITS", `${name}: a ${size}-byte scratch buffer exceeds this device's binding limit`);
    const buf = this.device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, label: name });
    const t = new Tensor(this, [size / 4], "u32", new Storage(buf, size, false));
    t.persistent = true;
    t.storage.pinned = true;
    this.untrack(t);
    if (old) this.scratchBytes -= old.storage.byteSize;
    this.scratchBytes += size;
    this.scratches.set(name, t);
    return t;
  }

  writeBytes(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    const u8 = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const whole = u8.byteLength & ~3;
    const CH = 64 << 20;
    for (let o = 0; o < whole; o += CH) {
      const len = Math.min(CH, whole - o);
      this.device.queue.writeBuffer(buffer, offset + o, u8.buffer, u8.byteOffset + o, len);
    }
    if (whole < u8.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(u8.subarray(whole));
      this.device.queue.writeBuffer(buffer, offset + whole, tail);
    }
  }

  freeStorage(s: Storage): void {
    if (s.pinned) return;
    if (s.pooled) this.pool.release(s.buffer);
    else {
      this.weightBytes -= s.buffer.size;
      s.buffer.destroy();
    }
  }

  // ---------------------------------------------------------------- scopes

  track(t: Tensor): void {
    const s = this.scopes[this.scopes.length - 1];
    if (s) s.add(t);
  }
  untrack(t: Tensor): void {
    for (const s of this.scopes) s.delete(t);
  }

  /**
   * Runs fn; every tensor created inside and not reachable from its result
   * (a Tensor, an array or object of Tensors) is disposed at the end.
   */
  async scope<T>(fn: () => Promise<T> | T): Promise<T> {
    this.scopes.push(new Set());
    let result: T;
    try {
      result = await fn();
    } catch (e) {
      this.closeScope(undefined);
      throw e;
    }
    return this.closeScope(result);
  }

  /** Synchronous variant of scope() for code that encodes only. */
  scopeSync<T>(fn: () => T): T {
    this.scopes.push(new Set());
    let result: T;
    try {
      result = fn();
    } catch (e) {
      this.closeScope(undefined);
      throw e;
    }
    return this.closeScope(result);
  }

  /** Ends the innermost scope: disposes its tensors except those reachable from `result`, which move to the parent scope. */
  private closeScope<T>(result: T): T {
    const s = this.scopes.pop()!;
    const keep = new Set<Tensor>();
    collectTensors(result, keep);
    for (const t of s) if (!keep.has(t)) t.dispose();
    const parent = this.scopes[this.scopes.length - 1];
    if (parent) for (const t of keep) if (!t.persistent && !t.isDisposed) parent.add(t);
    return result;
  }

  // ---------------------------------------------------------------- dispatch

  /**
   * Encodes one dispatch. `grid` is workgroup counts; a count above the
   * per-dimension limit in x is folded into y and z (kernels then address
   * workgroups with linear_wg() and bound-check).
   */
  run(spec: KernelSpec, variant: KernelVariant, bindings: Binding[], params: Record<string, number>, grid: [number, number?, number?], label?: string, cost?: OpCost): void {
    if (this.gpu.lost) checkGpu(this.gpu);
    const k = this.kernels.get(spec, variant);
    const [gx0, gy0 = 1, gz0 = 1] = grid;
    if (gx0 === 0 || gy0 === 0 || gz0 === 0) return;
    const max = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    let gx = gx0, gy = gy0, gz = gz0;
    if (gx > max) {
      if (gy !== 1 || gz !== 1) throw new SsdError("E_LIMITS", `${label ?? k.key}: grid [${grid}] exceeds ${max} workgroups per dimension`);
      gx = max;
      gy = Math.ceil(gx0 / max);
      if (gy > max) { gz = Math.ceil(gy / max); gy = max; }
    }
    if (gy > max || gz > max) throw new SsdError("E_LIMITS", `${label ?? k.key}: grid [${grid}] exceeds ${max} workgroups per dimension`);

    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    // Profiling with timestamps: one pass per dispatch (or per group of them), stamped at its start and end.
    const stamp = this.profiler?.beginDispatch(label ?? k.key, cost, this.pass !== null) ?? null;
    if (stamp) this.endPass();
    // copy() ends the pass but keeps the encoder: begin a new pass on it
    if (!this.pass) this.pass = this.encoder.beginComputePass(stamp ? { timestampWrites: stamp } : undefined);
    // parameters into the arena slot of this dispatch
    const slot = this.chunkDispatches;
    const base = (slot * PARAM_SLOT) / 4;
    spec.params.forEach(([name, type], i) => {
      const v = params[name];
      if (v === undefined) throw new SsdError("E_INTERNAL", `${k.key}: parameter '${name}' not given`);
      if (type === "f32") this.arenaF32[base + i] = v;
      else if (type === "i32") this.arenaI32[base + i] = v;
      else this.arenaU32[base + i] = v >>> 0;
    });
    const v4 = variant.vec4?.map((on, i) => (on ? vec4Bytes(variant.dtypes[i]) : 0));
    const bg = this.bindGroup(k.layout, k.layoutKey, bindings, spec.params.length > 0, k.paramBytes, v4);
    const pass = this.pass!;
    pass.setPipeline(k.pipeline);
    if (spec.params.length) pass.setBindGroup(0, bg, [slot * PARAM_SLOT]);
    else pass.setBindGroup(0, bg);
    this.onDispatch?.(label ?? k.key, pass, "begin", cost);
    pass.dispatchWorkgroups(gx, gy, gz);
    this.recording?.push({ kind: "dispatch", pipeline: k.pipeline, bindGroup: bg, dynamicOffset: spec.params.length ? slot * PARAM_SLOT : null, grid: [gx, gy, gz], params: this.arenaCpu.slice(slot * PARAM_SLOT, slot * PARAM_SLOT + k.paramBytes) });
    this.onDispatch?.(label ?? k.key, pass, "end", cost);
    if (stamp && this.profiler!.passPerDispatch) this.endPass();
    this.stats.dispatches++;
    if (cost) {
      this.stats.flops += cost.flops;
      this.stats.bytes += cost.bytes;
    }
    if (++this.chunkDispatches >= CHUNK_DISPATCHES) this.flush();
  }

  /** `vec4Strides[i]` (when non-zero): binding i is stored as vec4s of that many bytes, so it must hold whole ones. */
  private bindGroup(layout: GPUBindGroupLayout, layoutKey: string, bindings: Binding[], hasParams: boolean, paramBytes: number, vec4Strides?: number[]): GPUBindGroup {
    let key = `${layoutKey}:${paramBytes}`; // kernels of one layout may bind different uniform sizes
    const entries: GPUBindGroupEntry[] = [];
    const align = this.gpu.limits.minStorageBufferOffsetAlignment;
    const maxBind = this.gpu.limits.maxStorageBufferBindingSize;
    bindings.forEach((b, i) => {
      const t = b instanceof Tensor ? b : b.tensor;
      const buffer = t.buffer;
      const offset = b instanceof Tensor ? 0 : b.byteOffset;
      let size = b instanceof Tensor ? Math.ceil(t.storage.byteSize / 4) * 4 : b.byteSize;
      size = Math.max(4, Math.min(size, buffer.size - offset));
      if (offset % align !== 0) throw new SsdError("E_INTERNAL", `binding ${i} offset ${offset} is not a multiple of ${align}`);
      if (size > maxBind) throw new SsdError("E_LIMITS", `binding ${i} of ${size} bytes exceeds maxStorageBufferBindingSize (${maxBind}); this op must split its work`);
      if (vec4Strides?.[i] && size % vec4Strides[i]) throw new SsdError("E_INTERNAL", `binding ${i} of ${size} bytes is stored as vec4s of ${vec4Strides[i]} bytes and must hold whole ones`);
      key += `|${this.pool.id(buffer)}:${offset}:${size}`;
      entries.push({ binding: i, resource: { buffer, offset, size } });
    });
    let bg = this.bindGroups.get(key);
    if (bg) return bg;
    if (hasParams) entries.push({ binding: bindings.length, resource: { buffer: this.arena, offset: 0, size: paramBytes } });
    bg = this.device.createBindGroup({ layout, entries });
    if (this.bindGroups.size > 8192) this.bindGroups.clear();
    this.bindGroups.set(key, bg);
    return bg;
  }

  /** Copies bytes between tensors' storage (concat, slices, caches). */
  copy(src: Tensor, srcByteOffset: number, dst: Tensor, dstByteOffset: number, bytes: number): void {
    if (bytes === 0) return;
    if (bytes % 4 || srcByteOffset % 4 || dstByteOffset % 4) throw new SsdError("E_INTERNAL", `copy of ${bytes} bytes at ${srcByteOffset}->${dstByteOffset} is not 4-byte aligned`);
    this.endPass();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    this.encoder.copyBufferToBuffer(src.buffer, srcByteOffset, dst.buffer, dstByteOffset, bytes);
    this.recording?.push({ kind: "copy", src: src.buffer, srcOffset: srcByteOffset, dst: dst.buffer, dstOffset: dstByteOffset, bytes });
  }

  /** Commands captured while a Recording is open (engine/record.ts). */
  recording: RecordedCommand[] | null = null;

  /** Ends the open compute pass, if any (the next dispatch begins a new one). */
  endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Submits everything encoded so far. */
  flush(): void {
    if (!this.encoder) return;
    this.endPass();
    if (this.chunkDispatches > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaCpu, 0, this.chunkDispatches * PARAM_SLOT);
    this.profiler?.beforeSubmit(this.encoder);
    this.device.queue.submit([this.encoder.finish()]);
    this.profiler?.afterSubmit();
    this.stats.submits++;
    this.encoder = null;
    this.chunkDispatches = 0;
  }

  /** The active profiler (engine/profiler.ts), if any. */
  profiler: ProfilerHooks | null = null;

  /** Waits until the GPU has finished all submitted work; surfaces device errors. */
  async sync(): Promise<void> {
    this.flush();
    markWait();
    await this.device.queue.onSubmittedWorkDone();
    checkGpu(this.gpu);
  }

  /** Reads a tensor back to the host as float32. */
  async read(t: Tensor): Promise<Float32Array> {
    const raw = await this.readRaw(t);
    switch (t.dtype) {
      case "f32": return new Float32Array(raw);
      case "f16": return halfArrayToFloat32(new Uint16Array(raw, 0, t.numel));
      case "u32": return Float32Array.from(new Uint32Array(raw));
      case "i32": return Float32Array.from(new Int32Array(raw));
    }
  }

  /** Raw bytes of a tensor (exactly numel × element size). */
  async readRaw(t: Tensor): Promise<ArrayBuffer> {
    const bytes = t.byteSize;
    const padded = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.device.createBuffer({ size: padded, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.endPass();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    this.encoder.copyBufferToBuffer(t.buffer, 0, staging, 0, padded);
    this.flush();
    markWait();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e: any) {
      checkGpu(this.gpu);
      throw new SsdError("E_DEVICE_LOST", `reading a tensor back failed: ${e?.message ?? e}`);
    }
    checkGpu(this.gpu);
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Memory report in bytes. */
  memory(): { live: number; peak: number; allocated: number; peakAllocated: number; weights: number; scratch: number } {
    return { live: this.pool.live, peak: this.pool.peak, allocated: this.pool.allocated, peakAllocated: this.pool.peakAllocated, weights: this.weightBytes, scratch: this.scratchBytes };
  }
}

function collectTensors(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || v === null || typeof v !== "object") return;
  if (v instanceof Tensor) { out.add(v); return; }
  if (Array.isArray(v)) { for (const x of v) collectTensors(x, out, depth + 1); return; }
  if (v instanceof Map) { for (const x of v.values()) collectTensors(x, out, depth + 1); return; }
  if (Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v)) collectTensors(x, out, depth + 1);
}

let shared: Promise<Engine> | null = null;
/** The process-wide engine. */
export function getEngine(opts: DeviceOptions = {}): Promise<Engine> {
  if (!shared) {
    shared = Engine.create(opts);
    shared.catch(() => { shared = null; });
  }
  return shared;
}
