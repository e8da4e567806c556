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

pub mod alarms;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod ema;
mod error;
pub mod eval;
pub mod export;
mod fsutil;
pub mod images;
pub mod loss;
pub mod plan;
pub mod render;
pub mod run_dir;
pub mod schedule;
pub mod stats;
pub mod training_loop;

pub use backend::{compiled_backends, dispatch, BackendJob};
pub use config::{BackendKind, TrainConfig};
pub use error::{Result, TrainError};
pub use export::{export_safetensors, ExportNet, ExportSummary};
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

/// Trains (or resumes) on the backend named in the config.
///
/// Runs in one process take turns: burn 0.21's autodiff keeps every graph in one process-global
/// registry whose cleanup after each backward pass also visits other threads' graphs, and two
/// trainings on different threads were measured to diverge at the bit level (the CI failure of
/// `a_run_stopped_and_resumed_matches_an_uninterrupted_run_bit_for_bit`, reproduced here with
/// `RAYON_NUM_THREADS=1`, so not a parallel-reduction effect). Exact resume matters more than
/// running two trainings side by side in one process.
pub fn train(options: TrainOptions) -> Result<RunSummary> {
    static ONE_TRAINING_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panic in another training poisons the lock but leaves nothing shared half-written.
    let _turn = ONE_TRAINING_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (kind, device) = (options.config.run.backend, options.config.run.device);
    dispatch(kind, device, options)
}

/// Renders sheets, interpolations or timelines on the given backend.
pub fn render(request: RenderRequest, backend: BackendKind, device: usize) -> Result<RenderOutput> {
    dispatch(backend, device, request)
}
