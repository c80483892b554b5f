// `ssd-depth serve`: Segmind's SSD-1B Depth API on the user's own GPU, on
// node:http (which Deno also provides). The models load once and stay
// resident; ONE worker runs jobs from a bounded FIFO queue, because the GPU
// runs one generation at a time anyway and a second in parallel would only
// double the memory. Every request is parsed, validated and its images decoded
// before it is queued, so bad input is a 400 at once, never a failed job later.
//
//   POST /v1/ssd-depth        synchronous: the PNG (or JSON with base64 images)
//   POST /v2/ssd-depth        asynchronous: 202 + a job id
//   GET  /v2/jobs/:id         status, progress (step i of n), result when done
//   GET  /v2/jobs/:id/images/:i   one result image as image/png
//   DELETE /v2/jobs/:id       cancel a queued or running job (or forget a finished one)
//   GET  /health, GET /

import { createServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import { randomUUID, createHash, timingSafeEqual } from "node:crypto";
import { SsdError } from "../engine/errors.ts";
import { getEngine, type Engine } from "../engine/engine.ts";
import { applyRequestObject, defaultRequest, parseRequestText, validateRequest, type GenerationRequest } from "./request.ts";
import { resolveScheduler } from "./schedulers/index.ts";
import { decodeImage, type RgbImage } from "./image.ts";
import { generate, jsonRequest, loadModels, outputSize, type LoadedModels, type ModelSpecs } from "./generate.ts";

export interface ServerOptions {
  models: ModelSpecs;
  host: string;
  /** 0 = any free port (the bound address is in `url`) */
  port: number;
  /** when set, every request needs a matching x-api-key header */
  apiKey: string | null;
  /** jobs that may wait behind the running one; one more gets 429 */
  queueSize: number;
  allowRemoteImages: boolean;
  /** load the models on the first job instead of at start */
  lazy: boolean;
  maxBodyBytes: number;
  /** a client must send its whole request within this time (slow clients get 408) */
  clientTimeoutMs: number;
  /** time limit for fetching a remote image (--allow-remote-images) */
  remoteTimeoutMs: number;
  maxImagePixels: number;
  log: (m: string) => void;
}

export const SERVER_DEFAULTS = {
  host: "127.0.0.1",
  port: 7860,
  queueSize: 8,
  maxBodyMb: 20,
  clientTimeoutS: 30,
  remoteTimeoutS: 15,
  maxImageMp: 16,
  /** Segmind's limit */
  maxSamples: 4,
  /** finished async jobs kept for GET (oldest forgotten first), and for how long */
  keepFinished: 32,
  keepFinishedMs: 60 * 60 * 1000,
  /** at shutdown, how long a finished async job waits for its client to fetch the result */
  drainGraceMs: 10_000,
} as const;

type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

interface JobResult {
  pngs: Uint8Array[];
  depthPng: Uint8Array;
  seed: bigint;
  width: number;
  height: number;
  timings: Record<string, number>;
}

interface Job {
  id: string;
  /** async jobs are addressable under /v2/jobs; sync ones only live as long as their request */
  async: boolean;
  request: GenerationRequest;
  image: RgbImage | null;
  depthMap: RgbImage | null;
  status: JobStatus;
  step: number;
  steps: number;
  cancelRequested: boolean;
  /** an async result has been read by its client (shutdown waits a little for that) */
  fetched: boolean;
  created: number;
  started: number | null;
  finished: number | null;
  result: JobResult | null;
  error: { code: string; message: string } | null;
  /** the status a sync client gets for `error` */
  httpStatus: number;
  warnings: string[];
  notes: string[];
  done: Promise<void>;
  settle: () => void;
}

/** An answer other than 200, with the JSON body's code. */
class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

/** HTTP status for a coded error: the client's fault (400) or ours (500). */
function statusFor(code: string): number {
  if (code === "E_BAD_PARAM" || code === "E_BAD_IMAGE") return 400;
  if (code === "E_CANCELLED") return 503; // only a shutdown cancels a job whose client is still waiting
  if (code === "E_GPU_OOM") return 503;
  return 500;
}

/** JSON with bigints written as plain integers: seeds above 2^53 stay exact for clients that read them as integers (Python). */
export function toJson(v: unknown): string {
  const big: string[] = [];
  const s = JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `\u0000big${big.push(x.toString()) - 1}` : x));
  return s.replace(/"\\u0000big(\d+)"/g, (_m, i) => big[Number(i)]);
}

const LOOPBACK = /^(127(\.\d{1,3}){3}|localhost|::1|::ffff:127(\.\d{1,3}){3})$/i;
const JSON_TYPE = "application/json; charset=utf-8";
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Strict base64 (standard or URL-safe alphabet, optional data: URL prefix); Buffer.from alone skips bad characters silently. */
export function decodeBase64Field(value: string, field: string): Uint8Array {
  let s = value.trim();
  const m = /^data:([^,]*),/.exec(s);
  if (m) {
    if (!/;base64$/i.test(m[1])) throw new SsdError("E_BAD_IMAGE", `${field}: a data URL must be base64-encoded (data:image/png;base64,...)`);
    s = s.slice(m[0].length);
  }
  s = s.replace(/\s+/g, "").replace(/-/g, "+").replace(/_/g, "/");
  if (!s) throw new SsdError("E_BAD_IMAGE", `${field} is empty; send the image as base64 or a data URL`);
  if (!BASE64_RE.test(s) || s.length % 4 === 1) {
    throw new SsdError("E_BAD_IMAGE", `${field} is not valid base64 (send the file's bytes base64-encoded, e.g. base64 -w0 photo.jpg, or a data URL)`);
  }
  return new Uint8Array(Buffer.from(s, "base64"));
}

function keyDigest(k: string): Buffer {
  return createHash("sha256").update(k).digest();
}

export class SsdServer {
  readonly opts: ServerOptions;
  private http: Server | null = null;
  private engine: Engine | null = null;
  private models: LoadedModels | null = null;
  private loading: Promise<LoadedModels> | null = null;
  private loadError: { code: string; message: string } | null = null;
  private queue: Job[] = [];
  private running: Job | null = null;
  private jobs = new Map<string, Job>();
  private working = false;
  private draining = false;
  /** sync responses still being written; shutdown waits for them */
  private pendingResponses = 0;
  private counts = { succeeded: 0, failed: 0, cancelled: 0, rejected: 0 };
  /** running mean of job seconds, for Retry-After */
  private avgJobS = 10;
  private started = Date.now();
  private closedResolve!: () => void;
  /** resolves once the server has stopped after shutdown() */
  readonly closed: Promise<void>;
  url = "";

  constructor(opts: ServerOptions) {
    this.opts = opts;
    this.closed = new Promise((r) => (this.closedResolve = r));
  }

  /** Opens the adapter, loads the models (unless lazy), then listens. */
  async start(): Promise<string> {
    const log = this.opts.log;
    this.engine = await getEngine();
    log(`adapter: ${this.engine.gpu.report.name} (${this.engine.gpu.report.runtime})`);
    if (!this.opts.lazy) await this.ensureModels();
    const server = createServer((req, res) => void this.handle(req, res));
    this.http = server;
    // Node's own limits as a backstop (Deno's node:http ignores them; the body timer below works on both)
    const s = server as any;
    s.headersTimeout = this.opts.clientTimeoutMs;
    s.requestTimeout = this.opts.clientTimeoutMs + 5000;
    s.keepAliveTimeout = 5000;
    // curl sends "Expect: 100-continue" before large bodies: refuse an oversized one before it is sent
    server.on("checkContinue", (req, res) => {
      if (this.declaredTooLarge(req)) return this.tooLarge(res);
      res.writeContinue();
      void this.handle(req, res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", (e: any) => reject(new SsdError("E_IO", `cannot listen on ${this.opts.host}:${this.opts.port}: ${e?.code ?? e?.message ?? e}`)));
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    server.on("error", (e: any) => log(`server error: ${e?.message ?? e}`));
    const addr = server.address();
    const port = typeof addr === "object" && addr ? addr.port : this.opts.port;
    const host = this.opts.host.includes(":") ? `[${this.opts.host}]` : this.opts.host;
    this.url = `http://${host}:${port}`;
    return this.url;
  }

  /** SIGTERM: refuse new jobs (503), cancel the queued ones, finish the running one, then close. */
  shutdown(reason = "the server is shutting down"): void {
    if (this.draining) {
      // a second signal: stop now
      this.close();
      return;
    }
    this.draining = true;
    if (this.running?.async) this.awaitFetch = this.running;
    this.opts.log(`${reason}: ${this.running ? "finishing the running job" : "no job running"}, ${this.queue.length} queued job(s) cancelled`);
    for (const j of this.queue.splice(0)) this.finish(j, "cancelled", { code: "E_CANCELLED", message: `${reason}; the job was not started` });
    this.maybeClose();
  }

  private maybeClose(): void {
    if (!(this.draining && !this.running && this.queue.length === 0 && this.pendingResponses === 0)) return;
    const j = this.awaitFetch;
    if (j && j.status === "succeeded" && !j.fetched) {
      // the async job that was running at SIGTERM finished: give its polling client a moment to collect it
      this.graceTimer ??= setTimeout(() => this.close(), SERVER_DEFAULTS.drainGraceMs);
      return;
    }
    this.close();
  }

  private awaitFetch: Job | null = null;
  private graceTimer: ReturnType<typeof setTimeout> | null = null;
  private closing = false;
  private close(): void {
    if (this.closing) return;
    this.closing = true;
    const server = this.http as any;
    if (!server) return this.closedResolve();
    server.close(() => this.closedResolve());
    server.closeAllConnections?.();
    // never hang on a client that keeps a connection open
    setTimeout(() => this.closedResolve(), 3000).unref?.();
  }

  // ------------------------------------------------------------------ models and the worker

  private ensureModels(): Promise<LoadedModels> {
    if (this.models) return Promise.resolve(this.models);
    if (!this.loading) {
      const log = this.opts.log;
      this.loading = loadModels(this.opts.models, { needDepth: true, log }).then(
        (m) => { this.models = m; this.loadError = null; log("models loaded"); return m; },
        (e) => {
          // a failed load is retried by the next job (e.g. after a download comes back)
          this.loading = null;
          this.loadError = { code: e instanceof SsdError ? e.code : "E_INTERNAL", message: e?.message ?? String(e) };
          throw e;
        },
      );
    }
    return this.loading;
  }

  private async pump(): Promise<void> {
    if (this.working) return;
    this.working = true;
    try {
      while (this.queue.length) {
        const job = this.queue.shift()!;
        this.running = job;
        await this.runJob(job);
        this.running = null;
      }
    } finally {
      this.working = false;
      this.running = null;
      this.maybeClose();
    }
  }

  private async runJob(job: Job): Promise<void> {
    job.status = "running";
    job.started = Date.now();
    let loaded = false;
    try {
      const models = await this.ensureModels();
      loaded = true;
      const out = await generate(models, {
        request: job.request,
        image: job.image,
        depthMap: job.depthMap,
        onStep: (i, n) => {
          job.step = i + 1;
          job.steps = n;
          // cancel between steps: the pipeline unwinds and releases its tensors
          if (job.cancelRequested) throw new SsdError("E_CANCELLED", "the job was cancelled");
        },
        note: (m) => job.notes.push(m),
      });
      job.result = { pngs: out.pngs, depthPng: out.depthPng, seed: out.seed, width: out.width, height: out.height, timings: out.timings };
      const s = (Date.now() - job.started) / 1000;
      this.avgJobS = this.counts.succeeded === 0 ? s : 0.7 * this.avgJobS + 0.3 * s;
      this.finish(job, "succeeded", null);
      this.opts.log(`job ${job.id}: done in ${s.toFixed(1)} s (seed ${out.seed})`);
    } catch (e: any) {
      if (e instanceof SsdError && e.code === "E_CANCELLED") {
        this.finish(job, "cancelled", { code: "E_CANCELLED", message: job.cancelRequested ? "the job was cancelled" : e.message });
        this.opts.log(`job ${job.id}: cancelled at step ${job.step} of ${job.steps}`);
      } else {
        // a failed job is reported to its client and logged; the server goes on with the next
        const code = e instanceof SsdError ? e.code : "E_INTERNAL";
        const message = e instanceof SsdError ? e.message : `internal error: ${e?.message ?? e}`;
        // whatever stops the models from loading is the server's problem (500), not the request's
        job.httpStatus = loaded ? statusFor(code) : 500;
        this.finish(job, "failed", { code, message });
        this.opts.log(`job ${job.id}: failed: ${code}: ${e?.message ?? e}${e instanceof SsdError ? "" : `\n${e?.stack ?? ""}`}`);
      }
    } finally {
      // the decoded inputs are not needed any more; results stay until the job is forgotten
      job.image = null;
      job.depthMap = null;
    }
  }

  private finish(job: Job, status: JobStatus, error: Job["error"]): void {
    job.status = status;
    job.error = error;
    job.finished = Date.now();
    if (status === "succeeded") this.counts.succeeded++;
    else if (status === "failed") this.counts.failed++;
    else if (status === "cancelled") this.counts.cancelled++;
    job.settle();
    if (job.async) this.forgetOld();
  }

  /** Keeps memory bounded: only the newest finished async jobs stay readable. */
  private forgetOld(): void {
    const finished = [...this.jobs.values()].filter((j) => j.finished !== null);
    const old = Date.now() - SERVER_DEFAULTS.keepFinishedMs;
    finished.forEach((j, i) => { if (i < finished.length - SERVER_DEFAULTS.keepFinished || j.finished! < old) this.jobs.delete(j.id); });
  }

  private enqueue(job: Job): void {
    this.checkCapacity();
    this.queue.push(job);
    if (job.async) this.jobs.set(job.id, job);
    void this.pump();
  }

  /** 503 while draining, 429 when the queue is full: checked before the body is read (a flood of uploads is refused cheaply) and again when queuing. */
  private checkCapacity(): void {
    if (this.draining) throw new HttpError(503, "E_UNAVAILABLE", "the server is shutting down; try again later", { "Retry-After": "30" });
    if (this.queue.length >= this.opts.queueSize) {
      this.counts.rejected++;
      const wait = Math.max(1, Math.ceil(this.avgJobS * (this.queue.length + 1)));
      throw new HttpError(429, "E_QUEUE_FULL", `the queue is full (${this.queue.length} job(s) waiting behind the running one); retry after about ${wait} s`, { "Retry-After": String(wait) });
    }
  }

  private cancel(job: Job): void {
    if (job.status === "queued") {
      const i = this.queue.indexOf(job);
      if (i >= 0) this.queue.splice(i, 1);
      this.finish(job, "cancelled", { code: "E_CANCELLED", message: "the job was cancelled before it started" });
    } else if (job.status === "running") {
      job.cancelRequested = true;
    }
  }

  // ------------------------------------------------------------------ HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? "/", "http://localhost");
      const path = url.pathname.replace(/\/+$/, "") || "/";
      const method = req.method ?? "GET";
      this.checkBrowser(req);
      this.checkKey(req);
      switch (path) {
        case "/":
          this.only(method, ["GET", "HEAD"]);
          return this.sendJson(res, 200, this.describe());
        case "/health":
          this.only(method, ["GET", "HEAD"]);
          return this.sendJson(res, 200, this.health());
        case "/v1/ssd-depth":
          this.only(method, ["POST"]);
          return await this.postSync(req, res);
        case "/v2/ssd-depth":
          this.only(method, ["POST"]);
          return await this.postAsync(req, res);
      }
      const m = /^\/v2\/jobs\/([^/]+)(?:\/images\/(\d+))?$/.exec(path);
      if (m) {
        let id = m[1];
        try { id = decodeURIComponent(id); } catch { /* a malformed escape is simply an unknown id */ }
        const job = this.jobs.get(id);
        if (!job) throw new HttpError(404, "E_NOT_FOUND", `no job ${m[1]} (unknown, or finished over an hour ago and forgotten)`);
        if (m[2] !== undefined) {
          this.only(method, ["GET"]);
          return await this.sendImage(res, job, Number(m[2]));
        }
        this.only(method, ["GET", "DELETE"]);
        if (method === "GET") {
          await this.send(res, 200, JSON_TYPE, toJson(this.jobView(job, true)) + "\n");
          if (job.status === "succeeded" && !job.fetched) { job.fetched = true; this.maybeClose(); }
          return;
        }
        if (job.status === "queued" || job.status === "running") {
          this.cancel(job);
          return this.sendJson(res, 200, this.jobView(job, false));
        }
        this.jobs.delete(job.id); // finished: forget it and free its images
        return this.sendJson(res, 200, { ...this.jobView(job, false), deleted: true });
      }
      throw new HttpError(404, "E_NOT_FOUND", `no endpoint ${method} ${path}; GET / lists them`);
    } catch (e) {
      // refused before its body was read (401, 429, 503, ...): drain the body so the
      // connection stays in step and the client reads the answer instead of a reset
      if (!req.readableEnded) req.resume();
      this.sendError(res, e);
    }
  }

  private only(method: string, allowed: string[]): void {
    if (!allowed.includes(method)) throw new HttpError(405, "E_METHOD", `${method} is not allowed here; use ${allowed.join(" or ")}`, { Allow: allowed.join(", ") });
  }

  /**
   * On a loopback address the only legitimate Host is a loopback name, and web
   * pages have no business here (there is no CORS): refusing other Hosts stops
   * DNS rebinding, refusing foreign Origins stops a page from spending the GPU.
   */
  private checkBrowser(req: IncomingMessage): void {
    if (!LOOPBACK.test(this.opts.host)) return;
    const host = (req.headers.host ?? "").replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
    if (host && !LOOPBACK.test(host)) throw new HttpError(403, "E_FORBIDDEN", `Host '${req.headers.host}' is not this loopback server's (use 127.0.0.1 or localhost)`);
    const origin = req.headers.origin;
    if (origin) {
      let oh = "";
      try { oh = new URL(origin).hostname.replace(/^\[(.*)\]$/, "$1"); } catch { /* "null" (sandboxed pages) or unparsable: refused below */ }
      if (!LOOPBACK.test(oh)) throw new HttpError(403, "E_FORBIDDEN", `requests from web pages (Origin ${origin}) are refused; call the API from a script or a server`);
    }
  }

  private checkKey(req: IncomingMessage): void {
    const key = this.opts.apiKey;
    if (!key) return;
    const got = req.headers["x-api-key"];
    const given = Array.isArray(got) ? got[0] : got;
    // compare digests in constant time: the key's length and prefix do not leak through timing
    if (!given || !timingSafeEqual(keyDigest(given), keyDigest(key))) {
      throw new HttpError(401, "E_AUTH", given ? "the x-api-key header does not match the server's key" : "this server needs an API key: send it in the x-api-key header");
    }
  }

  private declaredTooLarge(req: IncomingMessage): boolean {
    const len = Number(req.headers["content-length"]);
    return Number.isFinite(len) && len > this.opts.maxBodyBytes;
  }

  private tooLarge(res: ServerResponse): void {
    this.sendError(res, new HttpError(413, "E_TOO_LARGE", `the request body is over the limit of ${(this.opts.maxBodyBytes / 1e6).toFixed(0)} MB; send a smaller image (JPEG, or downscaled)`, { Connection: "close" }));
  }

  /** The whole body, within the size limit and the client timeout. */
  private readBody(req: IncomingMessage, res: ServerResponse): Promise<Buffer> {
    if (this.declaredTooLarge(req)) {
      this.tooLarge(res);
      req.resume();
      return Promise.reject(null);
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0, done = false;
      const stop = (e: HttpError | null) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (e) {
          // answer, then stop reading: the client is told why before the connection goes
          this.sendError(res, e);
          req.resume();
          setTimeout(() => req.socket?.destroy(), 1000).unref?.();
          reject(null);
        }
      };
      const timer = setTimeout(() => stop(new HttpError(408, "E_TIMEOUT", `the request body did not arrive within ${this.opts.clientTimeoutMs / 1000} s`, { Connection: "close" })), this.opts.clientTimeoutMs);
      req.on("data", (c: Buffer) => {
        if (done) return;
        size += c.length;
        if (size > this.opts.maxBodyBytes) {
          stop(new HttpError(413, "E_TOO_LARGE", `the request body is over the limit of ${(this.opts.maxBodyBytes / 1e6).toFixed(0)} MB; send a smaller image (JPEG, or downscaled)`, { Connection: "close" }));
          return;
        }
        chunks.push(c);
      });
      req.on("end", () => { if (!done) { done = true; clearTimeout(timer); resolve(Buffer.concat(chunks)); } });
      req.on("error", () => { if (!done) { done = true; clearTimeout(timer); reject(null); } });
      req.on("aborted", () => { if (!done) { done = true; clearTimeout(timer); reject(null); } });
    });
  }

  /** Body → validated request with decoded images, or a 400 naming what to fix. */
  private async parseJob(req: IncomingMessage, res: ServerResponse, async: boolean): Promise<Job> {
    this.checkCapacity();
    const body = await this.readBody(req, res);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(body);
    } catch {
      throw new SsdError("E_BAD_PARAM", "the request body is not UTF-8 text; send JSON");
    }
    if (!text.trim()) throw new SsdError("E_BAD_PARAM", "the request body is empty; send a JSON object with at least \"prompt\" and \"image\"");
    const warnings: string[] = [];
    const r = applyRequestObject(defaultRequest(), parseRequestText(text, "request body"), (m) => warnings.push(m));
    validateRequest(r, { maxBatch: SERVER_DEFAULTS.maxSamples, maxSide: 2048 });
    resolveScheduler(r.scheduler);
    if (!async && !r.base64 && r.batch > 1) {
      throw new SsdError("E_BAD_PARAM", `samples ${r.batch} needs "base64": true (an image/png answer holds one image)`);
    }
    if (!r.image && !r.depthImage) throw new SsdError("E_BAD_PARAM", "send \"image\" (base64 or a data URL; its depth map is estimated) or \"depth_image\"");
    const image = r.image ? await this.readImageField(r.image, "image", false) : null;
    const depthMap = r.depthImage ? await this.readImageField(r.depthImage, "depth_image", true) : null;
    const notes: string[] = [];
    outputSize(r, image ?? depthMap, (m) => notes.push(m)); // size errors are the client's: answer them now
    if (!image && r.strength < 1) notes.push("no image, so this is text-to-image with control; strength is ignored");
    let settle!: () => void;
    const done = new Promise<void>((resolve) => (settle = resolve));
    const strength = image ? r.strength : 1;
    return {
      id: randomUUID(), async, request: { ...r, image: undefined, depthImage: undefined }, image, depthMap,
      status: "queued", step: 0, steps: Math.min(r.steps, Math.max(1, Math.floor(r.steps * strength))),
      cancelRequested: false, fetched: false, created: Date.now(), started: null, finished: null, result: null, error: null,
      httpStatus: 500, warnings, notes, done, settle,
    };
  }

  private async readImageField(value: string, field: string, depth: boolean): Promise<RgbImage> {
    const v = value.trim();
    let bytes: Uint8Array;
    if (/^https?:\/\//i.test(v)) {
      if (!this.opts.allowRemoteImages) {
        throw new SsdError("E_BAD_PARAM", `${field}: remote image URLs are off on this server; send the image as base64 or a data URL (or start it with --allow-remote-images)`);
      }
      bytes = await this.fetchRemote(v, field);
    } else {
      bytes = decodeBase64Field(v, field);
    }
    return decodeImage(bytes, field, { maxPixels: this.opts.maxImagePixels, gray16: depth ? "scale" : undefined });
  }

  /** A remote image, within the body size limit and the remote time limit. */
  private async fetchRemote(url: string, field: string): Promise<Uint8Array> {
    const limit = this.opts.maxBodyBytes;
    const secs = this.opts.remoteTimeoutMs / 1000;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.opts.remoteTimeoutMs);
    try {
      const r = await fetch(url, { signal: ctl.signal, redirect: "follow" });
      if (!r.ok) throw new SsdError("E_BAD_IMAGE", `${field}: fetching ${url} gave HTTP ${r.status}`);
      const declared = Number(r.headers.get("content-length"));
      if (Number.isFinite(declared) && declared > limit) throw new SsdError("E_BAD_IMAGE", `${field}: ${url} is ${declared} bytes, over the limit of ${limit}`);
      const chunks: Uint8Array[] = [];
      let size = 0;
      const reader = r.body!.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.length;
        if (size > limit) {
          await reader.cancel().catch(() => {});
          throw new SsdError("E_BAD_IMAGE", `${field}: ${url} is over the limit of ${limit} bytes`);
        }
        chunks.push(value);
      }
      return new Uint8Array(Buffer.concat(chunks));
    } catch (e: any) {
      if (e instanceof SsdError) throw e;
      if (ctl.signal.aborted) throw new SsdError("E_BAD_IMAGE", `${field}: ${url} did not arrive within ${secs} s`);
      throw new SsdError("E_BAD_IMAGE", `${field}: cannot fetch ${url}: ${e?.cause?.code ?? e?.message ?? e}`);
    } finally {
      clearTimeout(timer);
    }
  }

  private async postSync(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const job = await this.parseJob(req, res, false);
    this.enqueue(job);
    this.pendingResponses++;
    // a client that hangs up no longer wants its image: free the GPU for the next one
    const onGone = () => { if (job.status === "queued" || job.status === "running") this.cancel(job); };
    res.on("close", onGone);
    try {
      await job.done;
      res.off("close", onGone);
      if (res.destroyed || res.writableEnded) return;
      // a slow reader of a big answer must not hold the server (or a shutdown) for ever
      req.socket?.setTimeout(this.opts.clientTimeoutMs, () => req.socket?.destroy());
      if (job.status !== "succeeded") {
        const err = job.error ?? { code: "E_INTERNAL", message: "the job failed" };
        return this.sendJson(res, job.status === "failed" ? job.httpStatus : statusFor(err.code), err);
      }
      const r = job.result!;
      if (job.request.base64) return this.sendJson(res, 200, this.resultView(job));
      await this.send(res, 200, "image/png", r.pngs[0], { "X-Seed": r.seed.toString(), "X-Width": String(r.width), "X-Height": String(r.height) });
    } finally {
      this.pendingResponses--;
      this.maybeClose();
    }
  }

  private async postAsync(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const job = await this.parseJob(req, res, true);
    this.enqueue(job);
    this.sendJson(res, 202, this.jobView(job, false), { Location: `/v2/jobs/${job.id}` });
  }

  private async sendImage(res: ServerResponse, job: Job, i: number): Promise<void> {
    if (job.status !== "succeeded") throw new HttpError(409, "E_NOT_READY", `job ${job.id} is ${job.status}; its images exist once it has succeeded`);
    const png = job.result!.pngs[i];
    if (!png) throw new HttpError(404, "E_NOT_FOUND", `job ${job.id} has ${job.result!.pngs.length} image(s); index ${i} does not exist`);
    await this.send(res, 200, "image/png", png, { "X-Seed": job.result!.seed.toString() });
    if (!job.fetched) { job.fetched = true; this.maybeClose(); }
  }

  // ------------------------------------------------------------------ views

  private resultView(job: Job): Record<string, unknown> {
    const r = job.result!;
    const images = r.pngs.map((p) => Buffer.from(p).toString("base64"));
    return {
      image: images[0], images, depth_image: Buffer.from(r.depthPng).toString("base64"),
      seed: r.seed, width: r.width, height: r.height, timings_ms: r.timings,
      request: jsonRequest(job.request),
      ...(job.warnings.length ? { warnings: job.warnings } : {}),
      ...(job.notes.length ? { notes: job.notes } : {}),
    };
  }

  private jobView(job: Job, withResult: boolean): Record<string, unknown> {
    const v: Record<string, unknown> = {
      id: job.id, status: job.cancelRequested && job.status === "running" ? "cancelling" : job.status,
      progress: { step: job.step, steps: job.steps },
      created_at: new Date(job.created).toISOString(),
    };
    if (job.status === "queued") v.queue_position = this.queue.indexOf(job) + 1;
    if (job.started) v.started_at = new Date(job.started).toISOString();
    if (job.finished) v.finished_at = new Date(job.finished).toISOString();
    if (job.error) v.error = job.error;
    if (withResult && job.status === "succeeded") v.result = { ...this.resultView(job), image_urls: job.result!.pngs.map((_, i) => `/v2/jobs/${job.id}/images/${i}`) };
    else if (job.warnings.length) v.warnings = job.warnings;
    return v;
  }

  private health(): Record<string, unknown> {
    const rep = this.engine?.gpu.report;
    const lost = this.engine?.gpu.lost ?? null;
    return {
      status: lost ? "device_lost" : this.draining ? "draining" : "ok",
      adapter: rep ? { name: rep.name, runtime: rep.runtime, implementation: rep.implementation, kind: rep.kind, driver: rep.driver } : null,
      ...(lost ? { device_lost: lost } : {}),
      models: {
        loaded: !!this.models, loading: !this.models && !!this.loading, lazy: this.opts.lazy,
        names: this.models?.names ?? null, ...(this.loadError ? { error: this.loadError } : {}),
      },
      queue: { length: this.queue.length, capacity: this.opts.queueSize, running: this.running ? { id: this.running.async ? this.running.id : null, step: this.running.step, steps: this.running.steps } : null },
      jobs: { ...this.counts },
      uptime_s: Math.round((Date.now() - this.started) / 1000),
    };
  }

  private describe(): Record<string, unknown> {
    return {
      name: "ssd-depth",
      description: "SSD-1B Depth (depth ControlNet image-to-image) on this machine's GPU, with Segmind's request fields",
      endpoints: {
        "POST /v1/ssd-depth": "JSON request (prompt, image as base64 or data URL, negative_prompt, samples 1-4, scheduler, num_inference_steps, guidance_scale, seed (-1 = random), strength, controlnet_scale, base64, depth_image, width, height) -> image/png, or JSON with base64 images when base64 is true",
        "POST /v2/ssd-depth": "same request, answered at once with 202 and a job id",
        "GET /v2/jobs/:id": "status (queued, running, succeeded, failed, cancelled), progress step i of n, the result when done",
        "GET /v2/jobs/:id/images/:i": "one result image as image/png",
        "DELETE /v2/jobs/:id": "cancel a queued or running job (or forget a finished one)",
        "GET /health": "adapter, models loaded, queue length",
      },
      auth: this.opts.apiKey ? "x-api-key header required" : "none",
      limits: { body_bytes: this.opts.maxBodyBytes, image_pixels: this.opts.maxImagePixels, samples: SERVER_DEFAULTS.maxSamples, queue: this.opts.queueSize, remote_images: this.opts.allowRemoteImages },
    };
  }

  // ------------------------------------------------------------------ writing

  private send(res: ServerResponse, status: number, type: string, body: Uint8Array | string, headers: Record<string, string> = {}): Promise<void> {
    return new Promise((resolve) => {
      if (res.headersSent || res.destroyed) return resolve();
      const buf = typeof body === "string" ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      res.writeHead(status, { "Content-Type": type, "Content-Length": String(buf.length), "Cache-Control": "no-store", ...headers });
      res.end(res.req?.method === "HEAD" ? undefined : buf, () => resolve());
      res.once("close", () => resolve());
    });
  }

  private sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
    void this.send(res, status, JSON_TYPE, toJson(value) + "\n", headers);
  }

  /** Coded errors go out as {code, message}; anything else is logged and answered without its stack. */
  private sendError(res: ServerResponse, e: unknown): void {
    if (e === null) return; // already answered (body too large, timeout, client gone)
    if (e instanceof HttpError) return this.sendJson(res, e.status, { code: e.code, message: e.message }, e.headers);
    if (e instanceof SsdError) return this.sendJson(res, statusFor(e.code), { code: e.code, message: e.message });
    this.opts.log(`internal error: ${(e as any)?.stack ?? e}`);
    this.sendJson(res, 500, { code: "E_INTERNAL", message: "internal error (see the server's log)" });
  }
}
