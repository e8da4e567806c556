//! One training step (Karras et al. 2018, sec. 3 and appendix A.1): a D step on a minibatch of
//! reals and of fakes from the current G, then a G step through D with D's weights frozen, then
//! the EMA of G's weights. The D and G losses are formed in [`loss`](crate::loss).
//!
//! A step reads nothing back from the device: its losses, penalty, scores and gradient norms
//! go into the tick's [`StepValues`](crate::stats::StepValues) as device tensors, and the tick's
//! end reads them and checks them for NaN/Inf (`recovery.rs`).

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::Rng;

use super::Trainer;
use crate::config::LossConfig;
use crate::ema::update_generator_ema;
use crate::error::Result;
use crate::instance_noise::{add_noise, sigma_at};
use crate::latents::latent_values;
use crate::loss::{discriminator_loss, generator_loss, DiscriminatorStats};
use crate::nets::Nets;
use crate::schedule::{Phase, PhaseKind};
use crate::stats::StepPosition;

mod feature_matching;
mod ttur;
mod turn;

pub(crate) use turn::{process_turn, Turn};

impl<B: AutodiffBackend> Trainer<B> {
    /// One D step, one G step and the EMA update, nothing read back: the losses and gradient
    /// norms stay on the device until the tick's end. The host draws the minibatch and every random number
    /// of the step; each peer ([`distributed`](crate::distributed)) trains on its share.
    pub(super) fn step(&mut self, phase: &Phase) -> Result<()> {
        let (stage, alpha, n) = (phase.stage, phase.alpha, phase.batch);
        let lr = phase.lr * self.lr_multiplier();
        let sigma = sigma_at(&self.config.instance_noise, self.state.images_shown);
        // TTUR: the D updates beyond the first (`optim.d_steps`), each on its own reals
        // (one device only: the config refuses d_steps > 1 with several).
        let mut extra_d_flags = None;
        for _ in 1..self.config.optim.d_steps {
            let flag = self.extra_d_step(phase, lr, sigma)?;
            extra_d_flags = Some(match extra_d_flags {
                Some(sum) => sum + flag,
                None => flag,
            });
        }
        let fade = (phase.kind == PhaseKind::Fade).then_some(alpha);
        let batch = self
            .state
            .sampler
            .next_batch(&self.reader, phase.resolution, n, fade)?;
        let dim = self.model.latent_dim;
        let image_len: usize = batch.shape.iter().product();
        // Drawn in the order the single-device step always drew them.
        let rng = &mut self.state.rng;
        let noise_reals = noise_values(sigma, image_len, rng);
        let latents_d = latent_values(rng, n * dim, None);
        let noise_fakes_d = noise_values(sigma, image_len, rng);
        let mix: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
        let latents_g = latent_values(rng, n * dim, None);
        let noise_fakes_g = noise_values(sigma, image_len, rng);
        let inputs = StepInputs {
            reals: batch.data,
            reals_shape: batch.shape,
            noise_reals,
            latents_d,
            noise_fakes_d,
            mix,
            latents_g,
            noise_fakes_g,
            latent_dim: dim,
            stage,
            alpha,
            lr_d: lr * self.config.optim.lr_d_mult,
            lr_g: lr * self.config.optim.lr_g_mult,
            feature_matching: self.config.loss.feature_matching,
        };
        let out = self
            .peers
            .step(&mut self.nets, inputs, &self.config.loss, &self.device)?;

        // TTUR's extra D updates' finiteness flags join the D gradient norm (0 or NaN).
        let mut d_grad_norm = out.d_grad_norm;
        if let Some(flags) = extra_d_flags {
            d_grad_norm = d_grad_norm + flags;
        }

        // EMA of G's weights (per-step decay, or from a half-life in kimg).
        let beta = self
            .config
            .ema
            .beta_for_batch(n * self.config.optim.d_steps as usize);
        let ema = std::mem::replace(&mut self.nets.g_ema, self.nets.g.valid());
        self.nets.g_ema = update_generator_ema::<B>(ema, &self.nets.g, beta, stage);

        let at = StepPosition {
            step: self.state.step + 1,
            images_shown: self.state.images_shown,
        };
        self.state.step += 1;
        let d_stats = out.d_stats;
        let values = [
            d_stats.loss,
            out.loss_g,
            d_stats.penalty,
            d_stats.drift,
            out.loss_g_matching,
            d_stats.penalty_grad_norm,
            d_stats.real_score,
            d_stats.fake_score,
            d_grad_norm,
            out.g_grad_norm,
        ];
        self.tick.steps.push(values, at);
        self.peers.report_timings(&mut self.tick.stats);
        Ok(())
    }

    /// Latents ~ N(0, I) from the checkpointed host RNG, on the inner backend.
    fn latents(&mut self, n: usize) -> Tensor<B::InnerBackend, 2> {
        let dim = self.model.latent_dim;
        let values = latent_values(&mut self.state.rng, n * dim, None);
        Tensor::from_data(TensorData::new(values, [n, dim]), &self.device)
    }

    /// WGAN-GP interpolation factors ~ U[0, 1), one per sample.
    fn uniform(&mut self, n: usize) -> Tensor<B, 4> {
        let values: Vec<f32> = (0..n).map(|_| self.state.rng.random::<f32>()).collect();
        Tensor::from_data(TensorData::new(values, [n, 1, 1, 1]), &self.device)
    }
}

/// Everything one step trains on, drawn on the host for the whole (global) minibatch.
#[derive(Clone, Debug)]
pub(crate) struct StepInputs {
    /// The reals, NCHW.
    pub reals: Vec<f32>,
    pub reals_shape: [usize; 4],
    /// Instance noise (σ·N(0, 1), the shape of `reals`) added to the reals, to the D step's
    /// fakes and to the G step's fakes; `None` when σ is 0.
    pub noise_reals: Option<Vec<f32>>,
    pub noise_fakes_d: Option<Vec<f32>>,
    pub noise_fakes_g: Option<Vec<f32>>,
    /// Latents of the D step's fakes, `n * latent_dim`.
    pub latents_d: Vec<f32>,
    /// WGAN-GP interpolation factors, one per sample.
    pub mix: Vec<f32>,
    /// Latents of the G step.
    pub latents_g: Vec<f32>,
    pub latent_dim: usize,
    pub stage: usize,
    pub alpha: f32,
    /// The learning rates of the D and G updates (schedule x cooldown x TTUR multipliers).
    pub lr_d: f64,
    pub lr_g: f64,
    /// `loss.feature_matching`'s weight (0: off).
    pub feature_matching: f32,
}

impl StepInputs {
    /// Samples in this minibatch.
    pub fn batch(&self) -> usize {
        self.reals_shape[0]
    }

    /// Peer `rank`'s share of `peers`: the contiguous `batch / peers` samples from
    /// `rank * batch / peers` on (the config check makes `peers` divide every batch).
    #[cfg_attr(not(feature = "collective"), allow(dead_code))]
    pub fn share(&self, rank: usize, peers: usize) -> StepInputs {
        let per = self.batch() / peers;
        let image = self.reals.len() / self.batch();
        let dim = self.latent_dim;
        let rows = rank * per..(rank + 1) * per;
        let part = |v: &[f32], width: usize| v[rows.start * width..rows.end * width].to_vec();
        let [_, c, h, w] = self.reals_shape;
        let noise = |v: &Option<Vec<f32>>| v.as_deref().map(|v| part(v, image));
        StepInputs {
            reals: part(&self.reals, image),
            reals_shape: [per, c, h, w],
            noise_reals: noise(&self.noise_reals),
            noise_fakes_d: noise(&self.noise_fakes_d),
            noise_fakes_g: noise(&self.noise_fakes_g),
            latents_d: part(&self.latents_d, dim),
            mix: part(&self.mix, 1),
            latents_g: part(&self.latents_g, dim),
            latent_dim: dim,
            stage: self.stage,
            alpha: self.alpha,
            lr_d: self.lr_d,
            lr_g: self.lr_g,
            feature_matching: self.feature_matching,
        }
    }
}

/// What one peer's step measured: device tensors of shape `[1]` on the peer's device, and its
/// host timings.
#[derive(Clone, Debug)]
pub(crate) struct PeerStepOutput<B: AutodiffBackend> {
    pub d_stats: DiscriminatorStats<B::InnerBackend>,
    /// The G loss, and of it the weighted feature-matching term (0 when it is off).
    pub loss_g: Tensor<B::InnerBackend, 1>,
    pub loss_g_matching: Tensor<B::InnerBackend, 1>,
    /// Norms of the gradients the optimizers applied (after the all-reduce).
    pub d_grad_norm: Tensor<B::InnerBackend, 1>,
    pub g_grad_norm: Tensor<B::InnerBackend, 1>,
    /// Seconds the whole step took on this peer, and of those, in the gradient all-reduce.
    pub step_s: f64,
    pub sync_s: f64,
}

/// Makes the gradients of a backward pass the ones every peer applies (the all-reduced mean
/// over peers); [`NoSync`] for one device.
pub(crate) trait GradSync {
    fn sync<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams>;
}

/// One device: the gradients stay as they are.
pub(crate) struct NoSync;

impl GradSync for NoSync {
    fn sync<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        _module: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams> {
        Ok(grads)
    }
}

/// One peer's D step and G step on `inputs` (its share), with the gradients made common by
/// `sync` before each optimizer step. The EMA is the caller's (peer 0's) business. The step
/// holds `turn` except while it waits in `sync` (see [`Turn`]).
///
/// `inputs` is taken by value: its host vectors become the step's tensors without a copy.
pub(crate) fn peer_step<B: AutodiffBackend, S: GradSync>(
    nets: &mut Nets<B>,
    inputs: StepInputs,
    loss: &LossConfig,
    device: &B::Device,
    sync: &S,
    turn: &Turn<'_>,
) -> Result<PeerStepOutput<B>> {
    turn.take();
    let started = std::time::Instant::now();
    let n = inputs.batch();
    let StepInputs {
        reals,
        reals_shape: shape,
        noise_reals,
        latents_d,
        noise_fakes_d,
        mix,
        latents_g,
        noise_fakes_g,
        latent_dim: dim,
        stage,
        alpha,
        lr_d,
        lr_g,
        feature_matching,
    } = inputs;
    // x + σ·N(0, 1), as `instance_noise::add_noise` forms it.
    let noisy = |x: Tensor<B, 4>, noise: Option<Vec<f32>>| match noise {
        Some(values) => x + Tensor::from_data(TensorData::new(values, shape), device),
        None => x,
    };
    let reals = Tensor::<B, 4>::from_data(TensorData::new(reals, shape), device);
    let reals = noisy(reals, noise_reals);
    let matching_reals = (feature_matching > 0.0).then(|| reals.clone());

    // D step: fakes from the current G without building G's graph.
    let latents =
        Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(latents_d, [n, dim]), device);
    let fakes = Tensor::<B, 4>::from_inner(nets.g.valid().forward(latents, stage, alpha));
    let fakes = noisy(fakes, noise_fakes_d);
    let mix = Tensor::from_data(TensorData::new(mix, [n, 1, 1, 1]), device);
    let (loss_d, d_stats) = discriminator_loss(loss, &nets.d, reals, fakes, mix, stage, alpha);
    let grads = GradientsParams::from_grads(loss_d.backward(), &nets.d);
    turn.give_up();
    let grads = sync.sync(&nets.d, grads)?;
    turn.take();
    let d_grad_norm = grad_norm(&nets.d, &grads, device);
    let d = nets.d.clone();
    nets.d = nets.optim_d.step(lr_d, d, grads);

    // G step: D's parameters are frozen so only G's gradients are computed.
    let latents = Tensor::<B, 2>::from_data(TensorData::new(latents_g, [n, dim]), device);
    let fakes = nets.g.forward(latents, stage, alpha);
    let fakes = noisy(fakes, noise_fakes_g);
    let d_frozen = nets.d.clone().no_grad();
    let (scores, matching) = feature_matching::g_scores(
        feature_matching,
        &d_frozen,
        fakes,
        matching_reals,
        stage,
        alpha,
    );
    let mut loss_g = generator_loss(loss, scores);
    let loss_g_matching = match matching {
        Some(term) => {
            loss_g = loss_g + term.clone();
            term.inner()
        }
        None => Tensor::zeros([1], device),
    };
    let loss_g_value = loss_g.clone().inner();
    let grads = GradientsParams::from_grads(loss_g.backward(), &nets.g);
    turn.give_up();
    let grads = sync.sync(&nets.g, grads)?;
    turn.take();
    let g_grad_norm = grad_norm(&nets.g, &grads, device);
    let g = nets.g.clone();
    nets.g = nets.optim_g.step(lr_g, g, grads);
    turn.give_up();

    Ok(PeerStepOutput {
        d_stats,
        loss_g: loss_g_value,
        loss_g_matching,
        d_grad_norm,
        g_grad_norm,
        step_s: started.elapsed().as_secs_f64(),
        sync_s: 0.0,
    })
}

/// Instance noise σ·N(0, 1) for `count` values from the step's RNG, drawn as
/// `instance_noise::add_noise` draws it; nothing (and no draw) when σ is 0.
fn noise_values(sigma: f32, count: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Option<Vec<f32>> {
    if sigma == 0.0 {
        return None;
    }
    let mut values = latent_values(rng, count, None);
    for v in &mut values {
        *v *= sigma;
    }
    Some(values)
}

/// L2 norm of a module's gradients, as a device tensor of shape `[1]`.
fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
    device: &B::Device,
) -> Tensor<B::InnerBackend, 1> {
    struct SumSquares<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for SumSquares<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let s = g.powf_scalar(2.0).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    let mut v = SumSquares::<B> { grads, total: None };
    module.visit(&mut v);
    v.total
        .map_or_else(|| Tensor::zeros([1], device), Tensor::sqrt)
}
