//! The trainer's error type: every message says what failed and where (file, key, resolution).

use std::path::PathBuf;

/// Errors from configuring, running, checkpointing or rendering a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A config file or value is wrong.
    #[error("invalid config{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Config {
        /// The config file, when the error came from one.
        path: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
    /// A filesystem operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done (`read config`, `write checkpoint`, ...).
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The dataset cannot be used with this config.
    #[error("dataset {}: {message}", path.display())]
    Dataset {
        /// The `.pgan` file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading the dataset failed.
    #[error(transparent)]
    Data(#[from] pgan_data::DataError),
    /// A checkpoint is missing, corrupt or does not match the config.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A render or evaluation asks for something out of range (a size, a count, a value).
    #[error("{0}")]
    Request(String),
    /// Another process is training in this run directory.
    #[error(
        "run directory {} is in use by another pgan train ({}); wait for it to finish, or stop \
         it (Ctrl-C writes a checkpoint), before training in it",
        path.display(),
        pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"))
    )]
    RunInUse {
        /// The run directory.
        path: PathBuf,
        /// The owner's process id, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// `run.precision` asks for an operand type the chosen backend's convolutions lack.
    #[error(
        "run.precision = \"{precision}\" is not available on backend {backend}: bf16 \
         convolutions run only on cuda (pgan-cube's implicit GEMM); {backend} trains in f32"
    )]
    PrecisionUnsupported {
        /// The precision asked for (`bf16`).
        precision: String,
        /// `cpu`, `wgpu` or `cuda`.
        backend: String,
    },
    /// The requested backend is not usable.
    #[error("backend {backend}: {message}")]
    Backend {
        /// `cpu`, `wgpu` or `cuda`.
        backend: String,
        /// Why it cannot be used.
        message: String,
    },
    /// The backend is compiled in but has no device at this index, or its driver failed.
    #[error("backend {backend}: no usable device {index} ({reason})")]
    NoDevice {
        /// `wgpu` or `cuda`.
        backend: String,
        /// The device index asked for.
        index: usize,
        /// What the driver said.
        reason: String,
    },
    /// The dataset's top level is below the resolution the model trains to.
    #[error("dataset {}: its resolution {dataset}x{dataset} is below the config's model.resolution {model}x{model}", path.display())]
    DatasetBelowModel {
        /// The `.pgan` file.
        path: PathBuf,
        /// Its top resolution.
        dataset: u32,
        /// The config's `model.resolution`.
        model: u32,
    },
    /// Ctrl-C (or SIGTERM) during a wait before training began: the join of several nodes.
    /// The message says where and what was kept.
    #[error("{message}")]
    StoppedWaiting {
        /// What was waited for, by which node.
        message: String,
    },
    /// A measurement abandoned because the run was asked to stop (Ctrl-C during training).
    #[error("interrupted by a stop request")]
    Interrupted,
    /// Training diverged and could not be recovered.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// A metric could not be computed.
    #[error(transparent)]
    Metrics(#[from] pgan_metrics::MetricsError),
    /// The Inception network (FID, KID, precision/recall) could not be loaded or run.
    #[error(transparent)]
    Inception(#[from] pgan_inception::InceptionError),
    /// Another node's tick-end check of its dataset failed (changed under the run, or no
    /// longer readable): every node stops before a checkpoint of the tick's steps.
    #[error(
        "node {node} found its dataset changed under the run, or could not read it (its log \
         says which): every node stops here, without a checkpoint of the steps since {since}; \
         resume every node once that node's dataset is right again"
    )]
    NodeDataset {
        /// The node's rank.
        node: usize,
        /// The checkpoint the nodes' runs stand at.
        since: String,
    },
    /// Another node could not write its tick's outputs (its metrics row, sample sheet or
    /// checkpoint: a full disk, a damaged run folder): every node stops at the checkpoint all
    /// of them hold, this node's checkpoint of the tick (if it wrote one) removed.
    #[error(
        "node {node} could not write its outputs of the tick at {kimg:.3} kimg (its log says \
         why): every node stops at {since}, the newest checkpoint all of them hold{removed}; \
         resume every node from it once that node can write again"
    )]
    NodeOutputs {
        /// The node's rank.
        node: usize,
        /// Where the run stood at the tick's end.
        kimg: f64,
        /// The checkpoint the nodes' runs stand at.
        since: String,
        /// What this node removed to stay with the others ("" when it wrote nothing).
        removed: String,
    },
    /// A data-parallel peer or node failed, or the collective between them did.
    #[error("{peer}: {message}")]
    Peer {
        /// Which peer, node or part says it (`peer 1`, `node 1` for this node, `orchestrator`).
        peer: String,
        /// What went wrong.
        message: String,
    },
    /// A generator drew images with NaN or infinite values (finite weights whose activations
    /// overflow): nothing drawn or measured from them would mean anything.
    #[error(
        "the generator's images hold {count} non-finite values (NaN or infinite) in a batch of \
         {total}: its weights are finite but its activations overflow, so this generator has \
         diverged and nothing was drawn or measured from it (an earlier checkpoint may be sound)"
    )]
    NonFiniteImages {
        /// Values that are NaN or infinite.
        count: usize,
        /// Values in the batch they were found in.
        total: usize,
    },
    /// Reading or writing an image failed.
    #[error("cannot {action} image {}: {message}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// `read` or `write`.
        action: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

/// Shorthand for an [`TrainError::Io`] mapper: `.map_err(io_err(path, "write"))`.
pub(crate) fn io_err<'a>(
    path: &'a std::path::Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}
