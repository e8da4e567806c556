//! Laplacian pyramid with the 5x5 binomial filter, as used by ProGAN's sliced Wasserstein
//! distance (`metrics/sliced_wasserstein.py` in tkarras/progressive_growing_of_gans:
//! `pyr_down`, `pyr_up`, `generate_laplacian_pyramid`, which match OpenCV's `pyrDown`/`pyrUp`).
//!
//! Borders use *mirror* padding without repeating the edge sample (`d c b | a b c d | c b a`),
//! which is `scipy.ndimage.convolve(mode='mirror')` in the official code, OpenCV's
//! `BORDER_REFLECT_101` and NumPy's `np.pad(mode='reflect')`.

/// One pyramid level of one image, CHW.
#[derive(Clone, Debug, PartialEq)]
pub struct PyramidLevel {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c * h * w` values.
    pub data: Vec<f32>,
}

/// The 1-D binomial taps `[1, 4, 6, 4, 1] / 16`; their outer product is the official
/// `gaussian_filter` (the 5x5 matrix divided by 256).
const TAPS: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Mirror index (reflect-101) of `i` into `0..n`.
fn mirror(mut i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let n = n as isize;
    let period = 2 * (n - 1);
    i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// Separable 5x5 binomial filter of every channel with mirror borders, times `gain`.
fn binomial_filter(src: &[f32], c: usize, h: usize, w: usize, gain: f32) -> Vec<f32> {
    let mut tmp = vec![0.0f32; src.len()];
    let mut out = vec![0.0f32; src.len()];
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let t = &mut tmp[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            let row = &plane[y * w..(y + 1) * w];
            for x in 0..w {
                let mut acc = 0.0;
                for (k, tap) in TAPS.iter().enumerate() {
                    acc += tap * row[mirror(x as isize + k as isize - 2, w)];
                }
                t[y * w + x] = acc;
            }
        }
        let o = &mut out[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            let rows: [usize; 5] =
                std::array::from_fn(|k| mirror(y as isize + k as isize - 2, h) * w);
            for x in 0..w {
                let mut acc = 0.0;
                for k in 0..5 {
                    acc += TAPS[k] * t[rows[k] + x];
                }
                o[y * w + x] = acc * gain;
            }
        }
    }
    out
}

/// Blur, then keep every second row and column (starting at 0): size `ceil(h/2) x ceil(w/2)`.
pub fn pyr_down(level: &PyramidLevel) -> PyramidLevel {
    let (c, h, w) = (level.c, level.h, level.w);
    let blurred = binomial_filter(&level.data, c, h, w, 1.0);
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut data = Vec::with_capacity(c * h2 * w2);
    for ch in 0..c {
        for y in 0..h2 {
            for x in 0..w2 {
                data.push(blurred[ch * h * w + 2 * y * w + 2 * x]);
            }
        }
    }
    PyramidLevel {
        c,
        h: h2,
        w: w2,
        data,
    }
}

/// Zero-insertion upsampling to `h x w` (sample `(y, x)` goes to `(2y, 2x)`), then the binomial
/// filter times 4. For even sizes this is exactly the official `pyr_up`; odd target sizes are
/// the natural generalisation (the official code only handles powers of two).
pub fn pyr_up(level: &PyramidLevel, h: usize, w: usize) -> PyramidLevel {
    let c = level.c;
    let mut up = vec![0.0f32; c * h * w];
    for ch in 0..c {
        for y in 0..level.h.min(h.div_ceil(2)) {
            for x in 0..level.w.min(w.div_ceil(2)) {
                up[ch * h * w + 2 * y * w + 2 * x] =
                    level.data[ch * level.h * level.w + y * level.w + x];
            }
        }
    }
    PyramidLevel {
        c,
        h,
        w,
        data: binomial_filter(&up, c, h, w, 4.0),
    }
}

/// Number of levels for an `h x w` image: one per halving while the smaller side is still
/// `>= min_resolution` (ProGAN: `while res >= 16: resolutions.append(res); res //= 2`), and at
/// least one (an image smaller than `min_resolution` is a single level at its own size).
pub fn num_levels(h: usize, w: usize, min_resolution: usize) -> usize {
    let mut res = h.min(w);
    let mut levels = 0;
    while res >= min_resolution.max(1) {
        levels += 1;
        res /= 2;
    }
    levels.max(1)
}

/// Laplacian pyramid of one CHW image, finest level first. Level `i < last` is
/// `G_i - pyr_up(G_{i+1})`; the last (coarsest) level is the Gaussian level itself.
/// See [`num_levels`] for how many levels are produced.
///
/// # Panics
/// If `image.len() != c * h * w`.
pub fn laplacian_pyramid(
    image: &[f32],
    c: usize,
    h: usize,
    w: usize,
    min_resolution: usize,
) -> Vec<PyramidLevel> {
    assert_eq!(
        image.len(),
        c * h * w,
        "image has {} values, expected {c}x{h}x{w}",
        image.len()
    );
    let levels = num_levels(h, w, min_resolution);
    let mut pyramid = vec![PyramidLevel {
        c,
        h,
        w,
        data: image.to_vec(),
    }];
    for _ in 1..levels {
        let finer = pyramid.last().expect("non-empty");
        let coarser = pyr_down(finer);
        let up = pyr_up(&coarser, finer.h, finer.w);
        let finer = pyramid.last_mut().expect("non-empty");
        for (v, u) in finer.data.iter_mut().zip(&up.data) {
            *v -= u;
        }
        pyramid.push(coarser);
    }
    pyramid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_reflect_101() {
        let idx: Vec<usize> = (-3..8).map(|i| mirror(i, 5)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(mirror(-4, 1), 0);
    }

    #[test]
    fn constant_image_has_zero_detail_levels() {
        let img = vec![0.25f32; 3 * 32 * 32];
        let pyr = laplacian_pyramid(&img, 3, 32, 32, 8);
        assert_eq!(pyr.iter().map(|l| l.h).collect::<Vec<_>>(), vec![32, 16, 8]);
        for level in &pyr[..2] {
            assert!(level.data.iter().all(|v| v.abs() < 1e-6));
        }
        assert!(pyr[2].data.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn pyramid_reconstructs_the_image() {
        // Collapsing the pyramid (upsample coarse, add detail) must give the input back exactly.
        let (h, w) = (32, 24);
        let img: Vec<f32> = (0..h * w)
            .map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0)
            .collect();
        let pyr = laplacian_pyramid(&img, 1, h, w, 6);
        assert_eq!(pyr.len(), 3);
        let mut rec = pyr.last().unwrap().clone();
        for detail in pyr[..pyr.len() - 1].iter().rev() {
            let mut up = pyr_up(&rec, detail.h, detail.w);
            for (u, d) in up.data.iter_mut().zip(&detail.data) {
                *u += d;
            }
            rec = up;
        }
        for (a, b) in rec.data.iter().zip(&img) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn small_images_are_one_level() {
        assert_eq!(num_levels(8, 8, 16), 1);
        assert_eq!(num_levels(16, 16, 16), 1);
        assert_eq!(num_levels(64, 64, 16), 3);
        assert_eq!(num_levels(128, 128, 16), 4);
        let pyr = laplacian_pyramid(&[0.5; 9 * 9], 1, 9, 9, 16);
        assert_eq!(pyr.len(), 1);
        assert_eq!(pyr[0].data, vec![0.5; 81]);
    }
}
