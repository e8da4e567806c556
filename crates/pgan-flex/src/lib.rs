//! The fast paths of burn's CPU backend (`Flex`, and `Autodiff<Flex>` with their own backward
//! passes) for the ops a ProGAN step spends its time in, each a function on concrete flex
//! types:
//!
//! - [`conv`]: the equalized layers' stride-1 "same" convolution, forward and backward, with
//!   the weight scale applied inside the products; 3x3 kernels on even-sized images as
//!   Winograd F(2x2, 3x3) (`winograd.rs`, filters cached per weight tensor), the rest as
//!   per-image im2col + gemm ([`cpu_conv`]);
//! - [`forward_conv`]: a forward-only convolution of any kernel, stride and padding, with its
//!   bias and ReLU applied in place (Inception-v3's layers, for FID);
//! - [`pool`]: max and average pooling of any window, stride and padding, and the channel
//!   concatenation, forward only (Inception-v3's again);
//! - [`pointwise`]: leaky ReLU (and its JVP's gate) and pixel norm, one parallel pass each way;
//! - [`resample`]: nearest 2x upsampling and 2x2 average pooling, one parallel pass each way;
//! - [`adam`]: Adam's update of one parameter in one pass, bit for bit burn's.
//!
//! Nothing here decides which backend runs: `pgan-model`'s `kernels` module is the one place
//! that asks "is this `Flex`?" and routes here or to burn's generic ops.
#![warn(missing_docs)]

pub mod adam;
pub mod conv;
pub mod cpu_conv;
mod filter_cache;
pub mod forward_conv;
pub mod pointwise;
pub mod pool;
pub mod resample;
mod shape;
mod tensors;
mod winograd;

/// A deterministic pseudo-random fill in [-1, 1), for the kernels' tests.
#[cfg(test)]
pub(crate) fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Tests that run backward passes take turns: burn's autodiff cleanup after a backward pass also
/// frees graphs other threads are building (pgan-train's `training_loop/step/turn.rs`).
#[cfg(test)]
pub(crate) fn graph_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub use tensors::CpuAutodiff;
