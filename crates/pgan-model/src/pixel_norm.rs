//! Pixelwise feature vector normalisation (Karras et al. 2018, §4.2).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::kernels;

/// `epsilon` of the official `pixel_norm`.
pub const PIXEL_NORM_EPS: f64 = 1e-8;

/// `b = a / sqrt(mean_c(a²) + 1e-8)`: normalises each pixel's feature vector
/// (dimension 1) to unit average square.
///
/// # Shapes
/// - x: `[N, C, ...]` (also used on latents `[N, D]`)
/// - output: same as `x`
pub fn pixel_norm<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // One fused op where the backend has one (kernels.rs).
    match kernels::pixel_norm(x, PIXEL_NORM_EPS as f32) {
        Ok(y) => y,
        Err(x) => pixel_norm_ops(x),
    }
}

/// [`pixel_norm`] written with burn's tensor ops (every backend without its own kernel).
fn pixel_norm_ops<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let r = rms(x.clone());
    x / r
}

/// [`pixel_norm`] and its JVP. With `r = sqrt(mean_c(x²) + eps)`:
/// `dy = dx / r - x · mean_c(x·dx) / r³`.
pub fn pixel_norm_jvp<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    dx: Tensor<B, D>,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let r = rms(x.clone()); // [N, 1, ...]
    let inv_r = r.recip();
    let x_dot_dx = (x.clone() * dx.clone()).mean_dim(1); // [N, 1, ...]
    let y = x.clone() * inv_r.clone();
    let dy = dx * inv_r.clone() - x * (x_dot_dx * inv_r.powi_scalar(3));
    (y, dy)
}

fn rms<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.powi_scalar(2)
        .mean_dim(1)
        .add_scalar(PIXEL_NORM_EPS)
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;

    #[test]
    fn normalises_each_pixel_to_unit_mean_square() {
        let device = Default::default();
        let x = randn::<TestBackend, 4>([2, 5, 3, 3], 1, &device).mul_scalar(7.0);
        let ms = to_vec(pixel_norm(x).powi_scalar(2).mean_dim(1));
        assert_close(&ms, &vec![1.0; ms.len()], 1e-5, 0.0, "mean square");
        // latents [N, D]
        let z = randn::<TestBackend, 2>([4, 16], 2, &device).mul_scalar(0.1);
        let ms = to_vec(pixel_norm(z).powi_scalar(2).mean_dim(1));
        assert_close(&ms, &[1.0; 4], 1e-5, 0.0, "latent mean square");
    }

    #[test]
    fn jvp_matches_finite_differences() {
        let device = Default::default();
        let x = randn::<TestBackend, 4>([2, 6, 3, 3], 3, &device);
        let dx = randn::<TestBackend, 4>([2, 6, 3, 3], 4, &device);
        check_jvp(
            pixel_norm,
            pixel_norm_jvp,
            x,
            dx,
            1e-2,
            2e-3,
            "pixel norm 4d",
        );
        let z = randn::<TestBackend, 2>([3, 8], 5, &device);
        let dz = randn::<TestBackend, 2>([3, 8], 6, &device);
        check_jvp(
            pixel_norm,
            pixel_norm_jvp,
            z,
            dz,
            1e-2,
            2e-3,
            "pixel norm 2d",
        );
    }
}
