// Normalisations and softmax.
//
// GroupNorm: a group of x [N, C, ...spatial] is one contiguous run of
// (C/G)·S elements, so the whole tensor is N·G "rows" of gsz elements. Rows
// are cut into chunks of at most L elements (WG·pt), one workgroup each.
// On the CPU drivers this engine meets (lavapipe, SwiftShader) a workgroup's
// invocations are SIMD lanes and every workgroupBarrier is a fiber switch per
// lane group, so `gn_stats` has none: each thread reduces its own elements
// (li + k·WG of the chunk) as sums of deviations from one of them (never
// E[x²]−E[x]²: see the kernel). Every thread writes its own partial;
// `gn_merge` (a thread per row) Chan-merges a row's partials into mean and
// 1/σ. `gn_apply` normalises, applies the affine transform and the
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

//! kernel gn_stats gn_fused
// Thread li's (count, mean, m2) over vec4s xv + li + k·WG, k ≥ 0, below xv + lv
// (li < lv): shifted sums as described for gn_stats below.
fn gn_sums4(xv: u32, li: u32, lv: u32) -> vec3<f32> {
  let first = X_ld4(xv + li);
  let sh = vec4<f32>(first.x);
  var s1 = first - sh;
  var s2 = s1 * s1;
  for (var j = li + WG; j < lv; j += WG) {
    let d = X_ld4(xv + j) - sh;
    s1 += d;
    s2 = fma(d, d, s2);
  }
  let n = f32(4u * ((lv - li + WG - 1u) / WG));
  let t1 = s1.x + s1.y + s1.z + s1.w;
  return vec3<f32>(n, sh.x + t1 / n, max(s2.x + s2.y + s2.z + s2.w - t1 * t1 / n, 0.0));
}

//! kernel gn_stats
// X: the window; PART: (mean, m2) per thread of every chunk. Thread li of a
// chunk reduces elements li + k·WG (adjacent lanes on adjacent elements) as
// shifted sums Σd and Σd², d = x − x_first (its own first element): one load
// and two FMAs per element. m2 = Σd² − (Σd)²/n cancels little because the
// shift is one of the n values: no value lies more than √(n−1)·σ from the
// mean (Samuelson), so Σd² ≤ n·m2 and the relative error stays below n·ε.
override V4: bool = false;

@compute @workgroup_size(WG)
fn gn_stats(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = linear_wg(wid, nwg);
  if (w >= P.nchunks) { return; }
  let c = P.c0 + w;                 // global chunk index
  let row = c / P.cpr;
  let k = c % P.cpr;
  let start = row * P.gsz + k * P.L; // global element index
  let len = min(P.L, P.gsz - k * P.L);
  let xb = P.xoff + (start - P.base);  // 4-aligned with V4
  var mean = 0.0;
  var m2 = 0.0;
  if (V4) {
    // gsz a multiple of 4, X stored as vec4s: thread li sums vec4s li + k·WG
    if (li < len / 4u) {
      let r = gn_sums4(xb / 4u, li, len / 4u);
      mean = r.y;
      m2 = r.z;
    }
  } else if (li < len) {
    let sh = X_ld(xb + li);
    var s1 = 0.0;
    var s2 = 0.0;
    for (var j = li + WG; j < len; j += WG) {
      let d = X_ld(xb + j) - sh;
      s1 += d;
      s2 = fma(d, d, s2);
    }
    let n = f32((len - li + WG - 1u) / WG);
    mean = sh + s1 / n;
    m2 = max(s2 - s1 * s1 / n, 0.0);
  }
  let o = (w * WG + li) * 2u;        // PART is bound from this dispatch's first chunk
  PART_st(o, mean);
  PART_st(o + 1u, m2);
}

//! kernel gn_merge gn_merge_wg gn_fused
// A thread per row, no barriers (gn_merge, CPU drivers), or a workgroup per row
// (gn_merge_wg, GPUs, where one thread walking thousands of partials in a
// dependent chain leaves the device idle): Chan-merges the row's cpr·tw thread partials
// (tw threads of at most pt elements per chunk, taken vw at a time) into
// (mean, rstd). PART is
// bound from row r0.
// Chan et al.: merges (na, ma, m2a) with (nb, mb, m2b); empty sides are fine.
fn chan(na: f32, ma: f32, m2a: f32, nb: f32, mb: f32, m2b: f32) -> vec3<f32> {
  let n = na + nb;
  if (n == 0.0) { return vec3<f32>(0.0); }
  let d = mb - ma;
  let fb = nb / n;
  return vec3<f32>(n, ma + d * fb, m2a + m2b + d * d * na * fb);
}

//! kernel gn_merge
@compute @workgroup_size(WG)
fn gn_merge(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg) * WG + li;
  if (row >= P.rows) { return; }
  // Means are merged relative to the first partial's: a long sequential
  // merge at the data's magnitude (a mean of 300, say) would round every
  // update there. And the merge is a three-level tree (16 partials, 16 of
  // those, then the chunks) rather than one long chain, whose rounding
  // errors grow with its length.
  let np = P.cpr * P.tw;
  let mref = PART_ld(row * np * 2u);
  var tot = vec3<f32>(0.0);
  for (var k = 0u; k < P.cpr; k++) {
    let len = min(P.L, P.gsz - k * P.L);
    let lv = len / P.vw; // elements (vw = 1) or vec4s (vw = 4) of the chunk
    let nt = min(P.tw, lv); // threads with elements
    var ch = vec3<f32>(0.0);
    for (var t0 = 0u; t0 < nt; t0 += 16u) {
      var blk = vec3<f32>(0.0);
      for (var t = t0; t < min(t0 + 16u, nt); t++) {
        let nb = min(P.pt, P.vw * ((lv - t + P.tw - 1u) / P.tw));
        let o = (row * np + k * P.tw + t) * 2u;
        blk = chan(blk.x, blk.y, blk.z, f32(nb), PART_ld(o) - mref, PART_ld(o + 1u));
      }
      ch = chan(ch.x, ch.y, ch.z, blk.x, blk.y, blk.z);
    }
    tot = chan(tot.x, tot.y, tot.z, ch.x, ch.y, ch.z);
  }
  let n = tot.x;
  let mean = tot.y;
  let m2 = tot.z;
  STATS_st((P.r0 + row) * 2u, mref + mean);
  STATS_st((P.r0 + row) * 2u + 1u, inverseSqrt(m2 / n + P.eps));
}

//! kernel gn_merge_wg
var<workgroup> gn_red: array<vec3<f32>, WG>;

// Thread li merges partials li, li + WG, … (chunk k = p / tw, thread t = p % tw
// of gn_stats), then the WG results merge as a tree in workgroup memory.
@compute @workgroup_size(WG)
fn gn_merge_wg(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg);
  if (row >= P.rows) { return; }
  let np = P.cpr * P.tw;
  let mref = PART_ld(row * np * 2u);
  var acc = vec3<f32>(0.0);
  for (var p = li; p < np; p += WG) {
    let k = p / P.tw;
    let t = p % P.tw;
    let lv = min(P.L, P.gsz - k * P.L) / P.vw;
    if (t < lv) {
      let nb = min(P.pt, P.vw * ((lv - t + P.tw - 1u) / P.tw));
      let o = (row * np + p) * 2u;
      acc = chan(acc.x, acc.y, acc.z, f32(nb), PART_ld(o) - mref, PART_ld(o + 1u));
    }
  }
  gn_red[li] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (li < s) {
      let a = gn_red[li];
      let b = gn_red[li + s];
      gn_red[li] = chan(a.x, a.y, a.z, b.x, b.y, b.z);
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    let tot = gn_red[0];
    STATS_st((P.r0 + row) * 2u, mref + tot.y);
    STATS_st((P.r0 + row) * 2u + 1u, inverseSqrt(tot.z / tot.x + P.eps));
  }
}

//! kernel gn_apply gn_fused
struct GnCoef { mean: f32, sc: f32, sh: f32 }

// Scale and shift of channel ch for a row's (mean, rstd).
fn gn_affine(mean: f32, rstd: f32, ch: u32) -> GnCoef {
  var sc = rstd;
  var sh = 0.0;
  if (HAS_W) { sc = sc * W_ld(ch); }
  if (HAS_B) { sh = B_ld(ch); }
  return GnCoef(mean, sc, sh);
}

//! kernel gn_apply
// y = act((x − mean)·rstd·w[c] + b[c]) over `count` elements from global index `base`.
// Thread t handles the EA consecutive elements from t·EA: it finds its channel
// plane with one division and steps to the next plane (reloading the
// statistics and affine parameters) only where a plane ends inside its run;
// with ALIGNED (S a multiple of EA) no run crosses a plane or the end.
override EA: u32 = 16u;
override ALIGNED: bool = false;

fn gn_coef(plane: u32) -> GnCoef {
  let row = plane / P.cg;
  return gn_affine(STATS_ld(row * 2u), STATS_ld(row * 2u + 1u), plane % P.C);
}

@compute @workgroup_size(WG)
fn gn_apply(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i0 = (linear_wg(wid, nwg) * WG + li) * EA;
  if (i0 >= P.count) { return; }
  let g0 = P.base + i0;
  var plane = g0 / P.S;
  var k = gn_coef(plane);
  if (ALIGNED) {
    // S and count are multiples of EA (itself of 4), xoff and yoff of 4, X
    // and Y stored as vec4s: the run is whole and inside one plane
    let xv = (P.xoff + i0) / 4u;
    let yv = (P.yoff + i0) / 4u;
    for (var j = 0u; j < EA / 4u; j++) {
      let v = (X_ld4(xv + j) - vec4<f32>(k.mean)) * k.sc + vec4<f32>(k.sh);
      Y_st4(yv + j, vec4<f32>(activate(v.x, ACT), activate(v.y, ACT), activate(v.z, ACT), activate(v.w, ACT)));
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

//! kernel gn_fused
// CPU drivers, groups of at most a core cache's worth (the host checks; S a
// multiple of 4, X and Y stored as vec4s): a workgroup per row does all three
// steps, so the normalising sweep reads the group back from the core's cache
// rather than memory, in one dispatch instead of three. Thread li sums vec4s
// li + k·WG (gn_sums4), thread 0 Chan-merges the WG partials as gn_merge does,
// then each plane of the row is normalised, lanes on adjacent vec4s.
var<workgroup> gn_fpart: array<vec3<f32>, WG>;
var<workgroup> gn_fstat: vec2<f32>;

@compute @workgroup_size(WG)
fn gn_fused(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg);
  if (row >= P.rows) { return; } // the whole workgroup: barriers stay uniform
  let lv = P.gsz / 4u;
  let xv = P.xoff / 4u + row * lv;
  let yv = P.yoff / 4u + row * lv;
  var part = vec3<f32>(0.0);
  if (li < lv) { part = gn_sums4(xv, li, lv); }
  gn_fpart[li] = part;
  workgroupBarrier();
  if (li == 0u) {
    // relative to the first partial's mean, in blocks of 16 (see gn_merge)
    let mref = gn_fpart[0].y;
    var tot = vec3<f32>(0.0);
    for (var t0 = 0u; t0 < WG; t0 += 16u) {
      var blk = vec3<f32>(0.0);
      for (var t = t0; t < t0 + 16u; t++) {
        let q = gn_fpart[t];
        blk = chan(blk.x, blk.y, blk.z, q.x, q.y - mref, q.z);
      }
      tot = chan(tot.x, tot.y, tot.z, blk.x, blk.y, blk.z);
    }
    gn_fstat = vec2<f32>(mref + tot.y, inverseSqrt(tot.z / tot.x + P.eps));
  }
  let st = workgroupUniformLoad(&gn_fstat);
  let sv = P.S / 4u;
  for (var p = 0u; p < P.cg; p++) {
    let k = gn_affine(st.x, st.y, (row * P.cg + p) % P.C);
    for (var j = p * sv + li; j < (p + 1u) * sv; j += WG) {
      let v = (X_ld4(xv + j) - vec4<f32>(k.mean)) * k.sc + vec4<f32>(k.sh);
      Y_st4(yv + j, vec4<f32>(activate(v.x, ACT), activate(v.y, ACT), activate(v.z, ACT), activate(v.w, ACT)));
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

//! kernel layer_norm_rows
// CPU drivers: a thread per row and no barriers (layer_norm's two workgroup
// sums cost ~20 barriers a row, each a fiber switch per lane group there),
// lanes on adjacent rows. The same three sweeps, from the thread's own cache
// lines; RV4 (D a multiple of 4, windows on vec4s, W and B stored as vec4s):
// four running sums per sweep.
override RV4: bool = false;

@compute @workgroup_size(WG)
fn layer_norm_rows(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg) * WG + li;
  if (row >= P.rows) { return; }
  let n = f32(P.D);
  if (RV4) {
    let dv = P.D / 4u;
    let xv = (P.xoff + row * P.D) / 4u;
    let yv = (P.yoff + row * P.D) / 4u;
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < dv; i++) { s += X_ld4(xv + i); }
    let mean = vec4<f32>((s.x + s.y + s.z + s.w) / n);
    var q = vec4<f32>(0.0);
    for (var i = 0u; i < dv; i++) { let d = X_ld4(xv + i) - mean; q = fma(d, d, q); }
    let rstd = inverseSqrt((q.x + q.y + q.z + q.w) / n + P.eps);
    for (var i = 0u; i < dv; i++) {
      var v = (X_ld4(xv + i) - mean) * rstd;
      if (HAS_W) { v = v * W_ld4(i); }
      if (HAS_B) { v = v + B_ld4(i); }
      Y_st4(yv + i, v);
    }
    return;
  }
  let xb = P.xoff + row * P.D;
  let yb = P.yoff + row * P.D;
  var s = 0.0;
  for (var i = 0u; i < P.D; i++) { s += X_ld(xb + i); }
  let mean = s / n;
  var q = 0.0;
  for (var i = 0u; i < P.D; i++) { let d = X_ld(xb + i) - mean; q = fma(d, d, q); }
  let rstd = inverseSqrt(q / n + P.eps);
  for (var i = 0u; i < P.D; i++) {
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
