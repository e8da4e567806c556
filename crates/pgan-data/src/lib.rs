//! Data side of pgan: everything between a folder of images and the
//! `f32` minibatches the trainer consumes.
//!
//! * [`prepare`] ingests a folder (PNG, JPEG, WebP, BMP, GIF, TIFF) into one
//!   `.pgan` file holding every ProGAN resolution level (4x4 .. top) as
//!   contiguous, 4096-byte-aligned `[N, H, W, C]` u8 blocks with CRC-32s and a
//!   JSON manifest. The layout is specified in `docs/FORMAT.md`.
//! * [`PyramidReader`] memory-maps such a file, validates it and gives
//!   zero-copy access to levels and images.
//! * [`BatchSampler`] draws deterministic, resumable, optionally mirrored and
//!   cross-faded batches as NCHW `f32` in `[-1, 1]`.
#![warn(missing_docs)]

mod error;
mod files;
pub mod format;
mod ingest;
mod manifest;
mod map_guard;
pub mod memory;
pub mod pyramid;
mod reader;
mod resize;
mod sampler;
mod shuffle;
#[doc(hidden)]
pub mod test_files;
mod tiff_fallback;
mod writer;

pub use error::{DataError, Result};
pub use files::{
    crc32_of_regular_file, process_alive, read_regular_file, read_regular_file_at_most,
    remove_own_temps, remove_stale_temps, remove_stale_temps_in, temp_path_for,
};
pub use format::Header;
pub use ingest::{
    decode, decode_held, has_image_extension, to_channels, walk, Fit, Walk, DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
};
pub use manifest::{escape_name, printable, unescape_name, Manifest, ManifestOptions};
pub use reader::{FileStamp, LevelCheck, PyramidReader, VerifyReport};
pub use sampler::{fade_between, hwc_to_chw_f32, Batch, BatchSampler};
pub use writer::{
    prepare, prepare_cancellable, report_path, temp_path, PrepareOptions, PrepareSummary,
    DEFAULT_BACKGROUND,
};
