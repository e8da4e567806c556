//! The crate-wide error type.
//!
//! Every variant names the file (or folder) involved and says what is wrong
//! with it, so the CLI can print the error as-is.

use std::path::PathBuf;

/// Errors produced while preparing, reading or sampling a pyramid file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system I/O call failed on `path`.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing, e.g. "cannot read folder".
        action: &'static str,
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The options passed to `prepare` are invalid.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// The input folder does not exist.
    #[error("input folder {0} does not exist")]
    MissingInput(PathBuf),

    /// The input path exists but is not a folder.
    #[error("input {0} is not a folder")]
    InputNotADir(PathBuf),

    /// The input folder contains no file at all.
    #[error("input folder {0} is empty")]
    EmptyInput(PathBuf),

    /// The input folder contains no image file at all.
    #[error("no image file in {dir} ({ignored} non-image files ignored)")]
    NoImages {
        /// The input folder.
        dir: PathBuf,
        /// Number of files ignored because of their extension.
        ignored: usize,
    },

    /// Every image in the input folder failed to decode or was filtered out.
    #[error("no decodable image in {dir} ({skipped} files skipped: {examples})")]
    NothingDecodable {
        /// The input folder.
        dir: PathBuf,
        /// Number of skipped files.
        skipped: usize,
        /// The first few skipped files with their reasons.
        examples: String,
    },

    /// Preparation was cancelled (a signal); the temporary file was removed.
    #[error("interrupted: {0} was not written")]
    Interrupted(PathBuf),

    /// The output file exists and `force` was not set.
    #[error("output {0} already exists")]
    OutputExists(PathBuf),

    /// The output cannot be created where requested.
    #[error("cannot write output {path}: {reason}")]
    OutputUnwritable {
        /// The requested output path.
        path: PathBuf,
        /// Why not.
        reason: String,
    },

    /// The path is a FIFO, device, socket or folder: only regular files are read.
    #[error("{path} is {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is ("a FIFO", "a character device", ...).
        kind: &'static str,
    },

    /// A file that is not a pgan dataset at all: empty, or its first bytes are not pgan's
    /// magic (another format). Not corruption of a dataset (`pgan verify` exits 2, not 1).
    #[error("{path} is not a pgan dataset: {reason}")]
    NotPyramid {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },

    /// A pyramid file is malformed (truncated, wrong version, corrupt).
    #[error("invalid pyramid file {path}: {reason}")]
    InvalidFile {
        /// The pyramid file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A level's stored checksum does not match its contents.
    #[error("corrupt pyramid file {path}: level {resolution}x{resolution} checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// The pyramid file.
        path: PathBuf,
        /// The level's resolution.
        resolution: u32,
        /// Checksum recorded in the header.
        stored: u32,
        /// Checksum of the bytes on disk.
        computed: u32,
    },

    /// A request to the reader or sampler is invalid (unknown level, bad index, ...).
    #[error("{path}: {reason}")]
    BadRequest {
        /// The pyramid file the request was made against.
        path: PathBuf,
        /// What is wrong with the request.
        reason: String,
    },
}

/// Result alias used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// Build an [`DataError::Io`] from an action, a path and the error.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        DataError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Build an [`DataError::InvalidFile`].
    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::InvalidFile {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Build an [`DataError::BadRequest`].
    pub(crate) fn request(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::BadRequest {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_and_problem() {
        let e = DataError::io(
            "cannot read folder",
            "/x/y",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(e.to_string(), "cannot read folder /x/y: gone");
        let e = DataError::invalid("/a.pgan", "truncated header");
        assert_eq!(
            e.to_string(),
            "invalid pyramid file /a.pgan: truncated header"
        );
        let e = DataError::ChecksumMismatch {
            path: "/a.pgan".into(),
            resolution: 8,
            stored: 1,
            computed: 2,
        };
        assert!(e.to_string().contains("level 8x8 checksum mismatch"));
        assert!(e.to_string().contains("/a.pgan"));
    }
}
