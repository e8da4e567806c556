//! Atomic writes: nothing the user already has is replaced by a half-written file, and the
//! files of one command are replaced together.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp path beside `path` (same folder, so the final rename stays on one filesystem).
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    let mut name = pgan_spec::output::temp_prefix(path.file_name().unwrap_or_default());
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    name.push(format!("{}-{unique}", std::process::id()));
    path.with_file_name(name)
}

/// Writes several files so that a failure replaces none of them: each is written and synced to
/// a temp beside it first (only a regular file is ever replaced, the file at the end of a link
/// at its path; a device, FIFO, socket or folder is an error before anything is written), and only when every one is complete are they renamed into place (a
/// rename needs no space; one refused by the system after another succeeded is the only way to
/// a mixed set). An output the command found absent ([`pgan_spec::output::expect_new`]) is not
/// replaced by a file that appeared there meanwhile: the set is then not placed. Two paths that
/// lead to one file are an error before anything is written. On an error every temp is
/// removed; the error names the file it was for.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<(), (PathBuf, io::Error)> {
    let mut staged: Vec<(PathBuf, PathBuf, &Path)> = Vec::with_capacity(files.len());
    let result = (|| {
        // (the file a write replaces, the same canonicalized, the path given)
        let mut targets: Vec<(PathBuf, PathBuf, &Path)> = Vec::with_capacity(files.len());
        for (path, _) in files {
            let at = |e| (path.to_path_buf(), e);
            let target = pgan_spec::output::replaceable_file(path).map_err(at)?;
            let same = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
            if let Some((_, _, first)) = targets.iter().find(|(_, t, _)| *t == same) {
                return Err(at(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("it leads to the same file as {}", first.display()),
                )));
            }
            targets.push((target, same, path));
        }
        for ((target, _, path), (_, bytes)) in targets.into_iter().zip(files) {
            let at = |e| (path.to_path_buf(), e);
            let tmp = temp_beside(&target);
            staged.push((tmp.clone(), target, path));
            let mut file = pgan_spec::output::create_temp(&tmp).map_err(at)?;
            io::Write::write_all(&mut file, bytes).map_err(at)?;
            file.sync_all().map_err(at)?;
        }
        // Outputs that were absent at the command's check (and that it was not told to
        // replace) go first, each only if nothing appeared there meanwhile (a file, or a link
        // to one): should one have appeared, those already placed are taken back, and nothing
        // else is touched.
        let (new, replaced): (Vec<_>, Vec<_>) = staged.iter().partition(|(_, target, path)| {
            pgan_spec::output::is_expected_new(target) || pgan_spec::output::is_expected_new(path)
        });
        let given: Vec<&Path> = staged.iter().map(|(_, _, path)| *path).collect();
        pgan_spec::output::placing(&given, || {
            let mut placed: Vec<&Path> = Vec::new();
            for (tmp, target, path) in new {
                if let Err(e) = pgan_spec::output::place(tmp, target, path) {
                    for done in placed {
                        let _ = std::fs::remove_file(done);
                    }
                    return Err((path.to_path_buf(), e));
                }
                placed.push(path);
            }
            for (tmp, target, path) in replaced {
                std::fs::rename(tmp, target).map_err(|e| (path.to_path_buf(), e))?;
            }
            Ok(())
        })
    })();
    if result.is_err() {
        for (tmp, _, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
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
    write_all_atomic(&[(path, bytes)]).map_err(|(_, e)| e)
}

/// Refuses what is at `path`, where pgan keeps a file of its own (a run's log, metrics, lock,
/// config and sample sheets; a dataset's feature cache), unless it is a regular file or
/// nothing: through a link pgan would write into whatever it points to (a dataset, the user's
/// notes), and a FIFO or device would block the write or swallow it.
pub(crate) fn refuse_foreign_file(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symbolic link, and pgan writes its own files only where they are, never \
             through a link (remove the link)",
        )),
        Ok(meta) if !meta.is_file() => Err(not_regular(&meta)),
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The error for `meta`, not a regular file: "it is a FIFO, not a regular file".
pub(crate) fn not_regular(meta: &std::fs::Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "it is {}, not a regular file",
            pgan_spec::output::kind(&meta.file_type())
        ),
    )
}

/// Opens one of pgan's own files at `path` with `options` (see [`refuse_foreign_file`]): the
/// open follows no link and waits for no FIFO, and what it opened is checked again, so a file
/// swapped in after the look is refused too.
pub(crate) fn open_own_file(path: &Path, options: &mut std::fs::OpenOptions) -> io::Result<File> {
    refuse_foreign_file(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| {
        // ELOOP: a link appeared after the look.
        refuse_foreign_file(path).err().unwrap_or(e)
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok(file)
}

/// What [`reattach_appended`] did to keep an appended file at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reattached {
    /// The file had been removed: its contents were written back at the path from the open
    /// handle (a removal frees nothing a process holds open), and appending goes on there.
    WrittenBack,
    /// Another file had taken its place (an editor's save, a rotation): appending goes on in
    /// that one.
    Followed,
}

impl Reattached {
    /// The warning that says so, for `path`.
    pub(crate) fn warning(self, path: &Path) -> String {
        match self {
            Reattached::WrittenBack => format!(
                "{} was removed while the run wrote it; it was written back from the copy the run \
                 had open, and the run goes on appending to it",
                path.display()
            ),
            Reattached::Followed => format!(
                "{} was replaced by another file while the run wrote it; the run goes on \
                 appending to the new one",
                path.display()
            ),
        }
    }
}

/// Keeps `file`, opened from `path` for appending, the file at `path`: a file removed from under
/// it is written back (through a temporary file, never over one that appeared meanwhile), one
/// replaced by another regular file is followed (the new one is opened for appending; a link,
/// FIFO or device there is an error, as at the first open). Returns what it did (`None`: the path
/// still names the open file); on an error `file` is as it was.
pub(crate) fn reattach_appended(path: &Path, file: &mut File) -> io::Result<Option<Reattached>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let open = file.metadata()?;
        let what = match std::fs::symlink_metadata(path) {
            Ok(there) if (there.dev(), there.ino()) == (open.dev(), open.ino()) => return Ok(None),
            Ok(_) => Reattached::Followed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match write_back(path, file)? {
                true => Reattached::WrittenBack,
                // Another file appeared at the path meanwhile: followed, as a replacement is.
                false => Reattached::Followed,
            },
            Err(e) => return Err(e),
        };
        *file = open_own_file(path, std::fs::OpenOptions::new().append(true))?;
        Ok(Some(what))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, file);
        Ok(None)
    }
}

/// Copies the removed file `file` was opened as (through Linux's `/proc/self/fd`, which opens
/// a removed file for reading) back to `path`; `false` when a file appeared there meanwhile
/// (kept; the copy is not placed). Elsewhere it is an error: the rows are lost.
#[cfg(unix)]
fn write_back(path: &Path, file: &File) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut removed = File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let tmp = temp_beside(path);
        let result = (|| {
            let mut copy = pgan_spec::output::create_temp(&tmp)?;
            io::copy(&mut removed, &mut copy)?;
            copy.sync_all()?;
            pgan_spec::output::rename_no_replace(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, file);
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "it was removed, and this system cannot read it back from the open file",
        ))
    }
}

/// [`reattach_appended`] before a write to `file`, never an error: what it did, or that it could
/// not put the file back (said once while `detached` stays set; writing then goes on into the
/// open file), as a warning to say.
pub(crate) fn keep_appending(path: &Path, file: &mut File, detached: &mut bool) -> Option<String> {
    match reattach_appended(path, file) {
        Ok(done) => {
            *detached = false;
            done.map(|r| r.warning(path))
        }
        Err(e) if !*detached => {
            *detached = true;
            Some(detached_warning(path, file, &e))
        }
        Err(_) => None,
    }
}

/// The warning that an appended file's path no longer names the open `file` and
/// [`reattach_appended`] could not make it so (`e`): writing goes on into the open file, which
/// is still somewhere (the run's folder was moved) or nowhere at all (removed, and not written
/// back).
fn detached_warning(path: &Path, file: &File, e: &io::Error) -> String {
    #[cfg(unix)]
    let elsewhere = {
        use std::os::unix::fs::MetadataExt;
        file.metadata().is_ok_and(|m| m.nlink() > 0)
    };
    #[cfg(not(unix))]
    let elsewhere = {
        let _ = file;
        false
    };
    let goes = if elsewhere {
        "the file the run opened is still on disk elsewhere (its folder moved?), and the run goes \
         on writing there"
    } else {
        "the run goes on writing into the file it opened, which is removed: what it writes is \
         lost when the run ends"
    };
    format!(
        "{} is no longer at its path and cannot be put back ({e}); {goes}",
        path.display()
    )
}

/// [`write_atomic`] for one of pgan's own files (see [`refuse_foreign_file`]).
pub(crate) fn write_own_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    refuse_foreign_file(path)?;
    write_atomic(path, bytes)
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

    /// A link placed at the predictable temporary names beside an output (by anyone who can
    /// write in its folder) is not written through: the file it points to keeps its bytes, and
    /// the output is a file of its own.
    #[test]
    fn links_at_the_temporary_names_are_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("sheet.png");
        // The names the next writes here will take (other tests may take some of them first:
        // far more names than they write meanwhile).
        let next = COUNTER.load(Ordering::SeqCst);
        for n in next..next + 4096 {
            let mut name = pgan_spec::output::temp_prefix(out.file_name().unwrap());
            name.push(format!("{}-{n}", std::process::id()));
            std::os::unix::fs::symlink(&victim, out.with_file_name(name)).unwrap();
        }
        write_atomic(&out, b"the sheet").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&out).unwrap().is_symlink());
        assert_eq!(std::fs::read(&out).unwrap(), b"the sheet");
    }

    #[test]
    fn an_output_that_appeared_during_the_work_is_kept_unless_it_may_be_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sheet.png");
        // The command found it absent and was not told to replace it...
        pgan_spec::output::expect_new(&out);
        // ...and the user saved their notes there while it worked.
        std::fs::write(&out, b"the user's notes").unwrap();
        let (path, err) = write_atomic(&out, b"the sheet")
            .map_err(|e| (out.clone(), e))
            .unwrap_err();
        assert_eq!(path, out);
        assert!(
            err.to_string()
                .contains("appeared there while this command ran"),
            "{err}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"the user's notes");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        // An output it may replace (not recorded) is replaced.
        let other = dir.path().join("other.png");
        std::fs::write(&other, b"old").unwrap();
        write_atomic(&other, b"new").unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"new");
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
        let files: [(&Path, &[u8]); 3] = [(&a, b"new a"), (&nowhere, b"new c"), (&b, b"new b")];
        let (at, _) = write_all_atomic(&files).unwrap_err();
        assert_eq!(at, nowhere);
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert_eq!(std::fs::read(&b).unwrap(), b"old b");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // Two paths to one file (a link to the other) are refused before anything is written.
        let link = dir.path().join("link.gif");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let (at, e) = write_all_atomic(&[(&a, b"new a"), (&link, b"gif")]).unwrap_err();
        assert_eq!(at, link);
        assert!(e.to_string().contains("the same file as"), "{e}");
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        std::fs::remove_file(&link).unwrap();
        write_all_atomic(&[files[0], files[2]]).unwrap();
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
