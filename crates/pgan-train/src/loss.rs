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
    let batched = !pgan_model::kernels::has_own_conv::<B>();
    discriminator_loss_with(config, d, reals, fakes, mix, stage, alpha, batched)
}

/// [`discriminator_loss`] with the reals and fakes scored in one batch (`batched`) or in two
/// passes. One batch (each layer runs once on 2N images, the minibatch-stddev statistics per
/// kind) gives the scores of the official code's two passes with half the launches, which is
/// what the GPU backends take. The CPU keeps two passes: pgan-flex's conv has no launch cost to
/// save, and the joint batch was no faster there in the step benchmark (docs/bench-log.md).
#[allow(clippy::too_many_arguments)]
pub(crate) fn discriminator_loss_with<B: AutodiffBackend>(
    config: &LossConfig,
    d: &Discriminator<B>,
    reals: Tensor<B, 4>,
    fakes: Tensor<B, 4>,
    mix: Tensor<B, 4>,
    stage: usize,
    alpha: f32,
    batched: bool,
) -> (Tensor<B, 1>, DiscriminatorStats<B::InnerBackend>) {
    let (real_scores, fake_scores) = if batched {
        let n = reals.dims()[0];
        let scores = d.forward_per_kind(
            Tensor::cat(vec![reals.clone(), fakes.clone()], 0),
            2,
            stage,
            alpha,
        ); // [2N, 1]
        (scores.clone().narrow(0, 0, n), scores.narrow(0, n, n))
    } else {
        (
            d.forward(reals.clone(), stage, alpha),
            d.forward(fakes.clone(), stage, alpha),
        )
    };
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
        LossKind::LogisticR1 => logistic::non_saturating_generator_loss(fake_scores),
        LossKind::NonSaturating => logistic::non_saturating_generator_loss(fake_scores),
        LossKind::Minimax => logistic::minimax_generator_loss(fake_scores),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Distribution;
    use pgan_model::ModelConfig;

    type AB = Autodiff<Flex>;

    /// Every float parameter's gradient, flattened, in visiting order (empty where none).
    struct Grads<'a> {
        grads: &'a <AB as AutodiffBackend>::Gradients,
        out: Vec<Vec<f32>>,
    }
    impl ModuleVisitor<AB> for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let g = param.val().grad(self.grads);
            self.out
                .push(g.map_or_else(Vec::new, |g| g.into_data().to_vec().unwrap()));
        }
    }

    fn gradients(d: &Discriminator<AB>, loss: Tensor<AB, 1>) -> Vec<Vec<f32>> {
        let grads = loss.backward();
        let mut visitor = Grads {
            grads: &grads,
            out: Vec::new(),
        };
        d.visit(&mut visitor);
        visitor.out
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 + 1e-4 * scale,
                "{what}: element {i}: {x} vs {y}"
            );
        }
    }

    /// The D loss with reals and fakes scored in one batch (minibatch stddev per kind) equals,
    /// with every parameter gradient, the loss formed from two separate passes as the official
    /// code runs them: for each loss kind, during a fade-in and at a plain stage.
    #[test]
    fn one_batch_of_reals_and_fakes_gives_the_separate_passes_loss_and_gradients() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        let device = Default::default();
        let config = ModelConfig::new(16)
            .with_latent_dim(8)
            .with_fmap_base(32)
            .with_fmap_max(8)
            .with_mbstd_group_size(2);
        <AB as Backend>::seed(&device, 5);
        let d = config.init_discriminator::<AB>(&device);
        let normal = Distribution::Normal(0.0, 1.0);
        for kind in [
            LossKind::WganGp,
            LossKind::LogisticR1,
            LossKind::NonSaturating,
        ] {
            let loss = LossConfig {
                kind,
                ..LossConfig::default()
            };
            for (stage, alpha) in [(1, 0.5), (2, 1.0)] {
                let r = 4 << stage;
                let reals = Tensor::<AB, 4>::random([4, 3, r, r], normal, &device);
                let fakes = Tensor::<AB, 4>::random([4, 3, r, r], normal, &device).mul_scalar(0.5);
                let mix = Tensor::<AB, 4>::random([4, 1, 1, 1], Distribution::Default, &device);
                let what = format!("{kind:?} stage {stage} alpha {alpha}");

                let (batched, stats) = discriminator_loss_with(
                    &loss,
                    &d,
                    reals.clone(),
                    fakes.clone(),
                    mix.clone(),
                    stage,
                    alpha,
                    true,
                );

                // One graph at a time: a backward frees the graph it ran.
                let batched_value = batched.clone().into_data().to_vec::<f32>().unwrap();
                assert!(stats.real_score.into_data().to_vec::<f32>().unwrap()[0].is_finite());
                let ours = gradients(&d, batched);
                let real_scores = d.forward(reals.clone(), stage, alpha);
                let fake_scores = d.forward(fakes.clone(), stage, alpha);
                let separate = match kind {
                    LossKind::WganGp => {
                        let pen = penalty::wgan_gp(&d, reals, fakes, mix, stage, alpha, 10.0);
                        fake_scores.mean() - real_scores.clone().mean()
                            + real_scores.powf_scalar(2.0).mean().mul_scalar(0.001)
                            + pen.surrogate
                    }
                    LossKind::LogisticR1 => {
                        let pen = penalty::r1(&d, reals, stage, alpha, 10.0);
                        logistic::discriminator_loss(real_scores, fake_scores, 1.0) + pen.surrogate
                    }
                    _ => logistic::discriminator_loss(real_scores, fake_scores, 1.0),
                };
                let separate_value = separate.clone().into_data().to_vec::<f32>().unwrap();
                close(&batched_value, &separate_value, &format!("{what}: loss"));
                let theirs = gradients(&d, separate);
                assert_eq!(ours.len(), theirs.len());
                let mut nonzero = 0;
                for (t, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                    close(a, b, &format!("{what}: parameter {t}"));
                    nonzero += usize::from(b.iter().any(|v| *v != 0.0));
                }
                assert!(
                    nonzero >= 6,
                    "{what}: only {nonzero} parameters have gradients"
                );
            }
        }
    }
}
