//! The node's data port during the join: pgan listens on it and relays every connection to
//! burn-collective's data server, which listens on a private port.
//!
//! Why: burn-collective spawns a node's data server on its runtime when the node's first peer
//! registers, and the other nodes connect to it as soon as the orchestrator has answered every
//! node's registration, once, without a retry (burn-communication 0.21,
//! `TensorDataService::get_data_stream` panics "Failed to connect to data server"). On a busy
//! machine that server may not listen yet, and the join check fails on a node that was only
//! late by milliseconds. pgan's listener is bound before this node registers, so a connection
//! from another node is always taken; the relay then connects to burn's server, trying again
//! until it listens or `patience` runs out (then the connection closes, and the other node's
//! join check fails as it would have).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Result, TrainError};

/// A running relay; it stops taking connections when dropped. The ones it took run on until
/// both ends have closed them (burn's server closes its ends when the node leaves the
/// orchestrator; the other nodes close their websockets through them as they leave).
pub(super) struct JoinRelay {
    private_port: u16,
    stop: CancellationToken,
}

impl JoinRelay {
    /// Relays connections to `listener` (the node's data port, already bound) to a private
    /// port on this machine, for burn-collective's data server to listen on.
    pub fn start(listener: TcpListener, patience: Duration) -> std::io::Result<Self> {
        let private_port = free_port()?;
        listener.set_nonblocking(true)?;
        let stop = CancellationToken::new();
        let runtime = super::nodes::ring_runtime();
        let listener = {
            let _inside = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let stopped = stop.clone();
        runtime.spawn(async move {
            loop {
                let inbound = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                match inbound {
                    Ok((inbound, _)) => {
                        tokio::spawn(relay(inbound, private_port, patience));
                    }
                    // A connection reset before it was taken, or no file descriptor left: that
                    // connection is lost, not the relay, and a failure that repeats at once
                    // must not spin the runtime the gradient ring shares.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Ok(Self { private_port, stop })
    }

    /// The port burn-collective's data server should listen on.
    pub fn private_port(&self) -> u16 {
        self.private_port
    }

    /// Whether something listens on the private port before burn-collective's data server was
    /// started: another program took it since it was picked, and burn's server could not bind
    /// it (burn-collective drops the failed bind unreported) while the relay would hand the
    /// other nodes to that program.
    pub fn private_port_taken(&self) -> bool {
        std::net::TcpStream::connect_timeout(
            &private_address(self.private_port),
            Duration::from_millis(200),
        )
        .is_ok()
    }

    /// Waits until burn-collective's data server listens on the private port (it is spawned
    /// when this node's first peer registers): `Err` with why, after `patience` or when
    /// `stop` is set.
    pub fn wait_for_data_server(
        &self,
        patience: Duration,
        stop: &AtomicBool,
    ) -> std::result::Result<(), String> {
        let deadline = Instant::now() + patience;
        let at = private_address(self.private_port);
        loop {
            match std::net::TcpStream::connect_timeout(&at, Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(_) if stop.load(Ordering::SeqCst) => return Err("stopped".into()),
                Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for JoinRelay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds `0.0.0.0:port` for the other nodes, with an error that says what to do.
pub(super) fn listen_for_nodes(rank: usize, port: u16) -> Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| TrainError::Peer {
        peer: format!("node {rank}"),
        message: format!(
            "cannot listen on port {port} for the other nodes ({e}): a node uses the port of \
             --node-address HOST:PORT and the one after it; choose free ones"
        ),
    })
}

/// A port free now (burn-collective binds `0.0.0.0:port`, so it is looked for there).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?
        .local_addr()?
        .port())
}

fn private_address(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// One connection: connects to the private port (again every 10 ms until `patience` is
/// spent), then copies both ways until either end closes.
async fn relay(mut inbound: tokio::net::TcpStream, private_port: u16, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    let mut outbound = loop {
        match tokio::net::TcpStream::connect(private_address(private_port)).await {
            Ok(stream) => break stream,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(_) => return,
        }
    };
    // Websocket frames are small and answered one by one: no Nagle delay on either leg.
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn relay_on_a_free_port(patience: Duration) -> (JoinRelay, u16) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        (JoinRelay::start(listener, patience).unwrap(), port)
    }

    /// An echo server on `port` (every connection; `wait_for_data_server` makes one too).
    fn echo_on(port: u16) {
        let server = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        std::thread::spawn(move || {
            for s in server.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        s.write_all(&buf[..n]).unwrap();
                    }
                });
            }
        });
    }

    #[test]
    fn a_connection_made_before_the_data_server_listens_reaches_it_once_it_does() {
        let (relay, port) = relay_on_a_free_port(Duration::from_secs(10));
        // The other node connects and sends before burn's server has bound its port.
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let go_on = AtomicBool::new(false);
        assert!(relay.wait_for_data_server(Duration::ZERO, &go_on).is_err());
        assert!(!relay.private_port_taken());
        echo_on(relay.private_port());
        relay
            .wait_for_data_server(Duration::from_secs(5), &go_on)
            .expect("the server listens");
        assert!(relay.private_port_taken());
        let mut back = [0u8; 5];
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        client.write_all(b"again").unwrap();
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"again");
    }

    #[test]
    fn a_relay_whose_data_server_never_listens_closes_the_connection_after_its_patience() {
        let (relay, port) = relay_on_a_free_port(Duration::from_millis(200));
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1];
        let start = Instant::now();
        // Closed (0 bytes, or a reset), not left hanging.
        match client.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the connection is still open: {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        let waited = relay.wait_for_data_server(Duration::from_secs(60), &AtomicBool::new(true));
        assert_eq!(waited, Err("stopped".to_string()), "a stop ends the wait");
    }

    #[test]
    fn a_dropped_relay_takes_no_more_connections() {
        let (relay, port) = relay_on_a_free_port(Duration::from_secs(1));
        drop(relay);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "still listening on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
