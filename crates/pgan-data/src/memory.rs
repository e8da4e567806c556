//! How much memory the image decoders of one process hold at once. Each decoding thread can
//! hold an image at the pixel limit (under 1 GB at the default), so without a bound a machine
//! with many cores and a folder of large photos would need a gigabyte per core. Decoders take a
//! [`DecodePermit`] for the bytes an image needs (read from its header, before any pixel is
//! allocated) from one [`DecodeBudget`] per process, and hold it until the image is dropped;
//! a thread whose image does not fit waits for others to finish theirs.

use std::sync::{Condvar, Mutex, OnceLock};

/// Memory available to new allocations without swapping, in bytes (Linux's
/// `/proc/meminfo` MemAvailable; `None` where it cannot be read).
pub fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A bound on the bytes that permits hold at once.
#[derive(Debug)]
pub struct DecodeBudget {
    limit: u64,
    in_use: Mutex<u64>,
    freed: Condvar,
}

impl DecodeBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        DecodeBudget {
            limit: limit.max(1),
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The process's budget: half the memory available when it is first asked for, and never
    /// less than `floor` (an image at the pixel limit must be decodable) unless the machine has
    /// less; 8 GiB where the available memory cannot be read.
    pub fn global(floor: u64) -> &'static DecodeBudget {
        static BUDGET: OnceLock<DecodeBudget> = OnceLock::new();
        BUDGET.get_or_init(|| DecodeBudget::new(budget_limit(available_memory_bytes(), floor)))
    }

    /// The most bytes held at once.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        *self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `bytes` fit beside what others hold, and holds them. A request above the
    /// limit waits until nothing else is held, then takes the whole budget.
    pub fn acquire(&self, bytes: u64) -> DecodePermit<'_> {
        let bytes = bytes.min(self.limit);
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        while *in_use + bytes > self.limit {
            in_use = self.freed.wait(in_use).unwrap_or_else(|p| p.into_inner());
        }
        *in_use += bytes;
        DecodePermit {
            budget: self,
            bytes,
        }
    }
}

/// Half of `available` (8 GiB where unknown), and never below `floor` unless that is more than
/// is available.
fn budget_limit(available: Option<u64>, floor: u64) -> u64 {
    let half = available.map_or(8 << 30, |bytes| bytes / 2);
    half.max(available.map_or(floor, |bytes| floor.min(bytes)))
}

/// Bytes held from a [`DecodeBudget`], given back when dropped.
#[derive(Debug)]
pub struct DecodePermit<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

impl DecodePermit<'_> {
    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for DecodePermit<'_> {
    fn drop(&mut self) {
        let mut in_use = self.budget.in_use.lock().unwrap_or_else(|p| p.into_inner());
        *in_use -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn permits_wait_for_room_and_an_oversized_one_waits_for_an_empty_budget() {
        let budget: &'static DecodeBudget = Box::leak(Box::new(DecodeBudget::new(100)));
        let a = budget.acquire(60);
        let b = budget.acquire(40);
        assert_eq!(budget.in_use(), 100);
        // A third waits until one is given back, a fourth (above the limit) until all are.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let permit = budget.acquire(30);
            tx.send("third").unwrap();
            drop(permit);
            let whole = budget.acquire(1_000);
            tx.send("oversized").unwrap();
            assert_eq!(whole.bytes(), 100);
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(a);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "third");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(b);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            "oversized"
        );
        waiter.join().unwrap();
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn the_budget_is_half_the_available_memory_and_never_below_one_image_at_the_limit() {
        assert_eq!(budget_limit(Some(64 << 30), 1 << 30), 32 << 30);
        assert_eq!(budget_limit(Some(2 << 30), 1400 << 20), 1400 << 20);
        assert_eq!(budget_limit(None, 1 << 30), 8 << 30);
        // A floor past the machine (a huge --max-pixels) is held to what is available.
        assert_eq!(budget_limit(Some(4 << 30), 100 << 30), 4 << 30);
    }
}
