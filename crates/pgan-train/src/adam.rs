//! Adam (Kingma & Ba 2015) for G and D: burn's own [`Adam`] on every backend, with the update
//! of each parameter as one fused, multi-threaded pass where the backend has one
//! (`pgan_model::kernels::adam_step`, `pgan-flex` on the CPU). The fused pass computes the same
//! expressions, in the same order and in `f32`, so its result equals burn's bit for bit (a test
//! checks it), and [`FusedAdam`] keeps burn's [`AdamState`] as its state: optimizer records and
//! checkpoints are the same either way.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, AdamState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use pgan_model::kernels::{self, AdamParams};

/// Adam without weight decay or AMSGrad (what ProGAN uses: β1 0, β2 0.99, ε 1e-8).
#[derive(Clone)]
pub struct FusedAdam {
    params: AdamParams,
    /// The same optimizer as burn writes it, for backends without a fused step.
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
            params: AdamParams {
                beta_1,
                beta_2,
                epsilon,
            },
            burn,
        }
    }

    /// The optimizer for a whole module (burn's adaptor: per-parameter state by `ParamId`).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
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
        match kernels::adam_step(self.params, lr, tensor, grad, state) {
            Ok((tensor, state)) => (tensor, Some(state)),
            Err((tensor, grad, state)) => {
                SimpleOptimizer::<B>::step(&self.burn, lr, tensor, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <Adam as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
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
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
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
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
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
