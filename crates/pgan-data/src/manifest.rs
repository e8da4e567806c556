//! The JSON manifest stored inside every pyramid file: where the images came
//! from (in stored order) and how they were prepared.

use serde::{Deserialize, Serialize};

use crate::ingest::Fit;

/// The options that shaped the stored pixels, recorded for reproducibility.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestOptions {
    /// Top-level resolution.
    pub resolution: u32,
    /// 1 (luma) or 3 (RGB).
    pub channels: u8,
    /// How images were made square.
    pub fit: Fit,
    /// Alpha-compositing and padding colour.
    pub background: [u8; 3],
    /// Images with a shorter side below this were skipped.
    pub min_size: Option<u32>,
    /// Seed of the stored-order shuffle, if any.
    pub shuffle_seed: Option<u64>,
}

/// Provenance of a pyramid file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of the pgan-data crate that wrote the file.
    pub pgan_version: String,
    /// Creation time, seconds since the Unix epoch (UTC).
    pub created_unix: u64,
    /// The input folder as given on the command line.
    pub input_dir: String,
    /// Options used.
    pub options: ManifestOptions,
    /// Number of files skipped (undecodable or too small).
    pub skipped: usize,
    /// Number of stored images that had to be upscaled.
    pub upscaled: usize,
    /// Source files relative to `input_dir` (`/`-separated), in stored order.
    pub files: Vec<String>,
}
