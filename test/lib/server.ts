// Starts `ssd-depth serve` as a user would (Node through bin/ssd-depth.js, Deno
// through `deno run -A pipeline/cli.ts`, as runCli does) and waits for the
// address it prints on stdout; plus raw-socket helpers for what fetch cannot
// do (send a body slowly, declare a huge Content-Length).

import { spawn } from "node:child_process";
import { connect } from "node:net";
import { join } from "node:path";
import { ROOT } from "./harness.ts";

declare const Deno: any;

export interface ServerProcess {
  url: string;
  /** sends a signal to the server process itself */
  signal(sig: NodeJS.Signals): void;
  /** everything the server has written so far */
  out: { stdout: string; stderr: string };
  /** exit code once it has exited */
  exited: Promise<number | null>;
  /** SIGKILL if still running */
  kill(): void;
}

export function startServer(args: string[], opts: { env?: Record<string, string | undefined>; timeoutMs?: number } = {}): Promise<ServerProcess> {
  const isDeno = typeof Deno !== "undefined";
  const cli = isDeno ? ["run", "-A", "--quiet", join(ROOT, "pipeline", "cli.ts"), "serve", ...args] : [join(ROOT, "bin", "ssd-depth.js"), "serve", ...args];
  // Through a shell that reports the server's pid and exit status: Deno's child_process
  // reports a child that was sent SIGTERM as killed (null) even when it exits 0 itself.
  const script = '"$@" & pid=$!; echo "@@pid $pid"; wait $pid; echo "@@exit $?"';
  const proc = spawn("sh", ["-c", script, "sh", process.execPath, ...cli], { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
  const out = { stdout: "", stderr: "" };
  let alive = true, pid = 0;
  const exited = new Promise<number | null>((resolve) => proc.on("close", () => {
    alive = false;
    const m = /@@exit (\d+)/.exec(out.stdout);
    resolve(m ? Number(m[1]) : null);
  }));
  const signal = (sig: NodeJS.Signals) => { if (alive && pid) { try { process.kill(pid, sig); } catch { /* already gone */ } } };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { signal("SIGKILL"); reject(new Error(`server did not start in time:\n${out.stderr.slice(-1500)}`)); }, opts.timeoutMs ?? 120_000);
    proc.stdout!.on("data", (d: Buffer) => {
      out.stdout += d.toString();
      pid = Number(/@@pid (\d+)/.exec(out.stdout)?.[1] ?? 0);
      const m = /listening on (http:\/\/\S+)/.exec(out.stdout);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], out, exited, signal, kill: () => signal("SIGKILL") });
      }
    });
    proc.stderr!.on("data", (d: Buffer) => (out.stderr += d.toString()));
    exited.then((code) => { clearTimeout(timer); reject(new Error(`server exited (${code}) before listening:\n${out.stderr.slice(-1500)}`)); });
  });
}

/**
 * Sends raw bytes over TCP and collects what comes back until the server closes
 * the connection or `waitMs` passes. `chunks` are written `gapMs` apart; write
 * errors (the server closing early) are ignored: the answer is what counts.
 */
export function rawRequest(url: string, chunks: (string | Uint8Array)[], opts: { gapMs?: number; waitMs?: number } = {}): Promise<{ text: string; ms: number }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const t0 = Date.now();
    const sock = connect(Number(u.port), u.hostname);
    let text = "", finished = false;
    const done = () => { if (!finished) { finished = true; clearTimeout(timer); sock.destroy(); resolve({ text, ms: Date.now() - t0 }); } };
    const timer = setTimeout(done, opts.waitMs ?? 10_000);
    sock.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      // a complete answer with a Content-Length is enough; no need to wait for the close
      const m = /\r\n\r\n/.exec(text);
      const len = /content-length:\s*(\d+)/i.exec(text);
      if (m && len && text.length >= m.index + 4 + Number(len[1])) done();
    });
    sock.on("close", done);
    sock.on("error", () => {});
    sock.on("connect", async () => {
      for (const c of chunks) {
        if (finished) return;
        sock.write(c);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
    });
  });
}

/** The status code and JSON body of a raw HTTP answer. */
export function parseRaw(text: string): { status: number; headers: string; body: any } {
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
  const k = text.indexOf("\r\n\r\n");
  const headers = k >= 0 ? text.slice(0, k) : text;
  let body: any = null;
  try { body = JSON.parse(text.slice(k + 4)); } catch { /* not JSON */ }
  return { status, headers, body };
}
