//! Views of burn-flex tensors as plain `f32` slices, for the kernels.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};

/// The autodiff CPU backend the custom ops are written for.
pub type CpuAutodiff = Autodiff<Flex>;

/// A contiguous `f32` view of a tensor, or a copy when its layout is strided.
pub(crate) fn contiguous(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.clone()
                .into_data()
                .into_vec::<f32>()
                .expect("the CPU kernels work on f32 tensors"),
        ),
    }
}

/// The tensor with its elements in row-major order from the start of its buffer: itself when it
/// already is (no copy), else a contiguous copy.
pub(crate) fn dense(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}
