//! The op against the f64 reference of [`crate::parity`] on wgpu (Mesa's lavapipe in CI), with
//! and without burn's fusion: the value, the input, weight and bias gradients; its untracked
//! forward against burn's own `conv2d` on `weight · scale`.
//!
//! lavapipe has no tensor cores (and wgpu's WGSL compiler no cooperative matrices), so there
//! cubek refuses the implicit-GEMM kernels and every pass takes the counted fallback: these
//! tests then check the op's plumbing (autodiff wiring, the fusion custom operations, the
//! channels-last views, the scale folded into the operand copies, the bias sum), and on a GPU
//! with tensor cores the kernels themselves.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use crate::parity::{self, ConvCase, SCALE, SMALL_CASES};
use crate::{conv2d_same, launch_counts, Gemm, GemmConvBackend};
use crate::{GemmAlgorithm, TileKind, WgpuFused, WgpuPlain};

use crate::testing::wgpu_device as device;

fn tensor<B: burn::tensor::backend::Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(parity::values(n, seed), shape), device)
}

fn to_vec<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Each case through the op on `B`: within the parity tolerances of the f64 reference, and all
/// three passes through the op (as the implicit GEMM or its counted fallback).
fn check_backend<B: GemmConvBackend>(
    device: &B::Device,
    label: &str,
    gemm: Gemm,
    cases: &[ConvCase],
) {
    for &case in cases {
        let result = parity::check::<B>(device, case, gemm);
        assert!(
            result.ok(),
            "{label} {case:?}: {:?} beyond the tolerances ({} rms, {} max)",
            result.errors,
            result.rms_tolerance(),
            result.max_tolerance()
        );
        let passes = result.gemm_passes + result.fallback_passes;
        assert!(
            passes >= 3,
            "{label} {case:?}: forward and both gradients must go through the op ({passes})"
        );
    }
}

#[test]
fn op_matches_the_f64_reference_with_and_without_fusion() {
    let Some(device) = device() else { return };
    // Few cases: each one's fallback is autotuned, which takes seconds on a software rasteriser.
    check_backend::<WgpuFused>(&device, "fused", Gemm::default(), &SMALL_CASES);
    check_backend::<WgpuPlain>(&device, "plain", Gemm::default(), &SMALL_CASES[..1]);
    // Another algorithm and tile kind (what the GPU benchmark compares).
    let other = Gemm {
        algorithm: GemmAlgorithm::SimpleSyncStrided,
        tile: TileKind::Mma,
        precision: crate::ConvPrecision::F32,
    };
    check_backend::<WgpuFused>(&device, "fused mma", other, &SMALL_CASES[..1]);
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

/// The parity check itself fails on a wrong result: a scale applied twice.
#[test]
fn parity_flags_a_wrong_scale() {
    let Some(device) = device() else { return };
    let case = SMALL_CASES[0];
    let right = parity::check::<WgpuFused>(&device, case, Gemm::default());
    assert!(right.ok(), "{:?}", right.errors);
    let wrong = parity::check_with_op_scale::<WgpuFused>(
        &device,
        &parity::Reference::new(case),
        Gemm::default(),
        SCALE * SCALE,
    );
    assert!(!wrong.ok(), "a doubled scale passed: {:?}", wrong.errors);
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
    let (ours, reference) = (to_vec(ours), to_vec(reference));
    let scale = reference.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert!(
            (a - b).abs() <= 2e-3 * scale,
            "untracked value[{i}]: {a} vs {b}"
        );
    }
    // The parameter itself is left unscaled (the scale is applied in a copy).
    assert_eq!(to_vec(w), parity::values(5 * 3 * 9, 8));
}
