//! Sliced Wasserstein distance (SWD) between two image sets on Laplacian-pyramid patch
//! descriptors, following ProGAN (Karras et al. 2018, "Progressive Growing of GANs", sec. 5 and
//! appendix D) and its reference code `metrics/sliced_wasserstein.py` in
//! tkarras/progressive_growing_of_gans:
//!
//! * every image is decomposed into a Laplacian pyramid ([`laplacian_pyramid`]) from full
//!   resolution down to 16x16;
//! * 128 random 7x7 neighbourhoods per image and level (positions uniform over the places where
//!   the whole patch fits, like `get_descriptors_for_minibatch`) become `7*7*c`-dimensional
//!   descriptors, laid out channel, row, column;
//! * each level's descriptor set is normalised per channel by its own mean and standard
//!   deviation (`finalize_descriptors`, [`normalize_descriptors`]);
//! * the distance is 4 repeats x 128 random unit directions: project both sets, sort, mean
//!   absolute difference (`sliced_wasserstein`, [`distance_for_directions`]); reported x1e3 per
//!   level, plus the mean over levels.
//!
//! Randomness is derived from [`SwdConfig::seed`] only; each image's patch positions come from
//! its own stream (seed, set, image index), so results do not depend on thread count or on how a
//! set is split into batches for [`SwdAccumulator::add`].
//!
//! Memory: an accumulator keeps `descriptors_per_image * patch^2 * c * 4` bytes per image and
//! level (75 KiB for the defaults and RGB); 16,384 images at 128x128 (4 levels) need ~4.6 GiB per
//! set, as in the official code. Lower `descriptors_per_image` for smaller machines.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::pyramid::{laplacian_pyramid, num_levels, PyramidLevel};
use crate::{ImageSet, MetricsError, Result};

/// SWD parameters; [`Default`] gives the official values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwdConfig {
    /// Random neighbourhoods per image and level (official `nhoods_per_image = 128`).
    pub descriptors_per_image: usize,
    /// Side of a neighbourhood (official `nhood_size = 7`).
    pub patch_size: usize,
    /// Coarsest pyramid resolution (official: levels while `res >= 16`).
    pub min_resolution: usize,
    /// Independent batches of directions (official `dir_repeats = 4`).
    pub repeats: usize,
    /// Directions per repeat (official `dirs_per_repeat = 128`).
    pub directions: usize,
    /// Seed for patch positions, directions and subsampling.
    pub seed: u64,
}

impl Default for SwdConfig {
    fn default() -> Self {
        SwdConfig {
            descriptors_per_image: 128,
            patch_size: 7,
            min_resolution: 16,
            repeats: 4,
            directions: 128,
            seed: 0,
        }
    }
}

/// SWD result, x1e3 like the official metric names `SWDx1e3_<res>` and `SWDx1e3_avg`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwdReport {
    /// `(resolution, distance x 1e3)`, finest level first; the resolution is the level's height.
    pub levels: Vec<(usize, f64)>,
    /// Mean over levels.
    pub mean: f64,
}

/// Descriptors of one pyramid level: `len()` rows of `dim()` values, each row a patch laid out
/// channel, row, column (the official `(neighborhood, channel, height, width)` order).
#[derive(Clone, Debug, PartialEq)]
pub struct DescriptorSet {
    /// Height of the pyramid level the patches were taken from.
    pub resolution: usize,
    /// Channels.
    pub channels: usize,
    /// Patch side.
    pub patch: usize,
    /// Row-major descriptors.
    pub data: Vec<f32>,
}

impl DescriptorSet {
    /// Values per descriptor (`channels * patch * patch`).
    pub fn dim(&self) -> usize {
        self.channels * self.patch * self.patch
    }

    /// Number of descriptors.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim().max(1)
    }

    /// Whether there are no descriptors.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Keeps the descriptors at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> DescriptorSet {
        let dim = self.dim();
        let mut data = Vec::with_capacity(indices.len() * dim);
        for &i in indices {
            data.extend_from_slice(&self.data[i * dim..(i + 1) * dim]);
        }
        DescriptorSet { data, ..*self }
    }
}

impl DescriptorSet {
    fn empty_like(resolution: usize, channels: usize, patch: usize) -> Self {
        DescriptorSet {
            resolution,
            channels,
            patch,
            data: Vec::new(),
        }
    }
}

/// SplitMix64 finaliser: decorrelates derived seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn stream_rng(seed: u64, tag: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(tag)));
    rng.set_stream(stream);
    rng
}

const TAG_DIRECTIONS: u64 = 0xD1;
const TAG_SUBSAMPLE: u64 = 0x5B;

/// Copies the `patch x patch` neighbourhood with top-left corner `(y, x)` of every channel of
/// `level` onto the end of `out` (channel, row, column).
///
/// # Panics
/// If the patch does not fit.
pub fn extract_descriptor(
    level: &PyramidLevel,
    y: usize,
    x: usize,
    patch: usize,
    out: &mut Vec<f32>,
) {
    assert!(
        y + patch <= level.h && x + patch <= level.w,
        "patch at ({y}, {x}) does not fit {}x{}",
        level.h,
        level.w
    );
    for ch in 0..level.c {
        for r in 0..patch {
            let start = ch * level.h * level.w + (y + r) * level.w + x;
            out.extend_from_slice(&level.data[start..start + patch]);
        }
    }
}

fn check_config(cfg: &SwdConfig) -> Result<()> {
    if cfg.patch_size == 0
        || cfg.descriptors_per_image == 0
        || cfg.repeats == 0
        || cfg.directions == 0
    {
        return Err(MetricsError::InvalidArgument(format!(
            "swd needs positive patch_size, descriptors_per_image, repeats and directions, got {cfg:?}"
        )));
    }
    Ok(())
}

/// Validates and returns the heights of the pyramid levels, finest first.
fn check_images(images: &ImageSet, cfg: &SwdConfig) -> Result<Vec<usize>> {
    images.validate()?;
    check_config(cfg)?;
    let levels = num_levels(images.h, images.w, cfg.min_resolution);
    let (mut h, mut w) = (images.h, images.w);
    let mut heights = vec![h];
    for _ in 1..levels {
        h = h.div_ceil(2);
        w = w.div_ceil(2);
        heights.push(h);
    }
    if h < cfg.patch_size || w < cfg.patch_size {
        return Err(MetricsError::Shape(format!(
            "{}x{} images: the coarsest pyramid level {h}x{w} is smaller than the {p}x{p} patch",
            images.h,
            images.w,
            p = cfg.patch_size
        )));
    }
    Ok(heights)
}

/// Descriptors for every pyramid level of `images`, finest first, with patch positions drawn
/// from per-image streams: image `i` uses stream `first_index + i` of a generator seeded by
/// `seed`. Deterministic and independent of threading and batching.
pub fn descriptors_seeded(
    images: &ImageSet,
    cfg: &SwdConfig,
    seed: u64,
    first_index: u64,
) -> Result<Vec<DescriptorSet>> {
    let heights = check_images(images, cfg)?;
    let (c, h, w, p) = (images.c, images.h, images.w, cfg.patch_size);
    let per_image: Vec<Vec<Vec<f32>>> = (0..images.n)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed));
            rng.set_stream(first_index + i as u64);
            laplacian_pyramid(images.image(i), c, h, w, cfg.min_resolution)
                .into_iter()
                .map(|level| {
                    let mut out = Vec::with_capacity(cfg.descriptors_per_image * c * p * p);
                    for _ in 0..cfg.descriptors_per_image {
                        let y = rng.random_range(0..=level.h - p);
                        let x = rng.random_range(0..=level.w - p);
                        extract_descriptor(&level, y, x, p, &mut out);
                    }
                    out
                })
                .collect()
        })
        .collect();
    let mut sets: Vec<DescriptorSet> = heights
        .iter()
        .map(|&res| {
            let mut set = DescriptorSet::empty_like(res, c, p);
            set.data
                .reserve(images.n * cfg.descriptors_per_image * c * p * p);
            set
        })
        .collect();
    for img in per_image {
        for (set, d) in sets.iter_mut().zip(img) {
            set.data.extend_from_slice(&d);
        }
    }
    Ok(sets)
}

/// Descriptors for every pyramid level of `images` (finest first), positions drawn using a seed
/// taken from `rng`. See [`descriptors_seeded`].
pub fn descriptors<R: Rng + ?Sized>(
    images: &ImageSet,
    cfg: &SwdConfig,
    rng: &mut R,
) -> Result<Vec<DescriptorSet>> {
    let seed = rng.random::<u64>();
    descriptors_seeded(images, cfg, seed, 0)
}

/// The official `finalize_descriptors`: subtract each channel's mean and divide by its
/// (population) standard deviation, both over all descriptors and all patch pixels of that
/// channel. A channel with zero spread is only centred (the official code would divide by 0).
pub fn normalize_descriptors(set: &mut DescriptorSet) {
    let (c, pp) = (set.channels, set.patch * set.patch);
    let dim = c * pp;
    if set.data.is_empty() {
        return;
    }
    // Per-channel sums in f64, over rows in parallel.
    let sum = set
        .data
        .par_chunks(dim * 256)
        .map(|rows| {
            let mut s = vec![0.0f64; c];
            for row in rows.chunks(dim) {
                for ch in 0..c {
                    s[ch] += row[ch * pp..(ch + 1) * pp]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>();
                }
            }
            s
        })
        .reduce(
            || vec![0.0; c],
            |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect(),
        );
    let count = (set.len() * pp) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    // Second pass for the variance (no cancellation, unlike E[x^2] - E[x]^2).
    let var: Vec<f64> = set
        .data
        .par_chunks(dim * 256)
        .map(|rows| {
            let mut q = vec![0.0f64; c];
            for row in rows.chunks(dim) {
                for ch in 0..c {
                    for &v in &row[ch * pp..(ch + 1) * pp] {
                        let d = v as f64 - mean[ch];
                        q[ch] += d * d;
                    }
                }
            }
            q
        })
        .reduce(
            || vec![0.0; c],
            |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect(),
        );
    let scale: Vec<f64> = var
        .iter()
        .map(|v| {
            let sd = (v / count).sqrt();
            if sd > 0.0 && sd.is_finite() {
                1.0 / sd
            } else {
                1.0
            }
        })
        .collect();
    set.data.par_chunks_mut(dim).for_each(|row| {
        for ch in 0..c {
            for v in &mut row[ch * pp..(ch + 1) * pp] {
                *v = ((*v as f64 - mean[ch]) * scale[ch]) as f32;
            }
        }
    });
}

/// `count` random unit vectors of length `dim`, row-major: standard normal samples normalised
/// to unit length (official: `np.random.randn` then divide by the norm).
pub fn random_directions<R: Rng + ?Sized>(dim: usize, count: usize, rng: &mut R) -> Vec<f32> {
    let mut dirs = Vec::with_capacity(dim * count);
    for _ in 0..count {
        let v: Vec<f64> = (0..dim)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect();
        let norm = v
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        dirs.extend(v.iter().map(|x| (x / norm) as f32));
    }
    dirs
}

/// Sliced Wasserstein distance between two equally sized descriptor sets along the given
/// directions (row-major, `directions.len() / dim` rows; they are used as given, not
/// normalised): for every direction project both sets, sort the projections and take the mean
/// absolute difference of the sorted values; the result is the mean over directions (the
/// official mean over repeats of per-repeat means, which is the same number when every repeat
/// has the same number of directions). Not scaled by 1e3.
pub fn distance_for_directions(
    a: &DescriptorSet,
    b: &DescriptorSet,
    directions: &[f32],
) -> Result<f64> {
    let dim = a.dim();
    if b.dim() != dim {
        return Err(MetricsError::Mismatch(format!(
            "descriptor sizes differ: {dim} vs {}",
            b.dim()
        )));
    }
    if a.len() != b.len() || a.is_empty() {
        return Err(MetricsError::Mismatch(format!(
            "descriptor sets must be non-empty and of equal size, got {} and {}",
            a.len(),
            b.len()
        )));
    }
    if directions.is_empty() || !directions.len().is_multiple_of(dim) {
        return Err(MetricsError::Mismatch(format!(
            "{} direction values is not a positive multiple of the descriptor size {dim}",
            directions.len()
        )));
    }
    let n = a.len();
    let n_dirs = directions.len() / dim;
    // Directions in groups: one pass over the descriptors projects onto GROUP directions, so the
    // descriptors are streamed from memory n_dirs / GROUP times, and the projection buffers stay
    // at GROUP * n values per set.
    const GROUP: usize = 16;
    const ROWS: usize = 512;
    let mut total = 0.0f64;
    for group in directions.chunks(GROUP * dim) {
        let g = group.len() / dim;
        let project = |set: &DescriptorSet| -> Vec<f32> {
            let mut proj = vec![0.0f32; n * g];
            proj.par_chunks_mut(ROWS * g)
                .zip(set.data.par_chunks(ROWS * dim))
                .for_each(|(out, rows)| {
                    for (o, row) in out.chunks_mut(g).zip(rows.chunks(dim)) {
                        for (k, dir) in group.chunks(dim).enumerate() {
                            o[k] = row.iter().zip(dir).map(|(x, d)| x * d).sum();
                        }
                    }
                });
            proj
        };
        let pa = project(a);
        let pb = project(b);
        total += (0..g)
            .into_par_iter()
            .map(|k| {
                let mut ca: Vec<f32> = pa.iter().skip(k).step_by(g).copied().collect();
                let mut cb: Vec<f32> = pb.iter().skip(k).step_by(g).copied().collect();
                ca.sort_unstable_by(f32::total_cmp);
                cb.sort_unstable_by(f32::total_cmp);
                ca.iter()
                    .zip(&cb)
                    .map(|(x, y)| (x - y).abs() as f64)
                    .sum::<f64>()
            })
            .sum::<f64>();
    }
    Ok(total / (n as f64 * n_dirs as f64))
}

/// Collects descriptors batch by batch so a large image set never has to be in memory at once.
///
/// Two accumulators built with the same config and different `set` ids draw independent patch
/// positions. [`SwdAccumulator::finish`] borrows both, so a reference (real) accumulator can be
/// compared against several generated sets.
#[derive(Clone, Debug)]
pub struct SwdAccumulator {
    cfg: SwdConfig,
    position_seed: u64,
    images: usize,
    shape: Option<(usize, usize, usize)>,
    levels: Vec<DescriptorSet>,
}

impl SwdAccumulator {
    /// An empty accumulator; `set` selects the position stream (e.g. 0 for reals, 1 for fakes).
    pub fn new(cfg: &SwdConfig, set: u64) -> Self {
        SwdAccumulator {
            cfg: cfg.clone(),
            position_seed: mix(cfg.seed ^ mix(0xA000 + set)),
            images: 0,
            shape: None,
            levels: Vec::new(),
        }
    }

    /// Adds a batch; every batch must have the same channels and size as the first.
    pub fn add(&mut self, batch: &ImageSet) -> Result<()> {
        let shape = (batch.c, batch.h, batch.w);
        if let Some(s) = self.shape {
            if s != shape {
                return Err(MetricsError::Mismatch(format!(
                    "batch is {}x{}x{}, earlier batches were {}x{}x{}",
                    shape.0, shape.1, shape.2, s.0, s.1, s.2
                )));
            }
        }
        let sets = descriptors_seeded(batch, &self.cfg, self.position_seed, self.images as u64)?;
        self.shape = Some(shape);
        if self.levels.is_empty() {
            self.levels = sets;
        } else {
            for (acc, s) in self.levels.iter_mut().zip(sets) {
                acc.data.extend_from_slice(&s.data);
            }
        }
        self.images += batch.n;
        Ok(())
    }

    /// Images added so far.
    pub fn images(&self) -> usize {
        self.images
    }

    /// The raw (not normalised) descriptors per level, finest first.
    pub fn descriptor_sets(&self) -> &[DescriptorSet] {
        &self.levels
    }

    /// SWD between the sets accumulated in `a` and `b`, per level x1e3 and averaged.
    ///
    /// Each level's sets are normalised ([`normalize_descriptors`]) over all their descriptors;
    /// if the sets then differ in size, the larger is subsampled without replacement to the size
    /// of the smaller (the official code requires equal sizes). Directions: `cfg.repeats *
    /// cfg.directions` unit vectors per level from `cfg.seed`.
    pub fn finish(a: &SwdAccumulator, b: &SwdAccumulator, cfg: &SwdConfig) -> Result<SwdReport> {
        check_config(cfg)?;
        if a.images == 0 || b.images == 0 {
            return Err(MetricsError::InvalidArgument(
                "swd needs at least one image in each set".into(),
            ));
        }
        let (sa, sb) = (a.shape.unwrap_or_default(), b.shape.unwrap_or_default());
        if sa != sb {
            return Err(MetricsError::Mismatch(format!(
                "sets have different image shapes: {}x{}x{} vs {}x{}x{}",
                sa.0, sa.1, sa.2, sb.0, sb.1, sb.2
            )));
        }
        if a.levels.len() != b.levels.len()
            || a.levels
                .iter()
                .zip(&b.levels)
                .any(|(x, y)| x.dim() != y.dim())
        {
            return Err(MetricsError::Mismatch(
                "sets were accumulated with different pyramid or patch settings".into(),
            ));
        }
        let mut levels = Vec::with_capacity(a.levels.len());
        for (l, (la, lb)) in a.levels.iter().zip(&b.levels).enumerate() {
            let mut da = la.clone();
            let mut db = lb.clone();
            normalize_descriptors(&mut da);
            normalize_descriptors(&mut db);
            let m = da.len().min(db.len());
            let mut sub_rng = stream_rng(cfg.seed, TAG_SUBSAMPLE, l as u64);
            let mut shrink = |d: DescriptorSet| {
                if d.len() > m {
                    let mut idx = rand::seq::index::sample(&mut sub_rng, d.len(), m).into_vec();
                    idx.sort_unstable();
                    d.select(&idx)
                } else {
                    d
                }
            };
            let (da, db) = (shrink(da), shrink(db));
            let mut dir_rng = stream_rng(cfg.seed, TAG_DIRECTIONS, l as u64);
            let dirs = random_directions(da.dim(), cfg.repeats * cfg.directions, &mut dir_rng);
            let d = distance_for_directions(&da, &db, &dirs)?;
            levels.push((la.resolution, d * 1e3));
        }
        let mean = levels.iter().map(|(_, d)| d).sum::<f64>() / levels.len() as f64;
        Ok(SwdReport { levels, mean })
    }
}

/// Bytes [`sliced_wasserstein`] holds per image (of the larger set) at its peak, for images of
/// `side x side` with `channels`: each pyramid level keeps `descriptors_per_image` patches of
/// every image of both sets, and `finish` normalises copies of both (four descriptor sets); a
/// fifth covers the per-image buffers they are gathered in.
pub fn peak_bytes_per_image(side: usize, channels: usize, cfg: &SwdConfig) -> u64 {
    let levels = num_levels(side, side, cfg.min_resolution) as u64;
    let per_level = (cfg.descriptors_per_image * cfg.patch_size * cfg.patch_size * channels) as u64;
    levels * per_level * 4 * 5
}

/// SWD (x1e3) between image sets `a` and `b`; both must have the same shape. Equivalent to
/// accumulating `a` as set 0 and `b` as set 1 and calling [`SwdAccumulator::finish`].
///
/// Images smaller than `min_resolution` give a single level at their own size; images whose
/// coarsest level is smaller than the patch are an error.
pub fn sliced_wasserstein(a: &ImageSet, b: &ImageSet, cfg: &SwdConfig) -> Result<SwdReport> {
    if (a.c, a.h, a.w) != (b.c, b.h, b.w) {
        return Err(MetricsError::Mismatch(format!(
            "image sets differ in shape: {}x{}x{} vs {}x{}x{}",
            a.c, a.h, a.w, b.c, b.h, b.w
        )));
    }
    let mut acc_a = SwdAccumulator::new(cfg, 0);
    acc_a.add(a)?;
    let mut acc_b = SwdAccumulator::new(cfg, 1);
    acc_b.add(b)?;
    SwdAccumulator::finish(&acc_a, &acc_b, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` RGB `size x size` texture images: a few random sinusoids plus pixel noise.
    pub(crate) fn textures(n: usize, size: usize, seed: u64) -> ImageSet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut data = Vec::with_capacity(n * 3 * size * size);
        for _ in 0..n {
            let waves: Vec<(f32, f32, f32, f32)> = (0..4)
                .map(|_| {
                    (
                        rng.random_range(0.2..1.2),
                        rng.random_range(0.2..1.2),
                        rng.random_range(0.0..6.3),
                        rng.random_range(0.1..0.3),
                    )
                })
                .collect();
            for ch in 0..3 {
                for y in 0..size {
                    for x in 0..size {
                        let mut v: f32 = waves
                            .iter()
                            .map(|&(fx, fy, ph, amp)| {
                                amp * (fx * x as f32 + fy * y as f32 + ph + ch as f32).sin()
                            })
                            .sum();
                        v += rng.random_range(-0.2..0.2);
                        data.push(v.clamp(-1.0, 1.0));
                    }
                }
            }
        }
        ImageSet::new(data, n, 3, size, size).unwrap()
    }

    /// Box blur of radius `r` (mirror borders), applied `passes` times.
    fn blur(set: &ImageSet, passes: usize) -> ImageSet {
        let mut out = set.clone();
        let (h, w) = (set.h, set.w);
        for _ in 0..passes {
            let src = out.data.clone();
            for plane in 0..set.n * set.c {
                let p = &src[plane * h * w..(plane + 1) * h * w];
                for y in 0..h {
                    for x in 0..w {
                        let mut acc = 0.0;
                        for (dy, dx) in [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)] {
                            let yy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                            let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                            acc += p[yy * w + xx];
                        }
                        out.data[plane * h * w + y * w + x] = acc / 5.0;
                    }
                }
            }
        }
        out
    }

    fn small_cfg() -> SwdConfig {
        SwdConfig {
            descriptors_per_image: 128,
            repeats: 2,
            directions: 64,
            seed: 7,
            ..SwdConfig::default()
        }
    }

    #[test]
    fn descriptor_layout_and_counts() {
        let set = textures(3, 32, 1);
        let cfg = SwdConfig {
            descriptors_per_image: 5,
            ..SwdConfig::default()
        };
        let sets = descriptors(&set, &cfg, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        assert_eq!(
            sets.iter()
                .map(|s| (s.resolution, s.len(), s.dim()))
                .collect::<Vec<_>>(),
            vec![(32, 15, 147), (16, 15, 147)]
        );
        // Every descriptor of the coarsest (Gaussian) level must be a patch of that level.
        let pyr = laplacian_pyramid(set.image(0), 3, 32, 32, 16);
        let first = &sets[1].data[..147];
        let found = (0..=9).any(|y| {
            (0..=9).any(|x| {
                let mut d = Vec::new();
                extract_descriptor(&pyr[1], y, x, 7, &mut d);
                d == first
            })
        });
        assert!(
            found,
            "descriptor is not a 7x7 patch of the image's pyramid level"
        );
    }

    #[test]
    fn batching_does_not_change_descriptors() {
        let set = textures(5, 32, 2);
        let cfg = small_cfg();
        let mut whole = SwdAccumulator::new(&cfg, 0);
        whole.add(&set).unwrap();
        let mut parts = SwdAccumulator::new(&cfg, 0);
        parts.add(&set.slice(0, 2)).unwrap();
        parts.add(&set.slice(2, 5)).unwrap();
        assert_eq!(parts.images(), 5);
        assert_eq!(whole.descriptor_sets(), parts.descriptor_sets());
        let mut other = SwdAccumulator::new(&cfg, 1);
        other.add(&set).unwrap();
        assert_ne!(
            whole.descriptor_sets(),
            other.descriptor_sets(),
            "set ids must give different positions"
        );
        assert!(parts
            .add(&textures(1, 16, 3))
            .unwrap_err()
            .to_string()
            .contains("earlier batches"));
    }

    #[test]
    fn normalisation_gives_zero_mean_unit_std_per_channel() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let data: Vec<f32> = (0..50 * 2 * 9)
            .map(|i| {
                if (i / 9) % 2 == 0 {
                    rng.random_range(3.0..5.0)
                } else {
                    rng.random_range(-20.0..0.0)
                }
            })
            .collect();
        let mut set = DescriptorSet {
            resolution: 8,
            channels: 2,
            patch: 3,
            data,
        };
        normalize_descriptors(&mut set);
        for ch in 0..2 {
            let vals: Vec<f64> = set
                .data
                .chunks(18)
                .flat_map(|r| r[ch * 9..(ch + 1) * 9].iter().map(|&v| v as f64))
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "channel {ch}: mean {mean} var {var}"
            );
        }
        let mut flat = DescriptorSet {
            resolution: 8,
            channels: 1,
            patch: 1,
            data: vec![2.0; 4],
        };
        normalize_descriptors(&mut flat);
        assert_eq!(flat.data, vec![0.0; 4]);
    }

    #[test]
    fn distance_of_a_shifted_set_is_the_projected_shift() {
        // Shifting every descriptor by t moves every projection by t.d, so the sorted
        // differences are all |t.d|.
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let a = DescriptorSet {
            resolution: 7,
            channels: 1,
            patch: 2,
            data: (0..40 * 4).map(|_| rng.random_range(-1.0..1.0)).collect(),
        };
        let t = [0.5f32, -0.25, 1.0, 0.0];
        let b = DescriptorSet {
            data: a
                .data
                .chunks(4)
                .flat_map(|r| r.iter().zip(&t).map(|(x, s)| x + s))
                .collect(),
            ..a.clone()
        };
        let dirs = random_directions(4, 3, &mut rng);
        let want = dirs
            .chunks(4)
            .map(|d| {
                d.iter()
                    .zip(&t)
                    .map(|(x, s)| (x * s) as f64)
                    .sum::<f64>()
                    .abs()
            })
            .sum::<f64>()
            / 3.0;
        let got = distance_for_directions(&a, &b, &dirs).unwrap();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert_eq!(distance_for_directions(&a, &a, &dirs).unwrap(), 0.0);
        for d in dirs.chunks(4) {
            assert!((d.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert!(distance_for_directions(&a, &b.select(&[0, 1]), &dirs).is_err());
    }

    #[test]
    fn swd_is_small_for_same_images_and_grows_with_blur() {
        let set = textures(16, 32, 5);
        let cfg = small_cfg();
        let same = sliced_wasserstein(&set, &set, &cfg).unwrap();
        assert_eq!(
            same.levels.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![32, 16]
        );
        let mut prev = same.mean;
        let mut all = vec![same.mean];
        for passes in [1, 2, 4] {
            let r = sliced_wasserstein(&set, &blur(&set, passes), &cfg).unwrap();
            all.push(r.mean);
            assert!(r.mean > prev * 1.2, "swd must grow with blur: {all:?}");
            prev = r.mean;
        }
        assert!(
            all[3] > 2.0 * all[0],
            "strong blur should be far above the self-distance: {all:?}"
        );
        // Deterministic for a given seed; a different seed only changes the sampling noise.
        assert_eq!(sliced_wasserstein(&set, &set, &cfg).unwrap(), same);
        let other = sliced_wasserstein(
            &set,
            &set,
            &SwdConfig {
                seed: 99,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert_ne!(other, same);
        assert!(
            other.mean < all[3] / 2.0 && other.mean < 1.5 * same.mean,
            "{other:?} vs {all:?}"
        );
    }

    #[test]
    fn unequal_set_sizes_are_subsampled() {
        let cfg = small_cfg();
        let r = sliced_wasserstein(&textures(6, 32, 6), &textures(9, 32, 7), &cfg).unwrap();
        assert!(r.mean.is_finite() && r.mean > 0.0);
    }

    #[test]
    fn small_images_use_one_level_and_tiny_ones_fail() {
        let cfg = small_cfg();
        let r = sliced_wasserstein(&textures(4, 12, 8), &textures(4, 12, 9), &cfg).unwrap();
        assert_eq!(r.levels.len(), 1);
        assert_eq!(r.levels[0].0, 12);
        let err = sliced_wasserstein(&textures(2, 6, 8), &textures(2, 6, 9), &cfg).unwrap_err();
        assert!(
            err.to_string().contains("smaller than the 7x7 patch"),
            "{err}"
        );
        let err = sliced_wasserstein(&textures(2, 32, 8), &textures(2, 16, 9), &cfg).unwrap_err();
        assert!(err.to_string().contains("differ in shape"), "{err}");
    }
}
