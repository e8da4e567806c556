//! A synthetic dataset with K known, clearly distinct modes: the benchmark for mode collapse.
//!
//! Each mode is a (shape, colour, position) triple: one of 6 filled or outlined shapes, one of
//! 8 colours (the corners of the RGB cube, maximally far apart) on a mid-grey background, in one
//! of the 4 image quadrants, so at most `6 * 8 * 4 = 192` modes ([`MAX_MODES`]). For K modes the
//! numbers of positions, colours and shapes are grown in turn (position, colour, shape, ...)
//! until their product reaches K, and the first K combinations of
//! `id = (shape * colours + colour) * positions + position` are used; K = 64 gives
//! 4 shapes x 4 colours x 4 positions.
//!
//! Within a mode, images vary a little: the shape is moved by up to `resolution / 32` pixels
//! (so +-1 px at 32x32, +-2 px at 64x64, sub-pixel steps), scaled by +-10 %, its colour darkened
//! by up to 10 %, and every pixel gets Gaussian noise (sigma 2 % of full range) before 8-bit
//! quantisation. Shapes are antialiased with 4x4 supersampling.
//!
//! Use 32x32 or more: there [`crate::modes::ModeClassifier`] labelled every one of 1,920 fresh
//! samples of K = 192 (and of K = 64 at 64x64 and 128x128) correctly. At 16x16 a shape is ~5 px
//! wide and square/disc/ring start to blur together (about 90 % correct for K = 32..192); at the
//! minimum resolution 8 shapes cannot be told apart and modes differ only by colour and position.
//!
//! [`synth`] writes `00000.png`, `00001.png`, ..., `labels.json` (file -> mode id) and
//! `modes.json` (the [`ModeSpec`]: K, resolution, seed, variation parameters and the mode table),
//! from which [`crate::modes::ModeClassifier`] re-renders each mode's prototype.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{MetricsError, Result};

/// Largest supported K (6 shapes x 8 colours x 4 positions).
pub const MAX_MODES: usize = 192;
/// Largest supported resolution: the largest a dataset holds.
pub const MAX_RESOLUTION: u32 = pgan_spec::resolution::MAX_RESOLUTION;
/// Smallest supported resolution.
pub const MIN_RESOLUTION: u32 = 8;
/// Smallest resolution at which the shapes draw apart: below it a shape is 2-3 px across, so
/// only colour and position tell modes apart, and the mode classifier is not trusted.
pub const MIN_SHAPES_RESOLUTION: u32 = 16;
/// Background colour (mid grey).
pub const BACKGROUND: [u8; 3] = [128, 128, 128];
/// The colours, in the order they are taken: the 8 corners of the RGB cube.
pub const COLOURS: [(&str, [u8; 3]); 8] = [
    ("red", [255, 0, 0]),
    ("green", [0, 255, 0]),
    ("blue", [0, 0, 255]),
    ("yellow", [255, 255, 0]),
    ("cyan", [0, 255, 255]),
    ("magenta", [255, 0, 255]),
    ("white", [255, 255, 255]),
    ("black", [0, 0, 0]),
];
/// Quadrant centres as fractions of the image size, `(x, y)`: top-left, top-right,
/// bottom-left, bottom-right.
pub const QUADRANT_CENTRES: [[f32; 2]; 4] =
    [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]];

/// A mode's shape; coordinates are in units of the shape's half-size, `v` pointing down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Filled square, half-side 0.8.
    Square,
    /// Filled disc, radius 0.7.
    Disc,
    /// Filled upward triangle.
    Triangle,
    /// Upright plus sign, arms 0.5 wide.
    Cross,
    /// Annulus, radii 0.6 to 0.95.
    Ring,
    /// Diagonal cross (an X) inside the square of half-side 0.8.
    Saltire,
}

impl Shape {
    /// All shapes, in the order they are taken.
    pub const ALL: [Shape; 6] = [
        Shape::Square,
        Shape::Disc,
        Shape::Triangle,
        Shape::Cross,
        Shape::Ring,
        Shape::Saltire,
    ];

    /// Whether the point `(u, v)` lies inside the shape (which fits in `[-1, 1]^2`).
    pub fn contains(self, u: f32, v: f32) -> bool {
        let (au, av) = (u.abs(), v.abs());
        match self {
            Shape::Square => au <= 0.8 && av <= 0.8,
            Shape::Disc => u * u + v * v <= 0.49,
            Shape::Triangle => v <= 0.8 && au <= 0.95 * (v + 0.95) / 1.75,
            Shape::Cross => (au <= 0.25 && av <= 0.95) || (av <= 0.25 && au <= 0.95),
            Shape::Ring => {
                let r2 = u * u + v * v;
                (0.36..=0.9025).contains(&r2)
            }
            Shape::Saltire => {
                au <= 0.8 && av <= 0.8 && ((u - v).abs() <= 0.35 || (u + v).abs() <= 0.35)
            }
        }
    }
}

/// One mode of the dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeParams {
    /// Mode id (index in the table).
    pub id: usize,
    /// Shape.
    pub shape: Shape,
    /// Colour name.
    pub colour_name: String,
    /// Colour, RGB.
    pub colour: [u8; 3],
    /// Quadrant: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
    pub quadrant: usize,
    /// Shape centre `(x, y)` as fractions of the image size.
    pub centre: [f32; 2],
}

/// Everything needed to re-render the dataset's modes (`modes.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeSpec {
    /// Number of modes K.
    pub modes: usize,
    /// Image side in pixels.
    pub resolution: u32,
    /// Seed the images were drawn with.
    pub seed: u64,
    /// Background colour, RGB.
    pub background: [u8; 3],
    /// Nominal shape half-size as a fraction of the resolution.
    pub half_size: f32,
    /// Largest centre displacement per axis, pixels.
    pub jitter_px: f32,
    /// Largest relative size change.
    pub size_jitter: f32,
    /// Largest relative darkening of the shape colour.
    pub brightness_jitter: f32,
    /// Per-pixel Gaussian noise sigma as a fraction of full range.
    pub pixel_noise: f32,
    /// The modes.
    pub table: Vec<ModeParams>,
}

/// Random within-mode variation of one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Variation {
    /// Horizontal displacement, pixels.
    pub dx: f32,
    /// Vertical displacement, pixels.
    pub dy: f32,
    /// Size factor.
    pub scale: f32,
    /// Colour factor (1 = nominal).
    pub brightness: f32,
}

impl Variation {
    /// No variation: the mode's prototype.
    pub const NONE: Variation = Variation {
        dx: 0.0,
        dy: 0.0,
        scale: 1.0,
        brightness: 1.0,
    };
}

/// Number of (positions, colours, shapes) used for `k` modes (see the module docs).
pub fn factor_counts(k: usize) -> (usize, usize, usize) {
    let limits = [QUADRANT_CENTRES.len(), COLOURS.len(), Shape::ALL.len()];
    let mut counts = [1usize; 3];
    let mut turn = 0;
    while counts.iter().product::<usize>() < k {
        if counts[turn] < limits[turn] {
            counts[turn] += 1;
        }
        turn = (turn + 1) % 3;
    }
    (counts[0], counts[1], counts[2])
}

impl ModeSpec {
    /// The spec for `modes` modes at `resolution` (validated: `1..=192` modes, resolution >= 8).
    pub fn new(modes: usize, resolution: u32, seed: u64) -> Result<Self> {
        if modes == 0 || modes > MAX_MODES {
            return Err(MetricsError::InvalidArgument(format!(
                "--modes {modes}: the design supports 1 to {MAX_MODES} modes (6 shapes x 8 colours x 4 positions)"
            )));
        }
        if resolution < MIN_RESOLUTION {
            return Err(MetricsError::InvalidArgument(format!(
                "--resolution {resolution} is below the minimum {MIN_RESOLUTION}"
            )));
        }
        if resolution > MAX_RESOLUTION {
            return Err(MetricsError::InvalidArgument(format!(
                "--resolution {resolution} is above the maximum {MAX_RESOLUTION} (the largest \
                 a .pgan dataset holds)"
            )));
        }
        // What `modes.json` is read back with (and what `pgan prepare` and training take).
        if !pgan_spec::resolution::is_supported(resolution) {
            return Err(MetricsError::InvalidArgument(format!(
                "--resolution {resolution} is not a power of two (8, 16, 32, ... \
                 {MAX_RESOLUTION}): the datasets and networks are pyramids of halvings"
            )));
        }
        let (np, nc, _) = factor_counts(modes);
        let table = (0..modes)
            .map(|id| {
                let (shape, colour, quadrant) = (id / (nc * np), (id / np) % nc, id % np);
                ModeParams {
                    id,
                    shape: Shape::ALL[shape],
                    colour_name: COLOURS[colour].0.to_string(),
                    colour: COLOURS[colour].1,
                    quadrant,
                    centre: QUADRANT_CENTRES[quadrant],
                }
            })
            .collect();
        Ok(ModeSpec {
            modes,
            resolution,
            seed,
            background: BACKGROUND,
            half_size: 0.15,
            jitter_px: resolution as f32 / 32.0,
            size_jitter: 0.1,
            brightness_jitter: 0.1,
            pixel_noise: 0.02,
            table,
        })
    }

    /// Reads a `modes.json`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        // A spec is a few KB: a FIFO, a device or a huge file is refused before it is read.
        let bytes = pgan_data::read_regular_file_at_most(path, MAX_SPEC_BYTES)
            .map_err(|e| MetricsError::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            MetricsError::InvalidArgument(format!(
                "{}: not UTF-8 text: not a {MODES_FILE} written by `pgan synth`",
                path.display()
            ))
        })?;
        let spec: ModeSpec = serde_json::from_str(&text).map_err(|source| {
            MetricsError::InvalidArgument(format!(
                "{}: {source}: not a {MODES_FILE} written by `pgan synth` (pass the \
                 {MODES_FILE} of its folder)",
                path.display()
            ))
        })?;
        spec.check().map_err(|problem| {
            MetricsError::InvalidArgument(format!(
                "{}: {problem} (not a modes.json written by `pgan synth`?)",
                path.display()
            ))
        })?;
        Ok(spec)
    }

    /// What is wrong with a spec read from a file, if anything: every figure the classifier
    /// renders from must be one `pgan synth` could have written.
    fn check(&self) -> std::result::Result<(), String> {
        if self.modes == 0 || self.table.len() != self.modes {
            return Err(format!(
                "its table has {} entries for {} modes (at least 1, one entry per mode)",
                self.table.len(),
                self.modes
            ));
        }
        if !pgan_spec::resolution::is_supported(self.resolution)
            || !(MIN_RESOLUTION..=MAX_RESOLUTION).contains(&self.resolution)
        {
            return Err(format!(
                "resolution {} is not a power of two in {MIN_RESOLUTION}..={MAX_RESOLUTION}",
                self.resolution
            ));
        }
        if !(self.half_size.is_finite() && self.half_size > 0.0 && self.half_size <= 0.5) {
            return Err(format!(
                "half_size {} is not a fraction of the image in (0, 0.5]",
                self.half_size
            ));
        }
        // Bounded too: the classifier's search for a shape scans ±jitter_px.
        for (name, v, max) in [
            ("jitter_px", self.jitter_px, self.resolution as f32),
            ("size_jitter", self.size_jitter, 1.0),
            ("brightness_jitter", self.brightness_jitter, 1.0),
            ("pixel_noise", self.pixel_noise, 1.0),
        ] {
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                return Err(format!("{name} {v} is not a number in [0, {max}]"));
            }
        }
        for (index, mode) in self.table.iter().enumerate() {
            if mode.id != index {
                return Err(format!("table entry {index} has id {}", mode.id));
            }
            if !mode.centre.iter().all(|c| (0.0..=1.0).contains(c)) {
                return Err(format!(
                    "mode {index}'s centre {:?} is outside the image ([0, 1] per axis)",
                    mode.centre
                ));
            }
            // The classifier finds a shape's quadrant and compares it with this one: a mode
            // drawn elsewhere would always read as missed.
            if mode.quadrant >= QUADRANT_CENTRES.len() {
                return Err(format!(
                    "mode {index}'s quadrant {} is not 0-3 (0 top-left, 1 top-right, 2 \
                     bottom-left, 3 bottom-right)",
                    mode.quadrant
                ));
            }
            let [x, y] = mode.centre;
            if (x >= 0.5) != (mode.quadrant % 2 == 1) || (y >= 0.5) != (mode.quadrant >= 2) {
                return Err(format!(
                    "mode {index}'s centre {:?} is not in its quadrant {} (0 top-left, 1 \
                     top-right, 2 bottom-left, 3 bottom-right)",
                    mode.centre, mode.quadrant
                ));
            }
        }
        // Two entries the classifier cannot tell apart would make one mode read as missed.
        let mut seen = std::collections::HashMap::new();
        for mode in &self.table {
            let looks = (mode.shape, mode.colour, mode.quadrant);
            if let Some(first) = seen.insert(looks, mode.id) {
                return Err(format!(
                    "modes {first} and {} are the same shape, colour and quadrant, which no \
                     classifier tells apart",
                    mode.id
                ));
            }
        }
        Ok(())
    }

    /// Draws a within-mode variation.
    pub fn sample_variation<R: Rng + ?Sized>(&self, rng: &mut R) -> Variation {
        let j = self.jitter_px;
        Variation {
            dx: rng.random_range(-j..=j),
            dy: rng.random_range(-j..=j),
            scale: rng.random_range(1.0 - self.size_jitter..=1.0 + self.size_jitter),
            brightness: rng.random_range(1.0 - self.brightness_jitter..=1.0),
        }
    }

    /// Antialiased coverage of `shape` centred at pixel coordinates `(cx, cy)` with half-size
    /// `r` pixels, as `(pixel index, alpha)` for pixels with non-zero coverage (4x4 samples).
    pub fn shape_alpha(&self, shape: Shape, cx: f32, cy: f32, r: f32) -> Vec<(usize, f32)> {
        let res = self.resolution as usize;
        const SS: usize = 4;
        let lo = |c: f32| ((c - r).floor().max(0.0)) as usize;
        let hi = |c: f32| ((c + r).ceil().max(0.0) as usize).min(res);
        let mut out = Vec::new();
        for py in lo(cy)..hi(cy) {
            for px in lo(cx)..hi(cx) {
                let mut hits = 0;
                for sy in 0..SS {
                    let v = (py as f32 + (sy as f32 + 0.5) / SS as f32 - cy) / r;
                    for sx in 0..SS {
                        let u = (px as f32 + (sx as f32 + 0.5) / SS as f32 - cx) / r;
                        hits += shape.contains(u, v) as usize;
                    }
                }
                if hits > 0 {
                    out.push((py * res + px, hits as f32 / (SS * SS) as f32));
                }
            }
        }
        out
    }

    /// Pixel geometry of `mode` under `var`: centre `(cx, cy)` and half-size, in pixels.
    pub fn geometry(&self, mode: usize, var: &Variation) -> (f32, f32, f32) {
        let m = &self.table[mode];
        let res = self.resolution as f32;
        (
            m.centre[0] * res + var.dx,
            m.centre[1] * res + var.dy,
            self.half_size * res * var.scale,
        )
    }

    /// Renders `mode` under `var` without noise: CHW RGB, values in [0, 1].
    pub fn render(&self, mode: usize, var: &Variation) -> Vec<f32> {
        let res = self.resolution as usize;
        let m = &self.table[mode];
        let (cx, cy, r) = self.geometry(mode, var);
        let mut img = vec![0.0f32; 3 * res * res];
        for ch in 0..3 {
            img[ch * res * res..(ch + 1) * res * res].fill(self.background[ch] as f32 / 255.0);
        }
        for (p, a) in self.shape_alpha(m.shape, cx, cy, r) {
            for ch in 0..3 {
                let bg = self.background[ch] as f32 / 255.0;
                let fg = m.colour[ch] as f32 / 255.0 * var.brightness;
                img[ch * res * res + p] = bg + a * (fg - bg);
            }
        }
        img
    }
}

/// What [`synth`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthSummary {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Number of modes.
    pub modes: usize,
    /// Image side.
    pub resolution: u32,
    /// Images written.
    pub count: usize,
    /// Fewest images of any mode.
    pub min_per_mode: usize,
    /// Most images of any mode.
    pub max_per_mode: usize,
    /// (positions, colours, shapes) in use.
    pub factors: (usize, usize, usize),
    /// The spec file.
    pub spec_path: PathBuf,
    /// The labels file.
    pub labels_path: PathBuf,
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (positions, colours, shapes) = self.factors;
        let combinations = positions * colours * shapes;
        let which = if combinations == self.modes {
            "="
        } else {
            "of the"
        };
        writeln!(
            f,
            "wrote {} images of {}x{} to {} ({} modes {which} {shapes} shapes x {colours} \
             colours x {positions} positions, {}-{} images per mode)",
            self.count,
            self.resolution,
            self.resolution,
            self.out_dir.display(),
            self.modes,
            self.min_per_mode,
            self.max_per_mode
        )?;
        write!(
            f,
            "spec {}, labels {}",
            self.spec_path.display(),
            self.labels_path.display()
        )?;
        if self.resolution < MIN_SHAPES_RESOLUTION && shapes > 1 {
            write!(
                f,
                "\nnote: at {0}x{0} the {shapes} shapes draw alike, so only {1} of the modes \
                 look apart (colour x position); mode coverage (`pgan eval --modes`) is measured \
                 from {MIN_SHAPES_RESOLUTION}x{MIN_SHAPES_RESOLUTION}",
                self.resolution,
                (colours * positions).min(self.modes)
            )?;
        }
        Ok(())
    }
}

/// One entry of `labels.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// File name inside the dataset directory.
    pub file: String,
    /// Mode id.
    pub mode: usize,
}

/// Renders one dataset image: `mode` with a variation and pixel noise from `rng`, HWC RGB bytes.
pub fn render_sample<R: Rng + ?Sized>(spec: &ModeSpec, mode: usize, rng: &mut R) -> Vec<u8> {
    let var = spec.sample_variation(rng);
    let img = spec.render(mode, &var);
    let res = spec.resolution as usize;
    let noise = Normal::new(0.0f32, spec.pixel_noise).expect("finite sigma");
    let mut out = vec![0u8; 3 * res * res];
    for p in 0..res * res {
        for ch in 0..3 {
            let v = img[ch * res * res + p] + noise.sample(rng);
            out[p * 3 + ch] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The most images `synth` writes (a few hundred times the largest benchmarks').
pub const MAX_COUNT: usize = 10_000_000;
/// The labels file `synth` writes beside the images.
pub const LABELS_FILE: &str = "labels.json";
/// The mode spec file `synth` writes beside the images.
pub const MODES_FILE: &str = "modes.json";

/// The largest `modes.json` read: `pgan synth` writes a few KB (at most [`MAX_MODES`] modes of
/// a few numbers each).
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// The folder `synth` writes for `out_dir` (`.` and `..` refused): `out_dir` itself, or where
/// a symbolic link there points (the finished folder replaces the empty one it names,
/// which a rename cannot do to a link).
pub fn resolve_out_dir(out_dir: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(out_dir) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(out_dir).map_err(|e| {
            MetricsError::InvalidArgument(format!(
                "{} is a symbolic link whose target cannot be reached ({e})",
                out_dir.display()
            ))
        }),
        // The finished folder replaces the empty one: a shell standing in it would be left in
        // a deleted folder (and `.` cannot be renamed onto at all).
        Ok(_) if out_dir.file_name().is_none() => Err(MetricsError::InvalidArgument(format!(
            "{}: synth replaces its output folder whole, so it cannot be the folder you are in \
             (or above it): name a new folder, or this one from its parent",
            out_dir.display()
        ))),
        // The finished folder is renamed onto the empty one, which a mount point refuses
        // ("Device or resource busy") only after all the work: said now.
        #[cfg(unix)]
        Ok(meta) if is_mount_point(out_dir, &meta) => Err(MetricsError::InvalidArgument(format!(
            "{}: synth builds its dataset beside the output folder and renames it into place, \
                 which a mount point cannot take: name a new folder inside it (for example {})",
            out_dir.display(),
            out_dir.join("synth").display()
        ))),
        _ => {
            // Creating the folder would say only "File exists" of a file in its way.
            if let Some(file) = out_dir
                .ancestors()
                .skip(1)
                .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()))
            {
                return Err(MetricsError::InvalidArgument(format!(
                    "{}: {} is a file, not a folder",
                    out_dir.display(),
                    file.display()
                )));
            }
            Ok(out_dir.to_path_buf())
        }
    }
}

/// Whether the folder `dir` (with `meta`) is a mount point: on another filesystem than its
/// parent, or (a bind mount of the same filesystem) listed in `/proc/self/mountinfo`.
#[cfg(unix)]
fn is_mount_point(dir: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_dir() {
        return false;
    }
    if std::fs::metadata(dir.join("..")).is_ok_and(|up| up.dev() != meta.dev()) {
        return true;
    }
    let Ok(real) = std::fs::canonicalize(dir) else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // The fifth field is the mount point, with space, tab, newline and backslash as octal
    // escapes (`\040`).
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| Path::new(&unescape_mountinfo(point)) == real)
}

/// A `/proc/self/mountinfo` path with its `\NNN` octal escapes decoded.
#[cfg(unix)]
fn unescape_mountinfo(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Gives `building` (and on Unix the group of everything in it) what the empty folder it
/// replaces had, `folder`: its permission bits (a private 700, a group's setgid 2770) and its
/// group. The group goes only where the user may give it (a group they are in; else the folder
/// keeps theirs: this is not an error, as the files are still theirs).
fn take_over_folder(building: &Path, folder: &std::fs::Metadata) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let gid = folder.gid();
        let mut paths = vec![building.to_path_buf()];
        for entry in std::fs::read_dir(building)? {
            paths.push(entry?.path());
        }
        for path in &paths {
            let _ = std::os::unix::fs::lchown(path, None, Some(gid));
        }
    }
    // After the group: a change of group clears the setgid bit.
    std::fs::set_permissions(building, folder.permissions())
}

/// Writes a K-mode dataset of `count` PNGs (modes assigned round-robin, then shuffled, so every
/// mode has `floor(count/K)` or `ceil(count/K)` images) plus `labels.json` and `modes.json` into
/// `out_dir`, which must be absent or empty. Deterministic for a given seed.
pub fn synth(
    out_dir: &Path,
    modes: usize,
    resolution: u32,
    count: usize,
    seed: u64,
) -> Result<SynthSummary> {
    let spec = ModeSpec::new(modes, resolution, seed)?;
    if count == 0 {
        return Err(MetricsError::InvalidArgument(
            "--count 0: a dataset needs at least one image per mode".into(),
        ));
    }
    if count < modes {
        return Err(MetricsError::InvalidArgument(format!(
            "--count {count} is below the {modes} modes: every mode needs images, or coverage \
             cannot be measured against it"
        )));
    }
    if count > MAX_COUNT {
        return Err(MetricsError::InvalidArgument(format!(
            "--count {count} is above {MAX_COUNT} images"
        )));
    }
    let out_dir = &resolve_out_dir(out_dir)?;
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(MetricsError::InvalidArgument(format!(
            "{}: is a file, not a folder (synth writes a folder of images there: name a new one)",
            out_dir.display()
        )));
    }
    if out_dir.exists() {
        let mut entries = std::fs::read_dir(out_dir).map_err(|e| MetricsError::io(out_dir, e))?;
        if entries.next().is_some() {
            return Err(MetricsError::OutputNotEmpty(out_dir.to_path_buf()));
        }
    }
    // The empty folder the user made (private, or a group's with its setgid bit) is replaced by
    // the finished one: that one takes its permissions and group.
    let kept_folder = std::fs::metadata(out_dir).ok();
    // Built in a hidden folder beside `out_dir` and renamed when complete: an interrupted run
    // leaves no folder of some images without their labels that `prepare` would take for a
    // dataset (and the next run removes the hidden one).
    if let Some(parent) = out_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| MetricsError::io(parent, e))?;
    }
    pgan_data::remove_stale_temps(out_dir);
    let building = pgan_data::temp_path_for(out_dir, std::process::id());
    let _ = std::fs::remove_dir_all(&building);
    let result = std::fs::create_dir_all(&building)
        .map_err(|e| MetricsError::io(&building, e))
        .and_then(|()| write_synth(&building, &spec, count, seed))
        .and_then(|written| {
            if let Some(folder) = &kept_folder {
                take_over_folder(&building, folder).map_err(|e| MetricsError::io(out_dir, e))?;
            }
            std::fs::rename(&building, out_dir).map_err(|e| MetricsError::io(out_dir, e))?;
            Ok(written)
        });
    let assignment = match result {
        Ok(written) => written,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&building);
            // Named as the output it was for: the hidden folder is gone.
            return Err(e.moved(&building, out_dir));
        }
    };
    let labels_path = out_dir.join(LABELS_FILE);
    let spec_path = out_dir.join(MODES_FILE);
    let mut per_mode = vec![0usize; modes];
    for &m in &assignment {
        per_mode[m] += 1;
    }
    Ok(SynthSummary {
        out_dir: out_dir.to_path_buf(),
        modes,
        resolution,
        count,
        min_per_mode: per_mode.iter().copied().min().unwrap_or(0),
        max_per_mode: per_mode.iter().copied().max().unwrap_or(0),
        factors: factor_counts(modes),
        spec_path,
        labels_path,
    })
}

/// The images, `labels.json` and `modes.json` into `out_dir`; the mode of every image.
fn write_synth(out_dir: &Path, spec: &ModeSpec, count: usize, seed: u64) -> Result<Vec<usize>> {
    let (modes, resolution) = (spec.modes, spec.resolution);
    let mut assignment: Vec<usize> = (0..count).map(|i| i % modes).collect();
    assignment.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let digits = (count - 1).to_string().len().max(5);
    let names: Vec<String> = (0..count).map(|i| format!("{i:0digits$}.png")).collect();
    (0..count).into_par_iter().try_for_each(|i| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64 + 1);
        let bytes = render_sample(spec, assignment[i], &mut rng);
        let path = out_dir.join(&names[i]);
        image::save_buffer(
            &path,
            &bytes,
            resolution,
            resolution,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|source| MetricsError::Image { path, source })
    })?;
    let labels: Vec<Label> = names
        .into_iter()
        .zip(&assignment)
        .map(|(file, &mode)| Label { file, mode })
        .collect();
    write_json(&out_dir.join(LABELS_FILE), &labels)?;
    write_json(&out_dir.join(MODES_FILE), spec)?;
    Ok(assignment)
}

/// Reads a dataset's `labels.json`.
pub fn load_labels(path: impl AsRef<Path>) -> Result<Vec<Label>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| MetricsError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| MetricsError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<PathBuf> {
    let text = serde_json::to_string_pretty(value).map_err(|source| MetricsError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(|e| MetricsError::io(path, e))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_builds_in_a_hidden_folder_and_removes_one_a_killed_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("synth8");
        let dead = pgan_data::test_files::dead_pid();
        let killed = pgan_data::temp_path_for(&out, dead);
        std::fs::create_dir_all(&killed).unwrap();
        std::fs::write(killed.join("00000.png"), b"half").unwrap();
        let summary = synth(&out, 4, 8, 6, 0).unwrap();
        assert_eq!(summary.count, 6);
        assert!(!killed.exists(), "the killed run's folder is removed");
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 8, "{names:?}");
        assert_eq!(&names[6..], [LABELS_FILE, MODES_FILE]);
        // Nothing else beside the output: the hidden folder it was built in is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(matches!(
            synth(&dir.path().join("big"), 4, 8, MAX_COUNT + 1, 0),
            Err(MetricsError::InvalidArgument(_))
        ));
    }

    /// An empty folder the user made is replaced by the finished one with its permissions and
    /// group: a private folder stays private, a group's setgid folder stays the group's.
    #[cfg(unix)]
    #[test]
    fn an_empty_folder_it_fills_keeps_its_permissions_and_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        synth(&private, 2, 8, 2, 0).unwrap();
        assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o7777, 0o700);

        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        // Another group where this process may give one (root, as in CI); else its own.
        let own = std::fs::metadata(&shared).unwrap().gid();
        let group = if std::os::unix::fs::chown(&shared, None, Some(1)).is_ok() {
            1
        } else {
            own
        };
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2770)).unwrap();
        synth(&shared, 2, 8, 2, 0).unwrap();
        let meta = std::fs::metadata(&shared).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o2770);
        assert_eq!(meta.gid(), group);
        let labels = std::fs::metadata(shared.join(LABELS_FILE)).unwrap();
        assert_eq!(labels.gid(), group);
    }

    #[test]
    fn a_modes_json_with_impossible_figures_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modes.json");
        let good = ModeSpec::new(8, 16, 0).unwrap();
        std::fs::write(&path, serde_json::to_string(&good).unwrap()).unwrap();
        assert_eq!(ModeSpec::load(&path).unwrap(), good);
        // Longer than any spec (a sparse file): refused before it is read.
        let huge = dir.path().join("huge.json");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_SPEC_BYTES + 1)
            .unwrap();
        let err = ModeSpec::load(&huge).unwrap_err().to_string();
        assert!(
            err.contains("more than") && err.contains("huge.json"),
            "{err}"
        );
        type Edit = (fn(&mut ModeSpec), &'static str);
        let cases: [Edit; 9] = [
            (
                |s| s.table[2].centre = [50.0, -50.0],
                "mode 2's centre [50.0, -50.0] is outside",
            ),
            (
                |s| s.table[2].quadrant = 9,
                "mode 2's quadrant 9 is not 0-3",
            ),
            (
                |s| {
                    s.table[2].quadrant = 3;
                    s.table[2].centre = [0.25, 0.25]
                },
                "mode 2's centre [0.25, 0.25] is not in its quadrant 3",
            ),
            (|s| s.half_size = 0.0, "half_size 0 is not a fraction"),
            (|s| s.half_size = -1.0, "half_size -1 is not a fraction"),
            (|s| s.table[3].id = 1, "table entry 3 has id 1"),
            (
                |s| s.resolution = 3,
                "resolution 3 is not a power of two in 8..=",
            ),
            (
                |s| s.jitter_px = 1e30,
                "jitter_px 1000000000000000000000000000000 is not a number in [0, 16]",
            ),
            (
                |s| {
                    s.modes = 0;
                    s.table.clear()
                },
                "its table has 0 entries for 0 modes",
            ),
        ];
        for (edit, said) in cases {
            let mut spec = good.clone();
            edit(&mut spec);
            std::fs::write(&path, serde_json::to_string(&spec).unwrap()).unwrap();
            let err = ModeSpec::load(&path).unwrap_err().to_string();
            assert!(
                err.contains(&path.display().to_string()) && err.contains(said),
                "expected '{said}' in: {err}"
            );
        }
        // Two entries alike.
        let mut twins = good.clone();
        twins.table[1] = ModeParams {
            id: 1,
            ..twins.table[0].clone()
        };
        std::fs::write(&path, serde_json::to_string(&twins).unwrap()).unwrap();
        let err = ModeSpec::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("modes 0 and 1 are the same shape, colour and quadrant"),
            "{err}"
        );
        // Another JSON file (the labels beside it) is named as not a modes.json.
        std::fs::write(&path, r#"{"000.png": 3}"#).unwrap();
        let err = ModeSpec::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("not a modes.json written by `pgan synth`"),
            "{err}"
        );
    }

    #[test]
    fn factors_follow_the_design() {
        assert_eq!(factor_counts(64), (4, 4, 4));
        assert_eq!(factor_counts(192), (4, 8, 6));
        assert_eq!(factor_counts(1), (1, 1, 1));
        assert_eq!(factor_counts(10), (3, 2, 2));
        let spec = ModeSpec::new(64, 32, 0).unwrap();
        let mut seen = std::collections::HashSet::new();
        for m in &spec.table {
            assert!(
                seen.insert((m.shape, m.colour, m.quadrant)),
                "duplicate mode {m:?}"
            );
        }
        assert_eq!(seen.len(), 64);
        assert!(ModeSpec::new(193, 32, 0)
            .unwrap_err()
            .to_string()
            .contains("1 to 192"));
        assert!(ModeSpec::new(0, 32, 0).is_err());
        assert!(ModeSpec::new(4, 7, 0)
            .unwrap_err()
            .to_string()
            .contains("--resolution 7 is below the minimum 8"));
        assert!(ModeSpec::new(4, 100_000, 0)
            .unwrap_err()
            .to_string()
            .contains("above the maximum 1024"));
        // `modes.json` and the datasets take powers of two only.
        assert!(ModeSpec::new(4, 12, 0)
            .unwrap_err()
            .to_string()
            .contains("resolution 12 is not a power of two"));
    }

    #[test]
    fn shapes_fit_their_box_and_differ() {
        let spec = ModeSpec::new(1, 64, 0).unwrap();
        let masks: Vec<Vec<f32>> = Shape::ALL
            .iter()
            .map(|&s| {
                let mut m = vec![0.0; 64 * 64];
                for (p, a) in spec.shape_alpha(s, 32.0, 32.0, 20.0) {
                    m[p] = a;
                }
                m
            })
            .collect();
        for (i, a) in masks.iter().enumerate() {
            let area: f32 = a.iter().sum();
            assert!(area > 100.0, "{:?} too small: {area}", Shape::ALL[i]);
            for b in &masks[i + 1..] {
                let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum();
                assert!(
                    diff > 0.3 * area,
                    "{:?} too similar to another shape",
                    Shape::ALL[i]
                );
            }
        }
    }

    #[test]
    fn below_16x16_the_summary_says_the_shapes_draw_alike() {
        let dir = tempfile::tempdir().unwrap();
        let small = synth(&dir.path().join("s8"), 64, 8, 64, 3)
            .unwrap()
            .to_string();
        assert!(
            small.contains("note: at 8x8 the 4 shapes draw alike, so only 16 of the modes"),
            "{small}"
        );
        let large = synth(&dir.path().join("s16"), 64, 16, 64, 3)
            .unwrap()
            .to_string();
        assert!(!large.contains("note:"), "{large}");
        // One shape: nothing is drawn alike.
        let one = synth(&dir.path().join("one"), 4, 8, 4, 3)
            .unwrap()
            .to_string();
        assert!(!one.contains("note:"), "{one}");
    }

    #[test]
    fn synth_writes_images_labels_and_spec() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ds");
        let summary = synth(&out, 8, 16, 20, 3).unwrap();
        assert_eq!(
            (summary.count, summary.min_per_mode, summary.max_per_mode),
            (20, 2, 3)
        );
        assert!(
            summary.to_string().contains("wrote 20 images of 16x16 to ")
                && summary.to_string().contains(
                    "(8 modes = 2 shapes x 2 colours x 2 positions, 2-3 images per mode)"
                ),
            "{summary}"
        );
        // A mode count that is not a product of the factors: drawn from their combinations.
        let five = synth(&dir.path().join("five"), 5, 16, 10, 3).unwrap();
        assert!(
            five.to_string()
                .contains("(5 modes of the 2 shapes x 2 colours x 2 positions, 2-2 images"),
            "{five}"
        );
        // A mount point (here /proc, another filesystem than /) cannot be renamed onto: refused
        // before any work, naming a folder inside it instead.
        #[cfg(target_os = "linux")]
        {
            let err = resolve_out_dir(Path::new("/proc")).unwrap_err().to_string();
            assert!(
                err.contains("a mount point") && err.contains("/proc/synth"),
                "{err}"
            );
            assert_eq!(
                unescape_mountinfo("/mnt/my\\040disk\\134x"),
                std::ffi::OsString::from("/mnt/my disk\\x")
            );
        }
        let err = synth(&dir.path().join("few"), 8, 16, 7, 3).unwrap_err();
        assert!(
            err.to_string().contains("--count 7 is below the 8 modes"),
            "{err}"
        );
        let labels = load_labels(&summary.labels_path).unwrap();
        assert_eq!(labels.len(), 20);
        assert_eq!(labels[0].file, "00000.png");
        let img = image::open(out.join(&labels[3].file)).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (16, 16));
        assert_eq!(
            ModeSpec::load(&summary.spec_path).unwrap(),
            ModeSpec::new(8, 16, 3).unwrap()
        );
        // Deterministic: a second run gives the same bytes.
        let out2 = dir.path().join("ds2");
        synth(&out2, 8, 16, 20, 3).unwrap();
        assert_eq!(
            std::fs::read(out.join("00007.png")).unwrap(),
            std::fs::read(out2.join("00007.png")).unwrap()
        );
        // Refuses a non-empty directory, and a file.
        assert!(matches!(
            synth(&out, 8, 16, 20, 3),
            Err(MetricsError::OutputNotEmpty(_))
        ));
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let err = synth(&file, 8, 16, 20, 3).unwrap_err().to_string();
        assert!(err.contains("a-file: is a file, not a folder"), "{err}");
    }

    /// An error inside the hidden folder a dataset is built in names the output instead (the
    /// hidden folder is removed with the failure).
    #[test]
    fn a_failure_while_building_names_the_output() {
        let (building, out) = (Path::new("runs/.syn.tmp-7"), Path::new("runs/syn"));
        let e = MetricsError::io(
            building.join("00002.png"),
            std::io::ErrorKind::StorageFull.into(),
        );
        assert_eq!(
            e.moved(building, out).to_string(),
            "i/o error on runs/syn/00002.png: no storage space"
        );
        let e = MetricsError::io(building, std::io::ErrorKind::ReadOnlyFilesystem.into());
        assert!(e
            .moved(building, out)
            .to_string()
            .starts_with("i/o error on runs/syn: "));
    }

    /// An output below a file is named as such (creating it said only "File exists").
    #[test]
    fn an_output_below_a_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = synth(&file.join("sub"), 2, 8, 4, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(&format!("{} is a file, not a folder", file.display())),
            "{err}"
        );
    }
}
