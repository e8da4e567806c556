//! Mode coverage of generated images against a [`ModeSpec`] from [`mod@crate::synth`].
//!
//! [`ModeClassifier`] renders each mode's prototype (no jitter, nominal colour) and assigns an
//! image to the nearest prototype in L2, made robust to the dataset's within-mode variation by
//! an alignment search: every prototype is tried at integer shifts of up to
//! `ceil(jitter_px)` pixels per axis and at sizes x0.93, x1 and x1.07 (covering the +-10 % size
//! jitter), and the best fit counts. To keep this cheap the image's brightest-in-contrast quadrant
//! (largest squared deviation from the background) is found first and only the modes placed in
//! that quadrant are tried; the residual is still measured over the whole image, so stray
//! content elsewhere counts against the fit.
//!
//! Rejection: with `E` the energy of the prototype's difference from the background, an image
//! whose best residual exceeds `threshold * E` ([`DEFAULT_THRESHOLD`] = 0.5) is
//! "unrecognised". Images of the right mode leave well under 0.5 (sub-pixel shift, size and
//! brightness residue, noise; the worst of 1,920 fresh samples was 0.36 at 32x32, 0.17 at 64x64,
//! 0.10 at 128x128); a wrong colour costs at least 4/3 (colours are RGB-cube corners); a blank
//! background image costs about 1.
//!
//! Cost grows with the resolution (template pixels x shifts): each doubling of the side costs
//! about 4x the template work, times the wider shift range.
//!
//! Images of another size are area-resampled to the spec's resolution first
//! ([`crate::resample::resize_area`]); they must have 3 channels.

use std::fmt;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::resample::resize_area;
use crate::synth::{ModeSpec, Variation};
use crate::{ImageSet, MetricsError, Result};

/// Default rejection threshold (residual relative to the prototype's contrast energy).
pub const DEFAULT_THRESHOLD: f64 = 0.5;
/// Sizes tried for every prototype.
pub const SCALES: [f32; 3] = [0.93, 1.0, 1.07];

/// One rendered template: a shape's antialiased mask at one size, in image pixels.
#[derive(Clone, Debug)]
struct Template {
    /// `(row, column, alpha)` of covered pixels.
    pixels: Vec<(usize, usize, f32)>,
    /// Sum of squared alphas.
    alpha_sq: f64,
}

/// Nearest-prototype classifier for a synthetic mode spec.
#[derive(Clone, Debug)]
pub struct ModeClassifier {
    spec: ModeSpec,
    threshold: f64,
    shift: isize,
    /// Background in [-1, 1].
    background: [f64; 3],
    /// Colour minus background, in [-1, 1] units, per mode.
    contrast: Vec<[f64; 3]>,
    /// Templates per mode and scale.
    templates: Vec<Vec<Template>>,
}

/// Result of classifying one image.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Best-fitting mode.
    pub nearest: usize,
    /// Its residual relative to the prototype's contrast energy.
    pub relative_residual: f64,
    /// `Some(nearest)` when the residual is within the threshold.
    pub mode: Option<usize>,
}

fn to_unit(v: u8) -> f64 {
    v as f64 / 127.5 - 1.0
}

impl ModeClassifier {
    /// Builds the classifier (renders every mode's templates).
    pub fn from_spec(spec: &ModeSpec) -> Result<Self> {
        if spec.table.is_empty() || spec.table.len() != spec.modes {
            return Err(MetricsError::InvalidArgument(format!(
                "spec has {} table entries for {} modes",
                spec.table.len(),
                spec.modes
            )));
        }
        let res = spec.resolution as usize;
        let background = spec.background.map(to_unit);
        let contrast = spec
            .table
            .iter()
            .map(|m| std::array::from_fn(|c| to_unit(m.colour[c]) - background[c]))
            .collect();
        let templates = (0..spec.modes)
            .into_par_iter()
            .map(|mode| {
                SCALES
                    .iter()
                    .map(|&scale| {
                        let var = Variation {
                            scale,
                            ..Variation::NONE
                        };
                        let (cx, cy, r) = spec.geometry(mode, &var);
                        let pixels: Vec<(usize, usize, f32)> = spec
                            .shape_alpha(spec.table[mode].shape, cx, cy, r)
                            .into_iter()
                            .map(|(p, a)| (p / res, p % res, a))
                            .collect();
                        let alpha_sq = pixels.iter().map(|&(_, _, a)| (a as f64).powi(2)).sum();
                        Template { pixels, alpha_sq }
                    })
                    .collect()
            })
            .collect();
        Ok(ModeClassifier {
            spec: spec.clone(),
            threshold: DEFAULT_THRESHOLD,
            shift: spec.jitter_px.ceil().max(0.0) as isize,
            background,
            contrast,
            templates,
        })
    }

    /// Builds the classifier from a `modes.json` written by [`crate::synth::synth`].
    pub fn from_spec_file(path: impl AsRef<Path>) -> Result<Self> {
        ModeClassifier::from_spec(&ModeSpec::load(path)?)
    }

    /// Replaces the rejection threshold (see the module docs).
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// The rejection threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The spec.
    pub fn spec(&self) -> &ModeSpec {
        &self.spec
    }

    /// Classifies one CHW RGB image with values in [-1, 1], of any size.
    pub fn classify(&self, image: &[f32], c: usize, h: usize, w: usize) -> Result<Classification> {
        if c != 3 {
            return Err(MetricsError::Shape(format!(
                "mode classification needs RGB images, got {c} channels"
            )));
        }
        if image.len() != c * h * w || h == 0 || w == 0 {
            return Err(MetricsError::Shape(format!(
                "image has {} values, expected {c}x{h}x{w}",
                image.len()
            )));
        }
        let res = self.spec.resolution as usize;
        let resized;
        let img = if (h, w) == (res, res) {
            image
        } else {
            resized = resize_area(image, c, h, w, res, res);
            &resized
        };
        // Deviation from the background, and its energy per quadrant.
        let dev: Vec<f64> = img
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f64 - self.background[i / (res * res)])
            .collect();
        let total: f64 = dev.iter().map(|d| d * d).sum();
        let half = res / 2;
        let mut quadrant_energy = [0.0f64; 4];
        for (i, d) in dev.iter().enumerate() {
            let p = i % (res * res);
            let q = usize::from(p % res >= half) + 2 * usize::from(p / res >= half);
            quadrant_energy[q] += d * d;
        }
        let quadrant = (0..4)
            .max_by(|&a, &b| quadrant_energy[a].total_cmp(&quadrant_energy[b]))
            .unwrap_or(0);
        let candidates: Vec<usize> = self
            .spec
            .table
            .iter()
            .filter(|m| m.quadrant == quadrant)
            .map(|m| m.id)
            .collect();
        let candidates = if candidates.is_empty() {
            (0..self.spec.modes).collect()
        } else {
            candidates
        };
        let mut best = (usize::MAX, f64::INFINITY);
        for &mode in &candidates {
            let d = self.contrast[mode];
            let d2: f64 = d.iter().map(|x| x * x).sum();
            let mut mode_best = f64::INFINITY;
            for t in &self.templates[mode] {
                for dy in -self.shift..=self.shift {
                    for dx in -self.shift..=self.shift {
                        // Residual = |dev - alpha * d|^2 = total - 2 sum(alpha d.dev) + |d|^2 sum(alpha^2),
                        // counting template pixels shifted outside the image as lost (dev = 0).
                        let mut cross = 0.0f64;
                        for &(y, x, a) in &t.pixels {
                            let (yy, xx) = (y as isize + dy, x as isize + dx);
                            if yy < 0 || xx < 0 || yy >= res as isize || xx >= res as isize {
                                continue;
                            }
                            let p = yy as usize * res + xx as usize;
                            let dot = d[0] * dev[p]
                                + d[1] * dev[res * res + p]
                                + d[2] * dev[2 * res * res + p];
                            cross += a as f64 * dot;
                        }
                        mode_best = mode_best.min(total - 2.0 * cross + d2 * t.alpha_sq);
                    }
                }
            }
            // Nearest by absolute residual (dividing first would favour large prototypes).
            if mode_best < best.1 {
                best = (mode, mode_best);
            }
        }
        let (nearest, residual) = best;
        // Relative to the nominal-size prototype's contrast energy, for rejection.
        let d2: f64 = self.contrast[nearest].iter().map(|x| x * x).sum();
        let relative_residual =
            residual.max(0.0) / (d2 * self.templates[nearest][1].alpha_sq).max(f64::MIN_POSITIVE);
        Ok(Classification {
            nearest,
            relative_residual,
            mode: (relative_residual <= self.threshold).then_some(nearest),
        })
    }
}

/// How the generated images spread over the modes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoverageReport {
    /// Number of modes K.
    pub modes: usize,
    /// Modes with at least one recognised sample.
    pub covered: usize,
    /// Recognised samples per mode.
    pub histogram: Vec<usize>,
    /// Samples far from every prototype.
    pub unrecognised: usize,
    /// All samples classified.
    pub samples: usize,
    /// KL(histogram || uniform) in nats over the recognised samples: 0 for a perfectly uniform
    /// spread, `ln K` when all land in one mode; NaN when nothing was recognised.
    pub kl_to_uniform: f64,
    /// `covered / modes`.
    pub coverage_fraction: f64,
    /// The recognised samples split by each attribute of the modes (shape, colour, position),
    /// so a skewed histogram says *what* is over- or under-produced. Empty when the report was
    /// built without the spec.
    #[serde(default)]
    pub attributes: Vec<AttributeShares>,
}

/// How the recognised samples split over the values of one mode attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributeShares {
    /// `shape`, `colour` or `position`.
    pub attribute: String,
    /// Each value with its share of the recognised samples relative to a uniform spread over
    /// the modes (1.0 = as many as a uniform generator would draw; 0.5 = half as many).
    pub shares: Vec<(String, f64)>,
}

/// Splits a histogram by the shape, colour and position of each mode in `spec`'s table.
fn attribute_shares(spec: &ModeSpec, histogram: &[usize]) -> Vec<AttributeShares> {
    let recognised: usize = histogram.iter().sum();
    if recognised == 0 || spec.table.len() != histogram.len() {
        return Vec::new();
    }
    type Attribute = (&'static str, fn(&crate::synth::ModeParams) -> String);
    let attributes: [Attribute; 3] = [
        ("shape", |m| format!("{:?}", m.shape).to_lowercase()),
        ("colour", |m| m.colour_name.clone()),
        ("position", |m| format!("q{}", m.quadrant)),
    ];
    attributes
        .iter()
        .map(|(attribute, value_of)| {
            // (value, modes with it, samples of those modes), in table order.
            let mut groups: Vec<(String, usize, usize)> = Vec::new();
            for (mode, &count) in spec.table.iter().zip(histogram) {
                let value = value_of(mode);
                match groups.iter_mut().find(|g| g.0 == value) {
                    Some(g) => {
                        g.1 += 1;
                        g.2 += count;
                    }
                    None => groups.push((value, 1, count)),
                }
            }
            let shares = groups
                .into_iter()
                .map(|(value, modes, samples)| {
                    let expected = recognised as f64 * modes as f64 / histogram.len() as f64;
                    (value, samples as f64 / expected)
                })
                .collect();
            AttributeShares {
                attribute: attribute.to_string(),
                shares,
            }
        })
        .collect()
}

/// Classifies every image (in parallel) and summarises. A mode counts as covered when at least
/// one sample is recognised as it (the usual criterion in mode-collapse benchmarks with known
/// modes, e.g. the stacked-MNIST experiments of VEEGAN/PacGAN).
pub fn coverage(classifier: &ModeClassifier, images: &ImageSet) -> Result<CoverageReport> {
    images.validate()?;
    let labels: Vec<Option<usize>> = (0..images.n)
        .into_par_iter()
        .map(|i| {
            classifier
                .classify(images.image(i), images.c, images.h, images.w)
                .map(|c| c.mode)
        })
        .collect::<Result<_>>()?;
    let mut report = CoverageReport::from_labels(classifier.spec.modes, &labels);
    report.attributes = attribute_shares(&classifier.spec, &report.histogram);
    Ok(report)
}

impl CoverageReport {
    /// Summarises per-sample labels (`None` = unrecognised) for `modes` modes.
    ///
    /// # Panics
    /// If a label is `>= modes`.
    pub fn from_labels(modes: usize, labels: &[Option<usize>]) -> Self {
        let mut histogram = vec![0usize; modes];
        let mut unrecognised = 0;
        for l in labels {
            match l {
                Some(m) => histogram[*m] += 1,
                None => unrecognised += 1,
            }
        }
        let recognised = labels.len() - unrecognised;
        let kl_to_uniform = if recognised == 0 {
            f64::NAN
        } else {
            histogram
                .iter()
                .filter(|&&n| n > 0)
                .map(|&n| {
                    let p = n as f64 / recognised as f64;
                    p * (p * modes as f64).ln()
                })
                .sum::<f64>()
                .max(0.0)
        };
        let covered = histogram.iter().filter(|&&n| n > 0).count();
        CoverageReport {
            modes,
            covered,
            histogram,
            unrecognised,
            samples: labels.len(),
            kl_to_uniform,
            coverage_fraction: covered as f64 / modes.max(1) as f64,
            attributes: Vec::new(),
        }
    }
}

impl fmt::Display for CoverageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "modes covered       {:>6} / {} ({:.1} %)",
            self.covered,
            self.modes,
            100.0 * self.coverage_fraction
        )?;
        writeln!(f, "samples             {:>6}", self.samples)?;
        writeln!(f, "unrecognised        {:>6}", self.unrecognised)?;
        if self.kl_to_uniform.is_finite() {
            writeln!(
                f,
                "KL(hist || uniform) {:>9.4} nats (ln K = {:.4})",
                self.kl_to_uniform,
                (self.modes as f64).ln()
            )?;
        } else {
            writeln!(
                f,
                "KL(hist || uniform)   not measured: no sample was recognised as any mode"
            )?;
        }
        if !self.attributes.is_empty() {
            writeln!(f, "share by attribute (1.00 = uniform):")?;
            for a in &self.attributes {
                let cells: Vec<String> = a
                    .shares
                    .iter()
                    .map(|(value, share)| format!("{value} {share:.2}"))
                    .collect();
                writeln!(f, "  {:<9} {}", a.attribute, cells.join("  "))?;
            }
        }
        writeln!(f, "samples per mode:")?;
        for (row, chunk) in self.histogram.chunks(8).enumerate() {
            let cells: Vec<String> = chunk
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{:>4}:{:<5}", row * 8 + i, n))
                .collect();
            writeln!(f, "  {}", cells.join(" "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::render_sample;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// `per_mode` noisy samples of every mode (or of `only` if given), with their labels.
    fn samples(
        spec: &ModeSpec,
        per_mode: usize,
        only: Option<usize>,
        seed: u64,
    ) -> (ImageSet, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let res = spec.resolution as usize;
        let mut bytes = Vec::new();
        let mut labels = Vec::new();
        for i in 0..per_mode * spec.modes {
            let mode = only.unwrap_or(i % spec.modes);
            bytes.push(render_sample(spec, mode, &mut rng));
            labels.push(mode);
        }
        (
            ImageSet::from_u8_hwc(bytes.iter().map(|b| b.as_slice()), res, res, 3).unwrap(),
            labels,
        )
    }

    #[test]
    fn classifies_its_own_dataset() {
        for (modes, res, per_mode) in [(64, 32, 4), (24, 64, 3), (192, 32, 2)] {
            let spec = ModeSpec::new(modes, res, 11).unwrap();
            let clf = ModeClassifier::from_spec(&spec).unwrap();
            let (set, labels) = samples(&spec, per_mode, None, 1);
            let mut correct = 0;
            let mut worst: f64 = 0.0;
            for (i, &want) in labels.iter().enumerate() {
                let c = clf
                    .classify(set.image(i), 3, res as usize, res as usize)
                    .unwrap();
                worst = worst.max(c.relative_residual);
                correct += usize::from(c.mode == Some(want));
            }
            let acc = correct as f64 / labels.len() as f64;
            assert!(
                acc >= 0.99,
                "K={modes} {res}px: accuracy {acc}, worst residual {worst}"
            );
        }
    }

    #[test]
    fn rejects_blank_and_noise_and_accepts_resized() {
        let spec = ModeSpec::new(16, 32, 2).unwrap();
        let clf = ModeClassifier::from_spec(&spec).unwrap();
        let blank = vec![to_unit(128) as f32; 3 * 32 * 32];
        let c = clf.classify(&blank, 3, 32, 32).unwrap();
        assert_eq!(c.mode, None);
        assert!((c.relative_residual - 1.0).abs() < 0.2, "{c:?}");
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let noise: Vec<f32> = (0..3 * 32 * 32)
            .map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0))
            .collect();
        assert_eq!(clf.classify(&noise, 3, 32, 32).unwrap().mode, None);
        // A 64x64 rendering of mode 5 is recognised after downsampling.
        let big = ModeSpec {
            resolution: 64,
            jitter_px: 2.0,
            ..spec.clone()
        };
        let img: Vec<f32> = big
            .render(5, &Variation::NONE)
            .iter()
            .map(|v| v * 2.0 - 1.0)
            .collect();
        assert_eq!(clf.classify(&img, 3, 64, 64).unwrap().mode, Some(5));
        assert!(clf.classify(&img[..64 * 64], 1, 64, 64).is_err());
    }

    #[test]
    fn coverage_of_uniform_and_collapsed_sets() {
        let spec = ModeSpec::new(16, 32, 3).unwrap();
        let clf = ModeClassifier::from_spec(&spec).unwrap();
        let (uniform, _) = samples(&spec, 4, None, 5);
        let r = coverage(&clf, &uniform).unwrap();
        assert_eq!(
            (r.modes, r.covered, r.unrecognised, r.samples),
            (16, 16, 0, 64)
        );
        assert!(r.kl_to_uniform < 1e-9 && r.coverage_fraction == 1.0, "{r}");
        let (collapsed, _) = samples(&spec, 2, Some(9), 6);
        let r = coverage(&clf, &collapsed).unwrap();
        assert_eq!(r.covered, 1);
        assert_eq!(r.histogram[9], 32);
        assert!((r.kl_to_uniform - (16f64).ln()).abs() < 1e-12);
        let text = r.to_string();
        assert!(text.contains("modes covered            1 / 16"), "{text}");
        // Everything in mode 9: its shape, colour and position hold all the samples.
        let m9 = &spec.table[9];
        for a in &r.attributes {
            // Shares are relative to the modes that have the value: K / (those modes) for the
            // one value that holds everything, zero for the rest.
            let nonzero: Vec<_> = a.shares.iter().filter(|(_, s)| *s > 0.0).collect();
            assert_eq!(nonzero.len(), 1, "{a:?}");
            let (top, share) = nonzero[0];
            assert!(*share >= 1.0, "{a:?}");
            let want = match a.attribute.as_str() {
                "shape" => format!("{:?}", m9.shape).to_lowercase(),
                "colour" => m9.colour_name.clone(),
                _ => format!("q{}", m9.quadrant),
            };
            assert_eq!(top, &want, "{a:?}");
        }
        assert_eq!(r.attributes.len(), 3);
        assert!(text.contains("share by attribute"), "{text}");
    }

    #[test]
    fn attribute_shares_of_a_uniform_set_are_one() {
        let spec = ModeSpec::new(16, 32, 3).unwrap();
        let shares = attribute_shares(&spec, &[5; 16]);
        assert_eq!(shares.len(), 3);
        for a in &shares {
            assert!(
                a.shares.iter().all(|(_, s)| (s - 1.0).abs() < 1e-12),
                "{a:?}"
            );
        }
        assert!(attribute_shares(&spec, &[0; 16]).is_empty());
    }

    #[test]
    fn report_from_labels() {
        let r = CoverageReport::from_labels(4, &[Some(0), Some(0), Some(1), None]);
        assert_eq!(
            (r.covered, r.unrecognised, r.histogram.clone()),
            (2, 1, vec![2, 1, 0, 0])
        );
        let want = (2.0 / 3.0) * (8.0f64 / 3.0).ln() + (1.0 / 3.0) * (4.0f64 / 3.0).ln();
        assert!((r.kl_to_uniform - want).abs() < 1e-12);
        let none = CoverageReport::from_labels(4, &[None]);
        assert!(none.kl_to_uniform.is_nan());
        let text = none.to_string();
        assert!(
            text.contains("not measured: no sample was recognised") && !text.contains("NaN"),
            "{text}"
        );
    }

    #[test]
    fn spec_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let summary = crate::synth::synth(&dir.path().join("d"), 12, 32, 24, 4).unwrap();
        let clf = ModeClassifier::from_spec_file(&summary.spec_path).unwrap();
        let labels = crate::synth::load_labels(&summary.labels_path).unwrap();
        let files: Vec<_> = labels
            .iter()
            .map(|l| dir.path().join("d").join(&l.file))
            .collect();
        let set = ImageSet::load_files(&files, 3).unwrap();
        let r = coverage(&clf, &set).unwrap();
        assert_eq!((r.covered, r.unrecognised), (12, 0), "{r}");
        for (i, l) in labels.iter().enumerate() {
            assert_eq!(
                clf.classify(set.image(i), 3, 32, 32).unwrap().mode,
                Some(l.mode),
                "{}",
                l.file
            );
        }
    }
}
