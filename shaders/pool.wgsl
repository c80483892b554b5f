// Max pooling over NCHW planes, one thread per output (the window is small:
// no reduction worth tiling). Positions outside the input are padding: skipped
// when PAD_INF (PyTorch's implicit -inf, TF's SAME), else they hold
// P.padValue (an explicit constant pad before the pool, as BiT's DynamicPad2d).
// The input and output may be bound as sub-ranges starting at element
// xBase / yBase (large tensors are split into plane runs or row bands).

override ACT: u32 = 0u;
override PAD_INF: bool = true;

//! kernel max_pool
@compute @workgroup_size(256)
fn max_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 256u + li;
  if (t >= P.n) { return; }
  let band = P.nr * P.Wo;
  let plane = P.p0 + t / band;
  let rem = t % band;
  let oy = P.r0 + rem / P.Wo;
  let ox = rem % P.Wo;
  let y0 = i32(oy * P.s) - i32(P.padT);
  let x0 = i32(ox * P.s) - i32(P.padL);
  let xPlane = plane * P.Hin * P.Win;
  // The first value seeds the max (no -inf literal in WGSL; inputs may hold -inf).
  var m = 0.0;
  var seen = false;
  for (var ky = 0u; ky < P.k; ky++) {
    let iy = y0 + i32(ky);
    for (var kx = 0u; kx < P.k; kx++) {
      let ix = x0 + i32(kx);
      if (iy >= 0 && iy < i32(P.Hin) && ix >= 0 && ix < i32(P.Win)) {
        let v = X_ld(xPlane + u32(iy) * P.Win + u32(ix) - P.xBase);
        m = select(v, max(m, v), seen);
        seen = true;
      } else if (!PAD_INF) {
        m = select(P.padValue, max(m, P.padValue), seen);
        seen = true;
      }
    }
  }
  Y_st(plane * P.Ho * P.Wo + oy * P.Wo + ox - P.yBase, activate(m, ACT));
}
