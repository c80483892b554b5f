// The autotuner: every candidate is timed, the fastest is cached on disk per
// adapter and then used by the ops; SSD_DEPTH_KERNEL_<OP> overrides it.

import { suite } from "uvu";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getEngine, type Engine } from "../../engine/engine.ts";
import { tune, tunedChoice, adapterKey, cachePath, reloadChoices } from "../../engine/autotune.ts";
import { tuneKernels, tuneCandidates, tunePlans, tunePlanRounds, tuneConvPlans, ssd1bConvs } from "../../engine/tune.ts";
import { enumerateCases } from "../../bench/kernels.ts";
import { ROOT_DIR } from "../../bench/common.ts";
import { planKey, planCandidates, parsePlan, parseWideTile, serialTailPlans, wideTiles } from "../../engine/ops/matmul.ts";
import { convPlanKey, convPlanCandidates, convTailPlans, convWideTiles } from "../../engine/ops/conv.ts";
import * as ops from "../../engine/ops/index.ts";
import { ROWBLOCK_KEYS } from "../../engine/ops/attention.ts";
import { matmulRef, randArray } from "../reference/ops.ts";
import { attentionRef } from "../reference/attention.ts";
import { assertClose, withEnv, withDispatchLabels, FULL_GPU_KERNEL_TESTS } from "../lib/harness.ts";
import { float32ToHalfArray } from "../../engine/half.ts";

const t = suite("autotune");

t("the default conv shapes to tune cover every 3×3 conv the bench enumerates from the SSD-1B config, for one image and two", () => {
  const cfg = JSON.parse(readFileSync(join(ROOT_DIR, "bench", "configs", "ssd1b-unet.json"), "utf8"));
  const rows = enumerateCases(cfg, 1024).filter((c) => c.kind === "conv" && c.p.k > 1);
  if (rows.length < 8) throw new Error(`only ${rows.length} 3×3 conv rows enumerated`);
  const tuned = new Set(ssd1bConvs(128).map((c) => c.join("x")));
  if (tuned.size !== ssd1bConvs(128).length) throw new Error("ssd1bConvs lists a shape twice");
  for (const c of rows) for (const n of [1, 2]) {
    const shape = [n, c.p.cin, c.p.h, c.p.cout, c.p.k].join("x");
    if (!tuned.has(shape)) throw new Error(`${c.name} for ${n} image(s): ${shape} is not among the tuned convs`);
  }
});

/** Runs fn with SSD_DEPTH_CACHE set to a fresh directory (choices reloaded from it), then restores both. */
async function withTempCache(e: Engine, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ssd-tune-"));
  try {
    await withEnv({ SSD_DEPTH_CACHE: dir }, () => {
      reloadChoices(e);
      return fn(dir);
    });
  } finally {
    reloadChoices(e);
    rmSync(dir, { recursive: true, force: true });
  }
}

t("tunes matmul, conv2d, attention (self, short), group_norm and layer_norm, caches the fastest per adapter, env overrides", async () => {
  const e = await getEngine();
  await withTempCache(e, async (dir) => {
    const lines: string[] = [];
    const all = await tuneKernels(e, { scale: 0.05, reps: 1, log: (l) => lines.push(l) });
    // one log line per choice, in the order made, each naming its op, choice and every candidate's time
    if (lines.length !== all.length || !all.every((r, i) => lines[i].startsWith(r.op) && lines[i].includes(`→ ${r.choice}`) && Object.keys(r.ms).every((c) => lines[i].includes(`${c} `)))) throw new Error(`log:\n${lines.join("\n")}`);
    // GPUs also tune the `wide`, flash and mm tiles and per-shape plans first (the tests below cover those)
    const gpuOnly = (op: string) => /^(matmul_tile|conv_tile|flash_tile|mm_tile|matmul_plan:)/.test(op);
    if (e.gpu.report.kind !== "gpu" && all.some((r) => gpuOnly(r.op))) throw new Error(`a CPU driver tuned ${all.map((r) => r.op)}`);
    const res = all.filter((r) => !gpuOnly(r.op));
    // rowblock's keys per step are tuned right after attention_short, where rowblock won it
    const short = res.find((r) => r.op === "attention_short");
    const want = `matmul,conv2d,attention,attention_short,${short?.choice === "rowblock" ? "rowblock_keys," : ""}group_norm,layer_norm`;
    if (res.map((r) => r.op).join() !== want) throw new Error(`ops tuned: ${res.map((r) => r.op)} (attention_short chose ${short?.choice})`);
    const TUNE_CANDIDATES = tuneCandidates(e);
    for (const r of res) {
      const cands = TUNE_CANDIDATES[r.op as keyof typeof TUNE_CANDIDATES];
      if (Object.keys(r.ms).sort().join() !== [...cands].sort().join()) throw new Error(`${r.op}: timed ${Object.keys(r.ms)}, candidates ${cands}`);
      if (!Object.values(r.ms).every((ms) => ms > 0 && Number.isFinite(ms)) || r.clock !== "wall") throw new Error(`${r.op}: times ${JSON.stringify(r.ms)} (${r.clock})`);
      const fastest = cands.reduce((b, c) => (r.ms[c] < r.ms[b] ? c : b));
      if (r.choice !== fastest) throw new Error(`${r.op}: chose ${r.choice}, fastest was ${fastest}`);
    }
    if (cachePath() !== join(dir, "tuning.json")) throw new Error(`cache path ${cachePath()}`);
    const cached = JSON.parse(readFileSync(cachePath(), "utf8"))[adapterKey(e)];
    for (const r of all) if (cached?.[r.op] !== r.choice) throw new Error(`cache holds ${JSON.stringify(cached)}`);
    // a fresh lookup (as a new process would) reads the cache
    reloadChoices(e);
    const mm = res[0].choice;
    if (tunedChoice(e, "matmul", TUNE_CANDIDATES.matmul) !== mm) throw new Error("cached matmul choice not used");
    // a cached choice the op does not offer falls back to the op's options
    if (!["x", "y"].includes(tunedChoice(e, "matmul", ["x", "y"]))) throw new Error("choice outside the options");
    const other = TUNE_CANDIDATES.matmul.find((c) => c !== mm)!;
    const forced = (value: string) => withEnv({ SSD_DEPTH_KERNEL_MATMUL: value }, () => tunedChoice(e, "matmul", TUNE_CANDIDATES.matmul));
    if (await forced(other) !== other) throw new Error("env override ignored");
    if (await forced("no-such-kernel") !== mm) throw new Error("an unknown env value must be ignored");
  });
});

// Serial tails ("<tile>/<parts>s<blocks>", wide_ser): parsed; proposed in a
// second round near the edge of a split tail that won the first (every
// block count from a block row before it to a block row after, at most 9);
// the rounds' times together, the fastest cached; a cached or forced serial
// plan runs wide_ser.
t("wide plans: serial tails parsed, tuned in a second round near a winning split tail, used", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // see above
  const e = await getEngine();
  const p = parsePlan("64x256k8t8/7s56");
  if (p.tile !== "64x256k8t8" || p.split !== 7 || p.serialTail !== 56 || p.tail !== undefined) throw new Error(`parsed ${JSON.stringify(p)}`);
  for (const bad of ["64x256k8t8/2s", "64x256k8t8/2x3", "64x256k8t8/s3", "64x256k8t8/2r3s4"]) {
    let got = "";
    try { parsePlan(bad); } catch (err: any) { got = err.code; }
    if (got !== "E_BAD_PARAM") throw new Error(`${bad}: expected E_BAD_PARAM, got '${got}'`);
  }
  const blocks = (plans: string[]) => plans.map((x) => parsePlan(x).serialTail);
  // 4096×1280 on 64×256 blocks: 5 a row, 12 rows → 56..64 (56: 264 = 2 × 132 whole)
  const h200 = serialTailPlans("64x256k8t8/7r12", 4096, 1280);
  if (h200.join() !== Array.from({ length: 9 }, (_, i) => `64x256k8t8/7s${56 + i}`).join()) throw new Error(`near 7r12: ${h200}`);
  // 20 blocks a row: 9 of 61..99, 80 (the same edge) among them; near the end of C, up to its last block but one
  const wide = blocks(serialTailPlans("64x256k8t8/2r4", 4096, 5120));
  if (wide.length !== 9 || wide[0] !== 61 || wide[8] !== 99 || !wide.includes(80)) throw new Error(`near 2r4 of 20 a row: ${wide}`);
  if (blocks(serialTailPlans("64x64k8t8/2r1", 128, 128)).join() !== "1,2,3") throw new Error(`near 2r1 of 4 blocks: ${serialTailPlans("64x64k8t8/2r1", 128, 128)}`);
  if (serialTailPlans("64x256k8t8/2", 4096, 1280).length || serialTailPlans("64x256k8t8/2s60", 4096, 1280).length) throw new Error("serial tails for a plan without a split tail");
  await withTempCache(e, async () => {
    const [batch, M, N, K] = [1, 128, 128, 64];
    const a = randArray(M * K, 61), b = randArray(N * K, 62);
    const ta = e.upload(a, [batch, M, K]), tb = e.upload(b, [N, K]);
    try {
      const key = planKey(batch, M, N, K, true, "f32", "f32");
      const run = (q: string) => ops.matmul(ta, tb, { transB: true, kernel: "wide", ...parsePlan(q) }).dispose();
      const r = await tunePlanRounds(e, key, ["64x64k8t8/2r1"], M, N, run, 1, e.gpu.timestamps ? "kernels" : "wall");
      const want = ["64x64k8t8/2r1", "64x64k8t8/2s1", "64x64k8t8/2s2", "64x64k8t8/2s3"];
      if (Object.keys(r.ms).sort().join() !== want.join()) throw new Error(`rounds timed ${JSON.stringify(r.ms)}`);
      if (r.choice !== want.reduce((x, y) => (r.ms[y] < r.ms[x] ? y : x))) throw new Error(`chose ${r.choice} of ${JSON.stringify(r.ms)}`);
      reloadChoices(e);
      if (JSON.parse(readFileSync(cachePath(), "utf8"))[adapterKey(e)]?.[key] !== r.choice) throw new Error("plan not cached");
      // a first round won by a plan without a split tail has no second
      const one = await tunePlanRounds(e, key, ["64x64k8t8/2"], M, N, run, 1);
      if (Object.keys(one.ms).join() !== "64x64k8t8/2") throw new Error(`one round timed ${JSON.stringify(one.ms)}`);
      await tune(e, key, ["64x64k8t8/3s3"], run, 1);
      for (const [env, label] of [[undefined, "64x64k8t8:1x128x128x64T:serial3x3"], ["64x128k8t8/2s1", "64x128k8t8:1x128x128x64T:serial1x2"]] as const) {
        const { result: y, labels } = await withEnv({ SSD_DEPTH_KERNEL_MATMUL_PLAN: env }, () => withDispatchLabels(e, () => ops.matmul(ta, tb, { transB: true, kernel: "wide" }).read()));
        if (labels.join() !== `matmul:wide:${label}`) throw new Error(`plan ${env ?? "tuned"}: dispatched ${labels.join(", ")}`);
        assertClose(`plan ${env ?? "tuned"}`, y, matmulRef(a, b, batch, M, N, K, { transB: true }), 1e-5 * Math.sqrt(K) + 1e-6, 1e-5);
      }
    } finally {
      ta.dispose(); tb.dispose();
    }
  });
});

// Per-shape conv plans (tile, serial parts, serial tail): proposed on the
// tuned conv tile and one other, timed and cached under the conv's GEMM
// shape and dtypes, then used by conv2d's `wide` kernel for that shape (a
// serial tail through conv2d_wide_st); an option wins over the plan; the env
// plan forces one; malformed ones are refused.
t("conv plans: proposed, tuned per conv shape, cached, used for that shape; forced and refused", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // see above
  const e = await getEngine();
  const cands = convPlanCandidates(e, 1, 320, 128 * 128, 320 * 9);
  const tiles = [...new Set(cands.map((p) => parsePlan(p).tile))];
  if (tiles.length < 1 || tiles.length > 2 || !tiles.every((x) => convWideTiles(e).includes(x)) || cands.some((p) => parsePlan(p).tail !== undefined)) throw new Error(`plans ${cands}`);
  // first round: every tile whole and in 2 and 4 parts; second round: tails of 1/8 .. 1/2 of a tile's blocks in 2 and 4 parts
  if (cands.join() !== tiles.flatMap((x) => [1, 2, 4].map((s) => `${x}/${s}`)).join()) throw new Error(`plans ${cands}`);
  for (const tile of tiles) {
    const t0 = parseWideTile(tile), nb = Math.ceil(16384 / t0.bn) * Math.ceil(320 / t0.bm);
    const want = [1 / 8, 1 / 6, 1 / 4, 1 / 3, 1 / 2].flatMap((f) => [2, 4].map((s) => `${tile}/${s}s${Math.round(nb * f)}`));
    if (convTailPlans(tile, 1, 320, 128 * 128, 320 * 9).join() !== want.join()) throw new Error(`tails on ${tile}: ${convTailPlans(tile, 1, 320, 128 * 128, 320 * 9)}, expected ${want}`);
  }
  // a shallow K: no 4 parts under 256 deep, no tail part under 128
  if (convPlanCandidates(e, 1, 64, 400, 300).some((p) => parsePlan(p).split === 4)) throw new Error(`K = 300: ${convPlanCandidates(e, 1, 64, 400, 300)}`);
  if (convTailPlans(tiles[0], 1, 64, 400, 300).some((p) => parsePlan(p).split !== 2) || convTailPlans(tiles[0], 1, 64, 400, 200).length) throw new Error(`tails at K = 300 / 200: ${convTailPlans(tiles[0], 1, 64, 400, 300)} / ${convTailPlans(tiles[0], 1, 64, 400, 200)}`);
  await withTempCache(e, async () => {
    // K = 288: parts of 144, so the second round has 2-part tails
    const [n, C, side, O] = [1, 32, 24, 20];
    const seen: string[] = [];
    const [r] = await tuneConvPlans(e, [[n, C, side, O, 3]], 1, ["f32"], undefined, (x) => seen.push(x.op));
    if (seen.join() !== r.op) throw new Error(`onResult saw ${seen}`);
    const key = convPlanKey(n, O, side * side, C, 3, 3, "f32", "f32");
    const first = convPlanCandidates(e, n, O, side * side, C * 9);
    // the second round: the serial tails of one first-round tile, timed against that round's winner on it
    const extra = Object.keys(r.ms).filter((p) => !first.includes(p));
    const on = [...new Set(first.map((p) => parsePlan(p).tile))].find((t) => convTailPlans(t, n, O, side * side, C * 9).join() === extra.join());
    if (r.op !== key || !first.every((p) => p in r.ms) || !extra.length || !on) throw new Error(`tuned ${r.op}: ${JSON.stringify(r.ms)}`);
    if (parsePlan(r.choice).tile !== on || extra.some((p) => r.ms[p] < r.ms[r.choice])) throw new Error(`chose ${r.choice} (${JSON.stringify(r.ms)})`);
    reloadChoices(e);
    if (JSON.parse(readFileSync(cachePath(), "utf8"))[adapterKey(e)]?.[key] !== r.choice) throw new Error("plan not cached");
    // a serial tail cached for the shape runs conv2d_wide_st; the env plan overrides it; an option wins
    const x = e.upload(randArray(n * C * side * side, 71), [n, C, side, side]), w = e.upload(randArray(O * C * 9, 72), [O, C, 3, 3]);
    const tile = convWideTiles(e)[0];
    try {
      await tune(e, key, [`${tile}/2s3`], (p) => ops.conv2d(x, w, { padding: 1, kernel: "wide", ...parsePlan(p) }).dispose(), 1);
      const blocks = Math.ceil((side * side) / parseWideTile(tile).bn) * Math.ceil(O / parseWideTile(tile).bm);
      const ref = await ops.conv2d(x, w, { padding: 1, kernel: "tiled" }).read();
      for (const [env, opts, label] of [[undefined, {}, `:serial${Math.min(3, blocks)}x2`], [`${tile}/4s1`, {}, ":serial1x4"], [undefined, { split: 2 }, ":serial2"], [undefined, { tile }, `wide:${tile}:${n}x${O}x${side * side}x${C}k3x3`]] as const) {
        const { result: y, labels } = await withEnv({ SSD_DEPTH_KERNEL_CONV_PLAN: env }, () => withDispatchLabels(e, () => ops.conv2d(x, w, { padding: 1, kernel: "wide", ...opts }).read()));
        if (labels.length !== 1 || !labels[0].endsWith(label)) throw new Error(`plan ${env ?? "tuned"} ${JSON.stringify(opts)}: dispatched ${labels.join(", ")}, want …${label}`);
        assertClose(`plan ${env ?? "tuned"} ${JSON.stringify(opts)}`, y, ref, 1e-5, 1e-5);
      }
      for (const env of [`${tile}/3`, `${tile}/2r1`, `${tile}/1s2`, `${tile}/2s0`, "nonsense"]) {
        let got = "";
        await withEnv({ SSD_DEPTH_KERNEL_CONV_PLAN: env }, () => ops.conv2d(x, w, { padding: 1, kernel: "wide" }).dispose()).catch((err: any) => (got = err.code));
        if (got !== "E_BAD_PARAM") throw new Error(`${env}: expected E_BAD_PARAM, got '${got}'`);
      }
    } finally {
      x.dispose(); w.dispose();
    }
  });
});

// Per-shape `wide` plans (tile and split-K parts): timed on the shapes given,
// cached under the shape's key, then used by matmul for exactly that shape;
// a forced tile wins over the plan, and another shape keeps the tuned tile.
t("wide plans: tuned per GEMM shape, cached, used by matmul for that shape only", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // `wide` pipelines compile slowly on SwiftShader; lavapipe checks the logic
  const e = await getEngine();
  const labels: string[] = [];
  await withTempCache(e, async () => {
    try {
      const [batch, M, N, K] = [2, 64, 256, 512];
      const cands = planCandidates(e, batch, M, N, K);
      if (cands.length < 4 || !cands.every((p) => wideTiles(e).includes(parsePlan(p).tile) && [1, 2].includes(parsePlan(p).split))) throw new Error(`plans for K=${K}: ${cands}`);
      // deeper GEMMs (SSD-1B's K = 1280) are also timed in 3 and 4 parts
      const deep = planCandidates(e, 1, 64, 256, 1280).map((p) => parsePlan(p).split);
      if (![1, 2, 3, 4].every((s) => deep.includes(s))) throw new Error(`plans for K=1280: ${planCandidates(e, 1, 64, 256, 1280)}`);
      const reported: string[] = [];
      const [r] = await tunePlans(e, [[batch, M, N, K]], 1, ["f32"], undefined, (x) => reported.push(x.op));
      const key = planKey(batch, M, N, K, true, "f32", "f32");
      if (reported.join() !== key) throw new Error(`onResult saw ${reported}`);
      if (r.op !== key || Object.keys(r.ms).sort().join() !== [...cands].sort().join()) throw new Error(`tuned ${r.op}: ${JSON.stringify(r.ms)}`);
      if (r.choice !== cands.reduce((b, c) => (r.ms[c] < r.ms[b] ? c : b))) throw new Error(`chose ${r.choice}, not the fastest`);
      // rated by the kernels' own time where the device stamps them (lavapipe does), else by wall time
      if (r.clock !== (e.gpu.timestamps ? "kernels" : "wall") || !Object.values(r.ms).every((ms) => ms > 0 && Number.isFinite(ms))) throw new Error(`clock ${r.clock}, times ${JSON.stringify(r.ms)}`);
      reloadChoices(e);
      if (JSON.parse(readFileSync(cachePath(), "utf8"))[adapterKey(e)]?.[key] !== r.choice) throw new Error("plan not cached");
      // then a plan with another tile than the tuned one (and 2 parts), stored the same way,
      // so the dispatches tell which ran
      const tuned = tunedChoice(e, "matmul_tile", wideTiles(e));
      const other = wideTiles(e).find((t) => t !== tuned)!;
      const a = randArray(batch * M * K, 41), b = randArray(N * K, 42);
      const ta = e.upload(a, [batch, M, K]), tb = e.upload(b, [N, K]);
      await tune(e, key, [`${other}/2`], (p) => ops.matmul(ta, tb, { transB: true, kernel: "wide", ...parsePlan(p) }).dispose(), 1);
      e.onDispatch = (label, _pass, phase) => { if (phase === "begin") labels.push(label); };
      const y = await ops.matmul(ta, tb, { transB: true, kernel: "wide" }).read();
      if (!labels.some((l) => l.startsWith(`matmul:wide:${other}:${batch}x${M}x${N}x${K}T:split2`))) throw new Error(`plan ${other}/2, dispatched ${labels.join(", ")}`);
      assertClose(`plan ${other}/2`, y, matmulRef(a, b, batch, M, N, K, { transB: true }), 1e-5 * Math.sqrt(K) + 1e-6, 1e-5);
      // a forced tile wins; the same shape with f16 weights, or another shape (batch 1),
      // has no plan and keeps the tuned tile and the rule
      const third = wideTiles(e).find((t) => t !== tuned && t !== other)!;
      const th = e.upload(float32ToHalfArray(b), [N, K], "f16"), t1 = e.upload(a.subarray(0, M * K), [1, M, K]);
      for (const [x, w, opt, want] of [[ta, tb, { tile: third }, `${third}:${batch}x`], [ta, th, {}, `${tuned}:${batch}x`], [t1, tb, {}, `${tuned}:1x`]] as const) {
        labels.length = 0;
        ops.matmul(x, w, { transB: true, kernel: "wide", ...opt }).dispose();
        const l = labels.find((l) => l.startsWith("matmul:wide:"));
        if (!l?.startsWith(`matmul:wide:${want}${M}x${N}x${K}T`)) throw new Error(`expected ${want}…, dispatched ${labels.join(", ")}`);
      }
      for (const x of [ta, tb, t1, th]) x.dispose();
    } finally {
      e.onDispatch = null;
    }
  });
});

// Split tails ("<tile>/<parts>r<rows>"): parsed, among the tuning's plans where
// wide_hyb can run the shape (rows of batch·M against shared weights), used from
// the cache, forced by SSD_DEPTH_KERNEL_MATMUL_PLAN; malformed plans refused.
t("wide plans: split tails parsed, proposed where they can run, tuned and forced", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // see above
  const e = await getEngine();
  const p = parsePlan("64x256k8t8/7r12");
  if (p.tile !== "64x256k8t8" || p.split !== 7 || p.tail !== 12 || parsePlan("128x64k8t8/2").tail !== undefined) throw new Error(`parsed ${JSON.stringify(p)}`);
  for (const bad of ["64x256k8t8", "64x256k8t8/r2", "64x256k8t8/2r"]) {
    let got = "";
    try { parsePlan(bad); } catch (err: any) { got = err.code; }
    if (got !== "E_BAD_PARAM") throw new Error(`${bad}: expected E_BAD_PARAM, got '${got}'`);
  }
  await withTempCache(e, async () => {
    // 4096 rows of 64x256k8t8: 64 block rows, tails of 8, 12, 13 and 16 in 2, 4 and 7 parts; a batch of 2 × 2048 the same
    const tails = (c: string[]) => c.filter((x) => x.startsWith("64x256k8t8/") && parsePlan(x).tail !== undefined).sort();
    const want = [8, 12, 13, 16].flatMap((r) => [2, 4, 7].map((s) => `64x256k8t8/${s}r${r}`)).sort();
    if (tails(planCandidates(e, 1, 4096, 1280, 1280)).join() !== want.join()) throw new Error(`tails: ${tails(planCandidates(e, 1, 4096, 1280, 1280))}`);
    if (tails(planCandidates(e, 2, 2048, 1280, 1280)).join() !== want.join()) throw new Error(`batch 2: ${tails(planCandidates(e, 2, 2048, 1280, 1280))}`);
    // rows not whole blocks, N not whole blocks, a grid under 8 block rows: none; K = 640 has no 7 parts of 128
    for (const [b, M, N, K] of [[1, 4000, 1280, 1280], [1, 4096, 1000, 1280], [1, 448, 1280, 1280]]) if (tails(planCandidates(e, b, M, N, K)).length) throw new Error(`tails for ${M}x${N}x${K}`);
    if (tails(planCandidates(e, 1, 4096, 1280, 640)).some((x) => parsePlan(x).split === 7)) throw new Error("7 parts of 640");
    // a cached tail plan runs wide_hyb; the env plan overrides it; a malformed env plan is refused
    const [batch, M, N, K] = [1, 128, 128, 64];
    const a = randArray(M * K, 51), b = randArray(N * K, 52);
    const ta = e.upload(a, [batch, M, K]), tb = e.upload(b, [N, K]);
    try {
      const key = planKey(batch, M, N, K, true, "f32", "f32");
      await tune(e, key, ["64x64k8t8/3r1"], (q) => ops.matmul(ta, tb, { transB: true, kernel: "wide", ...parsePlan(q) }).dispose(), 1);
      for (const [env, label] of [[undefined, "64x64k8t8:1x128x128x64T:tail1x3"], ["64x128k8t8/2r1", "64x128k8t8:1x128x128x64T:tail1x2"]] as const) {
        const { result: y, labels } = await withEnv({ SSD_DEPTH_KERNEL_MATMUL_PLAN: env }, () => withDispatchLabels(e, () => ops.matmul(ta, tb, { transB: true, kernel: "wide" }).read()));
        if (!labels.includes(`matmul:wide:${label}`)) throw new Error(`plan ${env ?? "tuned"}: dispatched ${labels.join(", ")}`);
        assertClose(`plan ${env ?? "tuned"}`, y, matmulRef(a, b, batch, M, N, K, { transB: true }), 1e-5 * Math.sqrt(K) + 1e-6, 1e-5);
      }
      for (const env of ["64x64k8t8/9r1", "64x64k8t8/2r0", "64x64k8t8/2s0", "64x64k8t8/9s3", "64x64k8t8/5", "nonsense"]) {
        let got = "";
        await withEnv({ SSD_DEPTH_KERNEL_MATMUL_PLAN: env }, () => ops.matmul(ta, tb, { transB: true, kernel: "wide" }).dispose()).catch((err: any) => (got = err.code));
        if (got !== "E_BAD_PARAM") throw new Error(`${env}: expected E_BAD_PARAM, got '${got}'`);
      }
    } finally {
      ta.dispose(); tb.dispose();
    }
  });
});

// attention `mm`'s GEMM tile (op mm_tile): the option, then SSD_DEPTH_KERNEL_MM_TILE,
// then the tuned mm_tile, then the tuned matmul tile; the labels name the tile.
t("attention mm: its GEMMs' tile forced, from env, tuned apart, else the matmul tile", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // `wide` pipelines compile slowly on SwiftShader; lavapipe checks the logic
  const e = await getEngine();
  const [B, N, H, d] = [1, 70, 2, 64];
  const qa = randArray(B * N * H * d, 81), ka = randArray(B * N * H * d, 82), va = randArray(B * N * H * d, 83);
  const q = e.upload(qa, [B, N, H * d]), k = e.upload(ka, [B, N, H * d]), v = e.upload(va, [B, N, H * d]);
  const ref = attentionRef(qa, ka, va, B, N, N, H, d, 1 / Math.sqrt(d), false);
  const labels: string[] = [];
  const tilesRun = async (opts: { tile?: string }) => {
    labels.length = 0;
    e.onDispatch = (label, _pass, phase) => { if (phase === "begin") labels.push(label); };
    try {
      const y = await ops.attention(q, k, v, { heads: H, impl: "mm", ...opts }).read();
      assertClose(`attention mm ${JSON.stringify(opts)}`, y, ref, 2e-6 * Math.sqrt(d) + 1e-6, 1e-5);
    } finally {
      e.onDispatch = null;
    }
    return [...new Set(labels.filter((l) => /^attention\.(qk|pv):/.test(l)).map((l) => l.split(":")[1]))].join();
  };
  await withTempCache(e, async () => {
    try {
      const tuned = tunedChoice(e, "matmul_tile", wideTiles(e));
      const other = wideTiles(e).find((x) => x !== tuned)!;
      if (await tilesRun({}) !== tuned) throw new Error(`untuned: ${labels.join(", ")}, expected the matmul tile ${tuned}`);
      if (await tilesRun({ tile: other }) !== other) throw new Error(`option: ${labels.join(", ")}`);
      if (await withEnv({ SSD_DEPTH_KERNEL_MM_TILE: other }, () => tilesRun({})) !== other) throw new Error(`env: ${labels.join(", ")}`);
      const r = await tune(e, "mm_tile", [other], (tile) => ops.attention(q, k, v, { heads: H, impl: "mm", tile }).dispose(), 1);
      if (r.choice !== other) throw new Error(`tuned ${r.choice}`);
      if (await tilesRun({}) !== other) throw new Error(`tuned mm_tile ${other}: ${labels.join(", ")}`);
      let code = "";
      try { ops.attention(q, k, v, { heads: H, impl: "mm", tile: "9x9k8t8" }); } catch (err: any) { code = err.code; }
      if (code !== "E_BAD_PARAM") throw new Error(`unknown tile: expected E_BAD_PARAM, got '${code}'`);
    } finally {
      for (const x of [q, k, v]) x.dispose();
    }
  });
});

// rowblock's keys per online-softmax step: the default by driver and runtime
// before tuning, then forced (option, env) and tuned; the dispatch label names it.
t("rowblock keys per step: default by driver and runtime, option, env, tuned", async () => {
  const e = await getEngine();
  const H = 2, q = e.upload(randArray(1 * 40 * H * 8, 61), [1, 40, H * 8]), k = e.upload(randArray(1 * 77 * H * 8, 62), [1, 77, H * 8]), v = e.upload(randArray(1 * 77 * H * 8, 63), [1, 77, H * 8]);
  const labels: string[] = [];
  const keysRun = async (tile?: string): Promise<string> => {
    labels.length = 0;
    e.onDispatch = (label, _pass, phase) => { if (phase === "begin") labels.push(label); };
    try {
      ops.attention(q, k, v, { heads: H, impl: "rowblock", tile }).dispose();
      await e.sync();
    } finally {
      e.onDispatch = null;
    }
    return labels.filter((l) => l.startsWith("attention.rowblock:")).map((l) => l.split(":k")[1]).join();
  };
  await withTempCache(e, async () => {
    try {
      const r = e.gpu.report;
      // measured: 16 through Dawn on lavapipe, 8 through Deno's wgpu there, 4 elsewhere
      const want = r.driver !== "lavapipe" ? "4" : r.runtime === "node" ? "16" : "8";
      if (await keysRun() !== want) throw new Error(`default on ${r.driver}@${r.runtime}: ${labels.join(", ")}, expected k${want}`);
      const other = ROWBLOCK_KEYS.find((x) => x !== want)!;
      if (await keysRun(other) !== other) throw new Error(`option: ${labels.join(", ")}`);
      if (await withEnv({ SSD_DEPTH_KERNEL_ROWBLOCK_KEYS: other }, () => keysRun()) !== other) throw new Error(`env: ${labels.join(", ")}`);
      const tuned = await tune(e, "rowblock_keys", [other], (kb) => ops.attention(q, k, v, { heads: H, impl: "rowblock", tile: kb }).dispose(), 1);
      if (tuned.choice !== other || await keysRun() !== other) throw new Error(`tuned ${tuned.choice}: ${labels.join(", ")}`);
      let code = "";
      try { ops.attention(q, k, v, { heads: H, impl: "rowblock", tile: "5" }); } catch (err: any) { code = err.code; }
      if (code !== "E_BAD_PARAM") throw new Error(`5 keys per step: expected E_BAD_PARAM, got '${code}'`);
    } finally {
      for (const x of [q, k, v]) x.dispose();
    }
  });
});

t.run();
