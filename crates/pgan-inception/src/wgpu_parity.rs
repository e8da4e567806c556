//! FID features on burn's wgpu backend give the Flex (CPU) features.
//!
//! Evaluation runs the Inception network on the training backend, so a GPU run's FID, KID and
//! precision/recall rest on the same cubecl ops as training: strided and asymmetric convs,
//! both pools and channel concatenation (the resize and grey-to-RGB copy run on the host
//! before the upload; the preprocessing test checks that upload and its read-back). CI runs
//! this on lavapipe (Mesa's software Vulkan); without an adapter it prints a note and passes,
//! unless `PGAN_REQUIRE_WGPU` is set.

use burn::backend::wgpu::Wgpu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use pgan_cube::testing::wgpu_device;

use crate::extract::{FeatureExtractor, Images8};
use crate::network::InceptionV3;
use crate::test_utils::{synthetic_weights, TestBackend};

/// Relative RMS of `got - want` over `want`'s RMS.
fn relative_rms(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn wgpu_preprocessing_matches_flex_for_grey_and_rgb_images() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let weights = synthetic_weights(5);
    let cpu = FeatureExtractor::<TestBackend>::new(&weights, &Default::default());
    let gpu = FeatureExtractor::<Wgpu>::new(&weights, &device);
    // Two grey 37x41 images (grey-to-RGB, then the resize to 299) and two RGB 23x23 images.
    let grey: Vec<u8> = (0..2 * 37 * 41).map(|i| ((i * 7919) % 256) as u8).collect();
    let rgb: Vec<u8> = (0..2 * 23 * 23 * 3)
        .map(|i| ((i * 104_729) % 251) as u8)
        .collect();
    for (name, pixels, side, channels) in [("grey", &grey, (37, 41), 1), ("rgb", &rgb, (23, 23), 3)]
    {
        let images = Images8 {
            pixels,
            n: 2,
            height: side.0,
            width: side.1,
            channels,
        };
        let want = values(cpu.preprocess(images).unwrap());
        let got = values(gpu.preprocess(images).unwrap());
        // Per image, so that a wrong second image cannot hide behind a right first one.
        let per_image = want.len() / 2;
        for i in 0..2 {
            let range = i * per_image..(i + 1) * per_image;
            let error = relative_rms(&got[range.clone()], &want[range]);
            assert!(error < 1e-5, "{name} image {i}: relative RMS {error:.2e}");
        }
    }
}

/// Every layer of the network, on 75x75 inputs (the smallest it takes) to keep lavapipe quick:
/// the layers are the same at 299x299, only their images are larger.
#[test]
fn wgpu_network_matches_flex_on_every_layer() {
    let Some(device) = wgpu_device() else {
        return;
    };
    let weights = synthetic_weights(5);
    let cpu = InceptionV3::<TestBackend>::new(&weights, &Default::default());
    let gpu = InceptionV3::<Wgpu>::new(&weights, &device);
    let shape = [2, 3, 75, 75];
    let input: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let want = values(cpu.trunk(Tensor::from_data(
        TensorData::new(input.clone(), shape),
        &Default::default(),
    )));
    let got = values(gpu.trunk(Tensor::from_data(TensorData::new(input, shape), &device)));
    assert!(
        want.iter().any(|&v| v != 0.0),
        "the CPU features are all zero"
    );
    for (i, (g, w)) in got.chunks(2048).zip(want.chunks(2048)).enumerate() {
        let error = relative_rms(g, w);
        assert!(error < 1e-3, "image {i}: relative RMS {error:.2e}");
    }
}
