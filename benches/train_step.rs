//! Training-step throughput per resolution: the real loop (data, D step with penalty, G step,
//! EMA) held at one resolution, timed from `metrics.jsonl` after a warm-up tick.
//!
//! ```sh
//! cargo bench -p pgan-train --bench train_step                          # CPU-sized config
//! PGAN_BENCH_BACKEND=cuda cargo bench -p pgan-train --features cuda --bench train_step -- --paper
//! ```
//! Environment: `PGAN_BENCH_BACKEND` (cpu|wgpu|cuda), `PGAN_BENCH_MAX_RES` (default 32),
//! `PGAN_BENCH_STEPS` (timed steps per resolution, default 20), `PGAN_BENCH_BATCH`.
//! Prints one JSON line per resolution.

use std::path::Path;

use pgan_train::config::TrainConfig;
use pgan_train::{train, BackendKind, TrainOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let paper = args.iter().any(|a| a == "--paper");
    let backend: BackendKind = std::env::var("PGAN_BENCH_BACKEND")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .expect("PGAN_BENCH_BACKEND is cpu, wgpu or cuda");
    let max_res: u32 = std::env::var("PGAN_BENCH_MAX_RES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let steps: u64 = std::env::var("PGAN_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);

    let dir = tempfile::tempdir().expect("temp dir");
    let data = synthetic_dataset(dir.path(), max_res);
    let mut res = 4;
    while res <= max_res {
        // The CPU-sized config of the issue: fmap_base 2048, fmap_max 128, latent 128, batch 16;
        // --paper: the paper's widths at batch 4 (GPU).
        let (preset, default_batch) = if paper {
            ("paper", 4usize)
        } else {
            ("cpu-small", 16usize)
        };
        // PGAN_BENCH_BATCH: e.g. the official 1-GPU minibatch instead of the issue's batch 4.
        let batch: usize = std::env::var("PGAN_BENCH_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_batch);
        let tick_images = steps * batch as u64;
        let text = format!(
            r#"
[run]
seed = 1
out_dir = "{out}"
backend = "{backend}"
tick_kimg = {tick}
checkpoint_ticks = 1000
sample_ticks = 1000
progress = false
[data]
path = "{data}"
[model]
preset = "{preset}"
resolution = {res}
[schedule]
start_resolution = {res}
total_kimg = {total}
minibatch_default = {batch}
"#,
            out = dir.path().join("runs").display(),
            data = data.display(),
            tick = tick_images as f64 / 1000.0,
            total = 2.0 * tick_images as f64 / 1000.0,
        );
        let config = TrainConfig::from_toml_str(&text).expect("bench config");
        let summary = train(TrainOptions::new(config)).expect("training run");
        let metrics =
            std::fs::read_to_string(summary.run_dir.join("metrics.jsonl")).expect("metrics");
        // The second tick: kernels compiled, caches warm.
        let row: serde_json::Value =
            serde_json::from_str(metrics.lines().nth(1).expect("two ticks")).expect("json row");
        let img_per_s = row["Speed/img_per_s"].as_f64().expect("speed");
        println!(
            "{}",
            serde_json::json!({
                "bench": "train_step",
                "backend": backend.to_string(),
                "preset": preset,
                "resolution": res,
                "batch": batch,
                "steps": steps,
                "ms_per_step": 1000.0 * batch as f64 / img_per_s,
                "img_per_s": img_per_s,
                "sec_per_kimg": 1000.0 / img_per_s,
                "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            })
        );
        res *= 2;
    }
}

/// 64 random-noise images at `resolution`, prepared into a pyramid.
fn synthetic_dataset(dir: &Path, resolution: u32) -> std::path::PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for k in 0..64 {
        let img = image::RgbImage::from_fn(resolution, resolution, |_, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
        });
        img.save(images.join(format!("{k}.png"))).unwrap();
    }
    let out = dir.join("bench.pgan");
    pgan_data::prepare(&pgan_data::PrepareOptions {
        input_dir: images,
        output: out.clone(),
        resolution,
        channels: 3,
        fit: pgan_data::Fit::CenterCrop,
        background: [0, 0, 0],
        min_size: None,
        shuffle_seed: None,
        force: false,
        progress: false,
    })
    .expect("prepare");
    out
}
