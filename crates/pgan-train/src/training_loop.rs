//! The progressive training loop: one options struct in, a run directory out.
//!
//! Each step: draw reals from the pyramid (cross-faded during a fade-in), one D step with its
//! penalty, one G step, the EMA update. Each tick: statistics to `metrics.jsonl`, a status line,
//! alarms, optionally samples, evaluation and a checkpoint. NaN/Inf losses roll the run back to
//! the last checkpoint with a reduced learning rate.

use core::any::TypeId;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::backend::Flex;
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ElementConversion;
use burn::tensor::{Tensor, TensorData};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgan_data::{BatchSampler, PyramidReader};
use pgan_model::{Discriminator, Generator, ModelConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde_json::{Map, Value};

use crate::adam::FusedAdam;
use crate::alarms::Alarms;
use crate::checkpoint::{self, TrainState};
use crate::config::TrainConfig;
use crate::ema::update_ema;
use crate::error::{io_err, Result, TrainError};
use crate::eval::{evaluate_generator, EvalSettings};
use crate::images::{grid, save_png, upscale_cells, HostImages};
use crate::loss::{discriminator_loss, generator_loss};
use crate::run_dir::{create_run_dir, RunLock, RunLog, CONFIG_FILE, SAMPLES_DIR};
use crate::schedule::{Phase, PhaseKind, StageSchedule};
use crate::stats::{peak_rss_mib, MetricsWriter, TickStats};

/// Everything `pgan train` decides before the loop starts.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The resolved configuration (for a resume: the run's `config.toml` plus overrides).
    pub config: TrainConfig,
    /// Continue from this checkpoint folder or run directory instead of starting a new run.
    pub resume: Option<PathBuf>,
    /// Set by Ctrl-C: write a checkpoint and return.
    pub stop: Arc<AtomicBool>,
    /// Stop (with a checkpoint, as after Ctrl-C) once this many kimg have been shown.
    pub stop_after_kimg: Option<f64>,
    /// Echo log lines and draw the progress bar on the terminal.
    pub interactive: bool,
    /// Fault injection for tests: poison the D loss with NaN at these steps.
    pub inject_nan_at_steps: Vec<u64>,
    /// Continue a resumed run on a dataset other than the one its checkpoint was trained on
    /// (`--data-changed-ok`); without it that is an error.
    pub data_changed_ok: bool,
    /// Fault injection for tests: after these steps, poison one weight of G_ema with NaN. No
    /// loss reads G_ema, so only the end-of-tick weight check can find it.
    pub inject_nan_weights_at_steps: Vec<u64>,
}

impl TrainOptions {
    /// Options for a fresh run of `config`.
    pub fn new(config: TrainConfig) -> Self {
        Self {
            config,
            resume: None,
            stop: Arc::new(AtomicBool::new(false)),
            stop_after_kimg: None,
            interactive: false,
            inject_nan_at_steps: Vec::new(),
            inject_nan_weights_at_steps: Vec::new(),
            data_changed_ok: false,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The last checkpoint written.
    pub checkpoint: PathBuf,
    /// Real images shown in total.
    pub images_shown: u64,
    /// True when stopped early (Ctrl-C or `stop_after_kimg`), false when `total_kimg` was reached.
    pub interrupted: bool,
    /// The last sample grid written.
    pub latest_sample: Option<PathBuf>,
    /// Rollbacks after NaN/Inf during this session.
    pub rollbacks: u32,
}

type GOptim<B> = OptimizerAdaptor<FusedAdam, Generator<B>, B>;
type DOptim<B> = OptimizerAdaptor<FusedAdam, Discriminator<B>, B>;

/// The networks and their optimizers.
struct Nets<B: AutodiffBackend> {
    g: Generator<B>,
    d: Discriminator<B>,
    g_ema: Generator<B::InnerBackend>,
    optim_g: GOptim<B>,
    optim_d: DOptim<B>,
}

/// Runs (or resumes) training on backend `B`.
///
/// Runs in one process take turns: burn 0.21's autodiff keeps every graph in one process-global
/// registry whose cleanup after each backward pass also visits other threads' graphs, and two
/// trainings on different threads were measured to diverge at the bit level (the CI failure of
/// `a_run_stopped_and_resumed_matches_an_uninterrupted_run_bit_for_bit`, reproduced with
/// `RAYON_NUM_THREADS=1`, so not a parallel-reduction effect). The same turn also keeps the
/// process-global backend RNG to one run between seeding and initialisation.
pub fn train_on<B: AutodiffBackend>(
    options: TrainOptions,
    device: B::Device,
) -> Result<RunSummary> {
    static ONE_TRAINING_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panic in another training poisons the lock but leaves nothing shared half-written.
    let _turn = ONE_TRAINING_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let run = move || Trainer::<B>::start(options, device)?.run();
    if TypeId::of::<B::InnerBackend>() == TypeId::of::<Flex>() {
        on_a_rayon_thread(run)
    } else {
        run()
    }
}

/// Runs `f` on a thread of rayon's global pool. The CPU kernels (flex's and `pgan-model`'s)
/// are rayon parallel loops: called from a thread outside the pool, each one parks the caller,
/// wakes the pool and wakes the caller again when done, and a 4x4 step is hundreds of such ops
/// of a few tens of µs. Called from a pool thread, the caller runs its share of each loop and
/// the other threads steal the rest.
fn on_a_rayon_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // `scope` from outside the pool runs its body on a pool thread and waits for it.
    rayon::scope(|_| f())
}

struct Trainer<B: AutodiffBackend> {
    /// Ownership of the run directory, for the trainer's life.
    _lock: RunLock,
    options: TrainOptions,
    config: TrainConfig,
    model: ModelConfig,
    device: B::Device,
    reader: PyramidReader,
    schedule: StageSchedule,
    run_dir: PathBuf,
    log: RunLog,
    metrics: MetricsWriter,
    nets: Nets<B>,
    state: TrainState,
    sample_latents: Vec<f32>,
    tick: TickStats,
    alarms: Alarms,
    last_checkpoint: Option<PathBuf>,
    latest_sample: Option<PathBuf>,
    rollbacks: u32,
    /// The most bytes the GPU runtime's pool has reserved at a tick end of this process.
    peak_device_reserved: u64,
}

impl<B: AutodiffBackend> Trainer<B> {
    fn start(options: TrainOptions, device: B::Device) -> Result<Self> {
        let config = options.config.clone();
        config.validate()?;
        let data_path = config.data.path.clone().ok_or_else(|| TrainError::Config {
            path: None,
            message: "no dataset: set data.path in the config or pass one".into(),
        })?;
        let reader = PyramidReader::open(&data_path)?;
        if reader.resolution() < config.model.resolution {
            return Err(TrainError::Dataset {
                path: data_path,
                message: format!(
                    "its resolution {0}x{0} is below the config's model.resolution {1}x{1}; \
                     prepare it again with --resolution {1} or lower model.resolution",
                    reader.resolution(),
                    config.model.resolution
                ),
            });
        }
        if reader.is_empty() {
            return Err(TrainError::Dataset {
                path: data_path,
                message: "holds no images".into(),
            });
        }
        let model = crate::plan::resolve_model(&config.model, reader.channels());
        let schedule = StageSchedule::new(config.schedule.clone(), model.resolution);

        // A new run directory, or the one the checkpoint lives in.
        let mut resume_warnings = Vec::new();
        let (run_dir, resume_from) = match &options.resume {
            None => {
                let desc = config.run.desc.clone().unwrap_or_else(|| {
                    let stem = data_path.file_stem().unwrap_or_default().to_string_lossy();
                    format!("{stem}-{}", model.resolution)
                });
                (create_run_dir(&config.run.out_dir, &desc)?, None)
            }
            Some(path) => {
                let found = checkpoint::find_checkpoint(path)?;
                resume_warnings = found.warnings();
                let ckpt = found.path;
                let run_dir =
                    checkpoint::run_dir_of(&ckpt).ok_or_else(|| TrainError::Checkpoint {
                        path: ckpt.clone(),
                        message: "is not inside a run directory's checkpoints/ folder".into(),
                    })?;
                (run_dir, Some(ckpt))
            }
        };
        // Before anything is written: a second trainer in this folder stops here.
        let lock = RunLock::acquire(&run_dir)?;
        // A resume rewrites the run's config only once its checkpoint has been accepted.
        if resume_from.is_none() {
            write_config(&run_dir, &config)?;
        }
        let mut log = RunLog::open(&run_dir, options.interactive)?;
        for warning in resume_warnings {
            log.warn(warning);
        }
        if !lock.is_held() {
            log.warn("this filesystem has no file locks: nothing stops a second trainer here");
        }

        let nets = fresh_nets::<B>(&model, &config, &device, Some(config.run.seed));
        let state = TrainState {
            version: checkpoint::CHECKPOINT_VERSION,
            images_shown: 0,
            tick: 0,
            step: 0,
            phase_index: 0,
            stage: 0,
            alpha: 1.0,
            rng: ChaCha8Rng::seed_from_u64(config.run.seed),
            sampler: BatchSampler::new(reader.len(), config.run.seed, config.data.mirror),
            lr_multiplier: 1.0,
            cooldown_until: 0,
            consecutive_failures: 0,
            elapsed_s: 0.0,
            best_swd: Default::default(),
            best_msssim: Default::default(),
            model: serde_json::to_value(&model).expect("model config serialises"),
            files: Default::default(),
            dataset: Some(checkpoint::DatasetFingerprint::of(&reader)),
            checksum: None,
        };
        // Fixed latents for the sample grids, independent of the training RNG.
        let mut sample_rng = ChaCha8Rng::seed_from_u64(config.run.seed ^ 0x9e37_79b9_7f4a_7c15);
        let sample_count = config.run.sample_rows * config.run.sample_cols;
        let sample_latents: Vec<f32> = (0..sample_count * model.latent_dim)
            .map(|_| sample_rng.sample(StandardNormal))
            .collect();

        let metrics = crate::stats::MetricsWriter::open(&run_dir)?;
        let alarms = Alarms::new(config.alarms.clone());
        let mut trainer = Self {
            _lock: lock,
            options,
            config,
            model,
            device,
            reader,
            schedule,
            run_dir,
            log: {
                log.info("");
                log
            },
            metrics,
            nets,
            state,
            sample_latents,
            tick: TickStats::default(),
            alarms,
            last_checkpoint: None,
            latest_sample: None,
            rollbacks: 0,
            peak_device_reserved: 0,
        };
        match resume_from {
            Some(ckpt) => {
                trainer.load_checkpoint(&ckpt)?;
                write_config(&trainer.run_dir, &trainer.config)?;
                let images_shown = trainer.state.images_shown;
                trainer.metrics.truncate_after(images_shown)?;
                trainer.log.info(format!(
                    "resumed {} at {:.3} kimg (tick {})",
                    ckpt.display(),
                    trainer.state.images_shown as f64 / 1000.0,
                    trainer.state.tick
                ));
                trainer.last_checkpoint = Some(ckpt);
            }
            None => {
                trainer.log.info(format!(
                    "new run {} on {} ({} images, {}x{})",
                    trainer.run_dir.display(),
                    trainer.config.run.backend,
                    trainer.reader.len(),
                    trainer.reader.resolution(),
                    trainer.reader.resolution()
                ));
                trainer.save_reals_grid()?;
                // A checkpoint at kimg 0 gives the NaN rollback somewhere to go from the start.
                trainer.save_checkpoint()?;
            }
        }
        Ok(trainer)
    }

    fn run(mut self) -> Result<RunSummary> {
        let total_images = (self.config.schedule.total_kimg * 1000.0).round() as u64;
        let stop_after = self
            .options
            .stop_after_kimg
            .map(|k| (k * 1000.0).round() as u64);
        let bar = self.progress_bar(total_images);
        self.log.attach(bar.clone());
        let mut session_start = Instant::now();
        let mut tick_start = Instant::now();
        let mut tick_images = 0u64;
        let mut interrupted = false;

        while self.state.images_shown < total_images {
            if self.options.stop.load(Ordering::SeqCst)
                || stop_after.is_some_and(|s| self.state.images_shown >= s)
            {
                interrupted = true;
                break;
            }
            let phase = self.schedule.at(self.state.images_shown);
            if phase.index != self.state.phase_index {
                self.enter_phase(&phase);
            }

            // One D step and one G step on a minibatch of reals.
            let healthy = self.step(&phase)?;
            // Non-finite weights are looked for once a tick (a read-back of every parameter,
            // which on a GPU waits for the queue); the losses and gradient norms every step.
            let tick_len = (self.config.run.tick_kimg * 1000.0) as u64;
            let images_after = self.state.images_shown + phase.batch as u64;
            let tick_ends =
                images_after >= (self.state.tick + 1) * tick_len || images_after >= total_images;
            let healthy = healthy && (!tick_ends || self.weights_finite());
            if !healthy {
                self.rollback()?;
                session_start = Instant::now();
                tick_start = Instant::now();
                tick_images = 0;
                self.tick = TickStats::default();
                continue;
            }
            self.state.images_shown += phase.batch as u64;
            tick_images += phase.batch as u64;
            bar.set_position(self.state.images_shown.min(total_images));
            bar.set_message(format!(
                "stage {} {}x{} {} α={:.2} {:.1}/{:.0} kimg",
                phase.stage,
                phase.resolution,
                phase.resolution,
                phase.kind,
                phase.alpha,
                self.state.images_shown as f64 / 1000.0,
                self.config.schedule.total_kimg
            ));

            // End of a tick: statistics, samples, evaluation, alarms, checkpoint.
            if tick_ends {
                let seconds = tick_start.elapsed().as_secs_f64();
                self.state.elapsed_s += session_start.elapsed().as_secs_f64();
                session_start = Instant::now();
                self.end_tick(&phase, tick_images, seconds)?;
                tick_start = Instant::now();
                tick_images = 0;
            }
        }
        self.state.elapsed_s += session_start.elapsed().as_secs_f64();
        bar.finish_and_clear();

        // Always leave a checkpoint at the point where the run stopped.
        let at_checkpoint = self
            .last_checkpoint
            .as_ref()
            .and_then(|c| checkpoint::read_state(c).ok())
            .is_some_and(|s| s.images_shown == self.state.images_shown);
        if !at_checkpoint {
            self.save_checkpoint()?;
        }
        let how = if interrupted { "stopped" } else { "finished" };
        self.log.info(format!(
            "{how} at {:.3} kimg; checkpoint {}",
            self.state.images_shown as f64 / 1000.0,
            self.last_checkpoint
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
        Ok(RunSummary {
            run_dir: self.run_dir.clone(),
            checkpoint: self
                .last_checkpoint
                .clone()
                .expect("a checkpoint was written"),
            images_shown: self.state.images_shown,
            interrupted,
            latest_sample: self.latest_sample.clone(),
            rollbacks: self.rollbacks,
        })
    }

    /// A new fade or stable phase: optionally reset Adam (official `reset_opt_for_new_lod`).
    fn enter_phase(&mut self, phase: &Phase) {
        self.log.info(format!(
            "phase {}: {} {}x{} (batch {}, lr {})",
            phase.index, phase.kind, phase.resolution, phase.resolution, phase.batch, phase.lr
        ));
        if self.config.schedule.reset_optimizer {
            self.nets.optim_g = adam(&self.config).init();
            self.nets.optim_d = adam(&self.config).init();
        }
        self.state.phase_index = phase.index;
    }

    /// One D step and one G step; false when a loss came out NaN/Inf.
    fn step(&mut self, phase: &Phase) -> Result<bool> {
        let (stage, alpha, n) = (phase.stage, phase.alpha, phase.batch);
        let step = self.state.step;
        let lr = phase.lr * self.lr_multiplier();
        let fade = (phase.kind == PhaseKind::Fade).then_some(alpha);
        let batch = self
            .state
            .sampler
            .next_batch(&self.reader, phase.resolution, n, fade)?;
        let reals =
            Tensor::<B, 4>::from_data(TensorData::new(batch.data, batch.shape), &self.device);

        // D step: fakes from the current G without building G's graph.
        let latents = self.latents(n);
        let fakes = self.nets.g.valid().forward(latents, stage, alpha);
        let fakes = Tensor::<B, 4>::from_inner(fakes);
        let mix = self.uniform(n);
        let (mut loss_d, d_stats) = discriminator_loss(
            &self.config.loss,
            &self.nets.d,
            reals,
            fakes,
            mix,
            stage,
            alpha,
        );
        if take_injection(&mut self.options.inject_nan_at_steps, step) {
            loss_d = loss_d.mul_scalar(f32::NAN);
        }
        let grads = GradientsParams::from_grads(loss_d.backward(), &self.nets.d);
        let d_grad_norm = grad_norm(&self.nets.d, &grads);
        let d = self.nets.d.clone();
        self.nets.d = self.nets.optim_d.step(lr, d, grads);

        // G step: D's parameters are frozen so only G's gradients are computed.
        let latents = Tensor::<B, 2>::from_inner(self.latents(n));
        let fakes = self.nets.g.forward(latents, stage, alpha);
        let scores = self.nets.d.clone().no_grad().forward(fakes, stage, alpha);
        let loss_g = generator_loss(&self.config.loss, scores);
        let loss_g_value: f32 = loss_g.clone().detach().into_scalar().elem::<f32>();
        let grads = GradientsParams::from_grads(loss_g.backward(), &self.nets.g);
        let g_grad_norm = grad_norm(&self.nets.g, &grads);
        let g = self.nets.g.clone();
        self.nets.g = self.nets.optim_g.step(lr, g, grads);

        let d_loss = d_stats.loss;
        let healthy = [d_loss, loss_g_value, d_grad_norm, g_grad_norm]
            .iter()
            .all(|v| v.is_finite());
        self.state.step += 1;
        if !healthy {
            self.log.warn(format!(
                "non-finite values at step {} ({:.3} kimg): Loss/D {d_loss}, Loss/G {loss_g_value}, \
                 grad norms D {d_grad_norm} G {g_grad_norm}",
                self.state.step,
                self.state.images_shown as f64 / 1000.0
            ));
            return Ok(false);
        }

        // EMA of G's weights (per-step decay, or from a half-life in kimg).
        let beta = self.config.ema.beta_for_batch(n);
        let ema = std::mem::replace(&mut self.nets.g_ema, self.nets.g.valid());
        self.nets.g_ema = update_ema::<B, _>(ema, &self.nets.g, beta);
        if take_injection(&mut self.options.inject_nan_weights_at_steps, step) {
            self.nets.g_ema = poison_first_parameter(self.nets.g_ema.clone());
        }

        let t = &mut self.tick;
        t.report("Loss/D", d_loss as f64);
        t.report("Loss/G", loss_g_value as f64);
        t.report("Loss/D/penalty", d_stats.penalty as f64);
        t.report("Loss/D/drift", d_stats.drift as f64);
        t.report("Penalty/grad_norm", d_stats.penalty_grad_norm as f64);
        t.report("D/real", d_stats.real_score as f64);
        t.report("D/fake", d_stats.fake_score as f64);
        t.report("Grad/D/norm", d_grad_norm as f64);
        t.report("Grad/G/norm", g_grad_norm as f64);
        Ok(true)
    }

    fn end_tick(&mut self, phase: &Phase, tick_images: u64, seconds: f64) -> Result<()> {
        self.state.tick += 1;
        let kimg = self.state.images_shown as f64 / 1000.0;
        let mut row = Map::new();
        let mut put = |k: &str, v: Value| {
            row.insert(k.to_string(), v);
        };
        put("tick", self.state.tick.into());
        put("kimg", kimg.into());
        put("stage", phase.stage.into());
        put("resolution", phase.resolution.into());
        put("phase", phase.kind.to_string().into());
        put("alpha", (phase.alpha as f64).into());
        put("batch", phase.batch.into());
        put("lr_g", (phase.lr * self.lr_multiplier()).into());
        put("lr_d", (phase.lr * self.lr_multiplier()).into());
        for (key, mean) in self.tick.means() {
            put(key, finite_or_null(mean));
        }
        let img_per_s = tick_images as f64 / seconds.max(1e-9);
        put("Speed/img_per_s", finite_or_null(img_per_s));
        put(
            "Speed/sec_per_kimg",
            finite_or_null(1000.0 / img_per_s.max(1e-9)),
        );
        if let Some(mib) = peak_rss_mib() {
            put("Mem/peak_rss_mb", mib.into());
        }
        // On a GPU: the runtime's pool now, and the most it has held at any tick end of this
        // process (pools keep their pages, so that is close to the true peak).
        if let Some((in_use, reserved)) = crate::backend::device_memory(&self.device) {
            let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            self.peak_device_reserved = self.peak_device_reserved.max(reserved);
            put("Mem/device_in_use_mb", mib(in_use).into());
            put("Mem/device_reserved_mb", mib(reserved).into());
            put(
                "Mem/device_peak_reserved_mb",
                mib(self.peak_device_reserved).into(),
            );
        }
        put("time_s", self.state.elapsed_s.into());

        // Failure-mode alarms on the tick's averages.
        let mut warnings = self.alarms.check_tick(&self.tick);

        // Optional evaluation (SWD and MS-SSIM diversity) on a small sample.
        let eval_every = self.config.eval.every_kimg;
        let tick_start_kimg = kimg - tick_images as f64 / 1000.0;
        if eval_every > 0.0 && (kimg / eval_every).floor() > (tick_start_kimg / eval_every).floor()
        {
            let settings = EvalSettings {
                num_images: self.config.eval.num_images,
                msssim_pairs: self.config.eval.msssim_pairs,
                seed: self.config.run.seed.wrapping_add(self.state.tick),
                batch: phase.batch.max(8),
            };
            match evaluate_generator(
                &self.nets.g_ema,
                &self.model,
                &self.reader,
                phase,
                &settings,
                &self.device,
            ) {
                Ok(report) => {
                    for (key, value) in report.rows() {
                        row.insert(key.to_string(), finite_or_null(value));
                    }
                    warnings.extend(self.alarms.check_eval(
                        &report,
                        phase.resolution,
                        &mut self.state.best_swd,
                        &mut self.state.best_msssim,
                    ));
                }
                Err(e) => self.log.warn(format!("evaluation skipped: {e}")),
            }
        }
        for w in &warnings {
            self.log.warn(format!("alarm: {w}"));
        }
        if !warnings.is_empty() {
            row.insert("Alarm/count".into(), warnings.len().into());
            if let Some(bar) = self.log.bar() {
                bar.set_prefix(format!("⚠ {}", warnings[0]));
            }
        }
        self.metrics.write(&row)?;
        self.log.info(format!(
            "tick {:<4} kimg {:<8.1} {}x{} {:<6} α {:.2}  Loss/D {:>8.3}  Loss/G {:>8.3}  D(real) {:>7.3}  D(fake) {:>7.3}  {:>6.1} img/s",
            self.state.tick,
            kimg,
            phase.resolution,
            phase.resolution,
            phase.kind.to_string(),
            phase.alpha,
            self.tick.mean("Loss/D").unwrap_or(f64::NAN),
            self.tick.mean("Loss/G").unwrap_or(f64::NAN),
            self.tick.mean("D/real").unwrap_or(f64::NAN),
            self.tick.mean("D/fake").unwrap_or(f64::NAN),
            img_per_s
        ));
        self.tick = TickStats::default();

        if self.state.tick % self.config.run.sample_ticks.max(1) == 0 {
            self.save_samples(phase)?;
        }
        if self.state.tick % self.config.run.checkpoint_ticks == 0 {
            self.save_checkpoint()?;
        }
        Ok(())
    }

    /// Whether every weight of G, D and G_ema is finite; logs the finding when not.
    fn weights_finite(&mut self) -> bool {
        let nets = &self.nets;
        let finite = params_finite(&nets.g) && params_finite(&nets.d) && params_finite(&nets.g_ema);
        if !finite {
            self.log.warn(format!(
                "non-finite weights at step {} ({:.3} kimg) with finite losses",
                self.state.step,
                self.state.images_shown as f64 / 1000.0
            ));
        }
        finite
    }

    fn lr_multiplier(&self) -> f64 {
        if self.state.images_shown < self.state.cooldown_until {
            self.state.lr_multiplier
        } else {
            1.0
        }
    }

    /// Latents ~ N(0, I) from the checkpointed host RNG, on the inner backend.
    fn latents(&mut self, n: usize) -> Tensor<B::InnerBackend, 2> {
        let dim = self.model.latent_dim;
        let values: Vec<f32> = (0..n * dim)
            .map(|_| self.state.rng.sample(StandardNormal))
            .collect();
        Tensor::from_data(TensorData::new(values, [n, dim]), &self.device)
    }

    /// WGAN-GP interpolation factors ~ U[0, 1), one per sample.
    fn uniform(&mut self, n: usize) -> Tensor<B, 4> {
        let values: Vec<f32> = (0..n).map(|_| self.state.rng.random::<f32>()).collect();
        Tensor::from_data(TensorData::new(values, [n, 1, 1, 1]), &self.device)
    }

    fn progress_bar(&self, total_images: u64) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(
            Some(total_images),
            if self.options.interactive && self.config.run.progress {
                ProgressDrawTarget::stderr_with_hz(4)
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix}[{elapsed_precise}] {wide_bar} {msg} {per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.set_position(self.state.images_shown);
        bar.reset_eta();
        bar
    }

    fn save_samples(&mut self, phase: &Phase) -> Result<()> {
        let n = self.config.run.sample_rows * self.config.run.sample_cols;
        let latents = Tensor::<B::InnerBackend, 2>::from_data(
            TensorData::new(self.sample_latents.clone(), [n, self.model.latent_dim]),
            &self.device,
        );
        let images =
            HostImages::from_tensor(self.nets.g_ema.forward(latents, phase.stage, phase.alpha));
        let cells = upscale_cells(images.to_rgb_all(), self.config.run.sample_cell_px);
        let sheet = grid(
            &cells,
            self.config.run.sample_rows,
            self.config.run.sample_cols,
            2,
        );
        let path = self
            .run_dir
            .join(SAMPLES_DIR)
            .join(format!("tick-{:06}.png", self.state.tick));
        save_png(&sheet, &path)?;
        self.latest_sample = Some(path);
        Ok(())
    }

    /// A grid of reals at full resolution, for comparison with the samples.
    fn save_reals_grid(&mut self) -> Result<()> {
        let n = (self.config.run.sample_rows * self.config.run.sample_cols).min(self.reader.len());
        let res = self.model.resolution;
        let mut sampler = BatchSampler::new(self.reader.len(), self.config.run.seed, false);
        let batch = sampler.next_batch(&self.reader, res, n, None)?;
        let images = HostImages {
            data: batch.data,
            shape: batch.shape,
        };
        let cells = upscale_cells(images.to_rgb_all(), self.config.run.sample_cell_px);
        let sheet = grid(
            &cells,
            self.config.run.sample_rows,
            self.config.run.sample_cols,
            2,
        );
        save_png(&sheet, &self.run_dir.join("reals.png"))
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        // Never store poisoned weights: a NaN here means the last steps went wrong unseen.
        if !params_finite(&self.nets.g) || !params_finite(&self.nets.d) {
            return Err(TrainError::Diverged(format!(
                "non-finite weights at {:.3} kimg; not writing a checkpoint",
                self.state.images_shown as f64 / 1000.0
            )));
        }
        if self.state.images_shown >= self.state.cooldown_until {
            self.state.consecutive_failures = 0;
        }
        let phase = self.schedule.at(self.state.images_shown);
        self.state.stage = phase.stage;
        self.state.alpha = phase.alpha;
        let nets = &self.nets;
        let path = checkpoint::write_checkpoint(&self.run_dir, &self.state, |dir| {
            checkpoint::save_module(nets.g.clone(), dir, checkpoint::GENERATOR)?;
            checkpoint::save_module(nets.d.clone(), dir, checkpoint::DISCRIMINATOR)?;
            checkpoint::save_module(nets.g_ema.clone(), dir, checkpoint::GENERATOR_EMA)?;
            checkpoint::save_record::<B, _>(nets.optim_g.to_record(), dir, checkpoint::OPTIM_G)?;
            checkpoint::save_record::<B, _>(nets.optim_d.to_record(), dir, checkpoint::OPTIM_D)?;
            Ok(())
        })?;
        checkpoint::prune(&self.run_dir, self.config.run.keep_checkpoints)?;
        self.last_checkpoint = Some(path);
        Ok(())
    }

    fn load_checkpoint(&mut self, ckpt: &Path) -> Result<()> {
        let mut state = checkpoint::read_state(ckpt)?;
        let expected = serde_json::to_value(&self.model).expect("model config serialises");
        if state.model != expected {
            return Err(TrainError::Checkpoint {
                path: ckpt.to_path_buf(),
                message: format!(
                    "was made with a different model configuration ({}) than the config asks for ({})",
                    state.model, expected
                ),
            });
        }
        let (len, mirror) = (self.reader.len(), self.config.data.mirror);
        let seed = self.config.run.seed ^ state.images_shown;
        let fresh_sampler = || BatchSampler::new(len, seed, mirror);
        let changed_ok = self.options.data_changed_ok;
        for warning in
            checkpoint::adopt_dataset(&mut state, ckpt, &self.reader, changed_ok, fresh_sampler)?
        {
            self.log.warn(warning);
        }
        let d = &self.device;
        let fresh = fresh_nets::<B>(&self.model, &self.config, d, None);
        let g = checkpoint::load_module(fresh.g, ckpt, checkpoint::GENERATOR, d)?;
        let disc = checkpoint::load_module(fresh.d, ckpt, checkpoint::DISCRIMINATOR, d)?;
        let g_ema = checkpoint::load_module(fresh.g_ema, ckpt, checkpoint::GENERATOR_EMA, d)?;
        let optim_g = fresh.optim_g.load_record(checkpoint::load_record::<B, _>(
            ckpt,
            checkpoint::OPTIM_G,
            d,
        )?);
        let optim_d = fresh.optim_d.load_record(checkpoint::load_record::<B, _>(
            ckpt,
            checkpoint::OPTIM_D,
            d,
        )?);
        self.nets = Nets {
            g,
            d: disc,
            g_ema,
            optim_g,
            optim_d,
        };
        self.state = state;
        Ok(())
    }

    /// Back to the last checkpoint with a smaller learning rate, or give up.
    fn rollback(&mut self) -> Result<()> {
        let failures = self.state.consecutive_failures + 1;
        // Compounds only while a reduced rate is still in force: a failure long after the
        // last cooldown ended starts again from the configured rate.
        let multiplier = self.lr_multiplier() * self.config.recovery.lr_factor;
        let max = self.config.recovery.max_consecutive_failures;
        if failures > max {
            return Err(TrainError::Diverged(format!(
                "{max} rollbacks in a row did not get past {:.3} kimg at {}x{}. Try a lower \
                 learning rate (schedule.lr_default), a smaller minibatch, a larger \
                 loss.gp_lambda, or resume from an earlier checkpoint in {}",
                self.state.images_shown as f64 / 1000.0,
                self.schedule.at(self.state.images_shown).resolution,
                self.schedule.at(self.state.images_shown).resolution,
                self.run_dir.join(checkpoint::CHECKPOINTS_DIR).display()
            )));
        }
        let found = checkpoint::find_checkpoint(&self.run_dir)
            .map_err(|e| TrainError::Diverged(format!("no checkpoint to roll back to: {e}")))?;
        for warning in found.warnings() {
            self.log.warn(warning);
        }
        let ckpt = found.path;
        self.load_checkpoint(&ckpt)?;
        self.state.consecutive_failures = failures;
        self.state.lr_multiplier = multiplier;
        self.state.cooldown_until =
            self.state.images_shown + (self.config.recovery.cooldown_kimg * 1000.0) as u64;
        self.rollbacks += 1;
        self.metrics.truncate_after(self.state.images_shown)?;
        self.log.warn(format!(
            "rolled back to {} ({:.3} kimg); learning rate x{} for {} kimg (failure {failures} of {max})",
            ckpt.display(),
            self.state.images_shown as f64 / 1000.0,
            multiplier,
            self.config.recovery.cooldown_kimg
        ));
        let mut row = Map::new();
        row.insert(
            "kimg".into(),
            (self.state.images_shown as f64 / 1000.0).into(),
        );
        row.insert("Event/rollback".into(), failures.into());
        self.metrics.write(&row)?;
        Ok(())
    }
}

/// Writes the resolved config as `RUN_DIR/config.toml`.
fn write_config(run_dir: &Path, config: &TrainConfig) -> Result<()> {
    let path = run_dir.join(CONFIG_FILE);
    crate::fsutil::write_atomic(&path, config.to_toml().as_bytes()).map_err(io_err(&path, "write"))
}

fn adam(config: &TrainConfig) -> FusedAdam {
    let o = &config.optim;
    FusedAdam::new(o.beta1, o.beta2, o.epsilon)
}

/// Newly initialised networks; with a seed, the backend RNG is seeded first. The backend RNG is
/// process-global; [`train_on`] runs one training per process at a time, so nothing else draws
/// from it between the seed and the last parameter.
fn fresh_nets<B: AutodiffBackend>(
    model: &ModelConfig,
    config: &TrainConfig,
    device: &B::Device,
    seed: Option<u64>,
) -> Nets<B> {
    if let Some(seed) = seed {
        B::seed(device, seed);
    }
    // burn initialises parameters lazily, on first use: force it here, right after the seed.
    let g: Generator<B> = materialize(model.init_generator(device));
    let d: Discriminator<B> = materialize(model.init_discriminator(device));
    let g_ema = g.valid();
    Nets {
        g,
        d,
        g_ema,
        optim_g: adam(config).init(),
        optim_d: adam(config).init(),
    }
}

/// Touches every parameter so lazily initialised ones draw their values now.
fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}

fn finite_or_null(v: f64) -> Value {
    if v.is_finite() {
        Value::from(v)
    } else {
        Value::Null
    }
}

/// L2 norm of a module's gradients.
fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &GradientsParams) -> f32 {
    struct SumSquares<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for SumSquares<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let s = g.powf_scalar(2.0).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    let mut v = SumSquares::<B> { grads, total: None };
    module.visit(&mut v);
    v.total.map_or(0.0, |t| {
        let s: f32 = t.into_scalar().elem::<f32>();
        s.sqrt()
    })
}

/// True when every parameter is finite.
/// Whether a fault is to be injected at `step`; each fires once (the step counter is restored
/// by a rollback, so the same step comes round again).
fn take_injection(steps: &mut Vec<u64>, step: u64) -> bool {
    let hit = steps.contains(&step);
    steps.retain(|&s| s != step);
    hit
}

/// `module` with its first float parameter set to NaN (fault injection).
fn poison_first_parameter<B: Backend, M: Module<B>>(module: M) -> M {
    struct Poison {
        done: bool,
    }
    impl<B: Backend> burn::module::ModuleMapper<B> for Poison {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<B, D>>,
        ) -> burn::module::Param<Tensor<B, D>> {
            if self.done {
                return param;
            }
            self.done = true;
            param.map(|tensor| tensor.mul_scalar(f32::NAN))
        }
    }
    module.map(&mut Poison { done: false })
}

fn params_finite<B: Backend, M: Module<B>>(module: &M) -> bool {
    struct Check<B: Backend> {
        ok: Option<Tensor<B, 1>>,
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Check<B> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            // sum(x * 0) is 0 for finite x and NaN for NaN or ±Inf.
            let s = param.val().mul_scalar(0.0).sum();
            self.ok = Some(match self.ok.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
    let mut c = Check::<B> { ok: None };
    module.visit(&mut c);
    c.ok.is_none_or(|t| {
        let v: f32 = t.into_scalar().elem::<f32>();
        v.is_finite()
    })
}
