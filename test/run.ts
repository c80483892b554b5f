// The test command. Without --child it runs the suite as a matrix of legs
// (runtime × Vulkan driver) in child processes, streams their output, and ends
// with one line `N passed, N failed` counting every test of every leg.
//
//   node --import tsx test/run.ts                 # full matrix (what CI runs)
//   node --import tsx test/run.ts --legs node:lavapipe --filter ops/matmul
//   deno run -A test/run.ts --legs deno:lavapipe
//
// Kernel tests (test/ops/) run on both drivers — lavapipe has shader-f16 (native
// f16 path), SwiftShader has not (packed-f16 path); everything else runs on
// lavapipe only, under both runtimes.

import { spawn } from "node:child_process";
import { readdirSync, statSync, existsSync } from "node:fs";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import { TEST_DIR, ROOT } from "./lib/harness.ts";
import { findIcd } from "../engine/drivers.ts";

declare const Deno: any;
const isDeno = typeof Deno !== "undefined";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function listTests(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e);
    if (e === "fixtures" || e === "lib" || e === "reference" || e === "node_modules") continue;
    if (statSync(p).isDirectory()) out.push(...listTests(p));
    else if (e.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

interface Counts { passed: number; failed: number; skipped: number }

async function child(): Promise<void> {
  const filter = arg("--filter");
  const scope = arg("--scope") ?? "all"; // "all" | "ops"
  let files = listTests(TEST_DIR);
  if (scope === "ops") files = files.filter((f) => relative(TEST_DIR, f).startsWith("ops"));
  if (filter) files = files.filter((f) => filter.split(",").some((s) => relative(TEST_DIR, f).includes(s)));
  (globalThis as any).UVU_DEFER = 1;
  const queue: any[] = ((globalThis as any).UVU_QUEUE = []);
  const uvu = await import("uvu");
  for (let i = 0; i < files.length; i++) {
    queue.push([relative(ROOT, files[i])]);
    (globalThis as any).UVU_INDEX = i;
    try {
      await import(pathToFileURL(files[i]).href);
    } catch (e: any) {
      // A file that fails to load counts as one failed test, with its reason.
      queue[i].push(async () => {
        console.log(`\n  FAIL loading ${relative(ROOT, files[i])}: ${e?.stack ?? e}`);
        return ["load error", 0, 0, 1];
      });
    }
  }
  const counts: Counts = { passed: 0, failed: 0, skipped: 0 };
  for (const group of queue) {
    for (let j = 1; j < group.length; j++) {
      const run = group[j];
      group[j] = async () => {
        const r = await run();
        const [, ran, skip, total] = r;
        counts.passed += ran;
        counts.failed += total - ran;
        counts.skipped += skip;
        return r;
      };
    }
  }
  await uvu.exec();
  const { releaseDevice } = await import("../engine/device.ts");
  await releaseDevice();
  console.log(`@@RESULT ${JSON.stringify(counts)}`);
  if (isDeno) Deno.exit(counts.failed ? 1 : 0);
  process.exit(counts.failed ? 1 : 0);
}

async function orchestrate(): Promise<void> {
  const legsArg = arg("--legs") ?? "node:lavapipe,node:swiftshader,deno:lavapipe,deno:swiftshader";
  const filter = arg("--filter");
  const total: Counts = { passed: 0, failed: 0, skipped: 0 };
  const ci = process.env.CI === "true";
  const denoBin = join(ROOT, "node_modules", ".bin", "deno");
  for (const leg of legsArg.split(",")) {
    const [runtime, driver] = leg.split(":");
    const icd = findIcd(driver);
    if (!icd) {
      console.log(`\n== leg ${leg}: SKIPPED, no ${driver} Vulkan driver installed (see README: Setup)`);
      if (ci) total.failed++;
      continue;
    }
    if (runtime === "deno" && !existsSync(denoBin)) {
      console.log(`\n== leg ${leg}: SKIPPED, deno is not installed (npm ci installs it)`);
      if (ci) total.failed++;
      continue;
    }
    const scope = driver === "lavapipe" ? "all" : "ops";
    const args = ["--child", "--scope", scope, ...(filter ? ["--filter", filter] : [])];
    const cmd = runtime === "node" ? process.execPath : denoBin;
    const cmdArgs = runtime === "node"
      ? ["--import", "tsx", join(TEST_DIR, "run.ts"), ...args]
      : ["run", "-A", "--quiet", join(TEST_DIR, "run.ts"), ...args];
    console.log(`\n== leg ${leg} (${scope === "all" ? "all tests" : "kernel tests"}; ${icd})`);
    const t0 = Date.now();
    const counts = await new Promise<Counts | null>((resolve) => {
      const p = spawn(cmd, cmdArgs, {
        cwd: ROOT,
        env: { ...process.env, VK_ICD_FILENAMES: icd, SSD_DEPTH_ADAPTER: driver, NO_COLOR: "1", FORCE_COLOR: "0" },
        stdio: ["ignore", "pipe", "inherit"],
      });
      let result: Counts | null = null;
      let buf = "";
      p.stdout.on("data", (d: Buffer) => {
        buf += d.toString();
        let k;
        while ((k = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, k);
          buf = buf.slice(k + 1);
          if (line.startsWith("@@RESULT ")) result = JSON.parse(line.slice(9));
          else process.stdout.write(line + "\n");
        }
      });
      p.on("close", (code) => {
        if (buf) process.stdout.write(buf);
        if (!result) console.log(`\n== leg ${leg}: child exited with code ${code} before reporting`);
        resolve(result);
      });
    });
    if (!counts) { total.failed++; continue; }
    console.log(`== leg ${leg}: ${counts.passed} passed, ${counts.failed} failed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    total.passed += counts.passed; total.failed += counts.failed; total.skipped += counts.skipped;
  }
  console.log(`\n${total.passed} passed, ${total.failed} failed`);
  process.exit(total.failed ? 1 : 0);
}

if (process.argv.includes("--child")) await child();
else await orchestrate();
