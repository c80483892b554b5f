// Batched matmul: C[b] = act(A[b] · op(B[b]) + bias) + R[b]
//   A: M×K rows of stride lda; B: K×N (stride ldb) or, with TRANS_B, N×K
//   (Linear weights are [out, in]); batch strides sa, sb (0 = shared), sc.
//   oa/ob/oc/obias: element offsets of this dispatch's first element inside
//   the bound ranges (ops split big tensors into aligned sub-ranges).
// f32 accumulation everywhere. The kernels share the epilogue:
//   tiled   16×16 threads, 64×64 block of C, K in steps of 16 through workgroup
//           memory (suits GPUs);
//   reg     no workgroup memory and no barriers: each thread computes a 4×4
//           block straight from global memory with vec4 arithmetic (suits CPU
//           drivers, where a barrier costs a fiber switch per invocation);
//   small_m M ≤ 4: one row, 4 outputs per workgroup, K split over 64 threads;
//   wide    the tunable GEMM core of shaders/wide_tile.wgsl (8×8 or 8×4
//           outputs per thread, double-buffered vec4 workgroup memory, the
//           next K step's loads in flight during this step's arithmetic),
//           vec4 global loads where aligned (suits big GPUs); split-K for
//           grids too small to fill a GPU (then `split_sum` adds the parts);
//           split tails, the last blocks in parts and the others whole
//           (`wide_hyb`: the tail's block rows through split_sum; `wide_ser`:
//           any tail of blocks, its parts added inside the dispatch).

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

// The epilogue of outputs n..n+3 of row m, C (and R) bound as vec4s and the
// first output's index a multiple of 4 (the `wide` kernel's C4).
fn epilogue4(b: u32, m: u32, n: u32, v_in: vec4<f32>) {
  var v = v_in;
  if (HAS_BIAS) { let o = P.obias + n; v = v + vec4<f32>(BIAS_ld(o), BIAS_ld(o + 1u), BIAS_ld(o + 2u), BIAS_ld(o + 3u)); }
  v = vec4<f32>(activate(v.x, ACT), activate(v.y, ACT), activate(v.z, ACT), activate(v.w, ACT));
  let ci = (P.oc + b * P.sc + m * P.ldc + n) / 4u;
  if (HAS_RES) { v = v + R_ld4(ci); }
  C_st4(ci, v);
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
      fma4x4(&acc, a, bv);
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

//! kernel wide wide_hyb wide_ser
// The shared tiled GEMM core (shaders/wide_tile.wgsl) with matmul's operands:
// A [M, K] rows, B as Bᵀ rows [N, K] (TRANS_B; the host sets WIDE_BT) or
// [K, N]. ALIGNED: A and B are bound as vec4s (K, and N for B [K, N], the
// strides and offsets multiples of 4): one load per 4 elements.
// KSPLIT > 1 (split-K): grid z is batch · KSPLIT; workgroup z = b·KSPLIT + s
// sums K from s·P.kc to (s + 1)·P.kc and stores its raw partial sums at
// C[P.oc + s·P.sw + …] (a workspace); `split_sum` adds the slices and applies
// the epilogue. More workgroups fill a GPU that a small grid leaves partly idle.
// EXACT (the host sets it with ALIGNED when the grid covers C in whole blocks
// and K is a multiple of GK): no load or store needs a bounds check. On an
// H200 the checks cost a tenth of a GEMM's speed (README, `bench gemmlab`).
// C4: C (and R) bound as vec4s, with N, ldc, sc, oc and sw multiples of 4:
// stores move four outputs at once. WSK_RECHECK: wide_ser only, tests only
// (see conv2d.wgsl, which declares it for its serial entries too; like
// KSPLIT, declared before wide_tile's code for naga's sake).
override ALIGNED: bool = false;
override EXACT: bool = false;
override C4: bool = false;
override KSPLIT: u32 = 1u;
override WSK_RECHECK: bool = false;

//! include wide_tile

struct WideCtx { b: u32, row0: u32, col0: u32 }

fn wide_ld_a(c: WideCtx, m: u32, k: u32) -> vec4<f32> {
  let row = c.row0 + m;
  let i = P.oa + c.b * P.sa + row * P.lda + k;
  if (EXACT) { return A_ld4(i / 4u); }
  if (row >= P.M || k >= P.K) { return vec4<f32>(0.0); }
  if (ALIGNED) { return A_ld4(i / 4u); }
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) { if (k + j < P.K) { v[j] = A_ld(i + j); } }
  return v;
}

fn wide_ld_b(c: WideCtx, k: u32, n: u32) -> vec4<f32> {
  let col = c.col0 + n;
  if (EXACT) {
    if (TRANS_B) { return B_ld4((P.ob + c.b * P.sb + col * P.ldb + k) / 4u); }
    return B_ld4((P.ob + c.b * P.sb + k * P.ldb + col) / 4u);
  }
  if (col >= P.N || k >= P.K) { return vec4<f32>(0.0); }
  if (TRANS_B) {
    let i = P.ob + c.b * P.sb + col * P.ldb + k;
    if (ALIGNED) { return B_ld4(i / 4u); }
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) { if (k + j < P.K) { v[j] = B_ld(i + j); } }
    return v;
  }
  let i = P.ob + c.b * P.sb + k * P.ldb + col;
  if (ALIGNED) { return B_ld4(i / 4u); }
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) { if (col + j < P.N) { v[j] = B_ld(i + j); } }
  return v;
}

@compute @workgroup_size(GW_X * GW_Y)
fn wide(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let BM = 8u * GW_Y;
  let BN = GTN * GW_X;
  let s = wid.z % KSPLIT;
  let ctx = WideCtx(wid.z / KSPLIT, wid.y * BM, wid.x * BN);
  // parts past K (a forced split of a short K) sum nothing
  wide_gemm(tid, ctx, min(P.K, s * P.kc), min(P.K, (s + 1u) * P.kc));
  wide_emit(tid, ctx, select(0u, 1u, KSPLIT > 1u), s, 0u);
}

// Where a workgroup's sums go (`to`): 0 through the epilogue into C; 1 raw into
// C slice s (split-K: C is the workspace); 2 raw into W slice s, rows from w0
// (wide_hyb's split tail; W is bound there only). Constant indices only: a
// dynamically indexed acc would live in local memory.
fn wide_emit(tid: u32, ctx: WideCtx, to: u32, s: u32, w0: u32) {
  let acc = wide_acc;
  let r0 = ctx.row0 + wide_rows(tid);
  let r1 = r0 + 4u * GW_Y;
  let c0 = ctx.col0 + wide_cols(tid);
  let c1 = c0 + 4u * GW_X;
  wide_out(to, ctx.b, s, w0, r0, c0, acc[0]); wide_out(to, ctx.b, s, w0, r0 + 1u, c0, acc[2]);
  wide_out(to, ctx.b, s, w0, r0 + 2u, c0, acc[4]); wide_out(to, ctx.b, s, w0, r0 + 3u, c0, acc[6]);
  wide_out(to, ctx.b, s, w0, r1, c0, acc[8]); wide_out(to, ctx.b, s, w0, r1 + 1u, c0, acc[10]);
  wide_out(to, ctx.b, s, w0, r1 + 2u, c0, acc[12]); wide_out(to, ctx.b, s, w0, r1 + 3u, c0, acc[14]);
  if (GTN == 8u) {
    wide_out(to, ctx.b, s, w0, r0, c1, acc[1]); wide_out(to, ctx.b, s, w0, r0 + 1u, c1, acc[3]);
    wide_out(to, ctx.b, s, w0, r0 + 2u, c1, acc[5]); wide_out(to, ctx.b, s, w0, r0 + 3u, c1, acc[7]);
    wide_out(to, ctx.b, s, w0, r1, c1, acc[9]); wide_out(to, ctx.b, s, w0, r1 + 1u, c1, acc[11]);
    wide_out(to, ctx.b, s, w0, r1 + 2u, c1, acc[13]); wide_out(to, ctx.b, s, w0, r1 + 3u, c1, acc[15]);
  }
}

fn wide_out(to: u32, b: u32, s: u32, w0: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (to == 0u) { wide_store(b, m, n0, v); } else if (to == 1u) { wide_part(b, s, m, n0, v); } else { wide_tail_st4((s * P.sw + (m - w0) * P.N + n0) / 4u, v); }
}

// Split-K: four raw partial sums of row m from column n0 into slice s.
fn wide_part(b: u32, s: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (!EXACT && m >= P.M) { return; }
  let ci = P.oc + s * P.sw + b * P.sc + m * P.ldc + n0;
  if (C4 && (EXACT || n0 + 3u < P.N)) { C_st4(ci / 4u, v); return; }
  if (n0 < P.N) { C_st(ci, v.x); }
  if (n0 + 1u < P.N) { C_st(ci + 1u, v.y); }
  if (n0 + 2u < P.N) { C_st(ci + 2u, v.z); }
  if (n0 + 3u < P.N) { C_st(ci + 3u, v.w); }
}

// Four neighbouring outputs of row m from column n0.
fn wide_store(b: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (!EXACT && m >= P.M) { return; }
  if (C4 && (EXACT || n0 + 3u < P.N)) { epilogue4(b, m, n0, v); return; }
  if (n0 < P.N) { epilogue(b, m, n0, v.x); }
  if (n0 + 1u < P.N) { epilogue(b, m, n0 + 1u, v.y); }
  if (n0 + 2u < P.N) { epilogue(b, m, n0 + 2u, v.z); }
  if (n0 + 3u < P.N) { epilogue(b, m, n0 + 3u, v.w); }
}

//! kernel wide wide_ser
// `wide` and `wide_ser` bind no W of vec4s: nothing reaches this (wide_emit's
// `to` is 0 or 1 there).
fn wide_tail_st4(i: u32, v: vec4<f32>) {}

//! kernel wide_hyb
// `wide` with a split tail, for one batch (or a batch of A against a shared B,
// taken as batch·M rows) whose blocks and K steps cover the GEMM exactly
// (EXACT) with vec4 rows (C4). The grid's block rows [0, P.hy) run whole and
// store through the epilogue; the other T = M/BM − P.hy block rows run in
// KSPLIT parts along K (grid row P.hy + j: part j / T of block row
// P.hy + j % T) and store raw sums into W slice s (P.sw = T·BM·N elements),
// which split_sum then adds into C's rows from P.hy·BM. Whole blocks are
// scheduled first and the tail's smaller pieces fill the GPU's last wave,
// without split-K's workspace traffic for the whole output (see the `wide`
// plans in engine/ops/matmul.ts).
fn wide_tail_st4(i: u32, v: vec4<f32>) { W_st4(i, v); }

@compute @workgroup_size(GW_X * GW_Y)
fn wide_hyb(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let BM = 8u * GW_Y;
  let BN = GTN * GW_X;
  // one call of the GEMM core and one of the output code, whichever part this
  // workgroup runs: with each written out twice (a branch per part), the
  // plan 64x256k8t8/2r12 ran at 26.6 TFLOP/s on an H200 against 39.5 this way
  let p = wide_piece(wid.y, P.hy, P.M / BM - P.hy, P.K, P.kc);
  let ctx = WideCtx(0u, p.u * BM, wid.x * BN);
  wide_gemm(tid, ctx, p.k0, p.k1);
  wide_emit(tid, ctx, select(0u, 2u, wid.y >= P.hy), p.s, P.hy * BM);
}

//! kernel wide_ser
// `wide` with a serial tail, for one batch (or a batch of A against a shared
// B, taken as batch·M rows): the first P.hy blocks of C (row-major, N's
// blocks fastest) run whole; each of the other T blocks runs in KSPLIT parts
// along K (linear workgroup P.hy + j: part j / T of block P.hy + j % T),
// which add their sums inside the dispatch (shaders/wide_serial.wgsl: W
// holds a counter per thread of each tail block, then the parts' slots from
// P.sw), so no second pass and no workspace of the tail's rows. The tail's
// edge falls on any block, not only on a block row: the whole blocks can be
// exactly the waves a GPU runs at once. Blocks need not cover C exactly.
//! include wide_serial

@compute @workgroup_size(GW_X * GW_Y)
fn wide_ser(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let BM = 8u * GW_Y;
  let BN = GTN * GW_X;
  let gx = (P.N + BN - 1u) / BN;
  let tail = ((P.M + BM - 1u) / BM) * gx - P.hy;
  let l = linear_wg(wid, nwg);
  // the grid's padding (a 2-D grid of more than a row of workgroups)
  if (l >= P.hy + tail * KSPLIT) { return; }
  // one call of the GEMM core and one of the output code, whichever part
  // this workgroup runs (see wide_hyb)
  let p = wide_piece(l, P.hy, tail, P.K, P.kc);
  let ctx = WideCtx(0u, (p.u / gx) * BM, (p.u % gx) * BN);
  wide_gemm(tid, ctx, p.k0, p.k1);
  // a tail block's thread goes on only if its part counted in last
  if (l >= P.hy && !wide_serial(tid, p.u - P.hy, p.s)) { return; }
  wide_emit(tid, ctx, 0u, 0u, 0u);
}

//! kernel split_sum
// Split-K's second pass: output i of the batch·M·N (C [b, m, n] contiguous) is
// the epilogue of Σ_s A[s·P.sw + i], A being the `wide` pass's workspace.
// V4 (N a multiple of 4, A bound as vec4s): outputs 4j..4j+3 per invocation;
// C4 (C and R bound as vec4s too): stored as one vec4.
override KSPLIT: u32 = 2u;
override V4: bool = false;
override C4: bool = false;

@compute @workgroup_size(256)
fn split_sum(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = linear_wg(wid, nwg) * 256u + li;
  if (V4) {
    let i = 4u * j;
    if (i >= P.sw) { return; }
    var v = vec4<f32>(0.0);
    for (var s = 0u; s < KSPLIT; s++) { v += A_ld4((s * P.sw + i) / 4u); }
    let b = i / (P.M * P.N);
    let m = (i / P.N) % P.M;
    let n = i % P.N;
    if (C4) { epilogue4(b, m, n, v); return; }
    epilogue(b, m, n, v.x); epilogue(b, m, n + 1u, v.y); epilogue(b, m, n + 2u, v.z); epilogue(b, m, n + 3u, v.w);
    return;
  }
  if (j >= P.sw) { return; }
  var v = 0.0;
  for (var s = 0u; s < KSPLIT; s++) { v += A_ld(s * P.sw + j); }
  epilogue(j / (P.M * P.N), (j / P.N) % P.M, j % P.N, v);
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
