// A buffer pool with size classes. Activations come from here and go back when
// their tensor is disposed; a buffer handed out again is only written by
// commands encoded after its last reader, and the queue runs commands in order,
// so reuse needs no fence.

import { SsdError } from "./errors.ts";

const USAGE = 0x0080 /* STORAGE */ | 0x0004 /* COPY_SRC */ | 0x0008 /* COPY_DST */;

/** Size class: 256-byte granularity below 4 KiB, then 8 classes per power of two (≤ 12.5 % waste). */
export function sizeClass(bytes: number): number {
  const n = Math.max(256, Math.ceil(bytes / 256) * 256);
  if (n <= 4096) return n;
  const p = 2 ** Math.floor(Math.log2(n));
  const step = p / 8;
  return Math.ceil(n / step) * step;
}

export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  private ids = new WeakMap<GPUBuffer, number>();
  private nextId = 1;
  /** bytes held by live tensors (rounded to size classes) */
  live = 0;
  /** peak of `live` since the last resetPeak() */
  peak = 0;
  /** bytes of buffers owned by the pool, live or free */
  allocated = 0;
  peakAllocated = 0;

  constructor(private device: GPUDevice, private maxBufferSize: number) {}

  /**
   * While a Recording is open, buffers freed inside it go to its own free
   * list and are reused only inside it: the recorded bind groups name them,
   * so nothing outside may take them over.
   */
  recorder: { free: Map<number, GPUBuffer[]>; owned: Set<GPUBuffer> } | null = null;

  acquire(bytes: number): GPUBuffer {
    const size = sizeClass(bytes);
    if (size > this.maxBufferSize) {
      throw new SsdError("E_LIMITS", `a ${bytes}-byte tensor exceeds this adapter's maxBufferSize (${this.maxBufferSize}); use a smaller image size or tiling.`);
    }
    let buf = this.recorder?.free.get(size)?.pop() ?? this.free.get(size)?.pop();
    if (!buf) {
      buf = this.device.createBuffer({ size, usage: USAGE });
      this.ids.set(buf, this.nextId++);
      this.allocated += size;
      this.peakAllocated = Math.max(this.peakAllocated, this.allocated);
    }
    this.live += size;
    this.peak = Math.max(this.peak, this.live);
    this.recorder?.owned.add(buf);
    return buf;
  }

  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.live -= size;
    const free = this.recorder?.owned.has(buf) ? this.recorder.free : this.free;
    let list = free.get(size);
    if (!list) free.set(size, (list = []));
    list.push(buf);
  }

  /** Gives buffers (a finished Recording's) back to the shared free lists. */
  adopt(bufs: Iterable<GPUBuffer>): void {
    for (const b of bufs) {
      let list = this.free.get(b.size);
      if (!list) this.free.set(b.size, (list = []));
      list.push(b);
    }
  }

  /** A stable small integer per buffer (bind-group cache keys). */
  id(buf: GPUBuffer): number {
    let id = this.ids.get(buf);
    if (id === undefined) this.ids.set(buf, (id = this.nextId++));
    return id;
  }

  /** Destroys every free buffer. */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) { this.allocated -= b.size; b.destroy(); }
    this.free.clear();
  }

  resetPeak(): void {
    this.peak = this.live;
    this.peakAllocated = this.allocated;
  }
}
