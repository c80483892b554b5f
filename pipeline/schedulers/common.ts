// Shared scheduler machinery: config reading, the noise-schedule tables, numpy /
// torch float details, and the step-plan design.
//
// DESIGN. A scheduler never touches latent arrays to do its math. For each step
// it computes, on the host, the scalar coefficients of diffusers' update (in the
// same float32 / float64 order diffusers uses: numpy float64 for the schedule,
// float32 0-dim torch tensors for per-step scalars), and returns a StepPlan: an
// elementwise program of linear combinations over named arrays. One function
// applies a plan: `applyPlanHost` on Float32Arrays here; a GPU apply of the very
// same plan on Tensors is one fused elementwise kernel (every stage is
// elementwise, so all stages of a plan fuse). Multistep schedulers keep earlier
// model outputs: that state is named slots (e.g. "hist0", "last_sample") that the
// plan reads and whose next values it names in `keep`; whoever applies plans
// owns the arrays (this file's HostState for Float32Arrays).

import { SsdError } from "../../engine/errors.ts";
import { randnTensor, type TorchGenerator } from "../rng.ts";

export const f32 = Math.fround;

// ---------------------------------------------------------------------------
// Step plans

/** `coef · input`, where input names an array (see StepPlan). */
export type Term = readonly [coef: number, input: string];

/** `name = clamp(Σ terms)`: one elementwise stage. */
export interface Stage {
  name: string;
  terms: Term[];
  /** Clamp the result to [−clamp, clamp] (DDIM clip_sample). */
  clamp?: number;
}

/**
 * One scheduler update as an elementwise program. Inputs are "sample",
 * "model_output", "noise" (drawn by the scheduler from the caller's generator,
 * given with the plan), "original" (add_noise), and state slots. Stages are
 * evaluated in order and may read earlier stages; each stage's result is a
 * float32 array (rounded once, accumulation in at least float32).
 */
export interface StepPlan {
  stages: Stage[];
  /** The stage (or input) holding the result (prev_sample, scaled input, noisy latents). */
  output: string;
  /** New state: slot ← stage or input name, all read before any is written. */
  keep: Record<string, string>;
}

/** What `planStep` returns: the plan plus the host-drawn noise it may read. */
export interface PlannedStep {
  plan: StepPlan;
  /** Noise drawn from the generator for this step (drawn even when unused, as diffusers' Euler does). */
  noise: Float32Array | null;
  /** Index into `timesteps` of the step this plan performs. */
  stepIndex: number;
}

/** Linear form over named arrays, used to build plans symbolically. */
export class Lin {
  readonly c = new Map<string, number>();
  static of(input: string, coef = 1): Lin {
    return new Lin().add(input, coef);
  }
  add(input: string, coef: number): this {
    this.c.set(input, (this.c.get(input) ?? 0) + coef);
    return this;
  }
  /** this + k·other */
  plus(other: Lin, k = 1): Lin {
    const r = new Lin();
    for (const [n, v] of this.c) r.add(n, v);
    for (const [n, v] of other.c) r.add(n, k * v);
    return r;
  }
  scale(k: number): Lin {
    const r = new Lin();
    for (const [n, v] of this.c) r.add(n, k * v);
    return r;
  }
  terms(): Term[] {
    return [...this.c].map(([n, v]) => [v, n] as const);
  }
}

export function stage(name: string, lin: Lin, clamp?: number): Stage {
  return clamp === undefined ? { name, terms: lin.terms() } : { name, terms: lin.terms(), clamp };
}

/**
 * Applies a plan to Float32Arrays (all the same length): the host reference of
 * the step. Returns every stage's array, plus inputs by name.
 */
export function applyPlanHost(plan: StepPlan, inputs: Record<string, Float32Array>): Record<string, Float32Array> {
  const vals: Record<string, Float32Array> = { ...inputs };
  let n = -1;
  for (const a of Object.values(inputs)) {
    if (n < 0) n = a.length;
    else if (a.length !== n) throw new SsdError("E_SHAPE", `scheduler step: arrays of ${n} and ${a.length} elements`);
  }
  for (const st of plan.stages) {
    const acc = new Float64Array(n < 0 ? 0 : n);
    for (const [coef, name] of st.terms) {
      const x = vals[name];
      if (!x) throw new SsdError("E_INTERNAL", `scheduler plan reads '${name}', which is not available`);
      if (coef === 0) continue;
      if (n < 0) n = x.length;
      for (let i = 0; i < acc.length; i++) acc[i] += coef * x[i];
    }
    const out = new Float32Array(acc.length);
    const cl = st.clamp;
    if (cl === undefined) out.set(acc);
    else for (let i = 0; i < acc.length; i++) out[i] = Math.min(cl, Math.max(-cl, acc[i]));
    vals[st.name] = out;
  }
  if (!vals[plan.output]) throw new SsdError("E_INTERNAL", `scheduler plan output '${plan.output}' is not computed`);
  return vals;
}

/** Array state of multistep schedulers on the host: slot name → array. */
export type HostState = Record<string, Float32Array>;

/** The state after a plan: every `keep` slot takes its named value. */
export function nextState(plan: StepPlan, values: Record<string, Float32Array>): HostState {
  const next: HostState = {};
  for (const [slot, src] of Object.entries(plan.keep)) {
    const v = values[src];
    if (!v) throw new SsdError("E_INTERNAL", `scheduler plan keeps '${src}', which is not computed`);
    next[slot] = v;
  }
  return next;
}

// ---------------------------------------------------------------------------
// Config

/** A scheduler_config.json as read (any scheduler class's; unknown keys are ignored). */
export type SchedulerConfig = Record<string, unknown>;

/** Reads typed values from a config with the class's defaults, as diffusers' from_config does. */
export class ConfigReader {
  constructor(readonly cls: string, readonly cfg: SchedulerConfig) {}
  private bad(key: string, want: string): never {
    throw new SsdError("E_BAD_CONFIG", `${this.cls}: config '${key}' = ${JSON.stringify(this.cfg[key])} is not ${want}`);
  }
  has(key: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.cfg, key) && this.cfg[key] !== undefined;
  }
  num(key: string, def: number): number {
    if (!this.has(key)) return def;
    const v = this.cfg[key];
    if (typeof v === "bigint") return Number(v);
    if (typeof v !== "number") this.bad(key, "a number");
    return v as number;
  }
  int(key: string, def: number): number {
    const v = this.num(key, def);
    if (!Number.isInteger(v)) this.bad(key, "an integer");
    return v;
  }
  optNum(key: string): number | null {
    if (!this.has(key) || this.cfg[key] === null) return null;
    return this.num(key, 0);
  }
  bool(key: string, def: boolean): boolean {
    if (!this.has(key)) return def;
    const v = this.cfg[key];
    if (v === null) return false; // None is falsy wherever diffusers tests these
    if (typeof v !== "boolean") this.bad(key, "true or false");
    return v as boolean;
  }
  str<T extends string>(key: string, def: T, allowed: readonly T[]): T {
    if (!this.has(key) || this.cfg[key] === null) return def;
    const v = this.cfg[key];
    if (typeof v !== "string" || !allowed.includes(v as T)) this.bad(key, `one of ${allowed.join(", ")}`);
    return v as T;
  }
  optStr(key: string): string | null {
    if (!this.has(key) || this.cfg[key] === null) return null;
    const v = this.cfg[key];
    if (typeof v !== "string") this.bad(key, "a string");
    return v as string;
  }
  numList(key: string): number[] | null {
    if (!this.has(key) || this.cfg[key] === null) return null;
    const v = this.cfg[key];
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number")) this.bad(key, "a list of numbers");
    return v as number[];
  }
}

export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
export type TimestepSpacing = "linspace" | "leading" | "trailing";
export type PredictionType = "epsilon" | "v_prediction" | "sample";

/** Config keys every supported scheduler shares (with per-class defaults). */
export interface BaseConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  trained_betas: number[] | null;
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
}

export function readBaseConfig(r: ConfigReader, defaults: { timestep_spacing: TimestepSpacing }, predictionTypes: readonly PredictionType[]): BaseConfig {
  const c: BaseConfig = {
    num_train_timesteps: r.int("num_train_timesteps", 1000),
    beta_start: r.num("beta_start", 0.0001),
    beta_end: r.num("beta_end", 0.02),
    beta_schedule: r.str<BetaSchedule>("beta_schedule", "linear", ["linear", "scaled_linear", "squaredcos_cap_v2"]),
    trained_betas: r.numList("trained_betas"),
    prediction_type: r.str<PredictionType>("prediction_type", "epsilon", predictionTypes),
    timestep_spacing: r.str<TimestepSpacing>("timestep_spacing", defaults.timestep_spacing, ["linspace", "leading", "trailing"]),
    steps_offset: r.int("steps_offset", 0),
    rescale_betas_zero_snr: r.bool("rescale_betas_zero_snr", false),
  };
  if (c.num_train_timesteps < 2) throw new SsdError("E_BAD_CONFIG", `${r.cls}: num_train_timesteps must be at least 2`);
  if (r.bool("thresholding", false)) {
    throw new SsdError("E_BAD_CONFIG", `${r.cls}: dynamic thresholding ("thresholding": true) is not supported; set it to false`);
  }
  return c;
}

// ---------------------------------------------------------------------------
// numpy / torch numerics

/** numpy round (half to even), as `.round()` on float arrays. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  if (Math.abs(x % 1) === 0.5) return 2 * Math.round(x / 2);
  return r;
}

/** np.linspace(start, stop, num) in float64, with numpy 1.24's formula. */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num <= 0) return [];
  const div = num - 1;
  const delta = stop - start;
  const out = new Array<number>(num);
  const step = div > 0 ? delta / div : NaN;
  for (let i = 0; i < num; i++) {
    let y: number;
    if (div > 0) y = step === 0 ? (i / div) * delta : i * step;
    else y = i * delta;
    out[i] = y + start;
  }
  if (num > 1) out[num - 1] = stop;
  return out;
}

/** np.arange(start, stop, step) in float64: length ceil((stop−start)/step), values start + i·delta. */
export function npArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Array<number>(len);
  if (len === 0) return out;
  out[0] = start;
  if (len > 1) out[1] = start + step;
  // numpy fills from the first two values: delta = (start + step) − start.
  const delta = len > 1 ? out[1] - start : step;
  for (let i = 2; i < len; i++) out[i] = start + i * delta;
  return out;
}

/** np.interp(x, arange(len(fp)), fp) for x inside the table (as diffusers uses it). */
export function interpIndex(x: number, fp: ArrayLike<number>): number {
  const n = fp.length;
  if (x <= 0) return fp[0];
  if (x >= n - 1) return fp[n - 1];
  const j = Math.floor(x);
  if (j === x) return fp[j];
  const slope = (fp[j + 1] - fp[j]) / 1;
  return slope * (x - j) + fp[j];
}

/** torch.linspace(start, end, steps, dtype=float32) on the CPU (float step, two halves). */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f32(start), e = f32(end);
  if (steps === 1) { out[0] = s; return out; }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

/** torch.cumprod on float32 (the CPU kernel accumulates in double, stores float). */
export function cumprodF32(a: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  let acc = 1;
  for (let i = 0; i < a.length; i++) {
    acc *= a[i];
    out[i] = acc;
  }
  return out;
}

function betasForAlphaBar(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  return out;
}

function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const n = betas.length;
  const alphas = betas.map((b) => f32(1 - b));
  const bar = cumprodF32(alphas).map((x) => f32(Math.sqrt(x)));
  const a0 = bar[0], aT = bar[n - 1];
  const k = f32(a0 / f32(a0 - aT));
  for (let i = 0; i < n; i++) bar[i] = f32(f32(bar[i] - aT) * k);
  const sq = bar.map((x) => f32(x * x));
  const out = new Float32Array(n);
  out[0] = f32(1 - sq[0]);
  for (let i = 1; i < n; i++) out[i] = f32(1 - f32(sq[i] / sq[i - 1]));
  return out;
}

/** The training noise schedule: alphas_cumprod (float32), as every scheduler's __init__ builds it. */
export function alphasCumprod(c: BaseConfig, opts: { zeroSnrLast: boolean }): Float32Array {
  const n = c.num_train_timesteps;
  let betas: Float32Array;
  if (c.trained_betas) betas = Float32Array.from(c.trained_betas);
  else if (c.beta_schedule === "linear") betas = torchLinspaceF32(c.beta_start, c.beta_end, n);
  else if (c.beta_schedule === "scaled_linear") betas = torchLinspaceF32(Math.sqrt(c.beta_start), Math.sqrt(c.beta_end), n).map((b) => f32(b * b));
  else betas = betasForAlphaBar(n);
  if (betas.length !== n) throw new SsdError("E_BAD_CONFIG", `trained_betas has ${betas.length} values, num_train_timesteps is ${n}`);
  if (c.rescale_betas_zero_snr) betas = rescaleZeroTerminalSnr(betas);
  const ac = cumprodF32(betas.map((b) => f32(1 - b)));
  // Zero terminal SNR would make the last sigma infinite; diffusers pins it.
  if (c.rescale_betas_zero_snr && opts.zeroSnrLast) ac[n - 1] = 2 ** -24;
  return ac;
}

/** ((1 − ᾱ) / ᾱ) ** 0.5 elementwise in float32 (the training sigmas, ascending in t). */
export function trainSigmas(ac: Float32Array): Float32Array {
  return ac.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/** The inference timesteps of `timestep_spacing` before any sigma conversion (float64 values). */
export function spacedTimesteps(
  spacing: TimestepSpacing,
  n: number,
  trainSteps: number,
  stepsOffset: number,
  variant: "plain" | "plus_one",
  lastTimestep = trainSteps,
): number[] {
  // "plus_one" (DPM-Solver, UniPC): N+1 points, the last dropped.
  if (variant === "plain") {
    if (spacing === "linspace") return npLinspace(0, trainSteps - 1, n).reverse();
    if (spacing === "leading") {
      const ratio = Math.floor(trainSteps / n);
      return Array.from({ length: n }, (_, i) => roundHalfEven(i * ratio)).reverse().map((t) => t + stepsOffset);
    }
    return npArange(trainSteps, 0, -trainSteps / n).map((t) => roundHalfEven(t) - 1);
  }
  if (spacing === "linspace") return npLinspace(0, lastTimestep - 1, n + 1).map(roundHalfEven).reverse().slice(0, n);
  if (spacing === "leading") {
    const ratio = Math.floor(lastTimestep / (n + 1));
    return Array.from({ length: n + 1 }, (_, i) => i * ratio).reverse().slice(0, n).map((t) => t + stepsOffset);
  }
  return npArange(lastTimestep, 0, -trainSteps / n).map((t) => roundHalfEven(t) - 1);
}

/** Karras et al. (2022) sigmas, rho = 7, in float64. */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7.0;
  const ramp = npLinspace(0, 1, n);
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return ramp.map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/**
 * diffusers' _sigma_to_t: the fractional training timestep of a sigma, by
 * interpolating log-sigmas. numpy's value-based casting makes the distances and
 * the weight float32 (the table is float32), the final mix float64.
 */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const ls = f32(logSigma);
  let low = 0;
  for (let j = 0; j < logSigmas.length; j++) if (f32(ls - logSigmas[j]) >= 0) low = j;
  low = Math.min(low, logSigmas.length - 2);
  const high = low + 1;
  const lo = logSigmas[low], hi = logSigmas[high];
  let w = f32(f32(lo - ls) / f32(lo - hi));
  w = Math.min(1, Math.max(0, w));
  return f32(1 - w) * low + w * high;
}

/** α_t, σ_t of a sigma as 0-dim float32 tensors: α = 1/√(σ²+1), σ_t = σ·α. */
export function alphaSigmaT(sigma: number): [number, number] {
  const a = f32(1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
  return [a, f32(sigma * a)];
}

/** λ = log α − log σ in float32 (−∞/+∞ at the ends, as torch gives). */
export function lambdaOf(alpha: number, sigma: number): number {
  return f32(f32(Math.log(alpha)) - f32(Math.log(sigma)));
}

// ---------------------------------------------------------------------------
// The scheduler interface

export type TimestepDtype = "int64" | "float32";

/** Options of a step that some schedulers take (diffusers' step kwargs). */
export interface StepOptions {
  /**
   * Generator(s) for the scheduler's noise draws (required by schedulers that
   * draw): one for the whole batch, or one per batch row as diffusers'
   * randn_tensor takes them (then pass the full shape, batch first).
   */
  generator?: TorchGenerator | readonly TorchGenerator[] | null;
  /** Latent shape for the host step's noise draws (needed with one generator per batch row). */
  shape?: readonly number[];
  /** DDIM eta (default 0). */
  eta?: number;
  /** Euler s_churn, s_tmin, s_tmax, s_noise (defaults 0, 0, ∞, 1). */
  s_churn?: number;
  s_tmin?: number;
  s_tmax?: number;
  s_noise?: number;
}

function shapeNumel(shape: number | readonly number[]): number {
  return typeof shape === "number" ? shape : shape.reduce((a, b) => a * b, 1);
}

/**
 * What the pipeline sees of a scheduler (diffusers' SchedulerMixin surface). The
 * host `step` is `planStep` + `applyPlanHost` + the state update; a GPU path calls
 * `planStep` and applies the same plan to Tensors, keeping its own state slots.
 */
export abstract class Scheduler {
  abstract readonly className: string;
  /** Model evaluations per step (1 for every scheduler here). */
  readonly order = 1;
  /** Whether diffusers' class has set_begin_index (DDIM does not in v0.27.2). */
  readonly hasBeginIndex: boolean = true;
  abstract readonly timestepDtype: TimestepDtype;
  /** Training noise schedule ᾱ (float32). */
  readonly alphasCumprod: Float32Array;
  timesteps: number[] = [];
  /** Inference sigmas (float32), when the class has them. */
  sigmas: Float32Array | null = null;
  numInferenceSteps: number | null = null;
  protected stepIndex_: number | null = null;
  protected beginIndex_: number | null = null;
  /** Host-side array state (multistep history); see HostState. */
  protected hostState: HostState = {};

  constructor(readonly config: BaseConfig, zeroSnrLast: boolean) {
    this.alphasCumprod = alphasCumprod(config, { zeroSnrLast });
  }

  get stepIndex(): number | null { return this.stepIndex_; }
  get beginIndex(): number | null { return this.beginIndex_; }

  /** The noise scale of the initial latents (txt2img). */
  abstract get initNoiseSigma(): number;

  abstract setTimesteps(n: number): void;

  setBeginIndex(i: number): void {
    if (!this.hasBeginIndex) return;
    this.beginIndex_ = i;
  }

  /** diffusers' index_for_timestep: the second match when a timestep repeats. */
  indexForTimestep(t: number): number {
    const idx: number[] = [];
    this.timesteps.forEach((v, i) => { if (v === t) idx.push(i); });
    if (idx.length === 0) return this.missingTimestepIndex(t);
    return idx.length > 1 ? idx[1] : idx[0];
  }

  protected missingTimestepIndex(t: number): number {
    throw new SsdError("E_BAD_PARAM", `${this.className}: timestep ${t} is not in the schedule`);
  }

  protected initStepIndex(t: number): number {
    if (this.stepIndex_ === null) this.stepIndex_ = this.beginIndex_ ?? this.indexForTimestep(t);
    return this.stepIndex_;
  }

  /** The sigma index add_noise uses: the timestep's, else the current step, else the begin index. */
  protected addNoiseIndex(t: number): number {
    if (this.beginIndex_ === null) return this.indexForTimestep(t);
    return this.stepIndex_ ?? this.beginIndex_;
  }

  protected requireTimesteps(): void {
    if (this.numInferenceSteps === null) {
      throw new SsdError("E_BAD_PARAM", `${this.className}: call setTimesteps before stepping`);
    }
  }

  /** Divisor of scale_model_input at timestep t: scaled = sample / divisor (1 when the class does not scale). */
  inputDivisor(_t: number): number {
    return 1;
  }

  /** scale_model_input on the host. */
  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const d = this.inputDivisor(t);
    if (d === 1) return sample;
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) out[i] = sample[i] / d;
    return out;
  }

  /** The plan of one step at timestep t for latents of `shape` (advances the step index, draws noise). */
  abstract planStep(t: number, shape: number | readonly number[], options?: StepOptions): PlannedStep;

  /** add_noise(original, noise, t) as a plan over "original" and "noise". */
  abstract planAddNoise(t: number): StepPlan;

  /** Host step: prev_sample from model_output at timestep t. */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, options: StepOptions = {}): Float32Array {
    if (modelOutput.length !== sample.length) {
      throw new SsdError("E_SHAPE", `${this.className}.step: model_output has ${modelOutput.length} values, sample ${sample.length}`);
    }
    const shape = options.shape ?? modelOutput.length;
    if (shapeNumel(shape) !== modelOutput.length) {
      throw new SsdError("E_SHAPE", `${this.className}.step: shape ${JSON.stringify(shape)} does not hold ${modelOutput.length} values`);
    }
    const { plan, noise } = this.planStep(t, shape, options);
    const inputs: Record<string, Float32Array> = { ...this.hostState, sample, model_output: modelOutput };
    if (noise) inputs.noise = noise;
    const vals = applyPlanHost(plan, inputs);
    this.hostState = nextState(plan, vals);
    return vals[plan.output];
  }

  /** Host add_noise at one timestep for the whole batch (img2img). */
  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    const plan = this.planAddNoise(t);
    return applyPlanHost(plan, { original, noise })[plan.output];
  }

  /** Draws diffusers' randn_tensor(model_output.shape, generator) for a step. */
  protected drawNoise(shape: number | readonly number[], options: StepOptions): Float32Array {
    const g = options.generator;
    if (!g) {
      throw new SsdError("E_BAD_PARAM", `${this.className}: this step draws noise; pass a generator (torch-compatible, seeded)`);
    }
    if (Array.isArray(g) && g.length > 1 && typeof shape === "number") {
      throw new SsdError("E_BAD_PARAM", `${this.className}: one generator per batch row needs the latent shape, not an element count`);
    }
    return randnTensor(typeof shape === "number" ? [shapeNumel(shape)] : shape, g);
  }

  protected resetStepState(): void {
    this.stepIndex_ = null;
    this.beginIndex_ = null;
    this.hostState = {};
  }
}

/**
 * What the multistep solvers (DPM-Solver++, UniPC) share: the training sigma
 * table, a unit initial noise scale, diffusers' fallback to the last index for
 * a timestep missing from the schedule, and the count of stored outputs.
 */
export abstract class MultistepScheduler extends Scheduler {
  override sigmas: Float32Array;
  /** converted model outputs held so far (diffusers' model_outputs that are not None) */
  protected histCount = 0;
  protected lowerOrderNums = 0;

  constructor(config: BaseConfig, zeroSnrLast: boolean) {
    super(config, zeroSnrLast);
    this.sigmas = trainSigmas(this.alphasCumprod);
    const n = config.num_train_timesteps;
    this.timesteps = Array.from({ length: n }, (_, i) => n - 1 - i);
  }

  get initNoiseSigma(): number {
    return 1;
  }

  protected override missingTimestepIndex(): number {
    return this.timesteps.length - 1;
  }
}

/**
 * The timesteps an SDXL img2img pipeline iterates for `strength`
 * (StableDiffusionXL(ControlNet)Img2ImgPipeline.get_timesteps): the last
 * int(N·strength) steps, and set_begin_index where the scheduler has it.
 * Call after setTimesteps(n).
 */
export function img2imgTimesteps(s: Scheduler, n: number, strength: number): { timesteps: number[]; numInferenceSteps: number; beginIndex: number | null } {
  if (!(strength >= 0 && strength <= 1)) throw new SsdError("E_BAD_PARAM", `strength must be in [0, 1], got ${strength}`);
  const initTimestep = Math.min(Math.trunc(n * strength), n);
  const tStart = Math.max(n - initTimestep, 0);
  const timesteps = s.timesteps.slice(tStart * s.order);
  s.setBeginIndex(tStart * s.order);
  return { timesteps, numInferenceSteps: n - tStart, beginIndex: s.hasBeginIndex ? tStart * s.order : null };
}
