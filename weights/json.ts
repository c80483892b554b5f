// JSON as Python writes it. diffusers and transformers save configs with
// `json.dumps`, which emits NaN, Infinity and -Infinity (e.g. DPM-Solver's
// `"lambda_min_clipped": -Infinity`); JSON.parse rejects those. Request bodies
// carry seeds above 2^53 (Segmind's examples use 9715432854... and larger), which
// JSON.parse would round: with `{ bigints: true }` every integer literal that is
// not exactly representable as a double comes back as a BigInt.

import { SsdError } from "../engine/errors.ts";

export type JsonValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

export interface ParseOptions {
  /** Return integers beyond Number.MAX_SAFE_INTEGER as BigInt instead of rounding them. */
  bigints?: boolean;
  /** Name used in error messages (a file path, "request body", ...). */
  source?: string;
  /** Maximum nesting depth (guards against stack exhaustion on hostile input). */
  maxDepth?: number;
}

export function parsePythonJson(text: string, options: ParseOptions = {}): JsonValue {
  const src = options.source ?? "JSON";
  const maxDepth = options.maxDepth ?? 256;
  let i = 0;

  const fail = (what: string): never => {
    const line = text.slice(0, i).split("\n").length;
    throw new SsdError("E_BAD_CONFIG", `${src}: invalid JSON at line ${line} (offset ${i}): ${what}`);
  };
  const ws = () => {
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  const lit = (word: string) => {
    if (text.startsWith(word, i)) { i += word.length; return true; }
    return false;
  };

  const parseString = (): string => {
    i++; // opening quote
    let out = "";
    let start = i;
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) { out += text.slice(start, i); i++; return out; }
      if (c < 0x20) fail("control character in string");
      if (c === 0x5c) {
        out += text.slice(start, i);
        const e = text[i + 1];
        i += 2;
        switch (e) {
          case '"': out += '"'; break;
          case "\\": out += "\\"; break;
          case "/": out += "/"; break;
          case "b": out += "\b"; break;
          case "f": out += "\f"; break;
          case "n": out += "\n"; break;
          case "r": out += "\r"; break;
          case "t": out += "\t"; break;
          case "u": {
            const hex = text.slice(i, i + 4);
            if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("bad \\u escape");
            out += String.fromCharCode(parseInt(hex, 16));
            i += 4;
            break;
          }
          default: fail(`bad escape \\${e}`);
        }
        start = i;
      } else i++;
    }
  };

  const parseNumber = (): number | bigint => {
    const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) fail("bad number");
    const s = m![0];
    i += s.length;
    const isInt = m![1] === undefined && m![2] === undefined;
    if (isInt && options.bigints) {
      const b = BigInt(s);
      if (b > BigInt(Number.MAX_SAFE_INTEGER) || b < -BigInt(Number.MAX_SAFE_INTEGER)) return b;
    }
    return Number(s);
  };

  const value = (depth: number): JsonValue => {
    if (depth > maxDepth) fail("nested too deeply");
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj: { [k: string]: JsonValue } = {};
      ws();
      if (text[i] === "}") { i++; return obj; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a string key");
        const k = parseString();
        ws();
        if (text[i] !== ":") fail("expected ':'");
        i++;
        // Object.defineProperty keeps "__proto__" an ordinary key.
        Object.defineProperty(obj, k, { value: value(depth + 1), enumerable: true, writable: true, configurable: true });
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "}") { i++; return obj; }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const arr: JsonValue[] = [];
      ws();
      if (text[i] === "]") { i++; return arr; }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "]") { i++; return arr; }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return parseString();
    if (lit("true")) return true;
    if (lit("false")) return false;
    if (lit("null")) return null;
    if (lit("NaN")) return NaN;
    if (lit("Infinity")) return Infinity;
    if (lit("-Infinity")) return -Infinity;
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return parseNumber();
    return fail(c === undefined ? "unexpected end of input" : `unexpected character '${c}'`);
  };

  const v = value(0);
  ws();
  if (i !== text.length) fail("trailing characters after the value");
  return v;
}

/** Reads and parses a config file (config.json, scheduler_config.json, model_index.json). */
export async function readJsonFile<T = any>(path: string): Promise<T> {
  const { readFile } = await import("node:fs/promises");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e: any) {
    throw new SsdError("E_IO", `cannot read ${path}: ${e?.code ?? e?.message ?? e}`);
  }
  return parsePythonJson(text, { source: path }) as T;
}
