// SDXL prompt encoding, as diffusers' SDXL pipelines' `encode_prompt` (v0.27.2;
// the ControlNet img2img pipeline's is a copy):
//
//   ids   = tokenizer(prompt), tokenizer_2(prompt_2 or prompt)      (padded to 77)
//   embed = cat([text_encoder(ids).hidden_states[-2],
//                text_encoder_2(ids_2).hidden_states[-2]], -1)     [B, 77, 768 + 1280]
//   pooled = text_encoder_2(ids_2).text_embeds                      [B, 1280]
//
// clip_skip picks hidden_states[-(clip_skip + 2)] for the prompt (diffusers does
// not apply it to the negative prompt). With classifier-free guidance and no
// negative prompt (null, not ""), a pipeline whose config says
// `force_zeros_for_empty_prompt` (SDXL's and SSD-1B's do) uses zeros for the
// negative embeds instead of encoding "". Every result is repeated
// `numImagesPerPrompt` times per prompt (p0, p0, p1, p1, ...).

import { join } from "node:path";
import { existsSync } from "node:fs";
import type { Tensor } from "../engine/tensor.ts";
import type { Engine } from "../engine/engine.ts";
import * as ops from "../engine/ops/index.ts";
import { SsdError } from "../engine/errors.ts";
import { ClipTokenizer } from "./tokenizer.ts";
import { CLIPTextModel } from "./models/clip.ts";
import { readJsonFile } from "../weights/json.ts";
import type { WeightStoreOptions } from "../weights/store.ts";

/** The text half of an SDXL pipeline. `tokenizer`/`text_encoder` are null in refiner-style pipelines. */
export interface SDXLTextEncoders {
  tokenizer: ClipTokenizer | null;
  text_encoder: CLIPTextModel | null;
  tokenizer_2: ClipTokenizer;
  text_encoder_2: CLIPTextModel;
  /** the pipeline config's `force_zeros_for_empty_prompt` (diffusers' default for SDXL: true) */
  forceZerosForEmptyPrompt: boolean;
}

/** model_index.json lists a component as [library, class], or [null, null] when the pipeline has none. */
function listed(index: Record<string, any>, name: string): boolean {
  const v = index[name];
  return Array.isArray(v) && v.length === 2 && v[0] !== null && v[1] !== null;
}

/**
 * Loads tokenizer/, tokenizer_2/, text_encoder/, text_encoder_2/ of a diffusers
 * SDXL folder, and `force_zeros_for_empty_prompt` from its model_index.json.
 */
export async function loadSDXLTextEncoders(
  modelDir: string,
  opts: WeightStoreOptions & { forceZerosForEmptyPrompt?: boolean; warn?: (m: string) => void } = {},
): Promise<SDXLTextEncoders> {
  const indexPath = join(modelDir, "model_index.json");
  if (!existsSync(indexPath)) throw new SsdError("E_MODEL_NOT_FOUND", `${modelDir} has no model_index.json; point --model at a diffusers SDXL pipeline folder`);
  const index = await readJsonFile<Record<string, any>>(indexPath);
  const has = (name: string) => listed(index, name) && existsSync(join(modelDir, name));
  if (!has("tokenizer_2") || !has("text_encoder_2")) {
    throw new SsdError("E_MODEL_NOT_FOUND", `${modelDir}: an SDXL pipeline needs tokenizer_2/ and text_encoder_2/ (model_index.json and folders)`);
  }
  if (has("text_encoder") !== has("tokenizer")) throw new SsdError("E_MODEL_NOT_FOUND", `${modelDir}: text_encoder/ and tokenizer/ must come together`);
  const one = has("text_encoder");
  const { forceZerosForEmptyPrompt, warn, ...storeOpts } = opts;
  return {
    tokenizer: one ? await ClipTokenizer.load(join(modelDir, "tokenizer")) : null,
    text_encoder: one ? await CLIPTextModel.fromPretrained(join(modelDir, "text_encoder"), { ...storeOpts, label: "text_encoder", warn }) : null,
    tokenizer_2: await ClipTokenizer.load(join(modelDir, "tokenizer_2")),
    text_encoder_2: await CLIPTextModel.fromPretrained(join(modelDir, "text_encoder_2"), { ...storeOpts, label: "text_encoder_2", warn }),
    forceZerosForEmptyPrompt: forceZerosForEmptyPrompt ?? (index.force_zeros_for_empty_prompt === undefined ? true : !!index.force_zeros_for_empty_prompt),
  };
}

export interface EncodePromptOptions {
  /** prompt for tokenizer_2/text_encoder_2 (default: the prompt) */
  prompt2?: string | string[] | null;
  /** negative prompt for the second encoder (default: the negative prompt) */
  negativePrompt2?: string | string[] | null;
  /** layers skipped from the end: hidden_states[-(clipSkip + 2)]; null/undefined = the penultimate */
  clipSkip?: number | null;
  /** default 1 */
  numImagesPerPrompt?: number;
  /** default true; false gives no negative embeds */
  doClassifierFreeGuidance?: boolean;
  /** truncation warnings (default: the tokenizer's, console.warn) */
  onWarning?: (message: string) => void;
}

export interface PromptEmbeds {
  /** [B·n, 77, D1 + D2] */
  promptEmbeds: Tensor;
  /** [B·n, projection_dim] */
  pooledPromptEmbeds: Tensor;
  /** like promptEmbeds; null without classifier-free guidance */
  negativePromptEmbeds: Tensor | null;
  negativePooledPromptEmbeds: Tensor | null;
  /** whether the negative embeds are the zeros of force_zeros_for_empty_prompt */
  negativeIsZeros: boolean;
  /** token ids per encoder used ([encoder][prompt][77]), for debugging */
  inputIds: number[][][];
  negativeInputIds: number[][][] | null;
}

/** Python's `a or b` for an optional prompt: null, "" and [] fall through. */
function pyOr<T>(a: T | string | string[] | null | undefined, b: T): T | string | string[] {
  return a === null || a === undefined || a === "" || (Array.isArray(a) && a.length === 0) ? b : a;
}

const asList = (p: string | string[]): string[] => (typeof p === "string" ? [p] : p);

/** One encoder's part: the chosen hidden state [B, N, D] and its pooled output (text_embeds when projected). */
function encodeWith(tokenizer: ClipTokenizer, encoder: CLIPTextModel, prompts: string[], maxLength: number, hiddenIndex: number, onWarning?: (m: string) => void): { ids: number[][]; hidden: Tensor; pooled: Tensor } {
  const ids = prompts.map((p) => tokenizer.encode(p, { padding: "max_length", truncation: true, maxLength, onWarning }).ids);
  const out = encoder.forward(ids);
  const states = out.hiddenStates;
  const i = hiddenIndex < 0 ? states.length + hiddenIndex : hiddenIndex;
  if (i < 0 || i >= states.length) {
    throw new SsdError("E_BAD_PARAM", `clip skip asks for hidden state ${hiddenIndex} but the text encoder has ${states.length} (embeddings + ${states.length - 1} layers)`);
  }
  // "We are only ALWAYS interested in the pooled output of the final text encoder": output[0] is text_embeds with a projection.
  return { ids, hidden: states[i], pooled: out.textEmbeds ?? out.pooledOutput };
}

/** x.repeat(1, n, ...).view(B·n, ...): each row n times in a row. */
function repeatPerPrompt(x: Tensor, n: number): Tensor {
  if (n === 1) return x;
  const rep = ops.concat(new Array<Tensor>(n).fill(x), 1);
  const y = rep.reshape([x.dim(0) * n, ...x.shape.slice(1)]);
  rep.dispose();
  return y;
}

function zerosLike(e: Engine, x: Tensor): Tensor {
  return e.upload(new Float32Array(x.numel), x.shape, x.dtype);
}

/**
 * diffusers' `StableDiffusionXLPipeline.encode_prompt(prompt, prompt_2, device,
 * num_images_per_prompt, do_classifier_free_guidance, negative_prompt,
 * negative_prompt_2, clip_skip=clip_skip)`.
 */
export async function encodePrompt(
  enc: SDXLTextEncoders,
  prompt: string | string[],
  negativePrompt: string | string[] | null = null,
  opts: EncodePromptOptions = {},
): Promise<PromptEmbeds> {
  const e = enc.text_encoder_2.text_model.embeddings.token_embedding.engine;
  const n = opts.numImagesPerPrompt ?? 1;
  if (!Number.isInteger(n) || n < 1) throw new SsdError("E_BAD_PARAM", `num images per prompt must be a positive integer, got ${n}`);
  const cfg = opts.doClassifierFreeGuidance ?? true;
  const clipSkip = opts.clipSkip ?? null;
  if (clipSkip !== null && (!Number.isInteger(clipSkip) || clipSkip < 0)) throw new SsdError("E_BAD_PARAM", `clip skip must be an integer ≥ 0, got ${clipSkip}`);

  const prompts = asList(prompt);
  const batch = prompts.length;
  if (batch === 0) throw new SsdError("E_BAD_PARAM", "no prompt given");
  const prompts2 = asList(pyOr(opts.prompt2, prompt) as string | string[]);
  if (prompts2.length !== batch) throw new SsdError("E_BAD_PARAM", `prompt_2 has ${prompts2.length} entries for ${batch} prompts`);

  // Pairs of (tokenizer, encoder); zip() in diffusers pairs the first prompt list with the first encoder present.
  const pairs: [ClipTokenizer, CLIPTextModel][] = [];
  if (enc.tokenizer && enc.text_encoder) pairs.push([enc.tokenizer, enc.text_encoder]);
  pairs.push([enc.tokenizer_2, enc.text_encoder_2]);
  const promptLists = [prompts, prompts2];

  return e.scopeSync(() => {
    const hiddenIndex = clipSkip === null ? -2 : -(clipSkip + 2);
    const parts = pairs.map(([tok, te], i) => encodeWith(tok, te, promptLists[i], tok.modelMaxLength, hiddenIndex, opts.onWarning));
    let promptEmbeds = parts.length === 1 ? parts[0].hidden : ops.concat(parts.map((p) => p.hidden), -1);
    let pooledPromptEmbeds = parts[parts.length - 1].pooled;
    const inputIds = parts.map((p) => p.ids);

    let negativePromptEmbeds: Tensor | null = null;
    let negativePooledPromptEmbeds: Tensor | null = null;
    let negativeInputIds: number[][][] | null = null;
    const zeroOut = negativePrompt === null && enc.forceZerosForEmptyPrompt;
    if (cfg && zeroOut) {
      negativePromptEmbeds = zerosLike(e, promptEmbeds);
      negativePooledPromptEmbeds = zerosLike(e, pooledPromptEmbeds);
    } else if (cfg) {
      const neg = pyOr(negativePrompt, "") as string | string[];
      const neg2 = pyOr(opts.negativePrompt2, neg) as string | string[];
      const negs = typeof neg === "string" ? new Array<string>(batch).fill(neg) : neg;
      const negs2 = typeof neg2 === "string" ? new Array<string>(batch).fill(neg2) : neg2;
      if (negs.length !== batch || negs2.length !== batch) {
        throw new SsdError("E_BAD_PARAM", `the negative prompt has ${negs.length === batch ? negs2.length : negs.length} entries but there are ${batch} prompts; give one per prompt`);
      }
      const maxLength = promptEmbeds.dim(1);
      // diffusers takes hidden_states[-2] here whatever clip_skip says.
      const negParts = pairs.map(([tok, te], i) => encodeWith(tok, te, [negs, negs2][i], maxLength, -2, opts.onWarning));
      negativePromptEmbeds = negParts.length === 1 ? negParts[0].hidden : ops.concat(negParts.map((p) => p.hidden), -1);
      negativePooledPromptEmbeds = negParts[negParts.length - 1].pooled;
      negativeInputIds = negParts.map((p) => p.ids);
    }

    promptEmbeds = repeatPerPrompt(promptEmbeds, n);
    pooledPromptEmbeds = repeatPerPrompt(pooledPromptEmbeds, n);
    if (negativePromptEmbeds) negativePromptEmbeds = repeatPerPrompt(negativePromptEmbeds, n);
    if (negativePooledPromptEmbeds) negativePooledPromptEmbeds = repeatPerPrompt(negativePooledPromptEmbeds, n);
    return {
      promptEmbeds,
      pooledPromptEmbeds,
      negativePromptEmbeds,
      negativePooledPromptEmbeds,
      negativeIsZeros: cfg && zeroOut,
      inputIds,
      negativeInputIds,
    };
  });
}
