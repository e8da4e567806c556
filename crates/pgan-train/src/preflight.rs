//! The checks a training run passes before it writes anything: the configuration, the backend,
//! the dataset (present, large enough, intact), the memory an evaluation needs, the Inception
//! weights FID needs, and for a resume the checkpoint: its model, its dataset, a schedule that
//! does not shrink it and a total it has not passed. `pgan train --dry-run` runs the same function, so a dry run that passes
//! is a run that starts (short of the device, which it does not open).

use std::path::{Path, PathBuf};

use pgan_data::{BatchSampler, PyramidReader};
use pgan_model::ModelConfig;

use crate::checkpoint::{self, TrainState};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::schedule::StageSchedule;
use crate::training_loop::TrainOptions;

/// What the checks opened and resolved, for the run to start from.
pub struct Preflight {
    /// The configuration, with `data.path` made absolute (the run's config.toml records where
    /// the data is from anywhere, so a resume or an eval started in another folder finds it).
    pub config: TrainConfig,
    /// The dataset, open.
    pub reader: PyramidReader,
    /// The model, with its channels taken from the dataset.
    pub model: ModelConfig,
    /// For a resume: what it starts from and what it changes in the run folder.
    pub resume: Option<ResumePlan>,
    /// What the run should know before it starts (the log keeps them; `--dry-run` prints them).
    pub warnings: Vec<String>,
}

/// What a resume starts from and changes, as `--dry-run` tells it before the run does.
#[derive(Debug, Clone)]
pub struct ResumePlan {
    /// The checkpoint folder resumed.
    pub checkpoint: PathBuf,
    /// What the resume says of the dataset as it restores the checkpoint (another dataset, a
    /// sampling order started afresh): the real start logs them then, `--dry-run` prints them.
    pub dataset_warnings: Vec<String>,
    /// What the resume says of the run's `metrics.jsonl` as it cuts it back to the checkpoint
    /// (a torn last line, lines that are not rows, rows lost): logged then, printed by
    /// `--dry-run`.
    pub metrics_warnings: Vec<String>,
    /// Its position in images shown.
    pub images_shown: u64,
    /// Its tick.
    pub tick: u64,
    /// The resolution it has grown to.
    pub resolution: u32,
    /// The fade-in of that resolution (1 once faded in).
    pub alpha: f32,
    /// The run's newer checkpoints, which the resume moves to `abandoned`, with their metrics
    /// rows and sample sheets (empty when it resumes the newest).
    pub set_aside: Vec<PathBuf>,
    /// The `checkpoints/abandoned-<n>` folder they go to.
    pub abandoned: PathBuf,
    /// The learning rate it continues at.
    pub rate: ResumeRate,
}

/// The learning rate a resumed run continues at, from its checkpoint's recovery state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResumeRate {
    /// The configured one.
    Configured,
    /// The run stopped at this checkpoint after `failures` rollbacks in a row: the resume
    /// starts from it again at the configured rate, with no rollbacks counted.
    AfterGivingUp {
        /// The rollbacks in a row it gave up after.
        failures: u32,
    },
    /// Within a rollback's cooldown.
    Cooldown {
        /// The factor on the configured rate.
        multiplier: f64,
        /// The images shown at which the cooldown ends.
        until: u64,
        /// The rollbacks in a row counted so far.
        failures: u32,
    },
}

impl ResumeRate {
    /// How a resume of `state` continues (what [`crate::training_loop`] applies).
    pub fn of(state: &TrainState) -> Self {
        if let Some(failures) = state.gave_up {
            Self::AfterGivingUp { failures }
        } else if state.images_shown < state.cooldown_until && state.lr_multiplier < 1.0 {
            Self::Cooldown {
                multiplier: state.lr_multiplier,
                until: state.cooldown_until,
                failures: state.consecutive_failures,
            }
        } else {
            Self::Configured
        }
    }
}

impl ResumePlan {
    /// The plan as `--dry-run` prints it: one line per fact.
    pub fn describe(&self, max_consecutive_failures: u32) -> String {
        let r = self.resolution;
        let mut lines = vec![format!(
            "resume: {} at {:.3} kimg (tick {}), {r}x{r}{}",
            self.checkpoint.display(),
            self.images_shown as f64 / 1000.0,
            self.tick,
            if self.alpha < 1.0 {
                format!(" fading in (α = {:.3})", self.alpha)
            } else {
                String::new()
            }
        )];
        if self.set_aside.is_empty() {
            lines.push("  it is the run's newest checkpoint: nothing is set aside".into());
        } else {
            let names: Vec<String> = self
                .set_aside
                .iter()
                .filter_map(|c| c.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            lines.push(format!(
                "  starts a new branch: the {} newer checkpoint(s) ({}) move to {} with their \
                 metrics rows and sample sheets",
                names.len(),
                names.join(", "),
                self.abandoned.display()
            ));
        }
        lines.push(match self.rate {
            ResumeRate::Configured => "  learning rate: as configured".into(),
            ResumeRate::AfterGivingUp { failures } => format!(
                "  learning rate: as configured (the run stopped here after {failures} \
                 rollbacks in a row; none are counted on resume)"
            ),
            ResumeRate::Cooldown {
                multiplier,
                until,
                failures,
            } => format!(
                "  learning rate: x{multiplier} until {:.3} kimg (a rollback's cooldown), {failures} \
                 of recovery.max_consecutive_failures {max_consecutive_failures} rollbacks in a \
                 row counted",
                until as f64 / 1000.0
            ),
        });
        lines.join("\n")
    }
}

/// Runs every check that needs no device and writes nothing; see the module docs.
pub fn preflight(options: &TrainOptions) -> Result<Preflight> {
    let mut config = options.config.clone();
    config.validate()?;
    crate::backend::check_compiled(config.run.backend)?;
    crate::backend::check_device_index(config.run.backend, config.run.device)?;
    if options.resume.is_none() {
        // Where a new run's folder goes, and its name (a resume keeps both).
        let bad = |message: &str| TrainError::Config {
            path: None,
            message: message.into(),
        };
        if config.run.out_dir.as_os_str().is_empty() {
            return Err(bad(
                "run.out_dir is empty: name the folder runs go in (\"runs\" by default)",
            ));
        }
        if config
            .run
            .desc
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            return Err(bad(
                "run.desc is empty: give the run a name, or leave it out for the dataset's name \
                 and resolution",
            ));
        }
        if let Some(desc) = &config.run.desc {
            let len = desc.chars().count();
            if len > crate::run_dir::MAX_DESC_LEN {
                return Err(TrainError::Config {
                    path: None,
                    message: format!(
                        "run.desc is {len} characters: a run folder's name takes at most {} (with \
                         the run's number before it)",
                        crate::run_dir::MAX_DESC_LEN
                    ),
                });
            }
        }
        crate::run_dir::check_out_dir(&config.run.out_dir)?;
    }
    let data_path = config.data.path.clone().ok_or_else(|| TrainError::Config {
        path: None,
        message: "no dataset: set data.path in the config or pass one".into(),
    })?;
    if !data_path.exists() {
        let whose = if options.resume.is_some() {
            "it is the run's data.path (a relative one is read from the current folder); pass \
             --data with the dataset's path"
        } else {
            "it is data.path (--data, or the config's; a relative path is read from the current \
             folder, not the config file's)"
        };
        return Err(TrainError::Dataset {
            path: data_path,
            message: format!("does not exist: {whose}"),
        });
    }
    let reader = PyramidReader::open(&data_path)?;
    if let Ok(absolute) = std::fs::canonicalize(&data_path) {
        config.data.path = Some(absolute);
    }
    if reader.resolution() < config.model.resolution {
        return Err(TrainError::DatasetBelowModel {
            path: data_path,
            dataset: reader.resolution(),
            model: config.model.resolution,
        });
    }
    if reader.is_empty() {
        return Err(TrainError::Dataset {
            path: data_path,
            message: "holds no images".into(),
        });
    }
    // A corrupt level would be trained on silently: check the ones this run reads.
    reader.verify_levels_up_to(config.model.resolution)?;
    let model = crate::plan::resolve_model(&config.model, reader.channels())?;
    if config.eval.every_kimg > 0.0 {
        // An evaluation holds its generated images, as many reals, their SWD descriptors and
        // the MS-SSIM pair list.
        let e = &config.eval;
        let held = crate::eval::evaluation_bytes(
            e.num_images.saturating_mul(2),
            e.num_images,
            e.msssim_pairs_measured(),
            model.num_channels,
            model.resolution,
        );
        crate::limits::check_fits(
            held,
            &format!(
                "evaluations during training hold {} generated images of {r}x{r}, as many \
                 reals, their SWD descriptors and {} MS-SSIM pairs in memory:",
                e.num_images,
                e.msssim_pairs_measured(),
                r = model.resolution
            ),
        )
        .map_err(|message| TrainError::Config {
            path: None,
            message: format!("eval.num_images {}: {message}", config.eval.num_images),
        })?;
    }
    if config.eval.fid_enabled() {
        // Read whole, as the run will: a file that is not the weights stops the dry run too.
        let weights = pgan_inception::resolve_weights_path(None);
        pgan_inception::InceptionWeights::load(&weights)?;
    }
    let mut resume = None;
    // What a resume changes of the run's game, said by the dry run and the start alike.
    let mut resume_warnings = Vec::new();
    // The damaged checkpoints a resume passes over, said as the real start says them.
    let mut skipped = Vec::new();
    if let Some(resume_path) = &options.resume {
        let found = checkpoint::find_checkpoint(resume_path)?;
        skipped = found.warnings();
        let ckpt = found.path;
        let mut state = checkpoint::read_state(&ckpt)?;
        check_seed(&state, config.run.seed, &ckpt)?;
        check_checkpoint_model(
            &checkpoint::model_config(&state, &ckpt)?,
            &model,
            ckpt.clone(),
        )?;
        // On a copy: the run adopts the dataset into its own state when it restores.
        let fresh = || BatchSampler::new(reader.len(), 0, false);
        // Its warnings (another dataset, a sampling order started afresh) are the real start's.
        let adopted =
            checkpoint::adopt_dataset(&mut state, &ckpt, &reader, options.data_changed_ok, fresh)?;
        let schedule = StageSchedule::new(config.schedule.clone(), model.resolution);
        check_position(&schedule, &state, &ckpt)?;
        check_total_not_passed(&config, &state, &ckpt)?;
        if let Some(stop) = options.stop_after_kimg {
            check_stop_not_passed(stop, &state, &ckpt)?;
        }
        let run_dir = checkpoint::run_dir_of(&ckpt).ok_or_else(|| TrainError::Checkpoint {
            path: ckpt.clone(),
            message: "is not inside a run directory's checkpoints/ folder".into(),
        })?;
        crate::run_dir::RunLock::check_free(&run_dir)?;
        crate::run_dir::check_run_writable(&run_dir)?;
        let cut = crate::stats::Cut::Resume {
            rollbacks_kept: state.consecutive_failures,
        };
        let metrics_warnings =
            crate::stats::resume_warnings(&run_dir, state.images_shown, cut, state.tick)?;
        checkpoint::refuse_leaving(&ckpt)?;
        resume_warnings.extend(game_changes(&config, &run_dir, &ckpt, &state));
        resume = Some(ResumePlan {
            set_aside: checkpoint::checkpoints_newer_than(&run_dir, &ckpt)?,
            abandoned: checkpoint::next_abandoned_folder(&run_dir),
            images_shown: state.images_shown,
            tick: state.tick,
            resolution: crate::schedule::resolution_of(state.stage),
            alpha: state.alpha,
            rate: ResumeRate::of(&state),
            checkpoint: ckpt,
            dataset_warnings: adopted,
            metrics_warnings,
        });
    }
    let mut warnings: Vec<String> = skipped
        .into_iter()
        .chain(crate::plan::evaluations_past_the_end(&config, &model))
        .chain(config.eval.fewer_pairs_warning())
        .chain(crate::distributed::mbstd_groups_split(&config)?)
        .chain(resume_warnings)
        .chain(inverted_labels(&config))
        .chain(config.short_fades_warning())
        .collect();
    // The largest minibatch the schedule trains with, and where (first).
    let largest = config
        .trained_resolutions()
        .max_by_key(|&(resolution, batch)| (batch, std::cmp::Reverse(resolution)));
    if let Some((resolution, batch)) = largest.filter(|&(_, batch)| reader.len() < batch) {
        // Epochs are drawn without replacement, so a minibatch past the dataset's end repeats
        // its images: the minibatch-stddev sees less variety than there is.
        warnings.push(format!(
            "{} holds {} image(s), fewer than the minibatch of {batch} at \
             {resolution}x{resolution}: every minibatch repeats images (a GAN learns from \
             thousands)",
            reader.path().display(),
            reader.len()
        ));
    }
    warnings.extend(reader.trailing_bytes_warning());
    if let Some(plan) = &resume {
        let run_dir = checkpoint::run_dir_of(&plan.checkpoint).unwrap_or_default();
        for set_aside in checkpoint::unfinished_set_asides(&run_dir) {
            warnings.push(format!(
                "a resume of {} was interrupted while it set the run's newer checkpoints aside: \
                 this one finishes that first ({} move to {})",
                set_aside.resumed_from,
                set_aside.moving.join(", "),
                set_aside.folder.display()
            ));
        }
    }
    Ok(Preflight {
        config,
        reader,
        model,
        resume,
        warnings,
    })
}

/// The warning for a reals' target below 0.5 in a logistic loss: D is then trained to call the
/// reals fake more than real, the game turned over (one-sided label smoothing uses 0.9, Salimans
/// et al. 2016).
fn inverted_labels(config: &TrainConfig) -> Option<String> {
    let target = config.loss.real_label;
    let logistic = config.loss.kind != crate::config::LossKind::WganGp;
    (logistic && target < 0.5).then(|| {
        format!(
            "loss.real_label {target:?} is below 0.5: D is trained to score the reals as fake \
             more than as real, which turns the game over (one-sided label smoothing uses 0.9)"
        )
    })
}

/// What a resume of `state` (from `ckpt`) under `config` changes of the game the checkpoint
/// was trained under (for a checkpoint that does not record it, the game of the run's
/// `config.toml` in `run_dir`), and instance noise that has already annealed away at the
/// checkpoint: allowed, and said, so that neither a changed loss nor a noise that adds nothing
/// passes unnoticed.
fn game_changes(
    config: &TrainConfig,
    run_dir: &Path,
    ckpt: &Path,
    state: &TrainState,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let config_file = run_dir.join(crate::run_dir::CONFIG_FILE);
    let (before, source) = match state.recorded_game() {
        Some(game) => (Some(game), format!("{} was trained with", ckpt.display())),
        None => (
            TrainConfig::from_toml_file(&config_file)
                .ok()
                .map(|c| c.game()),
            config_file.display().to_string(),
        ),
    };
    if let Some(before) = &before {
        let changes = config.game_changes(before);
        if !changes.is_empty() {
            warnings.push(format!(
                "this resume trains on with other settings than {source}: {}; the run's rows \
                 and checkpoints so far are the old settings', and config.toml will record the \
                 new ones",
                changes.join(", ")
            ));
        }
    }
    // Only noise this resume sets: a run's own anneal that ended before its checkpoint is the
    // plan (a short anneal at the start of a long run).
    let noise = &config.instance_noise;
    let kimg = state.images_shown as f64 / 1000.0;
    let section = |game: &toml::Table| game.get("instance_noise").cloned();
    let set_now = before.is_none_or(|b| section(&b) != section(&config.game()));
    if set_now && noise.sigma > 0.0 && kimg >= noise.anneal_kimg {
        warnings.push(format!(
            "instance_noise.sigma {} adds no noise: it anneals to 0 over the run's first {} kimg \
             (counted from the run's start), and the checkpoint is at {kimg:.3} kimg; raise \
             instance_noise.anneal_kimg past it for noise from here",
            noise.sigma, noise.anneal_kimg
        ));
    }
    warnings
}

/// Refuses to resume `state` under another `run.seed` than it was trained with (the sample grid
/// and the evaluations would change mid-run); checkpoints from before the seed was stored pass.
pub(crate) fn check_seed(state: &TrainState, seed: u64, ckpt: &Path) -> Result<()> {
    match state.seed {
        Some(trained) if trained != seed => Err(TrainError::Config {
            path: None,
            message: format!(
                "run.seed is {seed} but {} was trained with seed {trained}: the sample grid and \
                 the evaluations would change mid-run; put run.seed = {trained} back in the \
                 run's config.toml",
                ckpt.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// Refuses to resume `state` under a `total_kimg` below the images it has trained on: nothing
/// would be trained, and the run's config would record a length it has already passed. (At
/// exactly its total a resume only finishes what a stop inside the last tick left open.)
pub(crate) fn check_total_not_passed(
    config: &TrainConfig,
    state: &TrainState,
    ckpt: &Path,
) -> Result<()> {
    let total = (config.schedule.total_kimg * 1000.0).round() as u64;
    // A run whose last step passed its total, stopped during that tick's measurements: the
    // resume takes them and trains nothing.
    if state.images_shown <= total || state.abandoned.is_some() {
        return Ok(());
    }
    Err(TrainError::Config {
        path: None,
        message: format!(
            "schedule.total_kimg (--total-kimg) is {}, but {} is at {:.3} kimg already: \
             nothing would be trained; give a total above that to continue (the run folder is \
             left as it was)",
            config.schedule.total_kimg,
            ckpt.display(),
            state.images_shown as f64 / 1000.0
        ),
    })
}

/// Refuses a resume whose `--stop-after-kimg` is at or before where its checkpoint stands: the
/// stop is a position in the run (kimg shown in all), not an amount more, and such a stop would
/// train nothing.
pub(crate) fn check_stop_not_passed(stop_kimg: f64, state: &TrainState, ckpt: &Path) -> Result<()> {
    if (stop_kimg * 1000.0).round() as u64 > state.images_shown {
        return Ok(());
    }
    let at = state.images_shown as f64 / 1000.0;
    Err(TrainError::Config {
        path: None,
        message: format!(
            "--stop-after-kimg {stop_kimg} is not beyond {}, which is at {at:.3} kimg already: \
             the stop is a position in the run (kimg shown in all), not an amount more, so \
             nothing would be trained; give a value above {at:.3}",
            ckpt.display()
        ),
    })
}

/// Refuses a checkpoint made with another model than `model` (resume and rollback).
pub(crate) fn check_checkpoint_model(
    made_with: &ModelConfig,
    model: &ModelConfig,
    ckpt: PathBuf,
) -> Result<()> {
    if made_with == model {
        return Ok(());
    }
    Err(TrainError::Checkpoint {
        path: ckpt,
        message: format!(
            "was made with a different model than the config asks for: {}",
            checkpoint::model_differences(made_with, model)
        ),
    })
}

/// How far ahead in a fade a resume may put a checkpoint (α's float rounding, and a phase
/// length changed by a fraction of a percent); more is a skipped part of the fade.
const ALPHA_SKIP_TOLERANCE: f32 = 0.01;

/// Refuses to resume `state` under a schedule (phase lengths changed on resume) that puts its
/// position elsewhere than where it stands: at a lower resolution than it has grown to (its
/// newest layers would sit unused while it trains small again), back in its fade, or ahead of
/// it (past a fade-in it has not done, or further into one).
pub(crate) fn check_position(
    schedule: &StageSchedule,
    state: &TrainState,
    ckpt: &Path,
) -> Result<()> {
    let now = schedule.at(state.images_shown);
    if now.stage == state.stage && now.alpha + 1e-6 < state.alpha {
        let r = now.resolution;
        return Err(TrainError::Config {
            path: None,
            message: format!(
                "the schedule puts {} ({:.3} kimg) at fade-in α = {:.3} of {r}x{r}, before the \
                 α = {:.3} it has reached: a resumed run cannot fade back (that blends the \
                 lower resolution in again); keep schedule.lod_training_kimg and \
                 lod_transition_kimg (--phase-kimg) short enough to be at α ≥ {:.3} by then",
                ckpt.display(),
                state.images_shown as f64 / 1000.0,
                now.alpha,
                state.alpha,
                state.alpha,
            ),
        });
    }
    // Ahead: a later stage, or further into the fade than the run has come. Its new layers
    // would start untrained without a fade, or the fade would jump.
    let ahead = now.stage > state.stage
        || (now.stage == state.stage && now.alpha > state.alpha + ALPHA_SKIP_TOLERANCE);
    if ahead {
        let at = |stage: usize, alpha: f32| {
            let r = crate::schedule::resolution_of(stage);
            if alpha < 1.0 {
                format!("the fade-in to {r}x{r} at α = {alpha:.3}")
            } else {
                format!("{r}x{r}")
            }
        };
        return Err(TrainError::Config {
            path: None,
            message: format!(
                "the schedule puts {} ({:.3} kimg) at {}, ahead of {} where it stands: a resumed \
                 run cannot skip a fade-in (the new layers would start untrained, or blend in at \
                 a jump); keep schedule.lod_training_kimg and lod_transition_kimg \
                 (--phase-kimg) long enough to be at {} by then, or start a new run",
                ckpt.display(),
                state.images_shown as f64 / 1000.0,
                at(now.stage, now.alpha),
                at(state.stage, state.alpha),
                at(state.stage, state.alpha),
            ),
        });
    }
    if now.stage >= state.stage {
        return Ok(());
    }
    let grown = crate::schedule::resolution_of(state.stage);
    Err(TrainError::Config {
        path: None,
        message: format!(
            "the schedule puts {} ({:.3} kimg) at {r}x{r}, below the {grown}x{grown} it has \
             grown to: a resumed run cannot shrink; keep schedule.lod_training_kimg and \
             lod_transition_kimg (--phase-kimg) short enough to reach {grown}x{grown} by then",
            ckpt.display(),
            state.images_shown as f64 / 1000.0,
            r = now.resolution,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: ResumeRate, set_aside: Vec<PathBuf>) -> String {
        ResumePlan {
            checkpoint: "run/checkpoints/ckpt-000000000064".into(),
            images_shown: 64,
            tick: 4,
            resolution: 8,
            alpha: 0.5,
            set_aside,
            abandoned: "run/checkpoints/abandoned-2".into(),
            rate,
            dataset_warnings: Vec::new(),
            metrics_warnings: Vec::new(),
        }
        .describe(3)
    }

    /// A reals' target below 0.5 in a logistic loss is said; 0.9, or WGAN-GP (which has no
    /// target), is not.
    #[test]
    fn a_reals_target_below_a_half_is_said_to_turn_the_game_over() {
        use crate::config::LossKind;
        let mut config = TrainConfig::default();
        config.loss.real_label = 1e-6;
        assert_eq!(inverted_labels(&config), None, "wgan-gp has no target");
        config.loss.kind = LossKind::NonSaturating;
        let said = inverted_labels(&config).unwrap();
        assert!(said.contains("loss.real_label 1e-6 is below 0.5"), "{said}");
        config.loss.real_label = 0.9;
        assert_eq!(inverted_labels(&config), None);
    }

    #[test]
    fn a_resume_plan_says_what_is_set_aside_and_the_rate_it_continues_at() {
        let mut state = crate::checkpoint::tests::a_state();
        assert_eq!(ResumeRate::of(&state), ResumeRate::Configured);
        // Within a rollback's cooldown, and past its end.
        state.lr_multiplier = 0.25;
        state.cooldown_until = 1000;
        state.consecutive_failures = 2;
        let cooldown = ResumeRate::of(&state);
        assert_eq!(
            cooldown,
            ResumeRate::Cooldown {
                multiplier: 0.25,
                until: 1000,
                failures: 2
            }
        );
        state.images_shown = 1000;
        assert_eq!(ResumeRate::of(&state), ResumeRate::Configured);
        // The mark of a run that gave up wins over the cooldown it stopped in.
        state.images_shown = 64;
        state.gave_up = Some(3);
        let gave_up = ResumeRate::of(&state);
        assert_eq!(gave_up, ResumeRate::AfterGivingUp { failures: 3 });

        let text = plan(cooldown, vec![]);
        assert!(
            text.contains("at 0.064 kimg (tick 4), 8x8 fading in (α = 0.500)")
                && text.contains("nothing is set aside")
                && text.contains("x0.25 until 1.000 kimg")
                && text.contains("2 of recovery.max_consecutive_failures 3"),
            "{text}"
        );
        let text = plan(
            gave_up,
            vec![
                "run/checkpoints/ckpt-000000000096".into(),
                "run/checkpoints/ckpt-000000000128".into(),
            ],
        );
        assert!(
            text.contains(
                "the 2 newer checkpoint(s) (ckpt-000000000096, ckpt-000000000128) move to \
                 run/checkpoints/abandoned-2"
            ) && text.contains("as configured (the run stopped here after 3 rollbacks"),
            "{text}"
        );
    }
}
