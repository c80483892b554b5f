// `ssd-depth encode-prompt --model DIR "a prompt"`: runs SDXL prompt encoding
// (both CLIP encoders) on a model folder or hub id and prints the token ids'
// lengths, every result's shape and norms, load and encode times, and GPU memory.
// A debugging aid for the text path, and its timing on real-size encoders.

import type { CommandModule } from "yargs";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { getEngine } from "../../engine/engine.ts";
import { parsePrecision } from "../../engine/precision.ts";
import type { Tensor } from "../../engine/tensor.ts";
import { resolveModel } from "../../weights/resolve.ts";
import { encodePrompt, loadSDXLTextEncoders } from "../prompt.ts";

interface EncodePromptArgs {
  prompt: string;
  model: string;
  negative?: string;
  "clip-skip"?: number;
  "num-images"?: number;
  precision: string;
  repeat: number;
  json?: boolean;
}

const MiB = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

async function stats(t: Tensor): Promise<{ shape: number[]; dtype: string; norm: number; mean: number; std: number; min: number; max: number }> {
  const v = await t.read();
  let s = 0, s2 = 0, min = Infinity, max = -Infinity;
  for (const x of v) { s += x; s2 += x * x; if (x < min) min = x; if (x > max) max = x; }
  const mean = s / v.length;
  return { shape: [...t.shape], dtype: t.dtype, norm: Math.sqrt(s2), mean, std: Math.sqrt(Math.max(0, s2 / v.length - mean * mean)), min, max };
}

export const encodePromptCommand: CommandModule<{}, EncodePromptArgs> = {
  command: "encode-prompt <prompt>",
  describe: "encode a prompt with the model's two CLIP text encoders (SDXL encode_prompt) and print shapes, norms, time and memory",
  builder: (y) => y
    .positional("prompt", { type: "string", demandOption: true, describe: "the prompt" })
    .option("model", { type: "string", demandOption: true, describe: "diffusers SDXL folder (model_index.json, tokenizer*/, text_encoder*/) or hub id" })
    .option("negative", { alias: "negative-prompt", type: "string", describe: "negative prompt (absent: zeros when the model says force_zeros_for_empty_prompt)" })
    .option("clip-skip", { type: "number", describe: "layers to skip from the end (hidden_states[-(n+2)])" })
    .option("num-images", { type: "number", default: 1, describe: "images per prompt (rows are repeated)" })
    .option("precision", { type: "string", default: "fp32", describe: "fp32 (weights as stored), fp32-weights, fp16" })
    .option("repeat", { type: "number", default: 2, describe: "encode this many times (the first includes pipeline compilation)" })
    .option("json", { type: "boolean", describe: "machine-readable output" }) as any,
  handler: async (args) => {
    const e = await getEngine();
    e.precision = parsePrecision(args.precision, e.gpu.f16);
    const dir = existsSync(join(args.model, "model_index.json"))
      ? args.model
      : (await resolveModel(args.model, { components: ["tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2"] })).root;

    const t0 = performance.now();
    const enc = await loadSDXLTextEncoders(dir, { precision: e.precision });
    await e.sync();
    const loadMs = performance.now() - t0;
    const afterLoad = e.memory();

    const times: number[] = [];
    let result: Record<string, unknown> = {};
    for (let i = 0; i < Math.max(1, args.repeat); i++) {
      const last = i === Math.max(1, args.repeat) - 1;
      const t1 = performance.now();
      result = await e.scope(async () => {
        const r = await encodePrompt(enc, args.prompt, args.negative ?? null, { clipSkip: args["clip-skip"] ?? null, numImagesPerPrompt: args["num-images"] });
        await e.sync();
        times.push(performance.now() - t1);
        if (!last) return {};
        const out: Record<string, unknown> = {
          prompt_embeds: await stats(r.promptEmbeds),
          pooled_prompt_embeds: await stats(r.pooledPromptEmbeds),
        };
        if (r.negativePromptEmbeds) out.negative_prompt_embeds = { ...(await stats(r.negativePromptEmbeds)), zeros: r.negativeIsZeros };
        if (r.negativePooledPromptEmbeds) out.negative_pooled_prompt_embeds = await stats(r.negativePooledPromptEmbeds);
        const eosOf = (ids: number[], eos: number) => ids.indexOf(eos) + 1;
        const toks = [enc.tokenizer, enc.tokenizer_2].filter((t) => t !== null);
        out.tokens = r.inputIds.map((ids, k) => ({ tokenizer: k === r.inputIds.length - 1 ? "tokenizer_2" : "tokenizer", length: ids[0].length, used: eosOf(ids[0], toks[k]!.eosId), head: ids[0].slice(0, 8) }));
        return out;
      });
    }
    const mem = e.memory();
    const info = {
      model: dir,
      adapter: e.gpu.report.name,
      precision: args.precision,
      encoders: {
        text_encoder: enc.text_encoder ? { layers: enc.text_encoder.config.num_hidden_layers, hidden: enc.text_encoder.config.hidden_size, act: enc.text_encoder.config.hidden_act } : null,
        text_encoder_2: { layers: enc.text_encoder_2.config.num_hidden_layers, hidden: enc.text_encoder_2.config.hidden_size, act: enc.text_encoder_2.config.hidden_act, projection: enc.text_encoder_2.config.projection_dim },
      },
      force_zeros_for_empty_prompt: enc.forceZerosForEmptyPrompt,
      ...result,
      time_ms: { load: loadMs, encode: times },
      memory: { weights: afterLoad.weights, activations_peak: mem.peak, pool_allocated_peak: mem.peakAllocated, rss: process.memoryUsage().rss },
    };
    if (args.json) {
      console.log(JSON.stringify(info, null, 2));
      return;
    }
    console.log(`model:     ${dir}`);
    console.log(`adapter:   ${info.adapter} (precision ${args.precision})`);
    const te = info.encoders.text_encoder, te2 = info.encoders.text_encoder_2;
    console.log(`encoders:  ${te ? `text_encoder ${te.layers}×${te.hidden} ${te.act}, ` : ""}text_encoder_2 ${te2.layers}×${te2.hidden} ${te2.act} → ${te2.projection}`);
    for (const t of (result.tokens as any[]) ?? []) console.log(`${t.tokenizer.padEnd(11)} ${t.used}/${t.length} ids used: [${t.head.join(", ")}, ...]`);
    for (const name of ["prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds"]) {
      const s = result[name] as any;
      if (!s) continue;
      console.log(`${name.padEnd(30)} [${s.shape.join(", ")}] ${s.dtype}  norm ${s.norm.toPrecision(6)}  mean ${s.mean.toExponential(3)}  std ${s.std.toPrecision(4)}  min ${s.min.toPrecision(4)}  max ${s.max.toPrecision(4)}${s.zeros ? "  (zeros: force_zeros_for_empty_prompt)" : ""}`);
    }
    console.log(`time:      load ${info.time_ms.load.toFixed(0)} ms; encode ${times.map((t) => `${t.toFixed(1)} ms`).join(", ")} (first includes pipeline compilation)`);
    console.log(`memory:    weights ${MiB(info.memory.weights)}, activations peak ${MiB(info.memory.activations_peak)}, pool peak ${MiB(info.memory.pool_allocated_peak)}, process RSS ${MiB(info.memory.rss)}`);
  },
};
