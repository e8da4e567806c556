//! Instance noise (Sønderby et al. 2017; Arjovsky & Bottou 2017, section 3): Gaussian noise on
//! every image the discriminator sees, reals and fakes alike, so that the two distributions
//! overlap and D's gradient stays informative early on; σ falls linearly to 0 so that the
//! model ends up trained on the clean data.
//!
//! The noise is drawn from the checkpointed host RNG, like the latents, so a resumed run draws
//! the same noise as an uninterrupted one; with σ = 0 nothing is drawn and runs without the
//! option are unchanged. Since the penalties are taken at the images D sees, WGAN-GP's
//! interpolates lie between noisy reals and noisy fakes, and R1 is taken at the noisy reals.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand_chacha::ChaCha8Rng;

use crate::config::InstanceNoiseConfig;
use crate::latents::latent_values;

/// σ after `images_shown` images: `sigma · max(0, 1 − kimg / anneal_kimg)`.
pub fn sigma_at(config: &InstanceNoiseConfig, images_shown: u64) -> f32 {
    if config.sigma <= 0.0 || config.anneal_kimg <= 0.0 {
        return 0.0;
    }
    let kimg = images_shown as f64 / 1000.0;
    (config.sigma * (1.0 - kimg / config.anneal_kimg).max(0.0)) as f32
}

/// `images + σ·ε`, ε ~ N(0, I) from `rng`; `images` unchanged, and nothing drawn, when σ is 0.
///
/// # Shapes
/// - images: `[N, C, H, W]`; output the same
pub fn add_noise<B: Backend>(
    images: Tensor<B, 4>,
    sigma: f32,
    rng: &mut ChaCha8Rng,
) -> Tensor<B, 4> {
    if sigma == 0.0 {
        return images;
    }
    let dims = images.dims();
    let mut values = latent_values(rng, dims.iter().product(), None);
    for v in &mut values {
        *v *= sigma;
    }
    let noise = Tensor::<B, 4>::from_data(TensorData::new(values, dims), &images.device());
    images + noise
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use rand::{Rng, SeedableRng};

    #[test]
    fn sigma_falls_linearly_to_zero_over_anneal_kimg() {
        let config = InstanceNoiseConfig {
            sigma: 0.2,
            anneal_kimg: 4.0,
        };
        let close = |a: f32, b: f32| assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        close(sigma_at(&config, 0), 0.2);
        close(sigma_at(&config, 1000), 0.15);
        close(sigma_at(&config, 2000), 0.1);
        close(sigma_at(&config, 3999), 0.2 * (1.0 - 3.999 / 4.0));
        assert_eq!(sigma_at(&config, 4000), 0.0);
        assert_eq!(sigma_at(&config, 1_000_000), 0.0);
        assert_eq!(sigma_at(&InstanceNoiseConfig::default(), 0), 0.0);
    }

    #[test]
    fn noise_is_added_with_sigma_and_nothing_is_drawn_without() {
        let device = Default::default();
        let images = Tensor::<Flex, 4>::zeros([4, 3, 8, 8], &device).add_scalar(0.25);
        let clean: Vec<f32> = images.to_data().to_vec().unwrap();

        // σ = 0: the same images, and the RNG where it was.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let out = add_noise(images.clone(), 0.0, &mut rng);
        assert_eq!(out.into_data().to_vec::<f32>().unwrap(), clean);
        let mut untouched = ChaCha8Rng::seed_from_u64(5);
        assert_eq!(rng.random::<u64>(), untouched.random::<u64>());

        // σ = 0.5: every value moves, by noise of mean 0 and standard deviation σ.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let noisy: Vec<f32> = add_noise(images.clone(), 0.5, &mut rng)
            .into_data()
            .to_vec()
            .unwrap();
        let diffs: Vec<f64> = noisy
            .iter()
            .zip(&clean)
            .map(|(a, b)| (a - b) as f64)
            .collect();
        assert!(diffs.iter().all(|d| *d != 0.0));
        let n = diffs.len() as f64;
        let mean = diffs.iter().sum::<f64>() / n;
        let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((sd - 0.5).abs() < 0.05, "sd {sd}");

        // The same RNG state draws the same noise (a resumed run sees what the original saw).
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let again: Vec<f32> = add_noise(images, 0.5, &mut rng)
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(again, noisy);
    }
}
