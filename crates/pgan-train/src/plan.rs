//! Resolving a config against its dataset: the model configuration, the run's description, and
//! the human-readable plan that `pgan train --dry-run` prints.

use std::fmt::Write as _;

use pgan_model::ModelConfig;

use crate::config::{ModelPreset, ModelSection, TrainConfig};
use crate::schedule::{resolution_of, StageSchedule};

/// The model configuration a config section describes, for a dataset with `channels` channels.
pub fn resolve_model(section: &ModelSection, channels: usize) -> ModelConfig {
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
    model
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

/// The plan printed by `--dry-run`: resolved schedule with widths, sizes and memory.
pub fn describe(config: &TrainConfig, model: &ModelConfig) -> String {
    let schedule = StageSchedule::new(config.schedule.clone(), model.resolution);
    let params = parameter_counts(model);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model: {}x{} x{} channels, latent {}, fmap_base {}, fmap_max {}, mbstd group {}",
        model.resolution,
        model.resolution,
        model.num_channels,
        model.latent_dim,
        model.fmap_base,
        model.fmap_max,
        model.mbstd_group_size
    );
    let _ = writeln!(
        out,
        "parameters: G {:.2}M, D {:.2}M   loss: {:?}   backend: {}",
        params.0 as f64 / 1e6,
        params.1 as f64 / 1e6,
        config.loss.kind,
        config.run.backend
    );
    let _ = writeln!(
        out,
        "{:<7} {:>5} {:>9} {:>19} {:>6} {:>8} {:>8} {:>10}",
        "phase", "stage", "res", "kimg", "batch", "lr", "channels", "mem (MiB)"
    );
    for row in schedule.rows() {
        let _ = writeln!(
            out,
            "{:<7} {:>5} {:>9} {:>19} {:>6} {:>8} {:>8} {:>10.0}",
            row.kind.to_string(),
            row.stage,
            format!("{0}x{0}", row.resolution),
            format!("{:.1} – {:.1}", row.start_kimg, row.end_kimg),
            row.batch,
            row.lr,
            model.stage_channels(row.stage),
            memory_estimate_mib(model, params, row.resolution, row.batch)
        );
    }
    out
}
