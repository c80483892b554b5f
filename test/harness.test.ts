// test/lib/harness.ts's fixture bookkeeping: what makes a fixture case fail.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FixtureReport } from "./lib/harness.ts";

const t = suite("harness");

const finishes = (r: FixtureReport) => { try { r.finish(); return true; } catch { return false; } };

t("FixtureReport: a case passes with its tensors within tolerance, and fails on one outside it or on none compared", () => {
  const ok = new FixtureReport("cases/ok");
  ok.add("y", [1, 2, 3], [1, 2, 3.0001], 1e-3);
  assert.ok(finishes(ok), "within tolerance");

  const off = new FixtureReport("cases/off");
  off.add("y", [1, 2, 3], [1, 2, 3.1], 1e-3);
  assert.not.ok(finishes(off), "outside tolerance");

  // a test that found nothing it knows in the case has checked nothing
  const none = new FixtureReport("cases/none");
  assert.not.ok(finishes(none), "nothing compared");
  assert.match(none.failures.join("\n"), /no tensor of the case was compared/);

  const failed = new FixtureReport("cases/failed");
  failed.fail("x: recorded intermediate not produced by the model");
  assert.not.ok(finishes(failed), "a failure without a comparison");
});

t.run();
