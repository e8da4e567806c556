//! Helpers for this crate's tests: the CPU backend and network-shaped weights that need no
//! download.

use crate::weights::InceptionWeights;

/// burn's CPU backend, as in the other crates' tests.
pub type TestBackend = burn::backend::Flex;

/// Network-shaped weights (see [`InceptionWeights::synthetic`]).
pub fn synthetic_weights(seed: u64) -> InceptionWeights {
    InceptionWeights::synthetic(seed)
}
