//! The CPU convolution kernels of `pgan_flex::cpu_conv` alone, at the 3x3 128→128 layer shape
//! of the CPU-sized config (batch 16) at each resolution: forward, input gradient and weight
//! gradient, in ms and GFLOP/s (2·N·C_out·C_in·9·H·W flops per pass).
//!
//! `cargo bench -p pgan-flex --bench conv_kernels`
//!
//! Environment: `PGAN_BENCH_BATCH` (default 16), `PGAN_BENCH_CHANNELS` (default 128),
//! `PGAN_BENCH_RESOLUTIONS` (default `4,8,16,32`). Prints one
//! JSON object per line.

use std::time::{Duration, Instant};

use pgan_flex::cpu_conv::{self, ConvShape};

/// Median wall time of `f` in ms, after one warm-up call; at least 5 runs, more while under
/// ~1 s in total (at most 50).
fn time_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < Duration::from_secs(1) && samples.len() < 50) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn fill(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env("PGAN_BENCH_BATCH", 16);
    let c = env("PGAN_BENCH_CHANNELS", 128);
    let resolutions: Vec<usize> = std::env::var("PGAN_BENCH_RESOLUTIONS")
        .unwrap_or_else(|_| "4,8,16,32".into())
        .split(',')
        .map(|r| {
            r.trim()
                .parse()
                .expect("PGAN_BENCH_RESOLUTIONS: comma-separated sizes")
        })
        .collect();
    for res in resolutions {
        let s = ConvShape {
            n,
            c_in: c,
            c_out: c,
            h: res,
            w: res,
            k: 3,
        };
        let x = fill(n * c * res * res, 1);
        let w = fill(c * c * 9, 2);
        let b = fill(c, 3);
        let g = fill(n * c * res * res, 4);
        let gflop = 2.0 * (n * c * c * 9 * res * res) as f64 / 1e9;
        type Pass<'a> = (&'static str, Box<dyn Fn() + 'a>);
        let passes: [Pass; 3] = [
            (
                "forward",
                Box::new(|| {
                    std::hint::black_box(cpu_conv::forward(s, &x, &w, 1.0, Some(&b)));
                }),
            ),
            (
                "input_grad",
                Box::new(|| {
                    std::hint::black_box(cpu_conv::input_grad(s, &g, &w, 1.0));
                }),
            ),
            (
                "weight_grad",
                Box::new(|| {
                    std::hint::black_box(cpu_conv::weight_grad(s, &x, &g, 1.0));
                }),
            ),
        ];
        for (pass, f) in passes {
            let ms = time_ms(f);
            println!(
                "{}",
                serde_json::json!({
                    "bench": "conv_kernels",
                    "pass": pass,
                    "resolution": res,
                    "batch": n,
                    "channels": c,
                    "ms": (ms * 1000.0).round() / 1000.0,
                    "gflop_per_s": (gflop / (ms / 1e3) * 10.0).round() / 10.0,
                    "threads": rayon::current_num_threads(),
                })
            );
        }
    }
}
