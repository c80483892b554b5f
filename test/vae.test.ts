// AutoencoderKL against the vae-* fixtures (encode: moments, mean, logvar, std,
// sample with torch's noise; decode; the recorded intermediates) and the
// vae-tiled* fixtures (diffusers' enable_tiling() encode and decode).

import { suite } from "uvu";
import { DiffusersCase, TraceCollector, diffusersFixtures } from "./lib/diffusers.ts";
import { AutoencoderKL } from "../pipeline/models/vae.ts";
import { TorchGenerator } from "../pipeline/rng.ts";

const t = suite("vae");

/** The generator seed of the recorded `dist.sample(generator=...manual_seed(N))` call. */
function sampleSeed(c: DiffusersCase): string | null {
  const m = /manual_seed\((\d+)\)/.exec(String(c.meta.calls?.sample ?? ""));
  return m ? m[1] : null;
}

diffusersFixtures(t, { pattern: /^vae-/, exclude: /^vae-tiled/ }, async (c, report) => {
  const e = c.engine;
  for await (const { label, model: vae } of c.models(report, (s) => AutoencoderKL.load(s, c.config))) {
    const prefixes = [...new Set([...c.io.keys()].map((k) => k.split(".")[0]))];
    for (const p of prefixes) {
      const traced = new TraceCollector();
      await e.scope(async () => {
        const names = new Set(c.namesOf(p));
        if (names.has("image")) {
          const dist = vae.encode(c.upload(`${p}.image`), { trace: traced.trace });
          if (names.has("moments")) {
            // batch slicing (the default) and one pass over the whole batch must agree with the reference
            for (const slicing of [true, false]) {
              vae.slicing = slicing;
              const m = await e.scope(() => vae.encodeMoments(c.upload(`${p}.image`)));
              c.check(report, `${label}${slicing ? "" : "[unsliced] "}`, `${p}.moments`, await m.read());
            }
            vae.slicing = true;
          }
          if (names.has("mean")) c.check(report, label, `${p}.mean`, await dist.mean.read());
          if (names.has("logvar")) c.check(report, label, `${p}.logvar`, await dist.logvar.read());
          if (names.has("std")) c.check(report, label, `${p}.std`, await dist.std.read());
          if (names.has("sample")) {
            const seed = sampleSeed(c);
            if (seed === null) report.fail(`${label}${p}.sample: case.json names no generator seed`);
            else {
              const noise = e.upload(new TorchGenerator(seed).randn(dist.mean.shape), dist.mean.shape);
              c.check(report, label, `${p}.sample`, await dist.sample(noise).read());
            }
          }
        }
        // decode the recorded latents, or (intermediate runs) the recorded mean
        const z = names.has("latents") ? "latents" : names.has("decoded") && names.has("mean") ? "mean" : null;
        if (z) {
          const out = vae.decode(c.upload(`${p}.${z}`), { trace: traced.trace });
          const outName = names.has("out") ? "out" : "decoded";
          c.check(report, label, `${p}.${outName}`, await out.read());
          if (c.get(`${p}.${z}`).shape[0] > 1) {
            vae.slicing = false;
            c.check(report, `${label}[unsliced] `, `${p}.${outName}`, await vae.decode(c.upload(`${p}.${z}`)).read());
            vae.slicing = true;
          }
        }
        for (const n of names) {
          const full = `${p}.${n}`;
          if (["image", "latents", "moments", "mean", "logvar", "std", "sample", "out", "decoded"].includes(n)) continue;
          const got = await traced.read(n);
          if (!got) report.fail(`${label}${full}: recorded intermediate not produced by the model`);
          else c.check(report, label, full, got);
        }
        traced.dispose();
      });
    }
  }
});

diffusersFixtures(t, /^vae-tiled/, async (c, report) => {
  const e = c.engine;
  const tiling = c.meta.tiling ?? {};
  for await (const { label, model: vae } of c.models(report, (s) => AutoencoderKL.load(s, c.config))) {
    const ss = Array.isArray(c.config.sample_size) ? c.config.sample_size[0] : c.config.sample_size;
    if (tiling.tile_sample_min_size !== undefined && tiling.tile_sample_min_size !== ss) report.fail(`tile_sample_min_size ${tiling.tile_sample_min_size} is not the config's sample_size ${ss}`);
    if (tiling.tile_latent_min_size !== undefined && tiling.tile_latent_min_size !== Math.trunc(ss / vae.scaleFactor)) report.fail(`tile_latent_min_size ${tiling.tile_latent_min_size} != ${ss}/${vae.scaleFactor}`);
    await e.scope(async () => {
      for (const tiled of [true, false]) {
        if (tiled) vae.enableTiling(); else vae.disableTiling();
        const dec = tiled ? "dec.tiled" : "dec.untiled";
        if (c.has("dec.latents") && c.has(dec)) c.check(report, label, dec, await vae.decode(c.upload("dec.latents")).read());
        const enc = tiled ? "enc.tiled_moments" : "enc.untiled_moments";
        if (c.has("enc.image") && c.has(enc)) c.check(report, label, enc, await vae.encodeMoments(c.upload("enc.image")).read());
      }
    });
  }
});

t.run();
