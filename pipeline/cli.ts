// ssd-depth command line. Each command lives in pipeline/commands/<name>.ts and
// exports a yargs CommandModule; this file only wires them together and turns
// coded errors into a one-line message and a non-zero exit (never a stack trace).

import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { SsdError } from "../engine/errors.ts";
import { releaseDevice } from "../engine/device.ts";
import { getEngine } from "../engine/engine.ts";
import { parsePrecision } from "../engine/precision.ts";
import { commands } from "./commands/index.ts";

declare const Deno: any;

export async function main(argv: string[]): Promise<number> {
  let code = 0;
  const y = yargs(argv)
    .scriptName("ssd-depth")
    // a repeated option takes its last value (as most CLIs), never an array a handler does not expect
    .parserConfiguration({ "duplicate-arguments-array": false })
    .usage("$0 <command> [options]")
    .option("adapter", { type: "string", describe: "WebGPU adapter: lavapipe, swiftshader, gpu, cpu, or a name substring (env SSD_DEPTH_ADAPTER)", global: true })
    .option("precision", { type: "string", describe: "fp32 (default: f32 activations, weights as stored), fp32-weights, or fp16 (f16 activations; needs shader-f16)", global: true })
    .middleware(async (a) => {
      if (a.adapter) process.env.SSD_DEPTH_ADAPTER = String(a.adapter);
      if (a.precision) {
        const e = await getEngine();
        e.precision = parsePrecision(String(a.precision), e.gpu.f16);
      }
    })
    .demandCommand(1, "name a command (ssd-depth --help lists them)")
    .strict()
    .fail((msg, err, yy) => {
      if (err) throw err;
      console.error(`E_BAD_PARAM: ${msg}\n(ssd-depth --help shows the options)`);
      code = 2;
    })
    .help()
    .wrap(Math.min(110, process.stdout.columns || 100));
  for (const c of commands) y.command(c as any);
  try {
    await y.parseAsync();
  } catch (e: any) {
    if (e instanceof SsdError) console.error(`${e.code}: ${e.message}`);
    else console.error(`E_INTERNAL: ${e?.message ?? e}\n${process.env.SSD_DEPTH_DEBUG ? e?.stack ?? "" : "(set SSD_DEPTH_DEBUG=1 for a stack trace)"}`);
    code = code || 1;
  } finally {
    await releaseDevice();
  }
  return code;
}

// Run when executed (node bin/ssd-depth.js, deno run pipeline/cli.ts), not when imported.
const isMain = typeof Deno !== "undefined" ? (import.meta as any).main : /(cli\.ts|ssd-depth(\.js)?)$/.test(process.argv[1] ?? "");
if (isMain) {
  const code = await main(hideBin(process.argv));
  if (typeof Deno !== "undefined") Deno.exit(code);
  process.exit(code);
}
