//! Throughput of `BatchSampler::next_batch` (u8 HWC mmap -> f32 NCHW).
//!
//! ```text
//! cargo bench -p pgan-data --bench loader_throughput
//! PGAN_BENCH_FILE=data.pgan cargo bench -p pgan-data --bench loader_throughput
//! ```
//! Without `PGAN_BENCH_FILE` a 512x512 pyramid of `PGAN_BENCH_N` (default
//! 200) synthetic photos is prepared first. Each resolution is measured on
//! one thread and on all threads, after a warm-up epoch (so the page cache
//! is hot), with batch 16, both with `next_batch` (fresh allocation per
//! batch) and `next_batch_into` (reused buffer). Prints one JSON line per
//! measurement.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgan_data::{prepare, Batch, BatchSampler, PrepareOptions, PyramidReader};

const BATCH: usize = 16;
const MIN_TIME: Duration = Duration::from_millis(1500);

fn measure(reader: &PyramidReader, res: u32, fade: Option<f32>, reuse: bool) -> f64 {
    let mut sampler = BatchSampler::new(reader.len(), 7, true);
    // Warm-up: touch every page of the level(s) once.
    for _ in 0..reader.len().div_ceil(BATCH) {
        std::hint::black_box(sampler.next_batch(reader, res, BATCH, fade).expect("batch"));
    }
    let start = Instant::now();
    let mut images = 0usize;
    let mut batch = Batch {
        data: Vec::new(),
        shape: [0; 4],
    };
    while start.elapsed() < MIN_TIME {
        if reuse {
            sampler
                .next_batch_into(reader, res, BATCH, fade, &mut batch)
                .expect("batch");
        } else {
            batch = sampler.next_batch(reader, res, BATCH, fade).expect("batch");
        }
        std::hint::black_box(&batch.data);
        images += BATCH;
    }
    images as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = match std::env::var_os("PGAN_BENCH_FILE") {
        Some(p) => PathBuf::from(p),
        None => {
            let input = tmp.path().join("photos");
            common::ensure_jpeg_folder(&input, common::env_or("PGAN_BENCH_N", 200), 640, 480);
            let output = tmp.path().join("loader.pgan");
            prepare(&PrepareOptions::new(&input, &output, 512))
                .unwrap_or_else(|e| panic!("prepare failed: {e}"));
            output
        }
    };
    let reader = PyramidReader::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let all = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");

    let mut cases: Vec<(u32, Option<f32>)> = [64, 256, 512]
        .into_iter()
        .filter(|r| reader.levels().contains(r))
        .map(|r| (r, None))
        .collect();
    if reader.levels().contains(&256) {
        cases.push((256, Some(0.5)));
    }
    for (res, fade) in cases {
        for (threads, reuse) in [(1, false), (1, true), (all, false), (all, true)] {
            let ips = if threads == 1 {
                one.install(|| measure(&reader, res, fade, reuse))
            } else {
                measure(&reader, res, fade, reuse)
            };
            println!(
                "{{\"bench\":\"loader\",\"resolution\":{res},\"batch\":{BATCH},\"fade\":{},\"reuse_buffer\":{reuse},\"threads\":{threads},\"images_per_sec\":{ips:.1},\"images_per_sec_per_thread\":{:.1}}}",
                fade.is_some(),
                ips / threads as f64,
            );
        }
    }
}
