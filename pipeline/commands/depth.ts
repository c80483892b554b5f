// `ssd-depth depth --image in.png --out depth.png [--depth-model ID|DIR] [--size N] [--16bit]`:
// estimates a depth map with a DPT (MiDaS v3) or Depth Anything model and writes
// it as a grayscale PNG at the image's size (near = white): 8-bit as diffusers'
// depth-ControlNet examples save it (min–max normalised, ×255, truncated), or
// 16-bit. Prints where the time went.

import type { CommandModule } from "yargs";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { getEngine } from "../../engine/engine.ts";
import { SsdError } from "../../engine/errors.ts";
import { resolveComponent } from "../../weights/resolve.ts";
import { loadImage, savePng } from "../image.ts";
import { depthTo16, estimateDepth, loadDepthEstimator } from "../depth.ts";

export const DEFAULT_DEPTH_MODEL = "Intel/dpt-hybrid-midas";

interface DepthArgs {
  image: string;
  out: string;
  "depth-model": string;
  size?: number;
  "16bit"?: boolean;
}

/** A depth model folder: the folder itself (config.json), a pipeline's depth/ subfolder, or a hub id. */
export async function resolveDepthModel(spec: string): Promise<string> {
  if (existsSync(join(spec, "config.json"))) return spec;
  if (existsSync(join(spec, "depth", "config.json"))) return join(spec, "depth");
  return resolveComponent(spec, null);
}

const ms = (x: number) => `${x.toFixed(0)} ms`;

export const depthCommand: CommandModule<{}, DepthArgs> = {
  command: "depth",
  describe: "estimate a depth map (DPT / MiDaS v3 or Depth Anything) and write it as a grayscale PNG",
  builder: (y) => y
    .option("image", { type: "string", demandOption: true, describe: "input image (PNG or JPEG)" })
    .option("out", { type: "string", demandOption: true, describe: "output PNG (grayscale, the image's size, near = white)" })
    .option("depth-model", { type: "string", default: DEFAULT_DEPTH_MODEL, describe: "depth model folder (config.json + safetensors + preprocessor_config.json), a pipeline folder with depth/, or hub id; the family comes from config.json's model_type" })
    .option("size", { type: "number", describe: "model input size (square target of the pre-processing; default: preprocessor_config.json's). A DPT-hybrid takes only its image_size" })
    .option("16bit", { type: "boolean", default: false, describe: "write 16-bit samples instead of 8-bit" }) as any,
  handler: async (args) => {
    if (args.size !== undefined && (!Number.isInteger(args.size) || args.size < 1 || args.size > 4096)) {
      throw new SsdError("E_BAD_PARAM", `--size must be an integer from 1 to 4096, got ${args.size}`);
    }
    const t0 = performance.now();
    const image = await loadImage(args.image);
    const tImg = performance.now();
    const dir = await resolveDepthModel(args["depth-model"]);
    const e = await getEngine();
    const est = await loadDepthEstimator(dir);
    await e.sync();
    const tLoad = performance.now();
    const r = await estimateDepth(est, image, { size: args.size });
    const tRun = performance.now();
    const bits16 = !!args["16bit"];
    await savePng(args.out, { width: r.width, height: r.height, channels: 1, data: bits16 ? depthTo16(r.normalized) : r.u8 }, { gray: true, bits16 });
    const tWrite = performance.now();
    const family = r.family === "dpt" ? "DPT" : "Depth Anything";
    console.log(`depth model: ${family} (${dir}) on ${e.gpu.report.name}`);
    console.log(`input:       ${args.image} ${image.width}x${image.height} -> model input ${r.inputSize[1]}x${r.inputSize[0]} -> predicted depth ${r.predictedShape[1]}x${r.predictedShape[0]}`);
    console.log(`time:        image ${ms(tImg - t0)}, load ${ms(tLoad - tImg)}, preprocess ${ms(r.timings.preprocess)}, model ${ms(r.timings.model)}, postprocess ${ms(r.timings.postprocess)}, write ${ms(tWrite - tRun)}; total ${ms(tWrite - t0)}`);
    console.log(`wrote:       ${args.out} (${bits16 ? 16 : 8}-bit grayscale ${r.width}x${r.height})`);
  },
};
