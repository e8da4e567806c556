//! `pgan render`: pictures from a checkpoint — sample sheets from seeds (with optional
//! truncation), spherical latent interpolations as a PNG strip and an animated GIF, and the growth
//! timeline (the same seeds through every checkpoint of a run).
//!
//! A seed always means the same latent (`ChaCha8Rng` seeded with it), so seed 42 is the same
//! face in every sheet, interpolation and timeline row.

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::backend::BackendJob;
use crate::checkpoint::{self, load_generator, LoadedGenerator};
use crate::error::{Result, TrainError};
use crate::images::{gif_bytes, grid, png_bytes, save_png, upscale_cells, HostImages};
use crate::latents::{latent_for_seed, slerp};
use crate::limits;

/// What to render.
#[derive(Clone, Debug)]
pub enum RenderKind {
    /// A `rows x cols` grid, one seed per cell (row-major).
    Sheet {
        /// Grid rows.
        rows: usize,
        /// Grid columns.
        cols: usize,
    },
    /// Spherical interpolation through the seeds in order, `steps` frames per segment.
    Interpolation {
        /// Frames per pair of consecutive seeds.
        steps: usize,
        /// Also write an animated GIF beside the PNG strip.
        gif: bool,
    },
    /// One row per checkpoint of the run, oldest first.
    Timeline,
}

/// A render request (the `pgan render` options).
#[derive(Clone, Debug)]
pub struct RenderRequest {
    /// Checkpoint folder or run directory (its latest checkpoint; all of them for a timeline).
    pub source: PathBuf,
    /// Output PNG path.
    pub out: PathBuf,
    /// Latent seeds.
    pub seeds: Vec<u64>,
    /// Resample latent components beyond ±ψ.
    pub truncation: Option<f32>,
    /// Use the raw generator instead of the EMA generator.
    pub raw_generator: bool,
    /// Upscale each cell (nearest) to at least this many pixels.
    pub cell_px: u32,
    /// What to draw.
    pub kind: RenderKind,
    /// Also write the latents fed to the generator (sheet cells in row-major order, or the
    /// interpolation frames) as an `[n, latent_dim]` float32 `.npy` file here.
    pub save_latents: Option<PathBuf>,
}

/// Files written by a render.
#[derive(Clone, Debug, Serialize)]
pub struct RenderOutput {
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// Resolution the images were generated at.
    pub resolution: u32,
    /// The checkpoint (the newest one for a timeline).
    pub checkpoint: PathBuf,
    /// Checkpoints a timeline left out because they failed their checks, with why.
    pub warnings: Vec<String>,
}

impl BackendJob for RenderRequest {
    type Output = RenderOutput;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<RenderOutput> {
        render::<B::InnerBackend>(&self, &device)
    }
}

/// Writes `latents` (`n × dim`) as a float32 `.npy` file if the request asks for one.
fn add_latents(
    request: &RenderRequest,
    latents: &[f32],
    dim: usize,
    files: &mut Vec<(PathBuf, Vec<u8>)>,
) -> Result<()> {
    let Some(path) = &request.save_latents else {
        return Ok(());
    };
    let shape = [(latents.len() / dim) as u64, dim as u64];
    let bytes = crate::fsutil::npy_f32_bytes(latents, &shape)
        .map_err(crate::error::io_err(path, "write latents"))?;
    files.push((path.clone(), bytes));
    Ok(())
}

/// Writes a render's files once all of them are encoded, all or none: a render stopped while
/// it draws, encodes or writes, or a full disk, leaves every earlier output as it was, never a
/// set of files from two different requests.
fn commit(files: Vec<(PathBuf, Vec<u8>)>) -> Result<Vec<PathBuf>> {
    let refs: Vec<(&std::path::Path, &[u8])> = files
        .iter()
        .map(|(path, bytes)| (path.as_path(), bytes.as_slice()))
        .collect();
    crate::fsutil::write_all_atomic(&refs)
        .map_err(|(path, e)| crate::error::io_err(&path, "write")(e))?;
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// Images a render generates per forward pass: memory stays bounded however many it draws.
const RENDER_BATCH: usize = 32;

/// The generator's images for `latents` (`latent_dim` values each), as 8-bit RGB.
fn generate_rows<B: Backend>(
    loaded: &LoadedGenerator<B>,
    latents: &[f32],
    device: &B::Device,
) -> Result<Vec<image::RgbImage>> {
    let dim = loaded.model.latent_dim;
    let mut rows = Vec::with_capacity(latents.len() / dim.max(1));
    for chunk in latents.chunks(RENDER_BATCH * dim) {
        let z = Tensor::<B, 2>::from_data(
            TensorData::new(chunk.to_vec(), [chunk.len() / dim, dim]),
            device,
        );
        let images = HostImages::from_tensor_finite(loaded.generator.forward(
            z,
            loaded.state.stage,
            loaded.state.alpha,
        ))?;
        rows.extend(images.to_rgb_all());
    }
    Ok(rows)
}

/// The side of the images a loaded generator draws.
fn image_px<B: Backend>(loaded: &LoadedGenerator<B>) -> u32 {
    crate::schedule::resolution_of(loaded.state.stage)
}

fn render<B: Backend>(request: &RenderRequest, device: &B::Device) -> Result<RenderOutput> {
    if request.seeds.is_empty() {
        return Err(TrainError::Request("no seeds to render".into()));
    }
    if let Some(psi) = request.truncation {
        limits::check_truncation(psi).map_err(TrainError::Request)?;
    }
    if let Some(parent) = request.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(crate::error::io_err(parent, "create"))?;
    }
    match &request.kind {
        RenderKind::Sheet { rows, cols } => {
            let cells = rows.checked_mul(*cols).unwrap_or(usize::MAX);
            if request.seeds.len() > cells {
                return Err(TrainError::Request(format!(
                    "{} seeds do not fit a {rows} x {cols} sheet ({cells} cells): give more rows \
                     or columns, or fewer seeds",
                    request.seeds.len()
                )));
            }
            let ckpt = checkpoint::resolve_checkpoint(&request.source)?;
            let loaded = load_generator::<B>(&ckpt, request.raw_generator, device)?;
            let size = limits::sheet_size(*rows, *cols, image_px(&loaded), request.cell_px, 2)
                .map_err(TrainError::Request)?;
            let dim = loaded.model.latent_dim;
            let seeds: Vec<u64> = request
                .seeds
                .iter()
                .copied()
                .cycle()
                .take(rows * cols)
                .collect();
            let latents: Vec<f32> = seeds
                .iter()
                .flat_map(|&s| latent_for_seed(s, dim, request.truncation))
                .collect();
            let mut files = Vec::new();
            add_latents(request, &latents, dim, &mut files)?;
            let cells = upscale_cells(generate_rows(&loaded, &latents, device)?, size.cell);
            let sheet = png_bytes(&grid(&cells, *rows, *cols, 2), &request.out)?;
            files.push((request.out.clone(), sheet));
            commit(files)?;
            Ok(RenderOutput {
                files: vec![request.out.clone()],
                resolution: image_px(&loaded),
                checkpoint: ckpt,
                warnings: Vec::new(),
            })
        }
        RenderKind::Interpolation { steps, gif } => {
            let ckpt = checkpoint::resolve_checkpoint(&request.source)?;
            let loaded = load_generator::<B>(&ckpt, request.raw_generator, device)?;
            let dim = loaded.model.latent_dim;
            let keys: Vec<Vec<f32>> = request
                .seeds
                .iter()
                .map(|&s| latent_for_seed(s, dim, request.truncation))
                .collect();
            let steps = (*steps).max(2);
            let frames = (keys.len() - 1)
                .checked_mul(steps)
                .and_then(|f| f.checked_add(1))
                .unwrap_or(usize::MAX);
            let size = limits::sheet_size(1, frames, image_px(&loaded), request.cell_px, 2)
                .map_err(TrainError::Request)?;
            let mut latents = Vec::with_capacity(frames * dim);
            for pair in keys.windows(2) {
                for k in 0..steps {
                    latents.extend(slerp(&pair[0], &pair[1], k as f32 / steps as f32));
                }
            }
            latents.extend(keys.last().expect("at least one seed").iter());
            let mut files = Vec::new();
            add_latents(request, &latents, dim, &mut files)?;
            let cells = upscale_cells(generate_rows(&loaded, &latents, device)?, size.cell);
            let strip = png_bytes(&grid(&cells, 1, frames, 2), &request.out)?;
            files.push((request.out.clone(), strip));
            let mut images = vec![request.out.clone()];
            if *gif {
                let gif_path = request.out.with_extension("gif");
                let animation = gif_bytes(&cells, 80, &gif_path)?;
                files.push((gif_path.clone(), animation));
                images.push(gif_path);
            }
            commit(files)?;
            Ok(RenderOutput {
                files: images,
                resolution: image_px(&loaded),
                checkpoint: ckpt,
                warnings: Vec::new(),
            })
        }
        RenderKind::Timeline => {
            // A run: all its checkpoints. A checkpoint named as the source: its run's, up to it
            // (named checkpoints are used as given, also as a timeline's end).
            let (run_dir, last) = if request.source.join(checkpoint::CHECKPOINTS_DIR).is_dir() {
                (request.source.clone(), None)
            } else {
                let ckpt = checkpoint::resolve_checkpoint(&request.source)?;
                let state = checkpoint::read_state(&ckpt)?;
                let run = checkpoint::run_dir_of(&ckpt).unwrap_or(request.source.clone());
                (run, Some((ckpt, state)))
            };
            // Checkpoints are named by position: those after the named one are not looked at.
            let end = last
                .as_ref()
                .map(|(_, state)| checkpoint::checkpoint_name(state.images_shown));
            let before_the_end = |path: &std::path::Path| {
                end.as_ref().is_none_or(|end| {
                    path.file_name().and_then(|n| n.to_str()) <= Some(end.as_str())
                })
            };
            // A checkpoint of a branch an earlier resume set aside: the run's checkpoints up to
            // where the branch left it (none when that past is not known), then the branch's own.
            let branch = last
                .as_ref()
                .and_then(|(ckpt, _)| checkpoint::abandoned_branch_of(ckpt));
            let (past_of, past_up_to, own, unknown_past) = match &branch {
                None => (run_dir.clone(), None, Vec::new(), None),
                Some((run, folder)) => {
                    let (point, why) = checkpoint::branch_history(run, folder);
                    let own = checkpoint::list_checkpoints_in(folder)?;
                    (run.clone(), Some(point.unwrap_or_default()), own, why)
                }
            };
            let in_past = |path: &Path| {
                past_up_to.as_ref().is_none_or(|up_to| {
                    path.file_name().and_then(|n| n.to_str()) <= Some(up_to.as_str())
                })
            };
            let listing: Vec<PathBuf> = checkpoint::list_checkpoints(&past_of)?
                .into_iter()
                .filter(|c| in_past(c))
                .chain(own)
                .collect();
            // A checkpoint that fails its checks is left out of the timeline, with a warning, as
            // is an entry named as one that is not a folder.
            let mut warnings: Vec<String> =
                checkpoint::entries_named_as_checkpoints_that_are_not_folders(&past_of)
                    .into_iter()
                    .filter(|(path, _)| in_past(path) && before_the_end(path))
                    .map(|(path, what)| {
                        format!(
                            "left out of the timeline: {} is {what}, not a checkpoint folder",
                            path.display()
                        )
                    })
                    .collect();
            warnings.extend(unknown_past);
            let mut ckpts = Vec::new();
            for ckpt in listing {
                if !before_the_end(&ckpt) {
                    continue;
                }
                match checkpoint::read_state(&ckpt) {
                    Ok(state) => ckpts.push((ckpt, state)),
                    Err(e) => warnings.push(format!("left out of the timeline: {e}")),
                }
            }
            // The named checkpoint is the last row, also where the run's listing has no place
            // for it (another name, or no run around it).
            if let Some((ckpt, state)) = last {
                let same = |p: &std::path::Path| {
                    std::fs::canonicalize(p).ok() == std::fs::canonicalize(&ckpt).ok()
                };
                ckpts.retain(|(p, s)| !same(p) && s.images_shown <= state.images_shown);
                ckpts.push((ckpt, state));
            }
            let (newest, newest_state) =
                ckpts
                    .last()
                    .cloned()
                    .ok_or_else(|| TrainError::Checkpoint {
                        path: run_dir.clone(),
                        message: "no intact checkpoints to draw a timeline from".into(),
                    })?;
            // A run's checkpoints share one network: one made with another model (copied in
            // from another run) is left out, with a warning, not drawn as one of the run's rows.
            let newest_model = checkpoint::model_config(&newest_state, &newest).ok();
            ckpts.retain(|(ckpt, state)| {
                let Some(newest_model) = &newest_model else {
                    return true;
                };
                let Ok(model) = checkpoint::model_config(state, ckpt) else {
                    // Unreadable: loading it says what is wrong.
                    return true;
                };
                let differences: Vec<String> =
                    checkpoint::differing_model_keys(&model, newest_model)
                        .into_iter()
                        .map(|(key, _, _)| format!("model.{key}"))
                        .collect();
                if !differences.is_empty() {
                    warnings.push(format!(
                        "left out of the timeline: {} was made with another model than the \
                         newest checkpoint {} ({} differ), so one of them is not this run's",
                        ckpt.display(),
                        newest.display(),
                        differences.join(", ")
                    ));
                }
                differences.is_empty()
            });
            // The newest checkpoint's images are the largest the timeline draws (a run still
            // growing has not reached its model's final resolution).
            let final_res = crate::schedule::resolution_of(newest_state.stage);
            let cols = request.seeds.len();
            // Every row is upscaled to the same cell size so resolutions line up.
            let cell = request.cell_px.max(final_res);
            limits::sheet_size(ckpts.len(), cols, cell, cell, 2).map_err(TrainError::Request)?;
            let mut rows = Vec::new();
            let mut diverged = 0;
            let mut newest = newest;
            for (ckpt, _) in &ckpts {
                // A running trainer may prune a checkpoint between the listing and here.
                let loaded = match load_generator::<B>(ckpt, request.raw_generator, device) {
                    Ok(loaded) => loaded,
                    Err(e) if !ckpt.exists() => {
                        warnings.push(format!("left out of the timeline (pruned meanwhile): {e}"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let dim = loaded.model.latent_dim;
                let latents: Vec<f32> = request
                    .seeds
                    .iter()
                    .flat_map(|&s| latent_for_seed(s, dim, request.truncation))
                    .collect();
                // A diverged checkpoint is one row of the run's history, not the end of it:
                // left out with why, the sound ones drawn (a sheet of it is an error).
                match generate_rows(&loaded, &latents, device) {
                    Ok(row) => rows.push(row),
                    Err(e @ TrainError::NonFiniteImages { .. }) => {
                        warnings.push(format!("left out of the timeline: {}: {e}", ckpt.display()));
                        diverged += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                newest = ckpt.clone();
            }
            let cells: Vec<_> = rows
                .into_iter()
                .flat_map(|r| upscale_cells(r, cell))
                .map(|im| {
                    image::imageops::resize(&im, cell, cell, image::imageops::FilterType::Nearest)
                })
                .collect();
            if cells.is_empty() {
                let message = if diverged == ckpts.len() {
                    "every checkpoint drew images that are not finite: the run's generators \
                     diverged"
                        .to_string()
                } else if diverged > 0 {
                    format!(
                        "no checkpoint to draw: {diverged} drew images that are not finite (their \
                         generators diverged), the others were pruned while the timeline was drawn"
                    )
                } else {
                    "every checkpoint was pruned while the timeline was drawn (by the trainer \
                     of a running run); try again"
                        .into()
                };
                return Err(TrainError::Checkpoint {
                    path: run_dir,
                    message,
                });
            }
            save_png(&grid(&cells, cells.len() / cols, cols, 2), &request.out)?;
            Ok(RenderOutput {
                files: vec![request.out.clone()],
                resolution: final_res,
                checkpoint: newest,
                warnings,
            })
        }
    }
}

/// Writes the growth timeline of a run to `RUN_DIR/samples/timeline.png` (used by the trainer's
/// caller and `pgan report`).
pub fn timeline_path(run_dir: &Path) -> PathBuf {
    run_dir
        .join(crate::run_dir::SAMPLES_DIR)
        .join("timeline.png")
}
