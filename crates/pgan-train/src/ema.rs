//! Exponential moving average of the generator weights (ProGAN's `Gs`, `G_smoothing = 0.999`).
//!
//! The averaged generator lives on the inner (non-autodiff) backend and is what samples, render
//! and eval use. Parameters are matched by `ParamId`, which burn keeps identical between a module,
//! its `valid()` copy and a copy restored from a record.

use std::collections::HashMap;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

/// Moves every float parameter of `ema` towards the same parameter of `model`:
/// `ema = beta * ema + (1 - beta) * model`.
pub fn update_ema<B, M>(ema: M::InnerModule, model: &M, beta: f64) -> M::InnerModule
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let current = model.valid();
    let mut collector = FlatParams::<B::InnerBackend> {
        params: HashMap::new(),
    };
    current.visit(&mut collector);
    let mut mapper = Lerp {
        source: collector.params,
        beta,
    };
    ema.map(&mut mapper)
}

/// Every float parameter flattened to rank 1, by id.
struct FlatParams<B: Backend> {
    params: HashMap<ParamId, Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for FlatParams<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.params.insert(param.id, value.reshape([n]));
    }
}

struct Lerp<B: Backend> {
    source: HashMap<ParamId, Tensor<B, 1>>,
    beta: f64,
}

impl<B: Backend> ModuleMapper<B> for Lerp<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, ema, mapper) = param.consume();
        let updated = match self.source.remove(&id) {
            Some(flat) => {
                let current: Tensor<B, D> = flat.reshape(ema.shape());
                // beta * ema + (1 - beta) * current: written as two products rather than
                // ema + (1 - beta) * (current - ema) so beta = 0 copies the live weights exactly
                // (the difference form rounds, and the test of that flaked).
                current
                    .mul_scalar(1.0 - self.beta)
                    .add(ema.mul_scalar(self.beta))
            }
            // A parameter the live model does not have cannot be averaged: keep it.
            None => ema,
        };
        Param::from_mapped_value(id, updated, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    fn weights<BB: Backend>(linear: &Linear<BB>) -> Vec<f32> {
        linear.weight.val().into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn ema_moves_a_fraction_towards_the_live_weights() {
        let device = Default::default();
        let live: Linear<B> = LinearConfig::new(3, 2).init(&device);
        let ema = live.valid();
        // Change the live weights to a known value.
        let target = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32; 6], [3, 2]), &device);
        let live = Linear {
            weight: Param::initialized(live.weight.id, target),
            ..live
        };
        let before = weights(&ema);
        let ema = update_ema::<B, _>(ema, &live, 0.75);
        for (b, a) in before.iter().zip(weights(&ema)) {
            assert!((a - (0.75 * b + 0.25)).abs() < 1e-6);
        }
        // beta = 0 copies the live weights.
        let ema = update_ema::<B, _>(ema, &live, 0.0);
        assert_eq!(weights(&ema), vec![1.0; 6]);
    }
}
