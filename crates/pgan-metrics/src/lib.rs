//! GAN evaluation on plain `f32` arrays (no burn): metrics that need no downloaded network, and
//! the feature-space metrics of the Inception network's features:
//!
//! * [`swd`]: sliced Wasserstein distance on Laplacian-pyramid patch descriptors, with the
//!   parameters of ProGAN's official `metrics/sliced_wasserstein.py`, batch-streamable through
//!   [`SwdAccumulator`];
//! * [`msssim`]: multi-scale SSIM between pairs of generated images, the diversity measure
//!   (higher mean MS-SSIM among generated pairs = less diverse);
//! * [`mod@synth`]: a synthetic dataset with K known, clearly distinct modes (shape x colour x
//!   position), written as PNGs plus labels and a spec;
//! * [`modes`]: a prototype classifier for that spec and mode-coverage statistics;
//! * [`fid`], [`kid`], [`mod@precision_recall`]: FID, KID and improved precision/recall on feature
//!   vectors (the Inception features come from `pgan-inception`).
//!
//! Images are exchanged as [`ImageSet`] (NCHW, values in [-1, 1]).
#![warn(missing_docs)]

pub mod error;
pub mod fid;
pub mod image_set;
pub mod kid;
pub mod modes;
pub mod msssim;
pub mod precision_recall;
pub mod pyramid;
pub mod resample;
pub mod swd;
pub mod synth;

pub use error::{MetricsError, Result};
pub use fid::{frechet_distance, FeatureStats};
pub use image_set::ImageSet;
pub use kid::{kernel_inception_distance, KidConfig};
pub use modes::{coverage, AttributeShares, CoverageReport, ModeClassifier};
pub use msssim::{ms_ssim, pairwise_ms_ssim, MsSsimReport};
pub use precision_recall::{precision_recall, PrecisionRecall};
pub use swd::{sliced_wasserstein, SwdAccumulator, SwdConfig, SwdReport};
pub use synth::{synth, ModeSpec, SynthSummary};
