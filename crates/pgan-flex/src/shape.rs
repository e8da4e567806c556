//! The sizes of one stride-1 "same" convolution, shared by the im2col and Winograd kernels, and
//! the per-thread partial sums both weight gradients are reduced with.

use rayon::prelude::*;

/// Sizes of one convolution: input `[n, c_in, h, w]`, kernel `[c_out, c_in, k, k]` with odd `k`,
/// padding `k / 2`, output `[n, c_out, h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Images in the batch.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Height of input and output.
    pub h: usize,
    /// Width of input and output.
    pub w: usize,
    /// Kernel size (odd).
    pub k: usize,
}

impl ConvShape {
    pub(crate) fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Rows of the im2col matrix (the gemm's contraction length).
    pub(crate) fn taps(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Row pitch of the im2col matrix, in floats: `H·W` plus one cache line. gemm reads the
    /// matrix one row after another for a strip of pixels; with a pitch of exactly `H·W` (a
    /// power of two for square power-of-two images) those reads fall in the same few L1 sets
    /// and evict each other.
    pub(crate) fn pitch(&self) -> usize {
        self.hw() + 16
    }

    /// The same sizes for the input gradient: a convolution from `c_out` back to `c_in` channels.
    pub fn transposed(self) -> Self {
        Self {
            c_in: self.c_out,
            c_out: self.c_in,
            ..self
        }
    }

    pub(crate) fn check(&self, x: &[f32], weight: &[f32]) {
        assert!(
            self.k % 2 == 1,
            "conv2d_same needs an odd kernel, got {}",
            self.k
        );
        assert_eq!(x.len(), self.n * self.c_in * self.hw(), "input size");
        assert_eq!(weight.len(), self.c_out * self.taps(), "weight size");
    }
}

/// `accumulate(start, end)` on one contiguous run of `[0, items)` per thread, in parallel, then
/// the element-wise sum of the results (in a fixed order for a given thread count, so runs
/// repeat bit for bit). `items` must be at least 1.
pub(crate) fn sum_over_threads(
    items: usize,
    accumulate: impl Fn(usize, usize) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let parts = rayon::current_num_threads().min(items);
    (0..parts)
        .into_par_iter()
        .map(|p| accumulate(p * items / parts, (p + 1) * items / parts))
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .expect("at least one item")
}
