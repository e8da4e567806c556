//! Layers with the *equalized learning rate* of ProGAN (Karras et al. 2018, §4.1).
//!
//! Weights are stored as `N(0, 1)` samples and multiplied at run time by
//! the He constant `gain / sqrt(fan_in)`, so every weight sees the same
//! effective learning rate under Adam. Biases start at zero. This is why the
//! layers are written here instead of using `burn::nn::Conv2d` / `Linear`,
//! which store the already-scaled weights.

use core::f64::consts::SQRT_2;

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

use crate::kernels;

/// Configuration of an [`EqualizedConv2d`].
#[derive(Config, Debug)]
pub struct EqualizedConv2dConfig {
    /// Input and output channels.
    pub channels: [usize; 2],
    /// Square kernel size (odd; the convolution keeps the spatial size).
    pub kernel_size: usize,
    /// He gain; `sqrt(2)` for layers followed by a leaky ReLU, 1 for linear outputs (toRGB).
    #[config(default = "SQRT_2")]
    pub gain: f64,
}

/// A stride-1 "same" convolution with an equalized learning rate.
#[derive(Module, Debug)]
pub struct EqualizedConv2d<B: Backend> {
    /// Unscaled weights `[out, in, k, k]`, drawn from `N(0, 1)`.
    pub weight: Param<Tensor<B, 4>>,
    /// Bias `[out]`, initialised to zero.
    pub bias: Param<Tensor<B, 1>>,
    /// Run-time weight scale `gain / sqrt(in · k · k)`.
    pub scale: f32,
    /// Zero padding on each side, `k / 2`.
    pub padding: usize,
}

impl EqualizedConv2dConfig {
    /// Builds the layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> EqualizedConv2d<B> {
        let [c_in, c_out] = self.channels;
        let k = self.kernel_size;
        assert!(k % 2 == 1, "kernel size must be odd, got {k}");
        let fan_in = (c_in * k * k) as f64;
        EqualizedConv2d {
            weight: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([c_out, c_in, k, k], device),
            bias: Initializer::Zeros.init([c_out], device),
            scale: (self.gain / fan_in.sqrt()) as f32,
            padding: k / 2,
        }
    }
}

impl<B: Backend> EqualizedConv2d<B> {
    /// `y = conv(x, w · scale) + b`. The scale is applied inside the convolution
    /// ([`conv2d_same`]), so on the CPU the raw weight tensor is what the op sees and the
    /// transformed filters computed from it can be reused across the step's passes.
    ///
    /// # Shapes
    /// - x: `[N, C_in, H, W]`
    /// - output: `[N, C_out, H, W]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d_same(
            x,
            self.weight.val(),
            self.scale,
            Some(self.bias.val()),
            self.padding,
        )
    }

    /// Forward pass and its directional derivative along `dx`: the layer is
    /// affine, so the tangent is the convolution without the bias.
    ///
    /// # Shapes
    /// - x, dx: `[N, C_in, H, W]`
    /// - outputs: `[N, C_out, H, W]` each
    ///
    /// Where the backend has no CPU kernel of its own (the GPU backends, and the CPU with
    /// `PGAN_GENERIC_KERNELS`), primal and tangent go through one convolution of `[x; dx]`
    /// (batch `2N`, the same weight): one launch per pass instead of two, forward and backward,
    /// and one weight-gradient GEMM over both. pgan-flex's CPU conv keeps two calls: they share
    /// its cached filter transform already, and the concatenation would only add a copy.
    pub fn forward_jvp(&self, x: Tensor<B, 4>, dx: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        self.forward_jvp_with(x, dx, !kernels::has_own_conv::<B>())
    }

    /// [`forward_jvp`](Self::forward_jvp), batched into one convolution or not.
    pub(crate) fn forward_jvp_with(
        &self,
        x: Tensor<B, 4>,
        dx: Tensor<B, 4>,
        batched: bool,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let w = self.weight.val();
        if batched {
            let n = x.dims()[0];
            let both = conv2d_same(
                Tensor::cat(vec![x, dx], 0),
                w,
                self.scale,
                None,
                self.padding,
            );
            let c_out = both.dims()[1];
            let y = both.clone().narrow(0, 0, n) + self.bias.val().reshape([1, c_out, 1, 1]);
            return (y, both.narrow(0, n, n));
        }
        let y = conv2d_same(
            x,
            w.clone(),
            self.scale,
            Some(self.bias.val()),
            self.padding,
        );
        let dy = conv2d_same(dx, w, self.scale, None, self.padding);
        (y, dy)
    }
}

/// Stride-1 convolution of `x` with `weight · scale`, `padding = k / 2` ("same" for odd `k`):
/// the backend's own kernel where it has one ([`kernels::conv2d_same`]), else burn's `conv2d`
/// on the scaled weight.
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
) -> Tensor<B, 4> {
    let (x, weight, bias) = match kernels::conv2d_same(x, weight, scale, bias, padding) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    let weight = if scale == 1.0 {
        weight
    } else {
        weight.mul_scalar(scale)
    };
    conv2d(
        x,
        weight,
        bias,
        ConvOptions::new([1, 1], [padding; 2], [1, 1], 1),
    )
}

/// Configuration of an [`EqualizedLinear`].
#[derive(Config, Debug)]
pub struct EqualizedLinearConfig {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// He gain (see [`EqualizedConv2dConfig::gain`]).
    #[config(default = "SQRT_2")]
    pub gain: f64,
}

/// A dense layer with an equalized learning rate.
#[derive(Module, Debug)]
pub struct EqualizedLinear<B: Backend> {
    /// Unscaled weights `[d_input, d_output]`, drawn from `N(0, 1)`.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[d_output]`, initialised to zero.
    pub bias: Param<Tensor<B, 1>>,
    /// Run-time weight scale `gain / sqrt(d_input)`.
    pub scale: f32,
}

impl EqualizedLinearConfig {
    /// Builds the layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> EqualizedLinear<B> {
        EqualizedLinear {
            weight: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([self.d_input, self.d_output], device),
            bias: Initializer::Zeros.init([self.d_output], device),
            scale: (self.gain / (self.d_input as f64).sqrt()) as f32,
        }
    }
}

impl<B: Backend> EqualizedLinear<B> {
    /// `y = x · (W · scale) + b`.
    ///
    /// # Shapes
    /// - x: `[N, d_input]`
    /// - output: `[N, d_output]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let w = self.weight.val().mul_scalar(self.scale);
        linear(x, w, Some(self.bias.val()))
    }

    /// Forward pass and its directional derivative along `dx` (`dy = dx · W · scale`).
    ///
    /// # Shapes
    /// - x, dx: `[N, d_input]`
    /// - outputs: `[N, d_output]` each
    pub fn forward_jvp(&self, x: Tensor<B, 2>, dx: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let w = self.weight.val().mul_scalar(self.scale);
        let y = linear(x, w.clone(), Some(self.bias.val()));
        let dy = linear(dx, w, None);
        (y, dy)
    }
}

/// The He gain used by every layer that feeds a leaky ReLU.
pub const GAIN_RELU: f64 = SQRT_2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;

    /// The JVP through one convolution of `[x; dx]` gives the two-call values and the same
    /// parameter and input gradients (on the autodiff CPU backend, so both paths run through
    /// pgan-flex's conv op and its backward).
    #[test]
    fn batched_jvp_conv_equals_two_convolutions() {
        let _turn = crate::test_utils::graph_turn();
        type AB = TestAutodiffBackend;
        let device = Default::default();
        for (k, c_in, c_out) in [(3, 3, 4), (1, 5, 3)] {
            let layer = reseed(
                EqualizedConv2dConfig::new([c_in, c_out], k).init::<AB>(&device),
                k as u64,
            );
            let x = randn::<AB, 4>([3, c_in, 5, 5], 1, &device).require_grad();
            let dx = randn::<AB, 4>([3, c_in, 5, 5], 2, &device);
            let wy = randn::<AB, 4>([3, c_out, 5, 5], 3, &device);
            let wdy = randn::<AB, 4>([3, c_out, 5, 5], 4, &device);
            let run = |batched: bool| {
                let (y, dy) = layer.forward_jvp_with(x.clone(), dx.clone(), batched);
                let values = (to_vec(y.clone()), to_vec(dy.clone()));
                let grads = ((y * wy.clone()).sum() + (dy * wdy.clone()).sum()).backward();
                let g = |t: Tensor<AB, 4>| to_vec(t.grad(&grads).expect("gradient"));
                let gb = to_vec(layer.bias.val().grad(&grads).expect("bias gradient"));
                (values, g(layer.weight.val()), gb, g(x.clone()))
            };
            let (batched, separate) = (run(true), run(false));
            let what = format!("k {k}");
            assert_close(
                &batched.0 .0,
                &separate.0 .0,
                1e-5,
                1e-5,
                &format!("{what}: y"),
            );
            assert_close(
                &batched.0 .1,
                &separate.0 .1,
                1e-5,
                1e-5,
                &format!("{what}: dy"),
            );
            assert_close(
                &batched.1,
                &separate.1,
                1e-5,
                1e-5,
                &format!("{what}: dL/dw"),
            );
            assert_close(
                &batched.2,
                &separate.2,
                1e-5,
                1e-5,
                &format!("{what}: dL/db"),
            );
            assert_close(
                &batched.3,
                &separate.3,
                1e-5,
                1e-5,
                &format!("{what}: dL/dx"),
            );
        }
    }

    #[test]
    fn runtime_scale_is_he_constant() {
        let device = Default::default();
        let conv = EqualizedConv2dConfig::new([8, 4], 3).init::<TestBackend>(&device);
        assert!((conv.scale - (2.0f32 / 72.0).sqrt()).abs() < 1e-7);
        assert_eq!(conv.weight.dims(), [4, 8, 3, 3]);
        assert_eq!(to_vec(conv.bias.val()), [0.0; 4]);
        let rgb = EqualizedConv2dConfig::new([16, 3], 1)
            .with_gain(1.0)
            .init::<TestBackend>(&device);
        assert!((rgb.scale - 0.25).abs() < 1e-7);
        let dense = EqualizedLinearConfig::new(512, 16)
            .with_gain(GAIN_RELU / 4.0)
            .init::<TestBackend>(&device);
        assert!((dense.scale - (2.0f32).sqrt() / 4.0 / 512f32.sqrt()).abs() < 1e-7);
        // stored weights are unit normal, not pre-scaled
        let w = to_vec(
            EqualizedLinearConfig::new(256, 256)
                .init::<TestBackend>(&device)
                .weight
                .val(),
        );
        let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        assert!((var - 1.0).abs() < 0.05, "weight variance {var}");
    }

    #[test]
    fn forward_applies_scale_and_bias() {
        let device = Default::default();
        let conv = reseed(
            EqualizedConv2dConfig::new([2, 3], 1).init::<TestBackend>(&device),
            1,
        );
        let x = randn::<TestBackend, 4>([1, 2, 2, 2], 2, &device);
        let y = to_vec(conv.forward(x.clone()));
        let (w, b, xv) = (
            to_vec(conv.weight.val()),
            to_vec(conv.bias.val()),
            to_vec(x),
        );
        for o in 0..3 {
            for p in 0..4 {
                let expected = conv.scale * (w[o * 2] * xv[p] + w[o * 2 + 1] * xv[4 + p]) + b[o];
                assert!((y[o * 4 + p] - expected).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn jvps_match_finite_differences() {
        let device = Default::default();
        let conv = reseed(
            EqualizedConv2dConfig::new([3, 4], 3).init::<TestBackend>(&device),
            1,
        );
        let x = randn::<TestBackend, 4>([2, 3, 5, 5], 2, &device);
        let dx = randn::<TestBackend, 4>([2, 3, 5, 5], 3, &device);
        check_jvp(
            |x| conv.forward(x),
            |x, dx| conv.forward_jvp(x, dx),
            x,
            dx,
            1e-2,
            1e-3,
            "conv",
        );
        let dense = reseed(
            EqualizedLinearConfig::new(6, 5).init::<TestBackend>(&device),
            4,
        );
        let x = randn::<TestBackend, 2>([3, 6], 5, &device);
        let dx = randn::<TestBackend, 2>([3, 6], 6, &device);
        check_jvp(
            |x| dense.forward(x),
            |x, dx| dense.forward_jvp(x, dx),
            x,
            dx,
            1e-2,
            1e-3,
            "linear",
        );
    }
}
