// UNet2DConditionModel against every unet-* fixture: each run of case.json
// (incl. ControlNet-residual calls) with every weight file of the folder (the
// fp16 variant must give the same outputs), intermediates where recorded.

import { suite } from "uvu";
import { DiffusersCase, TraceCollector, checkIntermediates, diffusersFixtures } from "./lib/diffusers.ts";
import { UNet2DConditionModel } from "../pipeline/models/unet.ts";
import type { Tensor } from "../engine/tensor.ts";
import { record } from "../engine/record.ts";

const t = suite("unet");

const INPUTS = ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids", "mid_block_additional_residual"];

/** The run whose tensors hold this run's inputs ("same ... as run 'a' (stored under a.*)"), else itself. */
function inputRun(c: DiffusersCase, run: string): string {
  if (c.has(`${run}.sample`)) return run;
  const m = /run '(\w+)'/.exec(String(c.meta.runs[run].inputs ?? ""));
  if (!m) throw new Error(`${c.dir}: run ${run} has no sample and names no other run`);
  return m[1];
}

diffusersFixtures(t, /^unet-/, async (c, report) => {
  const e = c.engine;
  for await (const { label, model } of c.models(report, (s) => UNet2DConditionModel.load(s, c.config))) {
    for (const run of Object.keys(c.meta.runs)) {
      const src = inputRun(c, run);
      const traced = new TraceCollector();
      await e.scope(async () => {
        const input = (n: string) => c.upload(`${src}.${n}`);
        const timestep = Array.from(c.get(`${run}.timestep`).data);
        const nRes = c.namesOf(src).filter((n) => n.startsWith("down_block_additional_residuals.")).length;
        let down: Tensor[] | undefined;
        let mid: Tensor | undefined;
        if (nRes > 0) {
          down = Array.from({ length: nRes }, (_, i) => input(`down_block_additional_residuals.${i}`));
          mid = input("mid_block_additional_residual");
        }
        const added = c.has(`${src}.text_embeds`) ? { textEmbeds: input("text_embeds"), timeIds: c.get(`${src}.time_ids`).data } : undefined;
        const out = model.forward(input("sample"), timestep, input("encoder_hidden_states"), added, down, mid, { trace: traced.trace });
        c.check(report, label, `${run}.out`, await out.read());
        const inputs = new Set([...INPUTS, ...c.namesOf(src).filter((n) => n.startsWith("down_block_additional_residuals."))]);
        await checkIntermediates(c, report, label, run, inputs, traced);
        traced.dispose();
      });
    }
  }
});

// The step recorded once (timestep and time_ids as GPU tensors) and replayed:
// the replay recomputes from whatever was written into the inputs.
diffusersFixtures(t, { pattern: /^unet-/, suffix: " recorded and replayed" }, async (c, report) => {
  const e = c.engine;
  const model = await c.loadModel(c.weightFiles()[0].path, report, (s) => UNet2DConditionModel.load(s, c.config));
  const run = Object.keys(c.meta.runs).find((r) => inputRun(c, r) === r && !c.namesOf(r).some((n) => n.startsWith("down_block_additional_residuals.")))!;
  const sampleData = c.get(`${run}.sample`).data as Float32Array;
  const sample = c.upload(`${run}.sample`);
  const B = sample.shape[0];
  const ts = Array.from(c.get(`${run}.timestep`).data);
  const tsT = e.upload(Float32Array.from(ts.length === 1 ? new Array(B).fill(ts[0]) : ts), [B]);
  const ctx = c.upload(`${run}.encoder_hidden_states`);
  const added = c.has(`${run}.text_embeds`) ? { textEmbeds: c.upload(`${run}.text_embeds`), timeIds: e.upload(Float32Array.from(c.get(`${run}.time_ids`).data), [c.get(`${run}.time_ids`).data.length]) } : undefined;
  const rec = record(e, () => model.forward(sample, tsT, ctx, added));
  if (rec.dispatches < 10) throw new Error(`recorded only ${rec.dispatches} dispatches`);
  c.check(report, "[recorded] ", `${run}.out`, await rec.outputs.read());
  // other inputs: the replayed output must move with them ...
  e.write(sample, sampleData.map((v) => v * 0.5));
  e.write(tsT, new Float32Array(B).fill(ts[0] + 100));
  const changed = await rec.replay().read();
  const expected = c.get(`${run}.out`).data as Float32Array;
  let diff = 0;
  for (let i = 0; i < expected.length; i++) diff = Math.max(diff, Math.abs(changed[i] - expected[i]));
  if (diff < 1e-3) throw new Error(`replay with new inputs gave the old output (max diff ${diff})`);
  // ... and come back with the original ones
  e.write(sample, sampleData);
  e.write(tsT, Float32Array.from(ts.length === 1 ? new Array(B).fill(ts[0]) : ts));
  c.check(report, "[replayed] ", `${run}.out`, await rec.replay().read());
  rec.dispose();
});

t.run();
