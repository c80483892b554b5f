// The autotuner: every candidate is timed, the fastest is cached on disk per
// adapter and then used by the ops; SSD_DEPTH_KERNEL_<OP> overrides it.

import { suite } from "uvu";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getEngine } from "../../engine/engine.ts";
import { tunedChoice, adapterKey, cachePath, reloadChoices } from "../../engine/autotune.ts";
import { tuneKernels, tuneCandidates } from "../../engine/tune.ts";

const t = suite("autotune");

t("tunes matmul, conv2d, attention (self, short), group_norm and layer_norm, caches the fastest per adapter, env overrides", async () => {
  const e = await getEngine();
  const dir = mkdtempSync(join(tmpdir(), "ssd-tune-"));
  const saved = process.env.SSD_DEPTH_CACHE;
  process.env.SSD_DEPTH_CACHE = dir;
  try {
    reloadChoices(e);
    const res = await tuneKernels(e, { scale: 0.05, reps: 1 });
    if (res.map((r) => r.op).join() !== "matmul,conv2d,attention,attention_short,group_norm,layer_norm") throw new Error(`ops tuned: ${res.map((r) => r.op)}`);
    const TUNE_CANDIDATES = tuneCandidates(e);
    for (const r of res) {
      const cands = TUNE_CANDIDATES[r.op as keyof typeof TUNE_CANDIDATES];
      if (Object.keys(r.ms).sort().join() !== [...cands].sort().join()) throw new Error(`${r.op}: timed ${Object.keys(r.ms)}, candidates ${cands}`);
      if (!Object.values(r.ms).every((ms) => ms > 0 && Number.isFinite(ms))) throw new Error(`${r.op}: times ${JSON.stringify(r.ms)}`);
      const fastest = cands.reduce((b, c) => (r.ms[c] < r.ms[b] ? c : b));
      if (r.choice !== fastest) throw new Error(`${r.op}: chose ${r.choice}, fastest was ${fastest}`);
    }
    if (cachePath() !== join(dir, "tuning.json")) throw new Error(`cache path ${cachePath()}`);
    const cached = JSON.parse(readFileSync(cachePath(), "utf8"))[adapterKey(e)];
    for (const r of res) if (cached?.[r.op] !== r.choice) throw new Error(`cache holds ${JSON.stringify(cached)}`);
    // a fresh lookup (as a new process would) reads the cache
    reloadChoices(e);
    const mm = res[0].choice;
    if (tunedChoice(e, "matmul", TUNE_CANDIDATES.matmul) !== mm) throw new Error("cached matmul choice not used");
    // a cached choice the op does not offer falls back to the op's options
    if (!["x", "y"].includes(tunedChoice(e, "matmul", ["x", "y"]))) throw new Error("choice outside the options");
    const other = TUNE_CANDIDATES.matmul.find((c) => c !== mm)!;
    process.env.SSD_DEPTH_KERNEL_MATMUL = other;
    if (tunedChoice(e, "matmul", TUNE_CANDIDATES.matmul) !== other) throw new Error("env override ignored");
    process.env.SSD_DEPTH_KERNEL_MATMUL = "no-such-kernel";
    if (tunedChoice(e, "matmul", TUNE_CANDIDATES.matmul) !== mm) throw new Error("an unknown env value must be ignored");
  } finally {
    delete process.env.SSD_DEPTH_KERNEL_MATMUL;
    if (saved === undefined) delete process.env.SSD_DEPTH_CACHE; else process.env.SSD_DEPTH_CACHE = saved;
    reloadChoices(e);
    rmSync(dir, { recursive: true, force: true });
  }
});

t.run();
