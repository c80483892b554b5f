// The only module that knows where `navigator.gpu` comes from: Dawn through the
// `webgpu` package under Node, wgpu built into Deno. It chooses the adapter,
// requests the features and limits the kernels use, and turns device loss and
// uncaptured GPU errors into coded errors.
//
// Adapter choice, in order:
//  1. explicit: `--adapter` / SSD_DEPTH_ADAPTER = "lavapipe" | "swiftshader" |
//     "gpu" | "cpu" | a substring of the adapter's name/vendor/architecture;
//  2. a hardware GPU;
//  3. a CPU Vulkan driver found by itself: Mesa's lavapipe, then SwiftShader.

import { SsdError } from "./errors.ts";
import { findIcd, INSTALL_HINT } from "./drivers.ts";
import { pacePolling, pollingFor, type Polling } from "./poll.ts";

declare const Deno: any;

export type Runtime = "node" | "deno";
export const runtime: Runtime = typeof Deno !== "undefined" ? "deno" : "node";

export interface Limits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupSizeY: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBuffersPerShaderStage: number;
  minStorageBufferOffsetAlignment: number;
  minUniformBufferOffsetAlignment: number;
}

const LIMIT_KEYS: (keyof Limits)[] = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "minStorageBufferOffsetAlignment",
  "minUniformBufferOffsetAlignment",
];

export interface AdapterReport {
  runtime: Runtime;
  implementation: string; // "Dawn (webgpu npm package)" | "wgpu (Deno built-in)"
  name: string;
  vendor: string;
  architecture: string;
  description: string;
  kind: "gpu" | "cpu";
  driver: string; // "lavapipe" | "swiftshader" | "hardware"
  icd: string | null;
  features: string[];
  limits: Limits;
  /** How Dawn waits for the device (engine/poll.ts); "wgpu" under Deno, which does not poll from the event loop */
  polling: Polling | "wgpu";
}

export interface Gpu {
  device: GPUDevice;
  adapter: GPUAdapter;
  report: AdapterReport;
  /** Native `f16` in WGSL (feature shader-f16); otherwise f16 data is packed two per u32. */
  f16: boolean;
  subgroups: boolean;
  /** Smallest subgroup the adapter may run (GPUAdapterInfo.subgroupMinSize); 0 when unknown or without subgroups. */
  subgroupMinSize: number;
  timestamps: boolean;
  /** Effective limits: the device's, possibly lowered for tests (forceLimits). */
  limits: Limits;
  /** Set once the device is lost; every later GPU call throws E_DEVICE_LOST. */
  lost: string | null;
  /** First uncaptured validation error since the last check. */
  pendingError: string | null;
}

let current: Promise<Gpu> | null = null;
let currentGpu: Gpu | null = null;

function describe(a: GPUAdapter) {
  const info: any = (a as any).info ?? {};
  const description = String(info.description || info.device || "");
  const vendor = String(info.vendor ?? "");
  const architecture = String(info.architecture ?? "");
  const hay = `${description} ${vendor} ${architecture}`.toLowerCase();
  const driver = /llvmpipe|lavapipe/.test(hay) ? "lavapipe" : /swiftshader/.test(hay) ? "swiftshader" : "hardware";
  const kind: "gpu" | "cpu" = driver === "hardware" && !(a as any).isFallbackAdapter && !/software|cpu/.test(hay) ? "gpu" : "cpu";
  return { description, vendor, architecture, driver, kind, name: description || `${vendor} ${architecture}`.trim() || "unknown adapter" };
}

/**
 * Dawn instance flags.
 * - `use_vulkan_memory_model` off (every adapter). Measured on Mesa 25
 *   lavapipe (bench in README): Tint's SPIR-V under the Vulkan memory model
 *   (Dawn's default where the driver has it) compiles to code 1.5–2× slower
 *   than the same WGSL through wgpu/naga, which emits the GLSL450 memory
 *   model; turning it off closes most of that gap. Our kernels need nothing
 *   from that model: the one kernel with atomics (serial split-K,
 *   shaders/wide_serial.wgsl) relies only on atomic operations on one word
 *   being coherent, which both models give.
 * - `timestamp_quantization` off: the profiler and the bench read kernel times
 *   from timestamp queries, which Dawn otherwise rounds.
 * - `disable_robustness` on GPU adapters only: Tint's robustness transform
 *   clamps every array index, including the workgroup-memory reads in the
 *   GEMM cores' inner loops. Measured on an H200, 4096×1280×1280: the same
 *   GEMMs 4–16 % faster without it, by tile (README). Every kernel
 *   bounds-checks its own accesses; the op tests passed there with it.
 * SSD_DEPTH_DAWN_FLAGS replaces these (space-separated Dawn `create()` flags;
 * "none" for Dawn's defaults).
 */
export function dawnFlags(gpu = false): string[] {
  const env = process.env.SSD_DEPTH_DAWN_FLAGS;
  if (env !== undefined) return env.trim() === "none" ? [] : env.split(/\s+/).filter(Boolean);
  const flags = ["disable-dawn-features=use_vulkan_memory_model,timestamp_quantization"];
  if (gpu) flags.push("enable-dawn-features=disable_robustness");
  return flags;
}

async function navigatorGpu(flags: string[]): Promise<GPU | null> {
  if (runtime === "deno") return (globalThis as any).navigator?.gpu ?? null;
  let mod: any;
  try {
    mod = await import("webgpu");
  } catch (e: any) {
    throw new SsdError("E_NO_ADAPTER", `cannot load the 'webgpu' package (Dawn for Node): ${e?.message ?? e}. Run 'npm ci' in the project folder.`);
  }
  Object.assign(globalThis, mod.globals);
  return mod.create(flags) as GPU;
}

// Dawn's GPU instances must outlive their adapters and devices: a collected
// instance takes its device down with it (a segfault, not an error).
const instances: GPU[] = [];

/**
 * The first adapter of a new instance made with Dawn `flags` (Deno: the
 * built-in one) and, under Node, the Vulkan driver `icd`; null if none or
 * if the instance fails. Dawn reads VK_ICD_FILENAMES each time an instance
 * is created, so under Node a driver can be chosen in-process; Deno's wgpu
 * reads it once at start-up. bench/gemmlab.ts uses it for its own toggle sets.
 */
export async function adapterWith(icd: string | null, flags: string[]): Promise<GPUAdapter | null> {
  const saved = process.env.VK_ICD_FILENAMES;
  if (icd && runtime === "node") process.env.VK_ICD_FILENAMES = icd;
  try {
    const gpu = await navigatorGpu(flags);
    if (!gpu) return null;
    const a = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (a) instances.push(gpu);
    return a;
  } catch {
    return null;
  } finally {
    if (icd && runtime === "node") {
      if (saved === undefined) delete process.env.VK_ICD_FILENAMES;
      else process.env.VK_ICD_FILENAMES = saved;
    }
  }
}

const tryAdapter = (icd: string | null, gpuFlags = false) => adapterWith(icd, dawnFlags(gpuFlags));

/**
 * The `navigator.gpu` object the engine's adapter came from, so a peer library
 * measured beside us (TensorFlow.js in bench/) runs on the same implementation
 * and driver.
 */
export function gpuInstance(): GPU | null {
  if (runtime === "deno") return (globalThis as any).navigator?.gpu ?? null;
  return instances[instances.length - 1] ?? null;
}

export interface DeviceOptions {
  /** Adapter wish; defaults to $SSD_DEPTH_ADAPTER. */
  adapter?: string;
}

async function chooseAdapter(wish: string | undefined): Promise<{ adapter: GPUAdapter; icd: string | null }> {
  const envIcd = process.env.VK_ICD_FILENAMES ?? null;
  if (wish) {
    const w = wish.toLowerCase();
    const icd = w === "lavapipe" || w === "swiftshader" ? findIcd(w) : null;
    if ((w === "lavapipe" || w === "swiftshader") && !icd && !envIcd) {
      throw new SsdError("E_NO_ADAPTER", `adapter '${wish}' was asked for but its Vulkan driver is not installed.\n${INSTALL_HINT}`);
    }
    const candidates: (string | null)[] = runtime === "deno" ? [null] : icd ? [icd] : [null, findIcd("lavapipe"), findIcd("swiftshader")];
    for (const c of candidates) {
      const a = await tryAdapter(c);
      if (!a) continue;
      const d = describe(a);
      const hay = `${d.name} ${d.vendor} ${d.architecture} ${d.driver} ${d.kind}`.toLowerCase();
      if (hay.includes(w)) return { adapter: a, icd: c ?? envIcd };
    }
    const hint = runtime === "deno" && icd ? ` Under Deno the driver is chosen at start-up: run with VK_ICD_FILENAMES=${icd}.` : "";
    throw new SsdError("E_NO_ADAPTER", `no adapter matches '${wish}' (SSD_DEPTH_ADAPTER / --adapter).${hint} 'ssd-depth info' lists what was found.`);
  }
  // No wish: whatever the system offers first, if it is a GPU or lavapipe.
  const first = await tryAdapter(null);
  if (first && (describe(first).kind === "gpu" || envIcd)) return { adapter: first, icd: envIcd };
  if (first && describe(first).driver === "lavapipe") return { adapter: first, icd: findIcd("lavapipe") };
  if (runtime === "node") {
    for (const drv of ["lavapipe", "swiftshader"]) {
      const icd = findIcd(drv);
      if (!icd) continue;
      const a = await tryAdapter(icd);
      if (a) return { adapter: a, icd };
    }
  }
  if (first) return { adapter: first, icd: envIcd };
  if (runtime === "deno") {
    const found = ["lavapipe", "swiftshader"].map((d) => findIcd(d)).filter(Boolean);
    const hint = found.length ? `\nUnder Deno the Vulkan driver is read at start-up; try: VK_ICD_FILENAMES=${found[0]} deno run -A ...` : "";
    throw new SsdError("E_NO_ADAPTER", INSTALL_HINT + hint);
  }
  throw new SsdError("E_NO_ADAPTER", INSTALL_HINT);
}

async function open(opts: DeviceOptions): Promise<Gpu> {
  const wish = opts.adapter ?? process.env.SSD_DEPTH_ADAPTER ?? undefined;
  const chosen = await chooseAdapter(wish || undefined);
  const { icd } = chosen;
  let adapter = chosen.adapter;
  const d = describe(adapter);
  // A GPU gets its own instance flags (dawnFlags): ask the same driver again through an instance made with them.
  if (runtime === "node" && d.kind === "gpu" && process.env.SSD_DEPTH_DAWN_FLAGS === undefined) {
    const again = await tryAdapter(icd, true);
    if (again && describe(again).name === d.name) adapter = again;
  }
  const polling = runtime === "node" ? pollingFor(d.kind) : "wgpu";
  const want: GPUFeatureName[] = ["shader-f16", "subgroups" as GPUFeatureName, "timestamp-query"];
  const requiredFeatures = want.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMIT_KEYS) {
    const v = (adapter.limits as any)[k];
    if (typeof v === "number" && !k.startsWith("min")) requiredLimits[k] = v;
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  } catch (e: any) {
    throw new SsdError("E_NO_ADAPTER", `the adapter '${d.name}' refused to create a device: ${e?.message ?? e}`);
  }
  const limits = {} as Limits;
  for (const k of LIMIT_KEYS) limits[k] = Number((device.limits as any)[k]);
  const gpu: Gpu = {
    device,
    adapter,
    f16: device.features.has("shader-f16"),
    subgroups: device.features.has("subgroups" as GPUFeatureName),
    subgroupMinSize: device.features.has("subgroups" as GPUFeatureName) ? Number((adapter as any).info?.subgroupMinSize ?? 0) || 0 : 0,
    timestamps: device.features.has("timestamp-query"),
    limits,
    lost: null,
    pendingError: null,
    report: {
      runtime,
      implementation: runtime === "deno" ? "wgpu (Deno built-in)" : "Dawn (webgpu npm package)",
      name: d.name,
      vendor: d.vendor,
      architecture: d.architecture,
      description: d.description,
      kind: d.kind,
      driver: d.driver,
      icd,
      features: [...adapter.features].map(String).sort(),
      limits: { ...limits },
      polling,
    },
  };
  if (runtime === "node") pacePolling(polling === "paced");
  device.lost.then((info) => {
    if (info.reason === "destroyed" && currentGpu !== gpu) return;
    gpu.lost = `${info.reason}: ${info.message}`;
  });
  device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
    const msg = ev.error?.message ?? String(ev.error);
    if (ev.error instanceof (globalThis as any).GPUOutOfMemoryError) gpu.pendingError ??= `out of memory: ${msg}`;
    else gpu.pendingError ??= msg;
  };
  const overrides = process.env.SSD_DEPTH_FORCE_LIMITS;
  if (overrides) forceLimits(gpu, Object.fromEntries(overrides.split(",").map((kv) => { const [k, v] = kv.split("="); return [k, Number(v)]; })));
  return gpu;
}

/** The process-wide device (opened on first use). */
export function getGpu(opts: DeviceOptions = {}): Promise<Gpu> {
  if (!current) {
    current = open(opts).then((g) => (currentGpu = g));
    current.catch(() => { current = null; });
  }
  return current;
}

/** Lowers effective limits (tests of the splitting paths). Never raises them. */
export function forceLimits(gpu: Gpu, lower: Partial<Limits>): void {
  for (const [k, v] of Object.entries(lower)) {
    const key = k as keyof Limits;
    if (typeof v === "number" && v > 0 && key in gpu.limits && !key.startsWith("min")) gpu.limits[key] = Math.min(gpu.limits[key], v);
  }
}

/** Throws E_DEVICE_LOST / E_GPU_VALIDATION when the device reported a problem. */
export function checkGpu(gpu: Gpu): void {
  if (gpu.lost) throw new SsdError("E_DEVICE_LOST", `the GPU device was lost (${gpu.lost}). Nothing further can run on it; restart the command. If this repeats, the driver crashed or memory ran out: try a smaller --width/--height.`);
  if (gpu.pendingError) {
    const m = gpu.pendingError;
    gpu.pendingError = null;
    const oom = m.startsWith("out of memory");
    throw new SsdError(oom ? "E_GPU_OOM" : "E_GPU_VALIDATION", oom ? `the GPU ran out of memory (${m}); try a smaller size or batch.` : `GPU validation error: ${m}`);
  }
}

/** Destroys the device so the process can exit; the next getGpu() opens a new one. */
export async function releaseDevice(): Promise<void> {
  if (!current) return;
  const g = await current.catch(() => null);
  current = null;
  currentGpu = null;
  if (g) g.device.destroy();
}
