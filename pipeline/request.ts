// One request parser for `generate --request FILE`, CLI flags and the HTTP
// server. Accepts diffusers' and Segmind's field names; seeds are read from the
// raw JSON text as integers (JSON.parse would round 9715432854... above 2^53),
// never through a float; every value is validated up front with E_BAD_PARAM.

import { SsdError } from "../engine/errors.ts";
import { parsePythonJson, type JsonValue } from "../weights/json.ts";

export interface GenerationRequest {
  prompt: string;
  negativePrompt: string | null;
  /** null = pick a random seed (Segmind's -1) */
  seed: bigint | null;
  steps: number;
  guidance: number;
  strength: number;
  controlnetScale: number;
  controlStart: number;
  controlEnd: number;
  guessMode: boolean;
  /** scheduler name as given (CLI, Segmind or diffusers name); resolved by pipeline/schedulers */
  scheduler: string;
  width: number | null;
  height: number | null;
  batch: number;
  /** base64 / data URL images (server) */
  image?: string;
  depthImage?: string;
  /** server: return JSON with base64 images */
  base64?: boolean;
}

/** Defaults of Segmind's hosted SSD-1B Depth. */
export const DEFAULTS = {
  steps: 30,
  guidance: 7.5,
  strength: 1.0,
  controlnetScale: 0.5,
  controlStart: 0,
  controlEnd: 1,
  scheduler: "euler",
  batch: 1,
} as const;

export function defaultRequest(): GenerationRequest {
  return {
    prompt: "",
    negativePrompt: null,
    seed: null,
    steps: DEFAULTS.steps,
    guidance: DEFAULTS.guidance,
    strength: DEFAULTS.strength,
    controlnetScale: DEFAULTS.controlnetScale,
    controlStart: DEFAULTS.controlStart,
    controlEnd: DEFAULTS.controlEnd,
    guessMode: false,
    scheduler: DEFAULTS.scheduler,
    width: null,
    height: null,
    batch: DEFAULTS.batch,
  };
}

const bad = (msg: string): never => { throw new SsdError("E_BAD_PARAM", msg); };

function num(v: JsonValue | undefined, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) bad(`${field} must be a finite number, got ${v}`);
    return v;
  }
  if (typeof v === "string") bad(`${field} must be a JSON number, not the string ${JSON.stringify(v)} (send ${field}: ${v.trim() || 0} without quotes)`);
  return bad(`${field} must be a number, got ${JSON.stringify(v)}`);
}

function int(v: JsonValue | undefined, field: string): number | undefined {
  const n = num(v, field);
  if (n !== undefined && !Number.isInteger(n)) bad(`${field} must be an integer, got ${n}`);
  return n;
}

function str(v: JsonValue | undefined, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") bad(`${field} must be a string`);
  return v as string;
}

function bool(v: JsonValue | undefined, field: string): boolean | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") bad(`${field} must be true or false`);
  return v as boolean;
}

/**
 * Seeds as integers from text: "42", "9715432854", 42n; -1 (Segmind) or
 * "random" mean a random seed (null). Never goes through a float.
 */
export function parseSeed(v: unknown, field = "seed"): bigint | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "bigint") return v === -1n ? null : checkSeed(v, field);
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) bad(`${field} ${v} is not an integer that can be read exactly; pass it as text`);
    return v === -1 ? null : checkSeed(BigInt(v), field);
  }
  if (typeof v === "string") {
    const s = v.trim();
    if (s === "random" || s === "-1") return null;
    if (!/^-?\d+$/.test(s)) bad(`${field} must be an integer, got ${JSON.stringify(v)}`);
    return checkSeed(BigInt(s), field);
  }
  return bad(`${field} must be an integer`);
}

function checkSeed(s: bigint, field: string): bigint {
  if (s < 0n || s >= 1n << 64n) bad(`${field} must be between 0 and 2^64-1 (or -1 for random), got ${s}`);
  return s;
}

const KNOWN_FIELDS = new Set([
  "prompt", "negative_prompt", "seed", "num_inference_steps", "steps", "guidance_scale", "strength",
  "controlnet_conditioning_scale", "controlnet_scale", "control_guidance_start", "control_guidance_end",
  "guess_mode", "scheduler", "width", "height", "samples", "num_images_per_prompt", "batch",
  "image", "depth_image", "control_image", "base64", "img_width", "img_height",
]);

/**
 * Applies a JSON request object (diffusers' or Segmind's names) onto `base`.
 * Unknown fields are reported through `warn`, not silently dropped.
 */
export function applyRequestObject(base: GenerationRequest, obj: JsonValue, warn: (m: string) => void = () => {}): GenerationRequest {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) bad("the request must be a JSON object");
  const o = obj as Record<string, JsonValue>;
  const r = { ...base };
  for (const k of Object.keys(o)) if (!KNOWN_FIELDS.has(k)) warn(`request field '${k}' is not used`);
  const prompt = str(o.prompt, "prompt");
  if (prompt !== undefined) r.prompt = prompt;
  if ("negative_prompt" in o) r.negativePrompt = str(o.negative_prompt, "negative_prompt") ?? null;
  if ("seed" in o) r.seed = parseSeed(o.seed);
  const steps = int(o.num_inference_steps ?? o.steps, "num_inference_steps");
  if (steps !== undefined) r.steps = steps;
  const g = num(o.guidance_scale, "guidance_scale");
  if (g !== undefined) r.guidance = g;
  const s = num(o.strength, "strength");
  if (s !== undefined) r.strength = s;
  if (o.controlnet_conditioning_scale !== undefined && o.controlnet_scale !== undefined) {
    const a = num(o.controlnet_conditioning_scale, "controlnet_conditioning_scale"), b = num(o.controlnet_scale, "controlnet_scale");
    if (a !== b) bad("controlnet_conditioning_scale and controlnet_scale are both given and differ; send one");
  }
  const cs = num(o.controlnet_conditioning_scale ?? o.controlnet_scale, "controlnet_conditioning_scale");
  if (cs !== undefined) r.controlnetScale = cs;
  const c0 = num(o.control_guidance_start, "control_guidance_start");
  if (c0 !== undefined) r.controlStart = c0;
  const c1 = num(o.control_guidance_end, "control_guidance_end");
  if (c1 !== undefined) r.controlEnd = c1;
  const gm = bool(o.guess_mode, "guess_mode");
  if (gm !== undefined) r.guessMode = gm;
  const sch = str(o.scheduler, "scheduler");
  if (sch !== undefined) r.scheduler = sch;
  const w = int(o.width ?? o.img_width, "width");
  if (w !== undefined) r.width = w;
  const h = int(o.height ?? o.img_height, "height");
  if (h !== undefined) r.height = h;
  const n = int(o.samples ?? o.num_images_per_prompt ?? o.batch, "samples");
  if (n !== undefined) r.batch = n;
  const img = str(o.image, "image");
  if (img !== undefined) r.image = img;
  const depth = str(o.depth_image ?? o.control_image, "depth_image");
  if (depth !== undefined) r.depthImage = depth;
  const b64 = bool(o.base64, "base64");
  if (b64 !== undefined) r.base64 = b64;
  return r;
}

/** Parses request JSON text (seeds exact). */
export function parseRequestText(text: string, source = "request"): JsonValue {
  try {
    return parsePythonJson(text, { bigints: true, source });
  } catch (e: any) {
    throw new SsdError("E_BAD_PARAM", e?.message ?? String(e));
  }
}

export interface ValidateLimits {
  maxSide?: number;
  maxBatch?: number;
}

/** Validates every parameter with a message that says what to send instead. */
export function validateRequest(r: GenerationRequest, limits: ValidateLimits = {}): void {
  const maxSide = limits.maxSide ?? 4096;
  const maxBatch = limits.maxBatch ?? 16;
  if (!r.prompt || !r.prompt.trim()) bad("a prompt is required (--prompt \"...\" or \"prompt\" in the request)");
  if (!Number.isInteger(r.steps) || r.steps < 1 || r.steps > 1000) bad(`num_inference_steps must be an integer from 1 to 1000, got ${r.steps}`);
  if (!(r.guidance >= 0) || r.guidance > 100) bad(`guidance_scale must be between 0 and 100, got ${r.guidance}`);
  if (!(r.strength > 0 && r.strength <= 1)) bad(`strength must be in (0, 1], got ${r.strength}`);
  if (!(r.controlnetScale >= 0) || r.controlnetScale > 10) bad(`controlnet scale must be between 0 and 10, got ${r.controlnetScale}`);
  if (!(r.controlStart >= 0 && r.controlStart <= 1) || !(r.controlEnd >= 0 && r.controlEnd <= 1) || r.controlStart > r.controlEnd) {
    bad(`control guidance start/end must satisfy 0 ≤ start ≤ end ≤ 1, got ${r.controlStart}..${r.controlEnd}`);
  }
  for (const [name, v] of [["width", r.width], ["height", r.height]] as const) {
    if (v === null) continue;
    if (!Number.isInteger(v) || v < 8 || v % 8 !== 0) bad(`${name} must be a positive multiple of 8, got ${v}`);
    if (v > maxSide) bad(`${name} ${v} exceeds the limit of ${maxSide} pixels`);
  }
  if (!Number.isInteger(r.batch) || r.batch < 1 || r.batch > maxBatch) bad(`samples/batch must be an integer from 1 to ${maxBatch}, got ${r.batch}`);
  if (r.strength < 1 && r.steps * r.strength < 1) bad(`strength ${r.strength} with ${r.steps} steps runs no denoising step (int(steps × strength) = 0); raise one of them`);
}
