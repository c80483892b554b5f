// How Dawn waits for the device under Node, and why we pace it on CPU drivers.
//
// Dawn's Node bindings resolve their promises (onSubmittedWorkDone, mapAsync,
// createComputePipelineAsync, ...) by polling the device: while one is
// pending, each poll queues the next through the global `setImmediate`, so
// the event loop spins and keeps a core busy for as long as the device works.
// On a GPU that core has nothing else to do. On a CPU driver the device *is*
// the driver's worker threads on the same cores, and the spinning thread takes
// one of them. bench kernels on 2 cores, paced against Dawn's loop: about 1.5×
// on lavapipe (linear 1024x1280→1280: 137–175 → 75–104 ms over three runs),
// 1.2–1.7× on SwiftShader (README, "How Dawn waits").
//
// `pacePolling(true)` puts a wrapper in front of globalThis.setImmediate. It
// passes every callback on unchanged except Dawn's poll (a native function of
// no parameters and no name, queued without arguments: JavaScript callbacks
// are not native, and a promise's resolve function takes one parameter). That
// one is queued at once during the first SPIN_MS of a wait, so a short
// dispatch's result is not delayed, and then with a POLL_MS timer, so the
// waiting thread sleeps between polls. A wait begins at `markWait()`
// (Engine.sync and Engine.readRaw call it before they await Dawn), or, for a
// wait the engine did not start (a peer library's in bench/), at a poll that
// comes more than GAP_MS after the previous one.
//
// SSD_DEPTH_DAWN_POLL=spin keeps Dawn's own loop; =paced paces on GPUs too.
// Deno's wgpu does not poll from the event loop: nothing to pace there.

import { SsdError } from "./errors.ts";

/** Polls queued at once at the start of each wait (ms). */
export const SPIN_MS = 2;
/** Timer delay of the polls after that (ms; Node's timers do not go below 1). */
export const POLL_MS = 1;
/** A poll this long after the previous one starts a new wait (ms). */
export const GAP_MS = 5;

export type Polling = "paced" | "spin";

/** The polling for an adapter of `kind` under Node: $SSD_DEPTH_DAWN_POLL, else paced on CPU drivers. */
export function pollingFor(kind: "gpu" | "cpu"): Polling {
  const env = process.env.SSD_DEPTH_DAWN_POLL?.trim();
  if (env === "spin" || env === "paced") return env;
  if (env) throw new SsdError("E_BAD_PARAM", `SSD_DEPTH_DAWN_POLL=${env}: use 'spin' (Dawn's own polling loop) or 'paced' (spin ${SPIN_MS} ms per wait, then a ${POLL_MS} ms timer)`);
  return kind === "cpu" ? "paced" : "spin";
}

/** Counters since the wrapper went in: Dawn polls seen, and those queued on a timer. */
export const pollStats = { polls: 0, paced: 0 };

let active = false;
let installed = false;
let waitStart = -Infinity;
let lastPoll = -Infinity;

/** Whether `fn` (queued with `args`) is Dawn's poll, as its bindings queue it. */
export function isDawnPoll(fn: unknown, args: unknown[]): boolean {
  return typeof fn === "function" && args.length === 0 && fn.length === 0 && fn.name === "" && Function.prototype.toString.call(fn).includes("[native code]");
}

/** How to queue a poll made at `now`: at once (null) or after a delay in ms. */
export function pollDelay(now: number, start: number): number | null {
  return now - start < SPIN_MS ? null : POLL_MS;
}

/** Turns pacing on or off (installs the wrapper the first time it is turned on). Node only. */
export function pacePolling(on: boolean): void {
  active = on;
  if (!on || installed) return;
  installed = true;
  const immediate = globalThis.setImmediate;
  const paced = ((fn: (...a: any[]) => void, ...args: any[]) => {
    if (!active || !isDawnPoll(fn, args)) return immediate(fn, ...args);
    const now = performance.now();
    if (now - lastPoll > GAP_MS) waitStart = now;
    lastPoll = now;
    pollStats.polls++;
    const delay = pollDelay(now, waitStart);
    if (delay === null) return immediate(fn);
    pollStats.paced++;
    return setTimeout(fn, delay);
  }) as typeof setImmediate;
  // keep setImmediate.__promisify__ and the like
  Object.assign(paced, immediate);
  globalThis.setImmediate = paced;
}

/** The engine is about to await Dawn: a new wait, spun at first. */
export function markWait(): void {
  waitStart = performance.now();
}
