//! Per-tick statistics: values reported under slash keys (`Loss/D`, `D/real`, ...) are averaged
//! over a tick and appended as one flat JSON object per line to `RUN_DIR/metrics.jsonl`
//! (the layout `pgan report` reads).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{io_err, Result};

/// Name of the metrics file inside a run directory.
pub use pgan_spec::metrics::METRICS_FILE;

/// Running sums of the values reported during one tick.
#[derive(Debug, Default)]
pub struct TickStats {
    sums: BTreeMap<&'static str, (f64, u64)>,
}

impl TickStats {
    /// Adds one observation of `key`. A non-finite value is left out of the average and not
    /// counted anywhere: the loop rolls back as soon as a loss or gradient norm is non-finite,
    /// and only reports the values of healthy steps.
    pub fn report(&mut self, key: &'static str, value: f64) {
        if value.is_finite() {
            let entry = self.sums.entry(key).or_default();
            entry.0 += value;
            entry.1 += 1;
        }
    }

    /// The mean of `key` over the tick, if it was reported.
    pub fn mean(&self, key: &str) -> Option<f64> {
        self.sums
            .get(key)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| s / *n as f64)
    }

    /// Every mean, by key.
    pub fn means(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.sums
            .iter()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(k, (s, n))| (*k, s / *n as f64))
    }
}

/// Appends rows to `metrics.jsonl`, flushing each so a crash loses at most the current tick.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens (appending) `run_dir/metrics.jsonl`.
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "open"))?;
        Ok(Self { path, file })
    }

    /// Drops the rows written after `images_shown` (see [`truncate_after`]) and appends to the
    /// rewritten file from now on: the rewrite replaces the file, and a handle to the old one
    /// would write where nobody reads.
    pub fn truncate_after(&mut self, images_shown: u64) -> Result<()> {
        let run_dir = self.path.parent().unwrap_or(Path::new("."));
        truncate_after(run_dir, images_shown)?;
        *self = Self::open(run_dir)?;
        Ok(())
    }

    /// Writes one row.
    pub fn write(&mut self, row: &Map<String, Value>) -> Result<()> {
        let mut line = serde_json::to_string(row).expect("a JSON map serialises");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err(&self.path, "append to"))?;
        self.file.flush().map_err(io_err(&self.path, "flush"))
    }
}

/// Drops rows written after `images_shown` (used on resume so a run continued from an older
/// checkpoint has no duplicated ticks).
pub fn truncate_after(run_dir: &Path, images_shown: u64) -> Result<()> {
    let path = run_dir.join(METRICS_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let limit = images_shown as f64 / 1000.0 + 1e-9;
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("kimg").and_then(Value::as_f64))
                .is_some_and(|k| k <= limit)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::fsutil::write_atomic(&path, kept.as_bytes()).map_err(io_err(&path, "rewrite"))
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_skip_non_finite_values() {
        let mut s = TickStats::default();
        s.report("Loss/D", 1.0);
        s.report("Loss/D", 3.0);
        s.report("Loss/D", f64::NAN);
        assert_eq!(s.mean("Loss/D"), Some(2.0));
        assert_eq!(s.mean("Loss/G"), None);
    }

    #[test]
    fn rows_append_and_truncate_by_kimg() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::open(dir.path()).unwrap();
        for k in 1..=4 {
            let mut row = Map::new();
            row.insert("kimg".into(), Value::from(k as f64));
            w.write(&row).unwrap();
        }
        truncate_after(dir.path(), 2_000).unwrap();
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 2);

        // Through the writer, later rows land in the rewritten file.
        w.truncate_after(1_000).unwrap();
        let mut row = Map::new();
        row.insert("kimg".into(), Value::from(1.5));
        w.write(&row).unwrap();
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["{\"kimg\":1.0}", "{\"kimg\":1.5}"]
        );
    }
}
