//! Multi-scale structural similarity (MS-SSIM; Wang, Simoncelli & Bovik 2003, "Multi-scale
//! structural similarity for image quality assessment"), used as in ProGAN to measure the
//! diversity of generated images: the mean MS-SSIM of random pairs of *generated* images is high
//! when the generator produces near-duplicates (mode collapse).
//!
//! This follows the NumPy implementation shipped with ProGAN (`metrics/ms_ssim.py` in
//! tkarras/progressive_growing_of_gans, itself a port of Google's TensorFlow `msssim`):
//!
//! * 5 scales with weights `[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]` (the paper's values);
//! * Gaussian window 11 taps, sigma 1.5, *valid* convolution, `k1 = 0.01`, `k2 = 0.03`;
//! * images mapped from [-1, 1] to [0, 255] (values outside are clamped, as when the official
//!   pipeline converts to 8 bit; no rounding here) and `L = 255`;
//! * small scales: the window is `min(11, h, w)` taps with sigma scaled by `size / 11`
//!   (`_SSIMForMultiScale`: "filter size can't be larger than height or width"), so 32x32 images
//!   use windows 11, 11, 8, 4, 2 at the five scales; an even window has half-integer offsets;
//! * between scales, 2x2 box averaging (`_HoxDownsample`); an odd row or column is dropped (the
//!   official code only handles even sizes), so images must be at least 16x16;
//! * per scale, the SSIM map and the contrast-structure map `(2 s_xy + C2) / (s_x^2 + s_y^2 + C2)`
//!   are averaged over all pixels *and channels*; the averages are clipped at 0 ("otherwise we
//!   get NaNs"), and the result is `prod_{i<5} cs_i^{w_i} * ssim_5^{w_5}`.
//!
//! Computation is in `f64`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{ImageSet, MetricsError, Result};

/// Scale weights (Wang et al. 2003; the official code notes they do not sum to 1).
pub const WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
/// Full window size.
pub const FILTER_SIZE: usize = 11;
/// Full window sigma.
pub const FILTER_SIGMA: f64 = 1.5;
/// Luminance stabiliser factor.
pub const K1: f64 = 0.01;
/// Contrast stabiliser factor.
pub const K2: f64 = 0.03;
/// Dynamic range after mapping [-1, 1] to [0, 255].
pub const MAX_VAL: f64 = 255.0;
/// Smallest image side that survives four 2x downsamplings.
pub const MIN_SIZE: usize = 16;

/// Mean and spread of MS-SSIM over random pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MsSsimReport {
    /// Mean MS-SSIM.
    pub mean: f64,
    /// Population standard deviation over the pairs.
    pub std: f64,
    /// Number of pairs measured.
    pub pairs: usize,
    /// Pairs that scored exactly 0: a scale's mean contrast-structure term was negative and
    /// clipped at 0 (as in the official code). Below 64x64 the coarse scales are 2x2 to 4x4
    /// pixels, where that happens to many pairs of unrelated images, and the mean reads low.
    #[serde(default)]
    pub zero_pairs: usize,
}

impl MsSsimReport {
    /// A note when more than a tenth of the pairs clipped to 0 (`what` names the images).
    pub fn clipping_note(&self, what: &str) -> Option<String> {
        (self.zero_pairs * 10 > self.pairs).then(|| {
            format!(
                "{} of {} {what} pairs have an MS-SSIM of exactly 0 (a coarse scale's \
                 contrast-structure term clipped at 0, as in the official code, which was \
                 used from 128x128 up): at this resolution the mean reads low; compare it only \
                 with means at the same resolution",
                self.zero_pairs, self.pairs
            )
        })
    }
}

/// Normalised 1-D Gaussian taps: offsets `-r..=r` for odd `size`, `-r+0.5..=r-0.5` for even
/// (the official `_FSpecialGauss`; its 2-D window is the outer product of these taps).
pub fn gaussian_taps(size: usize, sigma: f64) -> Vec<f64> {
    let centre = (size as f64 - 1.0) / 2.0;
    let g: Vec<f64> = (0..size)
        .map(|i| (-(i as f64 - centre).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = g.iter().sum();
    g.iter().map(|v| v / sum).collect()
}

/// Valid separable convolution of an `h x w` plane with `taps` in both directions.
fn filter_valid(src: &[f64], h: usize, w: usize, taps: &[f64]) -> (Vec<f64>, usize, usize) {
    let k = taps.len();
    let (oh, ow) = (h + 1 - k, w + 1 - k);
    let mut rows = vec![0.0; h * ow];
    for y in 0..h {
        for x in 0..ow {
            rows[y * ow + x] = taps
                .iter()
                .zip(&src[y * w + x..y * w + x + k])
                .map(|(t, v)| t * v)
                .sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        for (i, t) in taps.iter().enumerate() {
            let r = &rows[(y + i) * ow..(y + i + 1) * ow];
            for (o, v) in out[y * ow..(y + 1) * ow].iter_mut().zip(r) {
                *o += t * v;
            }
        }
    }
    (out, oh, ow)
}

/// Mean SSIM and mean contrast-structure over all channels of one scale (official
/// `_SSIMForMultiScale`).
fn ssim_and_cs(a: &[Vec<f64>], b: &[Vec<f64>], h: usize, w: usize) -> (f64, f64) {
    let size = FILTER_SIZE.min(h).min(w);
    let taps = gaussian_taps(size, FILTER_SIGMA * size as f64 / FILTER_SIZE as f64);
    let c1 = (K1 * MAX_VAL).powi(2);
    let c2 = (K2 * MAX_VAL).powi(2);
    let (mut ssim_sum, mut cs_sum, mut count) = (0.0, 0.0, 0usize);
    for (x, y) in a.iter().zip(b) {
        let prod = |f: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
            x.iter().zip(y).map(|(&p, &q)| f(p, q)).collect()
        };
        let (mu1, oh, ow) = filter_valid(x, h, w, &taps);
        let (mu2, _, _) = filter_valid(y, h, w, &taps);
        let (s11, _, _) = filter_valid(&prod(&|p, _| p * p), h, w, &taps);
        let (s22, _, _) = filter_valid(&prod(&|_, q| q * q), h, w, &taps);
        let (s12, _, _) = filter_valid(&prod(&|p, q| p * q), h, w, &taps);
        for i in 0..oh * ow {
            let (m11, m22, m12) = (mu1[i] * mu1[i], mu2[i] * mu2[i], mu1[i] * mu2[i]);
            let v1 = 2.0 * (s12[i] - m12) + c2;
            let v2 = (s11[i] - m11) + (s22[i] - m22) + c2;
            ssim_sum += (2.0 * m12 + c1) * v1 / ((m11 + m22 + c1) * v2);
            cs_sum += v1 / v2;
        }
        count += oh * ow;
    }
    (ssim_sum / count as f64, cs_sum / count as f64)
}

/// 2x2 box average, dropping a trailing odd row/column (official `_HoxDownsample`).
fn downsample(plane: &[f64], h: usize, w: usize) -> Vec<f64> {
    let (h2, w2) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(h2 * w2);
    for y in 0..h2 {
        for x in 0..w2 {
            let i = 2 * y * w + 2 * x;
            out.push((plane[i] + plane[i + 1] + plane[i + w] + plane[i + w + 1]) * 0.25);
        }
    }
    out
}

/// MS-SSIM of one pair of CHW images with values in [-1, 1]; 1 for identical images.
///
/// # Panics
/// If either slice is not `c * h * w` long or `h` or `w` is below [`MIN_SIZE`] (16); use
/// [`pairwise_ms_ssim`] for checked input.
pub fn ms_ssim(a: &[f32], b: &[f32], c: usize, h: usize, w: usize) -> f64 {
    assert!(
        a.len() == c * h * w && b.len() == c * h * w,
        "ms_ssim: images must be {c}x{h}x{w}"
    );
    assert!(
        h >= MIN_SIZE && w >= MIN_SIZE,
        "ms_ssim: images must be at least {MIN_SIZE}x{MIN_SIZE}, got {h}x{w}"
    );
    let to_planes = |img: &[f32]| -> Vec<Vec<f64>> {
        img.chunks(h * w)
            .map(|p| {
                p.iter()
                    .map(|&v| ((v as f64 + 1.0) * 127.5).clamp(0.0, 255.0))
                    .collect()
            })
            .collect()
    };
    let (mut pa, mut pb) = (to_planes(a), to_planes(b));
    let (mut hh, mut ww) = (h, w);
    let mut result = 1.0;
    for (scale, weight) in WEIGHTS.iter().enumerate() {
        let (ssim, cs) = ssim_and_cs(&pa, &pb, hh, ww);
        if scale + 1 == WEIGHTS.len() {
            result *= ssim.max(0.0).powf(*weight);
        } else {
            result *= cs.max(0.0).powf(*weight);
            pa = pa.iter().map(|p| downsample(p, hh, ww)).collect();
            pb = pb.iter().map(|p| downsample(p, hh, ww)).collect();
            hh /= 2;
            ww /= 2;
        }
    }
    result
}

/// Bytes [`pairwise_ms_ssim`] holds per pair: its indices (16), its entry in the draw's set of
/// pairs seen (about 20 with the table's spare room) and its value (8).
pub const BYTES_PER_PAIR: u64 = 48;

/// MS-SSIM over `pairs` distinct pairs of distinct images of `images`, computed in parallel:
/// every unordered pair once when `pairs` is all of them (or more), else a seeded draw without
/// replacement (MS-SSIM is symmetric, so `(i, j)` and `(j, i)` are one pair).
pub fn pairwise_ms_ssim(images: &ImageSet, pairs: usize, seed: u64) -> Result<MsSsimReport> {
    images.validate()?;
    if images.n < 2 {
        return Err(MetricsError::InvalidArgument(format!(
            "ms-ssim needs at least 2 images, got {}",
            images.n
        )));
    }
    if pairs == 0 {
        return Err(MetricsError::InvalidArgument(
            "ms-ssim needs at least one pair".into(),
        ));
    }
    if images.h < MIN_SIZE || images.w < MIN_SIZE {
        return Err(MetricsError::Shape(format!(
            "ms-ssim needs images of at least {MIN_SIZE}x{MIN_SIZE} (5 scales), got {}x{}",
            images.h, images.w
        )));
    }
    let n = images.n;
    let all = n.saturating_mul(n - 1) / 2;
    // More pairs than there are: each is measured once (the report says how many).
    let pairs = pairs.min(all);
    let idx: Vec<(usize, usize)> = if pairs == all {
        (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect()
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut seen = std::collections::HashSet::with_capacity(pairs);
        let mut idx = Vec::with_capacity(pairs);
        while idx.len() < pairs {
            let i = rng.random_range(0..n);
            let j = (i + rng.random_range(1..n)) % n;
            if seen.insert((i.min(j), i.max(j))) {
                idx.push((i, j));
            }
        }
        idx
    };
    let values: Vec<f64> = idx
        .par_iter()
        .map(|&(i, j)| {
            ms_ssim(
                images.image(i),
                images.image(j),
                images.c,
                images.h,
                images.w,
            )
        })
        .collect();
    let mean = values.iter().sum::<f64>() / pairs as f64;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / pairs as f64).sqrt();
    let zero_pairs = values.iter().filter(|&&v| v == 0.0).count();
    Ok(MsSsimReport {
        mean,
        std,
        pairs,
        zero_pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_is_measured_once() {
        // Three images, one of them far from the two others: the mean over all three distinct
        // pairs, each once, whatever the seed.
        let (c, h, w) = (1, MIN_SIZE, MIN_SIZE);
        let a = pattern(c, h, w, 0.0);
        let b = noisy(&a, 0.05, 1);
        let far = pattern(c, h, w, 2.5);
        let pixels: Vec<f32> = [a.clone(), b.clone(), far.clone()].concat();
        let set = ImageSet::new(pixels, 3, c, h, w).unwrap();
        let pair = |x: &[f32], y: &[f32]| ms_ssim(x, y, c, h, w);
        let want = (pair(&a, &b) + pair(&a, &far) + pair(&b, &far)) / 3.0;
        for seed in 0..5 {
            let got = pairwise_ms_ssim(&set, 3, seed).unwrap().mean;
            assert!((got - want).abs() < 1e-12, "seed {seed}: {got} vs {want}");
        }
        // More pairs than there are: each once, and the report says so.
        let capped = pairwise_ms_ssim(&set, 10, 0).unwrap();
        assert_eq!(capped.pairs, 3);
        assert!((capped.mean - want).abs() < 1e-12);
    }

    fn pattern(c: usize, h: usize, w: usize, phase: f32) -> Vec<f32> {
        (0..c * h * w)
            .map(|i| {
                let (ch, y, x) = (i / (h * w), (i / w) % h, i % w);
                (0.6 * (0.35 * x as f32 + phase).sin() * (0.23 * y as f32 + ch as f32).cos()
                    + 0.2 * (0.9 * (x + y) as f32).sin())
                .clamp(-1.0, 1.0)
            })
            .collect()
    }

    fn noisy(img: &[f32], amount: f32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        img.iter()
            .map(|v| (v + amount * rng.random_range(-1.0f32..1.0)).clamp(-1.0, 1.0))
            .collect()
    }

    #[test]
    fn pairs_clipped_to_zero_are_counted_and_noted() {
        let (c, h, w) = (1, MIN_SIZE, MIN_SIZE);
        let a = pattern(c, h, w, 0.0);
        let inverted: Vec<f32> = a.iter().map(|v| -v).collect();
        let near = noisy(&a, 0.05, 1);
        // An image and its negative: every scale's contrast-structure term is negative.
        assert_eq!(ms_ssim(&a, &inverted, c, h, w), 0.0);
        let set = ImageSet::new([a.clone(), inverted, near].concat(), 3, c, h, w).unwrap();
        let report = pairwise_ms_ssim(&set, 3, 0).unwrap();
        assert_eq!((report.pairs, report.zero_pairs), (3, 2));
        let note = report.clipping_note("generated").unwrap();
        assert!(note.starts_with("2 of 3 generated pairs"), "{note}");
        let close = ImageSet::new([a.clone(), noisy(&a, 0.05, 2)].concat(), 2, c, h, w).unwrap();
        let report = pairwise_ms_ssim(&close, 1, 0).unwrap();
        assert_eq!(report.zero_pairs, 0);
        assert!(report.clipping_note("generated").is_none());
    }

    #[test]
    fn taps_match_the_official_window() {
        let t = gaussian_taps(11, 1.5);
        assert!((t.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((t[5] / t[4] - (1.0 / 4.5f64).exp()).abs() < 1e-12);
        let e = gaussian_taps(4, 4.0 * 1.5 / 11.0);
        // Offsets -1.5, -0.5, 0.5, 1.5: symmetric, centre pair equal.
        assert!((e[1] - e[2]).abs() < 1e-15 && (e[0] - e[3]).abs() < 1e-15 && e[1] > e[0]);
    }

    #[test]
    fn identical_images_score_one() {
        for (c, h, w) in [(3, 32, 32), (1, 16, 16), (3, 40, 24), (1, 64, 64)] {
            let a = pattern(c, h, w, 0.3);
            let v = ms_ssim(&a, &a, c, h, w);
            assert!((v - 1.0).abs() < 1e-6, "{c}x{h}x{w}: {v}");
        }
    }

    #[test]
    fn decreases_with_noise_and_is_symmetric() {
        let (c, h, w) = (3, 32, 32);
        let a = pattern(c, h, w, 0.0);
        let mut prev = 1.0;
        for amount in [0.05, 0.15, 0.4, 0.8] {
            let b = noisy(&a, amount, 1);
            let ab = ms_ssim(&a, &b, c, h, w);
            let ba = ms_ssim(&b, &a, c, h, w);
            assert!((ab - ba).abs() < 1e-12, "asymmetric: {ab} vs {ba}");
            assert!(ab < prev - 1e-4, "noise {amount}: {ab} not below {prev}");
            prev = ab;
        }
        // Unrelated images are far less similar than a lightly noised copy.
        let other = pattern(c, h, w, 2.0);
        assert!(ms_ssim(&a, &other, c, h, w) < ms_ssim(&a, &noisy(&a, 0.05, 2), c, h, w) - 0.1);
    }

    #[test]
    #[should_panic(expected = "at least 16x16")]
    fn too_small_images_panic() {
        let a = vec![0.0; 8 * 8];
        ms_ssim(&a, &a, 1, 8, 8);
    }

    #[test]
    fn collapsed_sets_score_higher_than_diverse_ones() {
        let (c, h, w) = (3, 32, 32);
        let mut diverse = Vec::new();
        let mut collapsed = Vec::new();
        let base = pattern(c, h, w, 0.0);
        for i in 0..8 {
            diverse.extend(pattern(c, h, w, i as f32 * 0.9));
            collapsed.extend(noisy(&base, 0.05, i));
        }
        let d = pairwise_ms_ssim(&ImageSet::new(diverse, 8, c, h, w).unwrap(), 12, 3).unwrap();
        let k = pairwise_ms_ssim(&ImageSet::new(collapsed, 8, c, h, w).unwrap(), 12, 3).unwrap();
        assert_eq!(d.pairs, 12);
        assert!(k.mean > d.mean + 0.2, "collapsed {k:?} vs diverse {d:?}");
        assert!(d.std > 0.0 && d.std < 1.0);
        let again = pairwise_ms_ssim(
            &ImageSet::new(vec![0.0; 2 * 16 * 16], 2, 1, 16, 16).unwrap(),
            3,
            0,
        )
        .unwrap();
        assert!((again.mean - 1.0).abs() < 1e-9 && again.std < 1e-9);
        assert!(pairwise_ms_ssim(
            &ImageSet::new(vec![0.0; 16 * 16], 1, 1, 16, 16).unwrap(),
            3,
            0
        )
        .is_err());
        assert!(
            pairwise_ms_ssim(&ImageSet::new(vec![0.0; 2 * 64], 2, 1, 8, 8).unwrap(), 3, 0).is_err()
        );
    }
}
