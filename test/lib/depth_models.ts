// Shared runner for the transformers depth-model fixtures (dpt-*, depth-anything-*):
// the model is built from the folder's config.json and model.safetensors, run on
// every run's pixel_values, and every float tensor the run recorded (outputs and
// intermediates) is compared allclose with the case's suggested atol/rtol.

import * as assert from "uvu/assert";
import { join } from "node:path";
import { getEngine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import type { Tensor } from "../../engine/tensor.ts";
import { FixtureReport } from "./harness.ts";
import { readJsonFile } from "../../weights/json.ts";
import { readAllFloat32, type StDtype } from "../../weights/safetensors.ts";
import type { DepthOutput, DepthForwardOptions } from "../../pipeline/models/dpt.ts";

export interface DepthModelLike {
  forward(px: Tensor, opts?: DepthForwardOptions): DepthOutput;
}

const isFloat = (d: StDtype) => d === "F32" || d === "F16" || d === "BF16" || d === "F64";

/** Runs every run of the fixture in `dir` through `model`; prints the fixture line, throws on failure. */
export async function checkDepthFixture(dir: string, load: (dir: string, warn: (m: string) => void) => Promise<DepthModelLike>): Promise<void> {
  const e = await getEngine();
  const kase = await readJsonFile<any>(join(dir, "case.json"));
  const io = await readAllFloat32(join(dir, "io.safetensors"));
  const warnings: string[] = [];
  const model = await load(dir, (m) => warnings.push(m));
  assert.equal(warnings, [], "every checkpoint key is used");
  const tol = kase.tolerance ?? {};
  assert.type(tol.suggested_atol, "number", "case.json tolerance.suggested_atol");
  const atol: number = tol.suggested_atol, rtol: number = tol.suggested_rtol ?? 0;
  const report = new FixtureReport(dir);
  const runs = Object.keys(kase.runs ?? {});
  assert.ok(runs.length > 0, "case.json lists no runs");
  let compared = 0;
  for (const run of runs) {
    const prefix = `${run}.`;
    const names = [...io.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
    const pv = io.get(`${prefix}pixel_values`);
    if (!pv) { report.fail(`${run}: no pixel_values in io.safetensors`); continue; }
    await e.scope(async () => {
      const traced = new Map<string, Tensor>();
      const px = e.upload(pv.data, pv.shape);
      let out: DepthOutput;
      try {
        out = model.forward(px, { outputHiddenStates: true, trace: (name, t) => traced.set(name, ops.copy(t)) });
      } catch (err: any) {
        report.fail(`${run}: forward failed: ${err?.code ?? ""} ${err?.message ?? err}`);
        return;
      }
      for (const name of names) {
        if (name === "pixel_values") continue;
        const ref = io.get(prefix + name)!;
        if (!isFloat(ref.dtype)) { report.fail(`${run}.${name}: ${ref.dtype} tensor this test does not know`); continue; }
        let got: Tensor | undefined;
        const m = /^hidden_states\.(\d+)$/.exec(name);
        if (name === "predicted_depth") got = out.predictedDepth;
        else if (m) got = out.hiddenStates?.[Number(m[1])];
        else got = traced.get(name);
        if (!got) { report.fail(`${run}.${name}: the model produced no such tensor`); continue; }
        if (JSON.stringify(got.shape) !== JSON.stringify(ref.shape)) { report.fail(`${run}.${name}: shape [${got.shape}] want [${ref.shape}]`); continue; }
        report.add(`${run}.${name}`, await got.read(), ref.data, atol, rtol);
        compared++;
      }
    });
  }
  assert.ok(compared > 0, "no float tensors compared");
  report.finish();
}
