//! Kernel Inception Distance (Bińkowski et al. 2018) as StyleGAN2-ADA computes it
//! (`metrics/kernel_inception_distance.py`): the unbiased estimate of the squared MMD with the
//! cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over `num_subsets` random subsets
//! of `m = min(n_real, n_fake, max_subset_size)` vectors from each set (drawn without
//! replacement):
//!
//! KID = 1/S Σₛ [ (Σ_{i≠j} k(xᵢ,xⱼ) + Σ_{i≠j} k(yᵢ,yⱼ)) / (m(m−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ) / m² ].
//!
//! The products are single-precision matrix products as in the reference (its features are
//! `float32` arrays); the sums are in `f64`.

use faer::{Accum, Mat, MatRef, Par};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{MetricsError, Result};
use crate::fid::count_rows;

/// StyleGAN2-ADA's subsets (`kid50k_full`: 100 subsets of at most 1000).
#[derive(Clone, Debug)]
pub struct KidConfig {
    /// Number of random subsets averaged.
    pub num_subsets: usize,
    /// Largest subset size.
    pub max_subset_size: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidConfig {
    fn default() -> Self {
        KidConfig {
            num_subsets: 100,
            max_subset_size: 1000,
            seed: 0,
        }
    }
}

/// KID between `real` and `fake` features (`n × dim` row-major each).
pub fn kernel_inception_distance(
    real: &[f32],
    fake: &[f32],
    dim: usize,
    config: &KidConfig,
) -> Result<f64> {
    let n_real = count_rows(real, dim)?;
    let n_fake = count_rows(fake, dim)?;
    let m = n_real.min(n_fake).min(config.max_subset_size);
    if m < 2 {
        return Err(MetricsError::InvalidArgument(format!(
            "KID needs at least 2 real and 2 generated feature vectors, got {n_real} and {n_fake}"
        )));
    }
    if config.num_subsets == 0 {
        return Err(MetricsError::InvalidArgument(
            "KID needs at least one subset".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut total = 0.0f64;
    for _ in 0..config.num_subsets {
        let x = subset(fake, dim, n_fake, m, &mut rng);
        let y = subset(real, dim, n_real, m, &mut rng);
        let (xx_sum, xx_diag) = kernel_sums(x.as_ref(), x.as_ref(), dim);
        let (yy_sum, yy_diag) = kernel_sums(y.as_ref(), y.as_ref(), dim);
        let (xy_sum, _) = kernel_sums(x.as_ref(), y.as_ref(), dim);
        total += (xx_sum + yy_sum - xx_diag - yy_diag) / (m - 1) as f64 - xy_sum * 2.0 / m as f64;
    }
    Ok(total / config.num_subsets as f64 / m as f64)
}

/// `m` rows of `features` drawn without replacement, as an `m × dim` matrix.
fn subset(features: &[f32], dim: usize, n: usize, m: usize, rng: &mut ChaCha8Rng) -> Mat<f32> {
    let rows = rand::seq::index::sample(rng, n, m);
    let rows: Vec<usize> = rows.into_iter().collect();
    Mat::from_fn(m, dim, |i, j| features[rows[i] * dim + j])
}

/// Sum of all entries and of the diagonal of the kernel matrix (a bᵀ / d + 1)³.
fn kernel_sums(a: MatRef<'_, f32>, b: MatRef<'_, f32>, dim: usize) -> (f64, f64) {
    let mut gram = Mat::<f32>::zeros(a.nrows(), b.nrows());
    faer::linalg::matmul::matmul(
        gram.as_mut(),
        Accum::Replace,
        a,
        b.transpose(),
        1.0 / dim as f32,
        Par::rayon(0),
    );
    let k = |v: f32| ((v + 1.0) as f64).powi(3);
    let mut sum = 0.0;
    let mut diag = 0.0;
    for j in 0..gram.ncols() {
        for i in 0..gram.nrows() {
            let v = k(gram[(i, j)]);
            sum += v;
            if i == j {
                diag += v;
            }
        }
    }
    (sum, diag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::StandardNormal;

    fn gaussian(n: usize, dim: usize, shift: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| shift + rng.sample::<f32, _>(StandardNormal))
            .collect()
    }

    /// With subsets as large as the sets, every subset is a permutation of the whole set and
    /// KID is the unbiased MMD² itself, computed here with plain loops.
    #[test]
    fn whole_set_subsets_equal_the_unbiased_mmd_by_loops() {
        let dim = 3;
        let x = gaussian(7, dim, 0.0, 1);
        let y = gaussian(7, dim, 0.5, 2);
        let k = |a: &[f32], b: &[f32]| {
            let dot: f64 = a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum();
            (dot / dim as f64 + 1.0).powi(3)
        };
        let row = |s: &[f32], i: usize| s[i * dim..(i + 1) * dim].to_vec();
        let m = 7;
        let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
        for i in 0..m {
            for j in 0..m {
                if i != j {
                    xx += k(&row(&x, i), &row(&x, j));
                    yy += k(&row(&y, i), &row(&y, j));
                }
                xy += k(&row(&x, i), &row(&y, j));
            }
        }
        let want = (xx + yy) / (m * (m - 1)) as f64 - 2.0 * xy / (m * m) as f64;
        let config = KidConfig {
            num_subsets: 5,
            max_subset_size: 100,
            seed: 4,
        };
        // Real = y, generated = x.
        let got = kernel_inception_distance(&y, &x, dim, &config).unwrap();
        assert!(
            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
    }

    #[test]
    fn identical_sets_are_near_zero_and_shifted_sets_are_not() {
        let dim = 16;
        let a = gaussian(600, dim, 0.0, 5);
        let config = KidConfig {
            num_subsets: 50,
            max_subset_size: 500,
            seed: 1,
        };
        // Unbiased: random subsets of one set scatter around 0 (sampling noise), while a 0.3
        // shift of every coordinate stands far above it.
        let same = kernel_inception_distance(&a, &a, dim, &config).unwrap();
        let b = gaussian(600, dim, 0.3, 6);
        let shifted = kernel_inception_distance(&a, &b, dim, &config).unwrap();
        assert!(shifted > 0.1, "{shifted}");
        assert!(
            same.abs() < shifted / 10.0,
            "same {same} vs shifted {shifted}"
        );
    }

    #[test]
    fn fewer_than_two_vectors_is_an_error() {
        let err =
            kernel_inception_distance(&[1.0, 2.0], &[1.0, 2.0, 3.0, 4.0], 2, &KidConfig::default())
                .unwrap_err()
                .to_string();
        assert!(err.contains("at least 2"), "{err}");
    }
}
