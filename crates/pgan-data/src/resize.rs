//! Separable Lanczos-3 resampling of interleaved 8-bit images.
//!
//! `image::imageops::resize` converts every pixel to `Rgba<f32>` and is the
//! bottleneck of ingestion, so this module implements the same filter with
//! precomputed per-column/per-row weight tables over raw `u8` buffers.
//!
//! The kernel is `sinc(x) * sinc(x / 3)` for `|x| < 3` (Lanczos with a = 3,
//! see Duchon, "Lanczos filtering in one and two dimensions", 1979). When
//! shrinking, the kernel is stretched by the scale factor so it acts as an
//! anti-aliasing low-pass filter; this is the same convention as Pillow's
//! `Image.resize(..., LANCZOS)` (libImaging/Resample.c), so results are close
//! to Pillow's but not bit-identical (Pillow uses fixed-point accumulation).

/// Half-width of the Lanczos-3 kernel in source pixels at scale 1.
const SUPPORT: f64 = 3.0;

/// A rectangle of the source image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

fn lanczos3(x: f64) -> f64 {
    if x.abs() < SUPPORT {
        sinc(x) * sinc(x / SUPPORT)
    } else {
        0.0
    }
}

/// Normalised filter taps for every output coordinate along one axis.
struct Taps {
    /// First source index (absolute) read by output `i`.
    start: Vec<usize>,
    /// Number of taps actually used by output `i`.
    count: Vec<usize>,
    /// `stride` weights per output; entries past `count[i]` are zero.
    weights: Vec<f32>,
    stride: usize,
}

impl Taps {
    /// Taps mapping the source span `[origin, origin + src_len)` onto `dst_len` outputs.
    fn new(origin: usize, src_len: usize, dst_len: usize) -> Taps {
        let scale = src_len as f64 / dst_len as f64;
        let filter_scale = scale.max(1.0);
        let support = SUPPORT * filter_scale;
        let stride = (support * 2.0).ceil() as usize + 1;
        let mut t = Taps {
            start: Vec::with_capacity(dst_len),
            count: Vec::with_capacity(dst_len),
            weights: vec![0.0; dst_len * stride],
            stride,
        };
        for i in 0..dst_len {
            // Pixel centres are at integer + 0.5 in both coordinate systems.
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0) as usize).min(src_len - 1);
            let hi = ((center + support).ceil() as usize)
                .min(src_len)
                .max(lo + 1);
            let n = (hi - lo).min(stride);
            let row = &mut t.weights[i * stride..i * stride + n];
            let mut sum = 0.0;
            for (k, w) in row.iter_mut().enumerate() {
                let v = lanczos3(((lo + k) as f64 + 0.5 - center) / filter_scale);
                *w = v as f32;
                sum += v;
            }
            // Clamping at the borders drops taps; renormalise so flat areas stay flat.
            if sum != 0.0 {
                row.iter_mut().for_each(|w| *w = (*w as f64 / sum) as f32);
            }
            t.start.push(origin + lo);
            t.count.push(n);
        }
        t
    }

    fn get(&self, i: usize) -> (usize, &[f32]) {
        let n = self.count[i];
        (
            self.start[i],
            &self.weights[i * self.stride..i * self.stride + n],
        )
    }
}

/// Resample `rect` of `src` (`src_w` pixels wide, `C` interleaved channels)
/// to `dst_w x dst_h`, rounding to nearest and clamping to 0..=255.
pub(crate) fn resample(
    src: &[u8],
    src_w: usize,
    channels: usize,
    rect: Rect,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    match channels {
        1 => resample_c::<1>(src, src_w, rect, dst_w, dst_h),
        3 => resample_c::<3>(src, src_w, rect, dst_w, dst_h),
        4 => resample_c::<4>(src, src_w, rect, dst_w, dst_h),
        c => unreachable!("resample called with {c} channels"),
    }
}

fn resample_c<const C: usize>(
    src: &[u8],
    src_w: usize,
    rect: Rect,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    assert!(rect.w > 0 && rect.h > 0 && rect.x + rect.w <= src_w);
    assert!(src.len() >= (rect.y + rect.h) * src_w * C);
    let htaps = Taps::new(rect.x, rect.w, dst_w);
    let vtaps = Taps::new(rect.y, rect.h, dst_h);

    // Horizontal pass: only the rows the vertical pass will read.
    let row_lo = vtaps.start.first().copied().unwrap_or(rect.y);
    let row_hi = (0..dst_h)
        .map(|i| vtaps.start[i] + vtaps.count[i])
        .max()
        .unwrap_or(row_lo);
    let tmp_row = dst_w * C;
    let mut tmp = vec![0f32; (row_hi - row_lo) * tmp_row];
    for (y, out) in (row_lo..row_hi).zip(tmp.chunks_exact_mut(tmp_row)) {
        let line = &src[y * src_w * C..(y + 1) * src_w * C];
        for (x, px_out) in out.chunks_exact_mut(C).enumerate() {
            let (start, ws) = htaps.get(x);
            let mut acc = [0f32; C];
            for (w, px) in ws.iter().zip(line[start * C..].chunks_exact(C)) {
                for c in 0..C {
                    acc[c] += w * px[c] as f32;
                }
            }
            px_out.copy_from_slice(&acc);
        }
    }

    // Vertical pass: accumulate whole rows so the inner loop vectorises.
    let mut dst = vec![0u8; dst_w * dst_h * C];
    let mut acc = vec![0f32; tmp_row];
    for (y, out) in dst.chunks_exact_mut(tmp_row).enumerate() {
        let (start, ws) = vtaps.get(y);
        acc.fill(0.0);
        for (k, &w) in ws.iter().enumerate() {
            let r = start + k - row_lo;
            let line = &tmp[r * tmp_row..(r + 1) * tmp_row];
            for (a, &v) in acc.iter_mut().zip(line) {
                *a += w * v;
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = (a + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(w: usize, h: usize) -> Rect {
        Rect { x: 0, y: 0, w, h }
    }

    #[test]
    fn flat_image_stays_flat_at_any_scale() {
        for &(sw, sh, dw, dh) in &[
            (37, 23, 16, 16),
            (5, 3, 64, 64),
            (640, 480, 256, 256),
            (1, 1, 4, 4),
        ] {
            let src = vec![200u8; sw * sh * 3];
            let out = resample(&src, sw, 3, full(sw, sh), dw, dh);
            assert_eq!(out.len(), dw * dh * 3);
            assert!(out.iter().all(|&v| v == 200), "{sw}x{sh} -> {dw}x{dh}");
        }
    }

    #[test]
    fn identity_size_is_exact() {
        let src: Vec<u8> = (0..16 * 16).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resample(&src, 16, 1, full(16, 16), 16, 16), src);
    }

    #[test]
    fn crop_rect_only_reads_inside() {
        // Left half black, right half white; cropping the right half gives white.
        let (w, h) = (20, 10);
        let src: Vec<u8> = (0..w * h)
            .map(|i| if i % w >= 10 { 255 } else { 0 })
            .collect();
        let out = resample(
            &src,
            w,
            1,
            Rect {
                x: 10,
                y: 0,
                w: 10,
                h: 10,
            },
            4,
            4,
        );
        assert!(out.iter().all(|&v| v == 255), "{out:?}");
    }

    #[test]
    fn downscale_averages_fine_detail() {
        // A 1-pixel checkerboard must become mid-grey, not alias.
        let n = 64;
        let src: Vec<u8> = (0..n * n)
            .map(|i| if (i % n + i / n) % 2 == 0 { 0 } else { 254 })
            .collect();
        let out = resample(&src, n, 1, full(n, n), 8, 8);
        assert!(out.iter().all(|&v| (120..=134).contains(&v)), "{out:?}");
    }

    #[test]
    fn gradient_is_monotonic_after_resize() {
        let src: Vec<u8> = (0..100 * 3).map(|i| (i / 3 * 255 / 99) as u8).collect();
        let out = resample(&src, 100, 3, full(100, 1), 32, 1);
        for px in out.chunks(3).collect::<Vec<_>>().windows(2) {
            assert!(px[1][0] >= px[0][0]);
        }
    }
}
