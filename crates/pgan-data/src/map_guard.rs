//! A clear message instead of a silent death when a memory-mapped dataset file shrinks.
//!
//! [`PyramidReader`](crate::PyramidReader) hands out zero-copy slices of a read-only memory map.
//! If another process truncates the file (or rewrites it in place) while it is mapped, the next
//! read of a page past the new end raises SIGBUS, whose default action kills the process with no
//! word of why (during training: at any step, on any sampler thread). Every open reader registers
//! its map here; one process-wide SIGBUS handler looks the faulting address up and, when it lies
//! in a registered map, writes that file's preformatted message to stderr and exits with status 2.
//! A fault anywhere else goes on to the handler that was installed before (Rust's own, which
//! restores the default action), so other crashes stay what they were.
//!
//! Async-signal safety: the handler only loads atomics, calls `write(2)` on a buffer prepared at
//! registration, and `_exit(2)` (which runs no destructors, flushes nothing and takes no lock).
//! Files a process already renamed into place (checkpoints) are untouched; a half-written
//! temporary folder is what a crash leaves anyway, and the next checkpoint prunes it.
//! ARCHITECTURE.md ("Decisions") says why this, and not reads by `pread`.

use std::path::Path;

/// Exit status after a registered map lost its pages (the CLI's status for errors).
pub(crate) const EXIT_CHANGED: i32 = 2;

#[cfg(unix)]
mod imp {
    use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
    use std::sync::Once;

    /// Maps that can be registered at once; more readers than this still work, unguarded.
    const SLOTS: usize = 64;
    /// Longest message kept (a longer path is cut).
    const MESSAGE_MAX: usize = 1024;

    struct Slot {
        /// Held by one registration at a time.
        claimed: AtomicBool,
        /// First byte of the map; 0 while the slot is not published.
        start: AtomicUsize,
        /// One past the last byte.
        end: AtomicUsize,
        len: AtomicUsize,
        /// `AtomicU8` has the layout of `u8`, so the handler can pass the array to `write(2)`.
        message: [AtomicU8; MESSAGE_MAX],
    }

    impl Slot {
        const fn new() -> Self {
            Slot {
                claimed: AtomicBool::new(false),
                start: AtomicUsize::new(0),
                end: AtomicUsize::new(0),
                len: AtomicUsize::new(0),
                message: [const { AtomicU8::new(0) }; MESSAGE_MAX],
            }
        }
    }

    static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
    /// The SIGBUS action before ours: its handler address and flags.
    static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
    static PREVIOUS_FLAGS: AtomicUsize = AtomicUsize::new(0);
    /// Set by the first fault in a registered map (the one that writes the message).
    static REPORTING: AtomicBool = AtomicBool::new(false);
    static INSTALL: Once = Once::new();

    /// Registers `[start, start + len)` with `message`; returns the slot, or None when all
    /// slots are taken.
    pub(super) fn register(start: usize, len: usize, message: &[u8]) -> Option<usize> {
        INSTALL.call_once(install);
        let message = &message[..message.len().min(MESSAGE_MAX)];
        for (i, slot) in REGISTRY.iter().enumerate() {
            if slot
                .claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                for (to, &b) in slot.message.iter().zip(message) {
                    to.store(b, Ordering::Relaxed);
                }
                slot.len.store(message.len(), Ordering::Relaxed);
                slot.end.store(start + len, Ordering::Relaxed);
                // Publishes the fields above to the handler.
                slot.start.store(start, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    pub(super) fn unregister(index: usize) {
        let slot = &REGISTRY[index];
        slot.start.store(0, Ordering::Release);
        slot.claimed.store(false, Ordering::Release);
    }

    /// The registered message for a faulting address, as (pointer, length).
    pub(super) fn lookup(addr: usize) -> Option<(*const u8, usize)> {
        REGISTRY.iter().find_map(|slot| {
            let start = slot.start.load(Ordering::Acquire);
            (start != 0 && addr >= start && addr < slot.end.load(Ordering::Relaxed)).then(|| {
                (
                    slot.message.as_ptr().cast::<u8>(),
                    slot.len.load(Ordering::Relaxed),
                )
            })
        })
    }

    fn install() {
        // SAFETY: sigaction with a zeroed struct plus handler, mask and flags is the documented
        // way to install a handler; the old action is read back into `old`.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut old) == 0 {
                PREVIOUS_HANDLER.store(old.sa_sigaction, Ordering::SeqCst);
                PREVIOUS_FLAGS.store(old.sa_flags as usize, Ordering::SeqCst);
            }
        }
    }

    extern "C" fn on_sigbus(
        signal: libc::c_int,
        info: *mut libc::siginfo_t,
        ctx: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let addr = unsafe { (*info).si_addr() } as usize;
        if let Some((message, len)) = lookup(addr) {
            // Several threads (the sampler's) can fault at once: the first one says why and
            // ends the process; the others wait for that end, so the message is written once.
            if REPORTING.swap(true, Ordering::SeqCst) {
                loop {
                    // SAFETY: pause(2) is async-signal-safe.
                    unsafe { libc::pause() };
                }
            }
            // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer lives in a static.
            unsafe {
                libc::write(2, message.cast(), len);
                libc::_exit(super::EXIT_CHANGED);
            }
        }
        let previous = PREVIOUS_HANDLER.load(Ordering::SeqCst);
        if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
            // Restore the default and return: the access faults again and the default action
            // ends the process, exactly as without this handler.
            // SAFETY: sigaction is async-signal-safe.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
            }
        } else if PREVIOUS_FLAGS.load(Ordering::SeqCst) & libc::SA_SIGINFO as usize != 0 {
            // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(previous) };
            handler(signal, info, ctx);
        } else {
            // SAFETY: without SA_SIGINFO the previous handler takes the signal number only.
            let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(previous) };
            handler(signal);
        }
    }
}

/// While alive, a SIGBUS in the registered map ends the process with `message` and status
/// [`EXIT_CHANGED`] instead of the silent default.
#[derive(Debug)]
pub(crate) struct MapGuard {
    #[cfg(unix)]
    slot: Option<usize>,
}

impl MapGuard {
    /// Guards `map` (the bytes of `path`'s memory map).
    pub(crate) fn new(map: &[u8], path: &Path) -> MapGuard {
        let message = changed_message(path);
        #[cfg(unix)]
        {
            MapGuard {
                slot: imp::register(map.as_ptr() as usize, map.len(), message.as_bytes()),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (map, message);
            MapGuard {}
        }
    }
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(slot) = self.slot {
            imp::unregister(slot);
        }
    }
}

/// What a user reads when `path` lost pages under its map.
fn changed_message(path: &Path) -> String {
    format!(
        "error: dataset file {} changed while in use: it was truncated or rewritten in place \
         while pgan was reading it (training, eval or verify), so its data is gone; stopped. \
         Files already written, such as checkpoints, are intact: restore or prepare the dataset \
         again, then resume.\n",
        path.display()
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_registered_range_finds_its_message_until_dropped() {
        let map = vec![0u8; 100];
        let guard = MapGuard::new(&map, Path::new("/d/x.pgan"));
        let start = map.as_ptr() as usize;
        let (ptr, len) = imp::lookup(start + 99).expect("inside the map");
        // SAFETY: the registry's buffer holds `len` initialised bytes.
        let text = std::str::from_utf8(unsafe { std::slice::from_raw_parts(ptr, len) }).unwrap();
        assert!(
            text.starts_with("error: dataset file /d/x.pgan changed while in use"),
            "{text}"
        );
        assert!(imp::lookup(start + 100).is_none() && imp::lookup(start - 1).is_none());
        drop(guard);
        assert!(imp::lookup(start).is_none());
    }

    /// Environment variable that turns [`truncated_while_mapped_child`] on (in a child process).
    const CHILD: &str = "PGAN_DATA_SIGBUS_CHILD";

    /// Runs only in the child started below: opens a dataset, truncates it, reads a level.
    #[test]
    fn truncated_while_mapped_child() {
        let Some(path) = std::env::var_os(CHILD) else {
            return;
        };
        let reader = crate::PyramidReader::open(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let level = reader.level(reader.resolution()).unwrap();
        // The pages are gone: this read raises SIGBUS.
        let sum: u64 = level.iter().map(|&b| b as u64).sum();
        panic!("read {sum} from a truncated map without a fault");
    }

    #[test]
    fn a_dataset_truncated_under_a_reader_ends_the_process_with_a_message() {
        let (_dir, path) = crate::reader::tests::sample_file();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "map_guard::tests::truncated_while_mapped_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CHANGED), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "error: dataset file {} changed while in use",
                path.display()
            )),
            "{stderr}"
        );
    }
}
