//! The one door for device→host reads in pgan-train, and their count.
//!
//! A read waits for the device's queue to drain: on a GPU, one inside a training step stalls
//! the pipeline every step. The step therefore keeps everything it measures on the device
//! (`training_loop/step.rs`) and the tick end reads it all at once. Every read of the trainer
//! (statistics, weight checks, samples, evaluation images, checkpoint records) goes through this
//! module, which counts them, so a test can prove that a step makes none
//! (`training_loop`'s `a_training_step_reads_nothing_back_from_the_device`), and
//! `every_read_in_the_crate_goes_through_this_module` below keeps it the only door.
//!
//! The count is per thread: a training runs on one thread from start to end (one training per
//! process at a time), while tests of other things run beside it on other threads.

use std::cell::Cell;

use burn::record::{FullPrecisionSettings, Record};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

thread_local! {
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// A tensor's values, on the host, as it holds them (waits for the device).
pub fn read_data<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> TensorData {
    count_read();
    tensor.into_data()
}

/// A tensor's values on the host as f32, in row-major order.
pub fn read_f32s<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    read_data(tensor)
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 values after conversion")
}

/// A one-element tensor's value on the host.
pub fn read_scalar<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> f32 {
    let values = read_f32s(tensor);
    debug_assert_eq!(values.len(), 1, "a scalar read of a tensor of many values");
    values[0]
}

/// A record (a module's weights or an optimizer's state) as plain values on the host, for a
/// checkpoint: burn reads every tensor of it here. Counted as one read.
pub fn record_item<B: Backend, R: Record<B>>(record: R) -> R::Item<FullPrecisionSettings> {
    count_read();
    record.into_item::<FullPrecisionSettings>()
}

/// Counts a read that burn makes on pgan's behalf where no function here can make it (a
/// module serialised by burn-store for an export); once per module.
pub fn count_read() {
    READS.with(|r| r.set(r.get() + 1));
}

/// Device→host reads made on this thread so far.
pub fn reads_on_this_thread() -> u64 {
    READS.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn each_read_is_counted_once() {
        let device = Default::default();
        let before = reads_on_this_thread();
        let t = Tensor::<Flex, 2>::ones([2, 3], &device);
        assert_eq!(read_f32s(t.clone()), vec![1.0; 6]);
        assert_eq!(read_scalar(t.sum()), 6.0);
        count_read();
        assert_eq!(reads_on_this_thread() - before, 3);
    }

    /// The count means something only if nothing reads around it: outside this file and the
    /// test modules, no source file of the crate calls burn's reads itself.
    #[test]
    fn every_read_in_the_crate_goes_through_this_module() {
        let src = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("src");
        let mut files = vec![src];
        let mut offenders = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("host_read.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Test modules come last in every file; their reads are the tests' own.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (i, line) in code.lines().enumerate() {
                let reads = [
                    ".into_data()",
                    ".into_scalar()",
                    ".to_data()",
                    ".into_item::<",
                ]
                .iter()
                .any(|r| line.contains(r));
                if reads && !line.trim_start().starts_with("//") {
                    offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "device reads outside host_read.rs:\n{}",
            offenders.join("\n")
        );
    }
}
