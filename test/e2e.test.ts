// Every e2e-* fixture: `ssd-depth generate` run as a user would on the folder
// (model, request, image), its PNGs compared with expected/ under the case's
// tolerance ({max_level_diff, min_fraction} per PNG), and the written image's
// parameters read back with `ssd-depth inspect`.

import { suite } from "uvu";
import { basename, join } from "node:path";
import { mkdtempSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fixtureDirs } from "./lib/harness.ts";
import { runCli } from "./lib/cli.ts";
import { readJsonFile, parsePythonJson } from "../weights/json.ts";
import { loadImage } from "../pipeline/image.ts";

const t = suite("e2e");

for (const dir of fixtureDirs(/^e2e-/)) {
  t(basename(dir), async () => {
    const meta = await readJsonFile(join(dir, "case.json"));
    const tol = meta.tolerance ?? {};
    const out = mkdtempSync(join(tmpdir(), "ssd-e2e-"));
    const args = ["generate", "--model", dir, "--request", join(dir, "inputs", "request.json"), "--out", join(out, "image.png"), "--save-depth", join(out, "depth.png"), "--offline"];
    if (existsSync(join(dir, "inputs", "image.png"))) args.push("--image", join(dir, "inputs", "image.png"));
    if (existsSync(join(dir, "inputs", "depth.png"))) args.push("--depth-map", join(dir, "inputs", "depth.png"));
    const r = await runCli(args, { env: { HF_HUB_OFFLINE: "1" } });
    if (r.code !== 0) throw new Error(`generate exited ${r.code}:\n${r.stderr.slice(-2000)}`);
    const lines: string[] = [];
    let failed = "";
    for (const [name, key] of [["image", "image"], ["depth", "depth"]] as const) {
      const want = join(dir, "expected", `${name}.png`);
      if (!existsSync(want)) continue;
      // the issue's default: each channel within 2 of 255 on at least 99.9 % of values
      const { max_level_diff: maxDiff, min_fraction: minFrac } = tol[key] ?? { max_level_diff: 2, min_fraction: 0.999 };
      const a = await loadImage(join(out, `${name}.png`)), b = await loadImage(want);
      if (a.width !== b.width || a.height !== b.height) { failed ||= `${name}.png is ${a.width}x${a.height}, expected ${b.width}x${b.height}`; continue; }
      let within = 0, worst = 0;
      for (let i = 0; i < a.data.length; i++) {
        const d = Math.abs(a.data[i] - b.data[i]);
        if (d <= maxDiff) within++;
        worst = Math.max(worst, d);
      }
      const fraction = within / a.data.length;
      lines.push(`${name}: ${(100 * fraction).toFixed(3)}% within ${maxDiff} (worst ${worst})`);
      if (fraction < minFrac) failed ||= `${name}.png: only ${(100 * fraction).toFixed(3)}% of values within ${maxDiff} levels (need ${100 * minFrac}%), worst ${worst}`;
    }
    // the parameters travel with the PNG
    const ins = await runCli(["inspect", join(out, "image.png"), "--json"]);
    if (ins.code !== 0) failed ||= `inspect failed: ${ins.stderr}`;
    else {
      const p = JSON.parse(ins.stdout);
      // seeds above 2^53 must survive: read the request's integers exactly
      const req = parsePythonJson(readFileSync(join(dir, "inputs", "request.json"), "utf8"), { bigints: true }) as any;
      if (String(p.seed) !== String(req.seed ?? p.seed) || p.prompt !== req.prompt) failed ||= `inspect: parameters do not match the request (${ins.stdout.slice(0, 200)})`;
    }
    console.log(`fixture ${basename(dir)}: ${failed ? `FAIL ${failed}` : "ok"} ${lines.join("; ")}`);
    if (failed) throw new Error(failed);
  });
}

t.run();
