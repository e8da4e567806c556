//! Several machines (nodes): each runs `pgan train` with its rank; burn-collective's global
//! orchestrator (`pgan orchestrator`) introduces them, then every gradient all-reduce sums over
//! all peers of all nodes (a local tree reduce, a ring between the nodes, over websockets).
//!
//! burn-collective 0.21 leaves three things to its user, which pgan adds here:
//! - **Join timeout.** A node retries the orchestrator forever (burn-collective
//!   `global/node/worker.rs`, `connect_with_retry(.., None, ..)`: no retry limit), and `register`
//!   returns only once all nodes registered. pgan registers on helper threads and gives up after
//!   `nodes.join_timeout_s`.
//! - **Join check.** Global broadcast and reduce are `unimplemented!` (`global/node/base.rs`),
//!   so node 0 cannot hand its config to the others. Instead every node all-reduces (sums) a
//!   vector in which it fills only its own slot: the sum is every node's slot, an all-gather.
//!   Each slot holds the node's config hash, dataset fingerprint, checkpoint state, device
//!   count and address, and every node compares them all and refuses with the same message.
//!   The values are integers below 2^16 with one contributor per slot, so the f32 sum is exact.
//! - **Watchdog.** A global all-reduce has no timeout: a node whose peer died either panics
//!   inside burn-collective's runtime (a websocket read of a reset connection; the local
//!   server's channel then closes and `all_reduce` returns `LocalServerMissing`) or waits for
//!   ever (`global/node/sync.rs` waits for a sync message that never comes). pgan runs each
//!   all-reduce on a helper thread and waits at most `nodes.join_timeout_s` (the join check)
//!   or `nodes.peer_timeout_s` (the ring); on an error or a timeout it probes the other nodes'
//!   ring ports over TCP to name the one that is gone (a dead
//!   process's port refuses connections; a hung one still accepts). In pgan's own gradient
//!   ring (see [`Ring`]), a node that stops because it lost another passes that on to the next
//!   node, so that every node names the lost one.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use burn_communication::data_service::TensorTransferId;

use crate::checkpoint::{DatasetFingerprint, TrainState};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

use super::split_host_port;

/// This node's place among the nodes: where the orchestrator is and where this node serves
/// its tensor slices.
#[derive(Clone, Debug)]
pub(super) struct NodeLink {
    pub rank: usize,
    pub count: usize,
    pub orchestrator: String,
    /// `host:port` of this node's burn-collective data service (used by the join), and the
    /// port after it, of the gradient ring.
    pub address: String,
    pub port: u16,
    pub ring_address: String,
    pub ring_port: u16,
    pub join_timeout: Duration,
    pub peer_timeout: Duration,
}

impl NodeLink {
    /// The link `config.nodes` describes; checks that this node's data port is free.
    pub fn of(config: &TrainConfig) -> Result<Self> {
        let n = &config.nodes;
        let orchestrator = n
            .orchestrator
            .clone()
            .expect("validated: several nodes have one");
        let (orch_host, orch_port) = split_host_port(&orchestrator).expect("validated HOST:PORT");
        refuse_ipv6_only(
            n.rank,
            "nodes.orchestrator",
            "--orchestrator",
            &orchestrator,
        )?;
        if let Some(address) = &n.address {
            refuse_ipv6_only(n.rank, "nodes.address", "--node-address", address)?;
        }
        let (host, port) = match &n.address {
            Some(a) => {
                let (h, p) = split_host_port(a).expect("validated HOST:PORT");
                (h.to_string(), p)
            }
            None => {
                let port = u16::try_from(orch_port as usize + 1 + 2 * n.rank)
                    .ok()
                    .filter(|p| *p < u16::MAX)
                    .ok_or_else(|| node_error(n.rank, "the default ports (orchestrator's + 1 + 2·rank and the next) are beyond 65535: set nodes.address (--node-address HOST:PORT)".into()))?;
                (local_ip_towards(orch_host, orch_port, n.rank)?, port)
            }
        };
        // The whole HOST:PORT string: `[v6]:port` keeps its brackets in `host`.
        if n.address.is_some() && format!("{host}:{port}").to_socket_addrs().is_err() {
            return Err(node_error(
                n.rank,
                format!(
                    "nodes.address '{host}:{port}' (--node-address): the host name does not \
                     resolve; give an address the other nodes reach this one at"
                ),
            ));
        }
        let ring_port = port.checked_add(1).ok_or_else(|| {
            node_error(
                n.rank,
                format!("nodes.address port {port} leaves no port after it for the gradient ring"),
            )
        })?;
        let link = Self {
            rank: n.rank,
            count: n.count,
            orchestrator: format!("{orch_host}:{orch_port}"),
            address: format!("{host}:{port}"),
            port,
            ring_address: format!("{host}:{ring_port}"),
            ring_port,
            join_timeout: Duration::from_secs_f64(n.join_timeout_s),
            peer_timeout: Duration::from_secs_f64(n.peer_timeout_s),
        };
        link.check_ports_free()?;
        Ok(link)
    }

    /// `config` with this node's global parameters.
    pub fn collective(&self, config: CollectiveConfig) -> CollectiveConfig {
        config
            .with_num_nodes(self.count as u32)
            .with_global_address(ws(&self.orchestrator))
            .with_node_address(ws(&self.address))
            .with_data_service_port(self.port)
    }

    /// Waits until burn-collective's data server listens on this node's data port (spawned on
    /// its runtime when the node's first peer registered), for at most 2 s, or until Ctrl-C
    /// (`Err`). After 2 s the node goes on without it, as it did before the placeholder: on a
    /// runtime with one worker thread (one CPU) burn's local server blocks that thread in a
    /// channel read until the node's registration completes, so the server cannot start
    /// before it.
    pub fn wait_briefly_for_data_server(&self, stop: &AtomicBool) -> Result<()> {
        let at = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(2);
        while TcpStream::connect_timeout(&at, Duration::from_millis(500)).is_err() {
            if stop.load(Ordering::SeqCst) {
                return Err(self.join_interrupted());
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Checks that this node's data port and the ring's port after it are free: burn-collective
    /// binds the data port inside its runtime and drops a failed bind unreported, and the
    /// ring's server binds after the join, so a port taken is an error here, at once.
    pub fn check_ports_free(&self) -> Result<()> {
        for p in [self.port, self.ring_port] {
            std::net::TcpListener::bind(("0.0.0.0", p)).map_err(|e| {
                node_error(
                    self.rank,
                    format!(
                        "cannot listen on port {p} for the other nodes ({e}): a node uses the \
                         port of --node-address HOST:PORT and the one after it; choose free ones"
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Waits until the orchestrator accepts connections (or `deadline`, or Ctrl-C), saying so
    /// once on stderr, and checks that what answers there is an orchestrator (another program
    /// on that port is an error at once). burn-collective would retry on its own, but it
    /// prints two lines to stdout for every try, two tries a second (its `println!`s in
    /// `connect_with_retry`).
    pub fn wait_for_orchestrator(&self, deadline: Instant, stop: &AtomicBool) -> Result<()> {
        let mut said = false;
        loop {
            // What answers there is asked whether it is an orchestrator: burn-collective
            // would retry a stranger until the join timeout.
            let left = deadline.saturating_duration_since(Instant::now());
            let (connected, refused) = match greet_orchestrator(
                &self.orchestrator,
                left.clamp(GREETING_MIN, GREETING_MAX),
                stop,
            ) {
                Greeting::Orchestrator => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let _ = writeln!(
                        std::io::stderr(),
                        "node {}: the orchestrator at {} answers; waiting for all {} nodes to \
                         join (up to {:.0} s more)",
                        self.rank,
                        self.orchestrator,
                        self.count,
                        left.as_secs_f64().ceil()
                    );
                    return Ok(());
                }
                Greeting::Stranger(answer) => {
                    return Err(node_error(
                        self.rank,
                        format!(
                            "{} (--orchestrator) accepts connections but is not a pgan \
                             orchestrator: asked over HTTP for the orchestrator's /request \
                             route, it answered {answer}. Is another program listening on that \
                             port? Start `pgan orchestrator --port {}` there, or give the \
                             address it listens at",
                            self.orchestrator,
                            self.orchestrator_port(),
                        ),
                    ))
                }
                Greeting::Silent(why) => (true, why),
                Greeting::Unreached(why) => (false, why),
            };
            if !said {
                // Not `eprintln!`, which panics when stderr is a closed pipe.
                let _ = writeln!(
                    std::io::stderr(),
                    "node {}: waiting for the orchestrator at {} ({refused}), up to {} s",
                    self.rank,
                    self.orchestrator,
                    seconds(self.join_timeout)
                );
                said = true;
            }
            if stop.load(Ordering::SeqCst) {
                return Err(TrainError::StoppedWaiting {
                    message: format!(
                        "node {} stopped while waiting for the orchestrator at {}, which it \
                         never reached: nothing was trained (a new run's folder is removed, \
                         a resumed run folder is as it was)",
                        self.rank, self.orchestrator
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(node_error(
                    self.rank,
                    format!(
                        "the orchestrator at {} {} within {} s (nodes.join_timeout_s, \
                         --join-timeout; last try: {refused}): is `pgan orchestrator --port {}` \
                         running there, and reachable from this machine?",
                        self.orchestrator,
                        if connected {
                            "did not answer"
                        } else {
                            "accepted no connection"
                        },
                        seconds(self.join_timeout),
                        self.orchestrator_port(),
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The orchestrator's port, for the `pgan orchestrator --port P` of messages.
    fn orchestrator_port(&self) -> u16 {
        split_host_port(&self.orchestrator).map_or(0, |(_, p)| p)
    }

    /// Why the orchestrator at `addresses` (resolved once, before the join) refuses
    /// connections: it went away. None while it takes them, or while the network does not
    /// tell (a timeout is not taken for an answer).
    pub fn orchestrator_refuses(addresses: &[SocketAddr]) -> Option<String> {
        match connect_any(addresses, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(e.to_string()),
            _ => None,
        }
    }

    /// The orchestrator's socket addresses (empty when its name no longer resolves).
    pub fn orchestrator_addresses(&self) -> Vec<SocketAddr> {
        self.orchestrator
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default()
    }

    /// The error of a join whose orchestrator went away before every node had joined.
    pub fn orchestrator_went_away(&self, why: &str) -> TrainError {
        node_error(
            self.rank,
            format!(
                "the orchestrator at {} went away before all {} nodes joined ({why}): nothing \
                 was trained (a new run's folder is removed, a resumed run folder is as it \
                 was); start `pgan orchestrator --port {}` again, then every node",
                self.orchestrator,
                self.count,
                self.orchestrator_port(),
            ),
        )
    }

    /// The error of a join that Ctrl-C (or SIGTERM) ended before every node had joined.
    pub fn join_interrupted(&self) -> TrainError {
        TrainError::StoppedWaiting {
            message: format!(
                "node {} stopped while waiting for the other nodes at the orchestrator {}: \
                 nothing was trained (a new run's folder is removed, a resumed run folder is \
                 as it was). The orchestrator may still hold this node: restart \
                 `pgan orchestrator` before starting the nodes again",
                self.rank, self.orchestrator
            ),
        }
    }

    /// The error of a join that did not complete in time.
    pub fn join_timed_out(&self) -> TrainError {
        node_error(
            self.rank,
            format!(
                "not all {} nodes joined the orchestrator at {} within {} s \
                 (nodes.join_timeout_s, --join-timeout): is `pgan orchestrator --port {}` \
                 running there and reachable, and did every node start with --nodes {} and its \
                 own --node-rank? An orchestrator that saw a run fail keeps the vanished nodes \
                 registered: restart it before a new run",
                self.count,
                self.orchestrator,
                seconds(self.join_timeout),
                self.orchestrator_port(),
                self.count
            ),
        )
    }
}

fn ws(host_port: &str) -> burn_communication::Address {
    format!("ws://{host_port}")
        .parse()
        .expect("Address parsing never fails")
}

fn node_error(rank: usize, message: String) -> TrainError {
    TrainError::Peer {
        peer: format!("node {rank}"),
        message,
    }
}

/// An error for `address` (`HOST:PORT`, the config key `key`, the flag `flag`) when it resolves
/// to IPv6 addresses only: burn's servers (the orchestrator, every node's data service and
/// ring, burn-communication's `WsServer::serve`) listen on `0.0.0.0`, IPv4 only, so the nodes
/// could never reach them there. An address that does not resolve is left to the checks that
/// name it.
fn refuse_ipv6_only(rank: usize, key: &str, flag: &str, address: &str) -> Result<()> {
    let Ok(resolved) = address.to_socket_addrs() else {
        return Ok(());
    };
    let resolved: Vec<SocketAddr> = resolved.collect();
    if resolved.is_empty() || resolved.iter().any(SocketAddr::is_ipv4) {
        return Ok(());
    }
    let listed: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
    Err(node_error(
        rank,
        format!(
            "{key} '{address}' ({flag}) is IPv6 only ({}): burn's servers (`pgan orchestrator`, \
             and every node's data and gradient ports) listen on IPv4 only; give an IPv4 \
             address or a host name with one",
            listed.join(", ")
        ),
    ))
}

/// The address this machine reaches `host:port` from (the interface its route uses): what the
/// other nodes, which reach the same orchestrator, can reach this node at. A UDP `connect`
/// sends nothing; it only picks the route. An IPv4 route: the nodes listen on IPv4 only
/// ([`refuse_ipv6_only`]).
fn local_ip_towards(host: &str, port: u16, rank: usize) -> Result<String> {
    let target = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(SocketAddr::is_ipv4))
        .ok_or_else(|| {
            node_error(
                rank,
                format!("cannot resolve the orchestrator host '{host}'"),
            )
        })?;
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect(target).map(|_| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| {
            node_error(
                rank,
                format!(
                    "cannot find this machine's address towards the orchestrator {host}:{port} \
                     ({e}): set --node-address HOST:PORT"
                ),
            )
        })?;
    Ok(socket.ip().to_string())
}

/// What every node must agree on before training, and what names it in messages.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct JoinInfo {
    pub devices: u32,
    pub config_hash: u32,
    pub dataset_images: u32,
    pub dataset_crc: u32,
    /// Images shown at the checkpoint this node starts from.
    pub images_shown: u64,
    /// CRC-32 of what continues the run: the weights' values (G, D, G_ema), the step
    /// counters, the host RNG and the sampler position. Adam's moments are not read: equal
    /// weights at an equal step of the same config come from the same run. (The record files
    /// cannot be compared as bytes: they hold burn's parameter ids, random per process.)
    pub state_crc: u32,
    pub address: String,
    /// The config as [`comparable_config`] writes it, to name the keys that differ; None in
    /// the gathered info of a node whose text was longer than [`MAX_CONFIG`] (the hash still
    /// compares all of it).
    pub config_text: Option<String>,
}

/// Values per node slot: present, devices, 3 CRCs and the image count (2 values each),
/// images shown (4), address length and bytes, then from [`CONFIG_AT`] the config text's
/// length (2) and bytes (2 per value). Every node must run the same pgan build: the layout
/// (and so the vector's length) may change between versions.
const MAX_ADDRESS: usize = 64;
const MAX_CONFIG: usize = 16 * 1024;
const CONFIG_AT: usize = 2 + 4 * 2 + 4 + 1 + MAX_ADDRESS;
const SLOT: usize = CONFIG_AT + 2 + MAX_CONFIG / 2;

impl JoinInfo {
    pub fn new(
        config: &TrainConfig,
        dataset: &DatasetFingerprint,
        state: &TrainState,
        weights: &[f32],
        address: &str,
    ) -> Self {
        let text = comparable_config(config);
        Self {
            devices: super::local_peer_count(config) as u32,
            config_hash: crc32fast::hash(text.as_bytes()),
            config_text: Some(text),
            dataset_images: dataset.images as u32,
            dataset_crc: dataset.content_crc32(),
            images_shown: state.images_shown,
            state_crc: state_crc(state, weights),
            address: address.to_string(),
        }
    }

    /// The all-gather vector with this node's slot filled.
    pub fn slot_vector(&self, rank: usize, nodes: usize) -> Vec<f32> {
        let mut v = vec![0.0f32; SLOT * nodes];
        let slot = &mut v[rank * SLOT..(rank + 1) * SLOT];
        let mut at = 0;
        let mut put = |x: u32| {
            slot[at] = x as f32;
            at += 1;
        };
        put(1);
        put(self.devices);
        for x in [
            self.config_hash,
            self.dataset_images,
            self.dataset_crc,
            self.state_crc,
        ] {
            put(x >> 16);
            put(x & 0xffff);
        }
        for k in (0..4).rev() {
            put(((self.images_shown >> (16 * k)) & 0xffff) as u32);
        }
        let bytes = &self.address.as_bytes()[..self.address.len().min(MAX_ADDRESS)];
        put(bytes.len() as u32);
        for &b in bytes {
            put(b as u32);
        }
        at = CONFIG_AT;
        let text = self.config_text.as_deref().unwrap_or_default().as_bytes();
        // No text, or one too long to send: a length beyond MAX_CONFIG.
        let len = self
            .config_text
            .as_ref()
            .map_or(u32::MAX, |t| t.len().min(u32::MAX as usize) as u32);
        slot[at] = (len >> 16) as f32;
        slot[at + 1] = (len & 0xffff) as f32;
        at += 2;
        if text.len() <= MAX_CONFIG {
            for (i, pair) in text.chunks(2).enumerate() {
                let low = pair.get(1).copied().unwrap_or(0);
                slot[at + i] = (((pair[0] as u32) << 8) | low as u32) as f32;
            }
        }
        v
    }

    /// Every node's info from the summed vector; `Err` names a rank claimed twice or by none.
    pub fn from_gathered(v: &[f32], nodes: usize) -> std::result::Result<Vec<Self>, String> {
        let mut out = Vec::with_capacity(nodes);
        for rank in 0..nodes {
            let slot = &v[rank * SLOT..(rank + 1) * SLOT];
            let mut at = 0;
            let mut get = || {
                let x = slot[at] as u32;
                at += 1;
                x
            };
            let present = get();
            if present != 1 {
                return Err(if present == 0 {
                    format!(
                        "no node joined with --node-rank {rank} (another rank was given twice): \
                         give each node its own rank 0..{nodes}"
                    )
                } else {
                    format!(
                        "{present} nodes joined with --node-rank {rank}: give each node its own \
                         rank 0..{nodes}"
                    )
                });
            }
            let devices = get();
            let mut pair = || (get() << 16) | get();
            let (config_hash, dataset_images, dataset_crc, state_crc) =
                (pair(), pair(), pair(), pair());
            let mut images_shown = 0u64;
            for _ in 0..4 {
                images_shown = (images_shown << 16) | get() as u64;
            }
            let len = (get() as usize).min(MAX_ADDRESS);
            let address: Vec<u8> = (0..len).map(|_| get() as u8).collect();
            let at = CONFIG_AT;
            let text_len = ((slot[at] as u32) << 16 | slot[at + 1] as u32) as usize;
            let config_text = (text_len <= MAX_CONFIG)
                .then(|| {
                    let pairs = &slot[at + 2..at + 2 + text_len.div_ceil(2)];
                    let bytes: Vec<u8> = pairs
                        .iter()
                        .flat_map(|&x| [(x as u32 >> 8) as u8, (x as u32 & 0xff) as u8])
                        .take(text_len)
                        .collect();
                    String::from_utf8(bytes).ok()
                })
                .flatten();
            out.push(Self {
                devices,
                config_hash,
                dataset_images,
                dataset_crc,
                images_shown,
                state_crc,
                address: String::from_utf8_lossy(&address).into_owned(),
                config_text,
            });
        }
        Ok(out)
    }
}

/// What differs between the nodes, one line per difference (empty: all agree). Where most
/// nodes agree on a value, the others are named against it; otherwise every node's value is
/// listed. A starting state that differs is reported only when nothing else does (it usually
/// follows from the rest).
pub(super) fn join_differences(nodes: &[JoinInfo]) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |found: Option<String>, advice: &str| {
        if let Some(found) = found {
            out.push(format!("{found}: {advice}"));
        }
    };
    differ(
        differs(
            nodes,
            "the config",
            |n| n.config_hash,
            |h| format!("hash {h:#010x}"),
        )
        .map(|found| match config_keys_that_differ(nodes) {
            Some(keys) => format!("{found}, in {keys}"),
            None => found,
        }),
        "every node must train with the same config (only paths, devices and the \
         nodes.rank/address/timeouts may differ)",
    );
    differ(
        differs(
            nodes,
            "the dataset",
            |n| (n.dataset_images, n.dataset_crc),
            |(images, crc)| format!("{images} images, fingerprint {crc:#010x}"),
        ),
        "every node needs an identical copy of the .pgan file",
    );
    differ(
        differs(nodes, "the device count", |n| n.devices, |d| d.to_string()),
        "every node needs the same number of --devices (the minibatch is split evenly over \
         all peers)",
    );
    differ(
        differs(
            nodes,
            "the starting checkpoint",
            |n| n.images_shown,
            |i| format!("at {:.3} kimg", i as f64 / 1000.0),
        ),
        "resume every node from the same checkpoint (pass --resume RUN_DIR/checkpoints/\
         ckpt-... of one that every node has)",
    );
    if out.is_empty() {
        if let Some(found) = differs(
            nodes,
            "the starting state (a crc32 of weights, optimizer, RNG and sampler)",
            |n| n.state_crc,
            |c| format!("{c:#010x}"),
        ) {
            out.push(format!(
                "{found}: the nodes start from different checkpoints, or this backend's weight \
                 initialisation is not reproducible from the seed"
            ));
        }
    }
    out
}

/// `what` of the nodes whose `key` differs from the value most of them hold (more than half;
/// on a tie in a smaller group, node 0's group first), or every node's value when no value
/// has a majority; None when all agree.
fn differs<T: PartialEq + Copy>(
    nodes: &[JoinInfo],
    what: &str,
    key: impl Fn(&JoinInfo) -> T,
    show: impl Fn(T) -> String,
) -> Option<String> {
    let values: Vec<T> = nodes.iter().map(key).collect();
    let count = |v: T| values.iter().filter(|&&w| w == v).count();
    let mut usual = values[0];
    for &v in &values[1..] {
        if count(v) > count(usual) {
            usual = v;
        }
    }
    if count(usual) == values.len() {
        return None;
    }
    let named = |ranks: Vec<usize>| -> String {
        let each: Vec<String> = ranks
            .into_iter()
            .map(|r| format!("node {r} ({})", show(values[r])))
            .collect();
        each.join(", ")
    };
    if count(usual) * 2 <= values.len() {
        return Some(format!(
            "{what} differs between the nodes: {}",
            named((0..values.len()).collect())
        ));
    }
    let odd = (0..values.len()).filter(|&r| values[r] != usual).collect();
    Some(format!(
        "{what} of {} differs from that of {} ({})",
        named(odd),
        holders(&values, usual),
        show(usual)
    ))
}

/// "node 0" or "nodes 0, 2": the ranks of the nodes whose value is `usual`.
fn holders<T: PartialEq>(values: &[T], usual: T) -> String {
    let ranks: Vec<String> = (0..values.len())
        .filter(|&r| values[r] == usual)
        .map(|r| r.to_string())
        .collect();
    match ranks.len() {
        1 => format!("node {}", ranks[0]),
        _ => format!("nodes {}", ranks.join(", ")),
    }
}

/// The keys whose values differ between the nodes' configs, each with its values and the
/// nodes that hold them: `schedule.lr_default (0.001 on nodes 0, 2; 0.002 on node 1)`. None when a
/// node's config text did not travel (too long) or none differs (the hashes differ anyway:
/// then the texts are not those the hashes were taken of).
fn config_keys_that_differ(nodes: &[JoinInfo]) -> Option<String> {
    let flat: Vec<std::collections::BTreeMap<String, String>> = nodes
        .iter()
        .map(|n| n.config_text.as_deref().and_then(flatten_toml))
        .collect::<Option<_>>()?;
    let keys: std::collections::BTreeSet<&String> = flat.iter().flat_map(|f| f.keys()).collect();
    const SHOWN: usize = 8;
    let mut named = Vec::new();
    let mut more = 0;
    for key in keys {
        let values: Vec<&str> = flat
            .iter()
            .map(|f| f.get(key).map_or("(not set)", |v| v.as_str()))
            .collect();
        if values.iter().all(|v| *v == values[0]) {
            continue;
        }
        if named.len() == SHOWN {
            more += 1;
            continue;
        }
        let mut seen: Vec<&str> = Vec::new();
        for v in &values {
            if !seen.contains(v) {
                seen.push(v);
            }
        }
        let each: Vec<String> = seen
            .iter()
            .map(|&v| {
                let shown: String = if v.chars().count() > 60 {
                    v.chars().take(57).chain("...".chars()).collect()
                } else {
                    v.to_string()
                };
                format!("{shown} on {}", holders(&values, v))
            })
            .collect();
        named.push(format!("{key} ({})", each.join("; ")));
    }
    if named.is_empty() {
        return None;
    }
    let mut out = named.join(", ");
    if more > 0 {
        out.push_str(&format!(
            " and {more} more key{}",
            if more == 1 { "" } else { "s" }
        ));
    }
    Some(out)
}

/// `a.b.c = value` for every leaf of a TOML document (arrays are leaves, written inline).
fn flatten_toml(text: &str) -> Option<std::collections::BTreeMap<String, String>> {
    fn walk(
        prefix: &str,
        table: &toml::Table,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                leaf => {
                    out.insert(key, leaf.to_string());
                }
            }
        }
    }
    let table: toml::Table = text.parse().ok()?;
    let mut out = std::collections::BTreeMap::new();
    walk("", &table, &mut out);
    Some(out)
}

/// The config as the nodes compare it: what may differ between nodes blanked (paths, device
/// indices, this node's rank, addresses and timeouts), the pgan version added.
pub(super) fn comparable_config(config: &TrainConfig) -> String {
    let mut c = config.clone();
    c.run.out_dir = Default::default();
    c.run.desc = None;
    c.run.device = 0;
    // The device count has its own check in the join, with its own message.
    c.run.devices = Vec::new();
    c.run.progress = true;
    c.data.path = None;
    c.nodes.rank = 0;
    c.nodes.orchestrator = None;
    c.nodes.address = None;
    c.nodes.join_timeout_s = 0.0;
    c.nodes.peer_timeout_s = 0.0;
    // A top-level key must come before the first table.
    format!(
        "pgan_version = \"{}\"\n{}",
        env!("CARGO_PKG_VERSION"),
        c.to_toml()
    )
}

/// CRC-32 of [`comparable_config`] (as [`JoinInfo::new`] takes it).
#[cfg(test)]
pub(super) fn config_hash(config: &TrainConfig) -> u32 {
    crc32fast::hash(comparable_config(config).as_bytes())
}

/// CRC-32 of what continues a run from a checkpoint (see [`JoinInfo::state_crc`]), without
/// what legitimately differs between nodes (training seconds, the evaluation memory).
pub(super) fn state_crc(state: &TrainState, weights: &[f32]) -> u32 {
    let key = serde_json::json!({
        "images_shown": state.images_shown,
        "tick": state.tick,
        "step": state.step,
        "phase_index": state.phase_index,
        "rng": state.rng,
        "sampler": state.sampler,
        "lr_multiplier": state.lr_multiplier,
        "cooldown_until": state.cooldown_until,
        // A node whose checkpoint was not marked as given up would resume at another rate and
        // give up at another rollback.
        "consecutive_failures": state.consecutive_failures,
        "gave_up": state.gave_up,
        // Where the tick in progress ends depends on it (the nodes end ticks together).
        "open_tick_images": state.open_tick.as_ref().map(|t| t.images),
    });
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key.to_string().as_bytes());
    for w in weights {
        hasher.update(&w.to_bits().to_le_bytes());
    }
    hasher.finalize()
}

/// Every weight of G, D and G_ema in visiting order, read in one go.
pub(super) fn weight_values<B: burn::tensor::backend::AutodiffBackend>(
    nets: &crate::nets::Nets<B>,
) -> Vec<f32> {
    use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
    struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    let mut c = Collect::<B::InnerBackend>(Vec::new());
    nets.g.valid().visit(&mut c);
    nets.d.valid().visit(&mut c);
    nets.g_ema.visit(&mut c);
    if c.0.is_empty() {
        return Vec::new();
    }
    crate::host_read::read_f32s(Tensor::cat(c.0, 0))
}

/// Adam's state for G and D, parameter by parameter in visiting order: each parameter's step
/// count (two `u32` halves as `f32` bits) and both moments, or one marker for a parameter not
/// stepped yet (a stage not grown). Read in one go; for the join's checksum (the record's
/// parameter ids differ between processes, the visiting order does not).
pub(super) fn optimizer_values<B: burn::tensor::backend::AutodiffBackend>(
    nets: &crate::nets::Nets<B>,
) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param, ParamId};
    use burn::optim::record::AdaptorRecord;
    use burn::optim::{AdamState, Optimizer};
    use std::collections::HashMap;
    type Record<B> = HashMap<ParamId, AdaptorRecord<crate::adam::FusedAdam, B>>;
    struct Collect<B: burn::tensor::backend::AutodiffBackend> {
        record: Record<B>,
        counts: Vec<f32>,
        moments: Vec<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: burn::tensor::backend::AutodiffBackend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some(record) = self.record.remove(&param.id) else {
                self.counts.push(f32::from_bits(u32::MAX));
                return;
            };
            let state: AdamState<B::InnerBackend, D> = record.into_state();
            let time = state.momentum.time as u64;
            self.counts.push(f32::from_bits(time as u32));
            self.counts.push(f32::from_bits((time >> 32) as u32));
            for moment in [state.momentum.moment_1, state.momentum.moment_2] {
                let n = moment.shape().num_elements();
                self.moments.push(moment.reshape([n]));
            }
        }
    }
    let mut g = Collect::<B> {
        record: nets.optim_g.to_record().into_iter().collect(),
        counts: Vec::new(),
        moments: Vec::new(),
    };
    nets.g.visit(&mut g);
    let mut d = Collect::<B> {
        record: nets.optim_d.to_record().into_iter().collect(),
        counts: g.counts,
        moments: g.moments,
    };
    nets.d.visit(&mut d);
    let mut values = d.counts;
    if !d.moments.is_empty() {
        values.extend(crate::host_read::read_f32s(Tensor::cat(d.moments, 0)));
    }
    values
}

/// How long a node waits in an all-reduce, and who the other nodes are (to name a lost one).
#[derive(Clone, Debug)]
pub(super) struct Watch {
    pub rank: usize,
    pub timeout: Duration,
    /// Every node's ring address by rank (empty before the join check has gathered them).
    pub addresses: Vec<String>,
    pub orchestrator: String,
}

impl Watch {
    /// The error after `what`, an [`all_reduce_watched`], failed (`Some` cause) or timed out.
    pub fn explain(&self, what: &str, failure: Option<String>) -> TrainError {
        match failure {
            Some(cause) => self.lost_in_burn(what, cause),
            None => self.lost(what, None),
        }
    }

    /// [`Self::lost`] for a failure inside burn-collective: its own errors
    /// (`LocalServerMissing`) say nothing of the cause, the panic behind them does (a refused
    /// connection and its address), so that panic's message goes into the cause. (pgan's ring
    /// names its own failures.)
    pub fn lost_in_burn(&self, what: &str, cause: String) -> TrainError {
        let cause = match super::network_panics::last() {
            Some(panic) => format!("{cause}; burn-collective {panic}"),
            None => cause,
        };
        self.lost(what, Some(cause))
    }

    /// The error after `what` failed (`cause`) or timed out (`cause` None): which nodes are
    /// gone, from a TCP probe of their data ports.
    pub fn lost(&self, what: &str, cause: Option<String>) -> TrainError {
        self.lost_surveyed(what, cause, None).0
    }

    /// [`Self::lost`], and the ranks it found gone (what this node tells the next one).
    /// `own_stall`: how long this node itself was away from the ring, when that exceeded the
    /// peer timeout (see [`Ring::sum`]): then the others may have given up on this node.
    fn lost_surveyed(
        &self,
        what: &str,
        cause: Option<String>,
        own_stall: Option<Duration>,
    ) -> (TrainError, Vec<usize>) {
        // Before the join check has gathered the addresses, the wait is the join's.
        let key = if self.addresses.is_empty() {
            "nodes.join_timeout_s, --join-timeout"
        } else {
            "nodes.peer_timeout_s, --peer-timeout"
        };
        let how = match cause {
            None => format!("no answer within {} s ({key})", seconds(self.timeout)),
            Some(e) => format!("failed ({e})"),
        };
        // A connection that failed may be a process in the middle of its exit, which closes
        // its sockets one by one: its listener can still answer for a moment. Look again for a
        // second before calling every node alive.
        let patience = if how.starts_with("failed") {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + patience;
        let (gone, alive) = loop {
            let mut gone = Vec::new();
            let mut alive = Vec::new();
            for (rank, address) in self.addresses.iter().enumerate() {
                if rank == self.rank {
                    continue;
                }
                match probe(address) {
                    Ok(()) => alive.push(format!("node {rank} ({address})")),
                    Err(e) => gone.push((rank, format!("node {rank} ({address}): {e}"))),
                }
            }
            if !gone.is_empty() || Instant::now() >= deadline {
                break (gone, alive);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let named: Vec<&str> = gone.iter().map(|(_, n)| n.as_str()).collect();
        let verdict = if gone.len() > 1 {
            format!(
                "lost {}: a node stops when it loses another, so not every node named here \
                 failed",
                named.join("; ")
            )
        } else if !gone.is_empty() {
            format!("lost {}", named.join("; "))
        } else if alive.len() == 1 {
            format!(
                "{} still accepts connections but did not take part: hung, standing still (a \
                 stopped process), or aborted (a second Ctrl-C)",
                alive[0]
            )
        } else if !alive.is_empty() {
            format!(
                "no node is gone ({} still accept connections): one of them is hung or was \
                 aborted (a second Ctrl-C); the ring waits for every node, so which one cannot \
                 be told from here",
                alive.join(", ")
            )
        } else {
            // The join check has not told this node the others' addresses yet; burn-collective's
            // panic may name the one it could not reach.
            match unreachable_data_server(&how).map(|a| (probe(&a), a)) {
                Some((Err(e), address)) => format!(
                    "the node at {address} (its --node-address) is gone ({e}): it stopped, or \
                     gave up at the end of its own join timeout before this node joined (the \
                     orchestrator still held it; start every node within the others' \
                     --join-timeout)"
                ),
                Some((Ok(()), address)) => format!(
                    "this node could not reach the node at {address} (its --node-address), \
                     which accepts connections now: it may have started late, or the network \
                     between them drops connections"
                ),
                None => format!(
                    "which node failed is not known before the join check completes \
                     (orchestrator {}): a node may have stopped, or one cannot reach another's \
                     --node-address",
                    self.orchestrator
                ),
            }
        };
        let error = self.stops(format!(
            "{what}: {how}; {verdict}{}",
            self.stall_note(own_stall)
        ));
        (error, gone.into_iter().map(|(rank, _)| rank).collect())
    }

    /// The error after `what` found that node `from` stopped because it had lost the nodes
    /// `lost` (its word, passed on round the ring; empty: a node that did not answer it).
    fn lost_by_another(
        &self,
        what: &str,
        from: usize,
        lost: &[usize],
        own_stall: Option<Duration>,
    ) -> TrainError {
        let names: Vec<String> = lost
            .iter()
            .map(|&rank| match self.addresses.get(rank) {
                Some(address) => format!("node {rank} ({address})"),
                None => format!("node {rank}"),
            })
            .collect();
        let why = match names.len() {
            0 => "a node that did not answer it".to_string(), // not sent (see `tell_next`)
            1 => format!("the loss of {}", names[0]),
            _ => format!(
                "the loss of {} (not every one of them need have failed)",
                names.join(", ")
            ),
        };
        self.stops(format!(
            "{what}: node {from} stopped because of {why}, and told this node{}",
            self.stall_note(own_stall)
        ))
    }

    /// What a failure means when this node itself was away from the ring longer than the peer
    /// timeout (`own_stall`; empty otherwise): a node waiting for it that long gives up, so the
    /// node it finds gone most likely stopped because of this one, not the other way round.
    fn stall_note(&self, own_stall: Option<Duration>) -> String {
        match own_stall {
            Some(stall) => format!(
                "; but this node itself was away from the exchange for {:.0} s, longer than \
                 the peer timeout ({} s, nodes.peer_timeout_s, --peer-timeout): the other nodes \
                 give up on a node that long, so they most likely stopped because of this \
                 node (a stopped or swapped-out process, or a tick end slower here than \
                 --peer-timeout allows)",
                stall.as_secs_f64(),
                seconds(self.timeout)
            ),
            None => String::new(),
        }
    }

    /// The error after `what` found that node `from` stopped and sent `word` (its own, or one
    /// it passes on).
    fn told_by(
        &self,
        what: &str,
        from: usize,
        word: &Word,
        own_stall: Option<Duration>,
    ) -> TrainError {
        match word {
            Word::Lost(lost) => self.lost_by_another(what, from, lost, own_stall),
            Word::Failed { rank, message } => {
                let node = match self.addresses.get(*rank) {
                    Some(address) => format!("node {rank} ({address})"),
                    None => format!("node {rank}"),
                };
                TrainError::Peer {
                    peer: format!("node {}", self.rank),
                    message: format!(
                        "{what}: {node} stopped on an error of its own: {message}. This node \
                         stops; its last checkpoint stays valid. Mend node {rank}'s error, then \
                         restart `pgan orchestrator` and resume every node with --resume"
                    ),
                }
            }
        }
    }

    /// A node's stop error: `verdict`, and what to do next.
    fn stops(&self, verdict: String) -> TrainError {
        let next = if self.addresses.is_empty() {
            // Still joining: nothing was trained.
            "restart `pgan orchestrator`, then start every node again"
        } else {
            "its last checkpoint stays valid. A node named lost may have stopped on an error of \
             its own (its terminal and log.txt say why: mend that first); then restart `pgan \
             orchestrator` and resume every node with --resume"
        };
        TrainError::Peer {
            peer: format!("node {}", self.rank),
            message: format!("{verdict}. This node stops; {next}"),
        }
    }
}

/// The `host:port` of the data server that burn-collective's panic says it could not connect
/// to ("Failed to connect to data server at Address { inner: "ws://HOST:PORT" }"), if any.
fn unreachable_data_server(cause: &str) -> Option<String> {
    let at = cause.find("Failed to connect to data server at")?;
    let rest = &cause[at..];
    let url = &rest[rest.find("ws://")? + "ws://".len()..];
    let address: String = url
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ".:-_[]".contains(*c))
        .collect();
    (!address.is_empty()).then_some(address)
}

/// Whether something listens at `host:port`.
fn probe(address: &str) -> std::result::Result<(), String> {
    connect(address, Duration::from_secs(3)).map(|_| ())
}

/// A connection to `address` (`host:port`, resolved now): the first of its addresses that
/// accepts within `timeout` each, or the last failure's text.
fn connect(address: &str, timeout: Duration) -> std::result::Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    connect_any(&addrs, timeout).map_err(|e| e.to_string())
}

/// A connection to the first of `addrs` that accepts within `timeout` each, or the last
/// failure.
fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A duration in seconds as a user gives it (`1.14`, not the `1.1400000000000001` of
/// `as_secs_f64` after `from_secs_f64`): durations hold whole nanoseconds.
fn seconds(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e9
}

/// How long a node waits for what answers at the orchestrator's address to say what it is:
/// a loaded orchestrator answers within milliseconds; the join's deadline bounds the wait.
const GREETING_MIN: Duration = Duration::from_secs(1);
const GREETING_MAX: Duration = Duration::from_secs(10);

/// What answered at the orchestrator's address.
#[derive(Debug, PartialEq)]
enum Greeting {
    /// burn-communication's websocket router with the orchestrator's `/request` route.
    Orchestrator,
    /// Another program: its answer, quoted.
    Stranger(String),
    /// A connection, but no answer (yet): why.
    Silent(String),
    /// No connection: why.
    Unreached(String),
}

/// Asks `address` over plain HTTP for the orchestrator's websocket route without the upgrade
/// headers. An orchestrator's router (axum, in burn-communication) turns that down with its
/// websocket extractor's own words, before any handler runs: the orchestrator sees no client.
fn greet_orchestrator(address: &str, wait: Duration, stop: &AtomicBool) -> Greeting {
    use std::io::Read as _;
    let mut stream = match connect(address, wait.min(Duration::from_secs(3))) {
        Ok(s) => s,
        Err(e) => return Greeting::Unreached(e),
    };
    // Short reads, so that Ctrl-C is seen within a fraction of a second.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(wait));
    let request = format!("GET /request HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Greeting::Silent(format!("it took the connection but not a request: {e}"));
    }
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while answer.len() < 4096 && started.elapsed() < wait && !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if classify_greeting(&answer) == Greeting::Orchestrator {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    if answer.is_empty() {
        // Nothing yet: a tunnel or port forwarder whose far end is not up yet accepts and
        // closes; a loaded or stopping orchestrator may be slow. Asked again until the join's
        // deadline.
        return Greeting::Silent(format!(
            "it took the connection but sent no answer within {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    classify_greeting(&answer)
}

/// What an answer to [`greet_orchestrator`]'s request says about the program that sent it.
fn classify_greeting(answer: &[u8]) -> Greeting {
    let text = String::from_utf8_lossy(answer);
    // axum's `WebSocketUpgradeRejection::InvalidConnectionHeader` (400, "Connection header did
    // not include 'upgrade'"), or a later check of the same extractor.
    let websocket_route = text.starts_with("HTTP/1.")
        && (text.contains("did not include 'upgrade'")
            || text.contains("did not include 'websocket'")
            || text.contains("couldn't be upgraded"));
    if websocket_route {
        return Greeting::Orchestrator;
    }
    let first_line: String = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(80)
        .collect();
    Greeting::Stranger(format!("`{}`", first_line.escape_debug()))
}

/// `burn_collective::all_reduce` on a helper thread, waited for at most `timeout`. A call that
/// does not return in time is left blocked on its thread (burn-collective cannot cancel it);
/// the node stops with an error, and the process's exit ends the thread. `Err`: burn's error
/// (`Some`), or no answer in time (`None`), for [`Watch::explain`] (one peer's failure only:
/// it takes the burn panic behind it).
pub(super) fn all_reduce_watched<B: Backend>(
    peer: PeerId,
    tensor: Tensor<B, 1>,
    op: ReduceOperation,
    timeout: Duration,
) -> std::result::Result<Tensor<B, 1>, Option<String>> {
    let (tx, rx) = mpsc::channel();
    let primitive = tensor.into_primitive().tensor();
    std::thread::Builder::new()
        .name(format!("pgan-allreduce-{}", peer.0))
        .spawn(move || {
            let _ = tx.send(burn_collective::all_reduce::<B>(peer, primitive, op));
        })
        .map_err(|e| Some(format!("cannot start a thread: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(reduced)) => Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced))),
        Ok(Err(e)) => Err(Some(format!("{e:?}"))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(Some("the all-reduce thread panicked".into()))
        }
    }
}

/// burn-communication's websocket servers install a global tracing subscriber that prints
/// every tensor transfer (INFO) on stdout unless one is installed already: install a silent
/// one first (errors reach the user through pgan's own messages); and keep the network crates'
/// panics quiet (`network_panics`).
pub(super) fn quiet_websocket_output() {
    let silent = tracing_core::Dispatch::new(tracing_core::subscriber::NoSubscriber::default());
    let _ = tracing_core::dispatcher::set_global_default(silent);
    super::network_panics::quiet();
}

/// The tokio runtime of the gradient ring (one per process).
fn ring_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgan-ring")
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
    })
}

/// The gradient all-reduce between nodes after the join: a ring over the nodes in rank order on
/// burn-communication's websocket tensor data service (what burn-collective's own global ring
/// uses underneath).
///
/// Why not burn-collective's global all-reduce: in 0.21 only the first one of a process
/// completes. Every global strategy ends with `SyncService::sync` (`global/node/sync.rs`),
/// which waits until its list of synced nodes equals the node list, then clears a *copy* of
/// the list (`let mut syncing_peers = self.syncing_peers.lock().unwrap().to_vec(); ...
/// syncing_peers.clear()`), so the shared list keeps the first sync's entries and no later
/// sync can ever match: the second all-reduce waits for ever (measured: the join check's
/// all-reduce passes, the first gradient all-reduce hangs). pgan therefore uses the
/// orchestrator and one global all-reduce (the join check) to introduce the nodes and gather
/// their ring addresses, unregisters from it, and reduces gradients over this ring.
///
/// Transfer ids count up identically on every node (every node runs the same all-reduces in
/// the same order), so no sync step is needed: a download waits for the one tensor it names.
/// Each slice is summed in ring order and then copied, so every node gets the same bits.
pub(super) struct Ring {
    rank: usize,
    prev: burn_communication::Address,
    count: usize,
    /// Only `expose_data` and `download_tensor` are used, which do not touch the backend
    /// type: the values travel as host data whatever the training's backend.
    service: std::sync::Arc<
        burn_communication::data_service::TensorDataService<
            burn::backend::Flex,
            burn_communication::websocket::WebSocket,
        >,
    >,
    cancel: tokio_util::sync::CancellationToken,
    next_op: AtomicU64,
    pub watch: Watch,
    /// Ctrl-C or SIGTERM (ends `tell_next`'s wait).
    interrupted: Arc<AtomicBool>,
    /// When this node's last exchange ended (the ring's start before the first).
    last_exchange_end: std::sync::Mutex<Instant>,
    /// Whether this whole process stood still inside an exchange.
    heartbeat: Arc<Heartbeat>,
    /// An exchange failed (this node's stop was told there, if to anyone).
    failed_in_exchange: AtomicBool,
}

/// A thread that beats every 100 ms and keeps the longest gap between two beats: a gap far
/// longer than that is the whole process standing still (SIGSTOP, swap), which nothing else
/// inside an exchange can tell from waiting for a slow peer. (A suspended machine is not seen:
/// the monotonic clock stands still with it.)
struct Heartbeat {
    start: Instant,
    /// Milliseconds from `start` to the last beat.
    last_beat_ms: AtomicU64,
    /// The longest gap between beats since [`Self::restart`], in milliseconds.
    longest_ms: AtomicU64,
}

impl Heartbeat {
    /// Starts the beating thread; it ends when `stop` is cancelled.
    fn start(stop: tokio_util::sync::CancellationToken) -> Arc<Self> {
        let heartbeat = Arc::new(Self {
            start: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            longest_ms: AtomicU64::new(0),
        });
        let beating = heartbeat.clone();
        // Without the thread the note is merely never given: not worth failing the run for.
        let _ = std::thread::Builder::new()
            .name("pgan-heartbeat".into())
            .spawn(move || {
                while !stop.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(100));
                    // The gap is kept before the beat moves on: a look in between still sees
                    // it, as the gap under way.
                    let now = beating.now_ms();
                    let previous = beating.last_beat_ms.load(Ordering::SeqCst);
                    beating
                        .longest_ms
                        .fetch_max(now.saturating_sub(previous), Ordering::SeqCst);
                    beating.last_beat_ms.store(now, Ordering::SeqCst);
                }
            });
        heartbeat
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Forgets the gaps so far (at an exchange's start).
    fn restart(&self) {
        self.longest_ms.store(0, Ordering::SeqCst);
    }

    /// The longest standstill since [`Self::restart`], the one under way included (the beating
    /// thread may not have run yet since the process went on).
    fn longest(&self) -> Duration {
        let since_last = self
            .now_ms()
            .saturating_sub(self.last_beat_ms.load(Ordering::SeqCst));
        Duration::from_millis(self.longest_ms.load(Ordering::SeqCst).max(since_last))
    }
}

impl Ring {
    /// This node's rank and the number of nodes.
    pub fn rank_and_count(&self) -> (usize, usize) {
        (self.rank, self.count)
    }

    /// Serves this node's slices on `port` (already checked free); `watch.addresses` are every
    /// node's ring address by rank.
    pub fn start(
        port: u16,
        watch: Watch,
        join_timeout: Duration,
        interrupted: &Arc<AtomicBool>,
    ) -> Result<Self> {
        quiet_websocket_output();
        use burn_communication::data_service::{TensorDataServer, TensorDataService};
        use burn_communication::ProtocolServer;
        let cancel = tokio_util::sync::CancellationToken::new();
        let service = std::sync::Arc::new(TensorDataService::new(cancel.clone()));
        let server = burn_communication::websocket::WsServer::new(port)
            .route_tensor_data_service(service.clone());
        let stop = cancel.clone();
        // `serve` binds its port on its first poll (a numeric address resolves at once) and
        // only returns a failed bind: a port taken since `NodeLink::of` checked it (by any
        // program, or an outgoing connection's local end) would leave this node unreachable
        // while the others wait out their peer timeout. The first poll's outcome comes back.
        let (bound, bind_outcome) = mpsc::channel();
        ring_runtime().spawn(async move {
            use std::future::Future as _;
            let mut serving = std::pin::pin!(server.serve(async move { stop.cancelled().await }));
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(serving.as_mut().poll(cx))).await;
            match first {
                std::task::Poll::Pending => {
                    let _ = bound.send(Ok(()));
                    let _ = serving.await;
                }
                std::task::Poll::Ready(result) => {
                    let _ = bound.send(Err(match result {
                        Err(burn_communication::websocket::WsServerError::Io(e)) => e.to_string(),
                        Err(e) => format!("{e:?}"),
                        Ok(()) => "the server stopped at once".into(),
                    }));
                }
            }
        });
        let refused = match bind_outcome.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("its server did not start within 10 s".into()),
        };
        if let Some(why) = refused {
            cancel.cancel();
            return Err(TrainError::Peer {
                peer: format!("node {}", watch.rank),
                message: format!(
                    "cannot listen on port {port} for the gradient ring ({why}): it was free \
                     when the node started, so another program (or an outgoing connection) took \
                     it since; nothing was trained. Restart `pgan orchestrator`, then start every \
                     node again with ports outside the system's ephemeral range (Linux: \
                     /proc/sys/net/ipv4/ip_local_port_range)"
                ),
            });
        }
        // A download handler that checks for its tensor just before it is exposed misses the
        // exposure's wake-up (`get_exposed_tensor_bytes` in burn-communication's
        // data_service.rs creates its `notified()` future after releasing the lock), and two
        // nodes missing each other's at once wait for ever. Waking the handlers every few
        // milliseconds makes them look again.
        let (notify, stop) = (service.new_tensor_notify.clone(), cancel.clone());
        ring_runtime().spawn(async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(2)).await;
                notify.notify_waiters();
            }
        });
        let count = watch.addresses.len();
        let prev = (watch.rank + count - 1) % count;
        let prev_address = watch.addresses[prev].clone();
        // burn-communication panics when a download cannot connect: wait until the node
        // before this one serves its ring (it may still be leaving the orchestrator).
        let deadline = Instant::now() + join_timeout;
        while let Err(refused) = probe(&prev_address) {
            if Instant::now() > deadline {
                cancel.cancel();
                let cause = format!(
                    "node {prev} did not listen on {prev_address} within {} s \
                     (nodes.join_timeout_s, --join-timeout): {refused}",
                    seconds(join_timeout)
                );
                return Err(watch.lost("starting the gradient ring", Some(cause)));
            }
            if interrupted.load(Ordering::SeqCst) {
                cancel.cancel();
                return Err(TrainError::StoppedWaiting {
                    message: format!(
                        "node {} stopped while waiting for the gradient ring: nothing was \
                         trained (a resumed run folder is as it was)",
                        watch.rank
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            rank: watch.rank,
            prev: ws(&prev_address),
            count,
            service,
            next_op: AtomicU64::new(0),
            watch,
            interrupted: interrupted.clone(),
            last_exchange_end: std::sync::Mutex::new(Instant::now()),
            heartbeat: Heartbeat::start(cancel.clone()),
            failed_in_exchange: AtomicBool::new(false),
            cancel,
        })
    }

    /// The sum of `values` over all nodes (`what` names the all-reduce in errors).
    ///
    /// A node that stops inside it tells the next node why, in place of its next slice (see
    /// [`Word`]): in a ring of three or more, every other node then names the
    /// node that failed, not also the neighbour that stopped because of it.
    ///
    /// A failure after this node was itself away longer than the peer timeout (between two
    /// exchanges, or standing still inside one) says so: the node it finds gone most likely
    /// gave up waiting for this one.
    pub fn sum(&self, mut values: Vec<f32>, what: &str) -> Result<Vec<f32>> {
        let away_before = self
            .last_exchange_end
            .lock()
            .map(|end| end.elapsed())
            .unwrap_or_default();
        self.heartbeat.restart();
        let own_stall = || {
            let away = away_before.max(self.heartbeat.longest());
            (away > self.watch.timeout).then_some(away)
        };
        let (n, nodes, rank) = (values.len(), self.count, self.rank);
        let per = n.div_ceil(nodes).max(1);
        values.resize(per * nodes, 0.0);
        let mut slices: Vec<Vec<f32>> = values.chunks(per).map(<[f32]>::to_vec).collect();
        let op = self
            .next_op
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let base = op * 2 * nodes as u64;
        // This op's transfer ids in order: the reduce-scatter's, then the all-gather's.
        let ids: Vec<u64> = (0..nodes as u64 - 1)
            .chain(nodes as u64..2 * nodes as u64 - 1)
            .map(|k| base + k)
            .collect();
        let sent = AtomicUsize::new(0);
        let prev_rank = (rank + nodes - 1) % nodes;
        let next_rank = (rank + 1) % nodes;
        let next_address = self.watch.addresses[next_rank].clone();
        let exchange = |send: Vec<f32>, id: u64| {
            let service = self.service.clone();
            let prev = self.prev.clone();
            let sent = &sent;
            async move {
                let len = send.len();
                service
                    .expose_data(burn::tensor::TensorData::new(send, [len]), 1, id.into())
                    .await;
                sent.fetch_add(1, Ordering::SeqCst);
                // A download from a node that is gone panics inside burn-communication (a
                // closed stream): on its own task, the panic is an error here.
                let got =
                    tokio::spawn(async move { service.download_tensor(prev, id.into()).await })
                        .await
                        .map_err(|e| {
                            RingFailure::Failed(format!(
                                "the download from node {prev_rank} failed: {e}"
                            ))
                        })?;
                let got = got.ok_or_else(|| {
                    RingFailure::Failed(format!("node {prev_rank} closed the connection"))
                })?;
                if let Some(word) = Word::read(&got) {
                    return Err(RingFailure::Told(word));
                }
                got.to_vec::<f32>()
                    .ok()
                    .filter(|v| v.len() == len)
                    .ok_or_else(|| {
                        RingFailure::Failed(format!(
                            "node {prev_rank} sent a slice of another size"
                        ))
                    })
            }
        };
        let result = ring_runtime().block_on(async {
            tokio::time::timeout(self.watch.timeout, async {
                // Reduce-scatter: after it, this node holds the sum of slice rank+1.
                for (step, &id) in ids[..nodes - 1].iter().enumerate() {
                    let send = (rank + nodes - step) % nodes;
                    let recv = (rank + 2 * nodes - step - 1) % nodes;
                    let got = exchange(slices[send].clone(), id).await?;
                    for (mine, theirs) in slices[recv].iter_mut().zip(got) {
                        *mine += theirs;
                    }
                }
                // All-gather: the summed slices go round.
                for step in 0..nodes - 1 {
                    let send = (rank + 1 + nodes - step) % nodes;
                    let recv = (rank + nodes - step) % nodes;
                    slices[recv] = exchange(slices[send].clone(), ids[nodes - 1 + step]).await?;
                }
                // Until the next node has taken this node's last slice: a node that returned
                // earlier could exit (at the run's end) before serving it. Nothing else tells
                // this node that the next one is gone (it downloads only from the node before
                // it), so it looks: a next node killed after sending its last slice is named
                // at once, not after the peer timeout (by which time the node after it, which
                // had stopped because of it, may be gone too and be named with it).
                // Gone means two refusals in a row with the slice still there after them: a next
                // node that took it and ended its run meanwhile, or a refusal under load, is not
                // taken for a loss.
                let mut last_probe = Instant::now();
                let mut refusals = 0;
                while !self.service.exposed_tensors.lock().await.is_empty() {
                    if last_probe.elapsed() >= Duration::from_millis(250) {
                        let address = next_address.clone();
                        let refused = tokio::task::spawn_blocking(move || probe(&address).is_err());
                        refusals = if refused.await.unwrap_or(false) {
                            refusals + 1
                        } else {
                            0
                        };
                        let still_there = !self.service.exposed_tensors.lock().await.is_empty();
                        if refusals >= 2 && still_there {
                            return Err(RingFailure::Failed(format!(
                                "node {next_rank} stopped before it took this node's last slice"
                            )));
                        }
                        last_probe = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok::<_, RingFailure>(())
            })
            .await
        });
        let (error, word) = match result {
            Ok(Ok(())) => {
                // A standstill inside this exchange that it survived (the others had not yet
                // given up) counts towards the next one: the others may give up there.
                let stood_still = self.heartbeat.longest();
                let stood_still = if stood_still > self.watch.timeout {
                    stood_still
                } else {
                    Duration::ZERO
                };
                if let Ok(mut end) = self.last_exchange_end.lock() {
                    let now = Instant::now();
                    *end = now.checked_sub(stood_still).unwrap_or(now);
                }
                let mut out = slices.concat();
                out.truncate(n);
                return Ok(out);
            }
            Err(_) => {
                let (error, lost) = self.watch.lost_surveyed(what, None, own_stall());
                (error, Word::Lost(lost))
            }
            Ok(Err(RingFailure::Failed(e))) => {
                let (error, lost) = self.watch.lost_surveyed(what, Some(e), own_stall());
                (error, Word::Lost(lost))
            }
            Ok(Err(RingFailure::Told(word))) => (
                self.watch.told_by(what, prev_rank, &word, own_stall()),
                word,
            ),
        };
        self.failed_in_exchange.store(true, Ordering::SeqCst);
        // The slices of this op not sent, and the first of the next op: a next node that got
        // every slice of this one (this node failed on its last download) finishes this op and
        // reads the word at its next.
        let mut marker_ids = ids[sent.load(Ordering::SeqCst).min(ids.len())..].to_vec();
        marker_ids.push(base + 2 * nodes as u64);
        self.tell_next(&marker_ids, &word);
        Err(error)
    }

    /// Tells the next node that this node stops on an error of its own (`message`), in place
    /// of the first slice of the exchange it would have taken part in next, so that the other
    /// nodes name that error rather than "lost node N" (every node passes the word on round the
    /// ring). Nothing when this node's stop came from an exchange (its failure was told there,
    /// or it lost another node). Returns once the next node took the word, stopped listening,
    /// Ctrl-C, or a peer timeout and a margin passed; meanwhile it takes the first slice the
    /// node before this one offers, so that nodes stopping on errors at once (the same error on
    /// every node) take each other's word instead of waiting for it.
    pub fn tell_failure(&self, message: &str) {
        if self.failed_in_exchange.load(Ordering::SeqCst) {
            return;
        }
        let first_id = self.next_op.load(Ordering::SeqCst) * 2 * self.count as u64;
        let (service, prev) = (self.service.clone(), self.prev.clone());
        ring_runtime().spawn(async move {
            // On a task of its own: a download from a node gone panics inside burn-communication.
            let _ =
                tokio::spawn(async move { service.download_tensor(prev, first_id.into()).await })
                    .await;
        });
        let word = Word::Failed {
            rank: self.rank,
            message: message.to_string(),
        };
        self.tell_next(&[first_id], &word);
    }

    /// Tells the next node that this one stops because of the nodes `lost`: a marker in place
    /// of every slice it has not sent (`ids`: the rest of this op's, and the next op's first,
    /// which a next node that finished this op reads if it starts its next within the wait).
    /// Waits until the next node took one (and a moment more: the data service takes it before
    /// it sends it), stopped listening, Ctrl-C, or a peer timeout and a margin passed (the next
    /// node may be waiting for its own timeout on a lost node, and then reads the marker no
    /// more: its survey must still find this node alive to name only the lost one). Not when no
    /// node was found gone (a hang: every node times out on its own), when the next node is
    /// among the lost, or is the node before this one (two nodes: it knows already).
    fn tell_next(&self, ids: &[u64], word: &Word) {
        let next = (self.rank + 1) % self.count;
        let worth_telling = match word {
            Word::Lost(lost) => self.count >= 3 && !lost.is_empty() && !lost.contains(&next),
            // Round the ring back to the node that failed: everyone has heard.
            Word::Failed { rank, .. } => *rank != next,
        };
        if !worth_telling {
            return;
        }
        let ids: Vec<TensorTransferId> = ids.iter().map(|&id| id.into()).collect();
        for &id in &ids {
            let (service, data) = (self.service.clone(), word.data());
            ring_runtime().block_on(async move { service.expose_data(data, 1, id).await });
        }
        let one_taken = || {
            let (service, ids) = (self.service.clone(), &ids);
            ring_runtime().block_on(async move {
                let exposed = service.exposed_tensors.lock().await;
                ids.iter().any(|id| !exposed.contains_key(id))
            })
        };
        let deadline = Instant::now() + self.watch.timeout + Duration::from_secs(5);
        let mut next_probe = Instant::now();
        while Instant::now() < deadline && !self.interrupted.load(Ordering::SeqCst) {
            if one_taken() {
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            if Instant::now() >= next_probe {
                if probe(&self.watch.addresses[next]).is_err() {
                    return;
                }
                next_probe = Instant::now() + Duration::from_millis(250);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Why a ring exchange failed.
enum RingFailure {
    /// A failure this node saw (a closed connection, a slice of the wrong size).
    Failed(String),
    /// The node before this one stopped and sent this word in place of a slice.
    Told(Word),
}

/// What a node that stops sends the next node in place of its slices. A slice is
/// one-dimensional; a word two-dimensional ([`Word::Lost`]) or three-dimensional
/// ([`Word::Failed`]).
#[derive(Clone, Debug, PartialEq)]
enum Word {
    /// It lost these nodes (by rank; none: a node that did not answer it). `[1, lost]`.
    Lost(Vec<usize>),
    /// Node `rank` stopped on an error of its own (not in an exchange), `message`.
    /// `[1, 1, 1 + bytes]`: the rank, then the message's UTF-8 bytes.
    Failed { rank: usize, message: String },
}

impl Word {
    /// The longest message sent, in bytes (an error is a few lines).
    const MAX_MESSAGE: usize = 4096;

    fn data(&self) -> burn::tensor::TensorData {
        use burn::tensor::TensorData;
        match self {
            Self::Lost(lost) => {
                let values: Vec<f32> = lost.iter().map(|&r| r as f32).collect();
                let len = values.len();
                TensorData::new(values, [1, len])
            }
            Self::Failed { rank, message } => {
                let mut end = message.len().min(Self::MAX_MESSAGE);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                let values: Vec<f32> = std::iter::once(*rank as f32)
                    .chain(message.as_bytes()[..end].iter().map(|&b| f32::from(b)))
                    .collect();
                let len = values.len();
                TensorData::new(values, [1, 1, len])
            }
        }
    }

    /// The word `data` holds, or `None` for a slice.
    fn read(data: &burn::tensor::TensorData) -> Option<Self> {
        let values = || data.to_vec::<f32>().unwrap_or_default();
        match data.shape.num_dims() {
            2 => Some(Self::Lost(values().iter().map(|&r| r as usize).collect())),
            3 => {
                let values = values();
                let (rank, bytes) = values.split_first()?;
                let bytes: Vec<u8> = bytes.iter().map(|&b| b as u8).collect();
                Some(Self::Failed {
                    rank: *rank as usize,
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                })
            }
            _ => None,
        }
    }
}

impl Drop for Ring {
    /// Closes this node's download connections first, so that the node before it sees its
    /// connection end cleanly, then stops serving.
    fn drop(&mut self) {
        // Waited for on a channel, not with `block_on`: a drop inside an async context (a
        // caller's own runtime) must not start a runtime.
        let (service, (done, closed)) = (self.service.clone(), mpsc::channel());
        ring_runtime().spawn(async move {
            service.close().await;
            let _ = done.send(());
        });
        let _ = closed.recv_timeout(Duration::from_secs(2));
        self.cancel.cancel();
    }
}

/// Runs burn-collective's global orchestrator on `port` until Ctrl-C or SIGTERM.
pub fn run_orchestrator(port: u16) -> Result<()> {
    if port == 0 {
        // The nodes must be told the port: one the OS picks is known to nobody.
        return Err(TrainError::Peer {
            peer: "orchestrator".into(),
            message: "port 0 is not a port the nodes can be given: choose one (1-65535)".into(),
        });
    }
    // burn-collective only logs a failed bind and returns: check it first for a clear error.
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| TrainError::Peer {
        peer: "orchestrator".into(),
        message: format!("cannot listen on port {port}: {e}"),
    })?;
    println!("pgan orchestrator listening on port {port} (Ctrl-C to stop)");
    orchestrator_log();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainError::Peer {
            peer: "orchestrator".into(),
            message: format!("cannot start its runtime: {e}"),
        })?;
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}

/// burn-communication's log format and level for the orchestrator, installed before it
/// installs its own (which colours its lines even into a file): colour only on a terminal.
fn orchestrator_log() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stdout().is_terminal())
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The join's checksum covers Adam's state: one step of G's optimizer changes it, and two
    /// processes' networks in the same state (other parameter ids) give the same values.
    #[test]
    fn the_optimizer_values_follow_the_moments_not_the_parameter_ids() {
        // Builds graphs: one thread of the process at a time (training_loop/step/turn.rs).
        let _process = crate::training_loop::step::process_turn();
        use burn::backend::{Autodiff, Flex};
        use burn::optim::{GradientsParams, Optimizer};
        type Cpu = Autodiff<Flex>;
        let model = pgan_model::ModelConfig::cpu_small(8);
        let optim = crate::config::OptimConfig::default();
        let device = Default::default();
        let fresh = || crate::nets::Nets::<Cpu>::fresh(&model, &optim, &device, Some(3));
        let stepped = || {
            let mut nets = fresh();
            let z = Tensor::<Cpu, 2>::ones([2, model.latent_dim], &device);
            let loss = nets.g.forward(z, 0, 1.0).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &nets.g);
            nets.g = nets.optim_g.step(1e-3, nets.g.clone(), grads);
            nets
        };
        let (a, b) = (stepped(), stepped());
        let before = optimizer_values(&fresh());
        let after = optimizer_values(&a);
        assert_ne!(
            before.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            after.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(
            after.len() > before.len(),
            "the stepped parameters' moments"
        );
        assert_eq!(
            after.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            optimizer_values(&b)
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        );
    }

    fn info(config_hash: u32, images_shown: u64) -> JoinInfo {
        JoinInfo {
            devices: 2,
            config_hash,
            dataset_images: 70_000,
            dataset_crc: 0xdead_beef,
            images_shown,
            state_crc: 0x1234_5678,
            address: "10.0.0.7:7001".into(),
            config_text: None,
        }
    }

    /// Addresses that resolve to IPv6 only are refused at the start, naming the key; the
    /// default node address is the IPv4 one.
    #[test]
    fn ipv6_only_addresses_are_refused_naming_the_key_and_ipv4_is_taken() {
        let refused = refuse_ipv6_only(1, "nodes.address", "--node-address", "[::1]:9000")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("nodes.address '[::1]:9000' (--node-address) is IPv6 only (::1)")
                && refused.contains("listen on IPv4 only"),
            "{refused}"
        );
        assert!(
            refuse_ipv6_only(0, "nodes.orchestrator", "--orchestrator", "127.0.0.1:9000").is_ok()
        );
        // Not resolvable: left to the checks that say so.
        assert!(
            refuse_ipv6_only(0, "nodes.address", "--node-address", "no-such.invalid:1").is_ok()
        );

        let mut config = TrainConfig::default();
        config.nodes.count = 2;
        config.nodes.orchestrator = Some("[::1]:9000".into());
        let refused = NodeLink::of(&config).unwrap_err().to_string();
        assert!(
            refused.contains("nodes.orchestrator '[::1]:9000' (--orchestrator) is IPv6 only"),
            "{refused}"
        );
        // The default node address is this machine's IPv4 address towards the orchestrator.
        let port = free_ports(1)[0];
        config.nodes.orchestrator = Some(format!("127.0.0.1:{}", port - 1));
        let link = NodeLink::of(&config).unwrap();
        assert_eq!(link.address, format!("127.0.0.1:{port}"));
    }

    /// A timeout names the setting that bounded it: the join's before the join check has
    /// gathered the nodes' addresses, the peers' after.
    #[test]
    fn a_timeout_names_the_join_or_the_peer_timeout_as_the_wait_was() {
        let mut watch = Watch {
            rank: 0,
            timeout: Duration::from_secs(60),
            addresses: Vec::new(),
            orchestrator: "127.0.0.1:1".into(),
        };
        let joining = watch.lost("join check", None).to_string();
        assert!(
            joining.contains(
                "join check: no answer within 60 s (nodes.join_timeout_s, --join-timeout)"
            ),
            "{joining}"
        );
        watch.timeout = Duration::from_secs(20);
        watch.addresses = vec!["127.0.0.1:1".into(), "127.0.0.1:1".into()];
        let training = watch.lost("gradients", None).to_string();
        assert!(
            training.contains(
                "gradients: no answer within 20 s (nodes.peer_timeout_s, --peer-timeout)"
            ),
            "{training}"
        );
    }

    /// A ring port another program took after the start's check ends the node with an error
    /// naming the port, instead of a node the others wait for until their peer timeout.
    #[test]
    fn a_ring_port_taken_since_the_check_is_a_clear_error() {
        let taken = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let watch = Watch {
            rank: 0,
            timeout: Duration::from_secs(5),
            // This node is the one before itself; the taken port would answer its probe.
            addresses: vec![format!("127.0.0.1:{port}")],
            orchestrator: "127.0.0.1:1".into(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let error = match Ring::start(port, watch, Duration::from_secs(5), &stop) {
            Ok(_) => panic!("the ring started on a taken port"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains(&format!(
                "cannot listen on port {port} for the gradient ring"
            )),
            "{error}"
        );
    }

    #[test]
    fn the_summed_slot_vectors_give_back_every_node_exactly() {
        let nodes = [info(0xffff_ffff, 12_000_000_123), info(7, 0)];
        let sum: Vec<f32> = nodes[0]
            .slot_vector(0, 2)
            .iter()
            .zip(nodes[1].slot_vector(1, 2))
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(JoinInfo::from_gathered(&sum, 2).unwrap(), nodes);
        let diffs = join_differences(&nodes);
        assert!(
            diffs.iter().any(|d| d.starts_with(
                "the config differs between the nodes: node 0 (hash 0xffffffff), node 1 (hash \
                 0x00000007)"
            )),
            "{diffs:?}"
        );
        assert!(
            diffs.iter().any(|d| d.contains("12000000.123 kimg")),
            "{diffs:?}"
        );
        // A rank given twice leaves another rank empty.
        let twice: Vec<f32> = nodes[0]
            .slot_vector(0, 2)
            .iter()
            .zip(nodes[1].slot_vector(0, 2))
            .map(|(a, b)| a + b)
            .collect();
        let err = JoinInfo::from_gathered(&twice, 2).unwrap_err();
        assert!(err.contains("2 nodes joined with --node-rank 0"), "{err}");
    }

    /// Three nodes, node 0 the odd one: it is named, against the other two; a dataset that
    /// differs is not also reported as a starting state that differs.
    #[test]
    fn the_join_check_names_the_odd_node_and_not_the_consequences() {
        let mut nodes = vec![info(1, 0), info(2, 0), info(2, 0)];
        let diffs = join_differences(&nodes);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert!(
            diffs[0].starts_with(
                "the config of node 0 (hash 0x00000001) differs from that of nodes 1, 2 (hash \
                 0x00000002)"
            ),
            "{diffs:?}"
        );
        for n in &mut nodes {
            n.config_hash = 2;
        }
        nodes[2].dataset_images = 7;
        nodes[2].state_crc ^= 1;
        let diffs = join_differences(&nodes);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert!(
            diffs[0].starts_with("the dataset of node 2 (7 images"),
            "{diffs:?}"
        );
        nodes[2].dataset_images = nodes[0].dataset_images;
        let diffs = join_differences(&nodes);
        assert!(
            diffs[0].starts_with("the starting state (a crc32")
                && diffs[0].contains("of node 2 (0x12345679) differs from that of nodes 0, 1"),
            "{diffs:?}"
        );
        // Two nodes that disagree: neither is the odd one.
        let diffs = join_differences(&[info(2, 0), info(2, 5_000)]);
        assert!(
            diffs[0].starts_with(
                "the starting checkpoint differs between the nodes: node 0 (at 0.000 kimg), \
                 node 1 (at 5.000 kimg)"
            ),
            "{diffs:?}"
        );
        assert!(join_differences(&[info(2, 0), info(2, 0)]).is_empty());
    }

    /// A config difference is named by its keys, each value with the nodes that hold it, and
    /// the config texts travel exactly through the summed slot vectors.
    #[test]
    fn the_join_check_names_the_config_keys_that_differ() {
        let base = TrainConfig::default();
        let mut odd = base.clone();
        odd.optim.beta1 = 0.5;
        odd.model.fmap_max = Some(64);
        odd.nodes.rank = 1; // may differ: not named
        let configs = [&base, &odd, &base];
        let nodes: Vec<JoinInfo> = configs
            .iter()
            .map(|c| JoinInfo {
                config_hash: config_hash(c),
                config_text: Some(comparable_config(c)),
                ..info(0, 0)
            })
            .collect();
        assert!(nodes[0].config_text.as_ref().unwrap().len() <= MAX_CONFIG);
        let mut sum = vec![0.0f32; SLOT * 3];
        for (rank, n) in nodes.iter().enumerate() {
            for (s, x) in sum.iter_mut().zip(n.slot_vector(rank, 3)) {
                *s += x;
            }
        }
        let gathered = JoinInfo::from_gathered(&sum, 3).unwrap();
        assert_eq!(gathered, nodes);
        let diffs = join_differences(&gathered);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        let hash = |c: &TrainConfig| format!("{:#010x}", config_hash(c));
        assert!(
            diffs[0].starts_with(&format!(
                "the config of node 1 (hash {}) differs from that of nodes 0, 2 (hash {}), in \
                 model.fmap_max ((not set) on nodes 0, 2; 64 on node 1), optim.beta1 (0.0 on \
                 nodes 0, 2; 0.5 on node 1): every node must train",
                hash(&odd),
                hash(&base)
            )),
            "{diffs:?}"
        );
        // A text that did not travel leaves the hashes alone to tell.
        let mut untold = gathered.clone();
        untold[1].config_text = None;
        let diffs = join_differences(&untold);
        assert!(
            diffs[0].contains("(hash 0x") && !diffs[0].contains(", in "),
            "{diffs:?}"
        );
    }

    #[test]
    fn the_config_hash_ignores_what_may_differ_between_nodes_only() {
        let base = TrainConfig::default();
        let mut other = base.clone();
        other.nodes.rank = 3;
        other.run.out_dir = "/elsewhere".into();
        other.run.devices = vec![2, 3];
        let mut same_count = base.clone();
        same_count.run.devices = vec![0, 1];
        assert_eq!(config_hash(&other), config_hash(&same_count));
        // The device count is checked on its own, with its own message.
        assert_eq!(config_hash(&base), config_hash(&same_count));
        other.schedule.total_kimg += 1.0;
        assert_ne!(config_hash(&other), config_hash(&same_count));
    }

    /// A listener on 127.0.0.1 that reads a request and answers `answer` (None: stays silent
    /// for 3 s), once.
    fn answering(answer: Option<&'static str>) -> String {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            match answer {
                Some(a) => {
                    let _ = stream.write_all(a.as_bytes());
                }
                None => std::thread::sleep(Duration::from_secs(3)),
            }
        });
        address
    }

    #[test]
    fn the_data_server_burn_could_not_reach_is_read_from_its_panic() {
        let cause = r#"LocalServerMissing; burn-collective panicked at burn-collective-0.21.0/src/global/node/ring.rs:159: called `Result::unwrap()` on an `Err` value: JoinError::Panic(Id(12), "Failed to connect to data server at Address { inner: \"ws://127.0.0.1:24310\" }", ...)"#;
        assert_eq!(
            unreachable_data_server(cause).as_deref(),
            Some("127.0.0.1:24310")
        );
        assert_eq!(
            unreachable_data_server(
                "Failed to connect to data server at Address { inner: \"ws://[::1]:7001\" }"
            )
            .as_deref(),
            Some("[::1]:7001")
        );
        assert_eq!(unreachable_data_server("LocalServerMissing"), None);
    }

    #[test]
    fn what_answers_at_the_orchestrator_address_is_told_apart() {
        // What burn-communication's router (axum 0.8) answers a GET of a websocket route
        // without the upgrade headers.
        let axum = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
                    content-length: 43\r\n\r\nConnection header did not include 'upgrade'";
        let stop = AtomicBool::new(false);
        let greet = |address: String, wait_ms: u64| {
            greet_orchestrator(&address, Duration::from_millis(wait_ms), &stop)
        };
        assert_eq!(greet(answering(Some(axum)), 5000), Greeting::Orchestrator);
        assert_eq!(
            greet(
                answering(Some("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")),
                5000
            ),
            Greeting::Stranger("`HTTP/1.1 404 Not Found`".into())
        );
        assert_eq!(
            greet(answering(Some("SSH-2.0-OpenSSH_9.2\r\n")), 5000),
            Greeting::Stranger("`SSH-2.0-OpenSSH_9.2`".into())
        );
        // Closed without a word (a port forwarder whose far end is not up yet) or silent:
        // asked again later, not judged.
        for (answer, wait_ms) in [(Some(""), 5000), (None, 300)] {
            match greet(answering(answer), wait_ms) {
                Greeting::Silent(why) => assert!(why.contains("sent no answer"), "{why}"),
                other => panic!("{answer:?} read as {other:?}"),
            }
        }
        // Ctrl-C ends the wait on a silent listener at once.
        stop.store(true, Ordering::SeqCst);
        let started = Instant::now();
        assert!(matches!(greet(answering(None), 5000), Greeting::Silent(_)));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// `n` ports free now, all different (the OS's picks, held together, then released).
    fn free_ports(n: usize) -> Vec<u16> {
        let held: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap())
            .collect();
        held.iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect()
    }

    /// Node 1 of a ring of three, scripted: it serves `slices` under their transfer ids, takes
    /// the ids `takes` from node 0 (the node before it), then serves `last`, and stops serving
    /// once every one of its slices was taken, as a killed node's listener ends.
    fn scripted_node_1(
        port: u16,
        node_0: String,
        slices: Vec<(u64, Vec<f32>)>,
        takes: Vec<u64>,
        last: Option<(u64, Vec<f32>)>,
    ) -> std::thread::JoinHandle<()> {
        use burn_communication::data_service::{TensorDataServer, TensorDataService};
        use burn_communication::ProtocolServer;
        quiet_websocket_output();
        let cancel = tokio_util::sync::CancellationToken::new();
        let service = Arc::new(TensorDataService::<
            burn::backend::Flex,
            burn_communication::websocket::WebSocket,
        >::new(cancel.clone()));
        let server = burn_communication::websocket::WsServer::new(port)
            .route_tensor_data_service(service.clone());
        let stop = cancel.clone();
        ring_runtime().spawn(async move { server.serve(stop.cancelled_owned()).await });
        while probe(&format!("127.0.0.1:{port}")).is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::spawn(move || {
            ring_runtime().block_on(async move {
                for (id, slice) in slices {
                    let len = slice.len();
                    let data = burn::tensor::TensorData::new(slice, [len]);
                    service.expose_data(data, 1, id.into()).await;
                }
                if !takes.is_empty() {
                    let address = node_0.clone();
                    tokio::task::spawn_blocking(move || {
                        while probe(&address).is_err() {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    })
                    .await
                    .unwrap();
                }
                for id in takes {
                    service
                        .download_tensor(ws(&node_0), id.into())
                        .await
                        .unwrap();
                }
                if let Some((id, slice)) = last {
                    let len = slice.len();
                    let data = burn::tensor::TensorData::new(slice, [len]);
                    service.expose_data(data, 1, id.into()).await;
                }
                while !service.exposed_tensors.lock().await.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                cancel.cancel();
            })
        })
    }

    /// A ring of three on this machine: node 1 scripted, nodes 0 and 2 real. The watch's
    /// timeout is long, so that a node that waited it out shows in the elapsed time.
    fn ring_of_three() -> (Vec<u16>, impl Fn(usize) -> Ring) {
        ring_of(3)
    }

    /// A ring of `n` on this machine (see [`ring_of_three`]).
    fn ring_of(n: usize) -> (Vec<u16>, impl Fn(usize) -> Ring) {
        let ports = free_ports(n);
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let start = {
            let ports = ports.clone();
            move |rank: usize| {
                let watch = Watch {
                    rank,
                    timeout: Duration::from_secs(30),
                    addresses: addresses.clone(),
                    orchestrator: "127.0.0.1:1".into(),
                };
                let stop = Arc::new(AtomicBool::new(false));
                Ring::start(ports[rank], watch, Duration::from_secs(10), &stop).unwrap()
            }
        };
        (ports, start)
    }

    /// Node 1 sends node 2 every slice of an all-reduce and stops before it takes node 0's
    /// last: node 0, which downloads only from node 2, finds it gone at once while node 2 is
    /// still there, and names node 1 alone (waiting out its peer timeout instead, it could find
    /// node 2 gone too by then).
    #[test]
    fn a_node_whose_next_node_stops_before_taking_its_last_slice_names_it_at_once() {
        let (ports, start) = ring_of_three();
        // Three values over three nodes: one-value slices; this op's ids are 0, 1, 3 and 4.
        let zeros = [0, 1, 3, 4].map(|id| (id, vec![0.0])).to_vec();
        let node_1 = scripted_node_1(ports[1], String::new(), zeros, Vec::new(), None);
        let (done, release) = mpsc::channel::<()>();
        let node_2 = std::thread::spawn({
            let ring = start(2);
            move || {
                let summed = ring
                    .sum(vec![1.0; 3], "test sum")
                    .map_err(|e| e.to_string());
                let _ = release.recv();
                summed
            }
        });
        let ring = start(0);
        let started = Instant::now();
        let error = ring.sum(vec![1.0; 3], "test sum").unwrap_err().to_string();
        let elapsed = started.elapsed();
        drop(done);
        node_2.join().unwrap().unwrap();
        node_1.join().unwrap();
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}: {error}");
        assert!(
            error.contains(&format!(
                "test sum: failed (node 1 stopped before it took this node's last slice); lost \
                 node 1 (127.0.0.1:{})",
                ports[1]
            )),
            "{error}"
        );
        assert!(!error.contains("node 2 ("), "{error}");
    }

    /// Node 2 sends node 0 every slice of an all-reduce and then finds node 1 gone (a slice of
    /// the wrong size, then no listener): node 0 finishes the op, and at its next op hears
    /// from node 2 why it stopped, at once, instead of waiting out its peer timeout and
    /// finding both gone.
    #[test]
    fn a_node_that_finished_the_op_hears_at_its_next_why_the_node_before_it_stopped() {
        let (ports, start) = ring_of_three();
        // Its last slice, of the wrong size, only once it took node 0's: then it stops at once.
        let slices = vec![(0, vec![0.0]), (1, vec![0.0]), (3, vec![0.0])];
        let node_0 = format!("127.0.0.1:{}", ports[0]);
        let last = Some((4, vec![0.0, 0.0]));
        let node_1 = scripted_node_1(ports[1], node_0, slices, vec![0, 1, 3, 4], last);
        let node_2 = std::thread::spawn({
            let ring = start(2);
            move || ring.sum(vec![1.0; 3], "test sum").unwrap_err().to_string()
        });
        let ring = start(0);
        ring.sum(vec![1.0; 3], "test sum").unwrap();
        let started = Instant::now();
        let error = ring.sum(vec![1.0; 3], "next sum").unwrap_err().to_string();
        let elapsed = started.elapsed();
        let said_2 = node_2.join().unwrap();
        node_1.join().unwrap();
        let node_1 = format!("node 1 (127.0.0.1:{})", ports[1]);
        assert!(
            said_2.contains("test sum: failed (node 1 sent a slice of another size); lost")
                && said_2.contains(&node_1),
            "{said_2}"
        );
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}: {error}");
        assert!(
            error.contains(&format!(
                "next sum: node 2 stopped because of the loss of {node_1}, and told this node"
            )),
            "{error}"
        );
    }

    /// Every node of a ring of `n`, started together (each waits for the one before it).
    fn whole_ring(n: usize) -> (Vec<u16>, Vec<Ring>) {
        let (ports, start) = ring_of(n);
        let start = Arc::new(start);
        let rings = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|rank| {
                    let start = start.clone();
                    scope.spawn(move || start(rank))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<Ring>>()
        });
        (ports, rings)
    }

    /// Node 1 of three stops on an error of its own between two exchanges: node 2 (after it)
    /// and node 0 (told by node 2) name that error at once, not "lost node 1"; node 1's telling
    /// ends once node 2 took the word.
    #[test]
    fn a_node_that_stops_on_an_error_of_its_own_tells_the_others_why() {
        let (ports, rings) = whole_ring(3);
        let sums = |rings: &[&Ring]| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = rings
                    .iter()
                    .map(|ring| scope.spawn(move || ring.sum(vec![1.0; 3], "test sum")))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().map_err(|e| e.to_string()))
                    .collect::<Vec<_>>()
            })
        };
        for summed in sums(&rings.iter().collect::<Vec<_>>()) {
            assert_eq!(summed.unwrap(), vec![3.0; 3]);
        }
        let started = Instant::now();
        let (errors, told_in) = std::thread::scope(|scope| {
            let teller = scope.spawn(|| {
                rings[1].tell_failure("cannot write log.txt: disk on fire");
                started.elapsed()
            });
            let errors = sums(&[&rings[0], &rings[2]]);
            (errors, teller.join().unwrap())
        });
        assert!(told_in < Duration::from_secs(10), "{told_in:?}");
        for (rank, error) in [0, 2].into_iter().zip(errors) {
            let error = error.unwrap_err();
            assert!(
                error.contains(&format!(
                    "test sum: node 1 (127.0.0.1:{}) stopped on an error of its own: cannot \
                     write log.txt: disk on fire",
                    ports[1]
                )),
                "node {rank}: {error}"
            );
            assert!(!error.contains("lost"), "node {rank}: {error}");
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Both nodes of two stop on the same error at once (every node's copy of one bad input):
    /// each takes the other's word, so neither waits out the peer timeout to tell it.
    #[test]
    fn nodes_that_stop_on_errors_at_once_do_not_wait_for_each_other() {
        let (_, rings) = whole_ring(2);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for ring in &rings {
                scope.spawn(move || ring.tell_failure("the same error"));
            }
        });
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    /// A word round the ring reads back as it was sent; a slice is not a word.
    #[test]
    fn words_read_back_and_slices_are_not_words() {
        let failed = Word::Failed {
            rank: 7,
            message: "ünïcode, and a long line".repeat(300),
        };
        let Some(Word::Failed { rank, message }) = Word::read(&failed.data()) else {
            panic!("not read back");
        };
        assert_eq!(rank, 7);
        // Cut at the limit, on a character boundary.
        assert!(message.len() <= Word::MAX_MESSAGE && message.len() > Word::MAX_MESSAGE - 4);
        assert!(message.starts_with("ünïcode, and a long line"));
        let lost = Word::Lost(vec![0, 2]);
        assert_eq!(Word::read(&lost.data()), Some(lost));
        let slice = burn::tensor::TensorData::new(vec![1.0f32, 2.0], [2]);
        assert_eq!(Word::read(&slice), None);
    }
}
