// DPTForDepthEstimation (ViT and BiT-hybrid) against every `dpt-*` fixture
// (not dpt-preprocess*): all recorded tensors of every run (hidden states,
// BiT maps, reassemble/fusion outputs, head, predicted depth), allclose with
// the case's tolerance; plus the hybrid's refusal of other input sizes.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { basename, join } from "node:path";
import { getEngine } from "../engine/engine.ts";
import { isSsdError } from "../engine/errors.ts";
import { fixtureDirs } from "./lib/harness.ts";
import { checkDepthFixture } from "./lib/depth_models.ts";
import { DPTForDepthEstimation, parseDPTConfig } from "../pipeline/models/dpt.ts";
import { readJsonFile } from "../weights/json.ts";

const t = suite("dpt");

const dirs = fixtureDirs(/^dpt-/, /^dpt-preprocess/);

for (const dir of dirs) {
  t(`fixture ${basename(dir)}`, async () => {
    await checkDepthFixture(dir, (d, warn) => DPTForDepthEstimation.fromPretrained(d, { warn }));
  });
}

t("hybrid DPT refuses inputs other than image_size with E_BAD_PARAM", async () => {
  let found = false;
  for (const dir of dirs) {
    const cfg = parseDPTConfig(await readJsonFile(join(dir, "config.json")));
    if (!cfg.is_hybrid) continue;
    found = true;
    const e = await getEngine();
    const model = await DPTForDepthEstimation.fromPretrained(dir, { warn: () => {} });
    const s = Array.isArray(cfg.image_size) ? cfg.image_size[0] : cfg.image_size;
    assert.equal(model.fixedInputSize, [s, s]);
    await e.scope(async () => {
      const px = e.upload(new Float32Array(3 * (s + 16) * (s + 16)), [1, 3, s + 16, s + 16]);
      try {
        model.forward(px);
        assert.unreachable("forward accepted another size");
      } catch (err) {
        assert.ok(isSsdError(err, "E_BAD_PARAM"), String(err));
        assert.match(String((err as Error).message), String(s));
      }
    });
  }
  assert.ok(found || dirs.length === 0, "no hybrid dpt fixture found");
});

t("config: unknown readout_type and hybrid without 'project' are E_BAD_CONFIG", () => {
  assert.throws(() => parseDPTConfig({ model_type: "dpt", readout_type: "mean" }), (e: any) => isSsdError(e, "E_BAD_CONFIG"));
  assert.throws(() => parseDPTConfig({ model_type: "dpt", is_hybrid: true, readout_type: "add" }), (e: any) => isSsdError(e, "E_BAD_CONFIG"));
  assert.throws(() => parseDPTConfig({ model_type: "depth_anything" }), (e: any) => isSsdError(e, "E_BAD_CONFIG"));
});

t.run();
