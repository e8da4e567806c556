//! A faster backward pass for the "same" convolutions on burn's CPU backend (`Autodiff<Flex>`).
//!
//! burn 0.21's default convolution backward is slow on flex, and it is most of a CPU training
//! step (docs/BENCHMARKS.md, "Training step vs PyTorch"). For a 3x3 conv, 128→128 channels,
//! batch 16 at 16x16 the forward runs at gemm speed (~14.5 ms) but the weight gradient takes
//! ~39 ms: burn computes it as a convolution with the batch as channels and the 16x16 output
//! gradient as the "kernel", which flex runs as 128 gemms with 9 output columns each. This op
//! computes the same gradients the way the forward is computed:
//!
//! - input gradient: an ordinary stride-1 convolution of the output gradient with the kernel
//!   transposed (in ↔ out) and flipped, the same padding;
//! - weight gradient: one `[C_out, N·H·W] x [N·H·W, C_in·k·k]` matmul against the im2col
//!   matrix of the input (built here, in chunks of images to bound memory);
//! - bias gradient: the output gradient summed over batch and pixels.
//!
//! [`conv2d_same`] takes this path only when the backend is exactly `Autodiff<Flex>` (a
//! `TypeId` check); every other backend, the GPU ones included, keeps burn's `conv2d`.

use core::any::{Any, TypeId};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn::tensor::{Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

/// The autodiff CPU backend the custom op is written for.
type CpuAutodiff = Autodiff<Flex>;

/// Upper bound on one chunk of the im2col matrix built for the weight gradient.
const COLS_BUDGET_BYTES: usize = 64 << 20;

/// Stride-1 convolution with `padding = k / 2` ("same" for odd `k`).
///
/// # Shapes
/// - x: `[N, C_in, H, W]`, weight: `[C_out, C_in, k, k]`, bias: `[C_out]`
/// - output: `[N, C_out, H, W]`
pub fn conv2d_same<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    padding: usize,
) -> Tensor<B, 4> {
    if TypeId::of::<B>() == TypeId::of::<CpuAutodiff>() {
        let y = flex_conv(cast(x), cast(weight), bias.map(cast), padding);
        return cast(y);
    }
    conv2d(
        x,
        weight,
        bias,
        ConvOptions::new([1, 1], [padding; 2], [1, 1], 1),
    )
}

/// Moves a value between two spellings of the same type (checked by the `TypeId` test above).
fn cast<T: 'static, U: 'static>(value: T) -> U {
    *(Box::new(value) as Box<dyn Any>)
        .downcast::<U>()
        .unwrap_or_else(|_| unreachable!("conv2d_same: backend types checked by TypeId"))
}

fn options(padding: usize) -> ConvOptions<2> {
    ConvOptions::new([1, 1], [padding; 2], [1, 1], 1)
}

/// State kept for the backward pass: the forward's input, weight and padding.
#[derive(Debug, Clone)]
struct SameConvState {
    x: FlexTensor,
    weight: FlexTensor,
    padding: usize,
}

#[derive(Debug)]
struct SameConvBackward;

impl Backward<Flex, 3> for SameConvBackward {
    type State = SameConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let SameConvState { x, weight, padding } = ops.state;
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, input_grad(grad.clone(), weight, padding));
        }
        if node_w.is_some() || node_b.is_some() {
            let (gw, gb) = weight_and_bias_grad(&x, &grad, padding, node_w.is_some());
            if let (Some(node), Some(gw)) = (node_w, gw) {
                grads.register::<Flex>(node.id, gw);
            }
            if let Some(node) = node_b {
                grads.register::<Flex>(node.id, gb);
            }
        }
    }
}

fn flex_conv(
    x: Tensor<CpuAutodiff, 4>,
    weight: Tensor<CpuAutodiff, 4>,
    bias: Option<Tensor<CpuAutodiff, 1>>,
    padding: usize,
) -> Tensor<CpuAutodiff, 4> {
    let x = x.into_primitive().tensor();
    let w = weight.into_primitive().tensor();
    let [c_out, _, _, _] = w.primitive.shape().dims::<4>();
    // A missing bias becomes an untracked zero bias (a third parent that never gets a gradient),
    // left out of the forward.
    let has_bias = bias.is_some();
    let b = match bias {
        Some(b) => b.into_primitive().tensor(),
        None => Tensor::<CpuAutodiff, 1>::zeros([c_out], &Default::default())
            .into_primitive()
            .tensor(),
    };
    let out = match SameConvBackward
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = SameConvState {
                x: x.primitive.clone(),
                weight: w.primitive.clone(),
                padding,
            };
            let bias = has_bias.then_some(b.primitive);
            prep.finish(
                state,
                Flex::conv2d(x.primitive, w.primitive, bias, options(padding)),
            )
        }
        OpsKind::UnTracked(prep) => {
            let bias = has_bias.then_some(b.primitive);
            prep.finish(Flex::conv2d(
                x.primitive,
                w.primitive,
                bias,
                options(padding),
            ))
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `∂L/∂x`: the output gradient convolved with the kernel transposed and flipped.
fn input_grad(grad: FlexTensor, weight: FlexTensor, padding: usize) -> FlexTensor {
    let [c_out, c_in, k, _] = weight.shape().dims::<4>();
    let w = contiguous(&weight);
    // Built directly: flex would copy a flipped view element by element inside every conv.
    let mut flipped = vec![0f32; w.len()];
    for o in 0..c_out {
        for i in 0..c_in {
            for ky in 0..k {
                for kx in 0..k {
                    flipped[((i * c_out + o) * k + k - 1 - ky) * k + k - 1 - kx] =
                        w[((o * c_in + i) * k + ky) * k + kx];
                }
            }
        }
    }
    let flipped = FlexTensor::from_data(TensorData::new(flipped, [c_in, c_out, k, k]));
    Flex::conv2d(grad, flipped, None, options(padding))
}

/// A contiguous `f32` copy-or-view of a tensor.
fn contiguous(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.clone()
                .into_data()
                .into_vec::<f32>()
                .expect("conv2d_same works on f32 tensors"),
        ),
    }
}

/// `(∂L/∂w, ∂L/∂b)`; the weight gradient only when `with_weight`.
fn weight_and_bias_grad(
    x: &FlexTensor,
    grad: &FlexTensor,
    padding: usize,
    with_weight: bool,
) -> (Option<FlexTensor>, FlexTensor) {
    let [n, c_in, h, w] = x.shape().dims::<4>();
    let [_, c_out, _, _] = grad.shape().dims::<4>();
    let k = 2 * padding + 1;
    let hw = h * w;
    let xs = contiguous(x);
    let gs = contiguous(grad);
    // Images per chunk so that the chunk's im2col matrix stays within COLS_BUDGET_BYTES.
    let per_image = c_in * k * k * hw * 4;
    let chunk = (COLS_BUDGET_BYTES / per_image.max(1)).clamp(1, n);

    let mut dw: Option<FlexTensor> = None;
    let mut db = vec![0f32; c_out];
    for n0 in (0..n).step_by(chunk) {
        let m = chunk.min(n - n0);
        // Output gradient as [C_out, m·H·W]: row o holds image after image.
        let mut g = vec![0f32; c_out * m * hw];
        g.par_chunks_mut(m * hw).enumerate().for_each(|(o, row)| {
            for i in 0..m {
                let src = ((n0 + i) * c_out + o) * hw;
                row[i * hw..(i + 1) * hw].copy_from_slice(&gs[src..src + hw]);
            }
        });
        for (o, row) in g.chunks(m * hw).enumerate() {
            db[o] += row.iter().sum::<f32>();
        }
        if !with_weight {
            continue;
        }
        // im2col transposed, [C_in·k·k, m·H·W]: row (c, ky, kx) holds x shifted by (ky, kx).
        let mut cols = vec![0f32; c_in * k * k * m * hw];
        cols.par_chunks_mut(m * hw)
            .enumerate()
            .for_each(|(r, row)| {
                let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
                for i in 0..m {
                    let plane = &xs[((n0 + i) * c_in + c) * hw..][..hw];
                    let out = &mut row[i * hw..(i + 1) * hw];
                    for y in 0..h {
                        let sy = y as isize + ky as isize - padding as isize;
                        if sy < 0 || sy >= h as isize {
                            continue;
                        }
                        let src = &plane[sy as usize * w..][..w];
                        let dst = &mut out[y * w..][..w];
                        // dst[xo] = src[xo + kx - padding] where that is inside the row.
                        let shift = kx as isize - padding as isize;
                        let lo = (-shift).max(0) as usize;
                        let hi = (w as isize - shift).min(w as isize) as usize;
                        if lo < hi {
                            let s0 = (lo as isize + shift) as usize;
                            dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                        }
                    }
                }
            });
        let g = FlexTensor::from_data(TensorData::new(g, [c_out, m * hw]));
        let cols = FlexTensor::from_data(TensorData::new(cols, [c_in * k * k, m * hw]));
        let part = Flex::float_matmul(g, Flex::float_swap_dims(cols, 0, 1));
        dw = Some(match dw {
            Some(acc) => Flex::float_add(acc, part),
            None => part,
        });
    }
    let dw = dw.map(|d| Flex::float_reshape(d, Shape::new([c_out, c_in, k, k])));
    let db = FlexTensor::from_data(TensorData::new(db, [c_out]));
    (dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Gradients of `Σ y·r` (r random) through this op and through burn's own conv2d.
    fn grads_both_ways(
        n: usize,
        c_in: usize,
        c_out: usize,
        size: usize,
        k: usize,
        bias: bool,
    ) -> Vec<(Vec<f32>, Vec<f32>)> {
        let dev = Default::default();
        let x = Tensor::<CpuAutodiff, 4>::random(
            [n, c_in, size, size],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let w = Tensor::<CpuAutodiff, 4>::random(
            [c_out, c_in, k, k],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let b = Tensor::<CpuAutodiff, 1>::random([c_out], Distribution::Normal(0.0, 1.0), &dev);
        let r = Tensor::<CpuAutodiff, 4>::random(
            [n, c_out, size, size],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let run = |fast: bool| {
            let (x, w, b) = (
                x.clone().detach().require_grad(),
                w.clone().detach().require_grad(),
                b.clone().detach().require_grad(),
            );
            let bias_arg = bias.then(|| b.clone());
            let y = if fast {
                conv2d_same(x.clone(), w.clone(), bias_arg, k / 2)
            } else {
                conv2d(x.clone(), w.clone(), bias_arg, options(k / 2))
            };
            let g = (y * r.clone()).sum().backward();
            let mut out = vec![
                x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(),
                w.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(),
            ];
            if bias {
                out.push(b.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap());
            }
            out
        };
        run(true).into_iter().zip(run(false)).collect()
    }

    #[test]
    fn gradients_match_burns_conv2d() {
        for (n, c_in, c_out, size, k, bias) in [
            (2, 3, 5, 7, 3, true),
            (3, 4, 2, 4, 1, true),
            (1, 2, 3, 5, 5, false),
            (4, 8, 8, 8, 3, false),
        ] {
            for (which, (fast, reference)) in grads_both_ways(n, c_in, c_out, size, k, bias)
                .iter()
                .enumerate()
            {
                assert_eq!(fast.len(), reference.len());
                let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
                for (a, b) in fast.iter().zip(reference) {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "gradient {which} of {n}x{c_in}->{c_out} {size}² k{k}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn forward_matches_burns_conv2d_and_other_backends_pass_through() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<Flex, 4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &dev);
        let plain = conv2d_same(x.clone(), w.clone(), None, 1);
        let fast = conv2d_same(
            Tensor::<CpuAutodiff, 4>::from_inner(x),
            Tensor::<CpuAutodiff, 4>::from_inner(w),
            None,
            1,
        )
        .inner();
        plain
            .into_data()
            .assert_approx_eq::<f32>(&fast.into_data(), Default::default());
    }
}
