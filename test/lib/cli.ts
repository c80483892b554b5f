// Runs the ssd-depth CLI as a user would, under the runtime running the tests
// (Node through bin/ssd-depth.js, Deno through `deno run -A pipeline/cli.ts`).

import { spawn } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "./harness.ts";

declare const Deno: any;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: { env?: Record<string, string | undefined>; timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  const isDeno = typeof Deno !== "undefined";
  const cmd = process.execPath;
  const full = isDeno ? ["run", "-A", "--quiet", join(ROOT, "pipeline", "cli.ts"), ...args] : [join(ROOT, "bin", "ssd-depth.js"), ...args];
  return new Promise((resolve) => {
    const p = spawn(cmd, full, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill("SIGKILL"), opts.timeoutMs ?? 600_000);
    p.on("close", (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}
