//! `PyramidReader`: zero-copy, validated access to a `.pgan` file through a
//! read-only memory map.

use std::fmt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{DataError, Result};
use crate::files::{open_regular, OpenError};
use crate::format::{self, Header, MAX_LEVELS};
use crate::manifest::Manifest;
use crate::map_guard::MapGuard;

/// An open pyramid file. Cheap to share across threads (`&PyramidReader` is `Sync`).
#[derive(Debug)]
pub struct PyramidReader {
    path: PathBuf,
    /// Declared before `map` so that it is dropped (unregistered) before the map is unmapped.
    _guard: MapGuard,
    map: Mmap,
    header: Header,
    manifest: Manifest,
    /// The open file (the map's), for its stamp wherever its path points meanwhile.
    file: std::fs::File,
    /// The file as it was when opened.
    opened: FileStamp,
}

/// Which file a path held and when it was last written: its device and inode, its length and
/// its modification time. Two stamps of one path differ when the file was replaced (another
/// inode) or written to (another time or length; a write within the file system's time
/// resolution of the stamp may go unseen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    id: (u64, u64),
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileStamp {
            id: crate::files::file_id(meta),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }

    /// The stamp of what `path` holds now; `None` when nothing can be read there.
    pub fn of_path(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| FileStamp::of(&m))
    }

    /// Whether `other` is the same file (not another one renamed or copied into its place).
    pub fn same_file(&self, other: &FileStamp) -> bool {
        self.id == other.id
    }
}

/// Checksum result for one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelCheck {
    /// Level resolution.
    pub resolution: u32,
    /// Checksum recorded in the header.
    pub stored: u32,
    /// Checksum of the bytes in the file.
    pub computed: u32,
}

impl LevelCheck {
    /// Do the checksums agree?
    pub fn ok(&self) -> bool {
        self.stored == self.computed
    }
}

/// Outcome of [`PyramidReader::verify`]: one entry per level, 4x4 first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The verified file.
    pub path: PathBuf,
    /// Per-level results.
    pub levels: Vec<LevelCheck>,
    /// Bytes after the last section (the manifest, as prepare writes it), which ends the file
    /// (docs/FORMAT.md): 0 in a sound file.
    /// Only the whole-file check ([`PyramidReader::check_levels`]) counts them.
    pub trailing_bytes: u64,
    /// Nonzero bytes in the header's padding (the rest of its first 4096 bytes, which
    /// docs/FORMAT.md has zero). 0 in a sound file; counted by the whole-file check only, like
    /// `trailing_bytes`.
    pub nonzero_padding: u64,
}

impl VerifyReport {
    /// True when every level's checksum matches, nothing follows the last section and the
    /// padding is zeros.
    pub fn ok(&self) -> bool {
        self.levels.iter().all(LevelCheck::ok)
            && self.trailing_bytes == 0
            && self.nonzero_padding == 0
    }

    /// The first mismatch as an error, for callers that must fail on corruption.
    pub fn into_result(self) -> Result<VerifyReport> {
        match self.levels.iter().find(|l| !l.ok()) {
            Some(l) => Err(DataError::ChecksumMismatch {
                path: self.path.clone(),
                resolution: l.resolution,
                stored: l.stored,
                computed: l.computed,
            }),
            None if self.trailing_bytes > 0 => Err(DataError::invalid(
                &self.path,
                format!(
                    "{} bytes follow the end of its data (damaged, or appended to)",
                    self.trailing_bytes
                ),
            )),
            None if self.nonzero_padding > 0 => Err(DataError::invalid(
                &self.path,
                format!(
                    "{} nonzero bytes in its header's padding, where prepare writes zeros \
                     (damaged)",
                    self.nonzero_padding
                ),
            )),
            None => Ok(self),
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.levels {
            let status = if l.ok() {
                "ok".to_string()
            } else {
                format!("MISMATCH (computed {:#010x})", l.computed)
            };
            writeln!(
                f,
                "level {0:>4}x{0:<4} crc32 {1:#010x} {status}",
                l.resolution, l.stored
            )?;
        }
        if self.trailing_bytes > 0 {
            writeln!(
                f,
                "{} bytes after the last section (level or manifest), which should end the file",
                self.trailing_bytes
            )?;
        }
        if self.nonzero_padding > 0 {
            writeln!(
                f,
                "{} nonzero bytes in the header's padding, which prepare writes as zeros",
                self.nonzero_padding
            )?;
        }
        let bad = self.levels.iter().filter(|l| !l.ok()).count();
        if bad == 0 && self.trailing_bytes > 0 {
            write!(
                f,
                "{}: all {} levels ok, but the file is longer than its data",
                self.path.display(),
                self.levels.len()
            )
        } else if bad == 0 && self.nonzero_padding > 0 {
            write!(
                f,
                "{}: all {} levels ok, but its padding is damaged",
                self.path.display(),
                self.levels.len()
            )
        } else if bad == 0 {
            write!(
                f,
                "{}: all {} levels ok",
                self.path.display(),
                self.levels.len()
            )
        } else {
            write!(
                f,
                "{}: {bad} of {} levels corrupt",
                self.path.display(),
                self.levels.len()
            )
        }
    }
}

impl PyramidReader {
    /// Open and validate a pyramid file: magic, version, header checksum,
    /// level sizes, alignment and bounds, and the manifest. Level checksums
    /// are only checked by [`verify`](Self::verify) (they require reading everything).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let (file, meta) = open_regular(&path).map_err(|e| match e {
            OpenError::NotRegular(kind) => DataError::NotAFile {
                path: path.clone(),
                kind,
            },
            OpenError::Io(e) => DataError::io("cannot open", &path, e),
        })?;
        let file_len = meta.len();
        if file_len == 0 {
            return Err(DataError::NotPyramid {
                path,
                reason: "empty file (0 bytes)".into(),
            });
        }
        // SAFETY: the map is read-only. `prepare` never modifies a file in place (it renames
        // a new one); another program truncating the file while it is mapped makes reads of
        // the lost pages raise SIGBUS, which the guard turns into a clear message and exit
        // (`map_guard.rs`).
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| DataError::io("cannot memory-map", &path, e))?;
        let guard = MapGuard::new(&map, &path);
        let prefix = &map[..map.len().min(format::header_len(MAX_LEVELS))];
        let header = Header::parse(prefix, map.len() as u64, &path)?;
        let manifest = parse_manifest(&map, &header, &path)?;
        Ok(PyramidReader {
            path,
            _guard: guard,
            map,
            header,
            manifest,
            file,
            opened: FileStamp::of(&meta),
        })
    }

    /// The file as it was when this reader opened it (compare with [`FileStamp::of_path`]).
    pub fn opened_stamp(&self) -> FileStamp {
        self.opened
    }

    /// The opened file as it is now, even when its path holds another file meanwhile.
    pub fn stamp_now(&self) -> std::io::Result<FileStamp> {
        self.file.metadata().map(|m| FileStamp::of(&m))
    }

    /// The header as the mapped file holds it now, parsed again: a file written in place since
    /// it was opened shows its new bytes through the map (its length stays the mapped one).
    pub fn header_now(&self) -> Result<Header> {
        let prefix = &self.map[..self.map.len().min(format::header_len(MAX_LEVELS))];
        Header::parse(prefix, self.map.len() as u64, &self.path)
    }

    /// The file this reader was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Top-level resolution.
    pub fn resolution(&self) -> u32 {
        self.header.resolution
    }

    /// Channels per pixel (1 or 3).
    pub fn channels(&self) -> usize {
        self.header.channels as usize
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.header.count as usize
    }

    /// True when the file holds no image.
    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    /// Available resolutions: 4, 8, ..., `resolution()`.
    pub fn levels(&self) -> Vec<u32> {
        self.header.levels.iter().map(|l| l.resolution).collect()
    }

    /// Bytes of the levels whose resolution `levels` picks (what reading or checking them costs).
    pub fn levels_len(&self, levels: impl Fn(u32) -> bool) -> u64 {
        self.header
            .levels
            .iter()
            .filter(|l| levels(l.resolution))
            .map(|l| l.length)
            .sum()
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The JSON manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whole level as `[N, H, W, C]` bytes, without copying.
    pub fn level(&self, resolution: u32) -> Result<&[u8]> {
        let entry = self.entry(resolution)?;
        // Bounds were validated against the map length in `open`.
        Ok(&self.map[entry.offset as usize..(entry.offset + entry.length) as usize])
    }

    /// One image as `[H, W, C]` bytes, without copying.
    pub fn image(&self, resolution: u32, index: usize) -> Result<&[u8]> {
        if index >= self.len() {
            return Err(DataError::request(
                &self.path,
                format!(
                    "image index {index} out of range (file has {} images)",
                    self.len()
                ),
            ));
        }
        let level = self.level(resolution)?;
        let n = format::image_bytes(resolution, self.header.channels) as usize;
        Ok(&level[index * n..(index + 1) * n])
    }

    fn entry(&self, resolution: u32) -> Result<&format::LevelEntry> {
        self.header
            .levels
            .iter()
            .find(|l| l.resolution == resolution)
            .ok_or_else(|| {
                DataError::request(
                    &self.path,
                    format!(
                        "no {resolution}x{resolution} level (available: {:?})",
                        self.levels()
                    ),
                )
            })
    }

    /// Recompute every level's CRC-32 and fail with
    /// [`DataError::ChecksumMismatch`] (naming the level and file) on the
    /// first mismatch. Use [`check_levels`](Self::check_levels) for the
    /// per-level report without failing.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.check_levels().into_result()
    }

    /// Recompute the CRC-32 of the levels up to `max_resolution` (4x4 ..= `max_resolution`:
    /// what training at that resolution reads) and fail with
    /// [`DataError::ChecksumMismatch`] on the first mismatch. Reads those levels once.
    pub fn verify_levels_up_to(&self, max_resolution: u32) -> Result<()> {
        self.check_levels_where(|resolution| resolution <= max_resolution)
            .into_result()
            .map(|_| ())
    }

    /// Recompute the CRC-32 of the one level at `resolution` (what an evaluation at that
    /// resolution reads) and fail with [`DataError::ChecksumMismatch`] on a mismatch.
    pub fn verify_level(&self, resolution: u32) -> Result<()> {
        self.check_levels_where(|r| r == resolution)
            .into_result()
            .map(|_| ())
    }

    /// Recompute every level's CRC-32 and report each level, mismatches included, any bytes
    /// after the last section, and nonzero bytes in the header's padding.
    pub fn check_levels(&self) -> VerifyReport {
        VerifyReport {
            trailing_bytes: self.trailing_bytes(),
            nonzero_padding: self.nonzero_padding(),
            ..self.check_levels_where(|_| true)
        }
    }

    /// Nonzero bytes in the header's padding: from the header's end to the first section or
    /// 4096 bytes, whichever comes first, which docs/FORMAT.md has zero. No checksum covers
    /// them, so a damaged byte there is found only here. (The gaps between levels are not
    /// checked: a level `prepare` moved down, after skipping files, leaves its old bytes there.)
    pub fn nonzero_padding(&self) -> u64 {
        let h = &self.header;
        let first_section = h.occupied().map(|(offset, _)| offset).min();
        let first_section = first_section.unwrap_or(u64::MAX);
        let start = format::header_len(h.levels.len() as u32);
        let end = format::ALIGN.min(first_section).min(self.map.len() as u64) as usize;
        let padding = self.map.get(start..end).unwrap_or_default();
        padding.iter().filter(|&&b| b != 0).count() as u64
    }

    /// Bytes after the last section, where `prepare` writes none: a file appended to or copied
    /// over a longer one ([`verify`](Self::verify) calls it corrupt; the images read as they
    /// were written).
    pub fn trailing_bytes(&self) -> u64 {
        (self.map.len() as u64).saturating_sub(self.header.data_end())
    }

    /// A warning for the readers that use the file anyway (train, eval) when bytes follow its
    /// data: the levels' checksums hold, so the images are as prepared; said, not refused.
    pub fn trailing_bytes_warning(&self) -> Option<String> {
        let trailing = self.trailing_bytes();
        (trailing > 0).then(|| {
            format!(
                "{}: {trailing} bytes follow its data, which prepare never writes (the file was \
                 appended to, or copied over a longer one; `pgan verify` calls it corrupt); its \
                 images read as prepared",
                self.path.display()
            )
        })
    }

    fn check_levels_where(&self, wanted: impl Fn(u32) -> bool + Sync) -> VerifyReport {
        use rayon::prelude::*;
        let levels = self
            .header
            .levels
            .par_iter()
            .filter(|l| wanted(l.resolution))
            .map(|l| {
                let bytes = &self.map[l.offset as usize..(l.offset + l.length) as usize];
                LevelCheck {
                    resolution: l.resolution,
                    stored: l.crc32,
                    computed: crc32fast::hash(bytes),
                }
            })
            .collect();
        VerifyReport {
            path: self.path.clone(),
            levels,
            trailing_bytes: 0,
            nonzero_padding: 0,
        }
    }
}

fn parse_manifest(map: &[u8], header: &Header, path: &Path) -> Result<Manifest> {
    let m = header.manifest;
    let bytes = &map[m.offset as usize..(m.offset + m.length) as usize];
    if crc32fast::hash(bytes) != m.crc32 {
        return Err(DataError::invalid(
            path,
            "corrupt manifest: checksum mismatch",
        ));
    }
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| DataError::invalid(path, format!("corrupt manifest: {e}")))?;
    // The options it was prepared with describe the levels: a manifest that disagrees with the
    // header (an edit that recomputed the checksum) would mislead `info` and the trainer's
    // dataset checks.
    let options = &manifest.options;
    if options.resolution != header.resolution || u32::from(options.channels) != header.channels {
        return Err(DataError::invalid(
            path,
            format!(
                "the manifest says {0}x{0} with {1} channel(s) but the header says {2}x{2} with \
                 {3}",
                options.resolution, options.channels, header.resolution, header.channels
            ),
        ));
    }
    if manifest.files.len() as u64 != header.count {
        return Err(DataError::invalid(
            path,
            format!(
                "manifest lists {} files but the header says {} images",
                manifest.files.len(),
                header.count
            ),
        ));
    }
    Ok(manifest)
}

/// Human-readable summary for `pgan info`.
impl fmt::Display for PyramidReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let m = &self.manifest;
        writeln!(f, "file:        {}", self.path.display())?;
        writeln!(
            f,
            "format:      pgan pyramid v{} ({} bytes)",
            h.version,
            self.map.len()
        )?;
        writeln!(f, "images:      {}", h.count)?;
        writeln!(
            f,
            "resolution:  {0}x{0}, {1} channel{2}",
            h.resolution,
            h.channels,
            if h.channels == 1 { "" } else { "s" }
        )?;
        writeln!(f, "levels:")?;
        for l in &h.levels {
            writeln!(
                f,
                "  {0:>4}x{0:<4} offset {1:>12} length {2:>12} crc32 {3:#010x}",
                l.resolution, l.offset, l.length, l.crc32
            )?;
        }
        let o = &m.options;
        writeln!(f, "source:      {}", crate::printable(&m.input_dir))?;
        writeln!(
            f,
            "prepared:    fit {}, background {:?}, min size {}, order {}",
            o.fit,
            o.background,
            o.min_size.map_or("none".to_string(), |s| s.to_string()),
            o.shuffle_seed
                .map_or("path".to_string(), |s| format!("shuffled (seed {s})")),
        )?;
        writeln!(
            f,
            "skipped:     {} files, {} upscaled",
            m.skipped, m.upscaled
        )?;
        // Escaped names (docs/FORMAT.md) are shown as stored: readable, and exact for names
        // that are not UTF-8 (`caf\xE9.png`); control characters are shown as codes.
        const SHOWN: usize = 3;
        let mut files = m
            .files
            .iter()
            .take(SHOWN)
            .map(|name| crate::printable(name))
            .collect::<Vec<_>>()
            .join(", ");
        if m.files.len() > SHOWN {
            files.push_str(&format!(", ... ({} in all)", m.files.len()));
        }
        writeln!(f, "files:       {files}")?;
        let trailing = self.trailing_bytes();
        if trailing > 0 {
            writeln!(
                f,
                "note:        {trailing} bytes follow the last section, which prepare never writes \
                 (verify calls the file corrupt)"
            )?;
        }
        write!(
            f,
            "written by:  pgan-data {} at unix time {}",
            crate::printable(&m.pgan_version),
            m.created_unix
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::writer::{prepare, PrepareOptions};

    /// A valid pyramid of 3 images at 16x16 in a temp dir.
    pub(crate) fn sample_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir(&input).unwrap();
        for i in 0..3 {
            crate::ingest::tests::photo(24 + i, 20, i)
                .save(input.join(format!("{i}.png")))
                .unwrap();
        }
        let path = dir.path().join("s.pgan");
        prepare(&PrepareOptions::new(&input, &path, 16)).unwrap();
        (dir, path)
    }

    fn open_err(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.pgan");
        std::fs::write(&p, bytes).unwrap();
        let e = PyramidReader::open(&p).unwrap_err().to_string();
        assert!(e.contains("bad.pgan"), "error must name the file: {e}");
        e
    }

    #[test]
    fn accessors_and_zero_copy_slices() {
        let (_d, path) = sample_file();
        let r = PyramidReader::open(&path).unwrap();
        assert_eq!(r.path(), path);
        assert!(!r.is_empty());
        assert_eq!(r.level(8).unwrap().len(), 3 * 8 * 8 * 3);
        let level = r.level(16).unwrap();
        assert_eq!(r.image(16, 2).unwrap(), &level[2 * 768..3 * 768]);
        assert_eq!(
            r.image(16, 2).unwrap().as_ptr(),
            level[2 * 768..].as_ptr(),
            "no copy"
        );
        assert!(r
            .level(32)
            .unwrap_err()
            .to_string()
            .contains("no 32x32 level"));
        assert!(r
            .image(16, 3)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        let info = r.to_string();
        assert!(
            info.contains("images:      3")
                && info.contains("16x16")
                && info.contains("center-crop"),
            "{info}"
        );
        assert_eq!(r.header().levels.len(), 3);
    }

    #[test]
    fn rejects_empty_random_foreign_truncated_files() {
        assert!(open_err(b"").contains("empty file"));
        let mut state = 99u64;
        let random: Vec<u8> = (0..10_000)
            .map(|_| {
                state = crate::shuffle::mix64(state);
                state as u8
            })
            .collect();
        assert!(open_err(&random).contains("bad magic"));
        assert!(open_err(b"\x89PNG\r\n\x1a\n").contains("is not a pgan dataset"));

        let (_d, path) = sample_file();
        let good = std::fs::read(&path).unwrap();
        for cut in [4, 20, 100, 5000, good.len() - 1] {
            let e = open_err(&good[..cut]);
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        // A version byte changed alone is a damaged header as likely as another version; one
        // whose header checksum agrees is another version's file.
        let mut v2 = good.clone();
        v2[8] = 2;
        let e = open_err(&v2);
        assert!(
            e.contains("unsupported format version 2") && e.contains("or a damaged header"),
            "{e}"
        );
        let hlen = crate::format::header_len(3);
        let crc = crc32fast::hash(&v2[..hlen - 4]);
        v2[hlen - 4..hlen].copy_from_slice(&crc.to_le_bytes());
        let e = open_err(&v2);
        assert!(
            e.contains("unsupported format version 2") && !e.contains("damaged"),
            "{e}"
        );
    }

    #[test]
    fn every_flipped_header_byte_or_manifest_byte_is_an_error() {
        let (_d, path) = sample_file();
        let good = std::fs::read(&path).unwrap();
        let hlen = crate::format::header_len(3);
        for i in 0..hlen {
            let mut b = good.clone();
            b[i] ^= 0x01;
            open_err(&b);
        }
        let r = PyramidReader::open(&path).unwrap();
        let m = r.header().manifest;
        let mut b = good.clone();
        b[m.offset as usize + 5] ^= 0x20;
        assert!(open_err(&b).contains("corrupt manifest"));
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f.pgan");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // On a thread, so that a regression (open waits for a writer) fails instead of hanging.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(PyramidReader::open(&path).map(|_| ())).unwrap());
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a FIFO hangs")
            .unwrap_err();
        assert!(
            matches!(e, DataError::NotAFile { kind: "a FIFO", .. }),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!("{} is a FIFO, not a regular file", fifo.display())
        );
        let e = PyramidReader::open(dir.path()).unwrap_err().to_string();
        assert!(e.ends_with("is a folder, not a regular file"), "{e}");
        let e = PyramidReader::open("/dev/zero").unwrap_err().to_string();
        assert_eq!(e, "/dev/zero is a character device, not a regular file");
    }

    #[test]
    fn verify_detects_a_flipped_pixel() {
        let (_d, path) = sample_file();
        let r = PyramidReader::open(&path).unwrap();
        let report = r.verify().unwrap();
        assert!(report.ok() && report.to_string().contains("all 3 levels ok"));
        let off = r.header().levels[1].offset as usize + 7;
        drop(r);
        let mut b = std::fs::read(&path).unwrap();
        b[off] ^= 0xFF;
        std::fs::write(&path, &b).unwrap();
        let r = PyramidReader::open(&path).unwrap();
        let e = r.verify().unwrap_err().to_string();
        assert!(
            e.contains("level 8x8 checksum mismatch") && e.contains("s.pgan"),
            "{e}"
        );
        let report = r.check_levels();
        assert_eq!(
            report.levels.iter().map(LevelCheck::ok).collect::<Vec<_>>(),
            vec![true, false, true]
        );
        // Training at 4x4 reads only the intact level; at 8x8 or above it must refuse.
        r.verify_levels_up_to(4).unwrap();
        for res in [8, 16, 1024] {
            let e = r.verify_levels_up_to(res).unwrap_err().to_string();
            assert!(e.contains("level 8x8 checksum mismatch"), "{res}: {e}");
        }
        assert!(report.to_string().contains("1 of 3 levels corrupt"));
    }

    /// The header's zero padding is covered by no checksum: a damaged byte there is counted by
    /// the whole-file check (so `verify` fails), while the file still opens and its levels
    /// check out. The gaps between levels are not its padding.
    #[test]
    fn nonzero_bytes_in_the_headers_padding_are_found() {
        let (_d, path) = sample_file();
        let r = PyramidReader::open(&path).unwrap();
        assert_eq!(r.nonzero_padding(), 0);
        let level = r.header().levels[0];
        let header_end = format::header_len(r.header().levels.len() as u32);
        drop(r);
        let mut b = std::fs::read(&path).unwrap();
        let gap = (level.offset + level.length) as usize;
        assert!(
            !gap.is_multiple_of(4096),
            "the 4x4 level ends inside a page"
        );
        for at in [header_end, 4095, gap] {
            b[at] = 1;
        }
        std::fs::write(&path, &b).unwrap();
        let r = PyramidReader::open(&path).unwrap();
        let report = r.check_levels();
        assert_eq!(report.nonzero_padding, 2);
        assert!(report.levels.iter().all(LevelCheck::ok) && !report.ok());
        assert!(
            report.to_string().contains("its padding is damaged"),
            "{report}"
        );
        let e = report.into_result().unwrap_err().to_string();
        assert!(e.contains("2 nonzero bytes in its header's padding"), "{e}");
        // What training checks (its levels) is not concerned.
        r.verify_levels_up_to(16).unwrap();
    }

    /// docs/FORMAT.md lets a writer put the sections in any order: the manifest first and the
    /// levels top-down is the same dataset. Overlapping sections are refused, naming both.
    #[test]
    fn sections_in_another_order_read_the_same_and_overlaps_are_refused() {
        let (dir, path) = sample_file();
        let good = std::fs::read(&path).unwrap();
        let original = PyramidReader::open(&path).unwrap();
        let mut header = original.header().clone();
        let align = |v: u64| v.div_ceil(4096) * 4096;
        let mut bytes = vec![0u8; 4096];
        let m = header.manifest;
        bytes.extend_from_slice(&good[m.offset as usize..][..m.length as usize]);
        header.manifest.offset = 4096;
        for level in header.levels.iter_mut().rev() {
            let data = &good[level.offset as usize..][..level.length as usize];
            bytes.resize(align(bytes.len() as u64) as usize, 0);
            level.offset = bytes.len() as u64;
            bytes.extend_from_slice(data);
        }
        let head = header.to_bytes();
        bytes[..head.len()].copy_from_slice(&head);
        let moved = dir.path().join("moved.pgan");
        std::fs::write(&moved, &bytes).unwrap();
        let r = PyramidReader::open(&moved).unwrap();
        assert!(r.check_levels().ok(), "{}", r.check_levels());
        for res in r.levels() {
            assert_eq!(r.level(res).unwrap(), original.level(res).unwrap(), "{res}");
        }
        assert_eq!(r.trailing_bytes(), 0);

        // The 4x4 level moved onto the manifest's first bytes.
        let mut overlapping = header.clone();
        overlapping.levels[0].offset = 4096;
        let mut b = bytes.clone();
        let head = overlapping.to_bytes();
        b[..head.len()].copy_from_slice(&head);
        let e = open_err(&b);
        assert!(e.contains("overlaps"), "{e}");
        assert!(
            e.contains("level 4x4") && e.contains("the manifest"),
            "names both sections: {e}"
        );
        // Bytes after the last section, whichever it is, are still reported.
        let mut longer = bytes;
        longer.extend_from_slice(b"extra");
        std::fs::write(&moved, &longer).unwrap();
        assert_eq!(PyramidReader::open(&moved).unwrap().trailing_bytes(), 5);
    }

    /// Everything a caller can do with an open file: the summary, every level and its last
    /// image, the checksums, and a batch from the sampler at every level (cross-faded above 4x4).
    fn exercise(path: &Path) -> Result<()> {
        let r = PyramidReader::open(path)?;
        let _ = r.to_string();
        let _ = r.check_levels().to_string();
        for res in r.levels() {
            let level = r.level(res)?;
            assert_eq!(
                level.len(),
                r.len() * format::image_bytes(res, r.channels() as u32) as usize
            );
            if !r.is_empty() {
                r.image(res, r.len() - 1)?;
            }
        }
        let mut sampler = crate::BatchSampler::new(r.len(), 1, true);
        for res in r.levels() {
            sampler.next_batch(&r, res, 3, (res > 4).then_some(0.5))?;
        }
        Ok(())
    }

    #[test]
    fn a_manifest_that_disagrees_with_the_header_is_refused() {
        let (_d, path) = sample_file();
        let good = std::fs::read(&path).unwrap();
        let header = PyramidReader::open(&path).unwrap().header().clone();
        let (m_off, m_len) = (
            header.manifest.offset as usize,
            header.manifest.length as usize,
        );
        let hlen = format::header_len(3);
        for (from, to, said) in [
            (
                &b"\"resolution\": 16"[..],
                &b"\"resolution\": 32"[..],
                "the manifest says 32x32 with 3 channel(s) but the header says 16x16 with 3",
            ),
            (
                b"\"channels\": 3",
                b"\"channels\": 1",
                "the manifest says 16x16 with 1 channel(s) but the header says 16x16 with 3",
            ),
        ] {
            let mut b = good.clone();
            let at = m_off
                + b[m_off..m_off + m_len]
                    .windows(from.len())
                    .position(|w| w == from)
                    .expect("the manifest holds the field");
            b[at..at + to.len()].copy_from_slice(to);
            // Both checksums recomputed: only the comparison can catch it.
            let crc = crc32fast::hash(&b[m_off..m_off + m_len]);
            b[hlen - 12..hlen - 8].copy_from_slice(&crc.to_le_bytes());
            let crc = crc32fast::hash(&b[..hlen - 4]);
            b[hlen - 4..hlen].copy_from_slice(&crc.to_le_bytes());
            let err = open_err(&b);
            assert!(err.contains(said), "{err}");
        }
    }

    /// The reader fuzzed in CI: thousands of deterministic mutations of a valid file (bit flips,
    /// truncations, header fields and manifest bytes edited with their checksums recomputed so
    /// that the checks behind the checksums are reached, overwritten runs, appended bytes) go
    /// through open, every level, verify and the sampler: each is a typed error naming the file
    /// or works, and none panics.
    #[test]
    fn fuzzed_files_are_typed_errors_never_panics() {
        use rand::{Rng, SeedableRng};
        let (_d, path) = sample_file();
        let good = std::fs::read(&path).unwrap();
        let hlen = format::header_len(3);
        let header = PyramidReader::open(&path).unwrap().header().clone();
        let (m_off, m_len) = (
            header.manifest.offset as usize,
            header.manifest.length as usize,
        );
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m.pgan");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(22);
        // Fix the manifest checksum in the header, then the header's own.
        let reseal = |b: &mut Vec<u8>, manifest_too: bool| {
            if manifest_too && b.len() >= m_off + m_len {
                let crc = crc32fast::hash(&b[m_off..m_off + m_len]);
                b[hlen - 12..hlen - 8].copy_from_slice(&crc.to_le_bytes());
            }
            if b.len() >= hlen {
                let crc = crc32fast::hash(&b[..hlen - 4]);
                b[hlen - 4..hlen].copy_from_slice(&crc.to_le_bytes());
            }
        };
        // Field offsets of the header (u32 then u64 fields) before its checksum.
        let mut fields: Vec<(usize, usize)> = vec![(8, 4), (12, 4), (16, 4), (20, 4), (24, 8)];
        for i in 0..3 {
            let at = 32 + 24 * i;
            fields.extend([(at, 4), (at + 4, 4), (at + 8, 8), (at + 16, 8)]);
        }
        fields.extend([
            (hlen - 28, 8),
            (hlen - 20, 8),
            (hlen - 12, 4),
            (hlen - 8, 4),
        ]);
        let (mut opened, mut refused) = (0, 0);
        for case in 0..3000 {
            let mut b = good.clone();
            match case % 6 {
                0 => {
                    for _ in 0..rng.random_range(1..=4) {
                        let at = rng.random_range(0..b.len());
                        b[at] ^= 1 << rng.random_range(0..8);
                    }
                }
                1 => b.truncate(rng.random_range(0..good.len())),
                2 => {
                    let (at, width) = fields[rng.random_range(0..fields.len())];
                    let old = if width == 4 {
                        u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as u64
                    } else {
                        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
                    };
                    let value: u64 = match rng.random_range(0..6) {
                        0 => 0,
                        1 => u64::MAX,
                        2 => old.wrapping_add(rng.random_range(1..5)),
                        3 => old.wrapping_sub(rng.random_range(1..5)),
                        4 => 4096 * rng.random_range(0..8),
                        _ => rng.random(),
                    };
                    let bytes = value.to_le_bytes();
                    b[at..at + width].copy_from_slice(&bytes[..width]);
                    reseal(&mut b, false);
                }
                3 => {
                    for _ in 0..rng.random_range(1..=3) {
                        let at = m_off + rng.random_range(0..m_len);
                        b[at] = b"{}[]\",:0-9e\\ \x00\xff"[rng.random_range(0..15)];
                    }
                    reseal(&mut b, true);
                }
                4 => {
                    let at = rng.random_range(0..b.len());
                    let end = (at + rng.random_range(1..64)).min(b.len());
                    rng.fill(&mut b[at..end]);
                    if rng.random_bool(0.5) {
                        reseal(&mut b, true);
                    }
                }
                _ => {
                    let extra: Vec<u8> = (0..rng.random_range(1..9000))
                        .map(|_| rng.random())
                        .collect();
                    b.extend_from_slice(&extra);
                }
            }
            std::fs::write(&target, &b).unwrap();
            match std::panic::catch_unwind(|| exercise(&target)) {
                Err(_) => panic!("mutation {case} panicked (kind {})", case % 6),
                Ok(Ok(())) => opened += 1,
                Ok(Err(e)) => {
                    assert!(e.to_string().contains("m.pgan"), "{case}: {e}");
                    refused += 1;
                }
            }
        }
        // Both paths were exercised: valid-looking files read through, broken ones refused.
        assert!(
            opened >= 300 && refused >= 1000,
            "opened {opened}, refused {refused}"
        );
    }

    #[test]
    fn size_is_close_to_four_thirds_of_the_top_level() {
        let (_d, path) = sample_file();
        let r = PyramidReader::open(&path).unwrap();
        let top = r.level(16).unwrap().len() as u64;
        let file = std::fs::metadata(&path).unwrap().len();
        // Tiny files are dominated by 4 KiB alignment; check the layout math instead.
        let (levels, end) = Header::plan_levels(16, 3, 10_000);
        let data: u64 = levels.iter().map(|l| l.length).sum();
        assert!(end as f64 <= data as f64 * 1.01);
        assert!(data * 3 <= 4 * 10_000 * 768);
        assert!(file > top);
    }
}
