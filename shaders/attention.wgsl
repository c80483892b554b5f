// Multi-head attention, O = softmax(scale · Q Kᵀ) V, on the layout of Linear
// outputs: q, k, v, out are [B, N, H·d] (heads side by side in a row), so a
// head is a strided slice and no permutes are needed. Two paths:
//
// `flash` (head dims up to 128): fused, flash style. A workgroup owns BQ query
// rows of one (batch, head) and DO output columns of the head; it walks the
// keys in blocks of BKV:
//   1. S = Q Kᵀ for the block, with d streamed through workgroup memory in
//      slices of DT (each thread a 2×4 register tile of S);
//   2. online softmax: running row max m and sum l; the block's scores become
//      p = exp(s − m_new) and the accumulator is rescaled by exp(m_old − m_new);
//   3. O += P V for the block (each thread a 4×4 register tile of O).
// Only BQ×BKV scores ever exist (in workgroup memory); accumulation is f32.
// Heads wider than DO are split into d-chunks (one workgroup each) that
// recompute S. Scores are kept in log2 units (scale·log2 e) for exp2.
// The causal mask is a uniform, not an override: one pipeline fewer to
// compile per variant (slow on SwiftShader) for a branch that costs nothing.
//
// `rows` (head dims up to 128, multiples of 4; CPU drivers): no workgroup
// memory and no barriers, which on CPU drivers cost a fiber switch per
// invocation. Each thread owns one query row: q and the output accumulator
// live in registers (vec4 over the head dim) and the keys/values are read
// straight from global memory, 4 keys per online-softmax step. All threads of
// a workgroup read the same key and value (their addresses do not depend on
// the invocation), so a CPU driver loads each once and broadcasts it across
// its SIMD lanes instead of gathering.
//
// `rowblock` (head dims up to 128, any; lavapipe): barrier-free like `rows`,
// but each thread owns 4·RG query rows, vectorised across rows (a vec4 holds
// one column of 4 rows). lavapipe runs a workgroup's invocations as SIMD lanes
// but loads storage buffers lane by lane with a bounds check each (it cannot
// prove an address uniform when it comes from the uniform block), so a load
// costs ~10 instructions per lane while an FMA costs one per 8 lanes: the
// lever is FMAs per load, here 4·RG (one K or V element feeds every row). The
// head dim is a scalar loop, so no d % 4 requirement; its bound is the
// uniform P.d, not an override: with a constant bound lavapipe unrolls the
// loops and compiles one head dim for 30–50 s. SwiftShader prefers
// `rows` (it broadcasts shared loads, and spills the bigger arrays slowly).
//
// `scores` → `softmax_rows` → `pv` (wide heads, e.g. the VAE's single head of
// 512): recomputing S per 64-wide d-chunk would cost d/64 times the Q Kᵀ work,
// so instead S is materialised for a block of query rows only (the host sizes
// the block to the binding limit and a memory cap, never N×N for long
// sequences), normalised in place and multiplied by V; both products are
// 64×64-tiled through workgroup memory, 4×4 outputs per thread.

// A finite "minus infinity" (WGSL has no infinity literal): masked scores.
const NEG: f32 = -1.0e30;

// Workgroup w of the row kernels -> (query block, head, batch item): blocks of
// one (batch, head) are adjacent, heads of one batch item next.
fn query_block(w: u32, nqb: u32, heads: u32) -> vec3<u32> {
  let bh = w / nqb;
  return vec3<u32>(w % nqb, bh % heads, bh / heads);
}

//! kernel flash
// Tile sizes are overrides; the host keeps them consistent:
//   WG = (BQ/2)·(BKV/4) = (BQ/4)·(DO/4), i.e. DO = 2·BKV.
override BQ: u32 = 32u;
override BKV: u32 = 32u;
override DT: u32 = 32u;
override DO: u32 = 64u;
override WG: u32 = 128u;

// Q slice [BQ][DT+1] and Kᵀ slice [DT][BKV+1] during step 1; the V block [BKV][DO]
// after. The +1 pads keep the row-wise stores and the per-thread reads of
// different rows in different memory banks.
var<workgroup> smem: array<f32, max(BQ * (DT + 1u) + DT * (BKV + 1u), BKV * DO)>;
var<workgroup> Ss: array<f32, BQ * BKV>;   // scores, then probabilities
var<workgroup> m_s: array<f32, BQ>;        // running max (log2 units)
var<workgroup> l_s: array<f32, BQ>;        // running sum of p
var<workgroup> a_s: array<f32, BQ>;        // this block's rescale factor

@compute @workgroup_size(WG)
fn flash(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = linear_wg(wid, nwg);
  if (w >= P.total) { return; }
  let dc = w % P.ndc;
  let qb = (w / P.ndc) % P.nqb;
  let bh = w / (P.ndc * P.nqb);
  let h = bh % P.H;
  let b = bh / P.H;
  let q0 = qb * BQ;             // first query row of the tile (in this dispatch's rows)
  let dc0 = dc * DO;            // first output column of the head
  let hd = h * P.d;
  let qbase = P.qoff + b * P.sq + hd;
  let kbase = P.koff + b * P.sk + hd;
  let vbase = P.voff + b * P.sk + hd;

  // thread tiles: S rows sr0, sr0+1 × keys sc + (BKV/4)·j; O rows or0..or0+3 × columns oc + (DO/4)·j
  let scg = BKV / 4u;
  let sr0 = (t / scg) * 2u;
  let sc = t % scg;
  let ocg = DO / 4u;
  let or0 = (t / ocg) * 4u;
  let oc = t % ocg;
  let kt0 = BQ * (DT + 1u); // start of the Kᵀ slice in smem

  if (t < BQ) {
    m_s[t] = NEG;
    l_s[t] = 0.0;
  }
  var o: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { o[i] = 0.0; }

  // causal (top-left aligned, as torch's is_causal): key j is visible to query i iff j ≤ i
  var kend = P.Nk;
  if (P.causal != 0u) { kend = min(P.Nk, P.qpos0 + q0 + BQ); }

  for (var k0 = 0u; k0 < kend; k0 += BKV) {
    // ---- 1. S = Q Kᵀ over d in slices of DT
    var s: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) { s[i] = 0.0; }
    for (var c0 = 0u; c0 < P.d; c0 += DT) {
      for (var e = t; e < BQ * DT; e += WG) {
        let r = e / DT;
        let c = e % DT;
        var v = 0.0;
        if (q0 + r < P.nq && c0 + c < P.d) { v = Q_ld(qbase + (q0 + r) * P.ld + c0 + c); }
        smem[r * (DT + 1u) + c] = v;
      }
      for (var e = t; e < BKV * DT; e += WG) {
        let j = e / DT;
        let c = e % DT;
        var v = 0.0;
        if (k0 + j < P.Nk && c0 + c < P.d) { v = K_ld(kbase + (k0 + j) * P.ld + c0 + c); }
        smem[kt0 + c * (BKV + 1u) + j] = v;
      }
      workgroupBarrier();
      for (var c = 0u; c < DT; c++) {
        let qa = smem[sr0 * (DT + 1u) + c];
        let qb2 = smem[(sr0 + 1u) * (DT + 1u) + c];
        let kb = kt0 + c * (BKV + 1u) + sc;
        for (var j = 0u; j < 4u; j++) {
          let kv = smem[kb + j * scg];
          s[j] = fma(qa, kv, s[j]);
          s[4u + j] = fma(qb2, kv, s[4u + j]);
        }
      }
      workgroupBarrier();
    }
    for (var i = 0u; i < 2u; i++) {
      let qi = P.qpos0 + q0 + sr0 + i;
      for (var j = 0u; j < 4u; j++) {
        let kj = k0 + sc + j * scg;
        var ok = kj < P.Nk;
        if (P.causal != 0u) { ok = ok && kj <= qi; }
        Ss[(sr0 + i) * BKV + sc + j * scg] = select(NEG, s[i * 4u + j] * P.scale2, ok);
      }
    }
    // ---- V block into smem (free since the last barrier of step 1)
    for (var e = t; e < BKV * DO; e += WG) {
      let j = e / DO;
      let c = e % DO;
      var v = 0.0;
      if (k0 + j < P.Nk && dc0 + c < P.d) { v = V_ld(vbase + (k0 + j) * P.ld + dc0 + c); }
      smem[e] = v;
    }
    workgroupBarrier();
    // ---- 2. online softmax, a thread per row
    if (t < BQ) {
      let m_old = m_s[t];
      var m_new = m_old;
      for (var j = 0u; j < BKV; j++) { m_new = max(m_new, Ss[t * BKV + j]); }
      var sum = 0.0;
      for (var j = 0u; j < BKV; j++) {
        let x = Ss[t * BKV + j];
        // masked scores give 0 even while the row has seen nothing but masks
        let p = select(0.0, exp2(x - m_new), x > 0.5 * NEG);
        Ss[t * BKV + j] = p;
        sum += p;
      }
      let a = exp2(m_old - m_new);
      a_s[t] = a;
      l_s[t] = l_s[t] * a + sum;
      m_s[t] = m_new;
    }
    workgroupBarrier();
    // ---- 3. O = a·O + P V
    for (var i = 0u; i < 4u; i++) {
      let a = a_s[or0 + i];
      for (var j = 0u; j < 4u; j++) { o[i * 4u + j] *= a; }
    }
    for (var kk = 0u; kk < BKV; kk++) {
      var vv: array<f32, 4>;
      for (var j = 0u; j < 4u; j++) { vv[j] = smem[kk * DO + oc + j * ocg]; }
      for (var i = 0u; i < 4u; i++) {
        let p = Ss[(or0 + i) * BKV + kk];
        for (var j = 0u; j < 4u; j++) { o[i * 4u + j] = fma(p, vv[j], o[i * 4u + j]); }
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i++) {
    let r = q0 + or0 + i;
    if (r >= P.nq) { continue; }
    let inv = 1.0 / l_s[or0 + i];
    for (var j = 0u; j < 4u; j++) {
      let c = dc0 + oc + j * ocg;
      if (c < P.d) { O_st(P.ooff + b * P.sq + r * P.ld + hd + c, o[i * 4u + j] * inv); }
    }
  }
}

//! kernel scores
// S[r, j] = scale · Σ_c Q[r, c] K[j, c] for rows r < R of one (batch, head);
// causal-masked entries get NEG.
var<workgroup> As: array<f32, 1024>; // [16][64], k-major
var<workgroup> Bs: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn scores(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = linear_wg(wid, nwg);
  if (w >= P.total) { return; }
  let row0 = (w / P.ntn) * 64u;
  let col0 = (w % P.ntn) * 64u;
  let tid = lid.y * 16u + lid.x;
  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
  for (var k0 = 0u; k0 < P.d; k0 += 16u) {
    for (var r = 0u; r < 4u; r++) {
      let e = tid + r * 256u;
      let m = e / 16u;
      let k = e % 16u;
      var a = 0.0;
      var b = 0.0;
      if (row0 + m < P.R && k0 + k < P.d) { a = Q_ld(P.qoff + (row0 + m) * P.ld + k0 + k); }
      if (col0 + m < P.Nk && k0 + k < P.d) { b = K_ld(P.koff + (col0 + m) * P.ld + k0 + k); }
      As[k * 64u + m] = a;
      Bs[k * 64u + m] = b;
    }
    workgroupBarrier();
    for (var k = 0u; k < 16u; k++) {
      let a = k * 64u + lid.y * 4u;
      let b = k * 64u + lid.x * 4u;
      fma4x4(&acc, vec4<f32>(As[a], As[a + 1u], As[a + 2u], As[a + 3u]), vec4<f32>(Bs[b], Bs[b + 1u], Bs[b + 2u], Bs[b + 3u]));
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = row0 + lid.y * 4u + i;
    if (m >= P.R) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = col0 + lid.x * 4u + j;
      if (n >= P.Nk) { continue; }
      var v = acc[i * 4u + j] * P.scale;
      if (P.causal != 0u && n > P.qpos0 + m) { v = NEG; }
      S[m * P.Nk + n] = v;
    }
  }
}

//! kernel softmax_rows softmax_wg
// A max or sum over a workgroup of 256 (the workgroup-per-row softmaxes).
var<workgroup> red: array<f32, 256>;

fn reduce256(li: u32, v: f32, is_max: bool) -> f32 {
  workgroupBarrier(); // red may still be read from the previous reduction
  red[li] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (li < s) {
      if (is_max) { red[li] = max(red[li], red[li + s]); } else { red[li] = red[li] + red[li + s]; }
    }
    workgroupBarrier();
  }
  return red[0];
}

//! kernel softmax_rows
// In place over rows of S: a workgroup per row; max, Σ exp, write. Masked
// entries (NEG) become 0; key 0 is never masked, so every row has a finite max.
@compute @workgroup_size(256)
fn softmax_rows(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg);
  if (row >= P.R) { return; }
  let base = row * P.Nk;
  var m = NEG;
  for (var j = li; j < P.Nk; j += 256u) { m = max(m, S[base + j]); }
  m = reduce256(li, m, true);
  var s = 0.0;
  for (var j = li; j < P.Nk; j += 256u) { s += exp(S[base + j] - m); }
  let inv = 1.0 / reduce256(li, s, false);
  for (var j = li; j < P.Nk; j += 256u) { S[base + j] = exp(S[base + j] - m) * inv; }
}

//! kernel pv
// O[r, c] = Σ_j P[r, j] V[j, c] for rows r < R and the head's d columns.
var<workgroup> As: array<f32, 1024>; // P tile [16][64], j-major
var<workgroup> Bs: array<f32, 1024>; // V tile [16][64]

@compute @workgroup_size(16, 16)
fn pv(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = linear_wg(wid, nwg);
  if (w >= P.total) { return; }
  let row0 = (w / P.ntn) * 64u;
  let col0 = (w % P.ntn) * 64u;
  let tid = lid.y * 16u + lid.x;
  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
  for (var k0 = 0u; k0 < P.Nk; k0 += 16u) {
    for (var r = 0u; r < 4u; r++) {
      let e = tid + r * 256u;
      // P: 64 rows × 16 keys, keys fastest (contiguous in S)
      let m = e / 16u;
      let k = e % 16u;
      var a = 0.0;
      if (row0 + m < P.R && k0 + k < P.Nk) { a = S[(row0 + m) * P.Nk + k0 + k]; }
      As[k * 64u + m] = a;
      // V: 16 keys × 64 columns, columns fastest (contiguous in a row of v)
      let kk = e / 64u;
      let n = e % 64u;
      var b = 0.0;
      if (k0 + kk < P.Nk && col0 + n < P.d) { b = V_ld(P.voff + (k0 + kk) * P.ld + col0 + n); }
      Bs[kk * 64u + n] = b;
    }
    workgroupBarrier();
    for (var k = 0u; k < 16u; k++) {
      let a = k * 64u + lid.y * 4u;
      let b = k * 64u + lid.x * 4u;
      fma4x4(&acc, vec4<f32>(As[a], As[a + 1u], As[a + 2u], As[a + 3u]), vec4<f32>(Bs[b], Bs[b + 1u], Bs[b + 2u], Bs[b + 3u]));
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = row0 + lid.y * 4u + i;
    if (m >= P.R) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = col0 + lid.x * 4u + j;
      if (n < P.d) { O_st(P.ooff + m * P.ld + n, acc[i * 4u + j]); }
    }
  }
}

//! kernel rows
override D4: u32 = 16u;      // head dim / 4 (the host requires d % 4 == 0, d ≤ 128)
const RQ: u32 = 64u;         // query rows per workgroup
const D4MAX: u32 = 32u;

fn ld4_k(i: u32) -> vec4<f32> { return vec4<f32>(K_ld(i), K_ld(i + 1u), K_ld(i + 2u), K_ld(i + 3u)); }
fn ld4_v(i: u32) -> vec4<f32> { return vec4<f32>(V_ld(i), V_ld(i + 1u), V_ld(i + 2u), V_ld(i + 3u)); }

@compute @workgroup_size(64)
fn rows(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = linear_wg(wid, nwg);
  if (w >= P.total) { return; }
  let blk = query_block(w, P.nqb, P.H);
  let qb = blk.x;
  let h = blk.y;
  let b = blk.z;
  let rr = qb * RQ + t;
  // rows past the end recompute the last one (reads stay in bounds) and are not stored
  let r = min(rr, P.nq - 1u);
  let hd = h * P.d;
  let qbase = P.qoff + b * P.sq + r * P.ld + hd;
  let kbase = P.koff + b * P.sk + hd;
  let vbase = P.voff + b * P.sk + hd;
  let qi = P.qpos0 + r;

  var q: array<vec4<f32>, D4MAX>;
  var o: array<vec4<f32>, D4MAX>;
  for (var c = 0u; c < D4; c++) {
    let i = qbase + 4u * c;
    // scale folded into q once; scores in log2 units for exp2
    q[c] = vec4<f32>(Q_ld(i), Q_ld(i + 1u), Q_ld(i + 2u), Q_ld(i + 3u)) * P.scale2;
    o[c] = vec4<f32>(0.0);
  }
  var m = NEG;
  var l = 0.0;
  // workgroup-uniform key range (the causal mask below handles each row)
  var kend = P.Nk;
  if (P.causal != 0u) { kend = min(P.Nk, P.qpos0 + qb * RQ + RQ); }
  let last = P.Nk - 1u;
  for (var j0 = 0u; j0 < kend; j0 += 4u) {
    let jv = vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u);
    var valid = jv < vec4<u32>(P.Nk);
    if (P.causal != 0u) { valid = valid & (jv <= vec4<u32>(qi)); }
    let k0 = kbase + j0 * P.ld;
    let k1 = kbase + min(j0 + 1u, last) * P.ld;
    let k2 = kbase + min(j0 + 2u, last) * P.ld;
    let k3 = kbase + min(j0 + 3u, last) * P.ld;
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
      let qc = q[c];
      s += vec4<f32>(dot(qc, ld4_k(k0 + 4u * c)), dot(qc, ld4_k(k1 + 4u * c)), dot(qc, ld4_k(k2 + 4u * c)), dot(qc, ld4_k(k3 + 4u * c)));
    }
    s = select(vec4<f32>(NEG), s, valid);
    let mn = max(m, max(max(s.x, s.y), max(s.z, s.w)));
    // masked scores give 0 even while the row has seen nothing but masks
    let p = select(vec4<f32>(0.0), exp2(s - vec4<f32>(mn)), valid);
    let a = exp2(m - mn);
    l = l * a + (p.x + p.y + p.z + p.w);
    m = mn;
    let v0 = vbase + j0 * P.ld;
    let v1 = vbase + min(j0 + 1u, last) * P.ld;
    let v2 = vbase + min(j0 + 2u, last) * P.ld;
    let v3 = vbase + min(j0 + 3u, last) * P.ld;
    for (var c = 0u; c < D4; c++) {
      var acc = o[c] * a;
      acc = fma(vec4<f32>(p.x), ld4_v(v0 + 4u * c), acc);
      acc = fma(vec4<f32>(p.y), ld4_v(v1 + 4u * c), acc);
      acc = fma(vec4<f32>(p.z), ld4_v(v2 + 4u * c), acc);
      acc = fma(vec4<f32>(p.w), ld4_v(v3 + 4u * c), acc);
      o[c] = acc;
    }
  }
  if (rr >= P.nq) { return; }
  let inv = 1.0 / l;
  let obase = P.ooff + b * P.sq + r * P.ld + hd;
  for (var c = 0u; c < D4; c++) {
    let v = o[c] * inv;
    O_st(obase + 4u * c, v.x);
    O_st(obase + 4u * c + 1u, v.y);
    O_st(obase + 4u * c + 2u, v.z);
    O_st(obase + 4u * c + 3u, v.w);
  }
}

//! kernel rowblock
override WGR: u32 = 8u;      // invocations per workgroup
const DM: u32 = 128u;         // widest head (the host checks d ≤ DM)
const RG: u32 = 2u;          // query rows per invocation / 4 (ROWBLOCK_RG on the host)
// Keys per online-softmax step (ROWBLOCK_KEYS on the host, tuned per adapter):
// each step rescales the accumulators once, so more keys per step mean fewer
// passes over them. Its arrays are sized for the most.
override KB: u32 = 4u;
const KB_MAX: u32 = 16u;

@compute @workgroup_size(WGR)
fn rowblock(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = linear_wg(wid, nwg);
  if (w >= P.total) { return; }
  let blk = query_block(w, P.nqb, P.H);
  let qb = blk.x;
  let h = blk.y;
  let b = blk.z;
  let hd = h * P.d;
  let kbase = P.koff + b * P.sk + hd;
  let vbase = P.voff + b * P.sk + hd;
  let row0 = (qb * WGR + t) * (4u * RG);

  var q: array<vec4<f32>, DM * RG>;
  var o: array<vec4<f32>, DM * RG>;
  var qi: array<vec4<u32>, RG>;
  var m: array<vec4<f32>, RG>;
  var l: array<vec4<f32>, RG>;
  for (var g = 0u; g < RG; g++) {
    let r = min(vec4<u32>(row0 + 4u * g) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(P.nq - 1u));
    qi[g] = vec4<u32>(P.qpos0) + r;
    m[g] = vec4<f32>(NEG);
    l[g] = vec4<f32>(0.0);
    let qbase = P.qoff + b * P.sq + hd + r * P.ld;
    for (var c = 0u; c < P.d; c++) {
      q[c * RG + g] = vec4<f32>(Q_ld(qbase.x + c), Q_ld(qbase.y + c), Q_ld(qbase.z + c), Q_ld(qbase.w + c)) * P.scale2;
      o[c * RG + g] = vec4<f32>(0.0);
    }
  }
  var kend = P.Nk;
  if (P.causal != 0u) { kend = min(P.Nk, P.qpos0 + (qb * WGR + WGR) * 4u * RG); }
  let last = P.Nk - 1u;
  for (var j0 = 0u; j0 < kend; j0 += KB) {
    var kr: array<u32, KB_MAX>;
    for (var j = 0u; j < KB; j++) { kr[j] = min(j0 + j, last) * P.ld; }
    var s: array<vec4<f32>, KB_MAX * RG>;
    for (var i = 0u; i < KB * RG; i++) { s[i] = vec4<f32>(0.0); }
    for (var c = 0u; c < P.d; c++) {
      for (var j = 0u; j < KB; j++) {
        let kv = vec4<f32>(K_ld(kbase + kr[j] + c));
        for (var g = 0u; g < RG; g++) { s[j * RG + g] = fma(q[c * RG + g], kv, s[j * RG + g]); }
      }
    }
    var a: array<vec4<f32>, RG>;
    for (var g = 0u; g < RG; g++) {
      var mn = m[g];
      for (var j = 0u; j < KB; j++) {
        var ok = vec4<bool>(j0 + j < P.Nk);
        if (P.causal != 0u) { ok = ok & (vec4<u32>(j0 + j) <= qi[g]); }
        s[j * RG + g] = select(vec4<f32>(NEG), s[j * RG + g], ok);
        mn = max(mn, s[j * RG + g]);
      }
      var sum = vec4<f32>(0.0);
      for (var j = 0u; j < KB; j++) {
        // masked scores give 0 even while the row has seen nothing but masks
        let x = s[j * RG + g];
        let p = select(vec4<f32>(0.0), exp2(x - mn), x > vec4<f32>(0.5 * NEG));
        s[j * RG + g] = p;
        sum += p;
      }
      a[g] = exp2(m[g] - mn);
      l[g] = l[g] * a[g] + sum;
      m[g] = mn;
    }
    for (var c = 0u; c < P.d; c++) {
      var acc: array<vec4<f32>, RG>;
      for (var g = 0u; g < RG; g++) { acc[g] = o[c * RG + g] * a[g]; }
      for (var j = 0u; j < KB; j++) {
        let vv = vec4<f32>(V_ld(vbase + kr[j] + c));
        for (var g = 0u; g < RG; g++) { acc[g] = fma(s[j * RG + g], vv, acc[g]); }
      }
      for (var g = 0u; g < RG; g++) { o[c * RG + g] = acc[g]; }
    }
  }
  let obase0 = P.ooff + b * P.sq + hd;
  for (var g = 0u; g < RG; g++) {
    let rr = vec4<u32>(row0 + 4u * g) + vec4<u32>(0u, 1u, 2u, 3u);
    let inv = 1.0 / l[g];
    let obase = obase0 + rr * P.ld;
    for (var c = 0u; c < P.d; c++) {
      let v = o[c * RG + g] * inv;
      if (rr.x < P.nq) { O_st(obase.x + c, v.x); }
      if (rr.y < P.nq) { O_st(obase.y + c, v.y); }
      if (rr.z < P.nq) { O_st(obase.z + c, v.z); }
      if (rr.w < P.nq) { O_st(obase.w + c, v.w); }
    }
  }
}

//! kernel softmax_lanes
// The `gemm` path's softmax, in place over a block of score rows S[R][Nk]
// (raw Q·Kᵀ, unscaled): barrier-free, a thread per row (CPU drivers pay a
// fiber switch per barrier). One pass keeps the running max and sum (scores
// scaled into log2 units), a second writes p = exp2(s·scale2 − m) / l; keys a
// causal mask hides (j > qpos0 + row) get 0. With V4 (Nk a multiple of 4, S
// stored as vec4s) both passes move 4 scores per access.
override V4: bool = false;

@compute @workgroup_size(64)
fn softmax_lanes(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg) * 64u + t;
  if (row >= P.R) { return; }
  let base = row * P.Nk;
  var kend = P.Nk;
  if (P.causal != 0u) { kend = min(P.Nk, P.qpos0 + row + 1u); }
  var m = NEG;
  var l = 0.0;
  if (V4) {
    let b4 = base / 4u;
    for (var j4 = 0u; 4u * j4 < kend; j4++) {
      let jv = vec4<u32>(4u * j4) + vec4<u32>(0u, 1u, 2u, 3u);
      let s = select(vec4<f32>(NEG), S_ld4(b4 + j4) * P.scale2, jv < vec4<u32>(kend));
      let mn = max(m, max(max(s.x, s.y), max(s.z, s.w)));
      let p = exp2(s - vec4<f32>(mn));
      l = l * exp2(m - mn) + (p.x + p.y + p.z + p.w);
      m = mn;
    }
    let inv = 1.0 / l;
    for (var j4 = 0u; j4 < P.Nk / 4u; j4++) {
      let jv = vec4<u32>(4u * j4) + vec4<u32>(0u, 1u, 2u, 3u);
      S_st4(b4 + j4, select(vec4<f32>(0.0), exp2(S_ld4(b4 + j4) * P.scale2 - vec4<f32>(m)) * inv, jv < vec4<u32>(kend)));
    }
    return;
  }
  for (var j = 0u; j < kend; j++) {
    let s = S_ld(base + j) * P.scale2;
    let mn = max(m, s);
    l = l * exp2(m - mn) + exp2(s - mn);
    m = mn;
  }
  let inv = 1.0 / l;
  for (var j = 0u; j < P.Nk; j++) {
    S_st(base + j, select(0.0, exp2(S_ld(base + j) * P.scale2 - m) * inv, j < kend));
  }
}

//! kernel softmax_wg
// The `mm` path's softmax (GPUs), in place over `rows` score rows S[rows][Nk]
// (raw Q·Kᵀ, unscaled; R rows per head, so row r is query qpos0 + r % R): a
// workgroup per row, the max and the sum reduced through workgroup memory,
// then p = exp2(s·scale2 − m) / l; keys a causal mask hides get 0.
@compute @workgroup_size(256)
fn softmax_wg(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_wg(wid, nwg);
  if (row >= P.rows) { return; }
  let base = row * P.Nk;
  var kend = P.Nk;
  if (P.causal != 0u) { kend = min(P.Nk, P.qpos0 + row % P.R + 1u); }
  var m = NEG;
  for (var j = li; j < kend; j += 256u) { m = max(m, S_ld(base + j) * P.scale2); }
  m = reduce256(li, m, true);
  var l = 0.0;
  for (var j = li; j < kend; j += 256u) { l += exp2(S_ld(base + j) * P.scale2 - m); }
  let inv = 1.0 / reduce256(li, l, false);
  for (var j = li; j < P.Nk; j += 256u) { S_st(base + j, select(0.0, exp2(S_ld(base + j) * P.scale2 - m) * inv, j < kend)); }
}
