//! The networks of a run and their optimizers: G, D, the EMA generator (`Gs` in the official
//! code) and one Adam each for G and D. Created here, saved and restored by
//! [`checkpoint`](crate::checkpoint), trained by the loop.

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use pgan_model::{Discriminator, Generator, ModelConfig};

use crate::adam::FusedAdam;
use crate::config::OptimConfig;

/// The generator's optimizer.
pub(crate) type GOptim<B> = OptimizerAdaptor<FusedAdam, Generator<B>, B>;
/// The discriminator's optimizer.
pub(crate) type DOptim<B> = OptimizerAdaptor<FusedAdam, Discriminator<B>, B>;

/// The networks and their optimizers.
pub(crate) struct Nets<B: AutodiffBackend> {
    pub g: Generator<B>,
    pub d: Discriminator<B>,
    pub g_ema: Generator<B::InnerBackend>,
    pub optim_g: GOptim<B>,
    pub optim_d: DOptim<B>,
}

impl<B: AutodiffBackend> Nets<B> {
    /// Newly initialised networks; with a seed, the backend RNG is seeded first. The backend RNG
    /// is process-global; [`train_on`](crate::training_loop::train_on) runs one training per
    /// process at a time, so nothing else draws from it between the seed and the last parameter.
    pub fn fresh(
        model: &ModelConfig,
        optim: &OptimConfig,
        device: &B::Device,
        seed: Option<u64>,
    ) -> Self {
        if let Some(seed) = seed {
            B::seed(device, seed);
        }
        // burn initialises parameters lazily, on first use: force it here, right after the seed.
        let g: Generator<B> = materialize(model.init_generator(device));
        let d: Discriminator<B> = materialize(model.init_discriminator(device));
        let g_ema = g.valid();
        Self {
            g,
            d,
            g_ema,
            optim_g: adam(optim).init(),
            optim_d: adam(optim).init(),
        }
    }

    /// Both optimizers with fresh moments (the official code's `reset_opt_for_new_lod`).
    pub fn reset_optimizers(&mut self, optim: &OptimConfig) {
        self.optim_g = adam(optim).init();
        self.optim_d = adam(optim).init();
    }
}

fn adam(o: &OptimConfig) -> FusedAdam {
    FusedAdam::new(o.beta1, o.beta2, o.epsilon)
}

/// Touches every parameter so lazily initialised ones draw their values now.
pub(crate) fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}

/// True when every parameter of `module` is finite (one read).
pub(crate) fn params_finite<B: Backend, M: Module<B>>(module: &M) -> bool {
    params_finite_flag(module).is_none_or(|flag| crate::host_read::read_scalar(flag).is_finite())
}

/// A device value that is 0 when every parameter of `module` is finite and NaN otherwise (sums
/// of such flags keep the meaning); `None` for a module without parameters. Nothing is read.
pub(crate) fn params_finite_flag<B: Backend, M: Module<B>>(module: &M) -> Option<Tensor<B, 1>> {
    struct Check<B: Backend> {
        ok: Option<Tensor<B, 1>>,
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Check<B> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            // sum(x * 0) is 0 for finite x and NaN for NaN or ±Inf.
            let s = param.val().mul_scalar(0.0).sum();
            self.ok = Some(match self.ok.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
    let mut c = Check::<B> { ok: None };
    module.visit(&mut c);
    c.ok
}
