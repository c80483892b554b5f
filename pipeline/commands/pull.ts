// `ssd-depth pull <id>...`: downloads models into the Hugging Face cache ahead
// of time (what `generate` would fetch on first use): only the files the
// pipeline needs, fp16 weights when the repo has them, resumable and verified.
// Always asks the hub for the revision's current commit, so a moved branch is
// refreshed; files already in the cache are not fetched again.

import type { CommandModule } from "yargs";
import { SsdError } from "../../engine/errors.ts";
import { snapshotDownload } from "../../weights/hub.ts";
import { parseHubId } from "../../weights/resolve.ts";

interface PullArgs {
  ids: string[];
  variant: string;
  components?: string[];
  all?: boolean;
  quiet?: boolean;
}

export const pullCommand: CommandModule<{}, PullArgs> = {
  command: "pull <ids..>",
  describe: "download models (org/name[@revision]) into the Hugging Face cache (honours HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE/HF_HOME)",
  builder: (y) => y
    .positional("ids", { type: "string", array: true, demandOption: true, describe: "hub ids, e.g. segmind/SSD-1B diffusers/controlnet-depth-sdxl-1.0-small" })
    .option("variant", { type: "string", default: "fp16", describe: "preferred weights variant ('none' for full-precision files)" })
    .option("components", { type: "string", array: true, describe: "for pipelines: only these component folders (e.g. unet vae)" })
    .option("all", { type: "boolean", describe: "every file of the repo, not only what ssd-depth needs" })
    .option("quiet", { alias: "q", type: "boolean", describe: "no progress output" }) as any,
  handler: async (args) => {
    for (const spec of args.ids) {
      const id = parseHubId(spec);
      if (!id) throw new SsdError("E_BAD_PARAM", `'${spec}' is not a hub id (org/name[@revision])`);
      const snap = await snapshotDownload(id.repoId, {
        revision: id.revision,
        variant: args.variant === "none" ? null : args.variant,
        components: args.components,
        filter: args.all ? () => true : undefined,
        progress: args.quiet ? "none" : "auto",
      });
      console.log(`${spec}: ${snap.files.length} files at ${snap.commit.slice(0, 12)} in ${snap.dir}`);
    }
  },
};
