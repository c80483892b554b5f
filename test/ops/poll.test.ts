// engine/poll.ts: Dawn's polling is paced on CPU drivers under Node. The rule
// (which callbacks, when at once, when on a timer), the choice per adapter
// kind and env, and the wrapper in place on this leg's device: Dawn's poll
// (stood in for by Function.prototype, a native function of no parameters and
// no name) is queued at once early in a wait and on a timer later, and every
// other callback passes through untouched. Under Deno nothing is wrapped.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { getEngine } from "../../engine/engine.ts";
import * as ops from "../../engine/ops/index.ts";
import { withEnv } from "../lib/harness.ts";
import { isDawnPoll, pollDelay, pollingFor, markWait, pollStats, pacePolling, SPIN_MS, POLL_MS, GAP_MS } from "../../engine/poll.ts";

const t = suite("poll");
const isDeno = typeof (globalThis as any).Deno !== "undefined";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Blocks for `ms` (a timer could come late enough to look like a gap between waits). */
const spinFor = (ms: number) => { const end = performance.now() + ms; while (performance.now() < end); };
/** What a queueing call returned: Node's Immediate (at once) or Timeout (timer). */
const kindOf = (handle: any) => {
  const k = handle?.constructor?.name;
  if (k === "Immediate") clearImmediate(handle);
  if (k === "Timeout") clearTimeout(handle);
  return k;
};
/** A Dawn-like poll, queued and cancelled: what the wrapper made of it. */
const poll1 = () => kindOf(setImmediate(Function.prototype as any));
/**
 * Runs a timed sequence of polls (`body`, which calls `tick()` around them)
 * until no two ticks were more than `most` ms apart, and returns what that
 * run gave. A longer stall (this process descheduled on a loaded machine)
 * breaks the sequence's premise, not the wrapper: the poll after it starts a
 * new wait by the rule under test. Up to 20 tries; all of them stalled fails.
 */
async function withoutStalls<T>(most: number, body: (tick: () => void) => T): Promise<T> {
  for (let i = 0; i < 20; i++) {
    let last = performance.now(), worst = 0;
    const tick = () => { const now = performance.now(); worst = Math.max(worst, now - last); last = now; };
    const r = body(tick);
    if (worst <= most) return r;
    await sleep(GAP_MS + 2); // the next try starts after a quiet gap
  }
  assert.unreachable(`20 tries of the poll sequence each stalled more than ${most} ms between two polls`);
  throw new Error("unreachable");
}

t("poll: only Dawn's kind of callback is recognised", () => {
  assert.ok(isDawnPoll(Function.prototype, []));
  assert.not.ok(isDawnPoll(Function.prototype, [1]), "queued with arguments");
  assert.not.ok(isDawnPoll(() => {}, []), "a JavaScript function");
  let resolve: any;
  new Promise((r) => (resolve = r));
  assert.not.ok(isDawnPoll(resolve, []), "a promise's resolve (one parameter)");
  assert.not.ok(isDawnPoll(function f() {}.bind(null), []), "a bound function");
  assert.not.ok(isDawnPoll(Math.random, []), "a named native function");
  assert.not.ok(isDawnPoll(undefined, []));
});

t("poll: at once for SPIN_MS of a wait, then every POLL_MS", () => {
  assert.is(pollDelay(100, 100), null);
  assert.is(pollDelay(100 + SPIN_MS - 0.01, 100), null);
  assert.is(pollDelay(100 + SPIN_MS, 100), POLL_MS);
  assert.is(pollDelay(5000, 100), POLL_MS);
  assert.ok(GAP_MS > POLL_MS, "a paced wait's polls must not look like new waits");
});

const poll = (value: string | undefined, f: () => void) => withEnv({ SSD_DEPTH_DAWN_POLL: value }, f);

t("poll: paced on CPU drivers, Dawn's loop on GPUs, the env decides when set", async () => {
  await poll(undefined, () => {
    assert.is(pollingFor("cpu"), "paced");
    assert.is(pollingFor("gpu"), "spin");
  });
  await poll("spin", () => assert.is(pollingFor("cpu"), "spin"));
  await poll("paced", () => assert.is(pollingFor("gpu"), "paced"));
  await poll("fast", () => {
    try {
      pollingFor("cpu");
      assert.unreachable("no error");
    } catch (e: any) {
      assert.is(e.code, "E_BAD_PARAM");
      assert.match(e.message, /SSD_DEPTH_DAWN_POLL=fast/);
    }
  });
});

t("poll: this leg's device reports its polling; under Node the wrapper paces Dawn's polls and passes the rest on", async () => {
  const e = await getEngine();
  const r = e.gpu.report;
  if (isDeno) {
    assert.is(r.polling, "wgpu");
    return;
  }
  assert.is(r.polling, pollingFor(r.kind));
  if (r.polling !== "paced") return; // a GPU: Dawn's own loop, nothing wrapped
  // a wait begins: at once; polls keep coming (well under GAP_MS apart) past SPIN_MS: on a timer
  const seq = await withoutStalls(SPIN_MS / 2, (tick) => {
    markWait();
    tick();
    const first = poll1();
    tick();
    for (let k = 0; k < 5; k++) { spinFor((SPIN_MS + 0.5) / 5); tick(); poll1(); tick(); }
    const paced = pollStats.paced;
    const late = poll1();
    tick();
    return { first, late, paced: pollStats.paced - paced };
  });
  assert.equal(seq, { first: "Immediate", late: "Timeout", paced: 1 });
  // JavaScript callbacks, and callbacks with arguments, are never delayed
  markWait();
  spinFor(SPIN_MS + 0.5);
  assert.is(kindOf(setImmediate(() => {})), "Immediate");
  assert.is(kindOf(setImmediate(Function.prototype as any, 1)), "Immediate");
  // a poll after a quiet gap starts a new wait: at once again
  await sleep(GAP_MS + 2);
  assert.is(poll1(), "Immediate");
  // a result still arrives, and ran through paced polls when the wait outlasted SPIN_MS
  // (the kernel compiled beforehand: a compile blocks the thread, not a wait).
  // A wait whose thread was descheduled for more than GAP_MS at a time, again
  // and again, restarts at every poll by the rule: so up to 5 waits, the
  // first that was paced (or too short to be) decides.
  const x = e.upload(new Float32Array(1024 * 640).fill(0.5), [1024, 640]);
  const w = e.upload(new Float32Array(640 * 640).fill(0.25), [640, 640]);
  ops.linear(x, w).dispose();
  await e.sync();
  let ms = 0, paced = 0;
  for (let i = 0; i < 5; i++) {
    const before = { ...pollStats };
    const y = ops.linear(x, w);
    const t0 = performance.now();
    const out = await y.read();
    ms = performance.now() - t0;
    y.dispose();
    paced = pollStats.paced - before.paced;
    assert.ok(out.every((v) => Math.abs(v - 80) < 1e-3), `linear: ${out[0]}`);
    assert.ok(pollStats.polls > before.polls, "no Dawn poll went through the wrapper");
    // timer polls come at most once per POLL_MS
    assert.ok(paced <= ms / POLL_MS + 1, `${paced} paced polls in ${ms.toFixed(1)} ms`);
    if (paced > 0 || ms <= SPIN_MS + 3 * POLL_MS) break;
  }
  if (ms > SPIN_MS + 3 * POLL_MS) assert.ok(paced > 0, `${ms.toFixed(1)} ms wait, no paced poll (5 tries)`);
  x.dispose(); w.dispose();
  // turned off: Dawn's own loop
  pacePolling(false);
  try {
    markWait();
    spinFor(SPIN_MS + 0.5);
    assert.is(poll1(), "Immediate");
  } finally {
    pacePolling(true);
  }
});

t.run();
