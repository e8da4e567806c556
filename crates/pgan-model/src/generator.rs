//! The progressive generator.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::blocks::{GeneratorInputBlock, GeneratorUpBlock};
use crate::config::ModelConfig;
use crate::equalized::{EqualizedConv2d, EqualizedConv2dConfig};
use crate::functional::{lerp, upsample2x};

/// ProGAN generator with every block up to the full resolution.
///
/// The module (and so its checkpoint layout) never changes as training
/// grows the network; the `stage` argument of [`forward`](Self::forward)
/// picks how many blocks run.
#[derive(Module, Debug)]
pub struct Generator<B: Backend> {
    /// 4x4 block (stage 0).
    pub input: GeneratorInputBlock<B>,
    /// `blocks[k - 1]` doubles stage `k - 1`'s maps to stage `k`.
    pub blocks: Vec<GeneratorUpBlock<B>>,
    /// `to_rgb[k]`: 1x1 convolution (gain 1, linear) from stage `k`'s maps to an image.
    pub to_rgb: Vec<EqualizedConv2d<B>>,
    /// Latent dimension.
    pub latent_dim: usize,
}

impl<B: Backend> Generator<B> {
    pub(crate) fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let stages = config.num_stages();
        let to_rgb_layer = |stage| {
            EqualizedConv2dConfig::new([config.stage_channels(stage), config.num_channels], 1)
                .with_gain(1.0)
                .init(device)
        };
        Self {
            input: GeneratorInputBlock::new(config.latent_dim, config.stage_channels(0), device),
            blocks: (1..stages)
                .map(|s| {
                    GeneratorUpBlock::new(
                        config.stage_channels(s - 1),
                        config.stage_channels(s),
                        device,
                    )
                })
                .collect(),
            to_rgb: (0..stages).map(to_rgb_layer).collect(),
            latent_dim: config.latent_dim,
        }
    }

    /// Number of stages (resolutions) the generator was built with.
    pub fn num_stages(&self) -> usize {
        self.to_rgb.len()
    }

    /// Generates images at `stage`'s resolution `4·2^stage`.
    ///
    /// While fading in `stage` (`alpha < 1`), the output is
    /// `lerp(upsample2x(toRGB[stage-1](h)), toRGB[stage](block[stage](h)), alpha)`
    /// where `h` are the stage-`(stage-1)` features, as in the official
    /// `lerp_clip` fade. `alpha >= 1` runs the plain network; stage 0 ignores
    /// `alpha`. The output is linear (no tanh), as in the official code.
    ///
    /// # Shapes
    /// - latents: `[N, latent_dim]`
    /// - output: `[N, num_channels, 4·2^stage, 4·2^stage]`
    ///
    /// # Panics
    /// If `stage >= num_stages()` or the latent width is wrong.
    pub fn forward(&self, latents: Tensor<B, 2>, stage: usize, alpha: f32) -> Tensor<B, 4> {
        assert!(
            stage < self.num_stages(),
            "generator stage {stage} out of range (the model has {} stages)",
            self.num_stages()
        );
        let [_, latent_dim] = latents.dims();
        assert_eq!(
            latent_dim, self.latent_dim,
            "generator expects latents of width {}, got {latent_dim}",
            self.latent_dim
        );

        let mut features = self.input.forward(latents); // [N, nf, 4, 4]
        if stage == 0 {
            return self.to_rgb[0].forward(features);
        }
        for block in &self.blocks[..stage - 1] {
            features = block.forward(features);
        }
        let new_features = self.blocks[stage - 1].forward(features.clone());
        let new_rgb = self.to_rgb[stage].forward(new_features);
        if alpha >= 1.0 {
            return new_rgb;
        }
        let old_rgb = upsample2x(self.to_rgb[stage - 1].forward(features));
        lerp(old_rgb, new_rgb, alpha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use burn::record::{BinFileRecorder, FullPrecisionSettings, NamedMpkFileRecorder};

    fn tiny_generator(resolution: u32, seed: u64) -> Generator<TestBackend> {
        let g = tiny_config(resolution).init_generator::<TestBackend>(&Default::default());
        reseed(g, seed)
    }

    #[test]
    fn output_shapes_at_every_stage_and_alpha() {
        let device = Default::default();
        let g = tiny_generator(16, 1);
        assert_eq!(g.num_stages(), 3);
        let z = randn::<TestBackend, 2>([4, 8], 2, &device);
        for stage in 0..3 {
            for alpha in [0.0, 0.3, 1.0] {
                let img = g.forward(z.clone(), stage, alpha);
                let r = 4 << stage;
                assert_eq!(img.dims(), [4, 3, r, r], "stage {stage} alpha {alpha}");
                assert!(to_vec(img).iter().all(|v| v.is_finite()));
            }
        }
        // grayscale
        let g1 = tiny_config(8)
            .with_num_channels(1)
            .init_generator::<TestBackend>(&device);
        assert_eq!(g1.forward(z, 1, 0.5).dims(), [4, 1, 8, 8]);
    }

    #[test]
    fn fade_in_starts_at_the_upsampled_smaller_network() {
        let device = Default::default();
        let g = tiny_generator(16, 3);
        let z = randn::<TestBackend, 2>([4, 8], 4, &device);
        for stage in 1..3 {
            let small = to_vec(upsample2x(g.forward(z.clone(), stage - 1, 1.0)));
            let faded = to_vec(g.forward(z.clone(), stage, 0.0));
            assert_close(
                &faded,
                &small,
                1e-6,
                1e-6,
                &format!("alpha 0 at stage {stage}"),
            );
            // the blend is in image space, so alpha 0.5 is the mean of both ends
            let full = to_vec(g.forward(z.clone(), stage, 1.0));
            let mid = to_vec(g.forward(z.clone(), stage, 0.5));
            let mean: Vec<f32> = small
                .iter()
                .zip(&full)
                .map(|(a, b)| 0.5 * (a + b))
                .collect();
            assert_close(
                &mid,
                &mean,
                1e-5,
                1e-5,
                &format!("alpha 0.5 at stage {stage}"),
            );
            // and the new block does change the output
            assert!(full.iter().zip(&small).any(|(a, b)| (a - b).abs() > 1e-3));
        }
    }

    #[test]
    fn paper_parameter_count_at_1024() {
        let g = ModelConfig::paper(1024).init_generator::<TestBackend>(&Default::default());
        // dense 512→8192, 17 conv3x3, 9 toRGB (Table 2 of the paper: 23.1M)
        assert_eq!(g.num_params(), 23_086_795);
    }

    #[test]
    fn records_round_trip() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let g = tiny_generator(8, 5);
        let z = randn::<TestBackend, 2>([2, 8], 6, &device);
        let expected = to_vec(g.forward(z.clone(), 1, 0.7));

        let mpk = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        g.clone().save_file(dir.path().join("g"), &mpk).unwrap();
        let loaded = tiny_generator(8, 99)
            .load_file(dir.path().join("g"), &mpk, &device)
            .unwrap();
        assert_eq!(to_vec(loaded.forward(z.clone(), 1, 0.7)), expected);

        let bin = BinFileRecorder::<FullPrecisionSettings>::new();
        g.save_file(dir.path().join("g"), &bin).unwrap();
        let loaded = tiny_generator(8, 98)
            .load_file(dir.path().join("g"), &bin, &device)
            .unwrap();
        assert_eq!(to_vec(loaded.forward(z, 1, 0.7)), expected);
    }

    #[test]
    fn safetensors_round_trip() {
        use burn_store::{ModuleSnapshot, SafetensorsStore};
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.safetensors");
        let g = tiny_generator(8, 5);
        let z = randn::<TestBackend, 2>([2, 8], 6, &device);
        let expected = to_vec(g.forward(z.clone(), 1, 0.7));

        g.save_into(&mut SafetensorsStore::from_file(&path))
            .unwrap();
        let mut loaded = tiny_generator(8, 97);
        assert_ne!(to_vec(loaded.forward(z.clone(), 1, 0.7)), expected);
        let result = loaded
            .load_from(&mut SafetensorsStore::from_file(&path))
            .unwrap();
        assert!(result.missing.is_empty() && result.errors.is_empty());
        assert_eq!(result.applied.len(), count_tensors(&g));
        assert_eq!(to_vec(loaded.forward(z, 1, 0.7)), expected);

        // A file made for another architecture is refused, not half-applied.
        let mut wider = tiny_config(8)
            .with_fmap_max(16)
            .init_generator::<TestBackend>(&device);
        assert!(wider
            .load_from(&mut SafetensorsStore::from_file(&path))
            .is_err());
    }

    fn count_tensors(g: &Generator<TestBackend>) -> usize {
        use burn_store::ModuleSnapshot;
        g.collect(None, None, false).len()
    }
}
