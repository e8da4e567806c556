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
use crate::ema::update_ema;
use crate::error::Result;
use crate::instance_noise::{add_noise, sigma_at};
use crate::latents::latent_values;
use crate::loss::{discriminator_loss, generator_loss};
use crate::schedule::{Phase, PhaseKind};
use crate::stats::StepPosition;

mod feature_matching;
mod ttur;

impl<B: AutodiffBackend> Trainer<B> {
    /// One D step, one G step and the EMA update. Its values join the tick's, unread: a NaN/Inf
    /// among them is found at the tick's end, which rolls back over the whole tick.
    pub(super) fn step(&mut self, phase: &Phase) -> Result<()> {
        let (stage, alpha, n) = (phase.stage, phase.alpha, phase.batch);
        let lr = phase.lr * self.lr_multiplier();
        let sigma = sigma_at(&self.config.instance_noise, self.state.images_shown);
        // TTUR: the D updates beyond the first (`optim.d_steps`), each on its own reals; their
        // finiteness flags (0 or NaN) join D's gradient norm, so a NaN in any of them makes the
        // step unhealthy at the tick's end.
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
        let reals =
            Tensor::<B, 4>::from_data(TensorData::new(batch.data, batch.shape), &self.device);
        let reals = add_noise(reals, sigma, &mut self.state.rng);
        let matching_reals = (self.config.loss.feature_matching > 0.0).then(|| reals.clone());

        // D step: fakes from the current G without building G's graph.
        let latents = self.latents(n);
        let fakes = self.nets.g.valid().forward(latents, stage, alpha);
        let fakes = Tensor::<B, 4>::from_inner(fakes);
        let fakes = add_noise(fakes, sigma, &mut self.state.rng);
        let mix = self.uniform(n);
        let (loss_d, d_stats) = discriminator_loss(
            &self.config.loss,
            &self.nets.d,
            reals,
            fakes,
            mix,
            stage,
            alpha,
        );
        let grads = GradientsParams::from_grads(loss_d.backward(), &self.nets.d);
        let mut d_grad_norm = grad_norm(&self.nets.d, &grads, &self.device);
        if let Some(flags) = extra_d_flags {
            // Adding 0 leaves a finite norm as it is.
            d_grad_norm = d_grad_norm + flags;
        }
        let d = self.nets.d.clone();
        self.nets.d = self
            .nets
            .optim_d
            .step(lr * self.config.optim.lr_d_mult, d, grads);

        // G step: D's parameters are frozen so only G's gradients are computed.
        let latents = Tensor::<B, 2>::from_inner(self.latents(n));
        let fakes = self.nets.g.forward(latents, stage, alpha);
        let fakes = add_noise(fakes, sigma, &mut self.state.rng);
        let d_frozen = self.nets.d.clone().no_grad();
        let (scores, matching) = self.g_scores(&d_frozen, fakes, matching_reals, stage, alpha);
        let mut loss_g = generator_loss(&self.config.loss, scores);
        if let Some(term) = matching {
            loss_g = loss_g + term;
        }
        let loss_g_value = loss_g.clone().inner();
        let grads = GradientsParams::from_grads(loss_g.backward(), &self.nets.g);
        let g_grad_norm = grad_norm(&self.nets.g, &grads, &self.device);
        let g = self.nets.g.clone();
        self.nets.g = self
            .nets
            .optim_g
            .step(lr * self.config.optim.lr_g_mult, g, grads);

        // EMA of G's weights (per-step decay, or from a half-life in kimg). A non-finite step
        // poisons it too, but the tick's end rolls all three networks back together.
        let beta = self
            .config
            .ema
            .beta_for_batch(n * self.config.optim.d_steps as usize);
        let ema = std::mem::replace(&mut self.nets.g_ema, self.nets.g.valid());
        self.nets.g_ema = update_ema::<B, _>(ema, &self.nets.g, beta);

        let at = StepPosition {
            step: self.state.step + 1,
            images_shown: self.state.images_shown,
        };
        self.state.step += 1;
        // In the order of `stats::STEP_KEYS`.
        let values = [
            d_stats.loss,
            loss_g_value,
            d_stats.penalty,
            d_stats.drift,
            d_stats.penalty_grad_norm,
            d_stats.real_score,
            d_stats.fake_score,
            d_grad_norm,
            g_grad_norm,
        ];
        self.tick.steps.push(values, at);
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
