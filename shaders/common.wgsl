// Shared by every kernel (appended after the generated bindings).

// erf for f32: Eigen/XLA's rational minimax approximation on [-4, 4]
// (max error ~1 ulp region of f32; erf(±4) == ±1 in f32).
fn erf_f32(x_in: f32) -> f32 {
  let x = clamp(x_in, -4.0, 4.0);
  let x2 = x * x;
  var p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08;
  p = x2 * p + -2.10102402082508e-06;
  p = x2 * p + -5.69250639462346e-05;
  p = x2 * p + -7.34990630326855e-04;
  p = x2 * p + -2.95459980854025e-03;
  p = x2 * p + -1.60960333262415e-02;
  p = x * p;
  var q = x2 * -1.45660718464996e-05 + -2.13374055278905e-04;
  q = x2 * q + -1.68282697438203e-03;
  q = x2 * q + -7.37332916720468e-03;
  q = x2 * q + -1.42647390514189e-02;
  return p / q;
}

fn sigmoid_f32(x: f32) -> f32 {
  // exp(-x) overflows to +inf for x < -88: 1/(1+inf) = 0, the right limit.
  return 1.0 / (1.0 + exp(-x));
}

fn tanh_f32(x: f32) -> f32 {
  // WGSL's tanh may compute (e^2x-1)/(e^2x+1) and give NaN for large |x|.
  let c = clamp(x, -15.0, 15.0);
  let e = exp(2.0 * c);
  return (e - 1.0) / (e + 1.0);
}

// Activation codes shared by epilogues: 0 none, 1 silu, 2 gelu (erf), 3 gelu (tanh), 4 quick_gelu, 5 relu.
fn activate(x: f32, act: u32) -> f32 {
  switch act {
    case 1u: { return x * sigmoid_f32(x); }
    case 2u: { return 0.5 * x * (1.0 + erf_f32(x * 0.7071067811865476)); }
    case 3u: { return 0.5 * x * (1.0 + tanh_f32(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
    case 4u: { return x * sigmoid_f32(1.702 * x); }
    case 5u: { return max(x, 0.0); }
    default: { return x; }
  }
}

// One k step of a thread's 4×4 block of outputs: acc[4 i + j] += a[i] · b[j]
// (the 64×64-tile kernels: matmul's and conv2d's `tiled`, attention's
// `scores` and `pv`).
fn fma4x4(acc: ptr<function, array<f32, 16>>, a: vec4<f32>, b: vec4<f32>) {
  for (var i = 0u; i < 4u; i++) {
    (*acc)[i * 4u] = fma(a[i], b.x, (*acc)[i * 4u]);
    (*acc)[i * 4u + 1u] = fma(a[i], b.y, (*acc)[i * 4u + 1u]);
    (*acc)[i * 4u + 2u] = fma(a[i], b.z, (*acc)[i * 4u + 2u]);
    (*acc)[i * 4u + 3u] = fma(a[i], b.w, (*acc)[i * 4u + 3u]);
  }
}
