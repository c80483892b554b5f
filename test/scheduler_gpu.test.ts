// The GPU apply of scheduler step plans (pipeline/schedulers/tensor.ts) against
// the host apply, for every scheduler-* fixture's config: a 6-step trajectory
// (img2img start, add_noise, scale_model_input, steps with generator draws) on
// both, element for element.

import { suite } from "uvu";
import { basename, join } from "node:path";
import { fixtureDirs, assertClose } from "./lib/harness.ts";
import { readJsonFile } from "../weights/json.ts";
import { createScheduler, img2imgTimesteps } from "../pipeline/schedulers/index.ts";
import { TensorScheduler } from "../pipeline/schedulers/tensor.ts";
import { TorchGenerator } from "../pipeline/rng.ts";
import { getEngine } from "../engine/engine.ts";

const t = suite("scheduler_gpu");

for (const dir of fixtureDirs(/^scheduler-/)) {
  t(basename(dir), async () => {
    const cfg = await readJsonFile(join(dir, "scheduler_config.json"));
    const meta = await readJsonFile(join(dir, "case.json"));
    const e = await getEngine();
    const shape = [1, 4, 5, 7];
    const n = shape.reduce((a, b) => a * b, 1);
    const host = createScheduler(meta.class, cfg);
    const gpu = createScheduler(meta.class, cfg);
    host.setTimesteps(6); gpu.setTimesteps(6);
    const { timesteps } = img2imgTimesteps(host, 6, 0.8);
    img2imgTimesteps(gpu, 6, 0.8);
    const gH = new TorchGenerator(7), gG = new TorchGenerator(7);
    const original = gH.randn(shape); gG.randn(shape);
    const noise = gH.randn(shape); gG.randn(shape);
    let xh = host.addNoise(original, noise, timesteps[0]);
    const ts = new TensorScheduler(gpu);
    let xg = ts.addNoise(e.upload(original, shape), e.upload(noise, shape), timesteps[0]);
    assertClose("add_noise", await xg.read(), xh, 1e-6, 1e-6);
    for (const tt of timesteps) {
      const inH = host.scaleModelInput(xh, tt);
      const inG = ts.scaleModelInput(xg, tt);
      assertClose(`scale_model_input t=${tt}`, await inG.read(), inH, 1e-6, 1e-6);
      // a model output that depends on the input, as in the fixtures' procedure
      const mo = new Float32Array(n);
      for (let i = 0; i < n; i++) mo[i] = 0.1 * inH[i] + Math.sin(i);
      xh = host.step(mo, tt, xh, { generator: gH, shape });
      const next = ts.step(e.upload(mo, shape), tt, xg, { generator: gG, shape });
      xg.dispose(); inG.dispose();
      xg = next;
      assertClose(`step t=${tt}`, await xg.read(), xh, 2e-5, 1e-5);
    }
    ts.dispose();
  });
}

t.run();
