//! Checkpoints: everything needed to continue a run bit for bit.
//!
//! A checkpoint is a folder `RUN_DIR/checkpoints/ckpt-NNNNNNNNN` (images shown, zero-padded so
//! names sort in time order) holding burn records for G, D, G_ema and both Adam states, and
//! `state.json` with the schedule position, RNG and sampler state, recovery state and a CRC32 of
//! every record file. It is built under a temp name and renamed only when complete, then older
//! checkpoints are pruned to the last K.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{
    BurnRecord, FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Record, Recorder,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use pgan_data::{BatchSampler, PyramidReader};
use pgan_model::{Discriminator, Generator, ModelConfig};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::alarms::{CollapseMemory, GradientMemory};
use crate::error::{io_err, Result, TrainError};
use crate::fsutil::{write_atomic, write_dir_atomic};
use crate::nets::Nets;
use crate::stats::OpenTick;

/// Version of the checkpoint layout this pgan writes; bumped on incompatible changes, and when
/// a check becomes one that every newer checkpoint must pass. From 2 on, `state.json` always
/// carries its checksum and the record files' checksums.
pub const CHECKPOINT_VERSION: u32 = 2;
/// The oldest layout this pgan reads: 1, from before `state.json` had to carry its checksum.
pub const OLDEST_CHECKPOINT_VERSION: u32 = 1;
/// Keys of `state.json` that pgan has written only since states carry their checksum: a state
/// without the checksum that holds one was edited.
pub const KEYS_WRITTEN_WITH_THE_CHECKSUM: [&str; 9] = [
    "dataset",
    "peers",
    "nodes",
    "seed",
    "open_tick",
    "gradients",
    "abandoned",
    "gave_up",
    "game",
];
/// Name of the state file inside a checkpoint folder.
pub const STATE_FILE: &str = "state.json";

/// The longest `state.json` read: it holds counters, seeds and the alarms' short memories (a
/// few KiB; the sampler is its seed and position, not its draw order), so a sparse or runaway
/// file is refused before it is read.
const MAX_STATE_BYTES: u64 = 64 << 20;

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
    /// What the collapse alarm remembers per resolution. Checkpoints written before it existed
    /// held `best_swd` and `best_msssim` that could come from fade-in evaluations; they are
    /// ignored and the memory starts afresh.
    #[serde(default)]
    pub collapse: CollapseMemory,
    /// What the vanishing-gradient alarm remembers (the run's peak generator gradient norm);
    /// absent in checkpoints written before it existed, where it starts afresh.
    #[serde(default)]
    pub gradients: GradientMemory,
    /// Model configuration the records were made with (JSON of `ModelConfig`).
    pub model: serde_json::Value,
    /// CRC32 of every record file, by file name.
    #[serde(default)]
    pub files: BTreeMap<String, u32>,
    /// The dataset the run trains on (absent in checkpoints written before it was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetFingerprint>,
    /// Data-parallel peers the run trained with (absent: one device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<usize>,
    /// The nodes those peers were spread over (recorded with `peers`; absent beside it in
    /// checkpoints written before it was stored, whose layout is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
    /// `run.seed` of the run (absent in checkpoints written before it was stored). The sample
    /// grid's latents and the evaluations' seeds come from it, so a resume must keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The tick a stop interrupted (absent when the checkpoint was written at a tick's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_tick: Option<OpenTick>,
    /// The measurements of the tick this checkpoint closed that a stop abandoned (absent when
    /// none was): a resume takes them first, so that its rows and alarms are the uninterrupted
    /// run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<AbandonedMeasures>,
    /// The rollbacks in a row after which the run stopped diverging from this checkpoint
    /// (absent when it did not): a resume from it is the user's next try, with a fresh count
    /// at the configured learning rate, not the last rollback's reduced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<u32>,
    /// The game the run trains under from this checkpoint on, as TOML text
    /// ([`crate::config::TrainConfig::game_record`]: loss, optimizer, learning rates, noise, EMA;
    /// absent in checkpoints written before it was stored): a resume says what it changes of
    /// it, whatever `config.toml` says now. A rollback to a checkpoint records there the game
    /// the run goes on with from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game: Option<String>,
    /// CRC-32 of `state.json`'s bytes before this member (the last one): a `state.json` edited
    /// by hand no longer matches it (absent in checkpoints written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u32>,
}

/// The measurements of a tick's end that a stop (Ctrl-C, SIGTERM) abandoned so as not to keep
/// the checkpoint waiting.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbandonedMeasures {
    /// The tick whose row lacks them.
    pub tick: u64,
    /// Where that tick ended: only a checkpoint written there can take them (several nodes
    /// agree on a stop one step later, when the networks have moved on).
    pub images_shown: u64,
    /// The phase they measure at (the tick's last step's).
    pub phase: crate::schedule::Phase,
    /// SWD and MS-SSIM (`eval.every_kimg`).
    pub evaluation: bool,
    /// FID (`eval.fid_every_kimg`).
    pub fid: bool,
}

/// What identifies a `.pgan` dataset: the CRC-32 of its header (which holds every level's and
/// the manifest's CRC-32), its image count and each level's CRC-32. Two files with the same
/// size and resolution but other images differ here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFingerprint {
    /// CRC-32 of the header bytes.
    pub header_crc32: u32,
    /// Number of images.
    pub images: u64,
    /// CRC-32 of each level's bytes, by resolution.
    pub levels: BTreeMap<u32, u32>,
}

impl DatasetFingerprint {
    /// The fingerprint of an open dataset (from its header; no image bytes are read).
    pub fn of(reader: &PyramidReader) -> Self {
        let header = reader.header();
        Self {
            header_crc32: header_crc32(&header.to_bytes()),
            images: header.count,
            levels: header
                .levels
                .iter()
                .map(|l| (l.resolution, l.crc32))
                .collect(),
        }
    }
}

/// What every CRC-32 gives over bytes that end in their own CRC-32 (the "residue"): the
/// `header_crc32` that pgan wrote before it left the header's own CRC out of the hash.
#[cfg(test)]
const CRC32_RESIDUE: u32 = 0x2144_df1c;

/// The header's CRC-32: that of its bytes before the CRC it ends with (the value stored there).
fn header_crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(&bytes[..bytes.len().saturating_sub(4)])
}

impl DatasetFingerprint {
    /// The same training data as `current`: the same image count and the same pixels at every
    /// level. The header's CRC is recorded but not compared: it covers the manifest too (the
    /// file names, the folder the images were prepared from), which a second `prepare` of the
    /// same images elsewhere changes and training never reads.
    pub fn matches(&self, current: &DatasetFingerprint) -> bool {
        self.images == current.images && self.levels == current.levels
    }

    /// One CRC-32 of what [`matches`](Self::matches) compares (for messages and for the nodes'
    /// join check).
    pub fn content_crc32(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.images.to_le_bytes());
        for (resolution, crc) in &self.levels {
            hasher.update(&resolution.to_le_bytes());
            hasher.update(&crc.to_le_bytes());
        }
        hasher.finalize()
    }
}

impl std::fmt::Display for DatasetFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} images, content crc32 {:#010x}",
            self.images,
            self.content_crc32()
        )
    }
}

/// Largest `images_shown` a state may hold: kimg is kept as an `f64`, exact below 2^53.
const MAX_IMAGES_SHOWN: u64 = 1 << 53;

impl TrainState {
    /// The game this checkpoint records ([`Self::game`]), parsed; `None` when it records
    /// none (or text that is not a TOML table, which a checksum-carrying state cannot hold
    /// unless pgan wrote it).
    pub fn recorded_game(&self) -> Option<toml::Table> {
        self.game.as_deref()?.parse().ok()
    }

    /// `state.json` as written: pretty JSON, with the checksum of everything before it as the
    /// last member. The checksum is over those bytes, not over the values read back: serde_json
    /// (without its `float_roundtrip` feature, which would rebuild all of burn) may read an `f64`
    /// back one ULP off, and a checksum of the re-serialised values then fails at random.
    fn to_json_with_checksum(&self) -> Vec<u8> {
        let mut state = self.clone();
        state.checksum = None;
        // Written now, with both checksums: this format (a state of format 1 rewritten, by a
        // rollback, keeps its format while it lists no record checksums).
        if !state.files.is_empty() {
            state.version = CHECKPOINT_VERSION;
        }
        let plain = serde_json::to_vec_pretty(&state).expect("state serialises");
        state.checksum = Some(crc32fast::hash(&plain));
        serde_json::to_vec_pretty(&state).expect("state serialises")
    }

    /// Checks every field a resume, render or rollback relies on; the message names the field.
    /// A hand-edited `state.json` whose checksum was removed still has to pass this.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let images = self.images_shown;
        if images > MAX_IMAGES_SHOWN {
            return Err(format!(
                "images_shown {images} is beyond any real run (2^53)"
            ));
        }
        // Every step shows at least one image and every tick takes at least one step.
        if self.step > images {
            return Err(format!(
                "step {} is more than images_shown {images} (a step shows at least one image)",
                self.step
            ));
        }
        if self.tick > self.step {
            return Err(format!(
                "tick {} is more than step {} (a tick takes at least one step)",
                self.tick, self.step
            ));
        }
        if let Some(nodes) = self.nodes {
            let peers = self.peers.unwrap_or(1);
            if nodes == 0 || !peers.is_multiple_of(nodes) {
                return Err(format!(
                    "nodes {nodes} does not divide peers {peers} (each node runs as many)"
                ));
            }
        }
        let resolution = self
            .model
            .get("resolution")
            .and_then(serde_json::Value::as_u64)
            .and_then(|r| u32::try_from(r).ok())
            .filter(|&r| pgan_spec::resolution::is_supported(r))
            .ok_or_else(|| {
                format!(
                    "model.resolution {} is not a resolution",
                    self.model["resolution"]
                )
            })?;
        let max_stage = resolution.trailing_zeros() as usize - 2;
        if self.stage > max_stage {
            return Err(format!(
                "stage {} is beyond the model's last stage {max_stage} ({resolution}x{resolution})",
                self.stage
            ));
        }
        // Phases alternate stable and fade: at most two per stage.
        if self.phase_index > 2 * max_stage {
            return Err(format!(
                "phase_index {} is beyond the schedule's last phase {}",
                self.phase_index,
                2 * max_stage
            ));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(format!("alpha {} is not in [0, 1]", self.alpha));
        }
        if let Some(owed) = &self.abandoned {
            let phase = &owed.phase;
            if owed.tick != self.tick || owed.images_shown != images {
                return Err(format!(
                    "abandoned measurements of tick {} at {} images, but the state is at tick {} \
                     and {images} images",
                    owed.tick, owed.images_shown, self.tick
                ));
            }
            if !pgan_spec::resolution::is_supported(phase.resolution)
                || phase.batch == 0
                || phase.batch > 4096
                || !(0.0..=1.0).contains(&phase.alpha)
            {
                return Err(format!(
                    "abandoned.phase ({}x{}, batch {}, alpha {}) is not a phase of a run",
                    phase.resolution, phase.resolution, phase.batch, phase.alpha
                ));
            }
        }
        if let Some(open) = &self.open_tick {
            // The tick a stop cut: some of the images shown, in at most every step taken.
            if open.images == 0 || open.images > images {
                return Err(format!(
                    "open_tick.images {} is not within 1..={images} (images_shown)",
                    open.images
                ));
            }
            if !(open.seconds.is_finite() && open.seconds >= 0.0) {
                return Err(format!(
                    "open_tick.seconds {} is not a duration",
                    open.seconds
                ));
            }
            if !open.stats.is_plausible(self.step) {
                return Err(
                    "open_tick.stats holds a sum that is not finite or a count beyond the \
                     steps taken"
                        .into(),
                );
            }
        }
        let sampler = &self.sampler;
        if sampler.num_images() == 0 {
            return Err("sampler.num_images is 0".into());
        }
        if sampler.position() >= sampler.num_images() {
            return Err(format!(
                "sampler.position {} is not below sampler.num_images {}",
                sampler.position(),
                sampler.num_images()
            ));
        }
        if !(self.lr_multiplier.is_finite()
            && self.lr_multiplier > 0.0
            && self.lr_multiplier <= 1.0)
        {
            return Err(format!(
                "lr_multiplier {} is not in (0, 1]",
                self.lr_multiplier
            ));
        }
        if !(self.elapsed_s.is_finite() && self.elapsed_s >= 0.0) {
            return Err(format!("elapsed_s {} is not a duration", self.elapsed_s));
        }
        if let Some(problem) = self.collapse.non_finite() {
            return Err(format!("collapse.{problem}"));
        }
        if let Some(problem) = self.gradients.invalid() {
            return Err(format!("gradients.{problem}"));
        }
        if let Some(d) = &self.dataset {
            if d.images != sampler.num_images() as u64 {
                return Err(format!(
                    "dataset.images {} differs from sampler.num_images {}",
                    d.images,
                    sampler.num_images()
                ));
            }
        }
        Ok(())
    }
}

/// Where the run's checkpoint at `images_shown` is (or would be) written.
pub fn path_of(run_dir: &Path, images_shown: u64) -> PathBuf {
    run_dir
        .join(CHECKPOINTS_DIR)
        .join(checkpoint_name(images_shown))
}

/// Folder name of the checkpoint taken after `images_shown` images.
pub fn checkpoint_name(images_shown: u64) -> String {
    format!("ckpt-{images_shown:012}")
}

/// Saves a module under `dir/stem.mpk`.
pub fn save_module<B: Backend, M: Module<B>>(module: M, dir: &Path, stem: &str) -> Result<()> {
    save_record::<B, _>(module.into_record(), dir, stem)
}

/// Loads `dir/stem.mpk` into `module` (which fixes the structure and ids). A record made for
/// another structure than `module`'s (a `state.json` whose model fields were changed, where no
/// checksum guards it) is an error naming the first difference, never a panic in burn's loader
/// or a network that fails at its first forward.
pub fn load_module<B: Backend, M: NetworkStages<B>>(
    module: M,
    dir: &Path,
    stem: &str,
    device: &B::Device,
) -> Result<M> {
    let path = dir.join(format!("{stem}.{}", record_extension()));
    let mismatch = |message: String| TrainError::Checkpoint {
        path: path.clone(),
        message: format!(
            "does not fit the model configuration in {STATE_FILE} ({message}): the state was \
             edited or belongs to other weights"
        ),
    };
    let tensors = crate::record_check::tensors(&path)?;
    let expected = module.stage_lists();
    let found = [
        crate::record_check::list_len(&tensors, M::RGB_LIST),
        crate::record_check::list_len(&tensors, "blocks"),
    ];
    if expected != found {
        let resolution = |stages: usize| 4usize << stages.saturating_sub(1);
        return Err(mismatch(format!(
            "weights for {}x{} ({} stages, {} blocks), a {}x{} network by the configuration",
            resolution(found[0]),
            resolution(found[0]),
            found[0],
            found[1],
            resolution(expected[0]),
            resolution(expected[0])
        )));
    }
    // Checked before burn's loader, which takes shapes as written (and panics on some).
    if let Some(message) = crate::record_check::check_order(&tensors, &parameter_shapes(&module)) {
        return Err(mismatch(message));
    }
    let record: M::Record = load_checked_record::<B, _>(dir, stem, device)?;
    let loaded = module.load_record(record);
    // pgan never writes them (a checkpoint of NaN weights is refused): an edited file.
    if !crate::nets::params_finite(&loaded) {
        return Err(TrainError::Checkpoint {
            path,
            message: "holds non-finite weights (NaN or ±Inf), which pgan never writes: the file \
                      was edited"
                .into(),
        });
    }
    Ok(loaded)
}

/// The lengths of a network's per-stage lists (and of its record's), which burn's loader
/// requires to agree; the first is the number of resolution stages.
pub trait NetworkStages<B: Backend>: Module<B> {
    /// The field of the network's per-stage RGB layers (its records' too); `blocks` is the
    /// other list.
    const RGB_LIST: &'static str;
    /// Lengths of this network's per-stage lists.
    fn stage_lists(&self) -> [usize; 2];
}

impl<B: Backend> NetworkStages<B> for Generator<B> {
    const RGB_LIST: &'static str = "to_rgb";
    fn stage_lists(&self) -> [usize; 2] {
        [self.to_rgb.len(), self.blocks.len()]
    }
}

impl<B: Backend> NetworkStages<B> for Discriminator<B> {
    const RGB_LIST: &'static str = "from_rgb";
    fn stage_lists(&self) -> [usize; 2] {
        [self.from_rgb.len(), self.blocks.len()]
    }
}

/// The shapes of a module's float parameters in visiting order, without drawing lazy ones.
fn parameter_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            self.0.push(param.lazy_shape().dims::<D>().to_vec());
        }
    }
    let mut shapes = Shapes(Vec::new());
    module.visit(&mut shapes);
    shapes.0
}

/// Saves any record (module or optimizer state) under `dir/stem.mpk`, byte for byte what
/// [`CheckpointRecorder`] writes, and synced. The encoder is driven here rather than by burn's
/// recorder because the recorder turns a failed write into an opaque string; here a full disk
/// is an [`TrainError::Io`] naming the file and the OS error.
pub fn save_record<B: Backend, R: Record<B>>(record: R, dir: &Path, stem: &str) -> Result<()> {
    let path = dir.join(format!("{stem}.{}", record_extension()));
    let item = BurnRecord::<_, B>::new::<CheckpointRecorder>(crate::host_read::record_item(record));
    let file = File::create(&path).map_err(io_err(&path, "create checkpoint record"))?;
    let file = encode_record(BufWriter::new(file), &item, &path)?
        .into_inner()
        .map_err(|e| io_err(&path, "write checkpoint record")(e.into_error()))?;
    file.sync_all()
        .map_err(io_err(&path, "sync checkpoint record"))
}

/// Writes `item` as named MessagePack into `writer` and flushes it. An I/O failure comes back
/// as itself (not as the encoder's "invalid value write").
fn encode_record<W: Write>(writer: W, item: &impl Serialize, path: &Path) -> Result<W> {
    /// Keeps the first I/O error the encoder met; the encoder only passes its kind on.
    struct KeepIoError<W> {
        inner: W,
        error: Option<io::Error>,
    }
    impl<W: Write> KeepIoError<W> {
        fn keep(&mut self, e: io::Error) -> io::Error {
            let kind = e.kind();
            self.error.get_or_insert(e);
            io::Error::from(kind)
        }
    }
    impl<W: Write> Write for KeepIoError<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf).map_err(|e| self.keep(e))
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush().map_err(|e| self.keep(e))
        }
    }
    let mut writer = KeepIoError {
        inner: writer,
        error: None,
    };
    let encoded = rmp_serde::encode::write_named(&mut writer, item);
    let result = match encoded.map(|()| writer.flush()) {
        Ok(Ok(())) => Ok(()),
        // The system's own error (its errno), not the bare kind `keep` handed the encoder.
        Ok(Err(e)) => Err(io_err(path, "write checkpoint record")(
            writer.error.take().unwrap_or(e),
        )),
        Err(e) => Err(match writer.error.take() {
            Some(source) => io_err(path, "write checkpoint record")(source),
            None => TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!("cannot encode: {e}"),
            },
        }),
    };
    result.map(|()| writer.inner)
}

/// Loads a record saved by [`save_record`].
pub fn load_record<B: Backend, R: Record<B>>(
    dir: &Path,
    stem: &str,
    device: &B::Device,
) -> Result<R> {
    crate::record_check::tensors(&dir.join(format!("{stem}.{}", record_extension())))?;
    load_checked_record(dir, stem, device)
}

/// [`load_record`] of a record whose tensors `record_check` has checked.
fn load_checked_record<B: Backend, R: Record<B>>(
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
    let path = path_of(run_dir, state.images_shown);
    let io = |source| TrainError::Io {
        path: path.clone(),
        action: "write checkpoint",
        source,
    };
    write_dir_atomic(
        &path,
        |tmp| {
            let written = fill(tmp).and_then(|()| {
                let mut state = state.clone();
                state.files = checksums(tmp)?;
                let json = state.to_json_with_checksum();
                let state_path = tmp.join(STATE_FILE);
                write_atomic(&state_path, &json)
                    .map_err(io_err(&state_path, "write checkpoint state"))
            });
            // A record or state that cannot be written is named where the checkpoint would
            // have been: the temp folder it was written in is removed with the failure.
            written.map_err(|e| match e {
                TrainError::Io {
                    path: file,
                    action,
                    source,
                } if file.starts_with(tmp) => TrainError::Checkpoint {
                    path: path.clone(),
                    message: format!(
                        "not written (nothing of it was kept): cannot {action} {}: {source}",
                        file.strip_prefix(tmp).unwrap_or(&file).display()
                    ),
                },
                other => other,
            })
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
    let text = pgan_data::read_regular_file_at_most(&state_path, MAX_STATE_BYTES)
        .map_err(|e| bad(format!("cannot read {STATE_FILE}: {e}")))?;
    let state: TrainState =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{STATE_FILE} is corrupt: {e}")))?;
    if !(OLDEST_CHECKPOINT_VERSION..=CHECKPOINT_VERSION).contains(&state.version) {
        return Err(bad(format!(
            "written by checkpoint format {}, this pgan reads formats \
             {OLDEST_CHECKPOINT_VERSION} to {CHECKPOINT_VERSION}",
            state.version
        )));
    }
    // Every checkpoint of format 2 was written with both: one without them was edited.
    if state.version >= 2 && state.checksum.is_none() {
        return Err(bad(format!(
            "{STATE_FILE} has no checksum, which every checkpoint of format {} is written with: \
             it was edited; pgan does not resume from edited state",
            state.version
        )));
    }
    // A state of format 1 without a checksum is one from before it, unless it holds what pgan
    // wrote only with the checksum (a newer state relabelled as format 1 to pass unchecked).
    if state.checksum.is_none() {
        let keys: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&text).unwrap_or_default();
        if let Some(key) = KEYS_WRITTEN_WITH_THE_CHECKSUM
            .iter()
            .find(|key| keys.contains_key(**key))
        {
            return Err(bad(format!(
                "{STATE_FILE} has no checksum but holds `{key}`, which pgan writes only beside \
                 one: it was edited; pgan does not resume from edited state"
            )));
        }
    }
    if state.version < 2 && state.abandoned.is_some() {
        return Err(bad(format!(
            "{STATE_FILE} of format {} holds abandoned measurements, which only format 2 \
             records: it was edited",
            state.version
        )));
    }
    if state.version >= 2 && state.files.is_empty() {
        return Err(bad(format!(
            "{STATE_FILE} lists no record files with their checksums, which every checkpoint of \
             format {} is written with: it was edited",
            state.version
        )));
    }
    if let Some(stored) = state.checksum {
        let changed = match checksum_before_last_member(&text) {
            Some(actual) if actual == stored => None,
            Some(actual) => Some(format!("checksum {actual:#010x}, stored {stored:#010x}")),
            None => Some("its layout is not the one pgan writes".to_string()),
        };
        if let Some(how) = changed {
            return Err(bad(format!(
                "{STATE_FILE} was changed after it was written ({how}); pgan does not resume \
                 from edited state"
            )));
        }
    }
    state
        .validate()
        .map_err(|m| bad(format!("{STATE_FILE} is invalid: {m}")))?;
    // The newest checkpoint is found by its name: a folder copied or renamed in under another
    // position would be taken for a later one (and training from it would write over the
    // run's real checkpoints as it passes their positions).
    let named = checkpoint
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_checkpoint_name(n))
        .and_then(|n| n["ckpt-".len()..].parse::<u64>().ok());
    if let Some(named) = named.filter(|&n| n != state.images_shown) {
        return Err(bad(format!(
            "is named for {named} images shown, but its {STATE_FILE} is at {} (a checkpoint \
             copied or renamed from elsewhere?)",
            state.images_shown
        )));
    }
    // Only the files the state lists are read (streamed: a record can be hundreds of MB); a
    // stray file beside them is none of the checkpoint's business.
    for (name, crc) in &state.files {
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|n| n == name.as_str());
        if !plain || name == STATE_FILE {
            return Err(bad(format!(
                "{STATE_FILE} lists {name:?}, which is not a record file of the checkpoint \
                 folder: it was edited"
            )));
        }
        match pgan_data::crc32_of_regular_file(&checkpoint.join(name)) {
            Ok(actual) if actual == *crc => {}
            Ok(_) => return Err(bad(format!("{name} is corrupt (checksum mismatch)"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(format!("{name} is missing")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(bad(format!("{name}: {e}")))
            }
            Err(e) => return Err(crate::error::io_err(&checkpoint.join(name), "read")(e)),
        }
    }
    // Written before the records' checksums: what each record holds is checked instead, so
    // that a damaged one is passed over like a corrupt one (a newer one falls back, a timeline
    // leaves it out), not found by burn's loader later.
    if state.files.is_empty() {
        let records = record_names(checkpoint)?.into_iter();
        for name in records.filter(|n| n.ends_with(&format!(".{}", record_extension()))) {
            crate::record_check::tensors(&checkpoint.join(&name)).map_err(|e| match e {
                TrainError::Checkpoint { message, .. } => bad(format!("{name}: {message}")),
                other => other,
            })?;
        }
    }
    Ok(state)
}

/// CRC-32 of `state.json`'s `text` without its last member, the checksum (what
/// [`TrainState::to_json_with_checksum`] hashed); `None` when the text is not laid out as pgan
/// writes it (rewritten by another program).
fn checksum_before_last_member(text: &[u8]) -> Option<u32> {
    const LAST: &[u8] = b",\n  \"checksum\": ";
    let cut = text.windows(LAST.len()).rposition(|w| w == LAST)?;
    let mut plain = text[..cut].to_vec();
    plain.extend_from_slice(b"\n}");
    Some(crc32fast::hash(&plain))
}

/// All checkpoint folders of a run, oldest first.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut all = list_checkpoints_in(&run_dir.join(CHECKPOINTS_DIR))?;
    // Those an interrupted set-aside still has to move are the branch's, not the run's.
    let leaving: Vec<String> = unfinished_set_asides(run_dir)
        .into_iter()
        .flat_map(|s| s.moving)
        .collect();
    if !leaving.is_empty() {
        all.retain(|c| {
            c.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| !leaving.iter().any(|l| l == n))
        });
    }
    Ok(all)
}

/// The checkpoint folders directly in `root` (a run's `checkpoints/`, or a branch set aside in
/// it), oldest first.
pub fn list_checkpoints_in(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(crate::error::io_err(root, "list"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_checkpoint_name)
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Whether `name` is one [`checkpoint_name`] writes: `ckpt-` and 12 digits. Folders a user made
/// beside them (`ckpt-best`, `ckpt-000000000032.bak`) are neither resumed from nor pruned.
fn is_checkpoint_name(name: &str) -> bool {
    name.strip_prefix("ckpt-")
        .is_some_and(|digits| digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The entries of `run_dir/checkpoints` named as checkpoints that [`list_checkpoints`] leaves
/// out because they are not folders, with what each is.
pub(crate) fn entries_named_as_checkpoints_that_are_not_folders(
    run_dir: &Path,
) -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(run_dir.join(CHECKPOINTS_DIR)) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, String)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            !p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_checkpoint_name)
        })
        .map(|p| {
            let what = match (std::fs::symlink_metadata(&p), std::fs::metadata(&p)) {
                (Ok(link), Err(e)) if link.file_type().is_symlink() => {
                    format!("a symbolic link that leads to no folder ({e})")
                }
                (_, Ok(meta)) => pgan_spec::output::kind(&meta.file_type()).to_string(),
                (Ok(meta), _) => pgan_spec::output::kind(&meta.file_type()).to_string(),
                (Err(e), _) => format!("unreadable ({e})"),
            };
            (p, what)
        })
        .collect();
    found.sort();
    found
}

/// The errors of the entries in `not_folders` whose names come after `chosen`'s (those a run
/// would otherwise have used), newest first.
fn not_folders_after(not_folders: &[(PathBuf, String)], chosen: &Path) -> Vec<TrainError> {
    not_folders
        .iter()
        .rev()
        .filter(|(p, _)| p.file_name() > chosen.file_name())
        .map(|(p, what)| TrainError::Checkpoint {
            path: p.clone(),
            message: format!("is {what}, not a checkpoint folder"),
        })
        .collect()
}

/// A checkpoint found by [`find_checkpoint`], and the newer ones it passed over.
#[derive(Debug)]
pub struct FoundCheckpoint {
    /// The checkpoint folder.
    pub path: PathBuf,
    /// Newer checkpoints of the run that failed their checks, newest first, with why.
    pub skipped: Vec<TrainError>,
}

impl FoundCheckpoint {
    /// One warning per skipped checkpoint, naming it, why, and the one used instead.
    pub fn warnings(&self) -> Vec<String> {
        self.skipped
            .iter()
            .map(|e| {
                format!(
                    "skipped {e}; using the newest intact checkpoint, {}",
                    self.path.display()
                )
            })
            .collect()
    }
}

/// How often [`find_checkpoint`] lists a run whose checkpoints vanish as it reads them.
const MAX_LISTINGS: usize = 5;

/// Resolves a `--resume`/render/eval/export argument. A checkpoint folder is used as given (its
/// errors are the caller's to see); a run directory means its newest checkpoint that passes
/// [`read_state`] (state and record checksums), so a checkpoint corrupted on disk falls back to
/// the one before it, listed in [`FoundCheckpoint::skipped`].
pub fn find_checkpoint(path: &Path) -> Result<FoundCheckpoint> {
    // `.` inside a checkpoint folder, `checkpoints/ckpt-…` inside a run: the checkpoint found
    // must name itself and its run by its last components (setting newer ones aside does).
    let path = &absolute_path(path);
    // Whatever is there (a FIFO, a link to nowhere): reading the state says what is wrong.
    if std::fs::symlink_metadata(path.join(STATE_FILE)).is_ok() {
        return Ok(FoundCheckpoint {
            path: path.to_path_buf(),
            skipped: Vec::new(),
        });
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: "not found".into(),
            })
        }
        Err(e) => return Err(io_err(path, "open")(e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "is {}: give a run directory or one of its checkpoint folders",
                    pgan_spec::output::kind(&meta.file_type())
                ),
            })
        }
        Ok(_) => {}
    }
    // A live trainer prunes its older checkpoints as it writes new ones: a checkpoint gone
    // while it was read was pruned, not corrupt, and the run is listed again (a newer one is
    // there).
    let mut attempts = 0;
    let (not_folders, mut skipped) = loop {
        attempts += 1;
        let all = list_checkpoints(path)?;
        // Entries named as checkpoints that are not folders (a file, a link to nowhere or in
        // a loop) are passed over too, with a word like any other checkpoint that fails its
        // checks.
        let not_folders = entries_named_as_checkpoints_that_are_not_folders(path);
        let mut skipped = Vec::new();
        let mut pruned = false;
        for ckpt in all.iter().rev() {
            match read_state(ckpt) {
                Ok(_) => {
                    skipped.extend(not_folders_after(&not_folders, ckpt));
                    return Ok(FoundCheckpoint {
                        path: ckpt.clone(),
                        skipped,
                    });
                }
                Err(_) if !ckpt.exists() => pruned = true,
                // The warning names the checkpoint whatever failed in it (an unreadable
                // record's error names only the record's file).
                Err(e @ TrainError::Checkpoint { .. }) => skipped.push(e),
                Err(e) => skipped.push(TrainError::Checkpoint {
                    path: ckpt.clone(),
                    message: e.to_string(),
                }),
            }
        }
        // An empty listing too: a listing made while the newest is renamed into place and the
        // one before renamed away for its removal can hold neither.
        if !(pruned || all.is_empty()) || attempts == MAX_LISTINGS {
            break (not_folders, skipped);
        }
    };
    // None intact: the entries that are not folders are among the reasons too.
    skipped.extend(
        not_folders
            .iter()
            .rev()
            .map(|(p, what)| TrainError::Checkpoint {
                path: p.clone(),
                message: format!("is {what}, not a checkpoint folder"),
            }),
    );
    let run_config = path.join(crate::run_dir::CONFIG_FILE);
    let message = if skipped.is_empty() && path.file_name() == Some(CHECKPOINTS_DIR.as_ref()) {
        format!(
            "this is a run's {CHECKPOINTS_DIR} folder: give the run folder ({}) or one of the \
             checkpoints in it",
            path.parent().unwrap_or(path).display()
        )
    } else if skipped.is_empty() && run_config.is_file() {
        format!(
            "a run folder with no checkpoint: the run stopped before its first one was written; \
             start it again as a new run (pgan train --config {})",
            run_config.display()
        )
    } else if skipped.is_empty() {
        format!("no checkpoint in this folder (expected {CHECKPOINTS_DIR}/ckpt-*/{STATE_FILE})")
    } else {
        let reasons: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        format!(
            "no intact checkpoint in this folder: {}",
            reasons.join("; ")
        )
    };
    Err(TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    })
}

/// [`find_checkpoint`] without the list of skipped checkpoints.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    find_checkpoint(path).map(|found| found.path)
}

/// Checks that a checkpoint's run was trained on `reader`'s dataset before it is continued on
/// it, and records the dataset in `state` for the checkpoints to come. A different dataset is
/// an error unless `changed_ok` (`--data-changed-ok`); with it, a different image count starts
/// the sampler's order afresh. Returns warnings for the log.
pub fn adopt_dataset(
    state: &mut TrainState,
    ckpt: &Path,
    reader: &PyramidReader,
    changed_ok: bool,
    fresh_sampler: impl FnOnce() -> BatchSampler,
) -> Result<Vec<String>> {
    let current = DatasetFingerprint::of(reader);
    let data = reader.path().display();
    let mut warnings = Vec::new();
    let hint = "pass --data-changed-ok to continue the run on it anyway";
    match &state.dataset {
        None => warnings.push(format!(
            "checkpoint {} has no dataset fingerprint (written before pgan stored one): cannot \
             check that {data} is the dataset it was trained on",
            ckpt.display()
        )),
        Some(stored) if !stored.matches(&current) => {
            if !changed_ok {
                return Err(TrainError::Checkpoint {
                    path: ckpt.to_path_buf(),
                    message: format!(
                        "was trained on another dataset ({stored}) than {data} ({current}); {hint}"
                    ),
                });
            }
            warnings.push(format!(
                "continuing on another dataset ({data}, {current}) than checkpoint {} was \
                 trained on ({stored}), as --data-changed-ok allows",
                ckpt.display()
            ));
        }
        Some(_) => {}
    }
    if state.sampler.num_images() != reader.len() {
        if !changed_ok {
            return Err(TrainError::Checkpoint {
                path: ckpt.to_path_buf(),
                message: format!(
                    "was trained on a dataset of {} images, {data} has {}; {hint}",
                    state.sampler.num_images(),
                    reader.len()
                ),
            });
        }
        warnings.push(format!(
            "{data} has {} images, the checkpoint's dataset {}: the sampling order starts afresh",
            reader.len(),
            state.sampler.num_images()
        ));
        state.sampler = fresh_sampler();
    }
    state.dataset = Some(current);
    Ok(warnings)
}

/// The run directory a checkpoint folder belongs to (an absolute path: `checkpoints/ckpt-…`
/// given in the run folder, or `ckpt-…` given inside `checkpoints/`, names the run too).
pub fn run_dir_of(checkpoint: &Path) -> Option<PathBuf> {
    let checkpoint = absolute_path(checkpoint);
    let parent = checkpoint.parent()?;
    (parent.file_name()? == CHECKPOINTS_DIR).then(|| parent.parent().map(Path::to_path_buf))?
}

/// For a checkpoint of a branch an earlier resume set aside (`RUN/checkpoints/abandoned-N/
/// ckpt-…`, see [`set_aside_newer`]): its run directory and the `abandoned-N` folder. Such a
/// checkpoint is rendered and measured with its run's config, never resumed in place.
pub fn abandoned_branch_of(checkpoint: &Path) -> Option<(PathBuf, PathBuf)> {
    let checkpoint = absolute_path(checkpoint);
    let branch = checkpoint.parent()?;
    let is_branch = branch
        .file_name()?
        .to_str()?
        .strip_prefix("abandoned-")
        .is_some_and(|n| n.parse::<u32>().is_ok());
    let root = branch.parent()?;
    (is_branch && root.file_name()? == CHECKPOINTS_DIR)
        .then(|| Some((root.parent()?.to_path_buf(), branch.to_path_buf())))?
}

/// Replaces a checkpoint's `state.json` with `state` (its records unchanged): a rollback
/// records there the lowered learning rate and the failure count it continues with, so that a
/// resume after a kill continues as the run did, not from before the rollback.
pub fn rewrite_state(ckpt: &Path, state: &TrainState) -> Result<()> {
    let path = ckpt.join(STATE_FILE);
    crate::fsutil::write_own_atomic(&path, &state.to_json_with_checksum())
        .map_err(io_err(&path, "write checkpoint state"))
}

/// `path` as an absolute path without `.` components, and without `..` ones where the file
/// system can resolve them: its last components are then the names it stands for.
fn absolute_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if absolute
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        std::fs::canonicalize(&absolute).unwrap_or(absolute)
    } else {
        absolute
    }
}

/// Moves the run's checkpoints newer than `resumed` into `checkpoints/abandoned-<n>/` and
/// returns that folder (`None` when there were none). Resuming an older checkpoint starts a new
/// branch of the run: left in place, the old branch's newer checkpoints would be what a later
/// resume of the run picks (jumping back onto the branch this one left), and the new branch's
/// checkpoints would replace them one by one. Moved aside, they are neither resumed from nor
/// pruned, and nothing the user has is deleted. `before_moving` fills the new folder first (the
/// branch's metrics rows and sample sheets): a failure there leaves the checkpoints where they
/// were, so a later resume sets the branch aside again and nothing is lost.
pub fn set_aside_newer(
    run_dir: &Path,
    resumed: &Path,
    before_moving: impl FnOnce(&Path) -> Result<()>,
) -> Result<Option<PathBuf>> {
    let newer = checkpoints_newer_than(run_dir, resumed)?;
    if newer.is_empty() {
        return Ok(None);
    }
    let aside = next_abandoned_folder(run_dir);
    std::fs::create_dir(&aside).map_err(io_err(&aside, "create"))?;
    let set_aside = SetAside {
        folder: aside.clone(),
        resumed_from: resumed
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        files_crc: read_state(resumed).ok().map(|state| files_crc(&state)),
        moving: newer
            .iter()
            .filter_map(|c| c.file_name()?.to_str().map(str::to_string))
            .collect(),
    };
    set_aside.carry_out(run_dir, before_moving)?;
    Ok(Some(aside))
}

/// A branch being set aside: recorded in its folder's `branch.json` (with what is still to
/// move, `moving`) before anything moves, so that a set-aside a kill interrupted is finished by
/// the next trainer of the run ([`unfinished_set_asides`]) and, until then, readers take its
/// checkpoints for the branch's, not the run's.
#[derive(Debug, Clone, PartialEq)]
pub struct SetAside {
    /// `checkpoints/abandoned-<n>`.
    pub folder: PathBuf,
    /// The run's checkpoint whose resume set the branch aside (the last one both share).
    pub resumed_from: String,
    /// [`files_crc`] of that checkpoint, when it could be read.
    pub files_crc: Option<u32>,
    /// The run's checkpoints that move into the folder (empty once they have).
    pub moving: Vec<String>,
}

impl SetAside {
    /// Records the set-aside, fills its folder through `before_moving` (the branch's rows and
    /// sheets: it must do nothing twice, as finishing an interrupted set-aside calls it again),
    /// moves the checkpoints still in the run, then records it done. Each step can be
    /// repeated after a kill.
    pub fn carry_out(
        &self,
        run_dir: &Path,
        before_moving: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        // A first record that cannot be written (a full disk) leaves no empty folder behind.
        self.record(&self.moving).inspect_err(|_| {
            let _ = std::fs::remove_dir(&self.folder);
        })?;
        before_moving(&self.folder)?;
        let root = run_dir.join(CHECKPOINTS_DIR);
        for name in &self.moving {
            let (from, to) = (root.join(name), self.folder.join(name));
            if std::fs::symlink_metadata(&from).is_ok() {
                std::fs::rename(&from, &to).map_err(io_err(&from, "move aside"))?;
            }
        }
        self.record(&[])
    }

    fn record(&self, moving: &[String]) -> Result<()> {
        // Where the branch left the run: its history before that is the run's (a timeline of
        // the branch draws it), as long as the run holds that very checkpoint.
        let mut text = serde_json::json!({
            "resumed_from": self.resumed_from,
            "files_crc": self.files_crc,
        });
        if !moving.is_empty() {
            text["moving"] = serde_json::json!(moving);
        }
        let record = self.folder.join(BRANCH_FILE);
        crate::fsutil::write_own_atomic(&record, format!("{text}\n").as_bytes())
            .map_err(io_err(&record, "write"))
    }
}

/// Refuses to resume `ckpt` when an interrupted set-aside of its run still has to move it: it
/// belongs to that branch (a resume of the run finishes the move; the branch is then resumed
/// from its folder).
pub fn refuse_leaving(ckpt: &Path) -> Result<()> {
    let (Some(run_dir), Some(name)) = (run_dir_of(ckpt), ckpt.file_name().and_then(|n| n.to_str()))
    else {
        return Ok(());
    };
    match unfinished_set_asides(&run_dir)
        .into_iter()
        .find(|s| s.moving.iter().any(|m| m == name))
    {
        Some(set_aside) => Err(TrainError::Config {
            path: None,
            message: format!(
                "{name} is being set aside into {} by an interrupted resume of {}: resume the \
                 run to finish that, then --resume {} to train that branch on",
                set_aside.folder.display(),
                set_aside.resumed_from,
                set_aside.folder.join(name).display()
            ),
        }),
        None => Ok(()),
    }
}

/// The set-asides of `run_dir` a kill interrupted (their `branch.json` still lists checkpoints
/// to move), oldest first.
pub fn unfinished_set_asides(run_dir: &Path) -> Vec<SetAside> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, SetAside)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let n = name
                .to_str()?
                .strip_prefix("abandoned-")?
                .parse::<u64>()
                .ok()?;
            let bytes = pgan_data::read_regular_file_at_most(
                &entry.path().join(BRANCH_FILE),
                MAX_BRANCH_BYTES,
            )
            .ok()?;
            let record: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            let moving: Vec<String> = record
                .get("moving")?
                .as_array()?
                .iter()
                .filter_map(|m| {
                    m.as_str()
                        .filter(|m| is_checkpoint_name(m))
                        .map(str::to_string)
                })
                .collect();
            let set_aside = SetAside {
                folder: entry.path(),
                resumed_from: record.get("resumed_from")?.as_str()?.to_string(),
                files_crc: record
                    .get("files_crc")
                    .and_then(serde_json::Value::as_u64)
                    .map(|c| c as u32),
                moving,
            };
            (!set_aside.moving.is_empty()).then_some((n, set_aside))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found.into_iter().map(|(_, s)| s).collect()
}

/// The run's checkpoints newer than `resumed` (oldest first): those a resume of `resumed` sets
/// aside.
pub fn checkpoints_newer_than(run_dir: &Path, resumed: &Path) -> Result<Vec<PathBuf>> {
    let Some(resumed_name) = resumed.file_name() else {
        return Ok(Vec::new());
    };
    Ok(list_checkpoints(run_dir)?
        .into_iter()
        .filter(|c| c.file_name().is_some_and(|n| n > resumed_name))
        .collect())
}

/// In an `abandoned-<n>` folder: the name of the checkpoint whose resume set the branch aside,
/// the last one the branch shares with the run, a CRC of its record files' CRCs, and while the
/// set-aside is under way the run's checkpoints it moves there
/// (`{"resumed_from": "ckpt-…", "files_crc": …, "moving": ["ckpt-…", …]}`).
pub const BRANCH_FILE: &str = "branch.json";

/// The longest `branch.json` read: it names the checkpoints a resume set aside (a few KiB).
const MAX_BRANCH_BYTES: u64 = 1 << 20;

/// CRC-32 of a checkpoint's record-file CRCs: names its weights and optimizer state (a
/// rollback's rewrite of its `state.json` keeps it).
fn files_crc(state: &TrainState) -> u32 {
    crc32fast::hash(&serde_json::to_vec(&state.files).unwrap_or_default())
}

/// Where the past of a branch set aside in `run_dir` lies: the name of the run's checkpoint the
/// branch left it at, when the run still holds that very checkpoint (the run's checkpoints up to
/// it are then the branch's past); else `None`, with why where that is worth saying. A point
/// pruned since (with all before it) says nothing: the past is gone as in any run.
pub fn branch_history(run_dir: &Path, branch: &Path) -> (Option<String>, Option<String>) {
    let record = branch.join(BRANCH_FILE);
    let alone = "the timeline shows the branch's own checkpoints only";
    let bytes = match pgan_data::read_regular_file_at_most(&record, MAX_BRANCH_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = format!(
                "{} was set aside by an older pgan, which did not record where it left the run: \
                 {alone}",
                branch.display()
            );
            return (None, Some(why));
        }
        Err(e) => return (None, Some(format!("{}: {e}: {alone}", record.display()))),
    };
    let recorded = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            let name = v.get("resumed_from")?.as_str()?.to_string();
            let crc = v.get("files_crc").and_then(serde_json::Value::as_u64);
            is_checkpoint_name(&name).then_some((name, crc))
        });
    let Some((name, crc)) = recorded else {
        let why = format!(
            "{}: not a record of where the branch left the run: {alone}",
            record.display()
        );
        return (None, Some(why));
    };
    match read_state(&run_dir.join(CHECKPOINTS_DIR).join(&name)) {
        Ok(state) if crc.is_none_or(|c| c == u64::from(files_crc(&state))) => (Some(name), None),
        Ok(_) => {
            let why = format!(
                "the run's {name} is no longer the checkpoint {} left the run at (a later \
                 resume of an older one wrote it again): {alone}",
                branch.display()
            );
            (None, Some(why))
        }
        Err(_) => (None, None),
    }
}

/// Removes what a trainer killed while setting a branch aside left in the run's
/// `checkpoints/abandoned-<n>` folders (temporary files of a process that no longer exists),
/// and such a folder left empty (its `branch.json` never written). Best effort, for the next
/// trainer of the run, which holds its lock.
pub fn remove_stale_set_aside_files(run_dir: &Path) {
    let root = run_dir.join(CHECKPOINTS_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for entry in entries.flatten() {
        let is_folder = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name();
        if !is_folder || !name.to_str().is_some_and(|n| n.starts_with("abandoned-")) {
            continue;
        }
        let folder = entry.path();
        pgan_data::remove_stale_temps_in(&folder);
        pgan_data::remove_stale_temps_in(&folder.join(crate::run_dir::SAMPLES_DIR));
        // Only an empty folder goes: remove_dir refuses any other.
        let _ = std::fs::remove_dir(&folder);
    }
}

/// The `checkpoints/abandoned-<n>` folder the next branch set aside goes to: the first free
/// name.
pub fn next_abandoned_folder(run_dir: &Path) -> PathBuf {
    let root = run_dir.join(CHECKPOINTS_DIR);
    (1..)
        .map(|n| root.join(format!("abandoned-{n}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .expect("a free name")
}

/// Deletes all but the newest `keep` checkpoints, and the half-written temp folders of a process
/// that was killed while writing one (only one process trains a run at a time, and this one's
/// own temp folder has just been renamed into place).
pub fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    let all = list_checkpoints(run_dir)?;
    let excess = all.len().saturating_sub(keep);
    for old in &all[..excess] {
        // Renamed first, so that a reader (a render's timeline) finds a checkpoint whole or
        // gone, never half removed; the temp name is one the loop below removes if a kill
        // interrupts this.
        let doomed = crate::fsutil::temp_beside(old);
        std::fs::rename(old, &doomed)
            .map_err(crate::error::io_err(old, "remove old checkpoint"))?;
        std::fs::remove_dir_all(&doomed)
            .map_err(crate::error::io_err(&doomed, "remove old checkpoint"))?;
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

/// The regular files of a checkpoint folder other than its state, by name.
fn record_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(crate::error::io_err(dir, "list"))? {
        let path = entry.map_err(crate::error::io_err(dir, "list"))?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name != STATE_FILE && path.is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// CRC-32 of each record file of the checkpoint folder `dir` (being written), by name.
fn checksums(dir: &Path) -> Result<BTreeMap<String, u32>> {
    record_names(dir)?
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let crc = pgan_data::crc32_of_regular_file(&path)
                .map_err(crate::error::io_err(&path, "read"))?;
            Ok((name, crc))
        })
        .collect()
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
    let g = load_module(fresh.g, ckpt, GENERATOR, device)?;
    let d = load_module(fresh.d, ckpt, DISCRIMINATOR, device)?;
    let optim_g = load_optimizer::<B, _, _>(ckpt, OPTIM_G, &g, device)?;
    let optim_d = load_optimizer::<B, _, _>(ckpt, OPTIM_D, &d, device)?;
    Ok(Nets {
        g,
        d,
        g_ema: load_module(fresh.g_ema, ckpt, GENERATOR_EMA, device)?,
        optim_g: fresh.optim_g.load_record(optim_g),
        optim_d: fresh.optim_d.load_record(optim_d),
    })
}

/// The optimizer record `stem` of the loaded network `net`: every moment must belong to one of
/// its parameters (by id) and have that parameter's shape, or a step would fail on it.
fn load_optimizer<B: Backend, M: Module<B>, R: Record<B>>(
    ckpt: &Path,
    stem: &str,
    net: &M,
    device: &B::Device,
) -> Result<R> {
    struct Shapes(BTreeMap<String, Vec<usize>>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            self.0.insert(
                param.id.serialize(),
                param.lazy_shape().dims::<D>().to_vec(),
            );
        }
    }
    let mut shapes = Shapes(BTreeMap::new());
    net.visit(&mut shapes);
    let path = ckpt.join(format!("{stem}.{}", record_extension()));
    for tensor in crate::record_check::tensors(&path)? {
        let id = tensor.path.first().map_or("", String::as_str);
        let fits = shapes.0.get(id).is_some_and(|shape| *shape == tensor.shape);
        if !fits {
            return Err(TrainError::Checkpoint {
                path,
                message: format!(
                    "damaged record: {} is {:?}, {}",
                    tensor.path.join("."),
                    tensor.shape,
                    match shapes.0.get(id) {
                        Some(shape) => format!("its parameter is {shape:?}"),
                        None => "for a parameter the network does not have".to_string(),
                    }
                ),
            });
        }
    }
    load_checked_record(ckpt, stem, device)
}

/// The model configuration a checkpoint's records were made with. Keys added to
/// [`ModelConfig`] since (`ModelConfig::KEYS_ADDED_LATER`) are filled in with the defaults that
/// rebuild the networks of the time, so older checkpoints keep loading.
pub fn model_config(state: &TrainState, ckpt: &Path) -> Result<ModelConfig> {
    let unreadable = |message: String| TrainError::Checkpoint {
        path: ckpt.to_path_buf(),
        message: format!("unreadable model configuration: {message}"),
    };
    let mut stored = state.model.clone();
    let Some(keys) = stored.as_object_mut() else {
        return Err(unreadable(format!(
            "expected an object, got {}",
            state.model
        )));
    };
    let defaults = serde_json::to_value(ModelConfig::new(pgan_spec::resolution::MIN_RESOLUTION))
        .expect("model config serialises");
    for key in ModelConfig::KEYS_ADDED_LATER {
        if !keys.contains_key(key) {
            keys.insert(key.to_string(), defaults[key].clone());
        }
    }
    serde_json::from_value(stored).map_err(|e| unreadable(e.to_string()))
}

/// The keys whose values differ between two model configurations: `(key, a's value, b's)`.
pub fn differing_model_keys(
    a: &ModelConfig,
    b: &ModelConfig,
) -> Vec<(String, serde_json::Value, Option<serde_json::Value>)> {
    let (a, b) = (
        serde_json::to_value(a).expect("model config serialises"),
        serde_json::to_value(b).expect("model config serialises"),
    );
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    a.iter()
        .filter(|(key, value)| b.get(*key) != Some(*value))
        .map(|(key, value)| (key.clone(), value.clone(), b.get(key).cloned()))
        .collect()
}

/// Where two model configurations differ, as `key: a vs b` pairs (for the error that refuses
/// to resume a checkpoint with another model).
pub fn model_differences(checkpoint: &ModelConfig, config: &ModelConfig) -> String {
    differing_model_keys(checkpoint, config)
        .into_iter()
        .map(|(key, value, other)| {
            let other = other.map_or("(absent)".to_string(), |v| v.to_string());
            // The channels are the dataset's, not a config key.
            let whose = if key == "num_channels" {
                "in the dataset"
            } else {
                "in the config"
            };
            format!("model.{key} = {value} in the checkpoint, {other} {whose}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Said of a checkpoint whose model is not the one its run's `config.toml` describes (at the
/// checkpoint's own channels, which the config does not record): one copied in from another
/// run. `None` where they agree, or where either cannot be read (loading says why).
pub fn foreign_to_its_run(ckpt: &Path) -> Option<String> {
    let run_dir = run_dir_of(ckpt)?;
    let config =
        crate::config::TrainConfig::from_toml_file(&run_dir.join(crate::run_dir::CONFIG_FILE))
            .ok()?;
    let state = read_state(ckpt).ok()?;
    let made = model_config(&state, ckpt).ok()?;
    let run_model = crate::plan::resolve_model(&config.model, made.num_channels).ok()?;
    let differences = model_differences(&made, &run_model);
    (!differences.is_empty()).then(|| {
        format!(
            "{} was made with another model than its run's config.toml describes ({differences}): \
             a checkpoint copied in from another run? It is used as it is",
            ckpt.display()
        )
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
    let model = model_config(&state, ckpt)?;
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
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A plausible state after 64 images of a 16x16 run over 256 images.
    pub(crate) fn a_state() -> TrainState {
        TrainState {
            version: CHECKPOINT_VERSION,
            images_shown: 64,
            tick: 4,
            step: 16,
            phase_index: 1,
            stage: 1,
            alpha: 0.5,
            rng: ChaCha8Rng::seed_from_u64(1),
            sampler: BatchSampler::new(256, 1, false),
            lr_multiplier: 1.0,
            cooldown_until: 0,
            consecutive_failures: 0,
            elapsed_s: 1.5,
            collapse: CollapseMemory {
                best_swd: BTreeMap::from([(16, 12.5)]),
                ..Default::default()
            },
            gradients: GradientMemory {
                g_norm_peak: Some(3.25),
            },
            model: serde_json::to_value(pgan_model::ModelConfig::cpu_small(16)).unwrap(),
            files: BTreeMap::new(),
            dataset: None,
            peers: None,
            nodes: None,
            seed: None,
            open_tick: None,
            abandoned: None,
            gave_up: None,
            game: None,
            checksum: None,
        }
    }

    /// The game a state records reads back as it was written, f32 keys and all (JSON numbers
    /// of 17 digits came back a ULP off): a resume under the same settings changes nothing.
    /// Written as the user wrote them, a change reads well.
    #[test]
    fn the_recorded_game_reads_back_exactly() {
        let mut config = crate::config::TrainConfig::default();
        (config.optim.beta2, config.optim.beta1) = (0.999, 0.12);
        (config.loss.real_label, config.loss.feature_matching) = (0.97, 0.03);
        config.schedule.lr_default = 0.0015;
        let state = TrainState {
            game: Some(config.game_record()),
            ..a_state()
        };
        let read: TrainState = serde_json::from_slice(&state.to_json_with_checksum()).unwrap();
        let game = read.recorded_game().unwrap();
        assert_eq!(config.game_changes(&game), Vec::<String>::new());
        config.optim.beta2 = 0.99;
        assert_eq!(config.game_changes(&game), ["optim.beta2 0.999 → 0.99"]);
    }

    /// A checkpoint of `a_state` at `images` images, with one small record file.
    fn write_one(run: &Path, images: u64) -> PathBuf {
        let state = TrainState {
            images_shown: images,
            ..a_state()
        };
        write_checkpoint(run, &state, |dir| {
            std::fs::write(dir.join("generator_ema.mpk"), images.to_le_bytes()).unwrap();
            Ok(())
        })
        .unwrap()
    }

    /// A state as pgan wrote it before states carried their checksum: format 1, without the
    /// keys written only beside the checksum.
    fn as_format_1(j: &mut serde_json::Value) {
        let j = j.as_object_mut().unwrap();
        j.remove("checksum");
        for key in KEYS_WRITTEN_WITH_THE_CHECKSUM {
            j.remove(key);
        }
        j.insert("version".into(), serde_json::json!(1));
    }

    /// Rewrites a checkpoint's `state.json` through `edit`.
    fn edit_state(ckpt: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = ckpt.join(STATE_FILE);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut json);
        std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    }

    /// Rewrites a checkpoint's `state.json` through `edit` and signs it again as pgan signs a
    /// state (whatever keys it holds): only the fields' own checks can refuse it.
    fn edit_state_resigned(ckpt: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = ckpt.join(STATE_FILE);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("checksum");
        edit(&mut json);
        let mut text = serde_json::to_vec_pretty(&json).unwrap();
        let crc = crc32fast::hash(&text);
        assert_eq!(text.pop(), Some(b'}'));
        assert_eq!(text.pop(), Some(b'\n'));
        text.extend_from_slice(format!(",\n  \"checksum\": {crc}\n}}").as_bytes());
        std::fs::write(&path, text).unwrap();
    }

    #[test]
    fn states_with_any_float_values_read_back_with_their_checksum() {
        // Floats whose shortest decimal form serde_json may read back one ULP off: the checksum
        // is over the written bytes, so none of them reads as edited.
        let run = tempfile::tempdir().unwrap();
        let mut bits = 0x9E37_79B9_7F4A_7C15_u64;
        for k in 0..300 {
            bits = bits
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let state = TrainState {
                images_shown: 64 + k,
                elapsed_s: (bits >> 11) as f64 / (1u64 << 53) as f64 * 1e5,
                collapse: CollapseMemory {
                    best_swd: BTreeMap::from([(16, f64::from_bits(bits >> 2))]),
                    ..Default::default()
                },
                ..a_state()
            };
            let ckpt = write_checkpoint(run.path(), &state, |dir| {
                std::fs::write(dir.join("generator_ema.mpk"), k.to_le_bytes()).unwrap();
                Ok(())
            })
            .unwrap();
            let read = read_state(&ckpt).unwrap_or_else(|e| panic!("{}: {e}", state.elapsed_s));
            assert!(read.checksum.is_some());
        }
    }

    #[test]
    fn an_edited_state_is_refused_and_every_field_is_validated() {
        let run = tempfile::tempdir().unwrap();
        let ckpt = write_one(run.path(), 64);
        let state = read_state(&ckpt).unwrap();
        assert!(state.checksum.is_some());

        edit_state(&ckpt, |j| j["sampler"]["position"] = 257.into());
        let err = read_state(&ckpt).unwrap_err().to_string();
        assert!(
            err.contains("state.json was changed after it was written"),
            "{err}"
        );

        // Signed again, the fields still have to make sense: this position made the sampler
        // index out of bounds.
        edit_state_resigned(&ckpt, |_| {});
        let err = read_state(&ckpt).unwrap_err().to_string();
        assert!(
            err.contains("sampler.position 257 is not below sampler.num_images 256"),
            "{err}"
        );
        for (key, value, said) in [
            (
                "tick",
                serde_json::json!(u64::MAX),
                "tick 18446744073709551615",
            ),
            ("stage", serde_json::json!(9), "stage 9 is beyond"),
            ("alpha", serde_json::json!(1.5), "alpha 1.5"),
            ("lr_multiplier", serde_json::json!(0.0), "lr_multiplier 0"),
            ("phase_index", serde_json::json!(40), "phase_index 40"),
            (
                "gradients",
                serde_json::json!({"g_norm_peak": -1.0}),
                "gradients.g_norm_peak -1 is not a gradient norm",
            ),
            (
                "open_tick",
                serde_json::json!({"stats": {}, "images": 81, "seconds": 1.0}),
                "open_tick.images 81 is not within 1..=80",
            ),
            (
                "open_tick",
                serde_json::json!({"stats": {}, "images": 8, "seconds": -1.0}),
                "open_tick.seconds -1 is not a duration",
            ),
            (
                "open_tick",
                serde_json::json!({
                    "stats": {"Loss/D": {"sum_bits": f64::NAN.to_bits(), "count": 1}},
                    "images": 8,
                    "seconds": 1.0
                }),
                "open_tick.stats holds a sum that is not finite",
            ),
        ] {
            let ckpt = write_one(run.path(), 80);
            edit_state_resigned(&ckpt, |j| {
                j[key] = value;
            });
            let err = read_state(&ckpt).unwrap_err().to_string();
            assert!(err.contains(said), "{key}: {err}");
        }
        // A state of this format with its checksum or record checksums removed was edited; one
        // rewritten by another program (another layout) too.
        for (edit, said) in [
            (
                "checksum",
                "state.json has no checksum, which every checkpoint of format 2",
            ),
            (
                "files",
                "state.json lists no record files with their checksums",
            ),
            ("layout", "its layout is not the one pgan writes"),
        ] {
            let ckpt = write_one(run.path(), 88);
            let path = ckpt.join(STATE_FILE);
            let mut json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            match edit {
                "layout" => {
                    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
                }
                key => {
                    let j = json.as_object_mut().unwrap();
                    j.remove(key);
                    if key == "files" {
                        // Re-signed as pgan would: only the missing record checksums give it away.
                        j.remove("checksum");
                        let state: TrainState = serde_json::from_value(json).unwrap();
                        std::fs::write(&path, state.to_json_with_checksum()).unwrap();
                    } else {
                        std::fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
                    }
                }
            }
            let err = read_state(&ckpt).unwrap_err().to_string();
            assert!(err.contains(said), "{edit}: {err}");
        }
        // Nor is one relabelled as format 1 (from before the checksum) whose alpha was edited:
        // it holds what only states with a checksum hold.
        let ckpt = write_one(run.path(), 96);
        edit_state(&ckpt, |j| {
            let j = j.as_object_mut().unwrap();
            j.remove("checksum");
            j.insert("version".into(), serde_json::json!(1));
            j.insert("alpha".into(), serde_json::json!(0.3));
        });
        let err = read_state(&ckpt).unwrap_err().to_string();
        assert!(
            err.contains("has no checksum but holds `gradients`"),
            "{err}"
        );
        // A state from before the checksum (none of the keys written with it) is read.
        let ckpt = write_one(run.path(), 104);
        edit_state(&ckpt, as_format_1);
        assert_eq!(read_state(&ckpt).unwrap().version, 1);
    }

    /// A checkpoint from before the records' checksums (format 1, no `files`) with a damaged record is
    /// passed over as a corrupt one is, naming the record (not burn's loader's message later).
    #[test]
    fn a_format_1_checkpoint_with_a_damaged_record_is_passed_over() {
        type B = burn::backend::Flex;
        let run = tempfile::tempdir().unwrap();
        let model = pgan_model::ModelConfig::cpu_small(8)
            .with_latent_dim(8)
            .with_fmap_base(16)
            .with_fmap_max(8);
        let write = |images| {
            let state = TrainState {
                images_shown: images,
                ..a_state()
            };
            let ckpt = write_checkpoint(run.path(), &state, |dir| {
                save_module(
                    model.init_generator::<B>(&Default::default()),
                    dir,
                    GENERATOR_EMA,
                )
            })
            .unwrap();
            // Without the records' checksums, as the earliest states were written.
            edit_state(&ckpt, |j| {
                as_format_1(j);
                j.as_object_mut().unwrap().remove("files");
            });
            ckpt
        };
        let (older, newer) = (write(64), write(96));
        assert_eq!(read_state(&newer).unwrap().version, 1);
        let record = newer.join(format!("{GENERATOR_EMA}.{}", record_extension()));
        let bytes = std::fs::read(&record).unwrap();
        std::fs::write(&record, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_state(&newer).unwrap_err().to_string();
        assert!(err.contains("generator_ema.mpk: damaged record"), "{err}");
        let found = find_checkpoint(run.path()).unwrap();
        assert_eq!(found.path, older);
        assert_eq!(found.skipped.len(), 1);
    }

    #[test]
    fn the_alarm_memory_of_checkpoints_from_before_the_collapse_key_is_dropped() {
        // Those held a best SWD and MS-SSIM per resolution that could come from fade-in
        // evaluations, the figures the collapse alarm no longer compares with.
        let run = tempfile::tempdir().unwrap();
        let ckpt = write_one(run.path(), 64);
        edit_state_resigned(&ckpt, |j| {
            let j = j.as_object_mut().unwrap();
            j.remove("collapse");
            j.remove("gradients");
            j.insert("best_swd".into(), serde_json::json!({"16": 180.5}));
            j.insert("best_msssim".into(), serde_json::json!({"16": 0.31}));
        });
        let state = read_state(&ckpt).unwrap();
        assert_eq!(state.collapse, CollapseMemory::default());
        assert_eq!(state.gradients, GradientMemory::default());
        assert_eq!(state.images_shown, 64);
    }

    #[test]
    fn a_corrupt_newest_checkpoint_falls_back_to_the_newest_intact_one() {
        let run = tempfile::tempdir().unwrap();
        let ckpts: Vec<PathBuf> = [16, 32, 48].map(|i| write_one(run.path(), i)).into();
        std::fs::write(ckpts[2].join("generator_ema.mpk"), b"bitrot!!").unwrap();
        let found = find_checkpoint(run.path()).unwrap();
        assert_eq!(found.path, ckpts[1]);
        let warnings = found.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains(&checkpoint_name(48))
                && warnings[0].contains("generator_ema.mpk is corrupt")
                && warnings[0].contains(&format!(
                    "using the newest intact checkpoint, {}",
                    ckpts[1].display()
                )),
            "{}",
            warnings[0]
        );
        // A checkpoint folder named explicitly is taken as given.
        assert_eq!(find_checkpoint(&ckpts[2]).unwrap().path, ckpts[2]);
        // With none intact, the error lists each one and why.
        for c in &ckpts[..2] {
            std::fs::remove_file(c.join(STATE_FILE)).unwrap();
        }
        let err = find_checkpoint(run.path()).unwrap_err().to_string();
        assert!(
            err.contains("no intact checkpoint") && err.contains(&checkpoint_name(16)),
            "{err}"
        );
    }

    #[test]
    fn only_the_files_a_state_lists_are_read_and_they_lie_in_its_folder() {
        let run = tempfile::tempdir().unwrap();
        let ckpt = write_one(run.path(), 16);
        // A stray file beside the records is not read (1 TiB, sparse: read whole, it aborted).
        std::fs::File::create(ckpt.join("stray.bin"))
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let mut state = read_state(&ckpt).unwrap();
        // A state that lists a path out of the folder is refused as edited (re-signed here).
        for name in [
            "../../../etc/passwd",
            "sub/generator_ema.mpk",
            STATE_FILE,
            "..",
        ] {
            state.files = [(name.to_string(), 1)].into();
            std::fs::write(ckpt.join(STATE_FILE), state.to_json_with_checksum()).unwrap();
            let err = read_state(&ckpt).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{name:?}")) && err.contains("not a record file"),
                "{err}"
            );
        }
    }

    #[test]
    fn records_are_written_as_burns_recorder_writes_them_and_a_full_disk_names_the_file() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let g = pgan_model::ModelConfig::cpu_small(8)
            .with_latent_dim(8)
            .with_fmap_base(16)
            .with_fmap_max(8)
            .init_generator::<B>(&device);
        let dir = tempfile::tempdir().unwrap();
        // Loaded back, the parameters are concrete (burn draws lazy ones per clone).
        save_module(g.clone(), dir.path(), GENERATOR).unwrap();
        let g = load_module(g, dir.path(), GENERATOR, &device).unwrap();
        save_module(g.clone(), dir.path(), GENERATOR).unwrap();
        let theirs = dir.path().join("burn");
        g.clone()
            .save_file(theirs.join(GENERATOR), &CheckpointRecorder::new())
            .unwrap();
        let name = format!("{GENERATOR}.mpk");
        let (ours, burns) = (
            std::fs::read(dir.path().join(&name)).unwrap(),
            std::fs::read(theirs.join(&name)).unwrap(),
        );
        let first_diff = ours.iter().zip(&burns).position(|(a, b)| a != b);
        assert!(
            ours == burns,
            "lengths {} {}, first difference at {first_diff:?}: {:?} vs {:?}",
            ours.len(),
            burns.len(),
            String::from_utf8_lossy(&ours[first_diff.unwrap_or(0).saturating_sub(40)..][..80]),
            String::from_utf8_lossy(&burns[first_diff.unwrap_or(0).saturating_sub(40)..][..80])
        );
        load_module(g.clone(), dir.path(), GENERATOR, &device).unwrap();

        // The encoder meets the OS error itself: it is kept, not turned into a string.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let path = Path::new("run/checkpoints/x/generator.mpk");
        let item = BurnRecord::<_, B>::new::<CheckpointRecorder>(
            g.clone().into_record().into_item::<FullPrecisionSettings>(),
        );
        let err = encode_record(Full, &item, path).err().unwrap();
        let text = err.to_string();
        assert!(
            matches!(&err, TrainError::Io { source, .. } if source.raw_os_error() == Some(28)),
            "{text}"
        );
        assert!(
            text.contains("run/checkpoints/x/generator.mpk")
                && text.contains("No space left on device")
                && !text.contains("MessagePack"),
            "{text}"
        );

        // Or at the last flush of a buffered writer: the same OS error, not its bare kind.
        struct FullAtFlush;
        impl Write for FullAtFlush {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(28))
            }
        }
        let err = encode_record(FullAtFlush, &item, path).err().unwrap();
        assert!(err.to_string().contains("(os error 28)"), "{err}");

        // The same through a real full device, where Linux has one.
        if Path::new("/dev/full").exists() {
            let full = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink("/dev/full", full.path().join(&name)).unwrap();
            let text = save_module(g, full.path(), GENERATOR)
                .unwrap_err()
                .to_string();
            assert!(
                text.contains(&name) && text.contains("No space left on device"),
                "{text}"
            );
        }
    }

    #[test]
    fn prune_keeps_the_newest_removes_a_killed_writers_temp_folders_and_leaves_other_folders() {
        let run = tempfile::tempdir().unwrap();
        let root = run.path().join(CHECKPOINTS_DIR);
        for images in [16, 32, 48] {
            std::fs::create_dir_all(root.join(checkpoint_name(images))).unwrap();
        }
        // A user's own folders beside them: never listed, never pruned.
        let theirs = [
            "ckpt-best",
            "ckpt-000000000032.bak",
            "ckpt-000000000032-backup",
        ];
        for name in theirs {
            std::fs::create_dir_all(root.join(name)).unwrap();
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
        assert_eq!(left.len(), 2 + theirs.len(), "{left:?}");
        assert!(
            theirs.iter().all(|name| root.join(name).is_dir()),
            "{left:?}"
        );
    }

    #[test]
    fn a_fingerprint_compares_pixels_not_the_manifest() {
        // Bytes that end in their own CRC-32, as a .pgan header does.
        let mut bytes = b"header fields".to_vec();
        let own = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&own.to_le_bytes());
        assert_eq!(header_crc32(&bytes), own);
        // Hashing the CRC along gives one constant for any header: what pgan used to store.
        assert_eq!(crc32fast::hash(&bytes), CRC32_RESIDUE);
        let current = DatasetFingerprint {
            header_crc32: own,
            images: 24,
            levels: BTreeMap::from([(4, 1), (8, 2)]),
        };
        // Another header (another manifest, or the old residue): the same pixels still match.
        let renamed = DatasetFingerprint {
            header_crc32: CRC32_RESIDUE,
            ..current.clone()
        };
        assert!(renamed.matches(&current));
        assert_eq!(renamed.content_crc32(), current.content_crc32());
        for other in [
            DatasetFingerprint {
                levels: BTreeMap::from([(4, 1), (8, 3)]),
                ..current.clone()
            },
            DatasetFingerprint {
                images: 23,
                ..current.clone()
            },
        ] {
            assert!(!other.matches(&current));
            assert_ne!(other.content_crc32(), current.content_crc32());
            assert_ne!(other.to_string(), current.to_string());
        }
    }

    #[test]
    fn a_relative_checkpoint_path_names_its_run() {
        let here = std::env::current_dir().unwrap();
        let ckpt = Path::new("checkpoints").join("ckpt-000000000016");
        assert_eq!(run_dir_of(&ckpt), Some(here.clone()));
        let run = Path::new("runs").join("00000-x").join(&ckpt);
        assert_eq!(run_dir_of(&run), Some(here.join("runs").join("00000-x")));
        // Tests run in the crate's folder, which is not a run's checkpoints/ folder.
        assert_eq!(run_dir_of(Path::new("ckpt-000000000016")), None);
        let set_aside = here.join("runs/00000-x/checkpoints/abandoned-2/ckpt-000000000016");
        assert_eq!(run_dir_of(&set_aside), None);
        assert_eq!(
            abandoned_branch_of(&set_aside),
            Some((
                here.join("runs/00000-x"),
                here.join("runs/00000-x/checkpoints/abandoned-2")
            ))
        );
        assert_eq!(abandoned_branch_of(&ckpt), None);
    }

    #[test]
    fn a_record_that_cannot_be_written_is_named_where_the_checkpoint_would_be() {
        let run = tempfile::tempdir().unwrap();
        let err = write_checkpoint(run.path(), &a_state(), |tmp| {
            Err(TrainError::Io {
                path: tmp.join("discriminator.mpk"),
                action: "write checkpoint record",
                source: std::io::Error::from_raw_os_error(28),
            })
        })
        .unwrap_err()
        .to_string();
        let name = checkpoint_name(a_state().images_shown);
        assert!(
            err.contains(&format!(
                "{name}: not written (nothing of it was kept): cannot write checkpoint record \
                 discriminator.mpk: No space left on device"
            )) && !err.contains(".tmp-"),
            "{err}"
        );
        assert!(list_checkpoints(run.path()).unwrap().is_empty());
        // So is a state that cannot be written (here a folder in its place).
        let err = write_checkpoint(run.path(), &a_state(), |tmp| {
            std::fs::create_dir(tmp.join(STATE_FILE)).map_err(io_err(tmp, "create"))
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!(
                "{name}: not written (nothing of it was kept): cannot write checkpoint state \
                 {STATE_FILE}: "
            )) && !err.contains(".tmp-"),
            "{err}"
        );
        assert!(list_checkpoints(run.path()).unwrap().is_empty());
    }

    #[test]
    fn a_checkpoint_named_through_dot_or_dotdot_is_found_by_its_own_name() {
        let run = tempfile::tempdir().unwrap();
        let ckpt = write_one(run.path(), 16);
        let name = ckpt.file_name().unwrap().to_owned();
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap();
        for spelled in [ckpt.join("."), ckpt.join("..").join(&name)] {
            let found = find_checkpoint(&spelled).unwrap().path;
            assert_eq!(found.file_name(), Some(name.as_os_str()), "{spelled:?}");
            let run_dir = run_dir_of(&found).unwrap();
            assert_eq!(canonical(&run_dir), canonical(run.path()), "{spelled:?}");
        }
    }

    #[test]
    fn resuming_an_older_checkpoint_sets_the_newer_ones_aside() {
        let run = tempfile::tempdir().unwrap();
        let root = run.path().join(CHECKPOINTS_DIR);
        for images in [16, 32, 48] {
            std::fs::create_dir_all(root.join(checkpoint_name(images))).unwrap();
            std::fs::write(root.join(checkpoint_name(images)).join("x"), b"kept").unwrap();
        }
        let resumed = root.join(checkpoint_name(16));
        let aside = set_aside_newer(run.path(), &resumed, |_| Ok(()))
            .unwrap()
            .unwrap();
        assert_eq!(aside, root.join("abandoned-1"));
        assert_eq!(list_checkpoints(run.path()).unwrap(), vec![resumed.clone()]);
        for images in [32, 48] {
            let moved = aside.join(checkpoint_name(images)).join("x");
            assert_eq!(std::fs::read(moved).unwrap(), b"kept");
        }
        // Nothing newer: nothing moved. A second branch gets its own folder.
        assert_eq!(
            set_aside_newer(run.path(), &resumed, |_| Ok(())).unwrap(),
            None
        );
        std::fs::create_dir_all(root.join(checkpoint_name(64))).unwrap();
        let second = set_aside_newer(run.path(), &resumed, |_| Ok(()))
            .unwrap()
            .unwrap();
        assert_eq!(second, root.join("abandoned-2"));
        prune(run.path(), 1).unwrap();
        assert!(aside.join(checkpoint_name(48)).is_dir() && second.is_dir());

        // What a set-aside killed or refused at its start left: a folder with only a dead
        // process's temporary record, an empty one. The next trainer removes both, and
        // leaves the branches and a live process's temp alone.
        let (killed, empty) = (root.join("abandoned-3"), root.join("abandoned-4"));
        std::fs::create_dir(&killed).unwrap();
        let dead = pgan_data::test_files::dead_pid();
        std::fs::write(killed.join(format!(".{BRANCH_FILE}.tmp-{dead}-0")), b"{").unwrap();
        std::fs::create_dir(&empty).unwrap();
        let live = second.join(format!(".{BRANCH_FILE}.tmp-{}-0", std::process::id()));
        std::fs::write(&live, b"{").unwrap();
        remove_stale_set_aside_files(run.path());
        assert!(!killed.exists() && !empty.exists());
        assert!(live.exists() && aside.join(BRANCH_FILE).is_file());
        assert_eq!(next_abandoned_folder(run.path()), root.join("abandoned-3"));
    }

    #[test]
    fn a_branch_past_is_the_runs_while_the_run_holds_the_checkpoint_it_left() {
        let run = tempfile::tempdir().unwrap();
        for images in [16, 32, 48] {
            write_one(run.path(), images);
        }
        let resumed = run.path().join(CHECKPOINTS_DIR).join(checkpoint_name(16));
        let aside = set_aside_newer(run.path(), &resumed, |_| Ok(()))
            .unwrap()
            .unwrap();
        assert_eq!(
            branch_history(run.path(), &aside),
            (Some(checkpoint_name(16)), None)
        );
        // The run's 16 written again with other weights (a resume of an older checkpoint).
        std::fs::remove_dir_all(&resumed).unwrap();
        let state = TrainState {
            images_shown: 16,
            ..a_state()
        };
        write_checkpoint(run.path(), &state, |dir| {
            std::fs::write(dir.join("generator_ema.mpk"), b"other weights").unwrap();
            Ok(())
        })
        .unwrap();
        let (point, why) = branch_history(run.path(), &aside);
        assert_eq!(point, None);
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("is no longer the checkpoint")),
            "{why:?}"
        );
        // Pruned since: the past is gone, nothing to say. No record: said.
        std::fs::remove_dir_all(&resumed).unwrap();
        assert_eq!(branch_history(run.path(), &aside), (None, None));
        std::fs::remove_file(aside.join(BRANCH_FILE)).unwrap();
        let (_, why) = branch_history(run.path(), &aside);
        assert!(
            why.as_deref().is_some_and(|w| w.contains("older pgan")),
            "{why:?}"
        );
        // A record no branch.json can be (1 TiB, sparse) is said, not read.
        std::fs::File::create(aside.join(BRANCH_FILE))
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let (_, why) = branch_history(run.path(), &aside);
        assert!(
            why.as_deref().is_some_and(|w| w.contains("more than the")),
            "{why:?}"
        );
        assert!(unfinished_set_asides(run.path()).is_empty());
    }

    /// A run's checkpoints folder given for the run, and a run that stopped before its first
    /// checkpoint, are said as such (not "no checkpoint in this folder").
    #[test]
    fn a_checkpoints_folder_and_a_run_without_checkpoints_are_named() {
        let run = tempfile::tempdir().unwrap();
        std::fs::write(run.path().join(crate::run_dir::CONFIG_FILE), "").unwrap();
        let err = find_checkpoint(run.path()).unwrap_err().to_string();
        assert!(
            err.contains("the run stopped before its first one was written; start it again"),
            "{err}"
        );
        write_checkpoint(run.path(), &a_state(), |_| Ok(())).unwrap();
        let folder = run.path().join(CHECKPOINTS_DIR);
        let err = find_checkpoint(&folder).unwrap_err().to_string();
        assert!(
            err.contains("this is a run's checkpoints folder: give the run folder"),
            "{err}"
        );
    }

    /// A live trainer that keeps one checkpoint writes each new one and prunes the one before
    /// while a reader looks for the newest: the reader always finds one, never "corrupt" or
    /// "no checkpoint" (a checkpoint gone while it was read was pruned, and the run is listed
    /// again).
    #[test]
    fn a_run_pruned_while_it_is_read_gives_its_newest_checkpoint() {
        let run = tempfile::tempdir().unwrap();
        let mut state = a_state();
        let write = |state: &TrainState| {
            write_checkpoint(run.path(), state, |dir| {
                std::fs::write(dir.join("generator.mpk"), b"weights").map_err(|e| TrainError::Io {
                    path: dir.to_path_buf(),
                    action: "write",
                    source: e,
                })
            })
            .unwrap();
            prune(run.path(), 1).unwrap();
        };
        write(&state);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..400 {
                    state.images_shown += 1;
                    write(&state);
                    // A trainer writes checkpoints far apart; this one only seldom outruns
                    // a reader's listing (five in a row would fail the reader).
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            let mut found = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let ckpt = find_checkpoint(run.path());
                assert!(ckpt.is_ok(), "{}", ckpt.unwrap_err());
                assert!(ckpt.unwrap().skipped.is_empty());
                found += 1;
            }
            assert!(found > 0);
        });
    }

    #[test]
    fn weights_that_do_not_fit_the_model_configuration_are_an_error_not_a_panic() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let at = |resolution| {
            pgan_model::ModelConfig::cpu_small(resolution)
                .with_latent_dim(8)
                .with_fmap_base(16)
                .with_fmap_max(8)
        };
        let small = || at(8);
        let dir = tempfile::tempdir().unwrap();
        save_module(small().init_generator::<B>(&device), dir.path(), GENERATOR).unwrap();
        save_module(
            small().init_discriminator::<B>(&device),
            dir.path(),
            DISCRIMINATOR,
        )
        .unwrap();
        load_module(
            small().init_generator::<B>(&device),
            dir.path(),
            GENERATOR,
            &device,
        )
        .unwrap();

        let wider = small().with_fmap_max(16).with_fmap_base(32);
        let err = load_module(
            wider.init_generator::<B>(&device),
            dir.path(),
            GENERATOR,
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("does not fit the model configuration"),
            "{err}"
        );
        assert!(err.contains("in the weights"), "{err}");
        let larger = at(16);
        for err in [
            load_module(
                larger.init_generator::<B>(&device),
                dir.path(),
                GENERATOR,
                &device,
            )
            .unwrap_err(),
            load_module(
                larger.init_discriminator::<B>(&device),
                dir.path(),
                DISCRIMINATOR,
                &device,
            )
            .unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(err.contains("weights for 8x8 (2 stages"), "{err}");
            assert!(err.contains("a 16x16 network"), "{err}");
        }
    }
}
