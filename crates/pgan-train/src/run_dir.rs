//! The run directory: `OUT_DIR/NNNNN-<desc>/` with `config.toml`, `log.txt`, `metrics.jsonl`,
//! `samples/` and `checkpoints/`, and the log that writes to both the terminal and `log.txt`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;

use crate::error::{io_err, Result};

/// Name of the resolved config inside a run directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Name of the log inside a run directory.
pub const LOG_FILE: &str = "log.txt";
/// Folder of sample grids inside a run directory.
pub const SAMPLES_DIR: &str = "samples";

/// Creates `out_dir/NNNNN-desc`, numbered one past the highest existing run.
pub fn create_run_dir(out_dir: &Path, desc: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir, "create"))?;
    let next = std::fs::read_dir(out_dir)
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
        .max()
        .map_or(0, |n| n + 1);
    let desc: String = desc
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = out_dir.join(format!("{next:05}-{desc}"));
    std::fs::create_dir_all(dir.join(SAMPLES_DIR)).map_err(io_err(&dir, "create"))?;
    Ok(dir)
}

/// Log lines go to `log.txt` (timestamped) and to the terminal above the progress bar.
pub struct RunLog {
    path: PathBuf,
    file: File,
    bar: Option<ProgressBar>,
    echo: bool,
}

impl RunLog {
    /// Opens `run_dir/log.txt` for appending.
    pub fn open(run_dir: &Path, echo: bool) -> Result<Self> {
        let path = run_dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "open"))?;
        Ok(Self {
            path,
            file,
            bar: None,
            echo,
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

    fn line(&mut self, level: &str, message: &str) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stamp = format_utc(secs);
        // A failing log write must not kill a multi-day run; it is reported once on stderr.
        if let Err(e) = writeln!(self.file, "{stamp} {level} {message}") {
            eprintln!("warning: cannot write {}: {e}", self.path.display());
        }
        if self.echo {
            let text = if level == "WARN" {
                format!("warning: {message}")
            } else {
                message.to_string()
            };
            match &self.bar {
                Some(bar) if !bar.is_hidden() => bar.println(text),
                _ => eprintln!("{text}"),
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
    fn utc_formatting_matches_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(1_798_761_600), "2027-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
    }
}
