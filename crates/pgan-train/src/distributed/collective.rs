//! The peers of one process on burn-collective: one thread per replica for each step, the
//! gradients all-reduced through burn-collective's local server.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use pgan_model::ModelConfig;

use super::nodes::{all_reduce_watched, JoinInfo, NodeLink, Ring, Watch};
use crate::checkpoint::{self, DatasetFingerprint, TrainState};
use crate::config::{LossConfig, OptimConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::nets::Nets;
use crate::training_loop::step::{peer_step, GradSync, PeerStepOutput, StepInputs, Turn};

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
    /// Global index of this node's peer 0 (`rank · devices`), and the peers of all nodes.
    first: usize,
    total: usize,
    /// Several nodes: the join's watchdog, then the gradient ring between the nodes.
    watch: Option<Arc<Watch>>,
    ring: Option<Arc<Ring>>,
    /// Peer 0's device (for the all-reduces of host values).
    device: B::Device,
    /// Several nodes: whether this node wants to stop after the next step, and what the nodes
    /// agreed at the last exchange (`None` before the first).
    stop_wish: bool,
    stop_agreed: Option<bool>,
    /// An exchange told every node that one of them stops (a changed dataset, outputs not
    /// written): each knows, so none tells the others its error.
    failure_agreed: bool,
    /// The peers build their autodiff graphs one at a time ([`Turn`]).
    turn: std::sync::Mutex<()>,
}

impl<B: AutodiffBackend> PeerGroup<B> {
    /// Registers this node's `config.run.devices` peers with the collective (on several nodes:
    /// joins the orchestrator and runs the join check) and loads the replicas from `ckpt`.
    pub fn start(
        config: &TrainConfig,
        model: &ModelConfig,
        ckpt: &Path,
        dataset: &DatasetFingerprint,
        nets: &Nets<B>,
        device: &B::Device,
        stop: &Arc<AtomicBool>,
    ) -> Result<Self> {
        // burn-collective's panics on a failed peer are reported as pgan's errors.
        super::network_panics::quiet();
        let local = super::local_peer_count(config);
        let first = config.nodes.rank * local;
        let total = super::peer_count(config);
        let link = if config.nodes.several() {
            super::nodes::quiet_websocket_output();
            Some(NodeLink::of(config)?)
        } else {
            None
        };
        let mut replicas: Vec<Replica<B>> = Vec::with_capacity(local - 1);
        for (rank, &index) in config.run.devices.iter().enumerate().skip(1) {
            let device = device_at::<B>(device, index);
            let fresh = Nets::fresh(model, &config.optim, &device, None);
            let nets = checkpoint::load_training(ckpt, fresh, &device)?;
            replicas.push(Replica {
                rank: first + rank,
                nets,
                device,
            });
        }
        // A previous training of this process may have left peers registered.
        reset_quietly::<B>();
        // On several nodes, one more local peer than devices: the placeholder, registered last
        // (see `placeholder_peer`).
        let mut collective = CollectiveConfig::default().with_num_devices(local);
        if let Some(link) = &link {
            collective = link.collective(collective.with_num_devices(local + 1));
        }
        let mut devices: Vec<B::Device> = vec![device.clone()];
        devices.extend(replicas.iter().map(|r| r.device.clone()));
        // `register` returns once every peer (of every node) has registered: one thread each.
        // Detached threads, waited for with a deadline: burn-collective retries an unreachable
        // orchestrator for ever.
        let join_deadline =
            Instant::now() + link.as_ref().map_or(Duration::ZERO, |l| l.join_timeout);
        if let Some(link) = &link {
            link.wait_for_orchestrator(join_deadline, stop)?;
            // Free at the start, but the wait may have been long.
            link.check_ports_free()?;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let register = |peer: PeerId, device: B::Device| {
            let (tx, collective) = (tx.clone(), collective.clone());
            std::thread::Builder::new()
                .name(format!("pgan-register-{}", peer.0))
                .spawn(move || {
                    let result =
                        burn_collective::register::<B::InnerBackend>(peer, device, collective)
                            .map_err(|e| collective_error(peer.0 as usize, "register", e));
                    let _ = tx.send(result);
                })
                .map(|_| ())
                .map_err(|e| TrainError::Peer {
                    peer: format!("peer {}", peer.0),
                    message: format!("cannot start a thread: {e}"),
                })
        };
        for (local_rank, device) in devices.into_iter().enumerate() {
            register(PeerId((first + local_rank) as u32), device)?;
        }
        let mut registering = local;
        if let Some(link) = &link {
            // burn-collective spawned this node's data server when its first peer registered;
            // the other nodes connect to it once, without a retry, as soon as the orchestrator
            // has every node's registration, which the placeholder completes.
            link.wait_briefly_for_data_server(stop)?;
            register(placeholder_peer(link, total), device.clone())?;
            registering += 1;
        }
        drop(tx);
        let deadline = link.as_ref().map(|l| (l, join_deadline));
        let panicked = || TrainError::Peer {
            peer: "peer thread".into(),
            message: "a register thread panicked".into(),
        };
        // burn-collective would wait for (and retry) an orchestrator that went away until the
        // join timeout: look for it once a second, and take two refusals in a row as gone (one
        // restarted within that is missed: it no longer holds this node, which then waits out
        // its join timeout).
        let orchestrator = link
            .as_ref()
            .map(|l| l.orchestrator_addresses())
            .unwrap_or_default();
        let mut next_look = Instant::now() + Duration::from_secs(1);
        let mut refusals = 0;
        for _ in 0..registering {
            let result = match deadline {
                Some((link, deadline)) => loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(link.join_timed_out());
                    }
                    if Instant::now() >= next_look {
                        match NodeLink::orchestrator_refuses(&orchestrator) {
                            Some(why) if refusals >= 1 => {
                                return Err(link.orchestrator_went_away(&why))
                            }
                            Some(_) => refusals += 1,
                            None => refusals = 0,
                        }
                        next_look = Instant::now() + Duration::from_secs(1);
                    }
                    match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                        Ok(r) => break r,
                        // The other nodes may take long to start: a Ctrl-C is answered within
                        // a fraction of a second, not at the join timeout. A registration that
                        // completed is taken first (the others go on to the join check, and
                        // the run's first stop exchange then stops them all).
                        Err(RecvTimeoutError::Timeout) if stop.load(Ordering::SeqCst) => {
                            return Err(link.join_interrupted());
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return Err(panicked()),
                    }
                },
                None => rx.recv().map_err(|_| panicked())?,
            };
            if let (Err(e), Some(link)) = (&result, &link) {
                return Err(TrainError::Peer {
                    peer: format!("node {}", link.rank),
                    message: format!(
                        "joining the orchestrator at {} failed ({e}): {}",
                        link.orchestrator,
                        join_failure_hint(&e.to_string(), link)
                    ),
                });
            }
            result?;
        }
        let mut group = Self {
            replicas,
            model: model.clone(),
            optim: config.optim.clone(),
            first,
            total,
            watch: None,
            ring: None,
            device: device.clone(),
            stop_wish: false,
            stop_agreed: None,
            failure_agreed: false,
            turn: std::sync::Mutex::new(()),
        };
        if let Some(link) = link {
            let state = checkpoint::read_state(ckpt)?;
            let watch = group.join_check(config, &link, &state, dataset, nets)?;
            group.leave_orchestrator(&link, local)?;
            // A run at its total (every node agreed on where it stands) trains no step and
            // exchanges nothing: without a ring, no node that finishes at once leaves another
            // waiting for its ring until the join timeout.
            let total = (config.schedule.total_kimg * 1000.0).round() as u64;
            if state.images_shown < total {
                group.ring = Some(Arc::new(Ring::start(
                    link.ring_port,
                    watch,
                    link.join_timeout,
                    stop,
                )?));
            }
        }
        Ok(group)
    }

    /// After the join: every local peer unregisters (the last one takes the node off the
    /// orchestrator, which is then free for the next run), and the peers of this node register
    /// again for local all-reduces only (burn-collective's global all-reduce works once per
    /// process: see [`Ring`]).
    fn leave_orchestrator(&self, link: &NodeLink, local: usize) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let peers: Vec<PeerId> = (self.first..self.first + local)
            .map(|rank| PeerId(rank as u32))
            .chain([placeholder_peer(link, self.total)])
            .collect();
        for &peer in &peers {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(burn_collective::finish_collective::<B::InnerBackend>(peer));
            });
        }
        drop(tx);
        let deadline = Instant::now() + link.join_timeout;
        for _ in 0..peers.len() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(collective_error(self.first, "leaving the orchestrator", e))
                }
                Err(_) => return Err(link.join_timed_out()),
            }
        }
        reset_quietly::<B>();
        if local > 1 {
            let collective = CollectiveConfig::default().with_num_devices(local);
            let mut devices = vec![self.device.clone()];
            devices.extend(self.replicas.iter().map(|r| r.device.clone()));
            std::thread::scope(|s| {
                let handles: Vec<_> = devices
                    .into_iter()
                    .enumerate()
                    .map(|(r, device)| {
                        let collective = collective.clone();
                        let rank = self.first + r;
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
        }
        Ok(())
    }

    /// Gathers every node's [`JoinInfo`] (one all-reduce) and refuses to train unless they
    /// agree; keeps the nodes' addresses for the watchdog.
    fn join_check(
        &mut self,
        config: &TrainConfig,
        link: &NodeLink,
        state: &TrainState,
        dataset: &DatasetFingerprint,
        nets: &Nets<B>,
    ) -> Result<Watch> {
        // The optimizers' state too: nodes that agree on the weights but not on Adam's moments
        // would drift apart from the first step.
        let mut weights = super::nodes::weight_values(nets);
        weights.extend(super::nodes::optimizer_values(nets));
        let mine = JoinInfo::new(config, dataset, state, &weights, &link.ring_address);
        self.watch = Some(Arc::new(Watch {
            rank: link.rank,
            timeout: link.join_timeout,
            addresses: Vec::new(),
            orchestrator: link.orchestrator.clone(),
        }));
        let gathered = self.join_all_gather(link, mine.slot_vector(link.rank, link.count))?;
        let nodes =
            JoinInfo::from_gathered(&gathered, link.count).map_err(|m| TrainError::Peer {
                peer: format!("node {}", link.rank),
                message: format!("join check: {m}"),
            })?;
        let differences = super::nodes::join_differences(&nodes);
        if !differences.is_empty() {
            // Every node got here (the all-gather completed): all of them leave the
            // orchestrator, which is then free for the corrected run.
            let left = self
                .leave_orchestrator(link, self.replicas.len() + 1)
                .is_ok();
            let next = if left {
                "fix it and start every node again (they asked the orchestrator to let them \
                 go; should it still hold one, restart it)"
            } else {
                "fix it, restart `pgan orchestrator` (it may still hold the nodes), and start \
                 every node again"
            };
            return Err(TrainError::Peer {
                peer: format!("node {}", link.rank),
                message: format!(
                    "join check refused the run: {}. {next}",
                    differences.join("; ")
                ),
            });
        }
        Ok(Watch {
            rank: link.rank,
            timeout: link.peer_timeout,
            addresses: nodes.into_iter().map(|n| n.address).collect(),
            orchestrator: link.orchestrator.clone(),
        })
    }

    /// The join check's all-gather: the sum over all nodes of `values` (this node's peer 0
    /// gives them, its other peers and the placeholder zeros; every local peer must take
    /// part), through burn-collective's global all-reduce.
    fn join_all_gather(&self, link: &NodeLink, values: Vec<f32>) -> Result<Vec<f32>> {
        let what = "join check";
        let watch = self.watch.clone().expect("several nodes have a watch");
        let n = values.len();
        let mut handles = Vec::new();
        let others = self
            .replicas
            .iter()
            .map(|r| (PeerId(r.rank as u32), r.device.clone()))
            .chain([(placeholder_peer(link, self.total), self.device.clone())]);
        for (peer, device) in others {
            let watch = watch.clone();
            handles.push(std::thread::spawn(move || {
                let zeros = Tensor::<B::InnerBackend, 1>::zeros([n], &device);
                // Peer 0's failure is the one explained (with the burn panic behind it).
                all_reduce_watched(peer, zeros, ReduceOperation::Sum, watch.timeout)
                    .map(|_| ())
                    .map_err(|failure| watch.lost(what, failure))
            }));
        }
        let tensor = Tensor::<B::InnerBackend, 1>::from_floats(values.as_slice(), &self.device);
        let reduced = all_reduce_watched(
            PeerId(self.first as u32),
            tensor,
            ReduceOperation::Sum,
            watch.timeout,
        )
        .map_err(|failure| watch.explain(what, failure))?;
        for handle in handles {
            handle.join().map_err(|_| TrainError::Peer {
                peer: "peer thread".into(),
                message: format!("a {what} thread panicked"),
            })??;
        }
        Ok(crate::host_read::read_f32s(reduced))
    }

    /// Every node's tick-end checks (several nodes), else this node's: one all-reduce of a
    /// sickness count and a slot per rank for a dataset that changed.
    pub fn tick_verdict(&mut self, healthy: bool, data_ok: bool) -> Result<super::TickVerdict> {
        let Some(ring) = &self.ring else {
            return Ok(super::TickVerdict::local(healthy, data_ok));
        };
        let (rank, count) = ring.rank_and_count();
        let mut mine = vec![0.0; 1 + count];
        mine[0] = if healthy { 0.0 } else { 1.0 };
        mine[1 + rank] = if data_ok { 0.0 } else { 1.0 };
        let all = ring.sum(mine, "tick checks")?;
        let verdict = super::TickVerdict {
            healthy: all[0] == 0.0,
            data_changed_on: (0..count).filter(|r| all[1 + r] > 0.0).collect(),
        };
        self.failure_agreed |= !verdict.data_changed_on.is_empty();
        Ok(verdict)
    }

    /// The ranks of the nodes that could not write their tick's outputs (several nodes; one
    /// node's own failure is its own error): one all-reduce of a slot per rank.
    pub fn failed_outputs(&mut self, written: bool) -> Result<Vec<usize>> {
        let Some(ring) = &self.ring else {
            return Ok(Vec::new());
        };
        let (rank, count) = ring.rank_and_count();
        let mut mine = vec![0.0; count];
        mine[rank] = if written { 0.0 } else { 1.0 };
        let all = ring.sum(mine, "tick outputs")?;
        let failed: Vec<usize> = (0..count).filter(|&r| all[r] > 0.0).collect();
        self.failure_agreed |= !failed.is_empty();
        Ok(failed)
    }

    /// Whether to stop before the next step (see `Peers::stop_now`): on several nodes, what
    /// the last step's exchange agreed (at the start, before any step, one exchange of `wanted`
    /// decides).
    pub fn stop_now(&mut self, wanted: bool) -> Result<bool> {
        let Some(ring) = &self.ring else {
            return Ok(wanted);
        };
        if let Some(agreed) = self.stop_agreed {
            return Ok(agreed);
        }
        let wishes = ring.sum(vec![if wanted { 1.0 } else { 0.0 }], "stop agreement")?;
        let agreed = wishes[0] > 0.0;
        self.stop_agreed = Some(agreed);
        Ok(agreed)
    }

    /// This node stops on an error of its own, `message`: the other nodes are told it (see
    /// `Ring::tell_failure`).
    pub fn tell_failure(&self, message: &str) {
        if self.failure_agreed {
            return;
        }
        if let Some(ring) = &self.ring {
            ring.tell_failure(message);
        }
    }

    /// Whether this node wants to stop after the next step (sent with its gradients).
    pub fn wish_to_stop(&mut self, wanted: bool) {
        self.stop_wish = wanted;
    }

    /// Peers of this node, peer 0 included.
    pub fn count(&self) -> usize {
        self.replicas.len() + 1
    }

    /// Peers of all nodes.
    pub fn total(&self) -> usize {
        self.total
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
        let (count, first, total) = (self.count(), self.first, self.total);
        let mut shares: Vec<StepInputs> =
            (0..count).map(|r| inputs.share(first + r, total)).collect();
        let others = shares.split_off(1);
        let own = shares.pop().expect("peer 0's share");
        let node_ring = self.ring.as_deref().map(|ring| NodeRing {
            ring,
            local: count,
            total,
            stop_wish: self.stop_wish,
            stop_seen: AtomicBool::new(false),
        });
        let ring = node_ring.as_ref();
        let turn = &self.turn;
        let outs = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(others)
                .map(|(replica, share)| {
                    s.spawn(move || {
                        run_peer(
                            replica.rank,
                            &mut replica.nets,
                            share,
                            loss,
                            &replica.device,
                            ring,
                            turn,
                        )
                    })
                })
                .collect();
            let out = run_peer(first, nets, own, loss, device, ring, turn);
            let mut outs = vec![out];
            for handle in handles {
                outs.push(join(handle).and_then(|r| r));
            }
            outs.into_iter().collect::<Result<Vec<_>>>()
        })?;
        if let Some(ring) = &node_ring {
            self.stop_agreed = Some(ring.stop_seen.load(Ordering::SeqCst));
        }
        Ok(outs)
    }

    /// Every replica loads `ckpt` (the checkpoint peer 0 just restored). A rollback's nodes
    /// decide again whether to stop: one that reached its `--stop-after-kimg` may be before
    /// it now.
    pub fn load(&mut self, ckpt: &Path) -> Result<()> {
        self.stop_agreed = None;
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
        reset_quietly::<B>();
    }
}

/// `reset_collective`, which panics when burn-collective's local server has died (a lost node
/// panics it): that is the error being reported already.
fn reset_quietly<B: AutodiffBackend>() {
    let _ = std::panic::catch_unwind(|| {
        burn_collective::reset_collective::<B::InnerBackend>();
    });
}

/// One peer's step with its all-reduce time. A failed peer resets the collective so the
/// others, waiting in an all-reduce for it, fail too instead of waiting for ever.
fn run_peer<B: AutodiffBackend>(
    rank: usize,
    nets: &mut Nets<B>,
    share: StepInputs,
    loss: &LossConfig,
    device: &B::Device,
    ring: Option<&NodeRing<'_>>,
    group_turn: &std::sync::Mutex<()>,
) -> Result<PeerStepOutput<B>> {
    let sync = CollectiveSync {
        peer: PeerId(rank as u32),
        seconds: Cell::new(0.0),
        ring,
    };
    let turn = Turn::of(group_turn);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        peer_step(nets, share, loss, device, &sync, &turn)
    }))
    .unwrap_or_else(|panic| {
        Err(TrainError::Peer {
            peer: format!("peer {rank}"),
            message: format!("panicked: {}", panic_message(&panic)),
        })
    });
    match result {
        Ok(mut out) => {
            out.sync_s = sync.seconds.get();
            Ok(out)
        }
        Err(e) => {
            turn.give_up();
            reset_quietly::<B>();
            Err(e)
        }
    }
}

/// Peer `peer`'s side of the gradient all-reduce: every gradient of the module, flattened into
/// one vector in the module's parameter order (the same on every peer), one all-reduce (mean),
/// and back.
struct CollectiveSync<'a> {
    peer: PeerId,
    /// Seconds spent in the all-reduce so far.
    seconds: Cell<f64>,
    /// Several nodes: the ring between them.
    ring: Option<&'a NodeRing<'a>>,
}

/// The ring between the nodes, as a step's peers see it.
struct NodeRing<'a> {
    ring: &'a Ring,
    /// Peers on this node, and on all nodes.
    local: usize,
    total: usize,
    /// This node's wish to stop after this step, sent as one more value after the gradients,
    /// and whether any node's sum carried one (the same on every node: they all get the same
    /// sums).
    stop_wish: bool,
    stop_seen: AtomicBool,
}

impl NodeRing<'_> {
    /// The mean over all peers of all nodes: a local sum (burn-collective, in-process), this
    /// node's peer 0 sums the nodes' sums over the ring, and hands the result to its other
    /// peers (a local broadcast).
    fn mean<B: burn::tensor::backend::Backend>(
        &self,
        peer: PeerId,
        flat: Tensor<B, 1>,
    ) -> Result<Tensor<B, 1>> {
        let rank = peer.0 as usize;
        let local_zero = rank.is_multiple_of(self.local);
        let device = flat.device();
        let float =
            |t: B::FloatTensorPrimitive| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t));
        let node_sum = if self.local > 1 {
            float(
                burn_collective::all_reduce::<B>(
                    peer,
                    flat.into_primitive().tensor(),
                    ReduceOperation::Sum,
                )
                .map_err(|e| collective_error(rank, "local gradient all-reduce", e))?,
            )
        } else {
            flat
        };
        let total_sum = if local_zero {
            let mut values = crate::host_read::read_f32s(node_sum);
            values.push(if self.stop_wish { 1.0 } else { 0.0 });
            let mut summed = self.ring.sum(values, "gradient all-reduce")?;
            if summed.pop().is_some_and(|wishes| wishes > 0.0) {
                self.stop_seen.store(true, Ordering::SeqCst);
            }
            Some(Tensor::<B, 1>::from_floats(summed.as_slice(), &device))
        } else {
            None
        };
        let total_sum = if self.local > 1 {
            float(
                burn_collective::broadcast::<B>(
                    peer,
                    total_sum.map(|t| t.into_primitive().tensor()),
                )
                .map_err(|e| collective_error(rank, "local broadcast", e))?,
            )
        } else {
            total_sum.expect("one peer per node is its peer 0")
        };
        Ok(total_sum.div_scalar(self.total as f32))
    }
}

impl GradSync for CollectiveSync<'_> {
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
        let reduced = match self.ring {
            Some(ring) => ring.mean(self.peer, flat)?,
            None => {
                let reduced = burn_collective::all_reduce::<B::InnerBackend>(
                    self.peer,
                    flat.into_primitive().tensor(),
                    ReduceOperation::Mean,
                )
                .map_err(|e| collective_error(self.peer.0 as usize, "gradient all-reduce", e))?;
                Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(reduced))
            }
        };
        self.seconds
            .set(self.seconds.get() + started.elapsed().as_secs_f64());
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

/// What to do about a failed registration, from burn-collective's error (its orchestrator's
/// error type is not public: its debug name is in the message).
fn join_failure_hint(error: &str, link: &NodeLink) -> String {
    if error.contains("DoubleRegister") {
        format!(
            "the orchestrator already holds a node at {} (one of an earlier run that vanished \
             without leaving, or two nodes given the same --node-address): restart `pgan \
             orchestrator` and start every node again",
            link.address
        )
    } else if error.contains("RegisterParamsMismatch") {
        format!(
            "the nodes registered so far were started with another --nodes than this one's {}: \
             every node must start with the same --nodes",
            link.count
        )
    } else {
        "is the orchestrator a `pgan orchestrator` of this version, and did every node start \
         with the same --nodes?"
            .to_string()
    }
}

/// The join's placeholder: a local peer without a device of its own (it all-reduces zeros on
/// peer 0's), registered after this node's real peers, once burn-collective's data server
/// listens (see `NodeLink::wait_briefly_for_data_server` for the one-CPU exception). burn-collective spawns that server when a node's first peer registers and
/// sends the node's registration to the orchestrator when its last one does; the other nodes
/// connect to the server once, without a retry, as soon as the orchestrator has every node
/// (burn-communication 0.21, `TensorDataService::get_data_stream` panics "Failed to connect to
/// data server"). Without the placeholder a node slow to bind its server failed the others'
/// join check. Its id follows every real peer of every node (`total + rank`).
fn placeholder_peer(link: &NodeLink, total: usize) -> PeerId {
    PeerId((total + link.rank) as u32)
}

fn collective_error(rank: usize, what: &str, e: burn_collective::CollectiveError) -> TrainError {
    TrainError::Peer {
        peer: format!("peer {rank}"),
        message: format!("{what} failed: {e:?}"),
    }
}

/// A peer thread's result; a panic that escaped `run_peer` becomes an error.
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> Result<T> {
    handle.join().map_err(|panic| TrainError::Peer {
        peer: "peer thread".into(),
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
