// DPMSolverMultistepScheduler (diffusers v0.27.2), algorithm_type dpmsolver++
// (DPM++ 2M) and sde-dpmsolver++ (DPM++ 2M SDE), solver orders 1–3 (3 without
// SDE, as diffusers), midpoint or heun. The converted model outputs (x̂₀) of the
// last `solver_order` steps are the state slots "hist0" (newest) … "hist{k}".

import { SsdError } from "../../engine/errors.ts";
import {
  ConfigReader, Lin, MultistepScheduler, alphaSigmaT, f32, interpIndex, karrasSigmas, lambdaOf, npLinspace, readBaseConfig,
  sigmaToT, spacedTimesteps, stage, trainSigmas, roundHalfEven,
  type PlannedStep, type SchedulerConfig, type StepOptions, type StepPlan, type TimestepDtype,
} from "./common.ts";

type Algorithm = "dpmsolver++" | "sde-dpmsolver++";

export class DPMSolverMultistepScheduler extends MultistepScheduler {
  readonly className = "DPMSolverMultistepScheduler";
  readonly timestepDtype: TimestepDtype = "int64";
  readonly solverOrder: number;
  readonly algorithmType: Algorithm;
  readonly solverType: "midpoint" | "heun";
  readonly lowerOrderFinal: boolean;
  readonly eulerAtFinal: boolean;
  readonly useKarrasSigmas: boolean;
  readonly useLuLambdas: boolean;
  readonly finalSigmasType: "zero" | "sigma_min";
  readonly lambdaMinClipped: number;

  constructor(cfg: SchedulerConfig) {
    const r = new ConfigReader("DPMSolverMultistepScheduler", cfg);
    super(readBaseConfig(r, { timestep_spacing: "linspace" }, ["epsilon", "v_prediction", "sample"]), true);
    this.solverOrder = r.int("solver_order", 2);
    if (this.solverOrder < 1 || this.solverOrder > 3) throw new SsdError("E_BAD_CONFIG", `DPMSolverMultistepScheduler: solver_order must be 1, 2 or 3, got ${this.solverOrder}`);
    let algo = r.str("algorithm_type", "dpmsolver++", ["dpmsolver++", "sde-dpmsolver++", "deis", "dpmsolver", "sde-dpmsolver"]);
    if (algo === "deis") algo = "dpmsolver++"; // diffusers re-registers deis as dpmsolver++
    if (algo === "dpmsolver" || algo === "sde-dpmsolver") {
      throw new SsdError("E_BAD_CONFIG", `DPMSolverMultistepScheduler: algorithm_type '${algo}' (deprecated in diffusers) is not supported; use dpmsolver++ or sde-dpmsolver++`);
    }
    this.algorithmType = algo as Algorithm;
    const st = r.str("solver_type", "midpoint", ["midpoint", "heun", "logrho", "bh1", "bh2"]);
    this.solverType = st === "heun" ? "heun" : "midpoint";
    this.lowerOrderFinal = r.bool("lower_order_final", true);
    this.eulerAtFinal = r.bool("euler_at_final", false);
    this.useKarrasSigmas = r.bool("use_karras_sigmas", false);
    this.useLuLambdas = r.bool("use_lu_lambdas", false);
    this.finalSigmasType = r.str("final_sigmas_type", "zero", ["zero", "sigma_min"]);
    this.lambdaMinClipped = r.num("lambda_min_clipped", -Infinity);
    const vt = r.optStr("variance_type");
    if (vt === "learned" || vt === "learned_range") {
      throw new SsdError("E_BAD_CONFIG", `DPMSolverMultistepScheduler: variance_type '${vt}' is not supported`);
    }
  }

  setTimesteps(n: number): void {
    const c = this.config;
    if (!Number.isInteger(n) || n < 1) throw new SsdError("E_BAD_PARAM", `DPMSolverMultistepScheduler: num_inference_steps must be a positive integer, got ${n}`);
    // lambda_min_clipped: count of λ (ascending after flip) below the bound.
    const ac = this.alphasCumprod;
    let clipped = 0;
    for (let i = ac.length - 1; i >= 0; i--) {
      const lam = lambdaOf(f32(Math.sqrt(ac[i])), f32(Math.sqrt(f32(1 - ac[i]))));
      if (lam < this.lambdaMinClipped) clipped++;
      else break;
    }
    const last = c.num_train_timesteps - clipped;
    let timesteps = spacedTimesteps(c.timestep_spacing, n, c.num_train_timesteps, c.steps_offset, "plus_one", last);
    const table = trainSigmas(ac);
    const logSigmas = table.map((s) => f32(Math.log(s)));
    let sigmas: number[];
    if (this.useKarrasSigmas) {
      sigmas = karrasSigmas(table[0], table[table.length - 1], n);
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
    } else if (this.useLuLambdas) {
      const lmin = logSigmas[0], lmax = logSigmas[logSigmas.length - 1];
      sigmas = npLinspace(0, 1, n).map((r) => Math.exp(lmax + r * (lmin - lmax)));
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
    } else {
      sigmas = timesteps.map((t) => interpIndex(t, table));
    }
    const sigmaLast = this.finalSigmasType === "sigma_min" ? f32(Math.sqrt(f32(f32(1 - ac[0]) / ac[0]))) : 0;
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.timesteps = timesteps;
    this.numInferenceSteps = timesteps.length;
    this.histCount = 0;
    this.lowerOrderNums = 0;
    this.resetStepState();
  }

  /** x̂₀ of the model output (convert_model_output for the ++ algorithms). */
  private convert(sigma: number): Lin {
    const [alpha, sigmaT] = alphaSigmaT(sigma);
    const p = this.config.prediction_type;
    if (p === "epsilon") return Lin.of("sample", 1 / alpha).add("model_output", -sigmaT / alpha);
    if (p === "v_prediction") return Lin.of("sample", alpha).add("model_output", -sigmaT);
    return Lin.of("model_output");
  }

  planStep(t: number, shape: number | readonly number[], options: StepOptions = {}): PlannedStep {
    this.requireTimesteps();
    const i = this.initStepIndex(t);
    const nT = this.timesteps.length;
    const lowerOrderFinal = i === nT - 1 && (this.eulerAtFinal || (this.lowerOrderFinal && nT < 15) || this.finalSigmasType === "zero");
    const lowerOrderSecond = i === nT - 2 && this.lowerOrderFinal && nT < 15;
    const order = this.solverOrder;
    const sde = this.algorithmType === "sde-dpmsolver++";

    // Slots after shifting in the new x̂₀: m0 = "x0" (this step), m1 = "hist0", m2 = "hist1".
    const m = ["x0", "hist0", "hist1"];
    const noise = sde ? this.drawNoise(shape, options) : null;
    let prev: Lin;
    const s = (k: number) => this.sigmas[i - k]; // σ_s0 = s(0), σ_s1 = s(1), ...
    const [alphaT, sigmaT] = alphaSigmaT(this.sigmas[i + 1]);
    const [, sigmaS0] = alphaSigmaT(s(0));
    const lamT = lambdaOf(alphaT, sigmaT);
    const lam = (k: number) => { const [a, sg] = alphaSigmaT(s(k)); return lambdaOf(a, sg); };
    const h = f32(lamT - lam(0));
    const ratio = f32(sigmaT / sigmaS0);
    const expNegH = f32(Math.exp(-h));
    const exp2 = f32(Math.exp(f32(-2 * h)));
    const noiseCoef = sde ? f32(sigmaT * f32(Math.sqrt(f32(1 - exp2)))) : 0;

    let useOrder: number;
    if (order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) useOrder = 1;
    else if (order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) useOrder = 2;
    else useOrder = 3;
    if (useOrder === 3 && sde) useOrder = 2; // diffusers' third-order update has no SDE variant
    if (useOrder === 1) {
      if (!sde) prev = Lin.of("sample", ratio).add(m[0], -f32(alphaT * f32(expNegH - 1)));
      else prev = Lin.of("sample", f32(ratio * expNegH)).add(m[0], f32(alphaT * f32(1 - exp2)));
    } else if (useOrder === 2) {
      const h0 = f32(lam(0) - lam(1));
      const r0 = f32(h0 / h);
      const inv = f32(1 / r0);
      // D0 = m0, D1 = (1/r0)(m0 − m1)
      const D1 = Lin.of(m[0], inv).add(m[1], -inv);
      if (!sde) {
        const A = f32(alphaT * f32(expNegH - 1));
        prev = Lin.of("sample", ratio).add(m[0], -A);
        if (this.solverType === "midpoint") prev = prev.plus(D1, -f32(0.5 * A));
        else prev = prev.plus(D1, f32(alphaT * f32(f32(f32(expNegH - 1) / h) + 1)));
      } else {
        const B = f32(alphaT * f32(1 - exp2));
        prev = Lin.of("sample", f32(ratio * expNegH)).add(m[0], B);
        if (this.solverType === "midpoint") prev = prev.plus(D1, f32(0.5 * B));
        else prev = prev.plus(D1, f32(alphaT * f32(f32(f32(1 - exp2) / f32(-2 * h)) + 1)));
      }
    } else {
      const h0 = f32(lam(0) - lam(1)), h1 = f32(lam(1) - lam(2));
      const r0 = f32(h0 / h), r1 = f32(h1 / h);
      const D10 = Lin.of(m[0], f32(1 / r0)).add(m[1], -f32(1 / r0));
      const D11 = Lin.of(m[1], f32(1 / r1)).add(m[2], -f32(1 / r1));
      const diff = D10.plus(D11, -1);
      const D1 = D10.plus(diff, f32(r0 / f32(r0 + r1)));
      const D2 = diff.scale(f32(1 / f32(r0 + r1)));
      const e1 = f32(expNegH - 1);
      prev = Lin.of("sample", ratio).add(m[0], -f32(alphaT * e1))
        .plus(D1, f32(alphaT * f32(f32(e1 / h) + 1)))
        .plus(D2, -f32(alphaT * f32(f32(f32(f32(e1 + h) / f32(h * h))) - 0.5)));
    }
    if (sde) prev = prev.add("noise", noiseCoef);

    const keep: Record<string, string> = {};
    const newCount = Math.min(this.histCount + 1, order);
    for (let k = 0; k < newCount; k++) keep[`hist${k}`] = m[k];
    this.histCount = newCount;
    if (this.lowerOrderNums < order) this.lowerOrderNums++;
    this.stepIndex_ = i + 1;
    const plan: StepPlan = { stages: [stage("x0", this.convert(s(0))), stage("prev_sample", prev)], output: "prev_sample", keep };
    return { plan, noise, stepIndex: i };
  }

  planAddNoise(t: number): StepPlan {
    const [alpha, sigmaT] = alphaSigmaT(this.sigmas[this.addNoiseIndex(t)]);
    return { stages: [stage("noisy", Lin.of("original", alpha).add("noise", sigmaT))], output: "noisy", keep: {} };
  }
}
