// Record once, replay many times. `record(engine, fn)` runs fn (which encodes
// ops on tensors made before recording: the inputs), capturing every dispatch
// (pipeline, bind group, uniform bytes, grid) and buffer copy. `replay()` then
// re-encodes exactly that command list — no op wrappers, shape checks, pool
// traffic or bind-group lookups — after the caller has written new values into
// the input tensors. Temporaries of the recorded run stay reserved for the
// recording (its bind groups name them); its outputs are pinned to it and are
// rewritten by every replay. A denoising step is recorded once and replayed
// per step this way.

import { SsdError } from "./errors.ts";
import type { Engine, RecordedCommand } from "./engine.ts";
import { Tensor } from "./tensor.ts";

const PARAM_SLOT = 256;
const CHUNK = 96;

export class Recording<T> {
  private disposed = false;
  constructor(
    private engine: Engine,
    readonly commands: RecordedCommand[],
    /** what fn returned: its tensors are rewritten by each replay */
    readonly outputs: T,
    private buffers: { free: Map<number, GPUBuffer[]>; owned: Set<GPUBuffer> },
    private pinned: Tensor[],
  ) {}

  get dispatches(): number {
    return this.commands.filter((c) => c.kind === "dispatch").length;
  }

  /** Encodes and submits the recorded commands again (no waiting). */
  replay(): T {
    if (this.disposed) throw new SsdError("E_INTERNAL", "replay() of a disposed Recording");
    const e = this.engine;
    e.flush();
    const dev = e.device;
    const params = new Uint8Array(PARAM_SLOT * CHUNK);
    let enc = dev.createCommandEncoder();
    let pass: GPUComputePassEncoder | null = null;
    let slots = 0;
    const submit = () => {
      pass?.end();
      pass = null;
      if (slots) dev.queue.writeBuffer(e.arena, 0, params, 0, slots * PARAM_SLOT);
      dev.queue.submit([enc.finish()]);
      enc = dev.createCommandEncoder();
      slots = 0;
    };
    for (const c of this.commands) {
      if (c.kind === "copy") {
        pass?.end();
        pass = null;
        enc.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.bytes);
        continue;
      }
      if (!pass) pass = enc.beginComputePass();
      pass.setPipeline(c.pipeline);
      if (c.dynamicOffset !== null) {
        params.set(new Uint8Array(c.params), slots * PARAM_SLOT);
        pass.setBindGroup(0, c.bindGroup, [slots * PARAM_SLOT]);
      } else pass.setBindGroup(0, c.bindGroup);
      pass.dispatchWorkgroups(c.grid[0], c.grid[1], c.grid[2]);
      if (++slots >= CHUNK) submit();
    }
    submit();
    e.stats.submits++;
    return this.outputs;
  }

  /** Gives the reserved buffers back to the pool (outputs included). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const e = this.engine;
    e.flush();
    for (const t of this.pinned) {
      t.storage.pinned = false;
      t.dispose();
    }
    const free: GPUBuffer[] = [];
    for (const list of this.buffers.free.values()) free.push(...list);
    e.pool.adopt(free);
  }
}

function collect(v: unknown, out: Tensor[], depth = 0): void {
  if (depth > 4 || v === null || typeof v !== "object") return;
  if (v instanceof Tensor) { out.push(v); return; }
  if (Array.isArray(v)) { for (const x of v) collect(x, out, depth + 1); return; }
  for (const x of Object.values(v as object)) collect(x, out, depth + 1);
}

/** Runs `fn` once (its results are valid) and captures it for replay. */
export function record<T>(e: Engine, fn: () => T): Recording<T> {
  if (e.recording) throw new SsdError("E_INTERNAL", "recordings do not nest");
  e.flush();
  const buffers = { free: new Map<number, GPUBuffer[]>(), owned: new Set<GPUBuffer>() };
  const commands: RecordedCommand[] = [];
  e.pool.recorder = buffers;
  e.recording = commands;
  let out: T;
  try {
    out = e.scopeSync(fn);
    e.flush();
  } finally {
    e.pool.recorder = null;
    e.recording = null;
  }
  const pinned: Tensor[] = [];
  collect(out, pinned);
  for (const t of pinned) {
    t.storage.pinned = true;
    // owned by the recording, not by the caller's scope
    e.untrack(t);
  }
  return new Recording(e, commands, out, buffers, pinned);
}
