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
//   GK: K per step, 8 or 16 (the steps are written out). Two buffers of each operand tile: the
//   next step's global loads go to registers during this step's arithmetic
//   and into the other buffer after it, so each step needs one barrier.
//   A thread stages up to 4 vec4s of each operand per step (slots tid,
//   tid + threads, …; where an operand tile has fewer vec4s than the last
//   round of slots, the threads past its end stage nothing).
//
// The including kernel defines the loads, for its own operand layouts:
//   struct WideCtx                                what the loads need (batch, block origin, …)
//   fn wide_ld_a(c: WideCtx, m: u32, k: u32) -> vec4<f32>
//        A[m, k..k+3] (m relative to the block, k absolute), zero outside
//   fn wide_ld_b(c: WideCtx, k: u32, n: u32) -> vec4<f32>
//        WIDE_BT: B[k..k+3, n] (B stored as rows along k, like A);
//        else B[k, n..n+3]; n relative to the block, zero outside.
// and after wide_gemm, wide_acc[2 i + j] holds, for i < 4, row 4·ty + i and,
// for i ≥ 4, row BM/2 + 4·ty + i − 4; columns 4·tx .. +3 (j = 0) and
// BN/2 + 4·tx .. +3 (j = 1, GTN = 8 only); see wide_rows / wide_cols.
//
// How it is written matters to the GPU's compiler, as measured on an H200
// (README): the K steps written out (a 64×128, 16-deep tile: 34 → 54 % of
// peak); the staged vec4s in separate variables rather than a struct returned
// by a function, and one-dimensional workgroups in the entry points (either
// one alone took 64x256k8t8 on 4096×640→5120 from 34.7 to 41.0 TFLOP/s); the
// accumulators in a private array rather than a function variable passed by
// pointer (128x128k8t8 on that shape: 34.3 → 37.4 TFLOP/s).
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

// vec4s of each operand tile per step
fn wide_tot_a() -> u32 { return 8u * GW_Y * GK / 4u; }
fn wide_tot_b() -> u32 { return GTN * GW_X * GK / 4u; }

// The calling thread's accumulators (see the header).
var<private> wide_acc: array<vec4<f32>, 16>;

// One K step k (0 ≤ k < GK) of the tile in buffer offsets ao/bo: 2 vec4s of A
// (rows 4·ty.. and BM/2 + 4·ty..) times 1 or 2 vec4s of B.
fn wide_k1(ao: u32, bo: u32, k: u32, tx: u32, ty: u32) {
  let sa = 2u * GW_Y + WPAD;
  let sb = GTN * GW_X / 4u + WPAD;
  let a0 = Aw[ao + k * sa + ty];
  let a1 = Aw[ao + k * sa + GW_Y + ty];
  let b0 = Bw[bo + k * sb + tx];
  wide_acc[0] = fma(vec4<f32>(a0.x), b0, wide_acc[0]);
  wide_acc[2] = fma(vec4<f32>(a0.y), b0, wide_acc[2]);
  wide_acc[4] = fma(vec4<f32>(a0.z), b0, wide_acc[4]);
  wide_acc[6] = fma(vec4<f32>(a0.w), b0, wide_acc[6]);
  wide_acc[8] = fma(vec4<f32>(a1.x), b0, wide_acc[8]);
  wide_acc[10] = fma(vec4<f32>(a1.y), b0, wide_acc[10]);
  wide_acc[12] = fma(vec4<f32>(a1.z), b0, wide_acc[12]);
  wide_acc[14] = fma(vec4<f32>(a1.w), b0, wide_acc[14]);
  if (GTN == 8u) {
    let b1 = Bw[bo + k * sb + GW_X + tx];
    wide_acc[1] = fma(vec4<f32>(a0.x), b1, wide_acc[1]);
    wide_acc[3] = fma(vec4<f32>(a0.y), b1, wide_acc[3]);
    wide_acc[5] = fma(vec4<f32>(a0.z), b1, wide_acc[5]);
    wide_acc[7] = fma(vec4<f32>(a0.w), b1, wide_acc[7]);
    wide_acc[9] = fma(vec4<f32>(a1.x), b1, wide_acc[9]);
    wide_acc[11] = fma(vec4<f32>(a1.y), b1, wide_acc[11]);
    wide_acc[13] = fma(vec4<f32>(a1.z), b1, wide_acc[13]);
    wide_acc[15] = fma(vec4<f32>(a1.w), b1, wide_acc[15]);
  }
}

// Split tails (matmul's wide_hyb and wide_ser, conv2d_wide_st): of a range of
// workgroups whose first `hy` units (block rows or blocks) run whole and whose
// other `tail` units run in parts of kc along K (workgroup hy + j: part j / tail
// of unit hy + j % tail), workgroup l's unit, part and K range [k0, k1) (parts
// past K sum nothing). Uniform arguments give uniform results, as wide_gemm's
// barriers need.
struct WidePiece { u: u32, s: u32, k0: u32, k1: u32 }
fn wide_piece(l: u32, hy: u32, tail: u32, K: u32, kc: u32) -> WidePiece {
  if (l < hy) { return WidePiece(l, 0u, 0u, K); }
  let j = l - hy;
  let s = j / tail;
  let k0 = min(K, s * kc);
  return WidePiece(hy + j % tail, s, k0, min(K, k0 + kc));
}

// wide_acc += A[:, k0..k1) · B[k0..k1, :] over the block (k1 − k0 a multiple
// of GK unless k1 = K: loads past K read zeros).
fn wide_gemm(tid: u32, c: WideCtx, k0: u32, k1: u32) {
  let sa = 2u * GW_Y + WPAD;
  let sb = GTN * GW_X / 4u + WPAD;
  // an empty range (a split-K part past K) sums nothing and loads nothing
  if (k1 <= k0) { return; }
  let tx = tid % GW_X;
  let ty = tid / GW_X;
  // staging slots tid + r·n (r < 4) of each operand; ta, tb: vec4s per tile
  let n = GW_X * GW_Y;
  let ta = wide_tot_a();
  let tb = wide_tot_b();
  var a0: vec4<f32>; var a1: vec4<f32>; var a2: vec4<f32>; var a3: vec4<f32>;
  var b0: vec4<f32>; var b1: vec4<f32>; var b2: vec4<f32>; var b3: vec4<f32>;
  if (tid < ta) { a0 = wide_slot_a(c, k0, tid); }
  if (tid + n < ta) { a1 = wide_slot_a(c, k0, tid + n); }
  if (tid + 2u * n < ta) { a2 = wide_slot_a(c, k0, tid + 2u * n); }
  if (tid + 3u * n < ta) { a3 = wide_slot_a(c, k0, tid + 3u * n); }
  if (tid < tb) { b0 = wide_slot_b(c, k0, tid); }
  if (tid + n < tb) { b1 = wide_slot_b(c, k0, tid + n); }
  if (tid + 2u * n < tb) { b2 = wide_slot_b(c, k0, tid + 2u * n); }
  if (tid + 3u * n < tb) { b3 = wide_slot_b(c, k0, tid + 3u * n); }
  if (tid < ta) { wide_put_a(0u, tid, a0); }
  if (tid + n < ta) { wide_put_a(0u, tid + n, a1); }
  if (tid + 2u * n < ta) { wide_put_a(0u, tid + 2u * n, a2); }
  if (tid + 3u * n < ta) { wide_put_a(0u, tid + 3u * n, a3); }
  if (tid < tb) { wide_put_b(0u, tid, b0); }
  if (tid + n < tb) { wide_put_b(0u, tid + n, b1); }
  if (tid + 2u * n < tb) { wide_put_b(0u, tid + 2u * n, b2); }
  if (tid + 3u * n < tb) { wide_put_b(0u, tid + 3u * n, b3); }
  workgroupBarrier();

  // The staging lines appear twice, before the loop and in it, on purpose: one
  // loop of steps + 1 passes holding each once (loads of step t, arithmetic
  // of step t − 1) ran 64x256k8t8 on 4096×640→5120 at 29.6 TFLOP/s against
  // 41.1 for this form, and 128x64k8t8 on 4096×1280×1280 at 33.6 against 35.5
  // (H200, same run).
  let steps = (k1 - k0 + GK - 1u) / GK;
  for (var t = 0u; t < steps; t++) {
    let cur = t & 1u;
    let more = t + 1u < steps;
    // the next step's global loads, in flight during this step's arithmetic
    if (more) {
      let kn = k0 + (t + 1u) * GK;
      if (tid < ta) { a0 = wide_slot_a(c, kn, tid); }
      if (tid + n < ta) { a1 = wide_slot_a(c, kn, tid + n); }
      if (tid + 2u * n < ta) { a2 = wide_slot_a(c, kn, tid + 2u * n); }
      if (tid + 3u * n < ta) { a3 = wide_slot_a(c, kn, tid + 3u * n); }
      if (tid < tb) { b0 = wide_slot_b(c, kn, tid); }
      if (tid + n < tb) { b1 = wide_slot_b(c, kn, tid + n); }
      if (tid + 2u * n < tb) { b2 = wide_slot_b(c, kn, tid + 2u * n); }
      if (tid + 3u * n < tb) { b3 = wide_slot_b(c, kn, tid + 3u * n); }
    }
    let ao = cur * GK * sa;
    let bo = cur * GK * sb;
    wide_k1(ao, bo, 0u, tx, ty); wide_k1(ao, bo, 1u, tx, ty);
    wide_k1(ao, bo, 2u, tx, ty); wide_k1(ao, bo, 3u, tx, ty);
    wide_k1(ao, bo, 4u, tx, ty); wide_k1(ao, bo, 5u, tx, ty);
    wide_k1(ao, bo, 6u, tx, ty); wide_k1(ao, bo, 7u, tx, ty);
    if (GK == 16u) {
      wide_k1(ao, bo, 8u, tx, ty); wide_k1(ao, bo, 9u, tx, ty);
      wide_k1(ao, bo, 10u, tx, ty); wide_k1(ao, bo, 11u, tx, ty);
      wide_k1(ao, bo, 12u, tx, ty); wide_k1(ao, bo, 13u, tx, ty);
      wide_k1(ao, bo, 14u, tx, ty); wide_k1(ao, bo, 15u, tx, ty);
    }
    // into the other buffer, free since the last barrier
    if (more) {
      let nb = 1u - cur;
      if (tid < ta) { wide_put_a(nb, tid, a0); }
      if (tid + n < ta) { wide_put_a(nb, tid + n, a1); }
      if (tid + 2u * n < ta) { wide_put_a(nb, tid + 2u * n, a2); }
      if (tid + 3u * n < ta) { wide_put_a(nb, tid + 3u * n, a3); }
      if (tid < tb) { wide_put_b(nb, tid, b0); }
      if (tid + n < tb) { wide_put_b(nb, tid + n, b1); }
      if (tid + 2u * n < tb) { wide_put_b(nb, tid + 2u * n, b2); }
      if (tid + 3u * n < tb) { wide_put_b(nb, tid + 3u * n, b3); }
    }
    workgroupBarrier();
  }
}
