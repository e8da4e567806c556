//! Gradient all-reduce time per training step for the paper networks (Karras et al. 2018,
//! 1024x1024: G 23,086,795 and D 23,087,249 parameters), on peers that are threads of this
//! process on the CPU, through burn-collective's local all-reduce as the trainer calls it
//! (`pgan_train::distributed`: one flattened vector per network, mean over the peers).
//!
//! ```sh
//! cargo bench -p pgan-train --features collective --bench allreduce
//! PGAN_BENCH_PEERS=2,4 PGAN_BENCH_STEPS=5 cargo bench -p pgan-train --features collective --bench allreduce
//! ```
//! Prints one JSON line per peer count: the floats and bytes per step, the seconds per step
//! (median over `PGAN_BENCH_STEPS` steps after one warm-up), and the bytes per second that makes.
//! On one CPU this is memory bandwidth, not a network: it is the overhead a data-parallel CPU
//! run pays, and the baseline for the scaling model in docs/BENCHMARKS.md.

use std::time::Instant;

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use pgan_model::ModelConfig;

type B = Flex;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{name}={v:?}: expected numbers"))
                })
                .collect()
        })
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    let device = Default::default();
    let model = ModelConfig::paper(1024);
    let g_params = model.init_generator::<B>(&device).num_params();
    let d_params = model.init_discriminator::<B>(&device).num_params();
    let steps = env_list("PGAN_BENCH_STEPS", &[5])[0].max(1);
    for peers in env_list("PGAN_BENCH_PEERS", &[2, 4]) {
        burn_collective::reset_collective::<B>();
        let config = CollectiveConfig::default().with_num_devices(peers);
        let times: Vec<Vec<f64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..peers)
                .map(|rank| {
                    let config = config.clone();
                    s.spawn(move || {
                        let device = Default::default();
                        let id = PeerId(rank as u32);
                        burn_collective::register::<B>(id, device, config).unwrap();
                        let mut per_step = Vec::new();
                        for _ in 0..steps + 1 {
                            // A step all-reduces D's gradients, then G's (made beforehand,
                            // as backward passes would have).
                            let grads: Vec<_> = [d_params, g_params]
                                .map(|n| Tensor::<B, 1>::full([n], rank as f32, &device))
                                .into();
                            let started = Instant::now();
                            for grads in grads {
                                let out = burn_collective::all_reduce::<B>(
                                    id,
                                    grads.into_primitive().tensor(),
                                    ReduceOperation::Mean,
                                )
                                .unwrap();
                                let out =
                                    Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(out));
                                // Wait for the result as the optimizer step would.
                                let _ = out.slice(0..1).into_data();
                            }
                            per_step.push(started.elapsed().as_secs_f64());
                        }
                        per_step.remove(0);
                        per_step
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // A step ends when the slowest peer has its gradients.
        let mut step_s: Vec<f64> = (0..steps)
            .map(|i| times.iter().map(|t| t[i]).fold(0.0, f64::max))
            .collect();
        step_s.sort_by(f64::total_cmp);
        let median = step_s[steps / 2];
        let floats = g_params + d_params;
        let bytes = floats * 4;
        println!(
            "{}",
            serde_json::json!({
                "bench": "allreduce",
                "backend": "cpu",
                "peers": peers,
                "strategy": "local tree(2)",
                "floats_per_step": floats,
                "bytes_per_step": bytes,
                "steps": steps,
                "median_s_per_step": median,
                "gradient_bytes_per_s": bytes as f64 / median,
                "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            })
        );
    }
    burn_collective::reset_collective::<B>();
}
