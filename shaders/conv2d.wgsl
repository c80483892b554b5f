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
// Tiling as matmul.wgsl: a 16×16 workgroup computes a 64×64 block, each thread
// a 4×4 register tile, K in steps of 16 through workgroup memory, f32 accumulation.

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
var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

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

  // Each thread always loads the same pixel column of the B tile (256 threads,
  // 64 columns): its input origin is computed once.
  let bn = tid % BN;
  let bk0 = tid / BN;
  let gn = n0 + bn;
  let nOk = gn < P.npix;
  let jr = P.r0 + gn / P.rowLen;
  let ic = gn % P.rowLen;
  let iy0 = i32(jr * P.ysc) + P.yoff;
  let ix0 = i32(ic * P.xsc) + P.xoff;
  let xImg = (b * P.Cin + cBase) * P.Hin * P.Win;

  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

  for (var k0 = 0u; k0 < K; k0 += BK) {
    // A tile: weights; consecutive threads read consecutive k of one row.
    for (var r = 0u; r < 4u; r++) {
      let e = tid + r * 256u;
      let m = e / BK;
      let k = e % BK;
      let gm = m0 + m;
      let gk = k0 + k;
      var v = 0.0;
      if (gm < M && gk < K) {
        let t = gk % taps;
        v = w_at(oBase + gm, gk / taps, t / P.TW, t % P.TW);
      }
      As[k * BM + m] = v;
    }
    // B tile: the input gathered for this thread's pixel.
    for (var r = 0u; r < 4u; r++) {
      let k = bk0 + r * 4u;
      let gk = k0 + k;
      var v = 0.0;
      if (nOk && gk < K) {
        let t = gk % taps;
        v = x_at(xImg, gk / taps, iy0, ix0, t / P.TW, t % P.TW);
      }
      Bs[k * BN + bn] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < BK; k++) {
      let a = vec4<f32>(As[k * BM + lid.y * 4u], As[k * BM + lid.y * 4u + 1u], As[k * BM + lid.y * 4u + 2u], As[k * BM + lid.y * 4u + 3u]);
      let bv = vec4<f32>(Bs[k * BN + lid.x * 4u], Bs[k * BN + lid.x * 4u + 1u], Bs[k * BN + lid.x * 4u + 2u], Bs[k * BN + lid.x * 4u + 3u]);
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
