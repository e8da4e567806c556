//! Nearest 2x upsampling and 2x2 average pooling as fused, multi-threaded ops on burn's CPU
//! backend (`Flex` and `Autodiff<Flex>`).
//!
//! burn's versions on flex: the upsampling is a `reshape → expand → reshape` that flex
//! materialises element by element through a strided iterator, with a summing reduction as its
//! backward; the pooling and its backward are flex's generic 3-D pooling kernels. Both maps are
//! linear and each is the other's adjoint up to a factor 4, so two plane-parallel kernels
//! cover the four passes. Other backends keep pgan-model's tensor-op versions.

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

/// `[N, C, H, W]` → `[N, C, 2H, 2W]`, each pixel repeated 2x2 and multiplied by `scale`.
fn repeat2x2(x: &FlexTensor, scale: f32) -> FlexTensor {
    let [n, c, h, w] = x.shape().dims::<4>();
    let xs = contiguous(x);
    let mut y = vec![0f32; n * c * 4 * h * w];
    if !y.is_empty() {
        y.par_chunks_mut(4 * h * w)
            .zip(xs.par_chunks(h * w))
            .for_each(move |(y, x)| {
                for (pair, row) in y.chunks_exact_mut(4 * w).zip(x.chunks_exact(w)) {
                    let (top, bottom) = pair.split_at_mut(2 * w);
                    for (out, &v) in top.chunks_exact_mut(2).zip(row) {
                        out[0] = v * scale;
                        out[1] = v * scale;
                    }
                    bottom.copy_from_slice(top);
                }
            });
    }
    FlexTensor::from_data(TensorData::new(y, [n, c, 2 * h, 2 * w]))
}

/// `[N, C, H, W]` (even `H`, `W`) → `[N, C, H/2, W/2]`, each 2x2 block summed and multiplied by
/// `scale`.
fn pool2x2(x: &FlexTensor, scale: f32) -> FlexTensor {
    let [n, c, h, w] = x.shape().dims::<4>();
    assert!(
        h % 2 == 0 && w % 2 == 0,
        "2x2 pooling needs even sizes, got {h}x{w}"
    );
    let (ho, wo) = (h / 2, w / 2);
    let xs = contiguous(x);
    let mut y = vec![0f32; n * c * ho * wo];
    if !y.is_empty() {
        y.par_chunks_mut(ho * wo)
            .zip(xs.par_chunks(h * w))
            .for_each(move |(y, x)| {
                for (out, pair) in y.chunks_exact_mut(wo).zip(x.chunks_exact(2 * w)) {
                    let (top, bottom) = pair.split_at(w);
                    for ((o, t), b) in out
                        .iter_mut()
                        .zip(top.chunks_exact(2))
                        .zip(bottom.chunks_exact(2))
                    {
                        *o = (t[0] + t[1] + b[0] + b[1]) * scale;
                    }
                }
            });
    }
    FlexTensor::from_data(TensorData::new(y, [n, c, ho, wo]))
}

/// Which of the two maps an op is.
#[derive(Debug, Clone, Copy)]
enum Resample {
    /// Nearest-neighbour 2x upsampling; its adjoint sums 2x2 blocks.
    Up,
    /// 2x2 average pooling; its adjoint spreads a quarter to each of the 2x2 pixels.
    Down,
}

impl Resample {
    fn forward(self, x: &FlexTensor) -> FlexTensor {
        match self {
            Resample::Up => repeat2x2(x, 1.0),
            Resample::Down => pool2x2(x, 0.25),
        }
    }

    fn adjoint(self, g: &FlexTensor) -> FlexTensor {
        match self {
            Resample::Up => pool2x2(g, 1.0),
            Resample::Down => repeat2x2(g, 0.25),
        }
    }
}

#[derive(Debug)]
struct ResampleBackward(Resample);

impl Backward<Flex, 1> for ResampleBackward {
    type State = ();

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, self.0.adjoint(&grad));
        }
    }
}

fn resample_autodiff(x: Tensor<CpuAutodiff, 4>, which: Resample) -> Tensor<CpuAutodiff, 4> {
    let x = x.into_primitive().tensor();
    let y = which.forward(&x.primitive);
    let out = match ResampleBackward(which)
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

fn resample_flex(x: Tensor<Flex, 4>, which: Resample) -> Tensor<Flex, 4> {
    let y = which.forward(&x.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// Nearest 2x upsampling on `Autodiff<Flex>`.
pub fn upsample2x_autodiff(x: Tensor<CpuAutodiff, 4>) -> Tensor<CpuAutodiff, 4> {
    resample_autodiff(x, Resample::Up)
}

/// Nearest 2x upsampling on `Flex`.
pub fn upsample2x_flex(x: Tensor<Flex, 4>) -> Tensor<Flex, 4> {
    resample_flex(x, Resample::Up)
}

/// 2x2 average pooling on `Autodiff<Flex>`.
pub fn downsample2x_autodiff(x: Tensor<CpuAutodiff, 4>) -> Tensor<CpuAutodiff, 4> {
    resample_autodiff(x, Resample::Down)
}

/// 2x2 average pooling on `Flex`.
pub fn downsample2x_flex(x: Tensor<Flex, 4>) -> Tensor<Flex, 4> {
    resample_flex(x, Resample::Down)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::avg_pool2d;
    use burn::tensor::Distribution;

    fn random(shape: [usize; 4]) -> Tensor<CpuAutodiff, 4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn values(t: Tensor<CpuAutodiff, 4>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Output and `∂(Σ f(x)·r)/∂x` of a fused op and of burn's tensor-op version.
    fn both_ways(
        shape: [usize; 4],
        fused: fn(Tensor<CpuAutodiff, 4>) -> Tensor<CpuAutodiff, 4>,
        reference: fn(Tensor<CpuAutodiff, 4>) -> Tensor<CpuAutodiff, 4>,
    ) {
        let x = random(shape);
        let run = |f: fn(Tensor<CpuAutodiff, 4>) -> Tensor<CpuAutodiff, 4>| {
            let x = x.clone().detach().require_grad();
            let y = f(x.clone());
            let r = Tensor::<CpuAutodiff, 4>::random(
                y.dims(),
                Distribution::Uniform(-1.0, 1.0),
                &Default::default(),
            );
            (y, r, x)
        };
        let (y_fused, r, x_fused) = run(fused);
        let (y_ref, _, x_ref) = run(reference);
        let g_fused = x_fused
            .grad(&(y_fused.clone() * r.clone()).sum().backward())
            .unwrap();
        let g_ref = x_ref.grad(&(y_ref.clone() * r).sum().backward()).unwrap();
        let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{what}[{i}]: {a} vs {b}"
                );
            }
        };
        close(values(y_fused), values(y_ref), "output");
        close(
            g_fused.into_data().to_vec::<f32>().unwrap(),
            g_ref.into_data().to_vec::<f32>().unwrap(),
            "gradient",
        );
    }

    #[test]
    fn upsample_matches_reshape_expand() {
        let _turn = crate::graph_turn();
        for shape in [[2, 3, 4, 5], [1, 1, 1, 1], [3, 8, 8, 8]] {
            both_ways(shape, upsample2x_autodiff, |x| {
                let [n, c, h, w] = x.dims();
                x.reshape([n, c, h, 1, w, 1])
                    .expand([n, c, h, 2, w, 2])
                    .reshape([n, c, 2 * h, 2 * w])
            });
        }
    }

    #[test]
    fn downsample_matches_avg_pool2d() {
        let _turn = crate::graph_turn();
        for shape in [[2, 3, 4, 6], [1, 1, 2, 2], [3, 8, 16, 16]] {
            both_ways(shape, downsample2x_autodiff, |x| {
                avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false)
            });
        }
    }

    #[test]
    fn flex_forward_matches_autodiff_forward() {
        let x = random([2, 3, 4, 4]);
        upsample2x_flex(x.clone().inner())
            .into_data()
            .assert_eq(&upsample2x_autodiff(x.clone()).inner().into_data(), true);
        downsample2x_flex(x.clone().inner())
            .into_data()
            .assert_eq(&downsample2x_autodiff(x).inner().into_data(), true);
    }
}
