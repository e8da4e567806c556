//! The JSON manifest stored inside every pyramid file: where the images came
//! from (in stored order) and how they were prepared.

use serde::{Deserialize, Serialize};

use crate::ingest::Fit;

/// The options that shaped the stored pixels, recorded for reproducibility.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestOptions {
    /// Top-level resolution.
    pub resolution: u32,
    /// 1 (luma) or 3 (RGB).
    pub channels: u8,
    /// How images were made square.
    pub fit: Fit,
    /// Alpha-compositing and padding colour.
    pub background: [u8; 3],
    /// Images with a shorter side below this were skipped.
    pub min_size: Option<u32>,
    /// Seed of the stored-order shuffle, if any.
    pub shuffle_seed: Option<u64>,
}

/// Provenance of a pyramid file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of the pgan-data crate that wrote the file.
    pub pgan_version: String,
    /// Creation time, seconds since the Unix epoch (UTC).
    pub created_unix: u64,
    /// The input folder as given on the command line.
    pub input_dir: String,
    /// Options used.
    pub options: ManifestOptions,
    /// Number of files skipped (undecodable or too small).
    pub skipped: usize,
    /// Number of stored images that had to be upscaled.
    pub upscaled: usize,
    /// Source files relative to `input_dir` (`/`-separated), in stored order. With
    /// `escaped_names` each is [`escape_name`]d: [`Manifest::file_name_bytes`] recovers the bytes.
    pub files: Vec<String>,
    /// True when `files` and `input_dir` are [`escape_name`]d (pgan writes them so since names
    /// that are not UTF-8 are kept); absent (false) in older files, whose names are verbatim.
    #[serde(default)]
    pub escaped_names: bool,
}

impl Manifest {
    /// The exact bytes of source file `k`'s name (relative to `input_dir`, `/`-separated).
    pub fn file_name_bytes(&self, k: usize) -> Option<Vec<u8>> {
        let name = self.files.get(k)?;
        Some(if self.escaped_names {
            unescape_name(name)
        } else {
            name.as_bytes().to_vec()
        })
    }
}

/// Escapes a file name for the manifest, losslessly (`docs/FORMAT.md`): UTF-8 text is kept
/// as is except that `\` becomes `\\`; each byte of a sequence that is not UTF-8 becomes
/// `\xNN` (two upper-case hex digits). The result reads like the name wherever it is text.
pub fn escape_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// `text` made safe to print on a terminal or in a line-based report: control characters
/// (newline, tab, ESC, BEL, DEL, the C1 range) become `\u{NN}`, so a file name can neither
/// break a line in two nor send escape sequences to the terminal. For display only: the
/// manifest keeps names as [`escape_name`] writes them.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:X}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Inverse of [`escape_name`]. Lenient: a backslash that starts neither `\\` nor `\xNN` is
/// kept as it is, so no input is an error.
pub fn unescape_name(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'x') {
                let hex = bytes
                    .get(i + 2..i + 4)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_escaping() {
        let names: [&[u8]; 6] = [
            b"plain/a.png",
            "caf\u{e9}/\u{1F600}.jpg".as_bytes(),
            b"latin1-caf\xe9.png",
            b"back\\slash\\x41.png",
            b"\xff\xfe\\\x00",
            b"",
        ];
        for name in names {
            let escaped = escape_name(name);
            assert_eq!(unescape_name(&escaped), name, "{escaped}");
        }
        assert_eq!(escape_name(b"latin1-caf\xe9.png"), "latin1-caf\\xE9.png");
        assert_eq!(escape_name(b"a\\b"), "a\\\\b");
        assert_eq!(escape_name("caf\u{e9}".as_bytes()), "caf\u{e9}");
        // Lenient: stray backslashes stay.
        assert_eq!(unescape_name("a\\b\\xZZ\\x+5\\"), b"a\\b\\xZZ\\x+5\\");
    }

    #[test]
    fn printable_names_break_no_line_and_send_no_escape() {
        assert_eq!(printable("a\nb.png"), "a\\u{A}b.png");
        assert_eq!(printable("x\u{1b}[2J\u{7}.png"), "x\\u{1B}[2J\\u{7}.png");
        assert_eq!(printable("tab\there\u{9b}"), "tab\\u{9}here\\u{9B}");
        assert_eq!(printable("café \\ 猫.png"), "café \\ 猫.png");
    }
}
