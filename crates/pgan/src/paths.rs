//! The two path rules every command shares: an output file's missing folders are created, and
//! a checkpoint argument that names a run directory means its newest intact checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Creates the folders above `out` that do not exist yet, so every command that writes a file
/// (prepare, render, eval --json, export, report) treats a new folder alike. `flag` names the
/// argument in the error.
pub fn create_parent_dirs(out: &Path, flag: &str) -> Result<()> {
    match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent)
            .with_context(|| format!("{flag}: cannot create the folder {}", parent.display())),
        _ => Ok(()),
    }
}

/// The checkpoint `source` means (a checkpoint folder, or a run directory's newest checkpoint
/// that passes its checks); each newer one skipped as corrupt is a warning on stderr.
pub fn checkpoint_of(source: &Path) -> Result<PathBuf> {
    let found = pgan_train::checkpoint::find_checkpoint(source)?;
    for warning in found.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(found.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_output_folders_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b/c.json");
        create_parent_dirs(&out, "--json").unwrap();
        assert!(dir.path().join("a/b").is_dir());
        create_parent_dirs(Path::new("c.json"), "--json").unwrap();
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let err = create_parent_dirs(&blocked.join("c.json"), "--out").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("--out: cannot create"),
            "{err:#}"
        );
    }
}
