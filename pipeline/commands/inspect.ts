// `ssd-depth inspect image.png`: the generation parameters a PNG carries
// (the A1111-style `parameters` chunk, and ssd-depth's JSON chunk).

import type { CommandModule } from "yargs";
import { readPngText } from "../image.ts";
import { SsdError } from "../../engine/errors.ts";

export const inspectCommand: CommandModule<{}, { file: string; json?: boolean }> = {
  command: "inspect <file>",
  describe: "print the generation parameters stored in a PNG written by generate",
  builder: (y) => y.positional("file", { type: "string", demandOption: true }).option("json", { type: "boolean" }) as any,
  handler: async (a) => {
    const text = await readPngText(a.file);
    if (!text.parameters && !text["ssd-depth"]) throw new SsdError("E_BAD_IMAGE", `${a.file} carries no generation parameters (no 'parameters' text chunk)`);
    if (a.json) console.log(text["ssd-depth"] ?? JSON.stringify({ parameters: text.parameters }));
    else console.log(text.parameters ?? text["ssd-depth"]);
  },
};
