// CLIP text encoders against every `clip-text-*` fixture: the model is built from
// the folder's config.json and model.safetensors, run on each case run's
// input_ids, and every float tensor the fixture recorded (hidden states, layer
// intermediates, pooled output, text_embeds, the with_attention_mask.* second
// call) is compared within the case's tolerance; the pooled positions exactly.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { getEngine } from "../engine/engine.ts";
import * as ops from "../engine/ops/index.ts";
import type { Tensor } from "../engine/tensor.ts";
import { fixtureDirs, FixtureReport } from "./lib/harness.ts";
import { readJsonFile } from "../weights/json.ts";
import { readAllFloat32, type StDtype } from "../weights/safetensors.ts";
import { CLIPTextModel, CLIPTextTransformer, parseCLIPTextConfig, type CLIPTextModelOutput } from "../pipeline/models/clip.ts";

const t = suite("clip");

type IoTensor = { shape: number[]; dtype: StDtype; data: Float32Array };

const isFloat = (d: StDtype) => d === "F32" || d === "F16" || d === "BF16" || d === "F64";

/** Rows of an integer [B, N] tensor. */
function rows(x: IoTensor): number[][] {
  const n = x.shape[x.shape.length - 1];
  const out: number[][] = [];
  for (let i = 0; i < x.data.length; i += n) out.push(Array.from(x.data.subarray(i, i + n)));
  return out;
}

/** Runs the model, keeping copies of every traced intermediate under its module path. */
async function run(model: CLIPTextModel, ids: number[][], attentionMask?: number[][]): Promise<{ out: CLIPTextModelOutput; traced: Map<string, Tensor> }> {
  const traced = new Map<string, Tensor>();
  const out = model.forward(ids, { attentionMask, trace: (name, x) => traced.set(name, ops.copy(x)) });
  return { out, traced };
}

/** Our tensor for a fixture tensor name (without the run prefix), or undefined. */
function ours(name: string, r: { out: CLIPTextModelOutput; traced: Map<string, Tensor> }): Tensor | undefined {
  let m: RegExpMatchArray | null;
  if ((m = name.match(/^hidden_states\.(\d+)$/))) return r.out.hiddenStates[Number(m[1])];
  if (name === "last_hidden_state") return r.out.lastHiddenState;
  if (name === "pooler_output") return r.out.pooledOutput;
  if (name === "text_embeds") return r.out.textEmbeds;
  // The fixture abbreviates encoder.layers[i] as layer<i>.
  if ((m = name.match(/^layer(\d+)\.(.+)$/))) return r.traced.get(`text_model.encoder.layers.${m[1]}.${m[2]}`);
  return undefined;
}

for (const dir of fixtureDirs(/^clip-text-/)) {
  const folder = dir.split(/[\\/]/).pop()!;
  t(`fixture ${folder}`, async () => {
    const e = await getEngine();
    const kase = await readJsonFile<any>(join(dir, "case.json"));
    const io = await readAllFloat32(join(dir, "io.safetensors"));
    const warnings: string[] = [];
    const model = await CLIPTextModel.fromPretrained(dir, { warn: (m) => warnings.push(m) });
    assert.equal(warnings, [], "every checkpoint key is used");
    const tol = kase.tolerance ?? {};
    assert.type(tol.suggested_atol, "number", "case.json tolerance.suggested_atol");
    const report = new FixtureReport(dir);
    const runs = Object.keys(kase.runs ?? {});
    assert.ok(runs.length > 0, "case.json lists no runs");
    let compared = 0;
    for (const runName of runs) {
      const prefix = `${runName}.`;
      const names = [...io.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
      const idsT = io.get(`${prefix}input_ids`);
      if (!idsT) { report.fail(`${runName}: no input_ids in io.safetensors`); continue; }
      const ids = rows(idsT);
      const maskT = io.get(`${prefix}attention_mask`);
      await e.scope(async () => {
        const plain = await run(model, ids);
        const masked = names.some((n) => n.startsWith("with_attention_mask.")) && maskT ? await run(model, ids, rows(maskT)) : null;
        for (const name of names) {
          const ref = io.get(prefix + name)!;
          if (name === "input_ids" || name === "attention_mask") continue;
          if (name === "pooled_index") {
            const want = Array.from(ref.data);
            if (JSON.stringify(plain.out.pooledIndex) !== JSON.stringify(want)) report.fail(`${runName}.pooled_index: got [${plain.out.pooledIndex}] want [${want}]`);
            continue;
          }
          if (!isFloat(ref.dtype)) { report.fail(`${runName}.${name}: ${ref.dtype} tensor this test does not know`); continue; }
          const isMasked = name.startsWith("with_attention_mask.");
          const src = isMasked ? masked : plain;
          const got = src ? ours(isMasked ? name.slice("with_attention_mask.".length) : name, src) : undefined;
          if (!got) { report.fail(`${runName}.${name}: the model produced no such tensor`); continue; }
          if (JSON.stringify(got.shape) !== JSON.stringify(ref.shape)) { report.fail(`${runName}.${name}: shape [${got.shape}] want [${ref.shape}]`); continue; }
          const per = tol.per_tensor?.[runName]?.[name] ?? {};
          report.add(`${runName}.${name}`, await got.read(), ref.data, per.suggested_atol ?? tol.suggested_atol, per.suggested_rtol ?? tol.suggested_rtol ?? 0);
          compared++;
        }
      });
    }
    assert.ok(compared > 0, "no float tensors compared");
    report.finish();
  });
}

// transformers' pooling rule: eos_token_id == 2 (the legacy value in SDXL's configs) pools at
// argmax(ids); any other id at its first occurrence. They differ once an added token (textual
// inversion) has an id above the EOS id.
t("pooled position: legacy argmax vs first eos_token_id", () => {
  const ids = [49406, 5, 49410, 49407, 49407];
  const at = (eos: number) => new CLIPTextTransformer(parseCLIPTextConfig({ eos_token_id: eos, vocab_size: 49411 }), null as any, null as any, null as any).pooledIndex(ids);
  assert.is(at(2), 2);
  assert.is(at(49407), 3);
  assert.is(at(12345), 0, "no eos: position 0, as argmax of an all-false mask");
});

// Ownership: a forward disposes its temporaries; what it returns is the caller's.
const first = fixtureDirs(/^clip-text-/)[0];
if (first) {
  t("forward leaves no temporaries behind (plain and masked)", async () => {
    const e = await getEngine();
    const model = await CLIPTextModel.fromPretrained(first, { warn: () => {} });
    const N = model.config.max_position_embeddings;
    const ids = [Array.from({ length: N }, (_, i) => (i === 5 ? model.config.vocab_size - 1 : i % 7))];
    const mask = [Array.from({ length: N }, (_, i) => (i <= 5 ? 1 : 0))];
    await e.sync();
    const before = e.memory().live;
    for (const attentionMask of [undefined, mask]) {
      const out = model.forward(ids, { attentionMask });
      for (const x of [...out.hiddenStates, out.lastHiddenState, out.pooledOutput, out.textEmbeds]) x?.dispose();
    }
    await e.sync();
    assert.is(e.memory().live, before, "pool bytes in use after disposing the outputs");
  });
}

t.run();
