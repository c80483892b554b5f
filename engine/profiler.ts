// GPU profiling. With `timestamp-query`, every dispatch gets its own compute
// pass stamped at start and end (or, inside `group`, an op's dispatches share
// one stamped pass, as they share a pass when not profiled); at each submit the stamps are resolved and
// read back later, so nothing waits inside the encoding loop. Without it, the
// profiler times each submitted chunk (submit → onSubmittedWorkDone) and
// spreads the time over its dispatches by declared FLOPs.
// `report()` groups by op label: calls, GPU ms, GFLOP/s (from OpCost).

import type { Engine, OpCost, ProfilerHooks } from "./engine.ts";

interface Pending {
  labels: { label: string; cost?: OpCost }[];
  readback: GPUBuffer | null;
  querySet: GPUQuerySet | null;
  done: Promise<void>;
}

export interface ProfileRow {
  op: string;
  calls: number;
  ms: number;
  gflop: number;
  gflops: number;
  gbps: number;
}

const MAX_STAMPS = 2 * 128;

export class Profiler implements ProfilerHooks {
  readonly mode: "timestamps" | "chunks";
  private labels: { label: string; cost?: OpCost }[] = [];
  private querySet: GPUQuerySet | null = null;
  private pending: Pending[] = [];
  private chunkStart = 0;
  private totals = new Map<string, { calls: number; ns: number; flops: number; bytes: number }>();

  /** detail: group by the whole dispatch label (kernel and shape), not just the op */
  constructor(private engine: Engine, private opts: { detail?: boolean } = {}) {
    this.mode = engine.gpu.timestamps ? "timestamps" : "chunks";
  }

  /** Installs the profiler on the engine (flushes what was encoded before). */
  start(): this {
    this.engine.flush();
    this.engine.profiler = this;
    return this;
  }

  /** the label of the open group (Profiler.group), else null */
  private groupLabel: string | null = null;

  /** the last entry of `labels` is the open group's (later dispatches of the group join it) */
  private joinable = false;

  get passPerDispatch(): boolean {
    return this.groupLabel === null;
  }

  /**
   * Runs `fn` with all the dispatches it encodes in one stamped pass, timed as
   * one row `label` (their declared costs summed): the time from the first
   * one's start to the last one's end, with the barriers between them, as the
   * engine encodes them unprofiled. Per-dispatch passes (outside a group) add
   * a pass boundary between the kernels of a multi-kernel op; a group does not.
   * Something that ends the pass inside (a copy, a submit) starts another
   * stamped pass for the dispatches after it, whose time is added to the row.
   */
  group<T>(label: string, fn: () => T): T {
    if (this.groupLabel !== null) throw new Error(`Profiler.group('${label}') inside group '${this.groupLabel}'`);
    this.engine.endPass();
    this.groupLabel = label;
    this.joinable = false;
    try {
      return fn();
    } finally {
      this.groupLabel = null;
      this.joinable = false;
      this.engine.endPass();
    }
  }

  beginDispatch(label: string, cost: OpCost | undefined, passOpen: boolean): GPUComputePassTimestampWrites | null {
    if (this.groupLabel !== null) {
      label = this.groupLabel;
      // a group's later dispatch joins its entry (in its open pass, with timestamps): the costs add up
      const last = this.labels[this.labels.length - 1];
      if (this.joinable && last && (this.mode === "chunks" || passOpen)) {
        last.cost = { flops: (last.cost?.flops ?? 0) + (cost?.flops ?? 0), bytes: (last.cost?.bytes ?? 0) + (cost?.bytes ?? 0) };
        return null;
      }
    }
    if (this.mode === "chunks") {
      this.labels.push({ label, cost });
      this.joinable = this.groupLabel !== null;
      return null;
    }
    if (this.labels.length * 2 >= MAX_STAMPS) this.engine.flush();
    if (!this.querySet) this.querySet = this.engine.device.createQuerySet({ type: "timestamp", count: MAX_STAMPS });
    const i = this.labels.length;
    this.labels.push({ label, cost });
    this.joinable = this.groupLabel !== null;
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  beforeSubmit(encoder: GPUCommandEncoder): void {
    // the labels go with this submit: a group's next dispatch starts a new entry
    this.joinable = false;
    if (this.mode === "chunks") {
      this.chunkStart = performance.now();
      return;
    }
    if (!this.querySet || this.labels.length === 0) return;
    const n = this.labels.length * 2;
    const dev = this.engine.device;
    const resolve = dev.createBuffer({ size: n * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const readback = dev.createBuffer({ size: n * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.resolveQuerySet(this.querySet, 0, n, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, readback, 0, n * 8);
    // mapped only after the submit (a buffer pending map may not be used in one)
    this.toMap.push({ labels: this.labels, readback, resolve, querySet: this.querySet });
    this.labels = [];
    this.querySet = null;
  }

  private toMap: { labels: { label: string; cost?: OpCost }[]; readback: GPUBuffer; resolve: GPUBuffer; querySet: GPUQuerySet }[] = [];

  afterSubmit(): void {
    for (const m of this.toMap.splice(0)) {
      const done = (async () => {
        await m.readback.mapAsync(GPUMapMode.READ);
        const t = new BigInt64Array(m.readback.getMappedRange().slice(0));
        m.readback.unmap();
        m.readback.destroy();
        m.resolve.destroy();
        m.querySet.destroy();
        m.labels.forEach((l, i) => this.add(l.label, Number(t[2 * i + 1] - t[2 * i]), l.cost));
      })();
      this.pending.push({ labels: m.labels, readback: m.readback, querySet: m.querySet, done });
    }
    if (this.mode !== "chunks" || this.labels.length === 0) return;
    const labels = this.labels;
    const t0 = this.chunkStart;
    this.labels = [];
    const done = this.engine.device.queue.onSubmittedWorkDone().then(() => {
      const ns = (performance.now() - t0) * 1e6;
      const total = labels.reduce((a, l) => a + (l.cost?.flops ?? 0), 0);
      for (const l of labels) this.add(l.label, total > 0 ? (ns * (l.cost?.flops ?? 0)) / total : ns / labels.length, l.cost);
    });
    this.pending.push({ labels, readback: null, querySet: null, done });
  }

  private add(label: string, ns: number, cost?: OpCost): void {
    const op = this.opts.detail ? label : label.split(/[.:|]/)[0];
    let r = this.totals.get(op);
    if (!r) this.totals.set(op, (r = { calls: 0, ns: 0, flops: 0, bytes: 0 }));
    r.calls++;
    r.ns += Math.max(0, ns);
    r.flops += cost?.flops ?? 0;
    r.bytes += cost?.bytes ?? 0;
  }

  /** Stops profiling, waits for outstanding stamps, and returns rows sorted by time. */
  async report(): Promise<ProfileRow[]> {
    this.engine.flush();
    this.engine.profiler = null;
    await Promise.all(this.pending.map((p) => p.done));
    this.pending = [];
    return [...this.totals].map(([op, r]) => ({
      op, calls: r.calls, ms: r.ns / 1e6, gflop: r.flops / 1e9,
      gflops: r.ns > 0 ? r.flops / r.ns : 0, gbps: r.ns > 0 ? r.bytes / r.ns : 0,
    })).sort((a, b) => b.ms - a.ms);
  }
}

export function formatProfile(rows: ProfileRow[], mode: string): string {
  const total = rows.reduce((a, r) => a + r.ms, 0);
  const lines = [`GPU time by op (${mode === "timestamps" ? "timestamp queries" : "wall time per submitted chunk, spread by FLOPs"}):`];
  for (const r of rows) {
    lines.push(`  ${r.op.padEnd(r.op.length > 24 ? 40 : 24)} ${String(r.calls).padStart(6)} calls ${r.ms.toFixed(1).padStart(10)} ms ${((100 * r.ms) / Math.max(total, 1e-9)).toFixed(1).padStart(5)}%` +
      (r.gflop > 0 ? `  ${r.gflops.toFixed(2).padStart(8)} GFLOP/s` : `  ${r.gbps.toFixed(2).padStart(8)} GB/s`));
  }
  lines.push(`  ${"total".padEnd(24)} ${"".padStart(12)} ${total.toFixed(1).padStart(10)} ms`);
  return lines.join("\n");
}
