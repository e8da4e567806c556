//! Finding and decoding source images: the folder walk, decoding with EXIF
//! orientation, colour conversion, fitting to a square and resizing to the
//! top-level resolution.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::files::{open_regular, OpenError};
use crate::memory::{DecodeBudget, DecodePermit};
use crate::resize::{resample, Rect};

/// How a non-square image is made square.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Keep the centred square of side `min(width, height)` (ProGAN's choice for CelebA-HQ / LSUN).
    #[default]
    CenterCrop,
    /// Scale the longer side to the resolution and pad the rest with the background colour.
    Pad,
    /// Scale each axis independently (distorts the aspect ratio).
    Stretch,
}

impl std::str::FromStr for Fit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "center-crop" | "crop" => Ok(Fit::CenterCrop),
            "pad" => Ok(Fit::Pad),
            "stretch" => Ok(Fit::Stretch),
            other => Err(format!(
                "unknown fit mode {other:?} (expected center-crop, pad or stretch)"
            )),
        }
    }
}

impl std::fmt::Display for Fit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fit::CenterCrop => "center-crop",
            Fit::Pad => "pad",
            Fit::Stretch => "stretch",
        })
    }
}

/// File extensions (lower case) that are treated as images. Anything else is ignored.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "jpe", "jfif", "webp", "bmp", "gif", "tif", "tiff",
];

/// Does `path` have one of [`IMAGE_EXTENSIONS`] (case-insensitive)?
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Result of walking an image folder.
#[derive(Debug, Default)]
pub struct Walk {
    /// Image files, sorted by path.
    pub images: Vec<PathBuf>,
    /// What was not taken, sorted by path, with why (for the report).
    pub ignored: Vec<(PathBuf, &'static str)>,
}

impl Walk {
    /// How many files were not taken for their extension, per extension (lower case, with its
    /// dot; `(none)` for a name without one), for a command that says what it did not read.
    pub fn not_images_by_extension(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for (path, _) in self.ignored.iter().filter(|(_, why)| *why == NOT_AN_IMAGE) {
            let ext = path.extension().map_or_else(
                || "(none)".to_string(),
                |e| format!(".{}", e.to_string_lossy().to_lowercase()),
            );
            *counts.entry(ext).or_insert(0) += 1;
        }
        counts
    }

    /// How many links were not followed because they lead nowhere (a missing target, a loop).
    pub fn broken_links(&self) -> usize {
        self.ignored
            .iter()
            .filter(|(_, why)| *why == BROKEN_LINK)
            .count()
    }

    /// The first folder or entry that could not be read, with the system's reason (read
    /// again): for a command that measures every image of a folder, or finds none elsewhere.
    pub fn unreadable_error(&self) -> Option<DataError> {
        let (path, why) = self
            .ignored
            .iter()
            .find(|(_, why)| [UNREADABLE_FOLDER, UNREADABLE_ENTRY].contains(why))?;
        let (action, again) = match *why {
            UNREADABLE_FOLDER => (
                "cannot read folder",
                std::fs::read_dir(path)
                    .and_then(|mut entries| entries.try_for_each(|entry| entry.map(drop))),
            ),
            _ => ("cannot read", std::fs::symlink_metadata(path).map(drop)),
        };
        let error = again
            .err()
            .unwrap_or_else(|| std::io::Error::other("it could not be read while listing"));
        Some(DataError::io(action, path, error))
    }
}

/// Why a file was not taken: its extension.
pub(crate) const NOT_AN_IMAGE: &str = "not an image file extension";
/// Why a folder's images were not taken: it cannot be listed (permissions, an I/O error). The
/// folder given to `prepare` itself is an error instead.
pub(crate) const UNREADABLE_FOLDER: &str =
    "a folder that cannot be read (permission denied or an I/O error): its images are not taken";
/// Why an entry was not taken: its type cannot be read.
pub(crate) const UNREADABLE_ENTRY: &str =
    "an entry whose type cannot be read (permission denied or an I/O error)";
/// Why a link was not followed: it leads nowhere.
pub(crate) const BROKEN_LINK: &str =
    "a link that leads nowhere (its target is missing, or links loop)";
/// Why a link to a folder was not followed.
pub(crate) const FOLDER_SEEN: &str =
    "a link to a folder already listed (a loop or a second way in)";

/// Recursively list image files under `dir`, sorted so that the output does not depend on
/// directory iteration order. Symlinked files are taken; symlinked folders are followed once
/// the real folders are listed (in path order, so one folder reached two ways is always listed
/// under the same path), and a folder already listed is not entered again (no loops). A
/// subfolder that cannot be read is listed as not taken (one restricted folder in a photo tree
/// does not stop the rest); `dir` itself is an error.
pub fn walk(dir: &Path) -> Result<Walk> {
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| crate::files::file_id(&m));
    let mut seen: std::collections::HashSet<(u64, u64)> = id(dir).into_iter().collect();
    let mut out = Walk::default();
    let mut stack = vec![dir.to_path_buf()];
    let mut links: Vec<PathBuf> = Vec::new();
    loop {
        let Some(d) = stack.pop() else {
            // The real folders are listed: follow the first link to a folder not seen yet.
            links.sort();
            links.reverse();
            let Some(link) = links.pop() else { break };
            match id(&link) {
                Some(target) if seen.insert(target) => stack.push(link),
                _ => out.ignored.push((link, FOLDER_SEEN)),
            }
            continue;
        };
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if d == dir => return Err(DataError::io("cannot read folder", &d, e)),
            Err(_) => {
                out.ignored.push((d, UNREADABLE_FOLDER));
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else {
                // The listing broke off: what it did not reach is not taken.
                out.ignored.push((d.clone(), UNREADABLE_FOLDER));
                break;
            };
            let path = entry.path();
            let Ok(ty) = entry.file_type() else {
                out.ignored.push((path, UNREADABLE_ENTRY));
                continue;
            };
            if ty.is_dir() {
                // Inside a followed link, a real folder may be one already listed.
                if id(&path).is_none_or(|real| seen.insert(real)) {
                    stack.push(path);
                } else {
                    out.ignored.push((path, FOLDER_SEEN));
                }
            } else if ty.is_symlink() && path.is_dir() {
                links.push(path);
            } else if ty.is_symlink()
                && !has_image_extension(&path)
                && std::fs::metadata(&path).is_err_and(|e| leads_nowhere(&e))
            {
                // Named as an image, it is taken, and its read says what is wrong.
                out.ignored.push((path, BROKEN_LINK));
            } else if has_image_extension(&path) {
                out.images.push(path);
            } else {
                out.ignored.push((path, NOT_AN_IMAGE));
            }
        }
    }
    out.images.sort();
    out.ignored.sort();
    Ok(out)
}

/// Whether following a link failed because its target is missing or links loop (another error,
/// a permission, is the entry's own).
fn leads_nowhere(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return true;
    }
    e.kind() == std::io::ErrorKind::NotFound
}

/// What ingestion needs to know about the target.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub resolution: u32,
    pub channels: u8,
    pub fit: Fit,
    pub background: [u8; 3],
    pub min_size: Option<u32>,
    /// Images with more pixels than this are refused before decoding.
    pub max_pixels: u64,
}

/// A decoded, fitted, resized top-level image.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// `resolution x resolution x channels` bytes.
    pub top: Vec<u8>,
    /// True when the source had to be enlarged.
    pub upscaled: bool,
}

/// Default most pixels one source image may have: Pillow's decompression-bomb error threshold,
/// `2 * Image.MAX_IMAGE_PIXELS` with `MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3`
/// (89,478,485 pixels, where Pillow starts to warn; `PIL/Image.py`).
pub const DEFAULT_MAX_PIXELS: u64 = 2 * (1024 * 1024 * 1024 / 4 / 3);

/// Source files up to this size are read into memory whole before decoding (faster: the JPEG
/// decoder buffers the entire stream anyway); larger ones are streamed, so a huge file costs no
/// memory of its own.
const READ_WHOLE_MAX: u64 = 256 << 20;

/// The most bytes one image's decoder may allocate: an 8-bit RGBA image at the pixel limit
/// (at least 64 MiB, so that small limits do not starve a decoder's own buffers). With
/// [`READ_WHOLE_MAX`] this bounds one bad file's memory to under 1 GB at the default limit.
pub(crate) fn alloc_limit(max_pixels: u64) -> u64 {
    max_pixels.saturating_mul(4).max(64 << 20)
}

/// Decode `path` honouring EXIF orientation. GIFs yield their first frame. The header is read
/// first: images over `max_pixels` pixels, or whose decoded buffer would exceed
/// [`alloc_limit`], are refused before any pixel memory is allocated (decompression bombs).
/// Only regular files are opened.
pub fn decode(path: &Path, max_pixels: u64) -> std::result::Result<DynamicImage, String> {
    decode_held(path, max_pixels).map(|(image, _)| image)
}

/// [`decode`], with the [`DecodePermit`] for the image's memory (its decoded buffer and the
/// 8-bit copies [`to_channels`] makes of it), taken from the header's size before the pixels
/// are allocated: hold it until the image and its copies are dropped, and the decoders of all
/// threads together stay within the process's [`DecodeBudget`].
pub fn decode_held(
    path: &Path,
    max_pixels: u64,
) -> std::result::Result<(DynamicImage, DecodePermit<'static>), String> {
    let (file, meta) = open_regular(path).map_err(|e| match e {
        OpenError::NotRegular(kind) => format!("not a regular file ({kind})"),
        OpenError::Io(e) => format!("cannot read: {e}"),
    })?;
    if meta.len() == 0 {
        return Err("empty file (0 bytes)".into());
    }
    let img = if meta.len() <= READ_WHOLE_MAX {
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&file)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read: {e}"))?;
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            if !jpeg_has_end(&bytes) {
                return Err(TRUNCATED_JPEG.into());
            }
            if let Some(n) = jpeg_components(&bytes).filter(|n| ![1, 3, 4].contains(n)) {
                // The decoder turns other counts into noise without a word (libjpeg refuses
                // them in its colour conversion).
                return Err(format!(
                    "JPEG with {n} colour components (only 1, 3 and 4 are standard: grey, YCbCr \
                     or RGB, CMYK)"
                ));
            }
        }
        let held = Source {
            len: meta.len(),
            held: true,
            head: &bytes[..bytes.len().min(HEAD_BYTES)],
        };
        decode_from(std::io::Cursor::new(&bytes[..]), path, max_pixels, held)
    } else {
        // The header's first bytes, read where they are (the stream starts at 0 still).
        let mut head = [0u8; HEAD_BYTES];
        #[cfg(unix)]
        let _ = std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0);
        // The JPEG decoder reads its whole stream before it says the image's size: a file this
        // large is sized from its frame header first (the segments before it, metadata, are at
        // most a few MiB), so that a bomb is refused without reading it.
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            let mut segments = Vec::new();
            (&file)
                .take(JPEG_HEADER_SCAN)
                .read_to_end(&mut segments)
                .map_err(|e| format!("cannot read: {e}"))?;
            (&file)
                .seek(std::io::SeekFrom::Start(0))
                .map_err(|e| format!("cannot read: {e}"))?;
            if let Some(size) = jpeg_dimensions(&segments) {
                let pixels = u64::from(size.0) * u64::from(size.1);
                check_size(size, pixels.saturating_mul(4), false, max_pixels)?;
            }
        }
        let streamed = Source {
            len: meta.len(),
            held: false,
            head: &head,
        };
        decode_from(std::io::BufReader::new(&file), path, max_pixels, streamed)
    };
    let (img, permit) = match img {
        Err(Undecodable::Unsupported(reason)) if is_tiff(path) => {
            // The `image` crate refuses some TIFF layouts that common tools read (grey + alpha).
            drop(file);
            // The fallback sizes the image itself: held for the most it may take (rare files).
            let permit = budget(max_pixels).acquire(alloc_limit(max_pixels).saturating_mul(2));
            // Its reason where it is the image's size; else the first decoder's.
            let img = crate::tiff_fallback::decode(path, max_pixels).map_err(|fallback| {
                if fallback.starts_with(TOO_MANY_PIXELS) || fallback.starts_with(TOO_LARGE) {
                    fallback
                } else {
                    reason
                }
            })?;
            (img, permit)
        }
        Err(Undecodable::Unsupported(reason) | Undecodable::Other(reason)) => return Err(reason),
        Ok(held) => held,
    };
    if img.width() == 0 || img.height() == 0 {
        return Err(format!(
            "image has no pixels ({}x{})",
            img.width(),
            img.height()
        ));
    }
    Ok((img, permit))
}

/// The process's [`DecodeBudget`]: at least two images at the pixel limit, as decoded and
/// converted, fit in it.
fn budget(max_pixels: u64) -> &'static DecodeBudget {
    DecodeBudget::global(alloc_limit(max_pixels).saturating_mul(4))
}

/// Skip reason of a JPEG that ends before its end-of-image marker.
pub(crate) const TRUNCATED_JPEG: &str =
    "truncated JPEG: its image data has no end-of-image marker (the file was cut short)";

/// Whether a JPEG's image data is followed by its end-of-image marker (`FF D9`). The JPEG
/// decoder fills whatever a cut-short file lacks with flat grey and reports nothing, so a
/// half-downloaded photo would enter the dataset (libjpeg warns "premature end of JPEG file").
/// A complete image whose writer left the marker out is refused too: it cannot be told apart,
/// and the report names it. The segments before the first scan are skipped by their lengths (an EXIF
/// thumbnail carries markers of its own); inside the scans `FF D9` can only be the end marker
/// (stuffing makes every other `FF` byte `FF 00` or a restart marker). Data after the marker
/// (a motion photo's video) is allowed. Files too large to be read whole are not checked.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let has_end_after = |from: usize| {
        bytes[from.min(bytes.len())..]
            .windows(2)
            .any(|w| w == [0xFF, 0xD9])
    };
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            break;
        }
        match bytes[at + 1] {
            0xFF => at += 1,
            0xDA => return has_end_after(at),
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => at += 2 + usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
        }
    }
    // Segments that do not chain: the decoder judges the file; only a missing end is caught.
    has_end_after(2)
}

/// The component count of a JPEG's frame header (`SOFn`, from the segments before it), if
/// the segments chain up to one.
fn jpeg_components(bytes: &[u8]) -> Option<u8> {
    jpeg_frame(bytes).map(|frame| frame[7])
}

/// The size a JPEG's frame header declares, (width, height), if the segments in `bytes` chain
/// up to one.
fn jpeg_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let frame = jpeg_frame(bytes)?;
    let height = u16::from_be_bytes([frame[3], frame[4]]);
    let width = u16::from_be_bytes([frame[5], frame[6]]);
    Some((u32::from(width), u32::from(height)))
}

/// The first 8 bytes of a JPEG's frame header (`SOFn`): length, precision, height, width, then
/// the component count, if the segments in `bytes` chain up to one.
fn jpeg_frame(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        match bytes[at + 1] {
            0xFF => at += 1,
            0x01 | 0xD0..=0xD7 => at += 2,
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): length, precision, height,
            // width, then the component count.
            0xC0..=0xCF if ![0xC4, 0xC8, 0xCC].contains(&bytes[at + 1]) => {
                return bytes.get(at + 2..at + 10);
            }
            0xDA | 0xD9 => return None,
            _ => at += 2 + usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
        }
    }
    None
}

/// Why a stream did not decode; `Unsupported` may still be readable another way.
enum Undecodable {
    Unsupported(String),
    Other(String),
}

fn is_tiff(path: &Path) -> bool {
    image::ImageFormat::from_path(path).is_ok_and(|f| f == image::ImageFormat::Tiff)
}

/// What [`decode_from`] knows of its file without reading it again.
struct Source<'a> {
    /// The file's length.
    len: u64,
    /// Whether all of it is in memory (read whole).
    held: bool,
    /// Its first [`HEAD_BYTES`] bytes (fewer for a shorter file; zeros where unread).
    head: &'a [u8],
}

/// Bytes of a file's start that hold a PNG's width (signature, IHDR length and type, width).
const HEAD_BYTES: usize = 24;

/// The most of a large JPEG read to find its frame header: the segments before it (EXIF, ICC
/// profiles, thumbnails) are 64 KiB each, and real files hold a handful.
const JPEG_HEADER_SCAN: u64 = 16 << 20;

/// Decodes `source` (the file at `path`, described by `file`) within the
/// process's [`DecodeBudget`]: the permit counts the decoded buffer, its 8-bit copy, a rotated
/// copy where EXIF asks for one, the file's bytes held, and a JPEG decoder's own copy of the file
/// and coefficients (a progressive image keeps 2 bytes per sample of up to 4 components).
fn decode_from<R: std::io::BufRead + std::io::Seek>(
    source: R,
    path: &Path,
    max_pixels: u64,
    file: Source<'_>,
) -> std::result::Result<(DynamicImage, DecodePermit<'static>), Undecodable> {
    let other = Undecodable::Other;
    let mut reader = ImageReader::new(source);
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    // Sniff the content so that a PNG saved as .jpg still decodes.
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| other(format!("cannot read: {e}")))?;
    let max_alloc = alloc_limit(max_pixels);
    let mut limits = image::Limits::default();
    // The PNG decoder inflates metadata (an ICC profile, text) while it reads the header, before
    // the permit: a profile of a few hundred KB could inflate to the whole limit on every
    // thread. Its own allocations are held to what real files need: a few rows and metadata.
    limits.max_alloc = Some(decoder_alloc(
        file.head,
        file.len,
        reader.format() == Some(image::ImageFormat::Png),
        max_alloc,
    ));
    reader.limits(limits);
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Unsupported(_) => {
            Undecodable::Unsupported(format!("cannot decode: {e}"))
        }
        e => other(format!("cannot decode: {e}")),
    })?;
    let deep = decoder.color_type().bytes_per_pixel() > decoder.color_type().channel_count();
    let (w, h) = decoder.dimensions();
    let decoded = decoder.total_bytes();
    // `needed`: the decoded buffer, and for deeper channels its 8-bit copy.
    let needed = check_size((w, h), decoded, deep, max_pixels).map_err(other)?;
    let orientation = decoder
        .orientation()
        .map_err(|e| other(format!("cannot read orientation: {e}")))?;
    let pixels = u64::from(w) * u64::from(h);
    // `to_channels`' 8-bit RGB copy (a composite first when there is alpha).
    let copy = if deep { 0 } else { pixels.saturating_mul(4) };
    let rotated = if orientation == image::metadata::Orientation::NoTransforms {
        0
    } else {
        decoded
    };
    let jpeg = if is_jpeg {
        file.len.saturating_add(pixels.saturating_mul(8))
    } else {
        0
    };
    let bytes = needed
        .saturating_add(copy)
        .saturating_add(rotated)
        .saturating_add(jpeg)
        .saturating_add(if file.held { file.len } else { 0 });
    let budget = budget(max_pixels);
    // More than the whole machine has (a --max-pixels far above the default): a skip with its
    // reason, not an abort of the run at the allocation. Anything less waits for the budget.
    let available = crate::memory::available_memory_bytes();
    if let Some(available) = available.filter(|&a| bytes > budget.limit() && bytes > a) {
        return Err(other(format!(
            "{TOO_LARGE}: {w}x{h} needs {} MiB, more than the {} MiB of memory available",
            bytes >> 20,
            available >> 20
        )));
    }
    let permit = budget.acquire(bytes);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| other(format!("cannot decode: {e}")))?;
    img.apply_orientation(orientation);
    Ok((img, permit))
}

/// The most the decoder of a file (its first bytes `head`, its length `file_len`) may allocate
/// for itself: `max_alloc`, except for
/// a PNG, whose decoder inflates metadata while it reads the header (before the permit): 64 MiB,
/// or a few of its widest possible rows (8 bytes a pixel, from the width in its header), or
/// three times the file (its text chunks are copied once, into a buffer grown by doubling),
/// whichever is largest. A colour profile that inflates past it is dropped by the decoder.
fn decoder_alloc(head: &[u8], file_len: u64, png: bool, max_alloc: u64) -> u64 {
    if !png {
        return max_alloc;
    }
    let width = match head.get(12..20) {
        Some([b'I', b'H', b'D', b'R', w @ ..]) => u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
        _ => 0,
    };
    let rows = u64::from(width) * 8 * 4;
    let text = file_len.saturating_mul(3);
    max_alloc.min((64u64 << 20).max(rows).max(text))
}

/// Start of the skip reason of an image over the pixel limit.
pub(crate) const TOO_MANY_PIXELS: &str = "too many pixels";

/// Start of the skip reason of an image under the pixel limit whose decoding needs more memory
/// than the limit allows, or than the process may hold.
pub(crate) const TOO_LARGE: &str = "too large to decode";

/// Refuses an image whose header declares more than `max_pixels` pixels, or whose decoded
/// buffer, with its 8-bit copy when it has deeper channels (`deep`: [`to_channels`] converts it
/// while it is held), would need more than [`alloc_limit`] bytes, before anything is allocated
/// for it.
pub(crate) fn check_size(
    (w, h): (u32, u32),
    decoded_bytes: u64,
    deep: bool,
    max_pixels: u64,
) -> std::result::Result<u64, String> {
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(format!(
            "{TOO_MANY_PIXELS}: {w}x{h} is {pixels} pixels, over the limit of {max_pixels} \
             (a decompression bomb, or a very large image)"
        ));
    }
    let max_alloc = alloc_limit(max_pixels);
    // The 8-bit copy is RGBA at most.
    let needed = decoded_bytes.saturating_add(if deep { pixels.saturating_mul(4) } else { 0 });
    if needed > max_alloc {
        let converted = if deep {
            " (decoded, and converted to 8 bits)"
        } else {
            ""
        };
        return Err(format!(
            "{TOO_LARGE}: {w}x{h} needs {} MiB{converted}, over the limit of {} MiB per image",
            needed >> 20,
            max_alloc >> 20
        ));
    }
    Ok(needed)
}

/// Convert to interleaved 8-bit RGB (`channels` 3) or luma (1), compositing alpha onto `bg`:
/// what `pgan prepare` stores, so anything else that reads an image folder sees the same pixels.
pub fn to_channels(img: DynamicImage, channels: u8, bg: [u8; 3]) -> Vec<u8> {
    let img = if img.color().has_alpha() {
        DynamicImage::ImageRgb8(composite(img, bg))
    } else {
        img
    };
    match channels {
        1 => img.into_luma8().into_raw(),
        _ => img.into_rgb8().into_raw(),
    }
}

/// Straight-alpha "over" compositing onto an opaque background, rounded to nearest.
fn composite(img: DynamicImage, bg: [u8; 3]) -> image::RgbImage {
    // By value: an RGBA8 image is used in place instead of copied, and its buffer takes the
    // RGB result too (pixel k's three bytes are written at 3k, behind its four read at 4k),
    // so compositing needs no second image in memory.
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut buf = rgba.into_raw();
    let pixels = buf.len() / 4;
    for k in 0..pixels {
        let px = [buf[4 * k], buf[4 * k + 1], buf[4 * k + 2], buf[4 * k + 3]];
        let a = px[3] as u32;
        for c in 0..3 {
            buf[3 * k + c] = ((px[c] as u32 * a + bg[c] as u32 * (255 - a) + 127) / 255) as u8;
        }
    }
    buf.truncate(3 * pixels);
    buf.shrink_to_fit();
    image::RgbImage::from_raw(w, h, buf).expect("buffer sized for the image")
}

/// Luma of the background colour, as the `image` crate turns RGB into luma (the composited
/// pixels of `--channels 1` go through it: padding must match them to the level).
fn background_luma(bg: [u8; 3]) -> u8 {
    let pixel = image::RgbImage::from_pixel(1, 1, image::Rgb(bg));
    DynamicImage::ImageRgb8(pixel).into_luma8().into_raw()[0]
}

/// Decode and fit one image to the target. Errors are human-readable reasons
/// (the caller adds the path).
pub(crate) fn load(path: &Path, t: &Target) -> std::result::Result<Loaded, String> {
    // Held until the image and its 8-bit copy are dropped, at the end.
    let (img, _permit) = decode_held(path, t.max_pixels)?;
    let (w, h) = (img.width(), img.height());
    if let Some(min) = t.min_size {
        if w.min(h) < min {
            return Err(format!(
                "too small: {w}x{h}, shorter side below the minimum size {min}"
            ));
        }
    }
    let pixels = to_channels(img, t.channels, t.background);
    Ok(fit(&pixels, w as usize, h as usize, t))
}

/// Fit interleaved pixels of a `w x h` image into the target square.
pub(crate) fn fit(pixels: &[u8], w: usize, h: usize, t: &Target) -> Loaded {
    let res = t.resolution as usize;
    let c = t.channels as usize;
    match t.fit {
        Fit::CenterCrop => {
            let side = w.min(h);
            let rect = Rect {
                x: (w - side) / 2,
                y: (h - side) / 2,
                w: side,
                h: side,
            };
            Loaded {
                top: resample(pixels, w, c, rect, res, res),
                upscaled: side < res,
            }
        }
        Fit::Stretch => {
            let rect = Rect { x: 0, y: 0, w, h };
            Loaded {
                top: resample(pixels, w, c, rect, res, res),
                upscaled: w < res || h < res,
            }
        }
        Fit::Pad => {
            let long = w.max(h);
            // Scaled size of each side, at least one pixel.
            let scaled = |s: usize| ((s * res + long / 2) / long).clamp(1, res);
            let (nw, nh) = (scaled(w), scaled(h));
            let mut inner = resample(pixels, w, c, Rect { x: 0, y: 0, w, h }, nw, nh);
            let fill: Vec<u8> = if c == 1 {
                vec![background_luma(t.background)]
            } else {
                t.background.to_vec()
            };
            // A short side that scales below one pixel (a 1000x2 strip at 16) is still given
            // one, blended into the background by the part of it the image covers: the strip
            // keeps its weight instead of becoming a full-strength line.
            let covered = (w.min(h) * res) as f64 / long as f64;
            if covered < 1.0 {
                for (value, bg) in inner.iter_mut().zip(fill.iter().cycle()) {
                    let (v, b) = (f64::from(*value), f64::from(*bg));
                    *value = (b + (v - b) * covered).round().clamp(0.0, 255.0) as u8;
                }
            }
            let mut top: Vec<u8> = fill.iter().copied().cycle().take(res * res * c).collect();
            let (x0, y0) = ((res - nw) / 2, (res - nh) / 2);
            for (y, row) in inner.chunks_exact(nw * c).enumerate() {
                let at = ((y0 + y) * res + x0) * c;
                top[at..at + nw * c].copy_from_slice(row);
            }
            Loaded {
                top,
                upscaled: long < res,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageEncoder, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

    /// A deterministic noisy gradient, like a small photo.
    pub(crate) fn photo(w: u32, h: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let n =
                (x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ seed.wrapping_mul(83492791))
                    % 32;
            Rgb([
                ((x * 255 / w.max(1)) as u8).wrapping_add(n as u8),
                (y * 255 / h.max(1)) as u8,
                (seed * 40 % 256) as u8,
            ])
        })
    }

    fn target(res: u32, channels: u8, fit: Fit) -> Target {
        Target {
            resolution: res,
            channels,
            fit,
            background: [0, 0, 0],
            min_size: None,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }

    #[test]
    fn walk_is_recursive_sorted_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        for p in [
            "z.png",
            "a.JPG",
            "b/c/x.webp",
            "b/y.gif",
            "notes.txt",
            "b/c/readme",
        ] {
            std::fs::write(dir.path().join(p), b"x").unwrap();
        }
        let w = walk(dir.path()).unwrap();
        let rel: Vec<_> = w
            .images
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_path_buf())
            .collect();
        let want: Vec<PathBuf> = ["a.JPG", "b/c/x.webp", "b/y.gif", "z.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(rel, want);
        assert_eq!(w.ignored.len(), 2);
        assert!(w.ignored.iter().all(|(_, why)| *why == NOT_AN_IMAGE));
    }

    #[test]
    fn linked_folders_are_followed_once_and_loops_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        std::fs::write(real.join("sub/a.png"), b"x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("b.png"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("elsewhere")).unwrap();
        // A second way into a listed folder, and a loop back to the top.
        std::os::unix::fs::symlink(&real, dir.path().join("again")).unwrap();
        std::os::unix::fs::symlink(dir.path(), real.join("sub/up")).unwrap();
        // A link into a folder that another link reaches too.
        std::fs::create_dir_all(outside.path().join("year")).unwrap();
        std::fs::write(outside.path().join("year/c.png"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("year"), dir.path().join("a-year")).unwrap();
        // Links that lead nowhere: a loop of two, a missing target (taken when named as an
        // image: its read says what is wrong).
        std::os::unix::fs::symlink("loop-b", dir.path().join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", dir.path().join("loop-b")).unwrap();
        std::os::unix::fs::symlink("gone.png", dir.path().join("z.png")).unwrap();
        let w = walk(dir.path()).unwrap();
        assert_eq!(w.broken_links(), 2);
        assert!(w.not_images_by_extension().is_empty());
        let rel = |p: &PathBuf| p.strip_prefix(dir.path()).unwrap().to_path_buf();
        assert_eq!(
            w.images.iter().map(rel).collect::<Vec<_>>(),
            [
                PathBuf::from("a-year/c.png"),
                PathBuf::from("elsewhere/b.png"),
                PathBuf::from("real/sub/a.png"),
                PathBuf::from("z.png")
            ]
        );
        let ignored: Vec<_> = w.ignored.iter().map(|(p, why)| (rel(p), *why)).collect();
        assert_eq!(
            ignored,
            [
                (PathBuf::from("again"), FOLDER_SEEN),
                (PathBuf::from("elsewhere/year"), FOLDER_SEEN),
                (PathBuf::from("loop-a"), BROKEN_LINK),
                (PathBuf::from("loop-b"), BROKEN_LINK),
                (PathBuf::from("real/sub/up"), FOLDER_SEEN)
            ]
        );
    }

    #[test]
    fn decodes_every_supported_format() {
        let dir = tempfile::tempdir().unwrap();
        let img = photo(40, 30, 1);
        for (ext, fmt) in [
            ("png", ImageFormat::Png),
            ("jpg", ImageFormat::Jpeg),
            ("webp", ImageFormat::WebP),
            ("bmp", ImageFormat::Bmp),
            ("gif", ImageFormat::Gif),
            ("tiff", ImageFormat::Tiff),
        ] {
            let p = dir.path().join(format!("i.{ext}"));
            img.save_with_format(&p, fmt).unwrap();
            let d = decode(&p, DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{ext}: {e}"));
            assert_eq!((d.width(), d.height()), (40, 30), "{ext}");
            let l = load(&p, &target(16, 3, Fit::CenterCrop)).unwrap();
            assert_eq!(l.top.len(), 16 * 16 * 3);
        }
    }

    #[test]
    fn greyscale_and_16bit_are_expanded_or_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        image::GrayImage::from_pixel(9, 7, image::Luma([77]))
            .save(&p)
            .unwrap();
        let rgb = load(&p, &target(4, 3, Fit::Stretch)).unwrap();
        assert!(rgb.top.iter().all(|&v| v == 77));
        let grey = load(&p, &target(4, 1, Fit::Stretch)).unwrap();
        assert_eq!(grey.top, vec![77; 16]);
        let p16 = dir.path().join("g16.png");
        image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(
            5,
            5,
            image::Rgb([65535u16, 0, 32896]),
        )
        .save(&p16)
        .unwrap();
        let l = load(&p16, &target(4, 3, Fit::Stretch)).unwrap();
        assert_eq!(&l.top[..3], &[255, 0, 128]);
    }

    #[test]
    fn alpha_is_composited_onto_background() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        RgbaImage::from_pixel(8, 8, Rgba([255, 0, 0, 128]))
            .save(&p)
            .unwrap();
        let mut t = target(4, 3, Fit::CenterCrop);
        t.background = [0, 0, 255];
        let l = load(&p, &t).unwrap();
        // 255*128/255 = 128 red; 255*127/255 = 127 blue.
        assert_eq!(&l.top[..3], &[128, 0, 127]);
        let transparent = dir.path().join("t.png");
        RgbaImage::from_pixel(8, 8, Rgba([9, 9, 9, 0]))
            .save(&transparent)
            .unwrap();
        t.background = [10, 20, 30];
        assert_eq!(&load(&transparent, &t).unwrap().top[..3], &[10, 20, 30]);
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 4x2 JPEG with EXIF orientation 6 (rotate 90 CW) must come out 2x4.
        let img = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            }
        });
        let mut jpeg = Vec::new();
        {
            let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
            enc.set_exif_metadata(exif_orientation(6)).unwrap();
            enc.encode_image(&img).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.jpg");
        std::fs::write(&p, jpeg).unwrap();
        let d = decode(&p, DEFAULT_MAX_PIXELS).unwrap().into_rgb8();
        assert_eq!(d.dimensions(), (16, 32));
        // Rotated clockwise: the white left half is now on top.
        assert!(d.get_pixel(8, 4)[0] > 200 && d.get_pixel(8, 28)[0] < 50);
    }

    /// Minimal little-endian TIFF/EXIF block with a single Orientation tag.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut e = b"II*\0".to_vec();
        e.extend_from_slice(&8u32.to_le_bytes()); // IFD0 offset
        e.extend_from_slice(&1u16.to_le_bytes()); // one entry
        e.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        e.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        e.extend_from_slice(&1u32.to_le_bytes()); // count
        e.extend_from_slice(&value.to_le_bytes());
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        e
    }

    /// A 16x16 grey gradient, encoded as a JPEG.
    fn grey_jpeg() -> Vec<u8> {
        let grey = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 16 + y) as u8]));
        let mut bytes = Vec::new();
        grey.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    /// A JPEG too large to read whole whose frame header declares more pixels than the limit
    /// is refused from that header, before the decoder reads the file (here 300 MB, sparse).
    #[test]
    fn a_large_jpeg_bomb_is_refused_from_its_frame_header() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = grey_jpeg();
        assert_eq!(jpeg_dimensions(&bytes), Some((16, 16)));
        // The frame header patched to 60000x50000 (height, then width, after the precision).
        let sof = (2..bytes.len() - 1)
            .find(|&i| bytes[i] == 0xFF && bytes[i + 1] == 0xC0)
            .unwrap();
        bytes[sof + 5..sof + 7].copy_from_slice(&50000u16.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&60000u16.to_be_bytes());
        assert_eq!(jpeg_dimensions(&bytes), Some((60000, 50000)));
        let p = dir.path().join("bomb.jpg");
        std::fs::write(&p, &bytes).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        file.set_len(READ_WHOLE_MAX + (44 << 20)).unwrap();
        let err = decode(&p, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(err.starts_with("too many pixels: 60000x50000"), "{err}");
    }

    /// A grey JPEG whose frame header is patched to declare two components (a second spec
    /// appended, the segment's length adjusted): refused, where the decoder gave noise.
    #[test]
    fn a_jpeg_with_two_components_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = grey_jpeg();
        let good = dir.path().join("grey.jpg");
        std::fs::write(&good, &bytes).unwrap();
        decode(&good, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(jpeg_components(&bytes), Some(1));
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline frame header");
        let length = u16::from_be_bytes([bytes[sof + 2], bytes[sof + 3]]);
        bytes[sof + 2..sof + 4].copy_from_slice(&(length + 3).to_be_bytes());
        bytes[sof + 9] = 2;
        let end = sof + 2 + usize::from(length);
        bytes.splice(end..end, [2, 0x11, 0]);
        assert_eq!(jpeg_components(&bytes), Some(2));
        let two = dir.path().join("two.jpg");
        std::fs::write(&two, &bytes).unwrap();
        let err = decode(&two, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(err.contains("JPEG with 2 colour components"), "{err}");
    }

    #[test]
    fn bad_files_give_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("e.png");
        std::fs::write(&empty, b"").unwrap();
        assert!(decode(&empty, DEFAULT_MAX_PIXELS)
            .unwrap_err()
            .contains("empty file"));
        let junk = dir.path().join("j.jpg");
        std::fs::write(&junk, b"this is not a jpeg at all").unwrap();
        assert!(decode(&junk, DEFAULT_MAX_PIXELS).is_err());
        let mut png = Vec::new();
        photo(64, 64, 2)
            .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let trunc = dir.path().join("t.png");
        std::fs::write(&trunc, &png[..png.len() / 2]).unwrap();
        assert!(decode(&trunc, DEFAULT_MAX_PIXELS).is_err());
    }

    #[test]
    fn a_cut_short_jpeg_is_refused_and_data_after_its_end_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let mut jpeg = Vec::new();
        photo(64, 64, 5)
            .write_to(&mut std::io::Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let whole = dir.path().join("whole.jpg");
        std::fs::write(&whole, &jpeg).unwrap();
        decode(&whole, DEFAULT_MAX_PIXELS).unwrap();
        for keep in [jpeg.len() - 2, jpeg.len() / 2, 700] {
            let cut = dir.path().join(format!("cut{keep}.jpg"));
            std::fs::write(&cut, &jpeg[..keep]).unwrap();
            assert_eq!(
                decode(&cut, DEFAULT_MAX_PIXELS).unwrap_err(),
                TRUNCATED_JPEG
            );
        }
        let mut motion = jpeg.clone();
        motion.extend_from_slice(b"\0\0\0\x18ftypmp42 and a video after the photo");
        let motion_path = dir.path().join("motion.jpg");
        std::fs::write(&motion_path, &motion).unwrap();
        decode(&motion_path, DEFAULT_MAX_PIXELS).unwrap();
    }

    #[test]
    fn decompression_bombs_are_refused_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bomb.png");
        let png = crate::test_files::bomb_png(100_000, 100_000, 2, 8);
        assert!(png.len() < 100, "{} bytes", png.len());
        std::fs::write(&p, &png).unwrap();
        let e = decode(&p, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            e.starts_with(
                "too many pixels: 100000x100000 is 10000000000 pixels, over the limit of 178956970"
            ),
            "{e}"
        );
        // Under the pixel limit but over the decoder's memory limit: 144 MP of 16-bit RGBA.
        std::fs::write(&p, crate::test_files::bomb_png(12_000, 12_000, 6, 16)).unwrap();
        let e = decode(&p, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            e.starts_with(
                "too large to decode: 12000x12000 needs 1647 MiB (decoded, and converted to 8 \
                 bits), over the limit of 682 MiB"
            ),
            "{e}"
        );
        // 88 MP of 16-bit RGBA: 674 MiB decoded, under the limit, but its 8-bit copy is
        // counted too (the two were held at once).
        std::fs::write(&p, crate::test_files::bomb_png(9_400, 9_400, 6, 16)).unwrap();
        let e = decode(&p, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            e.starts_with("too large to decode: 9400x9400 needs 1011 MiB (decoded, and converted"),
            "{e}"
        );
        // The same pixels in 8 bits decode.
        let e = check_size((9_400, 9_400), 9_400 * 9_400 * 4, false, DEFAULT_MAX_PIXELS);
        assert_eq!(e, Ok(9_400 * 9_400 * 4));
        // The limit is the caller's: an ordinary 40x30 image over a limit of 1000 pixels.
        photo(40, 30, 1).save(&p).unwrap();
        assert!(decode(&p, 1199)
            .unwrap_err()
            .starts_with("too many pixels: 40x30"));
        assert!(decode(&p, 1200).is_ok());
        assert_eq!(DEFAULT_MAX_PIXELS, 178_956_970);
        // A colour profile that inflates past what any real one needs: a 1x1 PNG of ~300 KB
        // whose profile is 300 MB.
        let mut profile = b"icc\0\0".to_vec();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..300 {
            std::io::Write::write_all(&mut z, &zeros).unwrap();
        }
        profile.extend(z.finish().unwrap());
        let chunk = |kind: &[u8; 4], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&crc32fast::hash(&c[4..]).to_be_bytes());
            c
        };
        let mut pixels = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut pixels, &[0, 9, 9, 9]).unwrap();
        let ihdr = [
            &1u32.to_be_bytes()[..],
            &1u32.to_be_bytes(),
            &[8, 2, 0, 0, 0],
        ]
        .concat();
        let bomb = [
            &b"\x89PNG\r\n\x1a\n"[..],
            &chunk(b"IHDR", &ihdr),
            &chunk(b"iCCP", &profile),
            &chunk(b"IDAT", &pixels.finish().unwrap()),
            &chunk(b"IEND", &[]),
        ]
        .concat();
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let icc = dir.path().join("icc.png");
        std::fs::write(&icc, &bomb).unwrap();
        // Its decoder may allocate 64 MiB for itself, so the profile is dropped there (png's
        // bounded inflate) and the pixels decode; with the pixel limit's 682 MiB it inflated
        // the whole profile, on every thread.
        let limit = alloc_limit(DEFAULT_MAX_PIXELS);
        let (head, len) = (&bomb[..HEAD_BYTES], bomb.len() as u64);
        assert_eq!(decoder_alloc(head, len, true, limit), 64 << 20);
        assert_eq!(decoder_alloc(head, len, false, limit), limit);
        let image = decode(&icc, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(image.to_rgb8().into_raw(), [9, 9, 9]);
        // A --max-pixels far past the machine lets the header through, but not the memory:
        // 400,000 x 400,000 RGB (480 GB) is skipped with why, not an abort at the allocation.
        if crate::memory::available_memory_bytes().is_some() {
            std::fs::write(&icc, crate::test_files::bomb_png(400_000, 400_000, 2, 8)).unwrap();
            let e = decode(&icc, 1 << 40).unwrap_err();
            assert!(
                e.starts_with(TOO_LARGE) && e.contains("of memory available"),
                "{e}"
            );
        }
        // A wide image's decoder keeps room for a few of its rows.
        let wide = crate::test_files::bomb_png(5_000_000, 1, 2, 8);
        assert_eq!(
            decoder_alloc(&wide[..HEAD_BYTES], wide.len() as u64, true, u64::MAX),
            5_000_000 * 8 * 4
        );
        // A decoded image holds its bytes and its 8-bit copy's from the process's budget until
        // its permit is dropped.
        let (image, permit) = decode_held(&p, 1200).unwrap();
        // (The decoded RGB buffer, its 8-bit RGB copy and the file's bytes, read whole.)
        let file = std::fs::metadata(&p).unwrap().len();
        assert_eq!(permit.bytes(), 40 * 30 * 3 + 40 * 30 * 4 + file);
        assert!(budget(1200).in_use() >= permit.bytes());
        drop((image, permit));
    }

    #[test]
    fn special_files_are_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.png");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // On a thread, so that a regression (open blocks for a writer) fails instead of hanging.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(decode(&fifo, DEFAULT_MAX_PIXELS)).unwrap());
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("decoding a FIFO hangs")
            .unwrap_err();
        assert_eq!(e, "not a regular file (a FIFO)");
        let dev = decode(Path::new("/dev/zero"), DEFAULT_MAX_PIXELS).unwrap_err();
        assert_eq!(dev, "not a regular file (a character device)");
    }

    #[test]
    fn grey_alpha_tiff_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("la.tiff");
        crate::tiff_fallback::tests::write_grey_alpha_tiff(&p, 6, 4, |i| {
            [100, if i % 2 == 0 { 255 } else { 0 }]
        });
        let mut t = target(4, 3, Fit::Stretch);
        t.background = [0, 0, 200];
        let l = load(&p, &t).unwrap();
        assert_eq!(l.top.len(), 4 * 4 * 3);
        // Half the pixels opaque grey 100, half transparent over blue 200: a mix of both.
        assert!(
            l.top
                .chunks(3)
                .all(|px| px[0] > 20 && px[0] < 100 && px[2] > 20),
            "{:?}",
            l.top
        );
        // Over the pixel limit, it says so (not that the format is unsupported).
        let e = decode(&p, 10).unwrap_err();
        assert!(e.starts_with(TOO_MANY_PIXELS), "{e}");
    }

    #[test]
    fn greyscale_padding_and_transparent_pixels_share_the_backgrounds_luma() {
        // A fully transparent 16x8 image padded into 8x8 greyscale on ff8000: one flat level.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clear.png");
        RgbaImage::from_pixel(16, 8, Rgba([0, 0, 0, 0]))
            .save(&p)
            .unwrap();
        let mut t = target(8, 1, Fit::Pad);
        t.background = [0xff, 0x80, 0x00];
        let l = load(&p, &t).unwrap();
        assert!(l.top.iter().all(|&v| v == l.top[0]), "{:?}", l.top);
        assert_eq!(l.top[0], 146);
    }

    #[test]
    fn min_size_skips_and_upscale_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.png");
        photo(10, 12, 3).save(&p).unwrap();
        let mut t = target(16, 3, Fit::CenterCrop);
        assert!(load(&p, &t).unwrap().upscaled);
        t.min_size = Some(11);
        assert!(load(&p, &t).unwrap_err().contains("too small: 10x12"));
        t.resolution = 8;
        t.min_size = None;
        assert!(!load(&p, &t).unwrap().upscaled);
    }

    #[test]
    fn pad_centres_the_image_on_background() {
        // 8x4 white image padded into 8x8 on blue: rows 0-1 and 6-7 are blue.
        let px = vec![255u8; 8 * 4 * 3];
        let t = Target {
            resolution: 8,
            channels: 3,
            fit: Fit::Pad,
            background: [0, 0, 255],
            min_size: None,
            max_pixels: DEFAULT_MAX_PIXELS,
        };
        let l = fit(&px, 8, 4, &t);
        let at = |x: usize, y: usize| &l.top[(y * 8 + x) * 3..(y * 8 + x) * 3 + 3];
        assert_eq!(at(3, 0), &[0, 0, 255]);
        assert_eq!(at(3, 7), &[0, 0, 255]);
        assert_eq!(at(3, 3), &[255, 255, 255]);
        assert!(!l.upscaled);
    }

    #[test]
    fn a_strip_thinner_than_a_pixel_after_padding_keeps_its_weight() {
        // 1000x2 white on black at 16: 0.032 of a pixel high, one row at 0.032 of full white
        // (not a full-strength line); grey on blue blends towards the blue.
        let mut t = target(16, 3, Fit::Pad);
        let l = fit(&vec![255u8; 1000 * 2 * 3], 1000, 2, &t);
        let row = |y: usize| &l.top[y * 16 * 3..(y + 1) * 16 * 3];
        assert!(row(7).iter().all(|&v| v == 8), "{:?}", row(7));
        assert!((0..16)
            .filter(|&y| y != 7)
            .all(|y| row(y).iter().all(|&v| v == 0)));
        t.background = [0, 0, 255];
        let l = fit(&vec![128u8; 3 * 400 * 3], 3, 400, &t);
        assert_eq!(
            &l.top[(5 * 16 + 7) * 3..(5 * 16 + 7) * 3 + 3],
            &[15, 15, 240]
        );
        // Greyscale blends towards the background's luma (blue: 18).
        let mut grey = target(16, 1, Fit::Pad);
        grey.background = [0, 0, 255];
        let l = fit(&vec![218u8; 1000 * 2], 1000, 2, &grey);
        assert!(
            l.top[7 * 16..8 * 16].iter().all(|&v| v == 24),
            "{:?}",
            l.top
        );
        assert!(l.top[..7 * 16].iter().all(|&v| v == 18));
        // A side of a pixel or more is as before.
        let l = fit(&[255u8; 16 * 3], 16, 1, &target(16, 3, Fit::Pad));
        assert!(l.top[7 * 16 * 3..8 * 16 * 3].iter().all(|&v| v == 255));
    }

    #[test]
    fn center_crop_keeps_the_middle() {
        // 12x4: left 4 columns red, middle 4 green, right 4 blue -> crop is green.
        let mut px = Vec::new();
        for _y in 0..4 {
            for x in 0..12 {
                px.extend_from_slice(match x / 4 {
                    0 => &[255, 0, 0],
                    1 => &[0, 255, 0],
                    _ => &[0, 0, 255],
                });
            }
        }
        let l = fit(&px, 12, 4, &target(4, 3, Fit::CenterCrop));
        assert!(l.top.chunks(3).all(|p| p == [0, 255, 0]), "{:?}", l.top);
    }

    #[test]
    fn fit_parses_and_displays() {
        for f in [Fit::CenterCrop, Fit::Pad, Fit::Stretch] {
            assert_eq!(f.to_string().parse::<Fit>().unwrap(), f);
        }
        assert!("squash".parse::<Fit>().is_err());
    }
}
