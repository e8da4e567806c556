//! Inception-v3 as the TF "2015-12-05" graph computes it, on any burn backend: the stem, three
//! A blocks (35x35), one B (reduction to 17x17), four C blocks (factorised 7x7), one D
//! (reduction to 8x8), two E blocks and the 8x8 average pool, giving the 2048-d `pool3`
//! features. Two details of that graph that torchvision's Inception-v3 does not share, both
//! kept here because the published FIDs depend on them: the average pools inside the blocks
//! divide by the number of valid (unpadded) pixels, and the last E block's pooling branch
//! takes a 3x3 max instead of an average.

use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use pgan_model::kernels::{self, PoolReduce};

use crate::weights::{ConvSpec, InceptionWeights, BN_EPSILON, CONV_LAYERS};

/// Input side length of the network.
pub const INPUT_SIZE: usize = 299;

/// Length of the `pool3` feature vector.
pub const FEATURE_DIM: usize = 2048;

/// One convolution with its batch norm folded in, then a ReLU.
///
/// The TF graph computes `relu((conv(x, w) - mean) / sqrt(var + ε) + beta)`; folded, that is
/// `relu(conv(x, w · s) + (beta - mean · s))` with `s = 1 / sqrt(var + ε)` per output channel
/// (the same result up to float rounding; one pass fewer).
#[derive(Clone, Debug)]
pub struct ConvBn<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    options: ConvOptions<2>,
}

impl<B: Backend> ConvBn<B> {
    /// The layer `spec` with weights from `weights`.
    pub fn new(spec: &ConvSpec, weights: &InceptionWeights, device: &B::Device) -> Self {
        let w = weights.layer(spec.name);
        let [kh, kw] = spec.kernel;
        let per_out = spec.in_channels * kh * kw;
        let mut folded = Vec::with_capacity(w.weight.len());
        let mut bias = Vec::with_capacity(spec.out_channels);
        for o in 0..spec.out_channels {
            let scale = 1.0 / (w.var[o] as f64 + BN_EPSILON).sqrt();
            folded.extend(
                w.weight[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|v| (*v as f64 * scale) as f32),
            );
            bias.push((w.beta[o] as f64 - w.mean[o] as f64 * scale) as f32);
        }
        ConvBn {
            weight: Tensor::from_data(
                TensorData::new(folded, [spec.out_channels, spec.in_channels, kh, kw]),
                device,
            ),
            bias: Tensor::from_data(TensorData::new(bias, [spec.out_channels]), device),
            options: ConvOptions::new([spec.stride; 2], spec.padding, [1, 1], 1),
        }
    }

    /// # Shapes
    /// `[n, in, h, w]` → `[n, out, h', w']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [stride, _] = self.options.stride;
        match kernels::conv2d_forward(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            stride,
            self.options.padding,
            true,
        ) {
            Ok(y) => y,
            Err((x, weight, bias)) => relu(conv2d(x, weight, bias, self.options.clone())),
        }
    }
}

/// 3x3 average pool, stride 1, padding 1, dividing by the number of unpadded pixels.
fn avg_pool_3x3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    kernels::pool2d(x, 3, 1, 1, PoolReduce::MeanOfPixels)
        .unwrap_or_else(|x| avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false))
}

/// 3x3 max pool with the given stride and padding.
fn max_pool_3x3<B: Backend>(x: Tensor<B, 4>, stride: usize, padding: usize) -> Tensor<B, 4> {
    kernels::pool2d(x, 3, stride, padding, PoolReduce::Max)
        .unwrap_or_else(|x| max_pool2d(x, [3, 3], [stride; 2], [padding; 2], [1, 1], false))
}

/// The 8x8 average that turns the last block's `[n, 2048, 8, 8]` into the features.
fn avg_pool_8x8<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    kernels::pool2d(x, 8, 8, 0, PoolReduce::MeanOfWindow)
        .unwrap_or_else(|x| avg_pool2d(x, [8, 8], [8, 8], [0, 0], true, false))
}

/// The branches' outputs side by side along channels, in order.
fn concat<B: Backend>(parts: Vec<Tensor<B, 4>>) -> Tensor<B, 4> {
    kernels::concat_channels(parts).unwrap_or_else(|parts| Tensor::cat(parts, 1))
}

/// A chain of convolutions.
#[derive(Clone, Debug)]
struct Tower<B: Backend>(Vec<ConvBn<B>>);

impl<B: Backend> Tower<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.0.iter().fold(x, |x, conv| conv.forward(x))
    }
}

/// Which pooling the E block's fourth branch uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EPool {
    Average,
    Max,
}

#[derive(Clone, Debug)]
enum Block<B: Backend> {
    /// 1x1 | 1x1 → 5x5 | 1x1 → 3x3 → 3x3 | avg → 1x1 (A), or the 1x1 → 7x7-factorised
    /// variants (C): one shape, concatenated in this order.
    Four {
        conv: ConvBn<B>,
        tower: Tower<B>,
        tower_1: Tower<B>,
        tower_2: ConvBn<B>,
    },
    /// Reductions: 3x3/2 | tower | 3x3/2 max pool (B, with `conv`), or tower | tower | max
    /// pool (D, without).
    Reduction {
        conv: Option<ConvBn<B>>,
        tower: Tower<B>,
        tower_1: Option<Tower<B>>,
    },
    /// 1x1 | 1x1 → (1x3, 3x1) | 1x1 → 3x3 → (1x3, 3x1) | pool → 1x1.
    E {
        convs: Box<[ConvBn<B>; 9]>,
        pool: EPool,
    },
}

impl<B: Backend> Block<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Block::Four {
                conv,
                tower,
                tower_1,
                tower_2,
            } => concat(vec![
                conv.forward(x.clone()),
                tower.forward(x.clone()),
                tower_1.forward(x.clone()),
                tower_2.forward(avg_pool_3x3(x)),
            ]),
            Block::Reduction {
                conv,
                tower,
                tower_1,
            } => {
                let mut parts = Vec::with_capacity(3);
                if let Some(conv) = conv {
                    parts.push(conv.forward(x.clone()));
                }
                parts.push(tower.forward(x.clone()));
                if let Some(tower_1) = tower_1 {
                    parts.push(tower_1.forward(x.clone()));
                }
                parts.push(max_pool_3x3(x, 2, 0));
                concat(parts)
            }
            Block::E { convs, pool } => {
                let [conv, tower_conv, tower_mixed_conv, tower_mixed_conv_1, tower_1_conv, tower_1_conv_1, tower_1_mixed_conv, tower_1_mixed_conv_1, tower_2_conv] =
                    &**convs;
                let a = tower_conv.forward(x.clone());
                let b = tower_1_conv_1.forward(tower_1_conv.forward(x.clone()));
                let pooled = match pool {
                    EPool::Average => avg_pool_3x3(x.clone()),
                    EPool::Max => max_pool_3x3(x.clone(), 1, 1),
                };
                concat(vec![
                    conv.forward(x),
                    tower_mixed_conv.forward(a.clone()),
                    tower_mixed_conv_1.forward(a),
                    tower_1_mixed_conv.forward(b.clone()),
                    tower_1_mixed_conv_1.forward(b),
                    tower_2_conv.forward(pooled),
                ])
            }
        }
    }
}

/// The network up to `pool3`.
#[derive(Clone, Debug)]
pub struct InceptionV3<B: Backend> {
    stem: [ConvBn<B>; 5],
    blocks: Vec<Block<B>>,
}

impl<B: Backend> InceptionV3<B> {
    /// The network with `weights` on `device`.
    pub fn new(weights: &InceptionWeights, device: &B::Device) -> Self {
        let conv = |name: &str| {
            let spec = CONV_LAYERS
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no inception layer {name}"));
            ConvBn::new(spec, weights, device)
        };
        let tower = |prefix: &str, n: usize| {
            Tower(
                (0..n)
                    .map(|i| match i {
                        0 => conv(&format!("{prefix}.conv")),
                        i => conv(&format!("{prefix}.conv_{i}")),
                    })
                    .collect(),
            )
        };
        let four = |m: &str, tower_len: usize, tower_1_len: usize| Block::Four {
            conv: conv(&format!("{m}.conv")),
            tower: tower(&format!("{m}.tower"), tower_len),
            tower_1: tower(&format!("{m}.tower_1"), tower_1_len),
            tower_2: conv(&format!("{m}.tower_2.conv")),
        };
        let e = |m: &str, pool: EPool| Block::E {
            convs: Box::new(
                [
                    "conv",
                    "tower_conv",
                    "tower_mixed_conv",
                    "tower_mixed_conv_1",
                    "tower_1_conv",
                    "tower_1_conv_1",
                    "tower_1_mixed_conv",
                    "tower_1_mixed_conv_1",
                    "tower_2_conv",
                ]
                .map(|c| conv(&format!("{m}.{c}"))),
            ),
            pool,
        };
        let blocks = vec![
            four("mixed", 2, 3),
            four("mixed_1", 2, 3),
            four("mixed_2", 2, 3),
            Block::Reduction {
                conv: Some(conv("mixed_3.conv")),
                tower: tower("mixed_3.tower", 3),
                tower_1: None,
            },
            four("mixed_4", 3, 5),
            four("mixed_5", 3, 5),
            four("mixed_6", 3, 5),
            four("mixed_7", 3, 5),
            Block::Reduction {
                conv: None,
                tower: tower("mixed_8.tower", 2),
                tower_1: Some(tower("mixed_8.tower_1", 4)),
            },
            e("mixed_9", EPool::Average),
            e("mixed_10", EPool::Max),
        ];
        InceptionV3 {
            stem: ["conv", "conv_1", "conv_2", "conv_3", "conv_4"].map(conv),
            blocks,
        }
    }

    /// `pool3` features of images already resized to 299x299 and scaled to the network's range
    /// (`pixel / 128 - 1` for 8-bit pixels).
    ///
    /// # Shapes
    /// `[n, 3, 299, 299]` → `[n, 2048]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, h, w] = images.dims();
        assert!(
            c == 3 && h == INPUT_SIZE && w == INPUT_SIZE,
            "inception input must be [n, 3, 299, 299], got [{n}, {c}, {h}, {w}]"
        );
        // [n, 2048, 8, 8] → the 8x8 average.
        avg_pool_8x8(self.trunk(images)).reshape([n, FEATURE_DIM])
    }

    /// The stem and the eleven blocks, on any input of at least 75x75 (the tests run every
    /// layer on smaller images than the 299x299 that [`forward`](Self::forward) requires).
    ///
    /// # Shapes
    /// `[n, 3, 299, 299]` → `[n, 2048, 8, 8]`; `[n, 3, 75, 75]` → `[n, 2048, 1, 1]`.
    pub(crate) fn trunk(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let [conv, conv_1, conv_2, conv_3, conv_4] = &self.stem;
        let x = conv_2.forward(conv_1.forward(conv.forward(images)));
        let x = max_pool_3x3(x, 2, 0);
        let x = conv_4.forward(conv_3.forward(x));
        let x = max_pool_3x3(x, 2, 0);
        self.blocks.iter().fold(x, |x, block| block.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{synthetic_weights, TestBackend};

    fn tensor(values: Vec<f32>, shape: [usize; 4]) -> Tensor<TestBackend, 4> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn values<const D: usize>(t: Tensor<TestBackend, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// A 1x1 layer on one input channel: relu((2x - 1) / sqrt(3 + 0.001) + 0.5).
    #[test]
    fn conv_bn_folds_the_batch_norm_as_the_graph_computes_it() {
        let spec = ConvSpec {
            name: "conv_3",
            out_channels: 1,
            in_channels: 1,
            kernel: [1, 1],
            stride: 1,
            padding: [0, 0],
        };
        let mut layers = std::collections::HashMap::new();
        layers.insert(
            "conv_3",
            crate::weights::ConvWeights {
                weight: vec![2.0],
                beta: vec![0.5],
                mean: vec![1.0],
                var: vec![3.0],
            },
        );
        let weights = InceptionWeights::from_layers_for_tests(layers);
        let layer = ConvBn::<TestBackend>::new(&spec, &weights, &Default::default());
        let x = [-1.0f32, 0.0, 0.25, 3.0];
        let got = values(layer.forward(tensor(x.to_vec(), [1, 1, 2, 2])));
        for (g, x) in got.iter().zip(x) {
            let want = ((2.0 * x as f64 - 1.0) / 3.001f64.sqrt() + 0.5).max(0.0);
            assert!((*g as f64 - want).abs() < 1e-6, "{g} vs {want}");
        }
        // -1 → (-3)/1.7323 + 0.5 < 0: the ReLU cuts it.
        assert_eq!(got[0], 0.0);
    }

    #[test]
    fn block_average_pool_divides_by_the_unpadded_pixels() {
        // 3x3 image 1..9: the corner's window holds 1, 2, 4, 5 → 3 (not 12/9).
        let x = tensor((1..=9).map(|v| v as f32).collect(), [1, 1, 3, 3]);
        let got = values(avg_pool_3x3(x));
        assert_eq!(got[0], 3.0);
        assert_eq!(got[4], 5.0);
        // The edge centre (0, 1): 1, 2, 3, 4, 5, 6 → 3.5.
        assert_eq!(got[1], 3.5);
    }

    #[test]
    fn reduction_max_pool_halves_without_padding() {
        // 5x5 ramp: windows at (0,0) and (0,2), (2,0), (2,2) → their bottom-right values.
        let x = tensor((0..25).map(|v| v as f32).collect(), [1, 1, 5, 5]);
        assert_eq!(values(max_pool_3x3(x, 2, 0)), [12.0, 14.0, 22.0, 24.0]);
    }

    /// On the CPU the layers run pgan-flex's forward-only conv, pools and concatenation;
    /// `Autodiff<Flex>` takes burn's own ops (the kernels serve plain `Flex` only). Both
    /// through every layer, at a size where the 1x7/7x1 layers' padding and the E blocks' pools
    /// reach past the edges (107x107: the C blocks at 5x5, the E blocks at 2x2).
    #[test]
    fn pgan_flex_kernels_match_burns_ops_through_every_layer() {
        type Burn = burn::backend::Autodiff<TestBackend>;
        let weights = synthetic_weights(7);
        let side = 107;
        let values_in: Vec<f32> = (0..2 * 3 * side * side)
            .map(|i| (i as f32 * 0.0137).sin())
            .collect();
        let shape = [2, 3, side, side];
        let ours = InceptionV3::<TestBackend>::new(&weights, &Default::default())
            .trunk(tensor(values_in.clone(), shape));
        let theirs = InceptionV3::<Burn>::new(&weights, &Default::default()).trunk(
            Tensor::from_data(TensorData::new(values_in, shape), &Default::default()),
        );
        assert_eq!(ours.dims(), [2, 2048, 2, 2]);
        assert_eq!(ours.dims(), theirs.dims());
        let (ours, theirs) = (values(ours), theirs.into_data().to_vec::<f32>().unwrap());
        let scale = theirs.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (j, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "[{j}]: {a} vs {b} (scale {scale})"
            );
        }
        assert!(theirs.iter().any(|v| *v > 0.0), "all features are zero");
    }

    #[test]
    fn full_network_gives_2048_features_per_image_in_batch_order() {
        let weights = synthetic_weights(3);
        let device = Default::default();
        let net = InceptionV3::<TestBackend>::new(&weights, &device);
        let n = INPUT_SIZE * INPUT_SIZE;
        let image = |phase: f32| -> Vec<f32> {
            (0..3 * n)
                .map(|i| (i as f32 * 0.001 + phase).sin())
                .collect()
        };
        let both: Vec<f32> = image(0.0).into_iter().chain(image(1.0)).collect();
        let features = values(net.forward(tensor(both, [2, 3, INPUT_SIZE, INPUT_SIZE])));
        assert_eq!(features.len(), 2 * FEATURE_DIM);
        let alone = values(net.forward(tensor(image(1.0), [1, 3, INPUT_SIZE, INPUT_SIZE])));
        for (a, b) in features[FEATURE_DIM..].iter().zip(&alone) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        assert!(features.iter().all(|v| v.is_finite() && *v >= 0.0));
        assert!(features.iter().any(|v| *v > 0.0), "all features are zero");
    }
}
