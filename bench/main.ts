// `npm run bench -- <suite> [options]`
//   kernels  [--size 512|1024] [--vs tfjs,numpy] [--json FILE] [--short] [--runtime node,deno] [--driver lavapipe,swiftshader]
//            [--dtype f16] [--reps N] [--peak GFLOPS] [--only name,name] [--no-check] [--profile]
//            (on a GPU, and with --profile on any adapter with timestamp queries,
//            each row's kernel time too, per pass where an op runs several)
//            (every row's output is checked at sampled positions against a float64
//            reference, bench/check.ts; a wrong one fails the run)
//   tiles    [--tiles 128x128k8t8,...,tiled] [--splits 1,2,3] [--plans 64x256k8t8/4r12,64x256k8t8/7s56,...] [--only peak,linear] [--dtype f16w] [--peak GFLOPS] [--profile]
//            (the linear rows once per `wide` matmul tile: what the tuner chooses among)
//   load     (weights/ streaming load into GPU tensors)
//   unet     --synthetic CONFIG [--size 512] [--batch 2] [--replay N] [--json FILE]
//   e2e      --synthetic [--size 512] [--steps 2]
//   replay   [--size 512] [--steps 3]   (record once, replay: CPU encoding overhead per step)
//   tune     [--scale 1]  (time each kernel candidate, cache the fastest for this adapter)
//   gemmlab  [--set quick|sweep|focus|slice] [--shapes] [--peak GFLOPS] [--deadline S]
//            (generated SGEMM variants apart from the engine; Node; SSD_DEPTH_ADAPTER=lavapipe for a CPU driver)
// With several runtimes or drivers the suite runs once per pair in child
// processes and the results are printed side by side.

import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { SsdError } from "../engine/errors.ts";
import { releaseDevice } from "../engine/device.ts";
import { findIcd } from "../engine/drivers.ts";
import { ROOT_DIR, fmtMs, adapterLine, type BenchRow } from "./common.ts";

declare const Deno: any;

const list = (v: unknown) => (v === undefined ? [] : String(v).split(",").map((s) => s.trim()).filter(Boolean));

async function runSuite(suite: string, a: any): Promise<void> {
  switch (suite) {
    case "kernels": {
      const { benchKernels } = await import("./kernels.ts");
      await benchKernels({ size: a.size, json: a.json, vs: list(a.vs), short: a.short, cap: a.cap, iters: a.iters, config: a.config, reps: a.reps, dtype: a.dtype, peak: a.peak, only: a.only, check: a.check, profile: a.profile });
      return;
    }
    case "tiles": {
      const { benchTiles } = await import("./kernels.ts");
      await benchTiles({ tiles: a.tiles, splits: a.splits, plans: a.plans, only: a.only, json: a.json, cap: a.cap, iters: a.iters, dtype: a.dtype, peak: a.peak, size: a.size, check: a.check, profile: a.profile });
      return;
    }
    case "load": {
      const { benchLoad } = await import("./load.ts" as string);
      await benchLoad(a);
      return;
    }
    case "unet": {
      const { benchUnet } = await import("./unet.ts" as string);
      await benchUnet(a);
      return;
    }
    case "replay": {
      const { benchReplay } = await import("./replay.ts");
      await benchReplay(a);
      return;
    }
    case "tune": {
      const { getEngine } = await import("../engine/engine.ts");
      const { tuneKernels } = await import("../engine/tune.ts");
      const e = await getEngine();
      console.log(`adapter: ${adapterLine(e.gpu.report)}`);
      // the `wide` plans also for the bench's own GEMM rows (4096×1280×1280 among them)
      const { enumerateCases } = await import("./kernels.ts");
      const { ssd1bGemms, ssd1bConvs } = await import("../engine/tune.ts");
      const cfg = JSON.parse(readFileSync(join(ROOT_DIR, "bench", "configs", "ssd1b-unet.json"), "utf8"));
      const cases = enumerateCases(cfg, 1024);
      const rows = cases.filter((c) => c.kind === "matmul").map((c) => [1, c.p.m, c.p.n, c.p.k] as [number, number, number, number]);
      // and the conv plans for its 3×3 conv rows (1×1 ones without a bias run as matmuls)
      const convRows = cases.filter((c) => c.kind === "conv" && c.p.k > 1).map((c) => [c.p.n, c.p.cin, c.p.h, c.p.cout, c.p.k] as [number, number, number, number, number]);
      const scale = a.scale ?? 1;
      const dedupe = <T extends number[]>(xs: T[]) => [...new Map(xs.map((g) => [g.join("x"), g])).values()];
      const gemms = scale === 1 ? dedupe([...ssd1bGemms(4096), ...rows]) : undefined;
      const convs = scale === 1 ? dedupe([...ssd1bConvs(128), ...convRows]) : undefined;
      const res = await tuneKernels(e, { scale, gemms, convs, log: (l) => console.log(l) });
      if (a.json) writeFileSync(a.json, JSON.stringify({ adapter: e.gpu.report, results: res }, null, 2));
      return;
    }
    case "gemmlab": {
      const { benchGemmLab } = await import("./gemmlab.ts");
      const wish = String(process.env.SSD_DEPTH_ADAPTER ?? "").toLowerCase();
      await benchGemmLab({ set: a.set, shapes: a.shapes, json: a.json, peak: a.peak, deadline: a.deadline, driver: wish === "lavapipe" || wish === "swiftshader" ? wish : undefined });
      return;
    }
    case "e2e": {
      const { benchE2e } = await import("./e2e.ts" as string);
      await benchE2e(a);
      return;
    }
    default:
      throw new SsdError("E_BAD_PARAM", `unknown bench suite '${suite}': kernels, tiles, tune, gemmlab, load, unet, e2e, replay`);
  }
}

/**
 * Runs the suite in one child per runtime × driver; `kernels` rows are then
 * printed side by side. --json FILE gets an array with each leg's own JSON
 * and its name ({ leg, adapter, rows, … } for kernels, { leg, adapter,
 * results } for tiles).
 */
function matrix(suite: string, a: any, argv: string[]): void {
  const runtimes = list(a.runtime).length ? list(a.runtime) : ["node"];
  const drivers = list(a.driver).length ? list(a.driver) : [""];
  const dir = mkdtempSync(join(tmpdir(), "ssd-bench-"));
  const legs: { leg: string; rows?: BenchRow[] }[] = [];
  const passthrough = argv.filter((x, i) => !["--runtime", "--driver", "--json"].includes(x) && !["--runtime", "--driver", "--json"].includes(argv[i - 1]));
  for (const rt of runtimes) for (const drv of drivers) {
    const leg = `${rt}${drv ? `+${drv}` : ""}`;
    const json = join(dir, `${leg}.json`);
    const env: Record<string, string | undefined> = { ...process.env };
    if (drv) {
      const icd = findIcd(drv);
      if (!icd) { console.log(`== ${leg}: skipped, ${drv} is not installed`); continue; }
      env.VK_ICD_FILENAMES = icd;
      env.SSD_DEPTH_ADAPTER = drv;
    }
    const cmd = rt === "deno" ? join(ROOT_DIR, "node_modules", ".bin", "deno") : process.execPath;
    const args = rt === "deno" ? ["run", "-A", "--quiet", join(ROOT_DIR, "bench", "main.ts"), ...passthrough, "--json", json] : ["--import", "tsx", join(ROOT_DIR, "bench", "main.ts"), ...passthrough, "--json", json];
    console.log(`\n== ${leg}`);
    const r = spawnSync(cmd, args, { env, stdio: "inherit" });
    // a leg that failed may still have written its rows (a row that failed its check does)
    if (r.status !== 0) console.log(`== ${leg}: failed (exit ${r.status})`);
    try { legs.push({ leg, ...JSON.parse(readFileSync(json, "utf8")) }); } catch { /* the leg wrote no JSON */ }
  }
  if (a.json && legs.length) writeFileSync(a.json, JSON.stringify(legs, null, 2));
  const results = legs.filter((l): l is { leg: string; rows: BenchRow[] } => Array.isArray(l.rows));
  if (suite !== "kernels" || results.length === 0) return;
  console.log(`\nside by side (median ms; GFLOP/s or GB/s)`);
  const names = results[0].rows.map((r) => r.name);
  console.log("row".padEnd(34) + results.map((r) => `| ${r.leg.padEnd(36)}`).join(""));
  for (const n of names) {
    let line = n.padEnd(34);
    for (const res of results) {
      const r = res.rows.find((x) => x.name === n);
      const rate = (ms: number) => (r!.kind === "group_norm" || r!.kind === "layer_norm" || r!.kind === "copy" ? `${(r!.bytes / ms / 1e6).toFixed(1)}GB/s` : `${(r!.flops / ms / 1e6).toFixed(1)}GF/s`);
      const ours = r?.ms ? `${fmtMs(r.ms)} ${rate(r.ms)}` : r?.error ? "error" : "-";
      const tf = r?.tfjsMs ? ` tfjs ${rate(r.tfjsMs)}` : r?.tfjs ? " tfjs fails" : "";
      line += `| ${(ours + tf).padEnd(36)}`;
    }
    console.log(line);
  }
}

async function main(): Promise<number> {
  const argv = hideBin(process.argv);
  const a: any = await yargs(argv)
    .scriptName("npm run bench --")
    .command("$0 <suite>", "run a benchmark suite")
    .positional("suite", { type: "string" })
    .option("size", { type: "number" })
    .option("vs", { type: "string", describe: "peers: tfjs,numpy" })
    .option("json", { type: "string", describe: "write results as JSON" })
    .option("short", { type: "boolean", describe: "CI mode: a few small shapes" })
    .option("runtime", { type: "string", describe: "node,deno: run once per runtime" })
    .option("driver", { type: "string", describe: "lavapipe,swiftshader: run once per driver" })
    .option("cap", { type: "number", describe: "time cap per row (ms)" })
    .option("iters", { type: "number" })
    .option("reps", { type: "number", describe: "dispatches per timed sample (default 1 on CPU adapters, 20 on GPUs)" })
    .option("dtype", { type: "string", describe: "f32 (default), f16 (activations and weights) or f16w (f16 weights)" })
    .option("peak", { type: "number", describe: "the adapter's peak GFLOP/s: rows print their percentage of it" })
    .option("only", { type: "string", describe: "rows whose name contains one of these (comma-separated)" })
    .option("check", { type: "boolean", default: true, describe: "kernels, tiles: check each row's output at sampled positions against a float64 reference (--no-check: skip)" })
    .option("config", { type: "string" })
    .option("synthetic", { type: "string" })
    .option("batch", { type: "number" })
    .option("steps", { type: "number" })
    .option("profile", { type: "boolean", describe: "unet: GPU time per kernel and shape (timestamp queries); kernels, tiles: each row's kernel time on any adapter with timestamp queries (always on a GPU), per pass where an op runs several" })
    .option("direct", { type: "boolean", describe: "e2e: encode every op of every step (no recorded replay)" })
    .option("precision", { type: "string", describe: "unet: fp32 (default) or fp16 activations" })
    .option("replay", { type: "number", describe: "unet: record the step once and replay it N times" })
    .option("scale", { type: "number", describe: "tune: shape scale (1 = SSD-1B at 512²)" })
    .option("tiles", { type: "string", describe: "tiles: wide matmul tiles (or kernel names as baselines), comma-separated; any BMxBNk<8|16>t<4|8> that fits the device" })
    .option("splits", { type: "string", describe: "tiles: run each wide tile in these split-K part counts (1-4, comma-separated)" })
    .option("plans", { type: "string", describe: "tiles: whole wide plans too, e.g. 64x256k8t8/2,64x256k8t8/4r12,64x256k8t8/7s56 (<tile>/<parts>[r<tail block rows>|s<serial tail blocks>])" })
    .option("set", { type: "string", describe: "gemmlab: quick, sweep (default) or focus" })
    .option("shapes", { type: "boolean", describe: "gemmlab: the best variants on SSD-1B's linear shapes too" })
    .option("deadline", { type: "number", describe: "gemmlab: seconds after which no new variant starts" })
    .strict(false)
    .help()
    .parseAsync();
  const suite = String(a.suite);
  if (suite === "gemmlab" && (a.runtime || a.driver)) throw new SsdError("E_BAD_PARAM", "gemmlab runs under Node on one adapter: pick a CPU driver with SSD_DEPTH_ADAPTER=lavapipe|swiftshader");
  if (a.runtime || a.driver) matrix(suite, a, argv);
  else await runSuite(suite, a);
  return 0;
}

let code = 0;
try {
  code = await main();
} catch (e: any) {
  console.error(e instanceof SsdError ? `${e.code}: ${e.message}` : `E_INTERNAL: ${e?.stack ?? e}`);
  code = 1;
} finally {
  await releaseDevice();
}
// a row whose output failed its check (bench/check.ts), or that did not run, sets process.exitCode
code ||= Number(process.exitCode ?? 0) || 0;
if (typeof Deno !== "undefined") Deno.exit(code);
process.exit(code);
