//! Building the lower pyramid levels from the top level.
//!
//! Level `r` holds, for every pixel, the mean of the corresponding
//! `(top/r) x (top/r)` block of the top level, rounded to nearest with ties
//! to even. This is bit-identical to ProGAN's `dataset_tool.py`
//! (`TFRecordExporter.add_image`), which repeatedly applies
//! `(a[0::2,0::2] + a[0::2,1::2] + a[1::2,0::2] + a[1::2,1::2]) * 0.25` to the
//! float image and quantises each level with `np.rint` (ties to even). The
//! float chain there is exact, so we compute it exactly with integer block
//! sums instead: each level is the 2x2 box sum of the level above.

/// Round `sum / 4^k` to nearest, ties to even (like `np.rint`).
#[inline]
fn round_block_mean(sum: u32, k: u32) -> u8 {
    let shift = 2 * k;
    let q = sum >> shift;
    let rem = sum & ((1u32 << shift) - 1);
    let half = if shift == 0 { 1 } else { 1u32 << (shift - 1) };
    let up = shift > 0 && (rem > half || (rem == half && q & 1 == 1));
    (q + up as u32) as u8
}

/// Sum each 2x2 block of `src` (`res x res x channels`) into a
/// `res/2 x res/2 x channels` buffer.
fn box_sum(src: &[u32], res: usize, channels: usize) -> Vec<u32> {
    let half = res / 2;
    let row = res * channels;
    let mut out = vec![0u32; half * half * channels];
    for (y, out_row) in out.chunks_exact_mut(half * channels).enumerate() {
        let top = &src[2 * y * row..(2 * y + 1) * row];
        let bottom = &src[(2 * y + 1) * row..(2 * y + 2) * row];
        let pairs = top
            .chunks_exact(2 * channels)
            .zip(bottom.chunks_exact(2 * channels));
        for (o, (t, b)) in out_row.chunks_exact_mut(channels).zip(pairs) {
            for c in 0..channels {
                o[c] = t[c] + t[channels + c] + b[c] + b[channels + c];
            }
        }
    }
    out
}

/// All pyramid levels of a `res x res x channels` top-level image, ordered
/// from 4x4 up to `res` (the last element equals `top`).
pub fn build_levels(top: &[u8], res: u32, channels: usize) -> Vec<Vec<u8>> {
    let res = res as usize;
    assert_eq!(
        top.len(),
        res * res * channels,
        "top level has the wrong size"
    );
    let mut levels = vec![top.to_vec()];
    let mut sums: Vec<u32> = top.iter().map(|&v| v as u32).collect();
    let (mut r, mut k) = (res, 0);
    while r > 4 {
        sums = box_sum(&sums, r, channels);
        r /= 2;
        k += 1;
        levels.push(sums.iter().map(|&s| round_block_mean(s, k)).collect());
    }
    levels.reverse();
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: ProGAN's float chain, quantised with round-half-even.
    fn reference(top: &[u8], res: usize, c: usize) -> Vec<Vec<u8>> {
        let mut img: Vec<f32> = top.iter().map(|&v| v as f32).collect();
        let mut out = vec![top.to_vec()];
        let mut r = res;
        while r > 4 {
            let h = r / 2;
            let mut next = vec![0f32; h * h * c];
            for y in 0..h {
                for x in 0..h {
                    for ch in 0..c {
                        let at = |yy: usize, xx: usize| img[(yy * r + xx) * c + ch];
                        next[(y * h + x) * c + ch] = (at(2 * y, 2 * x)
                            + at(2 * y, 2 * x + 1)
                            + at(2 * y + 1, 2 * x)
                            + at(2 * y + 1, 2 * x + 1))
                            * 0.25;
                    }
                }
            }
            img = next;
            r = h;
            out.push(
                img.iter()
                    .map(|v| v.round_ties_even().clamp(0.0, 255.0) as u8)
                    .collect(),
            );
        }
        out.reverse();
        out
    }

    #[test]
    fn matches_progan_float_chain() {
        let mut state = 12345u32;
        for &(res, c) in &[(4usize, 3usize), (8, 1), (64, 3), (128, 1)] {
            let top: Vec<u8> = (0..res * res * c)
                .map(|_| {
                    state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                    (state >> 24) as u8
                })
                .collect();
            let ours = build_levels(&top, res as u32, c);
            assert_eq!(ours, reference(&top, res, c), "res {res} c {c}");
            let sizes: Vec<usize> = ours.iter().map(|l| l.len()).collect();
            let mut want = vec![];
            let mut r = 4;
            while r <= res {
                want.push(r * r * c);
                r *= 2;
            }
            assert_eq!(sizes, want);
        }
    }

    #[test]
    fn ties_round_to_even() {
        assert_eq!(round_block_mean(2, 1), 0); // 0.5 -> 0
        assert_eq!(round_block_mean(6, 1), 2); // 1.5 -> 2
        assert_eq!(round_block_mean(5, 1), 1); // 1.25 -> 1
        assert_eq!(round_block_mean(7, 1), 2); // 1.75 -> 2
        assert_eq!(round_block_mean(255 * 16, 2), 255);
        // 8x8 block (k = 3): 3.5 -> 4
        assert_eq!(round_block_mean(224, 3), 4);
    }

    #[test]
    fn two_by_two_example() {
        // 8x8 single channel where each 2x2 block is [0, 1, 1, 1] -> mean 0.75 -> 1.
        let top: Vec<u8> = (0..64)
            .map(|i| {
                if i % 8 % 2 == 0 && i / 8 % 2 == 0 {
                    0
                } else {
                    1
                }
            })
            .collect();
        let levels = build_levels(&top, 8, 1);
        assert_eq!(levels[0], vec![1; 16]);
    }
}
