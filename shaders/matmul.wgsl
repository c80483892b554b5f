// Batched matmul: C[b] = act(A[b] · op(B[b]) + bias) + R[b]
//   A: M×K rows of stride lda; B: K×N (stride ldb) or, with TRANS_B, N×K
//   (Linear weights are [out, in]); batch strides sa, sb (0 = shared), sc.
//   oa/ob/oc/obias: element offsets of this dispatch's first element inside
//   the bound ranges (ops split big tensors into aligned sub-ranges).
// f32 accumulation everywhere. Three kernels share the epilogue:
//   tiled   16×16 threads, 64×64 block of C, K in steps of 16 through workgroup
//           memory (suits GPUs);
//   reg     no workgroup memory and no barriers: each thread computes a 4×4
//           block straight from global memory with vec4 arithmetic (suits CPU
//           drivers, where a barrier costs a fiber switch per invocation);
//   small_m M ≤ 4: one row, 4 outputs per workgroup, K split over 64 threads;
//   wide    16×16 threads, 128×128 block of C, 8×8 outputs per thread, K in
//           steps of 16 through vec4 workgroup memory with the next step's
//           loads in flight during this step's arithmetic (suits big GPUs).

override ACT: u32 = 0u;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override TRANS_B: bool = false;

fn epilogue(b: u32, m: u32, n: u32, v_in: f32) {
  var v = v_in;
  if (HAS_BIAS) { v = v + BIAS_ld(P.obias + n); }
  v = activate(v, ACT);
  let ci = P.oc + b * P.sc + m * P.ldc + n;
  if (HAS_RES) { v = v + R_ld(ci); }
  C_st(ci, v);
}

fn a_at(b: u32, m: u32, k: u32) -> f32 { return A_ld(P.oa + b * P.sa + m * P.lda + k); }
fn b_at(b: u32, n: u32, k: u32) -> f32 {
  if (TRANS_B) { return B_ld(P.ob + b * P.sb + n * P.ldb + k); }
  return B_ld(P.ob + b * P.sb + k * P.ldb + n);
}

//! kernel tiled
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

@compute @workgroup_size(16, 16)
fn tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let b = wid.z;
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
  let tid = lid.y * 16u + lid.x;
  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

  for (var k0 = 0u; k0 < P.K; k0 += BK) {
    for (var r = 0u; r < 4u; r++) {
      let e = tid + r * 256u;
      let m = e / BK;
      let k = e % BK;
      var v = 0.0;
      if (row0 + m < P.M && k0 + k < P.K) { v = a_at(b, row0 + m, k0 + k); }
      As[k * BM + m] = v;
    }
    for (var r = 0u; r < 4u; r++) {
      let e = tid + r * 256u;
      var k: u32;
      var n: u32;
      if (TRANS_B) { n = e / BK; k = e % BK; } else { k = e / BN; n = e % BN; }
      var v = 0.0;
      if (col0 + n < P.N && k0 + k < P.K) { v = b_at(b, col0 + n, k0 + k); }
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

//! kernel reg
fn a4(b: u32, m: u32, k: u32) -> vec4<f32> {
  let i = P.oa + b * P.sa + m * P.lda + k;
  return vec4<f32>(A_ld(i), A_ld(i + 1u), A_ld(i + 2u), A_ld(i + 3u));
}
fn bt4(b: u32, n: u32, k: u32) -> vec4<f32> {
  let i = P.ob + b * P.sb + n * P.ldb + k;
  return vec4<f32>(B_ld(i), B_ld(i + 1u), B_ld(i + 2u), B_ld(i + 3u));
}
fn bn4(b: u32, k: u32, n: u32) -> vec4<f32> {
  let i = P.ob + b * P.sb + k * P.ldb + n;
  return vec4<f32>(B_ld(i), B_ld(i + 1u), B_ld(i + 2u), B_ld(i + 3u));
}

// Tunables: workgroup shape (each thread still computes 4×4 outputs).
override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;

@compute @workgroup_size(WG_X, WG_Y)
fn reg(@builtin(global_invocation_id) g: vec3<u32>) {
  let b = g.z;
  let m0 = g.y * 4u;
  let n0 = g.x * 4u;
  if (m0 >= P.M || n0 >= P.N) { return; }
  // Rows/columns past the edge read the last valid one (in bounds) and are not stored.
  let m = vec4<u32>(m0, min(m0 + 1u, P.M - 1u), min(m0 + 2u, P.M - 1u), min(m0 + 3u, P.M - 1u));
  let n = vec4<u32>(n0, min(n0 + 1u, P.N - 1u), min(n0 + 2u, P.N - 1u), min(n0 + 3u, P.N - 1u));
  var acc: array<vec4<f32>, 4>;
  let k4 = P.K & ~3u;
  if (TRANS_B) {
    // C[m, n] = Σ_k A[m, k] B[n, k]: both walk k contiguously, 4 at a time
    for (var k = 0u; k < k4; k += 4u) {
      let b0 = bt4(b, n.x, k); let b1 = bt4(b, n.y, k); let b2 = bt4(b, n.z, k); let b3 = bt4(b, n.w, k);
      for (var i = 0u; i < 4u; i++) {
        let a = a4(b, m[i], k);
        acc[i] += vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
      }
    }
    for (var k = k4; k < P.K; k++) {
      let bv = vec4<f32>(b_at(b, n.x, k), b_at(b, n.y, k), b_at(b, n.z, k), b_at(b, n.w, k));
      for (var i = 0u; i < 4u; i++) { acc[i] = fma(vec4<f32>(a_at(b, m[i], k)), bv, acc[i]); }
    }
  } else {
    // C[m, n0..n0+3] += A[m, k] · B[k, n0..n0+3]
    let full = n0 + 3u < P.N;
    for (var k = 0u; k < P.K; k++) {
      var bv: vec4<f32>;
      if (full) { bv = bn4(b, k, n0); } else { bv = vec4<f32>(b_at(b, n.x, k), b_at(b, n.y, k), b_at(b, n.z, k), b_at(b, n.w, k)); }
      for (var i = 0u; i < 4u; i++) { acc[i] = fma(vec4<f32>(a_at(b, m[i], k)), bv, acc[i]); }
    }
  }
  for (var i = 0u; i < 4u; i++) {
    if (m0 + i >= P.M) { break; }
    for (var j = 0u; j < 4u; j++) {
      if (n0 + j < P.N) { epilogue(b, m0 + i, n0 + j, acc[i][j]); }
    }
  }
}

//! kernel wide
const WM: u32 = 128u;
const WN: u32 = 128u;
const WK: u32 = 16u;

// Operand tiles k-major as vec4s of 4 neighbouring rows (columns): [WK][WM / 4].
var<workgroup> Aw: array<vec4<f32>, 512>;
var<workgroup> Bw: array<vec4<f32>, 512>;

// One thread stages 2 vec4s of each operand per K step:
//   A (and Bᵀ): k = tid % 8 (+ 8), rows 4·(tid / 8) .. +3 — a warp reads 4 rows × 8 contiguous k;
//   B [K, N]:   k = tid / 32 (+ 8), columns 4·(tid % 32) .. +3 — contiguous along n.
// (built from four scalars: a dynamically indexed vector write can push the
// staging registers out to local memory)
fn wide_a1(b: u32, row: u32, k: u32) -> f32 {
  if (row < P.M) { return a_at(b, row, k); }
  return 0.0;
}
fn wide_b1(b: u32, n: u32, k: u32) -> f32 {
  if (n < P.N) { return b_at(b, n, k); }
  return 0.0;
}
fn wide_a(b: u32, row: u32, k: u32) -> vec4<f32> {
  if (k >= P.K) { return vec4<f32>(0.0); }
  return vec4<f32>(wide_a1(b, row, k), wide_a1(b, row + 1u, k), wide_a1(b, row + 2u, k), wide_a1(b, row + 3u, k));
}
fn wide_b(b: u32, n: u32, k: u32) -> vec4<f32> {
  if (k >= P.K) { return vec4<f32>(0.0); }
  return vec4<f32>(wide_b1(b, n, k), wide_b1(b, n + 1u, k), wide_b1(b, n + 2u, k), wide_b1(b, n + 3u, k));
}

@compute @workgroup_size(16, 16)
fn wide(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let b = wid.z;
  let row0 = wid.y * WM;
  let col0 = wid.x * WN;
  let tid = lid.y * 16u + lid.x;
  // staging slots of this thread
  let ak = tid % 8u;
  let am = tid / 8u;
  var bk: u32; var bn: u32;
  if (TRANS_B) { bk = ak; bn = am; } else { bk = tid / 32u; bn = tid % 32u; }
  var ra: array<vec4<f32>, 2>;
  var rb: array<vec4<f32>, 2>;
  for (var h = 0u; h < 2u; h++) {
    ra[h] = wide_a(b, row0 + 4u * am, ak + 8u * h);
    rb[h] = wide_b(b, col0 + 4u * bn, bk + 8u * h);
  }
  // acc[2 i + j]: row quadrant i (0..7: 4 rows at lid.y·4, 4 more 64 below), column half j
  var acc: array<vec4<f32>, 16>;
  for (var k0 = 0u; k0 < P.K; k0 += WK) {
    workgroupBarrier();
    for (var h = 0u; h < 2u; h++) {
      Aw[(ak + 8u * h) * 32u + am] = ra[h];
      Bw[(bk + 8u * h) * 32u + bn] = rb[h];
    }
    workgroupBarrier();
    // next step's global loads overlap this step's arithmetic
    if (k0 + WK < P.K) {
      for (var h = 0u; h < 2u; h++) {
        ra[h] = wide_a(b, row0 + 4u * am, k0 + WK + ak + 8u * h);
        rb[h] = wide_b(b, col0 + 4u * bn, k0 + WK + bk + 8u * h);
      }
    }
    for (var k = 0u; k < WK; k++) {
      let a0 = Aw[k * 32u + lid.y];
      let a1 = Aw[k * 32u + 16u + lid.y];
      let b0 = Bw[k * 32u + lid.x];
      let b1 = Bw[k * 32u + 16u + lid.x];
      // written out: constant indices keep acc in registers on every compiler
      acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
      acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
      acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
      acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
      acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
      acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
      acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
      acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
    }
  }
  // constant indices only: a dynamically indexed acc would live in local memory
  let r0 = row0 + lid.y * 4u;
  let c0 = col0 + lid.x * 4u;
  wide_store(b, r0, c0, acc[0], acc[1]);
  wide_store(b, r0 + 1u, c0, acc[2], acc[3]);
  wide_store(b, r0 + 2u, c0, acc[4], acc[5]);
  wide_store(b, r0 + 3u, c0, acc[6], acc[7]);
  wide_store(b, r0 + 64u, c0, acc[8], acc[9]);
  wide_store(b, r0 + 65u, c0, acc[10], acc[11]);
  wide_store(b, r0 + 66u, c0, acc[12], acc[13]);
  wide_store(b, r0 + 67u, c0, acc[14], acc[15]);
}

// One row of a thread's outputs: columns n0..n0+3 (lo) and n0+64..n0+67 (hi).
fn wide_store(b: u32, m: u32, n0: u32, lo: vec4<f32>, hi: vec4<f32>) {
  if (m >= P.M) { return; }
  for (var c = 0u; c < 4u; c++) {
    if (n0 + c < P.N) { epilogue(b, m, n0 + c, lo[c]); }
    if (n0 + 64u + c < P.N) { epilogue(b, m, n0 + 64u + c, hi[c]); }
  }
}

//! kernel small_m
var<workgroup> red: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn small_m(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let n0 = wid.x * 4u;
  let m = wid.y;
  let b = wid.z;
  var acc = vec4<f32>(0.0);
  for (var k = li; k < P.K; k += 64u) {
    let a = a_at(b, m, k);
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + j;
      if (n < P.N) { acc[j] = fma(a, b_at(b, n, k), acc[j]); }
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
