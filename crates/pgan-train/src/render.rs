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
use crate::images::{grid, save_gif, save_png, upscale_cells, HostImages};
use crate::latents::{latent_for_seed, slerp};

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
}

impl BackendJob for RenderRequest {
    type Output = RenderOutput;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<RenderOutput> {
        render::<B::InnerBackend>(&self, &device)
    }
}

fn generate_rows<B: Backend>(
    loaded: &LoadedGenerator<B>,
    latents: Vec<f32>,
    device: &B::Device,
) -> HostImages {
    let dim = loaded.model.latent_dim;
    let n = latents.len() / dim;
    let z = Tensor::<B, 2>::from_data(TensorData::new(latents, [n, dim]), device);
    HostImages::from_tensor(
        loaded
            .generator
            .forward(z, loaded.state.stage, loaded.state.alpha),
    )
}

fn render<B: Backend>(request: &RenderRequest, device: &B::Device) -> Result<RenderOutput> {
    if request.seeds.is_empty() {
        return Err(TrainError::Config {
            path: None,
            message: "no seeds to render".into(),
        });
    }
    if let Some(parent) = request.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(crate::error::io_err(parent, "create"))?;
    }
    match &request.kind {
        RenderKind::Sheet { rows, cols } => {
            let ckpt = checkpoint::resolve_checkpoint(&request.source)?;
            let loaded = load_generator::<B>(&ckpt, request.raw_generator, device)?;
            let dim = loaded.model.latent_dim;
            let seeds: Vec<u64> = request
                .seeds
                .iter()
                .copied()
                .cycle()
                .take(rows * cols)
                .collect();
            let latents = seeds
                .iter()
                .flat_map(|&s| latent_for_seed(s, dim, request.truncation))
                .collect();
            let images = generate_rows(&loaded, latents, device);
            let cells = upscale_cells(images.to_rgb_all(), request.cell_px);
            save_png(&grid(&cells, *rows, *cols, 2), &request.out)?;
            Ok(RenderOutput {
                files: vec![request.out.clone()],
                resolution: images.shape[2] as u32,
                checkpoint: ckpt,
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
            let mut latents = Vec::new();
            let mut frames = 0;
            for pair in keys.windows(2) {
                for k in 0..steps {
                    latents.extend(slerp(&pair[0], &pair[1], k as f32 / steps as f32));
                    frames += 1;
                }
            }
            latents.extend(keys.last().expect("at least one seed").iter());
            frames += 1;
            let images = generate_rows(&loaded, latents, device);
            let cells = upscale_cells(images.to_rgb_all(), request.cell_px);
            save_png(&grid(&cells, 1, frames, 2), &request.out)?;
            let mut files = vec![request.out.clone()];
            if *gif {
                let gif_path = request.out.with_extension("gif");
                save_gif(&cells, 80, &gif_path)?;
                files.push(gif_path);
            }
            Ok(RenderOutput {
                files,
                resolution: images.shape[2] as u32,
                checkpoint: ckpt,
            })
        }
        RenderKind::Timeline => {
            let run_dir = if request.source.join(checkpoint::CHECKPOINTS_DIR).is_dir() {
                request.source.clone()
            } else {
                let ckpt = checkpoint::resolve_checkpoint(&request.source)?;
                checkpoint::run_dir_of(&ckpt).unwrap_or(request.source.clone())
            };
            let ckpts = checkpoint::list_checkpoints(&run_dir)?;
            let newest = ckpts
                .last()
                .cloned()
                .ok_or_else(|| TrainError::Checkpoint {
                    path: run_dir.clone(),
                    message: "no checkpoints to draw a timeline from".into(),
                })?;
            let cols = request.seeds.len();
            let mut rows = Vec::new();
            let mut final_res = 4;
            for ckpt in &ckpts {
                let loaded = load_generator::<B>(ckpt, request.raw_generator, device)?;
                let dim = loaded.model.latent_dim;
                final_res = loaded.model.resolution;
                let latents = request
                    .seeds
                    .iter()
                    .flat_map(|&s| latent_for_seed(s, dim, request.truncation))
                    .collect();
                rows.push(generate_rows(&loaded, latents, device).to_rgb_all());
            }
            // Every row is upscaled to the same cell size so resolutions line up.
            let cell = request.cell_px.max(final_res);
            let cells: Vec<_> = rows
                .into_iter()
                .flat_map(|r| upscale_cells(r, cell))
                .map(|im| {
                    image::imageops::resize(&im, cell, cell, image::imageops::FilterType::Nearest)
                })
                .collect();
            save_png(&grid(&cells, ckpts.len(), cols, 2), &request.out)?;
            Ok(RenderOutput {
                files: vec![request.out.clone()],
                resolution: final_res,
                checkpoint: newest,
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
