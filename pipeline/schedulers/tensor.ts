// Scheduler steps on the GPU: the same StepPlan the host applies (common.ts),
// evaluated on Tensors with one fused linear-combination kernel per stage
// (ops.lincomb takes up to 4 terms; longer stages chain). The scheduler draws
// its noise on the host from the caller's generator, exactly as diffusers does;
// only the draw is uploaded, latents never come back to the host.

import type { Tensor } from "../../engine/tensor.ts";
import * as ops from "../../engine/ops/index.ts";
import { SsdError } from "../../engine/errors.ts";
import type { Scheduler, StepPlan, StepOptions } from "./common.ts";

/** Evaluates a plan; returns every stage's tensor plus the inputs. Caller owns the stage tensors. */
export function applyPlanTensor(plan: StepPlan, inputs: Record<string, Tensor>): Record<string, Tensor> {
  const vals: Record<string, Tensor> = { ...inputs };
  for (const st of plan.stages) {
    const terms = st.terms.filter(([c]) => c !== 0);
    for (const [, name] of terms) if (!vals[name]) throw new SsdError("E_INTERNAL", `scheduler plan reads '${name}', which is not available`);
    let acc: Tensor | null = null;
    if (terms.length === 0) {
      const any = Object.values(inputs)[0];
      acc = ops.scale(any, 0);
    }
    for (let i = 0; i < terms.length; ) {
      const chunk: [number, Tensor][] = [];
      if (acc) chunk.push([1, acc]);
      while (chunk.length < 4 && i < terms.length) { chunk.push([terms[i][0], vals[terms[i][1]]]); i++; }
      const next = ops.lincomb(chunk);
      acc?.dispose();
      acc = next;
    }
    if (st.clamp !== undefined) {
      const c = ops.clamp(acc!, -st.clamp, st.clamp);
      acc!.dispose();
      acc = c;
    }
    vals[st.name] = acc!;
  }
  if (!vals[plan.output]) throw new SsdError("E_INTERNAL", `scheduler plan output '${plan.output}' is not computed`);
  return vals;
}

/**
 * A scheduler driven on Tensors: holds the multistep state slots as Tensors.
 * Use one per generation.
 */
export class TensorScheduler {
  private state: Record<string, Tensor> = {};
  constructor(readonly scheduler: Scheduler) {}

  /** scale_model_input(sample, t) */
  scaleModelInput(sample: Tensor, t: number): Tensor {
    const d = this.scheduler.inputDivisor(t);
    return d === 1 ? ops.copy(sample) : ops.scale(sample, 1 / d);
  }

  /** add_noise(original, noise, t) */
  addNoise(original: Tensor, noise: Tensor, t: number): Tensor {
    const plan = this.scheduler.planAddNoise(t);
    return this.finish(plan, applyPlanTensor(plan, { original, noise }), new Set([original, noise]), false);
  }

  /** step(model_output, t, sample).prev_sample; draws this step's noise from options.generator. */
  step(modelOutput: Tensor, t: number, sample: Tensor, options: StepOptions = {}): Tensor {
    const { plan, noise } = this.scheduler.planStep(t, sample.shape, options);
    const inputs: Record<string, Tensor> = { ...this.state, sample, model_output: modelOutput };
    let noiseT: Tensor | null = null;
    if (noise && plan.stages.some((s) => s.terms.some(([c, n]) => n === "noise" && c !== 0))) {
      noiseT = sample.engine.upload(noise, sample.shape);
      inputs.noise = noiseT;
    }
    const vals = applyPlanTensor(plan, inputs);
    const out = this.finish(plan, vals, new Set([sample, modelOutput]), true);
    noiseT?.dispose();
    return out;
  }

  /** Keeps the plan's state slots and the output; disposes every other intermediate. */
  private finish(plan: StepPlan, vals: Record<string, Tensor>, callerOwned: Set<Tensor>, keepState: boolean): Tensor {
    const out = vals[plan.output];
    const keep = new Set<Tensor>([out]);
    const next: Record<string, Tensor> = {};
    if (keepState) {
      for (const [slot, src] of Object.entries(plan.keep)) {
        let v = vals[src];
        // State must outlive the caller's tensors: copy what the caller owns.
        if (callerOwned.has(v)) v = ops.copy(v);
        next[slot] = v;
        keep.add(v);
      }
    }
    let result = out;
    if (callerOwned.has(out)) result = ops.copy(out);
    for (const v of Object.values(vals)) if (!keep.has(v) && !callerOwned.has(v) && !Object.values(this.state).includes(v)) v.dispose();
    if (keepState) {
      for (const old of Object.values(this.state)) if (!keep.has(old)) old.dispose();
      this.state = next;
    }
    return result;
  }

  /** The multistep state tensors (a caller's scope must let them live across steps). */
  stateTensors(): Tensor[] {
    return Object.values(this.state);
  }

  dispose(): void {
    for (const t of Object.values(this.state)) t.dispose();
    this.state = {};
  }
}
