//! Adam's update of one parameter as a single fused, multi-threaded pass on `Flex` tensors.
//!
//! burn's `Adam` writes the update as ~13 element-wise tensor ops per parameter (two moments,
//! the bias-corrected step, the subtraction), and flex runs each of them as a separate pass on
//! one thread; at 4x4 and 8x8, where the convolutions are small, that is a visible share of a
//! training step. [`adam_step`] computes the same expressions, in the same order and in `f32`,
//! so its result equals burn's bit for bit (pgan-train's `FusedAdam` tests it against burn's
//! `Adam`), and its state is burn's [`AdaptiveMomentumState`].

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::optim::AdaptiveMomentumState;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use crate::tensors::dense;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// Adam without weight decay or AMSGrad (what ProGAN uses: β1 0, β2 0.99, ε 1e-8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// First-moment decay.
    pub beta_1: f32,
    /// Second-moment decay.
    pub beta_2: f32,
    /// Denominator epsilon.
    pub epsilon: f32,
}

/// One step on a flattened parameter: both moments and the parameter updated in place (the
/// buffers are reused when nothing else holds them).
pub fn adam_step(
    adam: AdamParams,
    lr: f64,
    param: FlexTensor,
    grad: FlexTensor,
    state: Option<AdaptiveMomentumState<Flex, 1>>,
) -> (FlexTensor, AdaptiveMomentumState<Flex, 1>) {
    let shape = param.shape();
    let n = shape.num_elements();
    let mut param = dense(param);
    let grad = dense(grad);
    let g = &grad.storage::<f32>()[..n];
    let (time, first, mut m1, mut m2) = match state {
        Some(s) => (
            s.time + 1,
            false,
            dense(s.moment_1.into_primitive().tensor()),
            dense(s.moment_2.into_primitive().tensor()),
        ),
        None => {
            let zeros = || FlexTensor::from_data(TensorData::new(vec![0f32; n], shape.clone()));
            (1, true, zeros(), zeros())
        }
    };
    // The scalars exactly as burn's `AdaptiveMomentum::transform` computes them.
    let (b1, b2) = (adam.beta_1, adam.beta_2);
    let (f1, f2) = (1.0 - b1, 1.0 - b2);
    let bc2 = (1.0 - b2.powi(time as i32)).sqrt();
    let factor = bc2 / (1.0 - b1.powi(time as i32));
    let eps = adam.epsilon * bc2;
    let lr = lr as f32;
    let p = &mut param.storage_mut::<f32>()[..n];
    let m1s = &mut m1.storage_mut::<f32>()[..n];
    let m2s = &mut m2.storage_mut::<f32>()[..n];
    p.par_chunks_mut(CHUNK)
        .zip(m1s.par_chunks_mut(CHUNK))
        .zip(m2s.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        // `move`: the scalars are the closure's own, not reloaded after every store.
        .for_each(move |(((p, m1), m2), g)| {
            for (((p, m1), m2), &g) in p.iter_mut().zip(m1).zip(m2).zip(g) {
                // burn: m1·β1 + g·(1 − β1); on the first step g·(1 − β1) alone.
                let (new1, new2) = if first {
                    (g * f1, (g * g) * f2)
                } else {
                    (*m1 * b1 + g * f1, *m2 * b2 + (g * g) * f2)
                };
                *m1 = new1;
                *m2 = new2;
                let update = (new1 * factor) / (new2.sqrt() + eps);
                *p -= update * lr;
            }
        });
    let to_tensor = |t: FlexTensor| Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(t));
    // The moments keep the parameter's shape; the rank is restored by the caller.
    let state = AdaptiveMomentumState::new(time, to_tensor(m1), to_tensor(m2));
    (param, state)
}
