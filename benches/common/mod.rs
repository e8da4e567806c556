//! Shared helpers for the pgan-data benchmarks: a synthetic "photo" folder.

use std::path::Path;

use image::{codecs::jpeg::JpegEncoder, Rgb, RgbImage};

/// Deterministic photo-like content: smooth gradients, a few soft blobs and
/// per-pixel noise, so JPEG sizes and decode costs resemble real photos.
pub fn synthetic_photo(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            let x = (rand() % w) as f32;
            let y = (rand() % h) as f32;
            let r = 20.0 + (rand() % 120) as f32;
            (
                x,
                y,
                r,
                [
                    (rand() % 256) as f32,
                    (rand() % 256) as f32,
                    (rand() % 256) as f32,
                ],
            )
        })
        .collect();
    let base = [
        (rand() % 128) as f32,
        (rand() % 128) as f32,
        (rand() % 128) as f32,
    ];
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let mut c = [
            base[0] + 100.0 * fx,
            base[1] + 100.0 * fy,
            base[2] + 60.0 * (fx + fy),
        ];
        for &(bx, by, r, col) in &blobs {
            let d2 = ((x as f32 - bx).powi(2) + (y as f32 - by).powi(2)) / (r * r);
            let k = (-d2).exp();
            for i in 0..3 {
                c[i] = c[i] * (1.0 - k) + col[i] * k;
            }
        }
        let noise = (rand() % 25) as f32 - 12.0;
        Rgb(c.map(|v| (v + noise).clamp(0.0, 255.0) as u8))
    })
}

/// Fill `dir` with `n` JPEGs of `w x h` (quality 90) unless it already holds images.
pub fn ensure_jpeg_folder(dir: &Path, n: u32, w: u32, h: u32) {
    std::fs::create_dir_all(dir).expect("create bench folder");
    let existing = std::fs::read_dir(dir).expect("read bench folder").count();
    if existing > 0 {
        return;
    }
    use rayon::prelude::*;
    (0..n).into_par_iter().for_each(|i| {
        let img = synthetic_photo(w, h, i);
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .expect("encode jpeg");
        std::fs::write(dir.join(format!("photo_{i:05}.jpg")), bytes).expect("write jpeg");
    });
}

/// Read a `usize`/`u32` style environment variable with a default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
