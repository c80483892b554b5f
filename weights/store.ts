// WeightStore: name → GPU tensor, streamed from one or more safetensors files.
//
// Modules load with `store.sub("down_blocks.0.resnets.1").take("conv1.weight", [O, I, 3, 3])`.
// Each take reads one tensor with positioned reads into a reusable staging
// buffer, converts it to the storage dtype the precision policy picks, and
// uploads it; host memory stays at about the largest tensor, whatever the
// checkpoint's size. Every name asked for is recorded, so after loading
// `report()` says which keys were missing (an error) and which were never used
// (a warning: usually a checkpoint/config mismatch).

import { SsdError } from "../engine/errors.ts";
import { getEngine, type Engine } from "../engine/engine.ts";
import { weightDtype, type PrecisionPolicy } from "../engine/precision.ts";
import type { DType, Tensor } from "../engine/tensor.ts";
import { bf16ArrayToFloat32, float32ToHalfArray, halfArrayToFloat32 } from "../engine/half.ts";
import { SafetensorsFile, bytesToFloat32, classifyWeightFile, type TensorInfo } from "./safetensors.ts";
import { componentWeightFiles, defaultVariant, readShardIndex } from "./resolve.ts";
import { statSync, existsSync } from "node:fs";
import { basename, join as joinPath } from "node:path";
import { readJsonFile } from "./json.ts";

export interface WeightStoreOptions {
  /** engine to upload to (default: getEngine()) */
  engine?: Engine;
  /** default: the engine's policy */
  precision?: PrecisionPolicy;
  /** for a folder: preferred variant; default fp16 unless the policy wants f32 weights */
  variant?: string | null;
  /** label for messages, e.g. "unet" */
  label?: string;
  /** wait for the GPU queue after this many uploaded bytes, bounding the driver's staging memory (default 256 MiB) */
  syncEveryBytes?: number;
}

export interface WeightReport {
  /** names a module asked for that no file has (an error) */
  missing: string[];
  /** names in the files nobody asked for (a warning) */
  unused: string[];
  taken: number;
  total: number;
}

interface Entry {
  file: SafetensorsFile;
  info: TensorInfo;
}

function shapeStr(s: readonly number[]): string {
  return `[${s.join(", ")}]`;
}

function join(prefix: string, name: string): string {
  return prefix ? (name ? `${prefix}.${name}` : prefix) : name;
}

/** A prefix view of a store: names are relative to `prefix`, errors name the full key. */
export class WeightView {
  protected readonly core: WeightStore;
  constructor(core: WeightStore | null, readonly prefix: string) {
    // The store is its own root view.
    this.core = core ?? (this as unknown as WeightStore);
  }

  /** A view whose names are relative to `prefix` (joined with '.'). */
  sub(prefix: string): WeightView {
    return new WeightView(this.core, join(this.prefix, prefix));
  }
  key(name: string): string {
    return join(this.prefix, name);
  }
  has(name: string): boolean {
    return this.core.entry(this.key(name)) !== undefined;
  }
  /** Shape as stored in the file, or undefined. */
  shape(name: string): number[] | undefined {
    return this.core.entry(this.key(name))?.info.shape.slice();
  }
  /** Names under this view (relative). */
  keys(): string[] {
    const p = this.prefix ? this.prefix + "." : "";
    return this.core.allKeys().filter((k) => k.startsWith(p)).map((k) => k.slice(p.length));
  }
  /** The tensor on the GPU; E_MISSING_WEIGHT / E_SHAPE otherwise. `expectedShape` may use -1 for "any". */
  take(name: string, expectedShape?: readonly number[], opts: { dtype?: DType } = {}): Promise<Tensor> {
    return this.core.load(this.key(name), expectedShape, opts.dtype);
  }
  /** Like take, but null when absent (an optional bias); never recorded as missing. */
  async optional(name: string, expectedShape?: readonly number[], opts: { dtype?: DType } = {}): Promise<Tensor | null> {
    return this.has(name) ? this.take(name, expectedShape, opts) : null;
  }
  /** The values on the host as float32, for weights re-laid out once at load time. */
  takeHost(name: string, expectedShape?: readonly number[]): Promise<Float32Array> {
    return this.core.loadHost(this.key(name), expectedShape);
  }
  /** Marks names (or everything under a prefix ending in '.') as deliberately unused. */
  skip(nameOrPrefix: string): void {
    this.core.markSkipped(this.key(nameOrPrefix));
  }
}

export class WeightStore extends WeightView {
  private readonly entries = new Map<string, Entry>();
  private readonly taken = new Set<string>();
  private readonly missing = new Set<string>();
  private readonly skipped: string[] = [];
  private staging = new Uint8Array(0);
  private stagingF32: Float32Array<ArrayBuffer> = new Float32Array(0);
  private stagingF16: Uint16Array<ArrayBuffer> = new Uint16Array(0);
  private queue: Promise<unknown> = Promise.resolve();
  private sinceSync = 0;
  private readonly syncEvery: number;
  /** bytes read from files */
  bytesRead = 0;
  readonly label: string;

  private constructor(
    readonly files: SafetensorsFile[],
    private readonly engine: Engine,
    readonly precision: PrecisionPolicy,
    readonly variant: string | null,
    opts: WeightStoreOptions,
    weightMap: Map<string, string> | null,
  ) {
    super(null, "");
    this.label = opts.label ?? "weights";
    this.syncEvery = opts.syncEveryBytes ?? 256 << 20;
    const byPath = new Map(files.map((f) => [f.path, f]));
    if (weightMap) {
      // The index decides which shard holds a name; each must really be there.
      for (const [name, path] of weightMap) {
        const f = byPath.get(path)!;
        const info = f.tensors.get(name);
        if (!info) throw new SsdError("E_MISSING_WEIGHT", `${this.label}: the shard index maps '${name}' to ${path}, which has no such tensor (index and shards disagree; download again)`);
        this.entries.set(name, { file: f, info });
      }
    }
    for (const f of files) {
      for (const [name, info] of f.tensors) {
        if (this.entries.has(name)) {
          if (!weightMap) throw new SsdError("E_SAFETENSORS_HEADER", `${this.label}: tensor '${name}' is in both ${this.entries.get(name)!.file.path} and ${f.path}`);
          continue;
        }
        this.entries.set(name, { file: f, info });
      }
    }
  }

  /**
   * Opens weights from: a .safetensors file, a shard index (.safetensors.index*.json),
   * a component folder (variant chosen per `opts.variant`), or a list of files.
   */
  /**
   * The one way a model folder is loaded: read and parse its config.json, open
   * its weights, build the model with `load(store, config)`, then report
   * missing keys (an error) and unused ones (`warn`); files are closed either way.
   */
  static async loadModel<C, T>(
    dir: string,
    parseConfig: (raw: Record<string, any>, source: string) => C,
    load: (store: WeightStore, cfg: C) => Promise<T>,
    opts: WeightStoreOptions & { warn?: (m: string) => void } = {},
  ): Promise<T> {
    const cfgPath = joinPath(dir, "config.json");
    if (!existsSync(cfgPath)) throw new SsdError("E_MODEL_NOT_FOUND", `${dir} has no config.json; is it a model folder?`);
    const cfg = parseConfig(await readJsonFile<Record<string, any>>(cfgPath), cfgPath);
    const { warn, ...storeOpts } = opts;
    const store = await WeightStore.open(dir, { ...storeOpts, label: opts.label ?? dir.split(/[\\/]/).filter(Boolean).pop() });
    try {
      const model = await load(store, cfg);
      await store.finish({ warn });
      return model;
    } catch (e) {
      await store.close();
      throw e;
    }
  }

  static async open(source: string | string[], opts: WeightStoreOptions = {}): Promise<WeightStore> {
    const engine = opts.engine ?? (await getEngine());
    const precision = opts.precision ?? engine.precision;
    let paths: string[];
    let weightMap: Map<string, string> | null = null;
    let variant: string | null = null;
    if (Array.isArray(source)) paths = source;
    else if (isDirectory(source)) {
      const wf = await componentWeightFiles(source, opts.variant === undefined ? defaultVariant(precision) : opts.variant);
      paths = wf.files;
      weightMap = wf.weightMap;
      variant = wf.variant;
    } else if (/\.json$/.test(source)) {
      // The caller named the index: use it whatever the variant preference.
      const idx = await readShardIndex(source);
      paths = idx.files;
      weightMap = idx.weightMap;
      variant = classifyWeightFile(basename(source))?.variant ?? null;
    } else paths = [source];
    const files: SafetensorsFile[] = [];
    try {
      for (const p of paths) files.push(await SafetensorsFile.open(p));
      return new WeightStore(files, engine, precision, variant, opts, weightMap);
    } catch (e) {
      for (const f of files) await f.close();
      throw e;
    }
  }

  // ---- used by views

  entry(key: string): Entry | undefined {
    return this.entries.get(key);
  }
  allKeys(): string[] {
    return [...this.entries.keys()];
  }
  markSkipped(key: string): void {
    this.skipped.push(key);
  }

  private lookup(key: string, expected?: readonly number[]): Entry {
    const e = this.entries.get(key);
    if (!e) {
      this.missing.add(key);
      throw new SsdError("E_MISSING_WEIGHT", `${this.label}: weight '${key}' is not in ${this.where()}${this.nearby(key)}; the checkpoint does not match the model's config`);
    }
    if (expected && (expected.length !== e.info.shape.length || expected.some((d, i) => d !== -1 && d !== e.info.shape[i]))) {
      throw new SsdError("E_SHAPE", `${this.label}: weight '${key}' has shape ${shapeStr(e.info.shape)} in ${e.file.path} but the model expects ${shapeStr(expected)}; check that config.json belongs to these weights`);
    }
    this.taken.add(key);
    return e;
  }

  private where(): string {
    return this.files.length === 1 ? this.files[0].path : `${this.files.length} files (${this.files[0]?.path ?? "none"}, ...)`;
  }

  /** A hint with names sharing the longest prefix, for typos and renamed modules. */
  private nearby(key: string): string {
    const parts = key.split(".");
    for (let n = parts.length - 1; n > 0; n--) {
      const p = parts.slice(0, n).join(".") + ".";
      const hits = this.allKeys().filter((k) => k.startsWith(p));
      if (hits.length) return ` (it has ${hits.slice(0, 3).map((h) => `'${h}'`).join(", ")}${hits.length > 3 ? `, +${hits.length - 3} more` : ""})`;
    }
    return "";
  }

  /** Serialises reads: the staging buffers are shared. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }

  private stage(bytes: number): Uint8Array {
    if (this.staging.byteLength < bytes) this.staging = new Uint8Array(Math.ceil(bytes / (1 << 20)) * (1 << 20));
    return this.staging;
  }
  private stageF32(n: number): Float32Array<ArrayBuffer> {
    if (this.stagingF32.length < n) this.stagingF32 = new Float32Array(Math.ceil(n / (1 << 18)) * (1 << 18));
    return this.stagingF32.subarray(0, n);
  }
  private stageF16(n: number): Uint16Array<ArrayBuffer> {
    if (this.stagingF16.length < n) this.stagingF16 = new Uint16Array(Math.ceil(n / (1 << 19)) * (1 << 19));
    return this.stagingF16.subarray(0, n);
  }

  async load(key: string, expected?: readonly number[], dtype?: DType): Promise<Tensor> {
    const e = this.lookup(key, expected);
    return this.exclusive(async () => {
      const { info } = e;
      const bytes = await e.file.readBytes(key, this.stage(info.end - info.begin));
      this.bytesRead += bytes.byteLength;
      const n = info.shape.reduce((a, b) => a * b, 1);
      const target = dtype ?? weightDtype(info.dtype, this.precision);
      if (target !== "f32" && target !== "f16") throw new SsdError("E_DTYPE", `${this.label}: '${key}' cannot be stored as ${target}`);
      // The staging buffer starts at offset 0 of its own ArrayBuffer, so typed views over it are aligned.
      let data: Float32Array | Uint16Array;
      if (info.dtype === "F16" && target === "f16") data = new Uint16Array(bytes.buffer, 0, n);
      else if (info.dtype === "F32" && target === "f32") data = new Float32Array(bytes.buffer, 0, n);
      else {
        let f32: Float32Array;
        if (info.dtype === "F16") f32 = halfArrayToFloat32(new Uint16Array(bytes.buffer, 0, n), this.stageF32(n));
        else if (info.dtype === "BF16") f32 = bf16ArrayToFloat32(new Uint16Array(bytes.buffer, 0, n), this.stageF32(n));
        else if (info.dtype === "F32") f32 = new Float32Array(bytes.buffer, 0, n);
        else f32 = bytesToFloat32(bytes, info.dtype);
        data = target === "f16" ? float32ToHalfArray(f32, this.stageF16(n)) : f32;
      }
      // writeBuffer copies at call time, so the staging buffer is free again on return.
      const t = this.engine.upload(data, info.shape, target, { persistent: true });
      this.sinceSync += data.byteLength;
      if (this.sinceSync >= this.syncEvery) {
        this.sinceSync = 0;
        await this.engine.sync();
      }
      return t;
    });
  }

  async loadHost(key: string, expected?: readonly number[]): Promise<Float32Array> {
    const e = this.lookup(key, expected);
    return this.exclusive(async () => {
      const bytes = await e.file.readBytes(key, this.stage(e.info.end - e.info.begin));
      this.bytesRead += bytes.byteLength;
      // A fresh array: the caller keeps it, the staging buffer is reused.
      return e.info.dtype === "F32" ? new Float32Array(bytes.slice().buffer) : bytesToFloat32(bytes, e.info.dtype);
    });
  }

  /** Missing and unused keys so far. */
  report(): WeightReport {
    const isSkipped = (k: string) => this.skipped.some((s) => k === s || (s.endsWith(".") && k.startsWith(s)));
    const unused = this.allKeys().filter((k) => !this.taken.has(k) && !isSkipped(k)).sort();
    return { missing: [...this.missing].sort(), unused, taken: this.taken.size, total: this.entries.size };
  }

  /**
   * Ends loading: closes the files, warns about unused keys, throws
   * E_MISSING_WEIGHT listing every missing one.
   */
  async finish(opts: { warn?: (msg: string) => void; ignoreUnused?: (string | RegExp)[] } = {}): Promise<WeightReport> {
    await this.queue;
    await this.close();
    const r = this.report();
    const ign = opts.ignoreUnused ?? [];
    r.unused = r.unused.filter((k) => !ign.some((p) => (typeof p === "string" ? k === p || k.startsWith(p + ".") : p.test(k))));
    if (r.missing.length) {
      throw new SsdError("E_MISSING_WEIGHT", `${this.label}: ${r.missing.length} weight(s) missing from ${this.where()}: ${r.missing.slice(0, 10).join(", ")}${r.missing.length > 10 ? ", ..." : ""}`);
    }
    if (r.unused.length) {
      const warn = opts.warn ?? ((m: string) => console.warn(m));
      warn(`warning: ${this.label}: ${r.unused.length} weight(s) in the checkpoint were not used: ${r.unused.slice(0, 10).join(", ")}${r.unused.length > 10 ? ", ..." : ""}`);
    }
    return r;
  }

  async close(): Promise<void> {
    for (const f of this.files) await f.close();
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
