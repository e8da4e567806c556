//! Errors of the Inception crate: every message names the file and what is wrong with it.

use std::path::PathBuf;

/// Result with [`InceptionError`].
pub type Result<T> = std::result::Result<T, InceptionError>;

/// What can go wrong loading or converting the Inception weights.
#[derive(Debug, thiserror::Error)]
pub enum InceptionError {
    /// The converted weights file does not exist.
    #[error(
        "inception weights not found at {}: run scripts/fetch-inception.sh to download and convert \
         them, or point ${} at the converted file",
        path.display(),
        crate::WEIGHTS_ENV
    )]
    WeightsMissing {
        /// The path looked at.
        path: PathBuf,
    },
    /// The weights file exists but is not the expected network.
    #[error("corrupt inception weights {}: {message} (run scripts/fetch-inception.sh again)", path.display())]
    WeightsCorrupt {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A TorchScript archive could not be read.
    #[error("cannot read TorchScript archive {}: {message}", path.display())]
    TorchScript {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Images the network cannot take.
    #[error("bad images for the inception network: {0}")]
    Input(String),
}

impl InceptionError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InceptionError::Io {
            path: path.into(),
            source,
        }
    }
}
