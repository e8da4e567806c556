//! The signals that stop a command (Ctrl-C's SIGINT, SIGTERM, a closed terminal's SIGHUP): the
//! one place that installs what a command does on them, and the exit code a stopped command
//! ends with, 128 + the signal's number as shells report it (130, 143, 129).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use anyhow::{Context, Result};

/// The exit code of the first stopping signal this process received (0: none yet).
static RECEIVED: AtomicU8 = AtomicU8::new(0);

/// Whether a stopping signal arrived (set in the signal handler), and whether the first one's
/// handler ([`on_stop_signal`]) has returned: a command that ends meanwhile waits for it
/// ([`wait_for_the_first_handler`]), so that what the handler says is said.
static ARRIVED: AtomicBool = AtomicBool::new(false);
static FIRST_HANDLED: AtomicBool = AtomicBool::new(false);

/// Waits (at most two seconds) until the handler of a stopping signal that arrived has returned;
/// at once when none arrived. A handler that ends the process ends this wait with it.
pub fn wait_for_the_first_handler() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while ARRIVED.load(Ordering::SeqCst)
        && !FIRST_HANDLED.load(Ordering::SeqCst)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Exit code for a command stopped by Ctrl-C (128 + SIGINT).
const EXIT_SIGINT: u8 = 130;

/// The exit code a command stopped by a signal ends with: that of the first one received (a
/// second one only hastens the stop).
pub fn exit_code() -> u8 {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => EXIT_SIGINT,
        code => code,
    }
}

/// Runs `handler` on a thread of its own at every stopping signal ([`exit_code`] already
/// says the first one's code). Until a command installs one, a signal ends the process at
/// once (the default action). A SIGHUP the process was started ignoring (`nohup`) stays
/// ignored: the run goes on when its terminal closes, as `nohup` promises.
pub fn on_stop_signal(mut handler: impl FnMut() + Send + 'static) -> Result<()> {
    let mut received = listen().context("cannot install the handler of Ctrl-C and SIGTERM")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Some(code) = received() {
                let _ = RECEIVED.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
                handler();
                FIRST_HANDLED.store(true, Ordering::SeqCst);
            }
        })
        .context("cannot start the signal handler's thread")?;
    Ok(())
}

/// Starts listening, and returns what waits for the next signal (its exit code; `None` once
/// no more can come).
#[cfg(unix)]
fn listen() -> std::io::Result<impl FnMut() -> Option<u8>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let wanted = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|&signal| signal != SIGHUP || !ignored(signal));
    let mut signals = signal_hook::iterator::Signals::new(wanted.clone())?;
    for signal in wanted {
        // SAFETY: the action only stores an atomic (async-signal-safe).
        unsafe {
            signal_hook::low_level::register(signal, || ARRIVED.store(true, Ordering::SeqCst))?;
        }
    }
    Ok(move || {
        let signal = signals.forever().next()?;
        Some(128 + u8::try_from(signal).unwrap_or(2))
    })
}

/// Whether `signal` is ignored in this process (as `nohup` starts it with SIGHUP).
#[cfg(unix)]
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: with no new action, sigaction only writes the current one into `current`, a
    // plain C struct for which all zeros is a valid value.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}

/// Starts listening (Ctrl-C only, through the `ctrlc` crate: Unix's signals do not exist
/// here), and returns what waits for the next one.
#[cfg(not(unix))]
fn listen() -> std::io::Result<impl FnMut() -> Option<u8>> {
    let (send, receive) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        ARRIVED.store(true, Ordering::SeqCst);
        let _ = send.send(EXIT_SIGINT);
    })
    .map_err(std::io::Error::other)?;
    Ok(move || receive.recv().ok())
}
