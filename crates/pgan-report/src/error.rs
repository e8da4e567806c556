//! The report's error type.

use std::path::PathBuf;

/// Why a report could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run directory does not exist (or is not a directory).
    #[error("run directory {0} does not exist or is not a directory")]
    MissingRunDir(PathBuf),

    /// The run directory has no `metrics.jsonl`: it is not a training run,
    /// or the trainer has not written its first tick yet.
    #[error("no metrics file at {0} (is this a training run directory?)")]
    MissingMetrics(PathBuf),

    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// plotters failed to draw a chart (should not happen with the SVG backend).
    #[error("drawing chart '{chart}' failed: {message}")]
    Chart {
        /// The chart's title.
        chart: String,
        /// The drawing error.
        message: String,
    },
}

impl ReportError {
    /// Wraps an i/o error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`ReportError`].
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_the_path() {
        let e = ReportError::MissingRunDir("/nope".into());
        assert!(e.to_string().contains("/nope"));
        let e = ReportError::io("x/y", std::io::Error::other("boom"));
        assert_eq!(e.to_string(), "i/o error on x/y: boom");
    }
}
