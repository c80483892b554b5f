// Data-movement kernels: strided copy (slice, permute, concat, pad, chunk),
// fill, dtype cast, embedding gather, sinusoidal timestep embedding.
//
// Copies move raw bits: every tensor is bound as array<u32>. 32-bit dtypes
// move one element per thread. 16-bit dtypes (f16) move one destination u32
// word (two halves) per thread, so no two threads of a dispatch ever write the
// same word; a word only partly inside the copied region is read-modified-
// written, which is safe because its other half belongs to an earlier
// dispatch (concat inputs, the pad border) or to nobody. This works the same
// with and without shader-f16, so packed-f16 devices can copy f16 tensors.
//
// Copy geometry. A copy walks a "region" of `rows * l` elements, flat index q:
//   source   element = srcOff + sum_k i_k * s_k, (i_0..i_5) = q in row-major
//                      order over dims (d0, d1..d5)  [d0 is implicit]
//   dest     element = dstOff + (row / rh) * ps + (row % rh) * s + col,
//                      row = q / l, col = q % l
// Everything is computed in u32 modulo 2^32 and the element index of the
// binding's first byte (srcBind / dstBind) is subtracted at the end, so
// tensors larger than the binding limit are copied piece by piece with each
// piece bound as an aligned sub-range.

// sin and cos of an f32 argument, accurate for |x| up to ~8000 whatever the
// driver's built-ins do (WGSL only bounds sin/cos error inside [-pi, pi]).
// Cody–Waite reduction by pi/2 with a 3-part constant whose first two parts
// have few bits (k * part is exact), then Cephes' sinf/cosf polynomials.
fn sincos_f32(x: f32) -> vec2<f32> {
  let k = round(x * 0.636619772367581343);
  var r = x - k * 1.5703125;
  r = r - k * 4.837512969970703125e-4;
  r = r - k * 7.54978995489188216e-8;
  let z = r * r;
  let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
  let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
  let q = u32(i32(k) & 3);
  switch q {
    case 1u: { return vec2<f32>(c, -s); }
    case 2u: { return vec2<f32>(-s, -c); }
    case 3u: { return vec2<f32>(-c, s); }
    default: { return vec2<f32>(s, c); }
  }
}

//! kernel copy
override ES16: u32 = 0u; // 1: 16-bit elements (two per u32 word)

override ND: u32 = 6u;   // dims of the region actually used (the last ND of 6): unused divisions compile away

fn src_of(q: u32) -> u32 {
  var r = q;
  var o = P.srcOff - P.srcBind;
  if (ND > 1u) { o += (r % P.d5) * P.s5; r = r / P.d5; }
  if (ND > 2u) { o += (r % P.d4) * P.s4; r = r / P.d4; }
  if (ND > 3u) { o += (r % P.d3) * P.s3; r = r / P.d3; }
  if (ND > 4u) { o += (r % P.d2) * P.s2; r = r / P.d2; }
  if (ND > 5u) { o += (r % P.d1) * P.s1; r = r / P.d1; }
  // the outermost used dim takes what is left of q
  switch ND {
    case 1u: { o += r * P.s5; }
    case 2u: { o += r * P.s4; }
    case 3u: { o += r * P.s3; }
    case 4u: { o += r * P.s2; }
    case 5u: { o += r * P.s1; }
    default: { o += r * P.s0; }
  }
  return o;
}

fn dst_row(row: u32) -> u32 {
  return P.dstOff + (row / P.rh) * P.ps + (row % P.rh) * P.s - P.dstBind;
}

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 256u + li;
  if (t >= P.n) { return; }
  if (ES16 == 0u) {
    // 32-bit: thread t copies region element q0 + t
    let q = P.q0 + t;
    Y[dst_row(q / P.l) + q % P.l] = X[src_of(q)];
    return;
  }
  // 16-bit: thread t writes word j of row `row`, columns [c0, c1) of that row
  let row = P.ra + t / P.wpr;
  let j = t % P.wpr;
  let rs = dst_row(row);
  let w = (rs + P.c0) / 2u + j;
  var word = 0u;
  var mask = 0u;
  for (var h = 0u; h < 2u; h++) {
    let col = 2u * w + h - rs; // wraps to a huge value left of the row: rejected below
    if (col >= P.c0 && col < P.c1) {
      let se = src_of(row * P.l + col);
      let v = (X[se >> 1u] >> ((se & 1u) * 16u)) & 0xffffu;
      word = word | (v << (h * 16u));
      mask = mask | (0xffffu << (h * 16u));
    }
  }
  if (mask == 0u) { return; }
  if (mask != 0xffffffffu) { word = word | (Y[w] & ~mask); }
  Y[w] = word;
}

//! kernel transpose4
// Batched transpose of 32-bit elements, Y[b][c][a] = X[b][a][c] with A and C
// multiples of 4 and both bound as vec4s: a thread moves a 4×4 tile (four
// vec4 loads from rows of X, four vec4 stores to rows of Y), where the
// general copy pays index arithmetic and a gather per element (~8× slower on
// CPU drivers, where linears on the conv kernel transpose twice).
@compute @workgroup_size(64)
fn transpose4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 64u + li;
  let c4n = P.C / 4u;
  let a4n = P.A / 4u;
  if (t >= P.B * a4n * c4n) { return; }
  let c4 = t % c4n;               // adjacent lanes read adjacent vec4s of a row
  let a4 = (t / c4n) % a4n;
  let b = t / (c4n * a4n);
  let xs = ((b * P.A + 4u * a4) * P.C + 4u * c4) / 4u;   // vec4 index of X[b][4a4][4c4]
  let r0 = X_ldu4(xs);
  let r1 = X_ldu4(xs + c4n);
  let r2 = X_ldu4(xs + 2u * c4n);
  let r3 = X_ldu4(xs + 3u * c4n);
  let ys = ((b * P.C + 4u * c4) * P.A + 4u * a4) / 4u;   // vec4 index of Y[b][4c4][4a4]
  Y_stu4(ys, vec4<u32>(r0.x, r1.x, r2.x, r3.x));
  Y_stu4(ys + a4n, vec4<u32>(r0.y, r1.y, r2.y, r3.y));
  Y_stu4(ys + 2u * a4n, vec4<u32>(r0.z, r1.z, r2.z, r3.z));
  Y_stu4(ys + 3u * a4n, vec4<u32>(r0.w, r1.w, r2.w, r3.w));
}

//! kernel fill
// Y[i] = pattern for the n words of the bound range (16-bit values repeated twice in the pattern).
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 256u + li;
  if (t >= P.n) { return; }
  Y[t] = P.pattern;
}

//! kernel cast_float
// Y = X converted between float dtypes (f16 <-> f32), n elements of the bound ranges.
@compute @workgroup_size(256)
fn cast_float(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 256u + li;
  if (t >= P.n) { return; }
  Y_st(t, X_ld(t));
}

//! kernel gather
// Embedding lookup over output rows [rowa, rowa + n / d): Y[row] = T[I[row]]
// for ids inside [r0, r1), the table rows bound in this dispatch (a large
// table is bound in several row ranges, one dispatch each; tBind / yBind are
// the element indices of the bound ranges' first bytes). Ids >= v (or
// negative i32) give 0, written by the dispatch with zero == 1.
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 256u + li;
  if (t >= P.n) { return; }
  let row = t / P.d;
  let col = t % P.d;
  let id = I_ldu(P.rowa + row);
  let yi = (P.rowa + row) * P.d + col - P.yBind;
  if (id >= P.r0 && id < P.r1) {
    Y_st(yi, T_ld(id * P.d + col - P.tBind));
  } else if (P.zero == 1u && id >= P.v) {
    Y_st(yi, 0.0);
  }
}

//! kernel timestep_f
// Y[b, c] for c < 2*half: sin/cos(scale * (t[b] * F[c % half])), sin first
// unless flip; a last odd column is zero (diffusers' get_timestep_embedding).
// The products are rounded to f32 in torch's order; F is torch's f32 table.
@compute @workgroup_size(256)
fn timestep_f(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 256u + li;
  if (t >= P.n) { return; }
  let b = t / P.dim;
  let c = t % P.dim;
  if (c >= 2u * P.half) { Y_st(t, 0.0); return; }
  let arg = P.scale * (T_ld(b) * F_ld(c % P.half));
  let sc = sincos_f32(arg);
  let second = c >= P.half; // second half of the row
  Y_st(t, select(sc.x, sc.y, second != (P.flip == 1u)));
}

//! kernel timestep_i
override SIGNED: u32 = 1u;
@compute @workgroup_size(256)
fn timestep_i(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = linear_wg(wid, nwg) * 256u + li;
  if (t >= P.n) { return; }
  let b = t / P.dim;
  let c = t % P.dim;
  if (c >= 2u * P.half) { Y_st(t, 0.0); return; }
  let raw = T_ldu(b);
  let tv = select(f32(raw), f32(bitcast<i32>(raw)), SIGNED == 1u);
  let arg = P.scale * (tv * F_ld(c % P.half));
  let sc = sincos_f32(arg);
  let second = c >= P.half;
  Y_st(t, select(sc.x, sc.y, second != (P.flip == 1u)));
}
