//! Area-weighted resampling of CHW images to another size: each output pixel is the average of
//! the input over the output pixel's footprint (fractional pixels weighted by their overlap).
//! Downsampling by an integer factor is exact box averaging; upsampling replicates pixels,
//! blending where a footprint straddles two input pixels.

/// Per-axis weights: for every output index, `(input index, weight)` pairs summing to 1.
fn axis_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let step = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let (lo, hi) = (o as f64 * step, (o + 1) as f64 * step);
            let mut w = Vec::new();
            let mut i = lo.floor() as usize;
            while (i as f64) < hi && i < n_in {
                let overlap = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                if overlap > 0.0 {
                    w.push((i, (overlap / step) as f32));
                }
                i += 1;
            }
            w
        })
        .collect()
}

/// Resizes a CHW image from `h x w` to `oh x ow` by area averaging.
///
/// # Panics
/// If `src.len() != c * h * w` or any size is zero.
pub fn resize_area(src: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    assert!(
        h > 0 && w > 0 && oh > 0 && ow > 0,
        "resize_area: empty size"
    );
    assert_eq!(
        src.len(),
        c * h * w,
        "resize_area: image is not {c}x{h}x{w}"
    );
    if (h, w) == (oh, ow) {
        return src.to_vec();
    }
    let (wy, wx) = (axis_weights(h, oh), axis_weights(w, ow));
    let mut out = vec![0.0f32; c * oh * ow];
    let mut rows = vec![0.0f32; h * ow];
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            for (x, ws) in wx.iter().enumerate() {
                rows[y * ow + x] = ws.iter().map(|&(i, k)| k * plane[y * w + i]).sum();
            }
        }
        for (y, ws) in wy.iter().enumerate() {
            for x in 0..ow {
                out[ch * oh * ow + y * ow + x] =
                    ws.iter().map(|&(i, k)| k * rows[i * ow + x]).sum();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_downsampling_is_box_average() {
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = resize_area(&src, 1, 4, 4, 2, 2);
        assert_eq!(out, vec![2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn upsampling_replicates_and_preserves_mean() {
        let src = vec![1.0, 3.0];
        assert_eq!(
            resize_area(&src, 1, 1, 2, 2, 4),
            vec![1.0, 1.0, 3.0, 3.0, 1.0, 1.0, 3.0, 3.0]
        );
        let src: Vec<f32> = (0..2 * 5 * 7).map(|v| (v % 11) as f32).collect();
        let out = resize_area(&src, 2, 5, 7, 3, 4);
        for ch in 0..2 {
            let m_in: f32 = src[ch * 35..(ch + 1) * 35].iter().sum::<f32>() / 35.0;
            let m_out: f32 = out[ch * 12..(ch + 1) * 12].iter().sum::<f32>() / 12.0;
            assert!((m_in - m_out).abs() < 1e-4, "{m_in} vs {m_out}");
        }
    }
}
