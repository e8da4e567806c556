//! Evaluating a generator against its dataset with the metrics crate: SWD against reals,
//! MS-SSIM diversity of generated and of real pairs. Used during training (small samples) and
//! by `pgan eval`.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use pgan_data::{BatchSampler, PyramidReader};
use pgan_metrics::{pairwise_ms_ssim, sliced_wasserstein, ImageSet, SwdConfig, SwdReport};
use pgan_model::{Generator, ModelConfig};
use pgan_spec::metrics as key;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::checkpoint::load_generator;
use crate::error::{Result, TrainError};
use crate::latents::latent_values;
use crate::schedule::Phase;

/// How much to evaluate.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    /// Generated images (and as many reals).
    pub num_images: usize,
    /// Random pairs for MS-SSIM.
    pub msssim_pairs: usize,
    /// Seed for latents, real sampling and the metrics' randomness.
    pub seed: u64,
    /// Generator minibatch.
    pub batch: usize,
}

/// How a long measurement is watched: a progress bar on stderr, and a flag that abandons it
/// between two batches (Ctrl-C during training: the checkpoint must not wait for a FID).
#[derive(Clone, Copy, Debug, Default)]
pub struct Watch<'a> {
    /// Show a progress bar.
    pub progress: bool,
    /// Once set, the measurement stops with [`TrainError::Interrupted`].
    pub stop: Option<&'a AtomicBool>,
}

impl Watch<'_> {
    /// A progress bar or not, never stopped.
    pub fn progress(progress: bool) -> Self {
        Watch {
            progress,
            stop: None,
        }
    }

    /// `Err(Interrupted)` once the stop flag is set.
    pub fn check(&self) -> Result<()> {
        match self.stop {
            Some(stop) if stop.load(Ordering::SeqCst) => Err(TrainError::Interrupted),
            _ => Ok(()),
        }
    }
}

/// Results of one evaluation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EvalReport {
    /// SWD per level and mean (×1e3), generated vs real; `None` below 16x16.
    pub swd: Option<SwdReport>,
    /// Mean SWD (copy of `swd.mean`).
    pub swd_mean: Option<f64>,
    /// Mean MS-SSIM of random generated pairs (higher = less diverse).
    pub msssim_fake: Option<f64>,
    /// Mean MS-SSIM of random real pairs (the reference).
    pub msssim_real: Option<f64>,
}

impl EvalReport {
    /// Flat `Metrics/...` keys for `metrics.jsonl`.
    pub fn rows(&self) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        if let Some(v) = self.swd_mean {
            out.push((key::SWD, v));
        }
        if let Some(v) = self.msssim_fake {
            out.push((key::MSSSIM_FAKE, v));
        }
        if let Some(v) = self.msssim_real {
            out.push((key::MSSSIM_REAL, v));
        }
        out
    }
}

/// Smallest resolution the mode classifier is trusted at: at 8x8 it labels most squares as
/// discs (the reals of a balanced 16-mode set read square 0.56, disc 1.57 of their share).
pub const MIN_MODES_RESOLUTION: u32 = pgan_metrics::synth::MIN_SHAPES_RESOLUTION;

/// Smallest resolution the SWD's Laplacian pyramid and 7x7 descriptors are computed at.
pub const MIN_SWD_RESOLUTION: u32 = 16;

/// The lowest resolution at which an evaluation measures anything (SWD or MS-SSIM).
pub const MIN_EVAL_RESOLUTION: u32 = {
    let msssim = pgan_metrics::msssim::MIN_SIZE as u32;
    if MIN_SWD_RESOLUTION < msssim {
        MIN_SWD_RESOLUTION
    } else {
        msssim
    }
};

/// Evaluates `g` at the schedule position `phase` against the dataset's level at the same
/// resolution; `watch`'s stop flag abandons it between generator batches.
pub fn evaluate_generator<B: Backend>(
    g: &Generator<B>,
    model: &ModelConfig,
    reader: &PyramidReader,
    phase: &Phase,
    settings: &EvalSettings,
    device: &B::Device,
    watch: Watch,
) -> Result<EvalReport> {
    let fakes = generate(
        g,
        model,
        phase.stage,
        phase.alpha,
        settings.num_images,
        settings.seed,
        settings.batch,
        None,
        device,
        watch,
    )?;
    watch.check()?;
    let reals = real_images(reader, phase.resolution, settings.num_images, settings.seed)?;
    let mut report = EvalReport::default();
    if phase.resolution >= MIN_SWD_RESOLUTION {
        let swd = sliced_wasserstein(
            &reals,
            &fakes,
            &SwdConfig {
                seed: settings.seed,
                ..SwdConfig::default()
            },
        )?;
        report.swd_mean = Some(swd.mean);
        report.swd = Some(swd);
    }
    if settings.msssim_pairs > 0 && phase.resolution as usize >= pgan_metrics::msssim::MIN_SIZE {
        report.msssim_fake =
            Some(pairwise_ms_ssim(&fakes, settings.msssim_pairs, settings.seed)?.mean);
        report.msssim_real =
            Some(pairwise_ms_ssim(&reals, settings.msssim_pairs, settings.seed)?.mean);
    }
    Ok(report)
}

/// Bytes an evaluation holds at its peak: `held_images` images of `channels x resolution²`
/// floats, SWD's descriptors of `swd_images` images (four sets' worth per image, and their
/// gathering buffers) and the list of `pairs` MS-SSIM pairs, each where the resolution lets it
/// be measured.
pub fn evaluation_bytes(
    held_images: usize,
    swd_images: usize,
    pairs: usize,
    channels: usize,
    resolution: u32,
) -> u128 {
    let images = held_images as u128 * channels as u128 * u128::from(resolution).pow(2) * 4;
    let swd = if resolution >= MIN_SWD_RESOLUTION {
        let per_image = pgan_metrics::swd::peak_bytes_per_image(
            resolution as usize,
            channels,
            &SwdConfig::default(),
        );
        swd_images as u128 * u128::from(per_image)
    } else {
        0
    };
    let pair_list = if resolution as usize >= pgan_metrics::msssim::MIN_SIZE {
        pairs as u128 * u128::from(pgan_metrics::msssim::BYTES_PER_PAIR)
    } else {
        0
    };
    images + swd + pair_list
}

/// `n` generated images from seeded latents, in batches; `truncation` resamples latent
/// components beyond ±ψ; `watch`'s stop flag is checked before each batch.
#[allow(clippy::too_many_arguments)]
pub fn generate<B: Backend>(
    g: &Generator<B>,
    model: &ModelConfig,
    stage: usize,
    alpha: f32,
    n: usize,
    seed: u64,
    batch: usize,
    truncation: Option<f32>,
    device: &B::Device,
    watch: Watch,
) -> Result<ImageSet> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (c, res) = (
        model.num_channels,
        crate::schedule::resolution_of(stage) as usize,
    );
    let mut data = Vec::with_capacity(n * c * res * res);
    let mut done = 0;
    while done < n {
        watch.check()?;
        let b = batch.max(1).min(n - done);
        let latents = latent_values(&mut rng, b * model.latent_dim, truncation);
        let z = Tensor::<B, 2>::from_data(TensorData::new(latents, [b, model.latent_dim]), device);
        let images = crate::host_read::read_f32s(g.forward(z, stage, alpha));
        crate::images::finite_images(&images)?;
        data.extend(images);
        done += b;
    }
    Ok(ImageSet {
        data,
        n,
        c,
        h: res,
        w: res,
    })
}

/// `n` reals (without mirroring) at `resolution`, in a seeded order.
pub fn real_images(
    reader: &PyramidReader,
    resolution: u32,
    n: usize,
    seed: u64,
) -> Result<ImageSet> {
    let mut sampler = BatchSampler::new(reader.len(), seed, false);
    let batch = sampler.next_batch(reader, resolution, n, None)?;
    let [n, c, h, w] = batch.shape;
    Ok(ImageSet {
        data: batch.data,
        n,
        c,
        h,
        w,
    })
}

/// A `pgan eval` request: a checkpoint measured against a dataset and/or a mode spec.
#[derive(Clone, Debug)]
pub struct EvalRequest {
    /// The checkpoint folder.
    pub checkpoint: std::path::PathBuf,
    /// The dataset for SWD and real MS-SSIM (optional when only modes are measured).
    pub data: Option<std::path::PathBuf>,
    /// Generated images (and as many reals).
    pub num_images: usize,
    /// Random pairs for MS-SSIM.
    pub msssim_pairs: usize,
    /// `modes.json` from `pgan synth`.
    pub modes: Option<std::path::PathBuf>,
    /// Truncation ψ.
    pub truncation: Option<f32>,
    /// Seed for latents and metrics.
    pub seed: u64,
    /// Print progress to stderr.
    pub progress: bool,
    /// FID / KID / precision-recall against every image of `data` (a `.pgan` file or a
    /// folder), over `num_images` generated images.
    pub feature_metrics: crate::inception_metrics::FeatureMetrics,
    /// The Inception weights file (used when `feature_metrics` asks for anything).
    pub inception: std::path::PathBuf,
    /// The colour under transparent pixels when `data` is an image folder.
    pub background: [u8; 3],
    /// A folder's images with more pixels than this are left out (`--max-pixels`).
    pub max_pixels: u64,
}

/// Everything `pgan eval` measured.
#[derive(Clone, Debug, Serialize)]
pub struct FullEvalReport {
    /// The checkpoint measured (absolute).
    #[serde(serialize_with = "crate::json_paths::path")]
    pub checkpoint: std::path::PathBuf,
    /// kimg at the checkpoint.
    pub kimg: f64,
    /// Resolution of the generated images.
    pub resolution: u32,
    /// Generated images used.
    pub num_images: usize,
    /// The dataset the reals came from (absolute), when one was used.
    #[serde(serialize_with = "crate::json_paths::optional_path")]
    pub data: Option<std::path::PathBuf>,
    /// The mode specification of the coverage measurement (absolute), when one was used.
    #[serde(serialize_with = "crate::json_paths::optional_path")]
    pub modes_spec: Option<std::path::PathBuf>,
    /// Latent truncation of the generated images (`None`: none).
    pub truncation: Option<f32>,
    /// Seed of the latents and of the reals drawn.
    pub seed: u64,
    /// Generated (and real) pairs the MS-SSIM averages (0 when it was not measured).
    pub msssim_pairs: usize,
    /// SWD generated vs real (×1e3, per level and mean).
    pub swd: Option<SwdReport>,
    /// SWD between two disjoint halves of the reals: the noise floor.
    pub swd_real_floor: Option<SwdReport>,
    /// Mean MS-SSIM of generated pairs.
    pub msssim_fake: Option<f64>,
    /// Mean MS-SSIM of real pairs.
    pub msssim_real: Option<f64>,
    /// Mode coverage against a synthetic mode spec.
    pub modes: Option<pgan_metrics::CoverageReport>,
    /// The same classification of as many reals: what a perfect generator would score with this
    /// classifier at this resolution (its ceiling; below 32x32 some shapes blur together).
    pub modes_real: Option<pgan_metrics::CoverageReport>,
    /// FID against every image of the dataset.
    pub fid: Option<f64>,
    /// KID (StyleGAN2-ADA's subsets).
    pub kid: Option<f64>,
    /// Precision (k = 3) on the Inception features.
    pub precision: Option<f64>,
    /// Recall (k = 3) on the Inception features.
    pub recall: Option<f64>,
    /// Reals behind FID/KID/precision/recall.
    pub num_real_features: Option<usize>,
    /// CRC-32 of the values of the Inception weights behind FID/KID/precision/recall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inception_weights_crc32: Option<String>,
    /// Reals of an image folder read with transparency, composited onto a background.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_composited: Option<crate::inception_metrics::Composited>,
    /// How the reals were read where it is not the obvious (printed as `note:` lines).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Each metric that could not be measured, and why.
    pub unmeasured: Vec<Unmeasured>,
    /// What makes a number above less trustworthy than it looks (printed as `warning:` lines).
    pub warnings: Vec<String>,
    /// Every image of a folder of reals left out because it could not be decoded (the warning
    /// names the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<crate::inception_metrics::LeftOut>,
    /// The units of the numbers above.
    pub units: Units,
}

/// The units of an evaluation's numbers, in its JSON so that a reader need not know the text
/// output's conventions. SWD is ×1e3, as the official ProGAN code and paper report it; KID is
/// raw, as StyleGAN2-ADA's JSON records it (the text output prints it ×1e3); the others are
/// raw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Units {
    /// `swd` and `swd_real_floor` (per level and mean).
    pub swd: &'static str,
    /// `fid`.
    pub fid: &'static str,
    /// `kid`.
    pub kid: &'static str,
    /// `msssim_fake`, `msssim_real`.
    pub msssim: &'static str,
    /// `precision`, `recall`.
    pub precision_recall: &'static str,
}

impl Default for Units {
    fn default() -> Self {
        Self {
            swd: "x1e3 (sliced Wasserstein distance times 1000)",
            fid: "raw",
            kid: "raw (the text output shows it x1e3)",
            msssim: "raw, 0..1",
            precision_recall: "fraction, 0..1",
        }
    }
}

/// A metric `pgan eval` could not measure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unmeasured {
    /// The JSON key of the metric (`swd`, `msssim_real`, `modes.kl_to_uniform`...).
    pub metric: String,
    /// Why it is missing.
    pub reason: String,
}

impl FullEvalReport {
    fn unmeasured(&mut self, metric: &str, reason: impl Into<String>) {
        self.unmeasured.push(Unmeasured {
            metric: metric.to_string(),
            reason: reason.into(),
        });
    }
}

impl std::fmt::Display for FullEvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "checkpoint {} ({:.1} kimg, {}x{}, {} images)",
            self.checkpoint.display(),
            self.kimg,
            self.resolution,
            self.resolution,
            self.num_images
        )?;
        if let Some(swd) = &self.swd {
            writeln!(
                f,
                "{:<28} {:>10} {:>12}",
                "SWD x1e3 (level)", "gen-real", "real-real"
            )?;
            for (i, (res, v)) in swd.levels.iter().enumerate() {
                let floor = self
                    .swd_real_floor
                    .as_ref()
                    .and_then(|r| r.levels.get(i))
                    .map(|l| format!("{:.2}", l.1))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "{:<28} {:>10.2} {:>12}",
                    format!("  {res}x{res}"),
                    v,
                    floor
                )?;
            }
            let floor = self
                .swd_real_floor
                .as_ref()
                .map(|r| format!("{:.2}", r.mean))
                .unwrap_or_default();
            writeln!(f, "{:<28} {:>10.2} {:>12}", "  mean", swd.mean, floor)?;
        }
        if let (Some(fake), Some(real)) = (self.msssim_fake, self.msssim_real) {
            writeln!(
                f,
                "MS-SSIM (lower = more diverse): generated {fake:.4}, real {real:.4}"
            )?;
        } else if let Some(fake) = self.msssim_fake {
            writeln!(f, "MS-SSIM (lower = more diverse): generated {fake:.4}")?;
        }
        if let Some(modes) = &self.modes {
            writeln!(f, "generated images:")?;
            write!(f, "{modes}")?;
        }
        if let Some(modes) = &self.modes_real {
            writeln!(f, "reals (the classifier's ceiling):")?;
            write!(f, "{modes}")?;
        }
        for u in &self.unmeasured {
            writeln!(f, "not measured: {}: {}", u.metric, u.reason)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if let Some(num_real) = self.num_real_features {
            let features = crate::inception_metrics::FeatureMetricsReport {
                fid: self.fid,
                kid: self.kid,
                precision: self.precision,
                recall: self.recall,
                num_real,
                num_fake: self.num_images,
                units: Default::default(),
                inception_weights_crc32: self.inception_weights_crc32.clone().unwrap_or_default(),
                real_composited: self.real_composited.clone(),
                fake_composited: None,
                real: None,
                fake: None,
                seed: None,
                notes: self.notes.clone(),
                // This report's warnings are printed above, with the others.
                warnings: Vec::new(),
                left_out: Vec::new(),
            };
            writeln!(f, "{features}")?;
        }
        Ok(())
    }
}

impl crate::backend::BackendJob for EvalRequest {
    type Output = FullEvalReport;
    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        device: B::Device,
    ) -> Result<FullEvalReport> {
        run_eval::<B::InnerBackend>(&self, &device)
    }
}

fn run_eval<B: Backend>(request: &EvalRequest, device: &B::Device) -> Result<FullEvalReport> {
    if let Some(psi) = request.truncation {
        crate::limits::check_truncation(psi).map_err(crate::error::TrainError::Request)?;
    }
    let loaded = load_generator::<B>(&request.checkpoint, false, device)?;
    let resolution = crate::schedule::resolution_of(loaded.state.stage);
    let say = |m: &str| {
        if request.progress {
            // Not `eprintln!`, which panics when stderr cannot be written.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{m}");
        }
    };
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut report = FullEvalReport {
        checkpoint: absolute(&request.checkpoint),
        kimg: loaded.state.images_shown as f64 / 1000.0,
        resolution,
        num_images: request.num_images,
        data: request.data.as_deref().map(absolute),
        modes_spec: request.modes.as_deref().map(absolute),
        truncation: request.truncation,
        seed: request.seed,
        msssim_pairs: request.msssim_pairs,
        swd: None,
        swd_real_floor: None,
        msssim_fake: None,
        msssim_real: None,
        modes: None,
        modes_real: None,
        fid: None,
        kid: None,
        precision: None,
        recall: None,
        num_real_features: None,
        inception_weights_crc32: None,
        real_composited: None,
        notes: Vec::new(),
        unmeasured: Vec::new(),
        warnings: Vec::new(),
        left_out: Vec::new(),
        units: Units::default(),
    };
    if request.feature_metrics.any() {
        let features = crate::inception_metrics::evaluate_checkpoint(request, &loaded, device)?;
        report.fid = features.fid;
        report.kid = features.kid;
        report.precision = features.precision;
        report.recall = features.recall;
        report.num_real_features = Some(features.num_real);
        report.inception_weights_crc32 = Some(features.inception_weights_crc32);
        report.real_composited = features.real_composited;
        report.notes = features.notes;
        report.warnings.extend(features.warnings);
        report.left_out = features.left_out;
        if request.feature_metrics.fid {
            report
                .warnings
                .extend(crate::inception_metrics::small_fid_sample(
                    request.num_images,
                ));
        }
        // The Inception metrics stream their images; SWD and MS-SSIM hold all of them in
        // memory, which a 50k-image FID cannot afford: they run in their own `pgan eval`.
        if request.modes.is_none() {
            let why = "measured by a `pgan eval` without --fid, --kid and --pr (those stream \
                       their images; SWD and MS-SSIM hold all of them in memory)";
            for metric in ["swd", "msssim_fake", "msssim_real"] {
                report.unmeasured(metric, why.to_string());
            }
            report.msssim_pairs = 0;
            return Ok(report);
        }
    }
    // Read once, checked before any image is generated, classified with at the end.
    let mode_spec = match &request.modes {
        Some(path) => Some((path, pgan_metrics::ModeSpec::load(path)?)),
        None => None,
    };
    if let Some((spec, modes)) = &mode_spec {
        if modes.resolution < MIN_MODES_RESOLUTION {
            return Err(crate::error::TrainError::Request(format!(
                "--modes {}: at {r}x{r} the mode classifier mistakes most squares for discs \
                 (its coverage of the reals themselves reads low and skewed); synthesize \
                 and evaluate at {m}x{m} or more",
                spec.display(),
                r = modes.resolution,
                m = MIN_MODES_RESOLUTION
            )));
        }
        if loaded.model.num_channels != 3 {
            return Err(crate::error::TrainError::Request(format!(
                "--modes {}: mode classification needs RGB images; the checkpoint \
                 generates {}-channel ones",
                spec.display(),
                loaded.model.num_channels
            )));
        }
        if let Some(warning) = too_few_for_the_modes(request.num_images, modes.modes) {
            report.warnings.push(warning);
        }
        if modes.resolution != resolution {
            return Err(crate::error::TrainError::Request(format!(
                "--modes {}: it describes {r}x{r} images and the checkpoint generates \
                 {resolution}x{resolution}; evaluate a checkpoint of the synth dataset's \
                 resolution",
                spec.display(),
                r = modes.resolution
            )));
        }
    }
    let pairs = request.num_images.saturating_mul(request.num_images - 1) / 2;
    if request.msssim_pairs > pairs {
        return Err(crate::error::TrainError::Request(format!(
            "--pairs {}: {} images make {pairs} distinct pairs",
            request.msssim_pairs, request.num_images
        )));
    }
    // What stays in memory, checked before any image is generated: the generated images and,
    // with a dataset, twice as many reals and the SWD descriptors of two sets; the MS-SSIM pair
    // list.
    // Reals come from a .pgan dataset only (an image folder serves the Inception metrics): at
    // the peak the generated images, twice as many reals and their two halves split off.
    let with_reals = request.data.as_ref().is_some_and(|p| !p.is_dir());
    let n = request.num_images;
    let held = evaluation_bytes(
        if with_reals { n.saturating_mul(4) } else { n },
        if with_reals { n } else { 0 },
        request.msssim_pairs,
        loaded.model.num_channels,
        resolution,
    );
    let what = if with_reals {
        "SWD, MS-SSIM and mode coverage hold the generated images, three times as many reals \
         (two draws as they are split), SWD's descriptors and the MS-SSIM pair list in memory:"
    } else {
        "SWD, MS-SSIM and mode coverage hold the generated images and the MS-SSIM pair list in \
         memory:"
    };
    crate::limits::check_fits(held, what).map_err(|message| {
        crate::error::TrainError::Request(format!(
            "--num {} --pairs {}: {message}",
            request.num_images, request.msssim_pairs
        ))
    })?;
    say(&format!(
        "generating {} images at {resolution}x{resolution}",
        request.num_images
    ));
    let fakes = generate(
        &loaded.generator,
        &loaded.model,
        loaded.state.stage,
        loaded.state.alpha,
        request.num_images,
        request.seed,
        64,
        request.truncation,
        device,
        Watch::default(),
    )?;
    let min_msssim = pgan_metrics::msssim::MIN_SIZE;
    let msssim = request.msssim_pairs > 0 && resolution as usize >= min_msssim;
    let msssim_reason = if request.msssim_pairs == 0 {
        "no pairs requested (--pairs 0)".to_string()
    } else {
        format!(
            "MS-SSIM needs images of at least {min_msssim}x{min_msssim} (five scales); the \
             checkpoint generates {resolution}x{resolution}"
        )
    };
    if !msssim {
        report.unmeasured("msssim_fake", msssim_reason.clone());
        report.msssim_pairs = 0;
    }
    if msssim {
        say("MS-SSIM of generated pairs");
        report.msssim_fake = Some(measured_ms_ssim(
            &fakes,
            request,
            "generated",
            &mut report.warnings,
        )?);
    }
    let mut reals_for_modes = None;
    // SWD, MS-SSIM and modes compare with a .pgan dataset; an image folder is for the
    // Inception metrics only.
    if let Some(path) = request.data.as_ref().filter(|p| !p.is_dir()) {
        let reader = PyramidReader::open(path)?;
        report.warnings.extend(reader.trailing_bytes_warning());
        if reader.resolution() < resolution {
            return Err(crate::error::TrainError::Dataset {
                path: path.clone(),
                message: format!(
                    "its resolution {} is below the checkpoint's {resolution}",
                    reader.resolution()
                ),
            });
        }
        // A level changed in place (same size) would be measured against silently. Its
        // checksum covers the whole level: beyond a few GiB, reading it would cost more than
        // the evaluation, and `pgan verify` is the tool for it.
        let level_bytes = reader.levels_len(|r| r == resolution);
        if level_bytes <= crate::limits::LEVEL_CHECK_BYTES {
            say(&format!(
                "checking the {resolution}x{resolution} level's checksum"
            ));
            reader.verify_level(resolution)?;
        } else {
            report.warnings.push(format!(
                "{}: the {resolution}x{resolution} level ({:.1} GiB) was read without checking \
                 its checksum (`pgan verify` checks every level)",
                path.display(),
                level_bytes as f64 / (1u64 << 30) as f64
            ));
        }
        let current = crate::checkpoint::DatasetFingerprint::of(&reader);
        if let Some(trained) = loaded
            .state
            .dataset
            .as_ref()
            .filter(|t| !t.matches(&current))
        {
            report.warnings.push(format!(
                "{} is not the dataset the checkpoint trained on ({} images, content CRC \
                 {:#010x}; this one: {} images, {:#010x}): the metrics compare the generator \
                 with other reals",
                path.display(),
                trained.images,
                trained.content_crc32(),
                current.images,
                current.content_crc32()
            ));
        }
        // Two disjoint draws of reals: one to compare with, one for the noise floor.
        let reals = real_images(&reader, resolution, 2 * request.num_images, request.seed)?;
        // Below it neither SWD nor MS-SSIM measures a real: no word on their draws.
        if reader.len() < 2 * request.num_images && resolution >= MIN_EVAL_RESOLUTION {
            // The draw is a shuffled pass over the dataset, then another: the first `--num`
            // reals repeat only when the dataset holds fewer.
            let repeats = if reader.len() < request.num_images {
                ", and the reals repeat within the first draw, so their MS-SSIM reads high \
                 (a repeated pair scores 1)"
            } else {
                ""
            };
            // --num is at least 2: a dataset of fewer than 4 images has no --num that does.
            let remedy = if reader.len() >= 4 {
                format!("--num {} or less keeps them apart", reader.len() / 2)
            } else {
                "no --num keeps them apart in a dataset of fewer than 4 images (--num is at \
                 least 2)"
                    .to_string()
            };
            report.warnings.push(format!(
                "{} holds {} images, fewer than the {} reals drawn (--num {} to compare with, as \
                 many for the real-vs-real floor): the two draws share images, so the SWD floor \
                 reads low{repeats}; {remedy}",
                path.display(),
                reader.len(),
                2 * request.num_images,
                request.num_images,
            ));
        }
        let (a, b) = split_half(reals);
        if resolution >= MIN_SWD_RESOLUTION {
            let cfg = SwdConfig {
                seed: request.seed,
                ..SwdConfig::default()
            };
            say("SWD generated vs real");
            report.swd = Some(sliced_wasserstein(&a, &fakes, &cfg)?);
            say("SWD real vs real (noise floor)");
            report.swd_real_floor = Some(sliced_wasserstein(&a, &b, &cfg)?);
        } else {
            report.unmeasured(
                "swd",
                format!(
                    "SWD needs images of at least {MIN_SWD_RESOLUTION}x{MIN_SWD_RESOLUTION} (its \
                     Laplacian pyramid and 7x7 descriptors); the checkpoint generates \
                     {resolution}x{resolution}"
                ),
            );
        }
        if msssim {
            say("MS-SSIM of real pairs");
            report.msssim_real = Some(measured_ms_ssim(&a, request, "real", &mut report.warnings)?);
        } else {
            report.unmeasured("msssim_real", msssim_reason);
        }
        reals_for_modes = Some(a);
    } else {
        let reason = match &request.data {
            Some(folder) => format!(
                "{} is an image folder, which serves --fid, --kid and --pr only: SWD and \
                 MS-SSIM compare with a .pgan dataset (pgan prepare)",
                folder.display()
            ),
            None => "no dataset to compare with: pass --data FILE.pgan".to_string(),
        };
        report.unmeasured("swd", reason.clone());
        report.unmeasured("msssim_real", reason);
    }
    if let Some((_, spec)) = &mode_spec {
        say("classifying modes");
        let classifier = pgan_metrics::ModeClassifier::from_spec(spec)?;
        report.modes = Some(pgan_metrics::coverage(&classifier, &fakes)?);
        if let Some(reals) = &reals_for_modes {
            let real = pgan_metrics::coverage(&classifier, reals)?;
            if real.unrecognised * 2 > real.samples {
                report.warnings.push(format!(
                    "only {} of {} reals from {} were recognised as modes of --modes {}: is \
                     that dataset the one `pgan synth` wrote with this spec? The reals' coverage \
                     (the classifier's ceiling) means nothing otherwise",
                    real.samples - real.unrecognised,
                    real.samples,
                    request
                        .data
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display(),
                    request
                        .modes
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display()
                ));
            }
            report.modes_real = Some(real);
        }
        let no_histogram: Vec<&str> =
            [("modes", &report.modes), ("modes_real", &report.modes_real)]
                .into_iter()
                .filter(|(_, c)| c.as_ref().is_some_and(|c| !c.kl_to_uniform.is_finite()))
                .map(|(key, _)| key)
                .collect();
        for key in no_histogram {
            let reason = "no image was recognised as any mode, so there is no histogram";
            report.unmeasured(&format!("{key}.kl_to_uniform"), reason);
        }
    }
    Ok(report)
}

/// A warning when `images` are too few to show a perfect generator covering all `modes`: with
/// `n` uniform draws the expected share of the `K` modes drawn at least once is
/// `1 - (1 - 1/K)^n`, and below 99 % a low coverage says more about `--num` than about the
/// generator.
fn too_few_for_the_modes(images: usize, modes: usize) -> Option<String> {
    if modes <= 1 {
        return None;
    }
    let miss = 1.0 - 1.0 / modes as f64;
    let expected = 1.0 - miss.powf(images as f64);
    // The smallest n with 1 - (1 - 1/K)^n >= 0.99.
    let enough = (0.01f64.ln() / miss.ln()).ceil() as usize;
    (expected < 0.99).then(|| {
        format!(
            "--num {images} against {modes} modes: even a generator that draws every mode \
             equally often covers only about {:.1} % of them with {images} images, by chance; \
             use --num {enough} or more for the coverage to speak for the generator",
            expected * 100.0
        )
    })
}

/// The mean MS-SSIM of `request.msssim_pairs` pairs of `images`, with a warning when many of
/// them clipped to 0 (`what`: generated or real).
fn measured_ms_ssim(
    images: &ImageSet,
    request: &EvalRequest,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<f64> {
    let report = pairwise_ms_ssim(images, request.msssim_pairs, request.seed)?;
    warnings.extend(report.clipping_note(what));
    Ok(report.mean)
}

/// The first and second half of an image set.
/// The first and second halves of `set` (an odd last image dropped), without a third copy: the
/// second half is copied out, then the first shrinks in place.
fn split_half(set: ImageSet) -> (ImageSet, ImageSet) {
    let half = set.n / 2;
    let per = set.c * set.h * set.w;
    let (c, h, w) = (set.c, set.h, set.w);
    let mut first = set.data;
    let mut second = first.split_off(half * per);
    second.truncate(half * per);
    second.shrink_to_fit();
    first.shrink_to_fit();
    let set = |data: Vec<f32>| ImageSet {
        data,
        n: half,
        c,
        h,
        w,
    };
    (set(first), set(second))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, ModuleMapper, Param};

    type B = burn::backend::Flex;

    /// Weights near f32's largest value: finite (the checkpoint loader's finiteness check
    /// passes them), with activations that overflow.
    struct Huge;
    impl ModuleMapper<B> for Huge {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            param.map(|t| t.ones_like().mul_scalar(3e38))
        }
    }

    #[test]
    fn an_evaluations_memory_counts_swd_descriptors_and_the_pair_list() {
        // 16x16 RGB: 3 KiB per image, and one SWD level of 128 patches of 7x7x3 floats
        // (73.5 KiB) in five copies.
        let per_image = 3 * 16 * 16 * 4;
        let swd = 5 * 128 * 7 * 7 * 3 * 4;
        assert_eq!(
            evaluation_bytes(4000, 1000, 10, 3, 16),
            4000 * per_image + 1000 * swd + 10 * 48
        );
        assert_eq!(evaluation_bytes(1000, 0, 10, 3, 16), 1000 * per_image + 480);
        // Below 16x16 neither SWD nor MS-SSIM is measured: only the images count.
        assert_eq!(evaluation_bytes(4000, 1000, 10, 3, 8), 4000 * 3 * 64 * 4);
        // A pair list no machine holds is counted, not allocated.
        assert!(evaluation_bytes(100_000, 0, 4_999_949_999, 3, 16) > 200 << 30);
    }

    #[test]
    fn halves_of_a_draw_are_its_first_and_second_images() {
        let set = ImageSet {
            data: (0..5 * 2).map(|v| v as f32).collect(),
            n: 5,
            c: 1,
            h: 1,
            w: 2,
        };
        let (a, b) = split_half(set);
        assert_eq!((a.n, a.data), (2, vec![0.0, 1.0, 2.0, 3.0]));
        assert_eq!((b.n, b.data), (2, vec![4.0, 5.0, 6.0, 7.0]));
    }

    /// A generator whose images are not finite is refused with what is wrong (the first batch:
    /// 2 images of 3 x 8 x 8 values), not measured as
    /// an SWD of NaN and an MS-SSIM of 0 (nor drawn black by render, which shares the check).
    #[test]
    fn non_finite_images_are_refused_not_measured() {
        let device = Default::default();
        let model = ModelConfig::cpu_small(8)
            .with_latent_dim(8)
            .with_fmap_base(16)
            .with_fmap_max(8);
        let draw = |g: &Generator<B>| {
            generate(g, &model, 1, 1.0, 5, 0, 2, None, &device, Watch::default())
        };
        let sound = model.init_generator::<B>(&device);
        assert_eq!(draw(&sound).unwrap().n, 5);
        let err = draw(&sound.map(&mut Huge)).unwrap_err();
        assert!(
            matches!(err, TrainError::NonFiniteImages { count, total: 384 } if count > 0),
            "{err}"
        );
        assert!(err.to_string().contains("has diverged"), "{err}");
    }
}
