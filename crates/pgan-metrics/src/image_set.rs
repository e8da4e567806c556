//! [`ImageSet`]: a batch of images in NCHW `f32` layout with values in [-1, 1].

use std::path::Path;

use crate::error::{MetricsError, Result};

/// A batch of `n` images, NCHW, `f32`, nominally in [-1, 1] (the generator's output range).
///
/// `c` is 1 (greyscale) or 3 (RGB). The fields are public so callers can build a set from their
/// own buffers; [`ImageSet::new`] and [`ImageSet::validate`] check that they agree.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// `n * c * h * w` values, image-major, then channel, row, column.
    pub data: Vec<f32>,
    /// Number of images.
    pub n: usize,
    /// Channels per image (1 or 3).
    pub c: usize,
    /// Height in pixels.
    pub h: usize,
    /// Width in pixels.
    pub w: usize,
}

impl ImageSet {
    /// A validated set; see [`ImageSet::validate`].
    pub fn new(data: Vec<f32>, n: usize, c: usize, h: usize, w: usize) -> Result<Self> {
        let set = ImageSet { data, n, c, h, w };
        set.validate()?;
        Ok(set)
    }

    /// Checks `c` is 1 or 3, `h` and `w` are non-zero and `data.len() == n * c * h * w`.
    pub fn validate(&self) -> Result<()> {
        if self.c != 1 && self.c != 3 {
            return Err(MetricsError::Shape(format!(
                "images must have 1 or 3 channels, got {}",
                self.c
            )));
        }
        if self.h == 0 || self.w == 0 {
            return Err(MetricsError::Shape(format!(
                "image size {}x{} is empty",
                self.h, self.w
            )));
        }
        let want = self.n * self.image_len();
        if self.data.len() != want {
            return Err(MetricsError::Shape(format!(
                "{} values for {} images of {}x{}x{} (expected {want})",
                self.data.len(),
                self.n,
                self.c,
                self.h,
                self.w
            )));
        }
        Ok(())
    }

    /// Builds a set from 8-bit images stored HWC (interleaved channels, as decoded PNGs are),
    /// mapping `0..=255` linearly onto [-1, 1].
    pub fn from_u8_hwc<'a>(
        images: impl Iterator<Item = &'a [u8]>,
        h: usize,
        w: usize,
        c: usize,
    ) -> Result<Self> {
        let per = h * w * c;
        let mut data = Vec::new();
        let mut n = 0;
        for (i, img) in images.enumerate() {
            if img.len() != per {
                return Err(MetricsError::Shape(format!(
                    "image {i} has {} bytes, expected {h}x{w}x{c} = {per}",
                    img.len()
                )));
            }
            data.resize(data.len() + per, 0.0);
            let dst = &mut data[n * per..];
            for ch in 0..c {
                for p in 0..h * w {
                    dst[ch * h * w + p] = img[p * c + ch] as f32 / 127.5 - 1.0;
                }
            }
            n += 1;
        }
        ImageSet::new(data, n, c, h, w)
    }

    /// Loads image files (any format the `image` crate decodes) as RGB (`c = 3`) or luma
    /// (`c = 1`); all files must have the same size.
    pub fn load_files<P: AsRef<Path>>(paths: &[P], c: usize) -> Result<Self> {
        let mut bytes = Vec::with_capacity(paths.len());
        let mut size = None;
        for path in paths {
            let path = path.as_ref();
            let img = image::open(path).map_err(|source| MetricsError::Image {
                path: path.to_path_buf(),
                source,
            })?;
            let (w, h) = (img.width() as usize, img.height() as usize);
            if *size.get_or_insert((h, w)) != (h, w) {
                let (h0, w0) = size.unwrap_or_default();
                return Err(MetricsError::Shape(format!(
                    "{} is {h}x{w}, earlier files are {h0}x{w0}",
                    path.display()
                )));
            }
            bytes.push(match c {
                1 => img.to_luma8().into_raw(),
                3 => img.to_rgb8().into_raw(),
                _ => {
                    return Err(MetricsError::Shape(format!(
                        "images must have 1 or 3 channels, got {c}"
                    )))
                }
            });
        }
        let (h, w) =
            size.ok_or_else(|| MetricsError::InvalidArgument("no image files given".into()))?;
        ImageSet::from_u8_hwc(bytes.iter().map(|b| b.as_slice()), h, w, c)
    }

    /// Values per image (`c * h * w`).
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Image `i`, CHW.
    ///
    /// # Panics
    /// If `i >= n`.
    pub fn image(&self, i: usize) -> &[f32] {
        assert!(
            i < self.n,
            "image index {i} out of range for {} images",
            self.n
        );
        let per = self.image_len();
        &self.data[i * per..(i + 1) * per]
    }

    /// Images `start..end` as a new set (clamped to `n`).
    pub fn slice(&self, start: usize, end: usize) -> ImageSet {
        let end = end.min(self.n);
        let start = start.min(end);
        let per = self.image_len();
        ImageSet {
            data: self.data[start * per..end * per].to_vec(),
            n: end - start,
            c: self.c,
            h: self.h,
            w: self.w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_u8_hwc_maps_range_and_transposes() {
        // One 1x2 RGB image: pixel 0 = (0, 255, 51), pixel 1 = (255, 0, 102).
        let img: [u8; 6] = [0, 255, 51, 255, 0, 102];
        let set = ImageSet::from_u8_hwc(std::iter::once(&img[..]), 1, 2, 3).unwrap();
        assert_eq!((set.n, set.c, set.h, set.w), (1, 3, 1, 2));
        let want = [
            -1.0,
            1.0,
            1.0,
            -1.0,
            51.0 / 127.5 - 1.0,
            102.0 / 127.5 - 1.0,
        ];
        for (a, b) in set.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", set.data);
        }
    }

    #[test]
    fn shape_errors_are_reported() {
        let short = [0u8; 5];
        let err = ImageSet::from_u8_hwc(std::iter::once(&short[..]), 1, 2, 3).unwrap_err();
        assert!(err.to_string().contains("image 0 has 5 bytes"), "{err}");
        assert!(ImageSet::new(vec![0.0; 10], 1, 3, 2, 2).is_err());
        assert!(ImageSet::new(vec![0.0; 8], 1, 2, 2, 2)
            .unwrap_err()
            .to_string()
            .contains("1 or 3 channels"));
        assert!(ImageSet::new(vec![0.0; 12], 1, 3, 2, 2).is_ok());
    }

    #[test]
    fn slice_and_image_agree() {
        let set = ImageSet::new((0..24).map(|v| v as f32).collect(), 3, 1, 2, 4).unwrap();
        assert_eq!(set.image(1), &set.data[8..16]);
        let s = set.slice(1, 10);
        assert_eq!(s.n, 2);
        assert_eq!(s.image(0), set.image(1));
    }
}
