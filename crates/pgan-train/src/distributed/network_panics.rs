//! burn-collective and burn-communication 0.21 panic where they meet a failed peer or network:
//! `unwrap`s on a closed or refused websocket connection, on a download that returned nothing,
//! on the channel of a local server that stopped. Those panics run on their runtime threads or
//! inside pgan's `catch_unwind`, and every call pgan makes into the two crates is watched (a
//! helper thread with a deadline, or `catch_unwind`): the failure reaches the user as pgan's own
//! error, naming the node. The hook installed here keeps these panics' messages and backtraces
//! off stderr (a node's exit closes its connections, so they came at the end of every
//! successful run too) and remembers the last one for that error; every other panic is printed
//! as before.

use std::sync::{Mutex, Once};

/// The last panic kept quiet: its message and where it happened.
static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Installs the hook (once per process; the hook it replaces prints every other panic).
pub(super) fn quiet() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let Some(location) = info.location().filter(|l| in_network_crates(l.file())) else {
                previous(info);
                return;
            };
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                "panicked at {}:{}: {message}",
                from_the_crate(location.file()),
                location.line()
            ));
        }));
    });
}

/// The last panic kept quiet, if any, taken (for the error that reports its consequence).
pub(super) fn last() -> Option<String> {
    LAST.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Whether a source path is one of burn-collective's or burn-communication's (from the
/// registry, a git checkout or a path dependency).
fn in_network_crates(file: &str) -> bool {
    file.split(['/', '\\'])
        .any(|part| part.starts_with("burn-collective") || part.starts_with("burn-communication"))
}

/// `file` from its crate's folder on (`burn-collective-0.21.0/src/api.rs`).
fn from_the_crate(file: &str) -> &str {
    ["burn-collective", "burn-communication"]
        .iter()
        .filter_map(|name| file.rfind(name))
        .max()
        .map_or(file, |i| &file[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_network_crates_sources_are_recognised() {
        let registry = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        assert!(in_network_crates(&format!(
            "{registry}/burn-communication-0.21.0/src/data_service.rs"
        )));
        assert!(in_network_crates(&format!(
            "{registry}/burn-collective-0.21.0/src/global/node/ring.rs"
        )));
        assert!(in_network_crates(
            "/src/burn/crates/burn-collective/src/api.rs"
        ));
        assert!(!in_network_crates(&format!(
            "{registry}/burn-core-0.21.0/src/module/param.rs"
        )));
        assert!(!in_network_crates(
            "crates/pgan-train/src/distributed/nodes.rs"
        ));
    }
}
