// Shared plumbing for the diffusers-model fixture tests (unet-*, controlnet-*,
// vae-*): everything comes from the folder — config.json, the weight files,
// io.safetensors, case.json's runs and tolerances — so another case of the
// same kind is checked unchanged.

import { existsSync, readdirSync } from "node:fs";
import { basename, join } from "node:path";
import type { Test } from "uvu";
import { getEngine, type Engine } from "../../engine/engine.ts";
import type { Tensor } from "../../engine/tensor.ts";
import * as ops from "../../engine/ops/index.ts";
import { readAllFloat32 } from "../../weights/safetensors.ts";
import { readJsonFile } from "../../weights/json.ts";
import { WeightStore } from "../../weights/store.ts";
import { fixtureDirs, FixtureReport } from "./harness.ts";

/**
 * A test per fixture folder whose name matches `which` (or its `pattern`, and
 * not its `exclude`), named after the folder (plus `suffix`): `body` gets the
 * opened case and its report, whose line is printed after it.
 */
export function diffusersFixtures(t: Test, which: RegExp | { pattern: RegExp; exclude?: RegExp; suffix?: string }, body: (c: DiffusersCase, report: FixtureReport) => Promise<void>): void {
  const w = which instanceof RegExp ? { pattern: which } : which;
  for (const dir of fixtureDirs(w.pattern, w.exclude)) {
    t(basename(dir) + (w.suffix ?? ""), async () => {
      const c = await DiffusersCase.open(dir);
      const report = new FixtureReport(dir);
      await body(c, report);
      report.finish();
    });
  }
}

export interface IoTensor { shape: number[]; dtype: string; data: Float32Array }

export class DiffusersCase {
  constructor(
    readonly dir: string,
    readonly config: any,
    readonly meta: any,
    readonly io: Map<string, IoTensor>,
    readonly engine: Engine,
  ) {}

  static async open(dir: string): Promise<DiffusersCase> {
    return new DiffusersCase(dir, await readJsonFile(join(dir, "config.json")), await readJsonFile(join(dir, "case.json")), await readAllFloat32(join(dir, "io.safetensors")), await getEngine());
  }

  /** The weight files of the folder: the full-precision one and any variants (`.fp16.`). */
  weightFiles(): { label: string; path: string }[] {
    return readdirSync(this.dir)
      .filter((f) => /^diffusion_pytorch_model(\.[\w-]+)?\.safetensors$/.test(f))
      .sort()
      .map((f) => ({ label: /\.([\w-]+)\.safetensors$/.exec(f.replace(/^diffusion_pytorch_model/, ""))?.[1] ?? "fp32", path: join(this.dir, f) }));
  }

  /** Each weight file's model (loadModel) with its label, `[fp32] ` or `[fp16] `. */
  async *models<T>(report: FixtureReport, load: (store: WeightStore) => Promise<T>): AsyncGenerator<{ label: string; model: T }> {
    for (const file of this.weightFiles()) yield { label: `[${file.label}] `, model: await this.loadModel(file.path, report, load) };
  }

  /** Loads a model from one weight file; every key must be used (the module tree mirrors the checkpoint). */
  async loadModel<T>(path: string, report: FixtureReport, load: (store: WeightStore) => Promise<T>): Promise<T> {
    const store = await WeightStore.open(path, { label: path.split(/[\\/]/).slice(-2).join("/") });
    const model = await load(store);
    await store.finish({ warn: (m) => report.fail(m) });
    return model;
  }

  has(name: string): boolean {
    return this.io.has(name);
  }
  get(name: string): IoTensor {
    const t = this.io.get(name);
    if (!t) throw new Error(`${this.dir}: io.safetensors has no '${name}'`);
    return t;
  }
  upload(name: string): Tensor {
    const t = this.get(name);
    return this.engine.upload(t.data, t.shape);
  }

  /** Tolerance of a tensor: final_outputs first, then the per-tensor detail. */
  tolerance(name: string): { atol: number; rtol: number } | null {
    const tol = this.meta.tolerance ?? {};
    const e = tol.final_outputs?.[name] ?? tol.detail?.per_tensor?.[name] ?? tol.fp32_vs_fp64_per_tensor?.[name];
    if (!e) return null;
    return { atol: e.suggested_atol, rtol: e.suggested_rtol ?? 0 };
  }

  isFinalOutput(name: string): boolean {
    return name in (this.meta.tolerance?.final_outputs ?? {});
  }

  /** Names recorded for a run (without the `run.` prefix). */
  namesOf(run: string): string[] {
    return [...this.io.keys()].filter((k) => k.startsWith(run + ".")).map((k) => k.slice(run.length + 1));
  }

  /** Compares one computed tensor with the recorded one under its own tolerance. */
  check(report: FixtureReport, label: string, name: string, actual: Float32Array): void {
    const tol = this.tolerance(name);
    if (!tol) { report.fail(`${label}${name}: no tolerance recorded in case.json`); return; }
    report.add(`${label}${name}`, actual, this.get(name).data, tol.atol, tol.rtol);
  }
}

/** Collects named intermediates (copies, so the model may free its own). */
export class TraceCollector {
  readonly tensors = new Map<string, Tensor>();
  readonly trace = (name: string, t: Tensor) => {
    this.tensors.get(name)?.dispose();
    this.tensors.set(name, ops.copy(t));
  };
  async read(name: string): Promise<Float32Array | undefined> {
    const t = this.tensors.get(name);
    return t ? t.read() : undefined;
  }
  dispose(): void {
    for (const t of this.tensors.values()) t.dispose();
    this.tensors.clear();
  }
}

/**
 * Every recorded tensor of a run that is neither an input nor a final output
 * must have been traced under the same name, and is compared.
 */
export async function checkIntermediates(c: DiffusersCase, report: FixtureReport, label: string, run: string, inputs: Set<string>, traced: TraceCollector): Promise<void> {
  for (const name of c.namesOf(run)) {
    const full = `${run}.${name}`;
    if (inputs.has(name) || c.isFinalOutput(full)) continue;
    const got = await traced.read(name);
    if (!got) { report.fail(`${label}${full}: recorded intermediate not produced by the model`); continue; }
    c.check(report, label, full, got);
  }
}

export function exists(p: string): boolean {
  return existsSync(p);
}
