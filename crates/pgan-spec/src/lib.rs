//! What pgan's crates agree on, in one place with no dependencies but libc: the resolutions a
//! dataset and a network can have ([`resolution`]), the keys the trainer writes to a run's
//! `metrics.jsonl` and the report reads back ([`metrics`]), the names of a run's sample sheets
//! ([`run_files`]), and what an output file may replace ([`output`]).
//!
//! ```
//! use pgan_spec::{metrics, resolution};
//! assert!(resolution::is_supported(256) && !resolution::is_supported(96));
//! assert!(metrics::is_written(metrics::LOSS_D));
//! ```
#![warn(missing_docs)]

pub mod metrics;
pub mod output;
pub mod resolution;
pub mod run_files;
