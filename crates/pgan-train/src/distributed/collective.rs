//! The peers of one process on burn-collective: one thread per replica for each step, the
//! gradients all-reduced through burn-collective's local server.

use std::cell::Cell;
use std::path::Path;
use std::time::Instant;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use pgan_model::ModelConfig;

use crate::checkpoint;
use crate::config::{LossConfig, OptimConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::nets::Nets;
use crate::training_loop::step::{peer_step, GradSync, PeerStepOutput, StepInputs};

/// A replica: peer `rank`'s networks and optimizers on its device.
struct Replica<B: AutodiffBackend> {
    rank: usize,
    nets: Nets<B>,
    device: B::Device,
}

/// Peer 0 (the trainer's networks, passed to each call) and the replicas.
pub(super) struct PeerGroup<B: AutodiffBackend> {
    replicas: Vec<Replica<B>>,
    model: ModelConfig,
    optim: OptimConfig,
}

impl<B: AutodiffBackend> PeerGroup<B> {
    /// Registers `config.run.devices` peers with the collective and loads the replicas from
    /// `ckpt`.
    pub fn start(
        config: &TrainConfig,
        model: &ModelConfig,
        ckpt: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        let indices = &config.run.devices;
        let count = indices.len();
        let mut replicas: Vec<Replica<B>> = Vec::with_capacity(count - 1);
        for (rank, &index) in indices.iter().enumerate().skip(1) {
            let device = device_at::<B>(device, index);
            let fresh = Nets::fresh(model, &config.optim, &device, None);
            let nets = checkpoint::load_training(ckpt, fresh, &device)?;
            replicas.push(Replica { rank, nets, device });
        }
        // A previous training of this process may have left peers registered.
        burn_collective::reset_collective::<B::InnerBackend>();
        let collective = CollectiveConfig::default().with_num_devices(count);
        let mut devices: Vec<B::Device> = vec![device.clone()];
        devices.extend(replicas.iter().map(|r| r.device.clone()));
        // `register` returns once every peer has registered: one thread each.
        std::thread::scope(|s| {
            let handles: Vec<_> = devices
                .into_iter()
                .enumerate()
                .map(|(rank, device)| {
                    let collective = collective.clone();
                    s.spawn(move || {
                        burn_collective::register::<B::InnerBackend>(
                            PeerId(rank as u32),
                            device,
                            collective,
                        )
                        .map_err(|e| collective_error(rank, "register", e))
                    })
                })
                .collect();
            for handle in handles {
                join(handle)??;
            }
            Ok::<_, TrainError>(())
        })?;
        Ok(Self {
            replicas,
            model: model.clone(),
            optim: config.optim.clone(),
        })
    }

    /// Peers, peer 0 included.
    pub fn count(&self) -> usize {
        self.replicas.len() + 1
    }

    /// One step on every peer, each on its share of `inputs`; every peer's output, peer 0's
    /// first.
    pub fn step(
        &mut self,
        nets: &mut Nets<B>,
        inputs: &StepInputs,
        loss: &LossConfig,
        device: &B::Device,
    ) -> Result<Vec<PeerStepOutput<B>>> {
        let count = self.count();
        let shares: Vec<StepInputs> = (0..count).map(|r| inputs.share(r, count)).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(&shares[1..])
                .map(|(replica, share)| {
                    s.spawn(move || {
                        run_peer(
                            replica.rank,
                            &mut replica.nets,
                            share,
                            loss,
                            &replica.device,
                        )
                    })
                })
                .collect();
            let first = run_peer(0, nets, &shares[0], loss, device);
            let mut outs = vec![first];
            for handle in handles {
                outs.push(join(handle).and_then(|r| r));
            }
            outs.into_iter().collect()
        })
    }

    /// Every replica loads `ckpt` (the checkpoint peer 0 just restored).
    pub fn load(&mut self, ckpt: &Path) -> Result<()> {
        for replica in &mut self.replicas {
            let fresh = Nets::fresh(&self.model, &self.optim, &replica.device, None);
            replica.nets = checkpoint::load_training(ckpt, fresh, &replica.device)?;
        }
        Ok(())
    }

    /// Fresh Adam moments on every replica (peer 0 resets its own).
    pub fn reset_optimizers(&mut self, optim: &OptimConfig) {
        for replica in &mut self.replicas {
            replica.nets.reset_optimizers(optim);
        }
    }
}

impl<B: AutodiffBackend> Drop for PeerGroup<B> {
    fn drop(&mut self) {
        burn_collective::reset_collective::<B::InnerBackend>();
    }
}

/// One peer's step with its all-reduce time. A failed peer resets the collective so the
/// others, waiting in an all-reduce for it, fail too instead of waiting for ever.
fn run_peer<B: AutodiffBackend>(
    rank: usize,
    nets: &mut Nets<B>,
    share: &StepInputs,
    loss: &LossConfig,
    device: &B::Device,
) -> Result<PeerStepOutput<B>> {
    let sync = CollectiveSync {
        peer: PeerId(rank as u32),
        seconds: Cell::new(0.0),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        peer_step(nets, share, loss, device, &sync)
    }))
    .unwrap_or_else(|panic| {
        Err(TrainError::Peer {
            peer: rank.to_string(),
            message: format!("panicked: {}", panic_message(&panic)),
        })
    });
    match result {
        Ok(mut out) => {
            out.sync_s = sync.seconds.get();
            Ok(out)
        }
        Err(e) => {
            burn_collective::reset_collective::<B::InnerBackend>();
            Err(e)
        }
    }
}

/// Peer `peer`'s side of the gradient all-reduce: every gradient of the module, flattened into
/// one vector in the module's parameter order (the same on every peer), one all-reduce (mean),
/// and back.
struct CollectiveSync {
    peer: PeerId,
    /// Seconds spent in the all-reduce so far.
    seconds: Cell<f64>,
}

impl GradSync for CollectiveSync {
    fn sync<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams> {
        let mut flatten = Flatten::<B> {
            grads: &mut grads,
            parts: Vec::new(),
            taken: Vec::new(),
        };
        module.visit(&mut flatten);
        let Flatten { parts, taken, .. } = flatten;
        if parts.is_empty() {
            return Ok(grads);
        }
        let flat = Tensor::cat(parts, 0);
        let started = Instant::now();
        let reduced = burn_collective::all_reduce::<B::InnerBackend>(
            self.peer,
            flat.into_primitive().tensor(),
            ReduceOperation::Mean,
        )
        .map_err(|e| collective_error(self.peer.0 as usize, "gradient all-reduce", e))?;
        self.seconds
            .set(self.seconds.get() + started.elapsed().as_secs_f64());
        let reduced = Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(reduced));
        let mut unflatten = Unflatten::<B> {
            grads: &mut grads,
            reduced,
            taken: &taken,
            next: 0,
            offset: 0,
        };
        module.visit(&mut unflatten);
        Ok(grads)
    }
}

/// Takes each parameter's gradient out of `grads`, flattened, in visiting order.
struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    /// The parameters whose gradients were taken, with their element counts.
    taken: Vec<(ParamId, usize)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let n = g.shape().num_elements();
            self.taken.push((param.id, n));
            self.parts.push(g.reshape([n]));
        }
    }
}

/// Puts the all-reduced gradients back, in the same order.
struct Unflatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    reduced: Tensor<B::InnerBackend, 1>,
    taken: &'a [(ParamId, usize)],
    next: usize,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(&(id, n)) = self.taken.get(self.next) else {
            return;
        };
        if id != param.id {
            return;
        }
        let dims: [usize; D] = param.shape().dims();
        let part = self
            .reduced
            .clone()
            .slice(self.offset..self.offset + n)
            .reshape(dims);
        self.grads.register::<B::InnerBackend, D>(id, part);
        self.next += 1;
        self.offset += n;
    }
}

/// The device of index `index` of `base`'s kind (the CPU has one device: every index is it).
fn device_at<B: AutodiffBackend>(base: &B::Device, index: usize) -> B::Device {
    use burn::tensor::backend::DeviceOps;
    let mut id = base.id();
    if pgan_model::kernels::is_cpu::<B::InnerBackend>() {
        return base.clone();
    }
    id.index_id = index as u16;
    <B::Device as burn::tensor::backend::Device>::from_id(id)
}

fn collective_error(rank: usize, what: &str, e: burn_collective::CollectiveError) -> TrainError {
    TrainError::Peer {
        peer: rank.to_string(),
        message: format!("{what} failed: {e:?}"),
    }
}

/// A peer thread's result; a panic that escaped `run_peer` becomes an error.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> Result<T> {
    handle.join().map_err(|panic| TrainError::Peer {
        peer: "thread".into(),
        message: format!("panicked: {}", panic_message(&panic)),
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
