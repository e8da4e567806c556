//! Data-parallel training: one peer per device (`run.devices`), each with its own G, D and
//! Adam state, each training on its share of every minibatch; the gradients are all-reduced
//! (mean over peers) before every optimizer step, so every peer applies the same update.
//!
//! The trainer's own networks are peer 0's: its EMA, samples, evaluation, metrics and
//! checkpoints are the run's. The other peers are replicas loaded from the same checkpoint as
//! peer 0 (the kimg-0 checkpoint of a new run, the resumed or rolled-back one otherwise), so all
//! peers start every stretch of training from identical weights and optimizer moments.
//!
//! The host draws the whole minibatch and every random number of a step once (the sampler and
//! the RNG stay in the checkpoint as for one device); peer `r` of `P` takes the contiguous
//! samples `r·N/P .. (r+1)·N/P`. With the minibatch-stddev groups inside each share (or off),
//! `P` peers of `N/P` samples compute the same mean gradients as one device of `N` samples.
//!
//! Peers are threads of this process, one per device, each calling burn-collective's
//! `all_reduce` (the `collective` cargo feature). burn 0.21's autodiff keeps its graphs in a
//! process-global registry; the replicas never share a parameter tensor with peer 0 (they are
//! loaded from the checkpoint file), so their graphs stay apart, and
//! `tests::two_peers_on_threads_match_one_device_with_the_whole_batch` checks the result.
//!
//! Several machines (`nodes.count`, `pgan train --nodes`): every node runs this same loop on
//! its own copy of the dataset and draws the same global minibatch (same seed, same sampler
//! state); node `k`'s local peer `r` is global peer `k·D + r` of `N·D` (every node has the
//! same number `D` of devices) and takes that share. The all-reduce then spans all nodes
//! (`nodes.rs`: join, join check and watchdog). Every node writes its own run directory:
//! identical weights, samples and checkpoints (the losses in `metrics.jsonl` are the node's
//! own peers' means), so each node can resume from its own disk.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use pgan_model::ModelConfig;
use pgan_spec::metrics as key;

use crate::checkpoint::{DatasetFingerprint, TrainState};
use crate::config::{LossConfig, OptimConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::nets::Nets;
use crate::stats::TickStats;
use crate::training_loop::step::{peer_step, NoSync, PeerStepOutput, StepInputs, Turn};

#[cfg(feature = "collective")]
mod collective;
#[cfg(feature = "collective")]
mod network_panics;
#[cfg(feature = "collective")]
mod nodes;
#[cfg(feature = "collective")]
pub use nodes::run_orchestrator;

/// What the nodes' tick-end checks found, together.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TickVerdict {
    /// Every node found its values finite.
    pub healthy: bool,
    /// The ranks of the nodes whose dataset changed under the tick (on one node: its own
    /// check's, rank 0).
    pub data_changed_on: Vec<usize>,
}

impl TickVerdict {
    /// One node's own verdict.
    pub fn local(healthy: bool, data_ok: bool) -> Self {
        Self {
            healthy,
            data_changed_on: if data_ok { Vec::new() } else { vec![0] },
        }
    }
}

/// The peers of a run: just peer 0 (the trainer's networks) on one device, or peer 0 plus the
/// replicas with the `collective` feature.
pub(crate) struct Peers<B: AutodiffBackend> {
    #[cfg(feature = "collective")]
    group: Option<collective::PeerGroup<B>>,
    /// The last step's (step, all-reduce) seconds of every peer, for the tick row.
    last: Vec<(f64, f64)>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> Peers<B> {
    /// One device: the trainer's networks only.
    pub fn single() -> Self {
        Self {
            #[cfg(feature = "collective")]
            group: None,
            last: Vec::new(),
            _backend: std::marker::PhantomData,
        }
    }

    /// The peers `config.run.devices` asks for, the replicas loaded from `ckpt` (the checkpoint
    /// peer 0's networks come from).
    /// On several nodes this is the join: it waits for the other nodes and refuses to train
    /// unless they all have the same config, `dataset` and starting state.
    pub fn start(
        config: &TrainConfig,
        model: &ModelConfig,
        ckpt: &Path,
        dataset: &DatasetFingerprint,
        nets: &Nets<B>,
        device: &B::Device,
        stop: &Arc<AtomicBool>,
    ) -> Result<Self> {
        let count = peer_count(config);
        if count <= 1 {
            return Ok(Self::single());
        }
        #[cfg(feature = "collective")]
        {
            let group =
                collective::PeerGroup::start(config, model, ckpt, dataset, nets, device, stop)?;
            Ok(Self {
                group: Some(group),
                ..Self::single()
            })
        }
        #[cfg(not(feature = "collective"))]
        {
            // Refuses several devices in this build (as `TrainConfig::validate` did).
            let _ = (model, ckpt, dataset, nets, device, stop);
            check_batches(config)?;
            Ok(Self::single())
        }
    }

    /// Peers training (1 on one device).
    pub fn count(&self) -> usize {
        #[cfg(feature = "collective")]
        if let Some(group) = &self.group {
            return group.count();
        }
        1
    }

    /// One training step on every peer; the returned losses and scores are means over the
    /// peers (each a mean over its equal share, so the minibatch's means), the gradient norms
    /// those of the all-reduced gradients.
    pub fn step(
        &mut self,
        nets: &mut Nets<B>,
        inputs: StepInputs,
        loss: &LossConfig,
        device: &B::Device,
    ) -> Result<PeerStepOutput<B>> {
        #[cfg(feature = "collective")]
        if let Some(group) = &mut self.group {
            let outs = group.step(nets, &inputs, loss, device)?;
            self.last = outs.iter().map(|o| (o.step_s, o.sync_s)).collect();
            return Ok(mean_over_peers::<B>(outs, device));
        }
        let out = peer_step(nets, inputs, loss, device, &NoSync, &Turn::alone())?;
        self.last = vec![(out.step_s, out.sync_s)];
        Ok(out)
    }

    /// Reports the last step's per-peer timings of this node (data-parallel runs only), and
    /// the peers of the whole run.
    pub fn report_timings(&self, stats: &mut TickStats) {
        let total = self.total();
        if total <= 1 || self.last.is_empty() {
            return;
        }
        let n = self.last.len() as f64;
        let slowest = self.last.iter().map(|o| o.0).fold(0.0, f64::max);
        stats.report(key::PEERS, total as f64);
        stats.report(
            key::PEER_STEP_S,
            self.last.iter().map(|o| o.0).sum::<f64>() / n,
        );
        stats.report(key::PEER_STEP_S_SLOWEST, slowest);
        stats.report(
            key::PEER_ALLREDUCE_S,
            self.last.iter().map(|o| o.1).sum::<f64>() / n,
        );
    }

    /// Peers of the whole run (every node's).
    fn total(&self) -> usize {
        #[cfg(feature = "collective")]
        if let Some(group) = &self.group {
            return group.total();
        }
        1
    }

    /// Whether the run stops before its next step; `wanted` is this process's wish (Ctrl-C,
    /// `--stop-after-kimg` reached). One node decides alone. Several nodes must stop at the
    /// same step, or one would wait in an all-reduce the others never join: every step's
    /// gradient exchange carries each node's wish ([`Self::wish_to_stop`]), and all of them
    /// stop at the first step end where any node wished it.
    pub fn stop_now(&mut self, wanted: bool) -> Result<bool> {
        #[cfg(feature = "collective")]
        if let Some(group) = &mut self.group {
            return group.stop_now(wanted);
        }
        Ok(wanted)
    }

    /// Several nodes: whether this node wants the run to stop after the next step (sent to
    /// the others with that step's gradients). Ignored on one node.
    pub fn wish_to_stop(&mut self, wanted: bool) {
        #[cfg(feature = "collective")]
        if let Some(group) = &mut self.group {
            group.wish_to_stop(wanted);
        }
        let _ = wanted;
    }

    /// What every node's tick end found (`healthy` and `data_ok` are this node's verdicts): a
    /// rollback on one node only would leave the nodes apart, and a node that stops because its
    /// dataset changed would leave the others to checkpoint the same tainted steps, so on
    /// several nodes the verdicts are all-reduced: one unhealthy node rolls them all back, one
    /// changed dataset stops them all.
    pub fn tick_verdict(&mut self, healthy: bool, data_ok: bool) -> Result<TickVerdict> {
        #[cfg(feature = "collective")]
        if let Some(group) = &mut self.group {
            return group.tick_verdict(healthy, data_ok);
        }
        Ok(TickVerdict::local(healthy, data_ok))
    }

    /// The other nodes that could not write their tick's outputs (`written` is this node's
    /// outcome): a node that stops on a full disk would otherwise leave the others to write
    /// one more checkpoint than it did, and to report it lost without the reason. Empty on one
    /// node.
    pub fn failed_outputs(&mut self, written: bool) -> Result<Vec<usize>> {
        #[cfg(feature = "collective")]
        if let Some(group) = &mut self.group {
            return group.failed_outputs(written);
        }
        let _ = written;
        Ok(Vec::new())
    }

    /// Several nodes: this node stops on an error of its own (`message`; not one an exchange
    /// found, nor one the nodes agreed on): the others are told it, so that they name it instead
    /// of a lost node. Returns once the next node took it (or cannot). Nothing on one node.
    pub fn tell_failure(&self, message: &str) {
        #[cfg(feature = "collective")]
        if let Some(group) = &self.group {
            group.tell_failure(message);
        }
        let _ = message;
    }

    /// After peer 0 restored `ckpt` (a resume or a rollback): the replicas load it too.
    pub fn restored(&mut self, ckpt: &Path) -> Result<()> {
        #[cfg(feature = "collective")]
        if let Some(group) = &mut self.group {
            return group.load(ckpt);
        }
        let _ = ckpt;
        Ok(())
    }

    /// After peer 0 reset its optimizers at a new phase: the replicas reset theirs.
    pub fn reset_optimizers(&mut self, optim: &OptimConfig) {
        #[cfg(feature = "collective")]
        if let Some(group) = &mut self.group {
            group.reset_optimizers(optim);
        }
        let _ = optim;
    }
}

/// Peers of the whole run: this node's devices (`run.devices`, at least 1) times the nodes.
pub(crate) fn peer_count(config: &TrainConfig) -> usize {
    local_peer_count(config) * config.nodes.count.max(1)
}

/// Peers on this node: the number of `run.devices` (at least 1).
pub(crate) fn local_peer_count(config: &TrainConfig) -> usize {
    config.run.devices.len().max(1)
}

/// `HOST:PORT` split at its last colon (`[v6]:port` keeps its brackets); `None` when there is
/// no port or no host.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty() && !host.contains("://")).then_some((host, port))
}

/// What a checkpoint records of the peers: their number when more than one.
pub(crate) fn peers_to_record(config: &TrainConfig) -> Option<usize> {
    Some(peer_count(config)).filter(|&n| n > 1)
}

/// What a checkpoint records of the nodes: their number, beside the peers' (absent on one
/// device).
pub(crate) fn nodes_to_record(config: &TrainConfig) -> Option<usize> {
    peers_to_record(config).map(|_| config.nodes.count.max(1))
}

/// A resume with another number of peers than the checkpoint was trained with is allowed:
/// the host still draws the same global minibatches and random numbers, so what changes is
/// which samples share a minibatch-stddev group (each peer groups its own share) and the
/// order in which gradients are summed. So is one with the same peers spread over other nodes
/// (4 nodes of one device, 2 of two), which changes that order only. Updates `state` to the
/// new layout and says so.
pub(crate) fn peers_changed(state: &mut TrainState, config: &TrainConfig) -> Option<String> {
    let (was, now) = (state.peers.unwrap_or(1), peer_count(config));
    let was_nodes = state.nodes;
    state.peers = peers_to_record(config);
    state.nodes = nodes_to_record(config);
    if was != now {
        return Some(format!(
            "the checkpoint was trained on {was} peer(s) and this session runs {now}: the \
             minibatches and their order stay the same, but each peer now takes 1/{now} of \
             every minibatch, so the minibatch-stddev groups and the order in which gradients \
             are summed change; the run will not match one continued on {was} peer(s)"
        ));
    }
    let now_nodes = config.nodes.count.max(1);
    let was_nodes = was_nodes.filter(|&n| n != now_nodes)?;
    Some(format!(
        "the checkpoint was trained on {was_nodes} node(s) of {} device(s) and this session runs \
         {now_nodes} of {}: the same {now} peers take the same shares of every minibatch, but \
         the gradients are summed in another order; the run will not match one continued on \
         the checkpoint's layout bit for bit",
        was / was_nodes,
        now / now_nodes
    ))
}

/// A warning when splitting the minibatch over the peers makes the minibatch-stddev groups
/// smaller than one device's would be (each peer groups its own share, as the official
/// multi-GPU code does: `min(group, share)`), the more so where a share leaves groups of one
/// image, whose statistic is a constant: D then cannot see a batch's lack of variety there.
pub(crate) fn mbstd_groups_split(config: &TrainConfig) -> Result<Option<String>> {
    let peers = peer_count(config);
    let group = crate::plan::resolve_model(&config.model, 3)?.effective_mbstd_group_size();
    if peers <= 1 || group <= 1 {
        return Ok(None);
    }
    let mut smaller = Vec::new();
    let mut alone = Vec::new();
    for (resolution, minibatch) in config.trained_resolutions() {
        let used = group.min(minibatch / peers);
        if used < group.min(minibatch) {
            smaller.push(format!("{used} at {resolution}x{resolution}"));
            if used <= 1 {
                alone.push(format!("{resolution}x{resolution}"));
            }
        }
    }
    if smaller.is_empty() {
        return Ok(None);
    }
    let mut message = format!(
        "model.mbstd_group_size {group} over {peers} peers: each peer groups its own share of \
         the minibatch, so the minibatch-stddev groups are smaller than on one device ({})",
        smaller.join(", ")
    );
    if !alone.is_empty() {
        message.push_str(&format!(
            "; groups of one image at {} make the layer's statistic a constant, so D cannot \
             see a lack of variety there: use fewer devices, a larger minibatch, or \
             --mbstd-group 0 to switch the layer off knowingly",
            alone.join(", ")
        ));
    }
    Ok(Some(message))
}

/// Checks that this build can train on several peers and that the minibatch of every
/// resolution the run trains at splits evenly over them.
pub(crate) fn check_batches(config: &TrainConfig) -> Result<()> {
    let peers = peer_count(config);
    if peers <= 1 {
        return Ok(());
    }
    let what = if config.nodes.several() {
        format!(
            "{} nodes x {} device(s) (nodes.count, run.devices)",
            config.nodes.count,
            local_peer_count(config)
        )
    } else {
        "devices (run.devices)".to_string()
    };
    let over = if config.nodes.several() {
        format!("{peers} peers ({what})")
    } else {
        format!("{peers} {what}")
    };
    if !cfg!(feature = "collective") {
        return Err(TrainError::Config {
            path: None,
            message: format!(
                "{what} ask for {peers} peers, but this pgan was built without \
                 data-parallel training: build it with `--features collective`"
            ),
        });
    }
    // The extra D updates run on peer 0's networks only, and feature matching's term is not
    // linear in the minibatch's mean features: neither splits over peers yet.
    if config.optim.d_steps > 1 {
        return Err(TrainError::Config {
            path: None,
            message: format!(
                "optim.d_steps {} is not supported with several {what} yet",
                config.optim.d_steps
            ),
        });
    }
    if config.loss.feature_matching > 0.0 {
        return Err(TrainError::Config {
            path: None,
            message: format!("loss.feature_matching is not supported with several {what} yet"),
        });
    }
    for (resolution, batch) in config.trained_resolutions() {
        if !batch.is_multiple_of(peers) {
            return Err(TrainError::Config {
                path: None,
                message: format!(
                    "the minibatch of {batch} at {resolution}x{resolution} does not divide over \
                     {over}: the global minibatch is split evenly, so make it a multiple of \
                     {peers}"
                ),
            });
        }
    }
    Ok(())
}

/// The mean of the peers' losses and scores (on peer 0's device, nothing read back); the
/// gradient norms are peer 0's: every peer applied the same all-reduced gradients, so a NaN on
/// any peer is in them too.
#[allow(dead_code)]
fn mean_over_peers<B: AutodiffBackend>(
    outs: Vec<PeerStepOutput<B>>,
    device: &B::Device,
) -> PeerStepOutput<B> {
    let n = outs.len() as f32;
    let mean = |f: &dyn Fn(&PeerStepOutput<B>) -> Tensor<B::InnerBackend, 1>| {
        outs.iter()
            .map(|o| f(o).to_device(device))
            .reduce(|a, b| a + b)
            .expect("at least one peer")
            .div_scalar(n)
    };
    let mut out = outs[0].clone();
    out.d_stats.loss = mean(&|o| o.d_stats.loss.clone());
    out.d_stats.penalty = mean(&|o| o.d_stats.penalty.clone());
    out.d_stats.penalty_grad_norm = mean(&|o| o.d_stats.penalty_grad_norm.clone());
    out.d_stats.drift = mean(&|o| o.d_stats.drift.clone());
    out.d_stats.real_score = mean(&|o| o.d_stats.real_score.clone());
    out.d_stats.fake_score = mean(&|o| o.d_stats.fake_score.clone());
    out.loss_g = mean(&|o| o.loss_g.clone());
    out.loss_g_matching = mean(&|o| o.loss_g_matching.clone());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another peer count, or the same peers over other nodes, is said; the same layout, or
    /// a checkpoint whose layout is unknown with the same peers, is not. The state takes the
    /// new layout.
    #[test]
    fn a_resume_on_other_peers_or_another_node_layout_is_said() {
        let mut state = crate::checkpoint::tests::a_state();
        let mut config = TrainConfig::default();
        (config.nodes.count, config.run.devices) = (4, vec![0]);
        (state.peers, state.nodes) = (peers_to_record(&config), nodes_to_record(&config));
        assert_eq!((state.peers, state.nodes), (Some(4), Some(4)));
        assert_eq!(peers_changed(&mut state, &config), None);
        (config.nodes.count, config.run.devices) = (2, vec![0, 1]);
        let said = peers_changed(&mut state, &config).unwrap();
        assert!(
            said.contains("4 node(s) of 1 device(s) and this session runs 2 of 2"),
            "{said}"
        );
        assert_eq!((state.peers, state.nodes), (Some(4), Some(2)));
        state.nodes = None;
        assert_eq!(peers_changed(&mut state, &config), None);
        (config.nodes.count, config.run.devices) = (1, vec![0]);
        let said = peers_changed(&mut state, &config).unwrap();
        assert!(
            said.contains("trained on 4 peer(s) and this session runs 1"),
            "{said}"
        );
        assert_eq!((state.peers, state.nodes), (None, None));
        state.nodes = Some(3);
        state.peers = Some(4);
        assert!(state
            .validate()
            .unwrap_err()
            .contains("nodes 3 does not divide peers 4"));
    }

    #[test]
    fn minibatch_stddev_groups_made_smaller_by_the_split_are_named() {
        let mut config = TrainConfig::default();
        config.model.resolution = 8;
        config.model.mbstd_group_size = Some(8);
        config.schedule.minibatch_default = 8;
        config.schedule.minibatch.clear();
        // One device: the group is the whole minibatch, as configured.
        assert_eq!(mbstd_groups_split(&config).unwrap(), None);
        config.run.devices = vec![0, 1];
        let two = mbstd_groups_split(&config).unwrap().unwrap();
        assert!(
            two.contains("mbstd_group_size 8 over 2 peers")
                && two.contains("(4 at 4x4, 4 at 8x8)")
                && !two.contains("groups of one image"),
            "{two}"
        );
        config.run.devices = (0..8).collect();
        let eight = mbstd_groups_split(&config).unwrap().unwrap();
        assert!(
            eight.contains("groups of one image at 4x4, 8x8") && eight.contains("--mbstd-group 0"),
            "{eight}"
        );
        // A group no larger than each share: nothing to say.
        config.model.mbstd_group_size = Some(1);
        assert_eq!(mbstd_groups_split(&config).unwrap(), None);
    }
}
