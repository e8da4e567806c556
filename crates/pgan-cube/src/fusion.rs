//! [`GemmConvBackend`] on burn's fusion backend (`Fusion<CubeBackend<..>>`, what
//! `burn::backend::Wgpu` and `burn::backend::Cuda` are with the `fusion` feature): each pass is
//! registered in the fusion stream as a custom operation that runs the `CubeBackend` pass on the
//! stream's handles when it executes. The op ends a fused block, as burn's own `conv2d` does.

use std::marker::PhantomData;

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use crate::autodiff::GemmConvBackend;
use crate::kernels::Gemm;

type Handles<B> =
    HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

/// Which pass a custom operation runs, with its non-tensor arguments.
#[derive(Debug, Clone, Copy)]
enum PassArgs {
    Forward { has_bias: bool },
    InputGrad,
    WeightGrad { kernel: usize },
}

#[derive(Debug, Clone)]
struct ConvPassOp<B> {
    desc: CustomOpIr,
    pass: PassArgs,
    scale: f32,
    gemm: Gemm,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + GemmConvBackend> Operation<B::FusionRuntime> for ConvPassOp<B> {
    fn execute(&self, handles: &mut Handles<B>) {
        let inputs: Vec<_> = self
            .desc
            .inputs
            .iter()
            .map(|t| handles.get_float_tensor::<B>(t))
            .collect();
        let mut inputs = inputs.into_iter();
        let mut next = || inputs.next().expect("the op registered this many inputs");
        let out = match self.pass {
            PassArgs::Forward { has_bias } => {
                let (x, weight) = (next(), next());
                let bias = has_bias.then(&mut next);
                B::gemm_conv_forward(x, weight, self.scale, bias, self.gemm)
            }
            PassArgs::InputGrad => {
                let (out_grad, weight) = (next(), next());
                B::gemm_conv_input_grad(out_grad, weight, self.scale, self.gemm)
            }
            PassArgs::WeightGrad { kernel } => {
                let (x, out_grad) = (next(), next());
                B::gemm_conv_weight_grad(x, out_grad, self.scale, kernel, self.gemm)
            }
        };
        handles.register_float_tensor::<B>(&self.desc.outputs[0].id, out);
    }
}

/// Registers one pass over `inputs` with an output of `out_shape`.
fn register<B: FusionBackend + GemmConvBackend>(
    name: &'static str,
    inputs: Vec<FloatTensor<Fusion<B>>>,
    out_shape: Shape,
    pass: PassArgs,
    scale: f32,
    gemm: Gemm,
) -> FloatTensor<Fusion<B>> {
    let client = inputs[0].client.clone();
    let dtype = inputs[0].dtype();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let out = TensorIr::uninit(client.create_empty_handle(), out_shape, dtype);
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new(name, &inputs, &[out]);
    client
        .register(
            streams,
            OperationIr::Custom(desc.clone()),
            ConvPassOp::<B> {
                desc,
                pass,
                scale,
                gemm,
                _backend: PhantomData,
            },
        )
        .output()
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> GemmConvBackend
    for Fusion<CubeBackend<R, F, I, BT>>
{
    fn gemm_conv_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f32,
        bias: Option<FloatTensor<Self>>,
        gemm: Gemm,
    ) -> FloatTensor<Self> {
        let [n, _, h, w] = x.shape().dims::<4>();
        let c_out = weight.shape().dims::<4>()[0];
        let has_bias = bias.is_some();
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        register::<CubeBackend<R, F, I, BT>>(
            "pgan_conv_forward",
            inputs,
            Shape::new([n, c_out, h, w]),
            PassArgs::Forward { has_bias },
            scale,
            gemm,
        )
    }

    fn gemm_conv_input_grad(
        out_grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f32,
        gemm: Gemm,
    ) -> FloatTensor<Self> {
        let [n, _, h, w] = out_grad.shape().dims::<4>();
        let c_in = weight.shape().dims::<4>()[1];
        register::<CubeBackend<R, F, I, BT>>(
            "pgan_conv_input_grad",
            vec![out_grad, weight],
            Shape::new([n, c_in, h, w]),
            PassArgs::InputGrad,
            scale,
            gemm,
        )
    }

    fn gemm_conv_weight_grad(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        scale: f32,
        kernel: usize,
        gemm: Gemm,
    ) -> FloatTensor<Self> {
        let c_in = x.shape().dims::<4>()[1];
        let c_out = out_grad.shape().dims::<4>()[1];
        register::<CubeBackend<R, F, I, BT>>(
            "pgan_conv_weight_grad",
            vec![x, out_grad],
            Shape::new([c_out, c_in, kernel, kernel]),
            PassArgs::WeightGrad { kernel },
            scale,
            gemm,
        )
    }
}
