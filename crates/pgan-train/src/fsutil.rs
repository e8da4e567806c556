//! Atomic writes: nothing the user already has is replaced by a half-written file; and reads of
//! files that must be regular ones (a FIFO there would block for ever).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The bytes of `path`, which must be a regular file (or a link to one): reading a FIFO would
/// wait for a writer for ever, a device might never end. Anything else is an error saying what
/// it is.
pub(crate) fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is {}, not a regular file",
                pgan_spec::output::kind(&meta.file_type())
            ),
        ));
    }
    std::fs::read(path)
}

/// A temp path beside `path` (same folder, so the final rename stays on one filesystem).
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    let mut name = pgan_spec::output::temp_prefix(path.file_name().unwrap_or_default());
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    name.push(format!("{}-{unique}", std::process::id()));
    path.with_file_name(name)
}

/// Writes a file through `fill`, syncs it and renames it over `path` (over the file a symbolic
/// link at `path` points to); on any error the temp file is removed and `path` is untouched.
/// Only a regular file is ever replaced: a device, FIFO, socket or folder at `path` is an error
/// before anything is written.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let target = pgan_spec::output::replaceable_file(path)?;
    let tmp = temp_beside(&target);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        fill(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes several files so that a failure replaces none of them: each is written and synced to
/// a temp beside it first, and only when every one is complete are they renamed into place (a
/// rename needs no space). On an error every temp is removed; the error names the file it was
/// for.
pub fn write_all_atomic(files: &[(PathBuf, Vec<u8>)]) -> Result<(), (PathBuf, io::Error)> {
    let mut staged: Vec<(PathBuf, PathBuf, &Path)> = Vec::with_capacity(files.len());
    let result = (|| {
        for (path, bytes) in files {
            let at = |e| (path.clone(), e);
            let target = pgan_spec::output::replaceable_file(path).map_err(at)?;
            let tmp = temp_beside(&target);
            staged.push((tmp.clone(), target, path));
            let mut file = File::create(&tmp).map_err(at)?;
            io::Write::write_all(&mut file, bytes).map_err(at)?;
            file.sync_all().map_err(at)?;
        }
        for (tmp, target, path) in &staged {
            std::fs::rename(tmp, target).map_err(|e| (path.to_path_buf(), e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

/// Writes `values` as a float32 NumPy `.npy` file of `shape`, atomically.
pub(crate) fn write_npy_f32(path: &Path, values: &[f32], shape: &[u64]) -> io::Result<()> {
    write_atomic(path, &npy_f32_bytes(values, shape)?)
}

/// The float32 NumPy `.npy` file of `values` in `shape`.
pub(crate) fn npy_f32_bytes(values: &[f32], shape: &[u64]) -> io::Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut bytes)
        .begin_nd()?;
    writer.extend(values.iter().copied())?;
    writer.finish()?;
    Ok(bytes)
}

/// Writes bytes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| io::Write::write_all(f, bytes))
}

/// Builds a folder through `fill` under a temp name and renames it to `path` when complete.
pub(crate) fn write_dir_atomic<E>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
    io_error: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    let tmp = temp_beside(path);
    std::fs::create_dir_all(&tmp).map_err(&io_error)?;
    let result = fill(&tmp).and_then(|()| {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(&io_error)?;
        }
        std::fs::rename(&tmp, path).map_err(&io_error)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txt");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |_| Err(io::Error::other("disk full")));
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn several_files_are_replaced_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let b = dir.path().join("b.npy");
        write_atomic(&a, b"old a").unwrap();
        write_atomic(&b, b"old b").unwrap();
        // The second file's temp cannot be made (no such folder): the first, already written
        // to its temp, is not replaced either, and no temp is left.
        let nowhere = dir.path().join("missing").join("c.gif");
        let files = [
            (a.clone(), b"new a".to_vec()),
            (nowhere.clone(), b"new c".to_vec()),
            (b.clone(), b"new b".to_vec()),
        ];
        let (at, _) = write_all_atomic(&files).unwrap_err();
        assert_eq!(at, nowhere);
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert_eq!(std::fs::read(&b).unwrap(), b"old b");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        write_all_atomic(&[files[0].clone(), files[2].clone()]).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new a");
        assert_eq!(std::fs::read(&b).unwrap(), b"new b");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn only_regular_files_are_replaced_and_links_stay_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.json");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let err = write_atomic(&fifo, b"x").unwrap_err().to_string();
        assert!(err.starts_with("it is a FIFO, not a regular file"), "{err}");
        let null = dir.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        assert!(write_atomic(&null, b"x").is_err());
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        // Nothing was left behind: the two links, the target, the FIFO.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }

    #[test]
    fn a_failed_folder_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt");
        let r: Result<(), io::Error> = write_dir_atomic(
            &path,
            |tmp| {
                std::fs::write(tmp.join("a"), b"1")?;
                Err(io::Error::other("boom"))
            },
            |e| e,
        );
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_dir_atomic(&path, |tmp| std::fs::write(tmp.join("a"), b"1"), |e| e).unwrap();
        assert_eq!(std::fs::read(path.join("a")).unwrap(), b"1");
    }
}
