//! [`ModelConfig`]: the size of the generator and discriminator.

use burn::config::Config;
use burn::tensor::backend::Backend;

use crate::discriminator::Discriminator;
use crate::error::ModelConfigError;
use crate::generator::Generator;

/// The 4x4 base block and the paper's 1024x1024 network: the resolutions every pgan crate supports.
pub use pgan_spec::resolution::{MAX_RESOLUTION, MIN_RESOLUTION};

/// Size of a progressive GAN.
///
/// Channel widths follow the official ProGAN code (`networks.py`, `G_paper` /
/// `D_paper`): `nf(s) = min(fmap_base / 2^(s * fmap_decay), fmap_max)` where
/// `s = log2(res) - 1`. With the paper preset this gives 512 feature maps at
/// 4²–32², then 256, 128, 64, 32 and 16 at 64²…1024².
///
/// *Stages* count the resolutions from the bottom: stage 0 is 4x4 and stage
/// `k` is `4·2^k` pixels on a side.
///
/// Serialised with serde (every field is required when deserialising).
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// Final (largest) image resolution: a power of two in `4..=1024`.
    pub resolution: u32,
    /// Number of image channels: 3 (RGB) or 1 (grayscale).
    #[config(default = 3)]
    pub num_channels: usize,
    /// Dimension of the latent vector fed to the generator.
    #[config(default = 512)]
    pub latent_dim: usize,
    /// Overall multiplier for the number of feature maps (`fmap_base` in the official code).
    #[config(default = 8192)]
    pub fmap_base: usize,
    /// log2 feature map reduction when doubling the resolution (`fmap_decay`).
    #[config(default = 1.0)]
    pub fmap_decay: f64,
    /// Maximum number of feature maps in any layer (`fmap_max`).
    #[config(default = 512)]
    pub fmap_max: usize,
    /// Group size of the discriminator's minibatch-stddev layer; 0 or 1 disables the layer.
    #[config(default = 4)]
    pub mbstd_group_size: usize,
    /// What the discriminator's 4x4 block learns about the whole minibatch: minibatch stddev
    /// (the paper's), minibatch discrimination (Salimans et al. 2016) or nothing.
    /// Checkpoints written before this key existed are `stddev` (see [`Self::KEYS_ADDED_LATER`]).
    #[config(default = "Minibatch::Stddev")]
    pub minibatch: Minibatch,
    /// Minibatch discrimination's number of kernels `B` (the reference code's 100).
    #[config(default = 100)]
    pub mbdisc_kernels: usize,
    /// Minibatch discrimination's kernel dimension `C` (the reference code's 5).
    #[config(default = 5)]
    pub mbdisc_kernel_dim: usize,
}

/// The discriminator's minibatch layer (`model.minibatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Minibatch {
    /// Minibatch standard deviation (Karras et al. 2018, §3), group size `mbstd_group_size`.
    Stddev,
    /// Minibatch discrimination (Salimans et al. 2016, §3.2), `mbdisc_kernels` ×
    /// `mbdisc_kernel_dim`.
    Discrimination,
    /// No minibatch layer.
    None,
}

impl Minibatch {
    /// The config spelling of each kind.
    pub const NAMES: [&'static str; 3] = ["stddev", "discrimination", "none"];
}

impl std::fmt::Display for Minibatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stddev => "stddev",
            Self::Discrimination => "discrimination",
            Self::None => "none",
        })
    }
}

impl std::str::FromStr for Minibatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stddev" => Ok(Self::Stddev),
            "discrimination" => Ok(Self::Discrimination),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown minibatch layer '{other}' (expected {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl ModelConfig {
    /// Keys added to the serialised config after checkpoints were first written. Their
    /// defaults rebuild the networks those checkpoints hold (`minibatch = "stddev"`), so a
    /// reader of an old `state.json` fills them in from [`ModelConfig::new`] before
    /// deserialising (every key is required otherwise).
    pub const KEYS_ADDED_LATER: [&'static str; 3] =
        ["minibatch", "mbdisc_kernels", "mbdisc_kernel_dim"];

    /// The paper's network (Karras et al. 2018, Table 2) for the given final resolution.
    pub fn paper(resolution: u32) -> Self {
        Self::new(resolution)
    }

    /// A narrow network that trains on a CPU: `fmap_base` 2048, `fmap_max` 128, latent 128.
    pub fn cpu_small(resolution: u32) -> Self {
        Self::new(resolution)
            .with_fmap_base(2048)
            .with_fmap_max(128)
            .with_latent_dim(128)
    }

    /// Checks every field; the error names the field and the bad value.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        let r = self.resolution;
        if !pgan_spec::resolution::is_supported(r) {
            return Err(ModelConfigError::Resolution(r));
        }
        if self.num_channels != 1 && self.num_channels != 3 {
            return Err(ModelConfigError::Channels(self.num_channels));
        }
        if self.latent_dim == 0 {
            return Err(ModelConfigError::LatentDim);
        }
        if self.fmap_max == 0 || self.fmap_base == 0 {
            return Err(ModelConfigError::FeatureMaps {
                base: self.fmap_base,
                max: self.fmap_max,
            });
        }
        if !self.fmap_decay.is_finite() || self.fmap_decay < 0.0 {
            return Err(ModelConfigError::FmapDecay(self.fmap_decay));
        }
        if self.minibatch == Minibatch::Discrimination
            && (self.mbdisc_kernels == 0 || self.mbdisc_kernel_dim == 0)
        {
            return Err(ModelConfigError::MinibatchDiscrimination {
                kernels: self.mbdisc_kernels,
                kernel_dim: self.mbdisc_kernel_dim,
            });
        }
        // The narrowest layer sits at the top resolution; it must keep at least one map.
        let narrowest = self.nf_official(r.trailing_zeros() as usize - 1);
        if narrowest == 0 {
            return Err(ModelConfigError::NoFeatureMaps {
                base: self.fmap_base,
                decay: self.fmap_decay,
                resolution: r,
            });
        }
        Ok(())
    }

    /// Number of stages: `log2(resolution) - 1` (4x4 is stage 0).
    pub fn num_stages(&self) -> usize {
        self.resolution.trailing_zeros() as usize - 1
    }

    /// Index of the last stage (the full resolution).
    pub fn max_stage(&self) -> usize {
        self.num_stages() - 1
    }

    /// Resolution of a stage: `4 · 2^stage`.
    pub fn stage_resolution(&self, stage: usize) -> u32 {
        MIN_RESOLUTION << stage
    }

    /// The stage that outputs `resolution` pixels on a side, if it is a valid
    /// resolution of this model.
    pub fn stage_for_resolution(&self, resolution: u32) -> Option<usize> {
        if resolution.is_power_of_two() && (MIN_RESOLUTION..=self.resolution).contains(&resolution)
        {
            Some(resolution.trailing_zeros() as usize - 2)
        } else {
            None
        }
    }

    /// `nf(s)` exactly as in the official code, `s = log2(res) - 1`.
    pub fn nf_official(&self, s: usize) -> usize {
        let width = self.fmap_base as f64 / 2f64.powf(s as f64 * self.fmap_decay);
        (width as usize).min(self.fmap_max)
    }

    /// Feature maps of the blocks at `stage` (`nf(stage + 1)`).
    pub fn stage_channels(&self, stage: usize) -> usize {
        self.nf_official(stage + 1)
    }

    /// Whether the discriminator has a minibatch-stddev layer.
    pub fn mbstd_enabled(&self) -> bool {
        self.minibatch == Minibatch::Stddev && self.mbstd_group_size > 1
    }

    /// The minibatch-stddev group size the discriminator uses: 0 when the layer is absent.
    pub fn effective_mbstd_group_size(&self) -> usize {
        if self.mbstd_enabled() {
            self.mbstd_group_size
        } else {
            0
        }
    }

    /// `(B, C)` of the discriminator's minibatch-discrimination layer, if it has one.
    pub fn mbdisc_shape(&self) -> Option<(usize, usize)> {
        (self.minibatch == Minibatch::Discrimination)
            .then_some((self.mbdisc_kernels, self.mbdisc_kernel_dim))
    }

    /// Builds the generator with every block up to the full resolution.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails.
    pub fn init_generator<B: Backend>(&self, device: &B::Device) -> Generator<B> {
        self.validate().unwrap_or_else(|e| panic!("{e}"));
        Generator::new(self, device)
    }

    /// Builds the discriminator with every block up to the full resolution.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails.
    pub fn init_discriminator<B: Backend>(&self, device: &B::Device) -> Discriminator<B> {
        self.validate().unwrap_or_else(|e| panic!("{e}"));
        Discriminator::new(self, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_widths_match_table_2() {
        let c = ModelConfig::paper(1024);
        assert!(c.validate().is_ok());
        assert_eq!(c.num_stages(), 9);
        let widths: Vec<usize> = (0..c.num_stages()).map(|s| c.stage_channels(s)).collect();
        assert_eq!(widths, [512, 512, 512, 512, 256, 128, 64, 32, 16]);
        assert_eq!(c.nf_official(0), 512);
    }

    #[test]
    fn stages_and_resolutions() {
        let c = ModelConfig::cpu_small(32);
        assert_eq!(c.num_stages(), 4);
        assert_eq!(c.max_stage(), 3);
        for s in 0..c.num_stages() {
            let r = c.stage_resolution(s);
            assert_eq!(c.stage_for_resolution(r), Some(s));
        }
        assert_eq!(c.stage_resolution(0), 4);
        assert_eq!(c.stage_resolution(3), 32);
        assert_eq!(c.stage_for_resolution(64), None);
        assert_eq!(c.stage_for_resolution(12), None);
        assert_eq!(c.stage_channels(0), 128);
        assert_eq!(c.stage_channels(3), 128); // 2048 / 2^4
        assert_eq!(ModelConfig::cpu_small(64).stage_channels(4), 64);
    }

    #[test]
    fn validate_rejects_bad_values() {
        for bad in [0, 2, 12, 2048] {
            let e = ModelConfig::paper(bad).validate().unwrap_err();
            assert_eq!(e, ModelConfigError::Resolution(bad));
            assert!(e.to_string().starts_with("resolution "), "{e}");
        }
        let e = ModelConfig::paper(64)
            .with_num_channels(2)
            .validate()
            .unwrap_err();
        assert_eq!(e, ModelConfigError::Channels(2));
        assert!(ModelConfig::paper(64)
            .with_latent_dim(0)
            .validate()
            .is_err());
        assert!(matches!(
            ModelConfig::paper(1024).with_fmap_base(64).validate(),
            Err(ModelConfigError::NoFeatureMaps { .. })
        ));
        assert!(ModelConfig::paper(4).validate().is_ok());
    }

    #[test]
    fn serde_round_trip() {
        let c = ModelConfig::cpu_small(32).with_mbstd_group_size(2);
        let text = toml::to_string(&c).unwrap();
        let back: ModelConfig = toml::from_str(&text).unwrap();
        assert_eq!(c, back);
        let c = c
            .with_minibatch(Minibatch::Discrimination)
            .with_mbdisc_kernels(7);
        let back: ModelConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn minibatch_kinds_parse_and_validate() {
        for name in Minibatch::NAMES {
            let kind: Minibatch = name.parse().unwrap();
            assert_eq!(kind.to_string(), name);
        }
        assert_eq!(
            "batchnorm".parse::<Minibatch>().unwrap_err(),
            "unknown minibatch layer 'batchnorm' (expected stddev, discrimination, none)"
        );
        let disc = ModelConfig::paper(16).with_minibatch(Minibatch::Discrimination);
        disc.validate().unwrap();
        assert_eq!(disc.mbdisc_shape(), Some((100, 5)));
        assert!(!disc.mbstd_enabled());
        for (b, c) in [(0, 5), (100, 0)] {
            let e = disc
                .clone()
                .with_mbdisc_kernels(b)
                .with_mbdisc_kernel_dim(c)
                .validate()
                .unwrap_err();
            assert!(e.to_string().starts_with("mbdisc_kernels"), "{e}");
            assert!(e.to_string().contains(&format!("{b} and {c}")), "{e}");
        }
        // B and C only matter with the layer on.
        ModelConfig::paper(16)
            .with_mbdisc_kernels(0)
            .validate()
            .unwrap();
        let none = ModelConfig::paper(16).with_minibatch(Minibatch::None);
        assert!(!none.mbstd_enabled() && none.mbdisc_shape().is_none());
        assert_eq!(none.effective_mbstd_group_size(), 0);
    }
}
