// `npm run bench:kit [-- --out DIR] [--with-node] [--with-vulkan] [--ab NAME=REV,...]`: the bench as a folder that runs on a machine
// with Node ≥ 20 and nothing else: no npm, no TypeScript, no network. That is how
// GPU boxes are often lent (a copy of a folder, a shell, an accelerator).
//
//   DIR/bin/bench.mjs        bench/main.ts with every import bundled (engine,
//                            TensorFlow.js for --vs tfjs, yargs) except `webgpu`
//   DIR/node_modules/webgpu  Dawn's bindings: package.json, index.js and this
//                            platform's dawn.node only (~21 MB of the ~130 MB)
//   DIR/shaders/             the WGSL sources, read at run time
//   DIR/bench/configs/, DIR/bench/numpy_peer.py
//   DIR/run-gpu.sh           the GPU measurements of the kernel-performance work
//   DIR/node/node.xz         with --with-node: this Node binary, xz-compressed
//                            (~28 MB), for machines without Node; run-gpu.sh
//                            unpacks it when `node` is not on the PATH
//   DIR/debs/                with --with-vulkan: Debian's Vulkan loader and
//                            glvnd packages (the NVIDIA driver's Vulkan library
//                            needs libGLdispatch), which run-gpu.sh unpacks
//                            into / (as root) where the machine lacks them
//   DIR/ab/NAME/             with --ab NAME=REV[,NAME=REV…]: the files of
//                            shaders/ as they are at git revision REV, those
//                            that differ from the working tree's (and FROM,
//                            the revision), for run-gpu.sh's step `ab`, which
//                            times them against the kit's own in alternation.
//                            The host code is the working tree's: only
//                            revisions whose shaders it still drives (same
//                            bindings, parameters and entry points) compare.
//
// bin/ sits one level under DIR as bench/ and engine/ sit under the repository,
// so the bundled code finds shaders/ and bench/ as it does in the repository.
// Usage on the other machine: `node DIR/bin/bench.mjs kernels --vs tfjs`, or
// `PEAK=66900 OUT=results bash DIR/run-gpu.sh`.

import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

export interface KitOptions {
  /** target folder (replaced); default dist/bench-kit */
  out?: string;
  /** Dawn build to include, as webgpu's dist/ names it; default this machine's */
  platform?: string;
  /** carry this Node binary (xz-compressed) for machines without Node */
  withNode?: boolean;
  /** carry Debian's Vulkan loader and glvnd packages (apt-get download) */
  withVulkan?: boolean;
  /** shader versions for run-gpu.sh's step `ab`: name → git revision (see abShaders) */
  ab?: Record<string, string>;
  log?: (line: string) => void;
}

/** Debian packages of the Vulkan loader and of glvnd, which NVIDIA's Vulkan library loads. */
export const VULKAN_DEBS = ["libvulkan1", "libglvnd0", "libgl1", "libglx0", "libegl1", "libopengl0", "libgles2"];

/** The folder names webgpu's index.js looks for (`${process.platform}-${arch}`). */
export function dawnPlatform(): string {
  return `${process.platform}-${process.platform === "darwin" ? "universal" : process.arch}`;
}

function git(root: string, args: string[]): Buffer {
  return execFileSync("git", ["-C", root, ...args], { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 26 });
}

/** The commit that `rev` names in `root`'s git history, or an error that says why not. */
export function gitCommit(rev: string, root: string = ROOT): string {
  try {
    return git(root, ["rev-parse", "--verify", "--quiet", `${rev}^{commit}`]).toString().trim();
  } catch (e: any) {
    const why = String(e?.stderr ?? "").trim() || (e?.code === "ENOENT" ? "git is not installed" : "no such commit in this checkout (a shallow clone lacks older ones)");
    throw new Error(`--ab: revision '${rev}': ${why}`);
  }
}

/**
 * Writes into `dir` the files of `root`'s shaders/ as they are at git revision
 * `rev`, those that differ from (or are missing in) the working tree's, and a
 * file FROM naming the revision. Returns the shader files written.
 */
export function abShaders(rev: string, dir: string, root: string = ROOT): string[] {
  const commit = gitCommit(rev, root);
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const path of git(root, ["ls-tree", "-r", "--name-only", commit, "--", "shaders/"]).toString().split("\n")) {
    if (!/^shaders\/[^/]+\.wgsl$/.test(path)) continue;
    const then = git(root, ["show", `${commit}:${path}`]);
    const now = existsSync(join(root, path)) ? readFileSync(join(root, path)) : undefined;
    if (now && now.equals(then)) continue;
    writeFileSync(join(dir, basename(path)), then);
    written.push(basename(path));
  }
  writeFileSync(join(dir, "FROM"), `${git(root, ["log", "-1", "--format=%H %s", commit]).toString().trim()}\n`);
  return written;
}

function folderBytes(p: string): number {
  const s = statSync(p);
  if (!s.isDirectory()) return s.size;
  return readdirSync(p).reduce((n, e) => n + folderBytes(join(p, e)), 0);
}

export async function makeBenchKit(o: KitOptions = {}): Promise<{ out: string; bytes: number }> {
  const out = resolve(o.out ?? join(ROOT, "dist", "bench-kit"));
  const platform = o.platform ?? dawnPlatform();
  const log = o.log ?? (() => {});
  const webgpu = join(ROOT, "node_modules", "webgpu");
  const dawn = join(webgpu, "dist", platform);
  if (!existsSync(join(dawn, "dawn.node"))) {
    const have = existsSync(join(webgpu, "dist")) ? readdirSync(join(webgpu, "dist")).join(", ") : "none (run npm ci)";
    throw new Error(`no Dawn build for '${platform}' in node_modules/webgpu/dist (there: ${have}); pass --platform with one of those`);
  }
  // the variants are checked before the old kit is removed
  for (const [name, rev] of Object.entries(o.ab ?? {})) {
    if (!/^[\w.-]+$/.test(name) || name === "cur") throw new Error(`--ab: '${name}' is not a usable variant name (letters, digits, '.', '_', '-'; 'cur' is the kit's own shaders)`);
    gitCommit(rev);
  }
  rmSync(out, { recursive: true, force: true });
  mkdirSync(join(out, "bin"), { recursive: true });
  await build({
    entryPoints: [join(ROOT, "bench", "main.ts")],
    outfile: join(out, "bin", "bench.mjs"),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: ["webgpu"],
    // CommonJS packages bundled into an ES module still call require()
    banner: { js: 'import { createRequire as __kitRequire } from "node:module"; const require = __kitRequire(import.meta.url);' },
    logLevel: "error",
  });
  cpSync(join(ROOT, "shaders"), join(out, "shaders"), { recursive: true });
  cpSync(join(ROOT, "bench", "configs"), join(out, "bench", "configs"), { recursive: true });
  cpSync(join(ROOT, "bench", "numpy_peer.py"), join(out, "bench", "numpy_peer.py"));
  cpSync(join(ROOT, "bench", "run-gpu.sh"), join(out, "run-gpu.sh"));
  const kitWebgpu = join(out, "node_modules", "webgpu");
  for (const f of ["package.json", "index.js", "LICENSE.md"]) if (existsSync(join(webgpu, f))) cpSync(join(webgpu, f), join(kitWebgpu, f));
  cpSync(dawn, join(kitWebgpu, "dist", platform), { recursive: true });
  if (o.withNode) {
    mkdirSync(join(out, "node"));
    try {
      execFileSync("sh", ["-c", 'xz -1 -T0 -c "$0" > "$1"', process.execPath, join(out, "node", "node.xz")], { stdio: ["ignore", "ignore", "pipe"] });
    } catch (e: any) {
      throw new Error(`--with-node: could not compress ${process.execPath} with xz (${String(e?.stderr ?? e?.message ?? e).trim()}); install xz-utils`);
    }
  }
  if (o.withVulkan) {
    mkdirSync(join(out, "debs"));
    try {
      execFileSync("apt-get", ["download", ...VULKAN_DEBS], { cwd: join(out, "debs"), stdio: ["ignore", "ignore", "pipe"] });
    } catch (e: any) {
      throw new Error(`--with-vulkan: apt-get download ${VULKAN_DEBS.join(" ")} failed (${String(e?.stderr ?? e?.message ?? e).trim().split("\n").pop()}); this needs a Debian or Ubuntu machine with its package lists (apt-get update)`);
    }
  }
  for (const [name, rev] of Object.entries(o.ab ?? {})) {
    const files = abShaders(rev, join(out, "ab", name));
    log(`  ab/${name}: shaders/ at ${rev}: ${files.length ? files.join(", ") : "the same as the working tree's (nothing to compare)"}`);
  }
  const bytes = folderBytes(out);
  log(`bench kit: ${out} (${(bytes / 2 ** 20).toFixed(1)} MiB, Dawn for ${platform})`);
  log(`  run it with Node >= 20: node ${join(out, "bin", "bench.mjs")} kernels --vs tfjs   (or: bash ${join(out, "run-gpu.sh")})`);
  return { out, bytes };
}

const isMain = /bench-kit\.ts$/.test(process.argv[1] ?? "");
if (isMain) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  try {
    const ab = arg("--ab")?.split(",").filter(Boolean).map((x) => {
      const i = x.indexOf("=");
      if (i <= 0 || i === x.length - 1) throw new Error(`--ab ${x}: give NAME=REV (a variant name and a git revision), several separated by commas`);
      return [x.slice(0, i), x.slice(i + 1)];
    });
    await makeBenchKit({ out: arg("--out"), platform: arg("--platform"), withNode: process.argv.includes("--with-node"), withVulkan: process.argv.includes("--with-vulkan"), ab: ab && Object.fromEntries(ab), log: (l) => console.log(l) });
  } catch (e: any) {
    console.error(`bench:kit: ${e?.message ?? e}`);
    process.exitCode = 1;
  }
}
