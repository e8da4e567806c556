//! Training-step throughput per resolution: the real loop (data, D step with the exact penalty,
//! G step, EMA) held at one resolution, timed from `metrics.jsonl` after a warm-up tick.
//!
//! ```sh
//! cargo bench -p pgan-train --bench train_step                          # CPU-sized config
//! PGAN_BENCH_BACKEND=cuda cargo bench -p pgan-train --features cuda --bench train_step -- --paper
//! # the GPU comparison of scripts/gpu_check.sh: paper networks, gpu-256.toml's minibatches
//! PGAN_BENCH_BACKEND=cuda PGAN_BENCH_RESOLUTIONS=4,8,16,32,64,128,256,512 \
//!   PGAN_BENCH_MINIBATCH_FROM=configs/gpu-256.toml target/.../train_step-<hash> --paper
//! ```
//! Environment: `PGAN_BENCH_BACKEND` (cpu|wgpu|cuda), `PGAN_BENCH_MAX_RES` (default 32; the
//! resolutions are 4, 8, .. up to it) or `PGAN_BENCH_RESOLUTIONS` (a comma list),
//! `PGAN_BENCH_STEPS` (timed steps per resolution, default 20; the warm-up tick has as many),
//! `PGAN_BENCH_BATCH` (one minibatch for all resolutions) or `PGAN_BENCH_MINIBATCH_FROM` (a
//! training config whose `[schedule]` `minibatch` table and `minibatch_default` give the
//! minibatch per resolution). On a GPU, `PGAN_GPU_CONV` and `PGAN_GPU_FUSION` choose the
//! convolution kernels and burn's fusion (`pgan-cube`, `pgan-train`'s backend dispatch).
//! Prints one JSON line per resolution; a failed resolution prints a line with `"error"` and the
//! bench goes on with the next.

use std::collections::BTreeMap;
use std::path::Path;

use pgan_train::config::TrainConfig;
use pgan_train::{train, BackendKind, TrainOptions};

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value"))
    })
}

/// `[schedule] minibatch` and `minibatch_default` of a training config.
fn minibatch_table(path: &str) -> (BTreeMap<u32, usize>, usize) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("PGAN_BENCH_MINIBATCH_FROM: cannot read {path}: {e}"));
    let value: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: not TOML: {e}"));
    let schedule = value.get("schedule");
    let default = schedule
        .and_then(|s| s.get("minibatch_default"))
        .and_then(|v| v.as_integer())
        .unwrap_or(16) as usize;
    let mut table = BTreeMap::new();
    if let Some(t) = schedule
        .and_then(|s| s.get("minibatch"))
        .and_then(|v| v.as_table())
    {
        for (res, batch) in t {
            let res: u32 = res
                .parse()
                .unwrap_or_else(|_| panic!("{path}: minibatch key {res:?} is not a resolution"));
            let batch = batch
                .as_integer()
                .unwrap_or_else(|| panic!("{path}: minibatch of {res} is not an integer"));
            table.insert(res, batch as usize);
        }
    }
    (table, default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let paper = args.iter().any(|a| a == "--paper");
    let backend: BackendKind = std::env::var("PGAN_BENCH_BACKEND")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .expect("PGAN_BENCH_BACKEND is cpu, wgpu or cuda");
    let resolutions: Vec<u32> = match std::env::var("PGAN_BENCH_RESOLUTIONS") {
        Ok(list) => list
            .split(',')
            .map(|r| {
                r.trim()
                    .parse()
                    .expect("PGAN_BENCH_RESOLUTIONS is a comma list of powers of two")
            })
            .collect(),
        Err(_) => {
            let max_res: u32 = env("PGAN_BENCH_MAX_RES").unwrap_or(32);
            (2..=max_res.ilog2()).map(|l| 1 << l).collect()
        }
    };
    let steps: u64 = env("PGAN_BENCH_STEPS").unwrap_or(20);
    let batch_table = std::env::var("PGAN_BENCH_MINIBATCH_FROM")
        .ok()
        .map(|p| minibatch_table(&p));
    let fixed_batch: Option<usize> = env("PGAN_BENCH_BATCH");
    // The CPU-sized config of the issue: fmap_base 2048, fmap_max 128, latent 128, batch 16;
    // --paper: the paper's widths at batch 4 unless a minibatch source says otherwise.
    let (preset, default_batch) = if paper {
        ("paper", 4usize)
    } else {
        ("cpu-small", 16usize)
    };
    // `run.precision`: f32 (default) or bf16 (cuda only; elsewhere the row carries the
    // library's refusal).
    let precision = std::env::var("PGAN_BENCH_PRECISION").unwrap_or_else(|_| "f32".into());
    let conv = std::env::var("PGAN_GPU_CONV").unwrap_or_else(|_| "default".into());
    let fusion = std::env::var("PGAN_GPU_FUSION").unwrap_or_else(|_| "default".into());

    let dir = tempfile::tempdir().expect("temp dir");
    let max_res = resolutions.iter().copied().max().unwrap_or(4);
    let data = synthetic_dataset(dir.path(), max_res);
    for res in resolutions {
        let batch = fixed_batch
            .or_else(|| {
                batch_table
                    .as_ref()
                    .map(|(t, d)| t.get(&res).copied().unwrap_or(*d))
            })
            .unwrap_or(default_batch);
        let tick_images = steps * batch as u64;
        let text = format!(
            r#"
[run]
seed = 1
out_dir = "{out}"
backend = "{backend}"
precision = "{precision}"
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
[loss]
kind = "wgan-gp"
"#,
            out = dir.path().join(format!("runs-{res}")).display(),
            data = data.display(),
            tick = tick_images as f64 / 1000.0,
            total = 2.0 * tick_images as f64 / 1000.0,
        );
        let mut row = serde_json::json!({
            "bench": "train_step",
            "backend": backend.to_string(),
            "preset": preset,
            "resolution": res,
            "batch": batch,
            "steps": steps,
            "conv": conv,
            "fusion": fusion,
            "precision": precision,
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        });
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        let counts_before = pgan_cube::launch_counts();
        let config = TrainConfig::from_toml_str(&text).expect("bench config");
        let result = train(TrainOptions::new(config));
        let trained = result.is_ok();
        match result {
            Ok(summary) => {
                let metrics = std::fs::read_to_string(summary.run_dir.join("metrics.jsonl"))
                    .expect("metrics");
                // The second tick: kernels compiled, autotuned, caches warm.
                let tick: serde_json::Value =
                    serde_json::from_str(metrics.lines().nth(1).expect("two ticks"))
                        .expect("json row");
                let img_per_s = tick["Speed/img_per_s"].as_f64().expect("speed");
                row["ms_per_step"] = (1000.0 * batch as f64 / img_per_s).into();
                row["img_per_s"] = img_per_s.into();
                row["sec_per_kimg"] = (1000.0 / img_per_s).into();
                for (key, name) in [
                    ("Mem/device_peak_reserved_mb", "device_peak_reserved_mb"),
                    ("Mem/device_in_use_mb", "device_in_use_mb"),
                    ("Mem/peak_rss_mb", "peak_rss_mb"),
                ] {
                    if let Some(v) = tick.get(key) {
                        row[name] = v.clone();
                    }
                }
            }
            Err(e) => row["error"] = e.to_string().into(),
        }
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            let after = pgan_cube::launch_counts();
            row["conv_gemm_passes"] = (after.gemm - counts_before.gemm).into();
            row["conv_fallback_passes"] = (after.fallback - counts_before.fallback).into();
        }
        println!("{row}");
        // Per-resolution peaks: the next run starts from an empty pool (only after a run that
        // reached the device: without one, touching the runtime would panic in the driver).
        if trained {
            pgan_train::backend::release_device_memory(backend, 0);
        }
    }
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    for reason in pgan_cube::fallback_reasons() {
        eprintln!("implicit GEMM refused: {reason}");
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
    pgan_data::prepare(&pgan_data::PrepareOptions::new(
        images,
        out.clone(),
        resolution,
    ))
    .expect("prepare");
    out
}
