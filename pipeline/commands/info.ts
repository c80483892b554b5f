// `ssd-depth info`: the adapter report (name, vendor/architecture, backend,
// features, limits), and with --check a short kernel self-check against a CPU
// reference; --tune measures the kernel candidates and caches the choices.

import type { CommandModule } from "yargs";
import { getEngine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { tuneKernels } from "../../engine/tune.ts";
import { cachePath } from "../../engine/autotune.ts";
import { SPIN_MS, POLL_MS } from "../../engine/poll.ts";

function selfCheckData(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) >>> 0; a[i] = (s / 2 ** 32) * 2 - 1; }
  return a;
}

/** A matmul with fused bias + GELU, checked against float64 on the host. */
async function selfCheck(): Promise<{ ok: boolean; maxAbs: number; ms: number }> {
  const e = await getEngine();
  const M = 67, N = 45, K = 129;
  const x = selfCheckData(M * K, 1), w = selfCheckData(N * K, 2), b = selfCheckData(N, 3);
  const t0 = performance.now();
  const y = await ops.linear(e.upload(x, [M, K]), e.upload(w, [N, K]), e.upload(b, [N]), "gelu").read();
  const ms = performance.now() - t0;
  let maxAbs = 0;
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = b[n];
    for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
    // gelu via tanh-free erf series is in test/reference; here a 1e-7-accurate erf suffices
    const ref = 0.5 * s * (1 + erfApprox(s / Math.SQRT2));
    maxAbs = Math.max(maxAbs, Math.abs(ref - y[m * N + n]));
  }
  return { ok: maxAbs < 1e-4, maxAbs, ms };
}

function erfApprox(x: number): number {
  // W. J. Cody's rational approximation is overkill here; Abramowitz–Stegun 7.1.26 (|err| < 1.5e-7)
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return Math.sign(x) * y;
}

export const infoCommand: CommandModule<{}, { json?: boolean; check?: boolean; tune?: boolean }> = {
  command: "info",
  describe: "print the WebGPU adapter (name, backend, features, limits) and run a kernel self-check",
  builder: (y) => y
    .option("json", { type: "boolean", describe: "machine-readable output" })
    .option("check", { type: "boolean", default: true, describe: "run the kernel self-check (--no-check to skip)" })
    .option("tune", { type: "boolean", describe: "time each kernel candidate on SSD-1B shapes and cache the fastest for this adapter" }),
  handler: async (args) => {
    const e = await getEngine();
    const r = e.gpu.report;
    const check = args.check ? await selfCheck() : null;
    if (args.json) {
      console.log(JSON.stringify({ ...r, selfCheck: check }, null, 2));
      return;
    }
    console.log(`adapter:        ${r.name}`);
    console.log(`vendor/arch:    ${r.vendor || "?"} / ${r.architecture || "?"}`);
    console.log(`kind:           ${r.kind === "gpu" ? "hardware GPU" : `CPU driver (${r.driver})`}`);
    console.log(`runtime:        ${r.runtime}, WebGPU by ${r.implementation}, backend Vulkan${r.icd ? ` (ICD ${r.icd})` : ""}`);
    if (r.polling !== "wgpu") console.log(`Dawn polling:   ${r.polling === "paced" ? `paced (at once for ${SPIN_MS} ms of a wait, then every ${POLL_MS} ms; SSD_DEPTH_DAWN_POLL=spin for Dawn's loop)` : "Dawn's own loop (spins a core while waiting)"}`);
    console.log(`shader-f16:     ${e.gpu.f16 ? "yes (native f16 kernels)" : "no (f16 weights packed two per u32)"}`);
    console.log(`subgroups:      ${e.gpu.subgroups ? "yes" : "no"}   timestamp-query: ${e.gpu.timestamps ? "yes" : "no"}`);
    console.log(`features:       ${r.features.join(", ")}`);
    console.log("limits:");
    for (const [k, v] of Object.entries(r.limits)) console.log(`  ${k.padEnd(36)} ${v}`);
    if (check) console.log(`self-check:     ${check.ok ? "ok" : "FAILED"} (linear+gelu 67×129→45 vs float64: max abs error ${check.maxAbs.toExponential(2)}, ${check.ms.toFixed(1)} ms)`);
    if (check && !check.ok) process.exitCode = 1;
    if (args.tune) {
      console.log("tuning (SSD-1B shapes at 512²):");
      await tuneKernels(e, { log: (l) => console.log(`  ${l}`) });
      console.log(`choices cached in ${cachePath()} (env SSD_DEPTH_KERNEL_<OP> overrides one)`);
    }
  },
};
