// Streaming, validating safetensors reader (and a small writer).
//
// Format: u64 little-endian header length N, N bytes of UTF-8 JSON, then the
// data section. The header maps tensor names to {dtype, shape, data_offsets}
// (offsets relative to the data section) plus an optional "__metadata__" map of
// strings. We validate the whole header before touching data, then read each
// tensor on demand with positioned reads: a file is never loaded whole, and
// files over 4 GB work (offsets are plain doubles, exact up to 2^53).

import { open, type FileHandle } from "node:fs/promises";
import { SsdError } from "../engine/errors.ts";
import { bf16ArrayToFloat32, halfArrayToFloat32 } from "../engine/half.ts";

export type StDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export const DTYPE_SIZE: Record<StDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function headerError(file: string, tensor: string | null, rule: string): never {
  const where = tensor === null ? "" : ` tensor '${tensor}':`;
  throw new SsdError(
    "E_SAFETENSORS_HEADER",
    `${file}:${where} ${rule}. The file is damaged or not a safetensors file; download it again.`,
  );
}

/**
 * Validates a header given its JSON bytes and the file size. Pure: used by the
 * reader and by the fuzz test.
 */
export function parseHeader(
  json: Uint8Array,
  fileSize: number,
  file = "<buffer>",
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(json);
  } catch {
    headerError(file, null, "header is not valid UTF-8");
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text!);
  } catch (e: any) {
    headerError(file, null, `header is not valid JSON (${String(e?.message ?? e).slice(0, 120)})`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) headerError(file, null, "header is not a JSON object");
  const dataStart = 8 + json.length;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  const metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(obj as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) headerError(file, null, "__metadata__ is not an object");
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") headerError(file, null, `__metadata__ value '${k}' is not a string`);
        // defineProperty: a key named "__proto__" stays an ordinary entry
        Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      continue;
    }
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) headerError(file, name, "entry is not an object");
    const e = entry as Record<string, unknown>;
    const dtype = e.dtype;
    // hasOwn, not `in`: "constructor" or "toString" must not pass as a dtype
    if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_SIZE, dtype)) headerError(file, name, `unknown dtype ${JSON.stringify(dtype)}`);
    const shape = e.shape;
    if (!Array.isArray(shape)) headerError(file, name, "shape is not an array");
    let numel = 1;
    for (const d of shape as unknown[]) {
      if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) headerError(file, name, `shape ${JSON.stringify(shape)} has an entry that is not a non-negative integer`);
      numel *= d as number;
      if (!Number.isSafeInteger(numel)) headerError(file, name, "shape has too many elements");
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) {
      headerError(file, name, "data_offsets is not a pair of non-negative integers");
    }
    const [b, en] = off as number[];
    if (en < b) headerError(file, name, `data_offsets [${b}, ${en}] end before begin`);
    if (en > dataSize) headerError(file, name, `data_offsets [${b}, ${en}] run past the end of the file (data section is ${dataSize} bytes; file truncated?)`);
    const need = numel * DTYPE_SIZE[dtype as StDtype];
    if (en - b !== need) headerError(file, name, `data_offsets span ${en - b} bytes but ${dtype} ${JSON.stringify(shape)} needs ${need}`);
    for (const k of Object.keys(e)) {
      if (k !== "dtype" && k !== "shape" && k !== "data_offsets") headerError(file, name, `unexpected field '${k}'`);
    }
    tensors.set(name, { name, dtype: dtype as StDtype, shape: (shape as number[]).slice(), begin: dataStart + b, end: dataStart + en });
  }
  // No overlaps, no holes: sorted by begin, the ranges must tile the data section.
  const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = dataStart;
  for (const t of sorted) {
    if (t.begin < pos) headerError(file, t.name, "data overlaps the previous tensor");
    if (t.begin > pos) headerError(file, t.name, `hole of ${t.begin - pos} bytes before this tensor`);
    pos = t.end;
  }
  if (pos !== fileSize) headerError(file, null, `${fileSize - pos} bytes after the last tensor (data section must end with the last tensor)`);
  return { tensors, metadata };
}

/**
 * Validates a whole safetensors file held in memory (length prefix, header and
 * data layout) without copying it. The fuzz test runs thousands of these.
 */
export function parseSafetensorsBytes(
  bytes: Uint8Array,
  file = "<buffer>",
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string>; headerLength: number } {
  const n = checkHeaderLength(bytes, bytes.byteLength, file);
  return { ...parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength, file), headerLength: n };
}

/** Reads the u64 header length from the first 8 bytes and bounds it by the limit and the file size. */
function checkHeaderLength(first8: Uint8Array, size: number, file: string): number {
  if (size < 8 || first8.byteLength < 8) headerError(file, null, `file is ${size} bytes, shorter than the 8-byte header length`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) headerError(file, null, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n > BigInt(size - 8)) headerError(file, null, `header length ${n} runs past the end of the ${size}-byte file (truncated?)`);
  if (n < 2n) headerError(file, null, `header length ${n} is too small for a JSON object`);
  return Number(n);
}

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private fh: FileHandle,
    readonly size: number,
    readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, string>,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (e: any) {
      throw new SsdError(e?.code === "ENOENT" ? "E_MODEL_NOT_FOUND" : "E_IO", `cannot open ${path}: ${e?.code ?? e?.message ?? e}`);
    }
    try {
      const size = (await fh.stat()).size;
      const lenBuf = new Uint8Array(8);
      if (size >= 8) await readFully(fh, lenBuf, 0, path);
      const n = checkHeaderLength(lenBuf, size, path);
      const json = new Uint8Array(n);
      await readFully(fh, json, 8, path);
      const { tensors, metadata } = parseHeader(json, size, path);
      return new SafetensorsFile(path, fh, size, tensors, metadata);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SsdError("E_MISSING_WEIGHT", `${this.path}: no tensor named '${name}'`);
    return t;
  }

  /**
   * Raw bytes of a tensor, read with positioned reads into `into` when it is
   * large enough (a reusable staging buffer), else into a new array.
   */
  async readBytes(name: string, into?: Uint8Array): Promise<Uint8Array> {
    const t = this.info(name);
    const n = t.end - t.begin;
    const dst = into && into.byteLength >= n ? into.subarray(0, n) : new Uint8Array(n);
    if (this.closed) throw new SsdError("E_IO", `${this.path}: read of '${name}' after the file was closed`);
    await readFully(this.fh, dst, t.begin, this.path);
    return dst;
  }

  /** A tensor converted to Float32Array on the host (any float or integer dtype). */
  async readFloat32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    const bytes = await this.readBytes(name);
    return bytesToFloat32(bytes, t.dtype);
  }

  private closed = false;
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

async function readFully(fh: FileHandle, dst: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < dst.byteLength) {
    // Reads of at most 1 GiB at a time: some platforms cap a single read.
    const len = Math.min(dst.byteLength - done, 1 << 30);
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(dst, done, len, position + done));
    } catch (e: any) {
      throw new SsdError("E_IO", `${path}: read of ${len} bytes at ${position + done} failed: ${e?.code ?? e?.message ?? e}`);
    }
    // The header was checked against the size at open; a short read means the file shrank since.
    if (bytesRead === 0) throw new SsdError("E_SAFETENSORS_HEADER", `${path}: file ends early (truncated at byte ${position + done}); download it again.`);
    done += bytesRead;
  }
}

/** Converts raw little-endian bytes of a safetensors dtype to Float32Array. */
export function bytesToFloat32(bytes: Uint8Array, dtype: StDtype): Float32Array {
  const aligned = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const buf = aligned.buffer;
  const off = aligned.byteOffset;
  const n = bytes.byteLength / DTYPE_SIZE[dtype];
  switch (dtype) {
    case "F32": return new Float32Array(buf.slice(off, off + bytes.byteLength) as ArrayBuffer);
    case "F16": return halfArrayToFloat32(new Uint16Array(buf, off, n));
    case "BF16": return bf16ArrayToFloat32(new Uint16Array(buf, off, n));
    case "F64": return Float32Array.from(new Float64Array(buf, off, n));
    case "I64": { const a = new BigInt64Array(buf, off, n); const o = new Float32Array(n); for (let i = 0; i < n; i++) o[i] = Number(a[i]); return o; }
    case "I32": return Float32Array.from(new Int32Array(buf, off, n));
    case "I16": return Float32Array.from(new Int16Array(buf, off, n));
    case "I8": return Float32Array.from(new Int8Array(buf, off, n));
    case "U8": case "BOOL": return Float32Array.from(new Uint8Array(buf, off, n));
  }
}

/** Reads a whole small file's tensors to host arrays (fixtures, tests). */
export async function readAllFloat32(path: string): Promise<Map<string, { shape: number[]; dtype: StDtype; data: Float32Array }>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, { shape: number[]; dtype: StDtype; data: Float32Array }>();
    for (const t of f.tensors.values()) out.set(t.name, { shape: t.shape, dtype: t.dtype, data: await f.readFloat32(t.name) });
    return out;
  } finally {
    await f.close();
  }
}

export interface WriteEntry {
  dtype: StDtype;
  shape: number[];
  data: ArrayBufferView;
}

/** Writes a safetensors file (tests, make-tiny-model). Tensors are laid out in the given order. */
export async function writeSafetensors(path: string, entries: Record<string, WriteEntry>, metadata?: Record<string, string>): Promise<void> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, e] of Object.entries(entries)) {
    const numel = e.shape.reduce((a, b) => a * b, 1);
    const n = numel * DTYPE_SIZE[e.dtype];
    if (e.data.byteLength !== n) throw new SsdError("E_SHAPE", `writeSafetensors: '${name}' has ${e.data.byteLength} bytes, ${e.dtype} ${JSON.stringify(e.shape)} needs ${n}`);
    header[name] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + n] };
    off += n;
  }
  // Pad with spaces so the data section starts 8-byte aligned (counted in bytes, not UTF-16 units).
  const raw = new TextEncoder().encode(JSON.stringify(header));
  const jsonBytes = new Uint8Array(Math.ceil(raw.length / 8) * 8).fill(0x20);
  jsonBytes.set(raw);
  const fh = await open(path, "w");
  try {
    const len = new Uint8Array(8);
    new DataView(len.buffer).setBigUint64(0, BigInt(jsonBytes.length), true);
    let pos = 0;
    const write = async (b: Uint8Array) => { let d = 0; while (d < b.length) { const { bytesWritten } = await fh.write(b, d, b.length - d, pos + d); d += bytesWritten; } pos += b.length; };
    await write(len);
    await write(jsonBytes);
    for (const e of Object.values(entries)) await write(new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength));
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------- file naming

/**
 * How diffusers and transformers name weight files in a model folder:
 *   diffusion_pytorch_model.safetensors, model.fp16.safetensors          (single, variant "fp16")
 *   model-00001-of-00002.safetensors, ...-00001-of-00002.fp16.safetensors (shards)
 *   model.safetensors.index.json, ...safetensors.index.fp16.json          (shard index; older diffusers
 *   wrote ...fp16.safetensors.index.json, also accepted)
 * Only the two library base names count: other .safetensors files in a repo root
 * (e.g. a single-file "SSD-1B.safetensors" for other UIs) are not a component's weights.
 */
export interface WeightFileName {
  base: "diffusion_pytorch_model" | "model";
  kind: "single" | "shard" | "index";
  variant: string | null;
}

const BASES = "(diffusion_pytorch_model|model)";
const RE_INDEX = new RegExp(`^${BASES}(?:\\.(\\w+))?\\.safetensors\\.index(?:\\.(\\w+))?\\.json$`);
const RE_SHARD = new RegExp(`^${BASES}-\\d+-of-\\d+(?:\\.(\\w+))?\\.safetensors$`);
const RE_SINGLE = new RegExp(`^${BASES}(?:\\.(\\w+))?\\.safetensors$`);

/** Classifies a file's base name (no folder); null when it is not a component weight file. */
export function classifyWeightFile(fileName: string): WeightFileName | null {
  let m = RE_INDEX.exec(fileName);
  if (m) {
    if (m[2] && m[3]) return null;
    return { base: m[1] as WeightFileName["base"], kind: "index", variant: m[2] ?? m[3] ?? null };
  }
  m = RE_SHARD.exec(fileName);
  if (m) return { base: m[1] as WeightFileName["base"], kind: "shard", variant: m[2] ?? null };
  m = RE_SINGLE.exec(fileName);
  if (m) return { base: m[1] as WeightFileName["base"], kind: "single", variant: m[2] ?? null };
  return null;
}

/**
 * The variant to use among those present: the preferred one when any file has
 * it, else the plain files, else whatever variant exists (a repo with only fp16
 * files still loads).
 */
export function pickVariant(present: Iterable<string | null>, preferred: string | null): string | null | undefined {
  const set = new Set(present);
  if (set.size === 0) return undefined;
  if (preferred !== null && set.has(preferred)) return preferred;
  if (set.has(null)) return null;
  return [...set].sort()[0];
}
