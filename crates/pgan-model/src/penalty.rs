//! Gradient penalties (WGAN-GP, R1) without double backward.
//!
//! burn's autodiff is first order, but both penalties need `∇θ P(∇x D)`.
//! With `g = ∇x ΣD(x̂)` and `v = ∂P/∂g` held constant, the chain rule gives
//! `∇θ P = (∂g/∂θ)ᵀ v = ∇θ ⟨∇x ΣD(x̂), v⟩`. The inner product is the
//! directional derivative of `ΣD` along `v`, which
//! [`Discriminator::forward_jvp`] computes in forward mode on the autodiff
//! backend; one ordinary backward of that *surrogate* `S` yields `∇θ P`
//! exactly. `S`'s value is not `P`, so `P` is returned separately for logging.
//!
//! Cost: one forward + input-only backward for `g`, then one JVP pass
//! (about two forwards) and its backward.
//!
//! Nothing here reads the device: `P` and the mean gradient norm stay device tensors, which the
//! trainer reads once a tick with the rest of its statistics.

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use crate::discriminator::Discriminator;

/// Guards `g / ‖g‖` when a gradient vanishes.
const NORM_FLOOR: f32 = 1e-12;

/// A gradient penalty ready to add to the discriminator loss.
#[derive(Debug, Clone)]
pub struct Penalty<B: AutodiffBackend> {
    /// Add to the D loss: `∇θ surrogate = ∇θ penalty`. Shape `[1]`.
    pub surrogate: Tensor<B, 1>,
    /// The penalty `P` itself, for logging. Shape `[1]`, on the device.
    pub value: Tensor<B::InnerBackend, 1>,
    /// Mean over the batch of `‖∇x D(x̂)_i‖`. Shape `[1]`, on the device.
    pub grad_norm: Tensor<B::InnerBackend, 1>,
}

/// WGAN-GP (Gulrajani et al. 2017): `λ · mean_i (‖∇x D(x̂)_i‖ − 1)²` on
/// `x̂ = mix·reals + (1−mix)·fakes`.
///
/// The official ProGAN code uses target norm 1 (`wgan_target`) and `λ = 10`.
/// `mix` (`[N, 1, 1, 1]`, in `[0, 1)`) is drawn by the caller so that the
/// training RNG stays checkpointable; `fakes` are treated as constants.
///
/// # Shapes
/// - reals, fakes: `[N, C, H, W]` at `stage`'s resolution
/// - mix: `[N, 1, 1, 1]`
pub fn wgan_gp<B: AutodiffBackend>(
    d: &Discriminator<B>,
    reals: Tensor<B, 4>,
    fakes: Tensor<B, 4>,
    mix: Tensor<B, 4>,
    stage: usize,
    alpha: f32,
    lambda: f32,
) -> Penalty<B> {
    let (reals, fakes, mix) = (reals.inner(), fakes.inner(), mix.inner());
    let x_hat = fakes.clone() + (reals - fakes) * mix;
    let g = input_gradient(d, x_hat.clone(), stage, alpha);
    let n = g.dims()[0] as f32;
    let norms = g.clone().powi_scalar(2).sum_dims(&[1, 2, 3]).sqrt(); // [N, 1, 1, 1]
    let excess = norms.clone().sub_scalar(1.0);
    let value = excess.clone().powi_scalar(2).mean().mul_scalar(lambda);
    // v_i = λ · 2(‖g_i‖ − 1)/N · g_i/‖g_i‖
    let coef = excess.mul_scalar(2.0 * lambda / n) / norms.clone().clamp_min(NORM_FLOOR);
    let v = g * coef;
    Penalty {
        surrogate: surrogate(d, x_hat, v, stage, alpha),
        value,
        grad_norm: norms.mean(),
    }
}

/// R1 (Mescheder et al. 2018): `(γ/2) · mean_i ‖∇x D(real_i)‖²`.
///
/// # Shapes
/// - reals: `[N, C, H, W]` at `stage`'s resolution
pub fn r1<B: AutodiffBackend>(
    d: &Discriminator<B>,
    reals: Tensor<B, 4>,
    stage: usize,
    alpha: f32,
    gamma: f32,
) -> Penalty<B> {
    let reals = reals.inner();
    let g = input_gradient(d, reals.clone(), stage, alpha);
    let n = g.dims()[0] as f32;
    let sq_norms = g.clone().powi_scalar(2).sum_dims(&[1, 2, 3]); // [N, 1, 1, 1]
    let value = sq_norms.clone().mean().mul_scalar(gamma / 2.0);
    // v_i = γ/N · g_i
    let v = g.mul_scalar(gamma / n);
    Penalty {
        surrogate: surrogate(d, reals, v, stage, alpha),
        value,
        grad_norm: sq_norms.sqrt().mean(),
    }
}

/// `∇x ΣD(x)`, with D's parameters frozen so the backward only runs the input path.
///
/// # Shapes
/// - x, output: `[N, C, H, W]`
pub fn input_gradient<B: AutodiffBackend>(
    d: &Discriminator<B>,
    x: Tensor<B::InnerBackend, 4>,
    stage: usize,
    alpha: f32,
) -> Tensor<B::InnerBackend, 4> {
    let frozen = d.clone().no_grad();
    let x = Tensor::<B, 4>::from_inner(x).require_grad();
    let grads = frozen.forward(x.clone(), stage, alpha).sum().backward();
    x.grad(&grads)
        .expect("the discriminator output depends on its input")
}

/// `S = Σ J_D(x)·v`, differentiable with respect to D's parameters.
fn surrogate<B: AutodiffBackend>(
    d: &Discriminator<B>,
    x: Tensor<B::InnerBackend, 4>,
    v: Tensor<B::InnerBackend, 4>,
    stage: usize,
    alpha: f32,
) -> Tensor<B, 1> {
    let (_, directional) =
        d.forward_jvp(Tensor::from_inner(x), Tensor::from_inner(v), stage, alpha);
    directional.sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use burn::module::{ModuleMapper, ModuleVisitor, Param};
    use burn::tensor::TensorData;

    type AB = TestAutodiffBackend;
    type Grads = <AB as AutodiffBackend>::Gradients;

    /// Sizes of every float parameter tensor, in visiting order.
    struct Sizes(Vec<usize>);
    impl ModuleVisitor<AB> for Sizes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            self.0.push(param.shape().num_elements());
        }
    }

    /// Adds `h` to element `index` of the `target`-th parameter tensor.
    struct Perturb {
        target: usize,
        index: usize,
        h: f32,
        seen: usize,
    }
    impl ModuleMapper<AB> for Perturb {
        fn map_float<const D: usize>(
            &mut self,
            param: Param<Tensor<AB, D>>,
        ) -> Param<Tensor<AB, D>> {
            let hit = self.seen == self.target;
            self.seen += 1;
            if !hit {
                return param;
            }
            param.map(|t| {
                let shape = t.shape();
                let mut values = to_vec(t.clone());
                values[self.index] += self.h;
                Tensor::from_data(TensorData::new(values, shape), &t.device()).require_grad()
            })
        }
    }

    /// Element `index` of the gradient of the `target`-th parameter tensor (0 if untouched).
    struct ReadGrad<'a> {
        grads: &'a Grads,
        target: usize,
        index: usize,
        seen: usize,
        value: f32,
    }
    impl ModuleVisitor<AB> for ReadGrad<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            if self.seen == self.target {
                if let Some(g) = param.val().grad(self.grads) {
                    self.value = to_vec(g)[self.index];
                }
            }
            self.seen += 1;
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Kind {
        WganGp(f32),
        R1(f32),
    }

    /// `P` straight from its definition, in f64, from the input gradient.
    fn direct_penalty(
        d: &Discriminator<AB>,
        x: Tensor<TestBackend, 4>,
        stage: usize,
        alpha: f32,
        kind: Kind,
    ) -> (f64, f64) {
        let n = x.dims()[0];
        let g = to_vec(input_gradient(d, x, stage, alpha));
        let per = g.len() / n;
        let norms: Vec<f64> = g
            .chunks(per)
            .map(|c| c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt())
            .collect();
        let mean = |f: &dyn Fn(f64) -> f64| norms.iter().map(|v| f(*v)).sum::<f64>() / n as f64;
        let p = match kind {
            Kind::WganGp(lambda) => lambda as f64 * mean(&|v| (v - 1.0).powi(2)),
            Kind::R1(gamma) => gamma as f64 / 2.0 * mean(&|v| v * v),
        };
        (p, mean(&|v| v))
    }

    /// The f32 noise of a central difference of `P` at h = 2e-4, relative to the largest
    /// gradient: a change of summation order in the convolutions alone moves the FD of a
    /// near-zero gradient element by ~1e-4 of it (pgan-flex's gemm vs burn-flex's; the
    /// Winograd input gradient read from the forward's transformed filters). Both the smoothness
    /// check and the comparison use it, so an element is not rejected as "straddling a kink" for
    /// noise the comparison itself accepts.
    const FD_NOISE: f64 = 2e-4;

    /// Checks `∇θ surrogate` against central differences of `P` for one
    /// element of every parameter tensor of a small discriminator.
    fn check_parameter_gradient(kind: Kind, stage: usize, alpha: f32, mbstd: usize, seed: u64) {
        let config = tiny_config(8).with_mbstd_group_size(mbstd);
        check_parameter_gradient_of(kind, stage, alpha, config, seed);
    }

    fn check_parameter_gradient_of(
        kind: Kind,
        stage: usize,
        alpha: f32,
        config: crate::ModelConfig,
        seed: u64,
    ) {
        let device = Default::default();
        let mbstd = format!("{} {}", config.minibatch, config.mbstd_group_size);
        let d = reseed(config.init_discriminator::<AB>(&device), seed);
        let r = 4 << stage;
        let reals = randn::<AB, 4>([4, 3, r, r], seed + 1, &device);
        let fakes = randn::<AB, 4>([4, 3, r, r], seed + 2, &device).mul_scalar(0.5);
        let mix =
            Tensor::<AB, 4>::from_floats([[[[0.1]]], [[[0.35]]], [[[0.6]]], [[[0.9]]]], &device);
        let x_hat = (fakes.clone() + (reals.clone() - fakes.clone()) * mix.clone()).inner();
        let penalty = |d: &Discriminator<AB>| match kind {
            Kind::WganGp(lambda) => wgan_gp(
                d,
                reals.clone(),
                fakes.clone(),
                mix.clone(),
                stage,
                alpha,
                lambda,
            ),
            Kind::R1(gamma) => r1(d, reals.clone(), stage, alpha, gamma),
        };
        let point = match kind {
            Kind::WganGp(_) => x_hat,
            Kind::R1(_) => reals.clone().inner(),
        };

        let p = penalty(&d);
        let (p_direct, norm_direct) = direct_penalty(&d, point.clone(), stage, alpha, kind);
        let value = to_vec(p.value.clone())[0] as f64;
        assert!(
            (value - p_direct).abs() <= 1e-4 * p_direct.abs().max(1.0),
            "{kind:?}: value {value} vs {p_direct}"
        );
        let grad_norm = to_vec(p.grad_norm.clone())[0] as f64;
        assert!((grad_norm - norm_direct).abs() <= 1e-4 * norm_direct.max(1.0));
        let grads = p.surrogate.backward();

        let mut sizes = Sizes(Vec::new());
        d.visit(&mut sizes);
        let surrogate_grad = |target: usize, index: usize| {
            let mut read = ReadGrad {
                grads: &grads,
                target,
                index,
                seen: 0,
                value: 0.0,
            };
            d.visit(&mut read);
            read.value as f64
        };
        let finite_difference = |target: usize, index: usize, h: f32| {
            let at = |step: f32| {
                let moved = d.clone().map(&mut Perturb {
                    target,
                    index,
                    h: step,
                    seen: 0,
                });
                direct_penalty(&moved, point.clone(), stage, alpha, kind).0
            };
            (at(h) - at(-h)) / (2.0 * h as f64)
        };
        let candidate =
            |target: usize, k: usize| (target * 7919 + 3 + k * 104_729) % sizes.0[target];
        let scale = (0..sizes.0.len())
            .map(|t| surrogate_grad(t, candidate(t, 0)).abs())
            .fold(0.0f64, f64::max);
        assert!(
            scale > 1e-3,
            "{kind:?}: parameter gradient is trivially zero"
        );

        // P is only piecewise smooth: its input gradient jumps whenever a leaky
        // ReLU input changes sign. An element whose differences at h and h/2
        // disagree straddles such a jump and is skipped for the next one.
        let mut rows = Vec::new();
        for target in 0..sizes.0.len() {
            let tries = (0..8).flat_map(|k| [(k, 2e-3f32), (k, 4e-4)]);
            let smooth = tries.into_iter().find_map(|(k, h)| {
                let index = candidate(target, k);
                let (fd, fd_half) = (
                    finite_difference(target, index, h),
                    finite_difference(target, index, h / 2.0),
                );
                ((fd - fd_half).abs() <= 0.02 * fd.abs() + FD_NOISE * scale)
                    .then_some((index, fd_half))
            });
            let (index, fd) = smooth
                .unwrap_or_else(|| panic!("{kind:?}: no smooth element in parameter {target}"));
            rows.push((target, index, surrogate_grad(target, index), fd));
        }
        // Many are exactly zero (layers of other stages; the biases after the
        // last nonlinearity of a path never reach ∇x D), but the comparison
        // must cover real gradients too.
        let nonzero = rows.iter().filter(|r| r.2.abs() > 1e-4 * scale).count();
        assert!(
            nonzero >= 4,
            "{kind:?}: too few nonzero gradients: {rows:?}"
        );
        for (target, index, ad, fd) in &rows {
            assert!(
                (ad - fd).abs() <= 2e-2 * ad.abs() + FD_NOISE * scale,
                "{kind:?} stage {stage} alpha {alpha} mbstd {mbstd}: param {target}[{index}]: surrogate grad {ad} vs finite difference {fd}\n{rows:?}"
            );
        }
        if std::env::var_os("PGAN_TEST_VERBOSE").is_some() {
            println!("{kind:?} stage {stage} alpha {alpha} mbstd {mbstd}: {rows:?}");
        }
    }

    #[test]
    fn wgan_gp_parameter_gradient_matches_finite_differences() {
        let _turn = crate::test_utils::graph_turn();
        check_parameter_gradient(Kind::WganGp(10.0), 1, 0.5, 2, 11);
        check_parameter_gradient(Kind::WganGp(10.0), 0, 1.0, 4, 12);
    }

    #[test]
    fn r1_parameter_gradient_matches_finite_differences() {
        let _turn = crate::test_utils::graph_turn();
        check_parameter_gradient(Kind::R1(10.0), 1, 0.5, 2, 21);
        check_parameter_gradient(Kind::R1(1.0), 1, 1.0, 0, 22);
    }

    /// The penalty through minibatch discrimination, whose `o(x)` couples the batch: `T` is
    /// among the parameter tensors checked.
    #[test]
    fn penalties_through_minibatch_discrimination_match_finite_differences() {
        let _turn = crate::test_utils::graph_turn();
        let config = tiny_config(8)
            .with_minibatch(crate::Minibatch::Discrimination)
            .with_mbdisc_kernels(3)
            .with_mbdisc_kernel_dim(2);
        // The L1 distances add kinks to ∇x D (where two samples' M rows cross); like the
        // lrelu kinks, the check skips elements that straddle one.
        check_parameter_gradient_of(Kind::WganGp(10.0), 1, 0.5, config.clone(), 11);
        check_parameter_gradient_of(Kind::R1(10.0), 0, 1.0, config, 32);
    }

    #[test]
    fn surrogate_adds_to_a_discriminator_loss() {
        let _turn = crate::test_utils::graph_turn();
        let device = Default::default();
        let d = reseed(tiny_config(8).init_discriminator::<AB>(&device), 3);
        let reals = randn::<AB, 4>([4, 3, 8, 8], 4, &device);
        let fakes = randn::<AB, 4>([4, 3, 8, 8], 5, &device);
        let mix = Tensor::<AB, 4>::full([4, 1, 1, 1], 0.5, &device);
        let gp = wgan_gp(&d, reals.clone(), fakes.clone(), mix, 1, 0.5, 10.0);
        assert!(to_vec(gp.value.clone())[0] > 0.0 && to_vec(gp.grad_norm.clone())[0] > 0.0);
        assert_eq!(gp.surrogate.dims(), [1]);
        let loss = d.forward(fakes, 1, 0.5).mean() - d.forward(reals, 1, 0.5).mean() + gp.surrogate;
        let grads = loss.backward();
        let g = d
            .output
            .conv
            .weight
            .val()
            .grad(&grads)
            .expect("conv weight gradient");
        assert!(to_vec(g).iter().all(|v| v.is_finite()));
    }
}
