//! Improved precision and recall (Kynkäänniemi et al. 2019) with StyleGAN2-ADA's procedure
//! (`metrics/precision_recall.py`): each set's manifold is the union of balls around its
//! vectors, each ball reaching the vector's k-th nearest neighbour within the set (k = 3; the
//! (k+1)-th smallest distance counting the vector itself). Precision is the share of generated
//! vectors inside the real manifold, recall the share of real vectors inside the generated one.
//!
//! Distances are Euclidean, from single-precision matrix products (‖a‖² + ‖b‖² − 2aᵀb, as
//! `torch.cdist` computes them for large sets); rows are processed in batches so memory stays
//! at `ROW_BATCH × n` values. StyleGAN2-ADA measures these on VGG16 features; pgan applies the
//! procedure to the same Inception features as FID and KID.

use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::fid::count_rows;

/// Rows of distances computed at once.
const ROW_BATCH: usize = 512;

/// StyleGAN2-ADA's neighbourhood size.
pub const DEFAULT_K: usize = 3;

/// Precision and recall, each in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrecisionRecall {
    /// Share of generated vectors inside the real manifold (fidelity).
    pub precision: f64,
    /// Share of real vectors inside the generated manifold (coverage).
    pub recall: f64,
}

/// Precision and recall of `fake` against `real` (`n × dim` row-major each) with
/// neighbourhood size `k`.
pub fn precision_recall(
    real: &[f32],
    fake: &[f32],
    dim: usize,
    k: usize,
) -> Result<PrecisionRecall> {
    let n_real = count_rows(real, dim)?;
    let n_fake = count_rows(fake, dim)?;
    if k == 0 || n_real <= k || n_fake <= k {
        return Err(MetricsError::InvalidArgument(format!(
            "precision/recall with k = {k} needs more than {k} real and generated feature \
             vectors, got {n_real} and {n_fake}"
        )));
    }
    let real = Points::new(real, dim);
    let fake = Points::new(fake, dim);
    Ok(PrecisionRecall {
        precision: share_inside(&real, &radii(&real, k), &fake),
        recall: share_inside(&fake, &radii(&fake, k), &real),
    })
}

/// Vectors as a matrix with their squared norms.
struct Points {
    rows: Mat<f32>,
    norms: Vec<f32>,
}

impl Points {
    fn new(values: &[f32], dim: usize) -> Self {
        let n = values.len() / dim;
        let rows = Mat::from_fn(n, dim, |i, j| values[i * dim + j]);
        let norms = values
            .chunks_exact(dim)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        Points { rows, norms }
    }

    fn len(&self) -> usize {
        self.rows.nrows()
    }

    /// Squared distances from rows `start..start + len` of `probes` to every point of `self`,
    /// `len × self.len()` row-major.
    fn squared_distances(&self, probes: &Points, start: usize, len: usize) -> Vec<f32> {
        let probe_rows: MatRef<'_, f32> = probes.rows.as_ref().subrows(start, len);
        let mut gram = Mat::<f32>::zeros(len, self.len());
        faer::linalg::matmul::matmul(
            gram.as_mut(),
            Accum::Replace,
            probe_rows,
            self.rows.as_ref().transpose(),
            1.0,
            Par::Seq,
        );
        let mut out = Vec::with_capacity(len * self.len());
        for i in 0..len {
            let pn = probes.norms[start + i];
            out.extend((0..self.len()).map(|j| (pn + self.norms[j] - 2.0 * gram[(i, j)]).max(0.0)));
        }
        out
    }
}

/// Squared distance from each point to its k-th nearest neighbour in the same set.
fn radii(points: &Points, k: usize) -> Vec<f32> {
    let n = points.len();
    batches(n)
        .into_par_iter()
        .flat_map_iter(|(start, len)| {
            let mut d = points.squared_distances(points, start, len);
            d.chunks_mut(n)
                .map(|row| *row.select_nth_unstable_by(k, f32::total_cmp).1)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Share of `probes` within the ball of at least one manifold point.
fn share_inside(manifold: &Points, radii: &[f32], probes: &Points) -> f64 {
    let n = manifold.len();
    let inside: usize = batches(probes.len())
        .into_par_iter()
        .map(|(start, len)| {
            let d = manifold.squared_distances(probes, start, len);
            d.chunks(n)
                .filter(|row| row.iter().zip(radii).any(|(d, r)| d <= r))
                .count()
        })
        .sum();
    inside as f64 / probes.len() as f64
}

fn batches(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(ROW_BATCH)
        .map(|s| (s, ROW_BATCH.min(n - s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    #[test]
    fn one_dimensional_case_by_hand() {
        // Reals at 0, 1, 2, 3, 10 (k = 1: radii 1, 1, 1, 1, 7). Fakes at 0.5, 5, 20, 2.5.
        // Inside the real manifold: 0.5 (near 0/1), 5 (within 7 of 10), 2.5; not 20 → 3/4.
        // Fake radii (k = 1): 0.5→2, 5→2.5, 20→10, 2.5→2. Reals inside: 0 (0.5 within 2),
        // 1, 2, 3 (near 2.5), 10 (within 10 of 20) → 5/5.
        let real = [0.0, 1.0, 2.0, 3.0, 10.0];
        let fake = [0.5, 5.0, 20.0, 2.5];
        let pr = precision_recall(&real, &fake, 1, 1).unwrap();
        assert_eq!(pr.precision, 0.75);
        assert_eq!(pr.recall, 1.0);
    }

    #[test]
    fn identical_sets_score_one_and_far_apart_sets_zero() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let dim = 8;
        let a: Vec<f32> = (0..700 * dim).map(|_| rng.sample(StandardNormal)).collect();
        let pr = precision_recall(&a, &a, dim, DEFAULT_K).unwrap();
        assert_eq!((pr.precision, pr.recall), (1.0, 1.0));
        let far: Vec<f32> = a.iter().map(|v| v + 100.0).collect();
        let pr = precision_recall(&a, &far, dim, DEFAULT_K).unwrap();
        assert_eq!((pr.precision, pr.recall), (0.0, 0.0));
    }

    #[test]
    fn a_collapsed_generator_has_precision_but_no_recall() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let dim = 4;
        let real: Vec<f32> = (0..400 * dim).map(|_| rng.sample(StandardNormal)).collect();
        // Generated vectors all near one real point.
        let fake: Vec<f32> = (0..400 * dim)
            .map(|i| real[i % dim] + 0.001 * rng.sample::<f32, _>(StandardNormal))
            .collect();
        let pr = precision_recall(&real, &fake, dim, DEFAULT_K).unwrap();
        assert_eq!(pr.precision, 1.0);
        assert!(pr.recall < 0.05, "{pr:?}");
    }

    #[test]
    fn too_few_vectors_is_an_error() {
        let err = precision_recall(&[0.0, 1.0, 2.0], &[0.0, 1.0, 2.0, 3.0], 1, 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 3"), "{err}");
    }
}
