//! The op's results against an independent reference: a direct convolution in f64 on the host.
//!
//! On a machine without tensor cores every pass of the op falls back to burn's kernels (see
//! [`crate::kernels`]), so only a GPU run can show that cubek's implicit-GEMM kernels, as this
//! crate lays out their operands, compute the convolution. [`check`] runs one case through the
//! tracked op (value, and the input, weight and bias gradients of `Σ conv(x)·r`) and compares
//! each with the same quantities computed here in f64 from the same host values, independent of
//! burn, cubecl and the device. The prepared GPU run (`scripts/gpu_check.sh`) runs it on the paper
//! networks' layer shapes before it times anything; the crate's tests run it on wgpu.

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::{conv2d_same_tracked, launch_counts, ConvPrecision, Gemm, GemmConvBackend};

/// One convolution to check: stride 1, "same" padding, odd square kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvCase {
    /// N.
    pub batch: usize,
    /// C_in.
    pub c_in: usize,
    /// C_out.
    pub c_out: usize,
    /// H = W.
    pub size: usize,
    /// k (odd).
    pub kernel: usize,
    /// Whether the convolution adds a bias.
    pub bias: bool,
}

impl ConvCase {
    /// `[N, C_in, C_out, size, k]` with or without a bias.
    pub const fn new([batch, c_in, c_out, size, kernel]: [usize; 5], bias: bool) -> Self {
        Self {
            batch,
            c_in,
            c_out,
            size,
            kernel,
            bias,
        }
    }

    /// Multiply-adds of one pass.
    pub fn macs(&self) -> usize {
        self.batch * self.c_in * self.c_out * self.size * self.size * self.kernel * self.kernel
    }
}

/// The layer shapes of the paper networks (`preset = "paper"`, 512 feature maps up to 32x32,
/// halving above) at small batches: every 3x3 width and resolution band, the 1x1 from-RGB and
/// to-RGB layers (3 channels, far from any tile size), and an odd-sized case.
pub const PAPER_CASES: [ConvCase; 8] = [
    ConvCase::new([4, 512, 512, 4, 3], true),
    ConvCase::new([2, 512, 512, 16, 3], true),
    ConvCase::new([2, 512, 256, 32, 3], true),
    ConvCase::new([1, 256, 128, 64, 3], true),
    ConvCase::new([1, 64, 32, 128, 3], true),
    ConvCase::new([4, 3, 512, 8, 1], true),
    ConvCase::new([4, 256, 3, 16, 1], true),
    ConvCase::new([3, 5, 7, 7, 3], false),
];

/// Small cases for a software rasteriser: odd sizes and channel counts, a 1x1 kernel without
/// bias.
pub const SMALL_CASES: [ConvCase; 2] = [
    ConvCase::new([2, 3, 5, 7, 3], true),
    ConvCase::new([3, 4, 2, 4, 1], false),
];

/// The equalized learning rate's scale in the checks: not 1, so a dropped or doubled scale shows.
pub const SCALE: f32 = 0.37;

/// How far the op's results are from the reference, per quantity: `value`, `dx`, `dw`, `db`
/// (`db` is `None` without a bias).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Errors {
    /// ‖ours − reference‖₂ / ‖reference‖₂.
    pub relative_rms: [Option<f64>; 4],
    /// max |ours − reference| / max |reference|.
    pub relative_max: [Option<f64>; 4],
}

/// One case's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Parity {
    /// The convolution.
    pub case: ConvCase,
    /// The kernels asked for.
    pub gemm: Gemm,
    /// The distances to the reference.
    pub errors: Errors,
    /// Passes that ran cubek's implicit GEMM (0 on a device without tensor cores).
    pub gemm_passes: u64,
    /// Passes that ran burn's fallback.
    pub fallback_passes: u64,
}

/// The names of the four quantities, in [`Errors`]' order.
pub const QUANTITIES: [&str; 4] = ["value", "dx", "dw", "db"];

impl Parity {
    /// The largest relative RMS error a correct result may have: TF32 tensor cores round f32
    /// operands to 10 mantissa bits (a relative RMS error near 5e-4), bf16 to 7 bits (near
    /// 3e-3); a wrong layout, a lost scale or an unzeroed output is off by 0.1 and more.
    pub fn rms_tolerance(&self) -> f64 {
        match self.gemm.precision {
            ConvPrecision::F32 => 5e-3,
            ConvPrecision::Bf16 => 2e-2,
        }
    }

    /// The largest error of a single element, relative to the reference's largest magnitude.
    pub fn max_tolerance(&self) -> f64 {
        4.0 * self.rms_tolerance()
    }

    /// The worst relative RMS error over the quantities.
    pub fn worst_rms(&self) -> f64 {
        self.errors
            .relative_rms
            .iter()
            .flatten()
            .fold(0.0, |m: f64, &e| m.max(e))
    }

    /// The worst relative max error over the quantities.
    pub fn worst_max(&self) -> f64 {
        self.errors
            .relative_max
            .iter()
            .flatten()
            .fold(0.0, |m: f64, &e| m.max(e))
    }

    /// Every quantity within both tolerances (a NaN is not).
    pub fn ok(&self) -> bool {
        let within = |errors: &[Option<f64>; 4], tolerance: f64| {
            errors.iter().flatten().all(|&e| e <= tolerance)
        };
        within(&self.errors.relative_rms, self.rms_tolerance())
            && within(&self.errors.relative_max, self.max_tolerance())
    }
}

/// Deterministic values in [-1, 1) (splitmix64): the same on the host and on every device.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The case's inputs on the host: x `[N, C_in, H, W]`, weight `[C_out, C_in, k, k]`, bias
/// `[C_out]` and the output weights r `[N, C_out, H, W]` of the scalar `Σ conv(x)·r`.
struct Inputs {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    r: Vec<f32>,
}

impl Inputs {
    fn new(c: &ConvCase) -> Self {
        let pixels = c.size * c.size;
        Self {
            x: values(c.batch * c.c_in * pixels, 1),
            w: values(c.c_out * c.c_in * c.kernel * c.kernel, 2),
            b: values(c.c_out, 3),
            r: values(c.batch * c.c_out * pixels, 4),
        }
    }
}

/// value, dx, dw, db of `Σ conv(x, w·scale + b)·r` by direct summation in f64.
fn reference(c: &ConvCase, inputs: &Inputs, scale: f64) -> [Vec<f64>; 4] {
    let ConvCase {
        batch,
        c_in,
        c_out,
        size,
        kernel: k,
        bias,
    } = *c;
    let half = (k / 2) as isize;
    let px = size * size;
    let x = |n: usize, ci: usize, i: usize, j: usize| inputs.x[(n * c_in + ci) * px + i * size + j];
    let w = |o: usize, ci: usize, p: usize, q: usize| inputs.w[((o * c_in + ci) * k + p) * k + q];
    let r = |n: usize, o: usize, i: usize, j: usize| inputs.r[(n * c_out + o) * px + i * size + j];
    // The input pixel that tap (p, q) of output pixel (i, j) reads, if inside the image.
    let tap = |i: usize, p: usize| {
        let s = i as isize + p as isize - half;
        (0..size as isize).contains(&s).then_some(s as usize)
    };
    // One output channel at a time: its values and its weights' gradients.
    let per_out: Vec<(Vec<f64>, Vec<f64>)> = (0..c_out)
        .into_par_iter()
        .map(|o| {
            let mut y = vec![0f64; batch * px];
            let mut dw = vec![0f64; c_in * k * k];
            for n in 0..batch {
                for i in 0..size {
                    for j in 0..size {
                        let mut acc = if bias { inputs.b[o] as f64 } else { 0.0 };
                        let ro = r(n, o, i, j) as f64;
                        for ci in 0..c_in {
                            for p in 0..k {
                                let Some(si) = tap(i, p) else { continue };
                                for q in 0..k {
                                    let Some(sj) = tap(j, q) else { continue };
                                    let xv = x(n, ci, si, sj) as f64;
                                    acc += scale * w(o, ci, p, q) as f64 * xv;
                                    dw[(ci * k + p) * k + q] += scale * ro * xv;
                                }
                            }
                        }
                        y[n * px + i * size + j] = acc;
                    }
                }
            }
            (y, dw)
        })
        .collect();
    // One input channel at a time: its gradient.
    let per_in: Vec<Vec<f64>> = (0..c_in)
        .into_par_iter()
        .map(|ci| {
            let mut dx = vec![0f64; batch * px];
            for n in 0..batch {
                for o in 0..c_out {
                    for i in 0..size {
                        for j in 0..size {
                            let ro = r(n, o, i, j) as f64;
                            for p in 0..k {
                                let Some(si) = tap(i, p) else { continue };
                                for q in 0..k {
                                    let Some(sj) = tap(j, q) else { continue };
                                    dx[n * px + si * size + sj] +=
                                        scale * w(o, ci, p, q) as f64 * ro;
                                }
                            }
                        }
                    }
                }
            }
            dx
        })
        .collect();
    // Back to the tensors' layouts.
    let mut value = vec![0f64; batch * c_out * px];
    let mut dw = Vec::with_capacity(c_out * c_in * k * k);
    for (o, (y, dw_o)) in per_out.into_iter().enumerate() {
        for n in 0..batch {
            value[(n * c_out + o) * px..][..px].copy_from_slice(&y[n * px..][..px]);
        }
        dw.extend(dw_o);
    }
    let mut dx = vec![0f64; batch * c_in * px];
    for (ci, d) in per_in.into_iter().enumerate() {
        for n in 0..batch {
            dx[(n * c_in + ci) * px..][..px].copy_from_slice(&d[n * px..][..px]);
        }
    }
    let db = if bias {
        (0..c_out)
            .map(|o| {
                (0..batch)
                    .flat_map(|n| (0..px).map(move |p| (n, p)))
                    .map(|(n, p)| inputs.r[(n * c_out + o) * px + p] as f64)
                    .sum()
            })
            .collect()
    } else {
        Vec::new()
    };
    [value, dx, dw, db]
}

/// (relative RMS, relative max) distance of `got` from `expected`; NaN when `got` is not
/// finite or has the wrong length.
fn distance(got: &[f32], expected: &[f64]) -> (f64, f64) {
    if got.len() != expected.len() || got.iter().any(|v| !v.is_finite()) {
        return (f64::NAN, f64::NAN);
    }
    let (mut diff2, mut ref2, mut diff_max, mut ref_max) = (0f64, 0f64, 0f64, 0f64);
    for (&g, &e) in got.iter().zip(expected) {
        let d = (g as f64 - e).abs();
        diff2 += d * d;
        ref2 += e * e;
        diff_max = diff_max.max(d);
        ref_max = ref_max.max(e.abs());
    }
    let floor = f64::MIN_POSITIVE;
    (
        (diff2 / ref2.max(floor)).sqrt(),
        diff_max / ref_max.max(floor),
    )
}

fn to_vec<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// Runs `case` through [`conv2d_same_tracked`] with `gemm` on `device` and compares the value
/// and the three gradients with the f64 reference.
pub fn check<B: GemmConvBackend>(device: &B::Device, case: ConvCase, gemm: Gemm) -> Parity {
    check_against::<B>(device, &Reference::new(case), gemm)
}

/// A case's inputs and its f64 results, computed once for every kernel checked against them.
pub struct Reference {
    case: ConvCase,
    inputs: Inputs,
    expected: [Vec<f64>; 4],
}

impl Reference {
    /// Computes `case`'s value and gradients on the host.
    pub fn new(case: ConvCase) -> Self {
        let inputs = Inputs::new(&case);
        let expected = reference(&case, &inputs, SCALE as f64);
        Reference {
            case,
            inputs,
            expected,
        }
    }

    /// The case.
    pub fn case(&self) -> ConvCase {
        self.case
    }
}

/// [`check`] against a reference computed before.
pub fn check_against<B: GemmConvBackend>(
    device: &B::Device,
    reference: &Reference,
    gemm: Gemm,
) -> Parity {
    check_with_op_scale::<B>(device, reference, gemm, SCALE)
}

/// [`check`] with the op given `op_scale` while the reference keeps [`SCALE`]: the tests' proof
/// that a wrong result fails the check.
pub(crate) fn check_with_op_scale<B: GemmConvBackend>(
    device: &B::Device,
    reference: &Reference,
    gemm: Gemm,
    op_scale: f32,
) -> Parity {
    let (case, inputs) = (reference.case, &reference.inputs);
    let ConvCase {
        batch: n,
        c_in,
        c_out,
        size,
        kernel: k,
        bias,
    } = case;
    let tensor = |v: &[f32], shape: Vec<usize>| TensorData::new(v.to_vec(), shape);
    let x =
        Tensor::<Autodiff<B>, 4>::from_data(tensor(&inputs.x, vec![n, c_in, size, size]), device)
            .require_grad();
    let w = Tensor::<Autodiff<B>, 4>::from_data(tensor(&inputs.w, vec![c_out, c_in, k, k]), device)
        .require_grad();
    let b =
        Tensor::<Autodiff<B>, 1>::from_data(tensor(&inputs.b, vec![c_out]), device).require_grad();
    let r =
        Tensor::<Autodiff<B>, 4>::from_data(tensor(&inputs.r, vec![n, c_out, size, size]), device);

    let before = launch_counts();
    let y = conv2d_same_tracked(
        x.clone(),
        w.clone(),
        op_scale,
        bias.then(|| b.clone()),
        gemm,
    );
    let value = to_vec(y.clone().inner());
    let grads = (y * r).sum().backward();
    let got = [
        Some(value),
        x.grad(&grads).map(to_vec),
        w.grad(&grads).map(to_vec),
        if bias {
            b.grad(&grads).map(to_vec)
        } else {
            None
        },
    ];
    let after = launch_counts();

    let expected = &reference.expected;
    let mut errors = Errors {
        relative_rms: [None; 4],
        relative_max: [None; 4],
    };
    for (q, (got, expected)) in got.iter().zip(expected.iter()).enumerate() {
        if q == 3 && !bias {
            continue;
        }
        // A gradient the op failed to register is as wrong as a wrong one.
        let (rms, max) = match got {
            Some(got) => distance(got, expected),
            None => (f64::NAN, f64::NAN),
        };
        errors.relative_rms[q] = Some(rms);
        errors.relative_max[q] = Some(max);
    }
    Parity {
        case,
        gemm,
        errors,
        gemm_passes: after.gemm - before.gemm,
        fallback_passes: after.fallback - before.fallback,
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    /// The reference against hand-computed sums on a 1-channel 3x3 image with a 3x3 kernel.
    #[test]
    fn the_reference_matches_hand_sums() {
        let case = ConvCase::new([1, 1, 1, 3, 3], true);
        let inputs = Inputs {
            x: (1..=9).map(|v| v as f32).collect(),
            w: vec![0., 0., 0., 0., 1., 1., 0., 0., 0.], // y(i, j) = x(i, j) + x(i, j + 1)
            b: vec![0.5],
            r: vec![1., 0., 0., 0., 0., 0., 0., 0., 2.],
        };
        let [value, dx, dw, db] = reference(&case, &inputs, 2.0);
        // y = 2·(x(i,j) + x(i,j+1)) + 0.5, zero beyond the right edge.
        assert_eq!(
            value,
            vec![6.5, 10.5, 6.5, 18.5, 22.5, 12.5, 30.5, 34.5, 18.5]
        );
        // dL/dx = 2·(r(i,j) + r(i,j−1)).
        assert_eq!(dx, vec![2., 2., 0., 0., 0., 0., 0., 0., 4.]);
        // dL/dw(p,q) = 2·Σ r(i,j)·x(i+p−1, j+q−1): r is 1 at (0,0) and 2 at (2,2).
        assert_eq!(dw, vec![20., 24., 0., 32., 38., 4., 0., 8., 10.]);
        assert_eq!(db, vec![3.0]);
    }

    #[test]
    fn distances_are_relative_and_nan_for_non_finite_results() {
        assert_eq!(distance(&[1.0, 2.0], &[1.0, 2.0]), (0.0, 0.0));
        let (rms, max) = distance(&[2.0, 0.0], &[1.0, 0.0]);
        assert_eq!((rms, max), (1.0, 1.0));
        assert!(distance(&[f32::NAN, 0.0], &[1.0, 0.0]).0.is_nan());
        assert!(distance(&[1.0], &[1.0, 0.0]).0.is_nan());
    }
}
