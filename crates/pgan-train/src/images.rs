//! Turning generator output into viewable pictures: NCHW floats in [-1, 1] → RGB images, grids,
//! nearest-neighbour upscaling, and atomic PNG/GIF writes.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, Rgb, RgbImage, RgbaImage};

use crate::error::{Result, TrainError};
use crate::fsutil::write_atomic;

/// Host copy of an image batch: NCHW floats.
#[derive(Clone, Debug)]
pub struct HostImages {
    /// Values, NCHW.
    pub data: Vec<f32>,
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
}

impl HostImages {
    /// Copies a batch from any backend.
    pub fn from_tensor<B: Backend>(images: Tensor<B, 4>) -> Self {
        let dims = images.dims();
        let data = crate::host_read::read_f32s(images);
        Self { data, shape: dims }
    }

    /// [`from_tensor`](Self::from_tensor), refusing a batch with a NaN or infinite value
    /// ([`finite_images`]).
    pub fn from_tensor_finite<B: Backend>(images: Tensor<B, 4>) -> crate::error::Result<Self> {
        let images = Self::from_tensor(images);
        finite_images(&images.data)?;
        Ok(images)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape[0]
    }

    /// True when the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }

    /// Image `i` as 8-bit RGB (grey is repeated over the three channels).
    pub fn to_rgb(&self, i: usize) -> RgbImage {
        let [_, c, h, w] = self.shape;
        let plane = h * w;
        let base = i * c * plane;
        RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let p = y as usize * w + x as usize;
            let ch = |k: usize| to_u8(self.data[base + k.min(c - 1) * plane + p]);
            Rgb([ch(0), ch(1), ch(2)])
        })
    }

    /// All images as RGB.
    pub fn to_rgb_all(&self) -> Vec<RgbImage> {
        (0..self.len()).map(|i| self.to_rgb(i)).collect()
    }
}

/// A value in [-1, 1] as an 8-bit pixel, as every PNG pgan writes quantises it.
pub fn to_u8(v: f32) -> u8 {
    ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// Tiles `images` row-major into a `rows x cols` grid with a `gap`-pixel border.
pub fn grid(images: &[RgbImage], rows: usize, cols: usize, gap: u32) -> RgbImage {
    let (w, h) = images.first().map(|im| im.dimensions()).unwrap_or((1, 1));
    let width = cols as u32 * (w + gap) + gap;
    let height = rows as u32 * (h + gap) + gap;
    let mut out = RgbImage::from_pixel(width, height, Rgb([32, 32, 32]));
    for (k, im) in images.iter().take(rows * cols).enumerate() {
        let x = gap + (k % cols) as u32 * (w + gap);
        let y = gap + (k / cols) as u32 * (h + gap);
        image::imageops::replace(&mut out, im, x as i64, y as i64);
    }
    out
}

/// Nearest-neighbour upscale so that each `cell`-pixel image becomes at least `min_px` wide.
pub fn upscale_cells(images: Vec<RgbImage>, min_px: u32) -> Vec<RgbImage> {
    images
        .into_iter()
        .map(|im| {
            let factor = min_px.div_ceil(im.width().max(1)).max(1);
            if factor == 1 {
                im
            } else {
                image::imageops::resize(
                    &im,
                    im.width() * factor,
                    im.height() * factor,
                    image::imageops::FilterType::Nearest,
                )
            }
        })
        .collect()
}

/// Writes a PNG atomically.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    let bytes = png_bytes(image, path)?;
    write_atomic(path, &bytes).map_err(|e| image_error(path, e))
}

/// Writes a PNG of pgan's own (a run's sample sheets) atomically, never through a link (see
/// [`crate::fsutil::refuse_foreign_file`]).
pub fn save_own_png(image: &RgbImage, path: &Path) -> Result<()> {
    let bytes = png_bytes(image, path)?;
    crate::fsutil::write_own_atomic(path, &bytes).map_err(|e| image_error(path, e))
}

/// The PNG file of `image` (`path` names it in errors).
pub fn png_bytes(image: &RgbImage, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| image_error(path, e))?;
    Ok(bytes)
}

/// Writes an endlessly looping animated GIF atomically.
pub fn save_gif(frames: &[RgbImage], delay_ms: u32, path: &Path) -> Result<()> {
    let bytes = gif_bytes(frames, delay_ms, path)?;
    write_atomic(path, &bytes).map_err(|e| image_error(path, e))
}

/// The endlessly looping animated GIF of `frames` (`path` names it in errors).
pub fn gif_bytes(frames: &[RgbImage], delay_ms: u32, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| image_error(path, e))?;
        for im in frames {
            let rgba: RgbaImage = image::DynamicImage::ImageRgb8(im.clone()).to_rgba8();
            let frame = Frame::from_parts(rgba, 0, 0, Delay::from_numer_denom_ms(delay_ms, 1));
            encoder
                .encode_frame(frame)
                .map_err(|e| image_error(path, e))?;
        }
    }
    Ok(bytes)
}

/// The error of a failed image write to `path`.
pub(crate) fn image_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Image {
        path: path.to_path_buf(),
        action: "write",
        message: e.to_string(),
    }
}

/// `Ok` when every value a generator drew is finite. A NaN or infinity would be drawn as a
/// black pixel and measured as a number (an SWD of NaN, an MS-SSIM of 0 that reads as perfect
/// diversity): refused instead, whoever asks (render, eval, FID).
pub fn finite_images(values: &[f32]) -> crate::error::Result<()> {
    let count = values.iter().filter(|v| !v.is_finite()).count();
    if count > 0 {
        return Err(crate::error::TrainError::NonFiniteImages {
            count,
            total: values.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_map_to_bytes_and_grey_repeats() {
        let images = HostImages {
            data: vec![-1.0, 0.0, 1.0, 2.0],
            shape: [1, 1, 2, 2],
        };
        let im = images.to_rgb(0);
        assert_eq!(im.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(im.get_pixel(1, 0).0, [128, 128, 128]);
        assert_eq!(im.get_pixel(0, 1).0, [255, 255, 255]);
        assert_eq!(im.get_pixel(1, 1).0, [255, 255, 255], "clamped");
    }

    #[test]
    fn grid_places_cells_row_major() {
        let cells: Vec<RgbImage> = (0..6u8)
            .map(|k| RgbImage::from_pixel(2, 2, Rgb([k * 10, 0, 0])))
            .collect();
        let g = grid(&cells, 2, 3, 1);
        assert_eq!(g.dimensions(), (3 * 3 + 1, 2 * 3 + 1));
        assert_eq!(g.get_pixel(1, 1).0[0], 0);
        assert_eq!(g.get_pixel(1 + 3 * 2, 1).0[0], 20);
        assert_eq!(g.get_pixel(1, 1 + 3).0[0], 30);
        assert_eq!(g.get_pixel(0, 0).0, [32, 32, 32], "gap colour");
    }

    #[test]
    fn pngs_and_gifs_are_written_and_decodable() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<RgbImage> = (0..3u8)
            .map(|k| RgbImage::from_pixel(4, 4, Rgb([k * 80, 10, 10])))
            .collect();
        let up = upscale_cells(frames.clone(), 16);
        assert_eq!(up[0].dimensions(), (16, 16));
        let png = dir.path().join("a.png");
        save_png(&up[0], &png).unwrap();
        assert_eq!(image::open(&png).unwrap().width(), 16);
        let gif = dir.path().join("a.gif");
        save_gif(&frames, 100, &gif).unwrap();
        let bytes = std::fs::read(&gif).unwrap();
        assert_eq!(&bytes[..3], b"GIF");
        // No temp files are left beside the outputs.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
