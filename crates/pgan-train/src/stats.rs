//! Per-tick statistics: values reported under slash keys (`Loss/D`, `D/real`, ...) are averaged
//! over a tick and appended as one flat JSON object per line to `RUN_DIR/metrics.jsonl`
//! (the layout `pgan report` reads).
//!
//! A training step's values ([`STEP_KEYS`]) stay on the device in [`StepValues`] until the
//! tick's end, which reads them all at once (a read inside a step would stall a GPU's queue
//! every step) and only then reports them to [`TickStats`]: the tick's means are those of the
//! same per-step values as before, summed on the host in the same order.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use pgan_spec::metrics as key;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{io_err, Result};

/// Name of the metrics file inside a run directory.
pub use pgan_spec::metrics::METRICS_FILE;

/// A running mean: sum and count (serialisable, for state kept in checkpoints).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    /// Sum of the values.
    pub sum: f64,
    /// How many values.
    pub count: u64,
}

impl Mean {
    /// Adds one value.
    pub fn add(&mut self, value: f64) {
        self.sum += value;
        self.count += 1;
    }

    /// The mean, `None` before the first value.
    pub fn value(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Running means of the values reported during one tick (serialisable: a stop's checkpoint
/// keeps those of the tick it interrupted, exactly).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    into = "BTreeMap<String, ExactMean>",
    from = "BTreeMap<String, ExactMean>"
)]
pub struct TickStats {
    means: BTreeMap<String, Mean>,
}

/// A [`Mean`] as `state.json` keeps it: the sum's bits, since serde_json (without its
/// `float_roundtrip` feature) may read a decimal `f64` back one ULP off, and the resumed tick's
/// row must be the uninterrupted run's.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct ExactMean {
    sum_bits: u64,
    count: u64,
}

impl From<TickStats> for BTreeMap<String, ExactMean> {
    fn from(stats: TickStats) -> Self {
        stats
            .means
            .into_iter()
            .map(|(k, m)| {
                let exact = ExactMean {
                    sum_bits: m.sum.to_bits(),
                    count: m.count,
                };
                (k, exact)
            })
            .collect()
    }
}

impl From<BTreeMap<String, ExactMean>> for TickStats {
    fn from(saved: BTreeMap<String, ExactMean>) -> Self {
        let means = saved
            .into_iter()
            .map(|(k, e)| {
                let mean = Mean {
                    sum: f64::from_bits(e.sum_bits),
                    count: e.count,
                };
                (k, mean)
            })
            .collect();
        TickStats { means }
    }
}

impl TickStats {
    /// Adds one observation of `key`. A non-finite value is left out of the average and not
    /// counted anywhere: the loop rolls back when a loss or gradient norm of the tick's steps is
    /// non-finite, and only reports the values of ticks whose steps were all healthy.
    pub fn report(&mut self, key: &'static str, value: f64) {
        if value.is_finite() {
            match self.means.get_mut(key) {
                Some(mean) => mean.add(value),
                None => {
                    let mut mean = Mean::default();
                    mean.add(value);
                    self.means.insert(key.to_string(), mean);
                }
            }
        }
    }

    /// The mean of `key` over the tick, if it was reported.
    pub fn mean(&self, key: &str) -> Option<f64> {
        self.means.get(key).and_then(Mean::value)
    }

    /// Whether every sum is finite and no count exceeds `steps` (a checkpoint's open tick,
    /// checked before a resume relies on it).
    pub fn is_plausible(&self, steps: u64) -> bool {
        self.means
            .values()
            .all(|m| m.sum.is_finite() && m.count <= steps)
    }

    /// Every mean, by key.
    pub fn means(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.means
            .iter()
            .filter_map(|(k, m)| Some((k.as_str(), m.value()?)))
    }
}

/// The part of a tick that ran before a stop, kept in the stop's checkpoint: the resumed run
/// finishes the tick and writes the row an uninterrupted run writes for it, not one averaged
/// over the resumed steps only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpenTick {
    /// What the tick's steps before the stop reported.
    pub stats: TickStats,
    /// Images those steps trained on.
    pub images: u64,
    /// Seconds those steps took (for the row's speed).
    pub seconds: f64,
}

/// What one training step measures, in the order of its values in [`StepValues`].
pub const STEP_KEYS: [&str; 10] = [
    key::LOSS_D,
    key::LOSS_G,
    key::LOSS_D_PENALTY,
    key::LOSS_D_DRIFT,
    key::LOSS_G_FEATURE_MATCHING,
    key::PENALTY_GRAD_NORM,
    key::D_REAL,
    key::D_FAKE,
    key::GRAD_D_NORM,
    key::GRAD_G_NORM,
];

/// The values of [`STEP_KEYS`] that must be finite for a step to count as healthy: both losses
/// and both gradient norms (the others are terms of those losses, or diagnostics).
const CHECKED_KEYS: [&str; 4] = [key::LOSS_D, key::LOSS_G, key::GRAD_D_NORM, key::GRAD_G_NORM];

/// Pending rows are joined into one tensor every this many steps, which bounds the number of
/// small device tensors a long tick holds.
const JOIN_EVERY: usize = 256;

/// Where the run stood at a step: the step's number (counted after it) and the images shown
/// before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPosition {
    /// `TrainState::step` after the step.
    pub step: u64,
    /// `TrainState::images_shown` before the step.
    pub images_shown: u64,
}

/// The values of a tick's steps, kept on the device until [`read`](Self::read) at the tick's
/// end. Pushing a step does not wait for the device.
#[derive(Debug)]
pub struct StepValues<B: Backend> {
    /// Rows of `STEP_KEYS.len()` values each, possibly several rows joined into one tensor.
    pending: Vec<Tensor<B, 1>>,
    /// The position of every step pushed, in order (host values).
    positions: Vec<StepPosition>,
}

impl<B: Backend> Default for StepValues<B> {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            positions: Vec::new(),
        }
    }
}

/// One step's values, read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepRow {
    /// Where the step was taken.
    pub at: StepPosition,
    /// Its values, in the order of [`STEP_KEYS`].
    pub values: [f32; STEP_KEYS.len()],
}

impl StepRow {
    /// The value of `key` (one of [`STEP_KEYS`]).
    pub fn get(&self, key: &str) -> Option<f32> {
        STEP_KEYS
            .iter()
            .position(|k| *k == key)
            .map(|i| self.values[i])
    }

    /// Whether the losses and gradient norms are all finite.
    pub fn is_healthy(&self) -> bool {
        CHECKED_KEYS
            .iter()
            .all(|k| self.get(k).is_some_and(f32::is_finite))
    }
}

impl<B: Backend> StepValues<B> {
    /// Adds a step's values (shape `[1]` each, in the order of [`STEP_KEYS`]) without reading
    /// them.
    pub fn push(&mut self, values: [Tensor<B, 1>; STEP_KEYS.len()], at: StepPosition) {
        self.pending.push(Tensor::cat(values.into(), 0));
        self.positions.push(at);
        if self.pending.len() >= JOIN_EVERY {
            let joined = Tensor::cat(std::mem::take(&mut self.pending), 0);
            self.pending.push(joined);
        }
    }

    /// Steps pushed since the last read.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether no step was pushed since the last read.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Reads every step's values and the values of `extra` in one device→host read, and empties
    /// the accumulator.
    pub fn read(&mut self, extra: Option<Tensor<B, 1>>) -> (Vec<StepRow>, Vec<f32>) {
        let positions = std::mem::take(&mut self.positions);
        let mut parts = std::mem::take(&mut self.pending);
        parts.extend(extra);
        if parts.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let values = crate::host_read::read_f32s(Tensor::cat(parts, 0));
        let width = STEP_KEYS.len();
        let (steps, extra) = values.split_at(positions.len() * width);
        let rows = positions
            .into_iter()
            .zip(steps.chunks_exact(width))
            .map(|(at, v)| StepRow {
                at,
                values: v.try_into().expect("one row per step"),
            })
            .collect();
        (rows, extra.to_vec())
    }
}

impl TickStats {
    /// Adds every value of a step.
    pub fn report_step(&mut self, row: &StepRow) {
        for (&name, value) in STEP_KEYS.iter().zip(row.values) {
            self.report(name, value as f64);
        }
    }
}

/// Appends rows to `metrics.jsonl`, flushing each so a crash loses at most the current tick.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
    /// The path no longer names `file` and it could not be put back (said once).
    detached: bool,
}

impl MetricsWriter {
    /// Opens (appending) `run_dir/metrics.jsonl`.
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        // Appending to a device or FIFO would lose every row (or block), through a link it
        // would write into another file.
        let file =
            crate::fsutil::open_own_file(&path, OpenOptions::new().create(true).append(true))
                .map_err(io_err(&path, "open"))?;
        Ok(Self {
            path,
            file,
            detached: false,
        })
    }

    /// Drops the rows written after `images_shown` (see [`truncate_after`]) and appends to the
    /// rewritten file from now on: the rewrite replaces the file, and a handle to the old one
    /// would write where nobody reads.
    pub fn truncate_after(&mut self, images_shown: u64, cut: Cut) -> Result<Truncated> {
        let run_dir = self.path.parent().unwrap_or(Path::new("."));
        let truncated = truncate_after(run_dir, images_shown, cut)?;
        *self = Self::open(run_dir)?;
        Ok(truncated)
    }

    /// Adds `entries` to the row of tick `tick` (the last one of that tick), and `alarms` to
    /// its alarm count, rewriting the file; no such row (lost) is no error. The file is first
    /// put back at its path if it was removed or replaced (as [`Self::write`] does), and the
    /// warning saying so returned.
    pub fn amend_tick_row(
        &mut self,
        tick: u64,
        entries: Map<String, Value>,
        alarms: usize,
    ) -> Result<Option<String>> {
        let reattached =
            crate::fsutil::keep_appending(&self.path, &mut self.file, &mut self.detached);
        let run_dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let Some(text) = read_metrics(&run_dir)? else {
            return Ok(reattached);
        };
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let found = lines.iter().rposition(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .is_some_and(|row| row.get(key::TICK).and_then(Value::as_u64) == Some(tick))
        });
        let Some(at) = found else {
            return Ok(reattached);
        };
        let mut row: Map<String, Value> =
            serde_json::from_str(&lines[at]).expect("the line was read as a row");
        // Amended before (a kill came before the checkpoint said so): the values are the
        // same, and the alarms are counted already.
        let amended_before = entries.keys().any(|k| row.contains_key(k));
        row.extend(entries);
        if alarms > 0 && !amended_before {
            let before = row
                .get(key::ALARM_COUNT)
                .and_then(Value::as_u64)
                .unwrap_or(0);
            row.insert(key::ALARM_COUNT.into(), (before + alarms as u64).into());
        }
        lines[at] = serde_json::to_string(&row).expect("a JSON map serialises");
        let mut kept = lines.join("\n");
        kept.push('\n');
        crate::fsutil::write_own_atomic(&self.path, kept.as_bytes())
            .map_err(io_err(&self.path, "rewrite"))?;
        *self = Self::open(&run_dir)?;
        Ok(reattached)
    }

    /// Writes one row, into the file at the writer's path: one removed while the run wrote it
    /// is written back first, one replaced is followed (see
    /// [`crate::fsutil::reattach_appended`]); where neither can be done (a link put there, the
    /// run's folder moved) the row goes into the open file, and training goes on. Returns the
    /// warning that says what happened.
    pub fn write(&mut self, row: &Map<String, Value>) -> Result<Option<String>> {
        let reattached =
            crate::fsutil::keep_appending(&self.path, &mut self.file, &mut self.detached);
        let mut line = serde_json::to_string(row).expect("a JSON map serialises");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err(&self.path, "append to"))?;
        self.file.flush().map_err(io_err(&self.path, "flush"))?;
        Ok(reattached)
    }
}

/// Which rows at the cut's own position go: those a checkpoint at that position holds, or also
/// those written after it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// A rollback: the run's rows up to the checkpoint stay, earlier rollbacks to it included.
    Rollback,
    /// A resume: the rollbacks to the checkpoint that its `state.json` counts (its
    /// `consecutive_failures`: a rollback records itself there) stay; later ones, whose
    /// session the resume replaces, go.
    Resume {
        /// The checkpoint's `consecutive_failures`.
        rollbacks_kept: u32,
    },
}

/// What [`truncate_after`] removed.
#[derive(Debug, Default)]
pub struct Truncated {
    /// The rows dropped, as they were written.
    pub dropped: Vec<String>,
    /// A last line that was not a JSON object with a `kimg` and had no newline (cut short by
    /// a kill or a full disk): dropped. 0 or 1.
    pub unreadable: usize,
    /// Other lines that are not rows (the user's notes, an edited row) kept where they stand,
    /// with the rows before them (those after a dropped row go with it, uncounted).
    pub foreign: usize,
}

/// Drops rows written after `images_shown` (a resume or rollback goes back to a checkpoint and
/// writes that stretch again, so it would be duplicated), and returns them.
pub fn truncate_after(run_dir: &Path, images_shown: u64, cut: Cut) -> Result<Truncated> {
    let path = run_dir.join(METRICS_FILE);
    let Some((kept, truncated)) = split_after(run_dir, images_shown, cut)? else {
        return Ok(Truncated::default());
    };
    crate::fsutil::write_own_atomic(&path, kept.as_bytes()).map_err(io_err(&path, "rewrite"))?;
    Ok(truncated)
}

/// What [`truncate_after`] would drop, without changing the file (`None`: no file).
pub fn rows_after(run_dir: &Path, images_shown: u64, cut: Cut) -> Result<Option<Truncated>> {
    Ok(split_after(run_dir, images_shown, cut)?.map(|(_, truncated)| truncated))
}

/// The text of the rows kept and those dropped.
fn split_after(run_dir: &Path, images_shown: u64, cut: Cut) -> Result<Option<(String, Truncated)>> {
    let Some(text) = read_metrics(run_dir)? else {
        return Ok(None);
    };
    let limit = images_shown as f64 / 1000.0;
    let mut truncated = Truncated::default();
    let mut kept = String::new();
    // Each line with its kimg (`None`: unreadable) and, for a rollback to the checkpoint
    // itself (a row at its kimg), that rollback's number.
    let torn_at_end = !text.ends_with('\n');
    let lines: Vec<(&str, Option<f64>, Option<u64>)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let row = serde_json::from_str::<Value>(line).ok();
            let kimg = row.as_ref().and_then(|r| r.get(key::KIMG)?.as_f64());
            let rollback = kimg
                .filter(|kimg| (kimg - limit).abs() <= 1e-9)
                .and_then(|_| row.as_ref()?.get(key::ROLLBACK)?.as_u64());
            (line, kimg, rollback)
        })
        .collect();
    // The rollbacks the checkpoint counts are those up to the last one numbered as it counts:
    // the numbers start again after a resume from a checkpoint the run gave up on, so an
    // earlier session's rows come first.
    let last_counted = match cut {
        Cut::Resume { rollbacks_kept } if rollbacks_kept > 0 => lines
            .iter()
            .rposition(|(_, _, n)| *n == Some(u64::from(rollbacks_kept))),
        _ => None,
    };
    let count = lines.len();
    // Whether the row before a line that is no row was kept: the line stays with it.
    let mut keeping = true;
    for (at, (line, kimg, rollback)) in lines.into_iter().enumerate() {
        let Some(kimg) = kimg else {
            if torn_at_end && at + 1 == count {
                truncated.unreadable += 1;
            } else if keeping {
                truncated.foreign += 1;
                kept.push_str(line);
                kept.push('\n');
            } else {
                truncated.dropped.push(line.to_string());
            }
            continue;
        };
        let rollback_after = match (cut, rollback) {
            (Cut::Resume { rollbacks_kept }, Some(n)) => match last_counted {
                Some(last) => at > last,
                None => n > u64::from(rollbacks_kept),
            },
            _ => false,
        };
        keeping = !(kimg > limit + 1e-9 || rollback_after);
        if keeping {
            kept.push_str(line);
            kept.push('\n');
        } else {
            truncated.dropped.push(line.to_string());
        }
    }
    Ok(Some((kept, truncated)))
}

/// Whether the metrics file `path` exists; anything but a regular file there (a device, a FIFO,
/// also at the end of a link) is an error naming it and `action`, not a read or write without
/// end.
fn metrics_file_exists(path: &Path, action: &'static str) -> Result<bool> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path, action)(e)),
        Ok(meta) if !meta.is_file() => Err(io_err(path, action)(crate::fsutil::not_regular(&meta))),
        Ok(_) => Ok(true),
    }
}

/// The text of `run_dir/metrics.jsonl` (`None`: there is none; see [`metrics_file_exists`]).
fn read_metrics(run_dir: &Path) -> Result<Option<String>> {
    let path = run_dir.join(METRICS_FILE);
    if !metrics_file_exists(&path, "read")? {
        return Ok(None);
    }
    let bytes = pgan_data::read_regular_file_at_most(&path, key::MAX_METRICS_BYTES)
        .map_err(io_err(&path, "read"))?;
    // A line cut or garbled by a crash is reported per line by the callers, not here; a
    // byte-order mark an editor's save put first is not part of the first row.
    let text = String::from_utf8_lossy(&bytes);
    Ok(Some(
        text.strip_prefix('\u{feff}').unwrap_or(&text).to_string(),
    ))
}

/// The last tick row of `metrics.jsonl`: its tick number and the images shown at its end
/// (`None` without one).
pub fn last_tick_row(run_dir: &Path) -> Option<LastTick> {
    last_tick_row_in(&read_metrics(run_dir).ok()??)
}

/// [`last_tick_row`] of a `metrics.jsonl` text.
fn last_tick_row_in(text: &str) -> Option<LastTick> {
    text.lines().rev().find_map(|line| {
        let row = serde_json::from_str::<Value>(line).ok()?;
        Some(LastTick {
            tick: row.get(key::TICK)?.as_u64()?,
            images: (row.get(key::KIMG)?.as_f64()? * 1000.0).round() as u64,
        })
    })
}

/// What a resume says when `metrics.jsonl` lacks rows of ticks its checkpoint closed (the file
/// deleted, restored from an older copy, or cut short): the report's curves have a gap there,
/// and nothing can bring those rows back.
pub fn lost_rows_warning(run_dir: &Path, last_row: Option<LastTick>, ticks: u64) -> Option<String> {
    let path = run_dir.join(METRICS_FILE);
    match last_row {
        Some(row) if row.tick >= ticks => None,
        _ if ticks == 0 => None,
        Some(row) => Some(format!(
            "{}: its last tick row is tick {} ({:.3} kimg), but the checkpoint closed {ticks} \
             ticks: {} lost (the curves in the report have a gap there; the run goes on from \
             the checkpoint)",
            path.display(),
            row.tick,
            row.images as f64 / 1000.0,
            if row.tick + 1 == ticks {
                format!("the row of tick {ticks} is")
            } else {
                format!("the rows of ticks {} to {ticks} are", row.tick + 1)
            },
        )),
        None => Some(format!(
            "{}: no tick rows (missing or unreadable), but the checkpoint closed {ticks} ticks: \
             the rows of ticks 1 to {ticks} are lost (the curves in the report start at this \
             resume; the run goes on from the checkpoint)",
            path.display(),
        )),
    }
}

/// What a cut of `metrics.jsonl` ([`truncate_after`]) says: a last line a kill cut short,
/// dropped; lines that are not rows, kept.
pub fn truncation_warnings(run_dir: &Path, truncated: &Truncated) -> Vec<String> {
    let path = run_dir.join(METRICS_FILE);
    let mut said = Vec::new();
    if truncated.unreadable > 0 {
        said.push(format!(
            "{}: its last line, cut short by a kill or a full disk, dropped",
            path.display(),
        ));
    }
    if truncated.foreign > 0 {
        said.push(format!(
            "{}: {} line(s) that are not rows (notes, edited rows) kept where they stand; \
             `pgan report` leaves out those without a kimg and names them",
            path.display(),
            truncated.foreign
        ));
    }
    said
}

/// What a resume to a checkpoint at `images_shown` that closed `ticks` ticks will say of the
/// run's `metrics.jsonl` (for `--dry-run`), without changing it: a torn last line, lines that
/// are not rows, rows lost before the checkpoint.
pub fn resume_warnings(
    run_dir: &Path,
    images_shown: u64,
    cut: Cut,
    ticks: u64,
) -> Result<Vec<String>> {
    let Some((kept, truncated)) = split_after(run_dir, images_shown, cut)? else {
        return Ok(lost_rows_warning(run_dir, None, ticks)
            .into_iter()
            .collect());
    };
    let mut said = truncation_warnings(run_dir, &truncated);
    said.extend(lost_rows_warning(run_dir, last_tick_row_in(&kept), ticks));
    Ok(said)
}

/// See [`last_tick_row`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastTick {
    /// The row's tick number (ticks closed by its end).
    pub tick: u64,
    /// Images shown at the tick's end.
    pub images: u64,
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

    /// A `metrics.jsonl` that is a device (a link to `/dev/zero`, which never ends) is an error
    /// naming it, for the reader and the writer alike (the writer writes through no link).
    #[test]
    fn a_metrics_file_that_is_not_a_regular_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(METRICS_FILE)).unwrap();
        let err = truncate_after(dir.path(), 0, Cut::Rollback)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics.jsonl") && err.contains("a character device, not a regular file"),
            "{err}"
        );
        let err = MetricsWriter::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("it is a symbolic link"), "{err}");
        assert!(last_tick_row(dir.path()).is_none());
        // Nor is a sparse one (2 GiB of holes) read whole.
        std::fs::remove_file(dir.path().join(METRICS_FILE)).unwrap();
        std::fs::File::create(dir.path().join(METRICS_FILE))
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        let err = truncate_after(dir.path(), 0, Cut::Rollback)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a sparse file, mostly holes"), "{err}");
    }

    #[test]
    fn tick_stats_round_trip_through_json_exactly() {
        let mut stats = TickStats::default();
        // Values whose decimal form serde_json reads back one ULP off without float_roundtrip.
        for v in [0.1, 1.0 / 3.0, 2.718281828459045e-7, -123.456789012345] {
            stats.report("Loss/D", v);
            stats.report("Loss/G", v * 1.0000001);
        }
        let text = serde_json::to_string(&stats).unwrap();
        let back: TickStats = serde_json::from_str(&text).unwrap();
        assert_eq!(back, stats);
        assert!(stats.is_plausible(4) && !stats.is_plausible(3));
    }

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
    fn step_values_come_back_in_order_with_the_extra_values_in_one_read() {
        use burn::backend::Flex;
        let device = Default::default();
        let mut values = StepValues::<Flex>::default();
        // More steps than JOIN_EVERY, so joined and single rows are read together.
        let steps = JOIN_EVERY as u64 + 3;
        for s in 0..steps {
            let value =
                |k: usize| Tensor::<Flex, 1>::from_floats([(s * 10 + k as u64) as f32], &device);
            let at = StepPosition {
                step: s + 1,
                images_shown: 4 * s,
            };
            values.push(std::array::from_fn(value), at);
        }
        assert_eq!(values.len(), steps as usize);
        let before = crate::host_read::reads_on_this_thread();
        let extra = Tensor::<Flex, 1>::from_floats([0.5, f32::NAN], &device);
        let (rows, extra) = values.read(Some(extra));
        assert_eq!(crate::host_read::reads_on_this_thread() - before, 1);
        assert!(values.is_empty());
        assert_eq!(rows.len(), steps as usize);
        for (s, row) in rows.iter().enumerate() {
            assert_eq!(row.at.step, s as u64 + 1);
            assert_eq!(row.at.images_shown, 4 * s as u64);
            assert_eq!(row.get(key::LOSS_G), Some((s * 10 + 1) as f32));
            assert!(row.is_healthy());
        }
        assert_eq!(extra[0], 0.5);
        assert!(extra[1].is_nan());

        let mut tick = TickStats::default();
        tick.report_step(&rows[0]);
        tick.report_step(&rows[1]);
        // Step s's value at column i is 10 s + i: the two steps' mean is i + 5.
        let column = STEP_KEYS
            .iter()
            .position(|k| *k == key::GRAD_G_NORM)
            .unwrap();
        assert_eq!(tick.mean(key::GRAD_G_NORM), Some(column as f64 + 5.0));
    }

    #[test]
    fn a_step_is_unhealthy_when_a_loss_or_gradient_norm_is_not_finite() {
        let at = StepPosition {
            step: 1,
            images_shown: 0,
        };
        let mut row = StepRow {
            at,
            values: [1.0; STEP_KEYS.len()],
        };
        assert!(row.is_healthy());
        for (i, name) in STEP_KEYS.iter().enumerate() {
            let mut bad = row;
            bad.values[i] = f32::INFINITY;
            assert_eq!(bad.is_healthy(), !CHECKED_KEYS.contains(name), "{name}");
        }
        row.values[0] = f32::NAN;
        assert!(!row.is_healthy());
    }

    /// A `metrics.jsonl` removed while the run writes it is written back with every row, one
    /// replaced (an editor's save) is followed; each is said once.
    #[test]
    fn a_metrics_file_removed_or_replaced_while_written_is_written_back_or_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        let mut w = MetricsWriter::open(dir.path()).unwrap();
        let row = |k: f64| Map::from_iter([("kimg".to_string(), Value::from(k))]);
        assert_eq!(w.write(&row(1.0)).unwrap(), None);
        std::fs::remove_file(&path).unwrap();
        let said = w.write(&row(2.0)).unwrap().unwrap();
        assert!(
            said.contains("was removed") && said.contains("written back"),
            "{said}"
        );
        assert_eq!(w.write(&row(3.0)).unwrap(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"kimg\":1.0}\n{\"kimg\":2.0}\n{\"kimg\":3.0}\n");
        let edited = dir.path().join("edited");
        std::fs::write(&edited, "{\"kimg\":1.0}\nmy note\n").unwrap();
        std::fs::rename(&edited, &path).unwrap();
        let said = w.write(&row(4.0)).unwrap().unwrap();
        assert!(said.contains("replaced by another file"), "{said}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"kimg\":1.0}\nmy note\n{\"kimg\":4.0}\n");
        // A link put there is not written through: said once, and the rows go on into the
        // file the run opened (removed: lost), while training goes on.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&edited, &path).unwrap();
        let said = w.write(&row(5.0)).unwrap().unwrap();
        assert!(
            said.contains(METRICS_FILE) && said.contains("link") && said.contains("lost"),
            "{said}"
        );
        assert_eq!(w.write(&row(6.0)).unwrap(), None);
        assert!(!edited.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
        // Taken away, the link is no longer in the way: the rows are written back, and said.
        std::fs::remove_file(&path).unwrap();
        let said = w.write(&row(7.0)).unwrap().unwrap();
        assert!(said.contains("written back"), "{said}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("{\"kimg\":6.0}\n{\"kimg\":7.0}\n"), "{text}");
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
        truncate_after(dir.path(), 2_000, Cut::Rollback).unwrap();
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 2);

        // Through the writer, later rows land in the rewritten file.
        let truncated = w.truncate_after(1_000, Cut::Rollback).unwrap();
        assert_eq!(truncated.dropped, ["{\"kimg\":2.0}"]);
        let mut row = Map::new();
        row.insert("kimg".into(), Value::from(1.5));
        w.write(&row).unwrap();
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["{\"kimg\":1.0}", "{\"kimg\":1.5}"]
        );
    }

    /// Only a last line cut short is dropped as unreadable; lines that are no rows elsewhere
    /// (the user's notes, an edited row) stay where they stand, with the rows before them.
    #[test]
    fn lines_that_are_not_rows_stay_with_their_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        let text = "# my notes\n{\"kimg\":1.0}\n{\"kimg\":1.5,broken}\n{\"kimg\":2.0}\n\
                    # after\n{\"kimg\":2.5}\n{\"kimg\":3.0,\"Lo";
        std::fs::write(&path, text).unwrap();
        let t = truncate_after(dir.path(), 2_000, Cut::Rollback).unwrap();
        assert_eq!((t.unreadable, t.foreign), (1, 3), "{t:?}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# my notes\n{\"kimg\":1.0}\n{\"kimg\":1.5,broken}\n{\"kimg\":2.0}\n# after\n"
        );
        // "# after" followed a kept row; once that row is dropped it goes with it.
        let t = truncate_after(dir.path(), 1_000, Cut::Rollback).unwrap();
        assert_eq!(t.dropped, ["{\"kimg\":2.0}", "# after"]);
        assert_eq!(t.foreign, 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# my notes\n{\"kimg\":1.0}\n{\"kimg\":1.5,broken}\n"
        );
    }

    /// A byte-order mark an editor's save put first: the first row is a row to the trainer
    /// (the last tick when it is the only one; kept, not a foreign line, by a rollback).
    #[test]
    fn a_byte_order_mark_before_the_first_row_leaves_it_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(&path, "\u{feff}{\"tick\":1,\"kimg\":1.0}\n").unwrap();
        let last = last_tick_row(dir.path()).unwrap();
        assert_eq!((last.tick, last.images), (1, 1_000));
        std::fs::write(
            &path,
            "\u{feff}{\"tick\":1,\"kimg\":1.0}\n{\"tick\":2,\"kimg\":2.0}\n",
        )
        .unwrap();
        let t = truncate_after(dir.path(), 1_000, Cut::Rollback).unwrap();
        assert_eq!((t.dropped.len(), t.foreign), (1, 0), "{t:?}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"tick\":1,\"kimg\":1.0}\n"
        );
    }

    #[test]
    fn a_resume_drops_rollbacks_to_its_checkpoint_and_counts_cut_lines() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            r#"{"kimg":1.0,"Loss/D":0.5}"#,
            r#"{"kimg":1.0,"Event/rollback":1}"#,
            r#"{"kimg":1.5,"Loss/D":0.25}"#,
            r#"{"kimg":1.5,"Loss"#,
        ];
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(&path, rows.join("\n")).unwrap();
        // A rollback keeps the earlier rollbacks to the same checkpoint.
        let t = truncate_after(dir.path(), 1_000, Cut::Rollback).unwrap();
        assert_eq!((t.dropped.len(), t.unreadable), (1, 1));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        // A resume keeps the rollbacks the checkpoint's state counts...
        let cut = |kept| Cut::Resume {
            rollbacks_kept: kept,
        };
        let t = truncate_after(dir.path(), 1_000, cut(1)).unwrap();
        assert!(t.dropped.is_empty());
        // ...and drops later ones (their session is the one the resume replaces).
        let dropped = rows_after(dir.path(), 1_000, cut(0))
            .unwrap()
            .unwrap()
            .dropped;
        assert_eq!(dropped, [rows[1]]);
        let t = truncate_after(dir.path(), 1_000, cut(0)).unwrap();
        assert_eq!(t.dropped, [rows[1]]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", rows[0])
        );
        // After a resume from a checkpoint the run gave up on, the numbers start again: the
        // earlier session's rollbacks 1 and 2 stay beside this one's 1 (the state counts 1), and
        // a row the state does not count yet (a kill between the two) goes.
        let rows = [
            r#"{"kimg":1.0,"Loss/D":0.5}"#,
            r#"{"kimg":1.0,"Event/rollback":1}"#,
            r#"{"kimg":1.0,"Event/rollback":2}"#,
            r#"{"kimg":1.0,"Event/rollback":1}"#,
            r#"{"kimg":1.0,"Event/rollback":2}"#,
        ];
        std::fs::write(&path, rows.join("\n")).unwrap();
        let t = truncate_after(dir.path(), 1_000, cut(1)).unwrap();
        assert_eq!(t.dropped, [rows[4]]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", rows[..4].join("\n"))
        );
    }
}
