// Fused multi-head attention, flash style: O = softmax(scale · Q Kᵀ) V.
//
// q, k, v, out are [B, N, H·d] (Linear outputs, heads side by side in a row),
// so a head is a strided slice and no permutes are needed. A workgroup owns BQ
// query rows of one (batch, head) and DO output columns of the head; it walks
// the keys in blocks of BKV:
//   1. S = Q Kᵀ for the block, with d streamed through workgroup memory in
//      slices of DT (each thread a 2×4 register tile of S);
//   2. online softmax: running row max m and sum l; the block's scores become
//      p = exp(s − m_new) and the accumulator is rescaled by exp(m_old − m_new);
//   3. O += P V for the block (each thread a 4×4 register tile of O).
// Only BQ×BKV scores ever exist (in workgroup memory); accumulation is f32.
// Heads wider than DO are split into d-chunks (one workgroup each) that
// recompute S: the split-d path for the VAE's single 512-wide head.
//
// Tile sizes are overrides; the host keeps them consistent:
//   WG = (BQ/2)·(BKV/4) = (BQ/4)·(DO/4), i.e. DO = 2·BKV.
// Scores are kept in log2 units (scale pre-multiplied by log2 e) for exp2.

override BQ: u32 = 32u;
override BKV: u32 = 32u;
override DT: u32 = 32u;
override DO: u32 = 64u;
override WG: u32 = 128u;
override CAUSAL: bool = false;

// Q slice [BQ][DT] and Kᵀ slice [DT][BKV] during step 1; the V block [BKV][DO] after.
var<workgroup> smem: array<f32, max(BQ * DT + DT * BKV, BKV * DO)>;
var<workgroup> Ss: array<f32, BQ * BKV>;   // scores, then probabilities
var<workgroup> m_s: array<f32, BQ>;        // running max (log2 units)
var<workgroup> l_s: array<f32, BQ>;        // running sum of p
var<workgroup> a_s: array<f32, BQ>;        // this block's rescale factor

// A finite "minus infinity" (WGSL has no infinity literal): masked scores.
const NEG: f32 = -1.0e30;

//! kernel flash
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

  if (t < BQ) {
    m_s[t] = NEG;
    l_s[t] = 0.0;
  }
  var o: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { o[i] = 0.0; }

  // causal (top-left aligned, as torch's is_causal): key j is visible to query i iff j ≤ i
  var kend = P.Nk;
  if (CAUSAL) { kend = min(P.Nk, P.qpos0 + q0 + BQ); }

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
        smem[e] = v;
      }
      for (var e = t; e < BKV * DT; e += WG) {
        let j = e / DT;
        let c = e % DT;
        var v = 0.0;
        if (k0 + j < P.Nk && c0 + c < P.d) { v = K_ld(kbase + (k0 + j) * P.ld + c0 + c); }
        smem[BQ * DT + c * BKV + j] = v;
      }
      workgroupBarrier();
      for (var c = 0u; c < DT; c++) {
        let qa = smem[sr0 * DT + c];
        let qb2 = smem[(sr0 + 1u) * DT + c];
        let kb = BQ * DT + c * BKV + sc;
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
        if (CAUSAL) { ok = ok && kj <= qi; }
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
