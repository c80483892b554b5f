// Kernels: a WGSL file from shaders/, plus a generated preamble that declares
// the bindings with the storage types the dtypes need and accessor functions
// the kernel body uses:
//
//   X_ld(i) -> f32        element i of input X, whatever its storage
//   Y_st(i, v: f32)       store element i of output Y
//   X_ld4(i) -> vec4<f32> elements 4i..4i+3 (Y_st4(i, v) stores them)
//   X_ldu4 / Y_stu4       the same for u32/i32 bindings stored as vec4s
//   X_ldu(i) -> u32       for u32/i32 tensors
//   P.<field>             the uniform parameter block (struct generated from `params`)
//   linear_wg(wid, nwg)   linear workgroup index for 1-D ranges folded into 2-D/3-D grids
//   (an `atomic` binding is declared array<atomic<u32>> and has no accessors)
//
// One kernel source serves f32, native f16 and packed f16: the pipeline cache
// key is kernel + entry + binding dtypes + storage widths + overrides, never a
// tensor shape.
//
// Storage width: a variant may store a float binding as vec4s (`vec4` in
// KernelVariant). The accessors stay the same, but _ld4/_st4 then move four
// elements with one access. On CPU drivers that matters: lavapipe and
// SwiftShader pay per access and per lane, and a copy kernel moving vec4s ran
// 1.4–1.5× faster on both than one moving f32s. The host must bind whole
// vec4s (engine.run checks the sizes) and index them from 4-aligned offsets.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { SsdError } from "./errors.ts";
import type { DType } from "./tensor.ts";

const SHADER_DIR = join(dirname(dirname(fileURLToPath(import.meta.url))), "shaders");

export type ParamType = "u32" | "i32" | "f32";
export type Access = "read" | "read_write";

export interface BindingSpec {
  name: string;
  access: Access;
  /** declared `array<atomic<u32>>` (read_write, dtype u32), without accessors: the kernel uses atomicLoad/atomicStore/atomicAdd on it */
  atomic?: boolean;
}

export interface KernelSpec {
  /** shaders/<file>.wgsl */
  file: string;
  entry: string;
  bindings: BindingSpec[];
  /** ordered uniform fields */
  params: [string, ParamType][];
  /** WGSL extensions the kernel needs (`enable …;`); the caller checks the device has them */
  enables?: "subgroups"[];
}

export interface KernelVariant {
  dtypes: DType[];
  /** per binding: stored as vec4 (f32, native f16, u32, i32) or vec2<u32> (packed f16) */
  vec4?: boolean[];
  /** WGSL `override` constants (tunables, flags) */
  overrides?: Record<string, number>;
}

export interface CompiledKernel {
  key: string;
  spec: KernelSpec;
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  layoutKey: string;
  paramBytes: number;
}

const sourceCache = new Map<string, string>();

export function shaderSource(file: string): string {
  let s = sourceCache.get(file);
  if (s === undefined) {
    try {
      s = readFileSync(join(SHADER_DIR, `${file}.wgsl`), "utf8");
    } catch (e: any) {
      throw new SsdError("E_INTERNAL", `missing shader shaders/${file}.wgsl: ${e?.message ?? e}`);
    }
    sourceCache.set(file, s);
  }
  return s;
}

/**
 * A shader file may hold several kernels with different bindings. Lines of the
 * form `//! kernel NAME [NAME…]` start a section that belongs to the named
 * entry points; text before the first marker is shared by all of them. The
 * compiled module gets the shared part and, in file order, every section that
 * names the entry point (or the whole file when it has no markers). A line
 * `//! include NAME` is replaced by shaders/NAME.wgsl (code that kernels of
 * several files share, such as the `wide` GEMM core; no nesting).
 */
export function kernelSection(file: string, entry: string): string {
  const src = shaderSource(file);
  const parts = src.split(/^\/\/! kernel ([\w ]+?)[ \t]*$/m);
  let out = parts[0];
  if (parts.length > 1) {
    let found = false;
    for (let i = 1; i < parts.length; i += 2) {
      if (parts[i].split(/ +/).includes(entry)) { out += parts[i + 1]; found = true; }
    }
    if (!found) throw new SsdError("E_INTERNAL", `shaders/${file}.wgsl has no '//! kernel ${entry}' section`);
  }
  return out.replace(/^\/\/! include (\w+)[ \t]*$/gm, (_, name: string) => shaderSource(name));
}

/** Storage representation of a dtype on this device. */
export function storageType(dtype: DType, nativeF16: boolean): string {
  switch (dtype) {
    case "f32": return "f32";
    case "f16": return nativeF16 ? "f16" : "u32";
    case "u32": return "u32";
    case "i32": return "i32";
  }
}

/** Bytes of one stored vec4 of `dtype` (what a vec4 binding's size must be a multiple of). */
export const vec4Bytes = (dtype: DType): number => (dtype === "f16" ? 8 : 16);

export function preamble(spec: KernelSpec, dtypes: DType[], nativeF16: boolean, vec4: boolean[] = []): string {
  const lines: string[] = [];
  const usesNativeF16 = nativeF16 && dtypes.includes("f16");
  if (usesNativeF16) lines.push("enable f16;");
  for (const ext of spec.enables ?? []) lines.push(`enable ${ext};`);
  spec.bindings.forEach((b, i) => {
    const dt = dtypes[i];
    const n = b.name;
    const rw = b.access === "read_write";
    const v4 = !!vec4[i];
    const decl = (st: string) => lines.push(`@group(0) @binding(${i}) var<storage, ${b.access}> ${n}: array<${st}>;`);
    if (b.atomic) {
      if (!rw || dt !== "u32" || v4) throw new SsdError("E_INTERNAL", `kernel ${spec.file}:${spec.entry}: atomic binding '${n}' must be read_write u32 scalars`);
      decl("atomic<u32>");
      return;
    }
    if (dt === "f16" && !nativeF16 && rw) {
      // Two halves share a u32: a packed store would race with the neighbour's.
      throw new SsdError("E_INTERNAL", `kernel ${spec.file}:${spec.entry} writes f16 '${n}' but this device has no shader-f16; f16 outputs need native f16`);
    }
    if (dt === "f32" || (dt === "f16" && nativeF16)) {
      const s = dt === "f32" ? "f32" : "f16";
      const cv = (x: string) => (dt === "f32" ? x : `f32(${x})`), cv4 = (x: string) => (dt === "f32" ? x : `vec4<f32>(${x})`);
      const to = (x: string) => (dt === "f32" ? x : `f16(${x})`), to4 = (x: string) => (dt === "f32" ? x : `vec4<f16>(${x})`);
      if (v4) {
        decl(`vec4<${s}>`);
        lines.push(`fn ${n}_ld(i: u32) -> f32 { return ${cv(`${n}[i >> 2u][i & 3u]`)}; }`);
        lines.push(`fn ${n}_ld4(i: u32) -> vec4<f32> { return ${cv4(`${n}[i]`)}; }`);
        if (rw) {
          lines.push(`fn ${n}_st(i: u32, v: f32) { ${n}[i >> 2u][i & 3u] = ${to("v")}; }`);
          lines.push(`fn ${n}_st4(i: u32, v: vec4<f32>) { ${n}[i] = ${to4("v")}; }`);
        }
      } else {
        decl(s);
        lines.push(`fn ${n}_ld(i: u32) -> f32 { return ${cv(`${n}[i]`)}; }`);
        lines.push(`fn ${n}_ld4(i: u32) -> vec4<f32> { let j = 4u * i; return vec4<f32>(${n}_ld(j), ${n}_ld(j + 1u), ${n}_ld(j + 2u), ${n}_ld(j + 3u)); }`);
        if (rw) {
          lines.push(`fn ${n}_st(i: u32, v: f32) { ${n}[i] = ${to("v")}; }`);
          lines.push(`fn ${n}_st4(i: u32, v: vec4<f32>) { let j = 4u * i; ${n}_st(j, v.x); ${n}_st(j + 1u, v.y); ${n}_st(j + 2u, v.z); ${n}_st(j + 3u, v.w); }`);
        }
      }
    } else if (dt === "f16") {
      // packed: two halves per u32, four per vec2<u32>
      if (v4) {
        decl("vec2<u32>");
        lines.push(`fn ${n}_ld(i: u32) -> f32 { return unpack2x16float(${n}[i >> 2u][(i >> 1u) & 1u])[i & 1u]; }`);
        lines.push(`fn ${n}_ld4(i: u32) -> vec4<f32> { let p = ${n}[i]; return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y)); }`);
      } else {
        decl("u32");
        lines.push(`fn ${n}_ld(i: u32) -> f32 { return unpack2x16float(${n}[i >> 1u])[i & 1u]; }`);
        lines.push(`fn ${n}_ld4(i: u32) -> vec4<f32> { return vec4<f32>(unpack2x16float(${n}[2u * i]), unpack2x16float(${n}[2u * i + 1u])); }`);
      }
    } else if (v4) {
      decl(`vec4<${dt}>`);
      lines.push(`fn ${n}_ldu(i: u32) -> u32 { return u32(${n}[i >> 2u][i & 3u]); }`);
      lines.push(`fn ${n}_ldu4(i: u32) -> vec4<u32> { return vec4<u32>(${n}[i]); }`);
      if (rw) lines.push(`fn ${n}_stu4(i: u32, v: vec4<u32>) { ${n}[i] = vec4<${dt}>(v); }`);
    } else {
      decl(storageType(dt, nativeF16));
      lines.push(`fn ${n}_ldu(i: u32) -> u32 { return u32(${n}[i]); }`);
      if (rw) lines.push(`fn ${n}_stu(i: u32, v: u32) { ${n}[i] = ${dt}(v); }`);
    }
  });
  if (spec.params.length) {
    lines.push(`struct Params { ${spec.params.map(([n, t]) => `${n}: ${t},`).join(" ")} }`);
    lines.push(`@group(0) @binding(${spec.bindings.length}) var<uniform> P: Params;`);
  }
  lines.push("fn linear_wg(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.x + nwg.x * (wid.y + nwg.y * wid.z); }");
  return lines.join("\n") + "\n";
}

export function paramBytes(spec: KernelSpec): number {
  return Math.max(16, Math.ceil((spec.params.length * 4) / 16) * 16);
}

export class KernelCache {
  private kernels = new Map<string, CompiledKernel>();
  private layouts = new Map<string, GPUBindGroupLayout>();
  compileMs = 0;

  constructor(private device: GPUDevice, private nativeF16: boolean, private onError: () => void) {}

  get size(): number {
    return this.kernels.size;
  }

  get(spec: KernelSpec, variant: KernelVariant): CompiledKernel {
    const ov = variant.overrides ?? {};
    const v4 = variant.vec4?.some(Boolean) ? `|v4=${variant.vec4.map(Number).join("")}` : "";
    const key = `${spec.file}:${spec.entry}|${variant.dtypes.join(",")}${v4}|${Object.entries(ov).sort().map(([k, v]) => `${k}=${v}`).join(",")}`;
    let k = this.kernels.get(key);
    if (k) return k;
    const t0 = performance.now();
    const layoutKey = spec.bindings.map((b) => (b.access === "read" ? "r" : "w")).join("") + (spec.params.length ? "u" : "");
    let layout = this.layouts.get(layoutKey);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = spec.bindings.map((b, i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.access === "read" ? "read-only-storage" : "storage" },
      }));
      if (spec.params.length) {
        entries.push({ binding: spec.bindings.length, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform", hasDynamicOffset: true } });
      }
      layout = this.device.createBindGroupLayout({ entries });
      this.layouts.set(layoutKey, layout);
    }
    const code = preamble(spec, variant.dtypes, this.nativeF16, variant.vec4) + shaderSource("common") + "\n" + kernelSection(spec.file, spec.entry);
    const module = this.device.createShaderModule({ code, label: key });
    const constants: Record<string, number> = {};
    for (const [n, v] of Object.entries(ov)) constants[n] = v;
    let pipeline: GPUComputePipeline;
    try {
      pipeline = this.device.createComputePipeline({
        label: key,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: spec.entry, constants },
      });
    } catch (e: any) {
      throw new SsdError("E_GPU_VALIDATION", `cannot build kernel ${key}: ${e?.message ?? e}`);
    }
    this.onError();
    k = { key, spec, pipeline, layout, layoutKey, paramBytes: paramBytes(spec) };
    this.kernels.set(key, k);
    this.compileMs += performance.now() - t0;
    return k;
  }
}
