// Downloads from the Hugging Face Hub into the Hugging Face cache, speaking the
// protocol huggingface_hub speaks (file_download.py / hf_api.py), so a cache we
// fill is usable from Python and the other way round:
//
//   GET  {endpoint}/api/models/{repo}/revision/{rev}  → {sha, siblings[].rfilename}
//   HEAD {endpoint}/{repo}/resolve/{rev}/{path}       → X-Repo-Commit, ETag; for LFS files
//        X-Linked-Etag (= sha256) and X-Linked-Size, and usually a 302 to a CDN
//   GET  the same URL (redirects followed; Range to resume) → the bytes
//
// Cache layout under $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub):
//   models--{org}--{name}/blobs/{etag}                       the bytes
//   models--{org}--{name}/blobs/{etag}.incomplete            a partial download (resumed with Range)
//   models--{org}--{name}/snapshots/{commit}/{path}          relative symlink → ../../blobs/{etag}
//   models--{org}--{name}/refs/{rev}                         the commit a branch/tag pointed at

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, symlink, writeFile, copyFile, truncate } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";
import { SsdError } from "../engine/errors.ts";
import { parsePythonJson, type JsonValue } from "./json.ts";
import { classifyWeightFile, pickVariant } from "./safetensors.ts";

export type Env = Record<string, string | undefined>;

export interface HubOptions {
  /** default: $HF_ENDPOINT, else https://huggingface.co */
  endpoint?: string;
  /** default: $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, or the token file huggingface-cli login writes */
  token?: string | null;
  /** default: hfHubCacheDir(env) */
  cacheDir?: string;
  /** default: $HF_HUB_OFFLINE */
  offline?: boolean;
  /** "auto": a bar on a TTY, a few lines otherwise */
  progress?: "auto" | "bar" | "lines" | "none";
  /** where progress lines and notes go (default: stderr) */
  log?: (line: string) => void;
  /** reconnections after a dropped connection, each resuming with Range (default 5) */
  retries?: number;
  retryDelayMs?: number;
  /** a request or a body that stalls this long is dropped (and resumed) (default 30 s) */
  timeoutMs?: number;
  env?: Env;
}

interface Settings {
  endpoint: string;
  token: string | null;
  cacheDir: string;
  offline: boolean;
  progress: "bar" | "lines" | "none";
  log: (line: string) => void;
  retries: number;
  retryDelayMs: number;
  timeoutMs: number;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;
const USER_AGENT = "ssd-depth/0.1 (huggingface_hub-compatible)";

export function isTrue(v: string | undefined): boolean {
  return v !== undefined && ["1", "on", "yes", "true"].includes(v.trim().toLowerCase());
}

function hfHome(env: Env): string {
  const xdg = env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return env.HF_HOME || join(xdg, "huggingface");
}

/** The hub cache folder, resolved as huggingface_hub does. */
export function hfHubCacheDir(env: Env = process.env): string {
  return env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || join(hfHome(env), "hub");
}

export function hfToken(env: Env = process.env): string | null {
  const t = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (t) return t.trim();
  const path = env.HF_TOKEN_PATH || join(hfHome(env), "token");
  try {
    const s = readFileSync(path, "utf8").trim();
    return s || null;
  } catch {
    return null;
  }
}

export function hubSettings(opts: HubOptions = {}): Settings {
  const env = opts.env ?? process.env;
  const tty = !!(process.stderr as any).isTTY;
  const p = opts.progress ?? "auto";
  return {
    endpoint: (opts.endpoint ?? env.HF_ENDPOINT ?? "https://huggingface.co").replace(/\/+$/, ""),
    token: opts.token !== undefined ? opts.token : hfToken(env),
    cacheDir: opts.cacheDir ?? hfHubCacheDir(env),
    offline: opts.offline ?? isTrue(env.HF_HUB_OFFLINE),
    progress: p === "auto" ? (isTrue(env.HF_HUB_DISABLE_PROGRESS_BARS) ? "none" : tty ? "bar" : "lines") : p,
    log: opts.log ?? ((l) => process.stderr.write(l + "\n")),
    retries: opts.retries ?? 5,
    retryDelayMs: opts.retryDelayMs ?? 1000,
    timeoutMs: opts.timeoutMs ?? 30_000,
  };
}

// ---------------------------------------------------------------- cache layout

/** `org/name` → `models--org--name`. */
export function repoFolderName(repoId: string): string {
  return "models--" + repoId.split("/").join("--");
}

export function checkRepoId(repoId: string): void {
  if (!/^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(repoId) || repoId.includes("..")) {
    throw new SsdError("E_BAD_PARAM", `'${repoId}' is not a hub repository id (expected org/name)`);
  }
}

/** A repo-relative file path must stay inside the snapshot folder. */
function checkRepoPath(path: string): void {
  const parts = path.split("/");
  if (!path || path.startsWith("/") || path.includes("\\") || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new SsdError("E_DOWNLOAD", `refusing repository path '${path}': it would leave the snapshot folder`);
  }
}

export function repoCacheDir(cacheDir: string, repoId: string): string {
  return join(cacheDir, repoFolderName(repoId));
}

/** The commit a revision names in the cache (a commit hash names itself), or null. */
export function cachedCommit(cacheDir: string, repoId: string, revision: string): string | null {
  if (COMMIT_RE.test(revision)) return revision;
  try {
    const c = readFileSync(join(repoCacheDir(cacheDir, repoId), "refs", ...revision.split("/")), "utf8").trim();
    return COMMIT_RE.test(c) ? c : null;
  } catch {
    return null;
  }
}

/** The snapshot folder of a cached revision, or null when the cache does not know it. */
export function cachedSnapshot(cacheDir: string, repoId: string, revision: string): { commit: string; dir: string } | null {
  const commit = cachedCommit(cacheDir, repoId, revision);
  if (!commit) return null;
  const dir = join(repoCacheDir(cacheDir, repoId), "snapshots", commit);
  return existsSync(dir) ? { commit, dir } : null;
}

async function writeRef(repoDir: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const p = join(repoDir, "refs", ...revision.split("/"));
  try {
    if ((await readFile(p, "utf8")).trim() === commit) return;
  } catch { /* not written yet */ }
  await mkdir(dirname(p), { recursive: true });
  await writeFile(p, commit);
}

/**
 * snapshots/{commit}/{path} → relative symlink to blobs/{etag}; a copy where
 * symlinks are not allowed. Made under a temporary name and renamed into place,
 * so concurrent callers and a half-made link never leave a wrong pointer.
 */
let linkSeq = 0;
async function linkPointer(blob: string, pointer: string): Promise<void> {
  await mkdir(dirname(pointer), { recursive: true });
  const tmp = `${pointer}.${process.pid}.${linkSeq++}.tmp`;
  try {
    try {
      await symlink(relative(dirname(pointer), blob), tmp);
    } catch (e: any) {
      if (!["EPERM", "EACCES", "ENOTSUP", "ENOSYS", "EINVAL"].includes(e?.code)) throw e;
      await copyFile(blob, tmp);
    }
    await rename(tmp, pointer);
  } catch (e: any) {
    await rm(tmp, { force: true });
    throw new SsdError("E_IO", `cannot create ${pointer}: ${e?.code ?? e?.message ?? e}`);
  }
}

// ---------------------------------------------------------------- http

interface Ctx {
  s: Settings;
  repoId: string;
  revision: string;
  path?: string;
}

function authHeaders(s: Settings): Record<string, string> {
  const h: Record<string, string> = { "user-agent": USER_AGENT };
  if (s.token) h.authorization = `Bearer ${s.token}`;
  return h;
}

/** One request with a timeout on getting the response headers; redirects are left to the caller. */
async function send(url: string, method: "GET" | "HEAD", headers: Record<string, string>, s: Settings): Promise<{ r: Response; ac: AbortController; timer: ReturnType<typeof setTimeout> }> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no response in ${s.timeoutMs} ms`)), s.timeoutMs);
  try {
    const r = await fetch(url, { method, headers, redirect: "manual", signal: ac.signal });
    return { r, ac, timer };
  } catch (e: any) {
    clearTimeout(timer);
    const cause = e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(e);
    throw new NetworkError(`cannot reach ${new URL(url).origin} (${cause})`);
  }
}

/** A connection-level failure (as opposed to an HTTP answer): retried, or answered from the cache. */
class NetworkError extends Error {}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

/** Turns an error answer into a coded error that says what to do. */
function hubError(r: Response, c: Ctx): SsdError {
  r.body?.cancel().catch(() => {}); // free the connection
  const code = r.headers.get("x-error-code");
  const msg = r.headers.get("x-error-message");
  const what = c.path ? `'${c.path}' of ${c.repoId}@${c.revision}` : `${c.repoId}@${c.revision}`;
  const tokenHint = c.s.token
    ? "HF_TOKEN is set but was refused: check that the token can read this repository and that you accepted its terms on its page"
    : "if it is gated or private, accept its terms on its page and set HF_TOKEN to an access token (huggingface.co/settings/tokens)";
  if (code === "RepoNotFound") {
    return new SsdError("E_MODEL_NOT_FOUND", `repository '${c.repoId}' not found on ${c.s.endpoint} (HTTP ${r.status}); check the id, or ${tokenHint}`);
  }
  if (code === "RevisionNotFound") return new SsdError("E_MODEL_NOT_FOUND", `revision '${c.revision}' not found in ${c.repoId} (check the branch, tag or commit after '@')`);
  if (code === "EntryNotFound") return new SsdError("E_MODEL_NOT_FOUND", `file '${c.path}' not found in ${c.repoId}@${c.revision}`);
  if (code === "GatedRepo" || r.status === 401 || r.status === 403) {
    return new SsdError("E_AUTH", `access to ${what} was refused (HTTP ${r.status}${code ? ` ${code}` : ""}${msg ? `: ${msg}` : ""}); ${tokenHint}`);
  }
  if (r.status === 404) return new SsdError("E_MODEL_NOT_FOUND", `${what} not found on ${c.s.endpoint} (HTTP 404)`);
  return new SsdError("E_DOWNLOAD", `${what}: HTTP ${r.status} from ${c.s.endpoint}${msg ? ` (${msg})` : ""}`);
}

/** GET {endpoint}/api/models/{repo}/revision/{rev}: the commit and the file list. */
export async function repoInfo(repoId: string, revision = "main", opts: HubOptions = {}): Promise<{ sha: string; siblings: string[] }> {
  checkRepoId(repoId);
  const s = hubSettings(opts);
  if (s.offline) throw offlineError(repoId, revision, s);
  const url = `${s.endpoint}/api/models/${repoId}/revision/${encodeURIComponent(revision)}`;
  const { r, timer } = await send(url, "GET", authHeaders(s), s).catch((e) => { throw asDownloadError(e, s); });
  try {
    if (!r.ok) throw hubError(r, { s, repoId, revision });
    const body = parsePythonJson(await r.text(), { source: url }) as Record<string, JsonValue>;
    const sha = body?.sha;
    const sib = body?.siblings;
    if (typeof sha !== "string" || !COMMIT_RE.test(sha) || !Array.isArray(sib)) {
      throw new SsdError("E_DOWNLOAD", `${url}: unexpected answer (no commit sha or siblings)`);
    }
    const siblings = sib.map((x: any) => x?.rfilename).filter((x): x is string => typeof x === "string");
    return { sha, siblings };
  } finally {
    clearTimeout(timer);
  }
}

function asDownloadError(e: unknown, s: Settings): unknown {
  if (e instanceof NetworkError) {
    return new SsdError("E_DOWNLOAD", `${e.message}; check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only files already in the cache (${s.cacheDir})`);
  }
  return e;
}

function offlineError(repoId: string, revision: string, s: Settings, path?: string): SsdError {
  return new SsdError(
    "E_OFFLINE",
    `${path ? `'${path}' of ` : ""}${repoId}@${revision} is not in the Hugging Face cache (${s.cacheDir}) and offline mode is on ` +
      `(HF_HUB_OFFLINE=1 or --offline); run 'ssd-depth pull ${repoId}' where the network is reachable, or turn offline mode off`,
  );
}

function url(s: Settings, repoId: string, revision: string, path: string): string {
  return `${s.endpoint}/${repoId}/resolve/${encodeURIComponent(revision)}/${path.split("/").map(encodeURIComponent).join("/")}`;
}

function normalizeEtag(e: string | null): string | null {
  if (!e) return null;
  return e.replace(/^W\//, "").replace(/^"|"$/g, "");
}

export interface FileMetadata {
  commit: string;
  etag: string;
  size: number;
  /** where the hub redirected to (the CDN, for LFS files), or null */
  location: string | null;
}

/** HEAD on the resolve URL. Relative redirects (renamed repos) are followed, a redirect to another host is not: its headers are the answer. */
export async function fileMetadata(repoId: string, path: string, revision: string, s: Settings): Promise<FileMetadata> {
  let u = url(s, repoId, revision, path);
  const headers = { ...authHeaders(s), "accept-encoding": "identity" };
  for (let hop = 0; ; hop++) {
    const { r, timer } = await send(u, "HEAD", headers, s);
    clearTimeout(timer);
    const loc = r.headers.get("location");
    if (isRedirect(r.status) && loc && !/^[a-z][a-z0-9+.-]*:/i.test(loc) && hop < 10) {
      u = new URL(loc, u).href;
      continue;
    }
    const commit = r.headers.get("x-repo-commit");
    if (!r.ok && !isRedirect(r.status)) {
      const err = hubError(r, { s, repoId, revision, path });
      if (r.headers.get("x-error-code") === "EntryNotFound" && commit && COMMIT_RE.test(commit)) (err as any).noExistCommit = commit;
      throw err;
    }
    const etag = normalizeEtag(r.headers.get("x-linked-etag") ?? r.headers.get("etag"));
    const size = Number(r.headers.get("x-linked-size") ?? r.headers.get("content-length"));
    if (!commit || !COMMIT_RE.test(commit)) throw new SsdError("E_DOWNLOAD", `${u}: the server sent no X-Repo-Commit; is HF_ENDPOINT (${s.endpoint}) a Hugging Face hub?`);
    if (!etag || !/^[\w.-]+$/.test(etag)) throw new SsdError("E_DOWNLOAD", `${u}: the server sent no usable ETag`);
    if (!Number.isSafeInteger(size) || size < 0) throw new SsdError("E_DOWNLOAD", `${u}: the server sent no file size`);
    return { commit, etag, size, location: loc ? new URL(loc, u).href : null };
  }
}

// ---------------------------------------------------------------- progress

function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}
function fmtTime(sec: number): string {
  if (!Number.isFinite(sec)) return "?";
  const m = Math.floor(sec / 60), s = Math.round(sec % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m` : `${m}:${String(s).padStart(2, "0")}`;
}

/** Bytes, rate and ETA: a redrawn bar on a terminal, a line every 10 s otherwise. */
export class Progress {
  private done: number;
  private readonly t0 = Date.now();
  private readonly start: number;
  private lastDraw = Date.now();
  constructor(private label: string, private total: number, initial: number, private s: Pick<Settings, "progress" | "log">) {
    this.done = this.start = initial;
    if (s.progress === "lines") s.log(`downloading ${label} (${fmtBytes(total)}${initial ? `, resuming at ${fmtBytes(initial)}` : ""})`);
  }
  add(n: number): void {
    this.done += n;
    const now = Date.now();
    if (this.s.progress === "bar" && now - this.lastDraw > 100) this.draw(now, false);
    else if (this.s.progress === "lines" && now - this.lastDraw > 10_000) this.draw(now, false);
  }
  line(now = Date.now()): string {
    const sec = Math.max(1e-3, (now - this.t0) / 1000);
    const rate = (this.done - this.start) / sec;
    const pct = this.total ? (100 * this.done) / this.total : 100;
    const eta = rate > 0 ? (this.total - this.done) / rate : Infinity;
    return `${pct.toFixed(0).padStart(3)}% ${fmtBytes(this.done)}/${fmtBytes(this.total)} ${fmtBytes(rate)}/s ETA ${fmtTime(eta)}`;
  }
  private draw(now: number, final: boolean): void {
    this.lastDraw = now;
    if (this.s.progress === "bar") {
      const w = 24;
      const f = this.total ? Math.min(w, Math.round((w * this.done) / this.total)) : w;
      const name = this.label.length > 40 ? "…" + this.label.slice(-39) : this.label;
      process.stderr.write(`\r${name} [${"#".repeat(f)}${".".repeat(w - f)}] ${this.line(now)}\x1b[K${final ? "\n" : ""}`);
    } else if (this.s.progress === "lines") {
      this.s.log(`  ${this.label}: ${this.line(now)}`);
    }
  }
  finish(): void {
    if (this.s.progress !== "none") this.draw(Date.now(), true);
  }
}

// ---------------------------------------------------------------- download

/**
 * Makes sure `path` of `repoId@revision` is in the cache and returns its
 * snapshot path (hf_hub_download).
 */
export async function hfHubDownload(repoId: string, path: string, opts: HubOptions & { revision?: string } = {}): Promise<string> {
  checkRepoId(repoId);
  checkRepoPath(path);
  const s = hubSettings(opts);
  const revision = opts.revision ?? "main";
  const repoDir = repoCacheDir(s.cacheDir, repoId);
  // A commit names immutable content: a cached file needs no request.
  const cached = () => {
    const c = cachedCommit(s.cacheDir, repoId, revision);
    const p = c && join(repoDir, "snapshots", c, ...path.split("/"));
    return p && existsSync(p) ? p : null;
  };
  if (COMMIT_RE.test(revision) || s.offline) {
    const p = cached();
    if (p) return p;
    if (s.offline) throw offlineError(repoId, revision, s, path);
  }
  let meta: FileMetadata;
  try {
    meta = await fileMetadata(repoId, path, revision, s);
  } catch (e) {
    // Record a confirmed absence as huggingface_hub does (.no_exist/{commit}/{path}), so Python skips the lookup too.
    if (e instanceof SsdError && (e as any).noExistCommit) {
      const commit = (e as any).noExistCommit as string;
      const p = join(repoDir, ".no_exist", commit, ...path.split("/"));
      await mkdir(dirname(p), { recursive: true }).then(() => writeFile(p, "")).catch(() => {});
      await writeRef(repoDir, revision, commit).catch(() => {});
    }
    // Unreachable hub: what the cache holds for this revision still serves.
    const p = e instanceof NetworkError ? cached() : null;
    if (p) return p;
    throw asDownloadError(e, s);
  }
  await writeRef(repoDir, revision, meta.commit);
  const pointer = join(repoDir, "snapshots", meta.commit, ...path.split("/"));
  if (existsSync(pointer)) return pointer;
  const blob = join(repoDir, "blobs", meta.etag);
  if (!existsSync(blob)) {
    const lockPath = join(s.cacheDir, ".locks", repoFolderName(repoId), meta.etag + ".lock");
    await withBlobLock(blob, lockPath, s, async () => {
      if (!existsSync(blob)) await downloadBlob(meta, blob, path, { s, repoId, revision, path });
    });
  }
  await linkPointer(blob, pointer);
  return pointer;
}

// One writer per blob: in this process a shared promise, across processes a lock
// file holding the writer's pid (huggingface_hub keeps its locks in the same
// .locks folder). A lock whose pid is gone, or that is empty, is stale.
const inFlight = new Map<string, Promise<void>>();

async function withBlobLock(blob: string, lockPath: string, s: Settings, fn: () => Promise<void>): Promise<void> {
  const running = inFlight.get(blob);
  if (running) return running.catch(() => withBlobLock(blob, lockPath, s, fn));
  const p = (async () => {
    await mkdir(dirname(lockPath), { recursive: true });
    let waitedLogged = false;
    for (;;) {
      try {
        const fh = await open(lockPath, "wx");
        await fh.write(String(process.pid));
        await fh.close();
        break;
      } catch (e: any) {
        if (e?.code !== "EEXIST") throw new SsdError("E_IO", `cannot create lock ${lockPath}: ${e?.code ?? e}`);
      }
      let holder = NaN;
      let age = 0;
      try {
        holder = parseInt(await readFile(lockPath, "utf8"), 10);
        age = Date.now() - (await stat(lockPath)).mtimeMs;
      } catch { /* removed meanwhile */ continue; }
      // An empty lock is stale once it is a few seconds old (a writer fills it right after creating it).
      if (Number.isNaN(holder) ? age > 5000 : !pidAlive(holder)) {
        await rm(lockPath, { force: true });
        continue;
      }
      if (!waitedLogged) s.log(`waiting for process ${holder}, which is downloading ${basenameOf(blob)} (${lockPath})`);
      waitedLogged = true;
      await new Promise((r) => setTimeout(r, 500));
    }
    try {
      await fn();
    } finally {
      await rm(lockPath, { force: true });
    }
  })();
  inFlight.set(blob, p);
  try {
    await p;
  } finally {
    inFlight.delete(blob);
  }
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return false; // ours, yet not in flight: left over from an earlier failure
  try {
    process.kill(pid, 0);
    return true;
  } catch (e: any) {
    return e?.code === "EPERM";
  }
}

function basenameOf(p: string): string {
  return p.slice(Math.max(p.lastIndexOf("/"), p.lastIndexOf("\\")) + 1);
}

async function downloadBlob(meta: FileMetadata, blob: string, label: string, c: Ctx): Promise<void> {
  const s = c.s;
  await mkdir(dirname(blob), { recursive: true });
  const tmp = blob + ".incomplete";
  let have = 0;
  try {
    have = (await stat(tmp)).size;
  } catch { /* fresh */ }
  if (have > meta.size) {
    await truncate(tmp, 0);
    have = 0;
  }
  const progress = new Progress(label, meta.size, have, s);
  for (let attempt = 0; ; attempt++) {
    try {
      // First the location the HEAD named (the CDN for LFS files: the exact bytes of
      // that commit, one redirect saved); after a drop, the resolve URL at the
      // commit again, since a signed CDN URL may have expired meanwhile.
      const from = (attempt === 0 && meta.location) || url(s, c.repoId, meta.commit, c.path!);
      await fetchInto(from, meta, tmp, have, c, progress);
      break;
    } catch (e: any) {
      if (!(e instanceof NetworkError) && !(e instanceof SsdError)) {
        throw new SsdError("E_IO", `cannot write ${tmp}: ${e?.code ?? e?.message ?? e}${e?.code === "ENOSPC" ? " (disk full: free space or point HF_HUB_CACHE elsewhere)" : ""}`);
      }
      if (!(e instanceof NetworkError)) throw e;
      try {
        have = (await stat(tmp)).size;
      } catch {
        have = 0;
      }
      if (attempt >= s.retries) {
        throw new SsdError("E_DOWNLOAD", `download of ${label} stopped at ${fmtBytes(have)} of ${fmtBytes(meta.size)} (${e.message}); run again to resume from ${tmp}`);
      }
      s.log(`${label}: ${e.message}; resuming at ${fmtBytes(have)} (retry ${attempt + 1} of ${s.retries})`);
      await new Promise((r) => setTimeout(r, s.retryDelayMs * (attempt + 1)));
    }
  }
  progress.finish();
  await verify(tmp, meta, label);
  await rename(tmp, blob);
}

/** GETs the bytes from `have` on and appends them to `tmp`; NetworkError when the connection drops. */
async function fetchInto(from: string, meta: FileMetadata, tmp: string, have: number, c: Ctx, progress: Progress): Promise<void> {
  const s = c.s;
  const origin = new URL(s.endpoint).host;
  let u = from;
  const headers: Record<string, string> = { ...authHeaders(s), "accept-encoding": "identity" };
  // The token is for the hub only: never hand it to the CDN (huggingface_hub does the same).
  if (new URL(u).host !== origin) delete headers.authorization;
  if (have > 0) headers.range = `bytes=${have}-`;
  let resp: { r: Response; ac: AbortController; timer: ReturnType<typeof setTimeout> };
  for (let hop = 0; ; hop++) {
    resp = await send(u, "GET", headers, s);
    const loc = resp.r.headers.get("location");
    if (!isRedirect(resp.r.status) || !loc) break;
    clearTimeout(resp.timer);
    if (hop >= 10) throw new SsdError("E_DOWNLOAD", `${c.path}: too many redirects`);
    u = new URL(loc, u).href;
    if (new URL(u).host !== origin) delete headers.authorization;
  }
  const { r, ac } = resp;
  let timer = resp.timer;
  const reader = r.body?.getReader();
  try {
    if (r.status === 416 && have === meta.size) return; // already complete
    // A server hiccup is worth a retry, like a dropped connection.
    if (r.status >= 500) throw new NetworkError(`HTTP ${r.status}`);
    if (!r.ok) throw hubError(r, c);
    let fh;
    if (have > 0 && r.status === 200) {
      // The server ignored Range: start over.
      fh = await open(tmp, "w");
      progress.add(-have);
      have = 0;
    } else if (have > 0) {
      const m = /^bytes (\d+)-/.exec(r.headers.get("content-range") ?? "");
      if (!m || Number(m[1]) !== have) throw new SsdError("E_DOWNLOAD", `${c.path}: asked for bytes from ${have}, got '${r.headers.get("content-range")}'`);
      fh = await open(tmp, "r+");
    } else {
      fh = await open(tmp, "w");
    }
    // Chunks are gathered into 4 MiB writes; whatever arrived before a drop is written, so a resume loses nothing.
    const buf = new Uint8Array(4 << 20);
    let fill = 0;
    let pos = have;
    const flush = async () => {
      let d = 0;
      while (d < fill) d += (await fh.write(buf, d, fill - d, pos + d)).bytesWritten;
      pos += fill;
      fill = 0;
    };
    try {
      if (!reader) throw new NetworkError("empty response body");
      for (;;) {
        clearTimeout(timer);
        timer = setTimeout(() => ac.abort(new Error(`stalled for ${s.timeoutMs} ms`)), s.timeoutMs);
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (e: any) {
          throw new NetworkError(`connection lost (${e?.cause?.code ?? e?.message ?? e})`);
        }
        if (chunk.done) break;
        let v = chunk.value;
        if (pos + fill + v.byteLength > meta.size) throw new SsdError("E_DOWNLOAD", `${c.path}: the server sent more than the announced ${meta.size} bytes`);
        while (v.byteLength) {
          const n = Math.min(v.byteLength, buf.byteLength - fill);
          buf.set(v.subarray(0, n), fill);
          fill += n;
          v = v.subarray(n);
          if (fill === buf.byteLength) await flush();
        }
        progress.add(chunk.value.byteLength);
      }
      await flush();
      if (pos < meta.size) throw new NetworkError(`body ended at ${pos} of ${meta.size} bytes`);
    } finally {
      await flush().catch(() => {});
      await fh.close();
    }
  } finally {
    clearTimeout(timer);
    reader?.cancel().catch(() => {});
  }
}

/** Size, then content: sha256 for LFS files (their etag), git's blob sha1 for small ones. */
async function verify(tmp: string, meta: FileMetadata, label: string): Promise<void> {
  const size = (await stat(tmp)).size;
  const fail = async (what: string) => {
    await rm(tmp, { force: true });
    return new SsdError("E_DOWNLOAD", `downloaded ${label} is corrupted: ${what}; the partial file was deleted, run again to download it afresh`);
  };
  if (size !== meta.size) throw await fail(`${size} bytes, expected ${meta.size}`);
  let h: ReturnType<typeof createHash> | null = null;
  let algo = "";
  if (/^[0-9a-f]{64}$/.test(meta.etag)) { h = createHash("sha256"); algo = "sha256"; }
  else if (/^[0-9a-f]{40}$/.test(meta.etag)) { h = createHash("sha1").update(`blob ${size}\0`); algo = "git sha1"; }
  if (!h) return;
  const fh = await open(tmp, "r");
  try {
    const buf = new Uint8Array(8 << 20);
    for (let pos = 0; pos < size;) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.byteLength, size - pos), pos);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  const got = h.digest("hex");
  if (got !== meta.etag) throw await fail(`${algo} ${got} ≠ ${meta.etag} announced by the hub`);
}

// ---------------------------------------------------------------- snapshots

export interface SelectOptions {
  /** preferred weights variant (default "fp16"); null = plain files */
  variant?: string | null;
  /** pipeline components to fetch (default: all in model_index.json) */
  components?: string[];
}

/**
 * The files a pipeline (or a single model) needs out of a repo's file list:
 * model_index.json; in each component folder its configs/tokenizer files and one
 * set of safetensors weights (the preferred variant when present). Skips
 * .bin/.ckpt/.onnx/flax weights, docs, images and single-file checkpoints.
 */
export function selectRepoFiles(siblings: string[], modelIndex: Record<string, JsonValue> | null, opts: SelectOptions = {}): string[] {
  const variant = opts.variant === undefined ? "fp16" : opts.variant;
  let folders: Set<string>;
  if (modelIndex) {
    folders = new Set(
      Object.entries(modelIndex)
        .filter(([k, v]) => !k.startsWith("_") && Array.isArray(v) && v[0] !== null && v[1] !== null)
        .map(([k]) => k)
        .filter((k) => !opts.components || opts.components.includes(k)),
    );
  } else {
    folders = new Set([""]);
  }
  const byFolder = new Map<string, string[]>();
  for (const f of siblings) {
    const i = f.lastIndexOf("/");
    const folder = i < 0 ? "" : f.slice(0, i);
    if (!folders.has(folder)) continue;
    if (!byFolder.has(folder)) byFolder.set(folder, []);
    byFolder.get(folder)!.push(f);
  }
  const out: string[] = [];
  if (modelIndex && siblings.includes("model_index.json")) out.push("model_index.json");
  for (const files of byFolder.values()) {
    const weights = files.map((f) => ({ f, c: classifyWeightFile(f.slice(f.lastIndexOf("/") + 1)) })).filter((x) => x.c);
    const chosen = pickVariant(weights.map((w) => w.c!.variant), variant);
    for (const w of weights) if (w.c!.variant === chosen) out.push(w.f);
    for (const f of files) {
      if (classifyWeightFile(f.slice(f.lastIndexOf("/") + 1))) continue;
      if (/\.(json|txt)$/.test(f) && !/(^|\/)(\.|README)/i.test(f)) out.push(f);
    }
  }
  return out;
}

export interface SnapshotOptions extends HubOptions, SelectOptions {
  revision?: string;
  /** final say on each file: gets the default choice */
  filter?: (path: string, selected: boolean) => boolean;
}

export interface Snapshot {
  repoId: string;
  commit: string;
  dir: string;
  files: string[];
}

/** snapshot_download: the selected files of a revision, each via hfHubDownload at the resolved commit. */
export async function snapshotDownload(repoId: string, opts: SnapshotOptions = {}): Promise<Snapshot> {
  checkRepoId(repoId);
  const s = hubSettings(opts);
  const revision = opts.revision ?? "main";
  if (s.offline) {
    const snap = cachedSnapshot(s.cacheDir, repoId, revision);
    if (!snap) throw offlineError(repoId, revision, s);
    return { repoId, commit: snap.commit, dir: snap.dir, files: [] };
  }
  const info = await repoInfo(repoId, revision, opts);
  const repoDir = repoCacheDir(s.cacheDir, repoId);
  await writeRef(repoDir, revision, info.sha);
  const sub = { ...opts, revision: info.sha };
  let modelIndex: Record<string, JsonValue> | null = null;
  if (info.siblings.includes("model_index.json")) {
    const p = await hfHubDownload(repoId, "model_index.json", sub);
    modelIndex = parsePythonJson(readFileSync(p, "utf8"), { source: p }) as Record<string, JsonValue>;
  }
  const selected = new Set(selectRepoFiles(info.siblings, modelIndex, opts));
  const files = info.siblings.filter((f) => (opts.filter ? opts.filter(f, selected.has(f)) : selected.has(f)));
  for (const f of files) await hfHubDownload(repoId, f, sub);
  return { repoId, commit: info.sha, dir: join(repoDir, "snapshots", info.sha), files };
}
