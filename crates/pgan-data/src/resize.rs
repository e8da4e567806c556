//! Lanczos-3 resampling of interleaved 8-bit images, with an optional source crop.
//!
//! The work is done by `fast_image_resize` (SIMD, fixed-point convolution). Its Lanczos-3 filter
//! is stretched by the scale factor when shrinking, so it acts as an anti-aliasing low-pass
//! filter: the same convention as Pillow's `Image.resize(..., LANCZOS)` (libImaging/Resample.c).
//! `image::imageops::resize` would convert every pixel to `Rgba<f32>` first and is several times
//! slower.

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// A rectangle of the source image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Resample `rect` of `src` (`src_w` pixels wide, `channels` interleaved 8-bit channels: 1, 3
/// or 4, the fourth treated as an ordinary channel) to `dst_w x dst_h`.
pub(crate) fn resample(
    src: &[u8],
    src_w: usize,
    channels: usize,
    rect: Rect,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    let pixel_type = match channels {
        1 => PixelType::U8,
        3 => PixelType::U8x3,
        4 => PixelType::U8x4,
        c => unreachable!("resample called with {c} channels"),
    };
    assert!(rect.w > 0 && rect.h > 0 && rect.x + rect.w <= src_w);
    let src_h = src.len() / (src_w * channels);
    assert!(rect.y + rect.h <= src_h, "crop rectangle outside the image");
    // u8 pixel types have no alignment requirement and the size was checked above, so these
    // constructors cannot fail.
    let whole = ImageRef::new(src_w as u32, src_h as u32, src, pixel_type)
        .expect("buffer holds the whole image");
    // A cropped view, not `ResizeOptions::crop`: the latter lets the filter read pixels outside
    // the box, and a centre crop must look exactly like crop-then-resize.
    let source = CroppedImage::new(
        &whole,
        rect.x as u32,
        rect.y as u32,
        rect.w as u32,
        rect.h as u32,
    )
    .expect("crop rectangle checked above");
    let mut dst = Image::new(dst_w as u32, dst_h as u32, pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .use_alpha(false);
    Resizer::new()
        .resize(&source, &mut dst, &options)
        .expect("source and destination share one pixel type");
    dst.into_vec()
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
