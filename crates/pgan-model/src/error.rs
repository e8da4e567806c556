//! Why a [`ModelConfig`](crate::ModelConfig) cannot build a network. Each message starts with the
//! field's name, so a caller that reads the config from a file can prefix its section
//! (`model.latent_dim must be ...`).

use crate::config::{MAX_RESOLUTION, MIN_RESOLUTION};

/// A [`ModelConfig`](crate::ModelConfig) field with a value no network can be built from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelConfigError {
    /// `resolution` is not a power of two in the supported range.
    #[error("resolution must be a power of two in {MIN_RESOLUTION}..={MAX_RESOLUTION}, got {0}")]
    Resolution(u32),
    /// `num_channels` is neither 1 (grey) nor 3 (RGB).
    #[error("num_channels must be 1 or 3, got {0}")]
    Channels(usize),
    /// `latent_dim` is 0.
    #[error("latent_dim must be at least 1")]
    LatentDim,
    /// `fmap_base` or `fmap_max` is 0.
    #[error("fmap_base and fmap_max must be at least 1, got {base} and {max}")]
    FeatureMaps {
        /// `fmap_base`.
        base: usize,
        /// `fmap_max`.
        max: usize,
    },
    /// `fmap_decay` is negative or not finite.
    #[error("fmap_decay must be finite and >= 0, got {0}")]
    FmapDecay(f64),
    /// The widths shrink to zero feature maps before the top resolution.
    #[error("fmap_base {base} with fmap_decay {decay} leaves no feature maps at {resolution}x{resolution}")]
    NoFeatureMaps {
        /// `fmap_base`.
        base: usize,
        /// `fmap_decay`.
        decay: f64,
        /// The top resolution.
        resolution: u32,
    },
    /// Minibatch discrimination with no kernels or kernels of no dimension.
    #[error("mbdisc_kernels and mbdisc_kernel_dim must be at least 1 with minibatch = \"discrimination\", got {kernels} and {kernel_dim}")]
    MinibatchDiscrimination {
        /// `mbdisc_kernels`.
        kernels: usize,
        /// `mbdisc_kernel_dim`.
        kernel_dim: usize,
    },
}
