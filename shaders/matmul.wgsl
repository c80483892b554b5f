// Batched matmul: C[b] = act(A[b] · op(B[b]) + bias) + R[b]
//   A: M×K rows of stride lda; B: K×N (stride ldb) or, with TRANS_B, N×K
//   (Linear weights are [out, in]); batch strides sa, sb (0 = shared), sc.
// Tiled: a 16×16 workgroup computes a 64×64 block of C, each thread a 4×4
// register tile, K in steps of 16 through workgroup memory; f32 accumulation.

override ACT: u32 = 0u;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override TRANS_B: bool = false;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

fn epilogue(b: u32, m: u32, n: u32, v_in: f32) {
  var v = v_in;
  if (HAS_BIAS) { v = v + BIAS_ld(n); }
  v = activate(v, ACT);
  let ci = b * P.sc + m * P.ldc + n;
  if (HAS_RES) { v = v + R_ld(ci); }
  C_st(ci, v);
}

//! kernel tiled
@compute @workgroup_size(16, 16)
fn tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let b = wid.z;
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
  let aBase = b * P.sa;
  let bBase = b * P.sb;
  let tid = lid.y * 16u + lid.x;
  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

  for (var k0 = 0u; k0 < P.K; k0 += BK) {
    for (var r = 0u; r < 4u; r++) {
      let e = tid + r * 256u;
      let m = e / BK;
      let k = e % BK;
      let gm = row0 + m;
      let gk = k0 + k;
      var v = 0.0;
      if (gm < P.M && gk < P.K) { v = A_ld(aBase + gm * P.lda + gk); }
      As[k * BM + m] = v;
    }
    for (var r = 0u; r < 4u; r++) {
      let e = tid + r * 256u;
      var k: u32;
      var n: u32;
      if (TRANS_B) { n = e / BK; k = e % BK; } else { k = e / BN; n = e % BN; }
      let gn = col0 + n;
      let gk = k0 + k;
      var v = 0.0;
      if (gn < P.N && gk < P.K) {
        if (TRANS_B) { v = B_ld(bBase + gn * P.ldb + gk); } else { v = B_ld(bBase + gk * P.ldb + gn); }
      }
      Bs[k * BN + n] = v;
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
  for (var i = 0u; i < 4u; i++) {
    let m = row0 + lid.y * 4u + i;
    if (m >= P.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = col0 + lid.x * 4u + j;
      if (n < P.N) { epilogue(b, m, n, acc[i * 4u + j]); }
    }
  }
}

//! kernel small_m
// Small-M path (M ≤ 4: time embeddings, pooled text): a workgroup computes 4
// outputs of one row; its 64 threads split K and reduce in workgroup memory.
var<workgroup> red: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn small_m(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let n0 = wid.x * 4u;
  let m = wid.y;
  let b = wid.z;
  let aBase = b * P.sa + m * P.lda;
  let bBase = b * P.sb;
  var acc = vec4<f32>(0.0);
  for (var k = li; k < P.K; k += 64u) {
    let a = A_ld(aBase + k);
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + j;
      if (n < P.N) {
        var bv: f32;
        if (TRANS_B) { bv = B_ld(bBase + n * P.ldb + k); } else { bv = B_ld(bBase + k * P.ldb + n); }
        acc[j] = fma(a, bv, acc[j]);
      }
    }
  }
  red[li] = acc;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s = s >> 1u) {
    if (li < s) { red[li] = red[li] + red[li + s]; }
    workgroupBarrier();
  }
  if (li < 4u) {
    let n = n0 + li;
    if (n < P.N) { epilogue(b, m, n, red[0][li]); }
  }
}
