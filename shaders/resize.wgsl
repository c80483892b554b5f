// Resizing NCHW planes as PyTorch's F.interpolate (antialias off), one thread
// per output. Source coordinates are computed in f32 as PyTorch's CPU kernels
// do (for nearest that decides which pixel is taken, so it must match bit for
// bit): scale = in/out, or 1/scale_factor when a factor was given, or
// (in-1)/(out-1) with align_corners.
//
// Thread t covers plane p0 + t / (nr·Wo), output row r0 + ..., so large
// tensors can be processed in plane runs or row bands; X and Y may be bound
// as sub-ranges starting at elements xBase / yBase.

override ALIGN_CORNERS: bool = false;

struct Pos { plane: u32, oy: u32, ox: u32, ok: bool }

fn out_pos(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> Pos {
  let t = linear_wg(wid, nwg) * 256u + li;
  let band = P.nr * P.Wo;
  let rem = t % band;
  return Pos(P.p0 + t / band, P.r0 + rem / P.Wo, rem % P.Wo, t < P.n);
}

fn ld(plane: u32, iy: i32, ix: i32) -> f32 {
  // Taps outside the input read the border pixel (upsample_get_value_bounded).
  let y = u32(clamp(iy, 0, i32(P.Hin) - 1));
  let x = u32(clamp(ix, 0, i32(P.Win) - 1));
  return X_ld((plane * P.Hin + y) * P.Win + x - P.xBase);
}

fn y_index(p: Pos) -> u32 {
  return (p.plane * P.Ho + p.oy) * P.Wo + p.ox - P.yBase;
}

// area_pixel_compute_source_index: linear modes clamp negative coordinates to 0, cubic does not.
fn src_coord(dst: u32, scale: f32, cubic: bool) -> f32 {
  if (ALIGN_CORNERS) { return scale * f32(dst); }
  let s = scale * (f32(dst) + 0.5) - 0.5;
  if (!cubic && s < 0.0) { return 0.0; }
  return s;
}

//! kernel nearest
@compute @workgroup_size(256)
fn nearest(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let p = out_pos(wid, nwg, li);
  if (!p.ok) { return; }
  let iy = min(u32(floor(f32(p.oy) * P.sy)), P.Hin - 1u);
  let ix = min(u32(floor(f32(p.ox) * P.sx)), P.Win - 1u);
  Y_st(y_index(p), X_ld((p.plane * P.Hin + iy) * P.Win + ix - P.xBase));
}

//! kernel bilinear
@compute @workgroup_size(256)
fn bilinear(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let p = out_pos(wid, nwg, li);
  if (!p.ok) { return; }
  let sy = src_coord(p.oy, P.sy, false);
  let sx = src_coord(p.ox, P.sx, false);
  let y0 = i32(floor(sy));
  let x0 = i32(floor(sx));
  let ly = sy - f32(y0);
  let lx = sx - f32(x0);
  // the second tap is the first one at the last row/column (PyTorch's h1p/w1p)
  let y1 = select(y0, y0 + 1, y0 < i32(P.Hin) - 1);
  let x1 = select(x0, x0 + 1, x0 < i32(P.Win) - 1);
  let top = (1.0 - lx) * ld(p.plane, y0, x0) + lx * ld(p.plane, y0, x1);
  let bot = (1.0 - lx) * ld(p.plane, y1, x0) + lx * ld(p.plane, y1, x1);
  Y_st(y_index(p), (1.0 - ly) * top + ly * bot);
}

//! kernel bicubic
// Keys' cubic convolution with A = -0.75 (PyTorch's choice), weights for the
// taps at floor(s) - 1 .. floor(s) + 2.
fn cubic_weights(t: f32) -> vec4<f32> {
  let A = -0.75;
  let x1 = t + 1.0;
  let x2 = 1.0 - t;
  let x3 = 2.0 - t;
  return vec4<f32>(
    ((A * x1 - 5.0 * A) * x1 + 8.0 * A) * x1 - 4.0 * A,
    ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0,
    ((A + 2.0) * x2 - (A + 3.0)) * x2 * x2 + 1.0,
    ((A * x3 - 5.0 * A) * x3 + 8.0 * A) * x3 - 4.0 * A);
}

@compute @workgroup_size(256)
fn bicubic(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let p = out_pos(wid, nwg, li);
  if (!p.ok) { return; }
  let sy = src_coord(p.oy, P.sy, true);
  let sx = src_coord(p.ox, P.sx, true);
  let fy = floor(sy);
  let fx = floor(sx);
  let wy = cubic_weights(sy - fy);
  let wx = cubic_weights(sx - fx);
  let y0 = i32(fy) - 1;
  let x0 = i32(fx) - 1;
  var v = 0.0;
  for (var i = 0; i < 4; i++) {
    let row = wx.x * ld(p.plane, y0 + i, x0) + wx.y * ld(p.plane, y0 + i, x0 + 1) +
      wx.z * ld(p.plane, y0 + i, x0 + 2) + wx.w * ld(p.plane, y0 + i, x0 + 3);
    v += wy[i] * row;
  }
  Y_st(y_index(p), v);
}
