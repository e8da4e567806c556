//! `prepare`: turn a folder of images into one `.pgan` pyramid file.
//!
//! Pipeline: walk (sorted) -> optional shuffle -> chunks of images decoded
//! and fitted in parallel -> a writer thread appends each chunk's levels at
//! their final positions while the next chunk decodes. Memory is bounded by
//! the chunk size (three chunks alive at most), never by the dataset size.
//!
//! The file is sized for every candidate image up front. Files that fail to
//! decode leave the tail of each level's region unused; at the end the levels
//! are slid down over those gaps (only when something was skipped), the
//! manifest and header are written, the file is synced and atomically renamed
//! into place. Until that rename the data lives in a hidden temporary file
//! next to the output, removed on any error.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::files::{file_kind, open_regular, remove_stale_temps, temp_path_for, OpenError};
use crate::format::{self, Header, LevelEntry, Section, FORMAT_VERSION};
use crate::ingest::{self, Fit, Target};
use crate::manifest::{escape_name, Manifest, ManifestOptions};
use crate::pyramid::build_levels;

/// The colour under transparent pixels and padding unless another is given: black.
pub const DEFAULT_BACKGROUND: [u8; 3] = [0, 0, 0];

/// Options of [`prepare`]. Build with [`PrepareOptions::new`] and adjust fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareOptions {
    /// Folder scanned recursively for images.
    pub input_dir: PathBuf,
    /// The `.pgan` file to create.
    pub output: PathBuf,
    /// Top-level resolution: a power of two in 4..=1024.
    pub resolution: u32,
    /// 3 for RGB (default) or 1 for luma.
    pub channels: u8,
    /// How non-square images are made square (default: centre crop).
    pub fit: Fit,
    /// Colour that transparent pixels are composited onto, and the padding
    /// colour for [`Fit::Pad`]. Default black, which is also what a decoder
    /// that drops alpha shows for the (usually black) transparent pixels.
    pub background: [u8; 3],
    /// Skip images whose shorter side is below this; without it smaller
    /// images are upscaled and counted as warnings.
    pub min_size: Option<u32>,
    /// Store images in an order shuffled by this seed instead of path order.
    pub shuffle_seed: Option<u64>,
    /// Skip images with more pixels than this (read from the header, before decoding):
    /// decompression bombs. Default [`DEFAULT_MAX_PIXELS`](crate::DEFAULT_MAX_PIXELS).
    pub max_pixels: u64,
    /// Overwrite `output` if it exists.
    pub force: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl PrepareOptions {
    /// Defaults: RGB, centre crop, black background, no min size, path order, no force, no progress.
    pub fn new(input_dir: impl Into<PathBuf>, output: impl Into<PathBuf>, resolution: u32) -> Self {
        PrepareOptions {
            input_dir: input_dir.into(),
            output: output.into(),
            resolution,
            channels: 3,
            fit: Fit::CenterCrop,
            background: DEFAULT_BACKGROUND,
            min_size: None,
            shuffle_seed: None,
            max_pixels: ingest::DEFAULT_MAX_PIXELS,
            force: false,
            progress: false,
        }
    }

    fn target(&self) -> Target {
        Target {
            resolution: self.resolution,
            channels: self.channels,
            fit: self.fit,
            background: self.background,
            min_size: self.min_size,
            max_pixels: self.max_pixels,
        }
    }
}

/// What [`prepare`] did.
#[derive(Clone, Debug)]
pub struct PrepareSummary {
    /// The file written.
    pub output: PathBuf,
    /// The report listing skipped and upscaled files.
    pub report: PathBuf,
    /// Images stored.
    pub written: usize,
    /// Files with an image extension that were skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// How many of `skipped` have more pixels than [`PrepareOptions::max_pixels`].
    pub over_pixel_limit: usize,
    /// Stored images that were smaller than the resolution and upscaled (warnings).
    pub upscaled: Vec<PathBuf>,
    /// Files and links not taken (not an image extension, a folder reached twice), with why.
    pub ignored: Vec<(PathBuf, &'static str)>,
    /// Wall time.
    pub elapsed: Duration,
    /// `written / elapsed`.
    pub images_per_sec: f64,
    /// Size of the output file.
    pub bytes: u64,
    /// Top-level resolution.
    pub resolution: u32,
    /// Channels stored.
    pub channels: u8,
    /// Temporary files of earlier runs for this output, killed before they could remove them,
    /// that this run removed.
    pub removed_stale: Vec<PathBuf>,
    /// Why the text report could not be written, if it could not. The dataset is complete
    /// either way: the report is written after it, and only describes it.
    pub report_error: Option<String>,
}

impl fmt::Display for PrepareSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} images ({res}x{res}, {} channel{}) to {}: {:.1} MiB in {:.1} s ({:.0} images/s)",
            self.written,
            self.channels,
            if self.channels == 1 { "" } else { "s" },
            self.output.display(),
            self.bytes as f64 / (1024.0 * 1024.0),
            self.elapsed.as_secs_f64(),
            self.images_per_sec,
            res = self.resolution,
        )?;
        if !self.skipped.is_empty() {
            match &self.report_error {
                None => writeln!(
                    f,
                    "skipped {} files (reasons in {})",
                    self.skipped.len(),
                    self.report.display()
                )?,
                Some(_) => {
                    let (path, why) = &self.skipped[0];
                    writeln!(
                        f,
                        "skipped {} files (the first: {}: {why})",
                        self.skipped.len(),
                        shown(path)
                    )?
                }
            }
        }
        if !self.upscaled.is_empty() {
            writeln!(
                f,
                "warning: {} images smaller than {} were upscaled",
                self.upscaled.len(),
                self.resolution
            )?;
        }
        let unreadable: Vec<&PathBuf> = self
            .ignored
            .iter()
            .filter(|(_, why)| *why == crate::ingest::UNREADABLE_FOLDER)
            .map(|(path, _)| path)
            .collect();
        if let Some(first) = unreadable.first() {
            let more = match unreadable.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            };
            writeln!(
                f,
                "warning: the images in {}{more} are not in the dataset: the folder cannot be \
                 read (permission denied or an I/O error; listed in the report)",
                first.display()
            )?;
        }
        if !self.ignored.is_empty() {
            writeln!(
                f,
                "ignored {} files, links and folders (listed in the report, with why)",
                self.ignored.len()
            )?;
        }
        if !self.removed_stale.is_empty() {
            writeln!(
                f,
                "removed {} temporary files left by interrupted runs",
                self.removed_stale.len()
            )?;
        }
        if let Some(e) = &self.report_error {
            writeln!(
                f,
                "warning: the report {} could not be written ({e}); the dataset is complete",
                self.report.display()
            )?;
        }
        Ok(())
    }
}

/// Prepare a pyramid file from a folder of images. See the module docs.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareSummary> {
    prepare_cancellable(opts, &AtomicBool::new(false))
}

/// [`prepare`] that stops as soon as `cancel` is set (from a signal handler, say): it then
/// removes its temporary file and returns [`DataError::Interrupted`], leaving no output.
pub fn prepare_cancellable(opts: &PrepareOptions, cancel: &AtomicBool) -> Result<PrepareSummary> {
    prepare_with_limit(opts, None, cancel)
}

/// [`prepare_cancellable`] with an optional cap on bytes written, used by tests to
/// simulate a full disk.
pub(crate) fn prepare_with_limit(
    opts: &PrepareOptions,
    write_limit: Option<u64>,
    cancel: &AtomicBool,
) -> Result<PrepareSummary> {
    let start = Instant::now();
    validate_options(opts)?;
    check_input(&opts.input_dir)?;
    check_output(opts)?;
    let mut removed_stale = remove_stale_temps(&opts.output);
    removed_stale.extend(remove_stale_temps(&report_path(&opts.output)));
    let walk = ingest::walk(&opts.input_dir)?;
    if walk.images.is_empty() {
        return Err(if let Some(unreadable) = walk.unreadable_error() {
            unreadable
        } else if walk.ignored.is_empty() {
            DataError::EmptyInput(opts.input_dir.clone())
        } else {
            DataError::NoImages {
                dir: opts.input_dir.clone(),
                ignored: walk.ignored.len(),
            }
        });
    }
    if let Some(input) = output_among(&opts.output, &walk.images) {
        return Err(DataError::OutputUnwritable {
            path: opts.output.clone(),
            reason: format!(
                "it is one of the input images ({}); write the dataset elsewhere",
                input.display()
            ),
        });
    }
    let mut candidates = walk.images;
    if let Some(seed) = opts.shuffle_seed {
        // A shuffled candidate list restricted to the survivors is still a
        // uniformly shuffled survivor list, so this is the stored order.
        crate::shuffle::shuffle(&mut candidates, seed);
    }

    let tmp_path = temp_path(&opts.output);
    let writers_folder = crate::files::lock_writers_folder(&opts.output);
    let file = File::create_new(&tmp_path).map_err(|e| DataError::OutputUnwritable {
        path: opts.output.clone(),
        reason: format!("cannot create temporary file {}: {e}", tmp_path.display()),
    })?;
    // Held while it is written: what marks this process as the output's writer to another
    // prepare (`files::live_writer`). Best effort: without locks, a live pid counts.
    let _ = file.try_lock();
    let guard = TempGuard {
        path: tmp_path.clone(),
        armed: true,
    };
    // Checked with this process's temporary file in place, under the folder's lock: of two
    // writers starting together exactly one sees the other, and neither replaces the other's
    // output.
    if let Some(pid) = crate::files::live_writer(&opts.output) {
        return Err(DataError::OutputUnwritable {
            path: opts.output.clone(),
            reason: format!(
                "another process (pid {pid}) is writing it now; wait for it to finish or stop it"
            ),
        });
    }
    drop(writers_folder);
    let mut sink = Sink {
        file,
        limit: write_limit,
        written: 0,
    };
    let io_err = |e: io::Error| DataError::io("cannot write", &opts.output, e);

    let interrupted = || DataError::Interrupted(opts.output.clone());
    let outcome = write_levels(opts, &candidates, &mut sink, cancel).map_err(io_err)?;
    if cancel.load(Ordering::SeqCst) {
        return Err(interrupted());
    }
    if outcome.stored.is_empty() {
        return Err(nothing_decodable(&opts.input_dir, &outcome.skipped));
    }
    let bytes = finish_file(opts, &mut sink, &outcome).map_err(io_err)?;
    drop(sink);
    if cancel.load(Ordering::SeqCst) {
        return Err(interrupted());
    }
    guard.commit(&opts.output, opts.force)?;

    let elapsed = start.elapsed();
    let summary = PrepareSummary {
        report: report_path(&opts.output),
        output: opts.output.clone(),
        written: outcome.stored.len(),
        over_pixel_limit: outcome
            .skipped
            .iter()
            .filter(|(_, why)| why.starts_with(ingest::TOO_MANY_PIXELS))
            .count(),
        skipped: outcome.skipped,
        upscaled: outcome.upscaled,
        ignored: walk.ignored,
        elapsed,
        images_per_sec: outcome.stored.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        bytes,
        resolution: opts.resolution,
        channels: opts.channels,
        removed_stale,
        report_error: None,
    };
    let mut summary = summary;
    if let Err(e) = write_report(&summary) {
        summary.report_error = Some(e.to_string());
    }
    Ok(summary)
}

fn validate_options(opts: &PrepareOptions) -> Result<()> {
    if !format::valid_resolution(opts.resolution) {
        return Err(DataError::InvalidOption(format!(
            "resolution {} must be a power of two between {} and {}",
            opts.resolution,
            format::MIN_RESOLUTION,
            format::MAX_RESOLUTION
        )));
    }
    if opts.channels != 1 && opts.channels != 3 {
        return Err(DataError::InvalidOption(format!(
            "channels {} must be 1 (luma) or 3 (RGB)",
            opts.channels
        )));
    }
    if opts.max_pixels == 0 {
        return Err(DataError::InvalidOption(
            "max pixels must be at least 1".into(),
        ));
    }
    if opts.min_size == Some(0) {
        return Err(DataError::InvalidOption(
            "min size must be at least 1".into(),
        ));
    }
    Ok(())
}

fn check_input(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(DataError::MissingInput(dir.to_path_buf()))
        }
        Err(e) => Err(DataError::io("cannot access input folder", dir, e)),
        Ok(m) if !m.is_dir() => Err(DataError::InputNotADir(dir.to_path_buf())),
        Ok(_) => Ok(()),
    }
}

fn check_output(opts: &PrepareOptions) -> Result<()> {
    let out = &opts.output;
    let unwritable = |reason: String| DataError::OutputUnwritable {
        path: out.clone(),
        reason,
    };
    if out.file_name().is_none() {
        return Err(unwritable("not a file name".into()));
    }
    if out.is_dir() {
        return Err(unwritable("it is a folder".into()));
    }
    if let Err(e) = std::fs::symlink_metadata(out) {
        if let Some(too_long) = pgan_spec::output::too_long(out, &e) {
            return Err(unwritable(too_long.to_string()));
        }
    }
    // The final rename replaces whatever has the output's name: only ever a regular file (a
    // device node, FIFO, socket or symlink there is something else the user has).
    if let Ok(meta) = std::fs::symlink_metadata(out) {
        if !meta.file_type().is_file() {
            return Err(unwritable(format!(
                "it is {}, not a regular file (only regular files are replaced)",
                file_kind(&meta.file_type())
            )));
        }
        if !opts.force {
            return Err(DataError::OutputExists(out.clone()));
        }
    }
    // The report beside the output is replaced too: only an earlier prepare's report (its
    // first bytes are read, from a regular file only: a FIFO there would block, a link to a
    // device never end).
    let report = report_path(out);
    let not_a_report = |what: String| {
        unwritable(format!(
            "{} exists and is {what}, which prepare writes there; move it or choose another \
             output name",
            report.display()
        ))
    };
    let unreadable =
        |e: io::Error| not_a_report(format!("unreadable ({e}), not a pgan prepare report"));
    // A link there is the user's, wherever it leads (a dangling one too): the rename would
    // replace it.
    if std::fs::symlink_metadata(&report).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(unwritable(format!(
            "{} is a symbolic link, and prepare writes its report there only over a regular \
             file; move it or choose another output name",
            report.display()
        )));
    }
    match open_regular(&report) {
        Ok((file, _)) => {
            let mut head = Vec::new();
            (&file)
                .take(REPORT_HEADING.len() as u64)
                .read_to_end(&mut head)
                .map_err(unreadable)?;
            if !head.is_empty() && head != REPORT_HEADING.as_bytes() {
                return Err(not_a_report("not a pgan prepare report".into()));
            }
        }
        // A folder is never replaced: the report's write fails, with a warning, and the
        // dataset is kept.
        Err(OpenError::NotRegular(_)) if report.is_dir() => {}
        Err(OpenError::NotRegular(kind)) => {
            return Err(not_a_report(format!("{kind}, not a pgan prepare report")))
        }
        // A report name past the file system's limit (a long output name) cannot be there: its
        // write fails, with a warning, and the dataset is kept.
        Err(OpenError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidFilename
            ) => {}
        Err(OpenError::Io(e)) => return Err(unreadable(e)),
    }
    let parent = parent_dir(out);
    if !parent.is_dir() {
        return Err(unwritable(format!(
            "folder {} does not exist",
            parent.display()
        )));
    }
    Ok(())
}

/// The input that is the same file as `output` (also through a link), if any: prepare would
/// replace an image it reads, even with `--force`.
fn output_among<'a>(output: &Path, inputs: &'a [PathBuf]) -> Option<&'a PathBuf> {
    let out = crate::files::file_id(&std::fs::metadata(output).ok()?);
    inputs
        .iter()
        .find(|input| std::fs::metadata(input).is_ok_and(|m| crate::files::file_id(&m) == out))
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The hidden temporary file this process writes `output` to before renaming it into place:
/// `.<name>.tmp-<pid>` in the output's folder, so the final rename stays on one filesystem.
/// Public so that a signal handler can remove it when it must exit at once.
pub fn temp_path(output: &Path) -> PathBuf {
    temp_path_for(output, std::process::id())
}

/// Path of the text report written beside `output`.
pub fn report_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".report.txt");
    PathBuf::from(s)
}

fn nothing_decodable(dir: &Path, skipped: &[(PathBuf, String)]) -> DataError {
    const SHOWN: usize = 3;
    let mut examples: Vec<String> = skipped
        .iter()
        .take(SHOWN)
        .map(|(p, why)| format!("{}: {why}", p.strip_prefix(dir).unwrap_or(p).display()))
        .collect();
    if skipped.len() > SHOWN {
        examples.push(format!("and {} more", skipped.len() - SHOWN));
    }
    DataError::NothingDecodable {
        dir: dir.to_path_buf(),
        skipped: skipped.len(),
        examples: examples.join("; "),
    }
}

/// Removes the temporary file on drop unless committed.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    /// Moves the finished file to `output`; without `replace`, only if nothing is there by
    /// then (another `prepare` of the same output may have finished first).
    fn commit(mut self, output: &Path, replace: bool) -> Result<()> {
        let moved = if replace {
            std::fs::rename(&self.path, output)
        } else {
            pgan_spec::output::rename_no_replace(&self.path, output)
        };
        moved.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => DataError::OutputExists(output.to_path_buf()),
            _ => DataError::OutputUnwritable {
                path: output.to_path_buf(),
                reason: format!("cannot rename {} into place: {e}", self.path.display()),
            },
        })?;
        self.armed = false;
        // Persist the rename itself; best effort (not all platforms can sync a folder).
        if let Ok(d) = File::open(parent_dir(output)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The output file plus an optional byte budget (simulated full disk).
struct Sink {
    file: File,
    limit: Option<u64>,
    written: u64,
}

impl Sink {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_run_at(offset, &[buf]).map(|_| ())
    }

    /// Writes `parts` back to back from `offset`; small parts are gathered
    /// into 1 MiB writes instead of one system call each. Returns the bytes written.
    fn write_run_at(&mut self, offset: u64, parts: &[&[u8]]) -> io::Result<u64> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if let Some(limit) = self.limit {
            if self.written + len > limit {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device (simulated)",
                ));
            }
        }
        self.file.seek(SeekFrom::Start(offset))?;
        // Never larger than the run: single writes (header, manifest) allocate no 1 MiB buffer.
        let mut out = io::BufWriter::with_capacity((len as usize).min(1 << 20), &self.file);
        for p in parts {
            out.write_all(p)?;
        }
        out.flush()?;
        self.written += len;
        Ok(len)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(buf)
    }
}

/// Result of the decode-and-write phase.
struct Outcome {
    /// Stored files in stored order.
    stored: Vec<PathBuf>,
    skipped: Vec<(PathBuf, String)>,
    upscaled: Vec<PathBuf>,
    /// Levels as laid out for all candidates, with their running checksums.
    capacity_levels: Vec<LevelEntry>,
    crcs: Vec<u32>,
}

/// One candidate after decoding: its levels and whether it was upscaled, or why it was skipped.
type Processed = std::result::Result<(Vec<Vec<u8>>, bool), String>;

/// Bytes of decoded pyramids one chunk may hold. Up to three chunks are alive
/// at once (one decoding, one queued, one being written), so the pipeline
/// stays within ~3 x this budget whatever the dataset size.
const CHUNK_BUDGET: u64 = 96 << 20;

/// Images per parallel chunk: enough to keep every core busy, small enough
/// that a chunk's decoded levels stay within [`CHUNK_BUDGET`].
fn chunk_size(resolution: u32, channels: u8) -> usize {
    // Levels sum to 4/3 of the top level; x2 for the decode/resize buffers.
    let per_image = format::image_bytes(resolution, channels as u32) * 8 / 3;
    let threads = rayon::current_num_threads();
    ((CHUNK_BUDGET / per_image.max(1)) as usize).clamp(2 * threads, 256.max(2 * threads))
}

/// Flush written pages to disk once this many bytes are unsynced. The flush
/// runs on the writer thread while the next chunk decodes, so the final
/// `sync_all` (needed before the rename makes the file visible) finds little
/// left to do instead of stalling on the whole file at the end.
const SYNC_EVERY: u64 = 64 << 20;

fn progress_bar(opts: &PrepareOptions, len: usize) -> indicatif::ProgressBar {
    if !opts.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images ({per_sec}, ETA {eta})",
    )
    .expect("valid progress template");
    bar.set_style(style);
    bar
}

/// The decoded survivors of one chunk, ready to write: the stored index of the
/// first one, then each image's levels (largest first).
struct DecodedChunk {
    first: u64,
    images: Vec<Vec<Vec<u8>>>,
}

/// Decode chunks in parallel on the rayon pool while a writer thread appends
/// the previous chunk to the file: decoding is CPU-bound and writing mostly
/// waits on the disk, so the two overlap instead of taking turns.
fn write_levels(
    opts: &PrepareOptions,
    candidates: &[PathBuf],
    sink: &mut Sink,
    cancel: &AtomicBool,
) -> io::Result<Outcome> {
    let target = opts.target();
    let channels = opts.channels as u32;
    let (capacity_levels, end) =
        Header::plan_levels(opts.resolution, channels, candidates.len() as u64);
    sink.file.set_len(end)?;
    let mut out = Outcome {
        stored: Vec::new(),
        skipped: Vec::new(),
        upscaled: Vec::new(),
        capacity_levels: capacity_levels.clone(),
        crcs: vec![],
    };
    let bar = progress_bar(opts, candidates.len());

    let crcs = std::thread::scope(|scope| {
        // Capacity 1: at most one decoded chunk waits while another is written.
        let (tx, rx) = std::sync::mpsc::sync_channel::<DecodedChunk>(1);
        let writer = scope.spawn(|| write_chunks(sink, &capacity_levels, channels, rx));
        for chunk in candidates.chunks(chunk_size(opts.resolution, opts.channels)) {
            if cancel.load(Ordering::SeqCst) {
                break;
            }
            let results: Vec<Processed> = chunk
                .par_iter()
                .map(|path| {
                    if cancel.load(Ordering::Relaxed) {
                        // The caller discards everything: stop decoding at once.
                        return Err(String::new());
                    }
                    let r = load_caught(path, &target).map(|l| {
                        (
                            build_levels(&l.top, opts.resolution, channels as usize),
                            l.upscaled,
                        )
                    });
                    bar.inc(1);
                    r
                })
                .collect();
            let first = out.stored.len() as u64;
            let mut images = Vec::with_capacity(results.len());
            for (path, r) in chunk.iter().zip(results) {
                match r {
                    Ok((levels, upscaled)) => {
                        if upscaled {
                            out.upscaled.push(path.clone());
                        }
                        out.stored.push(path.clone());
                        images.push(levels);
                    }
                    Err(reason) => out.skipped.push((path.clone(), reason)),
                }
            }
            if tx.send(DecodedChunk { first, images }).is_err() {
                break; // the writer stopped on an error, which join() returns
            }
        }
        drop(tx);
        writer.join().expect("prepare writer thread panicked")
    })?;
    bar.finish_and_clear();
    out.crcs = crcs;
    Ok(out)
}

/// [`ingest::load`], with a panic inside a decoder turned into a skip reason: one malformed
/// file must not take the whole preparation (and its temporary file) down.
fn load_caught(path: &Path, target: &Target) -> std::result::Result<ingest::Loaded, String> {
    std::panic::catch_unwind(|| ingest::load(path, target)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(format!("the decoder crashed: {what}"))
    })
}

/// The writer thread: puts every chunk's levels at their final offsets,
/// keeps each level's running CRC-32 and syncs every [`SYNC_EVERY`] bytes.
/// Returns the CRCs once the sender hangs up.
fn write_chunks(
    sink: &mut Sink,
    levels: &[LevelEntry],
    channels: u32,
    rx: std::sync::mpsc::Receiver<DecodedChunk>,
) -> io::Result<Vec<u32>> {
    let mut hashers: Vec<crc32fast::Hasher> =
        levels.iter().map(|_| crc32fast::Hasher::new()).collect();
    let mut unsynced = 0u64;
    for chunk in rx {
        for (l, entry) in levels.iter().enumerate() {
            let img = format::image_bytes(entry.resolution, channels);
            let parts: Vec<&[u8]> = chunk.images.iter().map(|i| i[l].as_slice()).collect();
            for p in &parts {
                hashers[l].update(p);
            }
            unsynced += sink.write_run_at(entry.offset + chunk.first * img, &parts)?;
        }
        if unsynced >= SYNC_EVERY {
            sink.file.sync_data()?;
            unsynced = 0;
        }
    }
    Ok(hashers.into_iter().map(|h| h.finalize()).collect())
}

/// Compact the levels if anything was skipped, then write manifest and
/// header, trim and sync. Returns the final file size.
fn finish_file(opts: &PrepareOptions, sink: &mut Sink, out: &Outcome) -> io::Result<u64> {
    let channels = opts.channels as u32;
    let count = out.stored.len() as u64;
    let (mut levels, end) = Header::plan_levels(opts.resolution, channels, count);
    for ((level, old), crc) in levels.iter_mut().zip(&out.capacity_levels).zip(&out.crcs) {
        level.crc32 = *crc;
        if level.offset != old.offset {
            move_down(sink, old.offset, level.offset, level.length)?;
        }
    }
    let manifest =
        serde_json::to_vec_pretty(&build_manifest(opts, out)).map_err(io::Error::other)?;
    sink.write_at(end, &manifest)?;
    let header = Header {
        version: FORMAT_VERSION,
        resolution: opts.resolution,
        channels,
        count,
        levels,
        manifest: Section {
            offset: end,
            length: manifest.len() as u64,
            crc32: crc32fast::hash(&manifest),
        },
    };
    sink.write_at(0, &header.to_bytes())?;
    let total = end + manifest.len() as u64;
    sink.file.set_len(total)?;
    sink.file.sync_all()?;
    Ok(total)
}

/// Copy `len` bytes from `from` to `to <= from`, front to back. Each read
/// completes before the write that could overlap it, so overlap is safe.
fn move_down(sink: &mut Sink, from: u64, to: u64, len: u64) -> io::Result<()> {
    debug_assert!(to <= from);
    let mut buf = vec![0u8; (8 << 20).min(len as usize)];
    let mut done = 0;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        sink.read_at(from + done, &mut buf[..n])?;
        sink.write_at(to + done, &buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

fn build_manifest(opts: &PrepareOptions, out: &Outcome) -> Manifest {
    let created_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let files = out
        .stored
        .iter()
        .map(|p| relative_name(&opts.input_dir, p))
        .collect();
    Manifest {
        pgan_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix,
        input_dir: escape_name(opts.input_dir.as_os_str().as_encoded_bytes()),
        options: ManifestOptions {
            resolution: opts.resolution,
            channels: opts.channels,
            fit: opts.fit,
            background: opts.background,
            min_size: opts.min_size,
            shuffle_seed: opts.shuffle_seed,
        },
        skipped: out.skipped.len(),
        upscaled: out.upscaled.len(),
        files,
        escaped_names: true,
    }
}

/// `path` relative to `dir`, `/`-separated on every platform, [`escape_name`]d so that a name
/// that is not UTF-8 is kept exactly.
fn relative_name(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    rel.components()
        .map(|c| escape_name(c.as_os_str().as_encoded_bytes()))
        .collect::<Vec<_>>()
        .join("/")
}

/// A path as the report and the summary show it: escaped as the manifest stores names, and
/// with control characters as codes (one line per file, nothing sent to the terminal).
fn shown(path: &Path) -> String {
    crate::printable(&escape_name(path.as_os_str().as_encoded_bytes()))
}

/// How a prepare report starts (what marks a file there as one prepare may replace).
const REPORT_HEADING: &str = "# pgan prepare report for ";

fn write_report(s: &PrepareSummary) -> Result<()> {
    let mut text = String::new();
    text.push_str(&format!("{REPORT_HEADING}{}\n", s.output.display()));
    text.push_str(&s.to_string());
    text.push_str(&format!("\n# skipped ({})\n", s.skipped.len()));
    for (p, why) in &s.skipped {
        text.push_str(&format!("{}\t{why}\n", shown(p)));
    }
    text.push_str(&format!("\n# upscaled ({})\n", s.upscaled.len()));
    for p in &s.upscaled {
        text.push_str(&format!("{}\n", shown(p)));
    }
    text.push_str(&format!("\n# ignored ({})\n", s.ignored.len()));
    for (p, why) in &s.ignored {
        text.push_str(&format!("{}\t{why}\n", shown(p)));
    }
    write_atomic(&s.report, text.as_bytes())
        .map_err(|e| DataError::io("cannot write report", &s.report, e))
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`: a reader sees
/// the old file or the complete new one, never an empty or partial one.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = pgan_spec::output::create_temp(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::tests::photo;
    use crate::reader::PyramidReader;
    use image::ImageFormat;

    /// A folder with `n` valid PNGs of varying size, plus extras from `extra`.
    fn folder(n: u32, extra: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..n {
            photo(20 + i * 3, 17 + i, i)
                .save(dir.path().join(format!("img{i:03}.png")))
                .unwrap();
        }
        for (name, bytes) in extra {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    fn out_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn prepare_writes_a_readable_pyramid() {
        let input = folder(5, &[("notes.txt", b"hello")]);
        let out = out_dir();
        let path = out.path().join("d.pgan");
        let s = prepare(&PrepareOptions::new(input.path(), &path, 16)).unwrap();
        assert_eq!((s.written, s.skipped.len(), s.ignored.len()), (5, 0, 1));
        assert_eq!(s.bytes, std::fs::metadata(&path).unwrap().len());
        assert!(
            s.to_string().contains("wrote 5 images (16x16, 3 channels)"),
            "{s}"
        );
        let r = PyramidReader::open(&path).unwrap();
        assert_eq!((r.len(), r.resolution(), r.channels()), (5, 16, 3));
        assert_eq!(r.levels(), vec![4, 8, 16]);
        assert_eq!(
            r.manifest().files,
            vec![
                "img000.png",
                "img001.png",
                "img002.png",
                "img003.png",
                "img004.png"
            ]
        );
        r.verify().unwrap();
        // Stored pixels are exactly what ingestion + pyramid produce.
        let t = PrepareOptions::new(input.path(), &path, 16).target();
        let loaded = ingest::load(&input.path().join("img003.png"), &t).unwrap();
        let levels = build_levels(&loaded.top, 16, 3);
        for (res, want) in [4, 8, 16].iter().zip(&levels) {
            assert_eq!(r.image(*res, 3).unwrap(), &want[..]);
        }
        assert!(report_path(&path).exists());
        assert_eq!(
            leftovers(out.path()).len(),
            2,
            "only output and report: {:?}",
            leftovers(out.path())
        );
    }

    #[test]
    fn every_format_and_bad_file_kind_in_one_folder() {
        let dir = tempfile::tempdir().unwrap();
        let img = photo(33, 21, 9);
        for (ext, fmt) in [
            ("png", ImageFormat::Png),
            ("jpg", ImageFormat::Jpeg),
            ("webp", ImageFormat::WebP),
            ("bmp", ImageFormat::Bmp),
            ("gif", ImageFormat::Gif),
            ("tif", ImageFormat::Tiff),
        ] {
            img.save_with_format(dir.path().join(format!("ok.{ext}")), fmt)
                .unwrap();
        }
        image::GrayImage::from_pixel(12, 30, image::Luma([40]))
            .save(dir.path().join("grey.png"))
            .unwrap();
        image::RgbaImage::from_pixel(7, 9, image::Rgba([1, 2, 3, 4]))
            .save(dir.path().join("rgba.png"))
            .unwrap();
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        std::fs::write(dir.path().join("truncated.png"), &png[..png.len() / 3]).unwrap();
        std::fs::write(dir.path().join("zero.jpg"), b"").unwrap();
        std::fs::write(
            dir.path().join("corrupt.webp"),
            b"RIFF\x10\0\0\0WEBPjunkjunk",
        )
        .unwrap();

        let out = out_dir();
        let path = out.path().join("all.pgan");
        let s = prepare(&PrepareOptions::new(dir.path(), &path, 32)).unwrap();
        assert_eq!(s.written, 8);
        let mut skipped: Vec<String> = s
            .skipped
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        skipped.sort();
        assert_eq!(skipped, vec!["corrupt.webp", "truncated.png", "zero.jpg"]);
        assert!(s.skipped.iter().any(|(_, why)| why.contains("empty file")));
        assert_eq!(s.upscaled.len(), 8, "all sources are smaller than 32");
        let report = std::fs::read_to_string(report_path(&path)).unwrap();
        assert!(
            report.contains("truncated.png") && report.contains("zero.jpg"),
            "{report}"
        );
        // Skips forced the compaction path: the file must still be valid and exact.
        let r = PyramidReader::open(&path).unwrap();
        r.verify().unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), s.bytes);
        let t = PrepareOptions::new(dir.path(), &path, 32).target();
        for (i, name) in r.manifest().files.iter().enumerate() {
            let levels = build_levels(
                &ingest::load(&dir.path().join(name), &t).unwrap().top,
                32,
                3,
            );
            for (res, want) in r.levels().into_iter().zip(&levels) {
                assert_eq!(r.image(res, i).unwrap(), &want[..], "{name} at {res}");
            }
        }
    }

    #[test]
    fn luma_output_has_one_channel() {
        let input = folder(2, &[]);
        let out = out_dir();
        let mut o = PrepareOptions::new(input.path(), out.path().join("g.pgan"), 8);
        o.channels = 1;
        prepare(&o).unwrap();
        let r = PyramidReader::open(&o.output).unwrap();
        assert_eq!(r.channels(), 1);
        assert_eq!(r.level(8).unwrap().len(), 2 * 64);
    }

    #[test]
    fn shuffle_seed_permutes_stored_order_deterministically() {
        let input = folder(12, &[]);
        let out = out_dir();
        let run = |name: &str, seed: Option<u64>| {
            let mut o = PrepareOptions::new(input.path(), out.path().join(name), 8);
            o.shuffle_seed = seed;
            prepare(&o).unwrap();
            PyramidReader::open(&o.output)
                .unwrap()
                .manifest()
                .files
                .clone()
        };
        let plain = run("a.pgan", None);
        let s1 = run("b.pgan", Some(3));
        let s2 = run("c.pgan", Some(3));
        assert_eq!(s1, s2);
        assert_ne!(s1, plain);
        let mut sorted = s1.clone();
        sorted.sort();
        assert_eq!(sorted, plain);
    }

    #[test]
    fn input_errors() {
        let out = out_dir();
        let o = |dir: &Path| PrepareOptions::new(dir, out.path().join("x.pgan"), 8);
        let missing = out.path().join("nope");
        assert!(matches!(
            prepare(&o(&missing)),
            Err(DataError::MissingInput(_))
        ));
        let file = out.path().join("file.png");
        std::fs::write(&file, b"x").unwrap();
        let e = prepare(&o(&file)).unwrap_err();
        assert!(matches!(e, DataError::InputNotADir(_)), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = prepare(&o(empty.path())).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("input folder {} is empty", empty.path().display())
        );
        let texts = folder(0, &[("a.txt", b"x")]);
        assert!(matches!(
            prepare(&o(texts.path())),
            Err(DataError::NoImages { ignored: 1, .. })
        ));
    }

    #[test]
    fn nothing_decodable_is_fatal_and_leaves_nothing() {
        let input = folder(
            0,
            &[
                ("a.png", b""),
                ("b.jpg", b"garbage"),
                ("c.gif", b"GIF89a"),
                ("d.bmp", b"BM"),
            ],
        );
        let out = out_dir();
        let e = prepare(&PrepareOptions::new(
            input.path(),
            out.path().join("x.pgan"),
            8,
        ))
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "no decodable image in {} (4 files skipped: a.png: empty file",
                input.path().display()
            )),
            "{msg}"
        );
        assert!(msg.contains("and 1 more"), "{msg}");
        assert!(
            leftovers(out.path()).is_empty(),
            "{:?}",
            leftovers(out.path())
        );
    }

    #[test]
    fn min_size_filters_everything_is_fatal() {
        let input = folder(2, &[]);
        let out = out_dir();
        let mut o = PrepareOptions::new(input.path(), out.path().join("x.pgan"), 8);
        o.min_size = Some(1000);
        let e = prepare(&o).unwrap_err().to_string();
        assert!(e.contains("too small"), "{e}");
    }

    #[test]
    fn option_errors() {
        let input = folder(1, &[]);
        let out = out_dir();
        for res in [0, 2, 6, 100, 2048] {
            let e = prepare(&PrepareOptions::new(
                input.path(),
                out.path().join("x.pgan"),
                res,
            ))
            .unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("resolution {res} must be a power of two")),
                "{e}"
            );
        }
        let mut o = PrepareOptions::new(input.path(), out.path().join("x.pgan"), 8);
        o.channels = 4;
        assert!(prepare(&o)
            .unwrap_err()
            .to_string()
            .contains("channels 4 must be 1"));
    }

    #[test]
    fn output_errors() {
        let input = folder(1, &[]);
        let out = out_dir();
        let no_parent = out.path().join("missing/dir/x.pgan");
        let e = prepare(&PrepareOptions::new(input.path(), &no_parent, 8))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot write output") && e.contains("does not exist"),
            "{e}"
        );
        let e = prepare(&PrepareOptions::new(input.path(), out.path(), 8))
            .unwrap_err()
            .to_string();
        assert!(e.contains("it is a folder"), "{e}");

        let path = out.path().join("x.pgan");
        std::fs::write(&path, b"precious").unwrap();
        let mut o = PrepareOptions::new(input.path(), &path, 8);
        assert!(matches!(prepare(&o), Err(DataError::OutputExists(_))));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        o.force = true;
        prepare(&o).unwrap();
        PyramidReader::open(&path).unwrap();
    }

    #[test]
    fn disk_full_mid_write_leaves_no_file() {
        // 60 good + 40 empty files at 8x8: the 4x4 region shrinks below one
        // page, so the 8x8 level must be moved down (compaction).
        let dir = tempfile::tempdir().unwrap();
        for i in 0..60 {
            photo(9 + i % 5, 8 + i % 3, i)
                .save(dir.path().join(format!("g{i:02}.png")))
                .unwrap();
        }
        for i in 0..40 {
            std::fs::write(dir.path().join(format!("z{i:02}.png")), b"").unwrap();
        }
        let out = out_dir();
        let path = out.path().join("x.pgan");
        let opts = PrepareOptions::new(dir.path(), &path, 8);
        let ok_dir = out_dir();
        let good = prepare(&PrepareOptions {
            output: ok_dir.path().join("ok.pgan"),
            ..opts.clone()
        })
        .unwrap();
        let r = PyramidReader::open(&good.output).unwrap();
        assert_eq!(
            r.header().levels[1].offset,
            8192,
            "compaction moved the 8x8 level"
        );
        r.verify().unwrap();

        let levels = 60 * (48 + 192);
        let moved = 60 * 192;
        let manifest = r.header().manifest.length;
        // Inside the level data, inside the compaction, on the manifest, on the header.
        for limit in [
            100,
            10_000,
            levels + 5000,
            levels + moved + 5,
            levels + moved + manifest + 5,
        ] {
            let e = prepare_with_limit(&opts, Some(limit), &AtomicBool::new(false)).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("cannot write")
                    && msg.contains("no space left")
                    && msg.contains("x.pgan"),
                "{msg}"
            );
            assert!(
                leftovers(out.path()).is_empty(),
                "limit {limit}: {:?}",
                leftovers(out.path())
            );
        }
        // Exactly enough room succeeds, so each limit above failed mid-way.
        let total = levels + moved + manifest + format::header_len(2) as u64;
        prepare_with_limit(&opts, Some(total), &AtomicBool::new(false)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len() as u64, good.bytes);
    }

    /// A pid that no process has: a child that has exited and been reaped.
    use crate::test_files::dead_pid;

    #[test]
    fn stale_temps_of_dead_processes_are_removed_live_ones_kept() {
        let input = folder(2, &[]);
        let out = out_dir();
        let path = out.path().join("x.pgan");
        let dead = dead_pid();
        let live = std::os::unix::process::parent_id();
        let stale = temp_path_for(&path, dead);
        let stale_report = temp_path_for(&report_path(&path), dead);
        // (A live process's temp of the output itself stops the prepare: see
        // `inputs_a_users_file_and_another_writers_output_are_never_replaced`.)
        let running = temp_path_for(&report_path(&path), live);
        let other = out.path().join(format!(".y.pgan.tmp-{dead}"));
        for p in [&stale, &stale_report, &running, &other] {
            std::fs::write(p, b"partial").unwrap();
        }
        let s = prepare(&PrepareOptions::new(input.path(), &path, 8)).unwrap();
        let mut removed = s.removed_stale.clone();
        removed.sort();
        let mut want = vec![stale.clone(), stale_report.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(s
            .to_string()
            .contains("removed 2 temporary files left by interrupted runs"));
        assert!(!stale.exists() && !stale_report.exists());
        assert!(running.exists(), "a live process's temporary file is kept");
        assert!(other.exists(), "another output's temporary file is kept");
    }

    #[test]
    fn a_cancelled_prepare_leaves_nothing() {
        let input = folder(3, &[]);
        let out = out_dir();
        let path = out.path().join("x.pgan");
        let cancel = AtomicBool::new(true);
        let e =
            prepare_cancellable(&PrepareOptions::new(input.path(), &path, 8), &cancel).unwrap_err();
        assert!(matches!(e, DataError::Interrupted(_)), "{e}");
        assert_eq!(
            e.to_string(),
            format!("interrupted: {} was not written", path.display())
        );
        assert!(
            leftovers(out.path()).is_empty(),
            "{:?}",
            leftovers(out.path())
        );
    }

    #[test]
    fn a_report_that_cannot_be_written_is_a_warning_and_a_stale_one_is_replaced() {
        let input = folder(2, &[("bad.png", b"")]);
        let out = out_dir();
        // A stale, empty report from an earlier failed run is simply replaced.
        let path = out.path().join("x.pgan");
        std::fs::write(report_path(&path), b"").unwrap();
        let s = prepare(&PrepareOptions::new(input.path(), &path, 8)).unwrap();
        assert!(s.report_error.is_none());
        let report = std::fs::read_to_string(report_path(&path)).unwrap();
        assert!(report.contains("bad.png\tempty file"), "{report}");
        // A report path that cannot be written (a folder): the dataset is kept and valid.
        let path = out.path().join("y.pgan");
        std::fs::create_dir(report_path(&path)).unwrap();
        let s = prepare(&PrepareOptions::new(input.path(), &path, 8)).unwrap();
        let e = s.report_error.clone().unwrap();
        assert!(
            e.contains("cannot write report") && e.contains("y.pgan.report.txt"),
            "{e}"
        );
        let shown = s.to_string();
        assert!(
            shown.contains("warning: the report")
                && shown.contains("the dataset is complete")
                && shown.contains("skipped 1 files (the first: "),
            "{shown}"
        );
        PyramidReader::open(&path).unwrap().verify().unwrap();
        let mut left = leftovers(out.path());
        left.sort();
        assert_eq!(
            left,
            ["x.pgan", "x.pgan.report.txt", "y.pgan", "y.pgan.report.txt"],
            "no temporary file is left"
        );
        // A name the file system takes whose report's name it does not (255 bytes at most):
        // the dataset is written, and the report's failure is a warning, not a file said to
        // be there.
        let long = format!("{}.pgan", "c".repeat(245));
        let path = out.path().join(&long);
        let s = prepare(&PrepareOptions::new(input.path(), &path, 8)).unwrap();
        let e = s.report_error.clone().unwrap();
        assert!(e.contains("cannot write report"), "{e}");
        PyramidReader::open(&path).unwrap().verify().unwrap();
        assert!(leftovers(out.path()).contains(&long));
        // A name the file system does not take: refused before the work.
        let longer = out.path().join(format!("{}.pgan", "c".repeat(251)));
        let err = prepare(&PrepareOptions::new(input.path(), &longer, 8))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("its name or path is longer than the file system"),
            "{err}"
        );
        assert_eq!(
            leftovers(out.path()).len(),
            5,
            "{:?}",
            leftovers(out.path())
        );
    }

    #[test]
    fn inputs_a_users_file_and_another_writers_output_are_never_replaced() {
        let input = folder(3, &[]);
        let image = input.path().join("img001.png");
        let before = std::fs::read(&image).unwrap();
        let mut opts = PrepareOptions::new(input.path(), &image, 8);
        opts.force = true;
        let err = prepare(&opts).unwrap_err().to_string();
        assert!(err.contains("it is one of the input images"), "{err}");
        let link = input.path().join("link.pgan");
        std::os::unix::fs::symlink("img001.png", &link).unwrap();
        opts.output = link;
        assert!(prepare(&opts).is_err(), "a link to an input is that input");
        assert_eq!(std::fs::read(&image).unwrap(), before);

        let out = out_dir();
        let path = out.path().join("d.pgan");
        std::fs::write(report_path(&path), b"my notes\n").unwrap();
        let err = prepare(&PrepareOptions::new(input.path(), &path, 8)).unwrap_err();
        assert!(
            err.to_string().contains("is not a pgan prepare report"),
            "{err}"
        );
        assert_eq!(std::fs::read(report_path(&path)).unwrap(), b"my notes\n");
        std::fs::remove_file(report_path(&path)).unwrap();
        prepare(&PrepareOptions::new(input.path(), &path, 8)).unwrap();
        let mut again = PrepareOptions::new(input.path(), &path, 8);
        again.force = true;
        prepare(&again).unwrap();

        // A temporary file under a lock marks a writer at work: kept and not raced.
        let theirs = temp_path_for(&path, 1);
        std::fs::write(&theirs, b"half").unwrap();
        let writing = File::open(&theirs).unwrap();
        writing.try_lock().unwrap();
        let err = prepare(&again).unwrap_err().to_string();
        assert!(
            err.contains("another process (pid 1) is writing it now"),
            "{err}"
        );
        assert!(theirs.exists());
        PyramidReader::open(&path).unwrap().verify().unwrap();
        // Unlocked, it is a crashed writer's, whatever process has its pid now (pid 1 lives).
        drop(writing);
        prepare(&again).unwrap();
    }

    #[test]
    fn an_output_that_appeared_during_the_work_is_kept_unless_forced() {
        // Two prepares of one output started together both pass the early check; the one that
        // finishes second must not replace the first's file (nor report success).
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("q.pgan");
        let finish = |bytes: &[u8], replace: bool| {
            let tmp = dir.path().join(format!(".q.pgan.tmp-{}", bytes.len()));
            std::fs::write(&tmp, bytes).unwrap();
            let guard = TempGuard {
                path: tmp.clone(),
                armed: true,
            };
            let result = guard.commit(&out, replace);
            (result, tmp)
        };
        let (first, _) = finish(b"first", false);
        first.unwrap();
        let (second, tmp) = finish(b"second!", false);
        assert!(
            matches!(second, Err(DataError::OutputExists(ref p)) if *p == out),
            "{second:?}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"first");
        assert!(!tmp.exists(), "the loser's temporary file is removed");
        let (forced, _) = finish(b"forced!!", true);
        forced.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"forced!!");
    }

    #[test]
    fn force_refuses_what_is_not_a_regular_file() {
        let input = folder(1, &[]);
        let out = out_dir();
        let fifo = out.path().join("p.pgan");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut o = PrepareOptions::new(input.path(), &fifo, 8);
        o.force = true;
        let e = prepare(&o).unwrap_err().to_string();
        assert!(e.contains("it is a FIFO, not a regular file"), "{e}");
        assert_eq!(leftovers(out.path()), ["p.pgan"]);
        // A FIFO where the report goes is named, never opened for a read that waits for a
        // writer (prepare hung there); a link to a device is not read without end.
        let out_path = out.path().join("q.pgan");
        let report = report_path(&out_path);
        let c = std::ffi::CString::new(report.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = prepare(&PrepareOptions::new(input.path(), &out_path, 8))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("q.pgan.report.txt exists and is a FIFO, not a pgan prepare report"),
            "{e}"
        );
        // A link, to a device or to nowhere, is the user's: refused, not read and not replaced.
        for target in ["/dev/zero", "/nonexistent/notes.txt"] {
            std::fs::remove_file(&report).unwrap();
            std::os::unix::fs::symlink(target, &report).unwrap();
            let e = prepare(&PrepareOptions::new(input.path(), &out_path, 8))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("q.pgan.report.txt is a symbolic link"),
                "{target}: {e}"
            );
            assert!(!out_path.exists());
            assert_eq!(std::fs::read_link(&report).unwrap(), Path::new(target));
        }
    }

    /// A subfolder that cannot be listed (here: its path is longer than the system takes,
    /// which fails for root too) is listed as not taken, and the summary warns that its
    /// images are missing; the rest is prepared.
    #[test]
    fn an_unreadable_subfolder_is_reported_and_the_rest_prepared() {
        let input = folder(2, &[]);
        let too_deep = crate::test_files::unreadable_folder(input.path());
        let out = out_dir();
        let path = out.path().join("d.pgan");
        let s = prepare(&PrepareOptions::new(input.path(), &path, 8)).unwrap();
        assert_eq!(s.written, 2);
        assert!(
            s.ignored
                .iter()
                .any(|(p, why)| *p == too_deep && *why == crate::ingest::UNREADABLE_FOLDER),
            "{:?}",
            s.ignored
        );
        let text = s.to_string();
        assert!(text.contains("warning: the images in "), "{text}");
        assert!(
            text.contains("are not in the dataset: the folder cannot be read"),
            "{text}"
        );
        let report = std::fs::read_to_string(report_path(&path)).unwrap();
        assert!(
            report.contains(crate::ingest::UNREADABLE_FOLDER),
            "{report}"
        );
        // The folder given to prepare is still an error.
        let e = prepare(&PrepareOptions::new(
            &too_deep,
            out.path().join("e.pgan"),
            8,
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot access input folder"), "{e:.80}");
        // A folder whose only images are in one that cannot be read: that folder is named.
        let only = tempfile::tempdir().unwrap();
        let too_deep = crate::test_files::unreadable_folder(only.path());
        let e = prepare(&PrepareOptions::new(
            only.path(),
            out.path().join("f.pgan"),
            8,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("cannot read folder") && e.contains(&*too_deep.to_string_lossy()),
            "{e:.80}"
        );
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_exactly() {
        use std::os::unix::ffi::OsStrExt;
        let input = folder(1, &[]);
        let latin1: &[u8] = b"caf\xe9 \\ 1.png";
        std::fs::create_dir(input.path().join(std::ffi::OsStr::from_bytes(b"d\xff"))).unwrap();
        photo(9, 9, 1)
            .save(
                input
                    .path()
                    .join(std::ffi::OsStr::from_bytes(b"d\xff"))
                    .join(std::ffi::OsStr::from_bytes(latin1)),
            )
            .unwrap();
        let out = out_dir();
        let path = out.path().join("n.pgan");
        prepare(&PrepareOptions::new(input.path(), &path, 8)).unwrap();
        let r = PyramidReader::open(&path).unwrap();
        let m = r.manifest();
        assert!(m.escaped_names);
        assert_eq!(m.files, ["d\\xFF/caf\\xE9 \\\\ 1.png", "img000.png"]);
        let bytes = m.file_name_bytes(0).unwrap();
        assert_eq!(bytes, b"d\xff/caf\xe9 \\ 1.png");
        assert!(input
            .path()
            .join(std::ffi::OsStr::from_bytes(&bytes))
            .is_file());
        assert!(
            r.to_string()
                .contains("files:       d\\xFF/caf\\xE9 \\\\ 1.png, img000.png"),
            "{r}"
        );

        // A manifest written before names were escaped is read verbatim.
        let mut old: serde_json::Value = serde_json::to_value(m).unwrap();
        old.as_object_mut().unwrap().remove("escaped_names");
        old["files"] = serde_json::json!(["a\\x41.png", "b.png"]);
        let old: Manifest = serde_json::from_value(old).unwrap();
        assert!(!old.escaped_names);
        assert_eq!(old.file_name_bytes(0).unwrap(), b"a\\x41.png");
        assert_eq!(old.file_name_bytes(2), None);
    }

    #[test]
    fn chunking_bounds_memory() {
        let threads = rayon::current_num_threads();
        assert_eq!(chunk_size(16, 3), 256.max(2 * threads));
        assert!(
            chunk_size(1024, 3) as u64 * format::image_bytes(1024, 3) * 8 / 3 <= CHUNK_BUDGET
                || chunk_size(1024, 3) == 2 * threads
        );
    }
}
