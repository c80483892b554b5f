// scripts/bench-kit.ts builds the bench as a folder that needs only Node: the
// kit is copied outside the repository (so no node_modules or tsx of ours can be
// found from it) and its run-gpu.sh runs a short kernels step there, on
// lavapipe. Node only: the kit is a Node bundle, and one driver shows it runs.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { abShaders, makeBenchKit, dawnPlatform, VULKAN_DEBS } from "../scripts/bench-kit.ts";
import { FULL_GPU_KERNEL_TESTS, ROOT, withEnv } from "./lib/harness.ts";

const t = suite("bench kit");

/** Runs fn in a fresh temporary folder, removed afterwards. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ssd-kit-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function runGpu(kit: string, cwd: string, env: Record<string, string>) {
  const r = spawnSync("bash", [join(kit, "run-gpu.sh")], {
    cwd,
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, SSD_DEPTH_ADAPTER: "lavapipe", NODE_OPTIONS: "", NODE_PATH: "", ...env },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

t("bench kit: a self-contained folder whose run-gpu.sh runs the kernel bench away from the repository", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return; // Deno and SwiftShader legs: see the header
  await inTempDir(async (dir) => {
    const kit = join(dir, "kit");
    const { out, bytes } = await makeBenchKit({ out: kit });
    assert.is(out, kit);
    assert.ok(existsSync(join(kit, "bin", "bench.mjs")));
    assert.equal(readdirSync(join(kit, "shaders")).sort(), readdirSync(join(ROOT, "shaders")).sort());
    assert.equal(readdirSync(join(kit, "node_modules", "webgpu", "dist")), [dawnPlatform()], "only this platform's Dawn");
    assert.ok(bytes < 64 * 2 ** 20, `kit is ${bytes} bytes`);

    const res = join(dir, "res");
    const r = runGpu(kit, dir, { OUT: res, STEPS: "kernels", ARGS: "--short --only copy" });
    assert.is(r.code, 0, r.out);
    const j = JSON.parse(readFileSync(join(res, "kernels.json"), "utf8"));
    const names = j.rows.map((x: any) => x.name);
    assert.ok(names.length > 0 && names.every((n: string) => n.startsWith("copy")), names.join(", "));
    for (const row of j.rows) {
      assert.ok(row.ms > 0, `${row.name}: ${row.ms} ms`);
      assert.ok(row.tfjsMs > 0, `${row.name}: tfjs ${row.tfjs ?? row.tfjsMs}`); // TensorFlow.js came bundled
      assert.is(row.driver, "lavapipe");
    }
    assert.ok(existsSync(join(res, "kernels.log")));

    // the adapter's features under both flag sets (allow_unsafe_apis adds Dawn's experimental ones)
    const f = runGpu(kit, dir, { OUT: res, STEPS: "features" });
    assert.is(f.code, 0, f.out);
    const txt = readFileSync(join(res, "features.txt"), "utf8");
    assert.match(txt, /^features: .*\bshader-f16\b/m);
    assert.match(txt, /^with allow_unsafe_apis also: chromium-experimental-/m);
    assert.match(txt, /^chromium-experimental-subgroup-matrix: (exposed|not exposed)$/m);

    // a step it does not know: said, counted, and the exit status says so
    const bad = runGpu(kit, dir, { OUT: res, STEPS: "kernal" });
    assert.is(bad.code, 1, bad.out);
    assert.match(bad.out, /unknown step 'kernal'/);
    assert.match(bad.out, /1 step\(s\) failed/);
  });
});

t("bench kit: a platform without a Dawn build is named, with the ones there are", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return;
  await inTempDir(async (dir) => {
    let err: any;
    await makeBenchKit({ out: join(dir, "kit"), platform: "plan9-mips" }).catch((e) => (err = e));
    assert.ok(err, "no error");
    assert.match(err.message, /no Dawn build for 'plan9-mips'/);
    assert.match(err.message, new RegExp(dawnPlatform()));
    assert.not.ok(existsSync(join(dir, "kit")), "nothing written");
  });
});

// A GPU machine lent bare (as the H200 of session 14 was: no Node, no Vulkan
// loader): the kit carries Node, and run-gpu.sh takes it when none is on the PATH.
t("bench kit --with-node: run-gpu.sh runs on a machine without Node", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return;
  await inTempDir(async (dir) => {
    const kit = join(dir, "kit");
    const { bytes } = await makeBenchKit({ out: kit, withNode: true });
    assert.ok(existsSync(join(kit, "node", "node.xz")));
    assert.ok(bytes < 64 * 2 ** 20, `kit is ${bytes} bytes`);
    // a PATH of the tools run-gpu.sh uses, without node
    const bin = join(dir, "bin");
    mkdirSync(bin);
    for (const tool of ["bash", "dirname", "mktemp", "xz", "chmod", "id", "ls", "mkdir", "realpath", "tee", "timeout", "wc", "cat"]) {
      const where = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).stdout.trim();
      assert.ok(where, `${tool} not found here`);
      symlinkSync(where, join(bin, tool));
    }
    assert.is(spawnSync("/bin/sh", ["-c", "command -v node"], { env: { PATH: bin }, encoding: "utf8" }).stdout.trim(), "", "node still on the PATH");
    const res = join(dir, "res");
    const r = spawnSync(join(bin, "bash"), [join(kit, "run-gpu.sh")], {
      cwd: dir, encoding: "utf8", timeout: 120_000,
      env: { PATH: bin, HOME: dir, SSD_DEPTH_ADAPTER: "lavapipe", OUT: res, STEPS: "kernels", ARGS: "--short --only copy" },
    });
    const out = `${r.stdout}${r.stderr}`;
    assert.is(r.status, 0, out);
    assert.match(out, new RegExp(`run-gpu: Node ${process.version.replace(/\./g, "\\.")} from the kit`));
    assert.ok(JSON.parse(readFileSync(join(res, "kernels.json"), "utf8")).rows.length > 0);
  });
});

// --with-vulkan takes the packages from apt-get download (here a stand-in that
// writes empty files, as the test machine may not reach Debian's mirrors).
t("bench kit --with-vulkan: carries the Vulkan loader and glvnd packages; a failed download is named", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return;
  await inTempDir(async (dir) => {
    const bin = join(dir, "bin");
    mkdirSync(bin);
    const fake = (body: string) => { writeFileSync(join(bin, "apt-get"), `#!/bin/sh\n${body}\n`); chmodSync(join(bin, "apt-get"), 0o755); };
    fake('[ "$1" = download ] || exit 2; shift; for p in "$@"; do : > "${p}_1.0_amd64.deb"; done');
    const kit = join(dir, "kit");
    await withEnv({ PATH: `${bin}:${process.env.PATH}` }, () => makeBenchKit({ out: kit, withVulkan: true }));
    assert.equal(readdirSync(join(kit, "debs")).sort(), VULKAN_DEBS.map((p) => `${p}_1.0_amd64.deb`).sort());
    assert.ok(VULKAN_DEBS.includes("libvulkan1") && VULKAN_DEBS.includes("libglvnd0"));
    fake('echo "E: Unable to locate package libvulkan1" >&2; exit 100');
    let err: any;
    await withEnv({ PATH: `${bin}:${process.env.PATH}` }, () => makeBenchKit({ out: kit, withVulkan: true })).catch((e) => (err = e));
    assert.ok(err, "no error");
    assert.match(err.message, /--with-vulkan: apt-get download .*libvulkan1.* failed \(E: Unable to locate package libvulkan1\)/);
  });
});

// The step ab times shader versions against the kit's own in alternation. A
// variant with a broken norm.wgsl (the layer_norm row's kernel) fails its run,
// which shows that its files stood in shaders/ for it; the kit's own run after
// it passes, and shaders/ is the kit's again at the end.
t("bench kit: run-gpu.sh's step ab runs each shader variant in turn and puts the kit's shaders back", async () => {
  if (!FULL_GPU_KERNEL_TESTS) return;
  await inTempDir(async (dir) => {
    const kit = join(dir, "kit");
    await makeBenchKit({ out: kit });
    const own = readFileSync(join(kit, "shaders", "norm.wgsl"), "utf8");
    mkdirSync(join(kit, "ab", "broken"), { recursive: true });
    writeFileSync(join(kit, "ab", "broken", "norm.wgsl"), `fn broken( {\n${own}`); // in the part every kernel of the file gets
    mkdirSync(join(kit, "ab", "marked"), { recursive: true });
    writeFileSync(join(kit, "ab", "marked", "norm.wgsl"), `${own}\n// marked\n`);
    writeFileSync(join(kit, "ab", "marked", "extra.wgsl"), "// a file the kit does not have\n");
    const res = join(dir, "res");
    // a GEMM in 2 K parts too, whose passes (with --profile) get rows of their own
    const r = runGpu(kit, dir, { OUT: res, STEPS: "ab", AB_STEP: "kernels", AB_ROUNDS: "1", ARGS: "--short --only layer_norm,linear --profile", SSD_DEPTH_KERNEL_MATMUL: "wide", SSD_DEPTH_KERNEL_MATMUL_SPLIT: "2" });
    assert.is(r.code, 1, r.out);
    assert.match(r.out, /1 step\(s\) failed/);
    assert.match(r.out, /== ab: round 1, broken: norm\.wgsl from /);
    assert.match(r.out, /== ab-broken-1: exit [1-9]/);
    assert.match(r.out, /== ab-cur-1: exit 0/);
    assert.match(r.out, /== ab-marked-1: exit 0/);
    for (const v of ["cur", "marked"]) assert.ok(JSON.parse(readFileSync(join(res, `ab-${v}-1.json`), "utf8")).rows.length > 0, v);
    assert.is(readFileSync(join(kit, "shaders", "norm.wgsl"), "utf8"), own, "the kit's own shader is back");
    assert.not.ok(existsSync(join(kit, "shaders", "extra.wgsl")), "a variant's extra file is gone");
    const table = readFileSync(join(res, "ab.txt"), "utf8");
    assert.match(table, /cur #1 +broken #1 +marked #1/);
    assert.match(table, /^layer_norm \S+ +\d[\d.]* +- +\d[\d.]*$/m, table);
    assert.match(table, /^linear \S+ \| split_sum( +\d[\d.]*){3}$/m, table); // the broken variant breaks norm.wgsl only
    assert.match(table, /^linear \S+ \| wide( +\d[\d.]*){3}$/m, table);
    assert.match(table, /^linear \S+ \| one pass( +\d[\d.]*){3}$/m, table);

    // no variant folders: said, and counted as a failed step
    rmSync(join(kit, "ab"), { recursive: true });
    const none = runGpu(kit, dir, { OUT: res, STEPS: "ab" });
    assert.is(none.code, 1, none.out);
    assert.match(none.out, /ab: no folder of \.wgsl files in /);
  });
});

// --ab NAME=REV: the shader files as they were at a revision, those that differ
// from the working tree's, here of a small repository made for the test.
t("bench kit --ab: the shaders that differ at a git revision, and a revision git does not know", async () => {
  await inTempDir(async (dir) => {
    const repo = join(dir, "repo");
    mkdirSync(join(repo, "shaders"), { recursive: true });
    const sh = (cmd: string) => {
      const r = spawnSync("sh", ["-c", cmd], { cwd: repo, encoding: "utf8" });
      assert.is(r.status, 0, `${cmd}: ${r.stderr}`);
      return r.stdout.trim();
    };
    writeFileSync(join(repo, "shaders", "a.wgsl"), "// a, first\n");
    writeFileSync(join(repo, "shaders", "b.wgsl"), "// b\n");
    writeFileSync(join(repo, "shaders", "gone.wgsl"), "// removed later\n");
    sh("git init -q && git -c user.name=t -c user.email=t@t add -A && git -c user.name=t -c user.email=t@t commit -q -m first");
    const first = sh("git rev-parse HEAD");
    writeFileSync(join(repo, "shaders", "a.wgsl"), "// a, second\n");
    rmSync(join(repo, "shaders", "gone.wgsl"));
    writeFileSync(join(repo, "shaders", "new.wgsl"), "// new\n");
    sh("git -c user.name=t -c user.email=t@t add -A && git -c user.name=t -c user.email=t@t commit -q -m second");
    writeFileSync(join(repo, "shaders", "b.wgsl"), "// b, edited, not committed\n");

    const out = join(dir, "ab", "first");
    assert.equal(abShaders(first, out, repo).sort(), ["a.wgsl", "b.wgsl", "gone.wgsl"]);
    assert.is(readFileSync(join(out, "a.wgsl"), "utf8"), "// a, first\n");
    assert.is(readFileSync(join(out, "b.wgsl"), "utf8"), "// b\n");
    assert.match(readFileSync(join(out, "FROM"), "utf8"), new RegExp(`^${first} first\n$`));
    assert.equal(abShaders("HEAD", join(dir, "ab", "head"), repo), ["b.wgsl"]);

    let err: any;
    try { abShaders("no-such-rev", join(dir, "ab", "x"), repo); } catch (e) { err = e; }
    assert.ok(err, "no error");
    assert.match(err.message, /--ab: revision 'no-such-rev': no such commit/);
    assert.not.ok(existsSync(join(dir, "ab", "x")), "nothing written");
  });
});

t.run();
