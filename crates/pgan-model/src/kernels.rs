//! The dispatch point between the networks and the backends' own kernels: the one place in pgan
//! that asks which backend a tensor lives on.
//!
//! Each function here is one op the layers need. On burn's CPU backend (`Flex`, and
//! `Autodiff<Flex>` for training) it runs `pgan-flex`'s fused kernel and returns `Ok`; on every
//! other backend it returns the inputs as `Err`, untouched, and the caller runs burn's generic
//! tensor ops (written beside the layer: `equalized.rs`, `functional.rs`, `pixel_norm.rs`, and
//! burn's `Adam` in `pgan-train`). The forward-only ops of Inception-v3 ([`conv2d_forward`],
//! [`pool2d`], [`concat_channels`]) serve `Flex` alone: on `Autodiff<Flex>` they would need a
//! backward pass, and their inputs come back. A backend's kernel for one of these ops gets its
//! branch here, not in model code.
//!
//! The check is a `TypeId` comparison of the backend type, resolved per monomorphised function,
//! followed by a move of the value between the two spellings of the same type ([`cast`]).
//!
//! On burn's cubecl GPU backends (wgpu and CUDA, with or without burn's fusion; built with the
//! `wgpu`/`cuda` features) the convolution takes `pgan-cube`'s implicit-GEMM autodiff op, unless
//! `PGAN_GPU_CONV=autotune` asks for burn's own `conv2d`; their other ops are burn's generic ones.
//!
//! Set `PGAN_GENERIC_KERNELS=1` to send every op to the generic path on the CPU too: that is
//! the path the GPU backends run for everything but the convolution, and `scripts/test.sh` runs
//! pgan-model's tests once that way.

use core::any::{Any, TypeId};
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::optim::{AdamState, AdaptiveMomentumState};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use pgan_flex::{adam, conv, forward_conv, pointwise, pool, resample, CpuAutodiff};

pub use pgan_flex::adam::AdamParams;
pub use pgan_flex::pool::Reduce as PoolReduce;

/// The environment variable that turns the CPU kernels off (any value but `0`).
pub const GENERIC_KERNELS_ENV: &str = "PGAN_GENERIC_KERNELS";

/// The inputs of [`conv2d_same`], handed back when the backend has no kernel of its own.
pub type ConvInputs<B> = (Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>);
/// The inputs of [`adam_step`], handed back when the backend has no kernel of its own.
pub type AdamInputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Option<AdamState<B, D>>);

/// Which of pgan-flex's variants serves backend `B`, if any.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    /// `Flex`: forward only.
    Flex,
    /// `Autodiff<Flex>`: with pgan-flex's backward passes.
    FlexAutodiff,
    /// Any other backend, or the CPU with [`GENERIC_KERNELS_ENV`] set: burn's generic ops.
    Generic,
}

fn route<B: Backend>() -> Route {
    if generic_only() {
        Route::Generic
    } else if TypeId::of::<B>() == TypeId::of::<CpuAutodiff>() {
        Route::FlexAutodiff
    } else if TypeId::of::<B>() == TypeId::of::<Flex>() {
        Route::Flex
    } else {
        Route::Generic
    }
}

/// Whether [`GENERIC_KERNELS_ENV`] is set (read once per process).
pub fn generic_only() -> bool {
    static GENERIC: OnceLock<bool> = OnceLock::new();
    *GENERIC.get_or_init(|| std::env::var_os(GENERIC_KERNELS_ENV).is_some_and(|v| v != "0"))
}

/// Whether `B`'s convolution is pgan-flex's CPU op (`Flex`, `Autodiff<Flex>`, unless
/// [`GENERIC_KERNELS_ENV`] is set): the layers shape their calls for it where that helps (one
/// call per operand rather than one batched call).
pub fn has_own_conv<B: Backend>() -> bool {
    route::<B>() != Route::Generic
}

/// Whether `B` is burn's CPU backend, `Flex` (the trainer runs its loop on a rayon thread then,
/// whichever kernels the ops use).
pub fn is_cpu<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// Moves a value between two spellings of the same type, e.g. `Tensor<B, D>` and
/// `Tensor<Flex, D>` once [`route`] has shown `B` is `Flex`. A box of the value moves, not its
/// data.
fn cast<T: 'static, U: 'static>(value: T) -> U {
    *(Box::new(value) as Box<dyn Any>)
        .downcast::<U>()
        .unwrap_or_else(|_| unreachable!("cast: types checked by TypeId"))
}

/// Convolution of `x` with `weight · scale`, stride 1, padding `padding` on each side, where the
/// kernel is square with side `2 · padding + 1` (the output keeps the input's size).
///
/// # Shapes
/// - x: `[N, C_in, H, W]`, weight: `[C_out, C_in, k, k]`, bias: `[C_out]`
/// - output: `[N, C_out, H, W]`
pub fn conv2d_same<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    scale: f32,
    bias: Option<Tensor<B, 1>>,
    padding: usize,
) -> Result<Tensor<B, 4>, ConvInputs<B>> {
    let [_, _, kh, kw] = weight.dims();
    let same = kh == kw && kh == 2 * padding + 1;
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if same {
        if let Some(gemm) = gpu::conv_gemm::<B>() {
            return Ok(gpu::conv2d_same(x, weight, scale, bias, gemm));
        }
    }
    match route::<B>() {
        Route::FlexAutodiff if same => Ok(cast(conv::conv2d_same_autodiff(
            cast(x),
            cast(weight),
            scale,
            bias.map(cast),
        ))),
        Route::Flex if same => Ok(cast(conv::conv2d_same_flex(
            cast(x),
            cast(weight),
            scale,
            bias.map(cast),
        ))),
        _ => Err((x, weight, bias)),
    }
}

/// `conv(x, weight) + bias` with the given stride and zero padding on each side, then
/// `max(·, 0)` when `relu`: a forward-only convolution of any kernel shape (Inception-v3's
/// layers). On `Flex`, pgan-flex's per-image im2col + gemm with the bias and ReLU applied in
/// place; elsewhere (including `Autodiff<Flex>`, which would need a backward pass) the inputs
/// come back for burn's `conv2d`.
///
/// # Shapes
/// - x: `[N, C_in, H, W]`, weight: `[C_out, C_in, kh, kw]`, bias: `[C_out]`
/// - output: `[N, C_out, (H + 2·padding[0] − kh) / stride + 1, (W + 2·padding[1] − kw) / stride + 1]`
pub fn conv2d_forward<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: usize,
    padding: [usize; 2],
    relu: bool,
) -> Result<Tensor<B, 4>, ConvInputs<B>> {
    match route::<B>() {
        Route::Flex => Ok(cast(forward_conv::conv2d_flex(
            cast(x),
            cast(weight),
            bias.map(cast),
            stride,
            padding,
            relu,
        ))),
        _ => Err((x, weight, bias)),
    }
}

/// `kernel × kernel` pooling with the given stride and padding on every side, forward only
/// (Inception-v3's pools). On `Flex`, pgan-flex's separable kernel; elsewhere the input comes
/// back for burn's `max_pool2d` / `avg_pool2d`.
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, (H + 2·padding − kernel) / stride + 1, (W + 2·padding − kernel) / stride + 1]`
pub fn pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: usize,
    stride: usize,
    padding: usize,
    reduce: PoolReduce,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    match route::<B>() {
        Route::Flex => Ok(cast(pool::pool2d_flex(
            cast(x),
            kernel,
            stride,
            padding,
            reduce,
        ))),
        _ => Err(x),
    }
}

/// Feature maps of one batch and size side by side along channels, in order, forward only. On
/// `Flex`, one copy per image in parallel; elsewhere the parts come back for `Tensor::cat`.
///
/// # Shapes
/// `[N, C_i, H, W]` each → `[N, Σ C_i, H, W]`
pub fn concat_channels<B: Backend>(
    parts: Vec<Tensor<B, 4>>,
) -> Result<Tensor<B, 4>, Vec<Tensor<B, 4>>> {
    match route::<B>() {
        Route::Flex if !parts.is_empty() => Ok(cast(pool::concat_channels_flex(cast(parts)))),
        _ => Err(parts),
    }
}

/// `t · (x > 0 ? 1 : slope)` element by element: the leaky ReLU is `lrelu_gate(x, x)` and its
/// JVP `lrelu_gate(x, dx)`.
pub fn lrelu_gate<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    t: Tensor<B, D>,
    slope: f32,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    match route::<B>() {
        Route::FlexAutodiff => Ok(cast(pointwise::lrelu_gate_autodiff::<D>(
            cast(x),
            cast(t),
            slope,
        ))),
        Route::Flex => Ok(cast(pointwise::lrelu_gate_flex::<D>(
            cast(x),
            cast(t),
            slope,
        ))),
        Route::Generic => Err((x, t)),
    }
}

/// `x / sqrt(mean_c(x²) + eps)` over dimension 1.
pub fn pixel_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    eps: f32,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    match route::<B>() {
        Route::FlexAutodiff => Ok(cast(pointwise::pixel_norm_autodiff::<D>(cast(x), eps))),
        Route::Flex => Ok(cast(pointwise::pixel_norm_flex::<D>(cast(x), eps))),
        Route::Generic => Err(x),
    }
}

/// Nearest-neighbour 2x upsampling, `[N, C, H, W]` → `[N, C, 2H, 2W]`.
pub fn upsample2x<B: Backend>(x: Tensor<B, 4>) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    match route::<B>() {
        Route::FlexAutodiff => Ok(cast(resample::upsample2x_autodiff(cast(x)))),
        Route::Flex => Ok(cast(resample::upsample2x_flex(cast(x)))),
        Route::Generic => Err(x),
    }
}

/// 2x2 average pooling with stride 2, `[N, C, H, W]` → `[N, C, H/2, W/2]`.
pub fn downsample2x<B: Backend>(x: Tensor<B, 4>) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    match route::<B>() {
        Route::FlexAutodiff => Ok(cast(resample::downsample2x_autodiff(cast(x)))),
        Route::Flex => Ok(cast(resample::downsample2x_flex(cast(x)))),
        Route::Generic => Err(x),
    }
}

/// One Adam step of a parameter (an optimizer runs on the inner backend, so `Flex` is the CPU
/// case): the same values and state as burn's `Adam`, in one fused pass for `f32` tensors.
pub fn adam_step<B: Backend, const D: usize>(
    adam: AdamParams,
    lr: f64,
    tensor: Tensor<B, D>,
    grad: Tensor<B, D>,
    state: Option<AdamState<B, D>>,
) -> Result<(Tensor<B, D>, AdamState<B, D>), AdamInputs<B, D>> {
    let fused =
        route::<B>() == Route::Flex && tensor.dtype() == DType::F32 && grad.dtype() == DType::F32;
    if !fused {
        return Err((tensor, grad, state));
    }
    let dims = tensor.shape();
    let flat = |t: Tensor<B, D>| {
        let n = t.shape().num_elements();
        cast::<_, Tensor<Flex, D>>(t)
            .reshape([n])
            .into_primitive()
            .tensor()
    };
    let flat_state = state.map(|s| {
        let m = s.momentum;
        AdaptiveMomentumState::new(
            m.time,
            Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(flat(m.moment_1))),
            Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(flat(m.moment_2))),
        )
    });
    let (param, m) = adam::adam_step(adam, lr, flat(tensor), flat(grad), flat_state);
    let back = |t: Tensor<Flex, 1>| cast::<_, Tensor<B, D>>(t.reshape::<D, _>(dims.clone()));
    let param = back(Tensor::from_primitive(TensorPrimitive::Float(param)));
    let momentum = AdaptiveMomentumState::new(m.time, back(m.moment_1), back(m.moment_2));
    Ok((param, AdamState::new(momentum)))
}

/// The cubecl GPU backends' branches (`pgan-cube`), one per concrete backend type.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu {
    use core::any::TypeId;

    use burn::backend::Autodiff;
    use burn::tensor::backend::Backend;
    use burn::tensor::Tensor;
    use pgan_cube::{ConvChoice, Gemm};

    use super::cast;

    /// Calls `$body!(T)` for each concrete GPU backend type `T` compiled in: burn's `Wgpu` and
    /// `Cuda` (with fusion) and the same runtimes without fusion (`PGAN_GPU_FUSION=off`).
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
    /// (plain or autodiff) and `PGAN_GPU_CONV` chooses pgan-cube's op (the default; an invalid
    /// value, which the trainer reports as an error before it starts, also means the default).
    pub(super) fn conv_gemm<B: Backend>() -> Option<Gemm> {
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
            ConvChoice::ImplicitGemm { algorithm, tile } => Some(Gemm {
                algorithm,
                tile,
                precision: pgan_cube::conv_precision(),
            }),
        }
    }

    /// pgan-cube's op on `B`, which [`conv_gemm`] has shown is a cubecl backend.
    pub(super) fn conv2d_same<B: Backend>(
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
        unreachable!("kernels::gpu::conv2d_same on a backend conv_gemm did not accept")
    }
}
