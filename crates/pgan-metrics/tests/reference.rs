//! Agreement with the independent NumPy implementation in `scripts/metrics_reference.py`, via
//! the checked-in fixture `tests/fixtures/reference.json` (regenerate with
//! `python3 scripts/metrics_reference.py`; no Python is needed to run this test).

use pgan_metrics::msssim::ms_ssim;
use pgan_metrics::pyramid::laplacian_pyramid;
use pgan_metrics::swd::{
    distance_for_directions, extract_descriptor, normalize_descriptors, DescriptorSet,
};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/reference.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn floats64(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn uint(v: &Value) -> usize {
    v.as_u64().expect("unsigned") as usize
}

/// `|got - want| <= 1e-4 * |want| + floor`: 1e-4 relative, with an absolute floor for values
/// that are (close to) zero.
fn assert_close(what: &str, got: &[f64], want: &[f64], floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs() + floor,
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn laplacian_pyramid_matches_reference() {
    let fx = fixture();
    for (k, case) in fx["pyramids"].as_array().unwrap().iter().enumerate() {
        let (c, h, w) = (uint(&case["c"]), uint(&case["h"]), uint(&case["w"]));
        let pyr = laplacian_pyramid(
            &floats(&case["image"]),
            c,
            h,
            w,
            uint(&case["min_resolution"]),
        );
        let levels = case["levels"].as_array().unwrap();
        assert_eq!(pyr.len(), levels.len(), "pyramid {k}: level count");
        for (l, (got, want)) in pyr.iter().zip(levels).enumerate() {
            assert_eq!(
                (got.h, got.w),
                (uint(&want["h"]), uint(&want["w"])),
                "pyramid {k} level {l}: size"
            );
            assert_close(
                &format!("pyramid {k} level {l}"),
                &to64(&got.data),
                &floats64(&want["data"]),
                1e-6,
            );
        }
    }
}

#[test]
fn descriptors_and_normalisation_match_reference() {
    let fx = fixture();
    let pyr_case = &fx["pyramids"][0];
    let d = &fx["descriptors"];
    let patch = uint(&d["patch"]);
    let pyr = laplacian_pyramid(
        &floats(&pyr_case["image"]),
        3,
        32,
        32,
        uint(&d["min_resolution"]),
    );
    for case in d["levels"].as_array().unwrap() {
        let level = &pyr[uint(&case["level"])];
        let mut raw = Vec::new();
        for pos in case["positions"].as_array().unwrap() {
            extract_descriptor(level, uint(&pos[0]), uint(&pos[1]), patch, &mut raw);
        }
        assert_close(
            "raw descriptors",
            &to64(&raw),
            &floats64(&case["raw"]),
            1e-6,
        );
        let mut set = DescriptorSet {
            resolution: level.h,
            channels: 3,
            patch,
            data: raw,
        };
        normalize_descriptors(&mut set);
        assert_close(
            "normalised descriptors",
            &to64(&set.data),
            &floats64(&case["normalized"]),
            1e-5,
        );
    }
}

#[test]
fn sliced_distance_matches_reference() {
    let fx = fixture();
    for case in fx["distances"].as_array().unwrap() {
        let (channels, patch) = (uint(&case["channels"]), uint(&case["patch"]));
        let mut a = DescriptorSet {
            resolution: 0,
            channels,
            patch,
            data: floats(&case["a"]),
        };
        let mut b = DescriptorSet {
            resolution: 0,
            channels,
            patch,
            data: floats(&case["b"]),
        };
        assert_eq!(a.len(), uint(&case["n"]));
        let dirs = floats(&case["directions"]);
        let raw = distance_for_directions(&a, &b, &dirs).unwrap();
        assert_close(
            "raw distance",
            &[raw],
            &[case["distance_raw"].as_f64().unwrap()],
            0.0,
        );
        normalize_descriptors(&mut a);
        normalize_descriptors(&mut b);
        let norm = distance_for_directions(&a, &b, &dirs).unwrap();
        assert_close(
            "normalised distance",
            &[norm],
            &[case["distance_normalized"].as_f64().unwrap()],
            0.0,
        );
    }
}

#[test]
fn ms_ssim_matches_reference() {
    let fx = fixture();
    let mut saw_clipped = false;
    for case in fx["ms_ssim"].as_array().unwrap() {
        let (c, h, w) = (uint(&case["c"]), uint(&case["h"]), uint(&case["w"]));
        let want = case["ms_ssim"].as_f64().unwrap();
        saw_clipped |= want == 0.0;
        let got = ms_ssim(&floats(&case["a"]), &floats(&case["b"]), c, h, w);
        assert_close(&format!("ms-ssim {c}x{h}x{w}"), &[got], &[want], 1e-9);
    }
    assert!(
        saw_clipped,
        "the fixture should include a pair whose contrast term is clipped to 0"
    );
}
