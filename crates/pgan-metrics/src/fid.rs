//! Fréchet Inception Distance (Heusel et al. 2017) from feature statistics.
//!
//! FID = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½ over the mean and (unbiased, `n − 1`)
//! covariance of each set's features.
//!
//! The reference (`scipy.linalg.sqrtm` of the non-symmetric product Σ₁Σ₂, as pytorch-fid and
//! StyleGAN2-ADA compute it) is replaced by the equal and better-conditioned symmetric form:
//! Σ₁Σ₂ is similar to A Σ₂ A with A = Σ₁^½ (A⁻¹ (A Σ₂ A) A = Σ₁Σ₂ where Σ₁ is invertible, and
//! by continuity otherwise), so tr (Σ₁Σ₂)^½ = Σᵢ √λᵢ(A Σ₂ A), where A and the λᵢ come from two
//! symmetric eigendecompositions (faer). Eigenvalues that rounding pushes below zero (both
//! covariances are rank-deficient with fewer samples than dimensions) count as zero.

use faer::{Accum, Mat, MatRef, Par, Side};

use crate::error::{MetricsError, Result};

/// Rows of features centred and multiplied at a time when accumulating a covariance: bounds
/// the temporary to `CHUNK_ROWS × dim` doubles.
const CHUNK_ROWS: usize = 4096;

/// Mean and covariance of a set of feature vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    /// Number of feature vectors they summarise.
    pub count: usize,
    /// Mean vector (`dim` values).
    pub mean: Vec<f64>,
    /// Unbiased covariance, `dim × dim` row-major.
    pub cov: Vec<f64>,
}

impl FeatureStats {
    /// Statistics of `features` (`n × dim` row-major, `n ≥ 2`).
    pub fn from_features(features: &[f32], dim: usize) -> Result<Self> {
        let n = count_rows(features, dim)?;
        if n < 2 {
            return Err(MetricsError::InvalidArgument(format!(
                "a covariance needs at least 2 feature vectors, got {n}"
            )));
        }
        let mut mean = vec![0.0f64; dim];
        for row in features.chunks_exact(dim) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = Mat::<f64>::zeros(dim, dim);
        for chunk in features.chunks(CHUNK_ROWS * dim) {
            let rows = chunk.len() / dim;
            let centred =
                Mat::<f64>::from_fn(rows, dim, |i, j| chunk[i * dim + j] as f64 - mean[j]);
            faer::linalg::matmul::matmul(
                cov.as_mut(),
                Accum::Add,
                centred.transpose(),
                centred.as_ref(),
                1.0 / (n - 1) as f64,
                Par::rayon(0),
            );
        }
        Ok(FeatureStats {
            count: n,
            mean,
            cov: to_row_major(cov.as_ref()),
        })
    }

    /// Length of the feature vectors.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Checks that `cov` is `dim × dim` and every value finite.
    pub fn validate(&self) -> Result<()> {
        let d = self.dim();
        if self.cov.len() != d * d {
            return Err(MetricsError::Shape(format!(
                "covariance has {} values for {d}-d features",
                self.cov.len()
            )));
        }
        if self.mean.iter().chain(&self.cov).any(|v| !v.is_finite()) {
            return Err(MetricsError::InvalidArgument(
                "feature statistics hold a non-finite value".into(),
            ));
        }
        Ok(())
    }
}

/// The Fréchet distance between the Gaussians with statistics `a` and `b`.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    a.validate()?;
    b.validate()?;
    let d = a.dim();
    if b.dim() != d {
        return Err(MetricsError::Mismatch(format!(
            "{d}-d and {}-d feature statistics",
            b.dim()
        )));
    }
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let cov_a = MatRef::from_row_major_slice(&a.cov, d, d);
    let cov_b = MatRef::from_row_major_slice(&b.cov, d, d);
    let trace = |m: MatRef<'_, f64>| (0..d).map(|i| m[(i, i)]).sum::<f64>();
    let root_a = psd_sqrt(cov_a)?;
    let inner = &root_a * cov_b * &root_a;
    let inner = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (inner[(i, j)] + inner[(j, i)]));
    let eigenvalues = inner
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| MetricsError::InvalidArgument(format!("eigendecomposition failed: {e:?}")))?;
    let trace_sqrt: f64 = eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum();
    // A squared distance: a value below zero is rounding (two nearly equal sets), not a
    // distance, and is reported as 0.
    Ok((mean_term + trace(cov_a) + trace(cov_b) - 2.0 * trace_sqrt).max(0.0))
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative
/// eigenvalues from rounding clamp to zero).
fn psd_sqrt(m: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let evd = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| MetricsError::InvalidArgument(format!("eigendecomposition failed: {e:?}")))?;
    let u = evd.U();
    let s = evd.S().column_vector();
    let n = m.nrows();
    let scaled = Mat::<f64>::from_fn(n, n, |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    Ok(&scaled * u.transpose())
}

/// Number of `dim`-long rows in `features`.
pub(crate) fn count_rows(features: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 || !features.len().is_multiple_of(dim) {
        return Err(MetricsError::Shape(format!(
            "{} feature values do not split into {dim}-d vectors",
            features.len()
        )));
    }
    Ok(features.len() / dim)
}

fn to_row_major(m: MatRef<'_, f64>) -> Vec<f64> {
    let (r, c) = (m.nrows(), m.ncols());
    let mut out = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            out.push(m[(i, j)]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    fn stats(mean: Vec<f64>, cov: Vec<f64>) -> FeatureStats {
        FeatureStats {
            count: 100,
            mean,
            cov,
        }
    }

    /// R diag(d) Rᵀ for a rotation R by `angle` in the (0, 1) plane of a 3-d space.
    fn rotated(d: [f64; 3], angle: f64) -> Vec<f64> {
        let (c, s) = (angle.cos(), angle.sin());
        let r = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        let mut out = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                out[i * 3 + j] = (0..3).map(|k| r[i][k] * d[k] * r[j][k]).sum();
            }
        }
        out
    }

    #[test]
    fn mean_and_unbiased_covariance_of_a_small_set() {
        // Rows (1, 2), (3, 6), (5, 4): mean (3, 4); cov [[4, 2], [2, 4]].
        let s = FeatureStats::from_features(&[1.0, 2.0, 3.0, 6.0, 5.0, 4.0], 2).unwrap();
        assert_eq!(s.count, 3);
        assert_eq!(s.mean, [3.0, 4.0]);
        for (g, w) in s.cov.iter().zip([4.0, 2.0, 2.0, 4.0]) {
            assert!((g - w).abs() < 1e-12, "{:?}", s.cov);
        }
    }

    #[test]
    fn covariance_is_the_same_across_chunk_boundaries() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = CHUNK_ROWS + 37;
        let f: Vec<f32> = (0..n * 3)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        let s = FeatureStats::from_features(&f, 3).unwrap();
        let mut naive = [0.0f64; 9];
        for row in f.chunks_exact(3) {
            for i in 0..3 {
                for j in 0..3 {
                    naive[i * 3 + j] +=
                        (row[i] as f64 - s.mean[i]) * (row[j] as f64 - s.mean[j]) / (n - 1) as f64;
                }
            }
        }
        for (g, w) in s.cov.iter().zip(naive) {
            assert!((g - w).abs() < 1e-9, "{g} vs {w}");
        }
    }

    #[test]
    fn identical_statistics_are_at_distance_zero() {
        let a = stats(vec![1.0, -2.0, 0.5], rotated([3.0, 1.0, 0.25], 0.7));
        let d = frechet_distance(&a, &a).unwrap();
        assert!((0.0..1e-9).contains(&d), "{d}");
        // Rounding never makes a distance negative, however the sets are drawn.
        for seed in 0..20u64 {
            let spread = 1.0 + seed as f64 * 0.37;
            let b = stats(
                vec![1.0, -2.0, 0.5],
                rotated([spread, 1.0, 1e-6], 0.1 * seed as f64),
            );
            assert!(frechet_distance(&b, &b).unwrap() >= 0.0);
        }
    }

    #[test]
    fn commuting_gaussians_match_the_closed_form() {
        // Diagonal covariances: FID = |Δμ|² + Σ (√a − √b)².
        let a = stats(vec![0.0, 0.0, 0.0], rotated([4.0, 1.0, 9.0], 0.0));
        let b = stats(vec![1.0, 2.0, -2.0], rotated([1.0, 1.0, 4.0], 0.0));
        let want = (1.0 + 4.0 + 4.0) + (2.0f64 - 1.0).powi(2) + 0.0 + (3.0f64 - 2.0).powi(2);
        let d = frechet_distance(&a, &b).unwrap();
        assert!((d - want).abs() < 1e-9, "{d} vs {want}");
    }

    #[test]
    fn non_commuting_gaussians_match_the_closed_form() {
        // Σ₁ = c·I commutes with anything: tr (cΣ₂)^½ = √c Σ √dᵢ for Σ₂ = R diag(d) Rᵀ.
        let c = 2.5;
        let a = stats(vec![0.5, 0.0, 0.0], rotated([c, c, c], 0.0));
        let d2 = [3.0, 0.5, 2.0];
        let b = stats(vec![0.0, 0.0, 1.0], rotated(d2, 0.9));
        let trace_sqrt: f64 = d2.iter().map(|d| (c * d).sqrt()).sum();
        let want = 0.25 + 1.0 + 3.0 * c + d2.iter().sum::<f64>() - 2.0 * trace_sqrt;
        let d = frechet_distance(&a, &b).unwrap();
        assert!((d - want).abs() < 1e-9, "{d} vs {want}");
        // And symmetric in its arguments (here Σ₁ and Σ₂ do not commute with each other's
        // square roots in general; the distance still must not depend on the order).
        let b2 = stats(vec![0.0, 0.0, 1.0], rotated([1.0, 4.0, 0.5], 0.3));
        let ab = frechet_distance(&b, &b2).unwrap();
        let ba = frechet_distance(&b2, &b).unwrap();
        assert!((ab - ba).abs() < 1e-9, "{ab} vs {ba}");
    }

    #[test]
    fn samples_of_two_gaussians_approach_the_analytic_distance() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let n = 20_000;
        // a ~ N(0, diag(1, 4)), b ~ N((1, 0), diag(4, 1)): FID = 1 + 1 + 1 = 3.
        let mut fa = Vec::new();
        let mut fb = Vec::new();
        for _ in 0..n {
            let z: [f32; 4] = std::array::from_fn(|_| rng.sample(StandardNormal));
            fa.extend([z[0], 2.0 * z[1]]);
            fb.extend([1.0 + 2.0 * z[2], z[3]]);
        }
        let (sa, sb) = (
            FeatureStats::from_features(&fa, 2).unwrap(),
            FeatureStats::from_features(&fb, 2).unwrap(),
        );
        let d = frechet_distance(&sa, &sb).unwrap();
        // Exactly, from the sample statistics: for a 2x2 M = Σ₁Σ₂ with eigenvalues λ ≥ 0,
        // tr M^½ = √(tr M + 2√det M).
        let (p, q) = (&sa.cov, &sb.cov);
        let m = [
            p[0] * q[0] + p[1] * q[2],
            p[0] * q[1] + p[1] * q[3],
            p[2] * q[0] + p[3] * q[2],
            p[2] * q[1] + p[3] * q[3],
        ];
        let trace_sqrt = (m[0] + m[3] + 2.0 * (m[0] * m[3] - m[1] * m[2]).sqrt()).sqrt();
        let mean_term: f64 = sa
            .mean
            .iter()
            .zip(&sb.mean)
            .map(|(x, y)| (x - y).powi(2))
            .sum();
        let exact = mean_term + p[0] + p[3] + q[0] + q[3] - 2.0 * trace_sqrt;
        assert!((d - exact).abs() < 1e-9, "{d} vs {exact}");
        // And the sample statistics are near the distribution's: 3 up to sampling noise.
        assert!((d - 3.0).abs() < 0.2, "{d}");
    }

    #[test]
    fn too_few_or_mismatched_features_are_errors() {
        let err = FeatureStats::from_features(&[1.0, 2.0], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 2"), "{err}");
        let err = FeatureStats::from_features(&[1.0, 2.0, 3.0], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 feature values"), "{err}");
        let a = stats(vec![0.0; 2], vec![1.0, 0.0, 0.0, 1.0]);
        let b = stats(vec![0.0; 3], rotated([1.0; 3], 0.0));
        let err = frechet_distance(&a, &b).unwrap_err().to_string();
        assert!(err.contains("2-d and 3-d"), "{err}");
    }
}
