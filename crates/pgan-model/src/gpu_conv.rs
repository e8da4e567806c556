//! The equalized conv on burn's GPU backends: `pgan-cube`'s implicit-GEMM autodiff op for the
//! concrete cubecl backend types (wgpu and CUDA, with and without burn's fusion), picked by
//! [`crate::flex_conv::conv2d_same`]'s backend dispatch. `PGAN_GPU_CONV=autotune` keeps burn's
//! own `conv2d` instead (see `pgan_cube::choice`).

use core::any::TypeId;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use pgan_cube::{ConvChoice, Gemm};

use crate::flex_conv::cast;

/// Calls `$body!(T)` for each concrete GPU backend type `T` compiled in.
macro_rules! for_each_gpu_backend {
    ($body:ident) => {
        #[cfg(feature = "wgpu")]
        {
            $body!(pgan_cube::WgpuFused);
            $body!(pgan_cube::WgpuPlain);
        }
        #[cfg(feature = "cuda")]
        {
            $body!(pgan_cube::CudaFused);
            $body!(pgan_cube::CudaPlain);
        }
    };
}

/// The implicit GEMM to run on backend `B`: `None` unless `B` is one of the cubecl backends
/// (plain or autodiff) and `PGAN_GPU_CONV` chooses the op (the default; an invalid value, which
/// the trainer reports as an error before it starts, also means the default here).
pub(crate) fn gemm_for<B: Backend>() -> Option<Gemm> {
    let b = TypeId::of::<B>();
    let mut cube = false;
    macro_rules! check {
        ($t:ty) => {
            cube |= b == TypeId::of::<$t>() || b == TypeId::of::<Autodiff<$t>>();
        };
    }
    for_each_gpu_backend!(check);
    if !cube {
        return None;
    }
    match ConvChoice::from_env().unwrap_or_default() {
        ConvChoice::Autotune => None,
        ConvChoice::ImplicitGemm { algorithm, tile } => Some(Gemm { algorithm, tile }),
    }
}

/// `pgan-cube`'s op on `B`, which [`gemm_for`] has confirmed is a cubecl backend.
pub(crate) fn conv2d_same<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    scale: f32,
    bias: Option<Tensor<B, 1>>,
    gemm: Gemm,
) -> Tensor<B, 4> {
    let b = TypeId::of::<B>();
    macro_rules! run {
        ($t:ty) => {
            if b == TypeId::of::<Autodiff<$t>>() {
                return cast(pgan_cube::conv2d_same_tracked::<$t>(
                    cast(x),
                    cast(weight),
                    scale,
                    bias.map(cast),
                    gemm,
                ));
            }
            if b == TypeId::of::<$t>() {
                return cast(pgan_cube::conv2d_same::<$t>(
                    cast(x),
                    cast(weight),
                    scale,
                    bias.map(cast),
                    gemm,
                ));
            }
        };
    }
    for_each_gpu_backend!(run);
    unreachable!("gpu_conv::conv2d_same on a backend gemm_for did not accept")
}
