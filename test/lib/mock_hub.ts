// A fake Hugging Face Hub on 127.0.0.1 for download tests: the revision API,
// HEAD/GET on resolve URLs with X-Repo-Commit / ETag / X-Linked-Etag /
// X-Linked-Size, LFS files answered with a 302 to a separate "CDN" server
// (another port, so another origin) that serves Range requests, 404s with
// X-Error-Code, gated repos (401 without the token, 403 with a wrong one),
// relative redirects for renamed repos, and fault injection: cut a body after
// N bytes, or serve corrupted bytes under the right headers.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";

export interface MockFileSpec {
  path: string;
  data: Uint8Array | string;
  /** stored with git-lfs: sha256 etag, served through the CDN redirect */
  lfs?: boolean;
}

export interface MockRepoSpec {
  id: string;
  files: MockFileSpec[];
  /** branch or tag → commit (default: main → a hash of the repo id) */
  refs?: Record<string, string>;
  gated?: boolean;
}

interface MockFile {
  path: string;
  data: Uint8Array;
  lfs: boolean;
  etag: string;
}

export interface LoggedRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range: string | null;
  auth: string | null;
}

export function gitBlobSha1(data: Uint8Array): string {
  return createHash("sha1").update(`blob ${data.byteLength}\0`).update(data).digest("hex");
}
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

export class MockHub {
  readonly log: LoggedRequest[] = [];
  /** valid token for gated repos */
  readonly token = "hf_mock_valid_token";
  /** path → bytes: the next body of that file stops after this many bytes and the connection is dropped */
  readonly cutNext = new Map<string, number>();
  /** path → bytes: the next body of that file stops after this many bytes and the connection stays open, silent */
  readonly stallNext = new Map<string, number>();
  /** path → HTTP status: the next GET of that file's bytes answers with it (a 503 from a busy CDN) */
  readonly failNext = new Map<string, number>();
  /** paths served with one byte flipped (headers still announce the true hash) */
  readonly corrupt = new Set<string>();
  /** old repo id → new one: answered with a relative redirect, as the hub does for renamed repos */
  readonly renamed = new Map<string, string>();
  endpoint = "";
  cdn = "";
  private repos = new Map<string, { files: Map<string, MockFile>; refs: Record<string, string>; gated: boolean }>();
  private byEtag = new Map<string, MockFile>();

  private constructor(private hub: Server, private cdnServer: Server) {}

  static async start(repos: MockRepoSpec[]): Promise<MockHub> {
    let self!: MockHub;
    const hub = createServer((req, res) => self.onHub(req, res));
    const cdn = createServer((req, res) => self.onCdn(req, res));
    self = new MockHub(hub, cdn);
    for (const r of repos) self.addRepo(r);
    self.endpoint = `http://127.0.0.1:${await listen(hub)}`;
    self.cdn = `http://127.0.0.1:${await listen(cdn)}`;
    return self;
  }

  addRepo(spec: MockRepoSpec): void {
    const files = new Map<string, MockFile>();
    for (const f of spec.files) {
      const data = typeof f.data === "string" ? new TextEncoder().encode(f.data) : f.data;
      const mf: MockFile = { path: f.path, data, lfs: !!f.lfs, etag: f.lfs ? sha256(data) : gitBlobSha1(data) };
      files.set(f.path, mf);
      this.byEtag.set(mf.etag, mf);
    }
    const commit = createHash("sha1").update("commit:" + spec.id).digest("hex");
    this.repos.set(spec.id, { files, refs: spec.refs ?? { main: commit }, gated: !!spec.gated });
  }

  commitOf(repoId: string, rev = "main"): string {
    return this.repos.get(repoId)!.refs[rev];
  }
  etagOf(repoId: string, path: string): string {
    return this.repos.get(repoId)!.files.get(path)!.etag;
  }

  async close(): Promise<void> {
    for (const s of [this.hub, this.cdnServer]) {
      (s as any).closeAllConnections?.();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }

  private record(server: "hub" | "cdn", req: IncomingMessage): void {
    this.log.push({ server, method: req.method ?? "", path: decodeURIComponent((req.url ?? "").split("?")[0]), range: header(req, "range"), auth: header(req, "authorization") });
  }

  private onHub(req: IncomingMessage, res: ServerResponse): void {
    this.record("hub", req);
    const url = new URL(req.url ?? "/", this.endpoint);
    const seg = url.pathname.split("/").slice(1).map(decodeURIComponent);
    const auth = header(req, "authorization");
    const fail = (status: number, code: string | null, msg: string) => {
      const h: Record<string, string> = { "content-type": "application/json" };
      if (code) h["x-error-code"] = code;
      h["x-error-message"] = msg;
      res.writeHead(status, h);
      res.end(req.method === "HEAD" ? undefined : JSON.stringify({ error: msg }));
    };
    // GET /api/models/{org}/{name}/revision/{rev}
    if (seg[0] === "api" && seg[1] === "models" && seg[4] === "revision" && seg.length === 6) {
      const id = `${seg[2]}/${seg[3]}`;
      const repo = this.repos.get(id);
      if (!repo) return fail(auth ? 404 : 401, "RepoNotFound", "Repository not found");
      const commit = resolveRev(repo.refs, seg[5]);
      if (!commit) return fail(404, "RevisionNotFound", `Invalid rev id: ${seg[5]}`);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id, sha: commit, siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })) }));
      return;
    }
    // HEAD/GET /{org}/{name}/resolve/{rev}/{path...}
    if (seg[2] === "resolve" && seg.length >= 5) {
      const id = `${seg[0]}/${seg[1]}`;
      const rev = seg[3];
      const path = seg.slice(4).join("/");
      const to = this.renamed.get(id);
      if (to) {
        res.writeHead(307, { location: `/${to}/resolve/${encodeURIComponent(rev)}/${path}` });
        return void res.end();
      }
      const repo = this.repos.get(id);
      if (!repo) return fail(auth ? 404 : 401, "RepoNotFound", "Repository not found");
      if (repo.gated && auth !== `Bearer ${this.token}`) {
        return fail(auth ? 403 : 401, "GatedRepo", `Access to model ${id} is restricted. You must have access to it and be authenticated to access it.`);
      }
      const commit = resolveRev(repo.refs, rev);
      if (!commit) return fail(404, "RevisionNotFound", "Invalid rev id");
      const f = repo.files.get(path);
      if (!f) {
        res.setHeader("x-repo-commit", commit);
        return fail(404, "EntryNotFound", `${path} does not exist on "${rev}"`);
      }
      if (f.lfs) {
        res.writeHead(302, {
          location: `${this.cdn}/cdn/${f.etag}?X-Amz-Signature=mock`,
          "x-repo-commit": commit,
          "x-linked-etag": `"${f.etag}"`,
          "x-linked-size": String(f.data.byteLength),
          etag: `W/"${gitBlobSha1(new TextEncoder().encode("pointer " + f.etag))}"`,
          "content-length": "0",
        });
        return void res.end();
      }
      return this.serveBytes(req, res, f, { "x-repo-commit": commit, etag: `"${f.etag}"` });
    }
    fail(404, null, "Not Found");
  }

  private onCdn(req: IncomingMessage, res: ServerResponse): void {
    this.record("cdn", req);
    const m = /^\/cdn\/([0-9a-f]{64})$/.exec((req.url ?? "").split("?")[0]);
    const f = m && this.byEtag.get(m[1]);
    if (!f) {
      res.writeHead(404);
      return void res.end();
    }
    this.serveBytes(req, res, f, {});
  }

  /** 200, or 206 for `Range: bytes=N-`; honours cutNext and corrupt. */
  private serveBytes(req: IncomingMessage, res: ServerResponse, f: MockFile, extra: Record<string, string>): void {
    const failWith = req.method === "GET" ? this.failNext.get(f.path) : undefined;
    if (failWith) {
      this.failNext.delete(f.path);
      res.writeHead(failWith);
      return void res.end();
    }
    let data = f.data;
    if (this.corrupt.has(f.path)) {
      data = data.slice();
      data[data.length >> 1] ^= 0x55;
    }
    const size = data.byteLength;
    const range = /^bytes=(\d+)-$/.exec(header(req, "range") ?? "");
    let start = 0;
    const h: Record<string, string> = { ...extra, "accept-ranges": "bytes", "content-type": "application/octet-stream" };
    let status = 200;
    if (range) {
      start = Number(range[1]);
      if (start >= size) {
        res.writeHead(416, { "content-range": `bytes */${size}` });
        return void res.end();
      }
      status = 206;
      h["content-range"] = `bytes ${start}-${size - 1}/${size}`;
    }
    h["content-length"] = String(size - start);
    res.writeHead(status, h);
    if (req.method === "HEAD") return void res.end();
    const body = data.subarray(start);
    const cut = this.cutNext.get(f.path);
    if (cut !== undefined && cut < body.byteLength) {
      this.cutNext.delete(f.path);
      // Send part of the body, then drop the connection as a flaky network would.
      res.write(body.subarray(0, cut), () => setTimeout(() => (res.socket ?? req.socket)?.destroy(), 20));
      return;
    }
    const stall = this.stallNext.get(f.path);
    if (stall !== undefined && stall < body.byteLength) {
      this.stallNext.delete(f.path);
      res.write(body.subarray(0, stall)); // and nothing more until the client gives up
      return;
    }
    res.end(body);
  }
}

function header(req: IncomingMessage, name: string): string | null {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v ?? null;
}

function resolveRev(refs: Record<string, string>, rev: string): string | null {
  if (refs[rev]) return refs[rev];
  return Object.values(refs).includes(rev) ? rev : null;
}

function listen(s: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => resolve((s.address() as AddressInfo).port));
  });
}
