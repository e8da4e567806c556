//! End-to-end training on the CPU backend with tiny networks: growth through a fade-in, exact
//! resume, NaN rollback, and the errors a user meets first.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::Tensor;
use pgan_train::checkpoint::load_generator;
use pgan_train::checkpoint::{self, list_checkpoints};
use pgan_train::config::TrainConfig;
use pgan_train::training_loop::faults::Faults;
use pgan_train::training_loop::train_with_faults;
use pgan_train::{train, RunSummary, TrainError, TrainOptions};

mod common;
use common::{parameter_values, tiny_dataset};

/// 4x4 stable, fade to 8x8, 8x8 stable: 32 images per phase, batch 4.
fn tiny_config(data: &Path, out_dir: &Path) -> TrainConfig {
    let text = format!(
        r#"
[run]
seed = 3
out_dir = "{out}"
tick_kimg = 0.016
checkpoint_ticks = 2
keep_checkpoints = 50
sample_rows = 2
sample_cols = 2
progress = false
[data]
path = "{data}"
mirror = true
[model]
preset = "cpu-small"
resolution = 8
latent_dim = 8
fmap_base = 16
fmap_max = 8
[schedule]
lod_training_kimg = 0.032
lod_transition_kimg = 0.032
total_kimg = 0.128
minibatch_default = 4
"#,
        out = out_dir.display(),
        data = data.display()
    );
    let config = TrainConfig::from_toml_str(&text).unwrap();
    config.validate().unwrap();
    config
}

/// Every row of a run's `metrics.jsonl`.
fn metrics_rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A run of `config` stopped by `--stop-after-kimg 0.044`: inside the 0.032–0.064 fade-in and
/// inside the tick that starts at 0.032.
fn stopped_mid_tick(config: &TrainConfig) -> RunSummary {
    let mut first = TrainOptions::new(config.clone());
    first.stop_after_kimg = Some(0.044);
    train(first).unwrap()
}

/// The `kimg` of every row of `metrics.jsonl`, as written.
fn kimgs(run: &Path) -> Vec<String> {
    metrics_rows(run)
        .iter()
        .map(|r| r["kimg"].to_string())
        .collect()
}

/// Every row of `metrics.jsonl` without its clocks and memory (what a resume must reproduce).
fn measured_rows(run: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    metrics_rows(run)
        .into_iter()
        .map(|row| {
            let mut row = row.as_object().unwrap().clone();
            row.retain(|k, _| !(k.starts_with("Speed/") || k.starts_with("Mem/") || k == "time_s"));
            row
        })
        .collect()
}

/// A resumed run that owed measurements took them: its rows are the uninterrupted run's, and
/// its checkpoint owes nothing more.
fn assert_measured_as_uninterrupted(resumed: &RunSummary, straight: &RunSummary) {
    assert_eq!(
        measured_rows(&resumed.run_dir),
        measured_rows(&straight.run_dir)
    );
    assert!(checkpoint::read_state(&resumed.checkpoint)
        .unwrap()
        .abandoned
        .is_none());
}

fn weights(ckpt: &Path, raw: bool) -> Vec<f32> {
    let loaded = load_generator::<Flex>(ckpt, raw, &Default::default()).unwrap();
    // A deterministic probe of every weight: the generator's output on fixed latents.
    let z = Tensor::<Flex, 2>::ones([2, loaded.model.latent_dim], &Default::default());
    loaded
        .generator
        .forward(z, loaded.state.stage, loaded.state.alpha)
        .into_data()
        .to_vec()
        .unwrap()
}

#[test]
fn grows_through_a_fade_and_writes_the_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("runs"));
    let summary = train(TrainOptions::new(config)).unwrap();
    assert!(!summary.interrupted);
    assert_eq!(summary.images_shown, 128);
    let run = &summary.run_dir;
    for file in ["config.toml", "log.txt", "metrics.jsonl", "reals.png"] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    let rows = metrics_rows(run);
    assert_eq!(rows.len(), 8, "one row per 16-image tick");
    let phases: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["resolution"].as_u64().unwrap(),
                r["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(phases.contains(&(4, "stable".into())));
    assert!(phases.contains(&(8, "fade".into())));
    assert!(phases.contains(&(8, "stable".into())));
    // The trainer writes the keys pgan-spec lists, which are the ones the report charts.
    use pgan_spec::metrics::{is_written, EVERY_TICK};
    for row in &rows {
        let row = row.as_object().unwrap();
        for key in row.keys() {
            assert!(is_written(key), "{key} is not in pgan_spec::metrics");
        }
        for key in EVERY_TICK {
            assert!(
                row.get(*key).is_some_and(|v| !v.is_null()),
                "{key} missing from a tick row"
            );
        }
    }
    for key in [
        "Loss/D",
        "Loss/G",
        "Loss/D/penalty",
        "D/real",
        "D/fake",
        "Grad/G/norm",
        "Speed/img_per_s",
    ] {
        assert!(
            rows.iter()
                .all(|r| r[key].as_f64().is_some_and(f64::is_finite)),
            "{key}"
        );
    }
    let alphas: Vec<f64> = rows
        .iter()
        .filter(|r| r["phase"] == "fade")
        .map(|r| r["alpha"].as_f64().unwrap())
        .collect();
    assert!(
        alphas.windows(2).all(|w| w[0] < w[1]),
        "alpha rises during the fade: {alphas:?}"
    );
    let sample = summary.latest_sample.unwrap();
    assert_eq!(
        image::open(&sample).unwrap().width(),
        2 * 64 + 3 * 2,
        "2 cells of 8px upscaled to 64 + gaps"
    );
    assert!(!list_checkpoints(run).unwrap().is_empty());
}

#[test]
fn a_run_stopped_and_resumed_matches_an_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);

    let config = tiny_config(&data, &dir.path().join("a"));
    let straight = train(TrainOptions::new(config)).unwrap();

    // Stop in the middle of the fade-in (kimg 0.044 of the 0.032–0.064 fade), then resume.
    let config = tiny_config(&data, &dir.path().join("b"));
    let stopped = stopped_mid_tick(&config);
    assert!(stopped.interrupted);
    assert_eq!(stopped.images_shown, 44);
    let state = checkpoint::read_state(&stopped.checkpoint).unwrap();
    assert!(
        state.alpha > 0.0 && state.alpha < 1.0,
        "stopped mid-fade, alpha {}",
        state.alpha
    );
    let mut second = TrainOptions::new(config);
    second.resume = Some(stopped.run_dir.clone());
    let resumed = train(second).unwrap();
    assert_eq!(resumed.run_dir, stopped.run_dir);
    assert_eq!(resumed.images_shown, straight.images_shown);
    // The resumed session's ticks are in metrics.jsonl too, once each.
    assert_eq!(kimgs(&resumed.run_dir), kimgs(&straight.run_dir));
    // The tick the stop cut (0.032–0.048 kimg) averages the steps before the stop too: every
    // row is the uninterrupted run's, its clocks and memory aside.
    assert_eq!(
        measured_rows(&resumed.run_dir),
        measured_rows(&straight.run_dir)
    );

    let (a, b) = (
        parameter_values(&resumed.checkpoint),
        parameter_values(&straight.checkpoint),
    );
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "weights differ after resume"
    );
    assert_eq!(
        weights(&resumed.checkpoint, true),
        weights(&straight.checkpoint, true)
    );
    assert_eq!(
        weights(&resumed.checkpoint, false),
        weights(&straight.checkpoint, false)
    );
}

/// A stop's checkpoint from before stops kept their tick's part (no `open_tick`): the resumed
/// run still ends its ticks where the uninterrupted run does.
#[test]
fn an_older_stop_checkpoint_keeps_the_tick_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let straight = train(TrainOptions::new(tiny_config(&data, &dir.path().join("a")))).unwrap();
    let config = tiny_config(&data, &dir.path().join("b"));
    let stopped = stopped_mid_tick(&config);
    let state_path = stopped.checkpoint.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let fields = state.as_object_mut().unwrap();
    assert!(fields.remove("open_tick").is_some());
    // As written by a pgan of format 1 from before the checksum (and the keys written with it).
    fields.remove("checksum");
    for key in checkpoint::KEYS_WRITTEN_WITH_THE_CHECKSUM {
        fields.remove(key);
    }
    fields.insert("version".into(), serde_json::json!(1));
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    let mut second = TrainOptions::new(config);
    second.resume = Some(stopped.run_dir.clone());
    let resumed = train(second).unwrap();
    assert_eq!(kimgs(&resumed.run_dir), kimgs(&straight.run_dir));
}

/// Rows lost from `metrics.jsonl` (cut back by hand, restored from an older copy, deleted):
/// the resume says which ticks' rows are gone, and its ticks still end where the run's do.
#[test]
fn a_resume_with_lost_metrics_rows_says_so_and_keeps_the_tick_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let straight = train(TrainOptions::new(tiny_config(&data, &dir.path().join("a")))).unwrap();
    let straight_kimgs = kimgs(&straight.run_dir);
    for (name, keep_rows) in [("cut", Some(2)), ("deleted", None)] {
        let config = tiny_config(&data, &dir.path().join(name));
        // Ticks end every 0.016 kimg, checkpoints every 2 ticks: this stop is at tick 4's
        // checkpoint.
        let mut first = TrainOptions::new(config.clone());
        first.stop_after_kimg = Some(0.064);
        let stopped = train(first).unwrap();
        assert_eq!(stopped.images_shown, 64);
        let metrics = stopped.run_dir.join("metrics.jsonl");
        match keep_rows {
            Some(n) => {
                let text = std::fs::read_to_string(&metrics).unwrap();
                let kept: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
                std::fs::write(&metrics, kept).unwrap();
            }
            None => std::fs::remove_file(&metrics).unwrap(),
        }
        let mut second = TrainOptions::new(config);
        second.resume = Some(stopped.run_dir.clone());
        let expected = match keep_rows {
            Some(_) => "the rows of ticks 3 to 4 are lost",
            None => "the rows of ticks 1 to 4 are lost",
        };
        // The dry run says it too, and changes nothing.
        let plan = pgan_train::preflight(&second)
            .ok()
            .and_then(|p| p.resume)
            .expect("a resume plan");
        assert!(
            plan.metrics_warnings.iter().any(|w| w.contains(expected)),
            "{name}: {:?}",
            plan.metrics_warnings
        );
        assert_eq!(metrics.exists(), keep_rows.is_some());
        let resumed = train(second).unwrap();
        let log = std::fs::read_to_string(resumed.run_dir.join("log.txt")).unwrap();
        assert!(log.contains(expected), "{name}: no warning in {log}");
        assert_eq!(log.matches(expected).count(), 1, "{name}: said once: {log}");
        let resumed_kimgs = kimgs(&resumed.run_dir);
        let after_the_gap: Vec<&String> = straight_kimgs.iter().skip(4).collect();
        let kept_before: Vec<&String> =
            straight_kimgs.iter().take(keep_rows.unwrap_or(0)).collect();
        let expected_kimgs: Vec<&String> = kept_before.into_iter().chain(after_the_gap).collect();
        assert_eq!(
            resumed_kimgs.iter().collect::<Vec<_>>(),
            expected_kimgs,
            "{name}: the resumed ticks end elsewhere"
        );
    }
}

#[test]
fn a_resume_with_another_tick_length_takes_it_from_the_tick_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("b"));
    let stopped = stopped_mid_tick(&config);
    // The tick in progress started at 0.032; from there on, ticks are 0.032 kimg long (a
    // tick count times the new length would put the next tick end at 0.096).
    let mut longer = config;
    longer.run.tick_kimg = 0.032;
    let mut second = TrainOptions::new(longer);
    second.resume = Some(stopped.run_dir.clone());
    let resumed = train(second).unwrap();
    assert_eq!(
        kimgs(&resumed.run_dir),
        ["0.016", "0.032", "0.064", "0.096", "0.128"]
    );
}

#[test]
fn a_resume_with_another_seed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("b"));
    let stopped = stopped_mid_tick(&config);
    let mut reseeded = config.clone();
    reseeded.run.seed = 4;
    let mut second = TrainOptions::new(reseeded);
    second.resume = Some(stopped.run_dir.clone());
    // The dry run refuses it as the real start does.
    for err in [
        pgan_train::preflight(&second)
            .err()
            .expect("the dry run refuses it")
            .to_string(),
        train(second).unwrap_err().to_string(),
    ] {
        assert!(
            err.contains("run.seed is 4") && err.contains("trained with seed 3"),
            "{err}"
        );
    }
    // A resume that changes no setting leaves the run's config.toml, the user's notes in it
    // included, as it is.
    let config_path = stopped.run_dir.join("config.toml");
    let noted = format!(
        "# resumed after the power cut\n{}",
        std::fs::read_to_string(&config_path).unwrap()
    );
    std::fs::write(&config_path, &noted).unwrap();
    let mut same = TrainOptions::new(config);
    same.resume = Some(stopped.run_dir);
    assert_eq!(train(same).unwrap().images_shown, 128);
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), noted);
}

#[test]
fn a_resume_with_mirroring_turned_off_stops_mirroring() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("b"));
    assert!(config.data.mirror);
    let stopped = stopped_mid_tick(&config);
    assert!(checkpoint::read_state(&stopped.checkpoint)
        .unwrap()
        .sampler
        .mirror());
    let mut plain = config;
    plain.data.mirror = false;
    let mut second = TrainOptions::new(plain);
    second.resume = Some(stopped.run_dir.clone());
    let resumed = train(second).unwrap();
    let state = checkpoint::read_state(&resumed.checkpoint).unwrap();
    assert!(!state.sampler.mirror());
    let log = std::fs::read_to_string(resumed.run_dir.join("log.txt")).unwrap();
    assert!(log.contains("data.mirror is false from here on"), "{log}");
}

#[test]
fn resuming_an_older_checkpoint_sets_the_newer_ones_aside_and_the_run_goes_on_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("runs"));
    let done = train(TrainOptions::new(config.clone())).unwrap();
    let before = list_checkpoints(&done.run_dir).unwrap();
    assert_eq!(before.len(), 5, "{before:?}");

    // A resume that cannot go through (here: a link as config.toml, which it rewrites) is
    // refused before any checkpoint, row or sheet moves.
    let config_path = done.run_dir.join("config.toml");
    let kept = dir.path().join("config-kept.toml");
    std::fs::rename(&config_path, &kept).unwrap();
    std::os::unix::fs::symlink(&kept, &config_path).unwrap();
    let mut refused = TrainOptions::new(config.clone());
    refused.resume = Some(before[1].clone());
    let err = train(refused).unwrap_err().to_string();
    assert!(
        err.contains("config.toml") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(list_checkpoints(&done.run_dir).unwrap(), before);
    assert!(!done.run_dir.join("checkpoints/abandoned-1").exists());
    std::fs::remove_file(&config_path).unwrap();
    std::fs::rename(&kept, &config_path).unwrap();

    let mut branch = TrainOptions::new(config);
    branch.resume = Some(before[1].clone());
    branch.stop_after_kimg = Some(0.044);
    let stopped = train(branch).unwrap();
    assert_eq!(stopped.images_shown, 44);
    let aside = done.run_dir.join("checkpoints/abandoned-1");
    let moved: Vec<_> = before[2..]
        .iter()
        .map(|c| aside.join(c.file_name().unwrap()))
        .collect();
    assert!(
        moved.iter().all(|c| c.join("state.json").is_file()),
        "{moved:?}"
    );
    assert_eq!(
        list_checkpoints(&done.run_dir).unwrap(),
        vec![
            before[0].clone(),
            before[1].clone(),
            stopped.checkpoint.clone()
        ]
    );
    // The run directory now resumes the new branch, not the abandoned one's kimg 0.128.
    let found = checkpoint::find_checkpoint(&done.run_dir).unwrap();
    assert_eq!(found.path, stopped.checkpoint);
    let log = std::fs::read_to_string(done.run_dir.join("log.txt")).unwrap();
    assert!(log.contains("newer checkpoints behind"), "{log}");
    // The abandoned branch's rows and sample sheets went with its checkpoints.
    let resumed_at = checkpoint::read_state(&before[1]).unwrap();
    let abandoned_rows = row_kimgs(&aside);
    assert!(
        abandoned_rows.first().unwrap() * 1000.0 > resumed_at.images_shown as f64
            && *abandoned_rows.last().unwrap() == 0.128,
        "{abandoned_rows:?}"
    );
    let last_kept = *sheet_ticks(&done.run_dir).last().unwrap();
    assert!(last_kept <= checkpoint::read_state(&stopped.checkpoint).unwrap().tick);
    assert!(sheet_ticks(&aside).iter().all(|&t| t > resumed_at.tick));
    assert_eq!(sheet_ticks(&aside).last(), Some(&8));
}

/// The ticks of the sample sheets in `dir/samples` (a run's, or a branch set aside), in order.
fn sheet_ticks(dir: &Path) -> Vec<u64> {
    let mut t: Vec<u64> = std::fs::read_dir(dir.join("samples"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("tick-")?
                .strip_suffix(".png")?
                .parse()
                .ok()
        })
        .collect();
    t.sort();
    t
}

/// The kimg of every row of `dir/metrics.jsonl` (a run's, or a branch set aside).
fn row_kimgs(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kimg"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// A resume killed while it set the newer checkpoints aside (its branch.json still lists what
/// moves, one checkpoint moved, sheets not yet): readers take the run's newest to be the
/// resumed one, not the half-moved branch's; resuming one of the branch's is refused; the next
/// trainer of the run finishes the set-aside (checkpoints, rows, sheets) and says so.
#[test]
fn a_set_aside_interrupted_by_a_kill_is_finished_by_the_next_trainer() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("runs"));
    let done = train(TrainOptions::new(config.clone())).unwrap();
    let before = list_checkpoints(&done.run_dir).unwrap();
    assert_eq!(before.len(), 5, "{before:?}");
    let name = |c: &std::path::PathBuf| c.file_name().unwrap().to_string_lossy().into_owned();
    let aside = done.run_dir.join("checkpoints/abandoned-1");
    std::fs::create_dir(&aside).unwrap();
    let moving: Vec<String> = before[2..].iter().map(name).collect();
    std::fs::write(
        aside.join("branch.json"),
        serde_json::json!({"resumed_from": name(&before[1]), "moving": moving}).to_string(),
    )
    .unwrap();
    std::fs::rename(&before[2], aside.join(name(&before[2]))).unwrap();

    assert_eq!(
        list_checkpoints(&done.run_dir).unwrap(),
        before[..2].to_vec()
    );
    assert_eq!(
        checkpoint::find_checkpoint(&done.run_dir).unwrap().path,
        before[1]
    );
    let mut onto_the_branch = TrainOptions::new(config.clone());
    onto_the_branch.resume = Some(before[4].clone());
    let err = train(onto_the_branch).unwrap_err().to_string();
    assert!(
        err.contains("is being set aside into") && err.contains("by an interrupted resume"),
        "{err}"
    );

    // The next trainer resumes the start: it finishes the interrupted set-aside first (with the
    // run's rows cut back to where that branch left), then sets kimg 0.032 aside as a branch
    // of its own, with only that branch's rows.
    let resumed_at = checkpoint::read_state(&before[1]).unwrap();
    let mut again = TrainOptions::new(config);
    again.resume = Some(before[0].clone());
    again.stop_after_kimg = Some(0.044);
    // Its --dry-run says what it will finish first.
    let plan = pgan_train::preflight(&again).unwrap();
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("this one finishes that first")),
        "{:?}",
        plan.warnings
    );
    let resumed = train(again).unwrap();
    for c in &before[2..] {
        assert!(aside.join(name(c)).join("state.json").is_file(), "{c:?}");
    }
    let record = std::fs::read_to_string(aside.join("branch.json")).unwrap();
    assert!(!record.contains("moving"), "{record}");
    let rows = std::fs::read_to_string(aside.join("metrics.jsonl")).unwrap();
    assert!(rows.lines().count() > 0 && rows.contains("0.128"), "{rows}");
    let second = done.run_dir.join("checkpoints/abandoned-2");
    assert!(second.join(name(&before[1])).join("state.json").is_file());
    let kimgs = row_kimgs(&second);
    assert!(
        !kimgs.is_empty()
            && kimgs
                .iter()
                .all(|&k| k * 1000.0 <= resumed_at.images_shown as f64),
        "{kimgs:?}"
    );
    assert_eq!(sheet_ticks(&aside).last(), Some(&8));
    let log = std::fs::read_to_string(done.run_dir.join("log.txt")).unwrap();
    assert!(
        log.contains("was interrupted while it set the run's newer checkpoints aside"),
        "{log}"
    );
    assert_eq!(resumed.images_shown, 44);
    assert!(resumed_at.images_shown < 44);
}

/// 8x8 stable, fade to 16x16 (0.032–0.064 kimg), 16x16 grown to 0.160; an evaluation every tick
/// (16 images, 8 pairs); only the collapse alarm's gap test can fire (the relative tests are
/// set out of reach, the vanishing-gradient ratio off), with a gap any generator crosses now and
/// then on noise data.
fn alarm_config(data: &Path, out_dir: &Path, grace_kimg: f64) -> TrainConfig {
    let mut config = tiny_config(data, out_dir);
    let text = format!(
        "[eval]\nevery_kimg = 0.016\nnum_images = 16\nmsssim_pairs = 8\n\
         [alarms]\nmsssim_gap = 1e-9\nmsssim_margin = 10\nswd_jump_factor = 1e9\n\
         collapse_grace_kimg = {grace_kimg}\ncollapse_confirm_evals = 2\nmin_g_grad_ratio = 0\n"
    );
    let extra = TrainConfig::from_toml_str(&text).unwrap();
    config.eval = extra.eval;
    config.alarms = extra.alarms;
    config.model.resolution = 16;
    config.schedule.start_resolution = 8;
    config.schedule.total_kimg = 0.160;
    config.validate().unwrap();
    config
}

/// 24 images of uniform noise, prepared at 16x16: real pairs share no structure (MS-SSIM near
/// 0), so an untrained generator, whose outputs share its biases, is often less diverse.
fn noise_dataset(dir: &Path) -> std::path::PathBuf {
    let images = dir.join("noise");
    std::fs::create_dir_all(&images).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for k in 0..24 {
        let img = image::RgbImage::from_fn(16, 16, |_, _| {
            let mut channel = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            };
            image::Rgb([channel(), channel(), channel()])
        });
        img.save(images.join(format!("{k:03}.png"))).unwrap();
    }
    let out = dir.join("noise.pgan");
    pgan_data::prepare(&pgan_data::PrepareOptions::new(images, out.clone(), 16)).unwrap();
    out
}

/// One tick of `metrics.jsonl` as the collapse alarm sees it.
#[derive(Debug, PartialEq)]
struct EvalTick {
    kimg: f64,
    fading: bool,
    msssim_fake: Option<f64>,
    msssim_real: Option<f64>,
    alarms: u64,
}

fn eval_ticks(run: &Path) -> Vec<EvalTick> {
    metrics_rows(run)
        .into_iter()
        .map(|r| EvalTick {
            kimg: r["kimg"].as_f64().unwrap(),
            fading: r["phase"] == "fade",
            msssim_fake: r["Metrics/msssim_fake"].as_f64(),
            msssim_real: r["Metrics/msssim_real"].as_f64(),
            alarms: r["Alarm/count"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// The alarms the documented rule raises on a run's logged figures, tick by tick, with the
/// position taken from the row (phase) and the schedule (16x16 grown at 0.064 kimg).
fn alarms_by_the_rule(config: &TrainConfig, ticks: &[EvalTick]) -> Vec<u64> {
    use pgan_train::alarms::{Alarms, CollapseMemory, EvalPoint};
    let alarms = Alarms::new(config.alarms.clone());
    let mut memory = CollapseMemory::default();
    ticks
        .iter()
        .map(|t| {
            let report = pgan_train::eval::EvalReport {
                msssim_fake: t.msssim_fake,
                msssim_real: t.msssim_real,
                ..Default::default()
            };
            let at = EvalPoint {
                resolution: 16,
                fading: t.fading,
                kimg_since_grown: (t.kimg - 0.064).max(0.0),
            };
            if t.msssim_fake.is_none() {
                return 0;
            }
            alarms.check_eval(&report, at, &mut memory).len() as u64
        })
        .collect()
}

#[test]
fn the_collapse_alarm_judges_grown_stages_after_the_grace_period_and_resumes_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise_dataset(dir.path());
    let mut fired = 0;
    for grace in [0.0, 0.032] {
        let config = alarm_config(&data, &dir.path().join(format!("a{grace}")), grace);
        let straight = train(TrainOptions::new(config.clone())).unwrap();
        let ticks = eval_ticks(&straight.run_dir);
        let logged: Vec<u64> = ticks.iter().map(|t| t.alarms).collect();
        assert_eq!(logged, alarms_by_the_rule(&config, &ticks), "{ticks:?}");
        assert!(
            ticks.iter().all(|t| !t.fading || t.alarms == 0),
            "a fade-in evaluation is never judged: {ticks:?}"
        );
        fired += logged.iter().sum::<u64>();

        // Stopped before each alarm in turn: the run of suspicious evaluations is in the
        // checkpoint, so the resumed run raises the same alarms at the same ticks.
        for alarm in ticks.iter().filter(|t| t.alarms > 0).take(2) {
            let out = dir.path().join(format!("b{grace}-{}", alarm.kimg));
            let config = alarm_config(&data, &out, grace);
            let mut first = TrainOptions::new(config.clone());
            first.stop_after_kimg = Some(alarm.kimg - 0.008);
            assert!(train(first).unwrap().interrupted);
            let mut second = TrainOptions::new(config);
            second.resume = Some(list_run(&out));
            let resumed = train(second).unwrap();
            assert_eq!(
                eval_ticks(&resumed.run_dir),
                ticks,
                "stopped at {}",
                alarm.kimg
            );
        }
    }
    assert!(
        fired > 0,
        "the data must make the alarm fire for this test to mean anything"
    );
}

/// One tick of `metrics.jsonl` as the vanishing-gradient alarm sees it.
#[derive(Debug, PartialEq)]
struct GradTick {
    kimg: f64,
    g_norm: f64,
    alarms: u64,
}

fn grad_ticks(run: &Path) -> Vec<GradTick> {
    metrics_rows(run)
        .into_iter()
        .map(|r| GradTick {
            kimg: r["kimg"].as_f64().unwrap(),
            g_norm: r["Grad/G/norm"].as_f64().unwrap(),
            alarms: r["Alarm/count"].as_u64().unwrap_or(0),
        })
        .collect()
}

#[test]
fn the_vanishing_gradient_alarm_compares_with_the_runs_peak_and_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    // A ratio this close to 1 fires whenever a tick's norm is 30 % under the peak so far, so a
    // short run has ticks on both sides; every other alarm is out of reach.
    let config = |out: &Path| {
        let mut config = tiny_config(&data, out);
        config.alarms.min_g_grad_ratio = 0.7;
        config.alarms.min_g_grad_norm = 0.0;
        config.alarms.max_d_gap = 1e12;
        config.validate().unwrap();
        config
    };
    let straight = train(TrainOptions::new(config(&dir.path().join("a")))).unwrap();
    let ticks = grad_ticks(&straight.run_dir);

    // The rule, replayed on the logged tick means.
    let rule = pgan_train::alarms::Alarms::new(config(dir.path()).alarms);
    let mut memory = pgan_train::alarms::GradientMemory::default();
    let replayed: Vec<u64> = ticks
        .iter()
        .map(|t| {
            let mut stats = pgan_train::stats::TickStats::default();
            stats.report(pgan_spec::metrics::GRAD_G_NORM, t.g_norm);
            rule.check_tick(&stats, &mut memory).len() as u64
        })
        .collect();
    let logged: Vec<u64> = ticks.iter().map(|t| t.alarms).collect();
    assert_eq!(logged, replayed, "{ticks:?}");
    assert_eq!(logged[0], 0, "the first tick has no peak to compare with");
    let fired: Vec<&GradTick> = ticks.iter().filter(|t| t.alarms > 0).collect();
    assert!(
        !fired.is_empty() && fired.len() < ticks.len() - 1,
        "the run must have ticks with and without the alarm: {ticks:?}"
    );

    // Stopped at the tick end before an alarm: the peak is in the checkpoint, so the resumed
    // run raises it at the same tick (without the peak its first tick could not).
    for alarm in fired.iter().take(2) {
        let out = dir.path().join(format!("b-{}", alarm.kimg));
        let mut first = TrainOptions::new(config(&out));
        first.stop_after_kimg = Some(alarm.kimg - 0.016);
        assert!(train(first).unwrap().interrupted);
        let mut second = TrainOptions::new(config(&out));
        second.resume = Some(list_run(&out));
        let resumed = train(second).unwrap();
        assert_eq!(
            grad_ticks(&resumed.run_dir),
            ticks,
            "stopped at {}",
            alarm.kimg - 0.016
        );
    }
}

/// The one run directory under `out`.
fn list_run(out: &Path) -> std::path::PathBuf {
    let mut runs: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.pop().unwrap()
}

#[test]
fn a_nan_rolls_back_to_the_last_checkpoint_and_training_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut config = tiny_config(&data, &dir.path().join("runs"));
    // A divergence alarm raised every tick: said afresh after the rollback, whose ticks are
    // trained again (not counted on in one streak).
    config.alarms.max_d_gap = 1e-9;
    let options = TrainOptions::new(config);
    let faults = Faults {
        nan_loss_at_steps: vec![10],
        ..Faults::default()
    };
    let summary = train_with_faults(options, faults).unwrap();
    assert_eq!(summary.rollbacks, 1);
    assert_eq!(summary.images_shown, 128);
    let log = std::fs::read_to_string(summary.run_dir.join("log.txt")).unwrap();
    assert!(log.contains("rolled back"), "{log}");
    let (before, after) = log.split_once("rolled back").unwrap();
    for part in [before, after] {
        let said = part.matches("alarm: D(real) - D(fake)").count();
        assert_eq!(said, 1, "{log}");
    }
    // The rollback row the report marks: back to the checkpoint at 32 images, failure 1.
    let rows = metrics_rows(&summary.run_dir);
    let rollback: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r.get(pgan_spec::metrics::ROLLBACK).is_some())
        .collect();
    assert_eq!(rollback.len(), 1, "{rows:?}");
    assert_eq!(rollback[0][pgan_spec::metrics::KIMG], 0.032);
    assert_eq!(rollback[0][pgan_spec::metrics::ROLLBACK], 1);
    assert!(weights(&summary.checkpoint, true)
        .iter()
        .all(|v| v.is_finite()));
}

/// A rollback writes the lowered rate and its failure count into the checkpoint it went back
/// to: a resume from that checkpoint (after a kill, say) goes on as the run did, and keeps the
/// rollback's row.
#[test]
fn a_rollback_is_recorded_in_its_checkpoint_so_a_resume_from_it_goes_on_as_the_run_did() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("runs"));
    let faults = Faults {
        nan_loss_at_steps: vec![10],
        ..Faults::default()
    };
    let done = train_with_faults(TrainOptions::new(config.clone()), faults).unwrap();
    assert_eq!(done.rollbacks, 1);
    let went_back_to = done.run_dir.join("checkpoints/ckpt-000000000032");
    let state = checkpoint::read_state(&went_back_to).unwrap();
    assert_eq!(state.consecutive_failures, 1);
    assert_eq!(state.lr_multiplier, config.recovery.lr_factor);
    let rows = measured_rows(&done.run_dir);
    let weights = parameter_values(&done.checkpoint);

    let mut again = TrainOptions::new(config);
    again.resume = Some(went_back_to);
    let resumed = train(again).unwrap();
    assert_eq!(measured_rows(&resumed.run_dir), rows);
    let log = std::fs::read_to_string(resumed.run_dir.join("log.txt")).unwrap();
    assert!(
        log.contains(
            "ckpt-000000000032 is within a rollback's cooldown: the learning rate is x0.5"
        ),
        "{log}"
    );
    let b = parameter_values(&resumed.checkpoint);
    assert!(
        weights
            .iter()
            .zip(&b)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "weights differ after a resume from the rolled-back-to checkpoint"
    );
}

/// Longer phases on resume would put a grown run back at a lower resolution, shorter ones past a
/// fade-in it has not done: refused, naming the keys, and the run's files are left as they were.
#[test]
fn a_resume_whose_schedule_would_move_the_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("runs"));
    let mut first = TrainOptions::new(config.clone());
    first.stop_after_kimg = Some(0.080);
    let stopped = train(first).unwrap();
    assert_eq!(
        checkpoint::read_state(&stopped.checkpoint).unwrap().stage,
        1
    );
    let metrics = std::fs::read(stopped.run_dir.join("metrics.jsonl")).unwrap();

    let mut longer = config.clone();
    longer.schedule.lod_training_kimg = 1.0;
    longer.schedule.lod_transition_kimg = 1.0;
    let mut options = TrainOptions::new(longer);
    options.resume = Some(stopped.run_dir.clone());
    let err = train(options).unwrap_err().to_string();
    assert!(
        err.contains("cannot shrink") && err.contains("4x4") && err.contains("8x8"),
        "{err}"
    );
    assert!(err.contains("lod_training_kimg"), "{err}");
    // A longer fade-in puts the grown 8x8 (α = 1) back at α = 0.5.
    let mut refade = config.clone();
    refade.schedule.lod_transition_kimg = 0.096;
    let mut options = TrainOptions::new(refade);
    options.resume = Some(stopped.run_dir.clone());
    let err = train(options).unwrap_err().to_string();
    assert!(
        err.contains("cannot fade back") && err.contains("α = 0.500") && err.contains("8x8"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(stopped.run_dir.join("metrics.jsonl")).unwrap(),
        metrics
    );
    // Shorter phases would put a run stopped at 4x4 past its fade-in to 8x8, or into it: both
    // refused (the 8x8 layers would start untrained, or blend in at a jump).
    let mut early = TrainOptions::new(config.clone());
    early.stop_after_kimg = Some(0.024);
    let early = train(early).unwrap();
    for (training, transition, said) in [
        (0.008, 0.008, "at 8x8, ahead of 4x4 where it stands"),
        (
            0.016,
            0.032,
            "at the fade-in to 8x8 at α = 0.250, ahead of 4x4 where it stands",
        ),
    ] {
        let mut shorter = config.clone();
        shorter.schedule.lod_training_kimg = training;
        shorter.schedule.lod_transition_kimg = transition;
        let mut options = TrainOptions::new(shorter);
        options.resume = Some(early.run_dir.clone());
        let err = train(options).unwrap_err().to_string();
        assert!(
            err.contains(said) && err.contains("cannot skip a fade-in"),
            "{err}"
        );
    }
    // From inside the fade (α = 0.5 at 0.048 kimg), longer phases put it back at 4x4: a
    // shrink, said as one (not as a skipped fade, though α is higher there).
    let mut mid_fade = TrainOptions::new(config.clone());
    mid_fade.stop_after_kimg = Some(0.048);
    let mid_fade = train(mid_fade).unwrap();
    let mut longer = config.clone();
    longer.schedule.lod_training_kimg = 1.0;
    let mut options = TrainOptions::new(longer);
    options.resume = Some(mid_fade.run_dir.clone());
    let err = train(options).unwrap_err().to_string();
    assert!(err.contains("cannot shrink"), "{err}");
    // The same schedule resumes, and removes what a trainer killed here was writing (a pid
    // above Linux's largest is no process).
    let dead = 4_194_305;
    let stale = [
        format!(".metrics.jsonl.tmp-{dead}-2"),
        format!("samples/.tick-000003.png.tmp-{dead}-7"),
        format!("checkpoints/.ckpt-000000000016.tmp-{dead}-1"),
    ]
    .map(|name| stopped.run_dir.join(name));
    std::fs::write(&stale[0], b"x").unwrap();
    std::fs::write(&stale[1], b"x").unwrap();
    std::fs::create_dir_all(stale[2].join("inner")).unwrap();
    let mut same = TrainOptions::new(config);
    same.resume = Some(stopped.run_dir.clone());
    assert_eq!(train(same).unwrap().images_shown, 128);
    for path in &stale {
        assert!(!path.exists(), "{} left", path.display());
    }
}

/// Ctrl-C while a tick end evaluates: the evaluation is abandoned (the checkpoint does not wait
/// for it), the run stops at that tick with a checkpoint, and resumes to the weights of a run
/// that was never stopped.
#[test]
fn a_stop_during_the_evaluation_abandons_it_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 16);
    // Evaluations measure from 16x16: the run starts there.
    let with_eval = |out: &str| {
        let mut config = tiny_config(&data, &dir.path().join(out));
        config.model.resolution = 16;
        config.schedule.start_resolution = 16;
        config.eval.every_kimg = 0.016;
        config.eval.num_images = 8;
        // Every distinct pair of the eight.
        config.eval.msssim_pairs = 28;
        config
    };
    let straight = train(TrainOptions::new(with_eval("a"))).unwrap();

    let faults = Faults {
        stop_at_evaluation: true,
        ..Faults::default()
    };
    let stopped = train_with_faults(TrainOptions::new(with_eval("b")), faults).unwrap();
    assert!(stopped.interrupted);
    assert_eq!(stopped.images_shown, 16, "stopped at the first tick's end");
    let log = std::fs::read_to_string(stopped.run_dir.join("log.txt")).unwrap();
    assert!(log.contains("evaluation abandoned"), "{log}");
    assert_eq!(
        checkpoint::read_state(&stopped.checkpoint)
            .unwrap()
            .images_shown,
        16
    );

    let mut second = TrainOptions::new(with_eval("b"));
    second.resume = Some(stopped.run_dir.clone());
    let resumed = train(second).unwrap();
    assert_eq!(resumed.images_shown, straight.images_shown);
    assert_eq!(
        parameter_values(&resumed.checkpoint),
        parameter_values(&straight.checkpoint),
        "abandoning an evaluation changed the training"
    );
    // The resume measured what the stop abandoned: every row, the stopped tick's SWD and
    // MS-SSIM included, is the uninterrupted run's.
    let log = std::fs::read_to_string(resumed.run_dir.join("log.txt")).unwrap();
    assert!(
        log.contains("measured what the stop abandoned at the end of tick 1"),
        "{log}"
    );
    assert_measured_as_uninterrupted(&resumed, &straight);
}

/// A stop during the last tick's evaluation, whose last step went past `total_kimg`: the run
/// says it stopped (not finished), and the resume, which trains nothing, measures it.
#[test]
fn a_stop_during_the_last_evaluation_is_a_stop_and_the_resume_measures_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 16);
    let with_eval = |out: &str| {
        let mut config = tiny_config(&data, &dir.path().join(out));
        config.model.resolution = 16;
        config.schedule.start_resolution = 16;
        // Steps of 4 images: the last ends at 128.
        config.schedule.total_kimg = 0.126;
        config.eval.every_kimg = 0.126;
        config.eval.num_images = 8;
        // Every distinct pair of the eight.
        config.eval.msssim_pairs = 28;
        config
    };
    let straight = train(TrainOptions::new(with_eval("a"))).unwrap();
    assert!(!straight.interrupted);
    assert_eq!(straight.images_shown, 128);
    let faults = Faults {
        stop_at_evaluation: true,
        ..Faults::default()
    };
    let stopped = train_with_faults(TrainOptions::new(with_eval("b")), faults).unwrap();
    assert!(stopped.interrupted, "a stop during the last measurements");
    assert_eq!(stopped.images_shown, 128);
    let owed = checkpoint::read_state(&stopped.checkpoint)
        .unwrap()
        .abandoned
        .expect("the checkpoint owes the evaluation");
    assert!(owed.evaluation && owed.images_shown == 128);

    let mut second = TrainOptions::new(with_eval("b"));
    second.resume = Some(stopped.run_dir.clone());
    let resumed = train(second).unwrap();
    assert!(!resumed.interrupted);
    assert_measured_as_uninterrupted(&resumed, &straight);
}

#[test]
fn a_stop_mid_tick_after_a_nan_rolls_back_instead_of_checkpointing_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut options = TrainOptions::new(tiny_config(&data, &dir.path().join("runs")));
    // Ticks are 4 steps of 4 images. Step 1 goes NaN and the run stops after step 2, before
    // the tick's end has read the steps' values: the stop must read them and roll back to the
    // checkpoint at 0 images rather than write one of NaN weights; training then gets to the
    // stop again (the fault fires once) and checkpoints healthy weights there.
    options.stop_after_kimg = Some(0.008);
    let faults = Faults {
        nan_loss_at_steps: vec![1],
        ..Faults::default()
    };
    let summary = train_with_faults(options, faults).unwrap();
    assert!(summary.interrupted);
    assert_eq!(summary.rollbacks, 1);
    assert_eq!(summary.images_shown, 8);
    let log = std::fs::read_to_string(summary.run_dir.join("log.txt")).unwrap();
    assert!(
        log.contains("non-finite values at step 2 (0.004 kimg)"),
        "{log}"
    );
    assert!(parameter_values(&summary.checkpoint)
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn non_finite_weights_with_finite_losses_roll_back_too() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let options = TrainOptions::new(tiny_config(&data, &dir.path().join("runs")));
    // G_ema goes NaN after step 9; no loss reads it, so the end-of-tick check (after step 11)
    // is what must find it.
    let faults = Faults {
        nan_weights_at_steps: vec![9],
        ..Faults::default()
    };
    let summary = train_with_faults(options, faults).unwrap();
    assert_eq!(summary.rollbacks, 1);
    assert_eq!(summary.images_shown, 128);
    let log = std::fs::read_to_string(summary.run_dir.join("log.txt")).unwrap();
    assert!(
        log.contains("non-finite weights") && log.contains("rolled back"),
        "{log}"
    );
    assert!(parameter_values(&summary.checkpoint)
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn a_failure_after_the_cooldown_starts_again_from_the_configured_rate() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut options = TrainOptions::new(tiny_config(&data, &dir.path().join("runs")));
    // Checkpoints every 32 images (8 steps of 4). Step 10 rolls back to image 32 and lowers the
    // rate until image 48; step 25 fails long after that, so it halves the full rate again.
    options.config.recovery.cooldown_kimg = 0.016;
    let faults = Faults {
        nan_loss_at_steps: vec![10, 25],
        ..Faults::default()
    };
    let summary = train_with_faults(options, faults).unwrap();
    assert_eq!(summary.rollbacks, 2);
    let log = std::fs::read_to_string(summary.run_dir.join("log.txt")).unwrap();
    assert_eq!(log.matches("learning rate x0.5 ").count(), 2, "{log}");
    assert!(!log.contains("x0.25"), "{log}");
}

#[test]
fn only_the_last_checkpoints_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut config = tiny_config(&data, &dir.path().join("runs"));
    config.run.keep_checkpoints = 2;
    let summary = train(TrainOptions::new(config)).unwrap();
    let kept: Vec<u64> = list_checkpoints(&summary.run_dir)
        .unwrap()
        .iter()
        .map(|c| checkpoint::read_state(c).unwrap().images_shown)
        .collect();
    assert_eq!(
        kept,
        vec![96, 128],
        "checkpoints every 32 images, the last two kept"
    );
    let entries = std::fs::read_dir(summary.run_dir.join(checkpoint::CHECKPOINTS_DIR))
        .unwrap()
        .count();
    assert_eq!(entries, 2, "no temp folders left behind");
}

#[test]
fn the_optimizer_reset_at_each_phase_changes_the_run_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut runs = Vec::new();
    for (name, reset) in [("reset", true), ("keep", false)] {
        let mut config = tiny_config(&data, &dir.path().join(name));
        config.schedule.reset_optimizer = reset;
        let summary = train(TrainOptions::new(config)).unwrap();
        runs.push(parameter_values(&summary.checkpoint));
    }
    assert_eq!(runs[0].len(), runs[1].len());
    assert_ne!(
        runs[0], runs[1],
        "Adam's moments carried over the phases or not"
    );
}

#[test]
fn logistic_r1_trains_through_a_fade() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut config = tiny_config(&data, &dir.path().join("runs"));
    config.loss.kind = pgan_train::config::LossKind::LogisticR1;
    config.loss.r1_gamma = 1.0;
    let summary = train(TrainOptions::new(config)).unwrap();
    assert_eq!(summary.images_shown, 128);
    assert_eq!(summary.rollbacks, 0);
    let rows = metrics_rows(&summary.run_dir);
    assert!(rows.iter().any(|r| r["phase"] == "fade"));
    for r in &rows {
        // Softplus losses are positive; the R1 term is a squared norm.
        let loss_d = r["Loss/D"].as_f64().unwrap();
        let penalty = r["Loss/D/penalty"].as_f64().unwrap();
        assert!(loss_d.is_finite() && loss_d > 0.0, "{r}");
        assert!(penalty.is_finite() && penalty > 0.0, "{r}");
    }
    assert!(parameter_values(&summary.checkpoint)
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn repeated_nans_stop_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut options = TrainOptions::new(tiny_config(&data, &dir.path().join("runs")));
    // Step counters are restored on rollback, so the same steps fail again and again.
    let faults = Faults {
        nan_loss_at_steps: (0..200).collect(),
        ..Faults::default()
    };
    options.config.recovery.max_consecutive_failures = 2;
    let mut large_penalty = options.clone();
    let mut no_rollback = options.clone();
    let err = train_with_faults(options, faults.clone()).unwrap_err();
    assert!(matches!(err, TrainError::Diverged(_)), "{err}");
    assert!(err.to_string().contains("learning rate"), "{err}");
    // Only the kimg-0 checkpoint to go back to: no "earlier checkpoint" to resume.
    assert!(
        err.to_string()
            .ends_with("a larger loss.gp_lambda, then start the run again"),
        "{err}"
    );
    // A penalty already far above the paper's is named as a setting to check, not advised
    // larger still.
    large_penalty.config.loss.gp_lambda = 1e6;
    large_penalty.config.run.out_dir = dir.path().join("runs-large");
    let err = train_with_faults(large_penalty, faults.clone())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Try the settings this run changes (loss.gp_lambda 1000000.0), then a lower"),
        "{err}"
    );
    assert!(!err.contains("a larger loss.gp_lambda"), "{err}");
    // With no rollback allowed the first failure ends the run, said as such.
    no_rollback.config.recovery.max_consecutive_failures = 0;
    no_rollback.config.run.out_dir = dir.path().join("runs-none");
    let err = train_with_faults(no_rollback, faults)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("training diverged: a non-finite value by ")
            && err.contains("recovery.max_consecutive_failures = 0 allows no rollback (1 or more")
            && err.contains("at a lower rate). Try"),
        "{err}"
    );
    // The error that ended the run is the last line of its log too.
    let runs = dir.path().join("runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let last = log.lines().last().unwrap();
    assert!(
        last.contains("ERROR training stopped by an error") && last.contains("learning rate"),
        "{log}"
    );
    assert!(
        log.contains("after a rollback, until 10.000 kimg)"),
        "{log}"
    );
    // The checkpoint it gave up on says so, and a resume from it (the user's next try) trains
    // at the configured rate with a fresh count, not the last rollback's reduced one and 2 of 2.
    let marked: Vec<_> = list_checkpoints(&run)
        .unwrap()
        .into_iter()
        .filter_map(|c| checkpoint::read_state(&c).unwrap().gave_up.map(|n| (c, n)))
        .collect();
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0].1, 2);
    let gave_up_at = checkpoint::read_state(&marked[0].0).unwrap().images_shown as f64 / 1000.0;
    let mut again = TrainOptions::new(tiny_config(&data, &runs));
    again.resume = Some(run.clone());
    let resumed = train(again).unwrap();
    assert_eq!(resumed.rollbacks, 0);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(
        log.contains("is where the run stopped after 2 rollbacks in a row"),
        "{log}"
    );
    let schedule = tiny_config(&data, &runs).schedule;
    let trained: Vec<_> = metrics_rows(&run)
        .into_iter()
        .filter(|r| r[pgan_spec::metrics::KIMG].as_f64().unwrap() > gave_up_at)
        .collect();
    assert!(!trained.is_empty());
    for row in trained
        .iter()
        .filter(|r| r.get(pgan_spec::metrics::LR_G).is_some())
    {
        let resolution = row[pgan_spec::metrics::RESOLUTION].as_u64().unwrap() as u32;
        let lr = row[pgan_spec::metrics::LR_G].as_f64();
        assert_eq!(lr, Some(schedule.lr_for(resolution)), "{row}");
    }
    let state = checkpoint::read_state(&resumed.checkpoint).unwrap();
    assert_eq!(
        (
            state.consecutive_failures,
            state.lr_multiplier,
            state.gave_up
        ),
        (0, 1.0, None)
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);

    // Missing dataset: the error names the file.
    let mut config = tiny_config(&data, &dir.path().join("runs"));
    config.data.path = Some(dir.path().join("nope.pgan"));
    let err = train(TrainOptions::new(config)).unwrap_err().to_string();
    assert!(err.contains("nope.pgan"), "{err}");

    // Dataset resolution below the model's.
    let mut config = tiny_config(&data, &dir.path().join("runs"));
    config.model.resolution = 16;
    let err = train(TrainOptions::new(config)).unwrap_err().to_string();
    assert!(err.contains("below") && err.contains("16"), "{err}");

    // Resume from a corrupted checkpoint.
    let mut options = TrainOptions::new(tiny_config(&data, &dir.path().join("runs")));
    options.stop_after_kimg = Some(0.016);
    let stopped = train(options).unwrap();
    let victim = stopped.checkpoint.join("generator.mpk");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    // Named explicitly it is an error (given the run directory, resume falls back to the newest
    // intact checkpoint instead: `checkpoint.rs` and the CLI tests cover that).
    let mut options = TrainOptions::new(tiny_config(&data, &dir.path().join("runs")));
    options.resume = Some(stopped.checkpoint.clone());
    let err = train(options).unwrap_err().to_string();
    assert!(
        err.contains("generator.mpk") && err.contains("corrupt"),
        "{err}"
    );

    // A run directory without checkpoints.
    let mut options = TrainOptions::new(tiny_config(&data, &dir.path().join("runs")));
    options.resume = Some(dir.path().to_path_buf());
    let err = train(options).unwrap_err().to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

/// A short run on wgpu (Mesa's lavapipe in CI): the whole loop, checkpoint and samples.
#[cfg(feature = "wgpu")]
#[test]
fn a_short_run_trains_on_wgpu() {
    // Kernel autotuning on a software rasteriser takes minutes per shape.
    std::env::set_var("CUBECL_AUTOTUNE_LEVEL", "minimal");
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut config = tiny_config(&data, &dir.path().join("runs"));
    config.run.backend = pgan_train::BackendKind::Wgpu;
    config.schedule.lod_training_kimg = 0.008;
    config.schedule.lod_transition_kimg = 0.008;
    config.schedule.total_kimg = 0.024;
    config.run.tick_kimg = 0.008;
    let convs_before = pgan_cube::launch_counts();
    match train(TrainOptions::new(config.clone())) {
        Ok(summary) => {
            assert_eq!(summary.images_shown, 24);
            // The equalized convs went through pgan-cube's op (its implicit GEMM, or on
            // lavapipe the counted fallback), not burn's conv2d.
            let convs = pgan_cube::launch_counts();
            assert!(
                convs.gemm + convs.fallback > convs_before.gemm + convs_before.fallback,
                "no conv pass went through pgan-cube"
            );
            assert!(summary.latest_sample.is_some());
            assert!(weights(&summary.checkpoint, false)
                .iter()
                .all(|v| v.is_finite()));
            // The GPU runtime's memory pool is reported per tick.
            for row in metrics_rows(&summary.run_dir) {
                let reserved = row["Mem/device_reserved_mb"].as_f64();
                let peak = row["Mem/device_peak_reserved_mb"].as_f64();
                assert!(
                    reserved.is_some_and(|r| r > 0.0) && peak >= reserved,
                    "device memory in {row}"
                );
            }
        }
        Err(TrainError::Backend { message, .. })
            if std::env::var_os("PGAN_REQUIRE_WGPU").is_none() =>
        {
            eprintln!(
                "skipping: no wgpu device ({message}); set PGAN_REQUIRE_WGPU=1 to fail instead"
            );
        }
        Err(e) => panic!("wgpu training failed: {e}"),
    }

    // The same loop on burn's wgpu backend without fusion (PGAN_GPU_FUSION=off), one tick.
    // Only this test reads the variable, so setting it here races with nothing.
    std::env::set_var("PGAN_GPU_FUSION", "off");
    config.schedule.total_kimg = 0.008;
    config.run.out_dir = dir.path().join("runs-unfused");
    let result = train(TrainOptions::new(config));
    std::env::remove_var("PGAN_GPU_FUSION");
    match result {
        Ok(summary) => assert_eq!(summary.images_shown, 8),
        Err(TrainError::Backend { .. }) if std::env::var_os("PGAN_REQUIRE_WGPU").is_none() => {}
        Err(e) => panic!("wgpu training without fusion failed: {e}"),
    }
}

/// The largest Adam step count among a network's parameters in a checkpoint: the updates made
/// to the parameters trained from the first step (with `reset_optimizer` off).
fn adam_updates(ckpt: &Path, discriminator: bool) -> usize {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::Optimizer;
    use pgan_train::adam::FusedAdam;
    type Ad = burn::backend::Autodiff<Flex>;
    type G = pgan_model::Generator<Ad>;
    // The same record type for G's and D's optimizer: parameter id → Adam state.
    type AdamRecord = <OptimizerAdaptor<FusedAdam, G, Ad> as Optimizer<G, Ad>>::Record;
    struct MaxTime<'a> {
        record: &'a AdamRecord,
        max: usize,
    }
    impl ModuleVisitor<Ad> for MaxTime<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
            if let Some(r) = self.record.get(&param.id) {
                let state = r.clone().into_state::<D>();
                self.max = self.max.max(state.momentum.time);
            }
        }
    }
    let device = Default::default();
    let state = checkpoint::read_state(ckpt).unwrap();
    let model = checkpoint::model_config(&state, ckpt).unwrap();
    let (stem, optim) = if discriminator {
        (checkpoint::DISCRIMINATOR, checkpoint::OPTIM_D)
    } else {
        (checkpoint::GENERATOR, checkpoint::OPTIM_G)
    };
    let record: AdamRecord = checkpoint::load_record::<Ad, _>(ckpt, optim, &device).unwrap();
    let mut v = MaxTime {
        record: &record,
        max: 0,
    };
    if discriminator {
        let d =
            checkpoint::load_module(model.init_discriminator::<Ad>(&device), ckpt, stem, &device)
                .unwrap();
        d.visit(&mut v);
    } else {
        let g = checkpoint::load_module(model.init_generator::<Ad>(&device), ckpt, stem, &device)
            .unwrap();
        g.visit(&mut v);
    }
    v.max
}

#[test]
fn d_steps_makes_that_many_d_updates_per_g_update_each_on_its_own_reals() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    for d_steps in [1u32, 2] {
        let mut config = tiny_config(&data, &dir.path().join(format!("d{d_steps}")));
        config.schedule.reset_optimizer = false;
        config.schedule.total_kimg = 0.032;
        config.optim.d_steps = d_steps;
        let summary = train(TrainOptions::new(config)).unwrap();
        assert_eq!(summary.images_shown, 32);
        let state = checkpoint::read_state(&summary.checkpoint).unwrap();
        // Batch 4: every D update shows 4 reals, every G update follows d_steps D updates.
        let g_updates = 32 / (4 * d_steps as usize);
        assert_eq!(state.step as usize, g_updates);
        assert_eq!(adam_updates(&summary.checkpoint, false), g_updates);
        assert_eq!(
            adam_updates(&summary.checkpoint, true),
            g_updates * d_steps as usize
        );
    }
}

#[test]
fn the_learning_rate_multipliers_reach_each_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let run = |name: &str, lr: f64, g_mult: f64, d_mult: f64| {
        let mut config = tiny_config(&data, &dir.path().join(name));
        config.schedule.total_kimg = 0.032;
        config.schedule.lr_default = lr;
        config.optim.lr_g_mult = g_mult;
        config.optim.lr_d_mult = d_mult;
        parameter_values(&train(TrainOptions::new(config)).unwrap().checkpoint)
    };
    // 0.001 × 2 is 0.002 exactly: the multiplied rate is the rate each optimizer steps with.
    let doubled = run("doubled", 0.002, 1.0, 1.0);
    assert_eq!(run("mults", 0.001, 2.0, 2.0), doubled);
    // One multiplier alone changes the run.
    assert_ne!(run("g-only", 0.001, 2.0, 1.0), doubled);
    assert_ne!(run("d-only", 0.001, 1.0, 2.0), doubled);
}

/// A resume that changes the game (here the loss, and instance noise whose anneal ended
/// before the checkpoint) trains on, says what changed with both values, and that the noise
/// adds nothing; the dry run says the same.
#[test]
fn a_resume_that_changes_the_game_says_so() {
    use pgan_train::config::LossKind;
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("runs"));
    let stopped = stopped_mid_tick(&config);
    let mut changed = config.clone();
    changed.loss.kind = LossKind::NonSaturating;
    changed.instance_noise.sigma = 0.3;
    changed.instance_noise.anneal_kimg = 0.01;
    let mut options = TrainOptions::new(changed);
    options.resume = Some(stopped.run_dir.clone());
    let planned = pgan_train::preflight(&options).unwrap().warnings.join("\n");
    train(options).unwrap();
    let log = std::fs::read_to_string(stopped.run_dir.join("log.txt")).unwrap();
    // A run's own noise whose anneal ended before its checkpoint is the plan: nothing said.
    let mut noisy = tiny_config(&data, &dir.path().join("noisy"));
    noisy.instance_noise.sigma = 0.3;
    noisy.instance_noise.anneal_kimg = 0.01;
    let stopped_noisy = stopped_mid_tick(&noisy);
    let mut options = TrainOptions::new(noisy);
    options.resume = Some(stopped_noisy.run_dir.clone());
    let plain = pgan_train::preflight(&options).unwrap().warnings.join("\n");
    assert!(
        !plain.contains("adds no noise") && !plain.contains("other settings"),
        "{plain}"
    );
    for said in [&planned, &log] {
        assert!(
            said.contains("this resume trains on with other settings than")
                && said.contains("was trained with: ")
                && said.contains("loss.kind \"wgan-gp\" → \"non-saturating\"")
                && said.contains("instance_noise.sigma 0.0 → 0.3")
                && said.contains("instance_noise.sigma 0.3 adds no noise"),
            "{said}"
        );
    }
}

/// The game a resume is compared with is the checkpoint's, not what `config.toml` says now: a
/// change made by editing the run's own `config.toml` before the resume is said too, and a
/// checkpoint that trained on after a change is not said to change it again. A checkpoint
/// from before the game was recorded is compared with `config.toml`.
#[test]
fn a_resume_compares_the_game_with_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config = tiny_config(&data, &dir.path().join("runs"));
    let stopped = stopped_mid_tick(&config);
    let mut edited = config.clone();
    edited.optim.lr_d_mult = 2.0;
    let config_file = stopped.run_dir.join(pgan_train::run_dir::CONFIG_FILE);
    std::fs::write(&config_file, edited.to_toml()).unwrap();
    let resume = |config: &TrainConfig, stop_kimg: f64| {
        let mut options = TrainOptions::new(config.clone());
        options.resume = Some(stopped.run_dir.clone());
        options.stop_after_kimg = Some(stop_kimg);
        let planned = pgan_train::preflight(&options).unwrap().warnings.join("\n");
        (planned, train(options).unwrap())
    };
    let (planned, resumed) = resume(&edited, 0.08);
    assert!(
        planned.contains(&format!(
            "other settings than {} was trained with: optim.lr_d_mult 1.0 → 2.0",
            stopped.checkpoint.display()
        )),
        "{planned}"
    );
    let state = checkpoint::read_state(&resumed.checkpoint).unwrap();
    assert_eq!(
        state.recorded_game(),
        Some(edited.game()),
        "the new game is recorded"
    );
    let (planned, _) = resume(&edited, 0.12);
    assert!(!planned.contains("other settings"), "{planned}");
    // A checkpoint that does not record its game: config.toml (the edited one) is the game.
    let newest = checkpoint::find_checkpoint(&stopped.run_dir).unwrap().path;
    let mut state = checkpoint::read_state(&newest).unwrap();
    state.game = None;
    checkpoint::rewrite_state(&newest, &state).unwrap();
    let mut options = TrainOptions::new(config.clone());
    options.resume = Some(stopped.run_dir.clone());
    let planned = pgan_train::preflight(&options).unwrap().warnings.join("\n");
    assert!(
        planned.contains(&format!(
            "other settings than {}: optim.lr_d_mult 2.0 → 1.0",
            config_file.display()
        )),
        "{planned}"
    );
}

#[test]
fn instance_noise_changes_training_and_zero_sigma_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let run = |name: &str, sigma: f64, anneal_kimg: f64| {
        let mut config = tiny_config(&data, &dir.path().join(name));
        config.schedule.total_kimg = 0.032;
        config.instance_noise.sigma = sigma;
        config.instance_noise.anneal_kimg = anneal_kimg;
        parameter_values(&train(TrainOptions::new(config)).unwrap().checkpoint)
    };
    let plain = run("plain", 0.0, 0.0);
    // σ = 0 draws nothing: the run is today's, bit for bit.
    assert_eq!(run("zero", 0.0, 5.0), plain);
    assert_ne!(run("noisy", 0.5, 1.0), plain);
}

#[test]
fn feature_matching_changes_the_generator_step_and_zero_weight_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let run = |name: &str, weight: f32| {
        let mut config = tiny_config(&data, &dir.path().join(name));
        config.schedule.total_kimg = 0.032;
        config.loss.feature_matching = weight;
        let summary = train(TrainOptions::new(config)).unwrap();
        // The term, weighted, in every tick's row (and in Loss/G, which includes it).
        let terms: Vec<f64> = metrics_rows(&summary.run_dir)
            .iter()
            .filter_map(|row| row[pgan_spec::metrics::LOSS_G_FEATURE_MATCHING].as_f64())
            .collect();
        (
            weights(&summary.checkpoint, true),
            parameter_values(&summary.checkpoint),
            terms,
        )
    };
    let plain = run("plain", 0.0);
    let matched = run("matched", 1.0);
    assert_ne!(matched.0, plain.0, "the term reaches G's gradient");
    assert!(matched.1.iter().all(|v| v.is_finite()));
    assert!(
        !plain.2.is_empty() && plain.2.iter().all(|&t| t == 0.0),
        "{:?}",
        plain.2
    );
    assert!(
        matched.2.len() == plain.2.len() && matched.2.iter().all(|&t| t > 0.0),
        "{:?}",
        matched.2
    );
}

/// Every remedy at once (non-saturating loss with label smoothing, feature matching, instance
/// noise annealed within the run, TTUR multipliers, two D steps, minibatch discrimination), then
/// the minimax loss: both train through a fade, and a run stopped mid-fade and resumed ends
/// bit-identical to an uninterrupted one.
#[test]
fn every_remedy_on_trains_through_a_fade_and_resumes_bit_for_bit() {
    use pgan_train::config::LossKind;
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let config_for = |name: &str, kind: LossKind| {
        let mut config = tiny_config(&data, &dir.path().join(name));
        config.loss.kind = kind;
        config.loss.real_label = 0.9;
        config.loss.feature_matching = 0.1;
        config.instance_noise.sigma = 0.2;
        config.instance_noise.anneal_kimg = 0.096;
        config.optim.lr_g_mult = 0.5;
        config.optim.lr_d_mult = 2.0;
        config.optim.d_steps = 2;
        config.model.minibatch = Some(pgan_model::Minibatch::Discrimination);
        config.model.mbdisc_kernels = Some(6);
        config.model.mbdisc_kernel_dim = Some(3);
        config.validate().unwrap();
        config
    };
    let straight = train(TrainOptions::new(config_for("a", LossKind::NonSaturating))).unwrap();
    assert_eq!(straight.images_shown, 128);
    assert_eq!(straight.rollbacks, 0);
    let state = checkpoint::read_state(&straight.checkpoint).unwrap();
    assert_eq!(state.step, 128 / 8, "two D minibatches of 4 per G step");
    let model = checkpoint::model_config(&state, &straight.checkpoint).unwrap();
    assert_eq!(model.mbdisc_shape(), Some((6, 3)));
    assert!(parameter_values(&straight.checkpoint)
        .iter()
        .all(|v| v.is_finite()));
    let rows = metrics_rows(&straight.run_dir);
    assert!(rows.iter().any(|r| r["phase"] == "fade"));
    for r in &rows {
        let loss_d = r["Loss/D"].as_f64().unwrap();
        assert!(loss_d.is_finite() && loss_d > 0.0, "{r}");
        assert_eq!(r["Loss/D/penalty"].as_f64(), Some(0.0), "no penalty: {r}");
        // The rows carry each network's rate, its TTUR multiplier applied (0.5 and 2).
        let (lr_g, lr_d) = (r["lr_g"].as_f64().unwrap(), r["lr_d"].as_f64().unwrap());
        assert_eq!(lr_d, 4.0 * lr_g, "{r}");
    }
    let config_toml = std::fs::read_to_string(straight.run_dir.join("config.toml")).unwrap();
    assert!(config_toml.contains("d_steps = 2"), "{config_toml}");

    let config = config_for("b", LossKind::NonSaturating);
    let stopped = stopped_mid_tick(&config);
    assert_eq!(stopped.images_shown, 48, "steps of 8 images");
    let mut second = TrainOptions::new(config);
    second.resume = Some(stopped.run_dir.clone());
    let resumed = train(second).unwrap();
    assert_eq!(resumed.images_shown, 128);
    let (a, b) = (
        parameter_values(&resumed.checkpoint),
        parameter_values(&straight.checkpoint),
    );
    assert!(
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "weights differ after resume"
    );

    let minimax = train(TrainOptions::new(config_for("c", LossKind::Minimax))).unwrap();
    assert_eq!(minimax.images_shown, 128);
    assert!(parameter_values(&minimax.checkpoint)
        .iter()
        .all(|v| v.is_finite()));
    for r in metrics_rows(&minimax.run_dir) {
        // The minimax G loss log(1 − D(G(z))) is negative.
        assert!(r["Loss/G"].as_f64().unwrap() < 0.0, "{r}");
    }
}

/// A checkpoint written before `model.minibatch` existed (its `state.json` has no minibatch keys
/// and no checksum) resumes and renders as minibatch stddev; a config asking for another minibatch
/// layer is refused with the key named.
#[test]
fn checkpoints_from_before_the_minibatch_key_load_and_a_changed_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    let mut config = tiny_config(&data, &dir.path().join("runs"));
    config.schedule.total_kimg = 0.032;
    let first = train(TrainOptions::new(config.clone())).unwrap();
    let state_path = first.checkpoint.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let keys = state.as_object_mut().unwrap();
    keys.remove("checksum");
    for key in checkpoint::KEYS_WRITTEN_WITH_THE_CHECKSUM {
        keys.remove(key);
    }
    keys.insert("version".into(), serde_json::json!(1));
    let model = keys["model"].as_object_mut().unwrap();
    for key in pgan_model::ModelConfig::KEYS_ADDED_LATER {
        assert!(model.remove(key).is_some(), "{key}");
    }
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    let loaded = checkpoint::load_generator::<burn::backend::Flex>(
        &first.checkpoint,
        false,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(loaded.model.minibatch, pgan_model::Minibatch::Stddev);

    let mut other = config.clone();
    other.model.minibatch = Some(pgan_model::Minibatch::Discrimination);
    let mut options = TrainOptions::new(other);
    options.resume = Some(first.run_dir.clone());
    let err = train(options).unwrap_err().to_string();
    assert!(
        err.contains(
            "model.minibatch = \"stddev\" in the checkpoint, \"discrimination\" in the config"
        ),
        "{err}"
    );

    config.schedule.total_kimg = 0.064;
    let mut options = TrainOptions::new(config);
    options.resume = Some(first.run_dir.clone());
    let resumed = train(options).unwrap();
    assert_eq!(resumed.images_shown, 64);
}
