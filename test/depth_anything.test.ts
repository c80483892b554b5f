// DepthAnythingForDepthEstimation (DINOv2 backbone with layer scale, bicubic
// position-embedding resizing, DPT-style neck and head) against every
// `depth-anything-*` fixture: all recorded tensors of every run (embeddings,
// feature maps, reassemble/fusion outputs, predicted depth), allclose with the
// case's tolerance.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { basename } from "node:path";
import { isSsdError } from "../engine/errors.ts";
import { fixtureDirs } from "./lib/harness.ts";
import { checkDepthFixture } from "./lib/depth_models.ts";
import { DepthAnythingForDepthEstimation, parseDepthAnythingConfig } from "../pipeline/models/depth_anything.ts";

const t = suite("depth_anything");

for (const dir of fixtureDirs(/^depth-anything-/)) {
  t(`fixture ${basename(dir)}`, async () => {
    await checkDepthFixture(dir, (d, warn) => DepthAnythingForDepthEstimation.fromPretrained(d, { warn }));
  });
}

t("config: defaults and refusals", () => {
  const c = parseDepthAnythingConfig({ model_type: "depth_anything", backbone_config: { model_type: "dinov2", out_features: ["stage3", "stage6", "stage9", "stage12"] } });
  assert.equal(c.backbone_config.out_indices, [3, 6, 9, 12]);
  assert.is(c.max_depth, 1);
  assert.is(parseDepthAnythingConfig({ model_type: "depth_anything", depth_estimation_type: "metric", backbone_config: { out_indices: [3, 6, 9, 12] } }).max_depth, 20);
  assert.throws(() => parseDepthAnythingConfig({ model_type: "dpt" }), (e: any) => isSsdError(e, "E_BAD_CONFIG"));
  assert.throws(() => parseDepthAnythingConfig({ model_type: "depth_anything", backbone_config: { model_type: "bit" } }), (e: any) => isSsdError(e, "E_BAD_CONFIG"));
});

t.run();
