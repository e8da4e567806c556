//! ProGAN networks (Karras et al. 2018, "Progressive Growing of GANs for
//! Improved Quality, Stability, and Variation"; official code
//! <https://github.com/tkarras/progressive_growing_of_gans>), written for burn.
//!
//! This crate owns:
//! - [`ModelConfig`]: network size, the paper and CPU presets, stage ↔ resolution;
//! - [`Generator`] and [`Discriminator`], built with every block up to the
//!   final resolution so the checkpoint layout never changes, with the
//!   fade-in of a new resolution controlled by `(stage, alpha)`;
//! - the layers: equalized learning rate ([`equalized`]), pixel norm,
//!   minibatch stddev, minibatch discrimination, resampling, each with a forward-mode derivative (JVP);
//! - [`penalty`]: WGAN-GP and R1 penalties whose parameter gradients are
//!   exact without double backward;
//! - [`kernels`]: the one dispatch point to a backend's own kernels (`pgan-flex` on the CPU,
//!   also for the trainer's Adam step); the layers stay generic over `B: Backend`.
//!
//! Losses, optimisers, data and the training schedule live elsewhere.

#![warn(missing_docs)]

pub mod blocks;
pub mod config;
pub mod discriminator;
pub mod equalized;
mod error;
pub mod functional;
pub mod generator;
pub mod kernels;
pub mod minibatch_discrimination;
pub mod minibatch_stddev;
pub mod penalty;
pub mod pixel_norm;

pub use config::{Minibatch, ModelConfig};
pub use discriminator::Discriminator;
pub use error::ModelConfigError;
pub use generator::Generator;
pub use penalty::Penalty;

#[cfg(test)]
pub(crate) mod test_utils;
#[cfg(all(test, feature = "wgpu"))]
mod wgpu_parity;
