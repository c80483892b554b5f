// WeightStore over real files: dtype conversion per precision policy (values read
// back from the GPU), prefix views, shape/missing errors, the missing/unused
// report, sharded indexes, variant choice; and model folder / HF cache resolution.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getEngine } from "../engine/engine.ts";
import { floatToHalf, halfToFloat } from "../engine/half.ts";
import { writeSafetensors } from "../weights/safetensors.ts";
import { WeightStore } from "../weights/store.ts";
import { componentWeightFiles, readConfig, resolveModel, resolveComponent, parseHubId } from "../weights/resolve.ts";
import { expectCode, FIXTURES } from "./lib/harness.ts";

const T = suite("weights_store");
const dir = mkdtempSync(join(tmpdir(), "ssd-ws-"));
T.after(() => rmSync(dir, { recursive: true, force: true }));

/** Deterministic values that are not all exactly representable in f16. */
function values(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(seed * 7.3 + i * 1.7) * (1 + (i % 5));
  return a;
}
const toBf16 = (a: Float32Array) => Uint16Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length), (u) => u >>> 16);
const fromBf16 = (b: Uint16Array) => new Float32Array(Uint32Array.from(b, (u) => u << 16).buffer);

const W32 = values(3 * 4 * 3 * 3, 1);
const B32 = values(3, 2);
const H16 = Uint16Array.from(values(12, 3), floatToHalf);
const BF = toBf16(values(10, 4));

async function writeModel(path: string) {
  await writeSafetensors(path, {
    "down_blocks.0.resnets.1.conv1.weight": { dtype: "F32", shape: [3, 4, 3, 3], data: W32 },
    "down_blocks.0.resnets.1.conv1.bias": { dtype: "F32", shape: [3], data: B32 },
    "down_blocks.0.resnets.1.norm1.weight": { dtype: "F16", shape: [3, 4], data: H16 },
    "time_embedding.linear_1.weight": { dtype: "BF16", shape: [2, 5], data: BF },
    "extra.unused": { dtype: "F32", shape: [1], data: Float32Array.from([1]) },
    "position_ids": { dtype: "I64", shape: [1, 3], data: BigInt64Array.from([0n, 1n, 2n]) },
  });
}

T("take: F32/F16/BF16 under the default policy, values equal the file's after GPU readback", async () => {
  const engine = await getEngine();
  const p = join(dir, "m.safetensors");
  await writeModel(p);
  const store = await WeightStore.open(p, { engine, label: "unet" });
  const blk = store.sub("down_blocks.0").sub("resnets.1");
  assert.ok(blk.has("conv1.weight") && !blk.has("conv2.weight"));
  assert.equal(blk.shape("conv1.weight"), [3, 4, 3, 3]);
  const w = await blk.take("conv1.weight", [3, 4, 3, 3]);
  assert.is(w.dtype, "f32");
  assert.equal(w.shape, [3, 4, 3, 3]);
  assert.equal([...(await w.read())], [...W32]);
  const n = await blk.take("norm1.weight", [3, -1]);
  assert.is(n.dtype, "f16", "F16 stays f16 by default");
  assert.equal([...(await n.read())], [...H16].map(halfToFloat));
  const t = await store.take("time_embedding.linear_1.weight", [2, 5]);
  assert.is(t.dtype, "f32", "BF16 widens to f32");
  assert.equal([...(await t.read())], [...fromBf16(BF)]);
  const host = await blk.takeHost("conv1.bias", [3]);
  assert.equal([...host], [...B32]);
  const ids = await store.takeHost("position_ids");
  assert.equal([...ids], [0, 1, 2]);
  const r = store.report();
  assert.equal(r.missing, []);
  assert.equal(r.unused, ["extra.unused"]);
  let warned = "";
  const fin = await store.finish({ warn: (m) => (warned = m) });
  assert.ok(warned.includes("extra.unused") && warned.includes("unet"), warned);
  assert.is(fin.taken, 5);
  for (const x of [w, n, t]) x.dispose();
});

T("precision policy: f32 weights widen F16; f16 weights narrow F32", async () => {
  const engine = await getEngine();
  const p = join(dir, "m2.safetensors");
  await writeModel(p);
  let store = await WeightStore.open(p, { engine, precision: { activations: "f32", weights: "f32" } });
  const n = await store.take("down_blocks.0.resnets.1.norm1.weight");
  assert.is(n.dtype, "f32");
  assert.equal([...(await n.read())], [...H16].map(halfToFloat));
  await store.close();
  store = await WeightStore.open(p, { engine, precision: { activations: "f16", weights: "f16" } });
  const w = await store.take("down_blocks.0.resnets.1.conv1.weight");
  assert.is(w.dtype, "f16");
  assert.equal([...(await w.read())], [...W32].map((v) => halfToFloat(floatToHalf(v))));
  const b = await store.take("time_embedding.linear_1.weight");
  assert.is(b.dtype, "f16");
  assert.equal([...(await b.read())], [...fromBf16(BF)].map((v) => halfToFloat(floatToHalf(v))));
  await store.close();
  for (const x of [n, w, b]) x.dispose();
});

T("errors: E_SHAPE names the full key and both shapes; E_MISSING_WEIGHT names the key and is reported", async () => {
  const engine = await getEngine();
  const p = join(dir, "m3.safetensors");
  await writeModel(p);
  const store = await WeightStore.open(p, { engine, label: "unet" });
  const blk = store.sub("down_blocks.0.resnets.1");
  await expectCode(blk.take("conv1.weight", [3, 4, 1, 1]), "E_SHAPE", "down_blocks.0.resnets.1.conv1.weight", "[3, 4, 3, 3]", "[3, 4, 1, 1]", p);
  await expectCode(blk.take("conv1.weight", [3, 4, 3]), "E_SHAPE", "[3, 4, 3]");
  await expectCode(blk.take("conv2.weight", [3]), "E_MISSING_WEIGHT", "'down_blocks.0.resnets.1.conv2.weight'", "unet", "conv1.weight");
  assert.is(await blk.optional("conv_shortcut.weight"), null);
  store.skip("extra.");
  store.skip("position_ids");
  const r = store.report();
  assert.equal(r.missing, ["down_blocks.0.resnets.1.conv2.weight"]);
  assert.ok(!r.unused.includes("extra.unused") && !r.unused.includes("position_ids"));
  assert.ok(r.unused.includes("down_blocks.0.resnets.1.conv1.weight"), "a take that failed on shape does not count as used");
  await expectCode(store.finish({ warn: () => {} }), "E_MISSING_WEIGHT", "1 weight(s) missing", "conv2.weight");
});

T("sharded checkpoint via *.safetensors.index.json, and a lying index", async () => {
  const engine = await getEngine();
  const d = join(dir, "sharded");
  mkdirSync(d);
  await writeSafetensors(join(d, "model-00001-of-00002.safetensors"), { "a.weight": { dtype: "F32", shape: [2], data: Float32Array.from([1, 2]) } });
  await writeSafetensors(join(d, "model-00002-of-00002.safetensors"), { "b.weight": { dtype: "F16", shape: [2], data: Uint16Array.from([1, 3].map(floatToHalf)) } });
  writeFileSync(join(d, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 12 }, weight_map: { "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors" } }));
  const store = await WeightStore.open(d, { engine });
  assert.equal(store.keys().sort(), ["a.weight", "b.weight"]);
  assert.equal([...(await store.takeHost("a.weight"))], [1, 2]);
  assert.equal([...(await (await store.take("b.weight")).read())], [1, 3]);
  await store.finish();
  // the index itself can be named
  const s2 = await WeightStore.open(join(d, "model.safetensors.index.json"), { engine });
  assert.is(s2.files.length, 2);
  await s2.close();
  // an index that maps a name to the wrong shard
  writeFileSync(join(d, "model.safetensors.index.json"), JSON.stringify({ weight_map: { "a.weight": "model-00002-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors" } }));
  await expectCode(WeightStore.open(d, { engine }), "E_MISSING_WEIGHT", "'a.weight'", "model-00002-of-00002.safetensors");
  writeFileSync(join(d, "model.safetensors.index.json"), JSON.stringify({ weight_map: { "a.weight": "../escape.safetensors" } }));
  await expectCode(WeightStore.open(d, { engine }), "E_SAFETENSORS_HEADER", "not a shard file");
  writeFileSync(join(d, "model.safetensors.index.json"), JSON.stringify({ weight_map: { "a.weight": "model-00003-of-00003.safetensors" } }));
  await expectCode(WeightStore.open(d, { engine }), "E_MODEL_NOT_FOUND", "model-00003-of-00003.safetensors");
});

T("variants: fp16 preferred by default, plain under f32 weights or variant null, fp16 when only it exists", async () => {
  const engine = await getEngine();
  const d = join(dir, "unet");
  mkdirSync(d);
  writeFileSync(join(d, "config.json"), "{}");
  await writeSafetensors(join(d, "diffusion_pytorch_model.safetensors"), { w: { dtype: "F32", shape: [1], data: Float32Array.from([0.1]) } });
  await writeSafetensors(join(d, "diffusion_pytorch_model.fp16.safetensors"), { w: { dtype: "F16", shape: [1], data: Uint16Array.from([floatToHalf(0.1)]) } });
  let s = await WeightStore.open(d, { engine });
  assert.is(s.variant, "fp16");
  assert.is((await s.take("w")).dtype, "f16");
  await s.close();
  s = await WeightStore.open(d, { engine, variant: null });
  assert.is(s.variant, null);
  assert.equal([...(await s.takeHost("w"))], [Math.fround(0.1)]);
  await s.close();
  s = await WeightStore.open(d, { engine, precision: { activations: "f32", weights: "f32" } });
  assert.is(s.variant, null, "f32 weights read the full-precision file");
  await s.close();
  rmSync(join(d, "diffusion_pytorch_model.safetensors"));
  assert.is((await componentWeightFiles(d, null)).variant, "fp16");
  rmSync(join(d, "diffusion_pytorch_model.fp16.safetensors"));
  writeFileSync(join(d, "diffusion_pytorch_model.bin"), "x");
  await expectCode(componentWeightFiles(d, "fp16"), "E_MODEL_NOT_FOUND", "diffusion_pytorch_model.bin", "convert to safetensors");
});

T("configs with NaN and -Infinity; resolution of pipeline folders, component folders and cached hub ids", async () => {
  const cfg = join(dir, "scheduler_config.json");
  writeFileSync(cfg, '{"lambda_min_clipped": -Infinity, "x": NaN, "beta_end": 0.012}');
  const c = await readConfig(cfg);
  assert.is(c.lambda_min_clipped, -Infinity);
  assert.ok(Number.isNaN(c.x as number));

  const pipe = join(FIXTURES, "e2e-ssd1b-depth-tiny");
  const m = await resolveModel(pipe, { offline: true });
  assert.is(m.kind, "pipeline");
  assert.is(m.source, "local");
  assert.is(m.components.unet, join(pipe, "unet"));
  assert.ok("text_encoder_2" in m.components && "scheduler" in m.components);
  assert.is(await resolveComponent(pipe, "vae", { offline: true }), join(pipe, "vae"));
  const comp = await resolveModel(join(pipe, "controlnet"));
  assert.is(comp.kind, "component");
  assert.equal(Object.values(comp.components), [join(pipe, "controlnet")]);
  await expectCode(resolveModel(join(pipe, "inputs")), "E_MODEL_NOT_FOUND", "not a usable model folder");
  await expectCode(resolveModel("./no/such/folder"), "E_MODEL_NOT_FOUND", "neither a folder nor a hub id");

  // a hub id already in the cache (as huggingface_hub lays it out), offline: no network involved
  assert.equal(parseHubId("org/name@v1.0"), { repoId: "org/name", revision: "v1.0" });
  const cache = join(dir, "hub");
  const commit = "0123456789abcdef0123456789abcdef01234567";
  const repo = join(cache, "models--org--tiny");
  mkdirSync(join(repo, "refs"), { recursive: true });
  writeFileSync(join(repo, "refs", "main"), commit);
  mkdirSync(join(repo, "blobs"));
  mkdirSync(join(repo, "snapshots", commit, "unet"), { recursive: true });
  await writeSafetensors(join(repo, "blobs", "aa"), { w: { dtype: "F32", shape: [1], data: Float32Array.from([5]) } });
  writeFileSync(join(repo, "blobs", "bb"), "{}");
  writeFileSync(join(repo, "blobs", "cc"), JSON.stringify({ unet: ["diffusers", "UNet2DConditionModel"], vae: [null, null] }));
  symlinkSync("../../../blobs/aa", join(repo, "snapshots", commit, "unet", "diffusion_pytorch_model.safetensors"));
  symlinkSync("../../../blobs/bb", join(repo, "snapshots", commit, "unet", "config.json"));
  symlinkSync("../../blobs/cc", join(repo, "snapshots", commit, "model_index.json"));
  const env = { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" };
  const h = await resolveModel("org/tiny", { env });
  assert.is(h.source, "cache");
  assert.is(h.commit, commit);
  assert.equal(Object.keys(h.components), ["unet"]);
  const st = await WeightStore.open(h.components.unet, { engine: await getEngine() });
  assert.equal([...(await st.takeHost("w"))], [5]);
  await st.close();
  const byCommit = await resolveModel(`org/tiny@${commit}`, { env });
  assert.is(byCommit.root, h.root);
  await expectCode(resolveModel("org/tiny@v2", { env }), "E_OFFLINE", "HF_HUB_OFFLINE", "ssd-depth pull org/tiny@v2");
  await expectCode(resolveModel("org/other", { env: { HF_HOME: dir }, offline: true }), "E_OFFLINE", join(dir, "hub"));
  // a snapshot that lacks the weights is incomplete, not silently used
  rmSync(join(repo, "snapshots", commit, "unet", "diffusion_pytorch_model.safetensors"));
  await expectCode(resolveModel("org/tiny", { env }), "E_OFFLINE", "unet/ weights");
});

T.run();
