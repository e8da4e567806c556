//! The on-disk layout of a `.pgan` pyramid file: constants, the header and
//! its (de)serialisation, and the level layout planner.
//!
//! The normative description lives in `docs/FORMAT.md`; keep both in sync.
//! All integers are little-endian.
//!
//! ```text
//! 0      magic        [u8; 8]  b"PGANPYR\0"
//! 8      version      u32      FORMAT_VERSION
//! 12     resolution   u32      top level side (power of two, 4..=1024)
//! 16     channels     u32      1 (luma) or 3 (RGB)
//! 20     num_levels   u32      log2(resolution) - 1
//! 24     count        u64      number of images
//! 32     levels       num_levels x { resolution u32, crc32 u32, offset u64, length u64 }
//! ..     manifest     { offset u64, length u64, crc32 u32, reserved u32 = 0 }
//! ..     header_crc   u32      CRC-32 of every header byte before it
//! ```

use std::path::Path;

use crate::error::{DataError, Result};

/// File magic: identifies a pgan pyramid file.
pub const MAGIC: [u8; 8] = *b"PGANPYR\0";
/// Format version written by this build (and the only one it reads).
pub const FORMAT_VERSION: u32 = 1;
/// Every level starts at a multiple of this many bytes (one page on common
/// systems), so a level can be mapped and read without straddling a page.
pub const ALIGN: u64 = 4096;
/// Smallest pyramid level and largest top level: the resolutions every pgan crate supports.
pub use pgan_spec::resolution::{MAX_RESOLUTION, MIN_RESOLUTION};
/// Upper bound on `num_levels` (4, 8, ..., 1024).
pub const MAX_LEVELS: u32 = MAX_RESOLUTION.trailing_zeros() - 1;

/// Size of the fixed prefix before the level table.
const PREFIX_LEN: usize = 32;
/// Size of one level-table entry.
const LEVEL_ENTRY_LEN: usize = 24;
/// Size of the manifest entry.
const MANIFEST_ENTRY_LEN: usize = 24;

/// Number of header bytes for `num_levels` levels, including the trailing crc.
pub fn header_len(num_levels: u32) -> usize {
    PREFIX_LEN + LEVEL_ENTRY_LEN * num_levels as usize + MANIFEST_ENTRY_LEN + 4
}

/// Number of levels for a top resolution (4x4 up to `resolution`).
pub fn num_levels_for(resolution: u32) -> u32 {
    resolution.trailing_zeros() - 1
}

/// Is `resolution` a supported top-level resolution?
pub fn valid_resolution(resolution: u32) -> bool {
    pgan_spec::resolution::is_supported(resolution)
}

/// Round `x` up to the next multiple of [`ALIGN`].
pub fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// Bytes of one image at `resolution` with `channels` channels.
pub fn image_bytes(resolution: u32, channels: u32) -> u64 {
    resolution as u64 * resolution as u64 * channels as u64
}

/// One level of the pyramid: where it lives and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelEntry {
    /// Side length of the images in this level.
    pub resolution: u32,
    /// CRC-32 (IEEE, as computed by `crc32fast`) of the level's bytes.
    pub crc32: u32,
    /// Byte offset of the level in the file (multiple of [`ALIGN`]).
    pub offset: u64,
    /// Byte length: `count * resolution^2 * channels`.
    pub length: u64,
}

/// Location and checksum of the JSON manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Section {
    /// Byte offset in the file.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
    /// CRC-32 of the section's bytes.
    pub crc32: u32,
}

/// The decoded, validated header of a pyramid file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Top-level resolution.
    pub resolution: u32,
    /// Channels per pixel (1 or 3).
    pub channels: u32,
    /// Number of images.
    pub count: u64,
    /// Levels from 4x4 up to the top level.
    pub levels: Vec<LevelEntry>,
    /// The JSON manifest.
    pub manifest: Section,
}

impl Header {
    /// Offsets and lengths of each level for `count` images, levels packed
    /// in increasing resolution after the first aligned page. Returns the
    /// entries (crc 0) and the end of the last level.
    pub fn plan_levels(resolution: u32, channels: u32, count: u64) -> (Vec<LevelEntry>, u64) {
        let mut offset = align_up(header_len(num_levels_for(resolution)) as u64);
        let mut levels = Vec::new();
        let mut res = MIN_RESOLUTION;
        let mut end = offset;
        while res <= resolution {
            let length = count * image_bytes(res, channels);
            levels.push(LevelEntry {
                resolution: res,
                crc32: 0,
                offset,
                length,
            });
            end = offset + length;
            offset = align_up(end);
            res *= 2;
        }
        (levels, end)
    }

    /// Serialise to bytes (including the trailing header crc).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(header_len(self.levels.len() as u32));
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&self.resolution.to_le_bytes());
        b.extend_from_slice(&self.channels.to_le_bytes());
        b.extend_from_slice(&(self.levels.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.count.to_le_bytes());
        for l in &self.levels {
            b.extend_from_slice(&l.resolution.to_le_bytes());
            b.extend_from_slice(&l.crc32.to_le_bytes());
            b.extend_from_slice(&l.offset.to_le_bytes());
            b.extend_from_slice(&l.length.to_le_bytes());
        }
        b.extend_from_slice(&self.manifest.offset.to_le_bytes());
        b.extend_from_slice(&self.manifest.length.to_le_bytes());
        b.extend_from_slice(&self.manifest.crc32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse and validate a header from the start of a file of `file_len`
    /// bytes. `bytes` is the file's prefix (at least the header if the file
    /// is long enough). Never panics on malformed input.
    pub fn parse(bytes: &[u8], file_len: u64, path: &Path) -> Result<Header> {
        let bad = |reason: String| DataError::invalid(path, reason);
        let foreign = |reason: &str| DataError::NotPyramid {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        if file_len == 0 {
            return Err(foreign("empty file (0 bytes)"));
        }
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(foreign(
                "its first bytes are not a pgan pyramid's (bad magic bytes): another kind of file",
            ));
        }
        if bytes.len() < PREFIX_LEN {
            return Err(bad(format!(
                "truncated: file is {file_len} bytes, shorter than the header"
            )));
        }
        let mut r = FieldReader {
            bytes,
            pos: MAGIC.len(),
        };
        let version = r.u32();
        // Judged with the checksum below: a damaged version field is corruption, not a file
        // from another version.
        let unsupported = || {
            format!(
                "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
            )
        };
        let resolution = r.u32();
        let channels = r.u32();
        let num_levels = r.u32();
        let count = r.u64();
        if num_levels == 0 || num_levels > MAX_LEVELS {
            if version != FORMAT_VERSION {
                return Err(bad(unsupported()));
            }
            return Err(bad(format!(
                "corrupt header: {num_levels} levels (expected 1..={MAX_LEVELS})"
            )));
        }
        let hlen = header_len(num_levels);
        if bytes.len() < hlen {
            return Err(bad(format!(
                "truncated: file is {file_len} bytes, header needs {hlen}"
            )));
        }
        let stored_crc = u32::from_le_bytes(bytes[hlen - 4..hlen].try_into().expect("4 bytes"));
        let intact = crc32fast::hash(&bytes[..hlen - 4]) == stored_crc;
        match (intact, version == FORMAT_VERSION) {
            (true, true) => {}
            (true, false) => return Err(bad(unsupported())),
            (false, true) => {
                return Err(bad("corrupt header: header checksum mismatch".into()));
            }
            // Another version's header may lie otherwise: either is possible.
            (false, false) => {
                return Err(bad(format!(
                    "{}, or a damaged header (its checksum does not match)",
                    unsupported()
                )));
            }
        }
        let mut levels = Vec::with_capacity(num_levels as usize);
        for _ in 0..num_levels {
            let resolution = r.u32();
            let crc32 = r.u32();
            let offset = r.u64();
            let length = r.u64();
            levels.push(LevelEntry {
                resolution,
                crc32,
                offset,
                length,
            });
        }
        let manifest = Section {
            offset: r.u64(),
            length: r.u64(),
            crc32: r.u32(),
        };
        let header = Header {
            version,
            resolution,
            channels,
            count,
            levels,
            manifest,
        };
        header.validate(file_len).map_err(bad)?;
        Ok(header)
    }

    /// Where the last section (level or manifest, whichever lies last) ends: the file's size
    /// when nothing follows its data.
    pub fn data_end(&self) -> u64 {
        self.occupied()
            .map(|(offset, length)| offset.saturating_add(length))
            .max()
            .unwrap_or(0)
    }

    /// Where the sections (levels and manifest) lie, as `(offset, length)`, leaving out the
    /// empty ones: an empty section takes no room (as in `validate`), wherever its offset
    /// points.
    pub fn occupied(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.levels
            .iter()
            .map(|l| (l.offset, l.length))
            .chain([(self.manifest.offset, self.manifest.length)])
            .filter(|&(_, length)| length > 0)
    }

    /// Semantic checks: sizes agree, sections are aligned, in bounds and
    /// do not overlap the header or each other.
    fn validate(&self, file_len: u64) -> std::result::Result<(), String> {
        if !valid_resolution(self.resolution) {
            return Err(format!(
                "corrupt header: resolution {} is not a power of two in 4..=1024",
                self.resolution
            ));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(format!(
                "corrupt header: {} channels (expected 1 or 3)",
                self.channels
            ));
        }
        if self.levels.len() as u32 != num_levels_for(self.resolution) {
            return Err(format!(
                "corrupt header: {} levels for resolution {}",
                self.levels.len(),
                self.resolution
            ));
        }
        // (start, end, name) of every section: levels and manifest may lie in any order
        // (docs/FORMAT.md), but each within the file, after the header, and apart.
        let mut sections = Vec::with_capacity(self.levels.len() + 1);
        for (i, l) in self.levels.iter().enumerate() {
            let want_res = MIN_RESOLUTION << i;
            if l.resolution != want_res {
                return Err(format!(
                    "corrupt header: level {i} has resolution {} (expected {want_res})",
                    l.resolution
                ));
            }
            let want_len = self
                .count
                .checked_mul(image_bytes(l.resolution, self.channels))
                .ok_or_else(|| format!("corrupt header: image count {} overflows", self.count))?;
            if l.length != want_len {
                return Err(format!(
                    "corrupt header: level {0}x{0} is {1} bytes, expected {want_len} for {2} images",
                    l.resolution, l.length, self.count
                ));
            }
            if l.offset % ALIGN != 0 {
                return Err(format!(
                    "corrupt header: level {0}x{0} offset {1} is not {ALIGN}-byte aligned",
                    l.resolution, l.offset
                ));
            }
            let end = section_end(l.offset, l.length, file_len).ok_or_else(|| {
                format!(
                    "truncated: level {0}x{0} extends past the end of the file ({file_len} bytes)",
                    l.resolution
                )
            })?;
            sections.push((l.offset, end, format!("level {0}x{0}", l.resolution)));
        }
        let manifest_end = section_end(self.manifest.offset, self.manifest.length, file_len)
            .ok_or_else(|| {
                format!("truncated: manifest extends past the end of the file ({file_len} bytes)")
            })?;
        sections.push((self.manifest.offset, manifest_end, "the manifest".into()));
        // Empty sections (a dataset of no images has empty levels) take no room.
        sections.retain(|(start, end, _)| end > start);
        sections.sort();
        let mut prev = (
            header_len(self.levels.len() as u32) as u64,
            "the header".to_string(),
        );
        for (start, end, name) in sections {
            if start < prev.0 {
                return Err(format!("corrupt header: {name} overlaps {}", prev.1));
            }
            prev = (end, name);
        }
        Ok(())
    }
}

/// End of a section if it lies within the file.
fn section_end(offset: u64, length: u64, file_len: u64) -> Option<u64> {
    offset.checked_add(length).filter(|&end| end <= file_len)
}

/// Sequential little-endian field reader over a slice whose length was
/// checked by the caller.
struct FieldReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl FieldReader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let out: [u8; N] = self.bytes[self.pos..self.pos + N]
            .try_into()
            .expect("length checked");
        self.pos += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(count: u64) -> (Header, u64) {
        let (levels, end) = Header::plan_levels(16, 3, count);
        let manifest = Section {
            offset: end,
            length: 10,
            crc32: 7,
        };
        (
            Header {
                version: FORMAT_VERSION,
                resolution: 16,
                channels: 3,
                count,
                levels,
                manifest,
            },
            end + 10,
        )
    }

    #[test]
    fn plan_is_aligned_and_contiguous() {
        let (levels, end) = Header::plan_levels(16, 3, 5);
        assert_eq!(
            levels.iter().map(|l| l.resolution).collect::<Vec<_>>(),
            vec![4, 8, 16]
        );
        assert_eq!(levels[0].offset, ALIGN);
        for l in &levels {
            assert_eq!(l.offset % ALIGN, 0);
            assert_eq!(l.length, 5 * image_bytes(l.resolution, 3));
        }
        assert_eq!(end, levels[2].offset + levels[2].length);
        assert_eq!(num_levels_for(1024), 9);
        assert_eq!(header_len(MAX_LEVELS), 276);
    }

    #[test]
    fn roundtrip() {
        let (h, len) = sample(5);
        let bytes = h.to_bytes();
        assert_eq!(bytes.len(), header_len(3));
        assert_eq!(Header::parse(&bytes, len, Path::new("x")).unwrap(), h);
    }

    #[test]
    fn every_flipped_header_byte_is_rejected() {
        let (h, len) = sample(5);
        let bytes = h.to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Header::parse(&b, len, Path::new("x")).is_err(), "byte {i}");
        }
    }

    #[test]
    fn rejects_out_of_bounds_and_bad_fields() {
        let (h, len) = sample(5);
        let p = Path::new("f.pgan");
        let e = Header::parse(&h.to_bytes(), len - 1, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated") && e.contains("f.pgan"), "{e}");

        let mut bad = h.clone();
        bad.levels[1].offset += 8;
        let e = Header::parse(&bad.to_bytes(), len + 8, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("aligned"), "{e}");

        let mut bad = h.clone();
        bad.version = 2;
        let e = Header::parse(&bad.to_bytes(), len, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 2"), "{e}");

        let mut bad = h.clone();
        bad.count = u64::MAX;
        assert!(Header::parse(&bad.to_bytes(), len, p).is_err());

        let mut bad = h;
        bad.channels = 4;
        let e = Header::parse(&bad.to_bytes(), len, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("4 channels"), "{e}");
    }

    #[test]
    fn rejects_empty_foreign_and_short_prefixes() {
        let p = Path::new("f");
        assert!(Header::parse(&[], 0, p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(Header::parse(b"\x89PNG\r\n\x1a\n....", 12, p)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        assert!(Header::parse(b"PGAN", 4, p)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        let (h, len) = sample(1);
        let bytes = h.to_bytes();
        let e = Header::parse(&bytes[..40], len, p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
