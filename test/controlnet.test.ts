// ControlNetModel against every controlnet-* fixture: each run of case.json
// (conditioning_scale, guess mode), every weight file, intermediates where recorded.

import { suite } from "uvu";
import { TraceCollector, checkIntermediates, diffusersFixtures } from "./lib/diffusers.ts";
import { ControlNetModel } from "../pipeline/models/controlnet.ts";

const t = suite("controlnet");

const INPUTS = new Set(["sample", "timestep", "encoder_hidden_states", "controlnet_cond", "text_embeds", "time_ids"]);

/** conditioning_scale and guess_mode as the recorded call states them. */
function callArgs(call: string): { conditioningScale: number; guessMode: boolean } {
  const s = /conditioning_scale=([\d.eE+-]+)/.exec(call);
  const g = /guess_mode=(True|False)/.exec(call);
  if (!s || !g) throw new Error(`cannot read conditioning_scale / guess_mode from '${call}'`);
  return { conditioningScale: Number(s[1]), guessMode: g[1] === "True" };
}

diffusersFixtures(t, /^controlnet-/, async (c, report) => {
  const e = c.engine;
  for await (const { label, model } of c.models(report, (s) => ControlNetModel.load(s, c.config))) {
    for (const run of Object.keys(c.meta.runs)) {
      const traced = new TraceCollector();
      await e.scope(async () => {
        const input = (n: string) => c.upload(`${run}.${n}`);
        const args = callArgs(c.meta.runs[run].call);
        const added = c.has(`${run}.text_embeds`) ? { textEmbeds: input("text_embeds"), timeIds: c.get(`${run}.time_ids`).data } : undefined;
        const out = model.forward(input("sample"), Array.from(c.get(`${run}.timestep`).data), input("encoder_hidden_states"), input("controlnet_cond"), { ...args, added, trace: traced.trace });
        const nDown = c.namesOf(run).filter((n) => n.startsWith("down_block_res_samples.")).length;
        if (nDown !== out.downBlockResSamples.length) report.fail(`${label}${run}: ${out.downBlockResSamples.length} down residuals, ${nDown} recorded`);
        for (let i = 0; i < Math.min(nDown, out.downBlockResSamples.length); i++) {
          c.check(report, label, `${run}.down_block_res_samples.${i}`, await out.downBlockResSamples[i].read());
        }
        c.check(report, label, `${run}.mid_block_res_sample`, await out.midBlockResSample.read());
        await checkIntermediates(c, report, label, run, INPUTS, traced);
        traced.dispose();
      });
    }
  }
});

t.run();
