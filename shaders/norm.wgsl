// Normalisations and softmax.
//
// GroupNorm: a group of x [N, C, ...spatial] is one contiguous run of
// (C/G)·S elements, so the whole tensor is N·G "rows" of gsz elements. Rows
// are cut into chunks of at most L = WG·EB·NB elements, one workgroup each.
// On the CPU drivers this engine meets (lavapipe, SwiftShader) a workgroup's
// invocations are SIMD lanes and every workgroupBarrier is a fiber switch per
// lane group, so `gn_stats` has none: each thread reduces its own elements
// (li + k·WG of the chunk, k < EB·NB) block by block, EB values in registers:
// the block's mean, then Σ(x − mean)² from the same registers (exact
// two-pass), merged into the thread's running (mean, m2) with Chan's formula
// (never E[x²]−E[x]²). Every thread writes its own partial; `gn_merge` (one
// workgroup per row, the only barriers) Chan-merges a row's partials into
// mean and 1/σ. `gn_apply` normalises, applies the affine transform and the
// fused activation, EA consecutive elements per thread.
//
// Every kernel works on a window of the tensor (a bound sub-range, so tensors
// larger than maxStorageBufferBindingSize are processed in several
// dispatches): `base` is the global element index of the first element the
// dispatch handles and `*off` is where that element sits in the bound range.
//
// LayerNorm and softmax: a workgroup per row (rows of 4..2048), three sweeps
// over the row (it stays in cache): mean, then Σ(x−mean)² (two-pass variance),
// then the write; softmax likewise with max, Σexp(x−max), write.

override WG: u32 = 256u;   // threads per workgroup, a power of two ≤ 256
override ACT: u32 = 0u;
override HAS_W: bool = false;
override HAS_B: bool = false;

var<workgroup> r_mean: array<f32, WG>;
var<workgroup> r_m2: array<f32, WG>;
var<workgroup> r_n: array<f32, WG>;

// Chan et al.: merges (na, ma, m2a) with (nb, mb, m2b); empty sides are fine.
fn chan(na: f32, ma: f32, m2a: f32, nb: f32, mb: f32, m2b: f32) -> vec3<f32> {
  let n = na + nb;
  if (n == 0.0) { return vec3<f32>(0.0); }
  let d = mb - ma;
  let fb = nb / n;
  return vec3<f32>(n, ma + d * fb, m2a + m2b + d * d * na * fb);
}

// Tree-merges the per-thread (n, mean, m2) in r_* into slot 0.
// Called from uniform control flow by every thread of the workgroup.
fn merge_workgroup(li: u32, n: f32, mean: f32, m2: f32) -> vec3<f32> {
  r_n[li] = n; r_mean[li] = mean; r_m2[li] = m2;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (li < s) {
      let m = chan(r_n[li], r_mean[li], r_m2[li], r_n[li + s], r_mean[li + s], r_m2[li + s]);
      r_n[li] = m.x; r_mean[li] = m.y; r_m2[li] = m.z;
    }
    workgroupBarrier();
  }
  return vec3<f32>(r_n[0], r_mean[0], r_m2[0]);
}

//! kernel gn_stats
// X: the window; PART: (mean, m2) per thread of every chunk.
override NB: u32 = 4u;   // register blocks per thread
const EB = 8u;           // values per register block

@compute @workgroup_size(WG)
fn gn_stats(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = linear_wg(wid, nwg);
  if (w >= P.nchunks) { return; }
  let c = P.c0 + w;                 // global chunk index
  let row = c / P.cpr;
  let k = c % P.cpr;
  let start = row * P.gsz + k * P.L; // global element index
  let len = min(P.L, P.gsz - k * P.L);
  let xb = P.xoff + (start - P.base) + li;
  var n = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var b = 0u; b < NB; b++) {
    let j0 = b * EB * WG;
    if (j0 >= len) { break; }
    var v: array<f32, EB>;
    var s = 0.0;
    var m = 0u;
    for (var j = 0u; j < EB; j++) {
      let ok = j0 + j * WG + li < len;
      v[j] = select(0.0, X_ld(select(0u, xb + j0 + j * WG, ok)), ok);
      s += v[j];
      m += select(0u, 1u, ok);
    }
    if (m > 0u) {
      let mb = s / f32(m);
      var q = 0.0;
      for (var j = 0u; j < EB; j++) {
        let d = select(0.0, v[j] - mb, j0 + j * WG + li < len);
        q += d * d;
      }
      let r = chan(n, mean, m2, f32(m), mb, q);
      n = r.x; mean = r.y; m2 = r.z;
    }
  }
  let o = (w * WG + li) * 2u;        // PART is bound from this dispatch's first chunk
  PART_st(o, mean);
  PART_st(o + 1u, m2);
}

//! kernel gn_merge
// One workgroup per row: merges the row's cpr·TW thread partials (TW threads
// of at most pt elements per chunk) into (mean, rstd). PART is bound from row r0.
@compute @workgroup_size(WG)
fn gn_merge(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg);
  if (row >= P.rows) { return; }
  var n = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  let np = P.cpr * P.tw;
  for (var q = li; q < np; q += WG) {
    let k = q / P.tw;
    let t = q % P.tw;
    let len = min(P.L, P.gsz - k * P.L);
    var nb = 0u;
    if (t < len) { nb = min(P.pt, (len - t + P.tw - 1u) / P.tw); }
    let o = (row * np + q) * 2u;
    let m = chan(n, mean, m2, f32(nb), PART_ld(o), PART_ld(o + 1u));
    n = m.x; mean = m.y; m2 = m.z;
  }
  let r = merge_workgroup(li, n, mean, m2);
  if (li == 0u) {
    STATS_st((P.r0 + row) * 2u, r.y);
    STATS_st((P.r0 + row) * 2u + 1u, inverseSqrt(r.z / r.x + P.eps));
  }
}

//! kernel gn_apply
// y = act((x − mean)·rstd·w[c] + b[c]) over `count` elements from global index `base`.
// Thread t handles the EA consecutive elements from t·EA: it finds its channel
// plane with one division and steps to the next plane (reloading the
// statistics and affine parameters) only where a plane ends inside its run;
// with ALIGNED (S a multiple of EA) no run crosses a plane or the end.
override EA: u32 = 16u;
override ALIGNED: bool = false;

struct GnCoef { mean: f32, sc: f32, sh: f32 }

fn gn_coef(plane: u32) -> GnCoef {
  let row = plane / P.cg;
  let ch = plane % P.C;
  let mean = STATS_ld(row * 2u);
  var sc = STATS_ld(row * 2u + 1u);
  var sh = 0.0;
  if (HAS_W) { sc = sc * W_ld(ch); }
  if (HAS_B) { sh = B_ld(ch); }
  return GnCoef(mean, sc, sh);
}

@compute @workgroup_size(WG)
fn gn_apply(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i0 = (linear_wg(wid, nwg) * WG + li) * EA;
  if (i0 >= P.count) { return; }
  let g0 = P.base + i0;
  var plane = g0 / P.S;
  var k = gn_coef(plane);
  if (ALIGNED) {
    // S and count are multiples of EA: the run is whole and inside one plane
    for (var j = 0u; j < EA; j++) {
      let i = i0 + j;
      Y_st(P.yoff + i, activate((X_ld(P.xoff + i) - k.mean) * k.sc + k.sh, ACT));
    }
    return;
  }
  var off = g0 - plane * P.S;
  let n = min(EA, P.count - i0);
  for (var j = 0u; j < EA; j++) {
    if (j < n) {
      let i = i0 + j;
      Y_st(P.yoff + i, activate((X_ld(P.xoff + i) - k.mean) * k.sc + k.sh, ACT));
      off += 1u;
      if (off == P.S && j + 1u < n) {
        off = 0u;
        plane += 1u;
        k = gn_coef(plane);
      }
    }
  }
}

//! kernel layer_norm
var<workgroup> r_sum: array<f32, WG>;

fn sum_workgroup(li: u32, v: f32) -> f32 {
  workgroupBarrier(); // r_sum may still be read from the previous sweep
  r_sum[li] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (li < s) { r_sum[li] = r_sum[li] + r_sum[li + s]; }
    workgroupBarrier();
  }
  return r_sum[0];
}

@compute @workgroup_size(WG)
fn layer_norm(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg);
  if (row >= P.rows) { return; }
  let xb = P.xoff + row * P.D;
  let yb = P.yoff + row * P.D;
  var s = 0.0;
  for (var i = li; i < P.D; i += WG) { s += X_ld(xb + i); }
  let mean = sum_workgroup(li, s) / f32(P.D);
  var q = 0.0;
  for (var i = li; i < P.D; i += WG) { let d = X_ld(xb + i) - mean; q += d * d; }
  let rstd = inverseSqrt(sum_workgroup(li, q) / f32(P.D) + P.eps);
  for (var i = li; i < P.D; i += WG) {
    var v = (X_ld(xb + i) - mean) * rstd;
    if (HAS_W) { v = v * W_ld(i); }
    if (HAS_B) { v = v + B_ld(i); }
    Y_st(yb + i, v);
  }
}

//! kernel softmax
var<workgroup> r_val: array<f32, WG>;

fn reduce_workgroup(li: u32, v: f32, is_max: bool) -> f32 {
  workgroupBarrier();
  r_val[li] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (li < s) {
      if (is_max) { r_val[li] = max(r_val[li], r_val[li + s]); } else { r_val[li] = r_val[li] + r_val[li + s]; }
    }
    workgroupBarrier();
  }
  return r_val[0];
}

@compute @workgroup_size(WG)
fn softmax(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg);
  if (row >= P.rows) { return; }
  let xb = P.xoff + row * P.D;
  let yb = P.yoff + row * P.D;
  // the lowest f32 stands in for -inf (WGSL has no infinity literal)
  var m = -3.402823e38;
  for (var i = li; i < P.D; i += WG) { m = max(m, X_ld(xb + i)); }
  m = reduce_workgroup(li, m, true);
  var s = 0.0;
  for (var i = li; i < P.D; i += WG) { s += exp(X_ld(xb + i) - m); }
  let inv = 1.0 / reduce_workgroup(li, s, false);
  for (var i = li; i < P.D; i += WG) { Y_st(yb + i, exp(X_ld(xb + i) - m) * inv); }
}
