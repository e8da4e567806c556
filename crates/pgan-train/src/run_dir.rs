//! The run directory: `OUT_DIR/NNNNN-<desc>/` with `config.toml`, `log.txt`, `metrics.jsonl`,
//! `samples/` and `checkpoints/`, and the log that writes to both the terminal and `log.txt`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;

use crate::error::{io_err, Result, TrainError};
use crate::fsutil::open_own_file;

/// Name of the resolved config inside a run directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Name of the log inside a run directory.
pub const LOG_FILE: &str = "log.txt";
/// The grid of reals beside the samples, written when a run starts.
pub const REALS_FILE: &str = "reals.png";
pub use pgan_spec::run_files::{sample_sheet_name, sample_sheet_tick, SAMPLES_DIR};

/// Name of the lock file a trainer holds in its run directory (it holds the owner's pid).
pub const LOCK_FILE: &str = "train.lock";

/// Refuses an `out_dir` where no run folder can be made: one that is not a folder, lies below
/// a file, or whose nearest existing folder cannot be written (a read-only filesystem, no
/// permission). A missing `out_dir` is created by the run.
pub fn check_out_dir(out_dir: &Path) -> Result<()> {
    let refuse = |message: String| TrainError::Config {
        path: None,
        message: format!("run.out_dir {}: {message}", out_dir.display()),
    };
    let existing = out_dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find_map(|a| Some((a, std::fs::symlink_metadata(a).ok()?)));
    // A link counts as what it points to; one that points nowhere cannot be made a folder.
    let existing = match existing {
        Some((at, meta)) if meta.file_type().is_symlink() => match std::fs::metadata(at) {
            Ok(target) => Some((at, target)),
            Err(_) => {
                return Err(refuse(format!(
                    "{} is a symbolic link to {}, which does not exist",
                    at.display(),
                    std::fs::read_link(at).map_or("?".into(), |t| t.display().to_string())
                )))
            }
        },
        other => other,
    };
    match existing {
        Some((at, meta)) if !meta.is_dir() => Err(refuse(if at == out_dir {
            format!(
                "it is {}, not a folder for run directories",
                pgan_spec::output::kind(&meta.file_type())
            )
        } else {
            format!("{} is a file, not a folder", at.display())
        })),
        Some((at, _)) => check_writable_folder(at)
            .map_err(|e| refuse(format!("cannot make folders in {}: {e}", at.display()))),
        None => Ok(()),
    }
}

/// Whether this process can make a folder in `dir`: one is made and removed (permissions alone
/// do not say it for root, nor for filesystems such as /proc that take no new entries).
fn check_writable_folder(dir: &Path) -> std::io::Result<()> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = dir.join(format!(".pgan-probe-{}-{n}", std::process::id()));
        match std::fs::create_dir(&probe) {
            Ok(()) => {
                // Made is the answer; a folder that takes new entries but refuses removals
                // (append-only) keeps this empty one.
                let _ = std::fs::remove_dir(&probe);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a resume writes in `run_dir`, checked as the real start would find it (for
/// `--dry-run`): the folder writable, the run's own files regular files or absent (never a
/// link, FIFO or folder), `samples` a folder or absent.
pub fn check_run_writable(run_dir: &Path) -> Result<()> {
    check_writable_folder(run_dir).map_err(io_err(run_dir, "write in"))?;
    for name in [
        LOCK_FILE,
        LOG_FILE,
        CONFIG_FILE,
        pgan_spec::metrics::METRICS_FILE,
    ] {
        let path = run_dir.join(name);
        crate::fsutil::refuse_foreign_file(&path).map_err(io_err(&path, "write"))?;
    }
    check_samples_dir(run_dir).map(drop)
}

/// Creates `out_dir/NNNNN-desc`, numbered one past the highest existing run.
///
/// Two trainers starting at once in one `out_dir` would both see the same highest number, so
/// the listing and the creation happen under an OS lock on `out_dir` itself (no lock file among
/// the runs), and a run folder is only ever created new (`create_dir`, never reused).
pub fn create_run_dir(out_dir: &Path, desc: &str) -> Result<PathBuf> {
    check_out_dir(out_dir)?;
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir, "create"))?;
    // Where a folder cannot be opened for locking (not Unix), `create_dir` alone still keeps
    // two runs out of one folder.
    let _numbering = File::open(out_dir).ok().filter(|dir| dir.lock().is_ok());
    let desc = sanitize_desc(desc);
    let mut last_error = None;
    for _ in 0..100 {
        let next = highest_run_number(out_dir)?.map_or(0, |n| n + 1);
        let dir = out_dir.join(format!("{next:05}-{desc}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::create_dir(dir.join(SAMPLES_DIR)).map_err(io_err(&dir, "create"))?;
                return Ok(dir);
            }
            // Made by a process that does not take the lock: the next listing counts it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(io_err(&dir, "create")(e)),
        }
    }
    Err(io_err(out_dir, "create a new run folder in")(
        last_error.unwrap_or_else(|| std::io::Error::other("no free run number")),
    ))
}

/// The run's `samples/` folder, made again if it was removed; something else at its name is an
/// error before any training (the first tick's sheet would fail after its steps).
pub fn ensure_samples_dir(run_dir: &Path) -> Result<()> {
    if check_samples_dir(run_dir)? {
        return Ok(());
    }
    let samples = run_dir.join(SAMPLES_DIR);
    std::fs::create_dir(&samples).map_err(io_err(&samples, "create"))
}

/// Whether the run's `samples` folder is there (`false`: absent); anything else there is an
/// error.
fn check_samples_dir(run_dir: &Path) -> Result<bool> {
    let samples = run_dir.join(SAMPLES_DIR);
    match std::fs::metadata(&samples) {
        Ok(meta) if meta.is_dir() => Ok(true),
        Ok(meta) => Err(io_err(&samples, "write sample sheets into")(
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "it is {}, not a folder (the run keeps its sample sheets there: move it away)",
                    pgan_spec::output::kind(&meta.file_type())
                ),
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(&samples, "write sample sheets into")(e)),
    }
}

fn highest_run_number(out_dir: &Path) -> Result<Option<u32>> {
    Ok(std::fs::read_dir(out_dir)
        .map_err(io_err(out_dir, "list"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .split('-')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .max())
}

/// The longest description in a run folder's name (a name takes at most 255 bytes, with the
/// run's number before it).
pub const MAX_DESC_LEN: usize = 240;

/// `desc` as a run folder's name has it: ASCII letters, digits, `-` and `_`, other characters
/// as `_`, cut at [`MAX_DESC_LEN`] (a description given is checked against it first).
pub fn sanitize_desc(desc: &str) -> String {
    desc.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_DESC_LEN)
        .collect()
}

/// A run directory owned by this process: OS advisory locks (`flock`) on the run folder itself
/// and on `RUN_DIR/train.lock` (which holds the owner's pid), held as long as this value lives.
/// The OS drops them when the process ends, however it ends (kill -9 included), so a lock is
/// never stale. The folder's lock is the one that counts: a user who deletes `train.lock` while
/// a trainer runs would otherwise let a second trainer lock a fresh file. The file's lock keeps
/// out trainers that lock only the file, and it is all there is where a folder cannot be opened
/// or locked (not Unix; NFS).
#[derive(Debug)]
pub struct RunLock {
    _folder: Option<File>,
    _file: File,
    held: bool,
}

/// The pid the lock file `path` names, once it names a live process: a trainer that has just
/// taken the lock writes its pid a moment later, so until then the file is empty or still
/// names the trainer before it (gone, if it was killed). Looked at for up to a second; then
/// the pid it names, live here or not (a trainer on another machine holding a run folder on a
/// shared disk), or `None` (said "pid unknown").
fn lock_owner(path: &Path) -> Option<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let text = pgan_data::read_regular_file_at_most(path, 4096).unwrap_or_default();
        let named = String::from_utf8_lossy(&text).trim().parse::<u32>().ok();
        if let Some(pid) = named.filter(|&p| pgan_data::process_alive(p)) {
            return Some(pid);
        }
        if std::time::Instant::now() >= deadline {
            return named;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

impl RunLock {
    /// Takes the run directory's lock, or fails with [`TrainError::RunInUse`] naming the pid
    /// of the process that holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(LOCK_FILE);
        let in_use = || TrainError::RunInUse {
            path: run_dir.to_path_buf(),
            pid: lock_owner(&path),
        };
        let folder = File::open(run_dir).ok();
        let mut held = false;
        if let Some(folder) = &folder {
            match folder.try_lock() {
                Ok(()) => held = true,
                Err(TryLockError::WouldBlock) => return Err(in_use()),
                // NFS, say, locks only files opened for writing (EBADF on a folder): the
                // file's lock below is all there is there.
                Err(TryLockError::Error(_)) => {}
            }
        }
        // Its pid is written into it: a link there would overwrite what it points to.
        let mut file = open_own_file(
            &path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(io_err(&path, "open"))?;
        match file.try_lock() {
            Ok(()) => held = true,
            Err(TryLockError::WouldBlock) => return Err(in_use()),
            // A filesystem without advisory locks: train unlocked (the caller says so).
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(TryLockError::Error(e)) => return Err(io_err(&path, "lock")(e)),
        }
        if held {
            file.set_len(0)
                .and_then(|()| writeln!(file, "{}", std::process::id()))
                .and_then(|()| file.flush())
                .map_err(io_err(&path, "write"))?;
        }
        Ok(Self {
            _folder: folder,
            _file: file,
            held,
        })
    }

    /// Fails with [`TrainError::RunInUse`] when another process holds the run's lock (for a
    /// dry run, which takes no lock and writes nothing: its lock file is not created).
    pub fn check_free(run_dir: &Path) -> Result<()> {
        let path = run_dir.join(LOCK_FILE);
        let in_use = || TrainError::RunInUse {
            path: run_dir.to_path_buf(),
            pid: lock_owner(&path),
        };
        // A shared lock: refused only by a trainer's exclusive one, and it keeps no trainer
        // out meanwhile; let go when the file closes, at the end of this function. Where
        // locks cannot be tested (an error), nothing can be told, as for the trainer.
        let held_elsewhere = |file: Option<File>| {
            file.is_some_and(|f| matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)))
        };
        let lock_file = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file())
            .then(|| File::open(&path).ok())
            .flatten();
        if held_elsewhere(File::open(run_dir).ok()) || held_elsewhere(lock_file) {
            return Err(in_use());
        }
        Ok(())
    }

    /// False when the filesystem has no advisory locks, so nothing keeps a second trainer out.
    pub fn is_held(&self) -> bool {
        self.held
    }
}

/// Log lines go to `log.txt` (timestamped) and to the terminal above the progress bar.
pub struct RunLog {
    path: PathBuf,
    file: File,
    bar: Option<ProgressBar>,
    echo: bool,
    /// The log's path no longer names `file` and it could not be written back (said once).
    detached: bool,
}

impl RunLog {
    /// Opens `run_dir/log.txt` for appending.
    pub fn open(run_dir: &Path, echo: bool) -> Result<Self> {
        let path = run_dir.join(LOG_FILE);
        let file = open_own_file(&path, OpenOptions::new().create(true).append(true))
            .map_err(io_err(&path, "open"))?;
        Ok(Self {
            path,
            file,
            bar: None,
            echo,
            detached: false,
        })
    }

    /// Routes terminal output through `bar` so lines don't tear it.
    pub fn attach(&mut self, bar: ProgressBar) {
        self.bar = Some(bar);
    }

    /// The progress bar, if one is attached.
    pub fn bar(&self) -> Option<&ProgressBar> {
        self.bar.as_ref()
    }

    /// An informational line.
    pub fn info(&mut self, message: impl AsRef<str>) {
        self.line("INFO", message.as_ref());
    }

    /// A warning (failure-mode alarms, rollbacks).
    pub fn warn(&mut self, message: impl AsRef<str>) {
        self.line("WARN", message.as_ref());
    }

    /// An informational line into `log.txt` only: a session's first line (the terminal has its
    /// own context), a stop before training began (Ctrl-C during the nodes' join, which the
    /// command prints as it ends).
    pub fn write_only(&mut self, message: impl AsRef<str>) {
        self.write_line("INFO", message.as_ref(), false);
    }

    /// The error that ended the run, into `log.txt` only: the command that ran the training
    /// prints it (once) as it ends.
    pub fn error(&mut self, message: impl AsRef<str>) {
        self.write_line("ERROR", message.as_ref(), false);
    }

    fn line(&mut self, level: &str, message: &str) {
        self.write_line(level, message, self.echo);
    }

    fn write_line(&mut self, level: &str, message: &str, echo: bool) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stamp = format_utc(secs);
        // A log removed or replaced while the run writes it is written back or followed (and
        // said in it), so the session's lines are not appended to a file nobody can read.
        let said = crate::fsutil::keep_appending(&self.path, &mut self.file, &mut self.detached);
        if let Some(said) = said {
            let _ = writeln!(self.file, "{stamp} WARN {said}");
            if self.echo {
                self.print(&format!("warning: {said}"));
            }
        }
        // A failing log write must not kill a multi-day run; it is reported once on stderr.
        if let Err(e) = writeln!(self.file, "{stamp} {level} {message}") {
            let _ = writeln!(
                std::io::stderr(),
                "warning: cannot write {}: {e}",
                self.path.display()
            );
        }
        if echo {
            let text = if level == "WARN" {
                format!("warning: {message}")
            } else {
                message.to_string()
            };
            self.print(&text);
        }
    }

    /// A line on the terminal, above the progress bar if one is shown.
    fn print(&self, text: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(text),
            // Not `eprintln!`, which panics when stderr is a closed pipe.
            _ => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) without a date-time dependency.
fn format_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `log.txt` removed while the run writes it is written back with its lines, and the log
    /// says so; one whose folder is gone is said once, and the run goes on.
    #[test]
    fn a_log_removed_while_written_is_written_back_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let mut log = RunLog::open(&run, false).unwrap();
        log.info("first");
        std::fs::remove_file(run.join(LOG_FILE)).unwrap();
        log.info("second");
        let text = std::fs::read_to_string(run.join(LOG_FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with("INFO first"));
        assert!(lines[1].contains("WARN") && lines[1].contains("was removed"));
        assert!(lines[2].ends_with("INFO second"));
        std::fs::remove_dir_all(&run).unwrap();
        log.info("third");
        log.info("fourth");
        assert!(log.detached);
    }

    #[test]
    fn run_dirs_are_numbered_past_the_highest() {
        let dir = tempfile::tempdir().unwrap();
        let a = create_run_dir(dir.path(), "emoji-32").unwrap();
        let b = create_run_dir(dir.path(), "a b/c").unwrap();
        assert!(a.ends_with("00000-emoji-32"));
        assert!(b.ends_with("00001-a_b_c"));
        assert!(b.join(SAMPLES_DIR).is_dir());
    }

    #[test]
    fn runs_created_at_once_get_distinct_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::sync::Barrier::new(8);
        let made: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|k| {
                    let (out, start) = (dir.path(), &start);
                    s.spawn(move || {
                        start.wait();
                        create_run_dir(out, &format!("d{}", k % 2)).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut numbers: Vec<String> = made
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy()[..5].to_string())
            .collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), 8, "{made:?}");
    }

    #[test]
    fn a_second_owner_of_a_run_directory_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        assert!(first.is_held());
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "in use by another pgan train (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        // A dry run's look: refused while it is held, free once it is not, and it creates no
        // lock file.
        assert!(RunLock::check_free(dir.path())
            .unwrap_err()
            .to_string()
            .contains("in use by another pgan train"));
        drop(first);
        RunLock::check_free(dir.path()).unwrap();
        RunLock::acquire(dir.path()).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        RunLock::check_free(fresh.path()).unwrap();
        assert!(!fresh.path().join(LOCK_FILE).exists());
    }

    /// A loser that reads the lock file before the winner wrote its pid (empty, or the pid of a
    /// trainer gone) waits for the pid of the live owner instead of saying "pid unknown" or
    /// naming the dead one.
    #[test]
    fn the_lock_owner_is_the_live_pid_written_after_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        std::fs::write(&path, format!("{dead}\n")).unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(200));
                std::fs::write(&path, b"").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(100));
                std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
            })
        };
        assert_eq!(lock_owner(&path), Some(std::process::id()));
        writer.join().unwrap();
        // Nobody live named within the wait: the pid named (another machine's, on a shared
        // disk), or unknown.
        std::fs::write(&path, format!("{dead}\n")).unwrap();
        assert_eq!(lock_owner(&path), Some(dead));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(lock_owner(&path), None);
    }

    #[test]
    fn deleting_the_lock_file_does_not_let_a_second_owner_in() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("in use by another pgan train"),
            "{err}"
        );
        drop(first);
        assert!(RunLock::acquire(dir.path()).unwrap().is_held());
    }

    #[test]
    fn an_out_dir_where_no_run_folder_can_be_made_is_refused_before_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("afile");
        std::fs::write(&file, b"x").unwrap();
        let err = check_out_dir(&file).unwrap_err().to_string();
        assert!(err.contains("not a folder for run directories"), "{err}");
        let err = check_out_dir(&file.join("sub").join("runs"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("{} is a file, not a folder", file.display())),
            "{err}"
        );
        check_out_dir(&dir.path().join("new").join("runs")).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere").join("runs"), &dangling).unwrap();
        let err = check_out_dir(&dangling.join("sub"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("which does not exist"), "{err}");
        // The probes leave nothing behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".pgan-probe"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // /proc takes no folders, whoever asks (root included).
        #[cfg(target_os = "linux")]
        {
            let err = check_out_dir(Path::new("/proc/runs"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot make folders in /proc"), "{err}");
        }
    }

    /// The run's own files are written only where they are: a link there (to a dataset, the
    /// user's notes) is refused and its target kept, a FIFO is named (opening it for writing
    /// waited for a reader for ever), and a file where the sample sheets go is found before
    /// any training.
    #[test]
    fn the_runs_own_files_are_never_written_through_links_or_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let run = create_run_dir(dir.path(), "r").unwrap();
        let precious = dir.path().join("data.pgan");
        std::fs::write(&precious, b"the user's dataset").unwrap();
        let fifo = |path: &Path| {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        };
        let metrics = run.join(pgan_spec::metrics::METRICS_FILE);
        for (name, open) in [
            (
                LOCK_FILE,
                &(|run: &Path| RunLock::acquire(run).map(drop)) as &dyn Fn(&Path) -> _,
            ),
            (LOG_FILE, &|run: &Path| RunLog::open(run, false).map(drop)),
            (pgan_spec::metrics::METRICS_FILE, &|run: &Path| {
                crate::stats::MetricsWriter::open(run).map(drop)
            }),
        ] {
            let path = run.join(name);
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(&precious, &path).unwrap();
            // A resume's dry run finds it as the real start does.
            for err in [
                open(&run).unwrap_err().to_string(),
                check_run_writable(&run).unwrap_err().to_string(),
            ] {
                assert!(
                    err.contains(name) && err.contains("it is a symbolic link"),
                    "{err}"
                );
            }
            assert_eq!(std::fs::read(&precious).unwrap(), b"the user's dataset");
            std::fs::remove_file(&path).unwrap();
            fifo(&path);
            for err in [
                open(&run).unwrap_err().to_string(),
                check_run_writable(&run).unwrap_err().to_string(),
            ] {
                assert!(err.contains(name) && err.contains("it is a FIFO"), "{err}");
            }
            std::fs::remove_file(&path).unwrap();
            open(&run).unwrap();
        }
        check_run_writable(&run).unwrap();
        // A file where the sample sheets go stops the dry run as it stops the start.
        let samples = run.join(SAMPLES_DIR);
        std::fs::remove_dir_all(&samples).ok();
        std::fs::write(&samples, b"not a folder").unwrap();
        let err = check_run_writable(&run).unwrap_err().to_string();
        assert!(
            err.contains("samples") && err.contains("not a folder"),
            "{err}"
        );
        std::fs::remove_file(&samples).unwrap();
        std::fs::create_dir(&samples).unwrap();
        // The rewrite of the metrics (a rollback) and a sample sheet replace no file a link
        // points to either (config.toml, state.json and the feature cache are written alike).
        std::fs::remove_file(&metrics).unwrap();
        std::os::unix::fs::symlink(&precious, &metrics).unwrap();
        let err = crate::fsutil::write_own_atomic(&metrics, b"{}\n").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let sheet = run.join(SAMPLES_DIR).join(sample_sheet_name(1));
        std::os::unix::fs::symlink(&precious, &sheet).unwrap();
        let err = crate::images::save_own_png(&image::RgbImage::new(2, 2), &sheet).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&precious).unwrap(), b"the user's dataset");
        std::fs::remove_file(&sheet).unwrap();

        let samples = run.join(SAMPLES_DIR);
        std::fs::remove_dir(&samples).unwrap();
        ensure_samples_dir(&run).unwrap();
        assert!(samples.is_dir(), "a removed samples folder is made again");
        std::fs::remove_dir(&samples).unwrap();
        std::fs::write(&samples, b"x").unwrap();
        let err = ensure_samples_dir(&run).unwrap_err().to_string();
        assert!(
            err.contains("samples") && err.contains("a regular file, not a folder"),
            "{err}"
        );
    }

    #[test]
    fn utc_formatting_matches_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(1_798_761_600), "2027-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
    }
}
