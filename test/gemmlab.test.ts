// bench/gemmlab.ts generates its own SGEMM kernels (register tiles, loop or
// written-out style, split-K, stream-K, sliced K, bounds checks): each variant of the
// quick set must compute A·Bᵀ (its built-in check against f64 dot products on
// the CPU, and no output left unwritten). Node under lavapipe only: the lab
// makes its own Dawn instances, and one CPU driver suffices for correctness.
import { suite } from "uvu";
import { benchGemmLab } from "../bench/gemmlab.ts";
import { FULL_GPU_KERNEL_TESTS } from "./lib/harness.ts";

const t = suite("gemmlab");

t("gemmlab: every quick variant matches the f64 reference and writes every output", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // Deno and SwiftShader legs: see the header
  const lines: string[] = [];
  const res = await benchGemmLab({ set: "quick", shapes: true, driver: "lavapipe", log: (l) => lines.push(l) });
  const ran = res.filter((r) => !r.error);
  if (ran.length < 14) throw new Error(`only ${ran.length} variants ran:\n${lines.join("\n")}`);
  for (const r of ran) {
    if (!(r.err! < 1e-5) || r.unwritten) throw new Error(`${r.variant} on ${r.shape}: err ${r.err}, ${r.unwritten} unwritten`);
  }
  // every kind ran: loop style, split-K, stream-K, sliced K, bounds checks on a ragged shape
  for (const kind of [" loop ", " s2", " sk3", " sl2", " sl4", " chk"]) if (!ran.some((r) => r.variant.includes(kind))) throw new Error(`no '${kind.trim()}' variant ran`);
  if (!ran.some((r) => r.variant.includes(" chk") && r.shape === "200x228x64")) throw new Error("the bounds-checked variant did not run on the ragged shape");
});

t.run();
