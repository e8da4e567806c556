//! Fault injection for tests: NaN in D's weights before a step (so that step's losses come out
//! NaN) or in G_ema's after one (which no loss reads: only the tick end's weight check finds
//! it); a stop request (Ctrl-C) arriving while the tick end evaluates. Not part of pgan's API: [`train_with_faults`](super::train_with_faults) is the entry;
//! real runs pass no faults and pay one `None` check per step.

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use crate::nets::Nets;

/// The steps to poison. Each fires once: a rollback restores the step counter, so the same step
/// comes round again and then runs clean.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Before these steps, D's first weight is set to NaN: the step's losses are NaN.
    pub nan_loss_at_steps: Vec<u64>,
    /// After these steps, G_ema's first weight is set to NaN.
    pub nan_weights_at_steps: Vec<u64>,
    /// The run's stop flag is set as the first in-training evaluation starts.
    pub stop_at_evaluation: bool,
}

impl Faults {
    pub(crate) fn before_step<B: AutodiffBackend>(&mut self, step: u64, nets: &mut Nets<B>) {
        if take(&mut self.nan_loss_at_steps, step) {
            nets.d = poison_first_parameter(nets.d.clone());
        }
    }

    pub(crate) fn after_step<B: AutodiffBackend>(&mut self, step: u64, nets: &mut Nets<B>) {
        if take(&mut self.nan_weights_at_steps, step) {
            nets.g_ema = poison_first_parameter(nets.g_ema.clone());
        }
    }

    pub(crate) fn before_evaluation(&mut self, stop: &std::sync::atomic::AtomicBool) {
        if std::mem::take(&mut self.stop_at_evaluation) {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn take(steps: &mut Vec<u64>, step: u64) -> bool {
    let hit = steps.contains(&step);
    steps.retain(|&s| s != step);
    hit
}

/// `module` with its first float parameter set to NaN.
fn poison_first_parameter<B: Backend, M: Module<B>>(module: M) -> M {
    struct Poison {
        done: bool,
    }
    impl<B: Backend> burn::module::ModuleMapper<B> for Poison {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<B, D>>,
        ) -> burn::module::Param<Tensor<B, D>> {
            if self.done {
                return param;
            }
            self.done = true;
            param.map(|tensor| tensor.mul_scalar(f32::NAN))
        }
    }
    module.map(&mut Poison { done: false })
}
