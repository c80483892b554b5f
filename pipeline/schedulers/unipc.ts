// UniPCMultistepScheduler (diffusers v0.27.2): predictor UniP and corrector UniC
// (bh1/bh2), any solver_order, predict_x0 or not. State slots: "hist0" (newest
// converted output) … and "last_sample" (the corrected sample the last predictor
// started from). solver_p is not supported.

import { SsdError } from "../../engine/errors.ts";
import {
  ConfigReader, Lin, MultistepScheduler, alphaSigmaT, f32, interpIndex, karrasSigmas, lambdaOf, readBaseConfig, roundHalfEven,
  sigmaToT, spacedTimesteps, stage, trainSigmas,
  type PlannedStep, type SchedulerConfig, type Stage, type StepOptions, type StepPlan, type TimestepDtype,
} from "./common.ts";

/** torch.linalg.solve in float32 for the tiny UniPC systems: LU with partial pivoting, as LAPACK's sgesv. */
export function solveF32(A: number[][], b: number[]): number[] {
  const n = b.length;
  const a = A.map((row) => row.map(f32));
  const x = b.map(f32);
  const piv: number[] = [];
  for (let j = 0; j < n; j++) {
    let p = j;
    for (let i = j + 1; i < n; i++) if (Math.abs(a[i][j]) > Math.abs(a[p][j])) p = i;
    piv.push(p);
    if (p !== j) [a[p], a[j]] = [a[j], a[p]];
    if (a[j][j] === 0) throw new SsdError("E_INTERNAL", "UniPC: singular coefficient system (repeated sigmas?)");
    const r = f32(1 / a[j][j]);
    for (let i = j + 1; i < n; i++) a[i][j] = f32(a[i][j] * r);
    for (let i = j + 1; i < n; i++) for (let k = j + 1; k < n; k++) a[i][k] = f32(a[i][k] - f32(a[i][j] * a[j][k]));
  }
  for (let j = 0; j < n; j++) if (piv[j] !== j) [x[j], x[piv[j]]] = [x[piv[j]], x[j]];
  for (let j = 0; j < n; j++) for (let i = j + 1; i < n; i++) x[i] = f32(x[i] - f32(x[j] * a[i][j]));
  for (let k = n - 1; k >= 0; k--) {
    x[k] = f32(x[k] / a[k][k]);
    for (let i = 0; i < k; i++) x[i] = f32(x[i] - f32(x[k] * a[i][k]));
  }
  return x;
}

export class UniPCMultistepScheduler extends MultistepScheduler {
  readonly className = "UniPCMultistepScheduler";
  readonly timestepDtype: TimestepDtype = "int64";
  readonly solverOrder: number;
  readonly predictX0: boolean;
  readonly solverType: "bh1" | "bh2";
  readonly lowerOrderFinal: boolean;
  readonly disableCorrector: number[];
  readonly useKarrasSigmas: boolean;
  private thisOrder = 0;
  private haveLastSample = false;

  constructor(cfg: SchedulerConfig) {
    const r = new ConfigReader("UniPCMultistepScheduler", cfg);
    // UniPC in v0.27.2 has no rescale_betas_zero_snr: the key is ignored.
    super({ ...readBaseConfig(r, { timestep_spacing: "linspace" }, ["epsilon", "v_prediction", "sample"]), rescale_betas_zero_snr: false }, false);
    this.solverOrder = r.int("solver_order", 2);
    if (this.solverOrder < 1) throw new SsdError("E_BAD_CONFIG", "UniPCMultistepScheduler: solver_order must be at least 1");
    this.predictX0 = r.bool("predict_x0", true);
    const st = r.str("solver_type", "bh2", ["bh1", "bh2", "midpoint", "heun", "logrho"]);
    this.solverType = st === "bh1" ? "bh1" : "bh2";
    this.lowerOrderFinal = r.bool("lower_order_final", true);
    this.disableCorrector = r.numList("disable_corrector") ?? [];
    this.useKarrasSigmas = r.bool("use_karras_sigmas", false);
    if (r.has("solver_p") && cfg.solver_p !== null) throw new SsdError("E_BAD_CONFIG", "UniPCMultistepScheduler: solver_p is not supported");
  }

  setTimesteps(n: number): void {
    const c = this.config;
    if (!Number.isInteger(n) || n < 1) throw new SsdError("E_BAD_PARAM", `UniPCMultistepScheduler: num_inference_steps must be a positive integer, got ${n}`);
    let timesteps = spacedTimesteps(c.timestep_spacing, n, c.num_train_timesteps, c.steps_offset, "plus_one");
    const ac = this.alphasCumprod;
    const table = trainSigmas(ac);
    let sigmas: number[];
    if (this.useKarrasSigmas) {
      const logSigmas = table.map((s) => f32(Math.log(s)));
      sigmas = karrasSigmas(table[0], table[table.length - 1], n);
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
      sigmas.push(sigmas[sigmas.length - 1]);
    } else {
      sigmas = timesteps.map((t) => interpIndex(t, table));
      sigmas.push(f32(Math.sqrt(f32(f32(1 - ac[0]) / ac[0]))));
    }
    this.sigmas = Float32Array.from(sigmas);
    this.timesteps = timesteps;
    this.numInferenceSteps = timesteps.length;
    this.histCount = 0;
    this.lowerOrderNums = 0;
    this.haveLastSample = false;
    this.resetStepState();
  }

  private convert(sigma: number): Lin {
    const [alpha, sigmaT] = alphaSigmaT(sigma);
    const p = this.config.prediction_type;
    if (this.predictX0) {
      if (p === "epsilon") return Lin.of("sample", 1 / alpha).add("model_output", -sigmaT / alpha);
      if (p === "v_prediction") return Lin.of("sample", alpha).add("model_output", -sigmaT);
      return Lin.of("model_output");
    }
    if (p === "epsilon") return Lin.of("model_output");
    if (p === "sample") return Lin.of("sample", 1 / sigmaT).add("model_output", -alpha / sigmaT);
    return Lin.of("model_output", alpha).add("sample", sigmaT);
  }

  /**
   * The shared core of UniP and UniC: with t = sigmas[ti], s0 = sigmas[si0] and
   * the earlier points at sigmas[si0 − k], returns h-terms and the r_k.
   */
  private coefficients(ti: number, si0: number, order: number) {
    const [alphaT, sigmaT] = alphaSigmaT(this.sigmas[ti]);
    const [alphaS0, sigmaS0] = alphaSigmaT(this.sigmas[si0]);
    const lamS0 = lambdaOf(alphaS0, sigmaS0);
    const h = f32(lambdaOf(alphaT, sigmaT) - lamS0);
    const rks: number[] = [];
    for (let k = 1; k < order; k++) {
      const [a, sg] = alphaSigmaT(this.sigmas[si0 - k]);
      rks.push(f32(f32(lambdaOf(a, sg) - lamS0) / h));
    }
    rks.push(1);
    const hh = this.predictX0 ? -h : h;
    const hPhi1 = f32(Math.expm1(hh));
    let hPhiK = f32(f32(hPhi1 / hh) - 1);
    let factorial = 1;
    const Bh = this.solverType === "bh1" ? hh : f32(Math.expm1(hh));
    const R: number[][] = [];
    const b: number[] = [];
    for (let j = 1; j <= order; j++) {
      R.push(rks.map((r) => f32(r ** (j - 1))));
      b.push(f32(f32(hPhiK * factorial) / Bh));
      factorial *= j + 1;
      hPhiK = f32(f32(hPhiK / hh) - f32(1 / factorial));
    }
    // x_t_ = ratio·x − c_m0·m0, then − c_res·(Σ ρ_k D_k)
    const ratio = this.predictX0 ? f32(sigmaT / sigmaS0) : f32(alphaT / alphaS0);
    const scaleT = this.predictX0 ? alphaT : sigmaT;
    return { rks, R, b, ratio, cM0: f32(scaleT * hPhi1), cRes: f32(scaleT * Bh) };
  }

  planStep(t: number, _shape: number | readonly number[], _options: StepOptions = {}): PlannedStep {
    this.requireTimesteps();
    const i = this.initStepIndex(t);
    const stages: Stage[] = [stage("x0", this.convert(this.sigmas[i]))];
    const useCorrector = i > 0 && !this.disableCorrector.includes(i - 1) && this.haveLastSample;
    let x = "sample";
    if (useCorrector) {
      // UniC at sigmas[i] from sigmas[i−1]: m0 = hist0 (previous x̂₀), earlier ones hist1…, model_t = x0.
      const order = this.thisOrder;
      const { rks, R, b, ratio, cM0, cRes } = this.coefficients(i, i - 1, order);
      const rhos = order === 1 ? [0.5] : solveF32(R, b);
      let corr = Lin.of("last_sample", ratio).add("hist0", -cM0);
      for (let k = 1; k < order; k++) {
        // D1_k = (m_k − m0) / r_k
        const coef = -cRes * f32(rhos[k - 1]) / rks[k - 1];
        corr = corr.add(`hist${k}`, coef).add("hist0", -coef);
      }
      const rLast = f32(rhos[rhos.length - 1]);
      corr = corr.add("x0", -cRes * rLast).add("hist0", cRes * rLast);
      stages.push(stage("corrected", corr));
      x = "corrected";
    }
    // After the shift, the newest output is x0 and earlier ones are hist0, hist1, …
    const m = (k: number) => (k === 0 ? "x0" : `hist${k - 1}`);
    const nT = this.timesteps.length;
    let thisOrder = this.lowerOrderFinal ? Math.min(this.solverOrder, nT - i) : this.solverOrder;
    thisOrder = Math.min(thisOrder, this.lowerOrderNums + 1);
    this.thisOrder = thisOrder;

    // UniP from sigmas[i] to sigmas[i+1].
    const { rks, R, b, ratio, cM0, cRes } = this.coefficients(i + 1, i, thisOrder);
    let pred = Lin.of(x, ratio).add(m(0), -cM0);
    if (thisOrder > 1) {
      const rhosP = thisOrder === 2 ? [0.5] : solveF32(R.slice(0, -1).map((row) => row.slice(0, -1)), b.slice(0, -1));
      for (let k = 1; k < thisOrder; k++) {
        const coef = -cRes * f32(rhosP[k - 1]) / rks[k - 1];
        pred = pred.add(m(k), coef).add(m(0), -coef);
      }
    }
    stages.push(stage("prev_sample", pred));

    const keep: Record<string, string> = { last_sample: x };
    const newCount = Math.min(this.histCount + 1, this.solverOrder);
    for (let k = 0; k < newCount; k++) keep[`hist${k}`] = m(k);
    this.histCount = newCount;
    this.haveLastSample = true;
    if (this.lowerOrderNums < this.solverOrder) this.lowerOrderNums++;
    this.stepIndex_ = i + 1;
    return { plan: { stages, output: "prev_sample", keep }, noise: null, stepIndex: i };
  }

  planAddNoise(t: number): StepPlan {
    const [alpha, sigmaT] = alphaSigmaT(this.sigmas[this.addNoiseIndex(t)]);
    return { stages: [stage("noisy", Lin.of("original", alpha).add("noise", sigmaT))], output: "noisy", keep: {} };
  }
}
