//! Throughput of `pgan_data::prepare` on a folder of photo-like JPEGs.
//!
//! ```text
//! cargo bench -p pgan-data --bench prepare_throughput
//! PGAN_BENCH_DIR=/tmp/photos PGAN_BENCH_N=500 PGAN_BENCH_RES=256,512 cargo bench ...
//! ```
//! `PGAN_BENCH_DIR` is filled with `PGAN_BENCH_N` synthetic 640x480 JPEGs if
//! empty or missing (default: a temporary folder), so the same folder can be
//! fed to `scripts/bench_prepare_pil.py`. Outputs go to `PGAN_BENCH_OUT`
//! (default: the temporary folder, deleted at exit). Prints one JSON line
//! per resolution.

mod common;

use std::path::PathBuf;

use pgan_data::{prepare, PrepareOptions};

fn main() {
    let n: u32 = common::env_or("PGAN_BENCH_N", 500);
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = std::env::var_os("PGAN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("photos"));
    common::ensure_jpeg_folder(&input, n, 640, 480);
    let resolutions: Vec<u32> = std::env::var("PGAN_BENCH_RES")
        .unwrap_or_else(|_| "256,512".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("PGAN_BENCH_RES: comma-separated resolutions")
        })
        .collect();

    for res in resolutions {
        let out_dir = std::env::var_os("PGAN_BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| tmp.path().to_path_buf());
        let output = out_dir.join(format!("bench_{res}.pgan"));
        let mut opts = PrepareOptions::new(&input, &output, res);
        opts.force = true;
        let s = prepare(&opts).unwrap_or_else(|e| panic!("prepare failed: {e}"));
        let raw_top = s.written as u64 * res as u64 * res as u64 * 3;
        println!(
            "{{\"bench\":\"prepare\",\"images\":{},\"source\":\"{}\",\"resolution\":{res},\"threads\":{},\"seconds\":{:.3},\"images_per_sec\":{:.1},\"bytes\":{},\"raw_top_bytes\":{raw_top},\"size_ratio\":{:.4}}}",
            s.written,
            input.display(),
            rayon::current_num_threads(),
            s.elapsed.as_secs_f64(),
            s.images_per_sec,
            s.bytes,
            s.bytes as f64 / raw_top as f64,
        );
    }
}
