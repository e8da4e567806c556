//! A forward-only convolution of any kernel size, stride and zero padding, with a bias and an
//! optional ReLU, on burn's CPU backend: per-image im2col + gemm, the way [`crate::cpu_conv`]
//! computes the equalized layers' "same" convolution.
//!
//! It serves the networks that only ever run forward on the CPU: Inception-v3's 94 layers for
//! FID (1x1, 3x3, 5x5, 1x7/7x1, 1x3/3x1; stride 1 and 2; "valid" and "same" padding). burn-flex's
//! own conv repacks its weights for every NHWC tile and builds its im2col on one thread; here a
//! 1x1 stride-1 layer (a third of Inception's) multiplies the image in place, and the bias and
//! the ReLU are applied in the output while it is still in cache.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::tensors::contiguous;

/// Sizes of one convolution: input `[n, c_in, h, w]`, kernel `[c_out, c_in, kh, kw]`, the same
/// stride along both axes, `padding = [ph, pw]` zeros on each side; output
/// `[n, c_out, out_h, out_w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardConvShape {
    /// Images in the batch.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Step between output pixels, in input pixels (≥ 1).
    pub stride: usize,
    /// Zeros added above and below (`[0]`), left and right (`[1]`).
    pub padding: [usize; 2],
}

impl ForwardConvShape {
    /// Output height: `(h + 2·ph − kh) / stride + 1`, 0 when the kernel does not fit.
    pub fn out_h(&self) -> usize {
        out_len(self.h, self.kernel[0], self.stride, self.padding[0])
    }

    /// Output width: `(w + 2·pw − kw) / stride + 1`, 0 when the kernel does not fit.
    pub fn out_w(&self) -> usize {
        out_len(self.w, self.kernel[1], self.stride, self.padding[1])
    }

    fn out_hw(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Rows of the im2col matrix (the gemm's contraction length).
    fn taps(&self) -> usize {
        self.c_in * self.kernel[0] * self.kernel[1]
    }

    /// A 1x1 kernel, stride 1, no padding: the image itself is its im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == 1 && self.padding == [0, 0]
    }
}

fn out_len(size: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding)
        .checked_sub(kernel)
        .map_or(0, |room| room / stride + 1)
}

/// im2col of one image, `[C_in·kh·kw, out_h·out_w]`: row `(c, ky, kx)`, column `(oy, ox)` holds
/// input pixel `(oy·stride + ky − ph, ox·stride + kx − pw)` of channel `c`, zero outside.
fn im2col(s: &ForwardConvShape, image: &[f32], cols: &mut [f32]) {
    let (h, w) = (s.h, s.w);
    let ([kh, kw], [ph, pw], stride) = (s.kernel, s.padding, s.stride);
    let (oh, ow) = (s.out_h(), s.out_w());
    for (r, row) in cols.chunks_exact_mut(oh * ow).enumerate() {
        let (c, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
        let plane = &image[c * h * w..][..h * w];
        // Output columns whose source column ox·stride + kx − pw lies inside [0, w).
        let first = (pw.saturating_sub(kx)).div_ceil(stride).min(ow);
        let end = (w + pw)
            .checked_sub(kx)
            .map_or(0, |room| room.div_ceil(stride))
            .clamp(first, ow);
        for (oy, line) in row.chunks_exact_mut(ow).enumerate() {
            let iy = (oy * stride + ky).wrapping_sub(ph);
            if iy >= h {
                line.fill(0.0);
                continue;
            }
            let source = &plane[iy * w..][..w];
            line[..first].fill(0.0);
            line[end..].fill(0.0);
            if first == end {
                continue;
            }
            let x0 = first * stride + kx - pw;
            if stride == 1 {
                line[first..end].copy_from_slice(&source[x0..][..end - first]);
            } else {
                for (out, ix) in line[first..end].iter_mut().zip((x0..).step_by(stride)) {
                    *out = source[ix];
                }
            }
        }
    }
}

/// `y = conv(x, weight) + bias`, then `max(y, 0)` when `relu`; all NCHW / OIHW, row-major.
///
/// # Panics
/// When a slice's length does not match `s`, or the stride is 0.
pub fn forward(
    s: ForwardConvShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    assert!(s.stride >= 1, "stride 0");
    assert_eq!(x.len(), s.n * s.c_in * s.h * s.w, "input size");
    assert_eq!(weight.len(), s.c_out * s.taps(), "weight size");
    if let Some(b) = bias {
        assert_eq!(b.len(), s.c_out, "bias size");
    }
    let (ohw, taps, image_len) = (s.out_hw(), s.taps(), s.c_in * s.h * s.w);
    let mut y = vec![0f32; s.n * s.c_out * ohw];
    if y.is_empty() {
        return y;
    }
    let one_image = |cols: &mut Vec<f32>, i: usize, out: &mut [f32], par: Parallelism| {
        let image = &x[i * image_len..][..image_len];
        let rhs: &[f32] = if s.is_pointwise() {
            image
        } else {
            cols.resize(taps * ohw, 0.0);
            im2col(&s, image, cols);
            cols
        };
        if let Some(b) = bias {
            for (row, &v) in out.chunks_exact_mut(ohw).zip(b) {
                row.fill(v);
            }
        }
        // SAFETY: out is [c_out, ohw], weight [c_out, taps], rhs [taps, ohw], all row-major and
        // sized as the strides say (checked above); the three do not overlap.
        unsafe {
            gemm(
                s.c_out,
                ohw,
                taps,
                out.as_mut_ptr(),
                1,
                ohw as isize,
                bias.is_some(),
                weight.as_ptr(),
                1,
                taps as isize,
                rhs.as_ptr(),
                1,
                ohw as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        if relu {
            out.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    };
    let per_image = s.c_out * ohw;
    if s.n >= rayon::current_num_threads() {
        y.par_chunks_mut(per_image)
            .enumerate()
            .for_each_init(Vec::new, |cols, (i, out)| {
                one_image(cols, i, out, Parallelism::None)
            });
    } else {
        let mut cols = Vec::new();
        for (i, out) in y.chunks_mut(per_image).enumerate() {
            one_image(&mut cols, i, out, Parallelism::Rayon(0));
        }
    }
    y
}

/// [`forward`] on `Flex` tensors: `conv(x, weight) + bias`, then `max(·, 0)` when `relu`.
///
/// # Shapes
/// - x: `[N, C_in, H, W]`, weight: `[C_out, C_in, kh, kw]`, bias: `[C_out]`
/// - output: `[N, C_out, (H + 2·ph − kh) / stride + 1, (W + 2·pw − kw) / stride + 1]`
pub fn conv2d_flex(
    x: Tensor<Flex, 4>,
    weight: Tensor<Flex, 4>,
    bias: Option<Tensor<Flex, 1>>,
    stride: usize,
    padding: [usize; 2],
    relu: bool,
) -> Tensor<Flex, 4> {
    let primitive = |t: Tensor<Flex, 4>| -> FlexTensor { t.into_primitive().tensor() };
    let (x, weight) = (primitive(x), primitive(weight));
    let [n, c_in, h, w] = x.shape().dims::<4>();
    let [c_out, _, kh, kw] = weight.shape().dims::<4>();
    let s = ForwardConvShape {
        n,
        c_in,
        c_out,
        h,
        w,
        kernel: [kh, kw],
        stride,
        padding,
    };
    let bias = bias.map(|b| b.into_primitive().tensor());
    let y = forward(
        s,
        &contiguous(&x),
        &contiguous(&weight),
        bias.as_ref().map(contiguous).as_deref(),
        relu,
    );
    let y = FlexTensor::from_data(TensorData::new(y, [n, c_out, s.out_h(), s.out_w()]));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fill;

    /// The convolution straight from its definition, in f64.
    fn direct(
        s: ForwardConvShape,
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        relu: bool,
    ) -> Vec<f64> {
        let ([kh, kw], [ph, pw]) = (s.kernel, s.padding);
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut y = Vec::with_capacity(s.n * s.c_out * oh * ow);
        for i in 0..s.n {
            for o in 0..s.c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = b.map_or(0.0, |b| b[o] as f64);
                        for c in 0..s.c_in {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * s.stride + ky) as isize - ph as isize;
                                    let ix = (ox * s.stride + kx) as isize - pw as isize;
                                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((i * s.c_in + c) * s.h + iy as usize) * s.w
                                        + ix as usize];
                                    let wv = w[((o * s.c_in + c) * kh + ky) * kw + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y.push(if relu { acc.max(0.0) } else { acc });
                    }
                }
            }
        }
        y
    }

    fn shape(
        n: usize,
        c_in: usize,
        c_out: usize,
        [h, w]: [usize; 2],
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
    ) -> ForwardConvShape {
        ForwardConvShape {
            n,
            c_in,
            c_out,
            h,
            w,
            kernel,
            stride,
            padding,
        }
    }

    /// Every kind of layer Inception-v3 has, at small sizes, plus odd edges: a stride that
    /// skips the last input column, a kernel as large as the padded image, padding wider than
    /// the kernel's reach.
    #[test]
    fn forward_matches_the_definition() {
        let shapes = [
            shape(2, 3, 4, [9, 9], [3, 3], 2, [0, 0]),
            shape(3, 4, 5, [7, 7], [3, 3], 1, [0, 0]),
            shape(2, 4, 6, [6, 5], [3, 3], 1, [1, 1]),
            shape(2, 5, 3, [5, 5], [1, 1], 1, [0, 0]),
            shape(1, 3, 4, [6, 6], [5, 5], 1, [2, 2]),
            shape(2, 3, 2, [7, 6], [1, 7], 1, [0, 3]),
            shape(2, 3, 2, [6, 7], [7, 1], 1, [3, 0]),
            shape(1, 2, 3, [4, 5], [1, 3], 1, [0, 1]),
            shape(1, 2, 3, [5, 4], [3, 1], 1, [1, 0]),
            shape(2, 3, 3, [8, 8], [3, 3], 2, [0, 0]),
            shape(1, 2, 2, [3, 3], [5, 5], 1, [1, 1]),
            shape(1, 2, 2, [4, 4], [1, 1], 2, [2, 2]),
            shape(1, 2, 3, [2, 3], [3, 3], 3, [2, 2]),
        ];
        for (t, s) in shapes.into_iter().enumerate() {
            let x = fill(s.n * s.c_in * s.h * s.w, 1 + t as u64);
            let w = fill(s.c_out * s.taps(), 100 + t as u64);
            let b = fill(s.c_out, 200 + t as u64);
            for (bias, relu) in [(Some(&b[..]), true), (None, false), (Some(&b[..]), false)] {
                let got = forward(s, &x, &w, bias, relu);
                let want = direct(s, &x, &w, bias, relu);
                assert_eq!(got.len(), want.len(), "{s:?}: length");
                assert!(!want.is_empty(), "{s:?}: no output");
                for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{s:?} bias {} relu {relu} [{j}]: {g} vs {w}",
                        bias.is_some()
                    );
                }
            }
        }
    }

    /// A batch smaller than the thread pool runs its images one after another with a
    /// multi-threaded gemm: the same numbers as one thread.
    #[test]
    fn small_batches_on_many_threads_match_one_thread() {
        let s = shape(1, 16, 24, [13, 11], [3, 3], 1, [1, 1]);
        let x = fill(s.n * s.c_in * s.h * s.w, 5);
        let w = fill(s.c_out * s.taps(), 6);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| forward(s, &x, &w, None, true))
        };
        let (many, one) = (run(4), run(1));
        for (a, b) in many.iter().zip(&one) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn a_kernel_larger_than_the_padded_image_gives_no_pixels() {
        let s = shape(1, 1, 1, [2, 2], [5, 5], 1, [1, 1]);
        assert_eq!((s.out_h(), s.out_w()), (0, 0));
        assert!(forward(s, &[0.0; 4], &[0.0; 25], None, true).is_empty());
    }

    #[test]
    fn the_flex_tensor_op_matches_burns_conv() {
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        let device = Default::default();
        let tensor = |v: Vec<f32>, shape: [usize; 4]| {
            Tensor::<Flex, 4>::from_data(TensorData::new(v, shape), &device)
        };
        let x = tensor(fill(2 * 3 * 9 * 8, 7), [2, 3, 9, 8]);
        let w = tensor(fill(4 * 3 * 3 * 5, 8), [4, 3, 3, 5]);
        let b = Tensor::<Flex, 1>::from_data(TensorData::new(fill(4, 9), [4]), &device);
        let got = conv2d_flex(x.clone(), w.clone(), Some(b.clone()), 2, [1, 2], false);
        let want = conv2d(x, w, Some(b), ConvOptions::new([2, 2], [1, 2], [1, 1], 1));
        assert_eq!(got.dims(), want.dims());
        let (got, want) = (
            got.into_data().to_vec::<f32>().unwrap(),
            want.into_data().to_vec::<f32>().unwrap(),
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }
}
