//! The stride-1 "same" convolution of the equalized layers as a custom op on burn's CPU backend
//! (`Flex`, and `Autodiff<Flex>` with its own backward pass), computed by
//! [`crate::cpu_conv`]'s per-image im2col + gemm kernels and [`crate::winograd`].
//!
//! burn 0.21's default convolution backward is slow on flex: it computes the weight gradient as
//! a convolution with the batch as channels and the output gradient as the "kernel", which flex
//! runs as one gemm per output channel with 9 output columns. This op computes every product the
//! way the forward is computed:
//!
//! - forward: per image, `w [C_out, C_in·k·k] × im2col(x_i) [C_in·k·k, H·W]` + bias;
//! - input gradient: an ordinary stride-1 convolution of the output gradient with the kernel
//!   transposed (in ↔ out) and flipped, the same padding;
//! - weight gradient: per image `∂L/∂y_i [C_out, H·W] × im2col(x_i)ᵀ`, summed over the batch;
//! - bias gradient: the output gradient summed over batch and pixels.
//!
//! The equalized learning rate's weight scale is an argument of the op, applied inside the
//! products: the op's weight is then the parameter tensor itself, whose Winograd-transformed
//! filters [`crate::filter_cache`] keeps across the step's many passes.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};

use crate::cpu_conv::{self, ConvShape};
use crate::tensors::CpuAutodiff;
use crate::tensors::{contiguous, dense};
use crate::{filter_cache, winograd};

/// Convolution of `x` with `weight · scale`, stride 1, padding `k / 2`, on `Flex`.
///
/// # Shapes
/// - x: `[N, C_in, H, W]`, weight: `[C_out, C_in, k, k]` with odd `k`, bias: `[C_out]`
/// - output: `[N, C_out, H, W]`
pub fn conv2d_same_flex(
    x: Tensor<Flex, 4>,
    weight: Tensor<Flex, 4>,
    scale: f32,
    bias: Option<Tensor<Flex, 1>>,
) -> Tensor<Flex, 4> {
    let y = forward(
        x.into_primitive().tensor(),
        &weight.into_primitive().tensor(),
        scale,
        bias.map(|b| b.into_primitive().tensor()),
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

fn conv_shape(x: &FlexTensor, weight: &FlexTensor) -> ConvShape {
    let [n, c_in, h, w] = x.shape().dims::<4>();
    let [c_out, _, k, _] = weight.shape().dims::<4>();
    ConvShape {
        n,
        c_in,
        c_out,
        h,
        w,
        k,
    }
}

fn tensor(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The forward convolution on flex tensors.
fn forward(x: FlexTensor, weight: &FlexTensor, scale: f32, bias: Option<FlexTensor>) -> FlexTensor {
    let weight = &dense(weight.clone());
    let s = conv_shape(&x, weight);
    let bias = bias.as_ref().map(contiguous);
    let x = contiguous(&x);
    let y = if winograd::applies(&s) {
        let u = filter_cache::transformed(&s, weight, scale);
        winograd::forward_with_filters(s, &x, &u, bias.as_deref())
    } else {
        cpu_conv::forward(s, &x, &contiguous(weight), scale, bias.as_deref())
    };
    tensor(y, [s.n, s.c_out, s.h, s.w])
}

/// State kept for the backward pass: the forward's input, (contiguous) weight and scale.
#[derive(Debug, Clone)]
struct SameConvState {
    x: FlexTensor,
    weight: FlexTensor,
    scale: f32,
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
        let SameConvState { x, weight, scale } = ops.state;
        let s = conv_shape(&x, &weight);
        let g = contiguous(&grad);
        if let Some(node) = node_x {
            let dx = if winograd::applies(&s) {
                let u = filter_cache::transformed(&s, &weight, scale);
                winograd::input_grad_with_filters(s, &g, &u)
            } else {
                cpu_conv::input_grad(s, &g, &contiguous(&weight), scale)
            };
            grads.register::<Flex>(node.id, tensor(dx, [s.n, s.c_in, s.h, s.w]));
        }
        if let Some(node) = node_w {
            let dw = cpu_conv::weight_grad(s, &contiguous(&x), &g, scale);
            grads.register::<Flex>(node.id, tensor(dw, [s.c_out, s.c_in, s.k, s.k]));
        }
        if let Some(node) = node_b {
            let db = cpu_conv::bias_grad(s, &g);
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(db, [s.c_out])),
            );
        }
    }
}

/// [`conv2d_same_flex`] on `Autodiff<Flex>`, with the backward pass described above.
pub fn conv2d_same_autodiff(
    x: Tensor<CpuAutodiff, 4>,
    weight: Tensor<CpuAutodiff, 4>,
    scale: f32,
    bias: Option<Tensor<CpuAutodiff, 1>>,
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
            let weight = dense(w.primitive.clone());
            let state = SameConvState {
                x: x.primitive.clone(),
                weight: weight.clone(),
                scale,
            };
            let bias = has_bias.then_some(b.primitive);
            prep.finish(state, forward(x.primitive, &weight, scale, bias))
        }
        OpsKind::UnTracked(prep) => {
            let bias = has_bias.then_some(b.primitive);
            prep.finish(forward(x.primitive, &w.primitive, scale, bias))
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::Distribution;

    /// A weight scale that is not 1 (the equalized learning rate's), so dropping it fails.
    const SCALE: f32 = 0.6;

    /// Gradients of `Σ y·r` (r random) through this op and through burn's own conv2d on the
    /// scaled weight.
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
                conv2d_same_autodiff(x.clone(), w.clone(), SCALE, bias_arg)
            } else {
                conv2d(
                    x.clone(),
                    w.clone().mul_scalar(SCALE),
                    bias_arg,
                    ConvOptions::new([1, 1], [k / 2; 2], [1, 1], 1),
                )
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
        let _turn = crate::graph_turn();
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
    fn forward_matches_burns_conv2d_on_flex_and_autodiff_flex() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 3, 6, 5], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<Flex, 4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<Flex, 1>::random([4], Distribution::Normal(0.0, 1.0), &dev);
        let reference = conv2d(
            x.clone(),
            w.clone(),
            Some(b.clone()),
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let plain = conv2d_same_flex(x.clone(), w.clone(), 1.0, Some(b.clone()));
        let tracked = conv2d_same_autodiff(
            Tensor::<CpuAutodiff, 4>::from_inner(x),
            Tensor::<CpuAutodiff, 4>::from_inner(w),
            1.0,
            Some(Tensor::<CpuAutodiff, 1>::from_inner(b)),
        )
        .inner();
        let tolerance = burn::tensor::Tolerance::<f32>::default();
        plain
            .into_data()
            .assert_approx_eq::<f32>(&reference.clone().into_data(), tolerance);
        tracked
            .into_data()
            .assert_approx_eq::<f32>(&reference.into_data(), tolerance);
    }

    #[test]
    fn the_convolution_op_reuses_filters_across_passes() {
        let _turn = crate::graph_turn();
        use crate::filter_cache::hits;
        type AB = CpuAutodiff;
        let dev = Default::default();
        let x = Tensor::<AB, 4>::random([2, 4, 4, 4], Distribution::Normal(0.0, 1.0), &dev)
            .require_grad();
        let w = Tensor::<AB, 4>::random([6, 4, 3, 3], Distribution::Normal(0.0, 1.0), &dev)
            .require_grad();
        let before = hits();
        // Forward twice with the same weight tensor, then a backward through both (two input
        // gradients): one transform, three reuses.
        let y = conv2d_same_autodiff(x.clone(), w.clone(), 0.3, None)
            + conv2d_same_autodiff(x.clone().mul_scalar(2.0), w.clone(), 0.3, None);
        let grads = y.sum().backward();
        assert!(x.grad(&grads).is_some() && w.grad(&grads).is_some());
        assert_eq!(hits(), before + 3);
    }
}
