//! Test fixture: a synthetic training run directory shaped like the
//! trainer's output (40 ticks over 4×4, 8×8 and 16×16 with fade phases).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Number of ticks the fixture writes.
pub const TICKS: usize = 40;

pub const CONFIG: &str = "\
# resolved config
[data]
path = \"data/emoji\"
background = [255, 255, 255]

[schedule]
start_resolution = 4
final_resolution = 16
kimg_per_phase = 2.5
minibatch = { 4 = 32, 8 = 16, 16 = 16 }

[train]
lr = 0.001
loss = \"wgan-gp\"   # <lambda> = 10 & drift = 0.001
";

/// `(resolution, stage, phase)` of tick `i` (1-based).
fn schedule(i: usize) -> (u32, u32, &'static str) {
    match i {
        1..=10 => (4, 0, "stable"),
        11..=15 => (8, 1, "fade"),
        16..=22 => (8, 1, "stable"),
        23..=28 => (16, 2, "fade"),
        _ => (16, 2, "stable"),
    }
}

/// Deterministic noise in [-1, 1].
fn noise(i: usize, k: u64) -> f64 {
    let mut x =
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x % 2001) as f64 / 1000.0 - 1.0
}

/// The metrics lines. Tick 30 has a NaN gradient norm, tick 31 a rollback;
/// SWD and MS-SSIM are logged every 5 ticks.
pub fn metrics_jsonl() -> String {
    let mut s = String::new();
    for i in 1..=TICKS {
        let (res, stage, phase) = schedule(i);
        let kimg = i as f64 * 0.25;
        let fade_pos = match i {
            11..=15 => (i - 10) as f64 / 5.0,
            23..=28 => (i - 22) as f64 / 6.0,
            _ => 1.0,
        };
        let scale = f64::from(res) / 4.0;
        let img_per_s = 900.0 / scale + 30.0 * noise(i, 1);
        let d_loss = -2.5 * (-(i as f64) / 12.0).exp() - 0.3 + 0.15 * noise(i, 2);
        let g_loss = 1.0 + 0.8 * (i as f64 / 15.0).sin() + 0.2 * noise(i, 3);
        let grad_g = if i == 30 {
            "NaN".to_string()
        } else {
            format!("{:.4}", 0.4 + 0.1 * noise(i, 4) + 0.2 * (1.0 - fade_pos))
        };
        let _ = write!(
            s,
            "{{\"tick\":{i},\"kimg\":{kimg},\"stage\":{stage},\"resolution\":{res},\"phase\":\"{phase}\",\
             \"alpha\":{fade_pos:.3},\"batch\":16,\"lr_g\":0.001,\"lr_d\":0.001,\
             \"Loss/D\":{d_loss:.4},\"Loss/G\":{g_loss:.4},\"Loss/D/penalty\":{:.4},\"Loss/D/drift\":{:.5},\
             \"D/real\":{:.4},\"D/fake\":{:.4},\"Grad/G/norm\":{grad_g},\"Grad/D/norm\":{:.4},\
             \"Speed/img_per_s\":{img_per_s:.1},\"Speed/sec_per_kimg\":{:.3},\"Mem/peak_rss_mb\":{:.0},\
             \"time_s\":{:.2},\"unknown/extra\":\"tolerated\"",
            0.3 + 0.2 * (-(i as f64) / 8.0).exp() + 0.05 * noise(i, 5),
            0.01 + 0.004 * noise(i, 6),
            2.1 + 0.3 * noise(i, 7),
            -1.3 + 0.3 * noise(i, 8),
            1.1 + 0.3 * noise(i, 9),
            1000.0 / img_per_s,
            600.0 + 40.0 * scale,
            i as f64 * 0.25 * 1000.0 / (900.0 / scale),
        );
        if i % 5 == 0 {
            let _ = write!(
                s,
                ",\"Metrics/swd\":{:.3},\"Metrics/msssim_fake\":{:.3},\"Metrics/msssim_real\":0.25",
                40.0 / (1.0 + i as f64 / 8.0) + 2.0,
                0.3 + 0.05 * noise(i, 11),
            );
        }
        if i == 31 {
            s.push_str(",\"Event/rollback\":1");
        }
        s.push_str("}\n");
    }
    s
}

/// A 70-line log with one WARN and one alarm line near the end.
pub fn log_txt() -> String {
    let mut s = String::new();
    for i in 1..=70 {
        let _ = writeln!(
            s,
            "[{:>6.1}s] INFO tick {i:>3} kimg {:.2} <ok>",
            i as f64 * 0.7,
            i as f64 * 0.25
        );
        if i == 60 {
            s.push_str("[  42.0s] WARN D loss spiked to -9.3 at kimg 7.50\n");
        }
        if i == 64 {
            s.push_str(
                "[  44.8s] ERROR NaN alarm: Grad/G/norm non-finite, rolled back to tick-000029\n",
            );
        }
    }
    s
}

/// A sample sheet: a `cells`×`cells` grid of `cell`-pixel tiles. With
/// `emoji` (a folder of PNGs), the tiles are downscaled emoji composited
/// on white, otherwise a coloured pattern varying with `seed`.
fn sheet(cells: u32, cell: u32, seed: u32, emoji: Option<&[PathBuf]>) -> image::RgbImage {
    let mut img = image::RgbImage::new(cells * cell, cells * cell);
    for gy in 0..cells {
        for gx in 0..cells {
            let n = gy * cells + gx;
            let tile: image::RgbImage = match emoji {
                Some(files) if !files.is_empty() => {
                    let f = &files[((n * 7 + seed * 13) as usize) % files.len()];
                    let rgba = image::open(f).expect("emoji png").to_rgba8();
                    let small = image::imageops::resize(
                        &rgba,
                        cell,
                        cell,
                        image::imageops::FilterType::Triangle,
                    );
                    image::RgbImage::from_fn(cell, cell, |x, y| {
                        let p = small.get_pixel(x, y).0;
                        let a = f32::from(p[3]) / 255.0;
                        let c = |v: u8| (f32::from(v) * a + 255.0 * (1.0 - a)).round() as u8;
                        image::Rgb([c(p[0]), c(p[1]), c(p[2])])
                    })
                }
                _ => image::RgbImage::from_fn(cell, cell, |x, y| {
                    let r = ((x * 255) / cell.max(1)) as u8;
                    let g = ((y * 255) / cell.max(1)) as u8;
                    image::Rgb([r, g, ((n * 37 + seed * 50) % 256) as u8])
                }),
            };
            image::imageops::replace(&mut img, &tile, i64::from(gx * cell), i64::from(gy * cell));
        }
    }
    img
}

/// Writes the fixture run directory `dir` (created if needed). With
/// `emoji_dir`, sample sheets are made of the bundled emoji.
pub fn write_run(dir: &Path, emoji_dir: Option<&Path>) {
    let samples = dir.join("samples");
    fs::create_dir_all(&samples).unwrap();
    fs::write(dir.join("config.toml"), CONFIG).unwrap();
    fs::write(dir.join("metrics.jsonl"), metrics_jsonl()).unwrap();
    fs::write(dir.join("log.txt"), log_txt()).unwrap();
    let emoji: Option<Vec<PathBuf>> = emoji_dir.map(|d| {
        let mut v: Vec<PathBuf> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .collect();
        v.sort();
        v
    });
    let emoji = emoji.as_deref();
    sheet(4, 8, 1, emoji)
        .save(samples.join("tick-000020.png"))
        .unwrap();
    sheet(4, 16, 2, emoji)
        .save(samples.join("tick-000040.png"))
        .unwrap();
    // Timeline: one row per checkpoint resolution, upscaled to 16 px cells.
    let mut timeline = image::RgbImage::new(6 * 16, 3 * 16);
    for (row, res) in [4u32, 8, 16].into_iter().enumerate() {
        for col in 0..6u32 {
            let strip = sheet(1, res, 3 + col, emoji);
            let tile =
                image::imageops::resize(&strip, 16, 16, image::imageops::FilterType::Nearest);
            image::imageops::replace(&mut timeline, &tile, i64::from(col * 16), row as i64 * 16);
        }
    }
    timeline.save(samples.join("timeline.png")).unwrap();
}
