//! The dispatch point between the model and the backends' own kernels.

use core::any::TypeId;

use burn::backend::Flex;
use burn::tensor::backend::Backend;

/// Whether `B` is burn's CPU backend, `Flex` (not the autodiff wrapper around it).
pub fn is_cpu<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}
