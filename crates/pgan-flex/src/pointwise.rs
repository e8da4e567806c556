//! Leaky ReLU and pixel norm as single fused, multi-threaded ops on burn's CPU backend (`Flex`
//! and `Autodiff<Flex>`).
//!
//! Written with burn's tensor ops, a leaky ReLU is a comparison, a scale and a `mask_where`
//! forward and as many passes again backward, and a pixel norm is six element-wise passes with
//! broadcasting each way; flex runs each pass on one thread. Here each is one parallel pass
//! forward and one backward. Other backends keep pgan-model's tensor-op versions (its
//! `kernels` module routes between the two).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use crate::tensors::contiguous;
use crate::tensors::CpuAutodiff;

/// Elements per parallel task of the element-wise gate.
const CHUNK: usize = 1 << 14;

/// `t · (x > 0 ? 1 : slope)` element by element: the leaky ReLU is `gate(x, x)` and its JVP
/// `gate(x, dx)`. The gradient flows into `t` only (the gate is piecewise constant in `x`,
/// so for `gate(x, x)` that is the whole derivative).
pub fn lrelu_gate_autodiff<const D: usize>(
    x: Tensor<CpuAutodiff, D>,
    t: Tensor<CpuAutodiff, D>,
    slope: f32,
) -> Tensor<CpuAutodiff, D> {
    let x = x.into_primitive().tensor().primitive;
    let t = t.into_primitive().tensor();
    let out = gate(&x, &t.primitive, slope);
    let out = match (LreluGateBackward { slope })
        .prepare::<NoCheckpointing>([t.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(x, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// [`lrelu_gate_autodiff`] without autodiff.
pub fn lrelu_gate_flex<const D: usize>(
    x: Tensor<Flex, D>,
    t: Tensor<Flex, D>,
    slope: f32,
) -> Tensor<Flex, D> {
    let out = gate(
        &x.into_primitive().tensor(),
        &t.into_primitive().tensor(),
        slope,
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

fn gate(x: &FlexTensor, t: &FlexTensor, slope: f32) -> FlexTensor {
    let shape = t.shape();
    assert_eq!(x.shape(), shape, "lrelu gate: shapes differ");
    let (xs, ts) = (contiguous(x), contiguous(t));
    let mut out = vec![0f32; ts.len()];
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK).zip(ts.par_chunks(CHUNK)))
        // `move`: the closure owns `slope`, so the loop need not reload it after every store
        // (captured by reference, it kept the loop from vectorising).
        .for_each(move |(o, (x, t))| {
            for ((o, &x), &t) in o.iter_mut().zip(x).zip(t) {
                // A select of the factor, not a branch: the sign of x is random, and the
                // branch form compiled to scalar code that mispredicted.
                // t · 1 is t exactly, so the values are the same.
                let factor = if x > 0.0 { 1.0 } else { slope };
                *o = t * factor;
            }
        });
    FlexTensor::from_data(TensorData::new(out, shape))
}

#[derive(Debug)]
struct LreluGateBackward {
    slope: f32,
}

impl Backward<Flex, 1> for LreluGateBackward {
    /// The gate's source `x`.
    type State = FlexTensor;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_t] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_t {
            grads.register::<Flex>(node.id, gate(&ops.state, &grad, self.slope));
        }
    }
}

/// `[N, C, rest…]` as `(N, C, pixels per channel)`.
fn nc_rest(x: &FlexTensor) -> (usize, usize, usize) {
    let dims = x.shape().to_vec();
    assert!(dims.len() >= 2, "pixel norm needs [N, C, ...]");
    let (n, c) = (dims[0], dims[1]);
    (n, c, dims[2..].iter().product())
}

/// `y = x · r⁻¹`, `r = sqrt(mean_c(x²) + eps)`, with the backward
/// `∂L/∂x = r⁻¹ · (g − y · mean_c(y·g))`.
pub fn pixel_norm_autodiff<const D: usize>(
    x: Tensor<CpuAutodiff, D>,
    eps: f32,
) -> Tensor<CpuAutodiff, D> {
    let x = x.into_primitive().tensor();
    let (y, inv_r) = pixel_norm_forward(&x.primitive, eps);
    let out = match PixelNormBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            PixelNormState {
                x: x.primitive,
                inv_r,
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// [`pixel_norm_autodiff`] without autodiff.
pub fn pixel_norm_flex<const D: usize>(x: Tensor<Flex, D>, eps: f32) -> Tensor<Flex, D> {
    let (y, _) = pixel_norm_forward(&x.into_primitive().tensor(), eps);
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The normalised tensor and `r⁻¹` per (image, pixel).
fn pixel_norm_forward(x: &FlexTensor, eps: f32) -> (FlexTensor, Vec<f32>) {
    let (n, c, p) = nc_rest(x);
    let xs = contiguous(x);
    let xs: &[f32] = &xs;
    let mut y = vec![0f32; xs.len()];
    let mut inv_r = vec![0f32; n * p];
    if !y.is_empty() {
        y.par_chunks_mut(c * p)
            .zip(inv_r.par_chunks_mut(p))
            .enumerate()
            .for_each(move |(i, (y, inv))| {
                let x = &xs[i * c * p..][..c * p];
                for row in x.chunks_exact(p) {
                    for (acc, v) in inv.iter_mut().zip(row) {
                        *acc += v * v;
                    }
                }
                for acc in inv.iter_mut() {
                    *acc = 1.0 / (*acc / c as f32 + eps).sqrt();
                }
                for (y, x) in y.chunks_exact_mut(p).zip(x.chunks_exact(p)) {
                    for ((y, x), inv) in y.iter_mut().zip(x).zip(inv.iter()) {
                        *y = x * inv;
                    }
                }
            });
    }
    (FlexTensor::from_data(TensorData::new(y, x.shape())), inv_r)
}

#[derive(Debug, Clone)]
struct PixelNormState {
    x: FlexTensor,
    inv_r: Vec<f32>,
}

#[derive(Debug)]
struct PixelNormBackward;

impl Backward<Flex, 1> for PixelNormBackward {
    type State = PixelNormState;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_x else { return };
        let PixelNormState { x, inv_r } = ops.state;
        let (_, c, p) = nc_rest(&x);
        let (xs, gs) = (contiguous(&x), contiguous(&grad));
        let (xs, gs, inv_r): (&[f32], &[f32], &[f32]) = (&xs, &gs, &inv_r);
        let mut gx = vec![0f32; xs.len()];
        if !gx.is_empty() {
            gx.par_chunks_mut(c * p)
                .enumerate()
                .for_each(move |(i, gx)| {
                    let (x, g) = (&xs[i * c * p..][..c * p], &gs[i * c * p..][..c * p]);
                    let inv = &inv_r[i * p..][..p];
                    // mean_c(y·g) per pixel, y = x·r⁻¹.
                    let mut dot = vec![0f32; p];
                    for (x, g) in x.chunks_exact(p).zip(g.chunks_exact(p)) {
                        for (((d, x), g), inv) in dot.iter_mut().zip(x).zip(g).zip(inv) {
                            *d += x * inv * g;
                        }
                    }
                    dot.iter_mut().for_each(|d| *d /= c as f32);
                    for ((gx, x), g) in gx
                        .chunks_exact_mut(p)
                        .zip(x.chunks_exact(p))
                        .zip(g.chunks_exact(p))
                    {
                        for ((((gx, x), g), inv), d) in
                            gx.iter_mut().zip(x).zip(g).zip(inv).zip(&dot)
                        {
                            *gx = inv * (g - x * inv * d);
                        }
                    }
                });
        }
        grads.register::<Flex>(
            node.id,
            FlexTensor::from_data(TensorData::new(gx, x.shape())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::leaky_relu;
    use burn::tensor::Distribution;

    fn random<const D: usize>(shape: [usize; D]) -> Tensor<CpuAutodiff, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn values<const D: usize>(t: Tensor<CpuAutodiff, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * scale, "{what}[{i}]: {x} vs {y}");
        }
    }

    /// Output and `∂(Σ f(x)·r)/∂x` of a fused op and of its tensor-op version.
    fn both_ways<const D: usize>(
        shape: [usize; D],
        fused: impl Fn(Tensor<CpuAutodiff, D>) -> Tensor<CpuAutodiff, D>,
        reference: impl Fn(Tensor<CpuAutodiff, D>) -> Tensor<CpuAutodiff, D>,
    ) {
        let x = random(shape);
        let r = random(shape);
        let run = |f: &dyn Fn(Tensor<CpuAutodiff, D>) -> Tensor<CpuAutodiff, D>| {
            let x = x.clone().detach().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * r.clone()).sum().backward();
            let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            (values(y), g)
        };
        let (y_fused, g_fused) = run(&fused);
        let (y_ref, g_ref) = run(&reference);
        assert_close(&format!("{shape:?} output"), &y_fused, &y_ref);
        assert_close(&format!("{shape:?} gradient"), &g_fused, &g_ref);
    }

    #[test]
    fn lrelu_matches_burns_leaky_relu() {
        let _turn = crate::graph_turn();
        both_ways(
            [3, 5, 4, 4],
            |x| lrelu_gate_autodiff(x.clone(), x, 0.2),
            |x| leaky_relu(x, 0.2),
        );
        both_ways(
            [4, 40_000],
            |x| lrelu_gate_autodiff(x.clone(), x, 0.2),
            |x| leaky_relu(x, 0.2),
        );
    }

    #[test]
    fn lrelu_gate_of_a_tangent_scales_by_the_slope_where_x_is_negative() {
        let _turn = crate::graph_turn();
        let x = random([2, 3, 5, 5]);
        // The tangent's gradient is the gate applied to the output gradient; x gets none.
        both_ways(
            [2, 3, 5, 5],
            |t| lrelu_gate_autodiff(x.clone(), t, 0.2),
            |t| {
                let negative = x.clone().lower_equal_elem(0.0);
                t.clone().mask_where(negative, t.mul_scalar(0.2))
            },
        );
    }

    /// `x / sqrt(mean_c(x²) + eps)` in burn's tensor ops.
    fn pixel_norm_ops<const D: usize>(x: Tensor<CpuAutodiff, D>) -> Tensor<CpuAutodiff, D> {
        let r = x.clone().powi_scalar(2).mean_dim(1).add_scalar(1e-8).sqrt();
        x / r
    }

    #[test]
    fn pixel_norm_matches_the_tensor_op_version() {
        let _turn = crate::graph_turn();
        let eps = 1e-8;
        both_ways(
            [3, 7, 4, 2],
            |x| pixel_norm_autodiff(x, eps),
            pixel_norm_ops,
        );
        // Latents [N, D].
        both_ways([5, 16], |x| pixel_norm_autodiff(x, eps), pixel_norm_ops);
    }

    #[test]
    fn flex_forward_matches_autodiff_forward() {
        let x = random([2, 4, 3, 3]);
        let eps = 1e-8;
        let plain = pixel_norm_flex(x.clone().inner(), eps).into_data();
        plain.assert_approx_eq::<f32>(
            &pixel_norm_autodiff(x.clone(), eps).inner().into_data(),
            Default::default(),
        );
        let gated = lrelu_gate_flex(x.clone().inner(), x.clone().inner(), 0.2).into_data();
        gated.assert_approx_eq::<f32>(&leaky_relu(x, 0.2).inner().into_data(), Default::default());
    }
}
