// The list of CLI commands. Add one line per command module.
import { infoCommand } from "./info.ts";

export const commands = [infoCommand];
