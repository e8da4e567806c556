//! One training step (Karras et al. 2018, sec. 3 and appendix A.1): a D step on a minibatch of
//! reals and of fakes from the current G, then a G step through D with D's weights frozen, then
//! the EMA of G's weights. The D and G losses are formed in [`loss`](crate::loss).

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use burn::tensor::{Tensor, TensorData};
use pgan_spec::metrics as key;
use rand::Rng;

use super::Trainer;
use crate::ema::update_ema;
use crate::error::Result;
use crate::instance_noise::{add_noise, sigma_at};
use crate::latents::latent_values;
use crate::loss::{discriminator_loss, generator_loss};
use crate::schedule::{Phase, PhaseKind};

mod feature_matching;
mod ttur;

impl<B: AutodiffBackend> Trainer<B> {
    /// One D step, one G step and the EMA update; false when a loss or a gradient norm came out
    /// NaN/Inf (the caller rolls back).
    pub(super) fn step(&mut self, phase: &Phase) -> Result<bool> {
        let (stage, alpha, n) = (phase.stage, phase.alpha, phase.batch);
        let lr = phase.lr * self.lr_multiplier();
        let sigma = sigma_at(&self.config.instance_noise, self.state.images_shown);
        // TTUR: the D updates beyond the first (`optim.d_steps`), each on its own reals.
        for _ in 1..self.config.optim.d_steps {
            if !self.extra_d_step(phase, lr, sigma)? {
                self.state.step += 1;
                return Ok(false);
            }
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
        let d_grad_norm = grad_norm(&self.nets.d, &grads);
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
        let loss_g_value: f32 = loss_g.clone().detach().into_scalar().elem::<f32>();
        let grads = GradientsParams::from_grads(loss_g.backward(), &self.nets.g);
        let g_grad_norm = grad_norm(&self.nets.g, &grads);
        let g = self.nets.g.clone();
        self.nets.g = self
            .nets
            .optim_g
            .step(lr * self.config.optim.lr_g_mult, g, grads);

        let d_loss = d_stats.loss;
        let healthy = [d_loss, loss_g_value, d_grad_norm, g_grad_norm]
            .iter()
            .all(|v| v.is_finite());
        self.state.step += 1;
        if !healthy {
            self.log.warn(format!(
                "non-finite values at step {} ({:.3} kimg): Loss/D {d_loss}, Loss/G {loss_g_value}, \
                 grad norms D {d_grad_norm} G {g_grad_norm}",
                self.state.step,
                self.state.images_shown as f64 / 1000.0
            ));
            return Ok(false);
        }

        // EMA of G's weights (per-step decay, or from a half-life in kimg).
        let beta = self
            .config
            .ema
            .beta_for_batch(n * self.config.optim.d_steps as usize);
        let ema = std::mem::replace(&mut self.nets.g_ema, self.nets.g.valid());
        self.nets.g_ema = update_ema::<B, _>(ema, &self.nets.g, beta);

        let t = &mut self.tick.stats;
        t.report(key::LOSS_D, d_loss as f64);
        t.report(key::LOSS_G, loss_g_value as f64);
        t.report(key::LOSS_D_PENALTY, d_stats.penalty as f64);
        t.report(key::LOSS_D_DRIFT, d_stats.drift as f64);
        t.report(key::PENALTY_GRAD_NORM, d_stats.penalty_grad_norm as f64);
        t.report(key::D_REAL, d_stats.real_score as f64);
        t.report(key::D_FAKE, d_stats.fake_score as f64);
        t.report(key::GRAD_D_NORM, d_grad_norm as f64);
        t.report(key::GRAD_G_NORM, g_grad_norm as f64);
        Ok(true)
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

/// L2 norm of a module's gradients.
fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &GradientsParams) -> f32 {
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
    v.total.map_or(0.0, |t| {
        let s: f32 = t.into_scalar().elem::<f32>();
        s.sqrt()
    })
}
