//! The autodiff op: forward through [`GemmConvBackend::gemm_conv_forward`], backward through the
//! input- and weight-gradient passes and a bias sum.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

use crate::kernels::Gemm;

/// A backend that runs the three passes of the equalized "same" convolution (stride 1, padding
/// `k / 2`, odd square kernel) with the explicit implicit-GEMM kernels of [`crate::kernels`].
pub trait GemmConvBackend: Backend {
    /// `conv(x, weight · scale) + bias`; x `[N, C_in, H, W]`, weight `[C_out, C_in, k, k]`.
    fn gemm_conv_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f32,
        bias: Option<FloatTensor<Self>>,
        gemm: Gemm,
    ) -> FloatTensor<Self>;

    /// The input gradient given the output gradient `[N, C_out, H, W]`.
    fn gemm_conv_input_grad(
        out_grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f32,
        gemm: Gemm,
    ) -> FloatTensor<Self>;

    /// The gradient of the raw (unscaled) weight, `[C_out, C_in, k, k]`.
    fn gemm_conv_weight_grad(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        scale: f32,
        kernel: usize,
        gemm: Gemm,
    ) -> FloatTensor<Self>;
}

mod cube_impl {
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

    use super::*;
    use crate::kernels;

    impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> GemmConvBackend
        for CubeBackend<R, F, I, BT>
    {
        fn gemm_conv_forward(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            scale: f32,
            bias: Option<FloatTensor<Self>>,
            gemm: Gemm,
        ) -> FloatTensor<Self> {
            kernels::forward(x, weight, scale, bias, gemm)
        }

        fn gemm_conv_input_grad(
            out_grad: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            scale: f32,
            gemm: Gemm,
        ) -> FloatTensor<Self> {
            kernels::input_grad(out_grad, weight, scale, gemm)
        }

        fn gemm_conv_weight_grad(
            x: FloatTensor<Self>,
            out_grad: FloatTensor<Self>,
            scale: f32,
            kernel: usize,
            gemm: Gemm,
        ) -> FloatTensor<Self> {
            kernels::weight_grad(x, out_grad, scale, kernel, gemm)
        }
    }
}

/// Stride-1 "same" convolution of `x` with `weight · scale` (+ `bias`), untracked.
///
/// # Shapes
/// - x: `[N, C_in, H, W]`, weight: `[C_out, C_in, k, k]` (k odd), bias: `[C_out]`
/// - output: `[N, C_out, H, W]`
pub fn conv2d_same<B: GemmConvBackend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    scale: f32,
    bias: Option<Tensor<B, 1>>,
    gemm: Gemm,
) -> Tensor<B, 4> {
    let y = B::gemm_conv_forward(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        scale,
        bias.map(|b| b.into_primitive().tensor()),
        gemm,
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// State for the backward pass: the forward's input and raw weight, the scale and the kernels.
#[derive(Debug, Clone)]
struct ConvState<B: Backend> {
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    scale: f32,
    gemm: Gemm,
}

#[derive(Debug)]
struct ConvBackward;

impl<B: GemmConvBackend> Backward<B, 3> for ConvBackward {
    type State = ConvState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let out_grad = grads.consume::<B>(&ops.node);
        let ConvState {
            x,
            weight,
            scale,
            gemm,
        } = ops.state;
        let k = weight.shape().dims::<4>()[2];
        if let Some(node) = node_b {
            // Σ over batch and pixels: [N, C, H, W] → [1, C, 1, 1] → [C].
            let c_out = out_grad.shape().dims::<4>()[1];
            let sum = B::float_sum_dim(out_grad.clone(), 0);
            let sum = B::float_sum_dim(sum, 2);
            let sum = B::float_sum_dim(sum, 3);
            grads.register::<B>(node.id, B::float_reshape(sum, [c_out].into()));
        }
        if let Some(node) = node_w {
            let dw = B::gemm_conv_weight_grad(x, out_grad.clone(), scale, k, gemm);
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = node_x {
            let dx = B::gemm_conv_input_grad(out_grad, weight, scale, gemm);
            grads.register::<B>(node.id, dx);
        }
    }
}

/// [`conv2d_same`] on the autodiff backend: the gradients of x, the raw weight and the bias
/// come from the explicit kernels too.
pub fn conv2d_same_tracked<B: GemmConvBackend>(
    x: Tensor<Autodiff<B>, 4>,
    weight: Tensor<Autodiff<B>, 4>,
    scale: f32,
    bias: Option<Tensor<Autodiff<B>, 1>>,
    gemm: Gemm,
) -> Tensor<Autodiff<B>, 4> {
    let x = x.into_primitive().tensor();
    let w = weight.into_primitive().tensor();
    let c_out = w.primitive.shape().dims::<4>()[0];
    // A missing bias becomes an untracked zero bias (a third parent that never gets a
    // gradient), left out of the forward.
    let has_bias = bias.is_some();
    let b = match bias {
        Some(b) => b.into_primitive().tensor(),
        None => Tensor::<Autodiff<B>, 1>::zeros([c_out], &B::float_device(&w.primitive))
            .into_primitive()
            .tensor(),
    };
    let out = match ConvBackward
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = ConvState {
                x: x.primitive.clone(),
                weight: w.primitive.clone(),
                scale,
                gemm,
            };
            let bias = has_bias.then_some(b.primitive);
            prep.finish(
                state,
                B::gemm_conv_forward(x.primitive, w.primitive, scale, bias, gemm),
            )
        }
        OpsKind::UnTracked(prep) => {
            let bias = has_bias.then_some(b.primitive);
            prep.finish(B::gemm_conv_forward(
                x.primitive,
                w.primitive,
                scale,
                bias,
                gemm,
            ))
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
