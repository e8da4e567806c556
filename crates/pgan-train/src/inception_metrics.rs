//! FID, KID and precision/recall through the Inception network (`pgan-inception`): features of
//! a dataset's reals (cached beside the dataset), of generated images and of image folders,
//! and the metrics of `pgan-metrics` over them.
//!
//! Reals are every image of the dataset level at the generator's resolution, as StyleGAN2-ADA's
//! `fid50k_full` uses the whole dataset. Generated images are quantised to 8 bits exactly as
//! `pgan render` writes them, so the metrics of an in-process generator equal those of its
//! rendered PNGs.
//!
//! The real features and their mean and covariance are cached in
//! `<dataset>.fid-<res>.safetensors`, keyed by the level's CRC-32 from the dataset header, the
//! image count, the resize mode and the CRC-32 of the weights' values: a second evaluation skips
//! the reals, and a re-prepared dataset (or other weights) recomputes them. The file is written
//! to a temp name and renamed; if the dataset's folder is read-only the cache is skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use pgan_data::PyramidReader;
use pgan_inception::{FeatureExtractor, Images8, FEATURE_DIM, INPUT_SIZE, RESIZE_MODE};
use pgan_metrics::{
    frechet_distance, kernel_inception_distance, precision_recall, FeatureStats, KidConfig,
};
use pgan_model::{Generator, ModelConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

use crate::error::{io_err, Result, TrainError};
use crate::eval::Watch;
use crate::latents::latent_values;

/// Images per Inception forward pass.
pub const INCEPTION_BATCH: usize = 32;

/// Which of the feature metrics to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureMetrics {
    /// Fréchet Inception Distance.
    pub fid: bool,
    /// Kernel Inception Distance.
    pub kid: bool,
    /// Improved precision and recall (k = 3).
    pub pr: bool,
}

impl FeatureMetrics {
    /// True when any metric is asked for.
    pub fn any(&self) -> bool {
        self.fid || self.kid || self.pr
    }

    /// The fewest images per set the chosen metrics need (a covariance needs 2 vectors,
    /// k-nearest-neighbour balls need k + 1).
    pub fn min_images(&self) -> usize {
        if self.pr {
            pgan_metrics::precision_recall::DEFAULT_K + 1
        } else {
            2
        }
    }
}

/// The feature metrics of one comparison.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FeatureMetricsReport {
    /// FID (lower is better).
    pub fid: Option<f64>,
    /// KID (lower is better; ×1e3 is the usual display).
    pub kid: Option<f64>,
    /// Share of generated images inside the real manifold.
    pub precision: Option<f64>,
    /// Share of real images inside the generated manifold.
    pub recall: Option<f64>,
    /// Real (reference) images measured.
    pub num_real: usize,
    /// Generated (compared) images measured.
    pub num_fake: usize,
    /// The reference set of a comparison of two sets (`eval --real A --fake B`), absolute.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json_paths::optional_path"
    )]
    pub real: Option<PathBuf>,
    /// The set compared with it, absolute.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json_paths::optional_path"
    )]
    pub fake: Option<PathBuf>,
    /// The seed of KID's random subsets (`--seed`), when KID was measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The units of the numbers above (KID raw).
    pub units: FeatureUnits,
    /// CRC-32 of the Inception weights' values: which network measured the numbers above (the
    /// standard FID weights' is [`pgan_inception::STANDARD_WEIGHTS_CRC32`]).
    pub inception_weights_crc32: String,
    /// Reference images read from a folder with transparency, composited onto a background.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_composited: Option<Composited>,
    /// Compared images read from a folder with transparency, composited onto a background.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fake_composited: Option<Composited>,
    /// How the sets were read where it is not the obvious (printed as `note:` lines).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What makes a number above less trustworthy than it looks (printed as `warning:` lines).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Every image of a folder left out because it could not be decoded (the warning names
    /// the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
}

/// The units of [`FeatureMetricsReport`]'s numbers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FeatureUnits {
    /// `fid`.
    pub fid: &'static str,
    /// `kid`.
    pub kid: &'static str,
    /// `precision`, `recall`.
    pub precision_recall: &'static str,
}

impl Default for FeatureUnits {
    fn default() -> Self {
        let all = crate::eval::Units::default();
        Self {
            fid: all.fid,
            kid: all.kid,
            precision_recall: all.precision_recall,
        }
    }
}

/// Images of a folder that carried an alpha channel, composited onto one opaque colour as `pgan
/// prepare` composites them: the same files give the same features from a folder and from the
/// `.pgan` prepared from it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Composited {
    /// How many images had an alpha channel.
    pub images: usize,
    /// The colour under them, RGB.
    pub background: [u8; 3],
}

impl std::fmt::Display for Composited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [r, g, b] = self.background;
        write!(
            f,
            "{} images with an alpha channel composited onto #{r:02x}{g:02x}{b:02x}, as `pgan \
             prepare` does (--background sets the colour)",
            self.images
        )
    }
}

impl std::fmt::Display for FeatureMetricsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Inception features: {} real, {} generated",
            self.num_real, self.num_fake
        )?;
        if let Some(v) = self.fid {
            // Identical sets give 0 up to rounding, which may fall either side of it.
            let shown = if v.abs() < 5e-5 { 0.0 } else { v };
            write!(f, "\nFID {shown:.4}")?;
        }
        if let Some(v) = self.kid {
            write!(f, "\nKID x1e3 {:.4}", v * 1e3)?;
        }
        if let (Some(p), Some(r)) = (self.precision, self.recall) {
            write!(f, "\nprecision {p:.4}, recall {r:.4} (k = 3)")?;
        }
        if let Some(c) = &self.real_composited {
            write!(f, "\nreal: {c}")?;
        }
        if let Some(c) = &self.fake_composited {
            write!(f, "\ncompared: {c}")?;
        }
        for n in &self.notes {
            write!(f, "\nnote: {n}")?;
        }
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

/// Feature vectors of a set of images (`count × 2048`).
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// Row-major values.
    pub values: Vec<f32>,
    /// Number of images.
    pub count: usize,
}

/// Features with their mean and covariance (computed once, cached for reals).
#[derive(Clone, Debug)]
pub struct FeatureSet {
    /// The vectors.
    pub features: Features,
    /// Their statistics.
    pub stats: FeatureStats,
    /// Images read with transparency (from a folder), when there were any.
    pub composited: Option<Composited>,
    /// How many images of each size (width, height) a folder held; empty for other sets.
    pub folder_sizes: std::collections::BTreeMap<(u32, u32), usize>,
    /// The files of a folder that were not read, as a note naming their extensions.
    pub not_read: Option<String>,
    /// The images of a folder that could not be decoded and were left out, as a warning
    /// naming the first of them and why.
    pub left_out: Option<String>,
    /// Every one of them, with why.
    pub left_out_files: Vec<(PathBuf, String)>,
}

/// An image of a folder that could not be decoded and was left out of the measurement.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LeftOut {
    /// `real` or `fake`: the set it was in.
    pub set: &'static str,
    /// The file.
    #[serde(serialize_with = "crate::json_paths::path")]
    pub path: PathBuf,
    /// Why it could not be decoded.
    pub why: String,
}

impl FeatureSet {
    /// Computes the statistics of `features`.
    pub fn new(features: Features) -> Result<Self> {
        let stats = FeatureStats::from_features(&features.values, FEATURE_DIM)?;
        Ok(FeatureSet {
            features,
            stats,
            composited: None,
            folder_sizes: Default::default(),
            not_read: None,
            left_out: None,
            left_out_files: Vec::new(),
        })
    }
}

/// The chosen metrics of `fake` against `real`.
pub fn compare(
    real: &FeatureSet,
    fake: &FeatureSet,
    which: FeatureMetrics,
    seed: u64,
) -> Result<FeatureMetricsReport> {
    let mut report = FeatureMetricsReport {
        num_real: real.features.count,
        num_fake: fake.features.count,
        real_composited: real.composited.clone(),
        fake_composited: fake.composited.clone(),
        notes: [&real.not_read, &fake.not_read]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        warnings: [&real.left_out, &fake.left_out]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        left_out: [
            (&real.left_out_files, "real"),
            (&fake.left_out_files, "fake"),
        ]
        .into_iter()
        .flat_map(|(files, set)| {
            files.iter().map(move |(path, why)| LeftOut {
                set,
                path: path.clone(),
                why: why.clone(),
            })
        })
        .collect(),
        ..Default::default()
    };
    if which.fid {
        report.fid = Some(frechet_distance(&real.stats, &fake.stats)?);
    }
    if which.kid {
        let config = KidConfig {
            seed,
            ..KidConfig::default()
        };
        report.kid = Some(kernel_inception_distance(
            &real.features.values,
            &fake.features.values,
            FEATURE_DIM,
            &config,
        )?);
    }
    if which.pr {
        let pr = precision_recall(
            &real.features.values,
            &fake.features.values,
            FEATURE_DIM,
            pgan_metrics::precision_recall::DEFAULT_K,
        )?;
        report.precision = Some(pr.precision);
        report.recall = Some(pr.recall);
    }
    Ok(report)
}

/// What a user should know about FIDs of `num` generated images: below the features' 2048
/// dimensions the covariance is rank-deficient and FID is biased upward, so it compares only
/// with FIDs of as many images (published ones use 50000; Heusel et al. recommend at least 10000).
pub fn small_fid_sample(num: usize) -> Option<String> {
    (num < FEATURE_DIM).then(|| {
        format!(
            "FID of {num} generated images is biased upward (fewer than the {FEATURE_DIM} \
             feature dimensions): compare it only with FIDs of {num} images (published ones use \
             50000)"
        )
    })
}

/// `what` holds too few images for the metrics; `why` says what else it held, if anything.
fn too_few(what: &str, have: usize, need: usize, why: Option<&str>) -> TrainError {
    let why = why.map(|why| format!(" ({why})")).unwrap_or_default();
    TrainError::Metrics(pgan_metrics::MetricsError::InvalidArgument(format!(
        "{what} has {have} images; the requested metrics need at least {need}{why}"
    )))
}

fn progress_bar(show: bool, len: usize, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:<22} {bar:30} {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("static template"),
    );
    bar.set_message(label.to_owned());
    bar
}

/// Where the real features of `dataset` at `resolution` are cached.
pub fn cache_path(dataset: &Path, resolution: u32) -> PathBuf {
    // The name's bytes as they are: two datasets whose names differ only in bytes that are
    // not UTF-8 get two caches.
    let mut name = dataset.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".fid-{resolution}.safetensors"));
    dataset.with_file_name(name)
}

/// Format tag of the cache file.
const CACHE_FORMAT: &str = "pgan-inception-features-1";

/// What a cache file must match to be used.
fn cache_key(
    reader: &PyramidReader,
    resolution: u32,
    weights_crc: u32,
) -> Result<HashMap<String, String>> {
    let level = reader
        .header()
        .levels
        .iter()
        .find(|l| l.resolution == resolution)
        .ok_or_else(|| TrainError::Dataset {
            path: reader.path().to_path_buf(),
            message: format!("no {resolution}x{resolution} level"),
        })?;
    Ok([
        ("format", CACHE_FORMAT.to_owned()),
        ("level_crc32", format!("{:08x}", level.crc32)),
        ("count", reader.len().to_string()),
        ("resolution", resolution.to_string()),
        ("resize", RESIZE_MODE.to_owned()),
        ("weights_crc32", format!("{weights_crc:08x}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

/// Whether the Inception features of `n` generated images (4 bytes × 2048 each, all held)
/// fit in the memory available: a count past it is said before hours of generating, not found
/// by the allocator.
fn check_features_fit(n: usize) -> Result<()> {
    crate::limits::check_fits(
        n as u128 * FEATURE_DIM as u128 * 4,
        &format!("the Inception features of {n} generated images need"),
    )
    .map_err(TrainError::Request)
}

/// The cache's metadata key holding the CRC-32 of its tensors' bytes (features, mean, cov).
const CACHE_CHECKSUM_KEY: &str = "values_crc32";

/// Room for the cache's safetensors header (its JSON: names, shapes, the key's strings).
const MAX_CACHE_HEADER_BYTES: u64 = 1 << 20;

/// The cached real features if the file exists and matches `key`; why not otherwise.
fn load_cache(
    path: &Path,
    key: &HashMap<String, String>,
) -> std::result::Result<FeatureSet, String> {
    // Its size follows from the image count: a FIFO, a device or a longer file is refused
    // before it is read (and the features recomputed).
    let count: usize = key["count"].parse().map_err(|_| "bad count".to_owned())?;
    let d = FEATURE_DIM as u64;
    let most = (count as u64)
        .saturating_mul(d * 4)
        .saturating_add(d * 8 + d * d * 8)
        .saturating_add(MAX_CACHE_HEADER_BYTES);
    let bytes = pgan_data::read_regular_file_at_most(path, most).map_err(|e| e.to_string())?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format!("unreadable ({e})"))?;
    let stored = meta.metadata().clone().unwrap_or_default();
    for (k, v) in key {
        if stored.get(k) != Some(v) {
            return Err(format!(
                "stale ({k} is {}, now {v})",
                stored.get(k).map(String::as_str).unwrap_or("missing")
            ));
        }
    }
    let file =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("unreadable ({e})"))?;
    // The values' checksum: a flipped bit would otherwise give other metrics without a word.
    let mut crc = crc32fast::Hasher::new();
    for name in ["features", "mean", "cov"] {
        crc.update(
            file.tensor(name)
                .map_err(|e| format!("{name}: {e}"))?
                .data(),
        );
    }
    let want = format!("{:08x}", crc.finalize());
    match stored.get(CACHE_CHECKSUM_KEY) {
        Some(have) if *have == want => {}
        Some(have) => return Err(format!("damaged (checksum {have}, its values give {want})")),
        None => return Err("written without a checksum (by an older pgan)".into()),
    }
    let tensor = |name: &str, dtype: Dtype, shape: &[usize]| {
        let view = file.tensor(name).map_err(|e| format!("{name}: {e}"))?;
        if view.dtype() != dtype || view.shape() != shape {
            return Err(format!("{name} has the wrong type or shape"));
        }
        Ok(view.data().to_vec())
    };
    let f32s = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let f64s = |b: Vec<u8>| -> Vec<f64> {
        b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    };
    let d = FEATURE_DIM;
    let features = Features {
        values: f32s(tensor("features", Dtype::F32, &[count, d])?),
        count,
    };
    if features.values.iter().any(|v| !v.is_finite()) {
        return Err("damaged (features that are not finite)".into());
    }
    let stats = FeatureStats {
        count,
        mean: f64s(tensor("mean", Dtype::F64, &[d])?),
        cov: f64s(tensor("cov", Dtype::F64, &[d, d])?),
    };
    stats.validate().map_err(|e| e.to_string())?;
    Ok(FeatureSet {
        features,
        stats,
        composited: None,
        folder_sizes: Default::default(),
        not_read: None,
        left_out: None,
        left_out_files: Vec::new(),
    })
}

fn save_cache(path: &Path, key: HashMap<String, String>, set: &FeatureSet) -> Result<()> {
    let d = FEATURE_DIM;
    let features: Vec<u8> = set
        .features
        .values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mean: Vec<u8> = set
        .stats
        .mean
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let cov: Vec<u8> = set.stats.cov.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = |dtype, shape: Vec<usize>, bytes| {
        TensorView::new(dtype, shape, bytes).expect("shape and byte length agree")
    };
    let tensors = [
        (
            "features",
            view(Dtype::F32, vec![set.features.count, d], &features),
        ),
        ("mean", view(Dtype::F64, vec![d], &mean)),
        ("cov", view(Dtype::F64, vec![d, d], &cov)),
    ];
    let mut crc = crc32fast::Hasher::new();
    for bytes in [&features, &mean, &cov] {
        crc.update(bytes);
    }
    let mut key = key;
    key.insert(CACHE_CHECKSUM_KEY.into(), format!("{:08x}", crc.finalize()));
    let bytes = safetensors::serialize(tensors, Some(key)).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        action: "serialise feature cache",
        source: std::io::Error::other(e.to_string()),
    })?;
    crate::fsutil::write_own_atomic(path, &bytes).map_err(io_err(path, "write feature cache"))
}

/// Features of every image of `reader`'s level at `resolution`, from the cache beside the
/// dataset when it is current (see the module docs), else computed and cached.
pub fn dataset_features<B: Backend>(
    extractor: &FeatureExtractor<B>,
    reader: &PyramidReader,
    resolution: u32,
    min_images: usize,
    watch: Watch,
) -> Result<FeatureSet> {
    let progress = watch.progress;
    if reader.len() < min_images {
        return Err(too_few(
            &format!("dataset {}", reader.path().display()),
            reader.len(),
            min_images,
            None,
        ));
    }
    let key = cache_key(reader, resolution, extractor.weights_checksum())?;
    let path = cache_path(reader.path(), resolution);
    // A run killed while writing the cache (Ctrl-C without a handler, SIGKILL) left its
    // temporary file: as large as the cache, and no other run would remove it.
    pgan_data::remove_stale_temps(&path);
    let say = |m: String| {
        if progress {
            // Not `eprintln!`, which panics when stderr cannot be written.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{m}");
        }
    };
    match load_cache(&path, &key) {
        Ok(set) => {
            say(format!("real features from {}", path.display()));
            return Ok(set);
        }
        Err(why) if path.exists() => say(format!("recomputing {}: {why}", path.display())),
        Err(_) => {}
    }
    let level = reader.level(resolution)?;
    let (n, c, side) = (reader.len(), reader.channels(), resolution as usize);
    let per = side * side * c;
    let bar = progress_bar(progress, n, &format!("inception reals {side}x{side}"));
    let mut values = Vec::with_capacity(n * FEATURE_DIM);
    // The level's checksum, taken as it is read: damaged pixels would give a wrong FID and a
    // cache (keyed by the stored checksum) that stays wrong after the file is mended.
    let mut crc = crc32fast::Hasher::new();
    for start in (0..n).step_by(INCEPTION_BATCH) {
        watch.check()?;
        let b = INCEPTION_BATCH.min(n - start);
        let pixels = &level[start * per..(start + b) * per];
        crc.update(pixels);
        values.extend(extractor.features(Images8 {
            pixels,
            n: b,
            height: side,
            width: side,
            channels: c,
        })?);
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    crc.update(&level[n * per..]);
    if Some(crc.finalize())
        != key
            .get("level_crc32")
            .and_then(|k| u32::from_str_radix(k, 16).ok())
    {
        // The reader's own check names the level and both checksums (the file may also have
        // changed while it was read, in which case it is still not measured).
        reader.verify_level(resolution)?;
        return Err(TrainError::Dataset {
            path: reader.path().to_path_buf(),
            message: format!(
                "the {side}x{side} level changed while its features were computed; measure again"
            ),
        });
    }
    let set = FeatureSet::new(Features { values, count: n })?;
    if let Err(e) = save_cache(&path, key, &set) {
        say(format!("not caching the real features: {e}"));
    }
    Ok(set)
}

/// `pgan render`'s 8-bit quantisation of images in [-1, 1], NCHW → NHWC.
pub fn quantise_nchw(values: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<u8> {
    let mut out = vec![0u8; values.len()];
    let plane = h * w;
    for i in 0..n {
        for ch in 0..c {
            let src = &values[(i * c + ch) * plane..(i * c + ch + 1) * plane];
            for (p, v) in src.iter().enumerate() {
                out[(i * plane + p) * c + ch] = crate::images::to_u8(*v);
            }
        }
    }
    out
}

/// Features of `n` images from `g` at `(stage, alpha)`, drawn from the same latent stream as
/// [`crate::eval::generate`] with `seed`, generated and measured batch by batch (memory stays
/// at one batch).
#[allow(clippy::too_many_arguments)]
pub fn generated_features<B: Backend>(
    extractor: &FeatureExtractor<B>,
    g: &Generator<B>,
    model: &ModelConfig,
    stage: usize,
    alpha: f32,
    n: usize,
    seed: u64,
    truncation: Option<f32>,
    device: &B::Device,
    watch: Watch,
) -> Result<FeatureSet> {
    let progress = watch.progress;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (c, side) = (
        model.num_channels,
        crate::schedule::resolution_of(stage) as usize,
    );
    // The features stay in memory (4 bytes × 2048 per image): a count past what the machine
    // has is said before hours of generating, not found by the allocator.
    check_features_fit(n)?;
    let bar = progress_bar(progress, n, &format!("inception generated {side}x{side}"));
    let mut values = Vec::with_capacity(n * FEATURE_DIM);
    let mut done = 0;
    while done < n {
        watch.check()?;
        let b = INCEPTION_BATCH.min(n - done);
        let latents = latent_values(&mut rng, b * model.latent_dim, truncation);
        let z = Tensor::<B, 2>::from_data(TensorData::new(latents, [b, model.latent_dim]), device);
        let images = crate::host_read::read_f32s(g.forward(z, stage, alpha));
        crate::images::finite_images(&images)?;
        let pixels = quantise_nchw(&images, b, c, side, side);
        values.extend(extractor.features(Images8 {
            pixels: &pixels,
            n: b,
            height: side,
            width: side,
            channels: c,
        })?);
        done += b;
        bar.inc(b as u64);
    }
    bar.finish_and_clear();
    FeatureSet::new(Features { values, count: n })
}

/// `pgan eval --fid/--kid/--pr` of a loaded checkpoint: its generated images against every
/// image of the request's dataset (at the generator's resolution) or image folder.
pub fn evaluate_checkpoint<B: Backend>(
    request: &crate::eval::EvalRequest,
    loaded: &crate::checkpoint::LoadedGenerator<B>,
    device: &B::Device,
) -> Result<FeatureMetricsReport> {
    let data = request.data.as_ref().ok_or_else(|| TrainError::Config {
        path: None,
        message: "FID, KID and precision/recall need a dataset or image folder to compare with"
            .into(),
    })?;
    let need = request.feature_metrics.min_images();
    if request.num_images < need {
        return Err(too_few("the generated set", request.num_images, need, None));
    }
    // Before the reals' features, which for an image folder are not cached and take long.
    check_features_fit(request.num_images).map_err(|e| match e {
        TrainError::Request(message) => {
            TrainError::Request(format!("--num {}: {message}", request.num_images))
        }
        other => other,
    })?;
    let resolution = crate::schedule::resolution_of(loaded.state.stage);
    let extractor = FeatureExtractor::<B>::load(&request.inception, device)?;
    let channels = loaded.model.num_channels;
    let mut notes = Vec::new();
    let real = if data.is_dir() {
        if channels == 1 {
            notes.push(luma_note(
                "real",
                data,
                "the checkpoint generates 1-channel images",
            ));
        }
        let read = FolderRead {
            channels: channels as u8,
            background: request.background,
            max_pixels: request.max_pixels,
        };
        folder_features(&extractor, data, need, read, request.progress)?
    } else {
        let reader = PyramidReader::open(data)?;
        if reader.resolution() < resolution {
            return Err(TrainError::Dataset {
                path: data.clone(),
                message: format!(
                    "its resolution {} is below the checkpoint's {resolution}",
                    reader.resolution()
                ),
            });
        }
        dataset_features(
            &extractor,
            &reader,
            resolution,
            need,
            Watch::progress(request.progress),
        )?
    };
    let fake = generated_features(
        &extractor,
        &loaded.generator,
        &loaded.model,
        loaded.state.stage,
        loaded.state.alpha,
        request.num_images,
        request.seed,
        request.truncation,
        device,
        Watch::progress(request.progress),
    )?;
    let mut report = compare(&real, &fake, request.feature_metrics, request.seed)?;
    report.notes.splice(0..0, notes);
    name_the_weights(&mut report, &extractor);
    report.warnings.extend(size_warning(
        "real",
        &real,
        resolution,
        "the generated images are",
    ));
    Ok(report)
}

/// Records which weights measured `report`, with a warning when they are not the standard ones.
fn name_the_weights<B: Backend>(
    report: &mut FeatureMetricsReport,
    extractor: &FeatureExtractor<B>,
) {
    report.inception_weights_crc32 = format!("{:08x}", extractor.weights_checksum());
    report
        .warnings
        .extend(extractor.nonstandard_weights_warning());
}

/// FID during training (`eval.fid_every_kimg`, `eval.fid_num`): the network, loaded once, and
/// the reals' features of each resolution (from the dataset's cache files after the first
/// time).
pub struct TrainingFid<B: Backend> {
    extractor: FeatureExtractor<B>,
    reals: HashMap<u32, FeatureSet>,
    num_images: usize,
}

impl<B: Backend> TrainingFid<B> {
    /// Loads the weights at `weights` (a missing or corrupt file is an error naming it).
    pub fn new(weights: &Path, num_images: usize, device: &B::Device) -> Result<Self> {
        Ok(TrainingFid {
            extractor: FeatureExtractor::load(weights, device)?,
            reals: HashMap::new(),
            num_images,
        })
    }

    /// Why these weights' FIDs cannot be compared with published ones, if they cannot (for the
    /// run's log).
    pub fn weights_warning(&self) -> Option<String> {
        self.extractor.nonstandard_weights_warning()
    }

    /// FID of `g` at `phase` (`num_images` generated images from `seed`) against every real
    /// image of `reader` at the phase's resolution; `stop` abandons it between two batches.
    #[allow(clippy::too_many_arguments)]
    pub fn measure(
        &mut self,
        g: &Generator<B>,
        model: &ModelConfig,
        reader: &PyramidReader,
        phase: &crate::schedule::Phase,
        seed: u64,
        device: &B::Device,
        stop: &AtomicBool,
    ) -> Result<f64> {
        let resolution = phase.resolution;
        let watch = Watch {
            progress: false,
            stop: Some(stop),
        };
        if !self.reals.contains_key(&resolution) {
            let set = dataset_features(&self.extractor, reader, resolution, 2, watch)?;
            self.reals.insert(resolution, set);
        }
        let fake = generated_features(
            &self.extractor,
            g,
            model,
            phase.stage,
            phase.alpha,
            self.num_images,
            seed,
            None,
            device,
            watch,
        )?;
        Ok(frechet_distance(
            &self.reals[&resolution].stats,
            &fake.stats,
        )?)
    }
}

/// Features of every image under `dir` (decoded to `channels` 3, RGB, or 1, luma, with
/// transparency composited onto `background` as `pgan prepare` does, any size: each is resized
/// to 299x299 as it is decoded), in sorted path order.
pub fn folder_features<B: Backend>(
    extractor: &FeatureExtractor<B>,
    dir: &Path,
    min_images: usize,
    read: FolderRead,
    progress: bool,
) -> Result<FeatureSet> {
    let FolderRead {
        channels,
        background,
        max_pixels,
    } = read;
    let (files, not_read) = folder_images(dir, min_images)?;
    let bar = progress_bar(progress, files.len(), "inception images");
    let mut values = Vec::with_capacity(files.len() * FEATURE_DIM);
    // Each image is made the network's 299x299 input as it is decoded: a batch holds those,
    // never the decoded images (a folder of camera photos held 32 at full size at once).
    let mut batch: Vec<f32> = Vec::new();
    let mut in_batch = 0usize;
    let mut with_alpha = 0usize;
    let mut sizes = std::collections::BTreeMap::new();
    let batch_len = INCEPTION_BATCH * 3 * INPUT_SIZE * INPUT_SIZE;
    let mut flush = |batch: &mut Vec<f32>, in_batch: &mut usize| -> Result<()> {
        if *in_batch > 0 {
            let full = std::mem::replace(batch, Vec::with_capacity(batch_len));
            values.extend(extractor.features_of_input(full, *in_batch)?);
            bar.inc(*in_batch as u64);
        }
        *in_batch = 0;
        Ok(())
    };
    // Files that cannot be decoded (damaged, cut short, over the pixel limit) are left out, as
    // `prepare` leaves them out, and named in a warning: one bad file of 50000 does not cost
    // the measurement of the rest.
    let mut left_out: Vec<(&Path, String)> = Vec::new();
    for file in &files {
        // The permit is held until the image's 8-bit copy is resized (end of the iteration).
        let (image, _permit) = match pgan_data::decode_held(file, max_pixels) {
            Ok(decoded) => decoded,
            Err(message) => {
                left_out.push((file, message));
                bar.inc(1);
                continue;
            }
        };
        with_alpha += usize::from(image.color().has_alpha());
        let size = (image.width(), image.height());
        *sizes.entry(size).or_insert(0) += 1;
        let pixels = pgan_data::to_channels(image, channels, background);
        batch.extend(pgan_inception::network_input(Images8 {
            pixels: &pixels,
            n: 1,
            height: size.1 as usize,
            width: size.0 as usize,
            channels: usize::from(channels),
        })?);
        in_batch += 1;
        if in_batch == INCEPTION_BATCH {
            flush(&mut batch, &mut in_batch)?;
        }
    }
    flush(&mut batch, &mut in_batch)?;
    bar.finish_and_clear();
    let count = files.len() - left_out.len();
    if count < min_images {
        let undecoded = format!(
            "{} of its {} images could not be decoded: {}",
            left_out.len(),
            files.len(),
            name_left_out(&left_out)
        );
        let why: Vec<&str> = not_read
            .iter()
            .map(String::as_str)
            .chain([undecoded.as_str()])
            .collect();
        return Err(too_few(
            &format!("image folder {}", dir.display()),
            count,
            min_images,
            Some(&why.join("; ")),
        ));
    }
    let left_out_files = left_out
        .iter()
        .map(|(path, why)| (path.to_path_buf(), why.clone()))
        .collect();
    let left_out = (!left_out.is_empty()).then(|| {
        format!(
            "{} of the {} images under {} could not be decoded and were left out (the metrics \
             measure the other {count}): {}{}",
            left_out.len(),
            files.len(),
            dir.display(),
            name_left_out(&left_out),
            if left_out.len() > NAMED_LEFT_OUT {
                " (every one, with why, in the --json report's `left_out`)"
            } else {
                ""
            }
        )
    });
    let mut set = FeatureSet::new(Features { values, count })?;
    set.composited = (with_alpha > 0).then_some(Composited {
        images: with_alpha,
        background,
    });
    set.folder_sizes = sizes;
    set.not_read = not_read;
    set.left_out = left_out;
    set.left_out_files = left_out_files;
    Ok(set)
}

/// How many of the files left out the warning names.
const NAMED_LEFT_OUT: usize = 3;

/// The first few files left out, each with why, and how many more.
fn name_left_out(left_out: &[(&Path, String)]) -> String {
    let named: Vec<String> = left_out
        .iter()
        .take(NAMED_LEFT_OUT)
        .map(|(file, why)| format!("{}: {why}", file.display()))
        .collect();
    match left_out.len().saturating_sub(NAMED_LEFT_OUT) {
        0 => named.join("; "),
        more => format!("{}; and {more} more", named.join("; ")),
    }
}

/// The images `pgan prepare` would take from folder `dir` (links to folders followed once, no
/// loops), at least `min_images` of them, and the note naming the files of other kinds. A
/// subfolder that cannot be read is an error, not a smaller set.
fn folder_images(dir: &Path, min_images: usize) -> Result<(Vec<PathBuf>, Option<String>)> {
    let walk = pgan_data::walk(dir)?;
    if let Some(unreadable) = walk.unreadable_error() {
        return Err(unreadable.into());
    }
    // Files of other kinds are not images to a dataset either, but a folder of `.ppm` or
    // `.heic` files measured as its few PNGs must say so.
    let not_read = not_read_note(dir, &walk.not_images_by_extension(), walk.broken_links());
    if walk.images.len() < min_images {
        return Err(too_few(
            &format!("image folder {}", dir.display()),
            walk.images.len(),
            min_images,
            not_read.as_deref(),
        ));
    }
    Ok((walk.images, not_read))
}

/// "N files under DIR were not read: ..." with a count per extension, and the links that lead
/// nowhere, or nothing.
fn not_read_note(
    dir: &Path,
    by_extension: &std::collections::BTreeMap<String, usize>,
    broken_links: usize,
) -> Option<String> {
    let total: usize = by_extension.values().sum();
    let kinds = (total > 0).then(|| {
        let kinds: Vec<String> = by_extension
            .iter()
            .map(|(ext, n)| format!("{n} {ext}"))
            .collect();
        format!(
            "{total} file{} under {} {} not read, not being of an image kind pgan decodes \
             (PNG, JPEG, GIF, BMP, WebP, TIFF): {}",
            if total == 1 { "" } else { "s" },
            dir.display(),
            if total == 1 { "was" } else { "were" },
            kinds.join(", ")
        )
    });
    let links = (broken_links > 0).then(|| {
        format!(
            "{broken_links} link{} under {} {} not followed, leading nowhere (a missing target or \
             a loop)",
            if broken_links == 1 { "" } else { "s" },
            dir.display(),
            if broken_links == 1 { "was" } else { "were" },
        )
    });
    match (kinds, links) {
        (Some(kinds), Some(links)) => Some(format!("{kinds}; {links}")),
        (kinds, links) => kinds.or(links),
    }
}

/// How an image folder is decoded for the Inception network: as the `.pgan` file it is compared
/// with holds its images (`pgan prepare`'s channels and background), so that a folder and the
/// file prepared from it give the same features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderRead {
    /// 3 (RGB) or 1 (luma).
    pub channels: u8,
    /// The colour under transparent pixels.
    pub background: [u8; 3],
    /// Images with more pixels than this (read from their header) are left out: decompression
    /// bombs (`--max-pixels`).
    pub max_pixels: u64,
}

/// A set of images to measure: a `.pgan` dataset (its top level) or a folder of images.
pub fn set_features<B: Backend>(
    extractor: &FeatureExtractor<B>,
    path: &Path,
    min_images: usize,
    read: FolderRead,
    progress: bool,
) -> Result<FeatureSet> {
    if path.is_dir() {
        folder_features(extractor, path, min_images, read, progress)
    } else {
        let reader = PyramidReader::open(path)?;
        dataset_features(
            extractor,
            &reader,
            reader.resolution(),
            min_images,
            Watch::progress(progress),
        )
    }
}

/// The note that a folder is read as luma (`channels` 1), `because` its counterpart is grey.
fn luma_note(side: &str, folder: &Path, because: &str) -> String {
    format!(
        "{side}: the image folder {} is read as greyscale (luma), as {because}",
        folder.display()
    )
}

/// Why a folder compared with the `.pgan` file at `path` is read as luma.
fn grey_file(path: &Path) -> String {
    format!("{} holds 1-channel images", path.display())
}

/// The warning for a folder (`side`) whose images are not all `resolution` square, the size of
/// the set it is compared with (`other`): Inception resizes both to 299x299, so the metrics
/// also measure the difference in sharpness.
fn size_warning(side: &str, set: &FeatureSet, resolution: u32, other: &str) -> Option<String> {
    let total: usize = set.folder_sizes.values().sum();
    let (most, _) = set
        .folder_sizes
        .iter()
        .filter(|(size, _)| **size != (resolution, resolution))
        .max_by_key(|(_, n)| **n)?;
    let others = total
        - set
            .folder_sizes
            .get(&(resolution, resolution))
            .unwrap_or(&0);
    let which = if others == total {
        "its images are".to_string()
    } else {
        format!("{others} of its {total} images are")
    };
    let shape = if set.folder_sizes.len() == 1 {
        format!("{}x{}", most.0, most.1)
    } else {
        format!(
            "not {resolution}x{resolution} (most often {}x{})",
            most.0, most.1
        )
    };
    Some(format!(
        "{side}: {which} {shape} and {other} {resolution}x{resolution}: Inception resizes both \
         to 299x299, so the metrics also measure the difference in sharpness"
    ))
}

/// The warning for two folders whose images are most often of different sizes (see
/// [`size_warning`]); `None` when either holds no decoded images or a most common size of one
/// is a most common size of the other.
fn folders_size_warning(real: &FeatureSet, fake: &FeatureSet) -> Option<String> {
    let describe = |set: &FeatureSet| {
        let total: usize = set.folder_sizes.values().sum();
        let most = *set.folder_sizes.values().max()?;
        let sizes: Vec<(u32, u32)> = set
            .folder_sizes
            .iter()
            .filter(|(_, n)| **n == most)
            .map(|(size, _)| *size)
            .collect();
        let (w, h) = sizes[0];
        let text = match set.folder_sizes.len() {
            1 => format!("{w}x{h}"),
            _ => format!("most often {w}x{h} ({most} of {total})"),
        };
        Some((sizes, text))
    };
    let ((real_sizes, real_text), (fake_sizes, fake_text)) = (describe(real)?, describe(fake)?);
    let shared = real_sizes.iter().any(|size| fake_sizes.contains(size));
    (!shared).then(|| {
        format!(
            "the real set's images are {real_text} and the compared set's {fake_text}: \
             Inception resizes both to 299x299, so the metrics also measure the difference in \
             sharpness"
        )
    })
}

/// Checks that the set at `path` holds at least `min_images` images (before either set's
/// features are computed, which for a folder take long); a `.pgan` file's shape besides.
fn set_shape(path: &Path, min_images: usize) -> Result<Option<(usize, u32)>> {
    if path.is_dir() {
        folder_images(path, min_images)?;
        return Ok(None);
    }
    let reader = PyramidReader::open(path)?;
    if reader.len() < min_images {
        return Err(too_few(
            &format!("dataset {}", path.display()),
            reader.len(),
            min_images,
            None,
        ));
    }
    Ok(Some((reader.channels(), reader.resolution())))
}

/// `pgan eval --real A --fake B`: two image sets compared without a checkpoint.
#[derive(Clone, Debug)]
pub struct CompareRequest {
    /// The reference set (`.pgan` file or image folder).
    pub real: PathBuf,
    /// The set measured against it.
    pub fake: PathBuf,
    /// Which metrics.
    pub metrics: FeatureMetrics,
    /// The Inception weights file.
    pub inception: PathBuf,
    /// Seed of KID's subsets.
    pub seed: u64,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Also write each set's features as `<prefix>-real.npy` and `<prefix>-fake.npy`
    /// (`[n, 2048]` float32, in the sets' order).
    pub save_features: Option<PathBuf>,
    /// The colour under transparent pixels of images read from a folder.
    pub background: [u8; 3],
    /// A folder's images with more pixels than this are left out (`--max-pixels`).
    pub max_pixels: u64,
}

/// Writes each set's features as an `[n, 2048]` float32 `.npy` file at its path, both or
/// neither.
pub fn save_features_npy(sets: &[(&Path, &Features)]) -> Result<()> {
    let mut files = Vec::with_capacity(sets.len());
    for (path, features) in sets {
        let shape = [features.count as u64, FEATURE_DIM as u64];
        let bytes = crate::fsutil::npy_f32_bytes(&features.values, &shape)
            .map_err(io_err(path, "write features"))?;
        files.push((*path, bytes));
    }
    let refs: Vec<(&Path, &[u8])> = files.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    crate::fsutil::write_all_atomic(&refs).map_err(|(path, e)| io_err(&path, "write features")(e))
}

/// Where `--save-features PREFIX` writes one set's features: `PREFIX-real.npy`, `PREFIX-fake.npy`.
pub fn features_file(prefix: &Path, set: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!("-{set}.npy"));
    PathBuf::from(name)
}

impl crate::backend::BackendJob for CompareRequest {
    type Output = FeatureMetricsReport;
    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Result<FeatureMetricsReport> {
        let extractor = FeatureExtractor::<B::InnerBackend>::load(&self.inception, &device)?;
        let need = self.metrics.min_images();
        let real_shape = set_shape(&self.real, need)?;
        let fake_shape = set_shape(&self.fake, need)?;
        // A folder is read at the channels of the `.pgan` beside it (RGB beside another folder).
        let read = FolderRead {
            channels: real_shape.or(fake_shape).map_or(3, |(c, _)| c as u8),
            background: self.background,
            max_pixels: self.max_pixels,
        };
        let real = set_features(&extractor, &self.real, need, read, self.progress)?;
        let fake = set_features(&extractor, &self.fake, need, read, self.progress)?;
        if let Some(prefix) = &self.save_features {
            save_features_npy(&[
                (&features_file(prefix, "real"), &real.features),
                (&features_file(prefix, "fake"), &fake.features),
            ])?;
        }
        let mut report = compare(&real, &fake, self.metrics, self.seed)?;
        name_the_weights(&mut report, &extractor);
        report.real = Some(std::path::absolute(&self.real).unwrap_or(self.real.clone()));
        report.fake = Some(std::path::absolute(&self.fake).unwrap_or(self.fake.clone()));
        report.seed = self.metrics.kid.then_some(self.seed);
        match (real_shape, fake_shape) {
            (None, Some((_, r))) => {
                report
                    .warnings
                    .extend(size_warning("real", &real, r, "the compared set is"))
            }
            (Some((_, r)), None) => {
                report
                    .warnings
                    .extend(size_warning("compared", &fake, r, "the real set is"))
            }
            (None, None) => report.warnings.extend(folders_size_warning(&real, &fake)),
            _ => {}
        }
        match (real_shape, fake_shape) {
            (None, Some((1, _))) => {
                report
                    .notes
                    .push(luma_note("real", &self.real, &grey_file(&self.fake)))
            }
            (Some((1, _)), None) => {
                report
                    .notes
                    .push(luma_note("compared", &self.fake, &grey_file(&self.real)))
            }
            (Some((real_c, real_r)), Some((fake_c, fake_r))) => {
                if real_c != fake_c {
                    report.warnings.push(format!(
                        "the real set holds {real_c}-channel images and the compared set \
                         {fake_c}-channel ones: Inception sees the greyscale set as grey RGB, so \
                         the metrics also measure the missing colour"
                    ));
                }
                if real_r != fake_r {
                    report.warnings.push(format!(
                        "the real set is {real_r}x{real_r} and the compared set \
                         {fake_r}x{fake_r}: both are resized to 299x299, so the metrics also \
                         measure the difference in sharpness"
                    ));
                }
            }
            _ => {}
        }
        if self.metrics.fid {
            report
                .warnings
                .extend(small_fid_sample(fake.features.count));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_matches_the_png_writer_and_interleaves_channels() {
        // 1 image, 2 channels... of 3: RGB planes of 2 pixels.
        let values = [-1.0, 1.0, 0.0, 0.002, 0.5, -0.5];
        let out = quantise_nchw(&values, 1, 3, 1, 2);
        let q = crate::images::to_u8;
        assert_eq!(out, [q(-1.0), q(0.0), q(0.5), q(1.0), q(0.002), q(-0.5)]);
        assert_eq!(out[..2], [0, 128]);
    }

    type B = burn::backend::Flex;

    /// `count` 8x8 PNGs whose colours depend on `variant`, prepared into `name.pgan`.
    fn dataset(dir: &Path, name: &str, count: u32, variant: u32) -> PathBuf {
        let images = dir.join(format!("{name}-images"));
        std::fs::create_dir_all(&images).unwrap();
        for k in 0..count {
            let img = image::RgbImage::from_fn(8, 8, |x, y| {
                image::Rgb([(k * 40 + x * 9) as u8, (variant * 70 + y * 20) as u8, 90])
            });
            img.save(images.join(format!("{k:02}.png"))).unwrap();
        }
        let out = dir.join(format!("{name}.pgan"));
        let mut options = pgan_data::PrepareOptions::new(&images, &out, 8);
        options.force = true;
        pgan_data::prepare(&options).unwrap();
        out
    }

    /// A level whose pixels no longer match its checksum is named, not measured, and no cache
    /// is written (one keyed by the stored checksum would stay wrong after the file is mended).
    #[test]
    fn damaged_pixels_are_refused_and_never_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dataset(dir.path(), "d", 2, 0);
        let at = PyramidReader::open(&path)
            .unwrap()
            .header()
            .levels
            .iter()
            .find(|l| l.resolution == 8)
            .unwrap()
            .offset;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize + 5] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let extractor = FeatureExtractor::<B>::new(
            &pgan_inception::InceptionWeights::synthetic(1),
            &Default::default(),
        );
        let reader = PyramidReader::open(&path).unwrap();
        let err = dataset_features(&extractor, &reader, 8, 2, Watch::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.pgan") && err.contains("checksum"), "{err}");
        assert!(!cache_path(&path, 8).exists());
    }

    /// One test for the whole cache life cycle, since every miss runs the full network.
    #[test]
    fn real_features_are_cached_and_recomputed_when_the_dataset_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dataset(dir.path(), "d", 2, 0);
        let extractor = FeatureExtractor::<B>::new(
            &pgan_inception::InceptionWeights::synthetic(1),
            &Default::default(),
        );
        let reader = PyramidReader::open(&path).unwrap();
        let first = dataset_features(&extractor, &reader, 8, 2, Watch::default()).unwrap();
        let cache = cache_path(&path, 8);
        assert!(cache.is_file());
        assert_eq!(first.features.count, 2);

        // A hit returns the stored values without touching the network; prove it by
        // changing a stored feature and seeing the change come back.
        let key = cache_key(&reader, 8, extractor.weights_checksum()).unwrap();
        let mut marked = first.clone();
        marked.features.values[0] = 1234.5;
        save_cache(&cache, key, &marked).unwrap();
        let hit = dataset_features(&extractor, &reader, 8, 2, Watch::default()).unwrap();
        assert_eq!(hit.features.values[0], 1234.5);
        assert_eq!(hit.stats, first.stats);

        // The 4x4 level has its own cache.
        let small = dataset_features(&extractor, &reader, 4, 2, Watch::default()).unwrap();
        assert_ne!(
            small.features.values[..FEATURE_DIM],
            first.features.values[..FEATURE_DIM]
        );
        drop(reader);

        // Re-prepared with other images: the level checksum differs, the cache is stale.
        let changed = dataset(dir.path(), "d", 2, 1);
        let reader = PyramidReader::open(&changed).unwrap();
        let key = cache_key(&reader, 8, extractor.weights_checksum()).unwrap();
        let why = load_cache(&cache, &key).unwrap_err();
        assert!(why.contains("stale (level_crc32"), "{why}");
        let fresh = dataset_features(&extractor, &reader, 8, 2, Watch::default()).unwrap();
        assert_ne!(fresh.features.values[0], 1234.5);
        assert_ne!(fresh.stats.mean, first.stats.mean);
        // ...and the rewritten cache now matches the new dataset.
        assert!(load_cache(&cache, &key).is_ok());

        // Other weights do not reuse it either.
        let key = cache_key(&reader, 8, 7).unwrap();
        assert!(load_cache(&cache, &key)
            .unwrap_err()
            .contains("weights_crc32"));

        // A damaged cache file is recomputed, not trusted.
        std::fs::write(&cache, b"garbage").unwrap();
        let again = dataset_features(&extractor, &reader, 8, 2, Watch::default()).unwrap();
        assert_eq!(again.features, fresh.features);

        // A flipped bit in a value (the file still parses) fails the checksum.
        let key = cache_key(&reader, 8, extractor.weights_checksum()).unwrap();
        let mut bytes = std::fs::read(&cache).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&cache, &bytes).unwrap();
        let why = load_cache(&cache, &key).unwrap_err();
        assert!(why.contains("damaged (checksum"), "{why}");
        let again = dataset_features(&extractor, &reader, 8, 2, Watch::default()).unwrap();
        assert_eq!(again.features, fresh.features);
        // Longer than its image count allows (a sparse file, a link to a huge one): refused
        // before it is read.
        std::fs::File::options()
            .write(true)
            .open(&cache)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let why = load_cache(&cache, &key).unwrap_err();
        assert!(why.contains("more than the"), "{why}");
        // A temporary file of a run killed while writing the cache is removed by the next.
        let killed = pgan_data::temp_path_for(&cache, u32::MAX);
        std::fs::write(&killed, b"half a cache").unwrap();
        dataset_features(&extractor, &reader, 8, 2, Watch::default()).unwrap();
        assert!(!killed.exists(), "{} left", killed.display());
        // A FIFO in its place is passed over, never waited on.
        std::fs::remove_file(&cache).unwrap();
        if std::process::Command::new("mkfifo")
            .arg(&cache)
            .status()
            .is_ok_and(|s| s.success())
        {
            let why = load_cache(&cache, &key).unwrap_err();
            assert!(why.contains("not a regular file"), "{why}");
        }
    }

    /// A count of generated images whose features cannot be held is refused before the first
    /// one is generated (it once panicked on the allocation).
    #[test]
    fn generated_features_past_the_memory_are_refused_before_any_work() {
        if crate::limits::available_memory_bytes().is_none() {
            return;
        }
        let device = Default::default();
        let extractor =
            FeatureExtractor::<B>::new(&pgan_inception::InceptionWeights::synthetic(1), &device);
        let model = ModelConfig::cpu_small(8)
            .with_latent_dim(8)
            .with_fmap_base(16)
            .with_fmap_max(8);
        let g = model.init_generator::<B>(&device);
        let n = 1 << 50;
        let err = generated_features(
            &extractor,
            &g,
            &model,
            1,
            1.0,
            n,
            0,
            None,
            &device,
            Watch::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!(
                "the Inception features of {n} generated images need"
            )),
            "{err}"
        );
    }

    #[test]
    fn too_few_images_for_the_metric_is_an_error_naming_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dataset(dir.path(), "three", 3, 0);
        let extractor = FeatureExtractor::<B>::new(
            &pgan_inception::InceptionWeights::synthetic(1),
            &Default::default(),
        );
        let reader = PyramidReader::open(&path).unwrap();
        let pr = FeatureMetrics {
            pr: true,
            ..Default::default()
        };
        let err = dataset_features(&extractor, &reader, 8, pr.min_images(), Watch::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("three.pgan has 3 images") && err.contains("at least 4"),
            "{err}"
        );
    }

    #[test]
    fn cache_path_sits_beside_the_dataset() {
        assert_eq!(
            cache_path(Path::new("/d/faces.pgan"), 64),
            Path::new("/d/faces.pgan.fid-64.safetensors")
        );
        #[cfg(unix)]
        {
            use std::ffi::OsStr;
            use std::os::unix::ffi::OsStrExt;
            let named = |bytes: &[u8]| {
                let mut path = b"/d/".to_vec();
                path.extend_from_slice(bytes);
                cache_path(Path::new(OsStr::from_bytes(&path)), 8)
            };
            let (a, b) = (named(b"a\xff.pgan"), named(b"a\xfe.pgan"));
            assert_ne!(
                a, b,
                "names differing in bytes that are not UTF-8 share a cache"
            );
            assert_eq!(a.as_os_str().as_bytes(), b"/d/a\xff.pgan.fid-8.safetensors");
        }
    }
}
