// `npm run demo`: the README's main job on a fresh machine, with no downloads.
// Makes the tiny random-weight model (once), then runs
//   ssd-depth generate --model models/tiny-ssd1b-depth --image examples/scene-128.png ...
// exactly as a user would, writing out.png and depth.png.

import { existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { makeTinyModel } from "./make-tiny-model.ts";
import { main } from "../pipeline/cli.ts";

declare const Deno: any;
const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const model = join(ROOT, "models", "tiny-ssd1b-depth");

if (!existsSync(join(model, "model_index.json"))) await makeTinyModel(model, { log: (m) => console.log(m) });
const args = [
  "generate", "--model", model, "--image", join(ROOT, "examples", "scene-128.png"),
  "--prompt", "a cozy wooden cabin beside a calm mountain lake at sunset, warm light",
  "--steps", "8", "--seed", "42", "--out", "out.png", "--save-depth", "depth.png", "--offline",
];
console.log(`ssd-depth ${args.map((a) => (a.includes(" ") ? JSON.stringify(a) : a)).join(" ")}`);
const code = await main(args);
if (code === 0) {
  console.log([
    "",
    "out.png and depth.png come from a tiny model with random weights, so the picture is noise-like:",
    "that checks every stage (depth estimation, both text encoders, ControlNet, UNet, VAE) on this machine.",
    "Real weights give real pictures:",
    "  npx ssd-depth generate --image photo.jpg --prompt \"a watercolor of a lighthouse\" --out out.png",
    "downloads segmind/SSD-1B, diffusers/controlnet-depth-sdxl-1.0-small and Intel/dpt-hybrid-midas on first use (README: Real weights).",
  ].join("\n"));
}
if (typeof Deno !== "undefined") Deno.exit(code);
process.exit(code);
