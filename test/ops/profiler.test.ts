// The GPU profiler: per-op rows with call counts, GPU time and the FLOPs the
// ops declared, with timestamp queries where the adapter has them.

import { suite } from "uvu";
import { getEngine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { Profiler } from "../../engine/profiler.ts";
import { randArray } from "../reference/ops.ts";

const t = suite("profiler");

t("groups dispatches by op and keeps the declared FLOPs", async () => {
  const e = await getEngine();
  const a = e.upload(randArray(33 * 65, 1), [33, 65]);
  const w = e.upload(randArray(17 * 65, 2), [17, 65]);
  const p = new Profiler(e).start();
  // a matmul kernel, whatever this adapter's tuned choice for linears is
  const y1 = ops.matmul(a, w, { transB: true, kernel: "reg" });
  const y2 = ops.matmul(a, w, { transB: true, act: "silu", kernel: "reg" });
  const z = ops.add(y1, y2);
  const rows = await p.report();
  const mm = rows.find((r) => r.op === "matmul");
  const add = rows.find((r) => r.op === "binary");
  if (!mm || mm.calls !== 2) throw new Error(`matmul row: ${JSON.stringify(rows)}`);
  if (Math.abs(mm.gflop * 1e9 - 2 * 2 * 33 * 17 * 65) > 1) throw new Error(`matmul FLOPs ${mm.gflop * 1e9}`);
  if (!add || add.calls !== 1) throw new Error(`add row: ${JSON.stringify(rows)}`);
  if (!(mm.ms >= 0 && Number.isFinite(mm.ms))) throw new Error(`matmul time ${mm.ms}`);
  if (e.profiler !== null) throw new Error("report() must uninstall the profiler");
  // results are unaffected by profiling
  const ref = ops.add(ops.matmul(a, w, { transB: true, kernel: "reg" }), ops.matmul(a, w, { transB: true, act: "silu", kernel: "reg" }));
  const [za, ra] = [await z.read(), await ref.read()];
  for (let i = 0; i < za.length; i++) if (za[i] !== ra[i]) throw new Error(`profiled result differs at ${i}`);
});

t.run();
