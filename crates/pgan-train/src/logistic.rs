//! The logistic GAN losses on the discriminator's logits, shared by `logistic-r1`,
//! `non-saturating` and `minimax` (Goodfellow et al. 2014).
//!
//! D outputs a logit `l`; its probability that an image is real is `σ(l)`. With
//! `softplus(x) = log(1 + eˣ)`: `−log σ(l) = softplus(−l)` and `−log(1 − σ(l)) = softplus(l)`.
//!
//! - **D** maximises `log D(x) + log(1 − D(G(z)))` (eq. 1), i.e. minimises the sigmoid
//!   cross-entropy `softplus(−l_real) + softplus(l_fake)`. With one-sided label smoothing
//!   (Salimans et al. 2016, section 3.4) the reals' target is `t ≤ 1` instead of 1 and the fakes'
//!   stays 0: the real term becomes `t·softplus(−l) + (1 − t)·softplus(l)`, whose minimum is at
//!   `σ(l) = t`, so D is not rewarded for ever more confident logits on reals.
//! - **G, minimax** (the original game, eq. 1): G minimises `log(1 − D(G(z))) = −softplus(l_fake)`.
//!   Its gradient `∂/∂l = −σ(l)` vanishes as D rejects the fakes (`l → −∞`): the saturation the
//!   paper warns of early in training.
//! - **G, non-saturating** ("modified minimax", section 3): G maximises `log D(G(z))`, i.e.
//!   minimises `softplus(−l_fake)`, with gradient `−σ(−l) = −(1 − σ(l))`, near −1 exactly where
//!   the minimax gradient vanishes. Both have the same fixed point.
//!
//! All losses are means over the batch.

use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `softplus(x) = log(1 + eˣ) = −log σ(−x)`, through burn's `log_sigmoid` (the log-sum-exp
/// trick, with its own backward): burn's `softplus` computes `log(eˣ + 1)`, which overflows to
/// infinity past a logit of about 88 (its gradient to NaN), where a confident D puts G's
/// non-saturating loss, and a healthy run would be rolled back as diverged. On the CPU (Flex)
/// value and gradient are exact everywhere; burn's generic backward, which the GPU backends
/// use, computes the gradient as `1 − 1/(1 + e⁻ˣ)`, which loses its relative precision past
/// x ≈ 10 and is 0 past x ≈ 17 (an absolute error below 1.2e-7: finite, never NaN).
pub(crate) fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    log_sigmoid(x.neg()).neg()
}

/// The discriminator's sigmoid cross-entropy, reals' target `real_label` (1 = no smoothing).
///
/// # Shapes
/// - real_scores, fake_scores: `[N, 1]` logits
/// - output: `[1]`
pub fn discriminator_loss<B: Backend>(
    real_scores: Tensor<B, 2>,
    fake_scores: Tensor<B, 2>,
    real_label: f32,
) -> Tensor<B, 1> {
    let fake_term = softplus(fake_scores).mean();
    let real_term = if real_label == 1.0 {
        // Without smoothing, the reals' term alone (no zero-weighted second term).
        softplus(real_scores.neg()).mean()
    } else {
        let as_real = softplus(real_scores.clone().neg()).mul_scalar(real_label);
        let as_fake = softplus(real_scores).mul_scalar(1.0 - real_label);
        (as_real + as_fake).mean()
    };
    fake_term + real_term
}

/// The non-saturating generator loss `softplus(−l_fake)` = `−log D(G(z))`.
///
/// # Shapes
/// - fake_scores: `[N, 1]` logits of D on G's images; output `[1]`
pub fn non_saturating_generator_loss<B: Backend>(fake_scores: Tensor<B, 2>) -> Tensor<B, 1> {
    softplus(fake_scores.neg()).mean()
}

/// The original minimax generator loss `−softplus(l_fake)` = `log(1 − D(G(z)))`.
///
/// # Shapes
/// - fake_scores: `[N, 1]` logits of D on G's images; output `[1]`
pub fn minimax_generator_loss<B: Backend>(fake_scores: Tensor<B, 2>) -> Tensor<B, 1> {
    softplus(fake_scores).mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    const LOGITS: [f32; 5] = [-6.0, -1.5, 0.0, 0.7, 4.0];

    fn logits(values: &[f32]) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len(), 1]),
            &Default::default(),
        )
        .require_grad()
    }

    fn softplus64(x: f64) -> f64 {
        x.exp().ln_1p()
    }

    fn sigmoid64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn mean(f: impl Fn(f64) -> f64, values: &[f32]) -> f64 {
        values.iter().map(|&v| f(v as f64)).sum::<f64>() / values.len() as f64
    }

    fn scalar(t: Tensor<B, 1>) -> f64 {
        t.into_data().to_vec::<f32>().unwrap()[0] as f64
    }

    fn grad(loss: Tensor<B, 1>, x: &Tensor<B, 2>) -> Vec<f64> {
        let grads = loss.backward();
        x.grad(&grads)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    fn close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "got {got}, want {want}"
        );
    }

    #[test]
    fn the_discriminator_loss_is_the_cross_entropy_and_its_gradient() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        let fakes: Vec<f32> = LOGITS.iter().map(|v| v * 0.5 - 1.0).collect();
        for t in [1.0f32, 0.9, 0.7] {
            let (r, f) = (logits(&LOGITS), logits(&fakes));
            let loss = discriminator_loss(r.clone(), f.clone(), t);
            let t64 = t as f64;
            // −[t log σ(l) + (1 − t) log(1 − σ(l))] on reals, −log(1 − σ(l)) on fakes.
            let want = mean(
                |l| -(t64 * sigmoid64(l).ln() + (1.0 - t64) * (1.0 - sigmoid64(l)).ln()),
                &LOGITS,
            ) + mean(|l| -(1.0 - sigmoid64(l)).ln(), &fakes);
            close(scalar(loss.clone()), want);
            let grads = loss.backward();
            let n = LOGITS.len() as f64;
            let g_real = r.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            let g_fake = f.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            for (i, &l) in LOGITS.iter().enumerate() {
                // ∂/∂l = (σ(l) − t)/N: zero where D's probability equals the target.
                close(g_real[i] as f64, (sigmoid64(l as f64) - t64) / n);
                close(g_fake[i] as f64, sigmoid64(fakes[i] as f64) / n);
            }
        }
    }

    #[test]
    fn label_smoothing_stops_rewarding_confidence_on_reals() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        // At a confident real logit the unsmoothed loss still pushes the logit up; the smoothed
        // one pushes it back down towards σ(l) = t.
        let confident = [6.0f32];
        let x = logits(&confident);
        let plain = grad(discriminator_loss(x.clone(), logits(&[0.0]), 1.0), &x)[0];
        let x = logits(&confident);
        let smoothed = grad(discriminator_loss(x.clone(), logits(&[0.0]), 0.9), &x)[0];
        assert!(plain < 0.0 && smoothed > 0.0, "{plain} {smoothed}");
        // The minimum is at logit(0.9): zero gradient there.
        let at_target = [(0.9f64 / 0.1).ln() as f32];
        let x = logits(&at_target);
        let g = grad(discriminator_loss(x.clone(), logits(&[0.0]), 0.9), &x)[0];
        assert!(g.abs() < 1e-6, "{g}");
    }

    #[test]
    fn generator_losses_match_their_closed_forms() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        let ns = non_saturating_generator_loss(logits(&LOGITS));
        close(scalar(ns), mean(|l| -sigmoid64(l).ln(), &LOGITS));
        let mm = minimax_generator_loss(logits(&LOGITS));
        close(scalar(mm), mean(|l| (1.0 - sigmoid64(l)).ln(), &LOGITS));
        // Both in softplus form too.
        let mm = minimax_generator_loss(logits(&LOGITS));
        close(scalar(mm), -mean(softplus64, &LOGITS));
    }

    #[test]
    fn minimax_saturates_where_the_non_saturating_loss_does_not() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        let n = LOGITS.len() as f64;
        let x = logits(&LOGITS);
        let g_mm = grad(minimax_generator_loss(x.clone()), &x);
        let x = logits(&LOGITS);
        let g_ns = grad(non_saturating_generator_loss(x.clone()), &x);
        for (i, &l) in LOGITS.iter().enumerate() {
            let l = l as f64;
            // Both push the fakes' logits up (descent raises l), with −σ(l) and −(1 − σ(l)).
            close(g_mm[i], -sigmoid64(l) / n);
            close(g_ns[i], -(1.0 - sigmoid64(l)) / n);
            assert!(g_mm[i] < 0.0 && g_ns[i] < 0.0);
        }
        // Where D rejects the fakes (l = −6), the minimax gradient is ~400x smaller.
        assert!(g_ns[0] / g_mm[0] > 300.0, "{} {}", g_ns[0], g_mm[0]);
    }

    /// Logits far past exp's range in f32 (about ±88) give finite losses and the exact
    /// gradients σ(l) − target, as a confident D makes them; `log(eˣ + 1)` gave inf and NaN.
    #[test]
    fn confident_logits_give_finite_losses_and_gradients() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        let far = [-200.0f32, -90.0, 90.0, 200.0];
        let n = far.len() as f64;
        let x = logits(&far);
        let ns = non_saturating_generator_loss(x.clone());
        close(
            scalar(ns.clone()),
            mean(|l| l.abs().max(0.0) * f64::from(l < 0.0), &far),
        );
        let g = grad(ns, &x);
        let x = logits(&far);
        let mm = minimax_generator_loss(x.clone());
        close(scalar(mm.clone()), -mean(|l| l.max(0.0), &far));
        let g_mm = grad(mm, &x);
        let (r, f) = (logits(&far), logits(&far));
        let d = discriminator_loss(r.clone(), f.clone(), 0.9);
        assert!(scalar(d.clone()).is_finite());
        let grads = d.backward();
        let g_real = r.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        for (i, &l) in far.iter().enumerate() {
            let s = sigmoid64(l as f64);
            close(g[i], -(1.0 - s) / n);
            close(g_mm[i], -s / n);
            close(g_real[i] as f64, (s - 0.9) / n);
        }
    }
}
