//! File-system helpers shared by `prepare`, the reader and the other commands' outputs: opening
//! only regular files (a FIFO, device or socket must never be read: opening a FIFO blocks until
//! a writer appears, reading `/dev/zero` never ends), and the temporary files and folders an
//! output is built in, with the removal of those a killed process left behind.

use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

/// What a non-regular file is, for messages: "a FIFO", "a character device", ...
pub(crate) use pgan_spec::output::kind as file_kind;

/// Which file `meta` describes: its device and inode (one file reached by two paths, or a file
/// replaced at its path, told apart).
pub(crate) fn file_id(meta: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
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

/// [`open_regular`] with a file that is not regular as an [`io::ErrorKind::InvalidInput`] error
/// saying what it is.
fn open_regular_file(path: &Path) -> io::Result<(File, Metadata)> {
    open_regular(path).map_err(|e| match e {
        OpenError::NotRegular(kind) => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file"),
        ),
        OpenError::Io(e) => e,
    })
}

/// The bytes of `path`, which must be a regular file (or a link to one), read through
/// [`open_regular`]: a FIFO or device there is an error saying what it is, never a read that
/// waits for a writer or never ends.
pub fn read_regular_file(path: &Path) -> io::Result<Vec<u8>> {
    let (mut file, meta) = open_regular_file(path)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// CRC-32 of `path`, which must be a regular file (as [`read_regular_file`]), read in pieces:
/// memory stays at one buffer however large the file.
pub fn crc32_of_regular_file(path: &Path) -> io::Result<u32> {
    let (mut file, _) = open_regular_file(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match io::Read::read(&mut file, &mut buffer) {
            Ok(0) => return Ok(hasher.finalize()),
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`read_regular_file`] of a file that cannot be longer than `max` bytes: a longer one (a
/// sparse file, a link to a huge file) is refused before anything is read, and no more than
/// `max + 1` bytes are ever read (should it grow meanwhile).
pub fn read_regular_file_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let (file, meta) = open_regular_file(path)?;
    let too_long = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is {len} bytes, more than the {max} such a file can be"),
        )
    };
    if meta.len() > max {
        return Err(too_long(meta.len()));
    }
    pgan_spec::output::refuse_mostly_holes(&meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    io::Read::read_to_end(&mut io::Read::take(file, max + 1), &mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_long(bytes.len() as u64));
    }
    Ok(bytes)
}

/// `.<name>.tmp-<pid>` beside `output` (same folder, so the final rename stays on one
/// filesystem); [`remove_stale_temps`] recognises it, with or without a `-<n>` suffix.
pub fn temp_path_for(output: &Path, pid: u32) -> PathBuf {
    let mut name = pgan_spec::output::temp_prefix(output.file_name().unwrap_or_default());
    name.push(pid.to_string());
    parent_dir(output).join(name)
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes the temporary files and folders that commands writing `output` left when they were
/// killed (SIGKILL, Ctrl-C without a handler, an abort, a power cut): `.<name>.tmp-<pid>` or
/// `.<name>.tmp-<pid>-<n>` whose process no longer exists. A live process's temp belongs to a
/// command still running and is kept. Best effort; returns what it removed.
pub fn remove_stale_temps(output: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for (path, pid) in temps_of(output) {
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let gone = match std::fs::symlink_metadata(&path).map(|m| m.file_type()) {
            Ok(t) if t.is_file() => std::fs::remove_file(&path).is_ok(),
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path).is_ok(),
            _ => false,
        };
        if gone {
            removed.push(path);
        }
    }
    removed
}

/// Removes every temporary file and folder in `dir` that a killed command left
/// (`.<name>.tmp-<pid>[-<n>]` of a process that no longer exists), whatever output it was for:
/// for a folder only pgan writes (a run's, its `samples/` and `checkpoints/`), whose outputs'
/// names are not all known when it is cleaned. Best effort; returns what it removed.
pub fn remove_stale_temps_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut outputs: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            let (output, _) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
            Some(dir.join(output))
        })
        .collect();
    outputs.sort();
    outputs.dedup();
    let mut removed = Vec::new();
    for output in outputs {
        removed.extend(remove_stale_temps(&output));
    }
    removed
}

/// Removes this process's own temporary files and folders of `output` (from a signal handler,
/// before exiting: what an interrupted command was writing goes with it).
pub fn remove_own_temps(output: &Path) {
    for (path, pid) in temps_of(output) {
        if pid != std::process::id() {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            continue;
        }
        // A folder other threads are still filling: renamed first, so that no new file
        // appears in it while it is removed (`.<name>.tmp-<pid>-0`, still a temp of this pid
        // for a later run's clean-up should the removal fail).
        let mut moved = path.clone().into_os_string();
        moved.push("-0");
        let moved = PathBuf::from(moved);
        let target = if std::fs::rename(&path, &moved).is_ok() {
            moved
        } else {
            path
        };
        let _ = std::fs::remove_dir_all(&target);
    }
}

/// A short OS lock on the folder `output` is written in, for the moment a writer creates its
/// temporary file and looks for other writers ([`live_writer`]): of two writers starting
/// together, the second then sees the first's temporary file and the first does not see the
/// second's, so exactly one goes on. Held until the returned file is dropped. `None` where the
/// folder cannot be locked (another platform, a file system without locks on folders) or stays
/// locked for seconds (a run folder, whose trainer locks it for its life): the writers then
/// look without it, and two starting together may both stop (each names the other).
pub fn lock_writers_folder(output: &Path) -> Option<std::fs::File> {
    let folder = std::fs::File::open(parent_dir(output)).ok()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match folder.try_lock() {
            Ok(()) => return Some(folder),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(_) => return None,
        }
    }
}

/// The pid of another process writing `output` now, if any: one whose temporary file is
/// locked (`prepare` holds an OS lock on its temporary file while it writes, so a temp whose
/// pid was reused by an unrelated process after a crash or reboot is not taken for a writer).
/// Where the lock cannot be tested, a live pid counts.
pub fn live_writer(output: &Path) -> Option<u32> {
    temps_of(output)
        .into_iter()
        .filter(|&(_, pid)| pid != std::process::id())
        .find(|(path, pid)| locked(path).unwrap_or_else(|| process_alive(*pid)))
        .map(|(_, pid)| pid)
}

/// Whether another open file holds an OS lock on `path`; `None` when that cannot be tested.
fn locked(path: &Path) -> Option<bool> {
    let file = std::fs::File::open(path).ok()?;
    match file.try_lock() {
        Ok(()) => Some(false),
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// The temporary files and folders beside `output` (`.<name>.tmp-<pid>[-<n>]`), with the pid
/// of the process that made each.
fn temps_of(output: &Path) -> Vec<(PathBuf, u32)> {
    let Some(name) = output.file_name() else {
        return Vec::new();
    };
    let prefix = pgan_spec::output::temp_prefix(name);
    let prefix = prefix.as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir(parent_dir(output)) else {
        return Vec::new();
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry
                .file_name()
                .as_encoded_bytes()
                .strip_prefix(prefix)
                .and_then(|rest| std::str::from_utf8(rest).ok())
                .and_then(|rest| match rest.split_once('-') {
                    Some((pid, n)) if digits(n) => Some(pid),
                    Some(_) => None,
                    None => Some(rest),
                })
                .filter(|pid| digits(pid))
                .and_then(|pid| pid.parse::<u32>().ok())?;
            Some((entry.path(), pid))
        })
        .collect()
}

/// Is process `pid` alive? `kill(pid, 0)` sends nothing and fails with `ESRCH` only when no
/// such process exists (`EPERM` means it exists but belongs to someone else).
pub fn process_alive(pid: u32) -> bool {
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
    fn stale_temp_files_and_folders_of_any_command_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("walk.gif");
        let dead = crate::test_files::dead_pid();
        let live = std::os::unix::process::parent_id();
        let stale_file = dir.path().join(format!(".walk.gif.tmp-{dead}-3"));
        let stale_folder = temp_path_for(&out, dead);
        let running = dir.path().join(format!(".walk.gif.tmp-{live}-1"));
        let other = dir.path().join(format!(".walk.gif.tmp-{dead}-x"));
        let other_output = dir.path().join(format!(".walk.png.tmp-{dead}"));
        std::fs::write(&stale_file, b"x").unwrap();
        std::fs::create_dir_all(stale_folder.join("inner")).unwrap();
        for keep in [&running, &other, &other_output] {
            std::fs::write(keep, b"x").unwrap();
        }
        let mut removed = remove_stale_temps(&out);
        removed.sort();
        let mut expected = vec![stale_file, stale_folder];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(running.exists() && other.exists() && other_output.exists());
        // In a folder only pgan writes: every output's, and nothing else.
        let mine = dir.path().join("notes.tmp-1");
        std::fs::write(&mine, b"x").unwrap();
        assert_eq!(remove_stale_temps_in(dir.path()), vec![other_output]);
        assert!(running.exists() && other.exists() && mine.exists());
    }

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
        // Reaped: gone (unless the pid was reused within microseconds).
        assert!(!process_alive(crate::test_files::dead_pid()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
    }
}
