// Images in and out, on the host.
//
// loadImage: PNG (pngjs) and JPEG, chosen by magic bytes, with EXIF orientation
// applied and the pixel conversion Pillow 9.4's `convert("RGB")` does
// (that is what diffusers' load_image → exif_transpose → convert("RGB") hands the
// pipeline): alpha dropped (not composited), palette looked up, 1/2/4-bit gray
// scaled, 16-bit RGB(A)/LA reduced to their high byte, 16-bit gray (Pillow mode "I")
// clipped to 255. JPEGs go through a decoder below that reproduces libjpeg-turbo
// (Pillow's decoder) bit for bit; jpeg-js is the fallback for the rare files it declines.
// savePng: pngjs encodes the pixels; tEXt/iTXt chunks (A1111's `parameters`) are
// spliced in by hand; the file is written to a temp file and renamed into place.
// Tensor helpers convert as diffusers' VaeImageProcessor does.

import { readFile, writeFile, rename, unlink } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import { inflateSync } from "node:zlib";
import { Buffer } from "node:buffer";
import pngjs from "pngjs";
import jpeg from "jpeg-js";
import { SsdError } from "../engine/errors.ts";
import { resizePil, type PixelImage, type PilFilter } from "./resample.ts";

const { PNG } = pngjs;

/** An 8-bit RGB image, HWC. */
export interface RgbImage extends PixelImage {
  channels: 3;
}

/** Default refusal limit: 64 megapixels (e.g. 8192×8192). */
export const MAX_IMAGE_PIXELS = 64 * 1024 * 1024;

export interface LoadOptions {
  /** refuse images with more pixels than this (default MAX_IMAGE_PIXELS) */
  maxPixels?: number;
  /**
   * 16-bit grayscale PNGs: "pillow" (default) clips to 255 as Pillow's I → RGB does;
   * "scale" keeps the high byte (useful for 16-bit depth maps).
   */
  gray16?: "pillow" | "scale";
  /** apply EXIF orientation (default true, as diffusers' load_image) */
  exifTranspose?: boolean;
}

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function bad(path: string, problem: string, cause?: unknown): SsdError {
  return new SsdError("E_BAD_IMAGE", `${path}: ${problem}`, cause === undefined ? undefined : { cause });
}

function sniff(b: Uint8Array): string {
  const ascii = (o: number, n: number) => String.fromCharCode(...b.subarray(o, o + n));
  if (PNG_MAGIC.every((v, i) => b[i] === v)) return "png";
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (ascii(0, 4) === "GIF8") return "GIF";
  if (ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") return "WebP";
  if (ascii(0, 2) === "BM") return "BMP";
  if (ascii(0, 4) === "II*\0" || ascii(0, 4) === "MM\0*") return "TIFF";
  if (ascii(4, 8) === "ftypavif" || ascii(4, 8) === "ftypheic" || ascii(4, 8) === "ftypmif1") return "HEIF/AVIF";
  if (b.length === 0) return "empty file";
  return "unknown";
}

// ---------------------------------------------------------------------------------
// PNG chunks

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 as PNG defines it (ISO 3309). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

interface Chunk {
  type: string;
  data: Uint8Array;
  /** offset of the length field in the file */
  start: number;
  /** offset just past the CRC */
  end: number;
}

/** Walks a PNG's chunks, checking lengths and CRCs; throws E_BAD_IMAGE on damage. */
function pngChunks(b: Uint8Array, path: string): Chunk[] {
  if (!PNG_MAGIC.every((v, i) => b[i] === v)) throw bad(path, "not a PNG file (bad signature)");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const chunks: Chunk[] = [];
  let p = 8;
  for (;;) {
    if (p + 8 > b.length) throw bad(path, `PNG is truncated (file ends at byte ${b.length}, inside the chunk header at ${p}; no IEND)`);
    const len = dv.getUint32(p);
    const type = String.fromCharCode(...b.subarray(p + 4, p + 8));
    if (!/^[A-Za-z]{4}$/.test(type)) throw bad(path, `PNG is corrupt (invalid chunk type at byte ${p})`);
    if (p + 12 + len > b.length) throw bad(path, `PNG is truncated (chunk ${type} at byte ${p} needs ${len} bytes, the file ends at ${b.length})`);
    const crc = dv.getUint32(p + 8 + len);
    if (crc32(b.subarray(p + 4, p + 8 + len)) !== crc) throw bad(path, `PNG is corrupt (CRC mismatch in chunk ${type} at byte ${p})`);
    chunks.push({ type, data: b.subarray(p + 8, p + 8 + len), start: p, end: p + 12 + len });
    p += 12 + len;
    if (type === "IEND") break;
  }
  if (chunks[0]?.type !== "IHDR") throw bad(path, "PNG is corrupt (first chunk is not IHDR)");
  return chunks;
}

/** One PNG chunk: length, type, data, CRC-32 over type and data. */
export function makeChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const latin1 = (s: string): Uint8Array | null => {
  const o = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 255) return null;
    o[i] = c;
  }
  return o;
};

/** A text chunk as Pillow's PngInfo.add_text writes it: tEXt when Latin-1 fits, else uncompressed iTXt. */
export function textChunk(key: string, value: string): Uint8Array {
  const k = latin1(key);
  if (!k || k.length < 1 || k.length > 79 || k.includes(0)) throw new SsdError("E_BAD_PARAM", `PNG text keyword must be 1–79 Latin-1 characters: '${key}'`);
  const v = latin1(value);
  if (v) {
    const d = new Uint8Array(k.length + 1 + v.length);
    d.set(k);
    d.set(v, k.length + 1);
    return makeChunk("tEXt", d);
  }
  const u = new TextEncoder().encode(value);
  // keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
  const d = new Uint8Array(k.length + 5 + u.length);
  d.set(k);
  d.set(u, k.length + 5);
  return makeChunk("iTXt", d);
}

function decodeTextChunk(c: Chunk): [string, string] | null {
  const d = c.data;
  const z = d.indexOf(0);
  if (z < 1) return null;
  const key = String.fromCharCode(...d.subarray(0, z));
  const l1 = (x: Uint8Array) => { let s = ""; for (const ch of x) s += String.fromCharCode(ch); return s; };
  if (c.type === "tEXt") return [key, l1(d.subarray(z + 1))];
  if (c.type === "zTXt") return [key, l1(inflateSync(d.subarray(z + 2)))];
  if (c.type === "iTXt") {
    const compressed = d[z + 1] === 1;
    let p = z + 3;
    const lang = d.indexOf(0, p);
    if (lang < 0) return null;
    const tk = d.indexOf(0, lang + 1);
    if (tk < 0) return null;
    p = tk + 1;
    const body = compressed ? new Uint8Array(inflateSync(d.subarray(p))) : d.subarray(p);
    return [key, new TextDecoder().decode(body)];
  }
  return null;
}

/** Text chunks (tEXt, zTXt, iTXt) of a PNG file, e.g. A1111's `parameters`. */
export async function readPngText(path: string): Promise<Record<string, string>> {
  const b = await readBytes(path);
  const out: Record<string, string> = {};
  for (const c of pngChunks(b, path)) {
    if (c.type === "tEXt" || c.type === "zTXt" || c.type === "iTXt") {
      try {
        const kv = decodeTextChunk(c);
        if (kv && !(kv[0] in out)) out[kv[0]] = kv[1];
      } catch (e) {
        throw bad(path, `PNG text chunk ${c.type} is corrupt`, e);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------
// EXIF orientation

/** The IFD0 Orientation tag (1–8) of a TIFF/EXIF block, or 1. `b` starts at the TIFF header. */
export function exifOrientation(b: Uint8Array): number {
  if (b.length < 8) return 1;
  const le = b[0] === 0x49 && b[1] === 0x49;
  if (!le && !(b[0] === 0x4d && b[1] === 0x4d)) return 1;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint16(2, le) !== 42) return 1;
  const ifd = dv.getUint32(4, le);
  if (ifd + 2 > b.length) return 1;
  const n = dv.getUint16(ifd, le);
  for (let i = 0; i < n; i++) {
    const e = ifd + 2 + i * 12;
    if (e + 12 > b.length) break;
    if (dv.getUint16(e, le) === 0x0112) {
      const type = dv.getUint16(e + 2, le);
      const v = type === 3 ? dv.getUint16(e + 8, le) : type === 4 ? dv.getUint32(e + 8, le) : 1;
      return v >= 1 && v <= 8 ? v : 1;
    }
  }
  return 1;
}

/** ImageOps.exif_transpose's transposition for an orientation value. */
export function applyOrientation(img: PixelImage, orientation: number): PixelImage {
  if (orientation <= 1 || orientation > 8) return img;
  const { width: W, height: H, channels: C, data } = img;
  const swap = orientation >= 5;
  const ow = swap ? H : W, oh = swap ? W : H;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      // source pixel (sx, sy) for output (x, y)
      let sx: number, sy: number;
      switch (orientation) {
        case 2: sx = W - 1 - x; sy = y; break; // FLIP_LEFT_RIGHT
        case 3: sx = W - 1 - x; sy = H - 1 - y; break; // ROTATE_180
        case 4: sx = x; sy = H - 1 - y; break; // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break; // TRANSPOSE
        case 6: sx = y; sy = H - 1 - x; break; // ROTATE_270 (90° clockwise)
        case 7: sx = W - 1 - y; sy = H - 1 - x; break; // TRANSVERSE
        default: sx = W - 1 - y; sy = x; break; // 8: ROTATE_90 (90° counter-clockwise)
      }
      const s = (sy * W + sx) * C, d = (y * ow + x) * C;
      for (let c = 0; c < C; c++) out[d + c] = data[s + c];
    }
  }
  return { width: ow, height: oh, channels: C, data: out };
}

// ---------------------------------------------------------------------------------
// decoding

async function readBytes(path: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (e: any) {
    if (e?.code === "ENOENT") throw new SsdError("E_BAD_PARAM", `image file ${path} does not exist`);
    if (e?.code === "EISDIR") throw new SsdError("E_BAD_PARAM", `${path} is a folder, not an image file`);
    throw new SsdError("E_IO", `cannot read ${path}: ${e?.code ?? e?.message ?? e}`);
  }
}

function checkSize(path: string, w: number, h: number, max: number): void {
  if (w < 1 || h < 1) throw bad(path, `image has no pixels (${w}x${h})`);
  if (w * h > max) {
    throw bad(path, `image is ${w}x${h} = ${(w * h / 1e6).toFixed(1)} megapixels; the limit is ${(max / (1024 * 1024)).toFixed(0)} MP (${max} pixels). Downscale it first.`);
  }
}

function decodePng(b: Uint8Array, path: string, opts: LoadOptions): { img: RgbImage; orientation: number } {
  const chunks = pngChunks(b, path);
  const ihdr = chunks[0].data;
  if (ihdr.length !== 13) throw bad(path, "PNG is corrupt (IHDR has the wrong length)");
  const dv = new DataView(ihdr.buffer, ihdr.byteOffset, 13);
  const width = dv.getUint32(0), height = dv.getUint32(4);
  const depth = ihdr[8], colorType = ihdr[9];
  checkSize(path, width, height, opts.maxPixels ?? MAX_IMAGE_PIXELS);
  if (!chunks.some((c) => c.type === "IDAT")) throw bad(path, "PNG has no image data (no IDAT chunk)");
  if (chunks[chunks.length - 1].type !== "IEND") throw bad(path, "PNG is truncated (no IEND chunk)");
  const channels = ({ 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as Record<number, number>)[colorType];
  const okDepth = colorType === 0 ? [1, 2, 4, 8, 16] : colorType === 3 ? [1, 2, 4, 8] : [8, 16];
  if (!channels || !okDepth.includes(depth)) throw bad(path, `PNG has an invalid bit depth ${depth} for colour type ${colorType}`);
  if (ihdr[12] > 1) throw bad(path, `PNG has an unknown interlace method ${ihdr[12]}`);
  // pngjs's own inflate turns damaged data into black pixels without an error, so the
  // stream is inflated and its length checked here first (Pillow: "image file is truncated").
  const need = pngRawSize(width, height, channels * depth, ihdr[12] === 1);
  let got = need;
  try {
    // bounded, so a decompression bomb cannot exhaust memory; more data than needed is fine
    got = inflateSync(Buffer.concat(chunks.filter((c) => c.type === "IDAT").map((c) => c.data)), { maxOutputLength: need }).length;
  } catch (e: any) {
    if (e?.code !== "ERR_BUFFER_TOO_LARGE") throw bad(path, `PNG image data is corrupt (${e?.message ?? e})`, e);
  }
  if (got < need) throw bad(path, `PNG image data is truncated (${got} of ${need} bytes)`);
  const exif = chunks.find((c) => c.type === "eXIf");
  // pngjs zeroes every channel of tRNS-matching pixels; Pillow keeps their colour and
  // convert("RGB") drops transparency anyway, so tRNS is removed before decoding.
  const parts = [b.subarray(0, 8), ...chunks.filter((c) => c.type !== "tRNS").map((c) => b.subarray(c.start, c.end))];
  const stripped = Buffer.concat(parts);
  let png: { width: number; height: number; data: Uint8Array | Uint16Array };
  try {
    png = PNG.sync.read(stripped, { skipRescale: true }) as any;
  } catch (e: any) {
    throw bad(path, `PNG is corrupt or truncated (${e?.message ?? e})`, e);
  }
  const src = png.data; // RGBA per pixel; raw sample values (skipRescale), palette already looked up
  const n = width * height;
  if (src.length < n * 4) throw bad(path, "PNG decoded to fewer pixels than its header says");
  const out = new Uint8Array(n * 3);
  // Pillow's unpackers: 1/2/4-bit gray scaled to 0..255; 16-bit samples keep the high byte,
  // except 16-bit gray, which Pillow opens as mode "I" and clips to 255 in convert("RGB").
  let map: (v: number) => number;
  if (colorType === 3) map = (v) => v;
  else if (depth === 16) {
    if (colorType === 0 && (opts.gray16 ?? "pillow") === "pillow") map = (v) => (v > 255 ? 255 : v);
    else map = (v) => v >> 8;
  } else if (depth === 8) map = (v) => v;
  else {
    const mul = depth === 1 ? 255 : depth === 2 ? 85 : 17;
    map = (v) => v * mul;
  }
  for (let i = 0; i < n; i++) {
    out[i * 3] = map(src[i * 4]);
    out[i * 3 + 1] = map(src[i * 4 + 1]);
    out[i * 3 + 2] = map(src[i * 4 + 2]);
  }
  return { img: { width, height, channels: 3, data: out }, orientation: exif ? exifOrientation(exifTiff(exif.data)) : 1 };
}

/** Bytes of the filtered scanlines of a PNG (Adam7 passes when interlaced). */
function pngRawSize(w: number, h: number, bitsPerPixel: number, interlaced: boolean): number {
  const rows = (pw: number, ph: number) => (pw > 0 && ph > 0 ? ph * (1 + Math.ceil((pw * bitsPerPixel) / 8)) : 0);
  if (!interlaced) return rows(w, h);
  // Adam7: [x0, y0, dx, dy] per pass
  const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];
  let n = 0;
  for (const [x0, y0, dx, dy] of passes) n += rows(Math.ceil((w - x0) / dx), Math.ceil((h - y0) / dy));
  return n;
}

/** The TIFF block of an EXIF payload (with or without the "Exif\0\0" prefix). */
function exifTiff(d: Uint8Array): Uint8Array {
  if (d.length >= 6 && d[0] === 0x45 && d[1] === 0x78 && d[2] === 0x69 && d[3] === 0x66 && d[4] === 0 && d[5] === 0) return d.subarray(6);
  return d;
}

interface JpegInfo {
  width: number;
  height: number;
  orientation: number;
  /** per component: id and sampling factors, from the frame header */
  components: { id: number; h: number; v: number }[];
  /** byte offset of the Adobe APP14 transform flag, or -1 */
  adobeAt: number;
  jfif: boolean;
}

/** Walks JPEG markers: size from SOFn, orientation from the first EXIF APP1, truncation check. */
function scanJpeg(b: Uint8Array, path: string): JpegInfo {
  let p = 2;
  let width = 0, height = 0, orientation = 1, exifSeen = false, sofSeen = false, adobeAt = -1, jfif = false;
  let components: JpegInfo["components"] = [];
  const u16 = (o: number) => (b[o] << 8) | b[o + 1];
  for (;;) {
    if (p >= b.length) throw bad(path, `JPEG is truncated (file ends at byte ${b.length} before the end-of-image marker)`);
    if (b[p] !== 0xff) throw bad(path, `JPEG is corrupt (expected a marker at byte ${p})`);
    while (p < b.length && b[p] === 0xff) p++; // fill bytes
    if (p >= b.length) throw bad(path, "JPEG is truncated (file ends inside a marker)");
    const m = b[p++];
    if (m === 0xd9) break; // EOI
    if ((m >= 0xd0 && m <= 0xd7) || m === 0x01) continue;
    if (p + 2 > b.length) throw bad(path, "JPEG is truncated (file ends inside a segment header)");
    const len = u16(p);
    if (len < 2 || p + len > b.length) throw bad(path, `JPEG is truncated (segment 0xFF${m.toString(16).toUpperCase()} at byte ${p - 2} runs past the end of the file)`);
    const seg = b.subarray(p + 2, p + len);
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      if (m !== 0xc0 && m !== 0xc1 && m !== 0xc2) {
        throw bad(path, `unsupported JPEG coding (SOF marker 0xFF${m.toString(16).toUpperCase()}: lossless, hierarchical or arithmetic-coded); re-save it as a baseline or progressive JPEG or PNG`);
      }
      if (seg.length < 5) throw bad(path, "JPEG is corrupt (short frame header)");
      height = (seg[1] << 8) | seg[2];
      width = (seg[3] << 8) | seg[4];
      const nc = seg[5] ?? 0;
      if (seg.length < 6 + 3 * nc) throw bad(path, "JPEG is corrupt (short frame header)");
      components = [];
      for (let i = 0; i < nc; i++) components.push({ id: seg[6 + 3 * i], h: seg[7 + 3 * i] >> 4, v: seg[7 + 3 * i] & 15 });
      sofSeen = true;
    } else if (m === 0xe1 && !exifSeen && seg.length >= 6 && String.fromCharCode(...seg.subarray(0, 4)) === "Exif") {
      exifSeen = true;
      orientation = exifOrientation(exifTiff(seg));
    } else if (m === 0xee && seg.length >= 12 && String.fromCharCode(...seg.subarray(0, 5)) === "Adobe") {
      adobeAt = p + 2 + 11;
    } else if (m === 0xe0 && seg.length >= 5 && String.fromCharCode(...seg.subarray(0, 5)) === "JFIF\0") {
      jfif = true;
    }
    p += len;
    if (m === 0xda) {
      // entropy-coded data runs until a marker other than a stuffed 0xFF00 or a restart marker
      for (;;) {
        if (p + 1 >= b.length) throw bad(path, `JPEG is truncated (image data ends at byte ${b.length} without an end-of-image marker)`);
        if (b[p] === 0xff && b[p + 1] !== 0x00 && !(b[p + 1] >= 0xd0 && b[p + 1] <= 0xd7) && b[p + 1] !== 0xff) break;
        p++;
      }
    }
  }
  if (!sofSeen) throw bad(path, "JPEG has no frame header (SOF)");
  return { width, height, orientation, components, adobeAt, jfif };
}

function decodeJpeg(b: Uint8Array, path: string, opts: LoadOptions): { img: RgbImage; orientation: number } {
  const info = scanJpeg(b, path);
  const max = opts.maxPixels ?? MAX_IMAGE_PIXELS;
  checkSize(path, info.width, info.height, max);
  // our libjpeg-exact decoder first; jpeg-js for what it declines (12-bit, 2 components)
  const exact = decodeJpegExact(b, path, info.jfif, info.adobeAt >= 0 ? b[info.adobeAt] : -1);
  if (exact) return { img: { width: exact.width, height: exact.height, channels: 3, data: exact.rgb }, orientation: info.orientation };
  let raw: { width: number; height: number; data: Uint8Array };
  try {
    raw = jpeg.decode(b, {
      useTArray: true,
      formatAsRGBA: false,
      tolerantDecoding: false,
      maxResolutionInMP: Math.ceil(max / 1e6) + 1,
      maxMemoryUsageInMB: Math.ceil((max * 8) / (1024 * 1024)) + 256,
    });
  } catch (e: any) {
    throw bad(path, `JPEG could not be decoded (${e?.message ?? e})`, e);
  }
  if (raw.data.length !== raw.width * raw.height * 3) throw bad(path, "JPEG decoded to an unexpected pixel layout");
  return { img: { width: raw.width, height: raw.height, channels: 3, data: raw.data }, orientation: info.orientation };
}

let YCC: { crR: Int32Array; cbB: Int32Array; crG: Int32Array; cbG: Int32Array } | null = null;
/** jdcolor.c's build_ycc_rgb_table (SCALEBITS 16). */
function yccTables() {
  if (YCC) return YCC;
  const FIX = (x: number) => Math.trunc(x * 65536 + 0.5);
  const half = 1 << 15;
  const crR = new Int32Array(256), cbB = new Int32Array(256), crG = new Int32Array(256), cbG = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    const x = i - 128;
    crR[i] = (FIX(1.402) * x + half) >> 16;
    cbB[i] = (FIX(1.772) * x + half) >> 16;
    crG[i] = -FIX(0.71414) * x;
    cbG[i] = -FIX(0.34414) * x + half;
  }
  YCC = { crR, cbB, crG, cbG };
  return YCC;
}

/**
 * jdsample.c's upsampling of a cw×ch plane to (cw·sh)×(ch·sv), cropped to W×H: the "fancy"
 * triangle filters for h2v1 and h2v2 (only when the plane is wider than 2 samples) and
 * h1v2 (libjpeg-turbo), plain replication for every other integral ratio. Rows above and
 * below the image repeat the edge row (libjpeg's context rows).
 */
function upsampleFancy(p: Uint8Array, cw: number, ch: number, sh: number, sv: number, W: number, H: number): Uint8Array {
  const out = new Uint8Array(W * H);
  const mode = sh === 2 && sv === 1 && cw > 2 ? "h2v1" : sh === 2 && sv === 2 && cw > 2 ? "h2v2" : sh === 1 && sv === 2 ? "h1v2" : "rep";
  const row = new Int32Array(cw * sh);
  const colsum = new Int32Array(cw);
  for (let oy = 0; oy < H; oy++) {
    const y = Math.floor(oy / sv);
    const r = y * cw;
    if (mode === "h2v2" || mode === "h1v2") {
      // vertical triangle: 3/4 nearer row + 1/4 further row
      const upper = oy % 2 === 0;
      const other = Math.min(Math.max(upper ? y - 1 : y + 1, 0), ch - 1);
      for (let x = 0; x < cw; x++) colsum[x] = p[r + x] * 3 + p[other * cw + x];
      if (mode === "h2v2") {
        row[0] = (colsum[0] * 4 + 8) >> 4;
        row[1] = (colsum[0] * 3 + colsum[1] + 7) >> 4;
        for (let x = 1; x < cw - 1; x++) {
          row[2 * x] = (colsum[x] * 3 + colsum[x - 1] + 8) >> 4;
          row[2 * x + 1] = (colsum[x] * 3 + colsum[x + 1] + 7) >> 4;
        }
        row[2 * cw - 2] = (colsum[cw - 1] * 3 + colsum[cw - 2] + 8) >> 4;
        row[2 * cw - 1] = (colsum[cw - 1] * 4 + 7) >> 4;
      } else {
        const bias = upper ? 1 : 2;
        for (let x = 0; x < cw; x++) row[x] = (colsum[x] + bias) >> 2;
      }
    } else if (mode === "h2v1") {
      row[0] = p[r];
      row[1] = (p[r] * 3 + p[r + 1] + 2) >> 2;
      for (let x = 1; x < cw - 1; x++) {
        const v = p[r + x] * 3;
        row[2 * x] = (v + p[r + x - 1] + 1) >> 2;
        row[2 * x + 1] = (v + p[r + x + 1] + 2) >> 2;
      }
      row[2 * cw - 2] = (p[r + cw - 1] * 3 + p[r + cw - 2] + 1) >> 2;
      row[2 * cw - 1] = p[r + cw - 1];
    } else {
      for (let x = 0; x < cw; x++) for (let k = 0; k < sh; k++) row[x * sh + k] = p[r + x];
    }
    for (let x = 0; x < W; x++) out[oy * W + x] = row[x];
  }
  return out;
}

/**
 * Loads a PNG or JPEG as 8-bit RGB, as diffusers' load_image does with Pillow
 * (EXIF orientation applied, then convert("RGB")). Errors: E_BAD_IMAGE naming the file.
 */
export async function loadImage(path: string, opts: LoadOptions = {}): Promise<RgbImage> {
  const b = await readBytes(path);
  return decodeImage(b, path, opts);
}

/** loadImage on bytes already in memory; `name` is used in error messages. */
export function decodeImage(b: Uint8Array, name: string, opts: LoadOptions = {}): RgbImage {
  const kind = sniff(b);
  let r: { img: RgbImage; orientation: number };
  if (kind === "png") r = decodePng(b, name, opts);
  else if (kind === "jpeg") r = decodeJpeg(b, name, opts);
  else if (kind === "empty file") throw bad(name, "file is empty");
  else throw bad(name, `unsupported image format (${kind === "unknown" ? "not a PNG or JPEG" : kind}); use PNG or JPEG`);
  const o = opts.exifTranspose === false ? 1 : r.orientation;
  return applyOrientation(r.img, o) as RgbImage;
}

// ---------------------------------------------------------------------------------
// writing

export interface SavePngOptions {
  /** text chunks, e.g. { parameters: "..." } as A1111 writes them */
  text?: Record<string, string>;
  /** write one gray channel (from a 1-channel image, or channel 0 of RGB) */
  gray?: boolean;
  /** 16-bit samples; 8-bit data is widened ×257 */
  bits16?: boolean;
}

/** Image data for savePng: 8-bit HWC, or 16-bit (for 16-bit depth maps). */
export interface SaveImage {
  width: number;
  height: number;
  channels?: number;
  data: Uint8Array | Uint16Array;
}

/** PNG bytes for an image (see savePng). */
export function encodePng(img: SaveImage, opts: SavePngOptions = {}): Uint8Array {
  const C = img.channels ?? 3;
  const { width: W, height: H } = img;
  if (!(C === 1 || C === 3 || C === 4)) throw new SsdError("E_BAD_PARAM", `savePng: ${C} channels are not supported (1, 3 or 4)`);
  if (img.data.length !== W * H * C) throw new SsdError("E_SHAPE", `savePng: data has ${img.data.length} values, ${W}x${H}x${C} needs ${W * H * C}`);
  const gray = opts.gray || C === 1;
  const bits16 = !!opts.bits16 || img.data instanceof Uint16Array;
  const outC = gray ? 1 : 3;
  const n = W * H;
  let pixels: Buffer;
  if (bits16) {
    const wide = img.data instanceof Uint16Array ? 1 : 257;
    const u = new Uint16Array(n * outC);
    for (let i = 0; i < n; i++) for (let c = 0; c < outC; c++) u[i * outC + c] = img.data[i * C + c] * wide;
    pixels = Buffer.from(u.buffer);
  } else {
    const u = new Uint8Array(n * outC);
    for (let i = 0; i < n; i++) for (let c = 0; c < outC; c++) u[i * outC + c] = img.data[i * C + c];
    pixels = Buffer.from(u.buffer);
  }
  const colorType = gray ? 0 : 2;
  const encoded = new Uint8Array(
    PNG.sync.write({ width: W, height: H, data: pixels } as any, {
      colorType,
      inputColorType: colorType,
      inputHasAlpha: false,
      bitDepth: bits16 ? 16 : 8,
    } as any),
  );
  const text = Object.entries(opts.text ?? {});
  if (text.length === 0) return encoded;
  // text chunks go right after IHDR, before the image data, as Pillow places them
  const ihdrEnd = 8 + 12 + 13;
  const extra = text.map(([k, v]) => textChunk(k, v));
  const total = encoded.length + extra.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(total);
  out.set(encoded.subarray(0, ihdrEnd));
  let p = ihdrEnd;
  for (const c of extra) { out.set(c, p); p += c.length; }
  out.set(encoded.subarray(ihdrEnd), p);
  return out;
}

/** Writes bytes atomically: a temp file in the same folder, then rename over the target. */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`);
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (e: any) {
    await unlink(tmp).catch(() => {});
    throw new SsdError("E_IO", `cannot write ${path}: ${e?.code ?? e?.message ?? e}`, { cause: e });
  }
}

/** Encodes and writes a PNG atomically, with optional text chunks, gray and 16-bit output. */
export async function savePng(path: string, img: SaveImage, opts: SavePngOptions = {}): Promise<void> {
  await writeFileAtomic(path, encodePng(img, opts));
}

// ---------------------------------------------------------------------------------
// conversions used by the pipeline (diffusers' VaeImageProcessor)

/**
 * uint8 HWC RGB → float32 CHW: `np.array(img).astype(float32) / 255`, then `2x - 1`
 * when `range` is "-1,1" (VaeImageProcessor.normalize); [0, 1] for control images.
 */
export function imageToChw(img: PixelImage, range: "-1,1" | "0,1" = "-1,1"): Float32Array {
  const { width: W, height: H, channels: C, data } = img;
  const hw = W * H;
  const out = new Float32Array(C * hw);
  for (let i = 0; i < hw; i++) {
    for (let c = 0; c < C; c++) {
      const x = Math.fround(data[i * C + c] / 255);
      out[c * hw + i] = range === "-1,1" ? Math.fround(2 * x - 1) : x;
    }
  }
  return out;
}

/** numpy's round(): half to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * float32 CHW (C = 3 or 1) → uint8 HWC, as VaeImageProcessor.postprocess(output_type="pil"):
 * `(x / 2 + 0.5).clamp(0, 1)` for "-1,1" input, then `(x * 255).round()` (half to even).
 */
export function chwToImage(chw: Float32Array, channels: number, height: number, width: number, range: "-1,1" | "0,1" = "-1,1"): PixelImage {
  const hw = width * height;
  if (chw.length !== channels * hw) throw new SsdError("E_SHAPE", `chwToImage: ${chw.length} values for ${channels}x${height}x${width}`);
  const out = new Uint8Array(hw * channels);
  for (let c = 0; c < channels; c++) {
    for (let i = 0; i < hw; i++) {
      let x = chw[c * hw + i];
      if (range === "-1,1") x = Math.fround(Math.fround(x / 2) + 0.5);
      // clamp; NaN stays NaN in torch and becomes 0 through numpy's uint8 cast on x86
      x = x < 0 ? 0 : x > 1 ? 1 : x;
      const v = Number.isNaN(x) ? 0 : roundHalfEven(Math.fround(x * 255));
      out[i * channels + c] = v;
    }
  }
  return { width, height, channels, data: out };
}

export interface VaePreprocessOptions {
  /** target size; defaults to the image's, rounded down to a multiple of vaeScaleFactor */
  width?: number;
  height?: number;
  vaeScaleFactor: number;
  /** [-1, 1] for the VAE (default), false for [0, 1] control images */
  normalize?: boolean;
  /** VaeImageProcessor's `resample` config (default "lanczos") */
  resample?: PilFilter;
}

/**
 * diffusers' VaeImageProcessor.preprocess for one PIL image: convert to RGB, size from
 * get_default_height_width (rounded down to the VAE factor), Pillow resize, then CHW
 * float32 in [-1, 1] (or [0, 1] for the ControlNet's control image processor).
 */
export function vaePreprocess(img: PixelImage, o: VaePreprocessOptions): { data: Float32Array; width: number; height: number } {
  const f = o.vaeScaleFactor;
  const w0 = o.width ?? img.width, h0 = o.height ?? img.height;
  const width = w0 - (w0 % f), height = h0 - (h0 % f);
  if (width < 1 || height < 1) throw new SsdError("E_BAD_PARAM", `image size ${w0}x${h0} is smaller than the VAE factor ${f}`);
  const rgb = grayToRgb(img);
  const sized = width === rgb.width && height === rgb.height ? rgb : resizePil(rgb, width, height, o.resample ?? "lanczos");
  return { data: imageToChw(sized, o.normalize === false ? "0,1" : "-1,1"), width, height };
}

/** Gray (1-channel) image → RGB by replication, as Pillow's convert("RGB") of an "L" image. */
export function grayToRgb(img: PixelImage): RgbImage {
  if (img.channels === 3) return img as RgbImage;
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = img.data[i * img.channels];
  return { width: img.width, height: img.height, channels: 3, data: out };
}

// ---------------------------------------------------------------------------------
// A JPEG decoder that reproduces libjpeg-turbo's default output (what Pillow returns):
// Huffman baseline and progressive, jpeg_idct_islow, fancy chroma upsampling, integer
// YCbCr → RGB (CMYK/YCCK as Pillow converts them). 12-bit samples and 2-component
// files are left to jpeg-js; arithmetic-coded and lossless files are refused earlier.

/** zigzag position → natural (row-major) index in the 8×8 block */
const ZIGZAG = new Uint8Array([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
  28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
  54, 47, 55, 62, 63,
]);

interface Huff {
  maxcode: Int32Array;
  mincode: Int32Array;
  valptr: Int32Array;
  symbols: Uint8Array;
  /** 9-bit lookahead: (length << 8) | symbol, 0 when the code is longer */
  look: Uint16Array;
}

interface JComp {
  id: number;
  h: number;
  v: number;
  tq: number;
  /** blocks per row / column, padded to whole MCUs */
  bw: number;
  bh: number;
  /** coefficients in natural order, 16-bit as libjpeg's JCOEF */
  coef: Int16Array;
  pred: number;
  dc: number;
  ac: number;
}

class Unsupported extends Error {}

const LOOK = 9;

function buildHuff(counts: Uint8Array, symbols: Uint8Array): Huff {
  const maxcode = new Int32Array(18).fill(-1), mincode = new Int32Array(17), valptr = new Int32Array(17);
  const look = new Uint16Array(1 << LOOK);
  let code = 0, k = 0;
  for (let l = 1; l <= 16; l++) {
    valptr[l] = k;
    mincode[l] = code;
    if (l <= LOOK) {
      for (let c = 0; c < counts[l - 1]; c++) {
        const first = (code + c) << (LOOK - l);
        look.fill((l << 8) | symbols[k + c], first, first + (1 << (LOOK - l)));
      }
    }
    code += counts[l - 1];
    k += counts[l - 1];
    maxcode[l] = counts[l - 1] ? code - 1 : -1;
    code <<= 1;
  }
  return { maxcode, mincode, valptr, symbols, look };
}

/** Entropy-coded segment reader; past a marker or the end it yields zero bits, as libjpeg does. */
class Bits {
  p: number;
  acc = 0;
  n = 0;
  marker = false;
  constructor(readonly d: Uint8Array, start: number) { this.p = start; }
  /** tops the accumulator up to more than 16 bits (at most 24) */
  private fill(): void {
    while (this.n <= 16) {
      let byte = 0;
      if (!this.marker && this.p < this.d.length) {
        byte = this.d[this.p];
        if (byte === 0xff) {
          if (this.d[this.p + 1] === 0) this.p += 2;
          else { this.marker = true; byte = 0; }
        } else this.p++;
      }
      this.acc = (this.acc << 8) | byte;
      this.n += 8;
    }
  }
  bit(): number {
    if (this.n === 0) this.fill();
    this.n--;
    const v = (this.acc >>> this.n) & 1;
    this.acc &= (1 << this.n) - 1;
    return v;
  }
  bits(s: number): number {
    if (s === 0) return 0;
    if (this.n < s) this.fill();
    this.n -= s;
    const v = this.acc >>> this.n;
    this.acc &= (1 << this.n) - 1;
    return v;
  }
  huff(h: Huff, path: string): number {
    if (this.n < 16) this.fill();
    const e = h.look[this.acc >>> (this.n - LOOK)];
    if (e) {
      this.n -= e >> 8;
      this.acc &= (1 << this.n) - 1;
      return e & 255;
    }
    let code = this.bits(LOOK);
    for (let l = LOOK + 1; l <= 16; l++) {
      code = (code << 1) | this.bit();
      if (code <= h.maxcode[l]) return h.symbols[h.valptr[l] + code - h.mincode[l]];
    }
    throw bad(path, "JPEG is corrupt (bad Huffman code)");
  }
  /** After a restart interval: drop buffered bits and step over the RSTn marker. */
  restart(): void {
    this.n = 0;
    this.acc = 0;
    this.marker = false;
    while (this.p + 1 < this.d.length && !(this.d[this.p] === 0xff && this.d[this.p + 1] >= 0xd0 && this.d[this.p + 1] <= 0xd7)) this.p++;
    this.p += 2;
  }
  /** Position of the marker that ends this scan. */
  end(): number {
    let p = this.p;
    while (p + 1 < this.d.length && !(this.d[p] === 0xff && this.d[p + 1] !== 0 && !(this.d[p + 1] >= 0xd0 && this.d[p + 1] <= 0xd7))) p++;
    return p;
  }
}

const extend = (v: number, s: number) => (s === 0 ? 0 : v < 1 << (s - 1) ? v - (1 << s) + 1 : v);

interface ExactJpeg {
  width: number;
  height: number;
  rgb: Uint8Array;
}

/** Decodes as libjpeg-turbo + Pillow convert("RGB") would, or returns null when the file needs jpeg-js. */
function decodeJpegExact(d: Uint8Array, path: string, jfif: boolean, adobe: number): ExactJpeg | null {
  const u16 = (o: number) => (d[o] << 8) | d[o + 1];
  const qt: (Int32Array | undefined)[] = [];
  const dcT: (Huff | undefined)[] = [], acT: (Huff | undefined)[] = [];
  let comps: JComp[] = [];
  let W = 0, H = 0, maxH = 1, maxV = 1, mcusX = 0, mcusY = 0, progressive = false, ri = 0, frame = false;
  let p = 2;
  try {
    for (;;) {
      while (p < d.length && d[p] !== 0xff) p++;
      while (p < d.length && d[p] === 0xff) p++;
      if (p >= d.length) break;
      const m = d[p++];
      if (m === 0xd9) break;
      if ((m >= 0xd0 && m <= 0xd7) || m === 0x01) continue;
      const len = u16(p);
      const s = p + 2, e = p + len;
      if (m === 0xdb) {
        for (let q = s; q < e;) {
          const pq = d[q] >> 4, tq = d[q] & 15;
          const t = new Int32Array(64);
          for (let k = 0; k < 64; k++) t[ZIGZAG[k]] = pq ? u16(q + 1 + 2 * k) : d[q + 1 + k];
          qt[tq] = t;
          q += 1 + 64 * (pq ? 2 : 1);
        }
      } else if (m === 0xc4) {
        for (let q = s; q < e;) {
          const tc = d[q] >> 4, th = d[q] & 15;
          const counts = d.subarray(q + 1, q + 17);
          let total = 0;
          for (const c of counts) total += c;
          const h = buildHuff(counts, d.slice(q + 17, q + 17 + total));
          (tc === 0 ? dcT : acT)[th] = h;
          q += 17 + total;
        }
      } else if (m === 0xdd) {
        ri = u16(s);
      } else if (m === 0xc0 || m === 0xc1 || m === 0xc2) {
        if (d[s] !== 8) throw new Unsupported("12-bit");
        progressive = m === 0xc2;
        H = u16(s + 1);
        W = u16(s + 3);
        const nc = d[s + 5];
        if (nc !== 1 && nc !== 3 && nc !== 4) throw new Unsupported(`${nc} components`);
        comps = [];
        for (let i = 0; i < nc; i++) {
          const o = s + 6 + 3 * i;
          comps.push({ id: d[o], h: d[o + 1] >> 4, v: d[o + 1] & 15, tq: d[o + 2], bw: 0, bh: 0, coef: new Int16Array(0), pred: 0, dc: 0, ac: 0 });
        }
        if (nc === 1) { comps[0].h = 1; comps[0].v = 1; } // a lone component is never subsampled
        maxH = Math.max(...comps.map((c) => c.h));
        maxV = Math.max(...comps.map((c) => c.v));
        for (const c of comps) {
          // libjpeg handles integral ratios only (fractional ones are an error there too)
          if (c.h < 1 || c.v < 1 || maxH % c.h !== 0 || maxV % c.v !== 0) throw new Unsupported("sampling");
        }
        mcusX = Math.ceil(W / (8 * maxH));
        mcusY = Math.ceil(H / (8 * maxV));
        for (const c of comps) {
          c.bw = mcusX * c.h;
          c.bh = mcusY * c.v;
          c.coef = new Int16Array(c.bw * c.bh * 64);
        }
        frame = true;
      } else if (m >= 0xc3 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
        throw new Unsupported("coding");
      } else if (m === 0xda) {
        if (!frame) throw bad(path, "JPEG is corrupt (scan before frame header)");
        const ns = d[s];
        if (ns < 1 || ns > comps.length) throw bad(path, `JPEG is corrupt (scan with ${ns} components)`);
        const sc: JComp[] = [];
        for (let i = 0; i < ns; i++) {
          const c = comps.find((x) => x.id === d[s + 1 + 2 * i]);
          if (!c) throw bad(path, "JPEG is corrupt (scan names an unknown component)");
          c.dc = d[s + 2 + 2 * i] >> 4;
          c.ac = d[s + 2 + 2 * i] & 15;
          sc.push(c);
        }
        const o = s + 1 + 2 * ns;
        const ss = d[o], se = d[o + 1], ah = d[o + 2] >> 4, al = d[o + 2] & 15;
        // libjpeg refuses these too ("Invalid progressive parameters"); a sequential scan
        // only warns about them and decodes all 64 coefficients, as decodeBlock does
        const okScan = !progressive || (ss <= se && se <= 63 && (ss === 0 ? se === 0 : ns === 1) && al <= 13 && ah <= 13);
        if (!okScan) throw bad(path, `JPEG is corrupt (invalid scan parameters Ss=${ss} Se=${se} Ah=${ah} Al=${al})`);
        p = decodeScan(d, e, sc, ns > 1, progressive, ss, se, ah, al, ri, mcusX, mcusY, maxH, maxV, W, H, dcT, acT, path);
        continue;
      }
      p = e;
    }
  } catch (err) {
    if (err instanceof Unsupported) return null;
    throw err;
  }
  if (!frame) throw bad(path, "JPEG has no frame header (SOF)");
  // dequantise + IDCT each component into its plane, cropped to the downsampled size
  const planes: Uint8Array[] = [];
  for (const c of comps) {
    const q = qt[c.tq];
    if (!q) throw bad(path, `JPEG is corrupt (missing quantisation table ${c.tq})`);
    const stride = c.bw * 8;
    const full = new Uint8Array(stride * c.bh * 8);
    const ws = new Int32Array(64);
    for (let by = 0; by < c.bh; by++) for (let bx = 0; bx < c.bw; bx++) {
      idctIslow(c.coef, (by * c.bw + bx) * 64, q, ws, full, by * 8 * stride + bx * 8, stride);
    }
    const cw = Math.ceil((W * c.h) / maxH), ch = Math.ceil((H * c.v) / maxV);
    const sh = maxH / c.h, sv = maxV / c.v;
    const small = new Uint8Array(cw * ch);
    for (let y = 0; y < ch; y++) small.set(full.subarray(y * stride, y * stride + cw), y * cw);
    planes.push(sh === 1 && sv === 1 ? cropPlane(small, cw, W, H) : upsampleFancy(small, cw, ch, sh, sv, W, H));
  }
  const n = W * H;
  const rgb = new Uint8Array(n * 3);
  if (planes.length === 1) {
    for (let i = 0; i < n; i++) rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = planes[0][i];
  } else if (planes.length === 4) {
    // libjpeg hands Pillow CMYK (YCCK converted when the Adobe flag says so); Pillow reads
    // it inverted ("CMYK;I", Adobe convention) and convert("RGB") applies cmyk2rgb.
    const ycck = adobe > 0;
    const { crR, cbB, crG, cbG } = yccTables();
    const mul255 = (a: number, b: number) => { const t = a * b + 128; return ((t >> 8) + t) >> 8; };
    for (let i = 0; i < n; i++) {
      let c = planes[0][i], m = planes[1][i], yy = planes[2][i];
      if (ycck) {
        const y = c, cb = m, cr = yy;
        c = clamp8(255 - (y + crR[cr]));
        m = clamp8(255 - (y + ((cbG[cb] + crG[cr]) >> 16)));
        yy = clamp8(255 - (y + cbB[cb]));
      }
      c = 255 - c; m = 255 - m; yy = 255 - yy;
      const nk = planes[3][i]; // 255 - K after the inversion
      rgb[i * 3] = clamp8(nk - mul255(c, nk));
      rgb[i * 3 + 1] = clamp8(nk - mul255(m, nk));
      rgb[i * 3 + 2] = clamp8(nk - mul255(yy, nk));
    }
  } else {
    const rgbIds = comps[0].id === 0x52 && comps[1].id === 0x47 && comps[2].id === 0x42;
    const isRgb = !jfif && (adobe === 0 || (adobe < 0 && rgbIds));
    if (isRgb) {
      for (let i = 0; i < n; i++) { rgb[i * 3] = planes[0][i]; rgb[i * 3 + 1] = planes[1][i]; rgb[i * 3 + 2] = planes[2][i]; }
    } else {
      const { crR, cbB, crG, cbG } = yccTables();
      for (let i = 0; i < n; i++) {
        const y = planes[0][i], cb = planes[1][i], cr = planes[2][i];
        rgb[i * 3] = clamp8(y + crR[cr]);
        rgb[i * 3 + 1] = clamp8(y + ((cbG[cb] + crG[cr]) >> 16));
        rgb[i * 3 + 2] = clamp8(y + cbB[cb]);
      }
    }
  }
  return { width: W, height: H, rgb };
}

const clamp8 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);

function cropPlane(p: Uint8Array, pw: number, W: number, H: number): Uint8Array {
  if (pw === W && p.length === W * H) return p;
  const out = new Uint8Array(W * H);
  for (let y = 0; y < H; y++) out.set(p.subarray(y * pw, y * pw + W), y * W);
  return out;
}

function decodeScan(
  d: Uint8Array, start: number, sc: JComp[], interleaved: boolean, progressive: boolean,
  ss: number, se: number, ah: number, al: number, ri: number,
  mcusX: number, mcusY: number, maxH: number, maxV: number, W: number, H: number,
  dcT: (Huff | undefined)[], acT: (Huff | undefined)[], path: string,
): number {
  const br = new Bits(d, start);
  let eobrun = 0;
  for (const c of sc) c.pred = 0;
  const table = (t: (Huff | undefined)[], i: number) => {
    const h = t[i];
    if (!h) throw bad(path, `JPEG is corrupt (missing Huffman table ${i})`);
    return h;
  };

  const decodeBlock = (c: JComp, off: number) => {
    const co = c.coef;
    if (!progressive) {
      const t = br.huff(table(dcT, c.dc), path);
      c.pred += extend(br.bits(t), t);
      co[off] = c.pred;
      const ac = table(acT, c.ac);
      for (let k = 1; k < 64; k++) {
        const rs = br.huff(ac, path);
        const r = rs >> 4, s = rs & 15;
        if (s) {
          k += r;
          if (k > 63) break;
          co[off + ZIGZAG[k]] = extend(br.bits(s), s);
        } else if (r === 15) k += 15;
        else break;
      }
      return;
    }
    if (ss === 0) {
      if (ah === 0) {
        const t = br.huff(table(dcT, c.dc), path);
        c.pred += extend(br.bits(t), t);
        co[off] = c.pred * (1 << al);
      } else if (br.bit()) co[off] |= 1 << al;
      return;
    }
    const ac = table(acT, c.ac);
    if (ah === 0) {
      if (eobrun > 0) { eobrun--; return; }
      for (let k = ss; k <= se; k++) {
        const rs = br.huff(ac, path);
        const r = rs >> 4, s = rs & 15;
        if (s) {
          k += r;
          if (k > 63) break;
          co[off + ZIGZAG[k]] = extend(br.bits(s), s) * (1 << al);
        } else if (r < 15) {
          eobrun = (1 << r) - 1;
          if (r) eobrun += br.bits(r);
          break;
        } else k += 15;
      }
      return;
    }
    // AC successive approximation (libjpeg's decode_mcu_AC_refine)
    const p1 = 1 << al, m1 = -1 * (1 << al);
    let k = ss;
    if (eobrun === 0) {
      for (; k <= se; k++) {
        const rs = br.huff(ac, path);
        let r = rs >> 4;
        let s = rs & 15;
        if (s) {
          s = br.bit() ? p1 : m1;
        } else if (r !== 15) {
          eobrun = 1 << r;
          if (r) eobrun += br.bits(r);
          break;
        }
        do {
          const pos = off + ZIGZAG[k];
          if (co[pos] !== 0) {
            if (br.bit() && (co[pos] & p1) === 0) co[pos] += co[pos] >= 0 ? p1 : m1;
          } else {
            if (--r < 0) break;
          }
          k++;
        } while (k <= se);
        if (s && k <= 63) co[off + ZIGZAG[k]] = s;
      }
    }
    if (eobrun > 0) {
      for (; k <= se; k++) {
        const pos = off + ZIGZAG[k];
        if (co[pos] !== 0 && br.bit() && (co[pos] & p1) === 0) co[pos] += co[pos] >= 0 ? p1 : m1;
      }
      eobrun--;
    }
  };

  let mcu = 0;
  const restartCheck = () => {
    if (ri && mcu > 0 && mcu % ri === 0) {
      br.restart();
      for (const c of sc) c.pred = 0;
      eobrun = 0;
    }
  };
  if (interleaved) {
    for (let my = 0; my < mcusY; my++) for (let mx = 0; mx < mcusX; mx++) {
      restartCheck();
      for (const c of sc) {
        for (let v = 0; v < c.v; v++) for (let h = 0; h < c.h; h++) {
          decodeBlock(c, ((my * c.v + v) * c.bw + mx * c.h + h) * 64);
        }
      }
      mcu++;
    }
  } else {
    // one component: its own raster of blocks, without MCU padding
    const c = sc[0];
    const bw = Math.ceil(Math.ceil((W * c.h) / maxH) / 8), bh = Math.ceil(Math.ceil((H * c.v) / maxV) / 8);
    for (let by = 0; by < bh; by++) for (let bx = 0; bx < bw; bx++) {
      restartCheck();
      decodeBlock(c, (by * c.bw + bx) * 64);
      mcu++;
    }
  }
  return br.end();
}

// jidctint.c constants (CONST_BITS 13)
const F0_298 = 2446, F0_390 = 3196, F0_541 = 4433, F0_765 = 6270, F0_899 = 7373, F1_175 = 9633, F1_501 = 12299,
  F1_847 = 15137, F1_961 = 16069, F2_053 = 16819, F2_562 = 20995, F3_072 = 25172;

/**
 * jidctint.c's 1-D 8-point IDCT (even part, then odd part) of x0..x7 into
 * y[0..7], scaled up by 2^CONST_BITS; the caller descales. In doubles, which
 * hold every intermediate exactly (libjpeg's are 32-bit integers).
 */
function idct8(x0: number, x1: number, x2: number, x3: number, x4: number, x5: number, x6: number, x7: number, y: Float64Array): void {
  // even part: x0, x2, x4, x6
  const e = (x2 + x6) * F0_541;
  const e2 = e + x6 * -F1_847, e3 = e + x2 * F0_765;
  const e0 = (x0 + x4) * 8192, e1 = (x0 - x4) * 8192;
  const t10 = e0 + e3, t13 = e0 - e3, t11 = e1 + e2, t12 = e1 - e2;
  // odd part: x7, x5, x3, x1
  const z5 = (x7 + x3 + x5 + x1) * F1_175;
  const z1 = (x7 + x1) * -F0_899, z2 = (x5 + x3) * -F2_562;
  const z3 = (x7 + x3) * -F1_961 + z5, z4 = (x5 + x1) * -F0_390 + z5;
  const o0 = x7 * F0_298 + z1 + z3, o1 = x5 * F2_053 + z2 + z4;
  const o2 = x3 * F3_072 + z2 + z3, o3 = x1 * F1_501 + z1 + z4;
  y[0] = t10 + o3; y[7] = t10 - o3;
  y[1] = t11 + o2; y[6] = t11 - o2;
  y[2] = t12 + o1; y[5] = t12 - o1;
  y[3] = t13 + o0; y[4] = t13 - o0;
}
// idct8's output (the decoder runs synchronously, one block at a time)
const IDCT_Y = new Float64Array(8);

/** libjpeg's jpeg_idct_islow: dequantise, 2-D IDCT in 32-bit fixed point, +128, clamp. */
function idctIslow(co: Int16Array, off: number, q: Int32Array, ws: Int32Array, out: Uint8Array, o: number, stride: number): void {
  const CB = 13, P1 = 2;
  const y = IDCT_Y;
  // pass 1: columns, into ws scaled up by 2^PASS1_BITS
  const n = CB - P1, r = 1 << (n - 1), div = 2 ** n;
  for (let c = 0; c < 8; c++) {
    const i = off + c;
    if (co[i + 8] === 0 && co[i + 16] === 0 && co[i + 24] === 0 && co[i + 32] === 0 && co[i + 40] === 0 && co[i + 48] === 0 && co[i + 56] === 0) {
      const dc = co[i] * q[c] * 4;
      for (let k = 0; k < 8; k++) ws[c + 8 * k] = dc;
      continue;
    }
    idct8(co[i] * q[c], co[i + 8] * q[c + 8], co[i + 16] * q[c + 16], co[i + 24] * q[c + 24], co[i + 32] * q[c + 32], co[i + 40] * q[c + 40], co[i + 48] * q[c + 48], co[i + 56] * q[c + 56], y);
    for (let k = 0; k < 8; k++) ws[c + 8 * k] = Math.floor((y[k] + r) / div);
  }
  // pass 2: rows, descale by 2^(CONST_BITS + PASS1_BITS + 3), +128, range limit
  const n2 = CB + P1 + 3, r2 = 1 << (n2 - 1), div2 = 2 ** n2;
  const lim = (v: number) => { const u = ((v << 22) >> 22) + 128; return u < 0 ? 0 : u > 255 ? 255 : u; };
  for (let row = 0; row < 8; row++) {
    const w = row * 8;
    const dst = o + row * stride;
    if (ws[w + 1] === 0 && ws[w + 2] === 0 && ws[w + 3] === 0 && ws[w + 4] === 0 && ws[w + 5] === 0 && ws[w + 6] === 0 && ws[w + 7] === 0) {
      const v = lim(Math.floor((ws[w] + (1 << (P1 + 2))) / (1 << (P1 + 3))));
      for (let k = 0; k < 8; k++) out[dst + k] = v;
      continue;
    }
    idct8(ws[w], ws[w + 1], ws[w + 2], ws[w + 3], ws[w + 4], ws[w + 5], ws[w + 6], ws[w + 7], y);
    for (let k = 0; k < 8; k++) out[dst + k] = lim(Math.floor((y[k] + r2) / div2));
  }
}
