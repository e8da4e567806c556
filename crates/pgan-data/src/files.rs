//! File-system helpers shared by `prepare` and the reader: opening only regular files (a FIFO,
//! device or socket must never be read: opening a FIFO blocks until a writer appears, reading
//! `/dev/zero` never ends) and asking whether a process is alive.

use std::fs::{File, FileType, Metadata};
use std::io;
use std::path::Path;

/// What a non-regular file is, for messages: "a FIFO", "a character device", ...
pub(crate) fn file_kind(ty: &FileType) -> &'static str {
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

/// Why [`open_regular`] failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The path exists but is not a regular file (after following symlinks); the kind.
    NotRegular(&'static str),
    /// The operating system refused.
    Io(io::Error),
}

/// Opens `path` for reading only if it is a regular file (symlinks followed), without ever
/// blocking: the type is checked before opening, and again on the open descriptor (the open
/// is non-blocking, so a FIFO swapped in between cannot hang it either).
pub(crate) fn open_regular(path: &Path) -> Result<(File, Metadata), OpenError> {
    let meta = std::fs::metadata(path).map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(file_kind(&meta.file_type())));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No effect on regular files; makes opening a FIFO return at once.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(OpenError::Io)?;
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(file_kind(&meta.file_type())));
    }
    Ok((file, meta))
}

/// Is process `pid` alive? `kill(pid, 0)` sends nothing and fails with `ESRCH` only when no
/// such process exists (`EPERM` means it exists but belongs to someone else).
pub(crate) fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        // Without a liveness check, never treat another process's file as stale.
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file).is_ok());
        assert!(matches!(
            open_regular(dir.path()),
            Err(OpenError::NotRegular("a folder"))
        ));
        assert!(matches!(
            open_regular(&dir.path().join("missing")),
            Err(OpenError::Io(_))
        ));
        #[cfg(unix)]
        {
            let fifo = dir.path().join("p");
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert!(matches!(
                open_regular(&fifo),
                Err(OpenError::NotRegular("a FIFO"))
            ));
            assert!(matches!(
                open_regular(Path::new("/dev/null")),
                Err(OpenError::NotRegular("a character device"))
            ));
        }
    }

    #[test]
    fn liveness() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // Reaped: gone (unless the pid was reused within microseconds).
        assert!(!process_alive(pid));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
    }
}
