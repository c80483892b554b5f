// Load bench: MB/s from a multi-GB synthetic safetensors file on disk into GPU
// tensors through WeightStore (positioned reads → staging buffer → dtype
// conversion → upload), and peak host memory during the load.
//
//   npm run bench -- load [--gb 3] [--dtype F16|F32|BF16] [--dir /tmp] [--keep]
//   node --import tsx bench/load.ts --gb 3
//
// The file is written just before it is read, so reads mostly come from the OS
// page cache: the figure is the pipeline's own cost (read syscalls, conversion,
// upload), not the disk's. On a CPU adapter (lavapipe, SwiftShader) "GPU"
// memory is host memory, so RSS also holds the uploaded weights; the report
// separates them.

import { mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getEngine } from "../engine/engine.ts";
import { releaseDevice } from "../engine/device.ts";
import { DTYPE_SIZE, SafetensorsFile, type StDtype } from "../weights/safetensors.ts";
import { WeightStore } from "../weights/store.ts";
import type { Tensor } from "../engine/tensor.ts";

export interface LoadBenchArgs {
  /** file size in GB (1e9 bytes); default 3 (about SSD-1B's fp16 UNet) */
  gb?: number;
  dtype?: StDtype;
  /** where the synthetic file goes (default: the OS temp folder) */
  dir?: string;
  /** JSON result path (default bench/results/load-<time>.json) */
  out?: string;
  /** keep the synthetic file */
  keep?: boolean;
}

export interface LoadBenchResult {
  adapter: string;
  driver: string;
  runtime: string;
  fileBytes: number;
  tensors: number;
  dtype: string;
  storedAs: string;
  writeSeconds: number;
  readOnlyMBps: number;
  loadSeconds: number;
  loadMBps: number;
  rssBaselineMB: number;
  rssPeakMB: number;
  rssPeakAboveBaselineMB: number;
  largestTensorMB: number;
  weightsOnDeviceMB: number;
  note: string;
}

/** Shapes in the proportions of an SDXL-class UNet: 3×3 convs, attention projections, norms. */
const PATTERN: number[][] = [[1280, 1280, 3, 3], [1280, 1280], [640, 640, 3, 3], [5120, 1280], [1280, 5120], [640, 640], [320, 320, 3, 3], [1280], [640], [2048, 1280]];

function plan(bytes: number, dtype: StDtype): { name: string; shape: number[]; n: number }[] {
  const out: { name: string; shape: number[]; n: number }[] = [];
  let total = 0;
  for (let i = 0; total < bytes; i++) {
    const shape = PATTERN[i % PATTERN.length];
    const n = shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[dtype];
    out.push({ name: `blocks.${Math.floor(i / PATTERN.length)}.p${i % PATTERN.length}.weight`, shape, n });
    total += n;
  }
  return out;
}

/** Streams a safetensors file to disk from a repeating pattern (never holding it in memory). */
async function writeSynthetic(path: string, dtype: StDtype, tensors: { name: string; shape: number[]; n: number }[]): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: { format: "pt", purpose: "ssd-depth load bench" } };
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype, shape: t.shape, data_offsets: [off, off + t.n] };
    off += t.n;
  }
  const raw = new TextEncoder().encode(JSON.stringify(header));
  const json = new Uint8Array(Math.ceil(raw.length / 8) * 8).fill(0x20);
  json.set(raw);
  const pattern = new Uint8Array(64 << 20);
  // Small finite values in any float dtype: 0x3c00-ish halves / bf16, or f32 around 1.
  const u16 = new Uint16Array(pattern.buffer);
  for (let i = 0; i < u16.length; i++) u16[i] = dtype === "F32" ? (i & 1 ? 0x3f80 : (i * 7919) & 0xffff) : 0x3800 + ((i * 2654435761) >>> 22);
  const fh = await open(path, "w");
  try {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
    await fh.write(len, 0, 8, 0);
    await fh.write(json, 0, json.length, 8);
    let pos = 8 + json.length;
    const end = pos + off;
    while (pos < end) {
      const n = Math.min(pattern.length, end - pos);
      let d = 0;
      while (d < n) d += (await fh.write(pattern, d, n - d, pos + d)).bytesWritten;
      pos += n;
    }
  } finally {
    await fh.close();
  }
}

export async function benchLoad(args: LoadBenchArgs = {}): Promise<LoadBenchResult> {
  const gb = args.gb ?? 3;
  const dtype = (args.dtype ?? "F16") as StDtype;
  const dir = args.dir ?? tmpdir();
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `ssd-depth-load-bench-${process.pid}.safetensors`);
  const engine = await getEngine();
  const report = engine.gpu.report;
  const tensors = plan(gb * 1e9, dtype);
  console.log(`load bench on ${report.name} (${report.driver}, ${report.runtime}): writing ${gb} GB synthetic ${dtype} file with ${tensors.length} tensors to ${path}`);
  let t = performance.now();
  await writeSynthetic(path, dtype, tensors);
  const writeSeconds = (performance.now() - t) / 1000;
  const fileBytes = statSync(path).size;
  try {
    // 1. reads alone (same staging pattern), to separate I/O from conversion + upload
    const f = await SafetensorsFile.open(path);
    const staging = new Uint8Array(Math.max(...tensors.map((x) => x.n)));
    t = performance.now();
    for (const x of tensors) await f.readBytes(x.name, staging);
    const readSeconds = (performance.now() - t) / 1000;
    await f.close();

    // 2. the real load, sampling RSS
    (globalThis as any).gc?.();
    const rssBaseline = process.memoryUsage().rss;
    let rssPeak = rssBaseline;
    const sampler = setInterval(() => { rssPeak = Math.max(rssPeak, process.memoryUsage().rss); }, 10);
    const held: Tensor[] = [];
    t = performance.now();
    const store = await WeightStore.open(path, { engine, label: "bench" });
    for (const x of tensors) {
      held.push(await store.take(x.name, x.shape));
      rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
    }
    await engine.sync();
    const loadSeconds = (performance.now() - t) / 1000;
    clearInterval(sampler);
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
    await store.finish();
    const weightsOnDevice = held.reduce((a, x) => a + x.byteSize, 0);
    const storedAs = held[0]?.dtype ?? "?";
    for (const x of held) x.dispose();

    const MB = 1e6;
    const result: LoadBenchResult = {
      adapter: report.name,
      driver: report.driver,
      runtime: report.runtime,
      fileBytes,
      tensors: tensors.length,
      dtype,
      storedAs,
      writeSeconds,
      readOnlyMBps: fileBytes / MB / readSeconds,
      loadSeconds,
      loadMBps: fileBytes / MB / loadSeconds,
      rssBaselineMB: rssBaseline / MB,
      rssPeakMB: rssPeak / MB,
      rssPeakAboveBaselineMB: (rssPeak - rssBaseline) / MB,
      largestTensorMB: Math.max(...tensors.map((x) => x.n)) / MB,
      weightsOnDeviceMB: weightsOnDevice / MB,
      note: report.kind === "cpu"
        ? "CPU adapter: device memory is host memory, so RSS above baseline includes the uploaded weights; file read from a warm page cache"
        : "file read from a warm page cache (written just before)",
    };
    console.log(`  file            ${(fileBytes / 1e9).toFixed(2)} GB, ${tensors.length} tensors ${dtype} → stored ${storedAs}`);
    console.log(`  reads only      ${result.readOnlyMBps.toFixed(0)} MB/s`);
    console.log(`  load into GPU   ${result.loadMBps.toFixed(0)} MB/s (${loadSeconds.toFixed(2)} s)`);
    console.log(`  host RSS        baseline ${result.rssBaselineMB.toFixed(0)} MB, peak ${result.rssPeakMB.toFixed(0)} MB (+${result.rssPeakAboveBaselineMB.toFixed(0)} MB; largest tensor ${result.largestTensorMB.toFixed(1)} MB, weights ${result.weightsOnDeviceMB.toFixed(0)} MB on the device)`);
    console.log(`  ${result.note}`);
    const out = args.out ?? join("bench", "results", `load-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
    mkdirSync(join(out, ".."), { recursive: true });
    writeFileSync(out, JSON.stringify(result, null, 2) + "\n");
    console.log(`  wrote ${out}`);
    return result;
  } finally {
    if (!args.keep) rmSync(path, { force: true });
  }
}

// Standalone: node --import tsx bench/load.ts [--gb N] [--dtype F16] [--dir D] [--out F] [--keep]
if (process.argv[1] && /bench[\\/]load\.ts$/.test(process.argv[1])) {
  const a = process.argv.slice(2);
  const get = (k: string) => { const i = a.indexOf(k); return i >= 0 ? a[i + 1] : undefined; };
  await benchLoad({ gb: get("--gb") ? Number(get("--gb")) : undefined, dtype: get("--dtype") as StDtype | undefined, dir: get("--dir"), out: get("--out"), keep: a.includes("--keep") });
  await releaseDevice();
  process.exit(0);
}
