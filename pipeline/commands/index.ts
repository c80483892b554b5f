// The list of CLI commands. Add one line per command module.
import { infoCommand } from "./info.ts";
import { encodePromptCommand } from "./encode_prompt.ts";
import { pullCommand } from "./pull.ts";
import { generateCommand } from "./generate.ts";
import { inspectCommand } from "./inspect.ts";
import { depthCommand } from "./depth.ts";
import { serveCommand } from "./serve.ts";

export const commands = [generateCommand, infoCommand, encodePromptCommand, pullCommand, inspectCommand, depthCommand, serveCommand];
