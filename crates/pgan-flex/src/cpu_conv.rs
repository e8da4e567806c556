//! The stride-1 "same" convolution on the CPU, on NCHW `f32` slices: the kernels behind
//! [`crate::conv`]. 3x3 kernels on even-sized images (every ProGAN 3x3 layer) go to
//! [`crate::winograd`]; the rest (1x1, odd sizes, other kernels) run as im2col + gemm, one image
//! at a time.
//!
//! Why one image at a time: the im2col matrix of one image (`[C_in·k·k, H·W]`, 1.2 MB for 128
//! channels at 16x16) stays in L2, and in that layout gemm's operands need no repacking and its
//! output goes straight into the NCHW result. burn-flex's own conv works on NHWC tiles: it
//! repacks the weights for every tile and scatters every tile back into NCHW, and it builds its
//! im2col on one thread. Images run in parallel
//! (rayon), each gemm on one thread; a batch smaller than the thread pool parallelises inside
//! gemm instead.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::shape::sum_over_threads;
pub use crate::shape::ConvShape;
use crate::winograd;

/// Whether to run images in parallel (each gemm on one thread) or one after another with a
/// multi-threaded gemm.
fn images_in_parallel(n: usize) -> bool {
    n >= rayon::current_num_threads()
}

/// im2col of one image, `[C_in·k·k, H·W]`: row `(c, ky, kx)` holds channel `c` shifted by
/// `(dy, dx) = (ky - k/2, kx - k/2)`, zero outside the image.
///
/// Each row is one contiguous copy of the plane (pixel `q` reads `q + dy·W + dx`), then the
/// columns that wrapped around a row edge are zeroed: at 16x16 a copy per image row was a
/// memcpy call per 64 bytes.
fn im2col(s: &ConvShape, image: &[f32], cols: &mut [f32]) {
    let (h, w, k, hw) = (s.h as isize, s.w as isize, s.k, s.hw());
    let pad = (k / 2) as isize;
    for (r, row) in cols.chunks_exact_mut(s.pitch()).enumerate() {
        let row = &mut row[..hw];
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let plane = &image[c * hw..][..hw];
        let (dy, dx) = (ky as isize - pad, kx as isize - pad);
        // Output rows whose source row is inside the image, as a pixel range [q0, q1).
        let q0 = ((-dy).clamp(0, h) * w) as usize;
        let q1 = ((h - dy).clamp(0, h) * w).max(q0 as isize) as usize;
        // Of those, the pixels whose source index q + offset lies inside the plane.
        let offset = dy * w + dx;
        let a = (q0 as isize).max(-offset).min(q1 as isize) as usize;
        let b = (q1 as isize).min(hw as isize - offset).max(a as isize) as usize;
        row[..a].fill(0.0);
        if a < b {
            row[a..b].copy_from_slice(&plane[(a as isize + offset) as usize..][..b - a]);
        }
        row[b..].fill(0.0);
        // Columns whose source x + dx left the row read the neighbouring row: zero them.
        let (x0, x1) = if dx >= 0 {
            ((w - dx).max(0) as usize, w as usize)
        } else {
            (0, (-dx).min(w) as usize)
        };
        if x0 < x1 {
            for line in row[q0..q1].chunks_exact_mut(w as usize) {
                line[x0..x1].fill(0.0);
            }
        }
    }
}

/// `y = conv(x, scale · weight) + bias`, all NCHW / OIHW, row-major. `scale` is the equalized
/// learning rate's run-time constant, applied inside the products (gemm's `beta`, or the
/// Winograd filter transform) instead of as a separate pass over the weights.
pub fn forward(
    s: ConvShape,
    x: &[f32],
    weight: &[f32],
    scale: f32,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    s.check(x, weight);
    if let Some(b) = bias {
        assert_eq!(b.len(), s.c_out, "bias size");
    }
    if winograd::applies(&s) {
        return winograd::forward(s, x, weight, scale, bias);
    }
    let (hw, taps) = (s.hw(), s.taps());
    let mut y = vec![0f32; s.n * s.c_out * hw];
    if y.is_empty() {
        return y;
    }
    let one_image = |cols: &mut Vec<f32>, i: usize, out: &mut [f32], par: Parallelism| {
        let image = &x[i * s.c_in * hw..][..s.c_in * hw];
        // A 1x1 kernel's im2col matrix is the image itself.
        let (rhs, pitch): (&[f32], usize) = if s.k == 1 {
            (image, hw)
        } else {
            cols.resize(taps * s.pitch(), 0.0);
            im2col(&s, image, cols);
            (&cols[..], s.pitch())
        };
        if let Some(b) = bias {
            for (row, &v) in out.chunks_exact_mut(hw).zip(b) {
                row.fill(v);
            }
        }
        // SAFETY: out is [c_out, hw], weight [c_out, taps], rhs [taps, hw] with row pitch `pitch`,
        // all row-major and sized as the strides say (checked above); the three do not overlap.
        unsafe {
            gemm(
                s.c_out,
                hw,
                taps,
                out.as_mut_ptr(),
                1,
                hw as isize,
                bias.is_some(),
                weight.as_ptr(),
                1,
                taps as isize,
                rhs.as_ptr(),
                1,
                pitch as isize,
                1.0,
                scale,
                false,
                false,
                false,
                par,
            );
        }
    };
    let per_image = s.c_out * hw;
    if images_in_parallel(s.n) {
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

/// `∂L/∂x` from `∂L/∂y` of `conv(x, scale · weight)`: the output gradient convolved with the
/// kernel transposed (in ↔ out) and flipped, the same padding.
pub fn input_grad(s: ConvShape, grad: &[f32], weight: &[f32], scale: f32) -> Vec<f32> {
    if winograd::applies(&s) {
        s.transposed().check(grad, weight);
        return winograd::input_grad(s, grad, weight, scale);
    }
    let k = s.k;
    let mut flipped = vec![0f32; weight.len()];
    for o in 0..s.c_out {
        for i in 0..s.c_in {
            for ky in 0..k {
                for kx in 0..k {
                    flipped[((i * s.c_out + o) * k + k - 1 - ky) * k + k - 1 - kx] =
                        weight[((o * s.c_in + i) * k + ky) * k + kx];
                }
            }
        }
    }
    forward(s.transposed(), grad, &flipped, scale, None)
}

/// `∂L/∂w` (`[C_out, C_in, k, k]`) of `conv(x, scale · w)` from the input and `∂L/∂y`: per
/// image `scale · ∂L/∂y_i [C_out, H·W] × im2col(x_i)ᵀ`, summed over the batch.
pub fn weight_grad(s: ConvShape, x: &[f32], grad: &[f32], scale: f32) -> Vec<f32> {
    let (hw, taps) = (s.hw(), s.taps());
    assert_eq!(x.len(), s.n * s.c_in * hw, "input size");
    assert_eq!(grad.len(), s.n * s.c_out * hw, "output gradient size");
    if winograd::applies(&s) {
        return winograd::weight_grad(s, x, grad, scale);
    }
    // Images [start, end) accumulated into one [c_out, taps] matrix.
    let accumulate = |start: usize, end: usize, par: Parallelism| {
        let mut dw = vec![0f32; s.c_out * taps];
        let mut cols = Vec::new();
        for i in start..end {
            let image = &x[i * s.c_in * hw..][..s.c_in * hw];
            let (rhs, pitch): (&[f32], usize) = if s.k == 1 {
                (image, hw)
            } else {
                cols.resize(taps * s.pitch(), 0.0);
                im2col(&s, image, &mut cols);
                (&cols[..], s.pitch())
            };
            let g = &grad[i * s.c_out * hw..][..s.c_out * hw];
            // SAFETY: dw is [c_out, taps] row-major; g is [c_out, hw] row-major; rhs is
            // [taps, hw] (row pitch `pitch`), read as its transpose [hw, taps].
            unsafe {
                gemm(
                    s.c_out,
                    taps,
                    hw,
                    dw.as_mut_ptr(),
                    1,
                    taps as isize,
                    i > start,
                    g.as_ptr(),
                    1,
                    hw as isize,
                    rhs.as_ptr(),
                    pitch as isize,
                    1,
                    1.0,
                    scale,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
        dw
    };
    if s.n == 0 {
        return vec![0f32; s.c_out * taps];
    }
    if !images_in_parallel(s.n) {
        return accumulate(0, s.n, Parallelism::Rayon(0));
    }
    sum_over_threads(s.n, |start, end| accumulate(start, end, Parallelism::None))
}

/// `∂L/∂b`: the output gradient summed over batch and pixels.
pub fn bias_grad(s: ConvShape, grad: &[f32]) -> Vec<f32> {
    let hw = s.hw();
    assert_eq!(grad.len(), s.n * s.c_out * hw, "output gradient size");
    (0..s.c_out)
        .into_par_iter()
        .map(|o| {
            (0..s.n)
                .map(|i| grad[(i * s.c_out + o) * hw..][..hw].iter().sum::<f32>())
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fill;

    /// The convolution straight from its definition, in f64.
    fn direct(s: ConvShape, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f64> {
        let p = (s.k / 2) as isize;
        let mut y = vec![0f64; s.n * s.c_out * s.hw()];
        for i in 0..s.n {
            for o in 0..s.c_out {
                for yy in 0..s.h {
                    for xx in 0..s.w {
                        let mut acc = b.map_or(0.0, |b| b[o] as f64);
                        for c in 0..s.c_in {
                            for ky in 0..s.k {
                                for kx in 0..s.k {
                                    let sy = yy as isize + ky as isize - p;
                                    let sx = xx as isize + kx as isize - p;
                                    if sy < 0 || sx < 0 || sy >= s.h as isize || sx >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((i * s.c_in + c) * s.h + sy as usize) * s.w
                                        + sx as usize];
                                    let wv = w[((o * s.c_in + c) * s.k + ky) * s.k + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((i * s.c_out + o) * s.h + yy) * s.w + xx] = acc;
                    }
                }
            }
        }
        y
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 2e-5 * scale,
                "{what}[{j}]: {g} vs {w}"
            );
        }
    }

    const SHAPES: [ConvShape; 7] = [
        ConvShape {
            n: 2,
            c_in: 3,
            c_out: 5,
            h: 7,
            w: 7,
            k: 3,
        },
        ConvShape {
            n: 3,
            c_in: 4,
            c_out: 2,
            h: 4,
            w: 6,
            k: 1,
        },
        ConvShape {
            n: 1,
            c_in: 2,
            c_out: 3,
            h: 5,
            w: 5,
            k: 5,
        },
        ConvShape {
            n: 5,
            c_in: 8,
            c_out: 16,
            h: 8,
            w: 8,
            k: 3,
        },
        ConvShape {
            n: 1,
            c_in: 16,
            c_out: 4,
            h: 2,
            w: 2,
            k: 3,
        },
        ConvShape {
            n: 4,
            c_in: 3,
            c_out: 3,
            h: 1,
            w: 1,
            k: 3,
        },
        // A kernel wider than the image: shifts past both edges.
        ConvShape {
            n: 2,
            c_in: 3,
            c_out: 2,
            h: 2,
            w: 3,
            k: 5,
        },
    ];

    /// An equalized-learning-rate scale that is not 1, so a kernel that drops it fails.
    const SCALE: f32 = 0.37;

    #[test]
    fn forward_matches_the_definition() {
        for (t, s) in SHAPES.into_iter().enumerate() {
            let x = fill(s.n * s.c_in * s.hw(), 1 + t as u64);
            let w = fill(s.c_out * s.taps(), 100 + t as u64);
            let scaled: Vec<f32> = w.iter().map(|v| v * SCALE).collect();
            let b = fill(s.c_out, 200 + t as u64);
            assert_close(
                &format!("{s:?} with bias"),
                &forward(s, &x, &w, SCALE, Some(&b)),
                &direct(s, &x, &scaled, Some(&b)),
            );
            assert_close(
                &format!("{s:?}"),
                &forward(s, &x, &w, 1.0, None),
                &direct(s, &x, &w, None),
            );
        }
    }

    /// The gradients of `L = Σ y·r` are exact linear maps of `r`: check them against the
    /// definition (`∂L/∂x = Σ_o r ⋆ w`, `∂L/∂w = Σ_i r ⋆ x`, `∂L/∂b = Σ r`).
    #[test]
    fn gradients_match_the_definition() {
        for (t, s) in SHAPES.into_iter().enumerate() {
            let x = fill(s.n * s.c_in * s.hw(), 1 + t as u64);
            let w = fill(s.c_out * s.taps(), 100 + t as u64);
            let r = fill(s.n * s.c_out * s.hw(), 300 + t as u64);
            let p = (s.k / 2) as isize;

            let mut dx = vec![0f64; x.len()];
            let mut dw = vec![0f64; w.len()];
            let mut db = vec![0f64; s.c_out];
            for i in 0..s.n {
                for o in 0..s.c_out {
                    for yy in 0..s.h {
                        for xx in 0..s.w {
                            let g = r[((i * s.c_out + o) * s.h + yy) * s.w + xx] as f64;
                            db[o] += g;
                            for c in 0..s.c_in {
                                for ky in 0..s.k {
                                    for kx in 0..s.k {
                                        let sy = yy as isize + ky as isize - p;
                                        let sx = xx as isize + kx as isize - p;
                                        if sy < 0
                                            || sx < 0
                                            || sy >= s.h as isize
                                            || sx >= s.w as isize
                                        {
                                            continue;
                                        }
                                        let xi = ((i * s.c_in + c) * s.h + sy as usize) * s.w
                                            + sx as usize;
                                        let wi = ((o * s.c_in + c) * s.k + ky) * s.k + kx;
                                        dx[xi] += g * (w[wi] * SCALE) as f64;
                                        dw[wi] += g * x[xi] as f64 * SCALE as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            assert_close(&format!("dx {s:?}"), &input_grad(s, &r, &w, SCALE), &dx);
            assert_close(&format!("dw {s:?}"), &weight_grad(s, &x, &r, SCALE), &dw);
            assert_close(&format!("db {s:?}"), &bias_grad(s, &r), &db);
        }
    }

    /// Batches smaller than the thread pool take the multi-threaded-gemm path: same numbers.
    #[test]
    fn one_image_on_many_threads_matches() {
        let s = ConvShape {
            n: 1,
            c_in: 32,
            c_out: 48,
            h: 12,
            w: 12,
            k: 3,
        };
        let x = fill(s.n * s.c_in * s.hw(), 9);
        let w = fill(s.c_out * s.taps(), 10);
        let r = fill(s.n * s.c_out * s.hw(), 11);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let (y, dw) = pool.install(|| (forward(s, &x, &w, 1.0, None), weight_grad(s, &x, &r, 1.0)));
        assert_close("forward", &y, &direct(s, &x, &w, None));
        let serial = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let dw_serial = serial.install(|| weight_grad(s, &x, &r, 1.0));
        let dw_serial: Vec<f64> = dw_serial.iter().map(|&v| v as f64).collect();
        assert_close("weight grad", &dw, &dw_serial);
    }
}
