//! The op against burn's own `conv2d` on `weight · scale`, on wgpu (Mesa's lavapipe in CI), with
//! and without burn's fusion: the value, the input, weight and bias gradients.
//!
//! lavapipe has no tensor cores (and wgpu's WGSL compiler no cooperative matrices), so there
//! cubek refuses the implicit-GEMM kernels and every pass takes the counted fallback: these
//! tests then check the op's plumbing (autodiff wiring, the fusion custom operations, the
//! channels-last views, the scale folded into the operand copies, the bias sum), and on a GPU
//! with tensor cores the kernels themselves.

use burn::backend::Autodiff;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use crate::{conv2d_same, conv2d_same_tracked, launch_counts, Gemm, GemmConvBackend};
use crate::{GemmAlgorithm, TileKind, WgpuFused, WgpuPlain};

/// A weight scale that is not 1 (the equalized learning rate's), so dropping it fails.
const SCALE: f32 = 0.37;

use crate::testing::wgpu_device as device;

/// Deterministic values in [-1, 1) (splitmix64), so the tests do not race on a backend RNG.
fn values(n: usize, seed: u64) -> Vec<f32> {
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

fn tensor<B: burn::tensor::backend::Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed), shape), device)
}

fn to_vec<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn assert_close(got: &[f32], expected: &[f32], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(expected).enumerate() {
        // tf32 tensor cores (on a GPU) round the operands to 10 mantissa bits.
        assert!(
            (a - b).abs() <= 2e-3 * scale,
            "{what}[{i}]: {a} vs {b} (max |value| {scale})"
        );
    }
}

/// (value, dx, dw, db) of `Σ conv(x)·r` through the op and through burn's conv2d on w·scale.
fn both_ways<B: GemmConvBackend>(
    device: &B::Device,
    [n, c_in, c_out, size, k]: [usize; 5],
    bias: bool,
    gemm: Gemm,
) -> [(Vec<f32>, Vec<f32>); 4] {
    let x = tensor::<Autodiff<B>, 4>([n, c_in, size, size], 1, device);
    let w = tensor::<Autodiff<B>, 4>([c_out, c_in, k, k], 2, device);
    let b = tensor::<Autodiff<B>, 1>([c_out], 3, device);
    let r = tensor::<Autodiff<B>, 4>([n, c_out, size, size], 4, device);
    let run = |ours: bool| {
        let (x, w, b) = (
            x.clone().require_grad(),
            w.clone().require_grad(),
            b.clone().require_grad(),
        );
        let bias_arg = bias.then(|| b.clone());
        let y = if ours {
            conv2d_same_tracked(x.clone(), w.clone(), SCALE, bias_arg, gemm)
        } else {
            conv2d(
                x.clone(),
                w.clone().mul_scalar(SCALE),
                bias_arg,
                ConvOptions::new([1, 1], [k / 2; 2], [1, 1], 1),
            )
        };
        let value = to_vec(y.clone().inner());
        let grads = (y * r.clone()).sum().backward();
        let db = if bias {
            to_vec(b.grad(&grads).unwrap())
        } else {
            vec![]
        };
        [
            value,
            to_vec(x.grad(&grads).unwrap()),
            to_vec(w.grad(&grads).unwrap()),
            db,
        ]
    };
    let [a0, a1, a2, a3] = run(true);
    let [b0, b1, b2, b3] = run(false);
    [(a0, b0), (a1, b1), (a2, b2), (a3, b3)]
}

fn check_backend<B: GemmConvBackend>(
    device: &B::Device,
    label: &str,
    gemm: Gemm,
    shapes: &[([usize; 5], bool)],
) {
    for &(shape, bias) in shapes {
        let before = launch_counts();
        let results = both_ways::<B>(device, shape, bias, gemm);
        for (which, (ours, reference)) in ["value", "dx", "dw", "db"].iter().zip(&results) {
            assert_close(ours, reference, &format!("{label} {shape:?} {which}"));
        }
        let after = launch_counts();
        let passes = (after.gemm + after.fallback) - (before.gemm + before.fallback);
        assert!(
            passes >= 3,
            "{label} {shape:?}: forward and both gradients must go through the op ({passes})"
        );
    }
}

#[test]
fn op_matches_burns_conv2d_with_and_without_fusion() {
    let Some(device) = device() else { return };
    // [N, C_in, C_out, size, k]: odd sizes and channel counts, a 1x1 kernel without bias. Few
    // shapes: each one's fallback is autotuned, which takes seconds on a software rasteriser.
    let shapes = [([2, 3, 5, 7, 3], true), ([3, 4, 2, 4, 1], false)];
    check_backend::<WgpuFused>(&device, "fused", Gemm::default(), &shapes);
    check_backend::<WgpuPlain>(&device, "plain", Gemm::default(), &shapes[..1]);
    // Another algorithm and tile kind (what the GPU benchmark compares).
    let other = Gemm {
        algorithm: GemmAlgorithm::SimpleSyncStrided,
        tile: TileKind::Mma,
        precision: crate::ConvPrecision::F32,
    };
    check_backend::<WgpuFused>(&device, "fused mma", other, &shapes[..1]);
    let counts = launch_counts();
    eprintln!(
        "implicit-GEMM passes: {}, fallback passes: {}; refused: {:#?}",
        counts.gemm,
        counts.fallback,
        crate::fallback_reasons()
    );
    if counts.fallback > 0 {
        assert!(
            !crate::fallback_reasons().is_empty(),
            "a fallback must say why cubek refused the kernels"
        );
    }
}

#[test]
fn untracked_forward_matches_burns_conv2d() {
    let Some(device) = device() else { return };
    let x = tensor::<WgpuFused, 4>([2, 3, 7, 7], 7, &device);
    let w = tensor::<WgpuFused, 4>([5, 3, 3, 3], 8, &device);
    let b = tensor::<WgpuFused, 1>([5], 9, &device);
    let reference = conv2d(
        x.clone(),
        w.clone().mul_scalar(SCALE),
        Some(b.clone()),
        ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    );
    let ours = conv2d_same(x, w.clone(), SCALE, Some(b), Gemm::default());
    assert_close(&to_vec(ours), &to_vec(reference), "untracked value");
    // The parameter itself is left unscaled (the scale is applied in a copy).
    assert_eq!(to_vec(w), values(5 * 3 * 9, 8));
}
