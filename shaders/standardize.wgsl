// BiT weight standardisation, once at load: per output channel (one
// workgroup), w' = (w - mean) / sqrt(var + eps), biased variance, computed in
// two passes (mean first, then the centred sum of squares) so that a large
// mean does not cancel the variance away.
var<workgroup> red: array<f32, 256>;

fn reduce_sum(li: u32, v: f32) -> f32 {
  red[li] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (li < s) { red[li] = red[li] + red[li + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(256)
fn standardize(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = linear_wg(wid, nwg);
  if (o >= P.O) { return; }
  let base = o * P.K;
  var s = 0.0;
  for (var k = li; k < P.K; k += 256u) { s += WT_ld(base + k); }
  let mean = reduce_sum(li, s) / f32(P.K);
  var q = 0.0;
  for (var k = li; k < P.K; k += 256u) { let d = WT_ld(base + k) - mean; q += d * d; }
  let inv = 1.0 / sqrt(reduce_sum(li, q) / f32(P.K) + P.eps);
  for (var k = li; k < P.K; k += 256u) { Y_st(base + k, (WT_ld(base + k) - mean) * inv); }
}
