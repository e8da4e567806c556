//! From 8-bit images to `pool3` features: the reference resize to 299x299 (on the host, image
//! by image, see [`crate::resize`]), `pixel / 128 - 1`, the network.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::error::{InceptionError, Result};
use crate::network::{InceptionV3, FEATURE_DIM, INPUT_SIZE};
use crate::resize::resize_plane;
use crate::weights::InceptionWeights;

/// Name of the preprocessing, recorded with cached statistics: a change to it must not reuse
/// features computed the old way.
pub const RESIZE_MODE: &str = "tf-bilinear-299";

/// A batch of 8-bit images, `[n, height, width, channels]` (the layout of a `.pgan` level and
/// of decoded PNG rows); 1 channel is repeated to RGB.
#[derive(Clone, Copy, Debug)]
pub struct Images8<'a> {
    /// `n * height * width * channels` bytes.
    pub pixels: &'a [u8],
    /// Number of images.
    pub n: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
}

impl Images8<'_> {
    fn validate(&self) -> Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(InceptionError::Input(format!(
                "images must have 1 or 3 channels, got {}",
                self.channels
            )));
        }
        if self.height == 0 || self.width == 0 {
            return Err(InceptionError::Input(format!(
                "image size {}x{} is empty",
                self.width, self.height
            )));
        }
        let want = self.n * self.height * self.width * self.channels;
        if self.pixels.len() != want {
            return Err(InceptionError::Input(format!(
                "{} bytes for {} images of {}x{}x{} (expected {want})",
                self.pixels.len(),
                self.n,
                self.width,
                self.height,
                self.channels
            )));
        }
        Ok(())
    }
}

/// The network on a device, with its preprocessing.
#[derive(Clone, Debug)]
pub struct FeatureExtractor<B: Backend> {
    net: InceptionV3<B>,
    device: B::Device,
    weights_checksum: u32,
    /// The weights file, when loaded from one (named when its features are not finite).
    weights_path: Option<std::path::PathBuf>,
}

impl<B: Backend> FeatureExtractor<B> {
    /// The network with `weights` on `device`.
    pub fn new(weights: &InceptionWeights, device: &B::Device) -> Self {
        FeatureExtractor {
            net: InceptionV3::new(weights, device),
            device: device.clone(),
            weights_checksum: weights.checksum,
            weights_path: None,
        }
    }

    /// Loads the weights file at `path` (see [`InceptionWeights::load`]).
    pub fn load(path: &std::path::Path, device: &B::Device) -> Result<Self> {
        Ok(Self {
            weights_path: Some(path.to_path_buf()),
            ..Self::new(&InceptionWeights::load(path)?, device)
        })
    }

    /// CRC-32 of the weights' values (names the weights in cached statistics).
    pub fn weights_checksum(&self) -> u32 {
        self.weights_checksum
    }

    /// Why FIDs measured with these weights cannot be compared with published ones, when they
    /// are not the standard weights ([`crate::weights::STANDARD_WEIGHTS_CRC32`]).
    pub fn nonstandard_weights_warning(&self) -> Option<String> {
        let file = self.weights_path.as_ref().map_or_else(
            || "the Inception weights".to_string(),
            |p| p.display().to_string(),
        );
        crate::weights::nonstandard_weights_warning(self.weights_checksum, &file)
    }

    /// The network's input for `images`: [`network_input`] on the backend.
    ///
    /// # Shapes
    /// `n` images → `[n, 3, 299, 299]`.
    pub fn preprocess(&self, images: Images8<'_>) -> Result<Tensor<B, 4>> {
        let n = images.n;
        let values = network_input(images)?;
        Ok(Tensor::from_data(
            TensorData::new(values, [n, 3, INPUT_SIZE, INPUT_SIZE]),
            &self.device,
        ))
    }

    /// `pool3` features of one batch of images: `n * 2048` values, image by image.
    pub fn features(&self, images: Images8<'_>) -> Result<Vec<f32>> {
        let n = images.n;
        self.features_of_input(network_input(images)?, n)
    }

    /// `pool3` features of `n` images already made the network's input by [`network_input`]
    /// (`n · 3 · 299 · 299` values): callers that decode images of many sizes resize each as it
    /// is decoded and measure them in batches.
    pub fn features_of_input(&self, input: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let want = n * 3 * INPUT_SIZE * INPUT_SIZE;
        if n == 0 || input.len() != want {
            return Err(InceptionError::Input(format!(
                "{} input values for {n} images (expected {want})",
                input.len()
            )));
        }
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(input, [n, 3, INPUT_SIZE, INPUT_SIZE]),
            &self.device,
        );
        let features = self.net.forward(x);
        let values = features
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| InceptionError::Input(format!("reading features back: {e:?}")))?;
        debug_assert_eq!(values.len(), n * FEATURE_DIM);
        // The FID network's features of 8-bit images are finite: these weights are another
        // network's (a damaged or hand-made file that still has the right shapes).
        if values.iter().any(|v| !v.is_finite()) {
            let message = "its features of these images are not finite (NaN or infinite): \
                           these are not the FID Inception network's weights (or the backend \
                           computed them wrongly)";
            return Err(match &self.weights_path {
                Some(path) => InceptionError::WeightsCorrupt {
                    path: path.clone(),
                    message: message.into(),
                },
                None => InceptionError::Input(format!("the inception network: {message}")),
            });
        }
        Ok(values)
    }
}

/// The network's input for `images`, on the host: each image resized to 299x299 as the
/// reference does (skipped when it already is 299x299, as the reference skips it), grey
/// repeated to RGB, scaled to `pixel / 128 - 1`; `[n, 3, 299, 299]` values. Each image is
/// resized alone, two source pixels per output pixel along each axis, so memory is the result
/// and one pass's rows (at most `299 × min(height, width)` values), whatever the image's size.
pub fn network_input(images: Images8<'_>) -> Result<Vec<f32>> {
    images.validate()?;
    let Images8 {
        pixels,
        n,
        height: h,
        width: w,
        channels: c,
    } = images;
    if n == 0 {
        return Err(InceptionError::Input("no images".into()));
    }
    let s = INPUT_SIZE;
    let plane = s * s;
    let mut out = vec![0f32; n * 3 * plane];
    // Images in parallel: on a GPU backend this is the host's share of the work.
    let images = pixels.par_chunks_exact(h * w * c);
    images
        .zip(out.par_chunks_exact_mut(3 * plane))
        .for_each(|(image, out)| {
            for ch in 0..c {
                let target = &mut out[ch * plane..][..plane];
                let at = |y: usize, x: usize| f32::from(image[(y * w + x) * c + ch]);
                if h == s && w == s {
                    for (i, o) in target.iter_mut().enumerate() {
                        *o = at(i / s, i % s);
                    }
                } else {
                    resize_plane(h, w, at, s, target);
                }
                target.iter_mut().for_each(|v| *v = (*v - 128.0) / 128.0);
            }
            if c == 1 {
                let (grey, rest) = out.split_at_mut(plane);
                rest[..plane].copy_from_slice(grey);
                rest[plane..].copy_from_slice(grey);
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::resize_weights;
    use crate::test_utils::{synthetic_weights, TestBackend};

    fn extractor() -> FeatureExtractor<TestBackend> {
        // Preprocessing only: the network's weights do not matter here.
        FeatureExtractor::new(&synthetic_weights(5), &Default::default())
    }

    #[test]
    fn preprocessing_resizes_separably_and_scales_to_the_network_range() {
        // One 2x2 RGB image; each output pixel is the bilinear blend of the TF-legacy source
        // coordinates j·2/299.
        let pixels: Vec<u8> = vec![0, 10, 20, 128, 138, 148, 64, 74, 84, 255, 245, 235];
        let x = extractor()
            .preprocess(Images8 {
                pixels: &pixels,
                n: 1,
                height: 2,
                width: 2,
                channels: 3,
            })
            .unwrap();
        assert_eq!(x.dims(), [1, 3, 299, 299]);
        let got = x.into_data().to_vec::<f32>().unwrap();
        let wy = resize_weights(2, 299);
        for (ch, (y, xx)) in [(0usize, (0usize, 0usize)), (1, (100, 200)), (2, (298, 150))] {
            let px = |r: usize, c: usize| pixels[(r * 2 + c) * 3 + ch] as f64;
            let mut want = 0.0;
            for r in 0..2 {
                for c in 0..2 {
                    want += wy[y * 2 + r] as f64 * wy[xx * 2 + c] as f64 * px(r, c);
                }
            }
            let want = want / 128.0 - 1.0;
            let g = got[ch * 299 * 299 + y * 299 + xx] as f64;
            assert!(
                (g - want).abs() < 1e-5,
                "ch {ch} ({y}, {xx}): {g} vs {want}"
            );
        }
        // The corner is the source pixel itself: 0 → -1.
        assert_eq!(got[0], -1.0);
    }

    #[test]
    fn grey_images_are_repeated_to_rgb_and_299_is_not_resized() {
        let side = 299;
        let pixels: Vec<u8> = (0..side * side).map(|i| (i % 251) as u8).collect();
        let x = extractor()
            .preprocess(Images8 {
                pixels: &pixels,
                n: 1,
                height: side,
                width: side,
                channels: 1,
            })
            .unwrap();
        let got = x.into_data().to_vec::<f32>().unwrap();
        for ch in 0..3 {
            for i in [0usize, 1000, side * side - 1] {
                assert_eq!(got[ch * side * side + i], pixels[i] as f32 / 128.0 - 1.0);
            }
        }
    }

    /// Finite weights of the right shapes whose features overflow: an error naming the file,
    /// never NaN statistics (a FID of NaN, a cache of them).
    #[test]
    fn weights_whose_features_are_not_finite_are_named() {
        let mut weights = synthetic_weights(3);
        for spec in &crate::weights::CONV_LAYERS {
            weights.layer_mut(spec.name).weight.fill(1e30);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.safetensors");
        weights.save(&path, "test").unwrap();
        let extractor = FeatureExtractor::<TestBackend>::load(&path, &Default::default()).unwrap();
        let err = extractor
            .features(Images8 {
                pixels: &[7; 4 * 4 * 3],
                n: 1,
                height: 4,
                width: 4,
                channels: 3,
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("odd.safetensors") && err.contains("not finite"),
            "{err}"
        );
    }

    #[test]
    fn bad_batches_are_errors_not_panics() {
        let e = extractor();
        let err = e
            .preprocess(Images8 {
                pixels: &[0; 10],
                n: 1,
                height: 2,
                width: 2,
                channels: 3,
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10 bytes") && err.contains("expected 12"),
            "{err}"
        );
        let err = e
            .preprocess(Images8 {
                pixels: &[0; 8],
                n: 1,
                height: 2,
                width: 2,
                channels: 2,
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 or 3 channels"), "{err}");
    }
}
