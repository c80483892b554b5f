// Scheduler names (CLI, Segmind API, diffusers class names) → class + config
// overrides, and the factory that builds a scheduler from a model's
// scheduler_config.json the way diffusers' `Class.from_config(config, **overrides)` does.

import { SsdError } from "../../engine/errors.ts";
import type { Scheduler, SchedulerConfig } from "./common.ts";
import { DDIMScheduler } from "./ddim.ts";
import { EulerAncestralDiscreteScheduler, EulerDiscreteScheduler } from "./euler.ts";
import { DPMSolverMultistepScheduler } from "./dpm_solver.ts";
import { UniPCMultistepScheduler } from "./unipc.ts";

export * from "./common.ts";
export { DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler };
export { solveF32 } from "./unipc.ts";

export type SchedulerClass =
  | "DDIMScheduler"
  | "EulerDiscreteScheduler"
  | "EulerAncestralDiscreteScheduler"
  | "DPMSolverMultistepScheduler"
  | "UniPCMultistepScheduler";

export interface SchedulerChoice {
  /** Our canonical short name. */
  name: string;
  className: SchedulerClass;
  /** Config overrides applied on top of the model's scheduler_config.json. */
  overrides: SchedulerConfig;
}

/**
 * Canonical names with their class and overrides, and the aliases each answers to.
 * Overrides follow diffusers usage (e2e fixture's scheduler_mapping): "dpmpp_2m" is
 * DPMSolverMultistepScheduler.from_config(model config) unchanged, "_karras" adds
 * use_karras_sigmas, "_sde" sets algorithm_type sde-dpmsolver++.
 */
export const SCHEDULERS: readonly (SchedulerChoice & { aliases: readonly string[] })[] = [
  { name: "ddim", className: "DDIMScheduler", overrides: {}, aliases: ["DDIM", "DDIMScheduler"] },
  { name: "euler", className: "EulerDiscreteScheduler", overrides: {}, aliases: ["Euler", "EulerDiscreteScheduler"] },
  { name: "euler_a", className: "EulerAncestralDiscreteScheduler", overrides: {}, aliases: ["Euler a", "EulerAncestralDiscreteScheduler"] },
  { name: "dpmpp_2m", className: "DPMSolverMultistepScheduler", overrides: {}, aliases: ["DPM Multi", "DPM++ 2M", "DPMSolverMultistepScheduler"] },
  { name: "dpmpp_2m_karras", className: "DPMSolverMultistepScheduler", overrides: { use_karras_sigmas: true }, aliases: ["DPM++ 2M Karras"] },
  { name: "dpmpp_2m_sde", className: "DPMSolverMultistepScheduler", overrides: { algorithm_type: "sde-dpmsolver++" }, aliases: ["DPM++ 2M SDE"] },
  { name: "dpmpp_2m_sde_karras", className: "DPMSolverMultistepScheduler", overrides: { algorithm_type: "sde-dpmsolver++", use_karras_sigmas: true }, aliases: ["DPM++ 2M SDE Karras"] },
  { name: "unipc", className: "UniPCMultistepScheduler", overrides: {}, aliases: ["UniPC", "UniPCMultistepScheduler"] },
];

const norm = (s: string) => s.trim().toLowerCase().replace(/[\s_-]+/g, " ");

/** Every name `resolveScheduler` accepts, for messages and --help. */
export function supportedSchedulerNames(): string[] {
  return SCHEDULERS.flatMap((s) => [s.name, ...s.aliases]);
}

/**
 * Maps a scheduler name (ours, Segmind's, or a diffusers class name) to its class
 * and config overrides. Anything else (Heun, LMS, PNDM, DPM2, …) is E_BAD_PARAM.
 */
export function resolveScheduler(name: string): SchedulerChoice {
  const key = norm(String(name));
  for (const s of SCHEDULERS) {
    if (norm(s.name) === key || s.aliases.some((a) => norm(a) === key)) {
      return { name: s.name, className: s.className, overrides: { ...s.overrides } };
    }
  }
  throw new SsdError(
    "E_BAD_PARAM",
    `unsupported scheduler '${name}'. Supported: ${SCHEDULERS.map((s) => `${s.name} (${s.aliases.join(", ")})`).join("; ")}`,
  );
}

/**
 * Builds a scheduler from a model's scheduler config (any class's: only the keys
 * the target class knows are read, the rest take that class's defaults) plus
 * the name's overrides and the caller's.
 *
 *   const s = createScheduler("dpmpp_2m_karras", await readJsonFile("scheduler/scheduler_config.json"));
 *   s.setTimesteps(30);
 *   for (const t of s.timesteps) { x = s.step(unet(s.scaleModelInput(x, t), t), t, x, { generator }); }
 */
export function createScheduler(nameOrClass: string, config: SchedulerConfig = {}, overrides: SchedulerConfig = {}): Scheduler {
  const choice = resolveScheduler(nameOrClass);
  const cfg: SchedulerConfig = { ...config, ...choice.overrides, ...overrides };
  switch (choice.className) {
    case "DDIMScheduler": return new DDIMScheduler(cfg);
    case "EulerDiscreteScheduler": return new EulerDiscreteScheduler(cfg);
    case "EulerAncestralDiscreteScheduler": return new EulerAncestralDiscreteScheduler(cfg);
    case "DPMSolverMultistepScheduler": return new DPMSolverMultistepScheduler(cfg);
    case "UniPCMultistepScheduler": return new UniPCMultistepScheduler(cfg);
  }
}
