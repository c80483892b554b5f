// Normalisations and softmax.
//
// GroupNorm: a group of x [N, C, ...spatial] is one contiguous run of
// (C/G)·S elements, so the whole tensor is N·G "rows" of gsz elements. Rows
// are cut into chunks of at most L elements; `gn_stats` gives each chunk a
// workgroup that reduces it with Welford per thread and Chan's pairwise merge
// in workgroup memory (stable: never E[x²]−E[x]²). When every row is one chunk
// (FINAL) it writes mean and 1/σ directly; otherwise `gn_merge` Chan-merges a
// row's chunk partials. `gn_apply` normalises elementwise, applies the affine
// transform and the fused activation.
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
override FINAL: bool = false;

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
// X: the window; PART: per chunk (mean, m2), or per row (mean, rstd) when FINAL.
@compute @workgroup_size(WG)
fn gn_stats(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = linear_wg(wid, nwg);
  if (w >= P.nchunks) { return; }
  let c = P.c0 + w;                 // global chunk index
  let row = c / P.cpr;
  let k = c % P.cpr;
  let start = row * P.gsz + k * P.L; // global element index
  let len = min(P.L, P.gsz - k * P.L);
  let xb = P.xoff + (start - P.base);
  var n = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var i = li; i < len; i += WG) {
    let v = X_ld(xb + i);
    n += 1.0;
    let d = v - mean;
    mean += d / n;
    m2 += d * (v - mean);
  }
  let r = merge_workgroup(li, n, mean, m2);
  if (li == 0u) {
    if (FINAL) {
      PART_st(row * 2u, r.y);
      PART_st(row * 2u + 1u, inverseSqrt(r.z / r.x + P.eps));
    } else {
      PART_st(c * 2u, r.y);
      PART_st(c * 2u + 1u, r.z);
    }
  }
}

//! kernel gn_merge
// One workgroup per row: merges the row's cpr chunk partials into (mean, rstd).
@compute @workgroup_size(WG)
fn gn_merge(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg);
  if (row >= P.rows) { return; }
  var n = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var k = li; k < P.cpr; k += WG) {
    let c = row * P.cpr + k;
    let nb = f32(min(P.L, P.gsz - k * P.L));
    let m = chan(n, mean, m2, nb, PART_ld(c * 2u), PART_ld(c * 2u + 1u));
    n = m.x; mean = m.y; m2 = m.z;
  }
  let r = merge_workgroup(li, n, mean, m2);
  if (li == 0u) {
    STATS_st(row * 2u, r.y);
    STATS_st(row * 2u + 1u, inverseSqrt(r.z / r.x + P.eps));
  }
}

//! kernel gn_apply
// y = act((x − mean)·rstd·w[c] + b[c]) over `count` elements from global index `base`.
// A workgroup covers AE·WG elements, thread li elements li + k·WG (adjacent
// lanes on adjacent elements). With ALIGNED (S a multiple of WG, and base of
// WG) the WG elements of one k share a channel plane, so the plane, row and
// channel come from a division that does not depend on the invocation: CPU
// drivers do it once per SIMD group instead of per lane (vector integer
// division is scalarised on CPUs) and load the statistics and affine
// parameters once.
override AE: u32 = 8u;
override ALIGNED: bool = false;

@compute @workgroup_size(WG)
fn gn_apply(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i0 = linear_wg(wid, nwg) * (WG * AE);
  for (var k = 0u; k < AE; k++) {
    let ik = i0 + k * WG;             // first element of this step (uniform)
    if (ik >= P.count) { break; }
    var gp = P.base + ik;             // an element of this step's plane when ALIGNED
    if (!ALIGNED) { gp = gp + li; }
    let plane = gp / P.S;
    let row = gp / P.gsz;
    let ch = plane % P.C;
    let mean = STATS_ld(row * 2u);
    var sc = STATS_ld(row * 2u + 1u);
    var sh = 0.0;
    if (HAS_W) { sc = sc * W_ld(ch); }
    if (HAS_B) { sh = B_ld(ch); }
    let i = ik + li;
    if (i < P.count) {
      Y_st(P.yoff + i, activate((X_ld(P.xoff + i) - mean) * sc + sh, ACT));
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
