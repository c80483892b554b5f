// Reductions (sum, min, max; mean = sum * post) over the middle axis of a
// view [O, R, I]: output m = o * I + i. Elements of the bound piece of X are
// at (o * R + r) * I + i - xBind.
//
// reduce_wg: one workgroup per (m, segment); a segment is up to SEG elements
// of r, strided over 256 threads, then a tree in workgroup memory. With
// several segments per row the results are f32 partials [O, G, I] that a
// further pass reduces the same way (the host loops until G == 1); keeping i
// innermost keeps the partials of a piece of X contiguous.
// reduce_col: one thread per (o, segment, i), looping over the segment; for
// many inner columns or short rows. Same partial layout.

override OP: u32 = 0u; // 0 sum, 1 min, 2 max

fn combine(a: f32, b: f32) -> f32 {
  switch OP {
    case 1u: { return min(a, b); }
    case 2u: { return max(a, b); }
    default: { return a + b; }
  }
}

//! kernel reduce_wg
var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn reduce_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let wg = linear_wg(wid, nwg);
  if (wg >= P.n) { return; } // uniform: the whole workgroup leaves together
  let s = P.sa + wg % P.gs;
  let rest = wg / P.gs;
  let i = rest % P.ii;
  let o = P.oa + rest / P.ii;
  let r0 = s * P.seg;
  let r1 = min(P.r, r0 + P.seg);
  var acc = P.init;
  for (var r = r0 + li; r < r1; r += 256u) {
    acc = combine(acc, X_ld((o * P.r + r) * P.ii + i - P.xBind));
  }
  part[li] = acc;
  workgroupBarrier();
  for (var h = 128u; h > 0u; h >>= 1u) {
    if (li < h) { part[li] = combine(part[li], part[li + h]); }
    workgroupBarrier();
  }
  if (li == 0u) {
    Y_st((o * P.g + s) * P.ii + i - P.yBind, part[0] * P.post);
  }
}

//! kernel reduce_col
// One thread per (o, segment, i): a sequential loop over the segment's r.
@compute @workgroup_size(256)
fn reduce_col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 256u + li;
  if (t >= P.n) { return; }
  let i = t % P.ii;
  let rest = t / P.ii;
  let s = P.sa + rest % P.gs;
  let o = P.oa + rest / P.gs;
  let r1 = min(P.r, s * P.seg + P.seg);
  var acc = P.init;
  for (var r = s * P.seg; r < r1; r++) {
    acc = combine(acc, X_ld((o * P.r + r) * P.ii + i - P.xBind));
  }
  Y_st((o * P.g + s) * P.ii + i - P.yBind, acc * P.post);
}
