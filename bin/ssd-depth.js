#!/usr/bin/env node
// Launcher: runs the TypeScript CLI through the tsx loader (see README: "How TypeScript runs").
import { register } from "tsx/esm/api";
register();
await import("../pipeline/cli.ts");
