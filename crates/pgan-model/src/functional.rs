//! Parameter-free layers and their forward-mode derivatives (JVPs).
//!
//! Every `*_jvp` function returns `(f(x), J_f(x)·dx)`. Linear maps
//! (resampling, lerp) apply themselves to the tangent; the nonlinear ones
//! spell out their derivative.

use burn::tensor::activation::leaky_relu as burn_leaky_relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::Tensor;

use crate::kernels;

/// Negative slope of every leaky ReLU in ProGAN (official code: `leaky_relu(x, 0.2)`).
pub const LRELU_SLOPE: f64 = 0.2;

/// Leaky ReLU with slope 0.2.
pub fn lrelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // One fused op where the backend has one (kernels.rs).
    match kernels::lrelu_gate(x.clone(), x, LRELU_SLOPE as f32) {
        Ok(y) => y,
        Err((x, copy)) => {
            // The second handle goes first, so burn's op may reuse `x`'s buffer.
            drop(copy);
            burn_leaky_relu(x, LRELU_SLOPE)
        }
    }
}

/// Leaky ReLU and its JVP: `dy = dx · (x > 0 ? 1 : 0.2)`.
pub fn lrelu_jvp<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    dx: Tensor<B, D>,
) -> (Tensor<B, D>, Tensor<B, D>) {
    match kernels::lrelu_gate(x.clone(), dx, LRELU_SLOPE as f32) {
        Ok(dy) => (lrelu(x), dy),
        Err((copy, dx)) => {
            drop(copy);
            let negative = x.clone().lower_equal_elem(0.0);
            let dy = dx.clone().mask_where(negative, dx.mul_scalar(LRELU_SLOPE));
            (lrelu(x), dy)
        }
    }
}

/// Nearest-neighbour 2x upsampling (`upscale2d` in the official code).
///
/// # Shapes
/// - x: `[N, C, H, W]`
/// - output: `[N, C, 2H, 2W]`
pub fn upsample2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    // One fused op where the backend has one (kernels.rs).
    let x = match kernels::upsample2x(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, 2, w, 2])
        .reshape([n, c, 2 * h, 2 * w])
}

/// [`upsample2x`] and its JVP (the map is linear).
pub fn upsample2x_jvp<B: Backend>(
    x: Tensor<B, 4>,
    dx: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    (upsample2x(x), upsample2x(dx))
}

/// 2x2 average pooling with stride 2 (`downscale2d` in the official code).
///
/// # Shapes
/// - x: `[N, C, H, W]` with even `H`, `W`
/// - output: `[N, C, H/2, W/2]`
pub fn downsample2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    // One fused op where the backend has one (kernels.rs).
    let x = match kernels::downsample2x(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false)
}

/// [`downsample2x`] and its JVP (the map is linear).
pub fn downsample2x_jvp<B: Backend>(
    x: Tensor<B, 4>,
    dx: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    (downsample2x(x), downsample2x(dx))
}

/// Fade-in blend `old + (new - old) · alpha` (`lerp_clip` in the official code).
pub fn lerp<B: Backend, const D: usize>(
    old: Tensor<B, D>,
    new: Tensor<B, D>,
    alpha: f32,
) -> Tensor<B, D> {
    let alpha = alpha.clamp(0.0, 1.0);
    old.mul_scalar(1.0 - alpha) + new.mul_scalar(alpha)
}

/// [`lerp`] of two (primal, tangent) pairs; the blend is linear in both inputs.
pub fn lerp_jvp<B: Backend, const D: usize>(
    old: (Tensor<B, D>, Tensor<B, D>),
    new: (Tensor<B, D>, Tensor<B, D>),
    alpha: f32,
) -> (Tensor<B, D>, Tensor<B, D>) {
    (lerp(old.0, new.0, alpha), lerp(old.1, new.1, alpha))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;

    #[test]
    fn upsample_repeats_and_downsample_averages() {
        let device = Default::default();
        let x = Tensor::<TestBackend, 4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device);
        let up = upsample2x(x.clone());
        assert_eq!(up.dims(), [1, 1, 4, 4]);
        assert_eq!(
            to_vec(up.clone()),
            [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
        );
        // pooling the nearest upsample gives the input back
        assert_eq!(to_vec(downsample2x(up)), to_vec(x));
        let y = Tensor::<TestBackend, 4>::from_floats(
            [[[[1.0, 3.0, 0.0, 0.0], [5.0, 7.0, 4.0, 8.0]]]],
            &device,
        );
        assert_eq!(to_vec(downsample2x(y)), [4.0, 3.0]);
    }

    #[test]
    fn lerp_endpoints_and_clamp() {
        let device = Default::default();
        let a = randn::<TestBackend, 2>([3, 5], 1, &device);
        let b = randn::<TestBackend, 2>([3, 5], 2, &device);
        assert_eq!(to_vec(lerp(a.clone(), b.clone(), 0.0)), to_vec(a.clone()));
        assert_eq!(to_vec(lerp(a.clone(), b.clone(), 1.0)), to_vec(b.clone()));
        assert_eq!(to_vec(lerp(a.clone(), b.clone(), 7.0)), to_vec(b.clone()));
        let mid = to_vec((a.clone() + b.clone()).div_scalar(2.0));
        assert_close(&to_vec(lerp(a, b, 0.5)), &mid, 1e-6, 1e-6, "lerp 0.5");
    }

    #[test]
    fn lrelu_jvp_matches_finite_differences() {
        let device = Default::default();
        // keep |x| >= 0.05 so the finite-difference step never crosses the kink
        let z = randn::<TestBackend, 4>([2, 3, 4, 4], 3, &device);
        let x = z.clone().sign() * z.abs().add_scalar(0.05);
        let dx = randn::<TestBackend, 4>([2, 3, 4, 4], 4, &device).clamp(-3.0, 3.0);
        check_jvp(lrelu, lrelu_jvp, x.clone(), dx.clone(), 1e-2, 1e-4, "lrelu");
        // slope 0.2 on the negative side, 1 on the positive side
        let (_, dy) = lrelu_jvp(x.clone(), dx.clone());
        let (xs, dxs, dys) = (to_vec(x), to_vec(dx), to_vec(dy));
        for i in 0..xs.len() {
            let slope = if xs[i] > 0.0 { 1.0 } else { 0.2 };
            assert!((dys[i] - slope * dxs[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn resampling_and_lerp_jvps_match_finite_differences() {
        let device = Default::default();
        let x = randn::<TestBackend, 4>([2, 3, 4, 4], 5, &device);
        let dx = randn::<TestBackend, 4>([2, 3, 4, 4], 6, &device);
        check_jvp(
            upsample2x,
            upsample2x_jvp,
            x.clone(),
            dx.clone(),
            1e-2,
            1e-4,
            "upsample",
        );
        check_jvp(
            downsample2x,
            downsample2x_jvp,
            x.clone(),
            dx.clone(),
            1e-2,
            1e-4,
            "downsample",
        );
        let other = randn::<TestBackend, 4>([2, 3, 4, 4], 7, &device);
        let d_other = randn::<TestBackend, 4>([2, 3, 4, 4], 8, &device);
        check_jvp(
            |x| lerp(x, other.clone(), 0.3),
            |x, dx| {
                lerp_jvp(
                    (x, dx),
                    (other.clone(), d_other.clone().mul_scalar(0.0)),
                    0.3,
                )
            },
            x,
            dx,
            1e-2,
            1e-4,
            "lerp",
        );
    }
}
