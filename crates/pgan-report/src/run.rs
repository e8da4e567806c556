//! Reading a training run directory: `metrics.jsonl`, `config.toml`,
//! `log.txt` and the sample sheets under `samples/`.
//!
//! Only `metrics.jsonl` is required; every other file is optional and its
//! absence becomes a notice in the report.
//!
//! # `metrics.jsonl`
//!
//! One flat JSON object per line (one line per tick). Blank lines are
//! skipped; any other line that is not a JSON object (a note the user wrote
//! there, a row edited by hand; the trainer keeps them on resume) is left out
//! and listed by its 1-based line number ([`NotARow`]), which the report says
//! as a notice: a report built from part of the run without saying so would
//! be misleading. Within an object:
//!
//! * numbers are kept as `f64`, booleans as `1.0`/`0.0`;
//! * `null` is read as a non-finite value (NaN), because `serde_json`
//!   writes NaN and infinities as `null` (keys that were simply not measured
//!   on a tick should be left out of that line instead);
//! * the strings `"NaN"`, `"inf"`, `"-inf"`, `"Infinity"`, ... and the bare
//!   tokens `NaN`, `Infinity`, `-Infinity` (written by Python's `json`) are
//!   read as the corresponding non-finite `f64`;
//! * other strings (such as `"phase":"fade"`) are kept as text;
//! * nested arrays and objects and unknown keys are tolerated and ignored by
//!   the charts.

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{ReportError, Result};

/// How many lines from the end of `log.txt` the report shows.
pub const LOG_TAIL_LINES: usize = 50;

/// The most of one `log.txt` line kept (the rest is cut): the log is read line by line, so its
/// size does not set the report's memory, and neither does one endless line.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// The most of `config.toml` shown (pgan writes a few KiB; the rest of a bigger one is cut).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The largest sample sheet or timeline embedded in the page (base64 makes it a third larger):
/// a bigger one is named in a notice instead.
pub const MAX_EMBEDDED_IMAGE_BYTES: u64 = 64 << 20;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tick {
    /// 1-based line number in `metrics.jsonl`.
    pub line: usize,
    numbers: BTreeMap<String, f64>,
    text: BTreeMap<String, String>,
}

impl Tick {
    /// The numeric value of `key`, which may be NaN or infinite.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.numbers.get(key).copied()
    }

    /// The numeric value of `key` if it is present and finite.
    pub fn finite(&self, key: &str) -> Option<f64> {
        self.get(key).filter(|v| v.is_finite())
    }

    /// The text value of `key` (for string-valued keys such as `phase`).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.text.get(key).map(String::as_str)
    }

    /// Training progress in thousands of real images shown (`kimg`), if finite.
    pub fn kimg(&self) -> Option<f64> {
        self.finite(pgan_spec::metrics::KIMG)
    }

    /// Output resolution (side length in pixels) at this tick.
    pub fn resolution(&self) -> Option<u32> {
        self.finite(pgan_spec::metrics::RESOLUTION)
            .filter(|r| *r >= 1.0 && *r <= f64::from(u32::MAX))
            .map(|r| r.round() as u32)
    }

    /// Growth stage index at this tick.
    pub fn stage(&self) -> Option<i64> {
        self.finite(pgan_spec::metrics::STAGE)
            .map(|s| s.round() as i64)
    }

    /// Training phase at this tick (`"fade"`, `"stable"`, ...).
    pub fn phase(&self) -> Option<&str> {
        self.text(pgan_spec::metrics::PHASE)
    }

    /// Whether this row is the trainer's record of a rollback between ticks (`kimg` and
    /// `Event/rollback`, no tick number or resolution) rather than a tick: it marks the charts
    /// and counts as a rollback, never as a tick or a phase.
    pub fn is_event(&self) -> bool {
        self.get(pgan_spec::metrics::ROLLBACK).is_some()
            && self.get(pgan_spec::metrics::TICK).is_none()
            && self.get(pgan_spec::metrics::RESOLUTION).is_none()
    }

    /// Keys whose numeric value on this line is NaN or infinite.
    pub fn non_finite_keys(&self) -> impl Iterator<Item = &str> {
        self.numbers
            .iter()
            .filter(|(_, v)| !v.is_finite())
            .map(|(k, _)| k.as_str())
    }

    /// Builds a tick from a parsed JSON object.
    fn from_object(line: usize, obj: serde_json::Map<String, serde_json::Value>) -> Tick {
        use serde_json::Value;
        let mut tick = Tick {
            line,
            ..Tick::default()
        };
        for (key, value) in obj {
            match value {
                Value::Number(n) => {
                    if let Some(v) = n.as_f64() {
                        tick.numbers.insert(key, v);
                    }
                }
                Value::Bool(b) => {
                    tick.numbers.insert(key, if b { 1.0 } else { 0.0 });
                }
                Value::Null => {
                    tick.numbers.insert(key, f64::NAN);
                }
                Value::String(s) => match non_finite_from_str(&s) {
                    Some(v) => {
                        tick.numbers.insert(key, v);
                    }
                    None => {
                        tick.text.insert(key, s);
                    }
                },
                Value::Array(_) | Value::Object(_) => {}
            }
        }
        tick
    }
}

/// Parses the spellings of NaN and infinity that trainers write as strings.
fn non_finite_from_str(s: &str) -> Option<f64> {
    match s.trim().to_ascii_lowercase().as_str() {
        "nan" | "-nan" | "+nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Quotes the bare `NaN`, `Infinity` and `-Infinity` tokens that Python's
/// `json` module writes, so that `serde_json` accepts the line. Text inside
/// JSON strings is left alone.
fn quote_bare_non_finite(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains("NaN") && !line.contains("Infinity") {
        return line.into();
    }
    let mut out = String::with_capacity(line.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push('"');
            out.push_str(t);
            out.push('"');
            rest = &rest[t.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out.into()
}

/// A line of `metrics.jsonl` that is not a row: left out of the report, and said.
#[derive(Debug, Clone, PartialEq)]
pub struct NotARow {
    /// 1-based line number.
    pub line: usize,
    /// What it is instead (the JSON parser's words, or the kind of value).
    pub why: String,
}

/// The rows of a `metrics.jsonl` file, and the lines that are not rows.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// One per JSON object line, in file order.
    pub ticks: Vec<Tick>,
    /// The non-empty lines that are not JSON objects.
    pub not_rows: Vec<NotARow>,
}

/// Parses the text of a `metrics.jsonl` file.
pub fn parse_metrics(text: &str) -> Metrics {
    // A byte-order mark that an editor's save put first is not part of the first row.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut metrics = Metrics::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let why = match serde_json::from_str(&quote_bare_non_finite(line)) {
            Ok(serde_json::Value::Object(obj)) if obj.contains_key(pgan_spec::metrics::KIMG) => {
                metrics.ticks.push(Tick::from_object(i + 1, obj));
                continue;
            }
            // Every row the trainer writes has one: this is a note or a row edited by hand.
            Ok(serde_json::Value::Object(_)) => {
                format!("a JSON object without \"{}\"", pgan_spec::metrics::KIMG)
            }
            Ok(other) => format!(
                "a JSON {}, not an object",
                match other {
                    serde_json::Value::Array(_) => "array",
                    serde_json::Value::String(_) => "string",
                    serde_json::Value::Number(_) => "number",
                    serde_json::Value::Bool(_) => "boolean",
                    _ => "null",
                }
            ),
            // serde's position is within the one line: its column is what says where.
            Err(e) => {
                // serde's words without its position, which is within the one line.
                let words = e.to_string();
                let words = words
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_string();
                format!("not JSON: {words} at column {}", e.column())
            }
        };
        metrics.not_rows.push(NotARow { line: i + 1, why });
    }
    metrics
}

/// A run of consecutive ticks with the same resolution and phase: the unit
/// that the charts mark with boundary lines and bands.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Resolution of these ticks, if logged.
    pub resolution: Option<u32>,
    /// Phase of these ticks (`"fade"`, `"stable"`), if logged.
    pub phase: Option<String>,
    /// Stage index of the first tick, if logged.
    pub stage: Option<i64>,
    /// kimg where the segment starts: the schedule's start of the phase when the rows log it
    /// (`phase_start_kimg`), else the previous segment's last kimg (ticks log the kimg reached
    /// at their end) or the first tick's kimg.
    pub start_kimg: f64,
    /// kimg of the segment's last tick, or where the next segment starts.
    pub end_kimg: f64,
    /// Indices into the tick list.
    pub ticks: Range<usize>,
}

impl Segment {
    /// True for a fade-in phase (the new layer is being blended in).
    pub fn is_fade(&self) -> bool {
        self.phase
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("fade") || p.eq_ignore_ascii_case("fade-in"))
    }

    /// Short label: `"16×16"`, or `"16×16 fade"`.
    pub fn label(&self) -> String {
        let res = match self.resolution {
            Some(r) => format!("{r}×{r}"),
            None => "?".to_string(),
        };
        match &self.phase {
            Some(p) if self.is_fade() => format!("{res} {p}"),
            _ => res,
        }
    }
}

/// How many of `rows` are ticks (not [`Tick::is_event`] rows).
pub fn tick_count(rows: &[Tick]) -> usize {
    rows.iter().filter(|t| !t.is_event()).count()
}

/// Splits the ticks that have a finite `kimg` into [`Segment`]s wherever the
/// resolution or the phase changes. Ticks without a finite kimg, and event rows, are skipped.
pub fn segments(ticks: &[Tick]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for (i, t) in ticks.iter().enumerate() {
        let Some(kimg) = t.kimg().filter(|_| !t.is_event()) else {
            continue;
        };
        let (res, phase) = (t.resolution(), t.phase().map(str::to_string));
        match out.last_mut() {
            Some(s) if s.resolution == res && s.phase == phase => {
                s.end_kimg = kimg;
                s.ticks.end = i + 1;
            }
            prev => {
                // Where the schedule says the phase began (rows since it was logged), else the
                // previous tick's end: the first tick of a phase began in the one before.
                let logged = t
                    .finite(pgan_spec::metrics::PHASE_START_KIMG)
                    .filter(|&start| start <= kimg);
                let start = match prev {
                    Some(p) => {
                        let start = logged.map_or(p.end_kimg, |s| s.max(p.start_kimg)).min(kimg);
                        // A kimg that went backwards (rows joined by hand) moves nothing back.
                        p.end_kimg = start.max(p.start_kimg);
                        start
                    }
                    None => logged.unwrap_or(kimg),
                };
                out.push(Segment {
                    resolution: res,
                    phase,
                    stage: t.stage(),
                    start_kimg: start,
                    end_kimg: kimg,
                    ticks: i..i + 1,
                });
            }
        }
    }
    out
}

/// An image file read into memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The file's bytes (PNG).
    pub bytes: Vec<u8>,
}

impl ImageFile {
    /// The file name, for captions.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The last lines of `log.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogTail {
    /// At most [`LOG_TAIL_LINES`] lines, oldest first.
    pub lines: Vec<String>,
    /// How many lines the whole log has.
    pub total_lines: usize,
    /// `WARN` lines in the whole log (alarms, rollbacks, skipped evaluations).
    pub warnings: usize,
    /// The last `ERROR` line of the whole log (what ended a session), if any.
    pub last_error: Option<String>,
}

/// The level of a `log.txt` line (`INFO`, `WARN`, `ERROR`): the first of those words among its
/// first few, which hold the time stamp (`2026-12-06 02:31:08 WARN ...`).
pub fn log_level(line: &str) -> Option<&str> {
    line.split_whitespace()
        .take(4)
        .find(|w| matches!(*w, "INFO" | "WARN" | "ERROR"))
}

/// Everything the report shows, read from a run directory.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The run directory as given.
    pub dir: PathBuf,
    /// The run's name: the directory's final component.
    pub name: String,
    /// `config.toml`, verbatim.
    pub config: Option<String>,
    /// Tail of `log.txt`.
    pub log: Option<LogTail>,
    /// The parsed `metrics.jsonl`.
    pub ticks: Vec<Tick>,
    /// The latest sample sheet (`samples/tick-N.png` of the highest tick).
    pub latest_sample: Option<ImageFile>,
    /// How many sample sheets (`samples/tick-N.png`) there are.
    pub sample_count: usize,
    /// `samples/timeline.png`.
    pub timeline: Option<ImageFile>,
    /// The 1-based number of an incomplete last line of `metrics.jsonl` that was left out.
    pub torn_last_line: Option<usize>,
    /// Other lines of `metrics.jsonl` that are not rows, left out.
    pub not_rows: Vec<NotARow>,
    /// Run files read only in part (for their size) or not at all (too large to embed, or
    /// unreadable), said as notices.
    pub file_notices: Vec<String>,
}

/// File name of the growth timeline image inside `samples/`.
pub const TIMELINE_FILE: &str = "timeline.png";

impl RunData {
    /// Reads a run directory. Fails if the directory or `metrics.jsonl` is
    /// missing or cannot be read.
    pub fn load(dir: &Path) -> Result<RunData> {
        if !dir.is_dir() {
            return Err(ReportError::MissingRunDir(dir.to_path_buf()));
        }
        let metrics_path = dir.join(pgan_spec::metrics::METRICS_FILE);
        let metrics =
            match read_regular_at_most(&metrics_path, pgan_spec::metrics::MAX_METRICS_BYTES) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ReportError::MissingMetrics(metrics_path));
                }
                Err(e) => return Err(ReportError::io(&metrics_path, e)),
            };
        let (metrics, torn_last_line) = without_torn_last_line(&metrics);
        let Metrics { ticks, not_rows } = parse_metrics(metrics);

        let mut file_notices = Vec::new();
        let config_path = dir.join("config.toml");
        let config = match read_regular_head(&config_path, MAX_CONFIG_BYTES) {
            Ok((bytes, len)) => {
                if len > MAX_CONFIG_BYTES {
                    file_notices.push(format!(
                        "config.toml is {len} bytes: its first {} KiB are shown",
                        MAX_CONFIG_BYTES >> 10
                    ));
                }
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ReportError::io(&config_path, e)),
        };
        let log_path = dir.join("log.txt");
        let log = match read_log_tail(&log_path) {
            Ok(log) => Some(log),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ReportError::io(&log_path, e)),
        };

        let samples_dir = dir.join("samples");
        let mut sheets = list_pngs(&samples_dir)?;
        let timeline_pos = sheets.iter().position(|p| {
            p.file_name()
                .is_some_and(|n| n.eq_ignore_ascii_case(TIMELINE_FILE))
        });
        let timeline = match timeline_pos {
            Some(i) => read_image(sheets.remove(i), &mut file_notices)?,
            None => None,
        };
        // The trainer's sheets only, newest tick last: other images in `samples/` (a render's
        // `--out`) are the user's.
        let mut sheets: Vec<(u64, PathBuf)> = sheets
            .into_iter()
            .filter_map(|p| {
                let tick = pgan_spec::run_files::sample_sheet_tick(p.file_name()?.to_str()?)?;
                Some((tick, p))
            })
            .collect();
        sheets.sort();
        let sample_count = sheets.len();
        let latest_sample = match sheets.pop().map(|(_, p)| p) {
            Some(p) => read_image(p, &mut file_notices)?,
            None => None,
        };

        Ok(RunData {
            dir: dir.to_path_buf(),
            name: run_name(dir),
            config,
            log,
            ticks,
            latest_sample,
            sample_count,
            timeline,
            torn_last_line,
            not_rows,
            file_notices,
        })
    }
}

/// `text` without a last line that the trainer did not finish writing (a row is appended with
/// its newline in one write, so a last line without one that does not parse was cut short by a
/// crash or a full disk), and that line's 1-based number.
fn without_torn_last_line(text: &str) -> (&str, Option<usize>) {
    if text.is_empty() || text.ends_with('\n') {
        return (text, None);
    }
    let start = text.rfind('\n').map_or(0, |i| i + 1);
    let last = text[start..].trim();
    let parses = last.is_empty()
        || serde_json::from_str::<serde_json::Value>(&quote_bare_non_finite(last)).is_ok();
    if parses {
        (text, None)
    } else {
        (&text[..start], Some(text[..start].lines().count() + 1))
    }
}

/// The directory's last component, resolving `.` and `..` when possible.
fn run_name(dir: &Path) -> String {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    named(dir)
        .filter(|n| n != "." && n != "..")
        .or_else(|| dir.canonicalize().ok().and_then(|p| named(&p)))
        .unwrap_or_else(|| dir.display().to_string())
}

/// `path` opened for reading, and its length; it must be a regular file (or a link to one):
/// reading a FIFO or a device would wait forever or never end.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<(fs::File, u64)> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((fs::File::open(path)?, meta.len()))
}

/// The bytes of `path` (see [`open_regular`]), which may be at most `max` long: a longer one, or
/// a sparse one, is refused before it is read.
fn read_regular_at_most(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let (_, len) = open_regular(path)?;
    pgan_spec::output::refuse_mostly_holes(&fs::metadata(path)?)?;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is {len} bytes, more than the {max} a run's metrics can be"),
        ));
    }
    read_regular_head(path, max).map(|(bytes, _)| bytes)
}

/// At most the first `max` bytes of `path` (see [`open_regular`]), and its length.
pub(crate) fn read_regular_head(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::Read as _;
    let (file, len) = open_regular(path)?;
    let mut bytes = Vec::with_capacity(len.min(max).min(1 << 24) as usize);
    file.take(max).read_to_end(&mut bytes)?;
    Ok((bytes, len))
}

/// The tail of `log.txt` and its counts, read line by line (each line cut at
/// [`MAX_LOG_LINE_BYTES`]): memory does not grow with the log.
fn read_log_tail(path: &Path) -> std::io::Result<LogTail> {
    use std::io::BufRead as _;
    let (file, _) = open_regular(path)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut tail = std::collections::VecDeque::with_capacity(LOG_TAIL_LINES);
    let (mut total_lines, mut warnings, mut last_error) = (0, 0, None);
    let mut line = Vec::new();
    let mut cut = false;
    loop {
        let chunk = reader.fill_buf()?;
        let end = chunk.is_empty();
        let (piece, newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], true),
            None => (chunk, false),
        };
        let room = MAX_LOG_LINE_BYTES.saturating_sub(line.len());
        cut |= piece.len() > room;
        line.extend_from_slice(&piece[..piece.len().min(room)]);
        let used = piece.len() + usize::from(newline);
        reader.consume(used);
        if newline || (end && !line.is_empty()) {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let mut text = String::from_utf8_lossy(&line).into_owned();
            if std::mem::take(&mut cut) {
                text.push_str(" …");
            }
            line.clear();
            total_lines += 1;
            match log_level(&text) {
                Some("WARN") => warnings += 1,
                Some("ERROR") => last_error = Some(text.clone()),
                _ => {}
            }
            if tail.len() == LOG_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
        if end {
            break;
        }
    }
    Ok(LogTail {
        lines: tail.into(),
        total_lines,
        warnings,
        last_error,
    })
}

/// `*.png` files directly in `dir`, sorted by file name; empty if `dir` is missing.
fn list_pngs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ReportError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ReportError::io(dir, e))?;
        let path = entry.path();
        let is_png = path
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("png"));
        // Not only regular files: a sheet that cannot be read (a FIFO, a link to nowhere) is a
        // notice in the report, not silently passed over for an older one.
        if is_png && !path.is_dir() {
            out.push(path);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

/// The image at `path` to embed, or `None` with a notice in `file_notices` when it is too
/// large or cannot be read (the report is still written, without it).
fn read_image(path: PathBuf, file_notices: &mut Vec<String>) -> Result<Option<ImageFile>> {
    let (bytes, len) = match read_regular_head(&path, MAX_EMBEDDED_IMAGE_BYTES + 1) {
        Ok(read) => read,
        Err(e) => {
            file_notices.push(format!(
                "{}: cannot read it ({e}): not shown",
                path.display()
            ));
            return Ok(None);
        }
    };
    if len > MAX_EMBEDDED_IMAGE_BYTES || bytes.len() as u64 > MAX_EMBEDDED_IMAGE_BYTES {
        file_notices.push(format!(
            "{} is {} MiB, more than the {} MiB a page embeds: not shown",
            path.display(),
            len.max(bytes.len() as u64) >> 20,
            MAX_EMBEDDED_IMAGE_BYTES >> 20
        ));
        return Ok(None);
    }
    Ok(Some(ImageFile { path, bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Tick>> {
        let metrics = parse_metrics(text);
        assert_eq!(metrics.not_rows, [], "{text}");
        Ok(metrics.ticks)
    }

    #[test]
    fn parses_numbers_text_and_tolerates_unknown_keys() {
        let ticks = parse(
            "{\"tick\":1,\"kimg\":0.5,\"resolution\":4,\"phase\":\"stable\",\"Loss/D\":-0.8,\
             \"weird\":[1,2],\"nested\":{\"a\":1},\"Event/rollback\":true}\n\n\
             {\"tick\":2,\"kimg\":1.0}\n",
        )
        .unwrap();
        assert_eq!(ticks.len(), 2);
        let t = &ticks[0];
        assert_eq!(t.line, 1);
        assert_eq!(t.kimg(), Some(0.5));
        assert_eq!(t.resolution(), Some(4));
        assert_eq!(t.phase(), Some("stable"));
        assert_eq!(t.get("Loss/D"), Some(-0.8));
        assert_eq!(t.get("Event/rollback"), Some(1.0));
        assert_eq!(t.get("weird"), None);
        // blank line skipped, line numbers stay those of the file
        assert_eq!(ticks[1].line, 3);
        assert_eq!(ticks[1].resolution(), None);
    }

    #[test]
    fn a_byte_order_mark_before_the_first_row_is_not_part_of_it() {
        let ticks =
            parse("\u{feff}{\"tick\":1,\"kimg\":0.5}\n{\"tick\":2,\"kimg\":1.0}\n").unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!((ticks[0].line, ticks[0].kimg()), (1, Some(0.5)));
    }

    #[test]
    fn reads_every_spelling_of_non_finite() {
        let ticks = parse(
            r#"{"kimg":1,"a":NaN,"b":Infinity,"c":-Infinity,"d":null,"e":"nan","f":"-inf","g":"NaN in a string","h":1}"#,
        )
        .unwrap();
        let t = &ticks[0];
        assert!(t.get("a").unwrap().is_nan());
        assert_eq!(t.get("b"), Some(f64::INFINITY));
        assert_eq!(t.get("c"), Some(f64::NEG_INFINITY));
        assert!(t.get("d").unwrap().is_nan());
        assert!(t.get("e").unwrap().is_nan());
        assert_eq!(t.get("f"), Some(f64::NEG_INFINITY));
        assert_eq!(t.text("g"), Some("NaN in a string"));
        assert_eq!(t.finite("a"), None);
        assert_eq!(t.finite("h"), Some(1.0));
        let bad: Vec<&str> = t.non_finite_keys().collect();
        assert_eq!(bad, ["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn quoting_leaves_strings_alone() {
        let s = r#"{"msg":"say \"NaN\" Infinity","x":NaN}"#;
        assert_eq!(
            quote_bare_non_finite(s),
            r#"{"msg":"say \"NaN\" Infinity","x":"NaN"}"#
        );
        assert_eq!(quote_bare_non_finite("{\"x\":1}"), "{\"x\":1}");
    }

    #[test]
    fn lines_that_are_not_rows_are_listed_and_the_rows_kept() {
        let metrics = parse_metrics(
            "{\"kimg\":1}\nnote: lr lowered here\n\n{\"kimg\":2}\n[1,2]\n{\"kimg\":3,\n\
             {\"note\":\"lr lowered\"}\n{\"kimg\":null}\n",
        );
        let kimgs: Vec<_> = metrics.ticks.iter().map(|t| t.line).collect();
        assert_eq!(kimgs, [1, 4, 8], "the rows, by line; a null kimg is a row");
        let why: Vec<_> = metrics
            .not_rows
            .iter()
            .map(|n| (n.line, n.why.as_str()))
            .collect();
        assert_eq!(
            why,
            [
                (2, "not JSON: expected ident at column 2"),
                (5, "a JSON array, not an object"),
                (6, "not JSON: EOF while parsing a value at column 10"),
                (7, "a JSON object without \"kimg\""),
            ]
        );
    }

    #[test]
    fn segments_split_on_resolution_and_phase() {
        let mut text = String::new();
        let rows = [
            (0.5, 4, "stable"),
            (1.0, 4, "stable"),
            (1.5, 8, "fade"),
            (2.0, 8, "fade"),
            (2.5, 8, "stable"),
            (3.0, 16, "fade"),
        ];
        for (k, r, p) in rows {
            text.push_str(&format!(
                "{{\"kimg\":{k},\"resolution\":{r},\"phase\":\"{p}\"}}\n"
            ));
        }
        // A row without a finite kimg: a tick, but in no segment.
        text.push_str("{\"resolution\":16,\"kimg\":null}\n");
        // The trainer's rollback rows (between ticks) are neither ticks nor phases.
        text.insert_str(0, "{\"kimg\":0,\"Event/rollback\":1}\n");
        text.push_str("{\"kimg\":3.0,\"Event/rollback\":1}\n");
        let ticks = parse(&text).unwrap();
        assert_eq!((ticks.len(), tick_count(&ticks)), (9, 7));
        let segs = segments(&ticks);
        let labels: Vec<String> = segs.iter().map(Segment::label).collect();
        assert_eq!(labels, ["4×4", "8×8 fade", "8×8", "16×16 fade"]);
        assert_eq!(segs[1].start_kimg, 1.0);
        assert_eq!(segs[1].end_kimg, 2.0);
        assert_eq!(segs[1].ticks, 3..5);
        assert!(segs[1].is_fade() && !segs[2].is_fade());
        assert_eq!(segs[0].start_kimg, 0.5);
    }

    #[test]
    fn segments_begin_where_the_schedule_says_their_phase_began() {
        // Phases of 1.2 kimg, ticks of 0.5: each tick that crosses into a phase is logged
        // with it, and the phase began during it.
        let rows = [
            (0.5, 4, "stable", 0.0),
            (1.0, 4, "stable", 0.0),
            (1.5, 8, "fade", 1.2),
            (2.0, 8, "fade", 1.2),
            (2.5, 8, "stable", 2.4),
        ];
        let mut text = String::new();
        for (k, r, p, start) in rows {
            text.push_str(&format!(
                "{{\"kimg\":{k},\"resolution\":{r},\"phase\":\"{p}\",\"phase_start_kimg\":{start}}}\n"
            ));
        }
        let segs = segments(&parse(&text).unwrap());
        let bounds: Vec<(f64, f64)> = segs.iter().map(|s| (s.start_kimg, s.end_kimg)).collect();
        assert_eq!(bounds, [(0.0, 1.2), (1.2, 2.4), (2.4, 2.5)]);
    }

    #[test]
    fn load_reads_optional_files_and_picks_latest_sample() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("my-run");
        fs::create_dir_all(run.join("samples")).unwrap();
        fs::write(run.join("metrics.jsonl"), "{\"kimg\":1}\n").unwrap();
        let log: String = (1..=80).map(|i| format!("line {i}\n")).collect();
        fs::write(run.join("log.txt"), log).unwrap();
        for name in [
            "tick-000010.png",
            "tick-000002.png",
            "tick-1000000.png",
            "upscaled-x4.png",
            "timeline.png",
            "notes.txt",
        ] {
            fs::write(run.join("samples").join(name), name.as_bytes()).unwrap();
        }
        let data = RunData::load(&run).unwrap();
        assert_eq!(data.name, "my-run");
        assert_eq!(data.config, None);
        let log = data.log.unwrap();
        assert_eq!(log.total_lines, 80);
        assert_eq!(log.lines.len(), LOG_TAIL_LINES);
        assert_eq!(log.lines[0], "line 31");
        // The user's image is no sheet; the highest tick is the latest, however it sorts.
        assert_eq!(data.sample_count, 3);
        assert_eq!(data.latest_sample.unwrap().name(), "tick-1000000.png");
        assert_eq!(data.timeline.unwrap().bytes, b"timeline.png");
    }

    /// A latest sheet and a timeline that cannot be read (a FIFO, a link to nowhere) are each
    /// a notice naming them, and the run still loads: not an error, nor an older sheet shown
    /// in silence.
    #[cfg(unix)]
    #[test]
    fn a_latest_sheet_that_cannot_be_read_is_said_not_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        fs::create_dir_all(run.join("samples")).unwrap();
        fs::write(run.join("metrics.jsonl"), "{\"kimg\":1}\n").unwrap();
        fs::write(run.join("samples/tick-000001.png"), b"\x89PNG older").unwrap();
        let fifo = run.join("samples/tick-000002.png");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        std::os::unix::fs::symlink("nowhere.png", run.join("samples/timeline.png")).unwrap();
        let data = RunData::load(&run).unwrap();
        assert!(data.latest_sample.is_none());
        assert!(data.timeline.is_none());
        assert_eq!(data.sample_count, 2);
        let notices = data.file_notices.join("\n");
        assert!(
            notices.contains("tick-000002.png: cannot read it (")
                && notices.contains("timeline.png: cannot read it ("),
            "{notices}"
        );
    }

    /// A long log, an endless line, a large config and a sheet too large to embed: the log is
    /// read line by line with each line cut, the config and sheet in part or not at all, each
    /// said; the counts still cover the whole log.
    #[test]
    fn large_run_files_are_read_in_bounded_pieces_and_said() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("big-run");
        fs::create_dir_all(run.join("samples")).unwrap();
        fs::write(run.join("metrics.jsonl"), "{\"kimg\":1}\n").unwrap();
        let mut log = fs::File::create(run.join("log.txt")).unwrap();
        writeln!(log, "2026-12-06 01:00:00 ERROR first end\r").unwrap();
        log.write_all(&vec![b'x'; 3 * MAX_LOG_LINE_BYTES + 7])
            .unwrap();
        log.write_all(b"\n").unwrap();
        for i in 0..100 {
            writeln!(log, "2026-12-06 01:00:01 WARN alarm {i}").unwrap();
        }
        // The last line has no newline (a session still writing).
        write!(log, "2026-12-06 01:00:02 ERROR last end").unwrap();
        drop(log);
        let config = fs::File::create(run.join("config.toml")).unwrap();
        config.set_len(2 * MAX_CONFIG_BYTES).unwrap();
        let sheet = fs::File::create(run.join("samples/tick-000001.png")).unwrap();
        sheet.set_len(MAX_EMBEDDED_IMAGE_BYTES + 1).unwrap();

        let data = RunData::load(&run).unwrap();
        let log = data.log.unwrap();
        assert_eq!(log.total_lines, 103);
        assert_eq!(log.warnings, 100);
        assert_eq!(
            log.last_error.as_deref(),
            Some("2026-12-06 01:00:02 ERROR last end")
        );
        assert_eq!(log.lines.len(), LOG_TAIL_LINES);
        assert_eq!(log.lines[0], "2026-12-06 01:00:01 WARN alarm 51");
        assert_eq!(data.config.unwrap().len() as u64, MAX_CONFIG_BYTES);
        assert!(data.latest_sample.is_none());
        assert_eq!(data.sample_count, 1);
        assert_eq!(data.file_notices.len(), 2, "{:?}", data.file_notices);
        assert!(data.file_notices[0].contains("config.toml is 2097152 bytes"));
        assert!(data.file_notices[1].contains("tick-000001.png is 64 MiB"));

        // A log of only an endless line keeps its first bytes, marked as cut.
        let mut log = fs::File::create(run.join("log.txt")).unwrap();
        log.write_all(&vec![b'y'; 5 * MAX_LOG_LINE_BYTES]).unwrap();
        drop(log);
        let log = RunData::load(&run).unwrap().log.unwrap();
        assert_eq!(log.total_lines, 1);
        assert_eq!(log.lines[0].len(), MAX_LOG_LINE_BYTES + " …".len());
        assert!(log.lines[0].ends_with("y …"));
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = RunData::load(&missing).unwrap_err();
        assert!(matches!(err, ReportError::MissingRunDir(_)));
        assert!(err.to_string().contains("nope"));

        let err = RunData::load(dir.path()).unwrap_err();
        assert!(matches!(err, ReportError::MissingMetrics(_)));
        assert!(err.to_string().contains("metrics.jsonl"), "{err}");
        // A sparse one (2 GiB of holes) and one longer than any run writes are refused unread.
        for len in [2 << 30, (32 << 30) + 1] {
            fs::File::create(dir.path().join("metrics.jsonl"))
                .unwrap()
                .set_len(len)
                .unwrap();
            let err = RunData::load(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("metrics.jsonl") && err.contains("a sparse file, mostly holes"),
                "{err}"
            );
        }
    }

    /// A FIFO in a run's place would block the report forever: it is refused, named.
    #[test]
    fn a_run_file_that_is_not_a_regular_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("metrics.jsonl"), "{\"kimg\":0.1}\n").unwrap();
        let fifo = dir.path().join("config.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = RunData::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("config.toml") && err.contains("not a regular file"),
            "{err}"
        );
    }
}
