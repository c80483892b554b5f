// DDIMScheduler (diffusers v0.27.2): integer timesteps index ᾱ directly; no
// sigmas, no step index, no set_begin_index.

import { SsdError } from "../../engine/errors.ts";
import {
  ConfigReader, Lin, Scheduler, f32, readBaseConfig, roundHalfEven, spacedTimesteps, stage,
  type PlannedStep, type SchedulerConfig, type Stage, type StepOptions, type StepPlan, type TimestepDtype,
} from "./common.ts";

export class DDIMScheduler extends Scheduler {
  readonly className = "DDIMScheduler";
  readonly timestepDtype: TimestepDtype = "int64";
  override readonly hasBeginIndex = false;
  readonly clipSample: boolean;
  readonly clipSampleRange: number;
  readonly finalAlphaCumprod: number;

  constructor(cfg: SchedulerConfig) {
    const r = new ConfigReader("DDIMScheduler", cfg);
    super(readBaseConfig(r, { timestep_spacing: "leading" }, ["epsilon", "v_prediction", "sample"]), false);
    this.clipSample = r.bool("clip_sample", true);
    this.clipSampleRange = r.num("clip_sample_range", 1.0);
    this.finalAlphaCumprod = r.bool("set_alpha_to_one", true) ? 1 : this.alphasCumprod[0];
    const n = this.config.num_train_timesteps;
    this.timesteps = Array.from({ length: n }, (_, i) => n - 1 - i);
  }

  get initNoiseSigma(): number {
    return 1;
  }

  setTimesteps(n: number): void {
    const c = this.config;
    if (!Number.isInteger(n) || n < 1) throw new SsdError("E_BAD_PARAM", `DDIMScheduler: num_inference_steps must be a positive integer, got ${n}`);
    if (n > c.num_train_timesteps) {
      throw new SsdError("E_BAD_PARAM", `DDIMScheduler: num_inference_steps ${n} cannot exceed num_train_timesteps ${c.num_train_timesteps}`);
    }
    const ts = spacedTimesteps(c.timestep_spacing, n, c.num_train_timesteps, c.steps_offset, "plain");
    this.timesteps = c.timestep_spacing === "linspace" ? ts.map(roundHalfEven) : ts;
    this.numInferenceSteps = n;
    this.resetStepState();
  }

  private alphaAt(t: number): number {
    const n = this.config.num_train_timesteps;
    if (!Number.isInteger(t) || t >= n || t < -n) throw new SsdError("E_BAD_PARAM", `DDIMScheduler: timestep ${t} is outside [0, ${n})`);
    // Negative indices wrap as in torch indexing (only reached through add_noise misuse).
    return this.alphasCumprod[t < 0 ? n + t : t];
  }

  planStep(t: number, shape: number | readonly number[], options: StepOptions = {}): PlannedStep {
    this.requireTimesteps();
    const eta = options.eta ?? 0;
    const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps!);
    const aT = this.alphaAt(t);
    const aPrev = prevT >= 0 ? this.alphaAt(prevT) : this.finalAlphaCumprod;
    const bT = f32(1 - aT);
    const sqA = f32(Math.sqrt(aT)), sqB = f32(Math.sqrt(bT));
    let x0: Lin, eps: Lin;
    const p = this.config.prediction_type;
    if (p === "epsilon") {
      x0 = Lin.of("sample", 1 / sqA).add("model_output", -sqB / sqA);
      eps = Lin.of("model_output");
    } else if (p === "v_prediction") {
      x0 = Lin.of("sample", sqA).add("model_output", -sqB);
      eps = Lin.of("model_output", sqA).add("sample", sqB);
    } else {
      x0 = Lin.of("model_output");
      eps = Lin.of("sample", 1 / sqB).add("model_output", -sqA / sqB);
    }
    const stages: Stage[] = [];
    if (this.clipSample) {
      // Clamping is not linear: x̂₀ becomes its own stage, ε stays as diffusers has it (unclipped).
      stages.push(stage("pred_original_sample", x0, this.clipSampleRange));
      x0 = Lin.of("pred_original_sample");
    }
    const bPrev = f32(1 - aPrev);
    const variance = f32(f32(bPrev / bT) * f32(1 - f32(aT / aPrev)));
    const std = f32(f32(eta) * f32(Math.sqrt(variance)));
    const dirCoef = f32(Math.sqrt(f32(f32(1 - aPrev) - f32(std * std))));
    let prev = x0.scale(f32(Math.sqrt(aPrev))).plus(eps, dirCoef);
    let noise: Float32Array | null = null;
    if (eta > 0) {
      noise = this.drawNoise(shape, options);
      prev = prev.add("noise", std);
    }
    stages.push(stage("prev_sample", prev));
    const i = this.timesteps.indexOf(t);
    return { plan: { stages, output: "prev_sample", keep: {} }, noise, stepIndex: i };
  }

  planAddNoise(t: number): StepPlan {
    const a = this.alphaAt(t);
    const lin = Lin.of("original", f32(Math.sqrt(a))).add("noise", f32(Math.sqrt(f32(1 - a))));
    return { stages: [stage("noisy", lin)], output: "noisy", keep: {} };
  }
}
