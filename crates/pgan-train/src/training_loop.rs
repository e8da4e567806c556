//! The progressive training loop: one options struct in, a run directory out.
//!
//! [`train_on`] starts (or resumes) a `Trainer` and runs it. The loop itself is `Trainer::run`
//! in this file; each of its parts has its own file in `training_loop/`:
//! - `step.rs`: one training step: the D step (its loss is formed in [`loss`](crate::loss)),
//!   the G step and the EMA update;
//! - `tick.rs`: the end of a tick, in order: the metrics row, the evaluation, the alarms, then
//!   the outputs (status line, sample grid, checkpoint);
//! - `recovery.rs`: NaN/Inf in a loss or a weight, found at the tick's end, rolls the run back
//!   to the last checkpoint with a reduced learning rate for a cooldown;
//! - `faults.rs`: fault injection for tests (`train_with_faults`, hidden from the docs).
//!
//! A checkpoint is written by `checkpoint::save_training` (called from `save_checkpoint` here)
//! and read back by `checkpoint::load_training` (`restore`).
//!
//! Steps read nothing from the device: what they measure waits on the device until the tick's
//! end reads it in one go (`stats::StepValues`; every read is counted by `host_read`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgan_data::{BatchSampler, PyramidReader};
use pgan_model::ModelConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::alarms::{AlarmEcho, Alarms};
use crate::backend::{dispatch, BackendJob};
use crate::checkpoint::{self, TrainState};
use crate::config::TrainConfig;
use crate::dataset_watch::DatasetWatch;
use crate::distributed::Peers;
use crate::error::{io_err, Result, TrainError};
use crate::images::{grid, save_own_png, upscale_cells, HostImages};
use crate::latents::latent_values;
use crate::nets::{params_finite, Nets};
use crate::preflight::{check_checkpoint_model, preflight, Preflight, ResumeRate};
use crate::run_dir::{create_run_dir, RunLock, RunLog, CONFIG_FILE, SAMPLES_DIR};
use crate::schedule::{Phase, StageSchedule};
use crate::stats::{
    self, Cut, MetricsWriter, OpenTick, StepValues, TickStats, Truncated, METRICS_FILE,
};

#[doc(hidden)]
pub mod faults;
mod recovery;
pub(crate) mod step;
mod tick;

use faults::Faults;

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
    /// Continue a resumed run on a dataset other than the one its checkpoint was trained on
    /// (`--data-changed-ok`); without it that is an error.
    pub data_changed_ok: bool,
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

/// Runs (or resumes) training on backend `B`.
///
/// Runs in one process take turns ([`step::process_turn`]), as the data-parallel peers of a run
/// do within a step: burn 0.21's autodiff keeps every graph in one process-global registry whose
/// cleanup after each backward pass also visits other threads' graphs, and two trainings on
/// different threads were measured to diverge at the bit level (the CI failure of
/// `a_run_stopped_and_resumed_matches_an_uninterrupted_run_bit_for_bit`, reproduced with
/// `RAYON_NUM_THREADS=1`, so not a parallel-reduction effect).
pub fn train_on<B: AutodiffBackend>(
    options: TrainOptions,
    device: B::Device,
) -> Result<RunSummary> {
    train_with_faults_on::<B>(options, None, device)
}

/// [`train`](crate::train) with faults injected (tests only; see [`faults`]).
#[doc(hidden)]
pub fn train_with_faults(options: TrainOptions, faults: Faults) -> Result<RunSummary> {
    struct Job(TrainOptions, Faults);
    impl BackendJob for Job {
        type Output = RunSummary;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<RunSummary> {
            train_with_faults_on::<B>(self.0, Some(self.1), device)
        }
    }
    let (kind, device) = (options.config.run.backend, options.config.run.device);
    dispatch(kind, device, Job(options, faults))
}

fn train_with_faults_on<B: AutodiffBackend>(
    options: TrainOptions,
    faults: Option<Faults>,
    device: B::Device,
) -> Result<RunSummary> {
    let _turn = step::process_turn();
    // Peers block in all-reduces waiting for each other: none of them runs on a rayon thread,
    // which the others' parallel loops could be waiting for.
    let one_peer = crate::distributed::peer_count(&options.config) == 1;
    let run = move || Trainer::<B>::start(options, faults, device)?.run();
    if one_peer && pgan_model::kernels::is_cpu::<B::InnerBackend>() {
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

/// A training run in progress. Its methods are spread over this file (start, the loop,
/// checkpoints) and the `step`, `tick` and `recovery` files beside it.
struct Trainer<B: AutodiffBackend> {
    /// Ownership of the run directory, for the trainer's life.
    _lock: RunLock,
    options: TrainOptions,
    config: TrainConfig,
    model: ModelConfig,
    device: B::Device,
    reader: PyramidReader,
    /// The dataset file as the run last accepted it, looked at once a tick.
    dataset_watch: DatasetWatch,
    schedule: StageSchedule,
    run_dir: PathBuf,
    log: RunLog,
    metrics: MetricsWriter,
    nets: Nets<B>,
    state: TrainState,
    /// Fixed latents of the sample grids, independent of the training RNG.
    sample_latents: Vec<f32>,
    /// The tick in progress: its timers and the values reported so far.
    tick: Tick<B::InnerBackend>,
    alarms: Alarms,
    /// What the log has said of the tick alarms (one held tick after tick is not said each tick).
    alarm_echo: AlarmEcho,
    last_checkpoint: Option<PathBuf>,
    latest_sample: Option<PathBuf>,
    rollbacks: u32,
    /// Whether the log has said that evaluations wait for a resolution they can measure.
    told_eval_below_minimum: bool,
    /// The most bytes the GPU runtime's pool has reserved at a tick end of this process.
    peak_device_reserved: u64,
    /// Test-only fault injection ([`faults`]); `None` in every real run.
    faults: Option<Faults>,
    /// The Inception network and the reals' features when `eval.fid_every_kimg` is on.
    fid: Option<crate::inception_metrics::TrainingFid<B::InnerBackend>>,
    /// The data-parallel peers (`run.devices`); the networks above are peer 0's.
    peers: Peers<B>,
}

impl<B: AutodiffBackend> Trainer<B> {
    fn start(options: TrainOptions, faults: Option<Faults>, device: B::Device) -> Result<Self> {
        let Preflight {
            config,
            reader,
            model,
            warnings,
            resume,
        } = preflight(&options)?;
        crate::backend::apply_precision(config.run.precision, config.run.backend)?;
        let schedule = StageSchedule::new(config.schedule.clone(), model.resolution);

        // Loaded before the run directory exists, so missing weights stop the run at once.
        let fid = if config.eval.fid_enabled() {
            let weights = pgan_inception::resolve_weights_path(None);
            Some(crate::inception_metrics::TrainingFid::new(
                &weights,
                config.eval.fid_num,
                &device,
            )?)
        } else {
            None
        };

        // A new run directory, or the one the checkpoint the preflight found (and checked,
        // reading it whole) lives in; the damaged ones it passed over are among its warnings.
        let (run_dir, resume_from) = match resume {
            None => {
                let desc = config.run.desc.clone().unwrap_or_else(|| {
                    // The name as given (the config's path is resolved through links now).
                    let given = options.config.data.path.as_deref().unwrap_or(Path::new(""));
                    let stem = given.file_stem().unwrap_or_default().to_string_lossy();
                    format!("{stem}-{}", model.resolution)
                });
                (create_run_dir(&config.run.out_dir, &desc)?, None)
            }
            Some(plan) => {
                let run_dir = checkpoint::run_dir_of(&plan.checkpoint).ok_or_else(|| {
                    TrainError::Checkpoint {
                        path: plan.checkpoint.clone(),
                        message: "is not inside a run directory's checkpoints/ folder".into(),
                    }
                })?;
                (run_dir, Some(plan.checkpoint))
            }
        };
        // A new run's folder goes again if the start fails before training (a full disk, a
        // refused join): retries would otherwise leave a trail of empty runs. Declared before
        // everything that holds its files, it is dropped after them.
        let unstarted = UnstartedRun(resume_from.is_none().then(|| run_dir.clone()));
        // Before anything is written: a second trainer in this folder stops here.
        let lock = RunLock::acquire(&run_dir)?;
        // What a trainer killed here was writing (its temp files and folders) goes now.
        for dir in [
            run_dir.clone(),
            run_dir.join(SAMPLES_DIR),
            run_dir.join(checkpoint::CHECKPOINTS_DIR),
        ] {
            pgan_data::remove_stale_temps_in(&dir);
        }
        checkpoint::remove_stale_set_aside_files(&run_dir);
        // A resume rewrites the run's config only once its checkpoint has been accepted.
        if resume_from.is_none() {
            write_config(&run_dir, &config)?;
        }
        let mut log = RunLog::open(&run_dir, options.interactive)?;
        crate::run_dir::ensure_samples_dir(&run_dir)?;
        // Where one session of the run starts in the log.
        log.write_only(format!(
            "pgan {} train (pid {}): {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            if resume_from.is_some() {
                "resume"
            } else {
                "new run"
            }
        ));
        // Training FIDs from other weights would be read against published ones.
        let weights_warning = fid.as_ref().and_then(|fid| fid.weights_warning());
        for warning in warnings.into_iter().chain(weights_warning) {
            log.warn(warning);
        }
        finish_set_asides(&run_dir, resume_from.as_deref(), &mut log)?;
        if !lock.is_held() {
            log.warn("this filesystem has no file locks: nothing stops a second trainer here");
        }
        if config.eval.every_kimg > 0.0 && config.eval.msssim_pairs == 0 {
            log.warn(crate::plan::MSSSIM_OFF);
        }
        if let Some(short) = schedule.ends_short_of_the_model() {
            log.warn(short);
        }

        let nets = Nets::fresh(&model, &config.optim, &device, Some(config.run.seed));
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
            collapse: Default::default(),
            gradients: Default::default(),
            model: serde_json::to_value(&model).expect("model config serialises"),
            files: Default::default(),
            dataset: Some(checkpoint::DatasetFingerprint::of(&reader)),
            peers: crate::distributed::peers_to_record(&config),
            nodes: crate::distributed::nodes_to_record(&config),
            seed: Some(config.run.seed),
            open_tick: None,
            abandoned: None,
            gave_up: None,
            game: Some(config.game_record()),
            checksum: None,
        };
        let mut sample_rng = ChaCha8Rng::seed_from_u64(config.run.seed ^ 0x9e37_79b9_7f4a_7c15);
        let sample_count = config.run.sample_rows * config.run.sample_cols;
        let sample_latents = latent_values(&mut sample_rng, sample_count * model.latent_dim, None);

        let metrics = MetricsWriter::open(&run_dir)?;
        let alarms = Alarms::new(config.alarms.clone()).for_loss(config.loss.kind);
        let dataset_watch = DatasetWatch::new(&reader, model.resolution);
        let mut trainer = Self {
            _lock: lock,
            options,
            config,
            model,
            device,
            dataset_watch,
            reader,
            schedule,
            run_dir,
            log,
            metrics,
            nets,
            state,
            sample_latents,
            tick: Tick::start(),
            alarms,
            alarm_echo: AlarmEcho::default(),
            last_checkpoint: None,
            latest_sample: None,
            rollbacks: 0,
            told_eval_below_minimum: false,
            peak_device_reserved: 0,
            faults,
            fid,
            peers: Peers::single(),
        };
        let resumed = resume_from.is_some();
        match resume_from {
            Some(ckpt) => {
                trainer.restore(&ckpt)?;
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
                if trainer.fid.is_some() {
                    let num = trainer.config.eval.fid_num;
                    if let Some(warning) = crate::inception_metrics::small_fid_sample(num) {
                        trainer.log.warn(warning);
                    }
                }
                trainer.save_reals_grid()?;
                trainer.set_position();
                // A checkpoint at kimg 0 gives the NaN rollback somewhere to go from the start.
                trainer.save_checkpoint()?;
            }
        }
        let ckpt = trainer
            .last_checkpoint
            .clone()
            .expect("a checkpoint to start from");
        let dataset = checkpoint::DatasetFingerprint::of(&trainer.reader);
        let peers = Peers::start(
            &trainer.config,
            &trainer.model,
            &ckpt,
            &dataset,
            &trainer.nets,
            &trainer.device,
            &trainer.options.stop,
        );
        trainer.peers = match peers {
            Ok(peers) => peers,
            // A new run's folder holds nothing but its kimg-0 start: `unstarted` removes it.
            Err(e) if !resumed => return Err(e),
            // A resumed run's log keeps the failed join (the folder is otherwise as it was).
            Err(e @ TrainError::StoppedWaiting { .. }) => {
                trainer.log.write_only(e.to_string());
                return Err(e);
            }
            Err(e) => {
                trainer.log.error(format!("training did not start: {e}"));
                return Err(e);
            }
        };
        // Only once every node has joined (a refused join leaves the run folder as it was).
        if resumed {
            trainer.continue_resumed_run()?;
        }
        if trainer.peers.count() > 1 && !trainer.config.nodes.several() {
            trainer.log.info(format!(
                "{} peers on devices {:?}, {} per device",
                trainer.peers.count(),
                trainer.config.run.devices,
                trainer.config.schedule.minibatch_default / trainer.peers.count()
            ));
        }
        let nodes = &trainer.config.nodes;
        if nodes.several() {
            trainer.log.info(format!(
                "node {} of {} joined (orchestrator {}): {} peers in all, {} images per peer \
                 per minibatch of {}",
                nodes.rank,
                nodes.count,
                nodes.orchestrator.as_deref().unwrap_or_default(),
                crate::distributed::peer_count(&trainer.config),
                trainer.config.schedule.minibatch_default
                    / crate::distributed::peer_count(&trainer.config),
                trainer.config.schedule.minibatch_default
            ));
        }
        unstarted.started();
        Ok(trainer)
    }

    /// [`Self::run_to_the_end`], and an error that ends the run into `log.txt` too (the report
    /// shows the log's tail; stderr may be long gone).
    ///
    /// On several nodes, an error or a panic of this node's own (not one an exchange found, nor
    /// one the nodes agreed on) is told to the other nodes, which then name it rather than a
    /// lost node; the panic then goes on as it would have.
    fn run(mut self) -> Result<RunSummary> {
        let several = self.config.nodes.several();
        let result = if several {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_to_the_end())) {
                Ok(result) => result,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic without a message");
                    self.log
                        .error(format!("training stopped by a panic: {what}"));
                    self.peers.tell_failure(&format!("it panicked: {what}"));
                    std::panic::resume_unwind(panic);
                }
            }
        } else {
            self.run_to_the_end()
        };
        if let Err(e) = &result {
            self.log.error(format!("training stopped by an error: {e}"));
            // A loss a ring exchange found was told there (the ring knows, and tells nothing
            // again); a step's panic on this node's devices comes as a peer error and is told.
            if several {
                self.peers.tell_failure(&e.to_string());
            }
        }
        result
    }

    /// The dataset file as it is on disk now (see [`DatasetWatch`]): its changes logged, an
    /// error for images that changed under the run.
    fn look_at_dataset(&mut self) -> Result<()> {
        let log = &mut self.log;
        self.dataset_watch
            .check(&self.reader, &mut |warning| log.warn(warning))
    }

    /// The loop: steps until `total_kimg` (or a stop), a tick end every `tick_kimg`, a rollback
    /// whenever a tick end finds NaN/Inf in its steps' values or in the weights.
    fn run_to_the_end(&mut self) -> Result<RunSummary> {
        let total_images = (self.config.schedule.total_kimg * 1000.0).round() as u64;
        let stop_after = self
            .options
            .stop_after_kimg
            .map(|k| (k * 1000.0).round() as u64);
        let bar = self.progress_bar(total_images);
        self.log.attach(bar.clone());
        let mut interrupted = false;
        // Neither the set-up nor a resume's loading counts as training time.
        self.tick.restart_clock();

        let wants_stop = |stop: &AtomicBool, images: u64| {
            stop.load(Ordering::SeqCst) || stop_after.is_some_and(|s| images >= s)
        };
        while self.state.images_shown < total_images {
            let wanted_here = wants_stop(&self.options.stop, self.state.images_shown);
            if self.peers.stop_now(wanted_here)? {
                // The steps since the last tick end are unchecked: a NaN among them goes back to
                // the last checkpoint (and training resumes from there up to the stop), never
                // into the stop's checkpoint.
                if !self.tick.steps.is_empty() && !self.tick_checks_everywhere()? {
                    self.rollback()?;
                    continue;
                }
                // The log says why the run stopped (the terminal may be gone).
                if !wanted_here {
                    self.log.info(
                        "another node asked to stop (Ctrl-C, SIGTERM or --stop-after-kimg \
                         there): stopping with it",
                    );
                } else if self.options.stop.load(Ordering::SeqCst) {
                    self.log.info("stop asked for (Ctrl-C or SIGTERM)");
                } else {
                    self.log.info("--stop-after-kimg reached");
                }
                interrupted = true;
                break;
            }
            let phase = self.schedule.at(self.state.images_shown);
            if phase.index != self.state.phase_index {
                self.enter_phase(&phase);
            }

            // Several nodes hear of this node's wish to stop with the step's gradients.
            let shown = phase.batch as u64 * self.config.optim.d_steps as u64;
            self.peers.wish_to_stop(wants_stop(
                &self.options.stop,
                self.state.images_shown + shown,
            ));
            // One D step and one G step on a minibatch of reals.
            if let Some(faults) = &mut self.faults {
                faults.before_step(self.state.step, &mut self.nets);
            }
            self.step(&phase)?;
            if let Some(faults) = &mut self.faults {
                faults.after_step(self.state.step - 1, &mut self.nets);
            }
            // The steps' losses and gradient norms and the weights are checked for NaN/Inf once
            // a tick, in one read (a read waits for the device's queue).
            let tick_len = (self.config.run.tick_kimg * 1000.0) as u64;
            // Every D update counts its reals as shown (official ProGAN `D_repeats`).
            let images_after = self.state.images_shown + shown;
            // A tick is `tick_kimg` from its own start, as in the official `train.py`
            // (`cur_nimg >= tick_start_nimg + tick_kimg * 1000`): a resume with another
            // `tick_kimg` takes the new length from the tick in progress on.
            let tick_ends = self.tick.images + shown >= tick_len || images_after >= total_images;
            if tick_ends && !self.tick_checks_everywhere()? {
                self.rollback()?;
                continue;
            }
            self.state.images_shown = images_after;
            self.set_position();
            self.tick.add_images(shown);
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

            if tick_ends {
                self.end_tick(&phase)?;
            }
        }
        // A run stopped inside its last tick and resumed at its end: that tick's row, sheet and
        // checkpoint are the ones the uninterrupted run wrote (in the loop, the last step ends
        // its tick, so only a resumed open tick is still open here).
        // A stop that came during the last tick's measurements abandoned them: the run
        // stopped (the resume measures them), it did not finish.
        if !interrupted && self.state.abandoned.is_some() {
            self.log
                .info("stopped during the last tick's measurements (Ctrl-C or SIGTERM)");
            interrupted = true;
        }
        let closes_resumed_tick = !interrupted && self.tick.images > 0;
        if closes_resumed_tick {
            let phase = self.last_step_phase();
            // Its steps were checked before the stop's checkpoint, and the dataset at the
            // resume's start.
            self.end_tick(&phase)?;
        }
        self.tick.stop_clock(&mut self.state.elapsed_s);
        bar.finish_and_clear();

        // Always leave a checkpoint at the point where the run stopped (not the resumed one
        // whose tick was open: a resume of it would close the tick again).
        let at_checkpoint = self
            .last_checkpoint
            .as_ref()
            .and_then(|c| checkpoint::read_state(c).ok())
            .is_some_and(|s| {
                s.images_shown == self.state.images_shown
                    && (s.open_tick.is_none() || !closes_resumed_tick)
            });
        if !at_checkpoint {
            // The steps since the last checkpoint were checked (the dataset included) at their
            // tick ends and at the stop, on every node together: a check here, on one node
            // alone, would guard no step and could leave the nodes' checkpoints apart.
            self.end_healthy_stretch();
            // A stop inside a tick: the resumed run finishes this tick's row with these steps.
            self.state.open_tick = self.tick.open();
            let saved = self.save_checkpoint();
            self.state.open_tick = None;
            saved?;
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

    /// This tick's values are healthy here and on every other node (several nodes roll back
    /// together or not at all), and the dataset did not change under its steps here nor on
    /// another node (an error: every node stops before a checkpoint of them).
    fn tick_checks_everywhere(&mut self) -> Result<bool> {
        let dataset = self.look_at_dataset();
        let healthy = self.tick_values_healthy();
        let verdict = self.peers.tick_verdict(healthy, dataset.is_ok())?;
        dataset?;
        if let Some(&node) = verdict.data_changed_on.first() {
            return Err(TrainError::NodeDataset {
                node,
                since: self
                    .last_checkpoint
                    .as_ref()
                    .map_or("the start".into(), |c| c.display().to_string()),
            });
        }
        Ok(verdict.healthy)
    }

    /// A new fade or stable phase: optionally reset Adam (official `reset_opt_for_new_lod`).
    fn enter_phase(&mut self, phase: &Phase) {
        let multiplier = self.lr_multiplier();
        let cooldown = if multiplier < 1.0 {
            format!(
                " x{multiplier} after a rollback, until {:.3} kimg",
                self.state.cooldown_until as f64 / 1000.0
            )
        } else {
            String::new()
        };
        self.log.info(format!(
            "phase {}: {} {}x{} (batch {}, lr {}{cooldown})",
            phase.index, phase.kind, phase.resolution, phase.resolution, phase.batch, phase.lr
        ));
        if self.config.schedule.reset_optimizer {
            self.nets.reset_optimizers(&self.config.optim);
            self.peers.reset_optimizers(&self.config.optim);
        }
        self.state.phase_index = phase.index;
    }

    /// The phase of the step that brought the run to `images_shown` (the schedule at that
    /// step's first image), for a tick closed without a step of this process. The state's
    /// phase index is that step's (a phase is entered only by a step); its minibatch says
    /// where the step began.
    fn last_step_phase(&self) -> crate::schedule::Phase {
        let batch = self.schedule.batch_of_phase(self.state.phase_index) as u64;
        let per_step = batch * self.config.optim.d_steps as u64;
        self.schedule
            .at(self.state.images_shown.saturating_sub(per_step))
    }

    /// Records where in the schedule the networks stand after `images_shown` images: the stage
    /// and fade a checkpoint stores, and that `pgan render` draws at.
    fn set_position(&mut self) {
        let now = self.schedule.at(self.state.images_shown);
        self.state.stage = now.stage;
        self.state.alpha = now.alpha;
    }

    /// A resume's changes to the run folder, once the checkpoint is restored and the nodes (if
    /// any) have joined: the newer checkpoints set aside with their rows and sheets, the config
    /// recorded, `metrics.jsonl` cut back to the checkpoint.
    fn continue_resumed_run(&mut self) -> Result<()> {
        let ckpt = self
            .last_checkpoint
            .clone()
            .expect("a resumed run starts from its checkpoint");
        let shown = self.state.images_shown;
        let cut = Cut::Resume {
            rollbacks_kept: self.state.consecutive_failures,
        };
        match ResumeRate::of(&self.state) {
            ResumeRate::Configured => {}
            ResumeRate::AfterGivingUp { failures } => {
                self.state.gave_up = None;
                self.state.consecutive_failures = 0;
                self.state.lr_multiplier = 1.0;
                self.state.cooldown_until = 0;
                self.log.warn(format!(
                    "{} is where the run stopped after {failures} rollbacks in a row: this \
                     resume starts from it again at the configured learning rate, with no \
                     rollbacks counted",
                    ckpt.display()
                ));
            }
            ResumeRate::Cooldown {
                multiplier,
                until,
                failures,
            } => self.log.warn(format!(
                "{} is within a rollback's cooldown: the learning rate is x{multiplier} until \
                 {:.3} kimg, and {failures} of recovery.max_consecutive_failures {} rollbacks in \
                 a row are counted",
                ckpt.display(),
                until as f64 / 1000.0,
                self.config.recovery.max_consecutive_failures
            )),
        }
        // What can be checked is checked before the folder changes: a config.toml that will
        // not be written would otherwise stop the resume with the branch half set aside.
        let config_path = self.run_dir.join(CONFIG_FILE);
        crate::fsutil::refuse_foreign_file(&config_path).map_err(io_err(&config_path, "write"))?;
        // The abandoned branch keeps its rows and sample sheets beside its checkpoints (saved
        // there before its checkpoints move, and before metrics.jsonl drops the rows): the
        // report then shows this branch's only.
        let tick = self.state.tick;
        let run_dir = self.run_dir.clone();
        let aside = checkpoint::set_aside_newer(&self.run_dir, &ckpt, |aside| {
            let rows = stats::rows_after(&run_dir, shown, cut)?.unwrap_or_default();
            set_aside_branch(&run_dir, aside, &rows, tick)
        })?;
        write_config(&self.run_dir, &self.config)?;
        if let Some(aside) = &aside {
            self.log.warn(format!(
                "resuming {} leaves the run's newer checkpoints behind: they are moved \
                 to {} with their metrics rows and sample sheets (not resumed from, not \
                 pruned; delete them when done)",
                ckpt.display(),
                aside.display()
            ));
        }
        let truncated = self.metrics.truncate_after(shown, cut)?;
        for warning in stats::truncation_warnings(&self.run_dir, &truncated) {
            self.log.warn(warning);
        }
        // A stop's checkpoint written before stops kept their tick's part: the tick in
        // progress still ends where it would have (its statistics start afresh).
        // No rows of the checkpoint's last tick (none before the first tick's end, or rows
        // lost): the checkpoint is taken for a tick end's, and nothing is left open.
        let last_row = stats::last_tick_row(&self.run_dir);
        let last_tick = match last_row {
            Some(row) if row.tick >= self.state.tick => row.images,
            _ => shown,
        };
        if let Some(warning) = stats::lost_rows_warning(&self.run_dir, last_row, self.state.tick) {
            self.log.warn(warning);
        }
        if self.tick.images == 0 && last_tick < shown {
            self.tick.images = shown - last_tick;
        }
        self.log.info(format!(
            "resumed {} at {:.3} kimg (tick {})",
            ckpt.display(),
            self.state.images_shown as f64 / 1000.0,
            self.state.tick
        ));
        if let Some(abandoned) = self.state.abandoned.take() {
            self.measure_what_a_stop_abandoned(abandoned, &ckpt)?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the state as it stands (refusing poisoned weights) and prunes old
    /// ones.
    fn save_checkpoint(&mut self) -> Result<()> {
        self.save_checkpoint_after(Ok(()))
    }

    /// Writes a checkpoint unless the tick's other outputs failed (`outputs`), then, on several
    /// nodes, waits for the others' outcome: one that failed stops every node at the
    /// checkpoint all of them hold (this node's new one removed), not just itself.
    pub(super) fn save_checkpoint_after(&mut self, outputs: Result<()>) -> Result<()> {
        let path = checkpoint::path_of(&self.run_dir, self.state.images_shown);
        // Only a checkpoint this write made is removed when another node failed.
        let made_here = !path.exists();
        let written = outputs.and_then(|()| self.write_checkpoint());
        let failed = self.peers.failed_outputs(written.is_ok())?;
        let path = written?;
        if let Some(&node) = failed.first() {
            let removed = if made_here {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => format!(" (this node's {} removed)", path.display()),
                    Err(e) => format!(
                        " (this node's {} could not be removed: {e}; delete it)",
                        path.display()
                    ),
                }
            } else {
                String::new()
            };
            return Err(self.node_outputs_error(node, removed));
        }
        checkpoint::prune(&self.run_dir, self.config.run.keep_checkpoints)?;
        self.last_checkpoint = Some(path);
        Ok(())
    }

    /// A tick end without a checkpoint: on several nodes, the others' outputs too (one that
    /// could not write stops them all).
    pub(super) fn outputs_written_everywhere(&mut self, outputs: Result<()>) -> Result<()> {
        let failed = self.peers.failed_outputs(outputs.is_ok())?;
        outputs?;
        match failed.first() {
            Some(&node) => Err(self.node_outputs_error(node, String::new())),
            None => Ok(()),
        }
    }

    fn node_outputs_error(&self, node: usize, removed: String) -> TrainError {
        TrainError::NodeOutputs {
            node,
            kimg: self.state.images_shown as f64 / 1000.0,
            since: self
                .last_checkpoint
                .as_ref()
                .map_or("the start".into(), |c| c.display().to_string()),
            removed,
        }
    }

    /// This node's checkpoint of where the run stands.
    fn write_checkpoint(&self) -> Result<PathBuf> {
        // Never store poisoned weights: a NaN here means the last steps went wrong unseen.
        if !params_finite(&self.nets.g) || !params_finite(&self.nets.d) {
            return Err(TrainError::Diverged(format!(
                "non-finite weights at {:.3} kimg; not writing a checkpoint",
                self.state.images_shown as f64 / 1000.0
            )));
        }
        checkpoint::save_training(&self.run_dir, &self.state, &self.nets)
    }

    /// Restores the networks, optimizers and state of a checkpoint of this run (resume and
    /// rollback), after checking that it fits the model and the dataset.
    fn restore(&mut self, ckpt: &Path) -> Result<()> {
        let mut state = checkpoint::read_state(ckpt)?;
        crate::preflight::check_seed(&state, self.config.run.seed, ckpt)?;
        // Written before the seed was stored: from now on it is.
        state.seed.get_or_insert(self.config.run.seed);
        let made_with = checkpoint::model_config(&state, ckpt)?;
        check_checkpoint_model(&made_with, &self.model, ckpt.to_path_buf())?;
        let (len, mirror) = (self.reader.len(), self.config.data.mirror);
        let seed = self.config.run.seed ^ state.images_shown;
        let fresh_sampler = || BatchSampler::new(len, seed, mirror);
        let changed_ok = self.options.data_changed_ok;
        for warning in
            checkpoint::adopt_dataset(&mut state, ckpt, &self.reader, changed_ok, fresh_sampler)?
        {
            self.log.warn(warning);
        }
        if state.sampler.mirror() != mirror {
            // The checkpoint's sampler keeps its draws; only the flips follow the config.
            state.sampler.set_mirror(mirror);
            self.log.info(format!(
                "data.mirror is {mirror} from here on ({} in {})",
                !mirror,
                ckpt.display()
            ));
        }
        if let Some(warning) = crate::distributed::peers_changed(&mut state, &self.config) {
            self.log.warn(warning);
        }
        // From here on the networks train under this session's game (the preflight said what
        // a resume changes of the checkpoint's).
        state.game = Some(self.config.game_record());
        crate::preflight::check_position(&self.schedule, &state, ckpt)?;
        let fresh = Nets::fresh(&self.model, &self.config.optim, &self.device, None);
        self.nets = checkpoint::load_training(ckpt, fresh, &self.device)?;
        self.peers.restored(ckpt)?;
        self.state = state;
        // The tick a stop interrupted goes on from its steps before the stop (a checkpoint
        // written at a tick's end has none: a new tick starts).
        self.tick = Tick::resumed(self.state.open_tick.take());
        Ok(())
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
        save_own_png(&sheet, &self.run_dir.join(crate::run_dir::REALS_FILE))
    }
}

/// The folder of a new run until its start completes: dropped before that (the start failed, or
/// was stopped, before any training), it is removed with what the start wrote in it.
struct UnstartedRun(Option<PathBuf>);

impl UnstartedRun {
    /// The start completed: the folder is the run's.
    fn started(mut self) {
        self.0 = None;
    }
}

impl Drop for UnstartedRun {
    fn drop(&mut self) {
        if let Some(run_dir) = self.0.take() {
            remove_unstarted_run(&run_dir);
        }
    }
}

/// Removes the folder of a new run that never started training (a start that failed, its nodes
/// that did not join), and says so on stderr; a folder that cannot be removed is named instead.
fn remove_unstarted_run(run_dir: &Path) {
    use std::io::Write as _;
    let said = match std::fs::remove_dir_all(run_dir) {
        Ok(()) => format!(
            "nothing was trained: the run folder {} made by this start is removed",
            run_dir.display()
        ),
        Err(e) => format!(
            "warning: nothing was trained, but the run folder {} made by this start could not \
             be removed ({e}); delete it by hand",
            run_dir.display()
        ),
    };
    // Not `eprintln!`, which panics when stderr is a closed pipe.
    let _ = writeln!(std::io::stderr(), "{said}");
}

/// Finishes the set-asides of `run_dir` that a kill interrupted, before this trainer takes the
/// run's checkpoints: the branch's rows, sheets and checkpoints go where the resume that began
/// it was putting them. `resume_from` may not be one of them.
fn finish_set_asides(run_dir: &Path, resume_from: Option<&Path>, log: &mut RunLog) -> Result<()> {
    if let Some(ckpt) = resume_from {
        checkpoint::refuse_leaving(ckpt)?;
    }
    for set_aside in checkpoint::unfinished_set_asides(run_dir) {
        let resumed = run_dir
            .join(checkpoint::CHECKPOINTS_DIR)
            .join(&set_aside.resumed_from);
        // Its rows and sheets are found by the checkpoint it left the run at.
        let left_at = match checkpoint::read_state(&resumed) {
            Ok(state) => {
                let cut = Cut::Resume {
                    rollbacks_kept: state.consecutive_failures,
                };
                let rows = stats::rows_after(run_dir, state.images_shown, cut)?;
                Some((
                    rows.unwrap_or_default(),
                    state.tick,
                    state.images_shown,
                    cut,
                ))
            }
            Err(e) => {
                log.warn(format!(
                    "{}: its rows and sheets stay in the run ({e})",
                    set_aside.folder.display()
                ));
                None
            }
        };
        set_aside.carry_out(run_dir, |aside| match &left_at {
            Some((rows, tick, _, _)) => set_aside_branch(run_dir, aside, rows, *tick),
            None => Ok(()),
        })?;
        // The run's rows end where the branch left it, as the interrupted resume would have
        // cut them (a later resume of an older checkpoint would set them aside a second time).
        if let Some((_, _, images_shown, cut)) = left_at {
            stats::truncate_after(run_dir, images_shown, cut)?;
        }
        log.warn(format!(
            "a resume of {} was interrupted while it set the run's newer checkpoints aside: \
             finished now ({} moved to {} with their rows and sheets)",
            set_aside.resumed_from,
            set_aside.moving.join(", "),
            set_aside.folder.display()
        ));
    }
    Ok(())
}

/// Puts an abandoned branch's metrics rows (`dropped`) and its sample sheets of ticks after
/// `tick` into `aside`, the folder its checkpoints were moved to. Done again (a set-aside a
/// kill interrupted), it writes no rows file twice and moves what is left.
fn set_aside_branch(run_dir: &Path, aside: &Path, dropped: &Truncated, tick: u64) -> Result<()> {
    if !dropped.dropped.is_empty() && !aside.join(METRICS_FILE).exists() {
        let path = aside.join(METRICS_FILE);
        let text: String = dropped.dropped.iter().map(|l| format!("{l}\n")).collect();
        crate::fsutil::write_own_atomic(&path, text.as_bytes()).map_err(io_err(&path, "write"))?;
    }
    let samples = run_dir.join(SAMPLES_DIR);
    let Ok(entries) = std::fs::read_dir(&samples) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let later = name
            .to_str()
            .and_then(crate::run_dir::sample_sheet_tick)
            .is_some_and(|t| t > tick);
        if later {
            let to = aside.join(SAMPLES_DIR);
            std::fs::create_dir_all(&to).map_err(io_err(&to, "create"))?;
            let from = entry.path();
            std::fs::rename(&from, to.join(&name)).map_err(io_err(&from, "move aside"))?;
        }
    }
    Ok(())
}

/// Writes the resolved config as `RUN_DIR/config.toml`.
fn write_config(run_dir: &Path, config: &TrainConfig) -> Result<()> {
    let path = run_dir.join(CONFIG_FILE);
    let text = config.to_toml();
    // A resume that changes nothing keeps the file as it is: the user's comments in it (its
    // errors send users to edit it) are theirs.
    // It must also spell out every key this version writes: an older file's missing keys
    // would otherwise follow a later change of their defaults.
    let unchanged = TrainConfig::from_toml_file(&path).is_ok_and(|now| now.to_toml() == text)
        && std::fs::read_to_string(&path).is_ok_and(|old| keys_of(&text).is_subset(&keys_of(&old)));
    if unchanged {
        return Ok(());
    }
    crate::fsutil::write_own_atomic(&path, text.as_bytes()).map_err(io_err(&path, "write"))
}

/// The `section.key` names a TOML text sets (keys of nested tables by their whole path).
fn keys_of(text: &str) -> std::collections::BTreeSet<String> {
    fn walk(table: &toml::Table, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        for (key, value) in table {
            let name = format!("{prefix}{key}");
            match value {
                toml::Value::Table(inner) => walk(inner, &format!("{name}."), out),
                _ => {
                    out.insert(name);
                }
            }
        }
    }
    let mut keys = std::collections::BTreeSet::new();
    walk(&text.parse().unwrap_or_default(), "", &mut keys);
    keys
}

/// The tick in progress: the values of its steps and its clock. A rollback drops it whole (the
/// restored checkpoint carries the run's training time, and the part of the tick before it
/// when a stop wrote it).
struct Tick<B: Backend> {
    /// The steps' values, on the device until the tick's end reads them.
    pub steps: StepValues<B>,
    /// The steps' values once read (the tick's means for `metrics.jsonl` and the alarms).
    pub stats: TickStats,
    /// Images trained on in this tick.
    images: u64,
    /// Start of this tick's steps in this process.
    started: Instant,
    /// Seconds this tick's steps took before a stop (in the process that was stopped).
    seconds_before: f64,
    /// Time from here on is added to the run's training time at the next tick end.
    session_mark: Instant,
}

impl<B: Backend> Tick<B> {
    /// A tick starting now.
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            steps: StepValues::default(),
            stats: TickStats::default(),
            images: 0,
            started: now,
            seconds_before: 0.0,
            session_mark: now,
        }
    }

    /// The tick a stop interrupted, going on (a new tick without one).
    pub fn resumed(open: Option<OpenTick>) -> Self {
        let open = open.unwrap_or_default();
        Self {
            stats: open.stats,
            images: open.images,
            seconds_before: open.seconds,
            ..Self::start()
        }
    }

    /// What a stop's checkpoint keeps of this tick (`None` before its first step).
    pub fn open(&self) -> Option<OpenTick> {
        (self.images > 0).then(|| OpenTick {
            stats: self.stats.clone(),
            images: self.images,
            seconds: self.seconds(),
        })
    }

    /// Seconds this tick's steps have taken, before a stop included.
    pub fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    /// Starts both clocks now (the time before does not count).
    pub fn restart_clock(&mut self) {
        self.started = Instant::now();
        self.session_mark = self.started;
    }

    /// Counts the images of a finished step.
    pub fn add_images(&mut self, n: u64) {
        self.images += n;
    }

    /// Adds the time since the last mark to `elapsed_s` (the run's training time).
    pub fn stop_clock(&mut self, elapsed_s: &mut f64) {
        *elapsed_s += self.session_mark.elapsed().as_secs_f64();
        self.session_mark = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new run's folder goes with a start that ends before training, and stays once the
    /// start completes; a resumed run's is never touched.
    #[test]
    fn a_start_that_fails_before_training_leaves_no_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (failed, started) = (dir.path().join("00000-a"), dir.path().join("00001-a"));
        for run in [&failed, &started] {
            std::fs::create_dir_all(run.join("samples")).unwrap();
            std::fs::write(run.join(CONFIG_FILE), "x").unwrap();
        }
        drop(UnstartedRun(Some(failed.clone())));
        UnstartedRun(Some(started.clone())).started();
        drop(UnstartedRun(None));
        assert!(!failed.exists() && started.join(CONFIG_FILE).is_file());
    }
    use burn::backend::{Autodiff, Flex};
    use pgan_spec::metrics as key;

    /// A 4x4 step of tiny networks on 8 prepared 8x8 images, in a run under `dir`.
    fn tiny_trainer(dir: &Path) -> Trainer<Autodiff<Flex>> {
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        for k in 0..8u32 {
            let img = image::RgbImage::from_fn(8, 8, |x, y| {
                image::Rgb([(k * 30 + x * 9) as u8, (y * 25) as u8, 90])
            });
            img.save(images.join(format!("{k}.png"))).unwrap();
        }
        let data = dir.join("tiny.pgan");
        pgan_data::prepare(&pgan_data::PrepareOptions::new(&images, &data, 8)).unwrap();
        let text = format!(
            r#"
[run]
seed = 1
out_dir = "{out}"
tick_kimg = 0.016
sample_rows = 1
sample_cols = 1
progress = false
[data]
path = "{data}"
[model]
preset = "cpu-small"
resolution = 8
latent_dim = 8
fmap_base = 16
fmap_max = 8
[schedule]
lod_training_kimg = 0.032
lod_transition_kimg = 0.032
total_kimg = 0.064
minibatch_default = 4
"#,
            out = dir.join("runs").display(),
            data = data.display()
        );
        let config = TrainConfig::from_toml_str(&text).unwrap();
        Trainer::start(TrainOptions::new(config), None, Default::default()).unwrap()
    }

    /// Issue 21: a step leaves everything it measures on the device; the tick's end reads it
    /// (and the weights' finiteness) in one read.
    #[test]
    fn a_training_step_reads_nothing_back_from_the_device() {
        let _turn = step::process_turn();
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = tiny_trainer(dir.path());
        let phase = trainer.schedule.at(trainer.state.images_shown);

        let before = crate::host_read::reads_on_this_thread();
        for _ in 0..3 {
            trainer.step(&phase).unwrap();
        }
        assert_eq!(
            crate::host_read::reads_on_this_thread(),
            before,
            "device reads inside training steps"
        );
        assert_eq!(trainer.tick.steps.len(), 3);

        assert!(trainer.tick_values_healthy());
        assert_eq!(crate::host_read::reads_on_this_thread(), before + 1);
        assert!(trainer.tick.steps.is_empty());
        // The values read are the steps' own: finite, a positive gradient norm, the three steps
        // averaged.
        let stats = &trainer.tick.stats;
        for name in crate::stats::STEP_KEYS {
            let mean = stats
                .mean(name)
                .unwrap_or_else(|| panic!("{name} not reported"));
            assert!(mean.is_finite(), "{name} = {mean}");
        }
        assert!(stats.mean(key::GRAD_D_NORM).unwrap() > 0.0);
    }

    #[test]
    fn a_resume_that_changes_nothing_keeps_the_config_only_when_it_spells_every_key_out() {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig::default();
        let path = dir.path().join(CONFIG_FILE);
        let full = format!("# the user's note\n{}", config.to_toml());
        std::fs::write(&path, &full).unwrap();
        write_config(dir.path(), &config).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            full,
            "kept, note and all"
        );
        // An older file without a key (its default then) is written out whole.
        let (seed_line, _) = config
            .to_toml()
            .lines()
            .find(|l| l.starts_with("seed = "))
            .map(|l| (l.to_string(), ()))
            .unwrap();
        let short = full.replace(&format!("{seed_line}\n"), "");
        std::fs::write(&path, &short).unwrap();
        write_config(dir.path(), &config).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), config.to_toml());
        assert!(keys_of("[run]\nseed = 1\n[a.b]\nc = 2\n").contains("a.b.c"));
    }
}
