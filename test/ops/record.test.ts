// Record once, replay with new inputs: the replayed results equal a direct run
// on those inputs, temporaries stay reserved for the recording, and host
// uploads inside a recording are refused.

import { suite } from "uvu";
import { getEngine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { record } from "../../engine/record.ts";
import { randArray } from "../reference/ops.ts";
import type { Tensor } from "../../engine/tensor.ts";

const t = suite("record");

function block(x: Tensor, w: Tensor, b: Tensor): Tensor {
  const h = ops.linear(x, w, b, "silu");
  const g = ops.groupNorm(h.reshape([1, h.dim(0), h.dim(1)]), 1, undefined, undefined, 1e-5);
  const c = ops.concat([g.reshape(h.shape), x], 1); // includes a buffer copy or copy kernel
  return ops.add(ops.slice(c, 1, 0, h.dim(1)), h);
}

t("replay with new inputs equals a direct run", async () => {
  const e = await getEngine();
  const M = 37, K = 23;
  const x = e.upload(randArray(M * K, 1), [M, K]);
  const w = e.upload(randArray(K * K, 2), [K, K]);
  const b = e.upload(randArray(K, 3), [K]);
  const rec = record(e, () => block(x, w, b));
  const first = await rec.outputs.read();
  const direct0 = await block(x, w, b).read();
  for (let i = 0; i < first.length; i++) if (first[i] !== direct0[i]) throw new Error(`recorded run differs at ${i}`);
  for (let round = 0; round < 3; round++) {
    const nx = randArray(M * K, 10 + round);
    e.write(x, nx);
    rec.replay();
    const got = await rec.outputs.read();
    // other work between replays must not disturb the recording's buffers
    const noise = ops.scale(e.upload(randArray(M * K * 4, 99), [M * K * 4]), 3);
    const want = await block(e.upload(nx, [M, K]), w, b).read();
    noise.dispose();
    for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) throw new Error(`round ${round}: replay differs at ${i}: ${got[i]} vs ${want[i]}`);
  }
  if (rec.dispatches < 4) throw new Error(`only ${rec.dispatches} dispatches recorded`);
  rec.dispose();
});

t("an upload inside a recording is refused", async () => {
  const e = await getEngine();
  let code = "";
  try { record(e, () => e.upload(new Float32Array(4), [4])); } catch (err: any) { code = err.code; }
  if (code !== "E_INTERNAL") throw new Error(`expected E_INTERNAL, got '${code}'`);
  // the engine is usable afterwards
  const y = await ops.scale(e.upload(new Float32Array([1, 2]), [2]), 2).read();
  if (y[1] !== 4) throw new Error("engine broken after a refused recording");
});

t.run();
