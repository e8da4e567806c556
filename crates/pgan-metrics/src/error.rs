//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while measuring images or writing a synthetic dataset.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Image data does not match the shape it claims, or the shape is unusable.
    #[error("bad image shape: {0}")]
    Shape(String),
    /// A parameter is out of its supported range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Two inputs that must agree (image sizes, channel counts, descriptor sets) do not.
    #[error("mismatched inputs: {0}")]
    Mismatch(String),
    /// The synthetic dataset's output directory exists and is not empty.
    #[error("output directory {0} exists and is not empty")]
    OutputNotEmpty(PathBuf),
    /// A file could not be read or written.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An image file could not be decoded or encoded.
    #[error("image error on {path}: {source}")]
    Image {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
    /// A JSON file could not be parsed or written.
    #[error("json error on {path}: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// Result with [`MetricsError`].
pub type Result<T> = std::result::Result<T, MetricsError>;

impl MetricsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MetricsError::Io {
            path: path.into(),
            source,
        }
    }

    /// The error with a path inside `from` (a temporary folder, removed since) named inside
    /// `to` instead, the output it was written for.
    pub(crate) fn moved(self, from: &std::path::Path, to: &std::path::Path) -> Self {
        let renamed = |path: PathBuf| match path.strip_prefix(from) {
            Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
            Ok(rest) => to.join(rest),
            Err(_) => path,
        };
        match self {
            MetricsError::Io { path, source } => MetricsError::Io {
                path: renamed(path),
                source,
            },
            MetricsError::Image { path, source } => MetricsError::Image {
                path: renamed(path),
                source,
            },
            MetricsError::Json { path, source } => MetricsError::Json {
                path: renamed(path),
                source,
            },
            other => other,
        }
    }
}
