// Downloads against the mock hub on 127.0.0.1 (test/lib/mock_hub.ts): cache
// layout, cache hits without requests, resume, error codes, auth, corruption,
// offline mode. HF_HOME is a temp folder; nothing leaves loopback.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { floatToHalf } from "../engine/half.ts";
import { getEngine } from "../engine/engine.ts";
import { hfHubDownload, selectRepoFiles, snapshotDownload, hfHubCacheDir, type HubOptions } from "../weights/hub.ts";
import { resolveComponent, resolveModel } from "../weights/resolve.ts";
import { WeightStore } from "../weights/store.ts";
import { MockHub, gitBlobSha1, sha256 } from "./lib/mock_hub.ts";
import { expectCode, withEnv } from "./lib/harness.ts";
import { pullCommand } from "../pipeline/commands/pull.ts";

const T = suite("hub");

/** An in-memory safetensors image (the same bytes writeSafetensors would produce). */
function st(entries: Record<string, { dtype: string; shape: number[]; data: ArrayBufferView }>): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [k, e] of Object.entries(entries)) {
    header[k] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + e.data.byteLength] };
    off += e.data.byteLength;
  }
  const raw = new TextEncoder().encode(JSON.stringify(header));
  const json = new Uint8Array(Math.ceil(raw.length / 8) * 8).fill(0x20);
  json.set(raw);
  const out = new Uint8Array(8 + json.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let p = 8 + json.length;
  for (const e of Object.values(entries)) {
    out.set(new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength), p);
    p += e.data.byteLength;
  }
  return out;
}

const N = 50_000; // 200 kB of f32: big enough to cut mid-body
const ramp = Float32Array.from({ length: N }, (_, i) => i * 0.25);
const unetF32 = st({ w: { dtype: "F32", shape: [N], data: ramp } });
const unetF16 = st({ w: { dtype: "F16", shape: [4], data: Uint16Array.from([1, 2, 3, 4].map(floatToHalf)) } });
const shard1 = st({ "a.weight": { dtype: "F32", shape: [2], data: Float32Array.from([1, 2]) } });
const shard2 = st({ "b.weight": { dtype: "F32", shape: [2], data: Float32Array.from([3, 4]) } });
const modelIndex = JSON.stringify({
  _class_name: "StableDiffusionXLPipeline",
  unet: ["diffusers", "UNet2DConditionModel"],
  text_encoder: ["transformers", "CLIPTextModel"],
  scheduler: ["diffusers", "EulerDiscreteScheduler"],
  safety_checker: [null, null],
});

const PIPE = {
  id: "org/pipe",
  files: [
    { path: "model_index.json", data: modelIndex },
    { path: "README.md", data: "# a model" },
    { path: ".gitattributes", data: "*.safetensors filter=lfs" },
    { path: "SSD-1B.safetensors", data: unetF32, lfs: true },
    { path: "unet/config.json", data: '{"sample_size": 8}' },
    { path: "unet/diffusion_pytorch_model.safetensors", data: unetF32, lfs: true },
    { path: "unet/diffusion_pytorch_model.fp16.safetensors", data: unetF16, lfs: true },
    { path: "unet/diffusion_pytorch_model.bin", data: "pickle", lfs: true },
    { path: "text_encoder/config.json", data: "{}" },
    { path: "text_encoder/model.safetensors.index.json", data: JSON.stringify({ weight_map: { "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors" } }) },
    { path: "text_encoder/model-00001-of-00002.safetensors", data: shard1, lfs: true },
    { path: "text_encoder/model-00002-of-00002.safetensors", data: shard2, lfs: true },
    { path: "scheduler/scheduler_config.json", data: '{"lambda_min_clipped": -Infinity}' },
    { path: "safety_checker/config.json", data: "{}" },
  ],
};
const NEEDED = [
  "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/config.json",
  "text_encoder/model.safetensors.index.json", "text_encoder/model-00001-of-00002.safetensors", "text_encoder/model-00002-of-00002.safetensors",
  "scheduler/scheduler_config.json",
].sort();

let hub: MockHub;
let home: string;
const opts = (extra: HubOptions & Record<string, unknown> = {}): any => ({ env: { HF_HOME: home, HF_ENDPOINT: hub.endpoint }, progress: "none", retryDelayMs: 5, ...extra });
const fresh = () => { home = mkdtempSync(join(tmpdir(), "ssd-hf-")); };

T.before(async () => {
  hub = await MockHub.start([
    PIPE,
    { id: "org/single", files: [{ path: "config.json", data: "{}" }, { path: "model.safetensors", data: unetF32, lfs: true }, { path: "pytorch_model.bin", data: "x", lfs: true }] },
    { id: "org/gated", gated: true, files: [{ path: "config.json", data: "{}" }, { path: "model.safetensors", data: unetF16, lfs: true }] },
  ]);
  hub.renamed.set("org/old-name", "org/single");
});
T.after(async () => {
  await hub.close();
});

T("file selection: model_index components, one weight set per folder (fp16 preferred), configs; no .bin, docs or root checkpoints", () => {
  const sib = PIPE.files.map((f) => f.path);
  assert.equal(selectRepoFiles(sib, JSON.parse(modelIndex)).sort(), NEEDED);
  const plain = selectRepoFiles(sib, JSON.parse(modelIndex), { variant: null });
  assert.ok(plain.includes("unet/diffusion_pytorch_model.safetensors") && !plain.includes("unet/diffusion_pytorch_model.fp16.safetensors"));
  assert.equal(selectRepoFiles(sib, JSON.parse(modelIndex), { components: ["scheduler"] }).sort(), ["model_index.json", "scheduler/scheduler_config.json"]);
  assert.equal(selectRepoFiles(["config.json", "model.safetensors", "pytorch_model.bin", "README.md", "x/model.safetensors"], null), ["model.safetensors", "config.json"]);
});

T("cache dir: HF_HUB_CACHE, else HF_HOME/hub, else XDG/~/.cache/huggingface/hub", () => {
  assert.is(hfHubCacheDir({ HF_HUB_CACHE: "/a", HF_HOME: "/b" }), "/a");
  assert.is(hfHubCacheDir({ HF_HOME: "/b" }), join("/b", "hub"));
  assert.is(hfHubCacheDir({ XDG_CACHE_HOME: "/x" }), join("/x", "huggingface", "hub"));
  assert.ok(hfHubCacheDir({}).endsWith(join(".cache", "huggingface", "hub")));
});

T("download a pipeline: only the needed files, huggingface_hub's cache layout; then served from cache with no request", async () => {
  fresh();
  hub.log.length = 0;
  const m = await resolveModel("org/pipe", opts({ env: { HF_HOME: home, HF_ENDPOINT: hub.endpoint, HF_TOKEN: "hf_any" } }));
  assert.is(m.source, "download");
  assert.is(m.kind, "pipeline");
  const commit = hub.commitOf("org/pipe");
  assert.is(m.commit, commit);
  const repo = join(home, "hub", "models--org--pipe");
  assert.is(readFileSync(join(repo, "refs", "main"), "utf8"), commit);
  const snap = join(repo, "snapshots", commit);
  assert.is(m.root, snap);
  const listed: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (lstatSync(p).isDirectory()) walk(p, rel + e + "/");
      else listed.push(rel + e);
    }
  };
  walk(snap, "");
  assert.equal(listed.sort(), NEEDED);
  for (const f of NEEDED) {
    const p = join(snap, f);
    assert.ok(lstatSync(p).isSymbolicLink(), `${f} is a symlink`);
    const etag = hub.etagOf("org/pipe", f);
    assert.is(readlinkSync(p), "../".repeat(f.split("/").length + 1) + "blobs/" + etag);
    const want = PIPE.files.find((x) => x.path === f)!.data;
    assert.equal(new Uint8Array(readFileSync(p)), typeof want === "string" ? new TextEncoder().encode(want) : want);
    assert.is(etag, f.endsWith(".safetensors") ? sha256(readFileSync(p)) : gitBlobSha1(readFileSync(p)));
  }
  assert.ok(!readdirSync(join(repo, "blobs")).some((b) => b.endsWith(".incomplete")));
  // the token goes to the hub, never to the CDN; LFS bytes came through the redirect
  assert.ok(hub.log.filter((r) => r.server === "hub").every((r) => r.auth === "Bearer hf_any"));
  const cdn = hub.log.filter((r) => r.server === "cdn");
  assert.is(cdn.length, 3);
  assert.ok(cdn.every((r) => r.auth === null));
  // the weights load from the snapshot (fp16 variant chosen)
  const store = await WeightStore.open(m.components.unet, { engine: await getEngine() });
  assert.is(store.variant, "fp16");
  assert.equal([...(await store.takeHost("w"))], [1, 2, 3, 4]);
  await store.close();

  const before = hub.log.length;
  const again = await resolveModel("org/pipe", opts());
  assert.is(again.source, "cache");
  assert.is(hub.log.length, before, "a complete cached snapshot needs no request");
  // pull asks for the revision once, and finds every file in place
  await snapshotDownload("org/pipe", opts());
  assert.equal(hub.log.slice(before).map((r) => `${r.method} ${r.path}`), ["GET /api/models/org/pipe/revision/main"]);
  // a file deleted from the snapshot is fetched again on the next resolve (its blob is reused, no CDN GET)
  rmSync(join(snap, "scheduler", "scheduler_config.json"));
  const n0 = hub.log.length;
  assert.is((await resolveModel("org/pipe", opts())).source, "download");
  assert.ok(existsSync(join(snap, "scheduler", "scheduler_config.json")));
  assert.ok(!hub.log.slice(n0).some((r) => r.server === "cdn"));
});

T("one component of a hub pipeline: only its files are fetched", async () => {
  fresh();
  hub.log.length = 0;
  const dir = await resolveComponent("org/pipe", "unet", opts());
  assert.ok(dir.endsWith(join("snapshots", hub.commitOf("org/pipe"), "unet")));
  const got = hub.log.filter((r) => r.method === "HEAD").map((r) => r.path.replace(/^.*\/resolve\/[^/]+\//, "")).sort();
  assert.equal(got, ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"]);
  // asking for another component later fetches just that one
  hub.log.length = 0;
  await resolveComponent("org/pipe", "scheduler", opts());
  assert.equal(hub.log.filter((r) => r.method === "HEAD").map((r) => r.path.split("/resolve/")[1].replace(/^[^/]+\//, "")), ["scheduler/scheduler_config.json"]);
  await expectCode(resolveComponent("org/pipe", "nope", opts()), "E_MODEL_NOT_FOUND", "nope");
});

T("resume: a dropped connection leaves .incomplete; the next run continues with Range", async () => {
  fresh();
  hub.log.length = 0;
  const cut = 70_000;
  hub.cutNext.set("model.safetensors", cut);
  const msg = await expectCode(resolveModel("org/single", opts({ retries: 0 })), "E_DOWNLOAD", "run again to resume", ".incomplete");
  const etag = hub.etagOf("org/single", "model.safetensors");
  const partial = join(home, "hub", "models--org--single", "blobs", etag + ".incomplete");
  const have = statSync(partial).size;
  assert.ok(have > 0 && have <= cut, `partial file has ${have} bytes (${msg})`);
  const m = await resolveModel("org/single", opts());
  assert.is(m.kind, "component");
  const gets = hub.log.filter((r) => r.server === "cdn");
  assert.is(gets.length, 2);
  assert.is(gets[0].range, null);
  assert.is(gets[1].range, `bytes=${have}-`);
  assert.equal(new Uint8Array(readFileSync(join(m.root, "model.safetensors"))), unetF32);
  assert.ok(!existsSync(partial));
});

T("resume within one call: retries continue where the cut left off", async () => {
  fresh();
  hub.log.length = 0;
  hub.cutNext.set("model.safetensors", 120_000);
  const lines: string[] = [];
  const p = await hfHubDownload("org/single", "model.safetensors", opts({ log: (l: string) => lines.push(l), progress: "lines" }));
  assert.equal(new Uint8Array(readFileSync(p)), unetF32);
  const gets = hub.log.filter((r) => r.server === "cdn");
  assert.is(gets.length, 2);
  assert.ok(gets[1].range && /^bytes=\d+-$/.test(gets[1].range) && Number(gets[1].range.slice(6, -1)) > 0);
  assert.ok(lines.some((l) => l.includes("resuming")), lines.join("\n"));
  assert.ok(lines.some((l) => /100% .*B\/s ETA/.test(l)), lines.join("\n"));
});

T("a stalled body is dropped after the timeout and resumed", async () => {
  fresh();
  hub.log.length = 0;
  hub.stallNext.set("model.safetensors", 50_000);
  const lines: string[] = [];
  const t0 = Date.now();
  const p = await hfHubDownload("org/single", "model.safetensors", opts({ timeoutMs: 400, log: (l: string) => lines.push(l) }));
  assert.ok(Date.now() - t0 >= 400);
  assert.equal(new Uint8Array(readFileSync(p)), unetF32);
  const gets = hub.log.filter((r) => r.server === "cdn");
  assert.is(gets.length, 2);
  assert.ok(gets[1].range && Number(gets[1].range.slice(6, -1)) > 0, `second GET resumes: ${gets[1].range}`);
  assert.ok(lines.some((l) => l.includes("stalled")), lines.join("\n"));
});

T("a 503 from the CDN is retried", async () => {
  fresh();
  hub.log.length = 0;
  hub.failNext.set("model.safetensors", 503);
  const p = await hfHubDownload("org/single", "model.safetensors", opts());
  assert.equal(new Uint8Array(readFileSync(p)), unetF32);
  assert.is(hub.log.filter((r) => r.server === "cdn").length, 2);
});

T("404s: unknown repo, revision, file; renamed repo followed through a relative redirect", async () => {
  fresh();
  await expectCode(resolveModel("org/nope", opts()), "E_MODEL_NOT_FOUND", "repository 'org/nope' not found", "HF_TOKEN");
  await expectCode(resolveModel("org/pipe@nope", opts()), "E_MODEL_NOT_FOUND", "revision 'nope' not found");
  await expectCode(hfHubDownload("org/pipe", "unet/missing.json", opts()), "E_MODEL_NOT_FOUND", "file 'unet/missing.json' not found", "org/pipe@main");
  assert.ok(existsSync(join(home, "hub", "models--org--pipe", ".no_exist", hub.commitOf("org/pipe"), "unet", "missing.json")), "absence recorded as huggingface_hub does");
  await expectCode(hfHubDownload("org/pipe", "../../etc/passwd", opts()), "E_DOWNLOAD", "leave the snapshot");
  const p = await hfHubDownload("org/old-name", "config.json", opts());
  assert.ok(p.includes("models--org--old-name") && readFileSync(p, "utf8") === "{}");
  await expectCode(hfHubDownload("org/pipe", "config.json", opts({ endpoint: "http://127.0.0.1:1" })), "E_DOWNLOAD", "cannot reach", "HF_HUB_OFFLINE");
});

T("gated repo: 401 says to set HF_TOKEN, 403 says the token was refused, the right token works", async () => {
  fresh();
  await expectCode(resolveModel("org/gated", opts()), "E_AUTH", "HTTP 401", "set HF_TOKEN");
  await expectCode(resolveModel("org/gated", opts({ token: "hf_wrong" })), "E_AUTH", "HTTP 403", "HF_TOKEN is set but was refused");
  hub.log.length = 0;
  const m = await resolveModel("org/gated", opts({ env: { HF_HOME: home, HF_ENDPOINT: hub.endpoint, HF_TOKEN: hub.token } }));
  assert.is(m.source, "download");
  assert.ok(hub.log.filter((r) => r.server === "cdn").every((r) => r.auth === null));
});

T("corruption: sha256 (LFS) and git sha1 (small files) mismatches are detected and nothing is cached", async () => {
  fresh();
  hub.corrupt.add("model.safetensors");
  try {
    await expectCode(hfHubDownload("org/single", "model.safetensors", opts()), "E_DOWNLOAD", "corrupted", "sha256");
  } finally {
    hub.corrupt.delete("model.safetensors");
  }
  const repo = join(home, "hub", "models--org--single");
  assert.equal(readdirSync(join(repo, "blobs")), []);
  assert.ok(!existsSync(join(repo, "snapshots", hub.commitOf("org/single"), "model.safetensors")));
  hub.corrupt.add("config.json");
  try {
    await expectCode(hfHubDownload("org/single", "config.json", opts()), "E_DOWNLOAD", "git sha1");
  } finally {
    hub.corrupt.delete("config.json");
  }
  // and the next clean download succeeds
  assert.ok(existsSync(await hfHubDownload("org/single", "model.safetensors", opts())));
});

T("offline: HF_HUB_OFFLINE=1 or the option uses the cache only, with no request", async () => {
  fresh();
  hub.log.length = 0;
  await expectCode(resolveModel("org/single", opts({ env: { HF_HOME: home, HF_ENDPOINT: hub.endpoint, HF_HUB_OFFLINE: "1" } })), "E_OFFLINE", "HF_HUB_OFFLINE", "ssd-depth pull org/single");
  await expectCode(hfHubDownload("org/single", "config.json", opts({ offline: true })), "E_OFFLINE", "not in the Hugging Face cache");
  await expectCode(snapshotDownload("org/single", opts({ offline: true })), "E_OFFLINE");
  assert.is(hub.log.length, 0);
  await resolveModel("org/single", opts());
  const n = hub.log.length;
  const m = await resolveModel("org/single", opts({ offline: true }));
  assert.is(m.source, "cache");
  assert.ok(existsSync(await hfHubDownload("org/single", "config.json", opts({ offline: true }))));
  assert.is(hub.log.length, n);
});

T("one writer per blob: concurrent calls share a download; a live lock is waited for, a stale one taken over", async () => {
  fresh();
  hub.log.length = 0;
  const [a, b] = await Promise.all([hfHubDownload("org/single", "model.safetensors", opts()), hfHubDownload("org/single", "model.safetensors", opts())]);
  assert.is(a, b);
  assert.is(hub.log.filter((r) => r.server === "cdn").length, 1);
  fresh();
  const { mkdirSync, writeFileSync } = await import("node:fs");
  const lockIn = () => {
    const locks = join(home, "hub", ".locks", "models--org--single");
    mkdirSync(locks, { recursive: true });
    return join(locks, hub.etagOf("org/single", "model.safetensors") + ".lock");
  };
  let lock = lockIn();
  writeFileSync(lock, ""); // huggingface_hub's filelock leaves empty files behind: stale once old
  const { utimesSync } = await import("node:fs");
  utimesSync(lock, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
  await hfHubDownload("org/single", "model.safetensors", opts());
  assert.ok(!existsSync(lock));
  fresh();
  lock = lockIn();
  writeFileSync(lock, String(process.ppid)); // a live process holds it
  const lines: string[] = [];
  const t0 = Date.now();
  setTimeout(() => rmSync(lock, { force: true }), 600);
  await hfHubDownload("org/single", "model.safetensors", opts({ log: (l: string) => lines.push(l) }));
  assert.ok(Date.now() - t0 >= 500, "waited for the holder");
  assert.ok(lines.some((l) => l.includes(`waiting for process ${process.ppid}`)), lines.join("\n"));
});

T("ssd-depth pull: fetches a revision into the cache from HF_ENDPOINT/HF_HOME", async () => {
  fresh();
  hub.log.length = 0;
  const log = console.log;
  const printed: string[] = [];
  console.log = (...a: unknown[]) => void printed.push(a.join(" "));
  try {
    await withEnv({ HF_HOME: home, HF_ENDPOINT: hub.endpoint, HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined }, () =>
      (pullCommand.handler as any)({ ids: ["org/pipe@main", "org/single"], variant: "none", quiet: true }));
  } finally {
    console.log = log;
  }
  const snap = join(home, "hub", "models--org--pipe", "snapshots", hub.commitOf("org/pipe"));
  assert.ok(existsSync(join(snap, "unet", "diffusion_pytorch_model.safetensors")), "--variant none takes the full-precision file");
  assert.ok(!existsSync(join(snap, "unet", "diffusion_pytorch_model.fp16.safetensors")));
  assert.ok(printed[0].startsWith("org/pipe@main: 8 files at ") && printed[1].startsWith("org/single: 2 files"), printed.join("\n"));
});

T.run();
