//! Paths in the JSON reports (`eval --json`): a path that is not UTF-8 is written with its odd
//! bytes as `\xNN` (and `\` as `\\`), as a dataset's manifest writes file names
//! ([`pgan_data::escape_name`]), instead of failing the whole report after the measuring
//! (serde's own `Path` serializer refuses such a path); a UTF-8 path is written as it is.

use std::path::{Path, PathBuf};

use serde::Serializer;

/// `#[serde(serialize_with = "crate::json_paths::path")]`.
pub fn path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&text(path))
}

/// `#[serde(serialize_with = "crate::json_paths::optional_path")]`.
pub fn optional_path<S: Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_some(&text(path)),
        None => serializer.serialize_none(),
    }
}

/// The path as it is when it is UTF-8, else escaped.
fn text(path: &Path) -> String {
    match path.to_str() {
        Some(text) => text.to_owned(),
        None => pgan_data::escape_name(path.as_os_str().as_encoded_bytes()),
    }
}

#[cfg(test)]
mod tests {
    /// A report whose paths are not UTF-8 is written, their odd bytes escaped; others as they
    /// are.
    #[cfg(unix)]
    #[test]
    fn paths_that_are_not_utf8_are_escaped_not_refused() {
        use std::os::unix::ffi::OsStrExt;
        #[derive(serde::Serialize)]
        struct Report {
            #[serde(serialize_with = "super::path")]
            run: std::path::PathBuf,
            #[serde(serialize_with = "super::optional_path")]
            data: Option<std::path::PathBuf>,
            #[serde(serialize_with = "super::optional_path")]
            modes: Option<std::path::PathBuf>,
        }
        let odd = std::ffi::OsStr::from_bytes(b"/runs/d\xff.pgan");
        let report = Report {
            run: r"/runs/00000-é\x".into(),
            data: Some(odd.into()),
            modes: None,
        };
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"run":"/runs/00000-é\\x","data":"/runs/d\\xFF.pgan","modes":null}"#
        );
    }
}
