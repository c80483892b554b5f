// The `wide` GEMM core, shared by matmul.wgsl's `wide` and conv2d.wgsl's
// `conv2d_wide` (each includes this file with `//! include wide_tile`):
//
//   acc += A[m, k] · B[k, n]   over a BM × BN block of C per workgroup
//
// Tunables (override constants; engine/ops/matmul.ts names the combinations
// as tiles "BMxBNkGKtGTN" and the autotuner picks one per adapter):
//   GW_X × GW_Y threads; each computes 8 rows × GTN (4 or 8) columns, as 4×4
//   blocks half a tile apart (rows i and BM/2 + i, columns j and BN/2 + j), so
//   a warp's vec4 reads of workgroup memory hit distinct banks;
//   BM = 8·GW_Y, BN = GTN·GW_X.
//   GK: K per step (a multiple of 4). Two buffers of each operand tile: the
//   next step's global loads go to registers during this step's arithmetic
//   and into the other buffer after it, so each step needs one barrier.
//   A thread stages 1..4 vec4s of each operand per step (the host only picks
//   tiles where BM·GK/4 and BN·GK/4 are such multiples of the thread count).
//
// The including kernel defines the loads, for its own operand layouts:
//   struct WideCtx                                what the loads need (batch, block origin, …)
//   fn wide_ld_a(c: WideCtx, m: u32, k: u32) -> vec4<f32>
//        A[m, k..k+3] (m relative to the block, k absolute), zero outside
//   fn wide_ld_b(c: WideCtx, k: u32, n: u32) -> vec4<f32>
//        WIDE_BT: B[k..k+3, n] (B stored as rows along k, like A);
//        else B[k, n..n+3]; n relative to the block, zero outside.
// and after wide_gemm stores acc: acc[2 i + j] holds, for i < 4, row
// 4·ty + i and, for i ≥ 4, row BM/2 + 4·ty + i − 4; columns 4·tx .. +3 (j = 0)
// and BN/2 + 4·tx .. +3 (j = 1, GTN = 8 only); see wide_rows / wide_cols.
override GW_X: u32 = 16u;
override GW_Y: u32 = 16u;
override GK: u32 = 8u;
override GTN: u32 = 8u;
override WIDE_BT: bool = false;

// Operand tiles k-major, a row of vec4s (4 neighbouring rows of A, or columns
// of B) per k, padded by one vec4 so transposing stores spread over banks.
const WPAD: u32 = 1u;
var<workgroup> Aw: array<vec4<f32>, 2u * GK * (2u * GW_Y + WPAD)>;
var<workgroup> Bw: array<vec4<f32>, 2u * GK * (GTN * GW_X / 4u + WPAD)>;

// Staging slot v (= tid + r·threads) of a step's tile. Operands stored along
// k (A, and B with WIDE_BT): row v / (GK/4), k 4·(v % (GK/4)), so adjacent
// threads read along k; B along n: k v / (BN/4), columns 4·(v % (BN/4)).
fn wide_slot_a(c: WideCtx, k0: u32, v: u32) -> vec4<f32> {
  return wide_ld_a(c, v / (GK / 4u), k0 + 4u * (v % (GK / 4u)));
}
fn wide_slot_b(c: WideCtx, k0: u32, v: u32) -> vec4<f32> {
  if (WIDE_BT) { return wide_ld_b(c, k0 + 4u * (v % (GK / 4u)), v / (GK / 4u)); }
  let bq = GTN * GW_X / 4u;
  return wide_ld_b(c, k0 + v / bq, 4u * (v % bq));
}
// Vec4s along k are transposed into the k-major tile one element at a time.
fn wide_put_a(buf: u32, v: u32, x: vec4<f32>) {
  let stride = 2u * GW_Y + WPAD;
  let row = v / (GK / 4u);
  let base = buf * GK * stride + 4u * (v % (GK / 4u)) * stride + row / 4u;
  for (var c = 0u; c < 4u; c++) { Aw[base + c * stride][row % 4u] = x[c]; }
}
fn wide_put_b(buf: u32, v: u32, x: vec4<f32>) {
  let bq = GTN * GW_X / 4u;
  let stride = bq + WPAD;
  if (WIDE_BT) {
    let n = v / (GK / 4u);
    let base = buf * GK * stride + 4u * (v % (GK / 4u)) * stride + n / 4u;
    for (var c = 0u; c < 4u; c++) { Bw[base + c * stride][n % 4u] = x[c]; }
  } else {
    Bw[buf * GK * stride + (v / bq) * stride + v % bq] = x;
  }
}

// Output rows and columns (relative to the block) of thread tid's acc[0]:
// see the header for the others.
fn wide_rows(tid: u32) -> u32 { return 4u * (tid / GW_X); }
fn wide_cols(tid: u32) -> u32 { return 4u * (tid % GW_X); }

// One thread's staged vec4s of a step: up to 4 of A and 4 of B (na, nb used).
// Separate members, not arrays: constant names keep them in registers.
struct WideStage { a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32> }

fn wide_fetch(c: WideCtx, k0: u32, tid: u32, na: u32, nb: u32) -> WideStage {
  let n = GW_X * GW_Y;
  var r: WideStage;
  r.a0 = wide_slot_a(c, k0, tid);
  if (na > 1u) { r.a1 = wide_slot_a(c, k0, tid + n); }
  if (na > 2u) { r.a2 = wide_slot_a(c, k0, tid + 2u * n); }
  if (na > 3u) { r.a3 = wide_slot_a(c, k0, tid + 3u * n); }
  r.b0 = wide_slot_b(c, k0, tid);
  if (nb > 1u) { r.b1 = wide_slot_b(c, k0, tid + n); }
  if (nb > 2u) { r.b2 = wide_slot_b(c, k0, tid + 2u * n); }
  if (nb > 3u) { r.b3 = wide_slot_b(c, k0, tid + 3u * n); }
  return r;
}

fn wide_put(buf: u32, tid: u32, na: u32, nb: u32, r: WideStage) {
  let n = GW_X * GW_Y;
  wide_put_a(buf, tid, r.a0);
  if (na > 1u) { wide_put_a(buf, tid + n, r.a1); }
  if (na > 2u) { wide_put_a(buf, tid + 2u * n, r.a2); }
  if (na > 3u) { wide_put_a(buf, tid + 3u * n, r.a3); }
  wide_put_b(buf, tid, r.b0);
  if (nb > 1u) { wide_put_b(buf, tid + n, r.b1); }
  if (nb > 2u) { wide_put_b(buf, tid + 2u * n, r.b2); }
  if (nb > 3u) { wide_put_b(buf, tid + 3u * n, r.b3); }
}

fn wide_gemm(tid: u32, c: WideCtx, K: u32, acc: ptr<function, array<vec4<f32>, 16>>) {
  let threads = GW_X * GW_Y;
  let sa = 2u * GW_Y + WPAD;
  let sb = GTN * GW_X / 4u + WPAD;
  let tx = tid % GW_X;
  let ty = tid / GW_X;
  // vec4s each thread stages per step
  let na = 8u * GW_Y * GK / 4u / threads;
  let nb = GTN * GW_X * GK / 4u / threads;
  var st = wide_fetch(c, 0u, tid, na, nb);
  wide_put(0u, tid, na, nb, st);
  workgroupBarrier();

  let steps = (K + GK - 1u) / GK;
  for (var t = 0u; t < steps; t++) {
    let cur = t & 1u;
    let more = t + 1u < steps;
    // the next step's global loads, in flight during this step's arithmetic
    if (more) { st = wide_fetch(c, (t + 1u) * GK, tid, na, nb); }
    let ao = cur * GK * sa;
    let bo = cur * GK * sb;
    for (var k = 0u; k < GK; k++) {
      let a0 = Aw[ao + k * sa + ty];
      let a1 = Aw[ao + k * sa + GW_Y + ty];
      let b0 = Bw[bo + k * sb + tx];
      (*acc)[0] = fma(vec4<f32>(a0.x), b0, (*acc)[0]);
      (*acc)[2] = fma(vec4<f32>(a0.y), b0, (*acc)[2]);
      (*acc)[4] = fma(vec4<f32>(a0.z), b0, (*acc)[4]);
      (*acc)[6] = fma(vec4<f32>(a0.w), b0, (*acc)[6]);
      (*acc)[8] = fma(vec4<f32>(a1.x), b0, (*acc)[8]);
      (*acc)[10] = fma(vec4<f32>(a1.y), b0, (*acc)[10]);
      (*acc)[12] = fma(vec4<f32>(a1.z), b0, (*acc)[12]);
      (*acc)[14] = fma(vec4<f32>(a1.w), b0, (*acc)[14]);
      if (GTN == 8u) {
        let b1 = Bw[bo + k * sb + GW_X + tx];
        (*acc)[1] = fma(vec4<f32>(a0.x), b1, (*acc)[1]);
        (*acc)[3] = fma(vec4<f32>(a0.y), b1, (*acc)[3]);
        (*acc)[5] = fma(vec4<f32>(a0.z), b1, (*acc)[5]);
        (*acc)[7] = fma(vec4<f32>(a0.w), b1, (*acc)[7]);
        (*acc)[9] = fma(vec4<f32>(a1.x), b1, (*acc)[9]);
        (*acc)[11] = fma(vec4<f32>(a1.y), b1, (*acc)[11]);
        (*acc)[13] = fma(vec4<f32>(a1.z), b1, (*acc)[13]);
        (*acc)[15] = fma(vec4<f32>(a1.w), b1, (*acc)[15]);
      }
    }
    if (more) { wide_put(1u - cur, tid, na, nb, st); }
    workgroupBarrier();
  }
}
