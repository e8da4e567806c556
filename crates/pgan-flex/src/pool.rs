//! Max and average pooling of any square window, stride and zero padding, forward only, and the
//! concatenation of feature maps along channels, on burn's CPU backend: Inception-v3's 3x3
//! pools (stride 1 and 2), its 8x8 average and its branch concatenations, for FID.
//!
//! burn-flex computes a max pool through its 3-D pooling kernel with the arg-max indices it
//! needs only for a backward pass, and an average pool through the same kernel one window at a
//! time; both took longer than Inception's convolutions. Here a window is reduced separably
//! (along rows, then along columns), one plane per task. burn-flex's concatenation copies on
//! one thread; here each image's parts are copied on their own task.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use crate::tensors::contiguous;

/// How a window's pixels become one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// The largest pixel inside the image (padding is never chosen).
    Max,
    /// The mean of the window's pixels inside the image: padding neither adds nor counts
    /// (burn's and PyTorch's `count_include_pad = false`).
    MeanOfPixels,
    /// The sum of the window's pixels divided by its `k·k` places, padding counted as zeros
    /// (`count_include_pad = true`).
    MeanOfWindow,
}

/// Sizes of one pooling: `planes` planes of `h × w`, a `kernel × kernel` window moved by
/// `stride`, `padding` on every side; `out = (size + 2·padding − kernel) / stride + 1` per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Planes (images × channels).
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window side.
    pub kernel: usize,
    /// Step between windows (≥ 1).
    pub stride: usize,
    /// Padding on every side (less than `kernel`, so every window holds a pixel).
    pub padding: usize,
}

impl PoolShape {
    /// Output height (0 when the window does not fit).
    pub fn out_h(&self) -> usize {
        out_len(self.h, self)
    }

    /// Output width (0 when the window does not fit).
    pub fn out_w(&self) -> usize {
        out_len(self.w, self)
    }
}

fn out_len(size: usize, s: &PoolShape) -> usize {
    (size + 2 * s.padding)
        .checked_sub(s.kernel)
        .map_or(0, |room| room / s.stride + 1)
}

/// The input indices `[start, end)` the window of output `o` covers along an axis of `size`.
fn window(o: usize, size: usize, s: &PoolShape) -> (usize, usize) {
    let first = o * s.stride;
    (
        first.saturating_sub(s.padding).min(size),
        (first + s.kernel).saturating_sub(s.padding).min(size),
    )
}

/// Pools every plane of `x` (`[planes, h, w]`, row-major) into `[planes, out_h, out_w]`.
///
/// # Panics
/// When `x`'s length does not match `s`, the stride is 0, the image is empty, or the padding is
/// not less than the kernel (a window of padding alone has no value).
pub fn pool(s: PoolShape, x: &[f32], reduce: Reduce) -> Vec<f32> {
    assert!(s.stride >= 1, "stride 0");
    assert!(
        s.padding < s.kernel,
        "padding {} not less than the window {}",
        s.padding,
        s.kernel
    );
    assert_eq!(x.len(), s.planes * s.h * s.w, "input size");
    assert!(
        s.h > 0 && s.w > 0,
        "pooling an empty {}x{} image: no window holds a pixel",
        s.h,
        s.w
    );
    match reduce {
        Reduce::Max => pool_with(s, x, reduce, f32::NEG_INFINITY, f32::max),
        Reduce::MeanOfPixels | Reduce::MeanOfWindow => pool_with(s, x, reduce, 0.0, |a, b| a + b),
    }
}

/// [`pool`]'s body for one reduction, `combine` inlined into both passes.
fn pool_with(
    s: PoolShape,
    x: &[f32],
    reduce: Reduce,
    start: f32,
    combine: impl Fn(f32, f32) -> f32 + Copy + Sync,
) -> Vec<f32> {
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut y = vec![0f32; s.planes * oh * ow];
    if y.is_empty() {
        return y;
    }
    let columns: Vec<(usize, usize)> = (0..ow).map(|o| window(o, s.w, &s)).collect();
    let rows: Vec<(usize, usize)> = (0..oh).map(|o| window(o, s.h, &s)).collect();
    let whole_window = 1.0 / (s.kernel * s.kernel) as f32;
    y.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(s.h * s.w))
        .with_min_len(8)
        .for_each_init(Vec::new, |across, (out, plane)| {
            // Each input row reduced over the windows' columns: [h, ow].
            across.clear();
            for line in plane.chunks_exact(s.w) {
                across.extend(
                    columns
                        .iter()
                        .map(|&(a, b)| line[a..b].iter().fold(start, |m, &v| combine(m, v))),
                );
            }
            for (line, &(a, b)) in out.chunks_exact_mut(ow).zip(&rows) {
                line.fill(start);
                for source in across[a * ow..b * ow].chunks_exact(ow) {
                    for (o, &v) in line.iter_mut().zip(source) {
                        *o = combine(*o, v);
                    }
                }
                match reduce {
                    Reduce::Max => {}
                    Reduce::MeanOfWindow => line.iter_mut().for_each(|o| *o *= whole_window),
                    Reduce::MeanOfPixels => {
                        for (o, &(c0, c1)) in line.iter_mut().zip(&columns) {
                            *o /= ((b - a) * (c1 - c0)) as f32;
                        }
                    }
                }
            }
        });
    y
}

/// [`pool`] on a `Flex` tensor.
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, (H + 2·padding − kernel) / stride + 1, (W + 2·padding − kernel) / stride + 1]`
pub fn pool2d_flex(
    x: Tensor<Flex, 4>,
    kernel: usize,
    stride: usize,
    padding: usize,
    reduce: Reduce,
) -> Tensor<Flex, 4> {
    let x: FlexTensor = x.into_primitive().tensor();
    let [n, c, h, w] = x.shape().dims::<4>();
    let s = PoolShape {
        planes: n * c,
        h,
        w,
        kernel,
        stride,
        padding,
    };
    let y = pool(s, &contiguous(&x), reduce);
    let y = FlexTensor::from_data(TensorData::new(y, [n, c, s.out_h(), s.out_w()]));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// Feature maps of the same batch and size side by side along channels, in the given order.
///
/// # Shapes
/// `[N, C_i, H, W]` each → `[N, Σ C_i, H, W]`
///
/// # Panics
/// When `parts` is empty or their batch or spatial sizes differ.
pub fn concat_channels_flex(parts: Vec<Tensor<Flex, 4>>) -> Tensor<Flex, 4> {
    let parts: Vec<FlexTensor> = parts
        .into_iter()
        .map(|p| p.into_primitive().tensor())
        .collect();
    let [n, _, h, w] = parts
        .first()
        .expect("at least one part")
        .shape()
        .dims::<4>();
    let channels: Vec<usize> = parts
        .iter()
        .map(|p| {
            let [pn, pc, ph, pw] = p.shape().dims::<4>();
            assert_eq!([pn, ph, pw], [n, h, w], "parts of different sizes");
            pc
        })
        .collect();
    let total: usize = channels.iter().sum();
    let values: Vec<_> = parts.iter().map(contiguous).collect();
    let hw = h * w;
    let mut y = vec![0f32; n * total * hw];
    if !y.is_empty() {
        y.par_chunks_mut(total * hw)
            .enumerate()
            .for_each(|(i, image)| {
                let mut rest = image;
                for (part, &c) in values.iter().zip(&channels) {
                    let (here, after) = rest.split_at_mut(c * hw);
                    here.copy_from_slice(&part[i * c * hw..][..c * hw]);
                    rest = after;
                }
            });
    }
    let y = FlexTensor::from_data(TensorData::new(y, [n, total, h, w]));
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fill;
    use burn::tensor::module::{avg_pool2d, max_pool2d};

    fn tensor(values: Vec<f32>, shape: [usize; 4]) -> Tensor<Flex, 4> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn assert_close(what: &str, got: Tensor<Flex, 4>, want: Tensor<Flex, 4>) {
        assert_eq!(got.dims(), want.dims(), "{what}: shape");
        let (got, want) = (
            got.into_data().to_vec::<f32>().unwrap(),
            want.into_data().to_vec::<f32>().unwrap(),
        );
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "{what}[{j}]: {g} vs {w}"
            );
        }
    }

    /// Inception's pools, plus odd sizes, strides that skip the last row and windows as large
    /// as the padded image, against burn's own pooling.
    #[test]
    fn pools_match_burns() {
        let cases = [
            ([2, 3, 7, 7], 3, 1, 1),
            ([2, 3, 9, 9], 3, 2, 0),
            ([1, 2, 8, 8], 3, 2, 0),
            ([1, 2, 6, 5], 3, 2, 1),
            ([2, 4, 8, 8], 8, 8, 0),
            ([1, 3, 5, 7], 2, 3, 1),
            ([1, 1, 2, 2], 4, 1, 1),
            ([1, 1, 1, 1], 3, 1, 1),
        ];
        for (t, (shape, k, s, p)) in cases.into_iter().enumerate() {
            let x = tensor(fill(shape.iter().product(), t as u64 + 1), shape);
            let case = format!("{shape:?} k{k} s{s} p{p}");
            assert_close(
                &format!("max {case}"),
                pool2d_flex(x.clone(), k, s, p, Reduce::Max),
                max_pool2d(x.clone(), [k, k], [s, s], [p, p], [1, 1], false),
            );
            assert_close(
                &format!("mean of pixels {case}"),
                pool2d_flex(x.clone(), k, s, p, Reduce::MeanOfPixels),
                avg_pool2d(x.clone(), [k, k], [s, s], [p, p], false, false),
            );
            assert_close(
                &format!("mean of window {case}"),
                pool2d_flex(x.clone(), k, s, p, Reduce::MeanOfWindow),
                avg_pool2d(x, [k, k], [s, s], [p, p], true, false),
            );
        }
    }

    #[test]
    fn a_window_larger_than_the_padded_image_gives_no_pixels() {
        let x = tensor(vec![1.0; 4], [1, 1, 2, 2]);
        assert_eq!(pool2d_flex(x, 5, 1, 1, Reduce::Max).dims(), [1, 1, 0, 0]);
    }

    #[test]
    fn concatenation_matches_burns() {
        let parts: Vec<_> = [2, 1, 3]
            .into_iter()
            .enumerate()
            .map(|(t, c)| tensor(fill(3 * c * 4 * 5, 10 + t as u64), [3, c, 4, 5]))
            .collect();
        assert_close(
            "concat",
            concat_channels_flex(parts.clone()),
            Tensor::cat(parts, 1),
        );
    }
}
