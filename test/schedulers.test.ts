// Schedulers against every scheduler-* fixture: the config, the class, the
// procedure (step counts, strengths, the fake model output), the seeds and the
// tolerances all come from the folder, so a new case of this kind needs no code.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join, basename } from "node:path";
import { fixtureDirs, FixtureReport } from "./lib/harness.ts";
import { readJsonFile } from "../weights/json.ts";
import { readAllFloat32 } from "../weights/safetensors.ts";
import { TorchGenerator } from "../pipeline/rng.ts";
import {
  createScheduler, img2imgTimesteps, resolveScheduler, supportedSchedulerNames, applyPlanHost, solveF32,
  type Scheduler, type SchedulerConfig,
} from "../pipeline/schedulers/index.ts";
import { isSsdError } from "../engine/errors.ts";

const t = suite("schedulers");
const f32 = Math.fround;

type Tensors = Map<string, { shape: number[]; data: Float32Array }>;

/** The numbers of a Python list literal in `text` after `label` (kept as text, e.g. "1.0"). */
function listAfter(text: string, label: RegExp): string[] {
  const m = new RegExp(label.source + String.raw`\s*\[([^\]]*)\]`).exec(text);
  if (!m) throw new Error(`procedure: no list for ${label}`);
  return m[1].split(",").map((s) => s.trim()).filter(Boolean);
}

const dirs = fixtureDirs(/^scheduler-/);

t("fixtures exist", () => {
  assert.ok(dirs.length > 0, "no scheduler-* fixture in test/fixtures");
});

for (const dir of dirs) {
  t(`fixture ${basename(dir)}`, async () => {
    const config = await readJsonFile<SchedulerConfig>(join(dir, "scheduler_config.json"));
    const c = await readJsonFile<any>(join(dir, "case.json"));
    const io: Tensors = await readAllFloat32(join(dir, "io.safetensors"));
    const report = new FixtureReport(dir);
    const used = new Set<string>();
    const tol = c.tolerance;
    const trajAtol: number = tol.suggested_atol_trajectories;
    const perTensor: Record<string, { suggested_atol: number; suggested_rtol: number }> = tol.detail?.per_tensor ?? {};
    const tsAtolMatch = /atol ([0-9.]+(?:e-?\d+)?)/.exec(String(tol.timesteps));
    const tsAtol = tsAtolMatch ? Number(tsAtolMatch[1]) : 0;
    assert.type(trajAtol, "number", "tolerance.suggested_atol_trajectories");

    const get = (name: string) => { const v = io.get(name); if (!v) throw new Error(`io.safetensors has no '${name}'`); used.add(name); return v.data; };
    const check = (name: string, ours: ArrayLike<number>, kind: "tensor" | "timesteps" = "tensor") => {
      if (!io.has(name)) return false;
      const ref = get(name);
      if (kind === "timesteps") { report.add(name, ours, ref, tsAtol, 0); return true; }
      const pt = perTensor[name];
      if (pt) report.add(name, ours, ref, pt.suggested_atol, pt.suggested_rtol);
      report.add(`${name} (trajectory atol)`, ours, ref, trajAtol, 0);
      return true;
    };
    const fresh = (): Scheduler => {
      const s = createScheduler(c.class, config);
      if (s.className !== c.class) throw new Error(`created ${s.className}, case wants ${c.class}`);
      return s;
    };

    // Inputs drawn from the recorded seeds must equal the stored ones (the RNG, end to end).
    for (const [key, seed] of Object.entries<number>(c.seeds ?? {})) {
      const name = io.has(key) ? key : key.replace("_", ".");
      if (!io.has(name)) continue;
      const ref = io.get(name)!;
      report.add(`${name} = randn(seed ${seed})`, new TorchGenerator(BigInt(seed)).randn(ref.shape), ref.data, 0, 0);
      used.add(name);
    }

    const proc = c.procedure;
    const moMatch = /mo = ([0-9.]+)\*inp \+ F/.exec(proc.txt2img);
    if (!moMatch) throw new Error(`unrecognised txt2img procedure: ${proc.txt2img}`);
    const moScale = f32(Number(moMatch[1]));
    const x0 = get("x0"), F = get("F");
    const shape = io.get("x0")!.shape;
    const stepSeed = BigInt(c.seeds.step_generator);
    const takesGenerator = c.step_accepts_generator !== false;

    /** The denoising loop of the procedure from `x`, checking `<prefix>.step<i>.*`. */
    const loop = (s: Scheduler, timesteps: number[], x: Float32Array, prefix: string, required: boolean) => {
      const G = new TorchGenerator(stepSeed);
      timesteps.forEach((ts, i) => {
        const inp = s.scaleModelInput(x, ts);
        check(`${prefix}.step${i}.scaled_input`, inp);
        const mo = new Float32Array(inp.length);
        for (let k = 0; k < mo.length; k++) mo[k] = f32(f32(moScale * inp[k]) + F[k]);
        x = s.step(mo, ts, x, takesGenerator ? { generator: G } : {});
        const had = check(`${prefix}.step${i}.prev_sample`, x);
        if (required && !had) report.fail(`${prefix}.step${i}.prev_sample missing from io.safetensors`);
      });
    };

    for (const nText of listAfter(proc.txt2img, /for n in/)) {
      const n = Number(nText);
      const p = `n${nText}`;
      const s = fresh();
      s.setTimesteps(n);
      check(`${p}.timesteps`, s.timesteps, "timesteps");
      if (io.has(`${p}.sigmas`)) {
        if (!s.sigmas) report.fail(`${p}.sigmas: ${s.className} has no sigmas`);
        else check(`${p}.sigmas`, s.sigmas);
      }
      const sigma0 = s.initNoiseSigma;
      check(`${p}.init_noise_sigma`, [sigma0]);
      const scalar = c.scalars?.[`${p}.init_noise_sigma`];
      if (typeof scalar === "number") report.add(`scalars.${p}.init_noise_sigma`, [sigma0], [scalar], 1e-6 * Math.max(1, scalar), 0);
      const x = x0.map((v) => f32(v * sigma0));
      check(`${p}.latents_init`, x);
      loop(s, s.timesteps, x, p, true);
    }

    if (proc.img2img) {
      const ns = listAfter(proc.img2img, /for n in/);
      const strengths = listAfter(proc.img2img, /strength in/);
      const original = get("img2img.original"), noise = get("img2img.noise");
      for (const nText of ns) for (const sText of strengths) {
        const n = Number(nText), strength = Number(sText);
        const p = `i2i_n${nText}_s${sText}`;
        const s = fresh();
        s.setTimesteps(n);
        const r = img2imgTimesteps(s, n, strength);
        check(`${p}.timesteps`, r.timesteps, "timesteps");
        const sc = c.scalars ?? {};
        if (`${p}.num_inference_steps_effective` in sc && sc[`${p}.num_inference_steps_effective`] !== r.numInferenceSteps) {
          report.fail(`${p}: ${r.numInferenceSteps} effective steps, want ${sc[`${p}.num_inference_steps_effective`]}`);
        }
        if (`${p}.begin_index` in sc && sc[`${p}.begin_index`] !== r.beginIndex) {
          report.fail(`${p}: begin_index ${r.beginIndex}, want ${sc[`${p}.begin_index`]}`);
        }
        if (r.timesteps.length === 0) continue;
        const latentT = r.timesteps[0];
        check(`${p}.latent_timestep`, [latentT], "timesteps");
        const noisy = s.addNoise(original, noise, latentT);
        check(`${p}.noisy`, noisy);
        const hasTrajectory = io.has(`${p}.latents_init`) || io.has(`${p}.step0.prev_sample`);
        if (hasTrajectory) {
          check(`${p}.latents_init`, noisy);
          loop(s, r.timesteps, noisy, p, true);
        }
      }
    }

    const unused = [...io.keys()].filter((k) => !used.has(k));
    if (unused.length) report.fail(`tensors not checked (unknown to this test): ${unused.slice(0, 5).join(", ")}${unused.length > 5 ? " …" : ""}`);
    report.finish();
  });
}

// --- configs and names the fixtures do not cover ---------------------------

const SDXL: SchedulerConfig = {
  beta_end: 0.012, beta_schedule: "scaled_linear", beta_start: 0.00085, clip_sample: false, interpolation_type: "linear",
  num_train_timesteps: 1000, prediction_type: "epsilon", set_alpha_to_one: false, steps_offset: 1, timestep_spacing: "leading",
  trained_betas: null, use_karras_sigmas: false,
};

/**
 * Runs a whole trajectory with a "perfect" model of a zero image: its output makes
 * the scheduler's x̂₀ exactly 0, so a sound schedule ends near 0 whatever the noise.
 */
function run(s: Scheduler, n: number, seed = 5n): { x: Float32Array; x0: Float32Array } {
  s.setTimesteps(n);
  const shape = [1, 4, 4, 4];
  const x0 = new TorchGenerator(seed).randn(shape);
  let x: Float32Array = x0.map((v) => f32(v * s.initNoiseSigma));
  const G = new TorchGenerator(seed + 1n);
  const v = s.config.prediction_type === "v_prediction";
  const sigmaSpace = s.className.startsWith("Euler");
  for (const ts of s.timesteps) {
    const inp = s.scaleModelInput(x, ts);
    let k: number; // model_output = k · x
    if (s.className === "DDIMScheduler") {
      const a = s.alphasCumprod[ts];
      k = v ? Math.sqrt(a) / Math.sqrt(1 - a) : 1 / Math.sqrt(1 - a);
    } else {
      const sigma = s.sigmas![s.stepIndex ?? s.beginIndex ?? s.indexForTimestep(ts)];
      if (sigmaSpace) k = v ? 1 / (sigma * Math.sqrt(sigma * sigma + 1)) : 1 / sigma;
      else k = v ? 1 / sigma : Math.sqrt(sigma * sigma + 1) / sigma; // VP: α = 1/√(σ²+1), σ_t = σα
    }
    const mo = x.map((a) => f32(k * a));
    assert.is(inp.length, x.length);
    x = s.step(mo, ts, x, { generator: G });
    for (const a of x) if (!Number.isFinite(a)) throw new Error(`${s.className}: non-finite latent at t=${ts}`);
  }
  return { x, x0 };
}

function assertDecreasing(xs: ArrayLike<number>, what: string) {
  for (let i = 1; i < xs.length; i++) assert.ok(xs[i] < xs[i - 1], `${what} not decreasing at ${i}: ${xs[i - 1]} → ${xs[i]}`);
}

t("config variants outside the fixtures: v_prediction, linspace, karras on Euler, SDE, clip_sample", () => {
  const variants: [string, SchedulerConfig][] = [
    ["euler", { ...SDXL, timestep_spacing: "linspace", use_karras_sigmas: true, prediction_type: "v_prediction" }],
    ["euler", { ...SDXL, timestep_spacing: "trailing", interpolation_type: "linear", beta_schedule: "linear", beta_start: 0.0001, beta_end: 0.02 }],
    ["euler_a", { ...SDXL, timestep_spacing: "linspace", prediction_type: "v_prediction" }],
    ["ddim", { ...SDXL, timestep_spacing: "linspace", clip_sample: true, set_alpha_to_one: true, prediction_type: "v_prediction" }],
    ["dpmpp_2m_sde_karras", { ...SDXL, timestep_spacing: "linspace" }],
    ["dpmpp_2m", { ...SDXL, timestep_spacing: "linspace", prediction_type: "v_prediction", solver_order: 3, lower_order_final: false }],
    ["dpmpp_2m", { ...SDXL, rescale_betas_zero_snr: true, timestep_spacing: "trailing", prediction_type: "v_prediction" }],
    ["unipc", { ...SDXL, timestep_spacing: "linspace", use_karras_sigmas: true, solver_order: 3 }],
    ["unipc", { ...SDXL, prediction_type: "v_prediction", solver_type: "bh1", predict_x0: false }],
  ];
  for (const [name, cfg] of variants) {
    for (const n of [1, 7, 25]) {
      const s = createScheduler(name, cfg);
      const { x, x0 } = run(s, n);
      assert.is(s.timesteps.length, n, `${name} ${JSON.stringify(cfg)}: ${s.timesteps.length} timesteps for ${n}`);
      for (const ts of s.timesteps) assert.ok(ts >= 0 && ts <= 999, `${name}: timestep ${ts} outside the training range`);
      if (n > 1) assertDecreasing(s.timesteps, `${name} timesteps`);
      if (s.sigmas && n > 1) assertDecreasing(s.sigmas.subarray(0, n), `${name} sigmas`);
      // Denoising a zero image: the result ends far closer to 0 than the starting noise.
      const rms = (a: Float32Array) => Math.sqrt(a.reduce((q, v) => q + v * v, 0) / a.length);
      if (n >= 7) assert.ok(rms(x) < 0.35 * rms(x0), `${name} ${JSON.stringify(cfg)} n=${n}: rms ${rms(x)} vs start ${rms(x0)}`);
    }
  }
});

t("euler karras: sigmas follow rho=7 between the training extremes; linspace timesteps are fractional", () => {
  const s = createScheduler("euler", { ...SDXL, timestep_spacing: "linspace", use_karras_sigmas: true });
  s.setTimesteps(10);
  const sig = s.sigmas!;
  assert.is(sig.length, 11);
  assert.is(sig[10], 0);
  assert.ok(Math.abs(sig[0] - 14.6146) < 1e-3, `sigma_max ${sig[0]}`);
  assert.ok(Math.abs(sig[9] - 0.0292) < 1e-3, `sigma_min ${sig[9]}`);
  const mid = (sig[0] ** (1 / 7) + (sig[9] ** (1 / 7) - sig[0] ** (1 / 7)) * (4 / 9)) ** 7;
  assert.ok(Math.abs(sig[4] - mid) < 1e-4 * mid, `karras sigma[4] ${sig[4]} vs ${mid}`);
  assert.ok(s.timesteps.some((v) => !Number.isInteger(v)), "karras timesteps should be interpolated");
  assert.is(s.initNoiseSigma, sig[0], "linspace: init_noise_sigma = max sigma");
});

t("Euler draws noise every step (generator advances); DPM++ 2M does not; SDE does", () => {
  const shape = [1, 4, 2, 2];
  const draws = (name: string): number => {
    const s = createScheduler(name, SDXL);
    s.setTimesteps(3);
    const G = new TorchGenerator(9n);
    let x = new TorchGenerator(1n).randn(shape);
    for (const ts of s.timesteps) x = s.step(s.scaleModelInput(x, ts), ts, x, { generator: G });
    // Count how many randn(shape) draws G made by replaying a fresh generator.
    const probe = G.rand([1])[0];
    for (let k = 0; k <= 5; k++) {
      const H = new TorchGenerator(9n);
      for (let j = 0; j < k; j++) H.randn(shape);
      if (H.rand([1])[0] === probe) return k;
    }
    return -1;
  };
  assert.is(draws("euler"), 3);
  assert.is(draws("euler_a"), 3);
  assert.is(draws("dpmpp_2m"), 0);
  assert.is(draws("dpmpp_2m_sde"), 3);
  assert.is(draws("ddim"), 0);
  assert.is(draws("unipc"), 0);
});

t("one generator per batch row: each row's trajectory equals that row run alone", () => {
  const row = [1, 4, 2, 2];
  const n = 16;
  const x0 = new TorchGenerator(3n).randn([2, 4, 2, 2]);
  const runBatch = (gens: TorchGenerator[], x: Float32Array, shape: number[]) => {
    const s = createScheduler("euler_a", SDXL);
    s.setTimesteps(4);
    let y = x;
    for (const ts of s.timesteps) y = s.step(s.scaleModelInput(y, ts), ts, y, { generator: gens, shape });
    return y;
  };
  const both = runBatch([new TorchGenerator(10n), new TorchGenerator(11n)], x0, [2, 4, 2, 2]);
  const a = runBatch([new TorchGenerator(10n)], x0.slice(0, n), row);
  const b = runBatch([new TorchGenerator(11n)], x0.slice(n), row);
  assert.equal(Array.from(both), [...a, ...b]);
  const s = createScheduler("euler_a", SDXL);
  s.setTimesteps(2);
  assert.throws(() => s.step(x0, s.timesteps[0], x0, { generator: [new TorchGenerator(1n), new TorchGenerator(2n)] }), (e: unknown) => isSsdError(e, "E_BAD_PARAM"));
});

t("a step that draws noise without a generator is an error", () => {
  const s = createScheduler("euler_a", SDXL);
  s.setTimesteps(2);
  const x = new Float32Array(4);
  assert.throws(() => s.step(x, s.timesteps[0], x), (e: unknown) => isSsdError(e, "E_BAD_PARAM"));
});

t("scheduler names: ours, Segmind's and diffusers classes; anything else is E_BAD_PARAM", () => {
  const expect: [string, string, Record<string, unknown>][] = [
    ["ddim", "DDIMScheduler", {}], ["DDIM", "DDIMScheduler", {}],
    ["euler", "EulerDiscreteScheduler", {}], ["Euler", "EulerDiscreteScheduler", {}],
    ["euler_a", "EulerAncestralDiscreteScheduler", {}], ["Euler a", "EulerAncestralDiscreteScheduler", {}],
    ["dpmpp_2m", "DPMSolverMultistepScheduler", {}], ["DPM Multi", "DPMSolverMultistepScheduler", {}],
    ["dpmpp_2m_karras", "DPMSolverMultistepScheduler", { use_karras_sigmas: true }],
    ["DPM++ 2M Karras", "DPMSolverMultistepScheduler", { use_karras_sigmas: true }],
    ["dpmpp_2m_sde", "DPMSolverMultistepScheduler", { algorithm_type: "sde-dpmsolver++" }],
    ["dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler", { algorithm_type: "sde-dpmsolver++", use_karras_sigmas: true }],
    ["unipc", "UniPCMultistepScheduler", {}], ["UniPC", "UniPCMultistepScheduler", {}],
    ["EulerAncestralDiscreteScheduler", "EulerAncestralDiscreteScheduler", {}],
    ["UniPCMultistepScheduler", "UniPCMultistepScheduler", {}],
  ];
  for (const [name, cls, ov] of expect) {
    const r = resolveScheduler(name);
    assert.is(r.className, cls, name);
    assert.equal(r.overrides, ov, name);
    assert.is(createScheduler(name, SDXL).className, cls);
  }
  for (const bad of ["Heun", "LMS", "PNDM", "DPM2", "DPM2 a", "dpm_sde", "", "euler-ancestral-x"]) {
    try {
      resolveScheduler(bad);
      assert.unreachable(`'${bad}' should be rejected`);
    } catch (e: any) {
      assert.ok(isSsdError(e, "E_BAD_PARAM"), `'${bad}': ${e}`);
      assert.ok(/euler_a/.test(e.message) && /DPM\+\+ 2M Karras/.test(e.message), "the message lists the supported names");
    }
  }
  assert.ok(supportedSchedulerNames().includes("Euler a"));
});

t("bad configs are E_BAD_CONFIG", () => {
  const bad: [string, SchedulerConfig][] = [
    ["euler", { ...SDXL, beta_schedule: "cosine_fancy" }],
    ["ddim", { ...SDXL, thresholding: true }],
    ["dpmpp_2m", { ...SDXL, algorithm_type: "dpmsolver" }],
    ["euler", { ...SDXL, timestep_spacing: "random" }],
    ["unipc", { ...SDXL, num_train_timesteps: "many" }],
  ];
  for (const [name, cfg] of bad) assert.throws(() => createScheduler(name, cfg), (e: unknown) => isSsdError(e, "E_BAD_CONFIG"), `${name} ${JSON.stringify(cfg)}`);
});

t("a config of another class is read for the keys the target class has (from_config)", () => {
  const dpmCfg = { ...SDXL, _class_name: "DPMSolverMultistepScheduler", algorithm_type: "dpmsolver++", lambda_min_clipped: -Infinity, solver_order: 2 };
  const e = createScheduler("euler", dpmCfg);
  e.setTimesteps(4);
  assert.equal(e.timesteps, [751, 501, 251, 1]);
});

t("plans: one elementwise program; clamp stage; state slots named in keep", () => {
  const vals = applyPlanHost(
    { stages: [{ name: "a", terms: [[2, "x"], [-1, "y"]], clamp: 1.5 }, { name: "b", terms: [[1, "a"], [0.5, "y"]] }], output: "b", keep: { s: "a" } },
    { x: Float32Array.from([1, 3]), y: Float32Array.from([4, 1]) },
  );
  assert.equal(Array.from(vals.a), [-1.5, 1.5]);
  assert.equal(Array.from(vals.b), [0.5, 2]);
  const s = createScheduler("dpmpp_2m", SDXL);
  s.setTimesteps(5);
  const p1 = s.planStep(s.timesteps[0], 8);
  assert.equal(Object.keys(p1.plan.keep), ["hist0"]);
  const p2 = s.planStep(s.timesteps[1], 8);
  assert.equal(p2.plan.keep, { hist0: "x0", hist1: "hist0" });
  assert.ok(p2.plan.stages.some((st) => st.terms.some(([, n]) => n === "hist0")), "second order reads the previous x0");
  assert.is(p2.noise, null);
});

t("solveF32 solves small systems", () => {
  const x = solveF32([[1, 1, 1], [0.5, 2, 1], [0.25, 4, 1]], [3, 3.5, 5.25]);
  for (const [a, b] of x.map((v, i) => [v, [1, 1, 1][i]])) assert.ok(Math.abs(a - b) < 1e-5, `${x}`);
});

t.run();
