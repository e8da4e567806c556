//! Latent vectors, always drawn on the host from a ChaCha RNG so they can be saved and
//! reproduced: the trainer draws from the RNG in its checkpoint, `pgan render` and `pgan eval`
//! from an RNG seeded by the user's seed (seed 42 is the same face in every sheet).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// `count` draws from N(0, 1); with `truncation = Some(ψ)`, components beyond ±ψ are redrawn.
pub fn latent_values(rng: &mut ChaCha8Rng, count: usize, truncation: Option<f32>) -> Vec<f32> {
    (0..count)
        .map(|_| loop {
            let v: f32 = rng.sample(StandardNormal);
            match truncation {
                Some(psi) if v.abs() > psi => continue,
                _ => break v,
            }
        })
        .collect()
}

/// The latent of a seed.
pub fn latent_for_seed(seed: u64, dim: usize, truncation: Option<f32>) -> Vec<f32> {
    latent_values(&mut ChaCha8Rng::seed_from_u64(seed), dim, truncation)
}

/// Spherical interpolation between two latents (Shoemake 1985), falling back to linear when
/// they are (anti)parallel.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let cos =
        (a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b))).clamp(-1.0, 1.0);
    let omega = cos.acos();
    let (wa, wb) = if omega.sin().abs() < 1e-6 {
        (1.0 - t, t)
    } else {
        (
            ((1.0 - t) * omega).sin() / omega.sin(),
            (t * omega).sin() / omega.sin(),
        )
    };
    a.iter().zip(b).map(|(x, y)| wa * x + wb * y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_bounds_every_latent_component() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v = latent_values(&mut rng, 10_000, Some(0.5));
        assert!(v.iter().all(|x| x.abs() <= 0.5));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v = latent_values(&mut rng, 10_000, None);
        assert!(v.iter().any(|x| x.abs() > 2.0));
    }

    #[test]
    fn a_seed_always_means_the_same_latent() {
        assert_eq!(latent_for_seed(42, 16, None), latent_for_seed(42, 16, None));
        assert_ne!(latent_for_seed(42, 16, None), latent_for_seed(43, 16, None));
    }

    #[test]
    fn slerp_hits_its_ends_and_keeps_the_norm_of_orthogonal_unit_vectors() {
        let a = [1.0, 0.0];
        let b = [0.0, 1.0];
        assert_eq!(slerp(&a, &b, 0.0), vec![1.0, 0.0]);
        let end = slerp(&a, &b, 1.0);
        assert!((end[0]).abs() < 1e-6 && (end[1] - 1.0).abs() < 1e-6);
        let mid = slerp(&a, &b, 0.5);
        assert!(((mid[0] * mid[0] + mid[1] * mid[1]).sqrt() - 1.0).abs() < 1e-6);
    }
}
