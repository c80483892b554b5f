// CLIP tokenizer against every `clip-tokenizer*` fixture: each case's ids (and BPE
// tokens, truncation count) for both tokenizers, exactly.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { existsSync, readdirSync, statSync } from "node:fs";
import { fixtureDirs } from "./lib/harness.ts";
import { readJsonFile } from "../weights/json.ts";
import { ClipTokenizer, basicClean } from "../pipeline/tokenizer.ts";

const t = suite("tokenizer");

/** The tokenizer folders of a fixture: the root when it has a config, and every sub-folder that has one. */
function tokenizerFolders(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (existsSync(join(dir, "tokenizer_config.json"))) out.set("tokenizer", dir);
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory() && existsSync(join(p, "tokenizer_config.json"))) out.set(e, p);
  }
  return out;
}

for (const dir of fixtureDirs(/^clip-tokenizer/)) {
  t(`fixture ${dir.split(/[\\/]/).pop()}`, async () => {
    const data = await readJsonFile<any>(join(dir, "cases.json"));
    const folders = tokenizerFolders(dir);
    const names = Object.keys(data.meta?.tokenizers ?? {});
    assert.ok(names.length > 0, "cases.json meta lists no tokenizers");
    const toks = new Map<string, ClipTokenizer>();
    for (const name of names) {
      const folder = folders.get(name);
      assert.ok(folder, `no folder for tokenizer '${name}' in ${dir}`);
      const tok = await ClipTokenizer.load(folder);
      const meta = data.meta.tokenizers[name];
      if (meta.pad_token_id !== undefined) assert.is(tok.padId, meta.pad_token_id, `${name} pad id`);
      if (meta.bos_token_id !== undefined) assert.is(tok.bosId, meta.bos_token_id, `${name} bos id`);
      if (meta.eos_token_id !== undefined) assert.is(tok.eosId, meta.eos_token_id, `${name} eos id`);
      toks.set(name, tok);
    }
    let checked = 0;
    const failures: string[] = [];
    for (const c of data.cases) {
      // code points are the unambiguous form of prompts with control or non-ASCII characters
      const prompt: string = c.prompt_codepoints ? String.fromCodePoint(...c.prompt_codepoints) : c.prompt;
      for (const name of names) {
        const want = c[name];
        if (!want) continue;
        const tok = toks.get(name)!;
        const warnings: string[] = [];
        const got = tok.encode(prompt, { padding: "max_length", truncation: true, maxLength: want.input_ids.length, onWarning: (m) => warnings.push(m) });
        const label = `case ${c.index} ${name} ${JSON.stringify(prompt).slice(0, 60)}`;
        if (JSON.stringify(got.ids) !== JSON.stringify(want.input_ids)) {
          failures.push(`${label}: ids\n    got  ${JSON.stringify(got.ids)}\n    want ${JSON.stringify(want.input_ids)}\n    tokens ${JSON.stringify(got.tokens)}\n    clean ${JSON.stringify(basicClean(prompt))}`);
          continue;
        }
        if (want.bpe_tokens && JSON.stringify(got.tokens) !== JSON.stringify(want.bpe_tokens)) {
          failures.push(`${label}: bpe tokens got ${JSON.stringify(got.tokens)} want ${JSON.stringify(want.bpe_tokens)}`);
        }
        if (want.attention_mask && JSON.stringify(got.attentionMask) !== JSON.stringify(want.attention_mask)) {
          failures.push(`${label}: attention mask differs`);
        }
        if (want.num_tokens_before_truncation !== undefined) {
          const room = want.input_ids.length - 2;
          const dropped = Math.max(0, want.num_tokens_before_truncation - room);
          if (got.truncated !== dropped) failures.push(`${label}: truncated ${got.truncated}, want ${dropped}`);
          if ((dropped > 0) !== (warnings.length === 1)) failures.push(`${label}: ${warnings.length} truncation warnings for ${dropped} dropped tokens`);
          if (dropped > 0 && !warnings[0].includes(String(dropped))) failures.push(`${label}: warning does not say how many tokens were dropped: ${warnings[0]}`);
        }
        checked++;
      }
    }
    const name = dir.split(/[\\/]/).pop();
    if (failures.length) {
      console.log(`fixture ${name}: FAIL ${failures[0]}`);
      throw new Error(`${failures.length} tokenizer mismatches:\n  ${failures.slice(0, 10).join("\n  ")}`);
    }
    assert.ok(checked > 0, "no cases checked");
    console.log(`fixture ${name}: ok max_abs=0 max_rel=0 (${checked} encodings exact)`);
  });
}

t("tokenizer_2's pad token '!' is an added token; unpadded and untruncated encodes", async () => {
  const dirs = fixtureDirs(/^clip-tokenizer/);
  if (dirs.length === 0) return;
  const folders = tokenizerFolders(dirs[0]);
  const tok2 = folders.get("tokenizer_2");
  if (!tok2) return;
  const t2 = await ClipTokenizer.load(tok2);
  const t1 = await ClipTokenizer.load(folders.get("tokenizer")!);
  const a = t2.encode("hi!");
  const b = t1.encode("hi!");
  assert.is(a.ids.length, 4);
  assert.is(a.ids[2], t2.padId);
  assert.is.not(b.ids[2], t1.padId);
  const long = "cat ".repeat(100);
  const full = t1.encode(long, { truncation: false });
  assert.is(full.ids.length, 102);
  assert.is(full.truncated, 0);
  const w: string[] = [];
  const cut = t1.encode(long, { padding: "max_length", onWarning: (m) => w.push(m) });
  assert.is(cut.ids.length, 77);
  assert.is(cut.truncated, 25);
  assert.match(w[0], /25 tokens/);
});

t.run();
