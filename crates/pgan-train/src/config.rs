//! `TrainConfig`: every knob of a run, read from a TOML file in `configs/`, overridden by CLI flags,
//! validated once, and saved resolved as `RUN_DIR/config.toml`.
//!
//! Defaults live in one place, the `Default` impls below; every section rejects unknown keys so a
//! typo in a config file is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The most kimg a schedule length may be: a trillion images, far beyond any run and within
/// the u64 image counter.
pub const MAX_KIMG: f64 = 1e9;

/// `value` as the f32 a key holds, or why it has none: beyond f32's range (it would read as
/// infinity), or nonzero and below f32's smallest normal number (it would read as 0 or lose
/// its precision, and a penalty of 1e-300 would silently be off). NaN and infinity pass, for
/// each key's own check to name.
pub fn to_f32(value: f64) -> std::result::Result<f32, String> {
    // Judged by the conversion itself: f32::MAX as Rust prints it rounds to f32::MAX.
    let single = value as f32;
    if value.is_finite() && single.is_infinite() {
        return Err(format!("{value:e} is beyond f32's range (±{:e})", f32::MAX));
    }
    if value.is_finite() && value != 0.0 && !single.is_normal() {
        return Err(format!(
            "{value:e} is below f32's smallest normal number ({:e}); write 0 for none",
            f32::MIN_POSITIVE
        ));
    }
    Ok(single)
}

/// Reads an f32 key through [`to_f32`], so that a value f32 cannot hold is an error at its line.
fn f32_key<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    to_f32(f64::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// The whole configuration of a training run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Run-level settings: seed, output, ticks, checkpoints, samples, backend.
    pub run: RunConfig,
    /// Dataset and augmentation.
    pub data: DataConfig,
    /// Network widths and maximum resolution.
    pub model: ModelSection,
    /// Resolution schedule, minibatch and learning-rate tables.
    pub schedule: ScheduleConfig,
    /// GAN loss and its penalty.
    pub loss: LossConfig,
    /// Gaussian noise on the discriminator's inputs, annealed to zero.
    pub instance_noise: InstanceNoiseConfig,
    /// Adam settings shared by G and D.
    pub optim: OptimConfig,
    /// Exponential moving average of the generator weights.
    pub ema: EmaConfig,
    /// Metrics computed during training.
    pub eval: EvalConfig,
    /// Warnings for the known GAN failure modes.
    pub alarms: AlarmConfig,
    /// What to do when a loss or weight goes NaN/Inf.
    pub recovery: RecoveryConfig,
    /// Training on several machines (nodes), joined through `pgan orchestrator`.
    pub nodes: NodesConfig,
}

/// Run-level settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Seed for weight init, latents, sampling order and penalties.
    pub seed: u64,
    /// Parent folder of run directories (`NNNNN-<desc>/` is created inside).
    pub out_dir: PathBuf,
    /// Optional description appended to the run directory name.
    pub desc: Option<String>,
    /// `cpu`, `wgpu` or `cuda`.
    pub backend: BackendKind,
    /// Operand type of the convolutions: `f32` (default) or `bf16` (bf16 inputs, f32
    /// accumulation and outputs; weights, Adam state, EMA, losses and penalty norms stay f32).
    /// `bf16` needs the `cuda` backend.
    pub precision: Precision,
    /// Device index for `wgpu`/`cuda`.
    pub device: usize,
    /// Data-parallel training: one peer per listed device index (`--devices 0,1`), the
    /// minibatch split evenly between them. Empty or one entry: one device (`run.device`).
    /// On the CPU every index is the same CPU.
    pub devices: Vec<usize>,
    /// Length of a tick (one status line, one metrics.jsonl row) in kimg.
    pub tick_kimg: f64,
    /// Write a checkpoint every this many ticks.
    pub checkpoint_ticks: u64,
    /// Keep this many most recent checkpoints.
    pub keep_checkpoints: usize,
    /// Write a sample grid every this many ticks (0 counts as 1).
    pub sample_ticks: u64,
    /// Sample grid rows.
    pub sample_rows: usize,
    /// Sample grid columns.
    pub sample_cols: usize,
    /// Cells of the sample grid are upscaled (nearest) to at least this many pixels.
    pub sample_cell_px: u32,
    /// Show a terminal progress bar.
    pub progress: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            out_dir: PathBuf::from("runs"),
            desc: None,
            backend: BackendKind::Cpu,
            precision: Precision::F32,
            device: 0,
            devices: Vec::new(),
            // Official ProGAN: tick_kimg_base = 160 on 8 GPUs; a smaller tick suits one device.
            tick_kimg: 20.0,
            checkpoint_ticks: 5,
            keep_checkpoints: 3,
            sample_ticks: 1,
            sample_rows: 6,
            sample_cols: 8,
            sample_cell_px: 64,
            progress: true,
        }
    }
}

/// Which compute backend runs the training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn's `flex` CPU backend (always compiled in).
    Cpu,
    /// burn's wgpu backend (cargo feature `wgpu`).
    Wgpu,
    /// burn's CUDA backend (cargo feature `cuda`).
    Cuda,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown backend '{other}' (expected cpu, wgpu or cuda)"
            )),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

/// The convolutions' operand type (`run.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    F32,
    /// bf16 convolution inputs with f32 accumulation (cuda only).
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown precision '{other}' (expected f32 or bf16)"
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// Dataset and augmentation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The `.pgan` pyramid made by `pgan prepare`.
    pub path: Option<PathBuf>,
    /// Random horizontal flips of the reals (official ProGAN `mirror_augment`).
    pub mirror: bool,
}

/// Network configuration: a preset plus optional overrides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// `paper` (fmap_base 8192, fmap_max 512, latent 512) or `cpu-small` (2048, 128, 128).
    pub preset: ModelPreset,
    /// Final resolution (power of two, 4..=1024).
    pub resolution: u32,
    /// Overrides the preset's latent size.
    pub latent_dim: Option<usize>,
    /// Overrides the preset's `fmap_base`.
    pub fmap_base: Option<usize>,
    /// Overrides the preset's `fmap_decay`.
    pub fmap_decay: Option<f64>,
    /// Overrides the preset's `fmap_max`.
    pub fmap_max: Option<usize>,
    /// Minibatch-stddev group size (0 or 1 switches the layer off).
    pub mbstd_group_size: Option<usize>,
    /// D's minibatch layer: `stddev` (the default, the paper's), `discrimination`
    /// (Salimans et al. 2016) or `none`.
    pub minibatch: Option<pgan_model::Minibatch>,
    /// Minibatch discrimination's number of kernels B (default 100, the reference code's).
    pub mbdisc_kernels: Option<usize>,
    /// Minibatch discrimination's kernel dimension C (default 5, the reference code's).
    pub mbdisc_kernel_dim: Option<usize>,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            preset: ModelPreset::Paper,
            resolution: 512,
            latent_dim: None,
            fmap_base: None,
            fmap_decay: None,
            fmap_max: None,
            mbstd_group_size: None,
            minibatch: None,
            mbdisc_kernels: None,
            mbdisc_kernel_dim: None,
        }
    }
}

/// Named network-width presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelPreset {
    /// The paper's widths.
    Paper,
    /// Narrow networks for CPU runs.
    CpuSmall,
}

/// Resolution schedule (official ProGAN `TrainingSchedule` semantics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Resolution training starts at.
    pub start_resolution: u32,
    /// kimg to stabilize each resolution.
    pub lod_training_kimg: f64,
    /// kimg to fade in each new resolution.
    pub lod_transition_kimg: f64,
    /// Length of the whole run in kimg.
    pub total_kimg: f64,
    /// Minibatch per resolution, keys are resolutions (`"4" = 128`).
    pub minibatch: BTreeMap<String, usize>,
    /// Minibatch for resolutions missing from the table.
    pub minibatch_default: usize,
    /// Learning rate per resolution (G and D).
    pub lr: BTreeMap<String, f64>,
    /// Learning rate for resolutions missing from the table.
    pub lr_default: f64,
    /// Reset Adam's moments whenever a fade starts or ends (official `reset_opt_for_new_lod`).
    pub reset_optimizer: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            start_resolution: 4,
            // Official ProGAN defaults (train.py `sched` and `train`).
            lod_training_kimg: 600.0,
            lod_transition_kimg: 600.0,
            total_kimg: 15000.0,
            minibatch: BTreeMap::new(),
            minibatch_default: 16,
            lr: BTreeMap::new(),
            lr_default: 0.001,
            reset_optimizer: true,
        }
    }
}

impl ScheduleConfig {
    /// Minibatch size at `resolution`.
    pub fn batch_for(&self, resolution: u32) -> usize {
        self.minibatch
            .get(&resolution.to_string())
            .copied()
            .unwrap_or(self.minibatch_default)
    }

    /// Learning rate at `resolution`.
    pub fn lr_for(&self, resolution: u32) -> f64 {
        self.lr
            .get(&resolution.to_string())
            .copied()
            .unwrap_or(self.lr_default)
    }
}

/// The GAN loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// `wgan-gp` (paper default), `logistic-r1`, `non-saturating` or `minimax`.
    pub kind: LossKind,
    /// WGAN-GP weight λ (Gulrajani et al. 2017; ProGAN uses 10).
    #[serde(deserialize_with = "f32_key")]
    pub gp_lambda: f32,
    /// Drift penalty ε·D(real)² (ProGAN section A.1: ε = 0.001).
    #[serde(deserialize_with = "f32_key")]
    pub drift_epsilon: f32,
    /// R1 weight γ (Mescheder et al. 2018).
    #[serde(deserialize_with = "f32_key")]
    pub r1_gamma: f32,
    /// Target of the reals in the logistic D losses (`logistic-r1`, `non-saturating`,
    /// `minimax`); below 1 it is one-sided label smoothing (Salimans et al. 2016).
    #[serde(deserialize_with = "f32_key")]
    pub real_label: f32,
    /// Weight of the feature-matching term added to G's loss (Salimans et al. 2016), the
    /// squared distance between the reals' and the fakes' mean features in D's last hidden
    /// layer; 0 switches it off.
    #[serde(deserialize_with = "f32_key")]
    pub feature_matching: f32,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::WganGp,
            gp_lambda: 10.0,
            drift_epsilon: 0.001,
            r1_gamma: 10.0,
            real_label: 1.0,
            feature_matching: 0.0,
        }
    }
}

/// Which GAN objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Wasserstein loss + gradient penalty + drift (the paper's).
    WganGp,
    /// Non-saturating logistic loss + R1 penalty on reals.
    LogisticR1,
    /// The non-saturating ("modified minimax") logistic loss without a penalty: G maximises
    /// log D(G(z)) (Goodfellow et al. 2014, section 3).
    NonSaturating,
    /// The original, saturating minimax loss: G minimises log(1 − D(G(z))), whose gradient
    /// vanishes when D rejects the fakes confidently (Goodfellow et al. 2014, eq. 1).
    Minimax,
}

impl LossKind {
    /// The config spelling of each kind, in the order the docs list them.
    pub const NAMES: [&'static str; 4] = ["wgan-gp", "logistic-r1", "non-saturating", "minimax"];

    /// The config spelling of this kind.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// True for the losses on D's logits (sigmoid cross-entropy), which `loss.real_label`
    /// applies to.
    pub fn is_logistic(self) -> bool {
        !matches!(self, Self::WganGp)
    }
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "wgan-gp" => Ok(Self::WganGp),
            "logistic-r1" => Ok(Self::LogisticR1),
            "non-saturating" => Ok(Self::NonSaturating),
            "minimax" => Ok(Self::Minimax),
            other => Err(format!(
                "unknown loss '{other}' (expected {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Instance noise (Sønderby et al. 2017; Arjovsky & Bottou 2017): `N(0, σ²)` added to every
/// image D sees, reals and fakes alike, in the D and the G step, with σ falling linearly from
/// `sigma` at kimg 0 to 0 at `anneal_kimg`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceNoiseConfig {
    /// σ at the start of the run, in pixel units (images are in [-1, 1]); 0 switches it off.
    pub sigma: f64,
    /// kimg over which σ falls to 0 (must be positive when `sigma` is).
    pub anneal_kimg: f64,
}

/// Adam, shared by G and D (ProGAN: β1 = 0, β2 = 0.99, ε = 1e-8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// First-moment decay.
    #[serde(deserialize_with = "f32_key")]
    pub beta1: f32,
    /// Second-moment decay.
    #[serde(deserialize_with = "f32_key")]
    pub beta2: f32,
    /// Denominator epsilon (burn's default is 1e-5; the paper uses 1e-8).
    #[serde(deserialize_with = "f32_key")]
    pub epsilon: f32,
    /// The generator's learning rate is the schedule's times this (TTUR, Heusel et al. 2017).
    pub lr_g_mult: f64,
    /// The discriminator's learning rate is the schedule's times this.
    pub lr_d_mult: f64,
    /// Discriminator updates per generator update, each on its own minibatch of reals (official
    /// ProGAN `D_repeats`: every D step counts its reals as shown).
    pub d_steps: u32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            beta1: 0.0,
            beta2: 0.99,
            epsilon: 1e-8,
            lr_g_mult: 1.0,
            lr_d_mult: 1.0,
            d_steps: 1,
        }
    }
}

/// Generator weight averaging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaConfig {
    /// Per-step decay (official ProGAN `G_smoothing` = 0.999).
    pub beta: f64,
    /// If set, the decay is derived per step from a half-life in kimg instead.
    pub half_life_kimg: Option<f64>,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            beta: 0.999,
            half_life_kimg: None,
        }
    }
}

impl EmaConfig {
    /// The decay to use for one step that shows `batch` images.
    pub fn beta_for_batch(&self, batch: usize) -> f64 {
        match self.half_life_kimg {
            Some(h) if h > 0.0 => 0.5f64.powf(batch as f64 / (h * 1000.0)),
            _ => self.beta,
        }
    }
}

/// Metrics computed during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every this many kimg (0 switches it off).
    pub every_kimg: f64,
    /// Generated and real images per evaluation.
    pub num_images: usize,
    /// Random pairs for MS-SSIM diversity.
    pub msssim_pairs: usize,
    /// Compute FID every this many kimg (0 switches it off); needs the Inception weights
    /// (`scripts/fetch-inception.sh`, or `PGAN_INCEPTION`).
    pub fid_every_kimg: f64,
    /// Generated images per FID, against every real image of the current resolution (0
    /// switches it off).
    pub fid_num: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every_kimg: 0.0,
            num_images: 256,
            msssim_pairs: 128,
            fid_every_kimg: 0.0,
            fid_num: 5000,
        }
    }
}

impl EvalConfig {
    /// True when FID is computed during training.
    pub fn fid_enabled(&self) -> bool {
        self.fid_every_kimg > 0.0 && self.fid_num > 0
    }

    /// The MS-SSIM pairs an evaluation measures: `msssim_pairs`, or every distinct pair of
    /// `num_images` when they make fewer.
    pub fn msssim_pairs_measured(&self) -> usize {
        let pairs = self
            .num_images
            .saturating_mul(self.num_images.saturating_sub(1))
            / 2;
        self.msssim_pairs.min(pairs)
    }

    /// Said when `msssim_pairs` asks for more pairs than `num_images` make (a run's setting,
    /// kept: older runs were written with the default beside few images).
    pub fn fewer_pairs_warning(&self) -> Option<String> {
        let measured = self.msssim_pairs_measured();
        (self.every_kimg > 0.0 && measured < self.msssim_pairs).then(|| {
            format!(
                "eval.msssim_pairs {}: eval.num_images {} make {measured} distinct pairs, so \
                 MS-SSIM measures those {measured}",
                self.msssim_pairs, self.num_images
            )
        })
    }
}

/// The widest layer (and latent) a config may ask for: 16x the paper's 512.
pub const MAX_WIDTH: usize = 8192;

/// The largest minibatch per step a config may ask for, far above any published schedule's: a
/// larger one is a typo that would exhaust memory before the first step.
pub const MAX_MINIBATCH: usize = 4096;

/// Thresholds of the failure-mode warnings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmConfig {
    /// Warn when |D(real) − D(fake)| averaged over a tick exceeds this (imbalance/divergence).
    pub max_d_gap: f64,
    /// Warn when the generator's gradient norm averaged over a tick falls below this.
    pub min_g_grad_norm: f64,
    /// Warn when the generator's gradient norm averaged over a tick falls below this fraction of
    /// its largest tick average in the run (0 turns the test off).
    pub min_g_grad_ratio: f64,
    /// Collapse alarm: generated-pair MS-SSIM exceeds both the reals' and its own lowest value
    /// at the same resolution by more than this (diversity has dropped).
    pub msssim_margin: f64,
    /// Collapse alarm: generated-pair MS-SSIM exceeds the reals' by more than this once the
    /// grace period is over (the generator never became diverse).
    pub msssim_gap: f64,
    /// Collapse alarm: kimg after a resolution's fade-in ends before `msssim_gap` is applied
    /// (a freshly grown generator loses diversity for a while, then regains it).
    pub collapse_grace_kimg: f64,
    /// Collapse alarm: judged evaluations in a row that must show a sign before it fires (one
    /// evaluation's MS-SSIM is an estimate from a few dozen pairs).
    pub collapse_confirm_evals: u32,
    /// Collapse alarm: SWD rises to more than this factor of the best value seen at the same
    /// resolution.
    pub swd_jump_factor: f64,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        // The collapse thresholds were chosen on the logged evaluations of
        // `scripts/bench_remedies.sh` and checked on new runs of it (docs/BENCHMARKS.md, "GAN
        // remedies and the alarms"; how they were chosen: docs/bench-log.md).
        Self {
            max_d_gap: 100.0,
            min_g_grad_norm: 1e-6,
            // Saturated runs fell 1e-5 to 1e-22 below their peak, healthy ones never below 0.08
            // of it (docs/BENCHMARKS.md, "GAN remedies and the alarms").
            min_g_grad_ratio: 1e-3,
            msssim_margin: 0.15,
            msssim_gap: 0.35,
            collapse_grace_kimg: 3.0,
            collapse_confirm_evals: 2,
            swd_jump_factor: 2.0,
        }
    }
}

impl AlarmConfig {
    /// Thresholds that can fire: positive, finite, and at least one evaluation to confirm.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(TrainError::Config {
                path: None,
                message,
            })
        };
        let positive = [
            ("max_d_gap", self.max_d_gap),
            ("msssim_margin", self.msssim_margin),
            ("msssim_gap", self.msssim_gap),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return bad(format!("alarms.{name} {value} must be positive"));
            }
        }
        let non_negative = [
            ("min_g_grad_norm", self.min_g_grad_norm),
            ("collapse_grace_kimg", self.collapse_grace_kimg),
        ];
        for (name, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return bad(format!("alarms.{name} {value} must be 0 or more"));
            }
        }
        if !(self.min_g_grad_ratio.is_finite() && (0.0..1.0).contains(&self.min_g_grad_ratio)) {
            return bad(format!(
                "alarms.min_g_grad_ratio {} must be 0 or more and below 1 (a fraction of the \
                 run's peak gradient norm; 0 turns the test off)",
                self.min_g_grad_ratio
            ));
        }
        if !(self.swd_jump_factor.is_finite() && self.swd_jump_factor > 1.0) {
            return bad(format!(
                "alarms.swd_jump_factor {} must be above 1 (a factor of the best SWD)",
                self.swd_jump_factor
            ));
        }
        if self.collapse_confirm_evals == 0 {
            return bad("alarms.collapse_confirm_evals must be at least 1".into());
        }
        Ok(())
    }
}

/// NaN/Inf handling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Stop after this many rollbacks without a successful checkpoint in between.
    pub max_consecutive_failures: u32,
    /// Learning-rate multiplier applied after each rollback.
    pub lr_factor: f64,
    /// How long (kimg) the reduced learning rate lasts.
    pub cooldown_kimg: f64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            max_consecutive_failures: 3,
            lr_factor: 0.5,
            cooldown_kimg: 10.0,
        }
    }
}

/// The longest `nodes.join_timeout_s` / `peer_timeout_s` accepted: a week.
pub const MAX_NODE_TIMEOUT_S: f64 = 7.0 * 24.0 * 3600.0;

/// Training on several machines: `count` nodes, each running `pgan train` with its own rank
/// and its own copy of the dataset, all-reducing gradients through burn-collective once
/// `orchestrator` (a `pgan orchestrator`) has seen them all join.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodesConfig {
    /// Nodes taking part (1: this machine only).
    pub count: usize,
    /// This node's rank, `0..count`; every rank exactly once.
    pub rank: usize,
    /// `HOST:PORT` of the `pgan orchestrator` all nodes join.
    pub orchestrator: Option<String>,
    /// `HOST:PORT` where this node serves its gradient slices to the others (burn-collective's
    /// tensor data service). Default: the address this machine reaches the orchestrator from,
    /// port orchestrator's + 1 + 2 x rank (each node also uses the port after it).
    pub address: Option<String>,
    /// Seconds to wait for all nodes to join (and pass the join check) before giving up.
    pub join_timeout_s: f64,
    /// Seconds a node waits in one gradient all-reduce for the others before it declares a
    /// node lost and stops. Must exceed the longest gap between two steps of the slowest node
    /// (a tick end's evaluation and checkpoint included).
    pub peer_timeout_s: f64,
}

impl Default for NodesConfig {
    fn default() -> Self {
        Self {
            count: 1,
            rank: 0,
            orchestrator: None,
            address: None,
            join_timeout_s: 300.0,
            peer_timeout_s: 50.0,
        }
    }
}

impl NodesConfig {
    /// Whether the run spans several nodes.
    pub fn several(&self) -> bool {
        self.count > 1
    }

    /// Checks the keys; the message names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(TrainError::Config {
                path: None,
                message,
            })
        };
        if self.count == 0 {
            return bad("nodes.count must be at least 1".into());
        }
        if self.rank >= self.count {
            return bad(format!(
                "nodes.rank {} must be below nodes.count {} (ranks are 0..{})",
                self.rank, self.count, self.count
            ));
        }
        for (name, v) in [
            ("nodes.join_timeout_s", self.join_timeout_s),
            ("nodes.peer_timeout_s", self.peer_timeout_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} {v} must be a positive number of seconds"));
            }
            // A week: longer is no timeout at all (and overflows the clock's arithmetic).
            if v > MAX_NODE_TIMEOUT_S {
                return bad(format!(
                    "{name} {v} is more than {MAX_NODE_TIMEOUT_S} seconds (a week)"
                ));
            }
        }
        if self.several() && self.orchestrator.is_none() {
            return bad(format!(
                "nodes.count {} needs nodes.orchestrator (--orchestrator HOST:PORT of a running \
                 `pgan orchestrator`)",
                self.count
            ));
        }
        for (name, v) in [
            ("nodes.orchestrator", &self.orchestrator),
            ("nodes.address", &self.address),
        ] {
            if let Some(v) = v {
                match crate::distributed::split_host_port(v) {
                    None => return bad(format!("{name} '{v}' is not HOST:PORT")),
                    // Port 0 means "any port" to the OS: the other nodes could not be told it.
                    Some((_, 0)) => {
                        return bad(format!(
                            "{name} '{v}': port 0 cannot be reached; give a port"
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// The longest config file read: a written one is a few kilobytes (a run's `config.toml` spells
/// every key out in under 4 KiB); a sparse or runaway file is refused before it is read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The most characters of one line a parse error quotes (toml quotes the whole offending line,
/// and its caret line as long).
const MAX_QUOTED_LINE: usize = 200;

/// `message` with every line longer than `max` characters cut, saying so.
fn shorten_lines(message: &str, max: usize) -> String {
    message
        .lines()
        .map(|line| match line.char_indices().nth(max) {
            Some((cut, _)) => format!(
                "{}... ({} more characters)",
                &line[..cut],
                line[cut..].chars().count()
            ),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sections of a configuration that make up the game a run plays ([`TrainConfig::game`]):
/// whole, or only the named keys (the schedule's other keys are the run's position, which a
/// resume checks on its own).
const GAME_SECTIONS: [(&str, Option<&[&str]>); 5] = [
    ("schedule", Some(&["lr_default", "lr"])),
    ("loss", None),
    ("optim", None),
    ("instance_noise", None),
    ("ema", None),
];

/// Writes every float of `value` that an f32 holds exactly (the f32 keys, widened) as that
/// f32 is written: `optim.beta2 = 0.999` reads 0.999, not 0.9990000128746033. The same value
/// always becomes the same float, so comparisons are unchanged.
fn as_written(value: &mut toml::Value) {
    match value {
        toml::Value::Float(x) if f64::from(*x as f32) == *x => {
            *x = (*x as f32).to_string().parse().unwrap_or(*x);
        }
        toml::Value::Table(table) => table.iter_mut().for_each(|(_, v)| as_written(v)),
        toml::Value::Array(items) => items.iter_mut().for_each(as_written),
        _ => {}
    }
}

impl TrainConfig {
    /// The resolutions the run trains at, from `schedule.start_resolution` up to the model's,
    /// each with its minibatch.
    pub fn trained_resolutions(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        std::iter::successors(Some(self.schedule.start_resolution), |r| r.checked_mul(2))
            .take_while(|&r| (1..=self.model.resolution).contains(&r))
            .map(|r| (r, self.schedule.batch_for(r)))
    }

    /// The warning for fade-ins of fewer steps than make a blend: α is set at each step's
    /// start, so a fade of n steps takes α through 0, 1/n, …, and one of a step or two brings
    /// the new layers in at a jump (the paper's fades are 600 kimg, tens of thousands of steps).
    pub fn short_fades_warning(&self) -> Option<String> {
        const FEWEST_STEPS: f64 = 4.0;
        let s = &self.schedule;
        let per_step = |batch: usize| batch as f64 * f64::from(self.optim.d_steps.max(1));
        let short: Vec<String> = self
            .trained_resolutions()
            .filter(|&(resolution, _)| resolution > s.start_resolution)
            .map(|(resolution, batch)| {
                (resolution, s.lod_transition_kimg * 1000.0 / per_step(batch))
            })
            .filter(|&(_, steps)| steps < FEWEST_STEPS)
            .map(|(resolution, steps)| format!("{} at {resolution}x{resolution}", steps.ceil()))
            .collect();
        (!short.is_empty() && s.lod_transition_kimg > 0.0).then(|| {
            format!(
                "schedule.lod_transition_kimg {:?} makes fade-ins of a few steps ({}): α is set \
                 per step, so their new layers blend in at a jump; lengthen the fade or lower \
                 the minibatch",
                s.lod_transition_kimg,
                short.join(", ")
            )
        })
    }

    /// Reads a TOML config; unknown keys and malformed values are errors naming the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = pgan_data::read_regular_file_at_most(path, MAX_CONFIG_BYTES)
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                })
            })
            .map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                action: "read config",
                source,
            })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            TrainError::Config { message, .. } => TrainError::Config {
                path: Some(path.into()),
                message,
            },
            other => other,
        })
    }

    /// The settings of the game a run plays (its loss, optimizer, learning rates, instance
    /// noise and EMA), as a table of their sections, for [`Self::game_changes`].
    pub fn game(&self) -> toml::Table {
        let all = toml::Table::try_from(self).unwrap_or_default();
        let mut game = toml::Table::new();
        for (section, only) in GAME_SECTIONS {
            let Some(mut keys) = all.get(section).and_then(|v| v.as_table()).cloned() else {
                continue;
            };
            if let Some(only) = only {
                keys.retain(|key, _| only.contains(&key));
            }
            let mut keys = toml::Value::Table(keys);
            as_written(&mut keys);
            game.insert(section.into(), keys);
        }
        game
    }

    /// [`Self::game`] as TOML text: what a checkpoint records of the game it was trained under
    /// (text, not JSON numbers: TOML reads every float back exactly).
    pub fn game_record(&self) -> String {
        toml::to_string(&self.game()).unwrap_or_default()
    }

    /// The settings of [`Self::game`] that this configuration changes from `before` (the game
    /// a checkpoint was trained under), as `key old → new`: a resume may change them, and the
    /// run then trains on under other rules than its rows and checkpoints so far, which is
    /// said.
    pub fn game_changes(&self, before: &toml::Table) -> Vec<String> {
        fn section<'a>(game: &'a toml::Table, name: &str) -> Option<&'a toml::Table> {
            game.get(name).and_then(|v| v.as_table())
        }
        let now = self.game();
        let mut changes = Vec::new();
        for (name, _) in GAME_SECTIONS {
            let (Some(new), Some(old)) = (section(&now, name), section(before, name)) else {
                continue;
            };
            for (key, value) in new {
                match old.get(key) {
                    Some(was) if was == value => {}
                    Some(was) => changes.push(format!("{name}.{key} {was} → {value}")),
                    None => changes.push(format!("{name}.{key} (unset) → {value}")),
                }
            }
            for (key, was) in old {
                if !new.contains_key(key) {
                    changes.push(format!("{name}.{key} {was} → (unset)"));
                }
            }
        }
        changes
    }

    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| TrainError::Config {
            path: None,
            message: shorten_lines(&e.to_string(), MAX_QUOTED_LINE),
        })
    }

    /// The keys set in a config file (`text`) that this configuration does not use,
    /// each with why: a weight of another loss's penalty, `ema.beta` beside
    /// `ema.half_life_kimg`. Accepted silently, they would read as settings the run has.
    pub fn keys_without_effect(&self, text: &str) -> Vec<String> {
        let table: toml::Table = text.parse().unwrap_or_default();
        let set = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key))
        };
        // A value equal to its default is no setting of the user's: a resolved config.toml
        // (a run's, or what --dry-run prints) spells every key out.
        let (loss, ema) = (LossConfig::default(), EmaConfig::default());
        let kind = self.loss.kind;
        let mut unused = Vec::new();
        for (key, owner, value, default) in [
            (
                "gp_lambda",
                LossKind::WganGp,
                self.loss.gp_lambda,
                loss.gp_lambda,
            ),
            (
                "drift_epsilon",
                LossKind::WganGp,
                self.loss.drift_epsilon,
                loss.drift_epsilon,
            ),
            (
                "r1_gamma",
                LossKind::LogisticR1,
                self.loss.r1_gamma,
                loss.r1_gamma,
            ),
        ] {
            if set("loss", key) && kind != owner && value != default {
                unused.push(format!(
                    "loss.{key} weights {}'s penalty, and loss.kind is {}",
                    owner.name(),
                    kind.name()
                ));
            }
        }
        let minibatch = self
            .model
            .minibatch
            .unwrap_or(pgan_model::Minibatch::Stddev);
        let layer = |m: pgan_model::Minibatch| m.to_string();
        if set("model", "mbstd_group_size") && minibatch != pgan_model::Minibatch::Stddev {
            unused.push(format!(
                "model.mbstd_group_size sizes the minibatch-stddev layer, and model.minibatch is \
                 {}",
                layer(minibatch)
            ));
        }
        for key in ["mbdisc_kernels", "mbdisc_kernel_dim"] {
            if set("model", key) && minibatch != pgan_model::Minibatch::Discrimination {
                unused.push(format!(
                    "model.{key} shapes minibatch discrimination, and model.minibatch is {}",
                    layer(minibatch)
                ));
            }
        }
        if set("instance_noise", "anneal_kimg")
            && self.instance_noise.anneal_kimg != InstanceNoiseConfig::default().anneal_kimg
            && self.instance_noise.sigma == 0.0
        {
            unused.push(
                "instance_noise.anneal_kimg anneals the instance noise, and instance_noise.sigma \
                 is 0 (off)"
                    .to_string(),
            );
        }
        if !self.nodes.several() {
            let nodes = NodesConfig::default();
            for (key, differs) in [
                ("orchestrator", self.nodes.orchestrator.is_some()),
                ("address", self.nodes.address.is_some()),
                (
                    "join_timeout_s",
                    self.nodes.join_timeout_s != nodes.join_timeout_s,
                ),
                (
                    "peer_timeout_s",
                    self.nodes.peer_timeout_s != nodes.peer_timeout_s,
                ),
            ] {
                if set("nodes", key) && differs {
                    unused.push(format!(
                        "nodes.{key} sets up a run on several machines, and nodes.count is 1"
                    ));
                }
            }
        }
        let beta_set = set("ema", "beta") && self.ema.beta != ema.beta;
        if let Some(h) = self.ema.half_life_kimg.filter(|&h| h > 0.0 && beta_set) {
            unused.push(format!(
                "ema.beta is replaced by ema.half_life_kimg {h}, which sets the EMA's decay per \
                 step from the minibatch"
            ));
        }
        unused
    }

    /// The resolved config as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a TrainConfig always serialises")
    }

    /// Checks every value; the message says which key is wrong and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| {
            Err(TrainError::Config {
                path: None,
                message,
            })
        };
        use pgan_spec::resolution::{is_supported as is_res, MAX_RESOLUTION, MIN_RESOLUTION};
        // The run's config.toml records these paths, and TOML text is UTF-8.
        let paths = [
            ("run.out_dir", Some(&self.run.out_dir)),
            ("data.path", self.data.path.as_ref()),
        ];
        for (key, path) in paths {
            if let Some(path) = path.filter(|p| p.to_str().is_none()) {
                return bad(format!(
                    "{key} {} is not valid UTF-8, and the run's config.toml must record it: \
                     rename it, or reach it through a link whose path is UTF-8",
                    path.display()
                ));
            }
        }
        let m = &self.model;
        if !is_res(m.resolution) {
            return bad(format!(
                "model.resolution {} must be a power of two in {MIN_RESOLUTION}..={MAX_RESOLUTION}",
                m.resolution
            ));
        }
        // Sizes far beyond any published network are typos; refused before anything is
        // allocated (the paper's largest: latent 512, fmap_base 8192, mbdisc 100 x 5).
        for (name, value, max) in [
            ("model.latent_dim", m.latent_dim, MAX_WIDTH),
            ("model.fmap_base", m.fmap_base, 16 * MAX_WIDTH),
            ("model.fmap_max", m.fmap_max, MAX_WIDTH),
            ("model.mbdisc_kernels", m.mbdisc_kernels, MAX_WIDTH),
            ("model.mbdisc_kernel_dim", m.mbdisc_kernel_dim, MAX_WIDTH),
        ] {
            if let Some(v) = value.filter(|&v| v > max) {
                return bad(format!(
                    "{name} {v} is above the largest pgan builds, {max}"
                ));
            }
        }
        let s = &self.schedule;
        if !is_res(s.start_resolution) || s.start_resolution > m.resolution {
            return bad(format!(
                "schedule.start_resolution {} must be a power of two in 4..={}",
                s.start_resolution, m.resolution
            ));
        }
        // Before the loop's non-negative check, so that 0, -5 and inf get one message.
        if !s.total_kimg.is_finite() || s.total_kimg <= 0.0 {
            return bad(format!(
                "schedule.total_kimg {} must be a positive number",
                s.total_kimg
            ));
        }
        for (name, v) in [
            ("schedule.lod_training_kimg", s.lod_training_kimg),
            ("schedule.lod_transition_kimg", s.lod_transition_kimg),
            ("schedule.total_kimg", s.total_kimg),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} {v} must be a non-negative number"));
            }
            // Images are counted in a u64; far beyond any run (the paper's: 12,000 kimg).
            if v > MAX_KIMG {
                return bad(format!(
                    "{name} {v:e} is beyond {MAX_KIMG:e} kimg, more images than any run shows"
                ));
            }
        }
        // Counted in whole images: less than half of one trains nothing.
        if (s.total_kimg * 1000.0).round() < 1.0 {
            return bad(format!(
                "schedule.total_kimg {} is less than one image (0.001 kimg): nothing would be \
                 trained",
                s.total_kimg
            ));
        }
        let e = &self.eval;
        if !(e.every_kimg.is_finite() && e.every_kimg >= 0.0) {
            return bad(format!(
                "eval.every_kimg {} must be a non-negative number (0 is off)",
                e.every_kimg
            ));
        }
        if e.every_kimg > 0.0 && e.num_images < 2 {
            return bad(format!(
                "eval.num_images {} must be at least 2 when eval.every_kimg is set",
                e.num_images
            ));
        }
        if !(e.fid_every_kimg.is_finite() && e.fid_every_kimg >= 0.0) {
            return bad(format!(
                "eval.fid_every_kimg {} must be a non-negative number",
                e.fid_every_kimg
            ));
        }
        if e.fid_enabled() && e.fid_num < 2 {
            return bad(format!(
                "eval.fid_num {} must be at least 2 (a covariance needs two images) or 0 (off)",
                e.fid_num
            ));
        }
        for (key, &batch) in &s.minibatch {
            check_resolution_key("schedule.minibatch", key)?;
            if batch == 0 || batch > MAX_MINIBATCH {
                return bad(format!(
                    "schedule.minibatch at {key} is {batch}: it must be in 1..={MAX_MINIBATCH}"
                ));
            }
        }
        if s.minibatch_default == 0 || s.minibatch_default > MAX_MINIBATCH {
            return bad(format!(
                "schedule.minibatch_default {} must be in 1..={MAX_MINIBATCH}",
                s.minibatch_default
            ));
        }
        for (key, &lr) in &s.lr {
            check_resolution_key("schedule.lr", key)?;
            if !(lr.is_finite() && lr > 0.0) {
                return bad(format!(
                    "schedule.lr at {key} is {lr}: it must be a positive, finite number"
                ));
            }
        }
        if !(s.lr_default.is_finite() && s.lr_default > 0.0) {
            return bad(format!(
                "schedule.lr_default {} must be a positive, finite number",
                s.lr_default
            ));
        }
        // Adam runs in f32: a rate (times its network's multiplier) beyond f32's range is inf.
        let rates =
            s.lr.iter()
                .map(|(k, &lr)| (format!("schedule.lr at {k}"), lr));
        for (key, lr) in rates.chain([("schedule.lr_default".to_string(), s.lr_default)]) {
            for (mult_key, mult) in [
                ("optim.lr_g_mult", self.optim.lr_g_mult),
                ("optim.lr_d_mult", self.optim.lr_d_mult),
            ] {
                if mult.is_nan() || mult <= 0.0 {
                    // Not a multiplier: its own check below says so.
                    continue;
                }
                let rate = (lr * mult) as f32;
                if !rate.is_finite() {
                    return bad(format!(
                        "{key} {lr:e} × {mult_key} {mult:e} is beyond f32's range (the optimizer's \
                         precision); a learning rate is a small positive number such as 0.001"
                    ));
                }
                // Zero or subnormal in f32: Adam's steps would round to nothing, and the run
                // would train for its whole length without changing a weight.
                if rate < f32::MIN_POSITIVE {
                    return bad(format!(
                        "{key} {lr:e} × {mult_key} {mult:e} is below f32's smallest normal number \
                         ({:e}): the optimizer would change no weight; a learning rate is a small \
                         positive number such as 0.001",
                        f32::MIN_POSITIVE
                    ));
                }
            }
        }
        if !(0.0..1.0).contains(&self.ema.beta) {
            return bad(format!("ema.beta {} must be in [0, 1)", self.ema.beta));
        }
        if !(0.0..1.0).contains(&self.optim.beta1) || !(0.0..1.0).contains(&self.optim.beta2) {
            return bad("optim.beta1 and optim.beta2 must be in [0, 1)".into());
        }
        for (name, v) in [
            ("loss.gp_lambda", self.loss.gp_lambda),
            ("loss.r1_gamma", self.loss.r1_gamma),
            ("loss.drift_epsilon", self.loss.drift_epsilon),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} {v} must be a non-negative weight"));
            }
        }
        if !(self.optim.epsilon.is_finite() && self.optim.epsilon > 0.0) {
            return bad(format!(
                "optim.epsilon {} must be positive (Adam's denominator term)",
                self.optim.epsilon
            ));
        }
        // Subnormal: it no longer bounds a step whose second moment underflowed to zero (a
        // run diverged at its first fade-in with 1e-45).
        if self.optim.epsilon < f32::MIN_POSITIVE {
            return bad(format!(
                "optim.epsilon {:e} is below f32's smallest normal number ({:e}): it would not \
                 bound Adam's steps where a gradient's second moment underflows; the paper uses \
                 1e-8",
                self.optim.epsilon,
                f32::MIN_POSITIVE
            ));
        }

        if let Some(h) = self.ema.half_life_kimg {
            if !(h.is_finite() && h >= 0.0) {
                return bad(format!(
                    "ema.half_life_kimg {h} must be a non-negative number (0: ema.beta per step)"
                ));
            }
        }
        // The average is updated in f32: with a decay that rounds to 1 there (the smallest
        // trained step's, closest to 1) G_ema would not follow the generator.
        let smallest_step = self
            .trained_resolutions()
            .map(|(_, batch)| batch)
            .min()
            .unwrap_or(s.minibatch_default)
            * self.optim.d_steps.max(1) as usize;
        let decay = self.ema.beta_for_batch(smallest_step);
        if decay as f32 >= 1.0 {
            let key = match self.ema.half_life_kimg {
                Some(h) if h > 0.0 => format!("ema.half_life_kimg {h:e}"),
                _ => format!("ema.beta {}", self.ema.beta),
            };
            return bad(format!(
                "{key} gives a decay of {decay} per step of {smallest_step} images, which is 1 in \
                 f32 (the average's precision): G_ema would not follow the generator; ProGAN's decay is \
                 0.999 per step (a half-life of about 11 kimg at minibatch 16)"
            ));
        }
        if !(self.recovery.cooldown_kimg.is_finite() && self.recovery.cooldown_kimg >= 0.0) {
            return bad(format!(
                "recovery.cooldown_kimg {} must be a non-negative number",
                self.recovery.cooldown_kimg
            ));
        }
        self.validate_remedies()?;
        self.alarms.validate()?;
        let r = &self.run;
        if r.precision == Precision::Bf16 && r.backend != BackendKind::Cuda {
            return Err(TrainError::PrecisionUnsupported {
                precision: r.precision.to_string(),
                backend: r.backend.to_string(),
            });
        }
        if !(r.tick_kimg.is_finite() && r.tick_kimg > 0.0) {
            return bad(format!("run.tick_kimg {} must be positive", r.tick_kimg));
        }
        if r.tick_kimg > MAX_KIMG {
            return bad(format!(
                "run.tick_kimg {:e} is beyond {MAX_KIMG:e} kimg, more images than any run shows \
                 (a tick that never ends writes no metrics and no checkpoints)",
                r.tick_kimg
            ));
        }
        if r.checkpoint_ticks == 0 || r.keep_checkpoints == 0 {
            return bad("run.checkpoint_ticks and run.keep_checkpoints must be at least 1".into());
        }
        if r.sample_rows == 0 || r.sample_cols == 0 {
            return bad("run.sample_rows and run.sample_cols must be at least 1".into());
        }
        if !(self.recovery.lr_factor > 0.0 && self.recovery.lr_factor <= 1.0) {
            return bad("recovery.lr_factor must be in (0, 1]".into());
        }
        if let Err(e) = crate::limits::sheet_size(
            r.sample_rows,
            r.sample_cols,
            m.resolution,
            r.sample_cell_px,
            2,
        ) {
            return bad(format!(
                "run.sample_rows, sample_cols and sample_cell_px: {e}"
            ));
        }
        self.nodes.validate()?;
        crate::distributed::check_batches(self)?;
        self.check_mbstd_group()
    }

    /// The keys of the GAN remedies: label smoothing, instance noise, TTUR.
    fn validate_remedies(&self) -> Result<()> {
        let bad = |message: String| {
            Err(TrainError::Config {
                path: None,
                message,
            })
        };
        let l = &self.loss;
        if !(l.real_label > 0.0 && l.real_label <= 1.0) {
            return bad(format!(
                "loss.real_label {} must be in (0, 1] (1 is no label smoothing)",
                l.real_label
            ));
        }
        if l.real_label != 1.0 && !l.kind.is_logistic() {
            return bad(format!(
                "loss.real_label {} applies to the logistic losses (logistic-r1, non-saturating, \
                 minimax), not to wgan-gp: set it to 1 or change loss.kind",
                l.real_label
            ));
        }
        if !(l.feature_matching.is_finite() && l.feature_matching >= 0.0) {
            return bad(format!(
                "loss.feature_matching {} must be a non-negative weight (0 is off)",
                l.feature_matching
            ));
        }
        let n = &self.instance_noise;
        if !(n.sigma.is_finite() && n.sigma >= 0.0) {
            return bad(format!(
                "instance_noise.sigma {} must be a non-negative number (0 is off)",
                n.sigma
            ));
        }
        // Drawn in f32: a σ f32 cannot hold would be infinite noise, or none.
        if let Err(why) = to_f32(n.sigma) {
            return bad(format!("instance_noise.sigma {why}"));
        }
        if !(n.anneal_kimg.is_finite() && n.anneal_kimg >= 0.0) {
            return bad(format!(
                "instance_noise.anneal_kimg {} must be a non-negative number",
                n.anneal_kimg
            ));
        }
        if n.sigma > 0.0 && n.anneal_kimg == 0.0 {
            return bad(format!(
                "instance_noise.anneal_kimg must be positive when instance_noise.sigma is {} \
                 (sigma falls to 0 over anneal_kimg)",
                n.sigma
            ));
        }
        let o = &self.optim;
        for (name, v) in [
            ("optim.lr_g_mult", o.lr_g_mult),
            ("optim.lr_d_mult", o.lr_d_mult),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} {v} must be positive"));
            }
        }
        if o.d_steps == 0 {
            return bad("optim.d_steps must be at least 1 (D updates per G update)".into());
        }
        // One step shows d_steps minibatches of reals; the schedule is judged between steps,
        // so a step longer than a phase would train straight past it (a fade or stage never
        // trained). The phases at each resolution: the fade into it (not at the start), its
        // stable phase (not at the top, which runs to the end).
        let s = &self.schedule;
        let mut resolution = s
            .start_resolution
            .max(pgan_spec::resolution::MIN_RESOLUTION);
        while resolution <= self.model.resolution {
            let batch = s.batch_for(resolution) as f64;
            let per_step = batch * f64::from(o.d_steps);
            let fade = (resolution > s.start_resolution).then_some(s.lod_transition_kimg);
            let stable = (resolution < self.model.resolution).then_some(s.lod_training_kimg);
            for kimg in [fade, stable].into_iter().flatten().filter(|&k| k > 0.0) {
                let phase = kimg * 1000.0;
                if per_step > phase {
                    let step = if o.d_steps > 1 {
                        format!(
                            "optim.d_steps {} × minibatch {batch} at {resolution}x{resolution} \
                             shows {per_step} images per step,",
                            o.d_steps
                        )
                    } else {
                        format!("the minibatch {batch} at {resolution}x{resolution} is")
                    };
                    let lower = if o.d_steps > 1 {
                        "optim.d_steps or the minibatch"
                    } else {
                        "the minibatch"
                    };
                    return bad(format!(
                        "{step} more than a {phase}-image phase of the schedule: the step \
                         would train past the phase. Lower {lower}, or lengthen \
                         schedule.lod_training_kimg / lod_transition_kimg"
                    ));
                }
            }
            resolution *= 2;
        }
        Ok(())
    }

    /// The minibatch-stddev layer splits each minibatch into groups of `min(group, batch)`
    /// images, which must divide it (the official code's `minibatch_stddev_layer` takes
    /// `tf.minimum(group_size, batch)` and cannot reshape otherwise). Rather than quietly train
    /// with a smaller group than `config.toml` says, a group that does not divide the minibatch
    /// of every resolution the run trains at is an error.
    fn check_mbstd_group(&self) -> Result<()> {
        let group = crate::plan::resolve_model(&self.model, 3)?.effective_mbstd_group_size();
        if group <= 1 {
            return Ok(());
        }
        // Each data-parallel peer groups its own share of the minibatch.
        let peers = crate::distributed::peer_count(self);
        for (resolution, minibatch) in self.trained_resolutions() {
            let batch = minibatch / peers;
            let used = group.min(batch);
            if !batch.is_multiple_of(used) {
                let whose = if peers > 1 {
                    format!(
                        "each peer's share {batch} (the minibatch {minibatch} over {peers} peers)"
                    )
                } else {
                    format!("the minibatch {batch}")
                };
                return Err(TrainError::Config {
                    path: None,
                    message: format!(
                        "model.mbstd_group_size {group} does not divide {whose} \
                         at {resolution}x{resolution}: the minibatch-stddev layer needs groups \
                         of equal size. Use a group size that divides every minibatch (or 0 to \
                         switch the layer off), or change the minibatch"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A key of a per-resolution table (`schedule.minibatch`, `schedule.lr`): a supported
/// resolution written as the schedule looks it up (`"8"`, not `"08"` or `"+8"`, which would be
/// accepted and then never used).
fn check_resolution_key(table: &str, key: &str) -> Result<()> {
    let message = match key.parse::<u32>() {
        Ok(r) if pgan_spec::resolution::is_supported(r) && r.to_string() == key => return Ok(()),
        Ok(r) if pgan_spec::resolution::is_supported(r) => format!(
            "{table} key '{key}' is never looked up (the schedule asks for '{r}'): write '{r}' \
             to apply it, or remove it (a run that has one trained without it)"
        ),
        _ => format!("{table} key '{key}' is not a resolution (4, 8, 16, ... 1024)"),
    };
    Err(TrainError::Config {
        path: None,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_config_parses_and_validates() {
        let dir = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let config = TrainConfig::from_toml_file(&path).unwrap();
                config
                    .validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(
            seen >= 3,
            "expected the three bundled configs in {}",
            dir.display()
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = TrainConfig::from_toml_str("[schedule]\nlod_trainig_kimg = 3\n").unwrap_err();
        assert!(err.to_string().contains("lod_trainig_kimg"), "{err}");
    }

    #[test]
    fn malformed_toml_is_an_error() {
        assert!(TrainConfig::from_toml_str("[run\nseed = 1").is_err());
        let err = TrainConfig::from_toml_str("[run]\nseed = \"x\"").unwrap_err();
        assert!(err.to_string().contains("seed"), "{err}");
    }

    #[test]
    fn a_huge_config_is_refused_unread_and_a_long_bad_line_is_quoted_short() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("sparse.toml");
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let err = TrainConfig::from_toml_file(&sparse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sparse.toml") && err.contains("more than the 1048576"),
            "{err}"
        );
        let long = dir.path().join("long.toml");
        std::fs::write(&long, format!("[run]\nseed = {}x\n", "1".repeat(500_000))).unwrap();
        let err = TrainConfig::from_toml_file(&long).unwrap_err().to_string();
        assert!(
            err.contains("long.toml") && err.contains("more characters") && err.len() < 2000,
            "{} characters: {}",
            err.len(),
            &err[..err.len().min(3000)]
        );
    }

    #[test]
    fn the_resolved_config_round_trips_through_toml() {
        let mut config = TrainConfig::default();
        config.schedule.minibatch.insert("8".into(), 32);
        config.data.path = Some("x.pgan".into());
        let back = TrainConfig::from_toml_str(&config.to_toml()).unwrap();
        assert_eq!(back, config);
    }

    /// bf16 is refused on the backends without bf16 convolutions, with a typed error naming
    /// the option and the backend; cuda accepts it, and the key parses from TOML.
    #[test]
    fn bf16_needs_the_cuda_backend() {
        for backend in [BackendKind::Cpu, BackendKind::Wgpu] {
            let mut config = TrainConfig::default();
            config.run.backend = backend;
            config.run.precision = Precision::Bf16;
            let err = config.validate().unwrap_err();
            assert!(
                matches!(&err, TrainError::PrecisionUnsupported { backend: b, precision: p }
                    if *b == backend.to_string() && p == "bf16"),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("run.precision") && text.contains(&backend.to_string()),
                "{text}"
            );
            config.run.precision = Precision::F32;
            config.validate().unwrap();
        }
        let mut config = TrainConfig::default();
        config.run.backend = BackendKind::Cuda;
        config.run.precision = Precision::Bf16;
        config.validate().unwrap();
        let parsed =
            TrainConfig::from_toml_str("[run]\nbackend = \"cuda\"\nprecision = \"bf16\"\n")
                .unwrap();
        assert_eq!(parsed.run.precision, Precision::Bf16);
        assert!(TrainConfig::from_toml_str("[run]\nprecision = \"fp16\"\n").is_err());
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("half"
            .parse::<Precision>()
            .unwrap_err()
            .contains("f32 or bf16"));
    }

    #[test]
    fn validation_names_the_bad_key() {
        // One message for every total that is not positive, so that the fix of one is not
        // refused in other words.
        for total in [-5.0, 0.0, f64::NAN, f64::INFINITY] {
            let mut config = TrainConfig::default();
            config.schedule.total_kimg = total;
            let said = config.validate().unwrap_err().to_string();
            assert!(
                said.contains(&format!(
                    "schedule.total_kimg {total} must be a positive number"
                )),
                "{said}"
            );
        }
        let mut config = TrainConfig::default();
        config.run.tick_kimg = 1e300;
        let said = config.validate().unwrap_err().to_string();
        assert!(
            said.contains("run.tick_kimg 1e300 is beyond 1e9 kimg"),
            "{said}"
        );
        let mut config = TrainConfig::default();
        config.model.resolution = 48;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("model.resolution"));
        let mut config = TrainConfig::default();
        config.schedule.minibatch.insert("7".into(), 4);
        assert!(config.validate().unwrap_err().to_string().contains("'7'"));
        // A key the schedule would never look up (it asks for "4") is refused, not ignored.
        for (table, key) in [("minibatch", "04"), ("minibatch", "+4"), ("lr", "004")] {
            let mut config = TrainConfig::default();
            match table {
                "minibatch" => {
                    config.schedule.minibatch.insert(key.into(), 4);
                }
                _ => {
                    config.schedule.lr.insert(key.into(), 0.5);
                }
            }
            let said = config.validate().unwrap_err().to_string();
            assert!(
                said.contains(&format!("schedule.{table} key '{key}'")) && said.contains("'4'"),
                "{said}"
            );
        }
        let mut config = TrainConfig::default();
        config.schedule.start_resolution = 1024;
        config.model.resolution = 64;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("start_resolution"));
    }

    #[test]
    fn node_timeouts_must_be_usable_durations() {
        assert_each_refused(&[
            (
                |c| c.nodes.join_timeout_s = f64::NAN,
                "nodes.join_timeout_s NaN",
            ),
            (
                |c| c.nodes.peer_timeout_s = 0.0,
                "positive number of seconds",
            ),
            (|c| c.nodes.join_timeout_s = 1e30, "(a week)"),
            (|c| c.nodes.peer_timeout_s = 1e19, "nodes.peer_timeout_s"),
        ]);
    }

    #[test]
    fn node_addresses_must_be_reachable_host_ports() {
        assert_each_refused(&[
            (
                |c| c.nodes.address = Some("10.0.0.2".into()),
                "nodes.address '10.0.0.2' is not HOST:PORT",
            ),
            (
                |c| c.nodes.address = Some("127.0.0.1:0".into()),
                "nodes.address '127.0.0.1:0': port 0 cannot be reached",
            ),
            (
                |c| c.nodes.orchestrator = Some("ws://h:7000".into()),
                "nodes.orchestrator 'ws://h:7000' is not HOST:PORT",
            ),
        ]);
    }

    /// An edit of the default config and a text its refusal must contain.
    type RefusedEdit = (fn(&mut TrainConfig), &'static str);

    /// Each edit of the default config is refused with an error that contains its text.
    fn assert_each_refused(cases: &[RefusedEdit]) {
        for (edit, said) in cases {
            let mut config = TrainConfig::default();
            edit(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(said), "expected '{said}' in: {err}");
        }
    }

    /// A value f32 cannot hold is an error at its line, not an infinity or a 0 the key's own
    /// check then misreports (a penalty of 1e-300 would silently be off); integers and NaN
    /// (which the key's check names) still read.
    #[test]
    fn values_beyond_f32_are_refused_where_they_are_written() {
        for (text, said) in [
            ("[loss]\ngp_lambda = 1e300\n", "1e300 is beyond f32's range"),
            ("[loss]\nr1_gamma = -1e39\n", "-1e39 is beyond f32's range"),
            (
                "[loss]\ngp_lambda = 1e-300\n",
                "1e-300 is below f32's smallest normal number",
            ),
            (
                "[optim]\nbeta2 = 1e-40\n",
                "1e-40 is below f32's smallest normal number",
            ),
        ] {
            let err = TrainConfig::from_toml_str(text).unwrap_err().to_string();
            assert!(
                err.contains(said) && err.contains("line 2"),
                "{text}: {err}"
            );
        }
        let config =
            TrainConfig::from_toml_str("[loss]\ngp_lambda = 5\ndrift_epsilon = 0\n").unwrap();
        assert_eq!(
            (config.loss.gp_lambda, config.loss.drift_epsilon),
            (5.0, 0.0)
        );
        let config = TrainConfig::from_toml_str("[loss]\ngp_lambda = nan\n").unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("loss.gp_lambda NaN"));
        assert_eq!(to_f32(f64::from(f32::MAX)), Ok(f32::MAX));
        assert_eq!(to_f32(3.4028235e38), Ok(f32::MAX), "f32::MAX as printed");
    }

    /// A resume's changes to the game (loss, optimizer, noise, EMA) are named with both values;
    /// the run's other settings, and no change, say nothing.
    #[test]
    fn changes_to_the_game_are_named_with_both_values() {
        let config = TrainConfig::default();
        let before = config.game();
        let mut after = config.clone();
        assert!(after.game_changes(&before).is_empty());
        after.run.tick_kimg = 2.0;
        after.schedule.total_kimg = 2.0 * config.schedule.total_kimg;
        assert!(after.game_changes(&before).is_empty());
        after.loss.kind = LossKind::LogisticR1;
        after.optim.lr_d_mult = 2.0;
        after.schedule.lr_default = 0.0005;
        assert_eq!(
            after.game_changes(&before),
            [
                "schedule.lr_default 0.001 → 0.0005",
                "loss.kind \"wgan-gp\" → \"logistic-r1\"",
                "optim.lr_d_mult 1.0 → 2.0"
            ]
        );
    }

    /// A fade of fewer than four steps is said, with its steps per resolution; the paper's,
    /// and a fade of no length (none), are not.
    #[test]
    fn fades_of_a_few_steps_are_said() {
        let mut config = TrainConfig::default();
        assert_eq!(config.short_fades_warning(), None);
        config.model.resolution = 16;
        config.schedule.minibatch_default = 256;
        config.schedule.minibatch.clear();
        config.schedule.lod_transition_kimg = 0.256;
        let said = config.short_fades_warning().unwrap();
        assert!(said.contains("(1 at 8x8, 1 at 16x16)"), "{said}");
        config.schedule.lod_transition_kimg = 1.024;
        assert_eq!(config.short_fades_warning(), None);
        config.schedule.lod_transition_kimg = 0.0;
        assert_eq!(config.short_fades_warning(), None);
    }

    #[test]
    fn a_subnormal_epsilon_is_refused() {
        assert_each_refused(&[(
            |c| c.optim.epsilon = 1e-45,
            "optim.epsilon 1e-45 is below f32's smallest normal number",
        )]);
        let mut config = TrainConfig::default();
        config.optim.epsilon = f32::MIN_POSITIVE;
        config.validate().unwrap();
    }

    #[test]
    fn more_pairs_than_the_images_make_are_the_pairs_there_are_and_said() {
        let mut config = TrainConfig::default();
        (config.eval.every_kimg, config.eval.num_images) = (1.0, 8);
        config.validate().unwrap();
        assert_eq!(config.eval.msssim_pairs_measured(), 28);
        assert_eq!(
            config.eval.fewer_pairs_warning().unwrap(),
            "eval.msssim_pairs 128: eval.num_images 8 make 28 distinct pairs, so MS-SSIM \
             measures those 28"
        );
        config.eval.msssim_pairs = 28;
        assert!(config.eval.fewer_pairs_warning().is_none());
        config.eval.every_kimg = 0.0;
        config.eval.msssim_pairs = 1_000;
        assert!(
            config.eval.fewer_pairs_warning().is_none(),
            "no evaluations, no warning"
        );
    }

    #[test]
    fn non_finite_values_and_sizes_no_machine_holds_are_refused_naming_the_key() {
        let cases: [RefusedEdit; 11] = [
            (
                |c| c.loss.gp_lambda = f32::NAN,
                "loss.gp_lambda NaN must be a non-negative weight",
            ),
            (
                |c| c.loss.drift_epsilon = f32::INFINITY,
                "loss.drift_epsilon inf must be a non-negative weight",
            ),
            (
                |c| c.loss.r1_gamma = f32::NAN,
                "loss.r1_gamma NaN must be a non-negative weight",
            ),
            (
                |c| c.optim.epsilon = f32::NAN,
                "optim.epsilon NaN must be positive",
            ),
            (
                |c| c.ema.half_life_kimg = Some(f64::NAN),
                "ema.half_life_kimg NaN must be a non-negative number",
            ),
            (
                |c| c.recovery.cooldown_kimg = f64::NAN,
                "recovery.cooldown_kimg NaN must be a non-negative number",
            ),
            (
                |c| c.eval.every_kimg = f64::NAN,
                "eval.every_kimg NaN must be a non-negative number",
            ),
            (
                |c| {
                    c.eval.every_kimg = 1.0;
                    c.eval.num_images = 0
                },
                "eval.num_images 0 must be at least 2",
            ),
            (
                |c| c.schedule.minibatch_default = 1_000_000_000,
                "schedule.minibatch_default 1000000000 must be in 1..=4096",
            ),
            (
                |c| {
                    c.schedule.minibatch.insert("8".into(), 5000);
                },
                "schedule.minibatch at 8 is 5000: it must be in 1..=4096",
            ),
            (
                |c| c.model.latent_dim = Some(100_000_000),
                "model.latent_dim 100000000 is above the largest pgan builds, 8192",
            ),
        ];
        assert_each_refused(&cases);
    }

    #[test]
    fn an_mbstd_group_that_does_not_divide_a_minibatch_is_refused() {
        let mut config = TrainConfig::default();
        config.model.resolution = 16;
        config.model.mbstd_group_size = Some(7);
        config.schedule.minibatch_default = 16;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("mbstd_group_size 7 does not divide the minibatch 16 at 4x4"),
            "{err}"
        );
        // min(group, batch) is used, as in the official code: a minibatch below the group is
        // one group.
        config.model.mbstd_group_size = Some(4);
        config.schedule.minibatch.insert("16".into(), 2);
        config.validate().unwrap();
        config.schedule.minibatch.insert("8".into(), 6);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("minibatch 6 at 8x8"), "{err}");
        config.model.mbstd_group_size = Some(0);
        config.validate().unwrap();
    }

    #[test]
    fn the_minibatch_layer_keys_parse_and_are_validated() {
        use pgan_model::Minibatch;
        let text = "[model]\nresolution = 16\nminibatch = \"discrimination\"\n\
                    mbdisc_kernels = 8\nmbdisc_kernel_dim = 3\n";
        let config = TrainConfig::from_toml_str(text).unwrap();
        config.validate().unwrap();
        let model = crate::plan::resolve_model(&config.model, 3).unwrap();
        assert_eq!(model.minibatch, Minibatch::Discrimination);
        assert_eq!(model.mbdisc_shape(), Some((8, 3)));
        assert_eq!(
            TrainConfig::from_toml_str(&config.to_toml()).unwrap(),
            config
        );
        // absent: the paper's minibatch stddev, with the reference code's B and C
        let model = crate::plan::resolve_model(&TrainConfig::default().model, 3).unwrap();
        assert_eq!(model.minibatch, Minibatch::Stddev);
        assert_eq!((model.mbdisc_kernels, model.mbdisc_kernel_dim), (100, 5));
        let err = TrainConfig::from_toml_str("[model]\nminibatch = \"batchnorm\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batchnorm") && err.contains("discrimination"),
            "{err}"
        );
        for (b, c) in [(0, 5), (100, 0)] {
            let mut config = TrainConfig::default();
            config.model.minibatch = Some(Minibatch::Discrimination);
            config.model.mbdisc_kernels = Some(b);
            config.model.mbdisc_kernel_dim = Some(c);
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains("model.mbdisc_kernels and mbdisc_kernel_dim must be at least 1"),
                "{err}"
            );
        }
        // Without minibatch stddev, a group size that divides no minibatch does not matter.
        let mut config = TrainConfig::default();
        config.model.resolution = 16;
        config.model.mbstd_group_size = Some(7);
        assert!(config.validate().is_err());
        for kind in [Minibatch::Discrimination, Minibatch::None] {
            config.model.minibatch = Some(kind);
            config.validate().unwrap();
        }
    }

    #[test]
    fn a_sample_grid_beyond_the_pixel_limit_is_refused() {
        let mut config = TrainConfig::default();
        config.run.sample_cell_px = u32::MAX;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("sample_cell_px"), "{err}");
    }

    #[test]
    fn remedy_keys_default_to_todays_training_and_old_configs_still_load() {
        // A run folder's config.toml from before these keys existed.
        let old = "[loss]\nkind = \"wgan-gp\"\ngp_lambda = 10.0\n[optim]\nbeta1 = 0.0\n";
        let config = TrainConfig::from_toml_str(old).unwrap();
        assert_eq!(config.loss.real_label, 1.0);
        assert_eq!(config.instance_noise, InstanceNoiseConfig::default());
        assert_eq!(config.instance_noise.sigma, 0.0);
        assert_eq!((config.optim.lr_g_mult, config.optim.lr_d_mult), (1.0, 1.0));
        assert_eq!(config.optim.d_steps, 1);
        config.validate().unwrap();
        let text = "[loss]\nkind = \"non-saturating\"\nreal_label = 0.9\n\
                    [instance_noise]\nsigma = 0.1\nanneal_kimg = 5\n\
                    [optim]\nlr_g_mult = 0.5\nlr_d_mult = 2\nd_steps = 3\n";
        let config = TrainConfig::from_toml_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.loss.kind, LossKind::NonSaturating);
        assert_eq!(config.optim.d_steps, 3);
        assert_eq!(
            TrainConfig::from_toml_str(&config.to_toml()).unwrap(),
            config
        );
        let minimax = TrainConfig::from_toml_str("[loss]\nkind = \"minimax\"\n").unwrap();
        assert_eq!(minimax.loss.kind, LossKind::Minimax);
    }

    #[test]
    fn alarm_thresholds_that_could_never_fire_or_always_fire_are_refused() {
        let config = TrainConfig::from_toml_str(
            "[alarms]\nmsssim_gap = 0.4\ncollapse_grace_kimg = 0\ncollapse_confirm_evals = 1\n\
             min_g_grad_ratio = 0\n",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.alarms.collapse_confirm_evals, 1);
        assert_eq!(config.alarms.min_g_grad_ratio, 0.0, "0 turns the test off");
        assert_each_refused(&[
            (
                (|c: &mut TrainConfig| c.alarms.msssim_gap = 0.0) as fn(&mut TrainConfig),
                "alarms.msssim_gap 0 must be positive",
            ),
            (
                |c| c.alarms.collapse_grace_kimg = -1.0,
                "alarms.collapse_grace_kimg -1 must be 0 or more",
            ),
            (
                |c| c.alarms.collapse_confirm_evals = 0,
                "alarms.collapse_confirm_evals must be at least 1",
            ),
            (
                |c| c.alarms.swd_jump_factor = 0.5,
                "alarms.swd_jump_factor 0.5 must be above 1",
            ),
            (
                |c| c.alarms.max_d_gap = f64::NAN,
                "alarms.max_d_gap NaN must be positive",
            ),
            (
                |c| c.alarms.min_g_grad_ratio = 1.0,
                "alarms.min_g_grad_ratio 1 must be 0 or more and below 1",
            ),
            (
                |c| c.alarms.min_g_grad_ratio = -0.1,
                "alarms.min_g_grad_ratio -0.1 must be 0 or more and below 1",
            ),
        ]);
    }

    #[test]
    fn bad_remedy_keys_are_refused_with_their_name() {
        let err = TrainConfig::from_toml_str("[loss]\nkind = \"hinge\"\n").unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("hinge") && err.contains("non-saturating"),
            "{err}"
        );
        assert_eq!(
            "saturating".parse::<LossKind>().unwrap_err(),
            "unknown loss 'saturating' (expected wgan-gp, logistic-r1, non-saturating, minimax)"
        );
        assert_each_refused(&[
            (
                (|c: &mut TrainConfig| c.instance_noise.sigma = -0.1) as fn(&mut TrainConfig),
                "instance_noise.sigma -0.1 must be a non-negative number",
            ),
            (
                |c| c.instance_noise.sigma = f64::NAN,
                "instance_noise.sigma NaN",
            ),
            (
                |c| c.instance_noise.sigma = 1e300,
                "instance_noise.sigma 1e300 is beyond f32's range",
            ),
            (
                |c| c.instance_noise.sigma = 0.1,
                "instance_noise.anneal_kimg must be positive when instance_noise.sigma is 0.1",
            ),
            (
                |c| c.instance_noise.anneal_kimg = -1.0,
                "instance_noise.anneal_kimg -1 must be a non-negative number",
            ),
            (
                |c| c.optim.lr_g_mult = 0.0,
                "optim.lr_g_mult 0 must be positive",
            ),
            (
                |c| c.optim.lr_d_mult = -2.0,
                "optim.lr_d_mult -2 must be positive",
            ),
            (|c| c.optim.d_steps = 0, "optim.d_steps must be at least 1"),
            (
                |c| c.schedule.total_kimg = 1e300,
                "schedule.total_kimg 1e300 is beyond 1e9 kimg",
            ),
            (
                |c| c.schedule.total_kimg = 0.0004,
                "schedule.total_kimg 0.0004 is less than one image (0.001 kimg)",
            ),
            (
                |c| c.optim.d_steps = 100_000,
                "optim.d_steps 100000 × minibatch 16 at 4x4 shows 1600000 images per step, \
                 more than a 600000-image phase",
            ),
            (
                |c| c.schedule.lod_transition_kimg = 0.001,
                "the minibatch 16 at 8x8 is more than a 1-image phase of the schedule: the \
                 step would train past the phase",
            ),
            (
                |c| c.schedule.lr_default = 1e300,
                "schedule.lr_default 1e300 × optim.lr_g_mult 1e0 is beyond f32's range",
            ),
            (
                |c| c.optim.lr_d_mult = 1e42,
                "schedule.lr_default 1e-3 × optim.lr_d_mult 1e42 is beyond f32's range",
            ),
            (
                |c| c.schedule.lr_default = 1e-50,
                "schedule.lr_default 1e-50 × optim.lr_g_mult 1e0 is below f32's smallest normal \
                 number (1.1754944e-38): the optimizer would change no weight",
            ),
            (
                |c| c.optim.lr_d_mult = 1e-300,
                "schedule.lr_default 1e-3 × optim.lr_d_mult 1e-300 is below f32's smallest",
            ),
            (
                |c| {
                    c.schedule.lr.insert("32".into(), 1e-40);
                },
                "schedule.lr at 32 1e-40 × optim.lr_g_mult 1e0 is below f32's smallest",
            ),
            (
                |c| c.ema.half_life_kimg = Some(1e300),
                "ema.half_life_kimg 1e300 gives a decay of 1 per step of 16 images, which is 1 \
                 in f32 (the average's precision): G_ema would not follow the generator",
            ),
            (
                |c| {
                    c.ema.half_life_kimg = Some(1e6);
                    c.schedule.minibatch.insert("8".into(), 2);
                },
                "per step of 2 images, which is 1 in f32",
            ),
            (
                |c| c.ema.beta = 0.99999999,
                "ema.beta 0.99999999 gives a decay of 0.99999999 per step of 16 images, which is \
                 1 in f32",
            ),
            (
                |c| c.loss.feature_matching = -1.0,
                "loss.feature_matching -1 must be a non-negative weight",
            ),
            (
                |c| c.loss.real_label = 0.0,
                "loss.real_label 0 must be in (0, 1]",
            ),
            (
                |c| c.loss.real_label = 1.5,
                "loss.real_label 1.5 must be in (0, 1]",
            ),
            (
                |c| c.loss.real_label = 0.9,
                "loss.real_label 0.9 applies to the logistic losses",
            ),
        ]);
        // Smoothing is allowed with every logistic loss.
        for kind in [
            LossKind::LogisticR1,
            LossKind::NonSaturating,
            LossKind::Minimax,
        ] {
            let mut config = TrainConfig::default();
            config.loss.kind = kind;
            config.loss.real_label = 0.9;
            config.validate().unwrap();
        }
    }

    #[test]
    fn half_life_overrides_the_per_step_beta() {
        let ema = EmaConfig {
            beta: 0.9,
            half_life_kimg: Some(10.0),
        };
        let beta = ema.beta_for_batch(16);
        // 625 steps of 16 images = 10 kimg halve the weight of the old average.
        assert!((beta.powi(625) - 0.5).abs() < 1e-9);
        assert_eq!(EmaConfig::default().beta_for_batch(16), 0.999);
    }

    #[test]
    fn paths_that_are_not_utf8_are_refused_before_the_config_is_written() {
        use std::os::unix::ffi::OsStrExt;
        let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"p\xffq.pgan"));
        let mut config = TrainConfig::default();
        config.data.path = Some(odd.clone());
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("data.path p\u{fffd}q.pgan is not valid UTF-8"),
            "{err}"
        );
        config.data.path = None;
        config.run.out_dir = odd;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("run.out_dir"), "{err}");
    }

    #[test]
    fn keys_another_setting_overrides_are_named() {
        let text = "[loss]\nkind = \"wgan-gp\"\nr1_gamma = 5.0\ngp_lambda = 20.0\n\
                    [ema]\nbeta = 0.99\nhalf_life_kimg = 2.0\n";
        let config = TrainConfig::from_toml_str(text).unwrap();
        assert_eq!(
            config.keys_without_effect(text),
            vec![
                "loss.r1_gamma weights logistic-r1's penalty, and loss.kind is wgan-gp".to_string(),
                "ema.beta is replaced by ema.half_life_kimg 2, which sets the EMA's decay per \
                 step from the minibatch"
                    .to_string(),
            ]
        );
        let mut logistic = config.clone();
        logistic.loss.kind = LossKind::LogisticR1;
        logistic.ema.half_life_kimg = None;
        assert_eq!(
            logistic.keys_without_effect(text),
            vec!["loss.gp_lambda weights wgan-gp's penalty, and loss.kind is logistic-r1"]
        );
        // Default values spelt out (a resolved config.toml) and a half-life of 0 (beta per
        // step) are no contradiction.
        let resolved = TrainConfig::default().to_toml();
        assert!(TrainConfig::default()
            .keys_without_effect(&resolved)
            .is_empty());
        let zero = "[ema]\nbeta = 0.99\nhalf_life_kimg = 0.0\n";
        let config = TrainConfig::from_toml_str(zero).unwrap();
        assert!(config.keys_without_effect(zero).is_empty());
        // The minibatch layers' shapes beside another layer, an annealing of no noise.
        for (text, said) in [
            (
                "[model]\nminibatch = \"none\"\nmbstd_group_size = 8\n",
                "model.mbstd_group_size sizes the minibatch-stddev layer, and model.minibatch is none",
            ),
            (
                "[model]\nmbdisc_kernels = 7\n",
                "model.mbdisc_kernels shapes minibatch discrimination, and model.minibatch is stddev",
            ),
            (
                "[instance_noise]\nsigma = 0.0\nanneal_kimg = 5.0\n",
                "instance_noise.anneal_kimg anneals the instance noise, and instance_noise.sigma is 0",
            ),
            (
                "[nodes]\norchestrator = \"10.0.0.1:9000\"\n",
                "nodes.orchestrator sets up a run on several machines, and nodes.count is 1",
            ),
            (
                "[nodes]\ncount = 1\npeer_timeout_s = 10.0\n",
                "nodes.peer_timeout_s sets up a run on several machines, and nodes.count is 1",
            ),
        ] {
            let config = TrainConfig::from_toml_str(text).unwrap();
            let unused = config.keys_without_effect(text);
            assert!(unused.iter().any(|u| u.starts_with(said)), "{text}: {unused:?}");
        }
        let several =
            "[nodes]\ncount = 2\norchestrator = \"10.0.0.1:9000\"\npeer_timeout_s = 10.0\n";
        let config = TrainConfig::from_toml_str(several).unwrap();
        assert!(config.keys_without_effect(several).is_empty());
        let used = "[model]\nminibatch = \"discrimination\"\nmbdisc_kernels = 7\n";
        let config = TrainConfig::from_toml_str(used).unwrap();
        assert!(config.keys_without_effect(used).is_empty());
        // The shipped configs set nothing they do not use.
        let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
        for entry in std::fs::read_dir(configs).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let config = TrainConfig::from_toml_str(&text).unwrap();
            let unused = config.keys_without_effect(&text);
            assert!(unused.is_empty(), "{}: {unused:?}", path.display());
        }
    }
}
