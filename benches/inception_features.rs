//! FID's feature extraction on the CPU: Inception-v3's `pool3` features of a batch of 8-bit
//! 64x64 images (resize to 299x299 included), as `pgan eval --fid` computes them, in images per
//! second. Weights are synthetic (network-shaped, no download): the time does not depend on
//! their values.
//!
//! `cargo bench -p pgan-inception --bench inception_features`
//!
//! The run measures pgan's kernels (`pgan_model::kernels`: pgan-flex's forward-only conv, pools
//! and concatenation), then
//! runs itself again with `PGAN_GENERIC_KERNELS=1` to measure burn's own ops (conv, pools and
//! concatenation), and
//! prints one JSON object per line: each row, then the ratio. Environment: `PGAN_BENCH_BATCH`
//! (default 32, the batch `pgan eval` uses), `PGAN_BENCH_RUNS` (default 3; the median is
//! reported).

use std::process::Command;
use std::time::Instant;

use burn::backend::Flex;
use pgan_inception::{FeatureExtractor, Images8, InceptionWeights, FEATURE_DIM};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median seconds per batch of `batch` images with this process's kernels.
fn measure(batch: usize, runs: usize) -> f64 {
    let extractor =
        FeatureExtractor::<Flex>::new(&InceptionWeights::synthetic(1), &Default::default());
    let side = 64;
    let pixels: Vec<u8> = (0..batch * side * side * 3)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let images = Images8 {
        pixels: &pixels,
        n: batch,
        height: side,
        width: side,
        channels: 3,
    };
    // Warm-up: the first call allocates the pools the later ones reuse.
    let features = extractor.features(images).expect("features");
    assert_eq!(features.len(), batch * FEATURE_DIM);
    let mut seconds: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            extractor.features(images).expect("features");
            start.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    seconds[seconds.len() / 2]
}

fn row(kernels: &str, batch: usize, seconds: f64) -> serde_json::Value {
    serde_json::json!({
        "bench": "inception_features",
        "kernels": kernels,
        "batch": batch,
        "threads": rayon::current_num_threads(),
        "s_per_batch": seconds,
        "img_per_s": batch as f64 / seconds,
    })
}

fn main() {
    let (batch, runs) = (env("PGAN_BENCH_BATCH", 32), env("PGAN_BENCH_RUNS", 3));
    if pgan_model::kernels::generic_only() {
        println!("{}", row("burn", batch, measure(batch, runs)));
        return;
    }
    let pgan = measure(batch, runs);
    println!("{}", row("pgan-flex", batch, pgan));
    // burn's conv in a process of its own: the kernel choice is read once per process.
    let exe = std::env::current_exe().expect("the bench's own path");
    let output = Command::new(exe)
        .env(pgan_model::kernels::GENERIC_KERNELS_ENV, "1")
        .output()
        .expect("running the bench with burn's kernels");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout);
    let burn: serde_json::Value = serde_json::from_str(line.trim()).expect("the burn row");
    println!("{}", line.trim());
    let burn_seconds = burn["s_per_batch"].as_f64().expect("s_per_batch");
    println!(
        "{}",
        serde_json::json!({
            "bench": "inception_features",
            "speedup_over_burn": burn_seconds / pgan,
        })
    );
}
