//! The GAN objectives, one function per network, in the shape of stylegan2-ada's `loss.py`:
//! the discriminator loss (with its penalty) and the generator loss, each returning the scalar to
//! backpropagate plus the values that go into the tick statistics.
//!
//! - WGAN-GP (ProGAN's default): D minimises D(fake) − D(real) + λ·GP + ε·D(real)²,
//!   G minimises −D(fake) (Gulrajani et al. 2017; ProGAN appendix A.1, ε = 0.001).
//! - Non-saturating logistic + R1: D minimises softplus(D(fake)) + softplus(−D(real)) + γ/2·‖∇D(real)‖²,
//!   G minimises softplus(−D(fake)) (Goodfellow et al. 2014; Mescheder et al. 2018).
//! - Non-saturating and minimax (no penalty): the same D loss; G minimises softplus(−D(fake))
//!   or, in the original saturating game, −softplus(D(fake)). `loss.real_label` smooths the reals'
//!   target of every logistic D loss. The derivations are in [`logistic`](crate::logistic).
//!
//! Penalties use the model crate's exact first-order method (forward-mode JVP), since burn's
//! autodiff cannot differentiate a gradient.

use burn::tensor::activation::softplus;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use pgan_model::{penalty, Discriminator};

use crate::config::{LossConfig, LossKind};
use crate::logistic;

/// Scalars of one discriminator step, for statistics and NaN checks: device tensors of shape
/// `[1]`, read by the trainer once a tick (never inside a step).
#[derive(Clone, Debug)]
pub struct DiscriminatorStats<B: Backend> {
    /// The full D loss (including penalty and drift).
    pub loss: Tensor<B, 1>,
    /// The penalty value P (not its surrogate).
    pub penalty: Tensor<B, 1>,
    /// Mean ‖∇x D‖ at the penalty's sample points.
    pub penalty_grad_norm: Tensor<B, 1>,
    /// Drift term ε·mean D(real)² (WGAN-GP only; 0 otherwise).
    pub drift: Tensor<B, 1>,
    /// Mean D(real).
    pub real_score: Tensor<B, 1>,
    /// Mean D(fake).
    pub fake_score: Tensor<B, 1>,
}

/// The discriminator loss for one minibatch. `fakes` must already be detached from G; `mix`
/// ([N,1,1,1] in [0,1)) are the WGAN-GP interpolation factors drawn by the caller's RNG.
#[allow(clippy::too_many_arguments)]
pub fn discriminator_loss<B: AutodiffBackend>(
    config: &LossConfig,
    d: &Discriminator<B>,
    reals: Tensor<B, 4>,
    fakes: Tensor<B, 4>,
    mix: Tensor<B, 4>,
    stage: usize,
    alpha: f32,
) -> (Tensor<B, 1>, DiscriminatorStats<B::InnerBackend>) {
    // Scores of reals and fakes in separate passes, as the official code does (the
    // minibatch-stddev statistics then describe one kind of image at a time).
    let real_scores = d.forward(reals.clone(), stage, alpha); // [N, 1]
    let fake_scores = d.forward(fakes.clone(), stage, alpha); // [N, 1]
    let real_mean = real_scores.clone().mean();
    let fake_mean = fake_scores.clone().mean();

    let (adversarial, drift, pen) = match config.kind {
        LossKind::WganGp => {
            let pen = penalty::wgan_gp(d, reals, fakes, mix, stage, alpha, config.gp_lambda);
            let drift = real_scores
                .powf_scalar(2.0)
                .mean()
                .mul_scalar(config.drift_epsilon);
            (fake_mean.clone() - real_mean.clone(), Some(drift), pen)
        }
        LossKind::LogisticR1 => {
            let pen = penalty::r1(d, reals, stage, alpha, config.r1_gamma);
            let adv = logistic::discriminator_loss(real_scores, fake_scores, config.real_label);
            (adv, None, pen)
        }
        LossKind::NonSaturating | LossKind::Minimax => {
            let adv = logistic::discriminator_loss(real_scores, fake_scores, config.real_label);
            let zero = adv.clone().inner().zeros_like();
            let none = penalty::Penalty {
                surrogate: adv.zeros_like(),
                value: zero.clone(),
                grad_norm: zero,
            };
            (adv, None, none)
        }
    };
    let mut loss = adversarial + pen.surrogate.clone();
    if let Some(drift) = drift.clone() {
        loss = loss + drift;
    }
    // Values only (`inner`: no graph), left on the device.
    let stats = DiscriminatorStats {
        // The logged loss includes the penalty's value, not its surrogate's.
        loss: loss.clone().inner() - pen.surrogate.inner() + pen.value.clone(),
        penalty: pen.value,
        penalty_grad_norm: pen.grad_norm,
        drift: drift.map_or_else(|| real_mean.clone().inner().zeros_like(), |d| d.inner()),
        real_score: real_mean.inner(),
        fake_score: fake_mean.inner(),
    };
    (loss, stats)
}

/// The generator loss on scores `D(G(z))`.
pub fn generator_loss<B: AutodiffBackend>(
    config: &LossConfig,
    fake_scores: Tensor<B, 2>,
) -> Tensor<B, 1> {
    match config.kind {
        LossKind::WganGp => fake_scores.mean().neg(),
        LossKind::LogisticR1 => softplus(fake_scores.neg(), 1.0).mean(),
        LossKind::NonSaturating => logistic::non_saturating_generator_loss(fake_scores),
        LossKind::Minimax => logistic::minimax_generator_loss(fake_scores),
    }
}
