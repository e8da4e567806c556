//! Minibatch discrimination (Salimans et al. 2016, "Improved Techniques for Training GANs",
//! arXiv:1606.03498, §3.2): an alternative to [minibatch stddev](crate::minibatch_stddev)
//! (`model.minibatch = "discrimination"`).
//!
//! For features `f(x_i) ∈ R^A` of an intermediate layer, a learned tensor `T ∈ R^{A×B×C}`
//! gives each sample `B` rows of `C` numbers, `M_i = f(x_i)·T ∈ R^{B×C}`; kernel `b` compares
//! two samples by `c_b(x_i, x_j) = exp(−‖M_{i,b} − M_{j,b}‖_L1)`, and
//! `o(x_i)_b = Σ_j c_b(x_i, x_j)` (the sum runs over the whole minibatch, `j = i` included as
//! in the paper: that term is the constant 1) is concatenated to `f(x_i)` as the next
//! layer's input. A generator that collapses makes its samples' `M` rows coincide, so its
//! `o` grows towards the batch size while the reals' stays near 1, which D can see.
//!
//! **Where it sits.** The paper leaves "some intermediate layer" open; its reference code
//! (openai/improved-gan, `train_cifar_minibatch_discrimination.py`) applies the layer to the
//! globally pooled features right before the output layer. pgan does the same in the 4x4
//! output block: `f(x)` is the hidden dense layer's output (`[N, nf(0)]`), and the output
//! layer reads `[f(x), o(x)]`. On the flattened 4x4 maps instead, `T` would be 16 times larger
//! (`16·C(0)·B·C`) for the same comparison.
//!
//! **Defaults** `B = 100` kernels of `C = 5` dimensions: the reference code's
//! `MinibatchLayer(num_kernels=100)` with its `dim_per_kernel=5` (the paper gives no values).
//!
//! **Scale.** `T` is stored as `N(0, 1)` samples and multiplied at run time by `1/sqrt(A)`,
//! the equalized learning rate of every other pgan layer ([`crate::equalized`]), so Adam
//! sees it like the rest of D.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Configuration of a [`MinibatchDiscrimination`] layer.
#[derive(Config, Debug)]
pub struct MinibatchDiscriminationConfig {
    /// Size `A` of the input features `f(x)`.
    pub features: usize,
    /// Number of kernels `B` (the number of values appended per sample).
    #[config(default = 100)]
    pub kernels: usize,
    /// Dimension `C` of each kernel's rows of `M`.
    #[config(default = 5)]
    pub kernel_dim: usize,
}

/// The minibatch-discrimination layer: `f(x_i) → [f(x_i), o(x_i)]`.
#[derive(Module, Debug)]
pub struct MinibatchDiscrimination<B: Backend> {
    /// The tensor `T`, unscaled, `[A, B, C]`, drawn from `N(0, 1)`.
    pub tensor: Param<Tensor<B, 3>>,
    /// Run-time scale of `T`, `1/sqrt(A)`.
    pub scale: f32,
}

impl MinibatchDiscriminationConfig {
    /// Builds the layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MinibatchDiscrimination<B> {
        MinibatchDiscrimination {
            tensor: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([self.features, self.kernels, self.kernel_dim], device),
            scale: (1.0 / (self.features as f64).sqrt()) as f32,
        }
    }
}

impl<B: Backend> MinibatchDiscrimination<B> {
    /// Number of kernels `B`: the values appended to each sample's features.
    pub fn kernels(&self) -> usize {
        self.tensor.dims()[1]
    }

    /// `M = f(x)·T`, laid out `[N, 1, B, C]` (sample `i` on axis 0).
    fn project(&self, features: Tensor<B, 2>) -> Tensor<B, 4> {
        let [a, b, c] = self.tensor.dims();
        let n = features.dims()[0];
        let t = self.tensor.val().reshape([a, b * c]).mul_scalar(self.scale);
        features.matmul(t).reshape([n, 1, b, c])
    }

    /// `M_{i,b} − M_{j,b}` for every pair: `[N (i), N (j), B, C]`.
    fn pairwise(m: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, _, b, c] = m.dims();
        let rows = m.clone().expand([n, n, b, c]); // M_i along j
        let columns = m.reshape([1, n, b, c]).expand([n, n, b, c]); // M_j along i
        rows - columns
    }

    /// Appends `o(x_i)_b = Σ_j exp(−‖M_{i,b} − M_{j,b}‖_L1)` to each sample's features.
    ///
    /// # Shapes
    /// - features: `[N, A]`
    /// - output: `[N, A + B]`
    pub fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, _] = features.dims();
        let m = self.project(features.clone()); // [N, 1, B, C]
        let l1 = Self::pairwise(m).abs().sum_dim(3); // [N, N, B, 1]
        let c = l1.neg().exp(); // c_b(x_i, x_j)
        let o = c.sum_dim(1).reshape([n, self.kernels()]); // Σ_j
        Tensor::cat(vec![features, o], 1)
    }

    /// [`forward`](Self::forward) and its JVP along `d_features`.
    ///
    /// With `D_ijb = Σ_c |M_ibc − M_jbc|` and `dM = df·T`:
    /// `dD_ijb = Σ_c sign(M_ibc − M_jbc)·(dM_ibc − dM_jbc)`, `dc = −c·dD`, `do_ib = Σ_j dc_ijb`.
    /// `sign` is the derivative of `|·|` away from 0; at 0 (the `j = i` terms, whose tangent
    /// `dM_i − dM_i` is 0 too) it contributes nothing. Like minibatch stddev, the sum couples
    /// the samples: one sample's tangent moves every sample's `o`.
    ///
    /// # Shapes
    /// - features, d_features: `[N, A]`
    /// - outputs: `[N, A + B]` each
    pub fn forward_jvp(
        &self,
        features: Tensor<B, 2>,
        d_features: Tensor<B, 2>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [n, _] = features.dims();
        let diff = Self::pairwise(self.project(features.clone()));
        let d_diff = Self::pairwise(self.project(d_features.clone()));
        let c = diff.clone().abs().sum_dim(3).neg().exp(); // [N, N, B, 1]
        let d_l1 = (diff.sign() * d_diff).sum_dim(3);
        let d_c = (c.clone() * d_l1).neg();
        let o = c.sum_dim(1).reshape([n, self.kernels()]);
        let d_o = d_c.sum_dim(1).reshape([n, self.kernels()]);
        (
            Tensor::cat(vec![features, o], 1),
            Tensor::cat(vec![d_features, d_o], 1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use burn::tensor::TensorData;

    fn layer(a: usize, b: usize, c: usize, seed: u64) -> MinibatchDiscrimination<TestBackend> {
        reseed(
            MinibatchDiscriminationConfig::new(a)
                .with_kernels(b)
                .with_kernel_dim(c)
                .init::<TestBackend>(&Default::default()),
            seed,
        )
    }

    /// The paper's definition, loop by loop, in f64.
    fn reference(f: &[f32], t: &[f32], [n, a, b, c]: [usize; 4]) -> Vec<f32> {
        let scale = 1.0 / (a as f64).sqrt();
        let m = |i: usize, kb: usize, kc: usize| -> f64 {
            (0..a)
                .map(|k| f[i * a + k] as f64 * t[(k * b + kb) * c + kc] as f64 * scale)
                .sum()
        };
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(f[i * a..(i + 1) * a].iter().copied());
            for kb in 0..b {
                let o: f64 = (0..n)
                    .map(|j| {
                        let l1: f64 = (0..c).map(|kc| (m(i, kb, kc) - m(j, kb, kc)).abs()).sum();
                        (-l1).exp()
                    })
                    .sum();
                out.push(o as f32);
            }
        }
        out
    }

    #[test]
    fn forward_matches_the_papers_sums() {
        let device = Default::default();
        for (n, a, b, c, seed) in [(3, 4, 2, 3, 1), (5, 6, 4, 2, 2), (1, 3, 3, 5, 3)] {
            let mbd = layer(a, b, c, seed);
            // Small features keep the kernels' distances O(1), so exp(−L1) is not negligible.
            let f = randn::<TestBackend, 2>([n, a], 10 + seed, &device).mul_scalar(0.5);
            let y = mbd.forward(f.clone());
            assert_eq!(y.dims(), [n, a + b]);
            let expected = reference(&to_vec(f), &to_vec(mbd.tensor.val()), [n, a, b, c]);
            assert_close(&to_vec(y.clone()), &expected, 1e-5, 1e-5, &format!("n={n}"));
            // every o includes its own term exp(0) = 1, and at most N
            let o = to_vec(y.narrow(1, a, b));
            assert!(o.iter().all(|v| (1.0 - 1e-6..=n as f32 + 1e-5).contains(v)));
            if n > 1 {
                assert!(
                    o.iter().any(|v| *v > 1.0 + 1e-3),
                    "cross terms vanish: {o:?}"
                );
            }
        }
    }

    #[test]
    fn identical_samples_see_the_whole_batch() {
        // A collapsed batch: every M row equal, so every c is 1 and o = N.
        let device = Default::default();
        let mbd = layer(4, 3, 2, 5);
        let one = randn::<TestBackend, 2>([1, 4], 6, &device);
        let y = mbd.forward(one.repeat_dim(0, 6));
        let o = to_vec(y.narrow(1, 4, 3));
        assert_close(&o, &[6.0; 18], 1e-5, 0.0, "collapsed batch");
    }

    #[test]
    fn jvp_matches_finite_differences_including_sample_coupling() {
        let device = Default::default();
        for (n, seed) in [(4, 1u64), (6, 2)] {
            let (a, b, c) = (5, 3, 4);
            let mbd = layer(a, b, c, seed);
            let f = randn::<TestBackend, 2>([n, a], 20 + seed, &device).mul_scalar(0.5);
            let df = randn::<TestBackend, 2>([n, a], 30 + seed, &device);
            check_jvp(
                |f| mbd.forward(f),
                |f, df| mbd.forward_jvp(f, df),
                f.clone(),
                df,
                1e-3,
                3e-3,
                &format!("minibatch discrimination n={n}"),
            );
            // A tangent on sample 0 alone moves every sample's o (the sum over j couples them).
            let mut one = vec![0.0f32; n * a];
            one[..a].copy_from_slice(&to_vec(randn::<TestBackend, 1>([a], 99, &device)));
            let df0 = Tensor::<TestBackend, 2>::from_data(TensorData::new(one, [n, a]), &device);
            let (_, dy) = mbd.forward_jvp(f, df0);
            let d_o = to_vec(dy.narrow(1, a, b));
            for s in 0..n {
                let moved = d_o[s * b..(s + 1) * b].iter().any(|v| v.abs() > 1e-7);
                assert!(moved, "n={n}: sample {s}'s o did not move: {d_o:?}");
            }
        }
    }

    /// `Σ w·J·v` from forward mode equals `⟨∇ Σ w·y, v⟩` from reverse mode.
    #[test]
    fn jvp_matches_reverse_mode() {
        let _turn = crate::test_utils::graph_turn();
        type AB = TestAutodiffBackend;
        let device = Default::default();
        let mbd = reseed(
            MinibatchDiscriminationConfig::new(5)
                .with_kernels(3)
                .with_kernel_dim(2)
                .init::<AB>(&device),
            7,
        );
        let f = randn::<AB, 2>([4, 5], 8, &device).mul_scalar(0.5);
        let v = randn::<AB, 2>([4, 5], 9, &device);
        let w = randn::<AB, 2>([4, 8], 10, &device);
        let (_, dy) = mbd.forward_jvp(f.clone(), v.clone());
        let forward_mode = to_vec((dy * w.clone()).sum())[0];
        let x = f.require_grad();
        let grads = (mbd.forward(x.clone()) * w).sum().backward();
        let reverse_mode = to_vec((x.grad(&grads).unwrap() * v.inner()).sum())[0];
        assert!(
            (forward_mode - reverse_mode).abs() <= 1e-4 * (1.0 + reverse_mode.abs()),
            "{forward_mode} vs {reverse_mode}"
        );
        assert!(reverse_mode.abs() > 1e-3, "trivially zero");
    }
}
