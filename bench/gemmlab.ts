// `bench gemmlab`: a laboratory for GPU SGEMM designs, apart from the engine.
//
//   C[M, N] = A[M, K] · B[N, K]ᵀ   (f32, the Linear layout; M, N, K as the set says)
//
// Each variant is WGSL generated here (not the engine's shaders/): a register
// tile of tm × tn outputs per thread (tm/4 × tn/4 vec4 blocks), wx × wy threads,
// bk-deep K steps through double-buffered workgroup tiles, and then
//   style   "unroll": every K step and every FMA written out, accumulators as
//           named variables; "loop": the same with arrays and loops, as the
//           engine's kernels are written;
//   split   split-K parts into a workspace, then a reduce pass (timed with it);
//   sk      stream-K: `sk` workgroups share all tiles' K steps evenly; a piece
//           that starts a tile at step 0 writes C, a piece starting inside one
//           writes its worker's slot, and a fix-up pass adds the slots into C;
//   check   bounds checks on rows and columns (ragged shapes);
//   sl      sliced K: `sl` groups of wx × wy threads in one workgroup, each
//           with its own operand tiles, sum their slices of the K range; at
//           the end the other slices add their accumulators into slice 0's
//           through workgroup memory (no workspace, no second pass).
// Under several Dawn toggle sets (robustness on and off). Every variant runs
// once on a NaN-poisoned output, is checked against f64 dot products on the
// CPU (300 outputs; `err` is |error| / Σ|a·b|) and for unwritten outputs, then
// timed with timestamp queries at the ends of a pass of 10 dispatches (median
// of the passes; wall time beside it). The engine's `wide` kernel took its
// written-out K steps, Dawn toggles and split-K rule from this lab's H200 runs
// (README). Node only (Dawn instances with toggles).
//
//   npm run bench -- gemmlab [--set quick|sweep|focus|slice] [--shapes] [--peak GFLOPS] [--json FILE] [--deadline S]
import { writeFileSync } from "node:fs";
import { SsdError } from "../engine/errors.ts";
import { findIcd, INSTALL_HINT } from "../engine/drivers.ts";
import { runtime, adapterWith } from "../engine/device.ts";

type Style = "unroll" | "loop";
interface V { tm: number; tn: number; wx: number; wy: number; bk: number; style: Style; split: number; check: boolean; sk?: number; sl?: number }
const bmOf = (v: V) => v.tm * v.wy, bnOf = (v: V) => v.tn * v.wx;
const vname = (v: V) => `${bmOf(v)}x${bnOf(v)} t${v.tm}x${v.tn} w${v.wx * v.wy} k${v.bk} ${v.style} s${v.split}${v.check ? " chk" : ""}${v.sk ? ` sk${v.sk}` : ""}${(v.sl ?? 1) > 1 ? ` sl${v.sl}` : ""}`;

// The uniform block every generated kernel reads (the reduce and fix-up passes too).
const PARAMS_WGSL = "struct P { M: u32, N: u32, K: u32, kChunk: u32, MN4: u32, S: u32, p0: u32, p1: u32 }";

/** A variant's derived sizes: threads, block, vec4 groups per thread, padded tile strides, staging slots. */
function geometry(v: V) {
  const T = v.wx * v.wy, BM = bmOf(v), BN = bnOf(v), KQ = v.bk / 4, SL = v.sl ?? 1;
  const totA = BM * KQ, totB = BN * KQ;
  return { ...v, T, SL, BM, BN, GA: v.tm / 4, GB: v.tn / 4, KQ, SA: BM / 4 + 1, SB: BN / 4 + 1, totA, totB, nA: Math.ceil(totA / T), nB: Math.ceil(totB / T) };
}

/** Bindings A, B, C, the parameters (and `extra`), then the two double-buffered operand tiles. */
function header(v: V, extra: string[] = []): string[] {
  const { bk, SA, SB, SL } = geometry(v);
  return [
    PARAMS_WGSL,
    `@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;`,
    `@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;`,
    `@group(0) @binding(2) var<storage, read_write> C: array<vec4<f32>>;`,
    `@group(0) @binding(3) var<uniform> p: P;`,
    ...extra,
    `var<workgroup> Aw: array<vec4<f32>, ${2 * bk * SA * SL}>;`,
    `var<workgroup> Bw: array<vec4<f32>, ${2 * bk * SB * SL}>;`,
  ];
}

function gen(v: V): string {
  const { wx, wy, bk, T, SL, BM, BN, GA, GB, KQ, SA, SB, totA, totB, nA, nB } = geometry(v);
  const L = header(v);
  if (SL > 1 && v.style !== "unroll") throw new SsdError("E_BAD_PARAM", "gemmlab: sliced K is generated in the unroll style only");
  // global loads of operand X (A or B), rows from r0, vec4 column kq4 (absolute, in vec4s)
  L.push(`fn ldA(row: u32, kq4: u32) -> vec4<f32> {`);
  if (v.check) L.push(`  if (row >= p.M) { return vec4<f32>(0.0); }`);
  L.push(`  return A[row * (p.K / 4u) + kq4];\n}`);
  L.push(`fn ldB(row: u32, kq4: u32) -> vec4<f32> {`);
  if (v.check) L.push(`  if (row >= p.N) { return vec4<f32>(0.0); }`);
  L.push(`  return B[row * (p.K / 4u) + kq4];\n}`);
  L.push(`@compute @workgroup_size(${T * SL})`);
  L.push(`fn main(@builtin(local_invocation_index) gid: u32, @builtin(workgroup_id) wid: vec3<u32>) {`);
  // slice h of the workgroup: threads gid = h·T + tid, its own tiles at offsets h·(both buffers)
  L.push(`  let h = gid / ${T}u; let tid = gid % ${T}u;`);
  L.push(`  let row0 = wid.y * ${BM}u; let col0 = wid.x * ${BN}u;`);
  L.push(`  let kq0 = wid.z * (p.kChunk / 4u) + h * (p.kChunk / ${4 * SL}u);`);
  L.push(`  let steps = p.kChunk / ${bk * SL}u;`);
  L.push(`  let hA = h * ${2 * bk * SA}u; let hB = h * ${2 * bk * SB}u;`);
  L.push(`  let tx = tid % ${wx}u; let ty = tid / ${wx}u;`);
  const slot = (X: "A" | "B", r: number, tot: number, n: number) => {
    const v4 = `tid + ${r * T}u`;
    L.push(`  let ${X}v${r} = ${v4}; let ${X}row${r} = ${X}v${r} / ${KQ}u; let ${X}kq${r} = ${X}v${r} % ${KQ}u;`);
    L.push(`  let ${X}on${r} = ${r * T + T <= tot ? "true" : `${X}v${r} < ${tot}u`};`);
    void n;
  };
  for (let r = 0; r < nA; r++) slot("A", r, totA, nA);
  for (let r = 0; r < nB; r++) slot("B", r, totB, nB);
  const S = v.style === "unroll";
  // staging registers
  if (S) {
    for (let r = 0; r < nA; r++) L.push(`  var sa${r} = vec4<f32>(0.0);`);
    for (let r = 0; r < nB; r++) L.push(`  var sb${r} = vec4<f32>(0.0);`);
  } else {
    L.push(`  var sa: array<vec4<f32>, ${nA}>; var sb: array<vec4<f32>, ${nB}>;`);
  }
  const fetch = (kqExpr: string, ind: string) => {
    if (S) {
      for (let r = 0; r < nA; r++) L.push(`${ind}if (Aon${r}) { sa${r} = ldA(row0 + Arow${r}, ${kqExpr} + Akq${r}); }`);
      for (let r = 0; r < nB; r++) L.push(`${ind}if (Bon${r}) { sb${r} = ldB(col0 + Brow${r}, ${kqExpr} + Bkq${r}); }`);
    } else {
      L.push(`${ind}for (var r = 0u; r < ${nA}u; r++) { let vv = tid + r * ${T}u; if (vv < ${totA}u) { sa[r] = ldA(row0 + vv / ${KQ}u, ${kqExpr} + vv % ${KQ}u); } }`);
      L.push(`${ind}for (var r = 0u; r < ${nB}u; r++) { let vv = tid + r * ${T}u; if (vv < ${totB}u) { sb[r] = ldB(col0 + vv / ${KQ}u, ${kqExpr} + vv % ${KQ}u); } }`);
    }
  };
  const put = (bufExpr: string, ind: string) => {
    if (S) {
      for (const [X, n, SX, W] of [["A", nA, SA, "Aw"], ["B", nB, SB, "Bw"]] as const) {
        for (let r = 0; r < n; r++) {
          const s = X === "A" ? `sa${r}` : `sb${r}`;
          L.push(`${ind}if (${X}on${r}) { let base = h${X} + ${bufExpr} * ${bk * SX}u + 4u * ${X}kq${r} * ${SX}u + ${X}row${r} / 4u; let c = ${X}row${r} % 4u;`);
          for (let c = 0; c < 4; c++) L.push(`${ind}  ${W}[base + ${c * SX}u][c] = ${s}[${c}];`);
          L.push(`${ind}}`);
        }
      }
    } else {
      for (const [X, n, SX, W, tot] of [["a", nA, SA, "Aw", totA], ["b", nB, SB, "Bw", totB]] as const) {
        L.push(`${ind}for (var r = 0u; r < ${n}u; r++) { let vv = tid + r * ${T}u; if (vv < ${tot}u) { let row = vv / ${KQ}u; let base = h${X.toUpperCase()} + ${bufExpr} * ${bk * SX}u + 4u * (vv % ${KQ}u) * ${SX}u + row / 4u; for (var c = 0u; c < 4u; c++) { ${W}[base + c * ${SX}u][row % 4u] = s${X}[r][c]; } } }`);
      }
    }
  };
  // accumulators
  if (S) {
    for (let g = 0; g < GA; g++) for (let i = 0; i < 4; i++) for (let h = 0; h < GB; h++) L.push(`  var c${g}_${i}_${h} = vec4<f32>(0.0);`);
  } else {
    L.push(`  var acc: array<vec4<f32>, ${GA * 4 * GB}>;`);
    L.push(`  for (var q = 0u; q < ${GA * 4 * GB}u; q++) { acc[q] = vec4<f32>(0.0); }`);
  }
  fetch("kq0", "  ");
  put("0u", "  ");
  L.push(`  workgroupBarrier();`);
  L.push(`  for (var t = 0u; t < steps; t++) {`);
  L.push(`    let cur = t & 1u;`);
  L.push(`    let more = t + 1u < steps;`);
  L.push(`    if (more) {`);
  fetch(`kq0 + (t + 1u) * ${KQ}u`, "      ");
  L.push(`    }`);
  L.push(`    let ao = hA + cur * ${bk * SA}u + ty; let bo = hB + cur * ${bk * SB}u + tx;`);
  if (S) {
    for (let kk = 0; kk < bk; kk++) {
      for (let g = 0; g < GA; g++) L.push(`    let a${kk}_${g} = Aw[ao + ${kk * SA + g * wy}u];`);
      for (let h = 0; h < GB; h++) L.push(`    let b${kk}_${h} = Bw[bo + ${kk * SB + h * wx}u];`);
      for (let g = 0; g < GA; g++) for (let i = 0; i < 4; i++) for (let h = 0; h < GB; h++)
        L.push(`    c${g}_${i}_${h} = fma(vec4<f32>(a${kk}_${g}[${i}]), b${kk}_${h}, c${g}_${i}_${h});`);
    }
  } else {
    L.push(`    for (var kk = 0u; kk < ${bk}u; kk++) {`);
    L.push(`      var a: array<vec4<f32>, ${GA}>; var b: array<vec4<f32>, ${GB}>;`);
    L.push(`      for (var g = 0u; g < ${GA}u; g++) { a[g] = Aw[ao + kk * ${SA}u + g * ${wy}u]; }`);
    L.push(`      for (var h = 0u; h < ${GB}u; h++) { b[h] = Bw[bo + kk * ${SB}u + h * ${wx}u]; }`);
    L.push(`      for (var g = 0u; g < ${GA}u; g++) { for (var i = 0u; i < 4u; i++) { for (var h = 0u; h < ${GB}u; h++) {`);
    L.push(`        let q = (g * 4u + i) * ${GB}u + h; acc[q] = fma(vec4<f32>(a[g][i]), b[h], acc[q]);`);
    L.push(`      } } }`);
    L.push(`    }`);
  }
  L.push(`    if (more) {`);
  put("(1u - cur)", "      ");
  L.push(`    }`);
  L.push(`    workgroupBarrier();`);
  L.push(`  }`);
  if (SL > 1) {
    // slices 1.. add their accumulators into slice 0's, through Bw (free after the last barrier) in rounds
    const accs: string[] = [];
    for (let g = 0; g < GA; g++) for (let i = 0; i < 4; i++) for (let hh = 0; hh < GB; hh++) accs.push(`c${g}_${i}_${hh}`);
    const per = Math.min(accs.length, Math.floor((2 * bk * SB * SL) / T));
    for (let sl = 1; sl < SL; sl++) for (let r0 = 0; r0 < accs.length; r0 += per) {
      const part = accs.slice(r0, r0 + per);
      L.push(`  if (h == ${sl}u) {`);
      part.forEach((c, j) => L.push(`    Bw[${j * T}u + tid] = ${c};`));
      L.push(`  }`);
      L.push(`  workgroupBarrier();`);
      L.push(`  if (h == 0u) {`);
      part.forEach((c, j) => L.push(`    ${c} = ${c} + Bw[${j * T}u + tid];`));
      L.push(`  }`);
      L.push(`  workgroupBarrier();`);
    }
    L.push(`  if (h != 0u) { return; }`);
  }
  // stores
  L.push(`  let zo = wid.z * p.MN4; let N4 = p.N / 4u;`);
  const store = (g: number | string, i: number | string, h: number | string, val: string, ind: string) => {
    L.push(`${ind}{ let row = row0 + 4u * (${g}u * ${wy}u + ty) + ${i}u; let cq = col0 / 4u + ${h}u * ${wx}u + tx;`);
    if (v.check) L.push(`${ind}  if (row < p.M && cq < N4) { C[zo + row * N4 + cq] = ${val}; } }`);
    else L.push(`${ind}  C[zo + row * N4 + cq] = ${val}; }`);
  };
  if (S) {
    for (let g = 0; g < GA; g++) for (let i = 0; i < 4; i++) for (let h = 0; h < GB; h++) store(g, i, h, `c${g}_${i}_${h}`, "  ");
  } else {
    L.push(`  for (var g = 0u; g < ${GA}u; g++) { for (var i = 0u; i < 4u; i++) { for (var h = 0u; h < ${GB}u; h++) {`);
    L.push(`    let row = row0 + 4u * (g * ${wy}u + ty) + i; let cq = col0 / 4u + h * ${wx}u + tx;`);
    L.push(v.check ? `    if (row < p.M && cq < N4) { C[zo + row * N4 + cq] = acc[(g * 4u + i) * ${GB}u + h]; }` : `    C[zo + row * N4 + cq] = acc[(g * 4u + i) * ${GB}u + h];`);
    L.push(`  } } }`);
  }
  L.push(`}`);
  return L.join("\n").replaceAll(/\b(\d+)u\s*\*\s*(\d+)u\b/g, (_, a, b) => `${Number(a) * Number(b)}u`);
}

// Stream-K: P workgroups share the tiles' K steps evenly; a piece that starts a
// tile at step 0 writes C, one that starts inside a tile writes its worker's
// workspace slot, and FIX adds those slots into C (P ≤ tiles: one such piece per tile).
function genSK(v: V): string {
  const { tm, tn, wx, wy, bk, T, BM, BN, GA, GB, KQ, SA, SB, totA, totB, nA, nB } = geometry(v);
  const L = header(v, [`@group(0) @binding(4) var<storage, read_write> W: array<vec4<f32>>;`]);
  L.push(`@compute @workgroup_size(${T})`);
  L.push(`fn main(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {`);
  L.push(`  let w = wid.x; let KT = p.K / ${bk}u; let tilesX = p.N / ${BN}u; let IT = (p.M / ${BM}u) * tilesX * KT;`);
  L.push(`  let it0 = (w * IT) / p.p0; let it1 = ((w + 1u) * IT) / p.p0;`);
  L.push(`  let K4 = p.K / 4u; let N4 = p.N / 4u;`);
  L.push(`  let tx = tid % ${wx}u; let ty = tid / ${wx}u;`);
  for (const [X, n, tot] of [["A", nA, totA], ["B", nB, totB]] as const) for (let r = 0; r < n; r++) {
    L.push(`  let ${X}v${r} = tid + ${r * T}u; let ${X}row${r} = ${X}v${r} / ${KQ}u; let ${X}kq${r} = ${X}v${r} % ${KQ}u;`);
    L.push(`  let ${X}on${r} = ${r * T + T <= tot ? "true" : `${X}v${r} < ${tot}u`};`);
  }
  for (let r = 0; r < nA; r++) L.push(`  var sa${r} = vec4<f32>(0.0);`);
  for (let r = 0; r < nB; r++) L.push(`  var sb${r} = vec4<f32>(0.0);`);
  const acc: string[] = [];
  for (let g = 0; g < GA; g++) for (let i = 0; i < 4; i++) for (let h = 0; h < GB; h++) acc.push(`c${g}_${i}_${h}`);
  for (const c of acc) L.push(`  var ${c} = vec4<f32>(0.0);`);
  const fetch = (kq: string, ind: string) => {
    for (let r = 0; r < nA; r++) L.push(`${ind}if (Aon${r}) { sa${r} = A[(row0 + Arow${r}) * K4 + ${kq} + Akq${r}]; }`);
    for (let r = 0; r < nB; r++) L.push(`${ind}if (Bon${r}) { sb${r} = B[(col0 + Brow${r}) * K4 + ${kq} + Bkq${r}]; }`);
  };
  const put = (buf: string, ind: string) => {
    for (const [X, n, SX, Wn] of [["A", nA, SA, "Aw"], ["B", nB, SB, "Bw"]] as const) for (let r = 0; r < n; r++) {
      const sv = X === "A" ? `sa${r}` : `sb${r}`;
      L.push(`${ind}if (${X}on${r}) { let base = ${buf} * ${bk * SX}u + 4u * ${X}kq${r} * ${SX}u + ${X}row${r} / 4u; let c = ${X}row${r} % 4u;`);
      for (let c = 0; c < 4; c++) L.push(`${ind}  ${Wn}[base + ${c * SX}u][c] = ${sv}[${c}];`);
      L.push(`${ind}}`);
    }
  };
  L.push(`  var it = it0;`);
  L.push(`  loop {`);
  L.push(`    if (it >= it1) { break; }`);
  L.push(`    let tile = it / KT; let s0 = it % KT; let s1 = min(KT, s0 + (it1 - it));`);
  L.push(`    let row0 = (tile / tilesX) * ${BM}u; let col0 = (tile % tilesX) * ${BN}u;`);
  for (const c of acc) L.push(`    ${c} = vec4<f32>(0.0);`);
  fetch(`s0 * ${KQ}u`, "    ");
  put("0u", "    ");
  L.push(`    workgroupBarrier();`);
  L.push(`    for (var t = s0; t < s1; t++) {`);
  L.push(`      let cur = (t - s0) & 1u; let more = t + 1u < s1;`);
  L.push(`      if (more) {`); fetch(`(t + 1u) * ${KQ}u`, "        "); L.push(`      }`);
  L.push(`      let ao = cur * ${bk * SA}u + ty; let bo = cur * ${bk * SB}u + tx;`);
  for (let kk = 0; kk < bk; kk++) {
    for (let g = 0; g < GA; g++) L.push(`      let a${kk}_${g} = Aw[ao + ${kk * SA + g * wy}u];`);
    for (let h = 0; h < GB; h++) L.push(`      let b${kk}_${h} = Bw[bo + ${kk * SB + h * wx}u];`);
    for (let g = 0; g < GA; g++) for (let i = 0; i < 4; i++) for (let h = 0; h < GB; h++)
      L.push(`      c${g}_${i}_${h} = fma(vec4<f32>(a${kk}_${g}[${i}]), b${kk}_${h}, c${g}_${i}_${h});`);
  }
  L.push(`      if (more) {`); put("(1u - cur)", "        "); L.push(`      }`);
  L.push(`      workgroupBarrier();`);
  L.push(`    }`);
  L.push(`    if (s0 == 0u) {`);
  for (let g = 0; g < GA; g++) for (let i = 0; i < 4; i++) for (let h = 0; h < GB; h++)
    L.push(`      C[(row0 + ${4 * g * wy + i}u + 4u * ty) * N4 + col0 / 4u + ${h * wx}u + tx] = c${g}_${i}_${h};`);
  L.push(`    } else {`);
  for (let g = 0; g < GA; g++) for (let i = 0; i < 4; i++) for (let h = 0; h < GB; h++)
    L.push(`      W[w * ${(BM * BN) / 4}u + (${4 * g * wy + i}u + 4u * ty) * ${BN / 4}u + ${h * wx}u + tx] = c${g}_${i}_${h};`);
  L.push(`    }`);
  L.push(`    it = it + (s1 - s0);`);
  L.push(`  }`);
  L.push(`}`);
  return L.join("\n");
}

function genFix(v: V): string {
  const BM = bmOf(v), BN = bnOf(v);
  return `
${PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> W: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let w = wid.x; let KT = p.K / ${v.bk}u; let tilesX = p.N / ${BN}u; let IT = (p.M / ${BM}u) * tilesX * KT;
  let it0 = (w * IT) / p.p0;
  if (it0 % KT == 0u) { return; }
  let tile = it0 / KT; let row0 = (tile / tilesX) * ${BM}u; let col0 = (tile % tilesX) * ${BN}u;
  let N4 = p.N / 4u;
  for (var e = li; e < ${(BM * BN) / 4}u; e += 256u) {
    let ci = (row0 + e / ${BN / 4}u) * N4 + col0 / 4u + e % ${BN / 4}u;
    C[ci] = C[ci] + W[w * ${(BM * BN) / 4}u + e];
  }
}`;
}

const REDUCE = `
${PARAMS_WGSL}
@group(0) @binding(0) var<storage, read> W: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * 65535u * 256u;
  if (i >= p.MN4) { return; }
  var s = W[i];
  for (var z = 1u; z < p.S; z++) { s += W[z * p.MN4 + i]; }
  C[i] = s;
}`;

function rnd(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; a[i] = (s / 4294967296) * 2 - 1; }
  return a;
}
const median = (x: number[]) => { const s = [...x].sort((a, b) => a - b); return s[s.length >> 1]; };

interface Dev { device: GPUDevice; name: string; ts: boolean; flags: string[] }
async function openDev(flags: string[], icd: string | null): Promise<Dev> {
  const ad = await adapterWith(icd, flags);
  if (!ad) throw new SsdError("E_NO_ADAPTER", `gemmlab: no adapter.\n${INSTALL_HINT}`);
  const info = (ad as any).info ?? {};
  const ts = ad.features.has("timestamp-query");
  const lim: Record<string, number> = {};
  for (const k of ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX"]) lim[k] = (ad.limits as any)[k];
  const device = await ad.requestDevice({ requiredFeatures: ts ? ["timestamp-query"] : [], requiredLimits: lim });
  return { device, name: `${info.vendor ?? ""} ${info.architecture ?? ""} ${info.description ?? ""}`.trim(), ts, flags };
}

interface Shape { M: number; N: number; K: number }
interface Bufs { A: GPUBuffer; B: GPUBuffer; C: GPUBuffer; W: GPUBuffer | null; a: Float32Array; b: Float32Array; shape: Shape }
function makeBufs(d: GPUDevice, s: Shape, maxSplit: number): Bufs {
  const a = rnd(s.M * s.K, 1), b = rnd(s.N * s.K, 2);
  const mk = (data: Float32Array | null, bytes: number) => {
    const buf = d.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
    if (data) d.queue.writeBuffer(buf, 0, data as Float32Array<ArrayBuffer>);
    return buf;
  };
  return { A: mk(a, a.byteLength), B: mk(b, b.byteLength), C: mk(null, s.M * s.N * 4), W: maxSplit > 1 ? mk(null, maxSplit * s.M * s.N * 4) : null, a, b, shape: s };
}

async function readBuf(d: GPUDevice, src: GPUBuffer, bytes: number): Promise<Float32Array> {
  const rb = d.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = d.createCommandEncoder();
  enc.copyBufferToBuffer(src, 0, rb, 0, bytes);
  d.queue.submit([enc.finish()]);
  await rb.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(rb.getMappedRange().slice(0));
  rb.unmap(); rb.destroy();
  return out;
}

export interface Result { variant: string; flags: string; shape: string; ms?: number; wallMs?: number; tflops?: number; pct?: number; err?: number; unwritten?: number; error?: string; compileMs?: number }

const destroyBufs = (b: Bufs) => { for (const x of [b.A, b.B, b.C, b.W]) x?.destroy(); };

async function runVariant(dev: Dev, bufs: Bufs, v: V, iters: number, peak?: number): Promise<Result> {
  const d = dev.device, s = bufs.shape;
  const r: Result = { variant: vname(v), flags: dev.flags.join(" "), shape: `${s.M}x${s.N}x${s.K}` };
  const BM = bmOf(v), BN = bnOf(v);
  if (!v.check && (s.M % BM || s.N % BN)) { r.error = "shape not a tile multiple"; return r; }
  const SL = v.sl ?? 1;
  if (s.K % (v.bk * v.split * SL)) { r.error = "K not a multiple of bk·split·sl"; return r; }
  if (SL > 1 && v.sk) { r.error = "sliced K and stream-K do not combine"; return r; }
  const T = v.wx * v.wy * SL;
  const wgBytes = 16 * 2 * v.bk * (BM / 4 + 1 + BN / 4 + 1) * SL;
  if (T > d.limits.maxComputeInvocationsPerWorkgroup || wgBytes > d.limits.maxComputeWorkgroupStorageSize) { r.error = `limits (threads ${T}, wg bytes ${wgBytes})`; return r; }
  if (v.sk && v.sk > (s.M / BM) * (s.N / BN)) { r.error = "stream-K needs P <= tiles"; return r; }
  if (v.sk && (s.M % BM || s.N % BN || s.K % v.bk)) { r.error = "stream-K: whole tiles only"; return r; }
  const code = v.sk ? genSK(v) : gen(v);
  const t0 = performance.now();
  d.pushErrorScope("validation");
  const mod = d.createShaderModule({ code });
  const info = await mod.getCompilationInfo();
  const errs = info.messages.filter((m) => m.type === "error");
  if (errs.length) { await d.popErrorScope(); r.error = `wgsl: ${errs[0].message} (line ${errs[0].lineNum})`; return r; }
  let pipe: GPUComputePipeline;
  try { pipe = await d.createComputePipelineAsync({ layout: "auto", compute: { module: mod, entryPoint: "main" } }); } catch (e: any) { await d.popErrorScope(); r.error = `pipeline: ${e.message}`; return r; }
  const ve = await d.popErrorScope();
  if (ve) { r.error = `validation: ${ve.message}`; return r; }
  r.compileMs = performance.now() - t0;
  const MN4 = (s.M * s.N) / 4;
  const ub = d.createBuffer({ size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  d.queue.writeBuffer(ub, 0, new Uint32Array([s.M, s.N, s.K, s.K / v.split, MN4, v.split, v.sk ?? 0, 0]));
  const out = v.split > 1 ? bufs.W! : bufs.C;
  const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: bufs.A } }, { binding: 1, resource: { buffer: bufs.B } }, { binding: 2, resource: { buffer: out, size: v.split * s.M * s.N * 4 } }, { binding: 3, resource: { buffer: ub } }];
  if (v.sk) entries.push({ binding: 4, resource: { buffer: bufs.W!, size: v.sk * BM * BN * 4 } });
  const bg = d.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries });
  let red: { pipe: GPUComputePipeline; bg: GPUBindGroup; grid: [number, number] } | null = null;
  if (v.sk) {
    const fp = d.createComputePipeline({ layout: "auto", compute: { module: d.createShaderModule({ code: genFix(v) }), entryPoint: "main" } });
    red = { pipe: fp, bg: d.createBindGroup({ layout: fp.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: bufs.W!, size: v.sk * BM * BN * 4 } }, { binding: 1, resource: { buffer: bufs.C } }, { binding: 2, resource: { buffer: ub } }] }), grid: [v.sk, 1] };
  }
  if (v.split > 1) {
    const rp = d.createComputePipeline({ layout: "auto", compute: { module: d.createShaderModule({ code: REDUCE }), entryPoint: "main" } });
    const wgs = Math.ceil(MN4 / 256);
    red = { pipe: rp, bg: d.createBindGroup({ layout: rp.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: bufs.W!, size: v.split * s.M * s.N * 4 } }, { binding: 1, resource: { buffer: bufs.C } }, { binding: 2, resource: { buffer: ub } }] }), grid: [Math.min(wgs, 65535), Math.ceil(wgs / 65535)] };
  }
  const grid: [number, number, number] = v.sk ? [v.sk, 1, 1] : [Math.ceil(s.N / BN), Math.ceil(s.M / BM), v.split];
  const encode = (pass: GPUComputePassEncoder, reps: number) => {
    for (let i = 0; i < reps; i++) {
      pass.setPipeline(pipe); pass.setBindGroup(0, bg); pass.dispatchWorkgroups(...grid);
      if (red) { pass.setPipeline(red.pipe); pass.setBindGroup(0, red.bg); pass.dispatchWorkgroups(red.grid[0], red.grid[1]); }
    }
  };
  // poison, run once, check
  d.queue.writeBuffer(bufs.C, 0, new Uint32Array(s.M * s.N).fill(0x7fc00000));
  { const enc = d.createCommandEncoder(); const p = enc.beginComputePass(); encode(p, 1); p.end(); d.queue.submit([enc.finish()]); }
  const c = await readBuf(d, bufs.C, s.M * s.N * 4);
  let unwritten = 0;
  for (let i = 0; i < c.length; i += 97) if (Number.isNaN(c[i])) unwritten++;
  let worst = 0;
  for (let q = 0; q < 300; q++) {
    const m = (q * 7919 + 13) % s.M, n = (q * 104729 + 7) % s.N;
    let ref = 0, mag = 0;
    for (let k = 0; k < s.K; k++) { const x = bufs.a[m * s.K + k] * bufs.b[n * s.K + k]; ref += x; mag += Math.abs(x); }
    const e = Math.abs(c[m * s.N + n] - ref) / mag;
    worst = Math.max(worst, Number.isNaN(e) ? Infinity : e);
  }
  r.err = worst; r.unwritten = unwritten;
  // time: samples of `reps` dispatches in one pass, timestamps at the pass ends
  const reps = 10, samples = iters;
  const qs = dev.ts ? d.createQuerySet({ type: "timestamp", count: 2 * samples }) : null;
  const qb = qs ? d.createBuffer({ size: 16 * samples, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }) : null;
  for (let w = 0; w < 3; w++) { const enc = d.createCommandEncoder(); const p = enc.beginComputePass(); encode(p, reps); p.end(); d.queue.submit([enc.finish()]); }
  await d.queue.onSubmittedWorkDone();
  const tw = performance.now();
  for (let i = 0; i < samples; i++) {
    const enc = d.createCommandEncoder();
    const p = enc.beginComputePass(qs ? { timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } } : {});
    encode(p, reps); p.end();
    if (i === samples - 1 && qs) enc.resolveQuerySet(qs, 0, 2 * samples, qb!, 0);
    d.queue.submit([enc.finish()]);
  }
  await d.queue.onSubmittedWorkDone();
  r.wallMs = (performance.now() - tw) / (samples * reps);
  if (qs) {
    const rb = d.createBuffer({ size: 16 * samples, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = d.createCommandEncoder(); enc.copyBufferToBuffer(qb!, 0, rb, 0, 16 * samples); d.queue.submit([enc.finish()]);
    await rb.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(rb.getMappedRange().slice(0));
    rb.unmap(); rb.destroy();
    const per: number[] = [];
    for (let i = 0; i < samples; i++) per.push(Number(t[2 * i + 1] - t[2 * i]) / 1e6 / reps);
    r.ms = median(per);
    qs.destroy(); qb!.destroy();
  } else r.ms = r.wallMs;
  ub.destroy();
  r.tflops = (2 * s.M * s.N * s.K) / r.ms / 1e9;
  if (peak) r.pct = (100 * r.tflops * 1000) / peak;
  return r;
}


const fmt = (r: Result) => r.error ? `${r.variant.padEnd(40)} ${r.shape.padEnd(16)} skip: ${r.error}` :
  `${r.variant.padEnd(40)} ${r.shape.padEnd(16)} ${r.ms!.toFixed(4)} ms  wall ${r.wallMs!.toFixed(4)}  ${(1000 * r.tflops!).toFixed(1)} GFLOP/s${r.pct !== undefined ? `  ${r.pct.toFixed(1)}% of peak` : ""}  err ${r.err!.toExponential(1)}${r.unwritten ? `  UNWRITTEN ${r.unwritten}` : ""}  compile ${r.compileMs!.toFixed(0)} ms`;

const U = (tm: number, tn: number, wx: number, wy: number, bk: number, extra: Partial<V> = {}): V => ({ tm, tn, wx, wy, bk, style: "unroll", split: 1, check: false, ...extra });

/** The variant sets: what each one asks, on which shape, under which toggles. */
function variantSet(set: string): { shape: Shape; variants: V[]; robust: boolean[] } {
  const variants: V[] = [];
  if (set === "quick") {
    // a small shape any adapter runs in seconds: every kind of variant once (correctness first)
    variants.push(U(8, 8, 8, 8, 8), U(8, 8, 16, 16, 8), U(16, 8, 8, 8, 8), U(8, 4, 16, 16, 16), U(8, 8, 32, 8, 8), U(8, 8, 16, 8, 16, { style: "loop" }));
    variants.push(U(8, 8, 16, 8, 8, { split: 2 }), U(8, 8, 8, 8, 8, { split: 4 }), U(8, 8, 8, 8, 8, { sk: 3 }), U(8, 8, 16, 4, 8, { sk: 5 }), U(8, 8, 8, 8, 8, { check: true }));
    variants.push(U(8, 8, 8, 8, 8, { sl: 2 }), U(8, 8, 16, 8, 8, { sl: 2, split: 2 }), U(8, 4, 8, 8, 8, { sl: 4 }));
    return { shape: { M: 256, N: 256, K: 64 }, variants, robust: [true] };
  }
  if (set === "sweep") {
    // tile shapes × K depth; loop style, bounds checks and split-K on a few; robustness on and off
    const geos: [number, number, number, number][] = [[8, 8, 8, 8], [8, 8, 16, 8], [8, 8, 8, 16], [8, 8, 16, 16], [16, 8, 8, 8], [16, 8, 16, 8], [8, 16, 8, 8], [8, 4, 16, 16], [16, 8, 16, 16], [8, 8, 32, 8], [16, 16, 8, 8]];
    for (const [tm, tn, wx, wy] of geos) for (const bk of [8, 16]) variants.push(U(tm, tn, wx, wy, bk));
    for (const [tm, tn, wx, wy] of [[8, 8, 8, 8], [8, 8, 16, 16], [16, 8, 16, 8]]) variants.push(U(tm, tn, wx, wy, 8, { style: "loop" }), U(tm, tn, wx, wy, 8, { check: true }));
    for (const [tm, tn, wx, wy] of [[8, 8, 8, 8], [8, 8, 16, 16], [16, 8, 16, 8], [16, 8, 8, 8]]) for (const split of [2, 4]) variants.push(U(tm, tn, wx, wy, 8, { split }));
    return { shape: { M: 4096, N: 1280, K: 1280 }, variants, robust: [true, false] };
  }
  if (set === "focus") {
    // the best of "sweep" on an H200, their loop-style twins, split-K and stream-K (worker counts
    // around multiples of the H200's 132 SMs), thinner tiles; robustness off
    variants.push(U(8, 8, 16, 8, 16), U(8, 8, 8, 16, 16), U(8, 8, 32, 8, 8), U(8, 8, 16, 16, 8, { split: 2 }));
    variants.push(U(8, 8, 16, 8, 16, { style: "loop" }), U(8, 8, 32, 8, 8, { style: "loop" }), U(8, 8, 8, 16, 16, { style: "loop" }));
    variants.push(U(8, 8, 16, 8, 16, { split: 2 }), U(8, 8, 16, 8, 16, { split: 4 }), U(8, 8, 8, 16, 16, { split: 2 }), U(8, 8, 32, 8, 8, { split: 2 }), U(8, 8, 32, 8, 8, { split: 4 }));
    for (const sk of [264, 396, 462, 528, 594]) variants.push(U(8, 8, 16, 8, 16, { sk }));
    for (const sk of [132, 198, 264]) variants.push(U(8, 8, 32, 8, 8, { sk }), U(8, 8, 16, 16, 8, { sk }));
    for (const sk of [528, 660, 792, 1056]) variants.push(U(8, 8, 8, 8, 16, { sk }));
    variants.push(U(8, 8, 16, 4, 16), U(8, 8, 4, 16, 16), U(8, 8, 16, 4, 8), U(8, 8, 8, 8, 16));
    return { shape: { M: 4096, N: 1280, K: 1280 }, variants, robust: [false] };
  }
  if (set === "slice") {
    // sliced K (2 or 4 groups of threads per workgroup share a tile's K range) against the
    // best plain, split-K and stream-K variants of "focus" on an H200; robustness off
    variants.push(U(8, 8, 32, 8, 8), U(8, 8, 32, 8, 8, { split: 2 }), U(8, 8, 8, 16, 16), U(8, 8, 16, 8, 16), U(8, 8, 32, 8, 8, { sk: 264 }));
    for (const [wx, wy, bk] of [[32, 8, 8], [8, 16, 8], [16, 8, 8], [16, 16, 8], [8, 8, 16], [8, 8, 8], [16, 4, 16], [4, 16, 16]]) variants.push(U(8, 8, wx, wy, bk, { sl: 2 }));
    variants.push(U(8, 8, 8, 8, 8, { sl: 4 }), U(8, 8, 8, 4, 16, { sl: 4 }), U(8, 8, 32, 8, 8, { sl: 2, split: 2 }), U(8, 8, 8, 16, 8, { sl: 2, split: 2 }));
    return { shape: { M: 4096, N: 1280, K: 1280 }, variants, robust: [false] };
  }
  throw new SsdError("E_BAD_PARAM", `gemmlab: --set ${set}: use quick, sweep, focus or slice`);
}

export interface GemmLabArgs {
  set?: string;
  /** after the set: its 6 best variants (1 and 2 parts) on the SSD-1B linear shapes */
  shapes?: boolean;
  json?: string;
  /** GFLOP/s to rate against (e.g. 66900 for an H200's FP32 peak) */
  peak?: number;
  /** seconds after which no new variant starts (default 240) */
  deadline?: number;
  /** CPU driver to use when no GPU is wanted or present (lavapipe, swiftshader) */
  driver?: string;
  log?: (line: string) => void;
}

export async function benchGemmLab(args: GemmLabArgs = {}): Promise<Result[]> {
  if (runtime !== "node") throw new SsdError("E_BAD_PARAM", "gemmlab: runs under Node (it creates Dawn instances with toggles)");
  const log = args.log ?? ((l: string) => console.log(l));
  const set = args.set ?? "sweep";
  const { shape, variants, robust } = variantSet(set);
  const deadline = performance.now() + 1000 * (args.deadline ?? 240);
  const icd = args.driver ? findIcd(args.driver) : null;
  if (args.driver && !icd) throw new SsdError("E_NO_ADAPTER", `gemmlab: driver '${args.driver}' is not installed.\n${INSTALL_HINT}`);
  const base = "disable-dawn-features=use_vulkan_memory_model,timestamp_quantization";
  const results: Result[] = [];
  const all: { dev: Dev; res: Result[]; vs: V[] }[] = [];
  for (const rb of robust) {
    if (performance.now() > deadline) break;
    const dev = await openDev(rb ? [base] : [base, "enable-dawn-features=disable_robustness"], icd);
    log(`\n### adapter: ${dev.name} | timestamps ${dev.ts} | robustness ${rb ? "on" : "off"} | set ${set}, ${shape.M}x${shape.N}x${shape.K}`);
    const bufs = makeBufs(dev.device, shape, 4);
    const res: Result[] = [], vs: V[] = [];
    for (const v of variants) {
      if (performance.now() > deadline) { log("(deadline: no more variants)"); break; }
      const r = await runVariant(dev, bufs, v, set === "quick" ? 3 : 15, args.peak);
      log(fmt(r)); res.push(r); vs.push(v); results.push(r);
      // a ragged shape for the bounds-checked variants
      if (v.check) {
        const rs = makeBufs(dev.device, { M: shape.M - 56, N: shape.N - 28, K: shape.K }, 1);
        const rr = await runVariant(dev, rs, v, 3, args.peak);
        log(fmt(rr)); results.push(rr);
        destroyBufs(rs);
      }
    }
    all.push({ dev, res, vs });
    destroyBufs(bufs);
  }
  if (args.shapes && all.length) {
    const ok = (r: Result) => !r.error && r.err! < 1e-5 && !r.unwritten;
    const top = (x: { res: Result[] }) => Math.max(0, ...x.res.filter(ok).map((r) => r.tflops!));
    const best = all.reduce((a, x) => (top(x) > top(a) ? x : a));
    const ranked = best.vs.filter((_, i) => ok(best.res[i])).sort((a, b) => best.res[best.vs.indexOf(b)].tflops! - best.res[best.vs.indexOf(a)].tflops!).slice(0, 6);
    const shapes: Shape[] = set === "quick" ? [{ M: 256, N: 256, K: 128 }] : [{ M: 4096, N: 640, K: 640 }, { M: 4096, N: 5120, K: 640 }, { M: 4096, N: 640, K: 2560 }, { M: 1024, N: 1280, K: 1280 }, { M: 1024, N: 10240, K: 1280 }, { M: 1024, N: 1280, K: 5120 }];
    log(`\n### ${set === "quick" ? "a second small shape" : "SSD-1B linear shapes"}, the 6 best variants, robustness ${best.dev.flags.length > 1 ? "off" : "on"}`);
    for (const s of shapes) {
      const bufs = makeBufs(best.dev.device, s, 4);
      for (const v0 of ranked) for (const split of v0.split > 1 || v0.sk ? [v0.split] : [1, 2]) {
        if (performance.now() > deadline + 60000) break;
        const r = await runVariant(best.dev, bufs, { ...v0, split }, set === "quick" ? 3 : 10, args.peak);
        log(fmt(r)); results.push(r);
      }
      destroyBufs(bufs);
    }
  }
  for (const x of all) x.dev.device.destroy();
  if (args.json) writeFileSync(args.json, JSON.stringify({ set, results }, null, 1));
  return results;
}
