//! Autodiff graphs are built by one thread of the process at a time: trainings take turns
//! ([`process_turn`]), and so do the data-parallel peers of one training ([`Turn`]).
//!
//! burn 0.21's autodiff keeps every graph of the process in one global registry, and the
//! cleanup at the end of each backward pass (`GraphCleaner::cleanup_orphaned_entries` in
//! burn-autodiff's `src/runtime/graph.rs`) frees the "unused roots" of *every* graph, whichever
//! thread is building it: a graph that another thread is in the middle of building can lose
//! steps, and its backward pass then misses gradient contributions (wrong or missing gradients
//! of the first layers; docs/SCALING.md has the measurements).
//!
//! A peer holds its [`Turn`] while it builds a graph, runs a backward pass or steps its
//! optimizer (which makes new leaves), and gives it up while it waits for the others in an
//! all-reduce: nothing of its own is being built then, so another peer's cleanup frees only
//! what is dead. The peers' graph building is serial; their kernels are not (on a GPU the
//! launches queue and run while the next peer builds; on the CPU every op already spreads over
//! all cores).

use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Held by the training in progress in this process, and by tests that build graphs.
static PROCESS: Mutex<()> = Mutex::new(());

/// Waits until no other training (or graph-building test) of this process runs, and holds the
/// process until the guard drops. The same turn keeps the process-global backend RNG to one run
/// between its seeding and the networks' initialisation.
pub(crate) fn process_turn() -> MutexGuard<'static, ()> {
    // A panic in another training poisons the lock but leaves nothing shared half-written.
    PROCESS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A peer's claim on its group's turn; no claim at all for a lone device.
pub(crate) struct Turn<'a> {
    lock: Option<&'a Mutex<()>>,
    held: RefCell<Option<MutexGuard<'a, ()>>>,
}

impl<'a> Turn<'a> {
    /// The turn of a peer whose group shares `lock` (several devices: cargo feature
    /// `collective`).
    #[cfg_attr(not(any(test, feature = "collective")), allow(dead_code))]
    pub fn of(lock: &'a Mutex<()>) -> Self {
        Self {
            lock: Some(lock),
            held: RefCell::new(None),
        }
    }

    /// One device: nobody to take turns with.
    pub fn alone() -> Self {
        Self {
            lock: None,
            held: RefCell::new(None),
        }
    }

    /// Waits for the turn (kept until [`Self::give_up`] or the drop).
    pub fn take(&self) {
        let Some(lock) = self.lock else { return };
        let mut held = self.held.borrow_mut();
        if held.is_none() {
            // A peer that panicked holding the turn left no graph half-registered that matters
            // to the others: its step is being reported as failed.
            *held = Some(lock.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Lets the other peers build while this one waits.
    pub fn give_up(&self) {
        self.held.borrow_mut().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData};

    use crate::config::{LossConfig, OptimConfig};
    use crate::nets::Nets;
    use crate::training_loop::step::{peer_step, NoSync, StepInputs};

    type Cpu = Autodiff<Flex>;

    /// Every parameter's values, in visiting order.
    fn values_of<M: Module<Cpu>>(module: &M) -> Vec<TensorData> {
        struct Values(Vec<TensorData>);
        impl<B: Backend> ModuleVisitor<B> for Values {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.push(param.val().into_data());
            }
        }
        let mut values = Values(Vec::new());
        module.visit(&mut values);
        values.0
    }

    /// Every parameter of G then D, as bits.
    fn weights(nets: &Nets<Cpu>) -> Vec<u32> {
        let (g, d) = (values_of(&nets.g), values_of(&nets.d));
        g.into_iter()
            .chain(d)
            .flat_map(|values| values.convert::<f32>().to_vec::<f32>().unwrap())
            .map(f32::to_bits)
            .collect()
    }

    /// Replaces every parameter's values, in visiting order, keeping it a leaf that takes
    /// gradients.
    struct SetValues(std::vec::IntoIter<TensorData>);

    impl<B: Backend> ModuleMapper<B> for SetValues {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, old, mapper) = param.consume();
            let values = self.0.next().expect("one value per parameter");
            let new = Tensor::from_data(values, &old.device()).require_grad();
            Param::from_mapped_value(id, new, mapper)
        }
    }

    /// Values in [-1, 1) from a fixed sequence.
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Eight peers stepping at once, taking turns, each end with the weights of the same step
    /// taken alone, bit for bit, round after round. (Without the turns, `Turn::alone()` on each
    /// thread, a peer's first layers differ within a few dozen rounds.)
    #[test]
    fn peers_stepping_at_once_in_turns_match_a_lone_step_bit_for_bit() {
        let _process = process_turn();
        let model = pgan_model::ModelConfig::cpu_small(8)
            .with_latent_dim(8)
            .with_fmap_base(16)
            .with_fmap_max(8);
        let optim = OptimConfig::default();
        let device = Default::default();
        // Every peer starts from the same weights, set from values (other tests of this process
        // may draw from the backend's RNG meanwhile).
        let start = Nets::<Cpu>::fresh(&model, &optim, &device, None);
        let (g_values, d_values) = (values_of(&start.g), values_of(&start.d));
        let fresh = || {
            let mut nets = Nets::<Cpu>::fresh(&model, &optim, &device, None);
            nets.g = nets.g.map(&mut SetValues(g_values.clone().into_iter()));
            nets.d = nets.d.map(&mut SetValues(d_values.clone().into_iter()));
            nets
        };
        // A fade-in to 8x8 with the paper's WGAN-GP: both from_rgb layers and the penalty.
        let n = 2;
        let inputs = StepInputs {
            reals: values(1, n * 3 * 8 * 8),
            reals_shape: [n, 3, 8, 8],
            noise_reals: None,
            latents_d: values(2, n * 8),
            noise_fakes_d: None,
            mix: values(3, n).iter().map(|v| v.abs()).collect(),
            latents_g: values(4, n * 8),
            noise_fakes_g: None,
            latent_dim: 8,
            stage: 1,
            alpha: 0.5,
            lr_d: 1e-3,
            lr_g: 1e-3,
            feature_matching: 0.0,
        };
        let loss = LossConfig::default();
        let step = |mut nets: Nets<Cpu>, turn: &Turn<'_>| {
            peer_step(&mut nets, inputs.clone(), &loss, &device, &NoSync, turn).unwrap();
            weights(&nets)
        };
        let alone = step(fresh(), &Turn::alone());
        let lock = Mutex::new(());
        for round in 0..200 {
            let peers: Vec<Nets<Cpu>> = (0..8).map(|_| fresh()).collect();
            let after: Vec<Vec<u32>> = std::thread::scope(|s| {
                let handles: Vec<_> = peers
                    .into_iter()
                    .map(|nets| s.spawn(|| step(nets, &Turn::of(&lock))))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (peer, weights) in after.iter().enumerate() {
                assert!(
                    *weights == alone,
                    "round {round}: peer {peer}'s weights differ from a lone step's"
                );
            }
        }
    }
}
