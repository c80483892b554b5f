// Convolutions as implicit GEMM (no im2col buffer), NCHW activations.
//
//   C[m, n] = sum_k A[m, k] · B[k, n]
//   m: output channel (within the group), n: output pixel of this dispatch,
//   k: (input channel, tap row a, tap column b) of the reduction.
//
// A is the weight, read in its PyTorch layout through strides (wsO, wsC, wsA,
// wsB), so no re-layout is needed at load. B is gathered from the input on the
// fly: pixel n sits at output row jr = r0 + n / rowLen, column i = n % rowLen;
// its input position for tap (a, b) is
//   iy = jr*ysc + yoff + a*tyStep,  ix = i*xsc + xoff + b*txStep
// (taps outside the input read 0, which is the zero padding) and input
// channel c of image b is the plane at (b·Cin + c)·xsC (xsC = Hin·Win for a
// convolution; attention's GEMMs read Q, K and V in place through other
// strides, see rawGemm in engine/ops/conv.ts). One parameter set serves both
// ops:
//   conv2d:            ysc = stride, yoff = -pad, tyStep = dilation, taps kH×kW
//   conv_transpose2d:  one dispatch per output phase (oy mod s, ox mod s); the
//                      taps that reach a phase are kh = kh0 + a*s, the input
//                      row is jr + q - a (ysc 1, yoff q, tyStep -1), so there
//                      are no structural zeros in the reduction.
// Output pixel (jr, i) is written at row jr*oys + oyo, column i*oxs + oxo.
//
// Large tensors: the host may bind sub-ranges of X, WT, Y and R; xBase, wBase,
// yBase and rBase are the element offsets of those ranges, subtracted from the
// absolute indices computed here. A reduction split over input-channel ranges
// accumulates through ACCUM (partial sum already in Y), so bias, activation
// and residual go in the right order: act(sum + bias) + residual.
//
// Five kernels, f32 accumulation in all:
//   conv2d        as matmul.wgsl's `tiled` (a 16×16 workgroup computes a 64×64
//                 block, each thread a 4×4 register tile, K in steps of 16
//                 through workgroup memory; suits GPUs);
//   conv2d_wide   matmul's `wide` GEMM core (shaders/wide_tile.wgsl) with
//                 tunable tiles (suits big GPUs); conv2d_wide_sk runs every
//                 block in K parts added in the dispatch (serial split-K),
//                 conv2d_wide_st the last blocks only (a serial tail);
//   conv2d_small  at most 8 output channels per group (a thread per pixel,
//                 weights through workgroup memory);
//   conv2d_reg    no workgroup memory and no barriers, for CPU drivers (where a
//                 barrier costs a fiber switch per invocation): each thread
//                 computes 16 output channels × 8 pixels straight from global
//                 memory, laid out for SIMD lanes (see the kernel);
//   conv2d_sg     conv2d_reg with each weight loaded by one lane of a subgroup
//                 and broadcast to the others (lavapipe; subgroups of >= 8).

override ACT: u32 = 0u;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override ACCUM: bool = false;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

// Weight element for absolute output channel o, reduction channel c (of this
// dispatch's chunk) and tap (ta, tb).
fn w_at(o: u32, c: u32, ta: u32, tb: u32) -> f32 {
  return WT_ld(o * P.wsO + (P.c0 + c) * P.wsC + ta * P.wsA + tb * P.wsB + P.wOff - P.wBase);
}

// Input element for reduction channel c and tap (ta, tb) of a pixel whose
// input origin is (iy0, ix0); 0 outside the input (zero padding).
fn x_at(xImg: u32, c: u32, iy0: i32, ix0: i32, ta: u32, tb: u32) -> f32 {
  let iy = iy0 + i32(ta) * P.tyStep;
  let ix = ix0 + i32(tb) * P.txStep;
  if (iy < 0 || iy >= i32(P.Hin) || ix < 0 || ix >= i32(P.Win)) { return 0.0; }
  return X_ld(xImg + c * P.xsC + u32(iy) * P.Win + u32(ix) - P.xBase);
}

// Output pixel index (within a plane) of dispatch pixel n.
fn out_pix(n: u32) -> u32 {
  let jr = P.r0 + n / P.rowLen;
  return (jr * P.oys + P.oyo) * P.Wo + (n % P.rowLen) * P.oxs + P.oxo;
}

fn epilogue(b: u32, o: u32, pix: u32, acc: f32) {
  let yi = (b * P.Cout + o) * P.Ho * P.Wo + pix;
  var v = acc;
  if (ACCUM) { v = v + f32(Y[yi - P.yBase]); }
  if (HAS_BIAS) { v = v + BIAS_ld(o); }
  v = activate(v, ACT);
  if (HAS_RES) { v = v + R_ld(yi - P.rBase); }
  Y_st(yi - P.yBase, v);
}

//! kernel conv2d
// Shared tiles hold vec4s of 4 consecutive rows (A) or pixels (B): a thread's
// 4×4 block reads one vec4 of each per k.
var<workgroup> As: array<vec4<f32>, 256>; // [BK][BM/4]
var<workgroup> Bs: array<vec4<f32>, 256>; // [BK][BN/4]

@compute @workgroup_size(16, 16)
fn conv2d(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let zl = wid.z;
  let b = P.b0 + zl / P.G;
  let g = P.g0 + zl % P.G;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let tid = lid.y * 16u + lid.x;
  let taps = P.TH * P.TW;
  let K = P.cn * taps;
  let M = P.on;
  let oBase = g * P.Og + P.o0;     // absolute output channel of m = 0
  let cBase = g * P.Cg + P.c0;     // absolute input channel of the first reduction channel
  let xImg = (b * P.Cin + cBase) * P.xsC;

  // Tile loads: a thread loads one k of the A tile (rows tid/16 + 16r) and
  // one k of the B tile (pixels tid%16 + 16r), so the (channel, tap)
  // decomposition of k is done twice per tile rather than once per
  // element; the input origins of its 4 pixels are computed once.
  let ak = tid % BK;
  let bk = tid / 16u;
  var iy0: array<i32, 4>;
  var ix0: array<i32, 4>;
  var nOk: array<bool, 4>;
  for (var r = 0u; r < 4u; r++) {
    let gn = n0 + tid % 16u + 16u * r;
    nOk[r] = gn < P.npix;
    iy0[r] = i32((P.r0 + gn / P.rowLen) * P.ysc) + P.yoff;
    ix0[r] = i32((gn % P.rowLen) * P.xsc) + P.xoff;
  }

  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

  for (var k0 = 0u; k0 < K; k0 += BK) {
    {
      let gk = k0 + ak;
      let c = gk / taps;
      let t = gk % taps;
      let ta = t / P.TW;
      let tb = t % P.TW;
      for (var r = 0u; r < 4u; r++) {
        let m = tid / 16u + 16u * r;
        var v = 0.0;
        if (m0 + m < M && gk < K) { v = w_at(oBase + m0 + m, c, ta, tb); }
        As[ak * 16u + m / 4u][m % 4u] = v;
      }
    }
    {
      let gk = k0 + bk;
      let c = gk / taps;
      let t = gk % taps;
      let ta = t / P.TW;
      let tb = t % P.TW;
      for (var r = 0u; r < 4u; r++) {
        let n = tid % 16u + 16u * r;
        var v = 0.0;
        if (nOk[r] && gk < K) { v = x_at(xImg, c, iy0[r], ix0[r], ta, tb); }
        Bs[bk * 16u + n / 4u][n % 4u] = v;
      }
    }
    workgroupBarrier();
    for (var k = 0u; k < BK; k++) {
      let a = As[k * 16u + lid.y];
      fma4x4(&acc, a, Bs[k * 16u + lid.x]);
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < 4u; j++) {
    let n = n0 + lid.x * 4u + j;
    if (n >= P.npix) { continue; }
    let pix = out_pix(n);
    for (var i = 0u; i < 4u; i++) {
      let m = m0 + lid.y * 4u + i;
      if (m < M) { epilogue(b, oBase + m, pix, acc[i * 4u + j]); }
    }
  }
}

//! kernel conv2d_wide conv2d_wide_sk conv2d_wide_st
// The shared tiled GEMM core (shaders/wide_tile.wgsl, tunable tiles, 8×8 or
// 8×4 outputs per thread) on this implicit GEMM: A = the weights (m = output
// channel, k = (channel, tap)), B gathered from the input (k, pixel n). The
// host only picks tiles where a thread stages one vec4 of B per step, so its
// four pixels stay the same all along and their input origins are computed
// once. W_ROWS: the taps of an output channel are contiguous in k (conv2d's
// [O, C, kH, kW] weights), so A needs no (channel, tap) split.
override W_ROWS: bool = false;
// KH × KW: the taps of an input channel (the dispatch's P.TH × P.TW) as
// override constants, so that splitting k into (channel, tap row, tap column)
// for every staged load divides by constants, which compilers turn into
// multiplies and shifts, not by uniforms (a full integer division each).
override KH: u32;
override KW: u32;
// Serial split-K's parts (conv2d_wide_sk and conv2d_wide_st; unused by
// conv2d_wide), and WSK_RECHECK (tests only: wide_serial's taker gathers
// every accumulator the second way too, each word waited for, the path that
// a word not yet visible takes and CPU drivers never take by themselves).
// Declared here, before wide_tile's code: declared after it, naga 29
// (Deno's WebGPU) panicked building the pipeline (an assertion in naga's
// arena/handlevec.rs) whenever the entry used it.
override KSPLIT: u32 = 2u;
override WSK_RECHECK: bool = false;

//! include wide_tile

struct WideCtx {
  oBase: u32, m0: u32, n0: u32, xImg: u32, M: u32, K: u32,
  // pixels pn .. pn+3 of the block: input origins and which exist
  pn: u32, iy0: vec4<i32>, ix0: vec4<i32>, nok: vec4<bool>,
}

fn wide_ld_a(c: WideCtx, m: u32, k: u32) -> vec4<f32> {
  let row = c.m0 + m;
  var v = vec4<f32>(0.0);
  if (row >= c.M) { return v; }
  let o = c.oBase + row;
  let taps = KH * KW;
  for (var j = 0u; j < 4u; j++) {
    let kk = k + j;
    if (kk < c.K) {
      if (W_ROWS) {
        v[j] = WT_ld(o * P.wsO + P.c0 * P.wsC + kk + P.wOff - P.wBase);
      } else {
        let t = kk % taps;
        v[j] = w_at(o, kk / taps, t / KW, t % KW);
      }
    }
  }
  return v;
}

fn wide_ld_b(c: WideCtx, k: u32, n: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (k >= c.K) { return v; }
  let taps = KH * KW;
  let ch = k / taps;
  let t = k % taps;
  var iy0 = c.iy0;
  var ix0 = c.ix0;
  var nok = c.nok;
  if (n != c.pn) { // not the precomputed pixels (never, with the tiles the host picks)
    for (var j = 0u; j < 4u; j++) {
      let gn = c.n0 + n + j;
      nok[j] = gn < P.npix;
      iy0[j] = i32((P.r0 + gn / P.rowLen) * P.ysc) + P.yoff;
      ix0[j] = i32((gn % P.rowLen) * P.xsc) + P.xoff;
    }
  }
  for (var j = 0u; j < 4u; j++) {
    if (nok[j]) { v[j] = x_at(c.xImg, ch, iy0[j], ix0[j], t / KW, t % KW); }
  }
  return v;
}

// Row m (of the block) of a thread's outputs, for its columns at pixels pix.
fn conv_wide_store(b: u32, c: WideCtx, m: u32, pix: vec4<u32>, ok: vec4<bool>, v: vec4<f32>) {
  if (c.m0 + m >= c.M) { return; }
  let o = c.oBase + c.m0 + m;
  for (var j = 0u; j < 4u; j++) { if (ok[j]) { epilogue(b, o, pix[j], v[j]); } }
}

//! kernel conv2d_wide
@compute @workgroup_size(GW_X * GW_Y)
fn conv2d_wide(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let BM = 8u * GW_Y;
  let BN = GTN * GW_X;
  let b = P.b0 + wid.z / P.G;
  let g = P.g0 + wid.z % P.G;
  var c: WideCtx;
  c.oBase = g * P.Og + P.o0;
  c.m0 = wid.y * BM;
  c.n0 = wid.x * BN;
  c.xImg = (b * P.Cin + g * P.Cg + P.c0) * P.xsC;
  c.M = P.on;
  let K = P.cn * KH * KW; // uniform (c holds per-thread fields, so c.K is not, for the analysis)
  c.K = K;
  c.pn = 4u * (tid % (BN / 4u)); // the B slot of wide_slot_b for v = tid
  for (var j = 0u; j < 4u; j++) {
    let gn = c.n0 + c.pn + j;
    c.nok[j] = gn < P.npix;
    c.iy0[j] = i32((P.r0 + gn / P.rowLen) * P.ysc) + P.yoff;
    c.ix0[j] = i32((gn % P.rowLen) * P.xsc) + P.xoff;
  }
  wide_gemm(tid, c, 0u, K);
  let acc = wide_acc;
  // output pixels of the thread's columns, once for all its rows
  let n0 = c.n0 + wide_cols(tid);
  let n1 = n0 + BN / 2u;
  var p0: vec4<u32>; var p1: vec4<u32>;
  var ok0: vec4<bool>; var ok1: vec4<bool>;
  for (var j = 0u; j < 4u; j++) {
    ok0[j] = n0 + j < P.npix;
    ok1[j] = GTN == 8u && n1 + j < P.npix;
    if (ok0[j]) { p0[j] = out_pix(n0 + j); }
    if (ok1[j]) { p1[j] = out_pix(n1 + j); }
  }
  let r0 = wide_rows(tid);
  let r1 = r0 + BM / 2u;
  // constant indices only: a dynamically indexed acc would live in local memory
  conv_wide_store(b, c, r0, p0, ok0, acc[0]); conv_wide_store(b, c, r0 + 1u, p0, ok0, acc[2]);
  conv_wide_store(b, c, r0 + 2u, p0, ok0, acc[4]); conv_wide_store(b, c, r0 + 3u, p0, ok0, acc[6]);
  conv_wide_store(b, c, r1, p0, ok0, acc[8]); conv_wide_store(b, c, r1 + 1u, p0, ok0, acc[10]);
  conv_wide_store(b, c, r1 + 2u, p0, ok0, acc[12]); conv_wide_store(b, c, r1 + 3u, p0, ok0, acc[14]);
  if (GTN == 8u) {
    conv_wide_store(b, c, r0, p1, ok1, acc[1]); conv_wide_store(b, c, r0 + 1u, p1, ok1, acc[3]);
    conv_wide_store(b, c, r0 + 2u, p1, ok1, acc[5]); conv_wide_store(b, c, r0 + 3u, p1, ok1, acc[7]);
    conv_wide_store(b, c, r1, p1, ok1, acc[9]); conv_wide_store(b, c, r1 + 1u, p1, ok1, acc[11]);
    conv_wide_store(b, c, r1 + 2u, p1, ok1, acc[13]); conv_wide_store(b, c, r1 + 3u, p1, ok1, acc[15]);
  }
}

//! kernel conv2d_wide_sk conv2d_wide_st
// conv2d_wide in KSPLIT parts along K (serial split-K, shaders/wide_serial.wgsl):
// conv2d_wide_sk runs every block in parts, for grids too small to fill a GPU
// (such as 1280 channels at 32²); conv2d_wide_st the last blocks only (a
// serial tail), the others whole. These entries repeat conv2d_wide's set-up
// and stores (through conv_wide_ctx and conv_wide_emit) rather than share
// them with it on purpose: one entry with the serial path behind an override
// constant (KSPLIT = 1 for whole convs) ran whole convs 7-8 % slower on an
// H200 (320→320 at 128²: 1.39 → 1.51 ms kernel time, same run as the plain
// entry), so conv2d_wide stays as it was measured.

//! include wide_serial

// The block of output channels by (from by·BM) and pixels bx (from bx·BN) of
// image and group z (b0 + z / G, g0 + z % G), with the input origins of the
// pixels whose B slot a thread stages.
fn conv_wide_ctx(tid: u32, z: u32, by: u32, bx: u32) -> WideCtx {
  let BM = 8u * GW_Y;
  let BN = GTN * GW_X;
  let b = P.b0 + z / P.G;
  let g = P.g0 + z % P.G;
  var c: WideCtx;
  c.oBase = g * P.Og + P.o0;
  c.m0 = by * BM;
  c.n0 = bx * BN;
  c.xImg = (b * P.Cin + g * P.Cg + P.c0) * P.xsC;
  c.M = P.on;
  c.K = P.cn * KH * KW;
  c.pn = 4u * (tid % (BN / 4u)); // the B slot of wide_slot_b for v = tid
  for (var j = 0u; j < 4u; j++) {
    let gn = c.n0 + c.pn + j;
    c.nok[j] = gn < P.npix;
    c.iy0[j] = i32((P.r0 + gn / P.rowLen) * P.ysc) + P.yoff;
    c.ix0[j] = i32((gn % P.rowLen) * P.xsc) + P.xoff;
  }
  return c;
}

// A thread's outputs (wide_acc) through the epilogue, for image b.
fn conv_wide_emit(tid: u32, b: u32, c: WideCtx) {
  let BM = 8u * GW_Y;
  let BN = GTN * GW_X;
  let acc = wide_acc;
  // output pixels of the thread's columns, once for all its rows
  let n0 = c.n0 + wide_cols(tid);
  let n1 = n0 + BN / 2u;
  var p0: vec4<u32>; var p1: vec4<u32>;
  var ok0: vec4<bool>; var ok1: vec4<bool>;
  for (var j = 0u; j < 4u; j++) {
    ok0[j] = n0 + j < P.npix;
    ok1[j] = GTN == 8u && n1 + j < P.npix;
    if (ok0[j]) { p0[j] = out_pix(n0 + j); }
    if (ok1[j]) { p1[j] = out_pix(n1 + j); }
  }
  let r0 = wide_rows(tid);
  let r1 = r0 + BM / 2u;
  // constant indices only: a dynamically indexed acc would live in local memory
  conv_wide_store(b, c, r0, p0, ok0, acc[0]); conv_wide_store(b, c, r0 + 1u, p0, ok0, acc[2]);
  conv_wide_store(b, c, r0 + 2u, p0, ok0, acc[4]); conv_wide_store(b, c, r0 + 3u, p0, ok0, acc[6]);
  conv_wide_store(b, c, r1, p0, ok0, acc[8]); conv_wide_store(b, c, r1 + 1u, p0, ok0, acc[10]);
  conv_wide_store(b, c, r1 + 2u, p0, ok0, acc[12]); conv_wide_store(b, c, r1 + 3u, p0, ok0, acc[14]);
  if (GTN == 8u) {
    conv_wide_store(b, c, r0, p1, ok1, acc[1]); conv_wide_store(b, c, r0 + 1u, p1, ok1, acc[3]);
    conv_wide_store(b, c, r0 + 2u, p1, ok1, acc[5]); conv_wide_store(b, c, r0 + 3u, p1, ok1, acc[7]);
    conv_wide_store(b, c, r1, p1, ok1, acc[9]); conv_wide_store(b, c, r1 + 1u, p1, ok1, acc[11]);
    conv_wide_store(b, c, r1 + 2u, p1, ok1, acc[13]); conv_wide_store(b, c, r1 + 3u, p1, ok1, acc[15]);
  }
}

//! kernel conv2d_wide_sk
// Grid x is KSPLIT · pixel blocks: workgroup x = bx·KSPLIT + s sums k from
// s·P.kc to (s + 1)·P.kc, and the parts add their sums through W (slots from
// P.sw on).
@compute @workgroup_size(GW_X * GW_Y)
fn conv2d_wide_sk(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  // pixel block and K part
  let bx = wid.x / KSPLIT;
  let s = wid.x % KSPLIT;
  let c = conv_wide_ctx(tid, wid.z, wid.y, bx);
  let K = P.cn * KH * KW; // uniform (c holds per-thread fields, so c.K is not, for the analysis)
  wide_gemm(tid, c, min(K, s * P.kc), min(K, (s + 1u) * P.kc));
  // only a thread of the last part to count in goes on, with the whole sums
  if (!wide_serial(tid, bx + (nwg.x / KSPLIT) * (wid.y + nwg.y * wid.z), s)) { return; }
  conv_wide_emit(tid, P.b0 + wid.z / P.G, c);
}

//! kernel conv2d_wide_st
// The P.nb blocks in order t = bx + gx·(by + gy·z) (pixel blocks fastest):
// blocks [0, P.hy) run whole; each of the other T = P.nb − P.hy runs in
// KSPLIT parts (linear workgroup P.hy + j: part j / T of block P.hy + j % T)
// that add their sums through W (a counter per thread of each tail block,
// the slots from P.sw on). Whole blocks are scheduled first and the tail's
// smaller pieces fill the GPU's last wave; the tail's edge falls on any block.
@compute @workgroup_size(GW_X * GW_Y)
fn conv2d_wide_st(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let BM = 8u * GW_Y;
  let BN = GTN * GW_X;
  let K = P.cn * KH * KW;
  let tail = P.nb - P.hy;
  let l = linear_wg(wid, nwg);
  // the grid's padding (a 2-D grid of more than a row of workgroups)
  if (l >= P.hy + tail * KSPLIT) { return; }
  // one call of the GEMM core and one of the output code, whichever part
  // this workgroup runs (see matmul.wgsl's wide_hyb)
  let p = wide_piece(l, P.hy, tail, K, P.kc);
  let t = p.u;
  let gx = (P.npix + BN - 1u) / BN;
  let gy = (P.on + BM - 1u) / BM;
  let z = t / (gx * gy);
  let c = conv_wide_ctx(tid, z, (t / gx) % gy, t % gx);
  wide_gemm(tid, c, p.k0, p.k1);
  // a tail block's thread goes on only if its part counted in last
  if (l >= P.hy && !wide_serial(tid, t - P.hy, p.s)) { return; }
  conv_wide_emit(tid, P.b0 + z / P.G, c);
}

//! kernel conv2d_small
// Few output channels (the image, latent and depth outputs: 1 to 8): a thread
// per output pixel accumulates up to SM channels, the weights shared through
// workgroup memory, instead of a 64-row tile that would be mostly empty. The
// reduction index advances one step at a time, so (channel, tap) is tracked
// by counters rather than divisions.
const SM: u32 = 8u;
const SK: u32 = 32u;
var<workgroup> Ws: array<f32, 256>; // [SK][SM]

@compute @workgroup_size(256)
fn conv2d_small(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let b = P.b0 + wid.z / P.G;
  let g = P.g0 + wid.z % P.G;
  let m0 = wid.y * SM;
  let taps = P.TH * P.TW;
  let K = P.cn * taps;
  let M = P.on;
  let oBase = g * P.Og + P.o0;
  let gn = wid.x * 256u + li;
  let nOk = gn < P.npix;
  let jr = P.r0 + gn / P.rowLen;
  let iy0 = i32(jr * P.ysc) + P.yoff;
  let ix0 = i32((gn % P.rowLen) * P.xsc) + P.xoff;
  let xImg = (b * P.Cin + g * P.Cg + P.c0) * P.xsC;

  var acc: array<f32, 8>;
  for (var i = 0u; i < SM; i++) { acc[i] = 0.0; }
  var c = 0u;
  var ta = 0u;
  var tb = 0u;
  for (var k0 = 0u; k0 < K; k0 += SK) {
    {
      let m = li / SK;
      let gk = k0 + li % SK;
      var v = 0.0;
      if (m0 + m < M && gk < K) {
        let t = gk % taps;
        v = w_at(oBase + m0 + m, gk / taps, t / P.TW, t % P.TW);
      }
      Ws[(li % SK) * SM + m] = v;
    }
    workgroupBarrier();
    let kn = min(SK, K - k0);
    for (var k = 0u; k < kn; k++) {
      var xv = 0.0;
      if (nOk) { xv = x_at(xImg, c, iy0, ix0, ta, tb); }
      for (var m = 0u; m < SM; m++) { acc[m] = fma(Ws[k * SM + m], xv, acc[m]); }
      tb += 1u;
      if (tb == P.TW) { tb = 0u; ta += 1u; if (ta == P.TH) { ta = 0u; c += 1u; } }
    }
    workgroupBarrier();
  }
  if (!nOk) { return; }
  let pix = out_pix(gn);
  for (var m = 0u; m < SM; m++) {
    if (m0 + m < M) { epilogue(b, oBase + m, pix, acc[m]); }
  }
}

//! kernel conv2d_reg conv2d_sg
// The barrier-free kernels for CPU drivers, which run a workgroup's
// invocations as SIMD lanes. Each thread computes 16 output channels × 8
// pixels; lanes own adjacent output pixels (an input load is a gather of
// adjacent addresses), and the 16 channels depend on the workgroup only. Taps
// loop inside a block of input channels (REG_CB): the per-pixel input offset
// and padding test are set up once per tap and block, and the channel loop only
// steps a plane. The hot loop is written out with constant indices: SwiftShader
// neither unrolls loops nor knows that a loop-indexed local array is
// lane-uniform, and would address it per lane. The two differ in how a reduction step gets its 16 weights.
override LW: u32 = 64u; // lanes per workgroup
// PX4 (X stored as vec4s, npix a multiple of 4): a thread's pixels are two
// runs of 4 adjacent ones. Alone (1×1 taps reading contiguous pixels from
// 4-aligned offsets) each run's inputs are one vec4 access instead of four
// gathers; with ROW3, see there.
override PX4: bool = false;
// ROW3 (with PX4's runs: 3 taps per row at columns -1, 0, +1, stride 1, output
// and input rows of whole vec4s, X stored as vec4s; the 3×3 pad-1 convs of
// the UNet and VAE): a run's inputs for a tap row are the 3 aligned vec4s
// around it, loaded once per channel for all 3 column taps (the run's own,
// shifted left and right by one), instead of 3 × 4 gathers.
override ROW3: bool = false;
// The reduction runs in blocks of REG_CB input channels, taps inside a block:
// a block's weights (16 rows × REG_CB × taps) and input planes stay in the
// core's cache across its taps. Sweeping all channels per tap re-read them
// from far caches once per tap (3×3 conv 2560→1280 at 32²: 12 → 17–19
// GFLOP/s on lavapipe, 1.7 → 2.0 on SwiftShader; 16–32 measured best).
const REG_CB = 32u;

// Pixel 4q+j of a thread: nb + 4q·LW + j·LW (lanes on adjacent pixels), or
// with PX4 nb + 4q·LW + j (nb = 4·lane: runs of 4 on each lane).
fn reg_pixel(nb: u32, q: u32, j: u32) -> u32 {
  return nb + q * 4u * LW + j * select(LW, 1u, PX4);
}

// A thread's block: image b, group g, channels m0.. (workgroup x), pixels from nb (workgroup y).
struct RegBlock { b: u32, oBase: u32, m0: u32, nb: u32, xImg: u32, iy0: array<vec4<i32>, 2>, ix0: array<vec4<i32>, 2> }

fn reg_block(lid: vec3<u32>, wid: vec3<u32>) -> RegBlock {
  var k: RegBlock;
  k.b = P.b0 + wid.z / P.G;
  let g = P.g0 + wid.z % P.G;
  k.m0 = wid.x * 16u;
  k.oBase = g * P.Og + P.o0;
  k.xImg = (k.b * P.Cin + g * P.Cg + P.c0) * P.xsC - P.xBase;
  k.nb = wid.y * LW * 8u + lid.x * select(1u, 4u, PX4);
  // pixels past the end repeat the last one (the last run of 4 with PX4):
  // reads stay in bounds, and they are not stored
  for (var r = 0u; r < 2u; r++) {
    for (var j = 0u; j < 4u; j++) {
      var n = min(reg_pixel(k.nb, r, j), P.npix - 1u);
      if (PX4) { n = min(reg_pixel(k.nb, r, 0u), P.npix - 4u) + j; }
      k.iy0[r][j] = i32((P.r0 + n / P.rowLen) * P.ysc) + P.yoff;
      k.ix0[r][j] = i32((n % P.rowLen) * P.xsc) + P.xoff;
    }
  }
  return k;
}

// Weight index of (channel m0 + i, reduction channel 0, tap 0), past-the-end channels clamped.
fn reg_wrow(k: RegBlock, i: u32) -> u32 {
  return (k.oBase + min(k.m0 + i, P.on - 1u)) * P.wsO + P.c0 * P.wsC + P.wOff - P.wBase;
}

// Input indices of the thread's 8 pixels for tap (ta, tb), clamped into the
// input, and whether each is inside it (padding reads 0).
struct RegTap { ok0: vec4<bool>, ok1: vec4<bool>, xi0: vec4<u32>, xi1: vec4<u32> }

fn reg_tap(k: RegBlock, ta: u32, tb: u32) -> RegTap {
  let hmax = vec4<i32>(i32(P.Hin) - 1);
  let wmax = vec4<i32>(i32(P.Win) - 1);
  var t: RegTap;
  let iyA = k.iy0[0] + vec4<i32>(i32(ta) * P.tyStep);
  let ixA = k.ix0[0] + vec4<i32>(i32(tb) * P.txStep);
  let iyB = k.iy0[1] + vec4<i32>(i32(ta) * P.tyStep);
  let ixB = k.ix0[1] + vec4<i32>(i32(tb) * P.txStep);
  t.ok0 = (iyA >= vec4<i32>(0)) & (iyA <= hmax) & (ixA >= vec4<i32>(0)) & (ixA <= wmax);
  t.ok1 = (iyB >= vec4<i32>(0)) & (iyB <= hmax) & (ixB >= vec4<i32>(0)) & (ixB <= wmax);
  t.xi0 = vec4<u32>(k.xImg) + vec4<u32>(clamp(iyA, vec4<i32>(0), hmax)) * P.Win + vec4<u32>(clamp(ixA, vec4<i32>(0), wmax));
  t.xi1 = vec4<u32>(k.xImg) + vec4<u32>(clamp(iyB, vec4<i32>(0), hmax)) * P.Win + vec4<u32>(clamp(ixB, vec4<i32>(0), wmax));
  return t;
}

fn reg_ld(ok: vec4<bool>, xi: vec4<u32>) -> vec4<f32> {
  return select(vec4<f32>(0.0), vec4<f32>(X_ld(xi.x), X_ld(xi.y), X_ld(xi.z), X_ld(xi.w)), ok);
}

// acc[2i + q][j]: channel m0 + i, pixel reg_pixel(nb, q, j)
fn reg_store(k: RegBlock, acc: ptr<function, array<vec4<f32>, 32>>) {
  for (var q = 0u; q < 2u; q++) {
    for (var j = 0u; j < 4u; j++) {
      let n = reg_pixel(k.nb, q, j);
      if (n >= P.npix) { continue; }
      let pix = out_pix(n);
      for (var i = 0u; i < 16u; i++) {
        if (k.m0 + i < P.on) { epilogue(k.b, k.oBase + k.m0 + i, pix, (*acc)[2u * i + q][j]); }
      }
    }
  }
}

// The thread's 8 inputs of one reduction channel (x[q][j]: pixel reg_pixel(nb, q, j)).
fn reg_x(t: RegTap) -> array<vec4<f32>, 2> {
  if (PX4) { return array<vec4<f32>, 2>(X_ld4(t.xi0.x >> 2u), X_ld4(t.xi1.x >> 2u)); }
  return array<vec4<f32>, 2>(reg_ld(t.ok0, t.xi0), reg_ld(t.ok1, t.xi1));
}

// Two reduction channels into the 16×8 accumulators, a then b, each
// accumulator's two updates adjacent: the CPU drivers keep the accumulators in
// memory (128 floats per lane are more than the vector registers) and lavapipe
// masks every loop-carried store with the loop's lanes, so a pair costs one
// load, store and mask per accumulator instead of two. (Zero weights and inputs
// for b leave acc as it is: an odd last channel.)
fn reg_fma2(acc: ptr<function, array<vec4<f32>, 32>>, wa: array<f32, 16>, wb: array<f32, 16>, xa: array<vec4<f32>, 2>, xb: array<vec4<f32>, 2>) {
  (*acc)[0] = fma(vec4<f32>(wb[0]), xb[0], fma(vec4<f32>(wa[0]), xa[0], (*acc)[0]));
  (*acc)[1] = fma(vec4<f32>(wb[0]), xb[1], fma(vec4<f32>(wa[0]), xa[1], (*acc)[1]));
  (*acc)[2] = fma(vec4<f32>(wb[1]), xb[0], fma(vec4<f32>(wa[1]), xa[0], (*acc)[2]));
  (*acc)[3] = fma(vec4<f32>(wb[1]), xb[1], fma(vec4<f32>(wa[1]), xa[1], (*acc)[3]));
  (*acc)[4] = fma(vec4<f32>(wb[2]), xb[0], fma(vec4<f32>(wa[2]), xa[0], (*acc)[4]));
  (*acc)[5] = fma(vec4<f32>(wb[2]), xb[1], fma(vec4<f32>(wa[2]), xa[1], (*acc)[5]));
  (*acc)[6] = fma(vec4<f32>(wb[3]), xb[0], fma(vec4<f32>(wa[3]), xa[0], (*acc)[6]));
  (*acc)[7] = fma(vec4<f32>(wb[3]), xb[1], fma(vec4<f32>(wa[3]), xa[1], (*acc)[7]));
  (*acc)[8] = fma(vec4<f32>(wb[4]), xb[0], fma(vec4<f32>(wa[4]), xa[0], (*acc)[8]));
  (*acc)[9] = fma(vec4<f32>(wb[4]), xb[1], fma(vec4<f32>(wa[4]), xa[1], (*acc)[9]));
  (*acc)[10] = fma(vec4<f32>(wb[5]), xb[0], fma(vec4<f32>(wa[5]), xa[0], (*acc)[10]));
  (*acc)[11] = fma(vec4<f32>(wb[5]), xb[1], fma(vec4<f32>(wa[5]), xa[1], (*acc)[11]));
  (*acc)[12] = fma(vec4<f32>(wb[6]), xb[0], fma(vec4<f32>(wa[6]), xa[0], (*acc)[12]));
  (*acc)[13] = fma(vec4<f32>(wb[6]), xb[1], fma(vec4<f32>(wa[6]), xa[1], (*acc)[13]));
  (*acc)[14] = fma(vec4<f32>(wb[7]), xb[0], fma(vec4<f32>(wa[7]), xa[0], (*acc)[14]));
  (*acc)[15] = fma(vec4<f32>(wb[7]), xb[1], fma(vec4<f32>(wa[7]), xa[1], (*acc)[15]));
  (*acc)[16] = fma(vec4<f32>(wb[8]), xb[0], fma(vec4<f32>(wa[8]), xa[0], (*acc)[16]));
  (*acc)[17] = fma(vec4<f32>(wb[8]), xb[1], fma(vec4<f32>(wa[8]), xa[1], (*acc)[17]));
  (*acc)[18] = fma(vec4<f32>(wb[9]), xb[0], fma(vec4<f32>(wa[9]), xa[0], (*acc)[18]));
  (*acc)[19] = fma(vec4<f32>(wb[9]), xb[1], fma(vec4<f32>(wa[9]), xa[1], (*acc)[19]));
  (*acc)[20] = fma(vec4<f32>(wb[10]), xb[0], fma(vec4<f32>(wa[10]), xa[0], (*acc)[20]));
  (*acc)[21] = fma(vec4<f32>(wb[10]), xb[1], fma(vec4<f32>(wa[10]), xa[1], (*acc)[21]));
  (*acc)[22] = fma(vec4<f32>(wb[11]), xb[0], fma(vec4<f32>(wa[11]), xa[0], (*acc)[22]));
  (*acc)[23] = fma(vec4<f32>(wb[11]), xb[1], fma(vec4<f32>(wa[11]), xa[1], (*acc)[23]));
  (*acc)[24] = fma(vec4<f32>(wb[12]), xb[0], fma(vec4<f32>(wa[12]), xa[0], (*acc)[24]));
  (*acc)[25] = fma(vec4<f32>(wb[12]), xb[1], fma(vec4<f32>(wa[12]), xa[1], (*acc)[25]));
  (*acc)[26] = fma(vec4<f32>(wb[13]), xb[0], fma(vec4<f32>(wa[13]), xa[0], (*acc)[26]));
  (*acc)[27] = fma(vec4<f32>(wb[13]), xb[1], fma(vec4<f32>(wa[13]), xa[1], (*acc)[27]));
  (*acc)[28] = fma(vec4<f32>(wb[14]), xb[0], fma(vec4<f32>(wa[14]), xa[0], (*acc)[28]));
  (*acc)[29] = fma(vec4<f32>(wb[14]), xb[1], fma(vec4<f32>(wa[14]), xa[1], (*acc)[29]));
  (*acc)[30] = fma(vec4<f32>(wb[15]), xb[0], fma(vec4<f32>(wa[15]), xa[0], (*acc)[30]));
  (*acc)[31] = fma(vec4<f32>(wb[15]), xb[1], fma(vec4<f32>(wa[15]), xa[1], (*acc)[31]));
}

// ROW3: the three column taps of one reduction channel, each accumulator's
// three updates adjacent (as reg_fma2); x[2·tb + q]: run q for column tap tb.
fn reg_fma3(acc: ptr<function, array<vec4<f32>, 32>>, w0: array<f32, 16>, w1: array<f32, 16>, w2: array<f32, 16>, x: array<vec4<f32>, 6>) {
  (*acc)[0] = fma(vec4<f32>(w2[0]), x[4], fma(vec4<f32>(w1[0]), x[2], fma(vec4<f32>(w0[0]), x[0], (*acc)[0])));
  (*acc)[1] = fma(vec4<f32>(w2[0]), x[5], fma(vec4<f32>(w1[0]), x[3], fma(vec4<f32>(w0[0]), x[1], (*acc)[1])));
  (*acc)[2] = fma(vec4<f32>(w2[1]), x[4], fma(vec4<f32>(w1[1]), x[2], fma(vec4<f32>(w0[1]), x[0], (*acc)[2])));
  (*acc)[3] = fma(vec4<f32>(w2[1]), x[5], fma(vec4<f32>(w1[1]), x[3], fma(vec4<f32>(w0[1]), x[1], (*acc)[3])));
  (*acc)[4] = fma(vec4<f32>(w2[2]), x[4], fma(vec4<f32>(w1[2]), x[2], fma(vec4<f32>(w0[2]), x[0], (*acc)[4])));
  (*acc)[5] = fma(vec4<f32>(w2[2]), x[5], fma(vec4<f32>(w1[2]), x[3], fma(vec4<f32>(w0[2]), x[1], (*acc)[5])));
  (*acc)[6] = fma(vec4<f32>(w2[3]), x[4], fma(vec4<f32>(w1[3]), x[2], fma(vec4<f32>(w0[3]), x[0], (*acc)[6])));
  (*acc)[7] = fma(vec4<f32>(w2[3]), x[5], fma(vec4<f32>(w1[3]), x[3], fma(vec4<f32>(w0[3]), x[1], (*acc)[7])));
  (*acc)[8] = fma(vec4<f32>(w2[4]), x[4], fma(vec4<f32>(w1[4]), x[2], fma(vec4<f32>(w0[4]), x[0], (*acc)[8])));
  (*acc)[9] = fma(vec4<f32>(w2[4]), x[5], fma(vec4<f32>(w1[4]), x[3], fma(vec4<f32>(w0[4]), x[1], (*acc)[9])));
  (*acc)[10] = fma(vec4<f32>(w2[5]), x[4], fma(vec4<f32>(w1[5]), x[2], fma(vec4<f32>(w0[5]), x[0], (*acc)[10])));
  (*acc)[11] = fma(vec4<f32>(w2[5]), x[5], fma(vec4<f32>(w1[5]), x[3], fma(vec4<f32>(w0[5]), x[1], (*acc)[11])));
  (*acc)[12] = fma(vec4<f32>(w2[6]), x[4], fma(vec4<f32>(w1[6]), x[2], fma(vec4<f32>(w0[6]), x[0], (*acc)[12])));
  (*acc)[13] = fma(vec4<f32>(w2[6]), x[5], fma(vec4<f32>(w1[6]), x[3], fma(vec4<f32>(w0[6]), x[1], (*acc)[13])));
  (*acc)[14] = fma(vec4<f32>(w2[7]), x[4], fma(vec4<f32>(w1[7]), x[2], fma(vec4<f32>(w0[7]), x[0], (*acc)[14])));
  (*acc)[15] = fma(vec4<f32>(w2[7]), x[5], fma(vec4<f32>(w1[7]), x[3], fma(vec4<f32>(w0[7]), x[1], (*acc)[15])));
  (*acc)[16] = fma(vec4<f32>(w2[8]), x[4], fma(vec4<f32>(w1[8]), x[2], fma(vec4<f32>(w0[8]), x[0], (*acc)[16])));
  (*acc)[17] = fma(vec4<f32>(w2[8]), x[5], fma(vec4<f32>(w1[8]), x[3], fma(vec4<f32>(w0[8]), x[1], (*acc)[17])));
  (*acc)[18] = fma(vec4<f32>(w2[9]), x[4], fma(vec4<f32>(w1[9]), x[2], fma(vec4<f32>(w0[9]), x[0], (*acc)[18])));
  (*acc)[19] = fma(vec4<f32>(w2[9]), x[5], fma(vec4<f32>(w1[9]), x[3], fma(vec4<f32>(w0[9]), x[1], (*acc)[19])));
  (*acc)[20] = fma(vec4<f32>(w2[10]), x[4], fma(vec4<f32>(w1[10]), x[2], fma(vec4<f32>(w0[10]), x[0], (*acc)[20])));
  (*acc)[21] = fma(vec4<f32>(w2[10]), x[5], fma(vec4<f32>(w1[10]), x[3], fma(vec4<f32>(w0[10]), x[1], (*acc)[21])));
  (*acc)[22] = fma(vec4<f32>(w2[11]), x[4], fma(vec4<f32>(w1[11]), x[2], fma(vec4<f32>(w0[11]), x[0], (*acc)[22])));
  (*acc)[23] = fma(vec4<f32>(w2[11]), x[5], fma(vec4<f32>(w1[11]), x[3], fma(vec4<f32>(w0[11]), x[1], (*acc)[23])));
  (*acc)[24] = fma(vec4<f32>(w2[12]), x[4], fma(vec4<f32>(w1[12]), x[2], fma(vec4<f32>(w0[12]), x[0], (*acc)[24])));
  (*acc)[25] = fma(vec4<f32>(w2[12]), x[5], fma(vec4<f32>(w1[12]), x[3], fma(vec4<f32>(w0[12]), x[1], (*acc)[25])));
  (*acc)[26] = fma(vec4<f32>(w2[13]), x[4], fma(vec4<f32>(w1[13]), x[2], fma(vec4<f32>(w0[13]), x[0], (*acc)[26])));
  (*acc)[27] = fma(vec4<f32>(w2[13]), x[5], fma(vec4<f32>(w1[13]), x[3], fma(vec4<f32>(w0[13]), x[1], (*acc)[27])));
  (*acc)[28] = fma(vec4<f32>(w2[14]), x[4], fma(vec4<f32>(w1[14]), x[2], fma(vec4<f32>(w0[14]), x[0], (*acc)[28])));
  (*acc)[29] = fma(vec4<f32>(w2[14]), x[5], fma(vec4<f32>(w1[14]), x[3], fma(vec4<f32>(w0[14]), x[1], (*acc)[29])));
  (*acc)[30] = fma(vec4<f32>(w2[15]), x[4], fma(vec4<f32>(w1[15]), x[2], fma(vec4<f32>(w0[15]), x[0], (*acc)[30])));
  (*acc)[31] = fma(vec4<f32>(w2[15]), x[5], fma(vec4<f32>(w1[15]), x[3], fma(vec4<f32>(w0[15]), x[1], (*acc)[31])));
}

// ROW3: vec4 q of X (the run's own 4 inputs) and its neighbours give the inputs
// of column taps -1, 0, +1; vec4 indices kept inside X, padding masked.
fn reg_row3(q: vec2<u32>, ok: array<vec4<bool>, 6>) -> array<vec4<f32>, 6> {
  let last = arrayLength(&X) - 1u; // X holds vec4s here
  let l0 = X_ld4(max(q.x, 1u) - 1u);
  let m0 = X_ld4(q.x);
  let h0 = X_ld4(min(q.x + 1u, last));
  let l1 = X_ld4(max(q.y, 1u) - 1u);
  let m1 = X_ld4(q.y);
  let h1 = X_ld4(min(q.y + 1u, last));
  let z = vec4<f32>(0.0);
  return array<vec4<f32>, 6>(
    select(z, vec4<f32>(l0.w, m0.xyz), ok[0]), select(z, vec4<f32>(l1.w, m1.xyz), ok[1]),
    select(z, m0, ok[2]), select(z, m1, ok[3]),
    select(z, vec4<f32>(m0.yzw, h0.x), ok[4]), select(z, vec4<f32>(m1.yzw, h1.x), ok[5]),
  );
}

// w where keep, else zeros.
fn reg_zero(w: array<f32, 16>, keep: bool) -> array<f32, 16> {
  return array<f32, 16>(
    select(0.0, w[0], keep), select(0.0, w[1], keep), select(0.0, w[2], keep), select(0.0, w[3], keep),
    select(0.0, w[4], keep), select(0.0, w[5], keep), select(0.0, w[6], keep), select(0.0, w[7], keep),
    select(0.0, w[8], keep), select(0.0, w[9], keep), select(0.0, w[10], keep), select(0.0, w[11], keep),
    select(0.0, w[12], keep), select(0.0, w[13], keep), select(0.0, w[14], keep), select(0.0, w[15], keep),
  );
}

// The kernel body; `reg_wrows` and `reg_weights` (each kernel's own) give the
// 16 weights of a reduction step, from the weight rows set up once.
fn reg_conv(lid: vec3<u32>, wid: vec3<u32>, sgid: u32) {
  let k = reg_block(lid, wid);
  let wr = reg_wrows(k, sgid);
  var acc: array<vec4<f32>, 32>;
  // (one tap: nothing to keep for the next tap, one block)
  let cb = select(P.cn, REG_CB, P.TH * P.TW > 1u);
  for (var c0 = 0u; c0 < P.cn; c0 += cb) {
    let c1 = min(c0 + cb, P.cn);
    for (var ta = 0u; ta < P.TH; ta++) {
      if (ROW3) {
        // the run's own vec4 (centre tap: inside the input row) and the padding masks of the 3 column taps
        let t0 = reg_tap(k, ta, 0u);
        let t1 = reg_tap(k, ta, 1u);
        let t2 = reg_tap(k, ta, 2u);
        let ok = array<vec4<bool>, 6>(t0.ok0, t0.ok1, t1.ok0, t1.ok1, t2.ok0, t2.ok1);
        var q = (vec2<u32>(t1.xi0.x, t1.xi1.x) + vec2<u32>(c0 * P.xsC)) >> vec2<u32>(2u);
        var wi = ta * P.wsA + c0 * P.wsC;
        for (var c = c0; c < c1; c++) {
          reg_fma3(&acc, reg_weights(wr, wi), reg_weights(wr, wi + P.wsB), reg_weights(wr, wi + 2u * P.wsB), reg_row3(q, ok));
          q += vec2<u32>(P.xsC >> 2u);
          wi += P.wsC;
        }
      } else {
        for (var tb = 0u; tb < P.TW; tb++) {
          var t = reg_tap(k, ta, tb);
          t.xi0 += vec4<u32>(c0 * P.xsC);
          t.xi1 += vec4<u32>(c0 * P.xsC);
          var wi = ta * P.wsA + tb * P.wsB + c0 * P.wsC;
          // two channels per iteration (see reg_fma2); an odd last one pairs
          // with zero inputs and weights (its own plane, re-read: in bounds)
          for (var c = c0; c < c1; c += 2u) {
            let xa = reg_x(t);
            let wa = reg_weights(wr, wi);
            let pair = c + 1u < c1;
            if (pair) {
              t.xi0 += vec4<u32>(P.xsC);
              t.xi1 += vec4<u32>(P.xsC);
              wi += P.wsC;
            }
            let xb = reg_x(t);
            let wb = reg_weights(wr, wi);
            reg_fma2(&acc, wa, reg_zero(wb, pair), xa, array<vec4<f32>, 2>(select(vec4<f32>(0.0), xb[0], pair), select(vec4<f32>(0.0), xb[1], pair)));
            t.xi0 += vec4<u32>(P.xsC);
            t.xi1 += vec4<u32>(P.xsC);
            wi += P.wsC;
          }
        }
      }
    }
  }
  reg_store(k, &acc);
}

//! kernel conv2d_reg
// Every lane loads all 16 weights (one address for all lanes).
fn reg_wrows(k: RegBlock, sgid: u32) -> array<u32, 16> {
  var wr: array<u32, 16>;
  for (var i = 0u; i < 16u; i++) { wr[i] = reg_wrow(k, i); }
  return wr;
}

fn reg_weights(wr: array<u32, 16>, wi: u32) -> array<f32, 16> {
  return array<f32, 16>(
    WT_ld(wr[0] + wi), WT_ld(wr[1] + wi), WT_ld(wr[2] + wi), WT_ld(wr[3] + wi),
    WT_ld(wr[4] + wi), WT_ld(wr[5] + wi), WT_ld(wr[6] + wi), WT_ld(wr[7] + wi),
    WT_ld(wr[8] + wi), WT_ld(wr[9] + wi), WT_ld(wr[10] + wi), WT_ld(wr[11] + wi),
    WT_ld(wr[12] + wi), WT_ld(wr[13] + wi), WT_ld(wr[14] + wi), WT_ld(wr[15] + wi),
  );
}

@compute @workgroup_size(LW)
fn conv2d_reg(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  reg_conv(lid, wid, 0u);
}

//! kernel conv2d_sg
// On lavapipe (Mesa 25.0) a storage load whose address is not built from
// constants alone becomes a loop over the SIMD lanes with a bounds test and a
// branch per lane, even when every lane reads the same word: conv2d_reg's 16
// weight loads per reduction step cost as much as 16 gathers. Here lane l of a
// subgroup loads the weights of channels m0 + l and m0 + 8 + l (two gathers)
// and subgroupBroadcast hands each of the 16 to every lane (a register
// shuffle). Needs subgroups of at least 8 invocations (lanes past 8 repeat).
fn reg_wrows(k: RegBlock, sgid: u32) -> array<u32, 16> {
  var wr: array<u32, 16>;
  wr[0] = reg_wrow(k, sgid & 7u);
  wr[1] = reg_wrow(k, 8u + (sgid & 7u));
  return wr;
}

fn reg_weights(wr: array<u32, 16>, wi: u32) -> array<f32, 16> {
  let wa = WT_ld(wr[0] + wi);
  let wb = WT_ld(wr[1] + wi);
  return array<f32, 16>(
    subgroupBroadcast(wa, 0u), subgroupBroadcast(wa, 1u), subgroupBroadcast(wa, 2u), subgroupBroadcast(wa, 3u), subgroupBroadcast(wa, 4u), subgroupBroadcast(wa, 5u), subgroupBroadcast(wa, 6u), subgroupBroadcast(wa, 7u),
    subgroupBroadcast(wb, 0u), subgroupBroadcast(wb, 1u), subgroupBroadcast(wb, 2u), subgroupBroadcast(wb, 3u), subgroupBroadcast(wb, 4u), subgroupBroadcast(wb, 5u), subgroupBroadcast(wb, 6u), subgroupBroadcast(wb, 7u)
  );
}

@compute @workgroup_size(LW)
fn conv2d_sg(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) sgid: u32) {
  reg_conv(lid, wid, sgid);
}
