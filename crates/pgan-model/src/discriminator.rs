//! The progressive discriminator (critic).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::blocks::{DiscriminatorDownBlock, DiscriminatorOutputBlock};
use crate::config::ModelConfig;
use crate::equalized::{EqualizedConv2d, EqualizedConv2dConfig};
use crate::functional::{downsample2x, downsample2x_jvp, lerp, lerp_jvp, lrelu, lrelu_jvp};

/// ProGAN discriminator with every block up to the full resolution.
#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    /// `from_rgb[k]`: 1x1 convolution (+ lrelu) from an image to stage `k`'s maps.
    pub from_rgb: Vec<EqualizedConv2d<B>>,
    /// `blocks[k - 1]` takes stage `k`'s maps down to stage `k - 1`.
    pub blocks: Vec<DiscriminatorDownBlock<B>>,
    /// 4x4 block: minibatch stddev, conv, two dense layers.
    pub output: DiscriminatorOutputBlock<B>,
    /// Image channels.
    pub num_channels: usize,
}

impl<B: Backend> Discriminator<B> {
    pub(crate) fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let stages = config.num_stages();
        Self {
            from_rgb: (0..stages)
                .map(|s| {
                    EqualizedConv2dConfig::new([config.num_channels, config.stage_channels(s)], 1)
                        .init(device)
                })
                .collect(),
            blocks: (1..stages)
                .map(|s| {
                    DiscriminatorDownBlock::new(
                        config.stage_channels(s),
                        config.stage_channels(s - 1),
                        device,
                    )
                })
                .collect(),
            output: DiscriminatorOutputBlock::new(
                config.stage_channels(0),
                config.nf_official(0),
                config.effective_mbstd_group_size(),
                config.mbdisc_shape(),
                device,
            ),
            num_channels: config.num_channels,
        }
    }

    /// Number of stages (resolutions) the discriminator was built with.
    pub fn num_stages(&self) -> usize {
        self.from_rgb.len()
    }

    fn check_input(&self, images: &Tensor<B, 4>, stage: usize) {
        assert!(
            stage < self.num_stages(),
            "discriminator stage {stage} out of range (the model has {} stages)",
            self.num_stages()
        );
        let res = 4usize << stage;
        let [_, c, h, w] = images.dims();
        assert!(
            c == self.num_channels && h == res && w == res,
            "discriminator at stage {stage} expects [N, {}, {res}, {res}] images, got [N, {c}, {h}, {w}]",
            self.num_channels
        );
    }

    /// Scores images at `stage`'s resolution.
    ///
    /// While fading in `stage` (`alpha < 1`) the input path is
    /// `lerp(fromRGB[stage-1](avgpool2(x)), block[stage](fromRGB[stage](x)), alpha)`.
    /// `alpha >= 1` runs the plain network; stage 0 ignores `alpha`.
    ///
    /// # Shapes
    /// - images: `[N, num_channels, 4·2^stage, 4·2^stage]`
    /// - output: `[N, 1]`
    pub fn forward(&self, images: Tensor<B, 4>, stage: usize, alpha: f32) -> Tensor<B, 2> {
        self.output.forward(self.to_4x4(images, stage, alpha))
    }

    /// [`forward`](Self::forward) on `kinds` batches of the same size at once (e.g. reals then
    /// fakes), concatenated along the batch: every layer runs once on the whole batch, and the
    /// minibatch-stddev statistics stay per kind, so the scores are those of one
    /// [`forward`](Self::forward) per kind, up to the rounding of the larger convolutions.
    ///
    /// # Shapes
    /// - images: `[kinds·N, num_channels, 4·2^stage, 4·2^stage]`
    /// - output: `[kinds·N, 1]`, kind `k`'s scores in rows `k·N..(k+1)·N`
    pub fn forward_per_kind(
        &self,
        images: Tensor<B, 4>,
        kinds: usize,
        stage: usize,
        alpha: f32,
    ) -> Tensor<B, 2> {
        let x = self.to_4x4(images, stage, alpha);
        self.output
            .score_per_kind(self.output.features_per_kind(x, kinds), kinds)
    }

    /// [`forward`](Self::forward)'s scores and the last hidden layer's features, the input of the
    /// final dense layer (what feature matching compares, Salimans et al. 2016), from one pass.
    /// With minibatch discrimination they are its input, before the batch's `o(x)` is appended.
    ///
    /// # Shapes
    /// - images: `[N, num_channels, 4·2^stage, 4·2^stage]`
    /// - outputs: scores `[N, 1]`, features `[N, nf(0)]`
    pub fn forward_with_features(
        &self,
        images: Tensor<B, 4>,
        stage: usize,
        alpha: f32,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let features = self.output.features(self.to_4x4(images, stage, alpha));
        (self.output.score(features.clone()), features)
    }

    /// The network up to the 4x4 output block: `[N, C(0), 4, 4]`.
    fn to_4x4(&self, images: Tensor<B, 4>, stage: usize, alpha: f32) -> Tensor<B, 4> {
        self.check_input(&images, stage);
        let mut x = lrelu(self.from_rgb[stage].forward(images.clone()));
        if stage > 0 {
            x = self.blocks[stage - 1].forward(x);
            if alpha < 1.0 {
                let old = lrelu(self.from_rgb[stage - 1].forward(downsample2x(images)));
                x = lerp(old, x, alpha);
            }
            for block in self.blocks[..stage - 1].iter().rev() {
                x = block.forward(x);
            }
        }
        x
    }

    /// [`forward`](Self::forward) and its directional derivative along
    /// `tangent`, i.e. `(D(x), J_D(x)·tangent)`, by forward-mode
    /// differentiation through every layer.
    ///
    /// On an autodiff backend the result stays differentiable with respect
    /// to the parameters, which is how [`crate::penalty`] gets the parameter
    /// gradient of a gradient penalty without double backward.
    ///
    /// # Shapes
    /// - images, tangent: `[N, num_channels, 4·2^stage, 4·2^stage]`
    /// - outputs: `[N, 1]` each
    pub fn forward_jvp(
        &self,
        images: Tensor<B, 4>,
        tangent: Tensor<B, 4>,
        stage: usize,
        alpha: f32,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        self.check_input(&images, stage);
        assert_eq!(
            images.dims(),
            tangent.dims(),
            "tangent must match the images' shape"
        );
        let (x, dx) = self.from_rgb[stage].forward_jvp(images.clone(), tangent.clone());
        let (mut x, mut dx) = lrelu_jvp(x, dx);
        if stage > 0 {
            (x, dx) = self.blocks[stage - 1].forward_jvp(x, dx);
            if alpha < 1.0 {
                let (small, d_small) = downsample2x_jvp(images, tangent);
                let (old, d_old) = self.from_rgb[stage - 1].forward_jvp(small, d_small);
                let old = lrelu_jvp(old, d_old);
                (x, dx) = lerp_jvp(old, (x, dx), alpha);
            }
            for block in self.blocks[..stage - 1].iter().rev() {
                (x, dx) = block.forward_jvp(x, dx);
            }
        }
        self.output.forward_jvp(x, dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
    use burn::tensor::Tensor;

    fn tiny_discriminator<B: burn::tensor::backend::Backend>(
        resolution: u32,
        seed: u64,
    ) -> Discriminator<B> {
        reseed(
            tiny_config(resolution).init_discriminator::<B>(&Default::default()),
            seed,
        )
    }

    #[test]
    fn features_are_the_input_of_the_last_dense_layer() {
        type B = burn::backend::Flex;
        let d = tiny_discriminator::<B>(8, 3);
        let device = Default::default();
        let images = Tensor::<B, 4>::random(
            [4, 3, 8, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let scores = d.forward(images.clone(), 1, 0.5);
        let (again, features) = d.forward_with_features(images, 1, 0.5);
        assert_eq!(features.dims()[0], 4);
        assert_eq!(features.dims()[1], d.output.output.weight.val().dims()[0]);
        // One pass gives the same scores, and the scores are the last layer on the features.
        let s: Vec<f32> = scores.into_data().to_vec().unwrap();
        assert_eq!(again.into_data().to_vec::<f32>().unwrap(), s);
        let from_features: Vec<f32> = d
            .output
            .output
            .forward(features)
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(from_features, s);
    }

    /// Reals and fakes in one batch score as in two passes, at every stage and alpha, with and
    /// without minibatch stddev.
    #[test]
    fn batched_kinds_score_as_separate_passes() {
        let device = Default::default();
        use crate::config::Minibatch;
        for (group, minibatch) in [
            (4, Minibatch::Stddev),
            (0, Minibatch::Stddev),
            (4, Minibatch::Discrimination),
        ] {
            let d = reseed(
                tiny_config(16)
                    .with_mbstd_group_size(group)
                    .with_minibatch(minibatch)
                    .with_mbdisc_kernels(4)
                    .with_mbdisc_kernel_dim(3)
                    .init_discriminator::<TestBackend>(&device),
                7,
            );
            for (stage, alpha) in [(0, 1.0), (1, 0.5), (2, 1.0)] {
                let r = 4 << stage;
                let reals = randn::<TestBackend, 4>([4, 3, r, r], 70 + stage as u64, &device);
                let fakes = randn::<TestBackend, 4>([4, 3, r, r], 80 + stage as u64, &device)
                    .mul_scalar(0.3);
                let batched = to_vec(d.forward_per_kind(
                    Tensor::cat(vec![reals.clone(), fakes.clone()], 0),
                    2,
                    stage,
                    alpha,
                ));
                let mut separate = to_vec(d.forward(reals, stage, alpha));
                separate.extend(to_vec(d.forward(fakes, stage, alpha)));
                assert_close(
                    &batched,
                    &separate,
                    1e-5,
                    1e-5,
                    &format!("{minibatch} group {group} stage {stage} alpha {alpha}"),
                );
            }
        }
    }

    #[test]
    fn output_shapes_at_every_stage_and_alpha() {
        let device = Default::default();
        let d = tiny_discriminator::<TestBackend>(16, 1);
        for stage in 0..3 {
            let r = 4 << stage;
            for n in [4, 5] {
                let x = randn::<TestBackend, 4>([n, 3, r, r], stage as u64, &device);
                for alpha in [0.0, 0.3, 1.0] {
                    let scores = d.forward(x.clone(), stage, alpha);
                    assert_eq!(scores.dims(), [n, 1]);
                    assert!(to_vec(scores).iter().all(|v| v.is_finite()));
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "expects [N, 3, 8, 8] images")]
    fn rejects_images_of_the_wrong_resolution() {
        let d = tiny_discriminator::<TestBackend>(16, 1);
        let x = Tensor::<TestBackend, 4>::zeros([2, 3, 16, 16], &Default::default());
        d.forward(x, 1, 1.0);
    }

    #[test]
    fn fade_in_starts_at_the_smaller_network_on_pooled_images() {
        let device = Default::default();
        let d = tiny_discriminator::<TestBackend>(16, 2);
        for stage in 1..3 {
            let r = 4 << stage;
            let x = randn::<TestBackend, 4>([4, 3, r, r], 10 + stage as u64, &device);
            let faded = to_vec(d.forward(x.clone(), stage, 0.0));
            let small = to_vec(d.forward(downsample2x(x.clone()), stage - 1, 1.0));
            assert_close(
                &faded,
                &small,
                1e-5,
                1e-5,
                &format!("alpha 0 at stage {stage}"),
            );
            let full = to_vec(d.forward(x, stage, 1.0));
            assert!(full.iter().zip(&small).any(|(a, b)| (a - b).abs() > 1e-3));
        }
    }

    /// `Σ w·J_D(x)·v` from forward mode must equal `⟨∇x Σ w·D(x), v⟩` from reverse mode.
    #[test]
    fn jvp_matches_reverse_mode() {
        let _turn = crate::test_utils::graph_turn();
        type AB = TestAutodiffBackend;
        let device = Default::default();
        let discrimination = tiny_config(16)
            .with_minibatch(crate::Minibatch::Discrimination)
            .with_mbdisc_kernels(4)
            .with_mbdisc_kernel_dim(3);
        for (config, seed) in [
            (tiny_config(16).with_mbstd_group_size(2), 1),
            (tiny_config(16).with_mbstd_group_size(4), 2),
            (tiny_config(16).with_mbstd_group_size(0), 3),
            (discrimination, 4),
        ] {
            let (group, layer) = (config.mbstd_group_size, config.minibatch);
            let d = reseed(config.init_discriminator::<AB>(&device), seed);
            for (stage, alpha) in [(0, 1.0), (1, 0.5), (2, 0.25), (2, 1.0)] {
                let r = 4 << stage;
                let x = randn::<AB, 4>([4, 3, r, r], 100 + seed, &device);
                let v = randn::<AB, 4>([4, 3, r, r], 200 + seed, &device);
                let w = randn::<AB, 2>([4, 1], 300 + seed, &device);

                let (y, dy) = d.forward_jvp(x.clone(), v.clone(), stage, alpha);
                assert_close(
                    &to_vec(y),
                    &to_vec(d.forward(x.clone(), stage, alpha)),
                    1e-6,
                    1e-5,
                    "primal",
                );
                let forward_mode = to_vec((dy * w.clone()).sum())[0];

                let x = x.require_grad();
                let grads = (d.forward(x.clone(), stage, alpha) * w).sum().backward();
                let reverse_mode = to_vec((x.grad(&grads).unwrap() * v.inner()).sum())[0];
                assert!(
                    (forward_mode - reverse_mode).abs() <= 1e-4 * (1.0 + reverse_mode.abs()),
                    "{layer} group {group} stage {stage} alpha {alpha}: {forward_mode} vs {reverse_mode}"
                );
            }
        }
    }

    #[test]
    fn paper_parameter_count_at_1024() {
        let d = ModelConfig::paper(1024).init_discriminator::<TestBackend>(&Default::default());
        // 9 fromRGB, 17 conv3x3 (+1 mbstd input map), dense 8192→512, dense 512→1 (Table 2 of
        // the paper: 23.1M)
        assert_eq!(d.num_params(), 23_087_249);
    }

    #[test]
    fn the_minibatch_layer_sets_the_parameter_count_and_couples_the_scores() {
        use crate::Minibatch;
        let device = Default::default();
        let count = |c: ModelConfig| c.init_discriminator::<TestBackend>(&device).num_params();
        let base = tiny_config(8).with_mbstd_group_size(0);
        let stddev = count(base.clone().with_mbstd_group_size(2));
        let none = count(base.clone().with_minibatch(Minibatch::None));
        // stddev adds one input map to the 4x4 conv: 3x3 weights per output map (8 of them)
        assert_eq!(stddev - none, 9 * 8);
        assert_eq!(count(base.clone()), none);
        // discrimination: T is nf(0)·B·C, the output layer reads B more inputs
        let (b, c) = (4, 3);
        let disc = base
            .with_minibatch(Minibatch::Discrimination)
            .with_mbdisc_kernels(b)
            .with_mbdisc_kernel_dim(c);
        assert_eq!(count(disc.clone()) - none, 8 * b * c + b);
        // every score depends on the whole batch: changing image 1 moves image 0's score
        let d = reseed(disc.init_discriminator::<TestBackend>(&device), 9);
        let x = randn::<TestBackend, 4>([4, 3, 8, 8], 10, &device).mul_scalar(0.3);
        let moved = x.clone().slice_assign(
            [1..2, 0..3, 0..8, 0..8],
            randn::<TestBackend, 4>([1, 3, 8, 8], 11, &device),
        );
        let (a, b) = (
            to_vec(d.forward(x, 1, 1.0)),
            to_vec(d.forward(moved, 1, 1.0)),
        );
        assert!((a[0] - b[0]).abs() > 1e-6, "{a:?} vs {b:?}");
    }

    #[test]
    fn records_round_trip() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let d = tiny_discriminator::<TestBackend>(8, 5);
        let x = randn::<TestBackend, 4>([4, 3, 8, 8], 6, &device);
        let expected = to_vec(d.forward(x.clone(), 1, 0.4));
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        d.save_file(dir.path().join("d"), &recorder).unwrap();
        let loaded = tiny_discriminator::<TestBackend>(8, 77)
            .load_file(dir.path().join("d"), &recorder, &device)
            .unwrap();
        assert_eq!(to_vec(loaded.forward(x, 1, 0.4)), expected);
    }
}
