// Shared helpers for tests: numeric comparison with a readable report, fixture
// discovery by kind, and the one-line-per-fixture output the brief asks for.

import { readdirSync, existsSync, statSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import * as assert from "uvu/assert";
import type { Engine } from "../../engine/engine.ts";
import { forceLimits, type Limits } from "../../engine/device.ts";
import { SsdError } from "../../engine/errors.ts";
import type { PixelImage } from "../../pipeline/resample.ts";

export const TEST_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
export const ROOT = dirname(TEST_DIR);
export const FIXTURES = join(TEST_DIR, "fixtures");

export interface CloseReport {
  ok: boolean;
  maxAbs: number;
  maxRel: number;
  /** index of the element that violates the bound most (or has the largest abs error) */
  worst: number;
  n: number;
}

/**
 * allclose as numpy/torch define it: |a - e| <= atol + rtol * |e| for every element.
 * NaN matches NaN only where the reference is NaN. Also reports max abs and max rel error.
 */
export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol = 0): CloseReport {
  if (actual.length !== expected.length) {
    return { ok: false, maxAbs: Infinity, maxRel: Infinity, worst: -1, n: Math.max(actual.length, expected.length) };
  }
  let ok = true, maxAbs = 0, maxRel = 0, worst = 0, worstExcess = -Infinity;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(e) || Number.isNaN(a)) {
      if (!(Number.isNaN(e) && Number.isNaN(a))) { ok = false; worst = i; worstExcess = Infinity; maxAbs = Infinity; }
      continue;
    }
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (a !== e) { ok = false; worst = i; worstExcess = Infinity; maxAbs = Infinity; }
      continue;
    }
    const d = Math.abs(a - e);
    const bound = atol + rtol * Math.abs(e);
    if (d > maxAbs) maxAbs = d;
    const r = d / Math.max(Math.abs(e), 1e-12);
    if (d > 0 && r > maxRel) maxRel = r;
    if (d - bound > worstExcess) { worstExcess = d - bound; worst = i; }
    if (d > bound) ok = false;
  }
  return { ok, maxAbs, maxRel, worst, n: expected.length };
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return x === 0 ? "0" : x.toExponential(2);
}

/** Throws an Error naming the tensor, the worst element and both errors unless the report is ok. */
export function assertClose(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol = 0): CloseReport {
  const r = compare(actual, expected, atol, rtol);
  if (!r.ok) {
    if (actual.length !== expected.length) throw new Error(`${name}: length ${actual.length} != expected ${expected.length}`);
    throw new Error(
      `${name}: not close (atol=${atol}, rtol=${rtol}): max_abs=${fmt(r.maxAbs)} max_rel=${fmt(r.maxRel)}; ` +
        `worst [${r.worst}] got ${actual[r.worst]} expected ${expected[r.worst]} (n=${r.n})`,
    );
  }
  return r;
}

/**
 * The largest errors seen per op over a test file's checks, printed once at
 * the end (`after`): the numbers the engine note quotes.
 */
export class ErrorTally {
  readonly worst = new Map<string, { abs: number; rel: number }>();
  /** assertClose, labelled `op: name`, with its errors counted under op. */
  check(op: string, name: string, got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number): CloseReport {
    const r = assertClose(`${op}: ${name}`, got, want, atol, rtol);
    const w = this.worst.get(op) ?? { abs: 0, rel: 0 };
    this.worst.set(op, { abs: Math.max(w.abs, r.maxAbs), rel: Math.max(w.rel, r.maxRel) });
    return r;
  }
  print(): void {
    for (const [op, w] of this.worst) console.log(`  ${op}: max_abs=${fmt(w.abs)} max_rel=${fmt(w.rel)}`);
  }
}

/**
 * Awaits `p` and checks that it fails with an SsdError of `code` whose
 * message contains each of `parts`; returns the message.
 */
export async function expectCode(p: Promise<unknown>, code: string, ...parts: string[]): Promise<string> {
  try {
    await p;
  } catch (e: any) {
    assert.ok(e instanceof SsdError, `expected SsdError, got ${e?.stack ?? e}`);
    assert.is(e.code, code, e.message);
    for (const s of parts) assert.ok(e.message.includes(s), `'${e.message}' lacks '${s}'`);
    return e.message;
  }
  assert.unreachable(`expected ${code}`);
  return "";
}

/** A w×h image of c channels of pseudo-random bytes (a linear congruential generator from `seed`). */
export function synthImage(w: number, h: number, c: number, seed: number): PixelImage {
  const data = new Uint8Array(w * h * c);
  let s = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s >>> 24;
  }
  return { width: w, height: h, channels: c, data };
}

/**
 * Folders of test/fixtures whose names match `pattern` (a RegExp on the
 * folder name) and not `exclude`. None is an error (the test file then fails
 * to load, which counts as a failed test): a kind's tests must not pass by
 * finding no case, as they would with test/fixtures missing or renamed.
 */
export function fixtureDirs(pattern: RegExp, exclude?: RegExp): string[] {
  const dirs = existsSync(FIXTURES)
    ? readdirSync(FIXTURES).filter((d) => pattern.test(d) && !(exclude && exclude.test(d)) && statSync(join(FIXTURES, d)).isDirectory()).sort()
    : [];
  if (dirs.length === 0) throw new Error(`no fixture folder in ${FIXTURES} matches ${pattern}${exclude ? ` without ${exclude}` : ""}: the folders are part of the repository (copied from ../shared/fixtures)`);
  return dirs.map((d) => join(FIXTURES, d));
}

/** Aggregates per-tensor results of one fixture case and prints the required line. */
export class FixtureReport {
  maxAbs = 0;
  maxRel = 0;
  failures: string[] = [];
  /** tensors compared so far: a case that compared none has checked nothing, and fails */
  compared = 0;
  constructor(readonly folder: string) {}
  add(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol = 0): CloseReport {
    this.compared++;
    const r = compare(actual, expected, atol, rtol);
    if (Number.isFinite(r.maxAbs)) this.maxAbs = Math.max(this.maxAbs, r.maxAbs);
    if (Number.isFinite(r.maxRel)) this.maxRel = Math.max(this.maxRel, r.maxRel);
    if (!r.ok) {
      const detail = actual.length !== expected.length
        ? `length ${actual.length} != ${expected.length}`
        : `max_abs=${fmt(r.maxAbs)} max_rel=${fmt(r.maxRel)} atol=${atol} rtol=${rtol} worst[${r.worst}] got ${actual[r.worst]} want ${expected[r.worst]}`;
      this.failures.push(`${name}: ${detail}`);
    }
    return r;
  }
  fail(msg: string) { this.failures.push(msg); }
  /** Prints `fixture <folder>: ok max_abs=… max_rel=…` or FAIL with the worst tensor, and throws on failure (or when nothing was compared). */
  finish(): void {
    const name = this.folder.split(/[\\/]/).pop();
    if (this.compared === 0 && this.failures.length === 0) this.failures.push("no tensor of the case was compared with its expected values (the test found nothing it knows in io.safetensors)");
    if (this.failures.length === 0) {
      console.log(`fixture ${name}: ok max_abs=${fmt(this.maxAbs)} max_rel=${fmt(this.maxRel)}`);
    } else {
      console.log(`fixture ${name}: FAIL ${this.failures[0]}${this.failures.length > 1 ? ` (+${this.failures.length - 1} more)` : ""}`);
      throw new Error(`fixture ${name} failed:\n  ${this.failures.slice(0, 20).join("\n  ")}`);
    }
  }
}

/**
 * The GPU kernels (matmul/conv2d `wide` tiles, attention `mm`, flash tiles)
 * compile slowly on CPU drivers; their full coverage runs on the node:lavapipe
 * leg (and on a real GPU), the other legs run one case of each, which still
 * compiles them under wgpu/naga and through SwiftShader's packed-f16 path.
 */
export const FULL_GPU_KERNEL_TESTS = typeof (globalThis as any).Deno === "undefined" && (process.env.SSD_DEPTH_ADAPTER ?? "lavapipe") !== "swiftshader";

/**
 * Runs `fn` with environment variables set (undefined: unset), then puts each
 * back as it was, even when `fn` throws.
 */
export async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T | Promise<T>): Promise<T> {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/**
 * Runs `fn` with some of the device's limits lowered (forceLimits), the
 * device's own put back afterwards, also when `fn` throws.
 */
export async function withLimits<T>(e: Engine, lower: Partial<Limits>, fn: () => T | Promise<T>): Promise<T> {
  const saved = { ...e.gpu.limits };
  forceLimits(e.gpu, lower);
  try {
    return await fn();
  } finally {
    Object.assign(e.gpu.limits, saved);
  }
}

/**
 * Runs `fn` and returns its result with the labels of the kernels it
 * dispatched on `e` (the engine's onDispatch hook, cleared after).
 */
export async function withDispatchLabels<T>(e: Engine, fn: () => T | Promise<T>): Promise<{ result: T; labels: string[] }> {
  const labels: string[] = [];
  e.onDispatch = (label, _pass, phase) => { if (phase === "begin") labels.push(label); };
  try {
    return { result: await fn(), labels };
  } finally {
    e.onDispatch = null;
  }
}

/**
 * Runs `fn` with `extra` pipeline-overridable constants added to every
 * kernel of the entries named (a test hook into the kernel cache, restored
 * after): the kernels compile as variants of their own.
 */
export async function withOverrides<T>(e: Engine, entries: string[], extra: Record<string, number>, fn: () => T | Promise<T>): Promise<T> {
  const get = e.kernels.get;
  e.kernels.get = (spec, variant) => get.call(e.kernels, spec, entries.includes(spec.entry) ? { ...variant, overrides: { ...variant.overrides, ...extra } } : variant);
  try {
    return await fn();
  } finally {
    e.kernels.get = get;
  }
}
