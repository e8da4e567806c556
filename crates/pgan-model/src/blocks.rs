//! The per-resolution blocks of the generator and discriminator
//! (Karras et al. 2018, Table 2; `G_paper` / `D_paper` in the official code).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::equalized::{
    EqualizedConv2d, EqualizedConv2dConfig, EqualizedLinear, EqualizedLinearConfig, GAIN_RELU,
};
use crate::functional::{downsample2x, downsample2x_jvp, lrelu, lrelu_jvp, upsample2x};
use crate::minibatch_discrimination::{MinibatchDiscrimination, MinibatchDiscriminationConfig};
use crate::minibatch_stddev::{minibatch_stddev_jvp, minibatch_stddev_per_kind};
use crate::pixel_norm::pixel_norm;

/// Generator 4x4 block: latent → dense → 4x4 maps → conv 3x3.
#[derive(Module, Debug)]
pub struct GeneratorInputBlock<B: Backend> {
    /// Dense layer `latent → C·4·4` (gain `sqrt(2)/4`, as in the official code).
    pub dense: EqualizedLinear<B>,
    /// 3x3 convolution `C → C`.
    pub conv: EqualizedConv2d<B>,
    /// Number of feature maps `C`.
    pub channels: usize,
}

impl<B: Backend> GeneratorInputBlock<B> {
    /// Builds the block.
    pub fn new(latent_dim: usize, channels: usize, device: &B::Device) -> Self {
        Self {
            dense: EqualizedLinearConfig::new(latent_dim, channels * 16)
                .with_gain(GAIN_RELU / 4.0)
                .init(device),
            conv: EqualizedConv2dConfig::new([channels, channels], 3).init(device),
            channels,
        }
    }

    /// Pixel-normalised latents → dense → lrelu → pixel norm → conv → lrelu → pixel norm.
    ///
    /// # Shapes
    /// - latents: `[N, latent_dim]` (not yet normalised)
    /// - output: `[N, C, 4, 4]`
    pub fn forward(&self, latents: Tensor<B, 2>) -> Tensor<B, 4> {
        let [n, _] = latents.dims();
        let z = pixel_norm(latents);
        let x = self.dense.forward(z).reshape([n, self.channels, 4, 4]);
        let x = pixel_norm(lrelu(x));
        pixel_norm(lrelu(self.conv.forward(x)))
    }
}

/// Generator block that doubles the resolution: upsample → 2 × (conv 3x3, lrelu, pixel norm).
#[derive(Module, Debug)]
pub struct GeneratorUpBlock<B: Backend> {
    /// First 3x3 convolution `C_in → C_out` (after upsampling).
    pub conv1: EqualizedConv2d<B>,
    /// Second 3x3 convolution `C_out → C_out`.
    pub conv2: EqualizedConv2d<B>,
}

impl<B: Backend> GeneratorUpBlock<B> {
    /// Builds the block.
    pub fn new(c_in: usize, c_out: usize, device: &B::Device) -> Self {
        Self {
            conv1: EqualizedConv2dConfig::new([c_in, c_out], 3).init(device),
            conv2: EqualizedConv2dConfig::new([c_out, c_out], 3).init(device),
        }
    }

    /// # Shapes
    /// - x: `[N, C_in, H, W]`
    /// - output: `[N, C_out, 2H, 2W]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = upsample2x(x);
        let x = pixel_norm(lrelu(self.conv1.forward(x)));
        pixel_norm(lrelu(self.conv2.forward(x)))
    }
}

/// Discriminator block that halves the resolution: 2 × (conv 3x3, lrelu) → 2x2 average pool.
#[derive(Module, Debug)]
pub struct DiscriminatorDownBlock<B: Backend> {
    /// First 3x3 convolution `C_in → C_in`.
    pub conv1: EqualizedConv2d<B>,
    /// Second 3x3 convolution `C_in → C_out` (the width of the next lower resolution).
    pub conv2: EqualizedConv2d<B>,
}

impl<B: Backend> DiscriminatorDownBlock<B> {
    /// Builds the block.
    pub fn new(c_in: usize, c_out: usize, device: &B::Device) -> Self {
        Self {
            conv1: EqualizedConv2dConfig::new([c_in, c_in], 3).init(device),
            conv2: EqualizedConv2dConfig::new([c_in, c_out], 3).init(device),
        }
    }

    /// # Shapes
    /// - x: `[N, C_in, H, W]`
    /// - output: `[N, C_out, H/2, W/2]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = lrelu(self.conv1.forward(x));
        let x = lrelu(self.conv2.forward(x));
        downsample2x(x)
    }

    /// [`forward`](Self::forward) and its JVP along `dx`.
    pub fn forward_jvp(&self, x: Tensor<B, 4>, dx: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (x, dx) = self.conv1.forward_jvp(x, dx);
        let (x, dx) = lrelu_jvp(x, dx);
        let (x, dx) = self.conv2.forward_jvp(x, dx);
        let (x, dx) = lrelu_jvp(x, dx);
        downsample2x_jvp(x, dx)
    }
}

/// Discriminator 4x4 block: minibatch stddev → conv 3x3 → dense → (minibatch discrimination)
/// → dense to one score.
#[derive(Module, Debug)]
pub struct DiscriminatorOutputBlock<B: Backend> {
    /// 3x3 convolution `C (+1 with minibatch stddev) → C`.
    pub conv: EqualizedConv2d<B>,
    /// Dense `C·4·4 → nf(0)`.
    pub dense: EqualizedLinear<B>,
    /// Dense `nf(0) (+B with minibatch discrimination) → 1` with gain 1 (linear output).
    pub output: EqualizedLinear<B>,
    /// Minibatch-stddev group size; `<= 1` means the layer is absent.
    pub mbstd_group_size: usize,
    /// Minibatch discrimination on the dense layer's features, before `output` (absent in
    /// records written before it existed, which had none).
    pub minibatch_discrimination: Option<MinibatchDiscrimination<B>>,
}

impl<B: Backend> DiscriminatorOutputBlock<B> {
    /// Builds the block; `mbdisc` is minibatch discrimination's `(B, C)`, if any.
    pub fn new(
        channels: usize,
        dense_features: usize,
        mbstd_group_size: usize,
        mbdisc: Option<(usize, usize)>,
        device: &B::Device,
    ) -> Self {
        let extra = usize::from(mbstd_group_size > 1);
        let minibatch_discrimination = mbdisc.map(|(kernels, kernel_dim)| {
            MinibatchDiscriminationConfig::new(dense_features)
                .with_kernels(kernels)
                .with_kernel_dim(kernel_dim)
                .init(device)
        });
        let appended = mbdisc.map_or(0, |(kernels, _)| kernels);
        Self {
            conv: EqualizedConv2dConfig::new([channels + extra, channels], 3).init(device),
            dense: EqualizedLinearConfig::new(channels * 16, dense_features).init(device),
            output: EqualizedLinearConfig::new(dense_features + appended, 1)
                .with_gain(1.0)
                .init(device),
            mbstd_group_size,
            minibatch_discrimination,
        }
    }

    /// # Shapes
    /// - x: `[N, C, 4, 4]`
    /// - output: `[N, 1]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.score(self.features(x))
    }

    /// The scores of [`features`](Self::features): minibatch discrimination (when on), then
    /// `output`. With minibatch discrimination every score depends on the whole batch.
    ///
    /// # Shapes
    /// - features: `[N, nf(0)]`
    /// - output: `[N, 1]`
    pub fn score(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.minibatch_discrimination {
            Some(mbdisc) => self.output.forward(mbdisc.forward(features)),
            None => self.output.forward(features),
        }
    }

    /// [`score`](Self::score) of a batch of `kinds` equal parts, minibatch discrimination (when
    /// on) comparing each sample only with the samples of its own part.
    ///
    /// # Shapes
    /// - features: `[kinds·N, nf(0)]`
    /// - output: `[kinds·N, 1]`
    pub fn score_per_kind(&self, features: Tensor<B, 2>, kinds: usize) -> Tensor<B, 2> {
        match &self.minibatch_discrimination {
            Some(_) if kinds > 1 => {
                let n = features.dims()[0] / kinds;
                let parts = (0..kinds)
                    .map(|k| self.score(features.clone().narrow(0, k * n, n)))
                    .collect();
                Tensor::cat(parts, 0)
            }
            _ => self.score(features),
        }
    }

    /// The last hidden layer: the input of `output`, or of minibatch discrimination when on.
    ///
    /// # Shapes
    /// - x: `[N, C, 4, 4]`
    /// - output: `[N, nf(0)]`
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.features_per_kind(x, 1)
    }

    /// [`features`](Self::features) of a batch of `kinds` equal parts, the minibatch-stddev
    /// statistics of each part taken over that part alone
    /// ([`minibatch_stddev_per_kind`]).
    ///
    /// # Shapes
    /// - x: `[kinds·N, C, 4, 4]`
    /// - output: `[kinds·N, nf(0)]`
    pub fn features_per_kind(&self, x: Tensor<B, 4>, kinds: usize) -> Tensor<B, 2> {
        let x = if self.mbstd_group_size > 1 {
            minibatch_stddev_per_kind(x, self.mbstd_group_size, kinds)
        } else {
            x
        };
        let x = lrelu(self.conv.forward(x));
        lrelu(self.dense.forward(x.flatten(1, 3)))
    }

    /// [`forward`](Self::forward) and its JVP along `dx`.
    pub fn forward_jvp(&self, x: Tensor<B, 4>, dx: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (x, dx) = if self.mbstd_group_size > 1 {
            minibatch_stddev_jvp(x, dx, self.mbstd_group_size)
        } else {
            (x, dx)
        };
        let (x, dx) = self.conv.forward_jvp(x, dx);
        let (x, dx) = lrelu_jvp(x, dx);
        let (x, dx) = self.dense.forward_jvp(x.flatten(1, 3), dx.flatten(1, 3));
        let (x, dx) = lrelu_jvp(x, dx);
        let (x, dx) = match &self.minibatch_discrimination {
            Some(mbdisc) => mbdisc.forward_jvp(x, dx),
            None => (x, dx),
        };
        self.output.forward_jvp(x, dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};

    /// The output block as it was before minibatch discrimination existed.
    #[derive(Module, Debug)]
    struct OutputBlockBeforeMinibatchDiscrimination<B: Backend> {
        conv: EqualizedConv2d<B>,
        dense: EqualizedLinear<B>,
        output: EqualizedLinear<B>,
        mbstd_group_size: usize,
    }

    #[test]
    fn records_written_before_minibatch_discrimination_still_load() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let new = reseed(
            DiscriminatorOutputBlock::<TestBackend>::new(8, 8, 2, None, &device),
            1,
        );
        let old = OutputBlockBeforeMinibatchDiscrimination {
            conv: new.conv.clone(),
            dense: new.dense.clone(),
            output: new.output.clone(),
            mbstd_group_size: 2,
        };
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        old.save_file(dir.path().join("old"), &recorder).unwrap();
        let loaded = reseed(
            DiscriminatorOutputBlock::<TestBackend>::new(8, 8, 2, None, &device),
            2,
        )
        .load_file(dir.path().join("old"), &recorder, &device)
        .unwrap();
        assert!(loaded.minibatch_discrimination.is_none());
        let x = randn::<TestBackend, 4>([4, 8, 4, 4], 3, &device);
        assert_eq!(to_vec(loaded.forward(x.clone())), to_vec(new.forward(x)));
    }
}
