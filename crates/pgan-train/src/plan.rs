//! Resolving a config against its dataset: the model configuration, the run's description, and
//! the human-readable plan that `pgan train --dry-run` prints.

use std::fmt::Write as _;

use pgan_model::{Minibatch, ModelConfig};

use crate::config::{LossKind, ModelPreset, ModelSection, TrainConfig};
use crate::error::{Result, TrainError};
use crate::schedule::{resolution_of, StageSchedule};

/// The model configuration a config section describes, for a dataset with `channels` channels;
/// an error names the `model.` key that cannot build a network.
pub fn resolve_model(section: &ModelSection, channels: usize) -> Result<ModelConfig> {
    let mut model = match section.preset {
        ModelPreset::Paper => ModelConfig::paper(section.resolution),
        ModelPreset::CpuSmall => ModelConfig::cpu_small(section.resolution),
    };
    model.num_channels = channels;
    if let Some(v) = section.latent_dim {
        model.latent_dim = v;
    }
    if let Some(v) = section.fmap_base {
        model.fmap_base = v;
    }
    if let Some(v) = section.fmap_decay {
        model.fmap_decay = v;
    }
    if let Some(v) = section.fmap_max {
        model.fmap_max = v;
    }
    if let Some(v) = section.mbstd_group_size {
        model.mbstd_group_size = v;
    }
    if let Some(v) = section.minibatch {
        model.minibatch = v;
    }
    if let Some(v) = section.mbdisc_kernels {
        model.mbdisc_kernels = v;
    }
    if let Some(v) = section.mbdisc_kernel_dim {
        model.mbdisc_kernel_dim = v;
    }
    // Every `ModelConfigError` message starts with the field's name: prefixed with the config
    // section, it names the key.
    model.validate().map_err(|e| TrainError::Config {
        path: None,
        message: format!("model.{e}"),
    })?;
    Ok(model)
}

/// Parameter counts of G and D (all blocks, as stored in checkpoints).
pub fn parameter_counts(model: &ModelConfig) -> (usize, usize) {
    type B = burn::backend::Flex;
    use burn::module::Module;
    let device = Default::default();
    let g = model.init_generator::<B>(&device);
    let d = model.init_discriminator::<B>(&device);
    (g.num_params(), d.num_params())
}

/// A rough upper estimate of device memory for one training step at `resolution` with `batch`
/// images: weights, EMA and Adam moments, plus activations kept for backward (forward G and D,
/// the penalty's extra passes), 4 bytes per value.
pub fn memory_estimate_mib(
    model: &ModelConfig,
    params: (usize, usize),
    resolution: u32,
    batch: usize,
) -> f64 {
    let weights = (params.0 * 4 + params.1 * 3) as f64; // G, G_ema, 2 moments; D and 2 moments
    let stage = crate::schedule::stage_of(resolution);
    let mut activations = 0f64;
    for s in 0..=stage {
        let r = resolution_of(s) as f64;
        // Two convs per block, each keeping its input and pre-activation.
        activations += 4.0 * model.stage_channels(s) as f64 * r * r;
    }
    // G forward + D on reals, fakes and the penalty's interpolates (primal + tangent).
    let per_image = activations * 6.0;
    (weights + per_image * batch as f64) * 4.0 / (1024.0 * 1024.0)
}

/// What a run with `eval.msssim_pairs = 0` gives up.
pub const MSSSIM_OFF: &str =
    "eval.msssim_pairs = 0 measures no MS-SSIM, so the mode-collapse alarms cannot fire";

/// Evaluations set to come less often than the run is long: they never happen (said by
/// `--dry-run` and at the start). An evaluation comes at the tick end that crosses a multiple
/// of its interval in whole images, and the run ends with its last whole minibatch, which may
/// pass `total_kimg`.
pub fn evaluations_past_the_end(config: &TrainConfig, model: &ModelConfig) -> Vec<String> {
    let e = &config.eval;
    let schedule = StageSchedule::new(config.schedule.clone(), model.resolution);
    let Some(end) = schedule.images_at_end(config.optim.d_steps) else {
        return Vec::new();
    };
    [
        (
            "SWD/MS-SSIM",
            "eval.every_kimg",
            e.every_kimg,
            e.every_kimg > 0.0,
        ),
        (
            "FID",
            "eval.fid_every_kimg",
            e.fid_every_kimg,
            e.fid_enabled(),
        ),
    ]
    .into_iter()
    .filter(|&(_, _, every, on)| on && ((every * 1000.0).round() as u64).max(1) > end)
    .map(|(what, key, every, _)| {
        format!(
            "{what} never: {key} {every} is past the run's end ({} images shown, \
             schedule.total_kimg {})",
            thousands(end as usize),
            config.schedule.total_kimg
        )
    })
    .collect()
}

/// When the run measures itself: SWD/MS-SSIM every `eval.every_kimg` from the resolution they
/// need, FID every `eval.fid_every_kimg`.
fn describe_evaluation(config: &TrainConfig, model: &ModelConfig) -> String {
    let e = &config.eval;
    // Those past the run's end are among the warnings.
    let never = evaluations_past_the_end(config, model);
    let said = |key: &str| never.iter().any(|n| n.contains(key));
    let mut parts = Vec::new();
    if e.every_kimg > 0.0 && !said("eval.every_kimg") {
        let from = crate::eval::MIN_EVAL_RESOLUTION;
        if model.resolution < from {
            parts.push(format!(
                "SWD/MS-SSIM never (eval.every_kimg {} is set, but they need {from}x{from} and \
                 the model stops at {1}x{1})",
                e.every_kimg, model.resolution
            ));
        } else {
            parts.push(format!(
                "SWD/MS-SSIM every {} kimg from {from}x{from} ({} images, {} pairs)",
                e.every_kimg,
                e.num_images,
                e.msssim_pairs_measured()
            ));
            if e.msssim_pairs == 0 {
                parts.push(MSSSIM_OFF.to_string());
            }
        }
    }
    if e.fid_enabled() && !said("eval.fid_every_kimg") {
        parts.push(format!(
            "FID every {} kimg ({} images)",
            e.fid_every_kimg, e.fid_num
        ));
        if let Some(warning) = crate::inception_metrics::small_fid_sample(e.fid_num) {
            parts.push(warning);
        }
    }
    if parts.is_empty() && !never.is_empty() {
        "evaluation: none within the run (see the warning)".to_string()
    } else if parts.is_empty() {
        "evaluation: off".to_string()
    } else {
        format!("evaluation: {}", parts.join("; "))
    }
}

/// The plan printed by `--dry-run`: resolved schedule with widths, sizes and memory.
pub fn describe(config: &TrainConfig, model: &ModelConfig) -> String {
    let schedule = StageSchedule::new(config.schedule.clone(), model.resolution);
    let params = parameter_counts(model);
    let rows = schedule.rows();
    // Enough decimals that a short test schedule (0.016 kimg phases) does not print as zeros.
    let kimg_decimals = if config.schedule.total_kimg < 10.0 {
        3
    } else {
        1
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model: {}x{} x{} channels, latent {}, fmap_base {}, fmap_max {}, minibatch layer: {}",
        model.resolution,
        model.resolution,
        model.num_channels,
        model.latent_dim,
        model.fmap_base,
        model.fmap_max,
        describe_minibatch(model)
    );
    let loss = match config.loss.kind {
        LossKind::WganGp => format!(
            "wgan-gp (lambda {}, drift {})",
            config.loss.gp_lambda, config.loss.drift_epsilon
        ),
        LossKind::LogisticR1 => format!("logistic + R1 (gamma {})", config.loss.r1_gamma),
        LossKind::NonSaturating => "non-saturating (no penalty)".into(),
        LossKind::Minimax => "minimax (saturating, no penalty)".into(),
    };
    let loss = if config.loss.real_label != 1.0 {
        format!("{loss}, real label {}", config.loss.real_label)
    } else {
        loss
    };
    let loss = if config.loss.feature_matching > 0.0 {
        format!("{loss}, feature matching {}", config.loss.feature_matching)
    } else {
        loss
    };
    let peers = crate::distributed::peer_count(config);
    let devices = if config.run.devices.len() > 1 {
        format!("devices {:?}", config.run.devices)
    } else {
        format!("device {}", config.run.device)
    };
    let devices = if config.nodes.several() {
        format!(
            "{devices}, node {} of {}: {peers} peers, each 1/{peers} of every minibatch",
            config.nodes.rank, config.nodes.count
        )
    } else if peers > 1 {
        format!("{devices}: {peers} peers, each 1/{peers} of every minibatch")
    } else {
        devices
    };
    let _ = writeln!(
        out,
        "parameters: G {}, D {}   loss: {loss}   backend: {} ({devices})",
        thousands(params.0),
        thousands(params.1),
        config.run.backend,
    );
    let _ = writeln!(out, "{}", describe_updates(config));
    let _ = writeln!(out, "{}", describe_evaluation(config, model));
    let _ = writeln!(
        out,
        "{:<7} {:>5} {:>9} {:>19} {:>6} {:>8} {:>8} {:>10}",
        "phase", "stage", "res", "kimg", "batch", "lr", "channels", "mem (MiB)"
    );
    let mut largest: Option<(f64, u32)> = None;
    for row in &rows {
        let mem = memory_estimate_mib(model, params, row.resolution, row.batch);
        if largest.is_none_or(|(m, _)| mem > m) {
            largest = Some((mem, row.resolution));
        }
        let _ = writeln!(
            out,
            "{:<7} {:>5} {:>9} {:>19} {:>6} {:>8} {:>8} {:>10}",
            row.kind.to_string(),
            row.stage,
            format!("{0}x{0}", row.resolution),
            format!(
                "{:.p$} – {:.p$}",
                row.start_kimg,
                row.end_kimg,
                p = kimg_decimals
            ),
            row.batch,
            row.lr,
            model.stage_channels(row.stage),
            if mem < 10.0 {
                format!("{mem:.2}")
            } else {
                format!("{mem:.0}")
            }
        );
    }
    let total_images = (config.schedule.total_kimg * 1000.0).round() as u64;
    let ends_at = schedule
        .images_at_end(config.optim.d_steps)
        .filter(|&end| end != total_images)
        .map(|end| {
            format!(
                "; the last whole minibatch ends it at {}",
                thousands(end as usize)
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "total: {:.p$} kimg ({} images shown{ends_at})",
        config.schedule.total_kimg,
        thousands(total_images as usize),
        p = kimg_decimals
    );
    if let Some(short) = schedule.ends_short_of_the_model() {
        let _ = writeln!(out, "warning: {short}");
    }
    // On the CPU the estimate is host memory, which can be compared here.
    let available = crate::limits::available_memory_bytes()
        .filter(|_| config.run.backend == crate::config::BackendKind::Cpu);
    if let (Some((mib, resolution)), Some(available)) = (largest, available) {
        let available_mib = available as f64 / (1024.0 * 1024.0);
        if mib > available_mib {
            let _ = writeln!(
                out,
                "warning: the {resolution}x{resolution} stage's estimate, {mib:.0} MiB, is more \
                 than the {available_mib:.0} MiB this machine has available: lower its minibatch"
            );
        }
    }
    out
}

/// D's minibatch layer as the dry run prints it.
fn describe_minibatch(model: &ModelConfig) -> String {
    match model.minibatch {
        Minibatch::Stddev if model.mbstd_enabled() => format!(
            "stddev (groups of min({}, minibatch per peer))",
            model.mbstd_group_size
        ),
        Minibatch::Stddev => format!("none (stddev group {})", model.mbstd_group_size),
        Minibatch::Discrimination => format!(
            "discrimination ({} kernels x {} dims)",
            model.mbdisc_kernels, model.mbdisc_kernel_dim
        ),
        Minibatch::None => "none".into(),
    }
}

/// The update rule beside the schedule's table: learning-rate multipliers, D updates per G
/// update, instance noise.
fn describe_updates(config: &TrainConfig) -> String {
    let o = &config.optim;
    let noise = &config.instance_noise;
    let noise = if noise.sigma > 0.0 {
        format!("sigma {} -> 0 over {} kimg", noise.sigma, noise.anneal_kimg)
    } else {
        "off".into()
    };
    format!(
        "updates: lr x G {} x D {} (times the lr column), {} D step{} per G step   instance noise: {noise}",
        o.lr_g_mult,
        o.lr_d_mult,
        o.d_steps,
        if o.d_steps == 1 { "" } else { "s" }
    )
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluations_less_often_than_the_run_is_long_are_said_to_never_happen() {
        let model = ModelConfig::cpu_small(16);
        let mut config = TrainConfig::default();
        config.model.resolution = 16;
        config.schedule.total_kimg = 0.1;
        config.schedule.minibatch.clear();
        config.schedule.minibatch_default = 16;
        // 0.1 kimg in steps of 16 images ends at 112: an interval of 110 is crossed there.
        (
            config.eval.every_kimg,
            config.eval.fid_every_kimg,
            config.eval.fid_num,
        ) = (0.11, 0.0, 0);
        assert!(evaluations_past_the_end(&config, &model).is_empty());
        config.eval.every_kimg = 0.113;
        let said = evaluations_past_the_end(&config, &model);
        assert_eq!(
            said,
            ["SWD/MS-SSIM never: eval.every_kimg 0.113 is past the run's end (112 images shown, \
              schedule.total_kimg 0.1)"]
        );
        assert_eq!(
            describe_evaluation(&config, &model),
            "evaluation: none within the run (see the warning)"
        );
        // FID off (fid_num 0) is not said.
        config.eval.every_kimg = 0.1;
        config.eval.fid_every_kimg = 5.0;
        assert!(evaluations_past_the_end(&config, &model).is_empty());
        config.eval.fid_num = 8;
        assert_eq!(evaluations_past_the_end(&config, &model).len(), 1);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(23_086_795), "23,086,795");
    }

    #[test]
    fn a_stage_beyond_the_cpus_memory_is_named_in_the_plan() {
        let mut config: TrainConfig = toml::from_str(
            "[model]\npreset = \"cpu-small\"\nresolution = 16\nfmap_base = 16\nfmap_max = 8\n\
             [schedule]\nminibatch_default = 4\n",
        )
        .unwrap();
        config.run.backend = crate::config::BackendKind::Cpu;
        let model = resolve_model(&config.model, 3).unwrap();
        assert!(!describe(&config, &model).contains("warning"));
        // The paper's networks at 1024x1024 with the largest minibatch: terabytes.
        config.model.preset = ModelPreset::Paper;
        config.model.fmap_base = None;
        config.model.fmap_max = None;
        config.model.resolution = 1024;
        config.schedule.minibatch_default = crate::config::MAX_MINIBATCH;
        config.validate().unwrap();
        let model = resolve_model(&config.model, 3).unwrap();
        let plan = describe(&config, &model);
        assert!(
            plan.contains("warning: the 1024x1024 stage's estimate")
                && plan.contains("lower its minibatch"),
            "{plan}"
        );
    }

    #[test]
    fn the_plan_lists_every_phase_with_its_numbers() {
        let mut config: TrainConfig = toml::from_str(
            "[model]\npreset = \"cpu-small\"\nresolution = 16\nfmap_base = 16\nfmap_max = 8\n\
             [schedule]\nlod_training_kimg = 0.016\nlod_transition_kimg = 0.016\n\
             total_kimg = 0.064\nminibatch_default = 4\n[schedule.minibatch]\n16 = 2\n",
        )
        .unwrap();
        config.run.backend = crate::config::BackendKind::Cpu;
        let model = resolve_model(&config.model, 3).unwrap();
        let (g, d) = parameter_counts(&model);
        let plan = describe(&config, &model);
        assert!(
            plan.contains(&format!("G {}, D {}", thousands(g), thousands(d))),
            "{plan}"
        );
        let rows: Vec<Vec<&str>> = plan
            .lines()
            .filter(|l| l.starts_with("stable") || l.starts_with("fade"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        // phase stage res start – end batch lr channels mem
        let summary: Vec<(&str, &str, &str, &str, &str)> = rows
            .iter()
            .map(|r| (r[0], r[2], r[3], r[5], r[6]))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("stable", "4x4", "0.000", "0.016", "4"),
                ("fade", "8x8", "0.016", "0.032", "4"),
                ("stable", "8x8", "0.032", "0.048", "4"),
                ("fade", "16x16", "0.048", "0.064", "2"),
            ],
            "{plan}"
        );
        for r in &rows {
            assert_eq!(r[7], "0.001", "{plan}");
        }
        let channels: Vec<usize> = rows.iter().map(|r| r[8].parse().unwrap()).collect();
        assert_eq!(channels, vec![8, 4, 4, 2], "{plan}");
        let mem: Vec<f64> = rows.iter().map(|r| r[9].parse().unwrap()).collect();
        assert!(mem.iter().all(|&m| m > 0.0), "{plan}");
        assert!(mem[2] > mem[0], "a larger stage needs more memory: {plan}");
        assert!(
            plan.contains("total: 0.064 kimg (64 images shown)"),
            "{plan}"
        );
        assert!(
            plan.contains(
                "updates: lr x G 1 x D 1 (times the lr column), 1 D step per G step   \
                 instance noise: off"
            ),
            "{plan}"
        );
        assert!(plan.contains("backend: cpu (device 0)"), "{plan}");
        assert!(!plan.contains("warning:"), "{plan}");

        // Several devices, a total that ends off a whole minibatch and short of 16x16.
        config.run.devices = vec![0, 1];
        config.schedule.total_kimg = 0.05;
        config.schedule.minibatch.clear();
        config.schedule.minibatch_default = 12;
        let plan = describe(&config, &model);
        for said in [
            "backend: cpu (devices [0, 1]: 2 peers, each 1/2 of every minibatch)",
            "total: 0.050 kimg (50 images shown; the last whole minibatch ends it at 60)",
            "warning: schedule.total_kimg 0.05 ends the run mid-way through the fade-in to \
             16x16, before the 16x16 network (model.resolution) is fully grown",
        ] {
            assert!(plan.contains(said), "{said}\n{plan}");
        }
    }

    #[test]
    fn the_plan_shows_the_remedies() {
        let mut config = TrainConfig::default();
        config.model.resolution = 8;
        config.loss.kind = LossKind::Minimax;
        config.loss.real_label = 0.9;
        config.optim.lr_g_mult = 0.5;
        config.optim.lr_d_mult = 2.0;
        config.optim.d_steps = 3;
        config.instance_noise.sigma = 0.1;
        config.instance_noise.anneal_kimg = 5.0;
        config.model.preset = ModelPreset::CpuSmall;
        let model = resolve_model(&config.model, 3).unwrap();
        let plan = describe(&config, &model);
        assert!(
            plan.contains("loss: minimax (saturating, no penalty), real label 0.9"),
            "{plan}"
        );
        assert!(
            plan.contains(
                "updates: lr x G 0.5 x D 2 (times the lr column), 3 D steps per G step   \
                 instance noise: sigma 0.1 -> 0 over 5 kimg"
            ),
            "{plan}"
        );
        config.loss.kind = LossKind::NonSaturating;
        config.loss.real_label = 1.0;
        let plan = describe(&config, &model);
        assert!(
            plan.contains("loss: non-saturating (no penalty)   "),
            "{plan}"
        );
        config.loss.feature_matching = 0.5;
        let plan = describe(&config, &model);
        assert!(
            plan.contains("loss: non-saturating (no penalty), feature matching 0.5   "),
            "{plan}"
        );
    }
}
