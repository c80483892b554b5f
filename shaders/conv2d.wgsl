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
// (taps outside the input read 0, which is the zero padding). One parameter
// set serves both ops:
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
// Three kernels, f32 accumulation in all:
//   conv2d        as matmul.wgsl's `tiled` (a 16×16 workgroup computes a 64×64
//                 block, each thread a 4×4 register tile, K in steps of 16
//                 through workgroup memory; suits GPUs);
//   conv2d_small  at most 8 output channels per group (a thread per pixel,
//                 weights through workgroup memory);
//   conv2d_reg    no workgroup memory and no barriers (as matmul's `reg`): each
//                 thread computes 4 output channels × 4 pixels straight from
//                 global memory with vec4 arithmetic. On CPU drivers a barrier
//                 costs a fiber switch per invocation, which the tiled kernel
//                 pays twice per 16 reduction steps. Same 64×64 block per
//                 workgroup as `conv2d`, so the host's grid and splits serve both.

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
  return X_ld(xImg + c * P.Hin * P.Win + u32(iy) * P.Win + u32(ix) - P.xBase);
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
  let xImg = (b * P.Cin + cBase) * P.Hin * P.Win;

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
      let bv = Bs[k * 16u + lid.x];
      for (var i = 0u; i < 4u; i++) {
        acc[i * 4u] = fma(a[i], bv.x, acc[i * 4u]);
        acc[i * 4u + 1u] = fma(a[i], bv.y, acc[i * 4u + 1u]);
        acc[i * 4u + 2u] = fma(a[i], bv.z, acc[i * 4u + 2u]);
        acc[i * 4u + 3u] = fma(a[i], bv.w, acc[i * 4u + 3u]);
      }
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
  let xImg = (b * P.Cin + g * P.Cg + P.c0) * P.Hin * P.Win;

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

//! kernel conv2d_reg
@compute @workgroup_size(16, 16)
fn conv2d_reg(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = P.b0 + gid.z / P.G;
  let g = P.g0 + gid.z % P.G;
  let M = P.on;
  let m0 = gid.y * 4u;
  let n0 = gid.x * 4u;
  if (m0 >= M || n0 >= P.npix) { return; }
  let oBase = g * P.Og + P.o0;
  let plane = P.Hin * P.Win;
  // u32 arithmetic wraps, so subtracting the bound range's base early is exact
  // even where an intermediate would be negative.
  let xImg = (b * P.Cin + g * P.Cg + P.c0) * plane - P.xBase;

  // Channels/pixels past the edge repeat the last valid one (reads stay in
  // bounds) and are not stored.
  var wo: vec4<u32>;   // weight index of (channel i, reduction channel 0, tap 0)
  var iy0: vec4<i32>;  // input origin of pixel j
  var ix0: vec4<i32>;
  for (var i = 0u; i < 4u; i++) {
    let m = min(m0 + i, M - 1u);
    wo[i] = (oBase + m) * P.wsO + P.c0 * P.wsC + P.wOff - P.wBase;
    let n = min(n0 + i, P.npix - 1u);
    iy0[i] = i32((P.r0 + n / P.rowLen) * P.ysc) + P.yoff;
    ix0[i] = i32((n % P.rowLen) * P.xsc) + P.xoff;
  }

  var acc: array<vec4<f32>, 4>; // acc[i][j]: channel m0+i, pixel n0+j
  for (var c = 0u; c < P.cn; c++) {
    let xc = xImg + c * plane;
    let wc = wo + vec4<u32>(c * P.wsC);
    for (var ta = 0u; ta < P.TH; ta++) {
      let iy = iy0 + vec4<i32>(i32(ta) * P.tyStep);
      let rowOk = (iy >= vec4<i32>(0)) & (iy < vec4<i32>(i32(P.Hin)));
      let rowIdx = vec4<u32>(xc) + vec4<u32>(iy) * P.Win;
      let wa = wc + vec4<u32>(ta * P.wsA);
      for (var tb = 0u; tb < P.TW; tb++) {
        let ix = ix0 + vec4<i32>(i32(tb) * P.txStep);
        let ok = rowOk & (ix >= vec4<i32>(0)) & (ix < vec4<i32>(i32(P.Win)));
        let xi = rowIdx + vec4<u32>(ix);
        var xv = vec4<f32>(0.0); // zero padding
        if (ok.x) { xv.x = X_ld(xi.x); }
        if (ok.y) { xv.y = X_ld(xi.y); }
        if (ok.z) { xv.z = X_ld(xi.z); }
        if (ok.w) { xv.w = X_ld(xi.w); }
        let wi = wa + vec4<u32>(tb * P.wsB);
        acc[0] = fma(vec4<f32>(WT_ld(wi.x)), xv, acc[0]);
        acc[1] = fma(vec4<f32>(WT_ld(wi.y)), xv, acc[1]);
        acc[2] = fma(vec4<f32>(WT_ld(wi.z)), xv, acc[2]);
        acc[3] = fma(vec4<f32>(WT_ld(wi.w)), xv, acc[3]);
      }
    }
  }

  for (var j = 0u; j < 4u; j++) {
    let n = n0 + j;
    if (n >= P.npix) { break; }
    let pix = out_pix(n);
    for (var i = 0u; i < 4u; i++) {
      if (m0 + i < M) { epilogue(b, oBase + m0 + i, pix, acc[i][j]); }
    }
  }
}
