// EulerDiscreteScheduler and EulerAncestralDiscreteScheduler (diffusers v0.27.2).
// Sigma schedules in numpy float64, stored as float32; per-step scalars as
// float32 0-dim tensors; the update as a step plan (see common.ts).

import { SsdError } from "../../engine/errors.ts";
import {
  ConfigReader, Lin, Scheduler, f32, img2imgTimesteps, interpIndex, karrasSigmas, readBaseConfig, roundHalfEven,
  sigmaToT, spacedTimesteps, stage, torchLinspaceF32, trainSigmas,
  type BaseConfig, type PlannedStep, type SchedulerConfig, type StepOptions, type StepPlan, type TimestepDtype,
} from "./common.ts";

export { img2imgTimesteps, roundHalfEven };

/** σ_0..σ_{N−1} as float32, and σ_N = 0 after them. */
function withFinalZero(s: ArrayLike<number>): Float32Array {
  const out = new Float32Array(s.length + 1);
  out.set(s);
  return out;
}

/** Shared by both Euler variants: sigma-space schedulers with sigmas[N] = 0. */
abstract class SigmaScheduler extends Scheduler {
  readonly timestepDtype: TimestepDtype = "float32";
  override sigmas: Float32Array;

  constructor(config: BaseConfig) {
    super(config, true);
    // Before set_timesteps: the full training schedule (diffusers' __init__).
    this.sigmas = withFinalZero(trainSigmas(this.alphasCumprod).reverse());
    const n = config.num_train_timesteps;
    this.timesteps = Array.from({ length: n }, (_, i) => n - 1 - i);
  }

  get initNoiseSigma(): number {
    let max = 0;
    for (const s of this.sigmas) if (s > max) max = s;
    if (this.config.timestep_spacing === "linspace" || this.config.timestep_spacing === "trailing") return max;
    return f32(Math.sqrt(f32(f32(max * max) + 1)));
  }

  /** sample / (σ² + 1) ** 0.5 */
  override inputDivisor(t: number): number {
    const sigma = this.sigmas[this.initStepIndex(t)];
    return f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
  }

  /** add_noise: original + noise · σ at the begin index (img2img) or the timestep's index. */
  planAddNoise(t: number): StepPlan {
    const i = this.addNoiseIndex(t);
    const sigma = this.sigmas[i];
    return { stages: [stage("noisy", Lin.of("original").add("noise", sigma))], output: "noisy", keep: {} };
  }

  /** What set_timesteps leaves: the timesteps, the sigmas with σ_N = 0 after them, the step state reset. */
  protected setSchedule(n: number, timesteps: number[], sigmas: ArrayLike<number>): void {
    this.timesteps = timesteps;
    this.sigmas = withFinalZero(sigmas);
    this.numInferenceSteps = n;
    this.resetStepState();
  }

  protected baseSpacing(n: number): number[] {
    if (!Number.isInteger(n) || n < 1) throw new SsdError("E_BAD_PARAM", `${this.className}: num_inference_steps must be a positive integer, got ${n}`);
    const c = this.config;
    // diffusers casts these to float32 (linspace values stay fractional).
    return spacedTimesteps(c.timestep_spacing, n, c.num_train_timesteps, c.steps_offset, "plain").map((t) =>
      c.timestep_spacing === "linspace" ? f32(t) : t,
    );
  }

  /** x̂₀ of the model output as a linear form over sample and model_output. */
  protected predOriginal(sigma: number, sampleName: string, sigmaHat: number): Lin {
    const p = this.config.prediction_type;
    if (p === "epsilon") return Lin.of(sampleName).add("model_output", -sigmaHat);
    if (p === "v_prediction") {
      // model_output · (−σ/√(σ²+1)) + sample / (σ²+1)
      const s2p1 = f32(f32(sigma * sigma) + 1);
      return Lin.of("model_output", f32(-sigma / f32(Math.sqrt(s2p1)))).add(sampleName, 1 / s2p1);
    }
    return Lin.of("model_output");
  }
}

export class EulerDiscreteScheduler extends SigmaScheduler {
  readonly className = "EulerDiscreteScheduler";
  readonly interpolationType: "linear" | "log_linear";
  readonly useKarrasSigmas: boolean;
  readonly sigmaMin: number | null;
  readonly sigmaMax: number | null;
  readonly timestepType: "discrete" | "continuous";

  constructor(cfg: SchedulerConfig) {
    const r = new ConfigReader("EulerDiscreteScheduler", cfg);
    super(readBaseConfig(r, { timestep_spacing: "linspace" }, ["epsilon", "v_prediction", "sample"]));
    this.interpolationType = r.str("interpolation_type", "linear", ["linear", "log_linear"]);
    this.useKarrasSigmas = r.bool("use_karras_sigmas", false);
    this.sigmaMin = r.optNum("sigma_min");
    this.sigmaMax = r.optNum("sigma_max");
    this.timestepType = r.str("timestep_type", "discrete", ["discrete", "continuous"]);
    if (this.continuousV()) this.timesteps = Array.from(this.sigmas.subarray(0, -1), (s) => f32(0.25 * f32(Math.log(s))));
  }

  private continuousV(): boolean {
    return this.timestepType === "continuous" && this.config.prediction_type === "v_prediction";
  }

  setTimesteps(n: number): void {
    let timesteps = this.baseSpacing(n);
    const table = trainSigmas(this.alphasCumprod);
    const logSigmas = table.map((s) => f32(Math.log(s)));
    let sigmas: number[];
    if (this.interpolationType === "linear") sigmas = timesteps.map((t) => interpIndex(t, table));
    else {
      // torch.linspace(log σ_min, log σ_max, N + 1).exp(), as diffusers writes it.
      sigmas = Array.from(torchLinspaceF32(logSigmas[logSigmas.length - 1], logSigmas[0], n + 1), (x) => f32(Math.exp(x)));
    }
    if (this.useKarrasSigmas) {
      const sMin = this.sigmaMin ?? sigmas[sigmas.length - 1];
      const sMax = this.sigmaMax ?? sigmas[0];
      sigmas = karrasSigmas(sMin, sMax, n);
      timesteps = sigmas.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    const s32 = Float32Array.from(sigmas);
    this.setSchedule(n, this.continuousV() ? Array.from(s32, (s) => f32(0.25 * f32(Math.log(s)))) : timesteps.map(f32), s32);
  }

  planStep(t: number, shape: number | readonly number[], options: StepOptions = {}): PlannedStep {
    this.requireTimesteps();
    const i = this.initStepIndex(t);
    const sigma = this.sigmas[i];
    const sChurn = options.s_churn ?? 0, sTmin = options.s_tmin ?? 0, sTmax = options.s_tmax ?? Infinity, sNoise = options.s_noise ?? 1;
    const gamma = sTmin <= sigma && sigma <= sTmax ? Math.min(sChurn / (this.sigmas.length - 1), 2 ** 0.5 - 1) : 0;
    // diffusers draws this noise on every step, used or not: the generator advances.
    const noise = this.drawNoise(shape, options);
    const sigmaHat = f32(sigma * f32(gamma + 1));
    const stages = [];
    let sampleName = "sample";
    if (gamma > 0) {
      const k = f32(Math.sqrt(f32(f32(sigmaHat * sigmaHat) - f32(sigma * sigma))));
      stages.push(stage("sample_hat", Lin.of("sample").add("noise", f32(sNoise) * k)));
      sampleName = "sample_hat";
    }
    const pred = this.predOriginal(sigma, sampleName, sigmaHat);
    const dt = f32(this.sigmas[i + 1] - sigmaHat);
    // prev = ŝ + (ŝ − x̂₀)/σ̂ · dt
    const k = dt / sigmaHat;
    const prev = Lin.of(sampleName, 1 + k).plus(pred, -k);
    stages.push(stage("prev_sample", prev));
    this.stepIndex_ = i + 1;
    return { plan: { stages, output: "prev_sample", keep: {} }, noise, stepIndex: i };
  }
}

export class EulerAncestralDiscreteScheduler extends SigmaScheduler {
  readonly className = "EulerAncestralDiscreteScheduler";

  constructor(cfg: SchedulerConfig) {
    const r = new ConfigReader("EulerAncestralDiscreteScheduler", cfg);
    super(readBaseConfig(r, { timestep_spacing: "linspace" }, ["epsilon", "v_prediction"]));
  }

  setTimesteps(n: number): void {
    const timesteps = this.baseSpacing(n);
    const table = trainSigmas(this.alphasCumprod);
    const sigmas = timesteps.map((t) => interpIndex(t, table));
    this.setSchedule(n, timesteps.map(f32), sigmas);
  }

  planStep(t: number, shape: number | readonly number[], options: StepOptions = {}): PlannedStep {
    this.requireTimesteps();
    const i = this.initStepIndex(t);
    const sigma = this.sigmas[i];
    const pred = this.predOriginal(sigma, "sample", sigma);
    const from = sigma, to = this.sigmas[i + 1];
    const from2 = f32(from * from), to2 = f32(to * to);
    const up = f32(Math.sqrt(f32(f32(to2 * f32(from2 - to2)) / from2)));
    const down = f32(Math.sqrt(f32(to2 - f32(up * up))));
    const dt = f32(down - sigma);
    const k = dt / sigma;
    const noise = this.drawNoise(shape, options);
    const prev = Lin.of("sample", 1 + k).plus(pred, -k).add("noise", up);
    this.stepIndex_ = i + 1;
    return { plan: { stages: [stage("prev_sample", prev)], output: "prev_sample", keep: {} }, noise, stepIndex: i };
  }
}
