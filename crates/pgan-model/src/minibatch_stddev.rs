//! Minibatch standard deviation (Karras et al. 2018, §3; `minibatch_stddev_layer`
//! in the official code, with one extra feature map).
//!
//! The batch is split into groups; for every feature and pixel the standard
//! deviation over the group is taken (`sqrt(var + 1e-8)`), averaged over
//! channels and pixels, and appended to every member of the group as one
//! constant feature map.
//!
//! Group layout follows the official `reshape([G, -1, C, H, W])`: sample
//! `n = g·M + m` belongs to group `m` (groups are strided through the batch).
//!
//! **Group size.** The configured size `G` is first capped at the batch
//! size `N`; if `N` is not a multiple of it, the largest divisor of `N` that is
//! `<= G` is used instead (e.g. `G = 4, N = 6 → 3`; `N = 5 → 1`). A group of one
//! has zero variance, so the extra map is the constant `sqrt(1e-8)`; the
//! channel is still appended so the weights keep their shape.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `epsilon` added to the group variance before the square root.
pub const MBSTD_EPS: f64 = 1e-8;

/// The group size actually used for a batch of `batch` samples: the largest
/// divisor of `batch` that is at most `min(group_size, batch)`.
pub fn effective_group_size(batch: usize, group_size: usize) -> usize {
    let cap = group_size.min(batch).max(1);
    (1..=cap)
        .rev()
        .find(|g| batch.is_multiple_of(*g))
        .unwrap_or(1)
}

/// Appends the minibatch-stddev feature map.
///
/// # Shapes
/// - x: `[N, C, H, W]`
/// - output: `[N, C + 1, H, W]`
pub fn minibatch_stddev<B: Backend>(x: Tensor<B, 4>, group_size: usize) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let g = effective_group_size(n, group_size);
    let (m, k) = (n / g, c * h * w);
    // Rows are group members, columns (sample-in-group, feature, pixel).
    // (Kept 2-D on purpose: on burn-wgpu 0.21 a 5-D reshape of a convolution
    // output followed by a reduction returns wrong values.)
    let grouped = x.clone().reshape([g, m * k]);
    let centered = grouped.clone() - grouped.mean_dim(0); // [G, M·K]
    let std = centered
        .powi_scalar(2)
        .mean_dim(0)
        .add_scalar(MBSTD_EPS)
        .sqrt(); // [1, M·K]
    let feature = std.reshape([m, k]).mean_dim(1); // [M, 1]
    Tensor::cat(vec![x, broadcast_feature(feature, g, [n, h, w])], 1)
}

/// [`minibatch_stddev`] over a batch of `kinds` equal parts (e.g. reals then fakes), each part's
/// groups formed and its statistics taken over that part alone: the same values as one
/// [`minibatch_stddev`] call per part, so that scoring several kinds of images in one batch
/// leaves every image's extra feature map as it would be in a batch of its own kind.
///
/// # Shapes
/// - x: `[kinds·N, C, H, W]` (`kinds` must divide the batch)
/// - output: `[kinds·N, C + 1, H, W]`
pub fn minibatch_stddev_per_kind<B: Backend>(
    x: Tensor<B, 4>,
    group_size: usize,
    kinds: usize,
) -> Tensor<B, 4> {
    let total = x.dims()[0];
    assert!(
        kinds >= 1 && total.is_multiple_of(kinds),
        "a batch of {total} cannot be split into {kinds} equal kinds"
    );
    if kinds == 1 {
        return minibatch_stddev(x, group_size);
    }
    let n = total / kinds;
    let parts = (0..kinds)
        .map(|k| minibatch_stddev(x.clone().narrow(0, k * n, n), group_size))
        .collect();
    Tensor::cat(parts, 0)
}

/// [`minibatch_stddev`] and its JVP.
///
/// With `d = x - mean_g(x)` and `s = sqrt(mean_g(d²) + eps)`:
/// `ds = mean_g(d · (dx - mean_g(dx))) / s = mean_g(d · dx) / s`, averaged over channels and pixels
/// like the primal. The group mean couples the samples, so one sample's
/// tangent moves the extra map of its whole group.
pub fn minibatch_stddev_jvp<B: Backend>(
    x: Tensor<B, 4>,
    dx: Tensor<B, 4>,
    group_size: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [n, c, h, w] = x.dims();
    let g = effective_group_size(n, group_size);
    let (m, k) = (n / g, c * h * w);
    let grouped = x.clone().reshape([g, m * k]);
    let d_grouped = dx.clone().reshape([g, m * k]);
    let centered = grouped.clone() - grouped.mean_dim(0);
    let std = centered
        .clone()
        .powi_scalar(2)
        .mean_dim(0)
        .add_scalar(MBSTD_EPS)
        .sqrt(); // [1, M·K]
                 // mean_g(d · (dx − mean_g dx)) = mean_g(d · dx) because mean_g(d) = 0.
    let d_std = (centered * d_grouped).mean_dim(0) / std.clone();
    let feature = std.reshape([m, k]).mean_dim(1);
    let d_feature = d_std.reshape([m, k]).mean_dim(1);
    (
        Tensor::cat(vec![x, broadcast_feature(feature, g, [n, h, w])], 1),
        Tensor::cat(vec![dx, broadcast_feature(d_feature, g, [n, h, w])], 1),
    )
}

/// `[M, 1]` per-group values → `[N, 1, H, W]`, sample `g·M + m` getting value `m`.
///
/// The copies are concatenated rather than made by `repeat_dim`: on burn-cubecl 0.21 (wgpu and
/// CUDA) `repeat_dim` → `reshape` → `expand` returns the value for the first sample only and
/// zeros for the rest when `M` is 1 (found by `pgan_train::step_parity`; pinned by
/// `wgpu_parity::minibatch_stddev_matches_flex_for_every_group_layout`).
fn broadcast_feature<B: Backend>(
    feature: Tensor<B, 2>,
    groups: usize,
    [n, h, w]: [usize; 3],
) -> Tensor<B, 4> {
    let row = feature.reshape([1, n / groups]);
    Tensor::cat(vec![row; groups], 0)
        .reshape([n, 1, 1, 1])
        .expand([n, 1, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use burn::tensor::TensorData;

    #[test]
    fn group_size_is_the_largest_divisor() {
        assert_eq!(effective_group_size(8, 4), 4);
        assert_eq!(effective_group_size(2, 4), 2);
        assert_eq!(effective_group_size(6, 4), 3);
        assert_eq!(effective_group_size(5, 4), 1);
        assert_eq!(effective_group_size(9, 4), 3);
        assert_eq!(effective_group_size(1, 4), 1);
    }

    /// Straightforward loops over the official definition.
    fn reference(x: &[f32], [n, c, h, w]: [usize; 4], group: usize) -> Vec<f32> {
        let g = effective_group_size(n, group);
        let m = n / g;
        let at = |s: usize, i: usize| x[s * c * h * w + i];
        let mut feature = vec![0.0f64; m];
        for (mi, f) in feature.iter_mut().enumerate() {
            for i in 0..c * h * w {
                let members: Vec<f64> = (0..g).map(|gi| at(gi * m + mi, i) as f64).collect();
                let mean = members.iter().sum::<f64>() / g as f64;
                let var = members.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / g as f64;
                *f += (var + MBSTD_EPS).sqrt() / (c * h * w) as f64;
            }
        }
        let mut out = Vec::new();
        for s in 0..n {
            out.extend((0..c * h * w).map(|i| at(s, i)));
            out.extend(std::iter::repeat_n(feature[s % m] as f32, h * w));
        }
        out
    }

    #[test]
    fn forward_matches_reference_loops() {
        let device = Default::default();
        for (n, group) in [(4, 2), (8, 4), (6, 4), (5, 4), (3, 8)] {
            let shape = [n, 3, 2, 2];
            let x = randn::<TestBackend, 4>(shape, n as u64, &device);
            let y = minibatch_stddev(x.clone(), group);
            assert_eq!(y.dims(), [n, 4, 2, 2]);
            let expected = reference(&to_vec(x), shape, group);
            assert_close(
                &to_vec(y),
                &expected,
                1e-5,
                1e-5,
                &format!("n={n} group={group}"),
            );
        }
    }

    /// Two kinds in one batch get exactly the extra maps each kind gets on its own, which one
    /// plain call over the joint batch does not give.
    #[test]
    fn per_kind_statistics_equal_separate_calls() {
        let device = Default::default();
        for (n, group) in [(4, 2), (6, 4), (5, 4)] {
            let a = randn::<TestBackend, 4>([n, 3, 2, 2], 30 + n as u64, &device);
            let b = randn::<TestBackend, 4>([n, 3, 2, 2], 40 + n as u64, &device).mul_scalar(3.0);
            let joint = Tensor::cat(vec![a.clone(), b.clone()], 0);
            let separate = to_vec(Tensor::cat(
                vec![minibatch_stddev(a, group), minibatch_stddev(b, group)],
                0,
            ));
            let per_kind = to_vec(minibatch_stddev_per_kind(joint.clone(), group, 2));
            assert_eq!(per_kind, separate, "n={n} group={group}");
            assert_ne!(to_vec(minibatch_stddev(joint, group)), separate);
        }
    }

    #[test]
    fn jvp_matches_finite_differences_including_sample_coupling() {
        let device = Default::default();
        for (n, group) in [(4, 2), (4, 4), (6, 4)] {
            // With two members the group std is |x1 - x2| / 2, a kink where they
            // meet; offsetting the g-th member by g keeps the differences away
            // from zero so the finite-difference step cannot cross it.
            let m = n / effective_group_size(n, group);
            let offsets: Vec<f32> = (0..n).map(|s| (s / m) as f32).collect();
            let offsets = Tensor::<TestBackend, 1>::from_floats(offsets.as_slice(), &device);
            let x = randn::<TestBackend, 4>([n, 3, 2, 2], 10 + n as u64, &device).mul_scalar(0.2)
                + offsets.reshape([n, 1, 1, 1]);
            let dx = randn::<TestBackend, 4>([n, 3, 2, 2], 20 + n as u64, &device);
            check_jvp(
                |x| minibatch_stddev(x, group),
                |x, dx| minibatch_stddev_jvp(x, dx, group),
                x.clone(),
                dx,
                1e-2,
                3e-3,
                &format!("mbstd n={n} group={group}"),
            );
            // a tangent on sample 0 alone moves the extra map of every member of its group
            let mut one = vec![0.0f32; n * 12];
            one[..12].copy_from_slice(&to_vec(randn::<TestBackend, 1>([12], 99, &device)));
            let dx0 =
                Tensor::<TestBackend, 4>::from_data(TensorData::new(one, [n, 3, 2, 2]), &device);
            let (_, dy) = minibatch_stddev_jvp(x, dx0, group);
            let extra = to_vec(dy.narrow(1, 3, 1));
            let g = effective_group_size(n, group);
            let m = n / g;
            for s in 0..n {
                let moved = extra[s * 4].abs() > 1e-6;
                assert_eq!(moved, s % m == 0, "n={n} sample {s}");
            }
        }
    }
}
