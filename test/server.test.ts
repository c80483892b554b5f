// `ssd-depth serve` over real HTTP on loopback, started by the test through the
// CLI on a free port, on the tiny model folder `make-tiny-model` writes.
//   A: models loaded at start, queue 2, API key from SSD_DEPTH_API_KEY, remote images on
//   B: --lazy, --api-key flag, 1 MB body limit, remote images off; ends with SIGTERM
//   C: --lazy on a model folder that does not exist: every job fails, the server stays up
// Every generation runs 1 step (2 for one batch) at 64×64: the point is the
// protocol, the queue and the lifecycle, not the pictures (test/cli.test.ts and
// the e2e fixture check those).

import { suite } from "uvu";
import { join } from "node:path";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer, type Server } from "node:http";
import { FIXTURES } from "./lib/harness.ts";
import { startServer, rawRequest, parseRaw, type ServerProcess } from "./lib/server.ts";
import { makeTinyModel } from "../scripts/make-tiny-model.ts";
import { decodeImage, encodePng } from "../pipeline/image.ts";

const t = suite("server");
const work = mkdtempSync(join(tmpdir(), "ssd-serve-"));
const model = join(work, "tiny");
const png = readFileSync(join(FIXTURES, "e2e-ssd1b-depth-tiny", "inputs", "image.png"));
const b64 = png.toString("base64");
const KEY = "test-key-A";
const KEY_B = "test-key-B";
let A: ServerProcess, B: ServerProcess, C: ServerProcess;
let remote: Server, remoteUrl = "";

// A local image host for --allow-remote-images (loopback only)
function startRemote(): Promise<void> {
  remote = createServer((req, res) => {
    if (req.url === "/ok.png") { res.writeHead(200, { "Content-Type": "image/png" }); res.end(png); }
    else if (req.url === "/text") { res.writeHead(200, { "Content-Type": "text/plain" }); res.end("not an image at all"); }
    else if (req.url === "/big") { res.writeHead(200, { "Content-Type": "image/png", "Content-Length": String(25_000_000) }); res.write(png); /* never finishes */ }
    else if (req.url === "/slow") { /* never answers */ }
    else { res.writeHead(404); res.end(); }
  });
  return new Promise((r) => remote.listen(0, "127.0.0.1", () => { remoteUrl = `http://127.0.0.1:${(remote.address() as any).port}`; r(); }));
}

t.before(async () => {
  try {
    await setup();
  } catch (e: any) {
    console.log(`  server setup failed: ${e?.message ?? e}`); // uvu counts the tests as failed without saying why
    throw e;
  }
});

async function setup(): Promise<void> {
  await makeTinyModel(model);
  await startRemote();
  [A, B, C] = await Promise.all([
    startServer(["--model", model, "--offline", "--port", "0", "--queue", "2", "--allow-remote-images", "--remote-timeout", "2", "--client-timeout", "3"], { env: { SSD_DEPTH_API_KEY: KEY } }),
    startServer(["--model", model, "--offline", "--port", "0", "--lazy", "--api-key", KEY_B, "--max-body-mb", "1"], { env: { SSD_DEPTH_API_KEY: undefined } }),
    startServer(["--model", join(work, "no-such-model"), "--offline", "--port", "0", "--lazy"], { env: { SSD_DEPTH_API_KEY: undefined } }),
  ]);
}

t.after(() => {
  A?.kill();
  B?.kill();
  C?.kill();
  (remote as any)?.closeAllConnections?.();
  remote?.close();
});

function api(s: ServerProcess, path: string, init: RequestInit & { key?: string | null } = {}): Promise<Response> {
  const key = init.key === undefined ? (s === A ? KEY : s === B ? KEY_B : null) : init.key;
  const headers: Record<string, string> = { "content-type": "application/json", ...(init.headers as Record<string, string> ?? {}) };
  if (key) headers["x-api-key"] = key;
  return fetch(s.url + path, { ...init, headers });
}

const post = (s: ServerProcess, path: string, body: unknown, key?: string | null) =>
  api(s, path, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body), key });

/** A coded JSON error with this status; never a stack trace. */
async function expectError(r: Response, status: number, code: string, needle?: RegExp): Promise<any> {
  const text = await r.text();
  if (r.status !== status) throw new Error(`expected ${status} ${code}, got ${r.status}: ${text.slice(0, 400)}`);
  if (!/application\/json/.test(r.headers.get("content-type") ?? "")) throw new Error(`error is not JSON: ${r.headers.get("content-type")}`);
  const j = JSON.parse(text);
  if (j.code !== code || typeof j.message !== "string" || !j.message) throw new Error(`expected code ${code}, got ${text}`);
  if (/\n\s+at .+:\d+:\d+/.test(text) || /\.ts:\d+/.test(text)) throw new Error(`stack trace sent to the client: ${text}`);
  if (needle && !needle.test(j.message)) throw new Error(`message does not say ${needle}: ${j.message}`);
  return j;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function poll(s: ServerProcess, id: string, until: (j: any) => boolean, ms = 120_000): Promise<any> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await api(s, `/v2/jobs/${id}`);
    const j = await r.json();
    if (r.status !== 200) throw new Error(`GET job ${id}: ${r.status} ${JSON.stringify(j)}`);
    if (until(j)) return j;
    if (Date.now() > end) throw new Error(`job ${id} stuck: ${JSON.stringify(j).slice(0, 300)}`);
    await sleep(100);
  }
}

const job = (extra: Record<string, unknown> = {}) => ({ prompt: "a small house", image: b64, num_inference_steps: 1, ...extra });

t("GET / and GET /health describe the server", async () => {
  const root = await api(A, "/");
  const d = await root.json();
  if (root.status !== 200 || !d.endpoints?.["POST /v1/ssd-depth"] || !d.endpoints?.["GET /v2/jobs/:id"]) throw new Error(`GET /: ${JSON.stringify(d)}`);
  const h = await (await api(A, "/health")).json();
  if (h.status !== "ok" || !h.adapter?.name || h.models?.loaded !== true || h.queue?.length !== 0 || h.queue?.capacity !== 2) throw new Error(`health: ${JSON.stringify(h)}`);
  const hb = await (await api(B, "/health")).json();
  if (hb.models?.loaded !== false || hb.models?.lazy !== true) throw new Error(`lazy server loaded its models at start: ${JSON.stringify(hb)}`);
});

t("API key: from SSD_DEPTH_API_KEY and from --api-key; missing or wrong → 401; foreign Host or Origin → 403", async () => {
  await expectError(await api(A, "/health", { key: null }), 401, "E_AUTH", /x-api-key/);
  await expectError(await post(A, "/v1/ssd-depth", job(), "wrong"), 401, "E_AUTH", /does not match/);
  await expectError(await api(B, "/health", { key: KEY }), 401, "E_AUTH");
  await expectError(await api(B, "/", { key: null }), 401, "E_AUTH");
  if ((await api(B, "/health")).status !== 200) throw new Error("the right key is refused");
  // loopback servers refuse other Host names (DNS rebinding) and web pages of other sites
  const get = (headers: string) => rawRequest(A.url, [`GET /health HTTP/1.1\r\n${headers}x-api-key: ${KEY}\r\nConnection: close\r\n\r\n`]).then((r) => parseRaw(r.text));
  for (const h of ["Host: evil.example:7860\r\n", "Host: 127.0.0.1\r\nOrigin: https://evil.example\r\n", "Host: 127.0.0.1\r\nOrigin: null\r\n"]) {
    const r = await get(h);
    if (r.status !== 403 || r.body?.code !== "E_FORBIDDEN") throw new Error(`${JSON.stringify(h)}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  for (const h of ["Host: localhost:7860\r\n", "Host: 127.0.0.1\r\nOrigin: http://localhost:3000\r\n"]) {
    const r = await get(h);
    if (r.status !== 200) throw new Error(`${JSON.stringify(h)} refused: ${r.status} ${JSON.stringify(r.body)}`);
  }
});

t("POST /v1 with base64 false: image/png; a seed above 2^64/2 read exactly from the JSON text", async () => {
  // JSON.parse would make this 12345678901234567000; Segmind-style field names throughout
  const body = `{"prompt": "a red barn", "negative_prompt": "blurry", "image": "${b64}", "samples": 1, "scheduler": "DPM++ 2M Karras",
    "num_inference_steps": 1, "guidance_scale": 5, "seed": 12345678901234567891, "strength": 1, "controlnet_scale": 0.6, "base64": false}`;
  const r = await post(A, "/v1/ssd-depth", body);
  if (r.status !== 200) throw new Error(`${r.status}: ${await r.text()}`);
  if (r.headers.get("content-type") !== "image/png") throw new Error(`content-type ${r.headers.get("content-type")}`);
  if (r.headers.get("x-seed") !== "12345678901234567891") throw new Error(`X-Seed ${r.headers.get("x-seed")}`);
  const bytes = new Uint8Array(await r.arrayBuffer());
  const img = decodeImage(bytes, "answer");
  if (img.width !== 64 || img.height !== 64) throw new Error(`image is ${img.width}x${img.height}`);
  const text = Buffer.from(bytes).toString("latin1");
  if (!text.includes("Seed: 12345678901234567891") || !text.includes("Negative prompt: blurry")) throw new Error("the PNG's parameters chunk lacks the seed or negative prompt");
});

t("POST /v1 with base64 true: JSON with every sample; seed -1 → a random seed, returned; data URL accepted", async () => {
  const r = await post(A, "/v1/ssd-depth", job({ image: `data:image/png;base64,${b64}`, samples: 2, seed: -1, base64: true, unknown_field: 1 }));
  const text = await r.text();
  if (r.status !== 200) throw new Error(`${r.status}: ${text.slice(0, 400)}`);
  const j = JSON.parse(text);
  if (!Array.isArray(j.images) || j.images.length !== 2 || j.image !== j.images[0]) throw new Error(`images: ${Object.keys(j)}`);
  const [a, b] = j.images.map((s: string) => decodeImage(Buffer.from(s, "base64"), "image"));
  if (a.width !== 64 || Buffer.from(a.data).equals(Buffer.from(b.data))) throw new Error("samples are missing or identical");
  if (!Number.isInteger(j.seed) || j.seed < 0 || j.seed >= 2 ** 32) throw new Error(`random seed ${j.seed}`);
  if (r.headers.get("x-seed") !== null && r.headers.get("x-seed") !== String(j.seed)) throw new Error("X-Seed and seed differ");
  if (!j.warnings?.some((w: string) => w.includes("unknown_field"))) throw new Error(`an unknown field is not reported: ${JSON.stringify(j.warnings)}`);
  if (decodeImage(Buffer.from(j.depth_image, "base64"), "depth").width !== 64) throw new Error("no depth image");
});

t("bad input → 400 {code, message}; body limit → 413; unknown path 404, wrong method 405", async () => {
  const v1 = "/v1/ssd-depth";
  await expectError(await post(A, v1, "{\"prompt\": \"x\", "), 400, "E_BAD_PARAM", /invalid JSON/);
  await expectError(await post(A, v1, ""), 400, "E_BAD_PARAM", /empty/);
  await expectError(await post(A, v1, { image: b64 }), 400, "E_BAD_PARAM", /prompt/);
  await expectError(await post(A, v1, { prompt: "x" }), 400, "E_BAD_PARAM", /image/);
  await expectError(await post(A, v1, job({ image: "not base64!!" })), 400, "E_BAD_IMAGE", /base64/);
  await expectError(await post(A, v1, job({ image: Buffer.from("hello, not an image").toString("base64") })), 400, "E_BAD_IMAGE", /PNG or JPEG/);
  await expectError(await post(A, v1, job({ image: "data:image/png,abc" })), 400, "E_BAD_IMAGE", /base64/);
  await expectError(await post(A, v1, job({ num_inference_steps: 0 })), 400, "E_BAD_PARAM", /num_inference_steps/);
  await expectError(await post(A, v1, job({ guidance_scale: 500 })), 400, "E_BAD_PARAM", /guidance/);
  await expectError(await post(A, v1, job({ strength: 1.5 })), 400, "E_BAD_PARAM", /strength/);
  await expectError(await post(A, v1, job({ samples: 5 })), 400, "E_BAD_PARAM", /1 to 4/);
  await expectError(await post(A, v1, job({ samples: 2, base64: false })), 400, "E_BAD_PARAM", /base64/);
  await expectError(await post(A, v1, job({ width: 100, height: 64 })), 400, "E_BAD_PARAM", /multiple of 8/);
  await expectError(await post(A, v1, job({ seed: 1.5 })), 400, "E_BAD_PARAM", /seed/);
  // numbers as strings are refused with the fix in the message (seeds as text are read exactly)
  await expectError(await post(A, v1, job({ num_inference_steps: "30" })), 400, "E_BAD_PARAM", /without quotes/);
  await expectError(await post(A, v1, job({ base64: "true" })), 400, "E_BAD_PARAM", /true or false/);
  const heun = await expectError(await post(A, v1, job({ scheduler: "Heun" })), 400, "E_BAD_PARAM", /Supported/);
  if (!/DPM\+\+ 2M Karras/.test(heun.message) || !/euler_a/.test(heun.message)) throw new Error(`supported names not listed: ${heun.message}`);
  // too many pixels: a 4200×4200 gray PNG is small on the wire but over 16 MP
  const huge = encodePng({ width: 4200, height: 4200, channels: 1, data: new Uint8Array(4200 * 4200) });
  await expectError(await post(A, v1, job({ image: Buffer.from(huge).toString("base64") })), 400, "E_BAD_IMAGE", /megapixels/);
  // remote URLs are off unless the server allows them
  await expectError(await post(B, v1, job({ image: `${remoteUrl}/ok.png` })), 400, "E_BAD_PARAM", /allow-remote-images/);
  await expectError(await api(A, "/v3/nothing"), 404, "E_NOT_FOUND");
  await expectError(await api(A, "/v1/ssd-depth"), 405, "E_METHOD");
  await expectError(await api(A, "/v2/jobs/no-such-job"), 404, "E_NOT_FOUND");
  // over the body limit: declared (20 MB on A), and streamed without a length (1 MB on B)
  const declared = parseRaw((await rawRequest(A.url, [`POST /v1/ssd-depth HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: ${KEY}\r\nContent-Type: application/json\r\nContent-Length: 21000000\r\n\r\n{"prompt":"`])).text);
  if (declared.status !== 413 || declared.body?.code !== "E_TOO_LARGE") throw new Error(`declared 21 MB body: ${declared.status} ${JSON.stringify(declared.body)}`);
  const chunk = Buffer.alloc(300_000, 0x61);
  const chunked = [`POST /v1/ssd-depth HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: ${KEY_B}\r\nTransfer-Encoding: chunked\r\n\r\n`, ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]))];
  const streamed = parseRaw((await rawRequest(B.url, chunked)).text);
  if (streamed.status !== 413 || streamed.body?.code !== "E_TOO_LARGE") throw new Error(`1.5 MB streamed body: ${streamed.status} ${JSON.stringify(streamed.body)}`);
  // both servers are still up
  if ((await api(A, "/health")).status !== 200 || (await api(B, "/health")).status !== 200) throw new Error("a server went down");
});

t("slow client: a body that stalls gets 408 after the client timeout", async () => {
  const head = `POST /v1/ssd-depth HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: ${KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt": "x"`;
  const { text, ms } = await rawRequest(A.url, [head], { waitMs: 15_000 });
  const r = parseRaw(text);
  if (r.status !== 408 || r.body?.code !== "E_TIMEOUT") throw new Error(`stalled body: ${r.status} ${text.slice(0, 300)}`);
  if (ms < 2500 || ms > 12_000) throw new Error(`timed out after ${ms} ms; the client timeout is 3 s`);
});

t("remote images (--allow-remote-images): fetched with size and time limits", async () => {
  const v1 = "/v1/ssd-depth";
  await expectError(await post(A, v1, job({ image: `${remoteUrl}/text` })), 400, "E_BAD_IMAGE", /PNG or JPEG/);
  await expectError(await post(A, v1, job({ image: `${remoteUrl}/missing` })), 400, "E_BAD_IMAGE", /404/);
  await expectError(await post(A, v1, job({ image: `${remoteUrl}/big` })), 400, "E_BAD_IMAGE", /limit/);
  const t0 = Date.now();
  await expectError(await post(A, v1, job({ image: `${remoteUrl}/slow` })), 400, "E_BAD_IMAGE", /within 2 s/);
  if (Date.now() - t0 > 8000) throw new Error("the remote time limit was not kept");
  const r = await post(A, v1, job({ image: `${remoteUrl}/ok.png`, seed: 7 }));
  if (r.status !== 200 || r.headers.get("content-type") !== "image/png") throw new Error(`remote image: ${r.status} ${await r.text()}`);
});

t("v2: job id, progress, queue full → 429 with Retry-After, cancel queued and running, results", async () => {
  const submit = async (extra: Record<string, unknown>) => {
    const r = await post(A, "/v2/ssd-depth", job(extra));
    const j = await r.json();
    if (r.status !== 202 || typeof j.id !== "string") throw new Error(`submit: ${r.status} ${JSON.stringify(j)}`);
    return j;
  };
  const long = await submit({ num_inference_steps: 12, seed: 1 });
  const short = await submit({ seed: "12345678901234567891" }); // a seed as text: accepted, exact
  const third = await submit({ seed: 3 });
  if (third.status !== "queued" || third.queue_position !== 2) throw new Error(`third job: ${JSON.stringify(third)}`);
  // running + 2 queued = full: the async and the sync endpoint both answer 429
  for (const path of ["/v2/ssd-depth", "/v1/ssd-depth"]) {
    const r = await post(A, path, job());
    await expectError(r, 429, "E_QUEUE_FULL");
    if (!/^\d+$/.test(r.headers.get("retry-after") ?? "") || Number(r.headers.get("retry-after")) < 1) throw new Error(`Retry-After: ${r.headers.get("retry-after")}`);
  }
  const h = await (await api(A, "/health")).json();
  if (h.queue.length !== 2 || h.queue.running?.id !== long.id) throw new Error(`health while busy: ${JSON.stringify(h.queue)}`);
  // cancel a queued job: at once
  const c3 = await (await api(A, `/v2/jobs/${third.id}`, { method: "DELETE" })).json();
  if (c3.status !== "cancelled") throw new Error(`cancel queued: ${JSON.stringify(c3)}`);
  // cancel the running one between steps, once it has made progress
  const running = await poll(A, long.id, (j) => j.status === "running" && j.progress.step >= 1);
  if (running.progress.steps !== 12) throw new Error(`progress: ${JSON.stringify(running.progress)}`);
  const del = await (await api(A, `/v2/jobs/${long.id}`, { method: "DELETE" })).json();
  if (!["cancelling", "cancelled"].includes(del.status)) throw new Error(`cancel running: ${JSON.stringify(del)}`);
  const gone = await poll(A, long.id, (j) => !["running", "cancelling", "queued"].includes(j.status));
  if (gone.status !== "cancelled" || gone.error?.code !== "E_CANCELLED" || gone.progress.step >= 12) throw new Error(`cancelled job: ${JSON.stringify(gone)}`);
  // the next job runs as if nothing happened
  const done = await poll(A, short.id, (j) => j.status !== "queued" && j.status !== "running");
  if (done.status !== "succeeded" || done.progress.step !== 1) throw new Error(`job: ${JSON.stringify(done).slice(0, 400)}`);
  // JSON.parse would round the exact integer the server wrote: read the raw text
  const raw = await (await api(A, `/v2/jobs/${short.id}`)).text();
  if (!raw.includes("\"seed\":12345678901234567891")) throw new Error(`seed not exact in ${raw.slice(0, 300)}`);
  if (decodeImage(Buffer.from(done.result.images[0], "base64"), "r").width !== 64) throw new Error("result image");
  const img = await api(A, `/v2/jobs/${short.id}/images/0`);
  if (img.status !== 200 || img.headers.get("content-type") !== "image/png") throw new Error(`image url: ${img.status}`);
  await img.arrayBuffer();
  await expectError(await api(A, `/v2/jobs/${short.id}/images/3`), 404, "E_NOT_FOUND");
  await expectError(await api(A, `/v2/jobs/${third.id}/images/0`), 409, "E_NOT_READY");
  // DELETE on a finished job forgets it
  const forget = await (await api(A, `/v2/jobs/${short.id}`, { method: "DELETE" })).json();
  if (forget.deleted !== true) throw new Error(`forget: ${JSON.stringify(forget)}`);
  await expectError(await api(A, `/v2/jobs/${short.id}`), 404, "E_NOT_FOUND");
});

t("50 concurrent clients: every accepted job completes, the rest get 429, nothing lost", async () => {
  const before = (await (await api(A, "/health")).json()).jobs;
  const accepted: string[] = [], syncOk: number[] = [], problems: string[] = [];
  let rejected = 0, cheap = 0;
  const client = async (c: number) => {
    for (let round = 0; round < 3; round++) {
      const h = await api(A, c % 2 ? "/health" : "/");
      if (h.status !== 200) problems.push(`client ${c}: GET ${h.status}`);
      else cheap++;
      await h.arrayBuffer();
      const sync = c % 10 === 0;
      const r = await post(A, sync ? "/v1/ssd-depth" : "/v2/ssd-depth", job({ seed: c * 10 + round }));
      if (r.status === 429) {
        rejected++;
        if (!r.headers.get("retry-after")) problems.push(`client ${c}: 429 without Retry-After`);
        await r.arrayBuffer();
        await sleep(200 + Math.random() * 300); // bounded: never Retry-After's full wait
        continue;
      }
      if (sync) {
        const bytes = new Uint8Array(await r.arrayBuffer());
        if (r.status !== 200) problems.push(`client ${c}: v1 ${r.status}`);
        else { decodeImage(bytes, "sync"); syncOk.push(c); }
        continue;
      }
      const j = await r.json();
      if (r.status !== 202) { problems.push(`client ${c}: v2 ${r.status} ${JSON.stringify(j)}`); continue; }
      accepted.push(j.id);
      const end = await poll(A, j.id, (s) => s.status !== "queued" && s.status !== "running", 240_000);
      if (end.status !== "succeeded") problems.push(`client ${c}: job ${j.id} ${end.status}`);
    }
  };
  await Promise.all(Array.from({ length: 50 }, (_, c) => client(c).catch((e) => problems.push(`client ${c}: ${e?.message ?? e}`))));
  if (problems.length) throw new Error(problems.slice(0, 10).join("\n"));
  const total = accepted.length + syncOk.length + rejected;
  if (total !== 150 || cheap !== 150) throw new Error(`requests unaccounted for: ${accepted.length} async + ${syncOk.length} sync accepted, ${rejected} rejected, ${cheap} cheap`);
  if (accepted.length + syncOk.length < 3 || rejected < 1) throw new Error(`expected some accepted and some 429s: ${accepted.length + syncOk.length} / ${rejected}`);
  const after = await (await api(A, "/health")).json();
  if (after.status !== "ok" || after.queue.length !== 0) throw new Error(`health after: ${JSON.stringify(after)}`);
  if (after.jobs.succeeded - before.succeeded !== accepted.length + syncOk.length || after.jobs.failed !== before.failed) {
    throw new Error(`job counts: before ${JSON.stringify(before)}, after ${JSON.stringify(after.jobs)}, accepted ${accepted.length + syncOk.length}`);
  }
  console.log(`    50 clients: ${accepted.length} async + ${syncOk.length} sync jobs completed, ${rejected} got 429`);
});

t("--lazy loads on the first job; SIGTERM finishes the running job, cancels the queued, refuses new ones (503), exits 0", async () => {
  const sync = post(B, "/v1/ssd-depth", job({ num_inference_steps: 2, seed: 11 }));
  // wait until the job is running (the lazy load happens inside it)
  const end = Date.now() + 120_000;
  for (;;) {
    const h = await (await api(B, "/health")).json();
    if (h.queue.running && h.models.loaded) break;
    if (Date.now() > end) throw new Error(`B never ran the job: ${JSON.stringify(h)}\n${B.out.stderr.slice(-1500)}`);
    await sleep(100);
  }
  const queued = await (await post(B, "/v2/ssd-depth", job())).json();
  if (queued.status !== "queued") throw new Error(`queued: ${JSON.stringify(queued)}`);
  B.signal("SIGTERM");
  // the signal is handled on the server's event loop, between pieces of GPU work: wait until it says so
  const until = Date.now() + 60_000;
  while ((await (await api(B, "/health")).json()).status !== "draining") {
    if (Date.now() > until) throw new Error("SIGTERM was not acted on");
    await sleep(50);
  }
  await expectError(await post(B, "/v2/ssd-depth", job()), 503, "E_UNAVAILABLE", /shutting down/);
  const q = await (await api(B, `/v2/jobs/${queued.id}`)).json();
  if (q.status !== "cancelled" || q.error?.code !== "E_CANCELLED") throw new Error(`queued job at shutdown: ${JSON.stringify(q)}`);
  const r = await sync;
  if (r.status !== 200 || r.headers.get("x-seed") !== "11") throw new Error(`the running job did not finish: ${r.status} ${await r.text()}`);
  decodeImage(new Uint8Array(await r.arrayBuffer()), "last");
  const code = await Promise.race([B.exited, sleep(60_000).then(() => "timeout")]);
  if (code !== 0) throw new Error(`exit: ${code}\n${B.out.stderr.slice(-800)}`);
});

t("a failed job is answered with its code (500), never takes the server down, and the next one is tried again", async () => {
  for (let i = 0; i < 2; i++) {
    const e = await expectError(await post(C, "/v1/ssd-depth", job()), 500, "E_MODEL_NOT_FOUND", /no-such-model/);
    if (!e.message) throw new Error("no message");
  }
  const sub = await (await post(C, "/v2/ssd-depth", job())).json();
  const end = await poll(C, sub.id, (j) => j.status !== "queued" && j.status !== "running", 30_000);
  if (end.status !== "failed" || end.error?.code !== "E_MODEL_NOT_FOUND") throw new Error(`failed job: ${JSON.stringify(end)}`);
  const h = await (await api(C, "/health")).json();
  if (h.status !== "ok" || h.models.loaded !== false || h.models.error?.code !== "E_MODEL_NOT_FOUND" || h.jobs.failed !== 3) throw new Error(`health after failures: ${JSON.stringify(h)}`);
});

t("server A survived everything; at SIGTERM its running async job finishes and is collected before the exit", async () => {
  const h = await (await api(A, "/health")).json();
  if (h.status !== "ok") throw new Error(JSON.stringify(h));
  if (process.env.SSD_DEPTH_SERVER_TEST_LOG) console.log(A.out.stderr); // debugging aid: the job log of server A
  if (/\n\s+at .+:\d+:\d+/.test(A.out.stderr)) throw new Error(`server A logged a stack trace:\n${A.out.stderr.slice(-1500)}`);
  const sub = await (await post(A, "/v2/ssd-depth", job({ num_inference_steps: 2, seed: 5 }))).json();
  await poll(A, sub.id, (j) => j.status === "running");
  A.signal("SIGTERM");
  const done = await poll(A, sub.id, (j) => j.status !== "running");
  const fetchedAt = Date.now();
  if (done.status !== "succeeded" || !done.result?.images?.length) throw new Error(`job at shutdown: ${JSON.stringify(done).slice(0, 300)}`);
  // the server waits up to 10 s for that GET, and exits as soon as it has been answered
  const code = await Promise.race([A.exited, sleep(30_000).then(() => "timeout")]);
  const waited = Date.now() - fetchedAt;
  if (code !== 0) throw new Error(`exit: ${code}\n${A.out.stderr.slice(-800)}`);
  if (process.env.SSD_DEPTH_SERVER_TEST_LOG) console.log(`exit ${waited} ms after the last fetch`);
  if (waited > 6000) throw new Error(`the server took ${waited} ms to exit after its last result was collected`);
});

t.run();
