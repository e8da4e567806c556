//! Checkpoints: everything needed to continue a run bit for bit.
//!
//! A checkpoint is a folder `RUN_DIR/checkpoints/ckpt-NNNNNNNNN` (images shown, zero-padded so
//! names sort in time order) holding burn records for G, D, G_ema and both Adam states, and
//! `state.json` with the schedule position, RNG and sampler state, recovery state and a CRC32 of
//! every record file. It is built under a temp name and renamed only when complete, then older
//! checkpoints are pruned to the last K.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Record, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use pgan_data::BatchSampler;
use pgan_model::{Generator, ModelConfig};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::fsutil::{write_atomic, write_dir_atomic};
use crate::nets::Nets;

/// Version of the checkpoint layout; bumped on incompatible changes.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Name of the state file inside a checkpoint folder.
pub const STATE_FILE: &str = "state.json";
/// Folder of checkpoints inside a run directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// Record file stems inside a checkpoint (the recorder appends `.mpk`).
pub const GENERATOR: &str = "generator";
/// Discriminator record stem.
pub const DISCRIMINATOR: &str = "discriminator";
/// EMA generator record stem.
pub const GENERATOR_EMA: &str = "generator_ema";
/// Generator optimizer record stem.
pub const OPTIM_G: &str = "optim_g";
/// Discriminator optimizer record stem.
pub const OPTIM_D: &str = "optim_d";

/// The recorder used for every record: named MessagePack, full f32 precision (lossless).
pub type CheckpointRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// The loop's position and every piece of state that is not a tensor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// [`CHECKPOINT_VERSION`] of the writer.
    pub version: u32,
    /// Real images shown to D so far.
    pub images_shown: u64,
    /// Completed ticks.
    pub tick: u64,
    /// Optimizer steps taken.
    pub step: u64,
    /// Schedule phase index of the last step (for optimizer resets at phase changes).
    pub phase_index: usize,
    /// Network stage at `images_shown` (what render uses).
    pub stage: usize,
    /// Fade-in alpha at `images_shown`.
    pub alpha: f32,
    /// Host RNG for latents and penalty mixing factors.
    pub rng: ChaCha8Rng,
    /// Dataset sampler position.
    pub sampler: BatchSampler,
    /// Learning-rate multiplier after rollbacks (1 when healthy).
    pub lr_multiplier: f64,
    /// Images-shown count until which the reduced learning rate applies.
    pub cooldown_until: u64,
    /// Rollbacks since the last checkpoint written after a healthy stretch.
    pub consecutive_failures: u32,
    /// Training seconds accumulated over all sessions of this run.
    pub elapsed_s: f64,
    /// Best SWD seen per resolution (collapse alarm memory).
    pub best_swd: BTreeMap<u32, f64>,
    /// Lowest (most diverse) generated-pair MS-SSIM seen per resolution (collapse alarm memory;
    /// absent in checkpoints written before it existed).
    #[serde(default)]
    pub best_msssim: BTreeMap<u32, f64>,
    /// Model configuration the records were made with (JSON of `ModelConfig`).
    pub model: serde_json::Value,
    /// CRC32 of every record file, by file name.
    #[serde(default)]
    pub files: BTreeMap<String, u32>,
}

/// Folder name of the checkpoint taken after `images_shown` images.
pub fn checkpoint_name(images_shown: u64) -> String {
    format!("ckpt-{images_shown:012}")
}

/// Saves a module under `dir/stem.mpk`.
pub fn save_module<B: Backend, M: Module<B>>(module: M, dir: &Path, stem: &str) -> Result<()> {
    module
        .save_file(dir.join(stem), &CheckpointRecorder::new())
        .map_err(|e| TrainError::Checkpoint {
            path: dir.join(format!("{stem}.mpk")),
            message: format!("cannot save: {e}"),
        })
}

/// Loads `dir/stem.mpk` into `module` (which fixes the structure and ids).
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    dir: &Path,
    stem: &str,
    device: &B::Device,
) -> Result<M> {
    module
        .load_file(dir.join(stem), &CheckpointRecorder::new(), device)
        .map_err(|e| TrainError::Checkpoint {
            path: dir.join(format!("{stem}.mpk")),
            message: format!("cannot load: {e}"),
        })
}

/// Saves any record (optimizer state) under `dir/stem.mpk`.
pub fn save_record<B: Backend, R: Record<B>>(record: R, dir: &Path, stem: &str) -> Result<()> {
    Recorder::<B>::record(&CheckpointRecorder::new(), record, dir.join(stem))
        .map(|_| ())
        .map_err(|e| TrainError::Checkpoint {
            path: dir.join(format!("{stem}.mpk")),
            message: format!("cannot save: {e}"),
        })
}

/// Loads a record saved by [`save_record`].
pub fn load_record<B: Backend, R: Record<B>>(
    dir: &Path,
    stem: &str,
    device: &B::Device,
) -> Result<R> {
    Recorder::<B>::load(&CheckpointRecorder::new(), dir.join(stem), device).map_err(|e| {
        TrainError::Checkpoint {
            path: dir.join(format!("{stem}.mpk")),
            message: format!("cannot load: {e}"),
        }
    })
}

/// Writes a checkpoint folder atomically: `fill` saves the records into the temp folder, then
/// the state (with the records' checksums) is written and the folder renamed into place.
pub fn write_checkpoint(
    run_dir: &Path,
    state: &TrainState,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root).map_err(crate::error::io_err(&root, "create"))?;
    let path = root.join(checkpoint_name(state.images_shown));
    let io = |source| TrainError::Io {
        path: path.clone(),
        action: "write checkpoint",
        source,
    };
    write_dir_atomic(
        &path,
        |tmp| {
            fill(tmp)?;
            let mut state = state.clone();
            state.files = checksums(tmp)?;
            let json = serde_json::to_vec_pretty(&state).expect("state serialises");
            write_atomic(&tmp.join(STATE_FILE), &json).map_err(io)
        },
        io,
    )?;
    Ok(path)
}

/// Reads and checks `state.json` and the checksums of every record file.
pub fn read_state(checkpoint: &Path) -> Result<TrainState> {
    let bad = |message: String| TrainError::Checkpoint {
        path: checkpoint.to_path_buf(),
        message,
    };
    if !checkpoint.is_dir() {
        return Err(bad("not found (expected a checkpoint folder)".into()));
    }
    let state_path = checkpoint.join(STATE_FILE);
    let text =
        std::fs::read(&state_path).map_err(|e| bad(format!("cannot read {STATE_FILE}: {e}")))?;
    let state: TrainState =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{STATE_FILE} is corrupt: {e}")))?;
    if state.version != CHECKPOINT_VERSION {
        return Err(bad(format!(
            "written by checkpoint format {}, this pgan reads {CHECKPOINT_VERSION}",
            state.version
        )));
    }
    let actual = checksums(checkpoint)?;
    for (name, crc) in &state.files {
        match actual.get(name) {
            None => return Err(bad(format!("{name} is missing"))),
            Some(c) if c != crc => {
                return Err(bad(format!("{name} is corrupt (checksum mismatch)")));
            }
            Some(_) => {}
        }
    }
    Ok(state)
}

/// All checkpoint folders of a run, oldest first.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(crate::error::io_err(&root, "list"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ckpt-"))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Resolves a `--resume`/render argument: a checkpoint folder, or a run directory (its latest
/// checkpoint).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: "not found".into(),
        });
    }
    list_checkpoints(path)?
        .pop()
        .ok_or_else(|| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "no checkpoint in this folder (expected {CHECKPOINTS_DIR}/ckpt-*/{STATE_FILE})"
            ),
        })
}

/// The run directory a checkpoint folder belongs to.
pub fn run_dir_of(checkpoint: &Path) -> Option<PathBuf> {
    let parent = checkpoint.parent()?;
    (parent.file_name()? == CHECKPOINTS_DIR).then(|| parent.parent().map(Path::to_path_buf))?
}

/// Deletes all but the newest `keep` checkpoints, and the half-written temp folders of a process
/// that was killed while writing one (only one process trains a run at a time, and this one's
/// own temp folder has just been renamed into place).
pub fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    let all = list_checkpoints(run_dir)?;
    let excess = all.len().saturating_sub(keep);
    for old in &all[..excess] {
        std::fs::remove_dir_all(old).map_err(crate::error::io_err(old, "remove old checkpoint"))?;
    }
    let root = run_dir.join(CHECKPOINTS_DIR);
    for entry in std::fs::read_dir(&root).map_err(crate::error::io_err(&root, "list"))? {
        let path = entry.map_err(crate::error::io_err(&root, "list"))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(".ckpt-") && name.contains(".tmp-") && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(crate::error::io_err(
                &path,
                "remove a stale temp checkpoint",
            ))?;
        }
    }
    Ok(())
}

fn checksums(dir: &Path) -> Result<BTreeMap<String, u32>> {
    let mut sums = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(crate::error::io_err(dir, "list"))? {
        let path = entry.map_err(crate::error::io_err(dir, "list"))?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name == STATE_FILE || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(crate::error::io_err(&path, "read"))?;
        sums.insert(name, crc32fast::hash(&bytes));
    }
    Ok(sums)
}

/// `FileRecorder` extension of [`CheckpointRecorder`], for messages.
pub fn record_extension() -> &'static str {
    <CheckpointRecorder as FileRecorder<burn::backend::Flex>>::file_extension()
}

/// Writes the checkpoint of a training run at `state.images_shown`: G, D, G_ema, both
/// optimizers' moments and the state. The one place a training checkpoint is written.
pub(crate) fn save_training<B: AutodiffBackend>(
    run_dir: &Path,
    state: &TrainState,
    nets: &Nets<B>,
) -> Result<PathBuf> {
    write_checkpoint(run_dir, state, |dir| {
        save_module(nets.g.clone(), dir, GENERATOR)?;
        save_module(nets.d.clone(), dir, DISCRIMINATOR)?;
        save_module(nets.g_ema.clone(), dir, GENERATOR_EMA)?;
        save_record::<B, _>(nets.optim_g.to_record(), dir, OPTIM_G)?;
        save_record::<B, _>(nets.optim_d.to_record(), dir, OPTIM_D)?;
        Ok(())
    })
}

/// Reads the networks and optimizers of a training checkpoint into `fresh` ones (which fix
/// the structure and parameter ids); the caller has checked the state with [`read_state`].
pub(crate) fn load_training<B: AutodiffBackend>(
    ckpt: &Path,
    fresh: Nets<B>,
    device: &B::Device,
) -> Result<Nets<B>> {
    Ok(Nets {
        g: load_module(fresh.g, ckpt, GENERATOR, device)?,
        d: load_module(fresh.d, ckpt, DISCRIMINATOR, device)?,
        g_ema: load_module(fresh.g_ema, ckpt, GENERATOR_EMA, device)?,
        optim_g: fresh
            .optim_g
            .load_record(load_record::<B, _>(ckpt, OPTIM_G, device)?),
        optim_d: fresh
            .optim_d
            .load_record(load_record::<B, _>(ckpt, OPTIM_D, device)?),
    })
}

/// A generator restored from a checkpoint, with where in the schedule it was saved.
pub struct LoadedGenerator<B: Backend> {
    /// The network.
    pub generator: Generator<B>,
    /// Its configuration.
    pub model: ModelConfig,
    /// The checkpoint's state (stage, alpha, kimg...).
    pub state: TrainState,
}

/// Loads the EMA (or, with `raw`, the raw) generator of a checkpoint folder, for rendering,
/// evaluation and export.
pub fn load_generator<B: Backend>(
    ckpt: &Path,
    raw: bool,
    device: &B::Device,
) -> Result<LoadedGenerator<B>> {
    let state = read_state(ckpt)?;
    let model: ModelConfig =
        serde_json::from_value(state.model.clone()).map_err(|e| TrainError::Checkpoint {
            path: ckpt.to_path_buf(),
            message: format!("unreadable model configuration: {e}"),
        })?;
    model.validate().map_err(|e| TrainError::Checkpoint {
        path: ckpt.to_path_buf(),
        message: format!("its model configuration cannot build a network: {e}"),
    })?;
    let stem = if raw { GENERATOR } else { GENERATOR_EMA };
    let generator = load_module(model.init_generator::<B>(device), ckpt, stem, device)?;
    Ok(LoadedGenerator {
        generator,
        model,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_and_removes_a_killed_writers_temp_folders() {
        let run = tempfile::tempdir().unwrap();
        let root = run.path().join(CHECKPOINTS_DIR);
        for images in [16, 32, 48] {
            std::fs::create_dir_all(root.join(checkpoint_name(images))).unwrap();
        }
        let stale = root.join(format!(".{}.tmp-4242-0", checkpoint_name(64)));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("generator.mpk"), b"half").unwrap();

        prune(run.path(), 2).unwrap();
        let left: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!stale.exists(), "{left:?}");
        assert_eq!(
            list_checkpoints(run.path()).unwrap(),
            vec![
                root.join(checkpoint_name(32)),
                root.join(checkpoint_name(48))
            ]
        );
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
