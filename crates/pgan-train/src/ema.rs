//! Exponential moving average of the generator weights (ProGAN's `Gs`, `G_smoothing = 0.999`).
//!
//! The averaged generator lives on the inner (non-autodiff) backend and is what samples, render
//! and eval use. Parameters are matched by `ParamId`, which burn keeps identical between a module,
//! its `valid()` copy and a copy restored from a record.

use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use pgan_model::Generator;

/// Moves every float parameter of `ema` towards the same parameter of `model`:
/// `ema = beta * ema + (1 - beta) * model`.
pub fn update_ema<B, M>(ema: M::InnerModule, model: &M, beta: f64) -> M::InnerModule
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    update_ema_except::<B, M>(ema, model, beta, &HashSet::new())
}

/// [`update_ema`] of the generator for a step at `stage`, leaving out the stages not grown yet
/// (`blocks[stage..]`, `to_rgb[stage + 1..]`): they took no part in any step so far, so Adam
/// never moved them (no gradient, no optimizer state) and their average is their own value.
/// Averaging them anyway costs a pass over up to most of G's weights at the low resolutions and
/// only adds rounding: `beta·p + (1 − beta)·p` is not `p` in f32, so today's averages of those
/// layers drifted from `p` by a few ulps per step; skipped, they stay `p`, which is also what
/// the official code's `lerp(new, old, beta) = new + (old − new)·beta` keeps for them. The layers
/// a stage stopped using (an old `to_rgb` after its fade) are still averaged: their average has
/// not reached their value yet.
pub fn update_generator_ema<B: AutodiffBackend>(
    ema: Generator<B::InnerBackend>,
    g: &Generator<B>,
    beta: f64,
    stage: usize,
) -> Generator<B::InnerBackend> {
    let mut not_grown = ParamIds(HashSet::new());
    for block in g.blocks.iter().skip(stage) {
        block.visit(&mut not_grown);
    }
    for to_rgb in g.to_rgb.iter().skip(stage + 1) {
        to_rgb.visit(&mut not_grown);
    }
    update_ema_except::<B, Generator<B>>(ema, g, beta, &not_grown.0)
}

/// [`update_ema`] with the parameters in `skip` left as they are.
fn update_ema_except<B, M>(
    ema: M::InnerModule,
    model: &M,
    beta: f64,
    skip: &HashSet<ParamId>,
) -> M::InnerModule
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let current = model.valid();
    let mut collector = FlatParams::<B::InnerBackend> {
        params: HashMap::new(),
        skip,
    };
    current.visit(&mut collector);
    let mut mapper = Lerp {
        source: collector.params,
        beta,
    };
    ema.map(&mut mapper)
}

/// The ids of a module's float parameters.
struct ParamIds(HashSet<ParamId>);

impl<B: Backend> ModuleVisitor<B> for ParamIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.insert(param.id);
    }
}

/// Every float parameter not in `skip`, flattened to rank 1, by id.
struct FlatParams<'a, B: Backend> {
    params: HashMap<ParamId, Tensor<B, 1>>,
    skip: &'a HashSet<ParamId>,
}

impl<B: Backend> ModuleVisitor<B> for FlatParams<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.skip.contains(&param.id) {
            return;
        }
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
            // A parameter the live model does not have, or one left out: keep it.
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

    /// Every float parameter of a generator, flattened, in visiting order.
    fn all_params<BB: Backend>(g: &Generator<BB>) -> Vec<Vec<f32>> {
        struct All(Vec<Vec<f32>>);
        impl<BB: Backend> ModuleVisitor<BB> for All {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<BB, D>>) {
                self.0
                    .push(param.val().into_data().to_vec::<f32>().unwrap());
            }
        }
        let mut all = All(Vec::new());
        g.visit(&mut all);
        all.0
    }

    /// At each stage the generator's EMA averages exactly the stages grown so far, bit for bit as
    /// the full average does, and leaves the others at their value.
    #[test]
    fn generator_ema_leaves_the_stages_not_grown_alone() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        let device = Default::default();
        let config = pgan_model::ModelConfig::new(16)
            .with_latent_dim(8)
            .with_fmap_base(32)
            .with_fmap_max(8);
        <B as Backend>::seed(&device, 1);
        let live = config.init_generator::<B>(&device);
        // The trainer's two copies: the average starts as the live weights (same ids), which
        // then move.
        let ema = live.valid();
        struct Shift;
        impl ModuleMapper<B> for Shift {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                param.map(|t| t.add_scalar(0.5))
            }
        }
        let live = live.map(&mut Shift);
        let before = all_params(&ema);
        let live_values = all_params(&live);
        for stage in 0..3 {
            let full = all_params(&update_ema::<B, _>(ema.clone(), &live, 0.75));
            let grown = all_params(&update_generator_ema::<B>(ema.clone(), &live, 0.75, stage));
            // Visiting order: input block (2 layers x 2), blocks[k] (2 layers x 2 each), to_rgb[k].
            let block = |k: usize| 4 + 4 * k..8 + 4 * k;
            let to_rgb = |k: usize| 12 + 2 * k..14 + 2 * k;
            assert_eq!(grown.len(), 18);
            let mut skipped = vec![false; grown.len()];
            for k in stage..2 {
                block(k).for_each(|t| skipped[t] = true);
            }
            for k in stage + 1..3 {
                to_rgb(k).for_each(|t| skipped[t] = true);
            }
            for t in 0..grown.len() {
                if skipped[t] {
                    assert_eq!(
                        grown[t], before[t],
                        "stage {stage}: parameter {t} was averaged"
                    );
                } else {
                    assert_eq!(grown[t], full[t], "stage {stage}: parameter {t}");
                    assert_ne!(
                        grown[t], before[t],
                        "stage {stage}: parameter {t} did not move"
                    );
                }
            }
            assert!(live_values.iter().zip(&before).all(|(a, b)| a != b));
        }
    }
}
