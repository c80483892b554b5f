// safetensors reader: round trip, every header rule, files over 4 GB, and a
// seeded fuzz of mutated headers and truncated files.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SsdError } from "../engine/errors.ts";
import { floatToHalf } from "../engine/half.ts";
import {
  SafetensorsFile, parseHeader, parseSafetensorsBytes, readAllFloat32, writeSafetensors, classifyWeightFile, MAX_HEADER_BYTES,
  type StDtype,
} from "../weights/safetensors.ts";

const T = suite("safetensors");
const dir = mkdtempSync(join(tmpdir(), "ssd-st-"));
T.after(() => rmSync(dir, { recursive: true, force: true }));

/** A file image from a header value (object or raw JSON text) and a data section. */
function image(header: unknown, data: Uint8Array | number = 0): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const d = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + d.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(d, 8 + json.length);
  return out;
}

function expectHeaderError(fn: () => unknown, ...parts: string[]): SsdError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SsdError, `expected SsdError, got ${e}`);
    assert.is((e as SsdError).code, "E_SAFETENSORS_HEADER", (e as Error).message);
    for (const p of parts) assert.ok((e as Error).message.includes(p), `message '${(e as Error).message}' lacks '${p}'`);
    return e as SsdError;
  }
  assert.unreachable(`no error; expected one mentioning ${parts.join(", ")}`);
  throw new Error();
}

T("round trip of every dtype, with metadata", async () => {
  const p = join(dir, "all.safetensors");
  const f32 = Float32Array.from([1.5, -2, 3.25, 0, 1e-3, 7]);
  const f16 = Uint16Array.from([1, -0.5, 65504, 2 ** -24].map(floatToHalf));
  const bf16 = Uint16Array.from([0x3f80, 0xc000, 0x7f80, 0x0001]); // 1, -2, inf, tiny subnormal
  await writeSafetensors(p, {
    "a.f32": { dtype: "F32", shape: [2, 3], data: f32 },
    "a.f16": { dtype: "F16", shape: [4], data: f16 },
    "a.bf16": { dtype: "BF16", shape: [2, 2], data: bf16 },
    "a.f64": { dtype: "F64", shape: [2], data: Float64Array.from([0.25, -1e10]) },
    "a.i64": { dtype: "I64", shape: [2], data: BigInt64Array.from([5n, -7n]) },
    "a.i32": { dtype: "I32", shape: [1], data: Int32Array.from([-3]) },
    "a.i16": { dtype: "I16", shape: [1], data: Int16Array.from([-300]) },
    "a.i8": { dtype: "I8", shape: [1], data: Int8Array.from([-8]) },
    "a.u8": { dtype: "U8", shape: [1], data: Uint8Array.from([200]) },
    "a.bool": { dtype: "BOOL", shape: [2], data: Uint8Array.from([1, 0]) },
    "a.empty": { dtype: "F32", shape: [0, 3], data: new Float32Array(0) },
    "a.scalar": { dtype: "F32", shape: [], data: Float32Array.from([42]) },
    "ünïcode.名": { dtype: "F32", shape: [1], data: Float32Array.from([9]) },
  }, { format: "pt", note: "ä" });
  const all = await readAllFloat32(p);
  assert.equal([...all.get("a.f32")!.data], [...f32]);
  assert.equal(all.get("a.f32")!.shape, [2, 3]);
  assert.equal([...all.get("a.f16")!.data], [1, -0.5, 65504, 2 ** -24]);
  assert.equal([...all.get("a.bf16")!.data], [1, -2, Infinity, 2 ** -133]);
  assert.equal([...all.get("a.f64")!.data], [0.25, Math.fround(-1e10)]);
  assert.equal([...all.get("a.i64")!.data], [5, -7]);
  assert.equal([...all.get("a.i32")!.data], [-3]);
  assert.equal([...all.get("a.i16")!.data], [-300]);
  assert.equal([...all.get("a.i8")!.data], [-8]);
  assert.equal([...all.get("a.u8")!.data], [200]);
  assert.equal([...all.get("a.bool")!.data], [1, 0]);
  assert.is(all.get("a.empty")!.data.length, 0);
  assert.equal([...all.get("a.scalar")!.data], [42]);
  assert.equal([...all.get("ünïcode.名")!.data], [9]);
  const f = await SafetensorsFile.open(p);
  assert.equal(f.metadata, { format: "pt", note: "ä" });
  // The data section starts 8-byte aligned even with multi-byte UTF-8 in the header.
  assert.is(Math.min(...[...f.tensors.values()].map((t) => t.begin)) % 8, 0);
  // Reads land in the caller's staging buffer when it is large enough.
  const staging = new Uint8Array(1024);
  const got = await f.readBytes("a.f32", staging);
  assert.is(got.buffer, staging.buffer);
  await f.close();
});

T("every header rule is enforced and named", () => {
  const ok = { w: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  const F = "model.safetensors";
  const p = (h: unknown, data: Uint8Array | number = 8) => () => parseSafetensorsBytes(image(h, data), F);
  parseSafetensorsBytes(image(ok, 8), F); // the baseline is valid
  // header length: bound, inside the file, and the file at least 8 bytes long
  const big = new Uint8Array(16);
  new DataView(big.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES) + 1n, true);
  expectHeaderError(() => parseSafetensorsBytes(big, F), F, "exceeds");
  const past = image(ok, 8);
  new DataView(past.buffer).setBigUint64(0, BigInt(past.length), true);
  expectHeaderError(() => parseSafetensorsBytes(past, F), F, "runs past the end");
  expectHeaderError(() => parseSafetensorsBytes(new Uint8Array(5), F), F, "shorter than the 8-byte");
  // UTF-8, JSON, object
  const bad = image(ok, 8);
  bad[10] = 0xff;
  expectHeaderError(() => parseSafetensorsBytes(bad, F), F, "UTF-8");
  expectHeaderError(p('{"w": '), F, "not valid JSON");
  expectHeaderError(p("[1,2]"), F, "not a JSON object");
  // dtype, shape, offsets, size
  expectHeaderError(p({ w: { ...ok.w, dtype: "F8" } }), F, "'w'", "unknown dtype");
  expectHeaderError(p({ w: { ...ok.w, dtype: "constructor" } }), "'w'", "unknown dtype");
  expectHeaderError(p({ w: { ...ok.w, shape: [-2] } }), "'w'", "non-negative integer");
  expectHeaderError(p({ w: { ...ok.w, shape: [2.5] } }), "'w'", "non-negative integer");
  expectHeaderError(p({ w: { ...ok.w, shape: "2" } }), "'w'", "shape is not an array");
  expectHeaderError(p({ w: { ...ok.w, shape: [2 ** 40, 2 ** 40] } }), "'w'", "too many elements");
  expectHeaderError(p({ w: { ...ok.w, data_offsets: [0] } }), "'w'", "data_offsets");
  expectHeaderError(p({ w: { ...ok.w, data_offsets: [8, 0] } }), "'w'", "end before begin");
  expectHeaderError(p({ w: { ...ok.w, data_offsets: [0, 16] } }, 16), "'w'", "needs 8");
  expectHeaderError(p({ w: { ...ok.w, data_offsets: [0, 8] } }, 4), "'w'", "run past the end");
  expectHeaderError(p({ w: { ...ok.w, extra: 1 } }), "'w'", "unexpected field");
  expectHeaderError(p({ w: 5 }), "'w'", "not an object");
  // overlaps, holes, trailing bytes
  expectHeaderError(p({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, 12), "'b'", "overlaps");
  expectHeaderError(p({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] }, b: { dtype: "F32", shape: [1], data_offsets: [8, 12] } }, 12), "'b'", "hole of 4 bytes");
  expectHeaderError(p({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, 8), "'a'", "hole");
  expectHeaderError(p(ok, 12), F, "after the last tensor");
  // metadata: strings only
  expectHeaderError(p({ ...ok, __metadata__: { n: 1 } }), F, "__metadata__ value 'n' is not a string");
  expectHeaderError(p({ ...ok, __metadata__: [] }), F, "__metadata__ is not an object");
  const withProto = parseSafetensorsBytes(image('{"__metadata__": {"__proto__": "x"}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', 8), F);
  assert.is(Object.getOwnPropertyDescriptor(withProto.metadata, "__proto__")?.value, "x");
});

T("offsets beyond 4 GB: header arithmetic and positioned reads of a sparse 5 GB file", async () => {
  const big = 5 * 2 ** 30 + 12;
  // parseHeader alone: offsets as plain numbers, exact past 2^32
  const h = { big: { dtype: "U8", shape: [big], data_offsets: [0, big] }, tail: { dtype: "F32", shape: [3], data_offsets: [big, big + 12] } };
  const json = new TextEncoder().encode(JSON.stringify(h));
  const { tensors } = parseHeader(json, 8 + json.length + big + 12, "big.safetensors");
  assert.is(tensors.get("tail")!.begin, 8 + json.length + big);
  // and on disk: a sparse file (no 5 GB written), the tail read at an offset > 4 GiB
  const p = join(dir, "big.safetensors");
  const fh = await open(p, "w");
  const img = image(h, 0);
  await fh.write(img, 0, img.length, 0);
  const tail = new Uint8Array(Float32Array.from([1, 2, 3]).buffer);
  await fh.write(tail, 0, 12, img.length + big);
  await fh.close();
  const f = await SafetensorsFile.open(p);
  assert.equal([...(await f.readFloat32("tail"))], [1, 2, 3]);
  await f.close();
  rmSync(p);
});

T("files that end early are coded errors, from disk", async () => {
  const p = join(dir, "t.safetensors");
  await writeSafetensors(p, { w: { dtype: "F32", shape: [64], data: new Float32Array(64) } });
  const { readFileSync } = await import("node:fs");
  const whole = readFileSync(p);
  for (const cut of [0, 3, 8, 20, whole.length - 1]) {
    writeFileSync(p, whole.subarray(0, cut));
    await SafetensorsFile.open(p).then(
      () => assert.unreachable(`cut at ${cut} opened`),
      (e) => { assert.ok(e instanceof SsdError && e.code === "E_SAFETENSORS_HEADER", `cut at ${cut}: ${e}`); assert.ok(e.message.includes(p)); },
    );
  }
});

// ---------------------------------------------------------------- fuzz

/** xorshift32: a tiny seeded generator, so a failure reproduces from its case number. */
function xorshift(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s;
  };
  return { next, int: (n: number) => next() % n, pick: <T>(a: readonly T[]) => a[next() % a.length] };
}

function baseFile(): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  const dtypes: StDtype[] = ["F32", "F16", "BF16", "I64", "U8", "F64"];
  const sizes: Record<string, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, U8: 1, F64: 8 };
  let off = 0;
  dtypes.forEach((dt, i) => {
    const shape = [i + 1, 3];
    const n = shape[0] * shape[1] * sizes[dt];
    header[`layer.${i}.weight`] = { dtype: dt, shape, data_offsets: [off, off + n] };
    off += n;
  });
  return image(header, off);
}

const NUMBERS = [-1, 0, 1, 2, 3, 7, 8, 1e308, -1e308, 2 ** 53, 2 ** 32, 2 ** 64, 0.5, NaN];
const TOKENS = ['"', "{", "}", "[", "]", ",", ":", "null", "true", '"F32"', '"dtype"', '"shape"', '"data_offsets"', '"__metadata__"', "\\u0000", "\u00ff", "1e999", "-", "0x10"];

function mutate(base: Uint8Array, r: ReturnType<typeof xorshift>): Uint8Array {
  const hlen = Number(new DataView(base.buffer, base.byteOffset, 8).getBigUint64(0, true));
  const json = new TextDecoder().decode(base.subarray(8, 8 + hlen));
  const data = base.subarray(8 + hlen);
  switch (r.int(7)) {
    case 0: { // flip bytes anywhere (length prefix, header or data)
      const out = base.slice();
      for (let k = 1 + r.int(4); k > 0; k--) out[r.int(Math.min(out.length, 8 + hlen + 4))] ^= 1 << r.int(8);
      return out;
    }
    case 1: { // insert, delete or replace header text with JSON-ish tokens
      let s = json;
      for (let k = 1 + r.int(3); k > 0; k--) {
        const i = r.int(s.length + 1), del = r.int(4);
        s = s.slice(0, i) + (r.int(3) ? r.pick(TOKENS) : "") + s.slice(i + del);
      }
      return image(s, data);
    }
    case 2: { // structural: one field of one entry set to a hostile value
      const h = JSON.parse(json);
      const names = Object.keys(h);
      const name = r.pick(names);
      const e = h[name];
      const v = r.pick<unknown>([r.pick(NUMBERS), -r.int(10), [], [r.pick(NUMBERS)], [r.pick(NUMBERS), r.pick(NUMBERS)], "F32", "X", null, {}, [1, [2]], r.int(100)]);
      if (name === "__metadata__") e[r.pick(["format", "x"])] = v;
      else if (r.int(4) === 0) e[r.pick(["shape", "data_offsets"])][r.int(2)] = v;
      else e[r.pick(["dtype", "shape", "data_offsets", "extra"])] = v;
      return image(JSON.stringify(h, (_k, x) => (typeof x === "number" && !Number.isFinite(x) ? 1e999 : x)).replace(/null/g, () => (r.int(2) ? "null" : "1e999")), data);
    }
    case 3: // truncated anywhere
      return base.slice(0, r.int(base.length));
    case 4: { // length prefix lies (small, large, huge)
      const out = base.slice();
      const v = r.pick([0n, 1n, BigInt(r.int(hlen * 2)), 2n ** 63n, BigInt(MAX_HEADER_BYTES), 2n ** 64n - 1n]);
      new DataView(out.buffer).setBigUint64(0, v, true);
      return out;
    }
    case 5: { // data section grows or shrinks by a few bytes
      const n = Math.max(0, data.length + r.int(17) - 8);
      const d = new Uint8Array(n);
      d.set(data.subarray(0, Math.min(n, data.length)));
      return image(json, d);
    }
    default: { // deep nesting and long strings (stack and allocation)
      const depth = 1 + r.int(20000);
      const s = r.int(2) ? "[".repeat(depth) + "]".repeat(depth) : `{"a":${"[".repeat(depth)}`;
      return image(r.int(2) ? s : `{"${"x".repeat(r.int(1 << 16))}": 1}`, data);
    }
  }
}

T("fuzz: 12000 mutated and truncated files each end in a coded error or a valid parse", () => {
  const base = baseFile();
  parseSafetensorsBytes(base, "base");
  const r = xorshift(0x5eed1234);
  const t0 = Date.now();
  let errors = 0, valid = 0;
  for (let i = 0; i < 12000; i++) {
    const buf = mutate(base, r);
    try {
      const { tensors } = parseSafetensorsBytes(buf, `case${i}`);
      // A mutation that still parses must still describe a consistent file.
      let end = 0;
      const hlen = Number(new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true));
      for (const t of [...tensors.values()].sort((a, b) => a.begin - b.begin)) {
        assert.ok(t.begin >= 8 + hlen && t.end <= buf.length && t.begin >= end, `case ${i}: bad layout accepted`);
        end = t.end;
      }
      valid++;
    } catch (e) {
      if (!(e instanceof SsdError) || e.code !== "E_SAFETENSORS_HEADER") {
        throw new Error(`fuzz case ${i}: uncoded ${e instanceof Error ? e.stack : e}`);
      }
      assert.ok(e.message.includes(`case${i}`), `case ${i}: message does not name the file: ${e.message}`);
      errors++;
    }
  }
  const ms = Date.now() - t0;
  console.log(`  fuzz: ${errors} coded errors, ${valid} still-valid mutations, ${ms} ms`);
  assert.ok(errors > 9000, `only ${errors} mutations were rejected: the mutator is too weak`);
  // generous: a busy CI machine is slow, but a hang or a quadratic blow-up is far slower
  assert.ok(ms < 30_000, `fuzz took ${ms} ms`);
});

T("fuzz through the file reader: 300 mutated files on disk open, read fully or fail coded", async () => {
  const base = baseFile();
  const r = xorshift(77);
  const p = join(dir, "fuzz.safetensors");
  for (let i = 0; i < 300; i++) {
    writeFileSync(p, mutate(base, r));
    try {
      const f = await SafetensorsFile.open(p);
      for (const t of f.tensors.values()) await f.readFloat32(t.name);
      await f.close();
    } catch (e) {
      if (!(e instanceof SsdError) || e.code !== "E_SAFETENSORS_HEADER") throw new Error(`file fuzz case ${i}: uncoded ${e instanceof Error ? e.stack : e}`);
    }
  }
});

T("weight file names: variants, shards and indexes", () => {
  assert.equal(classifyWeightFile("diffusion_pytorch_model.safetensors"), { base: "diffusion_pytorch_model", kind: "single", variant: null });
  assert.equal(classifyWeightFile("diffusion_pytorch_model.fp16.safetensors"), { base: "diffusion_pytorch_model", kind: "single", variant: "fp16" });
  assert.equal(classifyWeightFile("model-00001-of-00002.safetensors"), { base: "model", kind: "shard", variant: null });
  assert.equal(classifyWeightFile("model-00002-of-00002.fp16.safetensors"), { base: "model", kind: "shard", variant: "fp16" });
  assert.equal(classifyWeightFile("model.safetensors.index.json"), { base: "model", kind: "index", variant: null });
  assert.equal(classifyWeightFile("diffusion_pytorch_model.safetensors.index.fp16.json"), { base: "diffusion_pytorch_model", kind: "index", variant: "fp16" });
  assert.equal(classifyWeightFile("model.fp16.safetensors.index.json"), { base: "model", kind: "index", variant: "fp16" });
  assert.is(classifyWeightFile("SSD-1B.safetensors"), null);
  assert.is(classifyWeightFile("pytorch_model.bin"), null);
});

T.run();
