// Where a model's files are: `--model` accepts a local diffusers pipeline folder
// (model_index.json + component folders), a single component folder
// (config.json + weights), or a hub id `org/name[@revision]`. A hub id is looked
// up in the Hugging Face cache first, so what a Python user downloaded is reused;
// only when the cached snapshot lacks what we need are the missing files
// downloaded (weights/hub.ts), unless offline.

import { existsSync, readdirSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, resolve as resolvePath } from "node:path";
import { SsdError } from "../engine/errors.ts";
import type { PrecisionPolicy } from "../engine/precision.ts";
import { parsePythonJson, type JsonValue } from "./json.ts";
import { classifyWeightFile, pickVariant } from "./safetensors.ts";
import { cachedSnapshot, checkRepoId, hubSettings, snapshotDownload, type HubOptions, type SelectOptions } from "./hub.ts";

export { hfHubCacheDir, cachedSnapshot, repoFolderName } from "./hub.ts";

/** Reads a config written by Python's json.dumps (NaN, Infinity, -Infinity allowed). */
export async function readConfig(path: string): Promise<Record<string, JsonValue>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e: any) {
    throw new SsdError(e?.code === "ENOENT" ? "E_MODEL_NOT_FOUND" : "E_IO", `cannot read ${path}: ${e?.code ?? e?.message ?? e}`);
  }
  const v = parsePythonJson(text, { source: path });
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new SsdError("E_BAD_CONFIG", `${path}: expected a JSON object`);
  return v as Record<string, JsonValue>;
}

// ---------------------------------------------------------------- weight files of a component

/** Default variant: fp16 files halve the bytes read, unless the policy wants f32 weights anyway. */
export function defaultVariant(policy?: PrecisionPolicy): string | null {
  return policy?.weights === "f32" ? null : "fp16";
}

export interface WeightFiles {
  /** the safetensors files to open */
  files: string[];
  /** the shard index, when sharded */
  index: string | null;
  /** name → file, from the index */
  weightMap: Map<string, string> | null;
  variant: string | null;
}

/**
 * The weight files of a component folder, the preferred variant first, then the
 * plain files, then any other variant; a shard index wins over shards alone.
 */
export async function componentWeightFiles(dir: string, variant: string | null = "fp16"): Promise<WeightFiles> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e: any) {
    throw new SsdError("E_MODEL_NOT_FOUND", `cannot list ${dir}: ${e?.code ?? e?.message ?? e}`);
  }
  const found = names.map((n) => ({ n, c: classifyWeightFile(n) })).filter((x) => x.c && existsSync(join(dir, x.n)));
  const chosen = pickVariant(found.map((x) => x.c!.variant), variant);
  if (chosen === undefined) {
    const other = names.filter((n) => /\.(bin|ckpt|pt|pth|msgpack|h5|onnx|safetensors)$/.test(n));
    throw new SsdError(
      "E_MODEL_NOT_FOUND",
      `no safetensors weights (diffusion_pytorch_model*.safetensors or model*.safetensors) in ${dir}` +
        (other.length ? `; found ${other.join(", ")}: convert to safetensors` : ""),
    );
  }
  const mine = found.filter((x) => x.c!.variant === chosen);
  const single = mine.find((x) => x.c!.kind === "single");
  const index = mine.find((x) => x.c!.kind === "index");
  if (single) return { files: [join(dir, single.n)], index: null, weightMap: null, variant: chosen };
  if (!index) {
    const shards = mine.filter((x) => x.c!.kind === "shard").map((x) => x.n);
    throw new SsdError("E_MODEL_NOT_FOUND", `${dir}: shards ${shards.join(", ")} without their .safetensors.index.json`);
  }
  const indexPath = join(dir, index.n);
  const { files, weightMap } = await readShardIndex(indexPath);
  return { files, index: indexPath, weightMap, variant: chosen };
}

/** A `*.safetensors.index.json`: name → shard path (next to the index), and the shard list. */
export async function readShardIndex(indexPath: string): Promise<{ files: string[]; weightMap: Map<string, string> }> {
  const dir = dirname(indexPath);
  const idx = await readConfig(indexPath);
  const wm = idx.weight_map;
  if (typeof wm !== "object" || wm === null || Array.isArray(wm)) throw new SsdError("E_SAFETENSORS_HEADER", `${indexPath}: no "weight_map" object`);
  const weightMap = new Map<string, string>();
  const files = new Set<string>();
  for (const [name, f] of Object.entries(wm)) {
    // Shards live next to the index: a path that climbs out is not a shard.
    if (typeof f !== "string" || !f || isAbsolute(f) || f.split(/[\\/]/).includes("..")) {
      throw new SsdError("E_SAFETENSORS_HEADER", `${indexPath}: weight_map entry '${name}' names ${JSON.stringify(f)}, not a shard file next to the index`);
    }
    const p = join(dir, f);
    weightMap.set(name, p);
    files.add(p);
  }
  for (const p of files) {
    if (!existsSync(p)) throw new SsdError("E_MODEL_NOT_FOUND", `${indexPath} lists shard ${basename(p)}, which is missing (download incomplete?)`);
  }
  return { files: [...files].sort(), weightMap };
}

// ---------------------------------------------------------------- model resolution

export interface ResolveOptions extends HubOptions, SelectOptions {
  /** fetch missing files of a hub id (default true; offline mode forbids it anyway) */
  download?: boolean;
}

export interface ResolvedModel {
  /** where the files came from */
  source: "local" | "cache" | "download";
  kind: "pipeline" | "component";
  /** the folder: the given one, or the snapshot folder of a hub id */
  root: string;
  /** component name → folder; a single component folder appears under its own base name */
  components: Record<string, string>;
  modelIndex: Record<string, JsonValue> | null;
  repoId?: string;
  revision?: string;
  commit?: string;
}

/** `org/name[@revision]` → parts, or null when `spec` is not shaped like a hub id. */
export function parseHubId(spec: string): { repoId: string; revision: string } | null {
  const m = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)(?:@(.+))?$/.exec(spec);
  if (!m || m[1].includes("..")) return null;
  return { repoId: m[1], revision: m[2] ?? "main" };
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Folders of a pipeline's components as model_index.json lists them ([library, class], not [null, null]). */
function pipelineComponents(root: string, modelIndex: Record<string, JsonValue>, only?: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(modelIndex)) {
    if (k.startsWith("_") || !Array.isArray(v) || v[0] === null || v[1] === null) continue;
    if (only && !only.includes(k)) continue;
    out[k] = join(root, k);
  }
  return out;
}

/** What a folder lacks to be usable: [] when complete. */
async function missingIn(root: string, only: string[] | undefined, variant: string | null): Promise<string[]> {
  const missing: string[] = [];
  const checkModel = async (dir: string, name: string) => {
    if (!isDir(dir)) return void missing.push(`${name}/`);
    const files = readdirSync(dir);
    if (!files.some((f) => f.endsWith(".json") && existsSync(join(dir, f)))) return void missing.push(`${name}/ config`);
    // Models carry config.json; schedulers, tokenizers and processors have no weights.
    if (existsSync(join(dir, "config.json"))) {
      try {
        await componentWeightFiles(dir, variant);
      } catch {
        missing.push(`${name}/ weights`);
      }
    }
  };
  const mi = join(root, "model_index.json");
  if (existsSync(mi)) {
    const comps = pipelineComponents(root, await readConfig(mi), only);
    for (const name of only ?? []) if (!(name in comps)) missing.push(`${name}/ (not in model_index.json)`);
    for (const [name, dir] of Object.entries(comps)) await checkModel(dir, name);
  } else if (existsSync(join(root, "config.json"))) {
    await checkModel(root, basename(root));
  } else {
    missing.push("model_index.json or config.json");
  }
  return missing;
}

async function describeFolder(root: string, only: string[] | undefined): Promise<Pick<ResolvedModel, "kind" | "components" | "modelIndex">> {
  const mi = join(root, "model_index.json");
  if (existsSync(mi)) {
    const modelIndex = await readConfig(mi);
    return { kind: "pipeline", modelIndex, components: pipelineComponents(root, modelIndex, only) };
  }
  return { kind: "component", modelIndex: null, components: { [basename(root)]: root } };
}

/**
 * Resolves `--model`-style input to folders. A local path wins over a hub id of
 * the same spelling. For hub ids the cache is consulted without any request;
 * the network is used only for what the cached snapshot lacks.
 */
export async function resolveModel(spec: string, opts: ResolveOptions = {}): Promise<ResolvedModel> {
  const variant = opts.variant === undefined ? "fp16" : opts.variant;
  const local = resolvePath(spec);
  if (isDir(local)) {
    const missing = await missingIn(local, opts.components, variant);
    if (missing.length) {
      throw new SsdError("E_MODEL_NOT_FOUND", `${local} is not a usable model folder: missing ${missing.join(", ")} (expected a diffusers pipeline folder with model_index.json, or a component folder with config.json and safetensors weights)`);
    }
    return { source: "local", root: local, ...(await describeFolder(local, opts.components)) };
  }
  const hub = parseHubId(spec);
  if (!hub || spec.startsWith(".") || spec.startsWith("/")) {
    throw new SsdError("E_MODEL_NOT_FOUND", `'${spec}' is neither a folder nor a hub id (org/name[@revision])`);
  }
  checkRepoId(hub.repoId);
  const s = hubSettings(opts);
  const snap = cachedSnapshot(s.cacheDir, hub.repoId, hub.revision);
  let why = "not in the cache";
  if (snap) {
    const missing = await missingIn(snap.dir, opts.components, variant);
    if (!missing.length) {
      return { source: "cache", root: snap.dir, repoId: hub.repoId, revision: hub.revision, commit: snap.commit, ...(await describeFolder(snap.dir, opts.components)) };
    }
    why = `cached snapshot ${snap.commit.slice(0, 12)} lacks ${missing.join(", ")}`;
  }
  if (s.offline) {
    throw new SsdError(
      "E_OFFLINE",
      `${spec}: ${why} (${s.cacheDir}) and offline mode is on (HF_HUB_OFFLINE=1 or --offline); ` +
        `run 'ssd-depth pull ${spec}' where the network is reachable, or turn offline mode off`,
    );
  }
  if (opts.download === false) throw new SsdError("E_MODEL_NOT_FOUND", `${spec}: ${why} (${s.cacheDir}); run 'ssd-depth pull ${spec}'`);
  let got;
  try {
    got = await snapshotDownload(hub.repoId, { ...opts, revision: hub.revision, variant });
  } catch (e) {
    // A mistyped relative folder also looks like org/name: say both readings failed.
    if (e instanceof SsdError && e.code === "E_MODEL_NOT_FOUND" && !spec.includes("@")) {
      throw new SsdError(e.code, `${e.message} (and there is no local folder ${local})`, { cause: e });
    }
    throw e;
  }
  const missing = await missingIn(got.dir, opts.components, variant);
  if (missing.length) throw new SsdError("E_MODEL_NOT_FOUND", `${spec}@${got.commit.slice(0, 12)} has no ${missing.join(", ")} (is it a diffusers/transformers repository with safetensors weights?)`);
  return { source: "download", root: got.dir, repoId: hub.repoId, revision: hub.revision, commit: got.commit, ...(await describeFolder(got.dir, opts.components)) };
}

/**
 * One component folder: `spec` resolved as a model; for a pipeline, its
 * `component` subfolder (e.g. resolveComponent("segmind/SSD-1B", "unet")).
 */
export async function resolveComponent(spec: string, component: string | null, opts: ResolveOptions = {}): Promise<string> {
  const m = await resolveModel(spec, component ? { ...opts, components: opts.components ?? [component] } : opts);
  if (m.kind === "component") return m.root;
  if (!component) throw new SsdError("E_BAD_PARAM", `${spec} is a whole pipeline; name one of its components (${Object.keys(m.components).join(", ")})`);
  const dir = m.components[component];
  if (!dir) throw new SsdError("E_MODEL_NOT_FOUND", `${spec} has no component '${component}' (model_index.json lists ${Object.keys(m.modelIndex ?? {}).filter((k) => !k.startsWith("_")).join(", ")})`);
  return dir;
}
