//! The equalized-lr convolution on burn's GPU backends (cubecl: wgpu and CUDA), as a custom
//! autodiff op whose three passes run cubek's implicit-GEMM (tensor-core) kernels chosen
//! explicitly, never burn's direct convolution or its weight-gradient fallback kernel.
//!
//! burn 0.21's `conv2d` on a cubecl backend runs every pass through its autotuner (or, with
//! autotune off, through `ConvStrategy::Direct`, an untiled kernel without tensor cores, and
//! `conv_weight_backward_fallback` for the weight gradient). This crate does what `pgan-flex`'s
//! conv op does for the CPU: one op, forward, input gradient and weight gradient, with the
//! equalized learning rate's scale folded into the kernels' operand copies ([`kernels`]).
//!
//! Backends. [`GemmConvBackend`] is implemented for `CubeBackend<R, ..>` (any cubecl runtime)
//! and for `Fusion<CubeBackend<R, ..>>`, burn's default GPU backends (`burn::backend::Wgpu`,
//! `burn::backend::Cuda`): there each pass is registered as a custom operation in the fusion
//! stream, which runs it on the `CubeBackend` handles when the stream is flushed (a fusion
//! barrier, as burn's own `conv2d` is). [`conv2d_same`] and [`conv2d_same_tracked`] are the entry
//! points; `pgan-model`'s backend dispatch picks them for the concrete types below.
//!
//! Without the `wgpu` or `cuda` feature the crate holds only [`choice`]: the run-time choices of
//! kernel ([`ConvChoice`]) and operand precision ([`ConvPrecision`]).

#![warn(missing_docs)]

pub mod choice;
pub use choice::{
    conv_precision, set_conv_precision, ConvChoice, ConvChoiceError, ConvPrecision, GemmAlgorithm,
    TileKind, CONV_ENV,
};

#[cfg(feature = "gpu")]
mod autodiff;
#[cfg(feature = "gpu")]
mod fusion;
#[cfg(feature = "gpu")]
pub mod kernels;
#[cfg(feature = "gpu")]
pub mod parity;

#[cfg(feature = "gpu")]
pub use autodiff::{conv2d_same, conv2d_same_tracked, GemmConvBackend};
#[cfg(feature = "gpu")]
pub use kernels::{fallback_reasons, launch_counts, Gemm, LaunchCounts};

/// burn's wgpu backend with operation fusion (`burn::backend::Wgpu`).
#[cfg(feature = "wgpu")]
pub type WgpuFused = burn::backend::Wgpu;
/// burn's wgpu backend without operation fusion.
#[cfg(feature = "wgpu")]
pub type WgpuPlain = burn_cubecl::CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u32>;
/// burn's CUDA backend with operation fusion (`burn::backend::Cuda`).
#[cfg(feature = "cuda")]
pub type CudaFused = burn::backend::Cuda;
/// burn's CUDA backend without operation fusion.
#[cfg(feature = "cuda")]
pub type CudaPlain = burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

#[cfg(all(test, feature = "wgpu"))]
mod tests;

/// Test support shared with the crates above (pgan-model's wgpu parity test).
#[cfg(feature = "wgpu")]
#[doc(hidden)]
pub mod testing {
    use burn::backend::wgpu::WgpuDevice;
    use burn::tensor::Tensor;

    /// The default wgpu device after one op on it computed 1 + 2 = 3; `None` (with a note) when
    /// no adapter exists, unless `PGAN_REQUIRE_WGPU` is set, which makes that a panic: CI sets
    /// it so that the wgpu tests cannot pass having tested nothing.
    pub fn wgpu_device() -> Option<WgpuDevice> {
        // cubecl reads its global config (autotune level included) once, at the first runtime
        // use: keep autotuning short on a software rasteriser.
        std::env::set_var("CUBECL_AUTOTUNE_LEVEL", "minimal");
        let probe = std::panic::catch_unwind(|| {
            let device = WgpuDevice::default();
            let sum: f32 = Tensor::<crate::WgpuFused, 1>::from_floats([1.0, 2.0], &device)
                .sum()
                .into_scalar();
            (device, sum)
        });
        match probe {
            Ok((device, 3.0)) => Some(device),
            Ok((_, sum)) => panic!("wgpu device computes 1 + 2 = {sum}"),
            Err(_) if std::env::var_os("PGAN_REQUIRE_WGPU").is_some() => {
                panic!("PGAN_REQUIRE_WGPU is set but no wgpu adapter could be created")
            }
            Err(_) => {
                eprintln!(
                    "note: no wgpu adapter, skipping (set PGAN_REQUIRE_WGPU to fail instead)"
                );
                None
            }
        }
    }
}
