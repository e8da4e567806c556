//! Data-parallel training on CPU peers (threads of this process, burn-collective's local
//! all-reduce): two peers with half the minibatch each train like one device with all of it,
//! and a two-peer run resumes exactly. (`train` runs one training at a time per process, so the
//! tests' runs never share burn-collective's registry of peers.)

use std::path::Path;

use pgan_train::checkpoint::list_checkpoints;
use pgan_train::config::TrainConfig;
use pgan_train::{train, TrainOptions};

mod common;
use common::{parameter_values, tiny_dataset};

/// A tiny run; `extra` is appended to the TOML (sections override nothing above them, so it
/// only adds keys).
fn config(data: &Path, out_dir: &Path, run_extra: &str, rest: &str) -> TrainConfig {
    let text = format!(
        r#"
[run]
seed = 5
out_dir = "{out}"
checkpoint_ticks = 1
keep_checkpoints = 50
sample_rows = 2
sample_cols = 2
progress = false
{run_extra}
[data]
path = "{data}"
mirror = true
[model]
preset = "cpu-small"
latent_dim = 8
fmap_base = 16
fmap_max = 8
{rest}
"#,
        out = out_dir.display(),
        data = data.display()
    );
    let config = TrainConfig::from_toml_str(&text).unwrap();
    config.validate().unwrap();
    config
}

/// The weight change of a run's single step: its last checkpoint minus its first (kimg 0).
fn one_step_delta(run_dir: &Path) -> (Vec<f32>, Vec<f32>) {
    let ckpts = list_checkpoints(run_dir).unwrap();
    let (first, last) = (ckpts.first().unwrap(), ckpts.last().unwrap());
    assert_ne!(first, last);
    let (before, after) = (parameter_values(first), parameter_values(last));
    let delta = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    (before, delta)
}

#[test]
fn two_peers_with_half_the_batch_each_match_one_device_with_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 4);
    // One step of 16 images at 4x4. The minibatch-stddev layer is off (it would group samples
    // across the two halves on one device); Adam's epsilon is large so that the first update,
    // lr·g/(|g|+ε), is close to linear in the gradient instead of lr·sign(g), which would
    // turn a rounding difference in a near-zero gradient into a full step.
    let rest = r#"
resolution = 4
mbstd_group_size = 0
[optim]
epsilon = 1.0
[schedule]
start_resolution = 4
lod_training_kimg = 0.016
lod_transition_kimg = 0.0
total_kimg = 0.016
minibatch_default = 16
"#;
    let one = config(&data, &dir.path().join("one"), "tick_kimg = 0.016", rest);
    let two = config(
        &data,
        &dir.path().join("two"),
        "tick_kimg = 0.016\ndevices = [0, 1]",
        rest,
    );
    let a = train(TrainOptions::new(one)).unwrap();
    let b = train(TrainOptions::new(two)).unwrap();
    assert_eq!((a.images_shown, b.images_shown), (16, 16));

    let (start_a, delta_a) = one_step_delta(&a.run_dir);
    let (start_b, delta_b) = one_step_delta(&b.run_dir);
    // Same seed, same initial weights.
    assert_eq!(start_a, start_b);
    let scale = delta_a.iter().fold(0.0f32, |m, d| m.max(d.abs()));
    assert!(
        scale > 1e-6,
        "the step changed the weights (largest change {scale})"
    );
    // The gradients are means over 16 samples summed in a different order (two means of 8,
    // then their mean): the updates agree to float rounding, 1e-4 of the largest update.
    let worst = delta_a
        .iter()
        .zip(&delta_b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "largest difference {worst} of updates up to {scale}"
    );
    // The two-peer run says so in its metrics.
    let metrics = std::fs::read_to_string(b.run_dir.join("metrics.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(row["Peers/count"], 2.0);
    assert!(row["Peers/allreduce_s"].as_f64().unwrap() >= 0.0);
}

#[test]
fn a_two_peer_run_stopped_and_resumed_matches_an_uninterrupted_one_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 8);
    // 4x4 stable, fade to 8x8, 8x8 stable: 16 images per phase, batch 4 (2 per peer).
    let rest = r#"
resolution = 8
[schedule]
lod_training_kimg = 0.016
lod_transition_kimg = 0.016
total_kimg = 0.064
minibatch_default = 4
"#;
    let run = "tick_kimg = 0.008\ndevices = [0, 1]";
    let straight = train(TrainOptions::new(config(
        &data,
        &dir.path().join("a"),
        run,
        rest,
    )))
    .unwrap();

    let cfg = config(&data, &dir.path().join("b"), run, rest);
    let mut first = TrainOptions::new(cfg.clone());
    // Mid-fade (the fade is kimg 0.016–0.032).
    first.stop_after_kimg = Some(0.024);
    let stopped = train(first).unwrap();
    assert!(stopped.interrupted);
    assert_eq!(stopped.images_shown, 24);
    let mut second = TrainOptions::new(cfg);
    second.resume = Some(stopped.run_dir.clone());
    let resumed = train(second).unwrap();
    assert_eq!(resumed.images_shown, straight.images_shown);

    let (a, b) = (
        parameter_values(&resumed.checkpoint),
        parameter_values(&straight.checkpoint),
    );
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "weights differ after resume"
    );
}
