// `ssd-depth depth` run as a user runs it (node bin/ssd-depth.js depth ... in a
// child process): on every e2e-* fixture's depth/ model and inputs/image.png,
// compared with expected/depth.png under the case's tolerance.depth; 16-bit
// output; coded errors for corrupt, unsupported and huge images and for a
// --size the hybrid cannot take; the family picked from config.json, not the
// folder name. Plus estimateDepth in-process against the e2e tensors.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, existsSync, writeFileSync, readFileSync, copyFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import pngjs from "pngjs";
import { ROOT, fixtureDirs, compare, fmt } from "./lib/harness.ts";
import { readJsonFile } from "../weights/json.ts";
import { readAllFloat32 } from "../weights/safetensors.ts";
import { crc32, loadImage } from "../pipeline/image.ts";
import { estimateDepth } from "../pipeline/depth.ts";

const { PNG } = pngjs;
declare const Deno: any;

const t = suite("depth_command");

const e2eDirs = fixtureDirs(/^e2e-/).filter((d) => existsSync(join(d, "depth", "config.json")) && existsSync(join(d, "inputs", "image.png")) && existsSync(join(d, "expected", "depth.png")));
const tmp = mkdtempSync(join(tmpdir(), "ssd-depth-cmd-"));

interface CliResult { code: number; stdout: string; stderr: string }

/** Runs `node bin/ssd-depth.js depth ...args` (the test runner's adapter environment is inherited). */
function cli(args: string[]): Promise<CliResult> {
  const node = typeof Deno !== "undefined" ? "node" : process.execPath;
  return new Promise((resolve, reject) => {
    const p = spawn(node, [join(ROOT, "bin", "ssd-depth.js"), "depth", ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("error", reject);
    p.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Grayscale PNG samples (8 or 16 bit) as numbers, read with pngjs without rescaling. */
function readGray(path: string): { width: number; height: number; depth: number; data: number[] } {
  const png: any = PNG.sync.read(readFileSync(path), { skipRescale: true } as any);
  const n = png.width * png.height;
  const data: number[] = [];
  for (let i = 0; i < n; i++) data.push(png.data[i * 4]);
  return { width: png.width, height: png.height, depth: png.depth, data };
}

function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith(".tmp"));
}

for (const dir of e2eDirs) {
  const name = basename(dir);
  t(`fixture ${name}: depth command matches expected/depth.png`, async () => {
    const kase = await readJsonFile<any>(join(dir, "case.json"));
    const tol = kase.tolerance?.depth;
    assert.type(tol?.max_level_diff, "number", "case.json tolerance.depth.max_level_diff");
    assert.type(tol?.min_fraction, "number", "case.json tolerance.depth.min_fraction");
    const out = join(tmp, `${name}-depth.png`);
    const r = await cli(["--image", join(dir, "inputs", "image.png"), "--out", out, "--depth-model", join(dir, "depth")]);
    assert.is(r.code, 0, `exit code; stderr: ${r.stderr}`);
    assert.match(r.stdout, /time:.*model \d+ ms/, "prints timing");
    const got = readGray(out), want = readGray(join(dir, "expected", "depth.png"));
    assert.is(got.depth, 8);
    assert.equal([got.width, got.height], [want.width, want.height]);
    let within = 0, maxDiff = 0;
    for (let i = 0; i < want.data.length; i++) {
      const d = Math.abs(got.data[i] - want.data[i]);
      if (d <= tol.max_level_diff) within++;
      maxDiff = Math.max(maxDiff, d);
    }
    const frac = within / want.data.length;
    const ok = frac >= tol.min_fraction;
    console.log(`fixture ${name}: ${ok ? "ok" : "FAIL"} max_abs=${maxDiff} max_rel=${fmt(maxDiff / 255)} (depth.png levels; ${(frac * 100).toFixed(2)}% within ${tol.max_level_diff})`);
    assert.ok(ok, `only ${frac} of the depth pixels within ${tol.max_level_diff} levels (need ${tol.min_fraction})`);
    assert.equal(leftovers(tmp), [], "no temp files left");

    // 16-bit: same map, 16-bit samples whose high byte is the 8-bit level (±1 for the different truncation)
    const out16 = join(tmp, `${name}-depth16.png`);
    const r16 = await cli(["--image", join(dir, "inputs", "image.png"), "--out", out16, "--depth-model", join(dir, "depth"), "--16bit"]);
    assert.is(r16.code, 0, r16.stderr);
    const g16 = readGray(out16);
    assert.is(g16.depth, 16);
    assert.ok(g16.data.every((v, i) => Math.abs((v >> 8) - got.data[i]) <= 1), "16-bit map agrees with the 8-bit one");
    assert.ok(g16.data.some((v) => v % 257 !== 0), "16-bit samples are not widened 8-bit ones");
  });

  t(`fixture ${name}: estimateDepth matches the recorded depth tensors`, async () => {
    const kase = await readJsonFile<any>(join(dir, "case.json"));
    const per = kase.tolerance?.tensors?.per_tensor ?? {};
    const io = await readAllFloat32(join(dir, "expected", "io.safetensors"));
    const r = await estimateDepth(join(dir, "depth"), await loadImage(join(dir, "inputs", "image.png")));
    for (const [tensor, ours] of [["dpt.predicted_depth", r.predictedDepth], ["depth.map_float", r.normalized]] as const) {
      const ref = io.get(tensor);
      if (!ref) continue;
      const tl = per[tensor] ?? {};
      assert.type(tl.suggested_atol, "number", `tolerance for ${tensor}`);
      const c = compare(ours, ref.data, tl.suggested_atol, tl.suggested_rtol ?? 0);
      assert.ok(c.ok, `${tensor}: max_abs=${fmt(c.maxAbs)} (atol ${tl.suggested_atol})`);
    }
    const u8 = io.get("depth.uint8");
    if (u8) {
      const c = compare(r.u8, u8.data, 1);
      assert.ok(c.ok, `depth.uint8 max level diff ${c.maxAbs}`);
    }
  });
}

t("corrupt, unsupported and huge images are E_BAD_IMAGE naming the file", async () => {
  if (!e2eDirs.length) return;
  const model = join(e2eDirs[0], "depth");
  const real = readFileSync(join(e2eDirs[0], "inputs", "image.png"));
  const cases: [string, Uint8Array, RegExp][] = [];
  cases.push(["garbage.png", new TextEncoder().encode("this is not an image at all"), /E_BAD_IMAGE: .*garbage\.png/]);
  cases.push(["truncated.png", real.subarray(0, Math.floor(real.length / 2)), /E_BAD_IMAGE: .*truncated\.png/]);
  cases.push(["anim.gif", new TextEncoder().encode("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), /E_BAD_IMAGE: .*anim\.gif.*(GIF|unsupported)/]);
  // a valid PNG header claiming 30000x30000 pixels: refused before decoding, with the limit stated
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, 30000); dv.setUint32(4, 30000);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const chunk = (type: string, data: Uint8Array) => {
    const b = new Uint8Array(12 + data.length);
    const v = new DataView(b.buffer);
    v.setUint32(0, data.length);
    b.set(new TextEncoder().encode(type), 4);
    b.set(data, 8);
    v.setUint32(8 + data.length, crc32(b.subarray(4, 8 + data.length)) >>> 0);
    return b;
  };
  const parts = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", new Uint8Array([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk("IEND", new Uint8Array(0))];
  const huge = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { huge.set(p, o); o += p.length; }
  cases.push(["huge.png", huge, /E_BAD_IMAGE: .*huge\.png.*30000x30000.*limit/]);
  for (const [file, bytes, re] of cases) {
    const p = join(tmp, file);
    writeFileSync(p, bytes);
    const out = join(tmp, `${file}.depth.png`);
    const r = await cli(["--image", p, "--out", out, "--depth-model", model]);
    assert.is.not(r.code, 0, `${file}: exit code`);
    assert.match(r.stderr, re, `${file}: ${r.stderr}`);
    assert.not.match(r.stderr, /\n\s+at /, "no stack trace");
    assert.not.ok(existsSync(out), `${file}: no output written`);
  }
  const missing = await cli(["--image", join(tmp, "nope.png"), "--out", join(tmp, "x.png"), "--depth-model", model]);
  assert.is.not(missing.code, 0);
  assert.match(missing.stderr, /nope\.png/);
});

t("--size: the hybrid takes only its image_size (E_BAD_PARAM otherwise)", async () => {
  if (!e2eDirs.length) return;
  const model = join(e2eDirs[0], "depth");
  const cfg = await readJsonFile<any>(join(model, "config.json"));
  if (!cfg.is_hybrid) return;
  const size = Array.isArray(cfg.image_size) ? cfg.image_size[0] : cfg.image_size;
  const img = join(e2eDirs[0], "inputs", "image.png");
  const bad = await cli(["--image", img, "--out", join(tmp, "bad-size.png"), "--depth-model", model, "--size", String(size * 2)]);
  assert.is.not(bad.code, 0);
  assert.match(bad.stderr, new RegExp(`E_BAD_PARAM: .*hybrid.*${size}`));
  assert.not.ok(existsSync(join(tmp, "bad-size.png")));
  const notInt = await cli(["--image", img, "--out", join(tmp, "bad-size2.png"), "--depth-model", model, "--size", "12.5"]);
  assert.match(notInt.stderr, /E_BAD_PARAM/);
  const good = await cli(["--image", img, "--out", join(tmp, "good-size.png"), "--depth-model", model, "--size", String(size)]);
  assert.is(good.code, 0, good.stderr);
});

t("the family comes from config.json's model_type, not the folder name; ViT DPT and Depth Anything take other sizes", async () => {
  const da = fixtureDirs(/^depth-anything-/)[0];
  const vit = fixtureDirs(/^dpt-/, /^dpt-preprocess/).find((d) => !readFileSync(join(d, "config.json"), "utf8").includes('"is_hybrid": true'));
  const img = e2eDirs.length ? join(e2eDirs[0], "inputs", "image.png") : null;
  if (!img) return;
  const image = await loadImage(img);
  if (da) {
    // a Depth Anything model in a folder whose name says DPT
    const fake = join(tmp, "dpt-hybrid-midas");
    mkdirSync(fake, { recursive: true });
    for (const f of ["config.json", "model.safetensors"]) copyFileSync(join(da, f), join(fake, f));
    const cfg = await readJsonFile<any>(join(da, "config.json"));
    const out = join(tmp, "da.png");
    const r = await cli(["--image", img, "--out", out, "--depth-model", fake, "--size", String(cfg.backbone_config.image_size + cfg.patch_size)]);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /Depth Anything/);
    const g = readGray(out);
    assert.equal([g.width, g.height], [image.width, image.height]);
  }
  if (vit) {
    const cfg = await readJsonFile<any>(join(vit, "config.json"));
    const out = join(tmp, "vit.png");
    const r = await cli(["--image", img, "--out", out, "--depth-model", vit, "--size", String(cfg.image_size + cfg.patch_size)]);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /DPT/);
    assert.equal(readGray(out).width, image.width);
  }
});

t("an unwritable output is E_IO, leaving nothing behind", async () => {
  if (!e2eDirs.length) return;
  const r = await cli(["--image", join(e2eDirs[0], "inputs", "image.png"), "--out", join(tmp, "no-such-dir", "d.png"), "--depth-model", join(e2eDirs[0], "depth")]);
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /E_IO: .*no-such-dir/);
  assert.equal(leftovers(tmp), []);
});

t.after(() => rmSync(tmp, { recursive: true, force: true }));

t.run();
