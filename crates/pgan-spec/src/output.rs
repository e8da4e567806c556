//! What a command that writes a file may replace: a regular file, or the regular file a
//! symbolic link points to, and nothing else. Outputs are written to a temp file and renamed
//! over the destination, and a rename replaces whatever is there: a device node such as
//! `/dev/full`, a FIFO, or the link itself.

use std::fs::FileType;
use std::io;
use std::path::{Path, PathBuf};

/// Refuses a file of more than 64 MiB whose data on disk is under an eighth of its length: a
/// sparse file (holes read as zeros), which no writer of pgan's files leaves; read, it would cost
/// its whole length in memory for nothing.
pub fn refuse_mostly_holes(meta: &std::fs::Metadata) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let on_disk = meta.blocks().saturating_mul(512);
        if meta.len() > 64 << 20 && on_disk < meta.len() / 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "it is {} bytes long but holds only {on_disk} on disk (a sparse file, mostly \
                     holes)",
                    meta.len()
                ),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Outputs this process found absent and was not told to replace (`--force`): a file that
/// appears there while the command works (another program's, the user's) is not replaced.
static EXPECTED_NEW: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Records that `target` was absent when this command checked it, and that nothing which
/// appears there since may be replaced.
pub fn expect_new(target: &Path) {
    EXPECTED_NEW
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(target.to_path_buf());
}

/// Whether `target` was recorded by [`expect_new`].
pub fn is_expected_new(target: &Path) -> bool {
    EXPECTED_NEW
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|t| t == target)
}

/// Renames a finished temporary file `tmp` into place: over `target` (the regular file a write
/// replaces, [`replaceable_file`]), or, for an output recorded by [`expect_new`] (`given` is the
/// path the command was given), only if nothing appeared at `given` meanwhile. A file that did
/// is kept and the error says so.
pub fn place(tmp: &Path, target: &Path, given: &Path) -> io::Result<()> {
    if !(is_expected_new(target) || is_expected_new(given)) {
        return std::fs::rename(tmp, target);
    }
    rename_no_replace(tmp, given).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file appeared there while this command ran, and is kept; pass --force to replace \
             it",
        ),
        _ => e,
    })
}

/// Held while a set of outputs is renamed into place ([`placing`]): a signal handler that takes
/// it ([`hold_renames`]) before removing the temporary files never leaves a set half renamed.
static RENAMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The outputs [`placing`] has put in place in this process, as their paths were given.
static PLACED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Runs `renames` (those that put the outputs `given` in place, each [`place`] or a rename) so
/// that a signal handler waits for all of them, and records the outputs when they succeed.
pub fn placing<T, E>(given: &[&Path], renames: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let _renaming = hold_renames();
    let placed = renames()?;
    let mut list = PLACED.lock().unwrap_or_else(|e| e.into_inner());
    list.extend(given.iter().map(|p| p.to_path_buf()));
    Ok(placed)
}

/// Waits until no set of outputs is being renamed into place, and keeps any from starting while
/// the guard lives (for a signal handler about to remove the temporary files and exit).
pub fn hold_renames() -> std::sync::MutexGuard<'static, ()> {
    RENAMING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether every one of `outputs` (paths as the command was given them) has been put in place
/// by [`placing`] in this process: a command that wrote them all has done its work, and a stop
/// signal that came meanwhile need not say otherwise.
pub fn all_placed(outputs: &[PathBuf]) -> bool {
    let list = PLACED.lock().unwrap_or_else(|e| e.into_inner());
    !outputs.is_empty() && outputs.iter().all(|out| list.contains(out))
}

/// Renames `from` to `to` only if `to` does not exist, in one step: the check before the work
/// began cannot see a file another process renamed there since.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_path = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
        };
        let (from_c, to_c) = (c_path(from)?, c_path(to)?);
        // SAFETY: two valid NUL-terminated paths, read only for the duration of the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from_c.as_ptr(),
                libc::AT_FDCWD,
                to_c.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        // A filesystem without RENAME_NOREPLACE answers EINVAL: link and unlink instead.
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(err);
        }
    }
    // A hard link fails if `to` exists, atomically.
    match std::fs::hard_link(from, to) {
        // Placed: a temp name left behind is the caller's clean-up, not a failed write.
        Ok(()) => {
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // A filesystem without hard links either (FAT, some network shares): look, then
        // rename, which leaves only the moment between the two.
        Err(_) if std::fs::symlink_metadata(to).is_ok() => {
            Err(io::Error::from(io::ErrorKind::AlreadyExists))
        }
        Err(_) => std::fs::rename(from, to),
    }
}

/// Creates the temporary file `tmp` (a name that carries this process's id, [`temp_prefix`]) for
/// writing, never through what is already there: a link someone placed at the predictable name
/// would otherwise have the write land in the file it points to. What is there (a leftover of
/// a process that had this id before, or a planted link) is removed, the link itself and never
/// what it points to, and the file created anew; a folder there, or something placed again in
/// between, is an error.
pub fn create_temp(tmp: &Path) -> io::Result<std::fs::File> {
    match std::fs::File::create_new(tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(tmp)?.is_dir() {
                return Err(e);
            }
            std::fs::remove_file(tmp)?;
            std::fs::File::create_new(tmp)
        }
        created => created,
    }
}

/// `.<name>.tmp-`, the start of the name of every temporary file or folder pgan writes an output
/// called `name` through (then `<pid>`, maybe `-<n>`): the CLI's signal handlers and a later
/// run's clean-up recognise them by it. A name too long to take the 6 bytes around it and a pid
/// and counter within a file name's 255 bytes keeps its first bytes and a hash of the whole (so
/// that outputs which differ only in their ends get their own temporaries).
pub fn temp_prefix(name: &std::ffi::OsStr) -> std::ffi::OsString {
    // `.` + `.tmp-` + the pid (at most 10 digits) + `-` + a counter.
    const ROOM: usize = MAX_NAME_BYTES - 6 - 10 - 1 - 10;
    let mut prefix = std::ffi::OsString::from(".");
    let bytes = name.as_encoded_bytes();
    if bytes.len() <= ROOM {
        prefix.push(name);
    } else {
        // FNV-1a, 64 bits: no dependency, and only a tie-breaker.
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let kept = &bytes[..ROOM - 17];
        // On Unix a name is bytes, and any prefix is a name; elsewhere the text is cut at a
        // character boundary.
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            prefix.push(std::ffi::OsStr::from_bytes(kept));
        }
        #[cfg(not(unix))]
        {
            let text = name.to_string_lossy();
            let cut = (0..=kept.len())
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            prefix.push(&text[..cut]);
        }
        prefix.push(format!("~{hash:016x}"));
    }
    prefix.push(".tmp-");
    prefix
}

/// The longest file name most file systems take (Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// The path a temp-file-and-rename write of `path` renames onto: `path` itself when nothing or
/// a regular file is there, the file at the end of a chain of symbolic links (so a link stays a
/// link), and an error naming the kind for a folder, device, FIFO or socket, or saying that the
/// name or path is too long for the file system.
pub fn replaceable_file(path: &Path) -> io::Result<PathBuf> {
    let mut target = path.to_path_buf();
    // Linux's own limit on symbolic links followed in one lookup.
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&target) {
            Ok(meta) => meta,
            Err(e) => {
                return match too_long(&target, &e) {
                    Some(too_long) => Err(too_long),
                    // Nothing there, or nothing this process can see (a file where a folder
                    // should be, no permission): the write itself will say what stops it.
                    None => Ok(target),
                };
            }
        };
        let ty = meta.file_type();
        if ty.is_file() {
            return Ok(target);
        }
        if ty.is_symlink() {
            let link = std::fs::read_link(&target)?;
            target = match target.parent() {
                Some(dir) => dir.join(link),
                None => link,
            };
            continue;
        }
        let what = if target == path {
            format!("it is {}", kind(&ty))
        } else {
            format!("it links to {}, {}", target.display(), kind(&ty))
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file (pgan only replaces regular files)"),
        ));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "too many levels of symbolic links",
    ))
}

/// The error for an output `path` whose lookup failed with `lookup`, when the file system
/// would refuse its name or path: said before any work, where the write would fail only at its
/// end, at the rename. The name is measured too, since a missing folder above it is reported
/// before a long name.
pub fn too_long(path: &Path, lookup: &io::Error) -> Option<io::Error> {
    let long_name = path.file_name().is_some_and(|n| n.len() > MAX_NAME_BYTES);
    (lookup.kind() == io::ErrorKind::InvalidFilename || long_name).then(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "its name or path is longer than the file system takes ({MAX_NAME_BYTES} bytes \
                 a name, on most)"
            ),
        )
    })
}

/// What a file that is not a regular one is, for messages.
pub fn kind(ty: &FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ty.is_fifo() {
            return "a FIFO";
        }
        if ty.is_char_device() {
            return "a character device";
        }
        if ty.is_block_device() {
            return "a block device";
        }
        if ty.is_socket() {
            return "a socket";
        }
    }
    if ty.is_dir() {
        "a folder"
    } else if ty.is_symlink() {
        "a symbolic link"
    } else if ty.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {

    /// A 250-byte output name (legal) still gets a temporary name within 255 bytes, one of its
    /// own among names that differ only at their ends; a short name keeps its plain form.
    #[test]
    fn temporary_names_fit_in_a_file_name() {
        use std::ffi::OsStr;
        let plain = temp_prefix(OsStr::new("faces.pgan"));
        assert_eq!(plain, ".faces.pgan.tmp-");
        let long_a = format!("{}a.pgan", "x".repeat(245));
        let long_b = format!("{}b.pgan", "x".repeat(245));
        let (a, b) = (
            temp_prefix(OsStr::new(&long_a)),
            temp_prefix(OsStr::new(&long_b)),
        );
        assert_ne!(a, b);
        for prefix in [a, b] {
            let full = format!("{}4294967295-4294967295", prefix.to_str().unwrap());
            assert!(full.len() <= 255, "{} bytes", full.len());
            assert!(full.starts_with(".xxxx") && full.contains(".tmp-"));
        }
    }

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgan-spec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A new output is placed only where nothing appeared meanwhile (a file that did is kept,
    /// and the temp stays for the caller to remove); an output the command may replace is.
    #[test]
    fn a_new_output_never_replaces_a_file_that_appeared_meanwhile() {
        let dir = temp_dir("place");
        let (tmp, new, old) = (dir.join(".t"), dir.join("new.html"), dir.join("old.html"));
        expect_new(&new);
        std::fs::write(&tmp, "ours").unwrap();
        std::fs::write(&new, "theirs").unwrap();
        let err = place(&tmp, &new, &new).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "theirs");
        std::fs::remove_file(&new).unwrap();
        place(&tmp, &new, &new).unwrap();
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "ours");
        assert!(!tmp.exists());
        std::fs::write(&tmp, "ours").unwrap();
        std::fs::write(&old, "theirs").unwrap();
        place(&tmp, &old, &old).unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "ours");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn regular_files_and_new_paths_are_replaced_links_followed_the_rest_refused() {
        let dir = temp_dir("output");
        let file = dir.join("a.png");
        assert_eq!(replaceable_file(&file).unwrap(), file, "nothing there yet");
        let longest = dir.join(format!("{}.png", "n".repeat(251)));
        assert_eq!(replaceable_file(&longest).unwrap(), longest);
        let err = replaceable_file(&dir.join(format!("{}.png", "n".repeat(252))))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("its name or path is longer than the file system takes"),
            "{err}"
        );
        // Also below a folder not made yet (the lookup stops at the folder).
        let err = replaceable_file(&dir.join("new").join(format!("{}.png", "n".repeat(252))))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("its name or path is longer"), "{err}");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(replaceable_file(&file).unwrap(), file);
        let err = replaceable_file(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with("it is a folder, not a regular file"),
            "{err}"
        );
        #[cfg(unix)]
        {
            let link = dir.join("link.png");
            std::os::unix::fs::symlink("a.png", &link).unwrap();
            assert_eq!(replaceable_file(&link).unwrap(), dir.join("a.png"));
            let dangling = dir.join("dangling.png");
            std::os::unix::fs::symlink("new/b.png", &dangling).unwrap();
            assert_eq!(replaceable_file(&dangling).unwrap(), dir.join("new/b.png"));
            let device = dir.join("null");
            std::os::unix::fs::symlink("/dev/null", &device).unwrap();
            let err = replaceable_file(&device).unwrap_err().to_string();
            assert_eq!(
                err,
                "it links to /dev/null, a character device, not a regular file \
                 (pgan only replaces regular files)"
            );
            let fifo = dir.join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            assert!(made.unwrap().success());
            let err = replaceable_file(&fifo).unwrap_err().to_string();
            assert!(err.starts_with("it is a FIFO"), "{err}");
            let looped = dir.join("loop");
            std::os::unix::fs::symlink("loop", &looped).unwrap();
            let err = replaceable_file(&looped).unwrap_err().to_string();
            assert_eq!(err, "too many levels of symbolic links");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
