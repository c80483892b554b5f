// Image input/output: PNG and JPEG decoding with Pillow's convert("RGB") semantics,
// EXIF orientation, text chunks, atomic writes, errors, and the tensor conversions.

import { suite } from "uvu";
import * as assert from "uvu/assert";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateSync, inflateSync } from "node:zlib";
import { Buffer } from "node:buffer";
import pngjs from "pngjs";
import jpeg from "jpeg-js";
import { isSsdError } from "../engine/errors.ts";
import {
  loadImage, decodeImage, savePng, readPngText, crc32, makeChunk, applyOrientation, imageToChw, chwToImage, encodePng, MAX_IMAGE_PIXELS, vaePreprocess,
} from "../pipeline/image.ts";
import { resizePil, type PixelImage } from "../pipeline/resample.ts";
import { synthImage } from "./lib/harness.ts";

const { PNG } = pngjs;
const t = suite("image");
const dir = mkdtempSync(join(tmpdir(), "ssd-image-test-"));

// ---- a hand-made PNG writer, for the formats pngjs cannot write (palette, low bit depths, 16-bit LA, tRNS, eXIf) ----

const chunk = makeChunk;

/** rows: already packed scanline bytes (without the filter byte) */
function rawPng(w: number, h: number, depth: number, colorType: number, rows: Uint8Array[], extra: { type: string; data: Uint8Array }[] = []): Uint8Array {
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, w);
  dv.setUint32(4, h);
  ihdr[8] = depth; ihdr[9] = colorType;
  const filtered = Buffer.concat(rows.map((r) => Buffer.concat([Buffer.from([0]), Buffer.from(r)])));
  const parts = [
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    ...extra.map((e) => chunk(e.type, e.data)),
    chunk("IDAT", new Uint8Array(deflateSync(filtered))),
    chunk("IEND", new Uint8Array(0)),
  ];
  return new Uint8Array(Buffer.concat(parts));
}

function be16(values: number[]): Uint8Array {
  const o = new Uint8Array(values.length * 2);
  values.forEach((v, i) => { o[2 * i] = v >> 8; o[2 * i + 1] = v & 255; });
  return o;
}

function write(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

async function expectBadImage(p: string, re?: RegExp): Promise<void> {
  try {
    await loadImage(p);
  } catch (e: any) {
    assert.ok(isSsdError(e, "E_BAD_IMAGE"), `expected E_BAD_IMAGE, got ${e?.code}: ${e?.message}`);
    assert.ok(e.message.includes(p), `message names the file: ${e.message}`);
    if (re) assert.match(e.message, re);
    return;
  }
  assert.unreachable(`${p} loaded without error`);
}

// -------------------------------------------------------------------------------

t("crc32 matches the standard check value", () => {
  assert.is(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});

t("RGB PNG round trip, gray and 16-bit output, text chunks", async () => {
  const img = synthImage(7, 5, 3, 1);
  const p = join(dir, "rgb.png");
  const text = { parameters: "a cat, Steps: 30, Seed: 18446744073709551615", Comment: "naïve café", uni: "東京 🐱" };
  await savePng(p, img, { text });
  const back = await loadImage(p);
  assert.is(back.width, 7);
  assert.is(back.height, 5);
  assert.equal(Array.from(back.data), Array.from(img.data));
  assert.equal(await readPngText(p), text);
  // another reader sees the same pixels (the chunks we spliced in keep the file valid)
  const viaPngjs = PNG.sync.read(Buffer.from(readFileSync(p)));
  assert.is(viaPngjs.data[0], img.data[0]);
  assert.is(viaPngjs.data[4 * 6 + 2], img.data[3 * 6 + 2]);

  const g = synthImage(6, 4, 1, 2);
  const pg = join(dir, "gray.png");
  await savePng(pg, g, { gray: true });
  const gb = readFileSync(pg);
  assert.is(gb[25], 0, "color type 0 (gray)");
  assert.is(gb[24], 8, "8-bit");
  const g3 = await loadImage(pg);
  for (let i = 0; i < 24; i++) assert.equal([g3.data[3 * i], g3.data[3 * i + 1], g3.data[3 * i + 2]], [g.data[i], g.data[i], g.data[i]]);

  // 16-bit gray depth map: Pillow's convert("RGB") clips mode "I" at 255; "scale" keeps the high byte
  const d16 = new Uint16Array([0, 100, 255, 256, 1000, 65535]);
  const p16 = join(dir, "d16.png");
  await savePng(p16, { width: 3, height: 2, channels: 1, data: d16 }, { gray: true, bits16: true });
  assert.is(readFileSync(p16)[24], 16);
  const pil = await loadImage(p16);
  assert.equal(Array.from(pil.data).filter((_, i) => i % 3 === 0), [0, 100, 255, 255, 255, 255]);
  const sc = await loadImage(p16, { gray16: "scale" });
  assert.equal(Array.from(sc.data).filter((_, i) => i % 3 === 0), [0, 0, 0, 1, 3, 255]);
});

t("savePng is atomic: no temp files left, an existing file is replaced whole", async () => {
  const sub = mkdtempSync(join(dir, "atomic-"));
  const p = join(sub, "out.png");
  await savePng(p, synthImage(4, 4, 3, 3));
  await savePng(p, synthImage(9, 2, 3, 4));
  assert.equal(readdirSync(sub), ["out.png"]);
  const b = await loadImage(p);
  assert.is(b.width, 9);
  // a failing write (folder does not exist) throws E_IO and leaves nothing behind
  try {
    await savePng(join(sub, "missing", "x.png"), synthImage(2, 2, 3, 5));
    assert.unreachable("wrote into a missing folder");
  } catch (e: any) {
    assert.ok(isSsdError(e, "E_IO"), String(e));
  }
  assert.equal(readdirSync(sub), ["out.png"]);
});

t("grayscale, gray+alpha, RGBA, palette, low-bit and 16-bit PNGs convert as Pillow's convert('RGB')", async () => {
  // 8-bit gray written by pngjs
  const gp = write("g8.png", new Uint8Array(PNG.sync.write({ width: 2, height: 1, data: Buffer.from([10, 250]) } as any, { colorType: 0, inputColorType: 0, inputHasAlpha: false } as any)));
  assert.equal(Array.from((await loadImage(gp)).data), [10, 10, 10, 250, 250, 250]);

  // RGBA: alpha dropped, colour kept even where fully transparent (no compositing)
  const rgba = Buffer.from([255, 0, 0, 0, 0, 255, 0, 128, 1, 2, 3, 255]);
  const rp = write("rgba.png", new Uint8Array(PNG.sync.write({ width: 3, height: 1, data: rgba } as any, { colorType: 6 } as any)));
  assert.equal(Array.from((await loadImage(rp)).data), [255, 0, 0, 0, 255, 0, 1, 2, 3]);

  // LA 8-bit
  const la = write("la8.png", rawPng(2, 1, 8, 4, [new Uint8Array([77, 0, 200, 255])]));
  assert.equal(Array.from((await loadImage(la)).data), [77, 77, 77, 200, 200, 200]);

  // palette (8-bit and 4-bit indices) with a tRNS chunk: palette colours, alpha ignored
  const plte = new Uint8Array([0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30]);
  const trns = new Uint8Array([0, 128]);
  const p8 = write("p8.png", rawPng(4, 1, 8, 3, [new Uint8Array([3, 2, 1, 0])], [{ type: "PLTE", data: plte }, { type: "tRNS", data: trns }]));
  assert.equal(Array.from((await loadImage(p8)).data), [10, 20, 30, 0, 255, 0, 255, 0, 0, 0, 0, 0]);
  const p4 = write("p4.png", rawPng(3, 1, 4, 3, [new Uint8Array([0x31, 0x20])], [{ type: "PLTE", data: plte }]));
  assert.equal(Array.from((await loadImage(p4)).data), [10, 20, 30, 255, 0, 0, 0, 255, 0]);

  // 1-, 2- and 4-bit gray scale to 0..255 (×255, ×85, ×17)
  const g1 = write("g1.png", rawPng(3, 1, 1, 0, [new Uint8Array([0b10100000])]));
  assert.equal(Array.from((await loadImage(g1)).data).filter((_, i) => i % 3 === 0), [255, 0, 255]);
  const g2 = write("g2.png", rawPng(4, 1, 2, 0, [new Uint8Array([0b00011011])]));
  assert.equal(Array.from((await loadImage(g2)).data).filter((_, i) => i % 3 === 0), [0, 85, 170, 255]);
  const g4 = write("g4.png", rawPng(2, 1, 4, 0, [new Uint8Array([0x3f])]));
  assert.equal(Array.from((await loadImage(g4)).data).filter((_, i) => i % 3 === 0), [51, 255]);

  // gray with a tRNS colour: the pixel keeps its value (pngjs alone would zero it)
  const gt = write("gtrns.png", rawPng(2, 1, 8, 0, [new Uint8Array([40, 41])], [{ type: "tRNS", data: be16([40]) }]));
  assert.equal(Array.from((await loadImage(gt)).data), [40, 40, 40, 41, 41, 41]);
  const ct = write("rgbtrns.png", rawPng(1, 1, 8, 2, [new Uint8Array([5, 6, 7])], [{ type: "tRNS", data: be16([5, 6, 7]) }]));
  assert.equal(Array.from((await loadImage(ct)).data), [5, 6, 7]);

  // 16-bit RGB, RGBA and LA: Pillow's ;16B unpackers keep the high byte
  const r16 = write("rgb16.png", rawPng(1, 1, 16, 2, [be16([0x12ff, 0xff00, 0x0080])]));
  assert.equal(Array.from((await loadImage(r16)).data), [0x12, 0xff, 0x00]);
  const a16 = write("rgba16.png", rawPng(1, 1, 16, 6, [be16([0x8001, 0x7fff, 0x0100, 0])]));
  assert.equal(Array.from((await loadImage(a16)).data), [0x80, 0x7f, 0x01]);
  const la16 = write("la16.png", rawPng(1, 1, 16, 4, [be16([0xabcd, 0x1234])]));
  assert.equal(Array.from((await loadImage(la16)).data), [0xab, 0xab, 0xab]);
  // 16-bit gray: mode "I", clipped at 255 by convert("RGB")
  const g16 = write("g16.png", rawPng(3, 1, 16, 0, [be16([7, 255, 4000])]));
  assert.equal(Array.from((await loadImage(g16)).data), [7, 7, 7, 255, 255, 255, 255, 255, 255]);
});

t("corrupt, truncated, unsupported and huge images give E_BAD_IMAGE naming the file", async () => {
  const good = encodePng(synthImage(8, 8, 3, 9));
  // flipped byte inside IDAT: CRC mismatch
  const flipped = good.slice();
  const idat = Buffer.from(flipped).indexOf("IDAT");
  flipped[idat + 10] ^= 0xff;
  await expectBadImage(write("crc.png", flipped), /CRC|corrupt/);
  // valid CRCs but garbage compressed data
  const garbage = rawPng(4, 4, 8, 2, []);
  const gIdat = Buffer.from(garbage).indexOf("IDAT");
  const len = new DataView(garbage.buffer).getUint32(gIdat - 4);
  const body = new Uint8Array(len).fill(0x5a);
  const rebuilt = Buffer.concat([garbage.subarray(0, gIdat - 4), chunk("IDAT", body), garbage.subarray(gIdat + 4 + len + 4)]);
  await expectBadImage(write("zlib.png", new Uint8Array(rebuilt)), /corrupt|truncated/);
  // truncated PNG
  await expectBadImage(write("trunc.png", good.subarray(0, good.length - 20)), /truncated/);
  // truncated JPEG
  const j = jpeg.encode({ width: 16, height: 16, data: Buffer.alloc(16 * 16 * 4, 128) }, 90).data;
  await expectBadImage(write("trunc.jpg", new Uint8Array(j.subarray(0, Math.floor(j.length * 0.6)))), /truncated/);
  // JPEG whose scan stops without EOI
  await expectBadImage(write("noeoi.jpg", new Uint8Array(j.subarray(0, j.length - 2))), /truncated/);
  // other formats and empty files
  await expectBadImage(write("x.gif", new TextEncoder().encode("GIF89a\x01\x00\x01\x00")), /unsupported.*GIF/);
  await expectBadImage(write("empty.png", new Uint8Array(0)), /empty/);
  await expectBadImage(write("text.png", new TextEncoder().encode("hello, not an image")), /unsupported/);
  // huge: header claims 10000×10000 = 100 MP, over the 64 MP limit (refused before decoding)
  const huge = rawPng(10000, 10000, 8, 0, [new Uint8Array(1)]);
  await expectBadImage(write("huge.png", huge), /limit is 64 MP/);
  assert.is(MAX_IMAGE_PIXELS, 64 * 1024 * 1024);
  try {
    await loadImage(write("small.png", encodePng(synthImage(10, 10, 3, 1))), { maxPixels: 50 });
    assert.unreachable("maxPixels ignored");
  } catch (e: any) {
    assert.ok(isSsdError(e, "E_BAD_IMAGE") && /limit/.test(e.message), String(e));
  }
  // a missing file is a parameter problem, not a bad image
  try {
    await loadImage(join(dir, "nope.png"));
    assert.unreachable();
  } catch (e: any) {
    assert.ok(isSsdError(e, "E_BAD_PARAM"), String(e));
  }
});

// ---- EXIF orientation ----

/** A TIFF block with IFD0 holding only Orientation. */
function exifTiff(orientation: number, bigEndian: boolean): Uint8Array {
  const b = new Uint8Array(26);
  const dv = new DataView(b.buffer);
  const le = !bigEndian;
  b.set(bigEndian ? [0x4d, 0x4d] : [0x49, 0x49]);
  dv.setUint16(2, 42, le);
  dv.setUint32(4, 8, le);
  dv.setUint16(8, 1, le);
  dv.setUint16(10, 0x0112, le);
  dv.setUint16(12, 3, le); // SHORT
  dv.setUint32(14, 1, le);
  dv.setUint16(18, orientation, le);
  dv.setUint32(22, 0, le); // no next IFD
  return b;
}

function withExif(jpg: Uint8Array, orientation: number, bigEndian: boolean): Uint8Array {
  const tiff = exifTiff(orientation, bigEndian);
  const payload = new Uint8Array(6 + tiff.length);
  payload.set([0x45, 0x78, 0x69, 0x66, 0, 0]);
  payload.set(tiff, 6);
  const seg = new Uint8Array(4 + payload.length);
  seg.set([0xff, 0xe1, (payload.length + 2) >> 8, (payload.length + 2) & 255]);
  seg.set(payload, 4);
  // right after SOI
  return new Uint8Array(Buffer.concat([jpg.subarray(0, 2), seg, jpg.subarray(2)]));
}

/** The 8 Pillow transpositions written out for a 3×2 image with pixel values 0..5. */
const ORIENT_EXPECT: Record<number, { w: number; h: number; v: number[] }> = {
  // source rows: [0 1 2] / [3 4 5]
  1: { w: 3, h: 2, v: [0, 1, 2, 3, 4, 5] },
  2: { w: 3, h: 2, v: [2, 1, 0, 5, 4, 3] }, // FLIP_LEFT_RIGHT
  3: { w: 3, h: 2, v: [5, 4, 3, 2, 1, 0] }, // ROTATE_180
  4: { w: 3, h: 2, v: [3, 4, 5, 0, 1, 2] }, // FLIP_TOP_BOTTOM
  5: { w: 2, h: 3, v: [0, 3, 1, 4, 2, 5] }, // TRANSPOSE
  6: { w: 2, h: 3, v: [3, 0, 4, 1, 5, 2] }, // ROTATE_270 = 90° clockwise
  7: { w: 2, h: 3, v: [5, 2, 4, 1, 3, 0] }, // TRANSVERSE
  8: { w: 2, h: 3, v: [2, 5, 1, 4, 0, 3] }, // ROTATE_90 = 90° counter-clockwise
};

t("applyOrientation reproduces Pillow's transpositions for all 8 orientations", () => {
  const src: PixelImage = { width: 3, height: 2, channels: 1, data: new Uint8Array([0, 1, 2, 3, 4, 5]) };
  for (const [o, e] of Object.entries(ORIENT_EXPECT)) {
    const r = applyOrientation(src, Number(o));
    assert.equal([r.width, r.height, Array.from(r.data)], [e.w, e.h, e.v], `orientation ${o}`);
  }
});

t("JPEG with an EXIF orientation is decoded upright; PNG eXIf too", async () => {
  // 16×8: left half red, right half blue
  const W = 16, H = 8;
  const rgba = Buffer.alloc(W * H * 4);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const i = (y * W + x) * 4;
    if (x < 8) rgba[i] = 255; else rgba[i + 2] = 255;
    rgba[i + 3] = 255;
  }
  const jpg = new Uint8Array(jpeg.encode({ width: W, height: H, data: rgba }, 95).data);
  const near = (a: ArrayLike<number>, b: number[]) => b.every((v, i) => Math.abs(a[i] - v) <= 40);
  const px = (img: PixelImage, x: number, y: number) => Array.from(img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3));

  const plain = await loadImage(write("o1.jpg", jpg));
  assert.equal([plain.width, plain.height], [16, 8]);
  assert.ok(near(px(plain, 2, 4), [255, 0, 0]), `left is red: ${px(plain, 2, 4)}`);

  // 6: displayed rotated 90° clockwise → 8×16, the left (red) half ends up on top
  for (const be of [false, true]) {
    const r6 = await loadImage(write(`o6${be}.jpg`, withExif(jpg, 6, be)));
    assert.equal([r6.width, r6.height], [8, 16]);
    assert.ok(near(px(r6, 4, 2), [255, 0, 0]), `top is red: ${px(r6, 4, 2)}`);
    assert.ok(near(px(r6, 4, 13), [0, 0, 255]), `bottom is blue: ${px(r6, 4, 13)}`);
  }
  // 8: 90° counter-clockwise → red at the bottom
  const r8 = await loadImage(write("o8.jpg", withExif(jpg, 8, false)));
  assert.ok(near(px(r8, 4, 13), [255, 0, 0]), `bottom is red: ${px(r8, 4, 13)}`);
  // 3: 180° → red on the right
  const r3 = await loadImage(write("o3.jpg", withExif(jpg, 3, false)));
  assert.equal([r3.width, r3.height], [16, 8]);
  assert.ok(near(px(r3, 13, 4), [255, 0, 0]));
  // exifTranspose: false keeps the stored layout
  const raw = await loadImage(join(dir, "o8.jpg"), { exifTranspose: false });
  assert.equal([raw.width, raw.height], [16, 8]);

  // PNG with an eXIf chunk (Pillow's getexif reads it too)
  const png = rawPng(3, 2, 8, 0, [new Uint8Array([0, 1, 2]), new Uint8Array([3, 4, 5])], [{ type: "eXIf", data: exifTiff(6, false) }]);
  const rp = await loadImage(write("exif.png", png));
  assert.equal([rp.width, rp.height], [2, 3]);
  assert.equal(Array.from(rp.data).filter((_, i) => i % 3 === 0), ORIENT_EXPECT[6].v);
});

// ---- JPEG pixels: Pillow 9.4 (libjpeg-turbo 2.1) decodes of tiny JPEGs with sharp chroma
// edges, made by Pillow (baseline 4:2:0, 4:2:2) and cjpeg (progressive, restart markers);
// reference pixels zlib'd. jpeg-js alone is off by up to ~85 levels on these (replicated
// chroma, float colour conversion, another IDCT).
// [what, JPEG base64, Pillow's RGB bytes zlib+base64]
const PIL_JPEGS: [string, string, string][] = [
  ["4:2:0 baseline", "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAQABgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwD5A0b4YzNdRSy2wXVFGIoAPkZeeT+bd+1d9oPwv2+b5UO7zP8Aj+yP9V1zt/NvXoK980T4WbdsW7zt3P8AaP8Azy/2c/h6j71d/onwv3bf3Xk+V7Y+2/45x7/er6TMOLpczbm+a76py5mrSbkvdc3HSc1+7qU/3dP96fFcI8c/D7/9f1st09XoeA6N8LIWtYopUK6WpzFOB87NzwRj3bt2or6+0T4Y7dsv2Lzt3H9nbc+V/tYx7eg+9RX5pjOKcJOovb+yeitz0q03y9FF03aMEvhhL95BaT94/rnKuOpfVlab+TS/P89ux//Z", "eNoBgAR/+wkA4gwAxhwOlwsASx8HKyMAQT0Hs0YEyFYLm0wAUVoEIWAAPXkGvYMC2JMIoYoAW48CLJoAQLwHqsMAvdUNpMMAWNAFItMIAhANzhYTvCQemg8GWR4MPiQET0UUrlIWw1sYmU8FXF0POV4DRogauYoOxJsZoYwFY5YLQqMMU8UZqckQtNcXnsUAXtUNO90TKRImmRUllB0mixARaxwVZScTbEojmFknoFwnj1IYb1kaYF4RX44rmJEimpUkjIsUbpQMXqISab4nksgmldcojcsSbdQTYtgSXQAjUQEmXRAsdiY3kTI5ozkzlz0lcT4eYUQgamE3i2s8nHc4k3YhZX0fXYMmbaE7kbE2oLUvkrApbLUnYcQnbtowiOg0oe41rQA7KAA3OQExXyNIoCtCwjxEsTo0VkExO0U0WGJKlGVDvHdHtHAvT382QXw0XJ1ImaxCvrI9pqcxS7EyObouW9xGneJCyOM/3ABHQwBJUghGbSZZmytPrTVPnDVFXD9HSkVFXVxSh2pTrnFPo3JEYXlDUIRJaZtWj6hSq7RSn7BJXrlKULpBZNhTlN9SsOVTwAldtQ5dqBZcjxlSbyNTVS1VXThijEdom1ZmilRVamJTWGlQY3xin4Vhp5Jiio1SZJFPUaJWYrZjkcNmnc1kjM1aa9VXS9lVPAtszRNuvSR1oBNaYCZjQStjSkB3nkd1sFl1mlFeZmFdQmlfVX1yrIh0vJhzlY5eXpdkRZ5jVbl0o8BvsdN4m8NdWdZmNuBqIhF+nReBmRyAjxVvbx1uWytyYkKAi1KEm1yAllNrd1xrZGhxbHx/koyDnpmBkY9scpRrZaNxcrp+l8iBn9F+kspucdJtW9hxUgB+WAR/YAqBbiSRjC6QkzuPjzh/bT53Zkp7eGOLlW+QoXeQlW98aHd7YIZ9dKCNka+Qn7KKk6x8cLd+a8N8dt+PkuaRmOqTnACQIACRNAKMWSmooSiYvTqasDuJWUqNSkiIZmaio2ecxnWgs3KLSoCOOX6JX6ChnKaXtLabpK+NULuQQbqDWuChnOCdvOOfzgGlRAGgTAScYSOvkjGutECurT2eaT+WUkWZaF2rk2arsHSsoXabVYCcR4KfZ56xk7Kzq7arl62bW7edUsGdad+yleGvqOGqrQSyuRC6ryPAkxirZCCpUSenXT65nU3CsFfCmFCwaV+vTGutVYS7kY27npG9iIesX5GnQ6GsXbq9qMC7tcq8l8GpY9WuReO1OwzG3RTIxSTRnBG0Vya/QSu9UkLOq0XKt1bRm0m4XF6+OGe7QobOoIrKsJjSmIi5XZvDP6C9T7nLtb7Ix9PUqsO4X9a+NuDAHw/ToRTYmhzbixLMaxzMYCjKZUXZi1XemFvajVLKcVjJX2TKZIHdio/clpXYk43IeJPIXKPOZb/alcjXntHXkcjGcdHKYtbMWQPOdQXQdg7XeSjrizPtij7ohT7WckPNbU7QeGrmkHHskXboiHPXdHrPcofPhaXlmbHtjbTngLXUd7zOeMnRfuLmkuzslO7ulLH6EVU="],
  ["4:2:2 baseline", "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAQABgDASEAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwD5A0b4YzNdRSy2wXVFGIoAPkZeeT+bd+1d9oPwv2+b5UO7zP8Aj+yP9V1zt/NvXoK/W8xznEOpKdRJVnKUmuirShy14b/DDD2qRd3eenNN+4dvCOeRtFKWmn3dPx0/q53ujfCyFrWKKVCulqcxTgfOzc8EY927dqK/JsxxXC2IqRedYudOUYxjT5U3zUUrUpv93L3pQs5LTX7Mdj+vMpz+usMvZ2ff169Tv9E+Fm3bFu87dz/aP/PL/Zz+HqPvV3+ifC/dt/deT5Xtj7b/AI5x7/erysfmlr0/bc1vd9pf4uX3vb3v/wAxH+7Xu+a3Lzz+A/y+4Rz34Xf5fp8vi/q56Bonwx27ZfsXnbuP7O258r/axj29B96ivga/En1edv7G+uc3vX5b+yvr7D+HO3sfgt7trW5I7H9cZXnV8NH99y/r579dz//Z", "eNoBgAR/+wAB6QUCyyEMmRMASyQFJyYAQT8FuUoAz10ImVYAU2EAKmcARH0FtIYDzZAKnYsAXJ4ALKgASLsEwLwA0tAQo8MAVNcAKt4AEgUQ2w8TzCYZsRMBZR0PMCEJPUIUslQT018Tp1MCYV8QLV4GOYYavYcOz5capIsHWpoPJqcNP8UWuccMzdYYnsYBU9kNLuITGxQU8BQa0hQplgkbTR0hIioaP0QguFIf3lgitFIXcV8gMV8XP4AoyIMd2JIjm44YUpEbGaIbOcYcs9MU098eq9IRZNcdKtohDAAtFQUtLxYsZSgznC01xjMyqTkwRUAnK0gfY2MxpGk1yHE3qG8tN3osH4UqU546mpw4zqAzsqg1RrMxL8AqadEwotgzzds14QQ6FgY1KwgvWitDozE90T9Ctzc8OD45HEgyWGlDqGo63HpCy2ozSn06MYMxV6REnadCzKw+rqg0Nbc1G8EvRuJFkuJCxuFA3gBRFwRNMhg/ZjROqytI0DFMtTVKRUVKKk9CVGNMlGhPx3BOrXVIQoBGLolFbp9Nr6hJ17NMwa9JX7lMRb1AXtpQm+FNx+ZM4AhZzA5avBVbmRZVZiFcLipbRjpasUtc0lhfo1dVYmBdKmdYQXxcvYVZ1ZJenpFSW5pSLKxWR79aqMpcv9RgjdRaVdlcJt5cDgRq5g1t0x92rBBbYCNoMSlkRD10t0Vwzll0n1NgWWJhK2tiRXtys4Vyy5R0m4xgVZ1nJ6NkQbdxubpsz8x6or5gVtVoL+BrGwl15BB60BWAoBRyYCR0LTJzSEF5tE19z1iCm1NxWWVxL3FzTnl5uYV905KCn49xWZ1zKap2R7V7tcB80c58oM1wYdZzMN94HACODwSJLA+AZCqJpS2FzTiKsjaIRjuEKEiCXGCLm2yJzXeKsnODOn6EIoeCWJ6LnqmJ1KyGuaiGR7SLL7+EWNuQl+OJxumH3gORCweRJAaLUiumoyWXzTSbujORR0CWNUGMY2KirGOc0XOfunGMRYGPMISHXKOepJ+Wy6+btLKOQsKQLb2DVeGfo+OZzueZ5QGvEAOlKw2XYyinrSup3DavwjinSzygJkacUV2rk2CqxW+rtXadSoOeNYaeZJ2upKew16mstaekPbSoIr6lS9u0k92qy92i5Ain6BC00BnEmBGzTiOxHS6qOEKzrVG51Fq9q1asa2ivN2+tSny6r4O5xZG7l42rVZmpIqqtRMG2vsmw2texsM6haNyvMue5GwbF7w7I1yDQqhC1WSjCLC++QEjKskzExV7NmlG1UmS+K2q5QoLMtYTIyZTTnoi7VqHDLqW9RbXMuLvI0NbTpse3WNi/L97CGQrI6A/QzxXclw/RViDUKyzORUPStFLU0lfYoFLNYlzQMWfOS3/UwYnS2ZHXo43NXZfRJafTQMDTs8nNztTSos7GZNbPON3UIQDiFgTfLQ/cWybpmynmyjHmsTnhREHbK0fYX1/opGPozWzlr3neQoHaJobYXJzooKPn0KrisbLfSL7cLMTaXNzmnePmy+fj4iJxEUY="],
  ["4:2:0 progressive, restart interval", "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAUDBAQEAwUEBAQFBQUGBwwIBwcHBw8LCwkMEQ8SEhEPERETFhwXExQaFRERGCEYGh0dHx8fExciJCIeJBweHx7/2wBDAQUFBQcGBw4ICA4eFBEUHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh7/wgARCAAQABgDASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAABgAF/8QAFgEBAQEAAAAAAAAAAAAAAAAABQQG/90ABAAC/9oADAMBAAIQAxAAAAELppdOo8zOYnb/AP/EABgQAAMBAQAAAAAAAAAAAAAAAAADBAER/90ABAAD/9oACAEBAAEFAlzb1UouXOf/0Fyi5Rcx/8QAGREAAgMBAAAAAAAAAAAAAAAAAAUEIjFh/90ABAAC/9oACAEDAQE/AVrfpHb00//EACIRAAEBBgcAAAAAAAAAAAAAAAEDAAIFIUFRESIxgbHR8P/aAAgBAgEBPwFaJG/u7nQiQmysQTJzYbh48UsDMVb/xAAgEAACAQEJAAAAAAAAAAAAAAAAARFBEiEiMTJygqLC/90ABAAD/9oACAEBAAY/Apax0RctxD0UZ//QjsZR6Js8T//EAB4QAAIABgMAAAAAAAAAAAAAAAARATFBUaGxYYGR/9oACAEBAAE/IUuCETKnkQwMhn//0Lx6nUDnNT//3QAEAAL/2gAMAwEAAgADAAAAELvf/8QAGREAAgMBAAAAAAAAAAAAAAAAAfAAETGR/9oACAEDAQE/EMkuQ1aLon//xAAaEQADAAMBAAAAAAAAAAAAAAABESEAMUFx/9oACAECAQE/EHiSTZ6G1bqIDLwmsC0nFz4FKz//xAAhEAACAAUEAwAAAAAAAAAAAAABEQAhMUFRgZGh4bHB8P/dAAQAA//aAAgBAQABPxA8JABAqyPN7QitzDWuc0g8oAFgE2Hm1o//0Eqpn6X3eGLg/S9awlVcpN66vH//2Q==", "eNoBgAR/+wkAwhUHvhkFpQ8AbxEAOiYHU0EDrk4CxloJpEsAXksAIWEGP30ArZIE1JEGp4MAYpEAMKIBRLsBpNAIw9QCl8sAWdAAIt4LEg0KuxsWuiIaoxMHbRUFRiUIWEUQplQSuloTnVEHalcKQGULUYQSqJISv5UVoIwIbZYLRKILUr4Rn9EUuNkTnssBZdIGO9wQKxYhrhcloBkpgQwUXBwQXC0TakgnkFQtmlgojlYYeVsObGYPboUqkY4skZMkg40VbJEVXpwXZrgmi8sqnNoros4Xg9IVZ9MUWQAbbQAhawotZSg9fD08mUE2kjYqaDMhVUAhZGM2i3o3qnswmW4nYXAiTIMlY6M7iKs8mKo1jaQqZ6cjX7UgdNAvj+Q4nO4+owA7QQAzQwAqUSlHjy9AtDtFpzA4Szk6NUc5U2dKjWo/tXdDqHA3SHw9Nn40V5pGkaBCtKtHp50+UqpCQ7M3Wd1SluRIteZDwgBFSQBIVQ1FZjFelStRojFPlSxCVztITkNBWWBUhGhRn3dXmm1AVHpFS39GZp1ZkqVTpbBWnKNJYqxIUrA+V9dYheFTm+ZSqA5crhJgohdhhhRaZBhWSSZXW0Bcm1JjsVZfllBUbVdUS2dYW35bm4xfsI9elYxSa5hTTKtVYL9XotBZs9hcktdWbNlUS9xWPRFmwxZutSF8lwZeUBxqOChmTUpxsk5pxFxzqUpcZlxnPWNhTIVws4tqxZp0pYpdYpliO6RbTMpotdRkyORvpshQWddgOONrLBiApxV+mxiBhw9xZB90UypyXkd/mlaDrV6Dnk1qclptWmlxZoJ9nY+Ap5qEkYlqZZVqWaZvasN7oM95ptx+mNNuctpxXtpuUQB6XAB9ZRGFeCmUjDWUjjmMgjV/bjh4aEV6dGKLjXeUmnqOj3F9cXR3YoeCbKKUh66TmrCNlK2BdK56Zbx6bNWIguaQk+6TmgCXKQCQPAaFZyqboTCZtzqdozSTUTyPPUmMYGujmm+buHeZpXSQU3qQO32LUJ6ikaecxKmcsKCWUaqaOraUV9uok+Sfu+WYzACiPACiTxCfcyuunDGuqjesmTWiXzqdTUWZZWaskHCsqnWqmHSeXHmcSIGeW52yi6ausKmroKKkW6mkSbOeXdKsiN+sqOeutxK2tRO5pRS9hguuWxqwRSqwW0K4oFG7t1q+olCrcFmtT2iwXH+6no29rZW/j4qsX5SvSKOxWr64nsy5s9m7o9Ctd9avUtmxPxK/0BjIvR3Wkg3EUh3ENii/TkPHsE/GyljMqUi1ZFq/O2jAT33GqIvIwJvRn4m7WpbCL6LARMHFrM3AydjDrsivbNS7Ot3FIxPYrRXYnhXVfw/KYRjKWivPbkPXm1PcqFvdk1HNbVTHUmXMX4LYj5LeoJHYiobIZJDLS6DQWrnWlMvbrNban9POfNPMWNfNSQDKgQTSgBHXeC3shTTpiDzpjzfShDnKe0jPc2vsh3TwgnrqfnbUdnvOdILRdqTvirLzfbLreKnTfbPShsDOgd3ji+rpffTxfGD/EBI="],
];

t("JPEG decoding is bit-exact with Pillow (islow IDCT, fancy upsampling, progressive, restarts)", async () => {
  for (const [name, jb, ref] of PIL_JPEGS) {
    const p = write(`pil-${name.replace(/\W+/g, "_")}.jpg`, new Uint8Array(Buffer.from(jb, "base64")));
    const want = new Uint8Array(inflateSync(Buffer.from(ref, "base64")));
    const got = await loadImage(p);
    assert.equal([got.width, got.height], [24, 16], name);
    let n = 0, max = 0;
    for (let i = 0; i < want.length; i++) { const d = Math.abs(got.data[i] - want[i]); if (d) { n++; max = Math.max(max, d); } }
    assert.is(n, 0, `${name}: ${n} values differ from Pillow (max ${max} levels)`);
  }
});

t("damaged PNG and JPEG bytes give E_BAD_IMAGE or a picture, never another error", () => {
  const rgba = Buffer.alloc(20 * 12 * 4);
  for (let i = 0; i < rgba.length; i++) rgba[i] = (i * 37) & 255;
  const files = [
    new Uint8Array(jpeg.encode({ width: 20, height: 12, data: rgba }, 80).data),
    encodePng(synthImage(20, 12, 3, 21)),
    new Uint8Array(Buffer.from(PIL_JPEGS[2][1], "base64")),
  ];
  let s = 99;
  const rnd = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
  const seen = { ok: 0, bad: 0 };
  for (const orig of files) {
    for (let trial = 0; trial < 300; trial++) {
      const b = orig.slice();
      for (let k = 0; k < 1 + Math.floor(rnd() * 3); k++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      const cut = rnd() < 0.25 ? b.subarray(0, Math.floor(rnd() * b.length)) : b;
      try {
        const img = decodeImage(cut, "damaged");
        assert.is(img.data.length, img.width * img.height * 3);
        seen.ok++;
      } catch (e: any) {
        assert.ok(isSsdError(e, "E_BAD_IMAGE"), `trial ${trial}: ${e?.stack ?? e}`);
        assert.match(e.message, /^damaged: /);
        seen.bad++;
      }
    }
  }
  assert.ok(seen.ok > 0 && seen.bad > 0, JSON.stringify(seen));
});

// ---- VaeImageProcessor conversions ----

t("imageToChw / chwToImage round trip and diffusers' rounding", () => {
  const img = synthImage(5, 3, 3, 11);
  for (const range of ["-1,1", "0,1"] as const) {
    const chw = imageToChw(img, range);
    assert.is(chw.length, 45);
    const back = chwToImage(chw, 3, 3, 5, range);
    assert.equal(Array.from(back.data), Array.from(img.data), range);
  }
  // layout: channel planes
  const chw = imageToChw(img, "0,1");
  assert.is(chw[15], Math.fround(img.data[1] / 255));
  assert.is(imageToChw(img, "-1,1")[0], Math.fround(2 * Math.fround(img.data[0] / 255) - 1));
  // clamping
  const out = chwToImage(new Float32Array([-3, 3, 0]), 1, 1, 3, "-1,1");
  assert.equal(Array.from(out.data), [0, 255, 128]);
  // numpy's round is half to even: find float32 x with x*255 exactly k + 0.5
  let tested = 0;
  for (let k = 0; k < 255; k++) {
    const x = Math.fround((k + 0.5) / 255);
    if (Math.fround(x * 255) !== k + 0.5) continue;
    const v = chwToImage(new Float32Array([x]), 1, 1, 1, "0,1").data[0];
    assert.is(v, k % 2 === 0 ? k : k + 1, `x*255 = ${k + 0.5}`);
    tested++;
  }
  assert.ok(tested > 0, "no exact halves found");
});

t("vaePreprocess: size rounded down to the VAE factor, LANCZOS resize, [-1,1] or [0,1]", () => {
  const img = synthImage(37, 21, 3, 5);
  const a = vaePreprocess(img, { vaeScaleFactor: 8 });
  assert.equal([a.width, a.height], [32, 16]);
  assert.equal(Array.from(a.data), Array.from(imageToChw(resizePil(img, 32, 16, "lanczos"), "-1,1")));
  const b = vaePreprocess(img, { vaeScaleFactor: 1, normalize: false });
  assert.equal(Array.from(b.data), Array.from(imageToChw(img, "0,1")));
  const g = vaePreprocess({ width: 4, height: 4, channels: 1, data: new Uint8Array(16).fill(51) }, { vaeScaleFactor: 2, width: 2, height: 2, normalize: false });
  assert.ok(g.data.length === 12 && g.data.every((v) => v === Math.fround(51 / 255)));
});

t.after(() => { if (!process.env.KEEP) rmSync(dir, { recursive: true, force: true }); });

t.run();
