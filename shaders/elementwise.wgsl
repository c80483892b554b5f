// Elementwise kernels. Binary ops broadcast through up to 4 collapsed dims:
// output index -> (i0, i1, i2, i3) -> each input's offset via its strides
// (stride 0 on a broadcast dim).
//
// Tensors larger than the binding limit are processed in pieces: a dispatch
// covers outputs [q0, q0 + n), its output binding starts at q0, and inputs
// indexed differently from the output are bound from element aBind / bBind /
// xBind on (subtracted from the global index).
//
// Each thread handles EW consecutive outputs: on the CPU drivers (lavapipe,
// SwiftShader) the cost per invocation, not per byte, dominates at one
// element per thread, and in a run the broadcast index is stepped rather
// than divided out per element (integer division is scalarised per SIMD lane).

override OP: u32 = 0u;   // binary: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min, 6 pow
override ACT: u32 = 0u;  // unary: activation code (common.wgsl), applied after y = x*alpha + beta
const EW = 8u;           // outputs per thread (EW_PER_THREAD in engine/ops/elementwise.ts)
const EWG = 256u;        // threads per workgroup

// First output of this thread's run.
fn run_start(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 { return (linear_wg(wid, nwg) * EWG + li) * EW; }

// torch.pow: WGSL's pow is undefined for a < 0 (and NaN for 0^0 where it is
// exp2(b * log2(a))); integer exponents of negative bases and b == 0 are
// handled explicitly, non-integer ones stay NaN as in torch.
fn pow_f32(a: f32, b: f32) -> f32 {
  if (b == 0.0) { return 1.0; }
  if (a >= 0.0 || fract(b) != 0.0) { return pow(a, b); }
  let m = pow(-a, b);
  return select(m, -m, fract(b * 0.5) != 0.0);
}

fn binop(a: f32, b: f32) -> f32 {
  switch OP {
    case 1u: { return a - b; }
    case 2u: { return a * b; }
    case 3u: { return a / b; }
    case 4u: { return max(a, b); }
    case 5u: { return min(a, b); }
    case 6u: { return pow_f32(a, b); }
    default: { return a + b; }
  }
}

//! kernel binary
@compute @workgroup_size(EWG)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t0 = run_start(wid, nwg, li);
  if (t0 >= P.n) { return; }
  let i = P.q0 + t0;
  var i3 = i % P.d3;
  let r2 = i / P.d3;
  var i2 = r2 % P.d2;
  let r1 = r2 / P.d2;
  var i1 = r1 % P.d1;
  var i0 = r1 / P.d1;
  let e = min(EW, P.n - t0);
  for (var j = 0u; j < EW; j++) {
    if (j < e) {
      let ia = i0 * P.a0 + i1 * P.a1 + i2 * P.a2 + i3 * P.a3 - P.aBind;
      let ib = i0 * P.b0 + i1 * P.b1 + i2 * P.b2 + i3 * P.b3 - P.bBind;
      Y_st(t0 + j, activate(binop(A_ld(ia), B_ld(ib)) * P.alpha, ACT));
      // next output index, carried through the collapsed dims
      i3 += 1u;
      if (i3 == P.d3) {
        i3 = 0u; i2 += 1u;
        if (i2 == P.d2) {
          i2 = 0u; i1 += 1u;
          if (i1 == P.d1) { i1 = 0u; i0 += 1u; }
        }
      }
    }
  }
}

//! kernel unary
// V4 (n a multiple of 4, X and Y stored as vec4s): EW/4 vec4s per thread.
override V4: bool = false;

fn unary1(x: f32) -> f32 {
  return clamp(activate(x * P.alpha + P.beta, ACT), P.lo, P.hi);
}

@compute @workgroup_size(EWG)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i0 = run_start(wid, nwg, li);
  if (i0 >= P.n) { return; }
  if (V4) {
    for (var j = 0u; j < EW / 4u; j++) {
      let i = i0 / 4u + j;
      if (4u * i < P.n) {
        let v = X_ld4(i);
        Y_st4(i, vec4<f32>(unary1(v.x), unary1(v.y), unary1(v.z), unary1(v.w)));
      }
    }
    return;
  }
  let e = min(EW, P.n - i0);
  for (var j = 0u; j < EW; j++) {
    if (j < e) {
      Y_st(i0 + j, unary1(X_ld(i0 + j)));
    }
  }
}

//! kernel lincomb
// y = c0*x0 + c1*x1 + c2*x2 + c3*x3 + c4 (scheduler steps, CFG, blends)
@compute @workgroup_size(EWG)
fn lincomb(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i0 = run_start(wid, nwg, li);
  if (i0 >= P.n) { return; }
  let e = min(EW, P.n - i0);
  for (var j = 0u; j < EW; j++) {
    if (j < e) {
      let i = i0 + j;
      var v = P.c4;
      if (P.k > 0u) { v = v + P.c0 * X0_ld(i); }
      if (P.k > 1u) { v = v + P.c1 * X1_ld(i); }
      if (P.k > 2u) { v = v + P.c2 * X2_ld(i); }
      if (P.k > 3u) { v = v + P.c3 * X3_ld(i); }
      Y_st(i, v);
    }
  }
}

//! kernel geglu
// GEGLU on the last dim: x = [..., 2H] -> hidden * gelu(gate), hidden = x[..., :H], gate = x[..., H:]
@compute @workgroup_size(EWG)
fn geglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t0 = run_start(wid, nwg, li);
  if (t0 >= P.n) { return; }
  let i = P.q0 + t0;
  var row = i / P.h;
  var c = i % P.h;
  let e = min(EW, P.n - t0);
  for (var j = 0u; j < EW; j++) {
    if (j < e) {
      let base = row * 2u * P.h - P.xBind;
      Y_st(t0 + j, X_ld(base + c) * activate(X_ld(base + P.h + c), ACT));
      c += 1u;
      if (c == P.h) { c = 0u; row += 1u; }
    }
  }
}
