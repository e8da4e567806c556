//! Forward+backward timings of the ProGAN networks on the CPU (burn Flex backend).
//!
//! `cargo bench -p pgan-model --bench model_step [-- --full]`
//!
//! Prints one JSON object per line:
//! - `g_step` / `d_step`: `G(z).mean()` / `D(x).mean()` forward + backward;
//! - `d_plain` vs `d_wgan_gp` / `d_r1`: a whole WGAN discriminator step
//!   (scores on reals and fakes, loss, backward) without and with the
//!   gradient penalty, and their ratio.
//!
//! Default: the CPU preset (fmap_base 2048, fmap_max 128, latent 128) at
//! batch 16 up to 32², and the paper widths at batch 4 up to 16²;
//! `--full` runs the paper widths up to 1024² (hours on a CPU).

use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use pgan_model::{penalty, Discriminator, Generator, ModelConfig};

type B = Autodiff<Flex>;

/// Median wall time of `f`, after one warm-up call; at least 3 runs, more
/// while under ~2 s in total (at most 20).
fn time_ms(mut f: impl FnMut()) -> (f64, usize) {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || (start.elapsed() < Duration::from_secs(2) && samples.len() < 20) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    (samples[samples.len() / 2], samples.len())
}

fn emit(
    bench: &str,
    preset: &str,
    res: usize,
    batch: usize,
    (ms, iters): (f64, usize),
    extra: &str,
) {
    println!(
        "{{\"bench\":\"{bench}\",\"preset\":\"{preset}\",\"resolution\":{res},\"batch\":{batch},\"median_ms\":{ms:.3},\"iters\":{iters}{extra}}}"
    );
}

fn networks(config: &ModelConfig) -> (Generator<B>, Discriminator<B>) {
    let device = Default::default();
    (
        config.init_generator(&device),
        config.init_discriminator(&device),
    )
}

fn g_and_d_steps(preset: &str, config: &ModelConfig, batch: usize, max_stage: usize) {
    let device = Default::default();
    let (g, d) = networks(config);
    for stage in 0..=max_stage {
        let res = 4 << stage;
        let z = Tensor::<B, 2>::random(
            [batch, config.latent_dim],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let x = Tensor::<B, 4>::random(
            [batch, config.num_channels, res, res],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let t = time_ms(|| {
            let grads = g.forward(z.clone(), stage, 1.0).mean().backward();
            drop(grads);
        });
        emit("g_step", preset, res, batch, t, "");
        let t = time_ms(|| {
            let grads = d.forward(x.clone(), stage, 1.0).mean().backward();
            drop(grads);
        });
        emit("d_step", preset, res, batch, t, "");
    }
}

fn penalty_overhead(preset: &str, config: &ModelConfig, batch: usize, max_stage: usize) {
    let device = Default::default();
    let (_, d) = networks(config);
    for stage in 0..=max_stage {
        let res = 4 << stage;
        let shape = [batch, config.num_channels, res, res];
        let reals = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let fakes = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let mix =
            Tensor::<B, 4>::random([batch, 1, 1, 1], Distribution::Uniform(0.0, 1.0), &device);
        let wgan_loss = || {
            d.forward(fakes.clone(), stage, 1.0).mean()
                - d.forward(reals.clone(), stage, 1.0).mean()
        };

        let plain = time_ms(|| drop(wgan_loss().backward()));
        emit("d_plain", preset, res, batch, plain, "");
        let gp = time_ms(|| {
            let p = penalty::wgan_gp(
                &d,
                reals.clone(),
                fakes.clone(),
                mix.clone(),
                stage,
                1.0,
                10.0,
            );
            drop((wgan_loss() + p.surrogate).backward());
        });
        emit(
            "d_wgan_gp",
            preset,
            res,
            batch,
            gp,
            &format!(",\"ratio_to_plain\":{:.2}", gp.0 / plain.0),
        );
        let r1 = time_ms(|| {
            let p = penalty::r1(&d, reals.clone(), stage, 1.0, 10.0);
            drop((wgan_loss() + p.surrogate).backward());
        });
        emit(
            "d_r1",
            preset,
            res,
            batch,
            r1,
            &format!(",\"ratio_to_plain\":{:.2}", r1.0 / plain.0),
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    let small = ModelConfig::cpu_small(32);
    g_and_d_steps("cpu_small", &small, 16, small.max_stage());
    penalty_overhead("cpu_small", &small, 16, small.max_stage());

    let paper = ModelConfig::paper(1024);
    let max_stage = if full { paper.max_stage() } else { 2 };
    g_and_d_steps("paper", &paper, 4, max_stage);
    penalty_overhead("paper", &paper, 4, max_stage.min(2));
}
