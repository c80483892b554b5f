// SDXL prompt encoding on the tiny models inside each `e2e-*` fixture (a full
// diffusers folder): token ids exactly, prompt_embeds / pooled_prompt_embeds and
// the CFG batch handed to the UNet ([negative; positive], zeros for an absent
// negative prompt under force_zeros_for_empty_prompt) within the case's
// per-tensor suggested_atol. Then the encode_prompt rules that fixture does not
// exercise (an encoded "" negative, clip_skip, num_images_per_prompt), checked
// against the text encoders called directly.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { getEngine } from "../engine/engine.ts";
import * as ops from "../engine/ops/index.ts";
import type { Tensor } from "../engine/tensor.ts";
import { fixtureDirs, FixtureReport, assertClose } from "./lib/harness.ts";
import { readJsonFile } from "../weights/json.ts";
import { readAllFloat32 } from "../weights/safetensors.ts";
import { encodePrompt, loadSDXLTextEncoders, type SDXLTextEncoders } from "../pipeline/prompt.ts";

const t = suite("prompt");

const dirs = fixtureDirs(/^e2e-/).filter((d) => existsSync(join(d, "text_encoder_2")) && existsSync(join(d, "expected", "io.safetensors")));

/** rows [from, to) of the leading dim of a host tensor of `shape` */
function rowsOf(data: Float32Array, shape: number[], from: number, to: number): Float32Array {
  const per = shape.slice(1).reduce((a, b) => a * b, 1);
  return data.subarray(from * per, to * per);
}

for (const dir of dirs) {
  const folder = dir.split(/[\\/]/).pop()!;
  t(`fixture ${folder}: encode_prompt`, async () => {
    const e = await getEngine();
    const kase = await readJsonFile<any>(join(dir, "case.json"));
    const request = await readJsonFile<any>(join(dir, "inputs", "request.json"));
    const io = await readAllFloat32(join(dir, "expected", "io.safetensors"));
    const per = kase.tolerance?.tensors?.per_tensor ?? {};
    const atol = (name: string): number => {
      const v = per[name]?.suggested_atol;
      assert.type(v, "number", `case.json tolerance.tensors.per_tensor.${name}.suggested_atol`);
      return v;
    };
    const enc = await loadSDXLTextEncoders(dir);
    const report = new FixtureReport(dir);
    const negative: string | null = request.negative_prompt ?? null;
    await e.scope(async () => {
      const r = await encodePrompt(enc, request.prompt, negative, { numImagesPerPrompt: 1 });
      // token ids, exactly
      const tokNames = enc.tokenizer ? ["tokenizer", "tokenizer_2"] : ["tokenizer_2"];
      tokNames.forEach((tok, i) => {
        for (const [kind, ids] of [["prompt", r.inputIds[i]], ["negative_prompt", r.negativeInputIds?.[i]]] as const) {
          const want = io.get(`${tok}.${kind}.input_ids`);
          if (!want) continue;
          if (!ids || JSON.stringify(ids.flat()) !== JSON.stringify(Array.from(want.data))) report.fail(`${tok}.${kind}.input_ids differ: got ${JSON.stringify(ids?.flat())}`);
        }
      });
      const pos = await r.promptEmbeds.read();
      const pooled = await r.pooledPromptEmbeds.read();
      const want = io.get("prompt_embeds")!, wantPooled = io.get("pooled_prompt_embeds")!;
      assert.equal(r.promptEmbeds.shape, want.shape, "prompt_embeds shape");
      assert.equal(r.pooledPromptEmbeds.shape, wantPooled.shape, "pooled_prompt_embeds shape");
      report.add("prompt_embeds", pos, want.data, atol("prompt_embeds"));
      report.add("pooled_prompt_embeds", pooled, wantPooled.data, atol("pooled_prompt_embeds"));
      for (const name of ["negative_prompt_embeds", "negative_pooled_prompt_embeds"]) {
        const w = io.get(name);
        if (!w) continue;
        const got = name === "negative_prompt_embeds" ? r.negativePromptEmbeds : r.negativePooledPromptEmbeds;
        if (!got) { report.fail(`${name}: none produced`); continue; }
        report.add(name, await got.read(), w.data, atol(per[name] ? name : name.replace("negative_", "")));
      }
      // The CFG batch the UNet received: [negative; positive].
      assert.ok(r.negativePromptEmbeds && r.negativePooledPromptEmbeds, "classifier-free guidance gives negative embeds");
      assert.is(r.negativeIsZeros, negative === null && enc.forceZerosForEmptyPrompt, "zeros exactly when the negative prompt is absent and the config forces them");
      const neg = await r.negativePromptEmbeds!.read();
      const negPooled = await r.negativePooledPromptEmbeds!.read();
      for (const [name, n, p, tolName] of [["unet.encoder_hidden_states", neg, pos, "prompt_embeds"], ["unet.text_embeds", negPooled, pooled, "pooled_prompt_embeds"]] as const) {
        const w = io.get(name);
        if (!w) continue;
        const b = w.shape[0] / 2;
        report.add(`${name}[negative]`, n, rowsOf(w.data, w.shape, 0, b), per[name]?.suggested_atol ?? atol(tolName));
        report.add(`${name}[positive]`, p, rowsOf(w.data, w.shape, b, 2 * b), per[name]?.suggested_atol ?? atol(tolName));
      }
      if (r.negativeIsZeros) {
        assert.ok(neg.every((v) => v === 0) && negPooled.every((v) => v === 0), "force_zeros_for_empty_prompt gives exact zeros");
      }
    });
    report.finish();
  });
}

/** hidden_states[k] of both encoders concatenated, and text_embeds, computed without encodePrompt. */
async function direct(enc: SDXLTextEncoders, text: string, k: number): Promise<{ embeds: Float32Array; pooled: Float32Array }> {
  const e = await getEngine();
  return e.scope(async () => {
    const parts: Tensor[] = [];
    let pooled: Tensor | undefined;
    for (const [tok, te] of [[enc.tokenizer!, enc.text_encoder!], [enc.tokenizer_2, enc.text_encoder_2]] as const) {
      const out = te.forward([tok.encode(text, { padding: "max_length" }).ids]);
      parts.push(out.hiddenStates[out.hiddenStates.length + k]);
      pooled = out.textEmbeds;
    }
    return { embeds: await ops.concat(parts, -1).read(), pooled: await pooled!.read() };
  });
}

if (dirs.length) {
  t("encode_prompt rules: encoded \"\" negative, clip_skip, num_images_per_prompt", async () => {
    const e = await getEngine();
    const enc = await loadSDXLTextEncoders(dirs[0]);
    assert.ok(enc.tokenizer && enc.text_encoder, "the e2e folder has both encoders");
    const TOL = 1e-6;
    const empty = await direct(enc, "", -2);
    const cat = await direct(enc, "a red cat", -2);
    const catSkip1 = await direct(enc, "a red cat", -3);
    await e.scope(async () => {
      // "" is a prompt, not an absent one: it is encoded even when the config forces zeros.
      const a = await encodePrompt({ ...enc, forceZerosForEmptyPrompt: true }, "a red cat", "");
      assert.is(a.negativeIsZeros, false);
      assertClose("negative embeds of \"\"", await a.negativePromptEmbeds!.read(), empty.embeds, TOL);
      assertClose("negative pooled of \"\"", await a.negativePooledPromptEmbeds!.read(), empty.pooled, TOL);
      assertClose("prompt embeds", await a.promptEmbeds.read(), cat.embeds, TOL);
      // Without force_zeros_for_empty_prompt an absent negative prompt is "".
      const b = await encodePrompt({ ...enc, forceZerosForEmptyPrompt: false }, "a red cat", null);
      assert.is(b.negativeIsZeros, false);
      assertClose("absent negative without force_zeros", await b.negativePromptEmbeds!.read(), empty.embeds, TOL);
      // clip_skip=1 takes hidden_states[-3] for the prompt; diffusers keeps [-2] for the negative.
      const c = await encodePrompt({ ...enc, forceZerosForEmptyPrompt: false }, "a red cat", "", { clipSkip: 1 });
      assertClose("clip_skip=1 prompt embeds", await c.promptEmbeds.read(), catSkip1.embeds, TOL);
      assertClose("clip_skip=1 negative embeds", await c.negativePromptEmbeds!.read(), empty.embeds, TOL);
      assertClose("clip_skip does not change pooled", await c.pooledPromptEmbeds.read(), cat.pooled, TOL);
      // num_images_per_prompt repeats each prompt's rows in place: p0, p0, p1, p1.
      const d = await encodePrompt(enc, ["a red cat", ""], null, { numImagesPerPrompt: 2 });
      assert.equal(d.promptEmbeds.shape, [4, ...d.promptEmbeds.shape.slice(1)]);
      assert.equal(d.pooledPromptEmbeds.shape[0], 4);
      assert.equal(d.negativePromptEmbeds!.shape, d.promptEmbeds.shape);
      const de = await d.promptEmbeds.read(), dp = await d.pooledPromptEmbeds.read();
      const sz = cat.embeds.length, ps = cat.pooled.length;
      [cat, cat, empty, empty].forEach((ref, i) => {
        assertClose(`repeat row ${i} embeds`, de.subarray(i * sz, (i + 1) * sz), ref.embeds, TOL);
        assertClose(`repeat row ${i} pooled`, dp.subarray(i * ps, (i + 1) * ps), ref.pooled, TOL);
      });
      assert.ok((await d.negativePromptEmbeds!.read()).every((v) => v === 0), "zeros for the absent negative, repeated");
      // Without classifier-free guidance there is no negative half.
      const f = await encodePrompt(enc, "a red cat", null, { doClassifierFreeGuidance: false });
      assert.is(f.negativePromptEmbeds, null);
      // A negative prompt list must match the prompts.
      let code = "";
      try { await encodePrompt(enc, ["a", "b"], ["x"]); } catch (err: any) { code = err?.code; }
      assert.is(code, "E_BAD_PARAM", "a negative prompt list of another length is refused");
    });
  });
}

t.run();
