//! The extra discriminator updates of `optim.d_steps` (two time-scale training: D trained
//! harder than G, as in the official ProGAN's `D_repeats` and WGAN's n_critic). Each is the D
//! half of [`step`](super): its own minibatch of reals, fakes from the current G, instance noise
//! and the penalty; its statistics are not logged (the step's last D update, the regular one,
//! is), only checked for NaN/Inf at the tick's end with the step's (nothing is read here).

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::{add_noise, grad_norm, Trainer};
use crate::error::Result;
use crate::loss::discriminator_loss;
use crate::schedule::{Phase, PhaseKind};

impl<B: AutodiffBackend> Trainer<B> {
    /// One D update at learning rate `lr · optim.lr_d_mult` with instance noise `sigma`. Returns
    /// a device flag, `[1]`: 0 when its loss and gradient norm are finite, NaN when not.
    pub(super) fn extra_d_step(
        &mut self,
        phase: &Phase,
        lr: f64,
        sigma: f32,
    ) -> Result<Tensor<B::InnerBackend, 1>> {
        let (stage, alpha, n) = (phase.stage, phase.alpha, phase.batch);
        let fade = (phase.kind == PhaseKind::Fade).then_some(alpha);
        let batch = self
            .state
            .sampler
            .next_batch(&self.reader, phase.resolution, n, fade)?;
        let reals =
            Tensor::<B, 4>::from_data(TensorData::new(batch.data, batch.shape), &self.device);
        let reals = add_noise(reals, sigma, &mut self.state.rng);
        let latents = self.latents(n);
        let fakes = Tensor::<B, 4>::from_inner(self.nets.g.valid().forward(latents, stage, alpha));
        let fakes = add_noise(fakes, sigma, &mut self.state.rng);
        let mix = self.uniform(n);
        let (loss, stats) = discriminator_loss(
            &self.config.loss,
            &self.nets.d,
            reals,
            fakes,
            mix,
            stage,
            alpha,
        );
        let grads = GradientsParams::from_grads(loss.backward(), &self.nets.d);
        let norm = grad_norm(&self.nets.d, &grads, &self.device);
        let d = self.nets.d.clone();
        self.nets.d = self
            .nets
            .optim_d
            .step(lr * self.config.optim.lr_d_mult, d, grads);
        // x · 0 is 0 for finite x and NaN for NaN or ±Inf.
        Ok((stats.loss + norm).mul_scalar(0.0))
    }
}
