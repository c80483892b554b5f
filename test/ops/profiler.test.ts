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

t("group: an op's kernels in one stamped pass, one row with their summed costs", async () => {
  const e = await getEngine();
  const a = e.upload(randArray(64 * 256, 3), [64, 256]);
  const w = e.upload(randArray(64 * 256, 4), [64, 256]);
  // a `wide` GEMM in 2 K parts: the wide pass and split_sum
  const split = () => ops.matmul(a, w, { transB: true, kernel: "wide", tile: "64x64k8t8", split: 2 });
  const per = new Profiler(e, { detail: true }).start();
  split().dispose();
  const passes = await per.report();
  if (passes.length !== 2 || !passes.some((r) => r.op.startsWith("matmul:split_sum"))) throw new Error(`per dispatch: ${JSON.stringify(passes)}`);
  const p = new Profiler(e, { detail: true }).start();
  const y = p.group("op", split);
  const z = p.group("op", split);
  const rows = await p.report();
  if (rows.length !== 1 || rows[0].op !== "op" || rows[0].calls !== 2) throw new Error(`grouped: ${JSON.stringify(rows)}`);
  // the declared FLOPs of both calls (split_sum declares bytes only)
  if (Math.abs(rows[0].gflop * 1e9 - 2 * 2 * 64 * 64 * 256) > 1) throw new Error(`grouped FLOPs ${rows[0].gflop * 1e9}`);
  if (!(rows[0].ms > 0) && e.gpu.timestamps) throw new Error(`grouped time ${rows[0].ms}`);
  if (e.profiler !== null) throw new Error("report() must uninstall the profiler");
  // nested groups are refused; outside a group, passes are per dispatch again
  const q = new Profiler(e).start();
  let nested = "";
  try { q.group("a", () => q.group("b", () => 0)); } catch (err: any) { nested = err.message; }
  if (!/inside group 'a'/.test(nested)) throw new Error(`nested group: '${nested}'`);
  if (!q.passPerDispatch) throw new Error("still in a group after it threw");
  await q.report();
  const [ya, za, ra] = [await y.read(), await z.read(), await split().read()];
  for (let i = 0; i < ra.length; i++) if (ya[i] !== ra[i] || za[i] !== ra[i]) throw new Error(`grouped result differs at ${i}`);
});

t.run();
