//! The three passes of a stride-1 "same" convolution on a `CubeTensor` (any cubecl runtime),
//! each through cubek's implicit-GEMM kernels with the algorithm and tile kind named explicitly.
//!
//! Layout. cubek's convolutions are channels-last: the input is read as `[N, H, W, C]` and the
//! weight as `[C_out, k, k, C_in]`. As burn's own convolution does, the NCHW activations are
//! passed as permuted views (cubek copies a view whose channels are not contiguous into the
//! layout it reads) and the NHWC outputs come back as permuted NCHW views, so no pass here
//! copies an activation.
//!
//! Equalized learning rate. The weight is needed channels-last anyway, so the scale is applied
//! in that one copy (`[C_out, C_in, k, k]` → `[C_out, k, k, C_in] · scale`, a few MB at most);
//! the weight gradient is scaled in its copy back to `[C_out, C_in, k, k]`. No pass multiplies an
//! activation or a separate weight tensor.
//!
//! Fallback. Where cubek cannot set the kernels up on this device (no tensor cores: wgpu's WGSL
//! compiler, Mesa's lavapipe), the pass runs burn's autotuned convolution on the same
//! channels-last operands instead; [`crate::fallbacks`] counts those passes and
//! [`crate::fallback_reasons`] keeps cubek's error per shape, so a benchmark can say which kernels
//! ran. A shape that failed once goes straight to the fallback afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::cast;
use burn_cubecl::kernel::conv::{
    conv_data_backward, conv_forward_nhwc, conv_weight_backward, ConvStrategy,
};
use burn_cubecl::ops::numeric::{empty_device_dtype, mul_scalar};
use burn_cubecl::ops::{permute_nchw_to_nhwc, permute_nhwc_to_nchw};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::InputScalar;
use cubek::convolution::components::ConvSetupError;
use cubek::convolution::{
    launch_ref, AcceleratedTileKind, ConvAlgorithm, ConvolutionArgs, ConvolutionInputs, Strategy,
};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::std::InputBinding;

use crate::choice::{ConvPrecision, GemmAlgorithm, TileKind};

/// The implicit GEMM to launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gemm {
    /// cubek algorithm.
    pub algorithm: GemmAlgorithm,
    /// Tile kind.
    pub tile: TileKind,
    /// Operand element type (f32 accumulation either way).
    pub precision: ConvPrecision,
}

impl Default for Gemm {
    fn default() -> Self {
        match crate::ConvChoice::default() {
            crate::ConvChoice::ImplicitGemm { algorithm, tile } => Gemm {
                algorithm,
                tile,
                precision: ConvPrecision::F32,
            },
            crate::ConvChoice::Autotune => unreachable!("the default is an implicit GEMM"),
        }
    }
}

impl Gemm {
    fn strategy(self) -> Strategy {
        let algorithm = match self.algorithm {
            GemmAlgorithm::SimpleSyncCyclic => ConvAlgorithm::SimpleSyncCyclic,
            GemmAlgorithm::SimpleSyncStrided => ConvAlgorithm::SimpleSyncStrided,
            GemmAlgorithm::SimpleSyncTilewise => ConvAlgorithm::SimpleSyncTilewise,
            GemmAlgorithm::SimpleAsyncCyclic => ConvAlgorithm::SimpleAsyncCyclic,
            GemmAlgorithm::SimpleAsyncStrided => ConvAlgorithm::SimpleAsyncStrided,
            GemmAlgorithm::SimpleAsyncTma => ConvAlgorithm::SimpleAsyncTma,
            GemmAlgorithm::SpecializedAsyncCyclic => ConvAlgorithm::SpecializedAsyncCyclic,
            GemmAlgorithm::SpecializedAsyncStrided => ConvAlgorithm::SpecializedAsyncStrided,
            GemmAlgorithm::SpecializedTma => ConvAlgorithm::SpecializedTma,
        };
        let tile_kind = match self.tile {
            TileKind::Cmma => AcceleratedTileKind::Cmma,
            TileKind::Mma => AcceleratedTileKind::Mma,
        };
        Strategy::Inferred {
            algorithm,
            tile_kind,
        }
    }
}

/// The three passes, for the counters and the fallback memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Pass {
    Forward,
    InputGrad,
    WeightGrad,
}

/// How often each pass ran the explicit implicit-GEMM kernels, and how often burn's fallback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaunchCounts {
    /// Passes that ran cubek's implicit GEMM as chosen.
    pub gemm: u64,
    /// Passes that ran burn's autotuned convolution because cubek could not set the GEMM up.
    pub fallback: u64,
}

static GEMM_LAUNCHES: AtomicU64 = AtomicU64::new(0);
static FALLBACK_LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// cubek's setup error per (pass, shape, gemm, device) that failed; such a pass is not retried.
type FailedKey = (Pass, [usize; 6], Gemm, String);
static FAILED: Mutex<Option<HashMap<FailedKey, String>>> = Mutex::new(None);

/// Process-wide launch counts since start.
pub fn launch_counts() -> LaunchCounts {
    LaunchCounts {
        gemm: GEMM_LAUNCHES.load(Ordering::Relaxed),
        fallback: FALLBACK_LAUNCHES.load(Ordering::Relaxed),
    }
}

/// One line per (pass, shape) whose implicit GEMM cubek refused, with its reason.
pub fn fallback_reasons() -> Vec<String> {
    let failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
    let mut lines: Vec<String> = failed
        .iter()
        .flatten()
        .map(|((pass, [n, c_in, c_out, h, w, k], gemm, _), why)| {
            format!(
                "{pass:?} n{n} {c_in}->{c_out} {h}x{w} k{k} ({}:{}): {}",
                crate::choice::algorithm_name(gemm.algorithm),
                crate::choice::tile_name(gemm.tile),
                why.trim()
            )
        })
        .collect();
    lines.sort();
    lines
}

/// Runs `gemm_pass` unless this pass and shape failed before; on a setup error runs `fallback`.
fn with_fallback<R: CubeRuntime>(
    pass: Pass,
    geometry: [usize; 6],
    gemm: Gemm,
    device: &R::Device,
    gemm_pass: impl FnOnce() -> Result<CubeTensor<R>, ConvSetupError>,
    fallback: impl FnOnce() -> CubeTensor<R>,
) -> CubeTensor<R> {
    let key = (pass, geometry, gemm, format!("{device:?}"));
    let known_bad = FAILED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|m| m.contains_key(&key));
    if !known_bad {
        match gemm_pass() {
            Ok(out) => {
                GEMM_LAUNCHES.fetch_add(1, Ordering::Relaxed);
                return out;
            }
            Err(why) => {
                FAILED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(HashMap::new)
                    .insert(key, format!("{why:?}"));
            }
        }
    }
    FALLBACK_LAUNCHES.fetch_add(1, Ordering::Relaxed);
    fallback()
}

fn same_padding(k: usize) -> ConvOptions<2> {
    ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], 1)
}

fn args(k: usize) -> ConvolutionArgs<2> {
    ConvolutionArgs {
        stride: [1, 1],
        padding: [k / 2, k / 2],
        dilation: [1, 1],
    }
}

fn dims4<R: CubeRuntime>(t: &CubeTensor<R>) -> [usize; 4] {
    let s = t.meta.shape();
    [s[0], s[1], s[2], s[3]]
}

fn binding<R: CubeRuntime>(t: CubeTensor<R>) -> InputBinding<R> {
    let dtype = t.dtype;
    InputBinding::new(t.binding(), dtype.into())
}

/// The GEMM's element types: the operands' own, the output (and so the accumulator) `out`'s.
fn elems<R: CubeRuntime>(lhs: &CubeTensor<R>, rhs: &CubeTensor<R>, out: DType) -> MatmulElems {
    MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: lhs.dtype.into(),
        rhs: rhs.dtype.into(),
        out: out.into(),
    })
}

/// A GEMM operand in `gemm`'s precision: `t` itself for f32, else a contiguous bf16 copy in
/// `t`'s logical order (burn's cast kernel reads strided views, so a permuted NHWC view becomes
/// a channels-last bf16 tensor in one pass).
fn operand<R: CubeRuntime>(t: &CubeTensor<R>, gemm: Gemm) -> CubeTensor<R> {
    match gemm.precision {
        ConvPrecision::F32 => t.clone(),
        ConvPrecision::Bf16 => cast(t.clone(), DType::BF16),
    }
}

/// `permuted · scale` into a fresh tensor laid out in `permuted`'s logical order (row-major, rows
/// pitched as burn allocates them), where `permuted` is a view of `t`'s buffer.
///
/// The borrow of `t` keeps a second reference to the buffer alive, so burn's scalar kernel
/// cannot run in place (which would keep the permuted strides, or write into a parameter) and
/// allocates its output in the view's order instead: the layout change and the scale are one
/// pass.
fn scaled_copy<R: CubeRuntime>(
    t: &CubeTensor<R>,
    permuted: CubeTensor<R>,
    scale: f32,
) -> CubeTensor<R> {
    debug_assert!(
        !t.can_mut(),
        "a second reference must keep the multiply out of place"
    );
    let dtype = permuted.dtype;
    mul_scalar(permuted, InputScalar::new(scale, dtype))
}

/// The weight `[C_out, C_in, k, k]` as `[C_out, k, k, C_in] · scale`, contiguous.
pub fn scaled_weight_nhwc<R: CubeRuntime>(weight: &CubeTensor<R>, scale: f32) -> CubeTensor<R> {
    scaled_copy(weight, permute_nchw_to_nhwc(weight.clone()), scale)
}

/// `y = conv(x, weight · scale) + bias`, stride 1, padding `k / 2`.
///
/// x: `[N, C_in, H, W]`, weight: `[C_out, C_in, k, k]`, bias: `[C_out]`; y: `[N, C_out, H, W]`
/// (an NCHW view of channels-last memory).
pub fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    scale: f32,
    bias: Option<CubeTensor<R>>,
    gemm: Gemm,
) -> CubeTensor<R> {
    let [n, c_in, h, w] = dims4(&x);
    let [c_out, _, k, _] = dims4(&weight);
    let weight_hwc = scaled_weight_nhwc(&weight, scale);
    drop(weight);
    let x_hwc = permute_nchw_to_nhwc(x);
    let device = x_hwc.device.clone();
    let out = with_fallback(
        Pass::Forward,
        [n, c_in, c_out, h, w, k],
        gemm,
        &device,
        || {
            let out = empty_device_dtype(
                x_hwc.client.clone(),
                x_hwc.device.clone(),
                Shape::new([n, h, w, c_out]),
                x_hwc.dtype,
            );
            let (input, weight) = (operand(&x_hwc, gemm), operand(&weight_hwc, gemm));
            let dtypes = elems(&input, &weight, x_hwc.dtype);
            launch_ref::<R, 2>(
                &gemm.strategy(),
                &x_hwc.client.clone(),
                ConvolutionInputs::Forward {
                    input: binding(input),
                    weight: binding(weight),
                    bias: bias.clone().map(binding),
                    out: out.clone().binding(),
                },
                args(k),
                dtypes,
            )?;
            Ok(out)
        },
        || {
            conv_forward_nhwc::<R, 2>(
                x_hwc.clone(),
                weight_hwc.clone(),
                bias.clone(),
                same_padding(k),
                ConvStrategy::Autotune,
            )
            .expect("burn's autotuned convolution always has a kernel")
        },
    );
    permute_nhwc_to_nchw(out)
}

/// `∂L/∂x` of [`forward`] given `∂L/∂y` (`[N, C_out, H, W]`): `[N, C_in, H, W]`.
pub fn input_grad<R: CubeRuntime>(
    out_grad: CubeTensor<R>,
    weight: CubeTensor<R>,
    scale: f32,
    gemm: Gemm,
) -> CubeTensor<R> {
    let [n, c_out, h, w] = dims4(&out_grad);
    let [_, c_in, k, _] = dims4(&weight);
    let weight_hwc = scaled_weight_nhwc(&weight, scale);
    drop(weight);
    let device = out_grad.device.clone();
    let grad_hwc = permute_nchw_to_nhwc(out_grad);
    let in_grad = with_fallback(
        Pass::InputGrad,
        [n, c_in, c_out, h, w, k],
        gemm,
        &device,
        || {
            let in_grad = empty_device_dtype(
                grad_hwc.client.clone(),
                grad_hwc.device.clone(),
                Shape::new([n, h, w, c_in]),
                grad_hwc.dtype,
            );
            let (out_grad, weights) = (operand(&grad_hwc, gemm), operand(&weight_hwc, gemm));
            let dtypes = elems(&out_grad, &weights, grad_hwc.dtype);
            launch_ref::<R, 2>(
                &gemm.strategy(),
                &grad_hwc.client.clone(),
                ConvolutionInputs::BackwardData {
                    out_grad: binding(out_grad),
                    weights: binding(weights),
                    in_grad: in_grad.clone().binding(),
                },
                args(k),
                dtypes,
            )?;
            Ok(in_grad)
        },
        || {
            // burn's entry point takes NCHW (views) and returns NCHW; back to NHWC for the
            // common exit below.
            permute_nchw_to_nhwc(
                conv_data_backward::<R, 2>(
                    permute_nhwc_to_nchw(grad_hwc.clone()),
                    permute_nhwc_to_nchw(weight_hwc.clone()),
                    Shape::new([n, c_in, h, w]),
                    same_padding(k),
                    ConvStrategy::Autotune,
                )
                .expect("burn's autotuned data gradient always has a kernel"),
            )
        },
    );
    permute_nhwc_to_nchw(in_grad)
}

/// `∂L/∂weight` of [`forward`] (the raw, unscaled parameter) given its input `x` and `∂L/∂y`:
/// `[C_out, C_in, k, k]`, contiguous.
pub fn weight_grad<R: CubeRuntime>(
    x: CubeTensor<R>,
    out_grad: CubeTensor<R>,
    scale: f32,
    k: usize,
    gemm: Gemm,
) -> CubeTensor<R> {
    let [n, c_in, h, w] = dims4(&x);
    let [_, c_out, _, _] = dims4(&out_grad);
    let device = x.device.clone();
    let x_hwc = permute_nchw_to_nhwc(x);
    let grad_hwc = permute_nchw_to_nhwc(out_grad);
    let weight_grad_hwc = with_fallback(
        Pass::WeightGrad,
        [n, c_in, c_out, h, w, k],
        gemm,
        &device,
        || {
            let weight_grad = empty_device_dtype(
                x_hwc.client.clone(),
                x_hwc.device.clone(),
                Shape::new([c_out, k, k, c_in]),
                x_hwc.dtype,
            );
            let (input, out_grad) = (operand(&x_hwc, gemm), operand(&grad_hwc, gemm));
            let dtypes = elems(&input, &out_grad, x_hwc.dtype);
            launch_ref::<R, 2>(
                &gemm.strategy(),
                &x_hwc.client.clone(),
                ConvolutionInputs::BackwardWeight {
                    input: binding(input),
                    out_grad: binding(out_grad),
                    weight_grad: weight_grad.clone().binding(),
                },
                args(k),
                dtypes,
            )?;
            Ok(weight_grad)
        },
        || {
            permute_nchw_to_nhwc(
                conv_weight_backward::<R, 2>(
                    permute_nhwc_to_nchw(x_hwc.clone()),
                    permute_nhwc_to_nchw(grad_hwc.clone()),
                    Shape::new([c_out, c_in, k, k]),
                    same_padding(k),
                    ConvStrategy::Autotune,
                )
                .expect("burn's autotuned weight gradient always has a kernel"),
            )
        },
    );
    scaled_copy(
        &weight_grad_hwc,
        permute_nhwc_to_nchw(weight_grad_hwc.clone()),
        scale,
    )
}
