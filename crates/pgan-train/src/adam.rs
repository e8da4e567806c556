//! Adam (Kingma & Ba 2015) for G and D: burn's own [`Adam`] on every backend, with the update
//! of each parameter as one fused, multi-threaded pass on the CPU backend (`Flex`).
//!
//! burn's `Adam` writes the update as ~13 element-wise tensor ops per parameter (two moments,
//! the bias-corrected step, the subtraction), and flex runs each of them as a separate pass on
//! one thread. At 4x4 and 8x8 that was a visible share of a CPU training step, where the
//! convolutions are small (docs/BENCHMARKS.md). [`FusedAdam`] computes the same expressions, in
//! the same order and in `f32`, so its result equals burn's bit for bit (a test checks it), and
//! keeps burn's [`AdamState`] as its state: optimizer records and checkpoints are the same
//! either way.

use core::any::TypeId;

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, SimpleOptimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use pgan_model::flex_conv::cast;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// Adam without weight decay or AMSGrad (what ProGAN uses: β1 0, β2 0.99, ε 1e-8).
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    /// The same optimizer as burn writes it, for every backend but `Flex`.
    burn: Adam,
}

impl FusedAdam {
    /// Adam with these moments' decay rates and ε.
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        let burn = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            burn,
        }
    }

    /// The optimizer for a whole module (burn's adaptor: per-parameter state by `ParamId`).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }

    /// One step on a CPU parameter: both moments and the parameter updated in place.
    fn step_flex(
        &self,
        lr: LearningRate,
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
        let (b1, b2) = (self.beta_1, self.beta_2);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        let bc2 = (1.0 - b2.powi(time as i32)).sqrt();
        let factor = bc2 / (1.0 - b1.powi(time as i32));
        let eps = self.epsilon * bc2;
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
        let to_tensor =
            |t: FlexTensor| Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(t));
        // The moments keep the parameter's shape; the rank is restored by the caller.
        let state = AdaptiveMomentumState::new(time, to_tensor(m1), to_tensor(m2));
        (param, state)
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let fused = TypeId::of::<B>() == TypeId::of::<Flex>()
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32;
        if !fused {
            return SimpleOptimizer::<B>::step(&self.burn, lr, tensor, grad, state);
        }
        let dims = tensor.shape();
        let flat = |t: Tensor<B, D>| -> FlexTensor {
            let n = t.shape().num_elements();
            cast::<_, Tensor<Flex, D>>(t)
                .reshape([n])
                .into_primitive()
                .tensor()
        };
        let flat_state = state.map(|s| {
            let m = s.momentum;
            AdaptiveMomentumState::new(
                m.time,
                Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(flat(m.moment_1))),
                Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(flat(m.moment_2))),
            )
        });
        let (param, m) = self.step_flex(lr, flat(tensor), flat(grad), flat_state);
        let back = |t: Tensor<Flex, 1>| cast::<_, Tensor<B, D>>(t.reshape::<D, _>(dims.clone()));
        let param = back(Tensor::from_primitive(TensorPrimitive::Float(param)));
        let momentum = AdaptiveMomentumState::new(m.time, back(m.moment_1), back(m.moment_2));
        (param, Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <Adam as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// The tensor with its elements in row-major order from the start of its buffer.
fn dense(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::{Module, Param};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::Distribution;

    type Cpu = Autodiff<Flex>;

    /// Two layers; the first's weight (60,000 floats) spans several parallel chunks. (burn's
    /// `derive(Module)` needs the backend parameter to be called `B`: with another name the
    /// derived visitor found no parameters, and no optimizer moved anything.)
    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        w1: Param<Tensor<B, 2>>,
        b1: Param<Tensor<B, 1>>,
        w2: Param<Tensor<B, 2>>,
    }

    impl Net<Cpu> {
        fn new(seed: u64) -> Self {
            let device = Default::default();
            <Cpu as Backend>::seed(&device, seed);
            let normal = Distribution::Normal(0.0, 0.05);
            Self {
                w1: Param::from_tensor(Tensor::random([300, 200], normal, &device)),
                b1: Param::from_tensor(Tensor::random([200], normal, &device)),
                w2: Param::from_tensor(Tensor::random([200, 3], normal, &device)),
            }
        }

        fn loss(&self, x: &Tensor<Cpu, 2>) -> Tensor<Cpu, 1> {
            let hidden = (x.clone().matmul(self.w1.val()) + self.b1.val().unsqueeze()).tanh();
            hidden.matmul(self.w2.val()).powi_scalar(2).mean()
        }

        fn params(&self) -> Vec<Vec<f32>> {
            [
                self.w1.val().into_data(),
                self.b1.val().into_data(),
                self.w2.val().into_data(),
            ]
            .into_iter()
            .map(|d| d.to_vec::<f32>().expect("f32"))
            .collect()
        }
    }

    fn batch() -> Tensor<Cpu, 2> {
        Tensor::random(
            [8, 300],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )
    }

    fn burns(beta_1: f32, beta_2: f32, epsilon: f32) -> OptimizerAdaptor<Adam, Net<Cpu>, Cpu> {
        AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .init()
    }

    /// Five steps of both optimizers from the same weights on the same batches, with ProGAN's
    /// settings and with a non-zero β1.
    #[test]
    fn equals_burns_adam_bit_for_bit() {
        for (beta_1, beta_2, lr) in [(0.0, 0.99, 1e-3), (0.9, 0.999, 1e-2)] {
            let initial = Net::new(7);
            let before = initial.params();
            let (mut ours, mut theirs) = (initial.clone(), initial.clone());
            let mut fused = FusedAdam::new(beta_1, beta_2, 1e-8).init::<Cpu, Net<Cpu>>();
            let mut reference = burns(beta_1, beta_2, 1e-8);
            for step in 0..5 {
                let x = batch();
                let g = GradientsParams::from_grads::<Cpu, _>(ours.loss(&x).backward(), &ours);
                ours = fused.step(lr, ours, g);
                let g = GradientsParams::from_grads::<Cpu, _>(theirs.loss(&x).backward(), &theirs);
                theirs = reference.step(lr, theirs, g);
                assert_same(&ours, &theirs, &format!("β1 {beta_1}, step {step}"));
            }
            assert!(ours.params() != before, "the steps moved the weights");
            assert!(
                initial.params() == before,
                "the optimizer left the weights it was given alone"
            );
        }
    }

    /// The state is burn's: a checkpointed record of burn's optimizer continues in this one.
    #[test]
    fn continues_from_a_checkpoint_of_burns_adam() {
        let net = Net::new(3);
        let mut reference = burns(0.9, 0.99, 1e-5);
        let x = batch();
        let g = GradientsParams::from_grads::<Cpu, _>(net.loss(&x).backward(), &net);
        let after_one = reference.step(1e-2, net, g);
        let dir = tempfile::tempdir().expect("temp dir");
        crate::checkpoint::save_record::<Cpu, _>(reference.to_record(), dir.path(), "optim")
            .expect("save");
        let record =
            crate::checkpoint::load_record::<Cpu, _>(dir.path(), "optim", &Default::default())
                .expect("burn's Adam record loads as FusedAdam's");
        let mut fused = FusedAdam::new(0.9, 0.99, 1e-5)
            .init::<Cpu, Net<Cpu>>()
            .load_record(record);
        let x = batch();
        let g = GradientsParams::from_grads::<Cpu, _>(after_one.loss(&x).backward(), &after_one);
        let ours = fused.step(1e-2, after_one.clone(), g);
        let g = GradientsParams::from_grads::<Cpu, _>(after_one.loss(&x).backward(), &after_one);
        let theirs = reference.step(1e-2, after_one, g);
        assert_same(&ours, &theirs, "after the record");
    }

    /// Every parameter bit for bit; names the first difference.
    fn assert_same(ours: &Net<Cpu>, theirs: &Net<Cpu>, what: &str) {
        for (t, (a, b)) in ours.params().iter().zip(theirs.params()).enumerate() {
            if let Some(i) = a
                .iter()
                .zip(&b)
                .position(|(x, y)| x.to_bits() != y.to_bits())
            {
                panic!("{what}: parameter {t}[{i}]: {} vs {}", a[i], b[i]);
            }
        }
    }
}
