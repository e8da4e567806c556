//! Progressive GAN training on burn: the stage schedule, losses, EMA generator, checkpoints that
//! resume bit for bit, per-tick metrics and alarms, and rendering from checkpoints.
//!
//! One [`TrainOptions`] (a resolved [`TrainConfig`] plus session flags) flows from the CLI into
//! [`train`], which picks the backend and runs the loop in [`training_loop`]:
//!
//! ```no_run
//! use pgan_train::{train, TrainConfig, TrainOptions};
//! let mut config = TrainConfig::from_toml_file("configs/cpu-quick.toml".as_ref())?;
//! config.data.path = Some("runs/emoji.pgan".into());
//! let summary = train(TrainOptions::new(config))?;
//! println!("samples in {}", summary.run_dir.display());
//! # Ok::<(), pgan_train::TrainError>(())
//! ```
#![warn(missing_docs)]

pub mod adam;
pub mod alarms;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod dataset_watch;
mod distributed;
pub mod ema;
mod error;
pub mod eval;
pub mod export;
pub mod feature_matching;
pub mod fsutil;
pub mod host_read;
pub mod images;
pub mod inception_metrics;
pub mod instance_noise;
mod json_paths;
pub mod latents;
pub mod limits;
pub mod logistic;
pub mod loss;
mod nets;
pub mod plan;
pub mod preflight;
mod record_check;
pub mod render;
pub mod run_dir;
pub mod schedule;
pub mod stats;
pub mod step_parity;
pub mod training_loop;

pub use backend::{compiled_backends, dispatch, BackendJob};
pub use config::{BackendKind, TrainConfig};
/// `pgan orchestrator`: burn-collective's global orchestrator, which the nodes of a run join.
#[cfg(feature = "collective")]
pub use distributed::run_orchestrator;
pub use error::{Result, TrainError};
pub use export::{export_safetensors, ExportNet, ExportSummary};
pub use preflight::preflight;
pub use render::{RenderKind, RenderOutput, RenderRequest};
pub use schedule::{Phase, PhaseKind, StageSchedule};
pub use training_loop::{RunSummary, TrainOptions};

impl BackendJob for TrainOptions {
    type Output = RunSummary;
    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Result<RunSummary> {
        training_loop::train_on::<B>(self, device)
    }
}

/// Trains (or resumes) on the backend named in the config. Runs in one process take turns (see
/// [`training_loop::train_on`]).
pub fn train(options: TrainOptions) -> Result<RunSummary> {
    let (kind, device) = (options.config.run.backend, options.config.run.device);
    dispatch(kind, device, options)
}

/// Renders sheets, interpolations or timelines on the given backend.
pub fn render(request: RenderRequest, backend: BackendKind, device: usize) -> Result<RenderOutput> {
    dispatch(backend, device, request)
}
