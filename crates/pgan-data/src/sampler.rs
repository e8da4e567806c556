//! `BatchSampler`: deterministic, resumable minibatches of real images as
//! `f32` NCHW in `[-1, 1]`, with optional mirror augmentation and the
//! ProGAN fade-in cross-fade.
//!
//! Order: epochs without replacement. The permutation of epoch `e` is a
//! Fisher-Yates shuffle driven by ChaCha8 seeded from `(seed, e)`; it is
//! regenerated on demand, so the serialised state is a handful of integers.
//! Mirroring is a pure function of `(seed, epoch, position)`.

use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::reader::PyramidReader;
use crate::shuffle::{mix64, permutation};

/// f32 NCHW, values in [-1, 1]
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `shape[0] * shape[1] * shape[2] * shape[3]` values, NCHW order.
    pub data: Vec<f32>,
    /// `[batch, channels, height, width]`.
    pub shape: [usize; 4],
}

/// `u8 -> f32` as `x / 127.5 - 1`, precomputed (exactly what the formula gives).
const TO_F32: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 127.5 - 1.0;
        i += 1;
    }
    t
};

/// Salt separating the mirror stream from the permutation stream.
const MIRROR_SALT: u64 = 0x6D69_7272_6F72_2121;

/// Cached permutation of the current epoch. Not serialised and ignored by
/// equality: it is a pure function of the serialised fields.
#[derive(Clone, Default)]
struct PermCache(Option<(u64, Arc<Vec<u32>>)>);

impl PartialEq for PermCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PermCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some((epoch, _)) => write!(f, "PermCache(epoch {epoch})"),
            None => f.write_str("PermCache(empty)"),
        }
    }
}

/// Deterministic, resumable sampler over the images of a pyramid file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchSampler {
    seed: u64,
    mirror: bool,
    num_images: usize,
    epoch: u64,
    position: usize,
    drawn: u64,
    #[serde(skip)]
    cache: PermCache,
}

impl BatchSampler {
    /// A sampler over `num_images` images starting at epoch 0.
    pub fn new(num_images: usize, seed: u64, mirror: bool) -> Self {
        BatchSampler {
            seed,
            mirror,
            num_images,
            epoch: 0,
            position: 0,
            drawn: 0,
            cache: PermCache::default(),
        }
    }

    /// Whether images are mirrored at random (half of them, a fixed choice per draw).
    pub fn mirror(&self) -> bool {
        self.mirror
    }

    /// Turns mirroring on or off from the next draw on (a resume with another `data.mirror`);
    /// which images are drawn does not change.
    pub fn set_mirror(&mut self, mirror: bool) {
        self.mirror = mirror;
    }

    /// Next `batch_size` images at `resolution`. With `fade_alpha = Some(a)` the reals are
    /// cross-faded as ProGAN does during a fade-in: lerp(nearest_upsample_2x(level[res/2]), level[res], a)
    /// (a = 0 → pure lower-resolution image, a = 1 → full-resolution image).
    pub fn next_batch(
        &mut self,
        reader: &PyramidReader,
        resolution: u32,
        batch_size: usize,
        fade_alpha: Option<f32>,
    ) -> Result<Batch> {
        let mut batch = Batch {
            data: Vec::new(),
            shape: [0; 4],
        };
        self.next_batch_into(reader, resolution, batch_size, fade_alpha, &mut batch)?;
        Ok(batch)
    }

    /// Like [`next_batch`](Self::next_batch) but reuses `batch`'s allocation.
    /// Large batches (e.g. 16 x 512^2 x 3 f32 = 50 MB) otherwise cost a fresh
    /// zeroed mapping and its page faults on every call. On error `batch` and
    /// the sampler are left unchanged.
    pub fn next_batch_into(
        &mut self,
        reader: &PyramidReader,
        resolution: u32,
        batch_size: usize,
        fade_alpha: Option<f32>,
        batch: &mut Batch,
    ) -> Result<()> {
        self.check_request(reader, resolution, batch_size, fade_alpha)?;
        let high = reader.level(resolution)?;
        let low = match fade_alpha {
            Some(_) => Some(reader.level(resolution / 2)?),
            None => None,
        };
        let picks: Vec<(usize, bool)> = (0..batch_size).map(|_| self.advance()).collect();

        let (c, r) = (reader.channels(), resolution as usize);
        let per_image = c * r * r;
        // Every element is overwritten below, so stale contents do not matter.
        batch.data.resize(batch_size * per_image, 0.0);
        batch.shape = [batch_size, c, r, r];
        batch
            .data
            .par_chunks_mut(per_image)
            .zip(&picks)
            .for_each(|(out, &(index, mirror))| {
                hwc_to_chw_f32(
                    &high[index * per_image..(index + 1) * per_image],
                    r,
                    r,
                    c,
                    mirror,
                    out,
                );
                if let (Some(low), Some(alpha)) = (low, fade_alpha) {
                    let n = per_image / 4;
                    let mut low_chw = vec![0f32; n];
                    hwc_to_chw_f32(
                        &low[index * n..(index + 1) * n],
                        r / 2,
                        r / 2,
                        c,
                        mirror,
                        &mut low_chw,
                    );
                    fade_between(&low_chw, out, c, r, alpha);
                }
            });
        Ok(())
    }

    /// Number of images in the dataset this sampler draws from.
    pub fn num_images(&self) -> usize {
        self.num_images
    }

    /// Total images handed out so far (across epochs).
    pub fn images_drawn(&self) -> u64 {
        self.drawn
    }

    /// Current epoch (0-based).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Position within the current epoch.
    pub fn position(&self) -> usize {
        self.position
    }

    fn check_request(
        &self,
        reader: &PyramidReader,
        resolution: u32,
        batch_size: usize,
        fade: Option<f32>,
    ) -> Result<()> {
        let bad = |reason: String| Err(DataError::request(reader.path(), reason));
        if batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if self.num_images == 0 {
            return bad("the sampler has no images to draw from".into());
        }
        if reader.len() != self.num_images {
            return bad(format!(
                "sampler was built for {} images but the file holds {}",
                self.num_images,
                reader.len()
            ));
        }
        if !reader.levels().contains(&resolution) {
            return bad(format!(
                "no {resolution}x{resolution} level (available: {:?})",
                reader.levels()
            ));
        }
        if let Some(a) = fade {
            if resolution <= crate::format::MIN_RESOLUTION {
                return bad(format!(
                    "cannot fade in at {resolution}x{resolution}: there is no lower level"
                ));
            }
            if !(0.0..=1.0).contains(&a) {
                return bad(format!("fade alpha {a} must be within [0, 1]"));
            }
        }
        Ok(())
    }

    /// Take the image at the current position and step forward, rolling over to the next epoch.
    fn advance(&mut self) -> (usize, bool) {
        let perm = self.permutation();
        let index = perm[self.position] as usize;
        let mirror = self.mirror
            && mix64(mix64(mix64(self.seed ^ MIRROR_SALT) ^ self.epoch) ^ self.position as u64) & 1
                == 1;
        self.position += 1;
        self.drawn += 1;
        if self.position == self.num_images {
            self.position = 0;
            self.epoch += 1;
        }
        (index, mirror)
    }

    fn permutation(&mut self) -> Arc<Vec<u32>> {
        match &self.cache.0 {
            Some((epoch, perm)) if *epoch == self.epoch => perm.clone(),
            _ => {
                let perm = Arc::new(permutation(
                    self.num_images,
                    mix64(self.seed.wrapping_add(mix64(self.epoch))),
                ));
                self.cache.0 = Some((self.epoch, perm.clone()));
                perm
            }
        }
    }
}

/// Convert one `h x w x c` u8 image (HWC) into `c x h x w` f32 (CHW) in
/// `[-1, 1]`, optionally flipped horizontally. `c` must be 1 or 3.
pub fn hwc_to_chw_f32(src: &[u8], h: usize, w: usize, c: usize, mirror: bool, dst: &mut [f32]) {
    assert_eq!(src.len(), h * w * c, "source is not {h}x{w}x{c}");
    assert_eq!(dst.len(), src.len(), "destination size differs from source");
    match c {
        1 => {
            for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
                if mirror {
                    d.iter_mut()
                        .zip(s.iter().rev())
                        .for_each(|(d, &v)| *d = TO_F32[v as usize]);
                } else {
                    d.iter_mut()
                        .zip(s)
                        .for_each(|(d, &v)| *d = TO_F32[v as usize]);
                }
            }
        }
        3 => {
            let (r, rest) = dst.split_at_mut(h * w);
            let (g, b) = rest.split_at_mut(h * w);
            let rows = src
                .chunks_exact(w * 3)
                .zip(r.chunks_exact_mut(w))
                .zip(g.chunks_exact_mut(w))
                .zip(b.chunks_exact_mut(w));
            for (((s, r), g), b) in rows {
                if mirror {
                    rgb_row(s.chunks_exact(3).rev(), r, g, b);
                } else {
                    rgb_row(s.chunks_exact(3), r, g, b);
                }
            }
        }
        _ => panic!("hwc_to_chw_f32 supports 1 or 3 channels, got {c}"),
    }
}

#[inline(always)]
fn rgb_row<'a>(px: impl Iterator<Item = &'a [u8]>, r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
    for (((p, r), g), b) in px.zip(r).zip(g).zip(b) {
        *r = TO_F32[p[0] as usize];
        *g = TO_F32[p[1] as usize];
        *b = TO_F32[p[2] as usize];
    }
}

/// ProGAN fade-in of reals, in place: `high = lerp(up2(low), high, alpha)`
/// where `up2` is 2x nearest-neighbour upsampling. `low` is CHW at
/// `resolution / 2`, `high` is CHW at `resolution`. Computed as
/// `low * (1 - alpha) + high * alpha` so both endpoints are exact.
pub fn fade_between(low: &[f32], high: &mut [f32], channels: usize, resolution: usize, alpha: f32) {
    let half = resolution / 2;
    assert_eq!(
        high.len(),
        channels * resolution * resolution,
        "high is not {channels}x{resolution}x{resolution}"
    );
    assert_eq!(
        low.len(),
        channels * half * half,
        "low is not {channels}x{half}x{half}"
    );
    let beta = 1.0 - alpha;
    for (y, row) in high.chunks_exact_mut(resolution).enumerate() {
        // Row y of the stacked planes: plane = y / resolution, row in plane = y % resolution.
        let low_row_index = (y / resolution) * half + (y % resolution) / 2;
        let low_row = &low[low_row_index * half..(low_row_index + 1) * half];
        for (pair, &l) in row.chunks_exact_mut(2).zip(low_row) {
            pair[0] = l * beta + pair[0] * alpha;
            pair[1] = l * beta + pair[1] * alpha;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::tests::sample_file;

    fn file_with(n: u32, res: u32) -> (tempfile::TempDir, PyramidReader) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir(&input).unwrap();
        for i in 0..n {
            crate::ingest::tests::photo(res + i, res, i)
                .save(input.join(format!("{i:02}.png")))
                .unwrap();
        }
        let path = dir.path().join("s.pgan");
        crate::writer::prepare(&crate::writer::PrepareOptions::new(&input, &path, res)).unwrap();
        let r = PyramidReader::open(&path).unwrap();
        (dir, r)
    }

    /// Which stored image a batch entry came from (matches unmirrored or mirrored).
    fn identify(r: &PyramidReader, res: u32, img: &[f32]) -> (usize, bool) {
        let c = r.channels();
        let n = (res * res) as usize * c;
        for i in 0..r.len() {
            for m in [false, true] {
                let mut want = vec![0f32; n];
                hwc_to_chw_f32(
                    r.image(res, i).unwrap(),
                    res as usize,
                    res as usize,
                    c,
                    m,
                    &mut want,
                );
                if want == img {
                    return (i, m);
                }
            }
        }
        panic!("batch image matches no stored image");
    }

    #[test]
    fn epochs_visit_every_image_once_across_batch_boundaries() {
        let (_d, r) = file_with(7, 8);
        let mut s = BatchSampler::new(7, 5, false);
        let mut seen = Vec::new();
        for _ in 0..7 {
            let b = s.next_batch(&r, 8, 3, None).unwrap();
            assert_eq!(b.shape, [3, 3, 8, 8]);
            for img in b.data.chunks(192) {
                seen.push(identify(&r, 8, img).0);
            }
        }
        assert_eq!(s.images_drawn(), 21);
        assert_eq!(s.epoch(), 3);
        for epoch in seen.chunks(7) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..7).collect::<Vec<_>>());
        }
        assert_ne!(seen[..7], seen[7..14], "epochs use different permutations");
    }

    #[test]
    fn values_are_in_range_and_match_formula() {
        let (_d, path) = sample_file();
        let r = PyramidReader::open(&path).unwrap();
        let mut s = BatchSampler::new(3, 0, false);
        let b = s.next_batch(&r, 4, 1, None).unwrap();
        let (i, _) = identify(&r, 4, &b.data);
        let src = r.image(4, i).unwrap();
        // CHW: channel 1, row 2, column 3 comes from HWC (2, 3, 1).
        assert_eq!(
            b.data[16 + 2 * 4 + 3],
            src[(2 * 4 + 3) * 3 + 1] as f32 / 127.5 - 1.0
        );
        assert!(b.data.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(TO_F32[0], -1.0);
        assert_eq!(TO_F32[255], 1.0);
    }

    #[test]
    fn mirror_flips_some_images_deterministically() {
        let (_d, r) = file_with(4, 8);
        let mut s = BatchSampler::new(4, 11, true);
        let flags: Vec<bool> = (0..10)
            .flat_map(|_| {
                let b = s.next_batch(&r, 8, 4, None).unwrap();
                b.data
                    .chunks(192)
                    .map(|img| identify(&r, 8, img).1)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            flags.iter().any(|&m| m) && flags.iter().any(|&m| !m),
            "{flags:?}"
        );
        let mut again = BatchSampler::new(4, 11, true);
        let first = again.next_batch(&r, 8, 4, None).unwrap();
        let mut s2 = BatchSampler::new(4, 11, true);
        assert_eq!(s2.next_batch(&r, 8, 4, None).unwrap(), first);
        let mut plain = BatchSampler::new(4, 11, false);
        for _ in 0..10 {
            let b = plain.next_batch(&r, 8, 4, None).unwrap();
            assert!(b.data.chunks(192).all(|img| !identify(&r, 8, img).1));
        }
    }

    #[test]
    fn save_and_restore_mid_epoch_continues_identically() {
        let (_d, r) = file_with(5, 8);
        let mut a = BatchSampler::new(5, 1234, true);
        a.next_batch(&r, 8, 3, None).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.len() < 200, "state must stay small: {json}");
        let mut b: BatchSampler = serde_json::from_str(&json).unwrap();
        assert_eq!(a, b);
        for res in [8, 4, 8] {
            assert_eq!(
                a.next_batch(&r, res, 4, Some(0.3).filter(|_| res == 8))
                    .unwrap(),
                b.next_batch(&r, res, 4, Some(0.3).filter(|_| res == 8))
                    .unwrap()
            );
        }
        assert_eq!(a.images_drawn(), b.images_drawn());
    }

    #[test]
    fn fade_endpoints_and_midpoint() {
        let (_d, r) = file_with(2, 8);
        let run = |alpha: Option<f32>| {
            BatchSampler::new(2, 9, true)
                .next_batch(&r, 8, 2, alpha)
                .unwrap()
        };
        let full = run(None);
        assert_eq!(run(Some(1.0)), full);
        let low = run(Some(0.0));
        let mid = run(Some(0.5));
        // alpha = 0: every 2x2 block equals the (mirrored) 4x4 level pixel.
        let mut lowres = BatchSampler::new(2, 9, true)
            .next_batch(&r, 4, 2, None)
            .unwrap();
        // Same picks and mirror flags, so upsampling the 4x4 batch must equal `low`.
        let mut up = vec![0f32; full.data.len()];
        for (n, img) in lowres.data.chunks_mut(48).enumerate() {
            for c in 0..3 {
                for y in 0..8 {
                    for x in 0..8 {
                        up[n * 192 + c * 64 + y * 8 + x] = img[c * 16 + (y / 2) * 4 + x / 2];
                    }
                }
            }
        }
        assert_eq!(low.data, up);
        for ((m, l), h) in mid.data.iter().zip(&low.data).zip(&full.data) {
            assert!((m - (l + h) / 2.0).abs() < 1e-6);
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        let (_d, path) = sample_file();
        let r = PyramidReader::open(&path).unwrap();
        let mut s = BatchSampler::new(3, 0, false);
        let e = |res, bs, fade| {
            s.clone()
                .next_batch(&r, res, bs, fade)
                .unwrap_err()
                .to_string()
        };
        assert!(e(32, 1, None).contains("no 32x32 level"));
        assert!(e(6, 1, None).contains("no 6x6 level"));
        assert!(e(8, 0, None).contains("batch size"));
        assert!(e(4, 1, Some(0.5)).contains("cannot fade in at 4x4"));
        assert!(e(8, 1, Some(1.5)).contains("within [0, 1]"));
        assert!(e(8, 1, Some(f32::NAN)).contains("within [0, 1]"));
        let mut wrong = BatchSampler::new(4, 0, false);
        assert!(wrong
            .next_batch(&r, 8, 1, None)
            .unwrap_err()
            .to_string()
            .contains("built for 4 images"));
        s.next_batch(&r, 8, 1, None).unwrap();
    }

    #[test]
    fn next_batch_into_reuses_and_matches() {
        let (_d, r) = file_with(3, 8);
        let mut a = BatchSampler::new(3, 2, true);
        let mut b = a.clone();
        let mut reused = Batch {
            data: vec![9.0; 5000],
            shape: [0; 4],
        };
        for (res, bs) in [(8, 4), (4, 2), (8, 1)] {
            b.next_batch_into(&r, res, bs, None, &mut reused).unwrap();
            assert_eq!(reused, a.next_batch(&r, res, bs, None).unwrap());
        }
        let before = b.clone();
        assert!(b.next_batch_into(&r, 16, 1, None, &mut reused).is_err());
        assert_eq!(b, before);
    }

    #[test]
    fn chw_conversion_and_mirror() {
        let src: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8 * 10).collect();
        let mut out = vec![0f32; 18];
        hwc_to_chw_f32(&src, 2, 3, 3, false, &mut out);
        assert_eq!(out[0], TO_F32[0]); // c0 y0 x0
        assert_eq!(out[6 + 1], TO_F32[40]); // c1 y0 x1 = src[(0*3+1)*3+1] = 4 -> 40
        hwc_to_chw_f32(&src, 2, 3, 3, true, &mut out);
        assert_eq!(out[0], TO_F32[60]); // c0 y0 x0 <- x2 = src[6]
        let grey: Vec<u8> = vec![1, 2, 3, 4];
        let mut g = vec![0f32; 4];
        hwc_to_chw_f32(&grey, 2, 2, 1, true, &mut g);
        assert_eq!(g, vec![TO_F32[2], TO_F32[1], TO_F32[4], TO_F32[3]]);
    }
}
