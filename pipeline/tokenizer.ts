// CLIP byte-level BPE tokenizer, matching transformers' (slow, Python) CLIPTokenizer
// on the path taken when `ftfy` is not installed: BasicTokenizer cleanup
// (control chars dropped, whitespace normalised, CJK split, NFC, lower-case),
// the CLIP pre-split regex, byte → unicode mapping, BPE with `</w>` word ends.
// Added tokens from tokenizer_config.json's `added_tokens_decoder` are split out
// of the raw text first (the slow tokenizer's Trie), which is why SDXL's
// tokenizer_2 maps every `!` to id 0.

import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { SsdError } from "../engine/errors.ts";
import { readJsonFile } from "../weights/json.ts";

export interface AddedToken {
  id: number;
  content: string;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
  special: boolean;
}

export interface EncodeOptions {
  /** "max_length" pads to `maxLength` with the pad token (SDXL pipelines' choice); default: no padding. */
  padding?: "max_length" | "none";
  /** keep at most `maxLength` ids including bos/eos; default true */
  truncation?: boolean;
  /** defaults to the tokenizer's model_max_length (77 for CLIP) */
  maxLength?: number;
  /** called once when tokens were dropped by truncation; defaults to the tokenizer's `onWarning` */
  onWarning?: (message: string) => void;
}

export interface Encoded {
  ids: number[];
  /** 1 for bos..eos, 0 for padding */
  attentionMask: number[];
  /** number of BPE tokens dropped by truncation (0 when none) */
  truncated: number;
  /** the BPE tokens of the text before truncation, without bos/eos */
  tokens: string[];
}

/** GPT-2/CLIP's reversible byte → printable-unicode table, so BPE never sees spaces or control bytes. */
function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const table = new Array<string>(256);
  for (let i = 0; i < bs.length; i++) table[bs[i]] = String.fromCodePoint(cs[i]);
  return table;
}

const BYTE_ENCODER = bytesToUnicode();
const BYTE_DECODER = new Map<string, number>(BYTE_ENCODER.map((c, b) => [c, b]));

// transformers' CLIP pattern (regex module, IGNORECASE); the text is already lower-cased.
const PRE_SPLIT = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

// BasicTokenizer._is_control: category C*, except \t \n \r (they are whitespace).
const CONTROL = /^\p{C}$/u;
// BasicTokenizer._is_whitespace: " \t\n\r" or category Zs.
const WHITESPACE = /^[ \t\n\r\p{Zs}]$/u;
// Python's str.split() separators (str.isspace): Unicode White_Space plus the 0x1c–0x1f separators.
const PY_SPLIT = /[\s\x1c-\x1f\x85]+/u;

function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

function pySplit(s: string): string[] {
  return s.split(PY_SPLIT).filter((t) => t.length > 0);
}

/**
 * transformers' BasicTokenizer(do_lower_case=True, strip_accents=False, do_split_on_punc=False)
 * followed by CLIPTokenizer's `" ".join(...).lower()`.
 */
export function basicClean(text: string): string {
  let cleaned = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd) continue;
    if (WHITESPACE.test(ch)) { cleaned += " "; continue; }
    if (CONTROL.test(ch)) continue;
    // CJK ideographs become words of their own.
    cleaned += isCjk(cp) ? ` ${ch} ` : ch;
  }
  const words = pySplit(cleaned.normalize("NFC")).map((w) => w.toLowerCase());
  return pySplit(words.join(" ")).join(" ").toLowerCase();
}

export interface ClipTokenizerFiles {
  vocab: Record<string, number>;
  merges: string[];
  config: Record<string, any>;
  specialTokensMap?: Record<string, any>;
}

export class ClipTokenizer {
  readonly encoder: Map<string, number>;
  readonly decoder: Map<number, string>;
  private readonly ranks: Map<string, number>;
  private readonly cache = new Map<string, string[]>();
  readonly added: AddedToken[];
  private readonly addedByContent: Map<string, AddedToken>;
  readonly bosToken: string;
  readonly eosToken: string;
  readonly padToken: string;
  readonly unkToken: string;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly modelMaxLength: number;
  onWarning: (message: string) => void = (m) => console.warn(`warning: ${m}`);

  constructor(files: ClipTokenizerFiles, readonly source = "<memory>") {
    this.encoder = new Map(Object.entries(files.vocab));
    this.decoder = new Map([...this.encoder].map(([k, v]) => [v, k]));
    // As transformers: skip the "#version" line and keep at most 49152 - 256 - 2 merges.
    const merges = files.merges.slice(1, 49152 - 256 - 2 + 1).filter((l) => l.length > 0);
    // Python's dict(zip(merges, range(...))) keeps the LAST rank of a duplicated pair.
    this.ranks = new Map();
    merges.forEach((m, i) => {
      const parts = m.split(/\s+/).filter((p) => p.length > 0);
      if (parts.length !== 2) throw new SsdError("E_BAD_CONFIG", `${source}: merges.txt line ${i + 2} is not a pair: '${m}'`);
      this.ranks.set(parts[0] + " " + parts[1], i);
    });

    const cfg = files.config ?? {};
    const map = files.specialTokensMap ?? {};
    const tokenText = (v: any): string | undefined => (typeof v === "string" ? v : v && typeof v.content === "string" ? v.content : undefined);
    const pick = (name: string, dflt: string) => tokenText(cfg[name]) ?? tokenText(map[name]) ?? dflt;
    this.unkToken = pick("unk_token", "<|endoftext|>");
    this.bosToken = pick("bos_token", "<|startoftext|>");
    this.eosToken = pick("eos_token", "<|endoftext|>");
    this.padToken = pick("pad_token", "<|endoftext|>");
    const mml = Number(cfg.model_max_length);
    // transformers uses a huge sentinel when unset; CLIP's context is 77.
    this.modelMaxLength = Number.isFinite(mml) && mml > 0 && mml < 1e9 ? mml : 77;

    this.added = [];
    const dec = cfg.added_tokens_decoder as Record<string, any> | undefined;
    if (dec) {
      for (const [id, t] of Object.entries(dec)) {
        this.added.push({
          id: Number(id),
          content: String(t.content),
          lstrip: !!t.lstrip,
          rstrip: !!t.rstrip,
          singleWord: !!t.single_word,
          special: t.special !== false,
        });
      }
    }
    // Special tokens named in the config are added tokens even without added_tokens_decoder (older configs).
    for (const s of [this.bosToken, this.eosToken, this.unkToken, this.padToken]) {
      if (!this.added.some((a) => a.content === s)) {
        const id = this.encoder.get(s);
        if (id !== undefined) this.added.push({ id, content: s, lstrip: false, rstrip: false, singleWord: false, special: true });
      }
    }
    this.addedByContent = new Map(this.added.map((a) => [a.content, a]));
    // BPE cache is seeded as transformers does: the two specials stay whole.
    this.cache.set("<|startoftext|>", ["<|startoftext|>"]);
    this.cache.set("<|endoftext|>", ["<|endoftext|>"]);

    this.bosId = this.tokenToId(this.bosToken);
    this.eosId = this.tokenToId(this.eosToken);
    this.padId = this.tokenToId(this.padToken);
  }

  /**
   * Loads a `tokenizer/` or `tokenizer_2/` folder. vocab.json and merges.txt are taken from
   * the folder, or from its parent when the folder holds only its configs (fixture layout).
   */
  static async load(dir: string): Promise<ClipTokenizer> {
    const find = (name: string): string => {
      for (const d of [dir, dirname(dir)]) {
        const p = join(d, name);
        if (existsSync(p)) return p;
      }
      throw new SsdError("E_MODEL_NOT_FOUND", `tokenizer folder ${dir} has no ${name} (nor has its parent folder)`);
    };
    const vocabPath = find("vocab.json");
    const mergesPath = find("merges.txt");
    const vocab = await readJsonFile<Record<string, number>>(vocabPath);
    let mergesText: string;
    try {
      mergesText = await readFile(mergesPath, "utf8");
    } catch (e: any) {
      throw new SsdError("E_IO", `cannot read ${mergesPath}: ${e?.code ?? e?.message ?? e}`);
    }
    const cfgPath = join(dir, "tokenizer_config.json");
    const stmPath = join(dir, "special_tokens_map.json");
    const config = existsSync(cfgPath) ? await readJsonFile<Record<string, any>>(cfgPath) : {};
    const specialTokensMap = existsSync(stmPath) ? await readJsonFile<Record<string, any>>(stmPath) : undefined;
    // Python's .strip().split("\n")
    const merges = mergesText.trim().split("\n").map((l) => l.replace(/\r$/, ""));
    return new ClipTokenizer({ vocab, merges, config, specialTokensMap }, dir);
  }

  tokenToId(token: string): number {
    const a = this.addedByContent.get(token);
    if (a) return a.id;
    const id = this.encoder.get(token);
    if (id !== undefined) return id;
    const unk = this.addedByContent.get(this.unkToken)?.id ?? this.encoder.get(this.unkToken);
    if (unk === undefined) throw new SsdError("E_BAD_CONFIG", `${this.source}: token '${token}' not in vocab and no unk token`);
    return unk;
  }

  private bpe(token: string): string[] {
    const hit = this.cache.get(token);
    if (hit) return hit;
    const chars = Array.from(token);
    let word = chars.slice(0, -1);
    word.push(chars[chars.length - 1] + "</w>");
    if (word.length === 1) {
      const r = [word[0]];
      this.cache.set(token, r);
      return r;
    }
    for (;;) {
      // lowest-ranked adjacent pair
      let best = -1, bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(word[i] + " " + word[i + 1]);
        if (r !== undefined && r < bestRank) { bestRank = r; best = i; }
      }
      if (best < 0) break;
      const first = word[best], second = word[best + 1];
      // merge every non-overlapping occurrence, left to right
      const next: string[] = [];
      let i = 0;
      while (i < word.length) {
        if (i + 1 < word.length && word[i] === first && word[i + 1] === second) {
          next.push(first + second);
          i += 2;
        } else {
          next.push(word[i]);
          i += 1;
        }
      }
      word = next;
      if (word.length === 1) break;
    }
    this.cache.set(token, word);
    return word;
  }

  /** CLIPTokenizer._tokenize on text without added tokens. */
  private tokenizePlain(text: string): string[] {
    const out: string[] = [];
    const clean = basicClean(text);
    for (const m of clean.matchAll(PRE_SPLIT)) {
      let mapped = "";
      for (const b of new TextEncoder().encode(m[0])) mapped += BYTE_ENCODER[b];
      out.push(...this.bpe(mapped));
    }
    return out;
  }

  /** Splits out added tokens (leftmost, longest match), as the slow tokenizer's Trie does. */
  private splitAdded(text: string): string[] {
    if (this.added.length === 0) return [text];
    const contents = this.added.map((a) => a.content).filter((c) => c.length > 0).sort((a, b) => b.length - a.length);
    const pieces: string[] = [];
    let start = 0, i = 0;
    while (i < text.length) {
      const hit = contents.find((c) => text.startsWith(c, i));
      if (hit) {
        if (i > start) pieces.push(text.slice(start, i));
        pieces.push(hit);
        i += hit.length;
        start = i;
      } else {
        i++;
      }
    }
    if (start < text.length) pieces.push(text.slice(start));
    return pieces;
  }

  /** transformers' `tokenizer.tokenize(text)`: BPE tokens, no bos/eos. */
  tokenize(text: string): string[] {
    const pieces = this.splitAdded(text);
    const isAdded = pieces.map((p) => this.addedByContent.has(p));
    // lstrip/rstrip/single_word handling of added tokens, as PreTrainedTokenizer.tokenize
    for (let i = 0; i < pieces.length; i++) {
      if (!isAdded[i]) continue;
      const t = this.addedByContent.get(pieces[i])!;
      const hasLeft = i > 0 && !isAdded[i - 1] && pieces[i - 1].length > 0;
      const hasRight = i + 1 < pieces.length && !isAdded[i + 1] && pieces[i + 1].length > 0;
      if (t.rstrip && hasRight) pieces[i + 1] = pieces[i + 1].replace(/^\s+/, "");
      if (t.lstrip && hasLeft) pieces[i - 1] = pieces[i - 1].replace(/\s+$/, "");
    }
    const out: string[] = [];
    for (let i = 0; i < pieces.length; i++) {
      if (!pieces[i]) continue;
      if (isAdded[i]) out.push(pieces[i]);
      else out.push(...this.tokenizePlain(pieces[i]));
    }
    return out;
  }

  /** Turns BPE tokens back into text (for warnings and debugging). */
  decodeTokens(tokens: string[]): string {
    const bytes: number[] = [];
    for (const t of tokens) {
      if (this.addedByContent.has(t)) {
        for (const b of new TextEncoder().encode(t)) bytes.push(b);
        continue;
      }
      for (const ch of t.replace(/<\/w>/g, " ")) {
        const b = BYTE_DECODER.get(ch);
        if (b !== undefined) bytes.push(b);
        else for (const x of new TextEncoder().encode(ch)) bytes.push(x);
      }
    }
    return new TextDecoder("utf-8", { fatal: false }).decode(new Uint8Array(bytes)).trim();
  }

  /** `tokenizer(text, padding="max_length", max_length=77, truncation=True)`: bos + ids + eos (+ pad). */
  encode(text: string, opts: EncodeOptions = {}): Encoded {
    const maxLength = opts.maxLength ?? this.modelMaxLength;
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new SsdError("E_BAD_PARAM", `tokenizer max length must be an integer ≥ 2, got ${maxLength}`);
    const truncation = opts.truncation ?? true;
    const tokens = this.tokenize(text);
    let body = tokens.map((t) => this.tokenToId(t));
    let truncated = 0;
    const room = maxLength - 2;
    if (truncation && body.length > room) {
      truncated = body.length - room;
      body = body.slice(0, room);
      const dropped = this.decodeTokens(tokens.slice(room));
      (opts.onWarning ?? this.onWarning)(
        `the prompt is ${tokens.length} tokens but CLIP takes at most ${room}: dropped the last ${truncated} token${truncated === 1 ? "" : "s"} ("${dropped}")`,
      );
    }
    const ids = [this.bosId, ...body, this.eosId];
    const attentionMask = ids.map(() => 1);
    if (opts.padding === "max_length") {
      while (ids.length < maxLength) {
        ids.push(this.padId);
        attentionMask.push(0);
      }
    }
    return { ids, attentionMask, truncated, tokens };
  }
}
