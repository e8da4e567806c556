//! End-to-end runs of the `pgan` binary: prepare → train → render → eval → report on a tiny
//! dataset, Ctrl-C and resume, and the errors a user meets on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn pgan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgan"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    text(&out)
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{cmd:?} should fail with exit 2:\n{}",
        text(&out)
    );
    text(&out)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Small images in mixed formats and sizes, one of them corrupt.
fn image_folder(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("nested")).unwrap();
    for k in 0..20u32 {
        let img = image::RgbImage::from_fn(12 + k % 5, 10 + k % 7, |x, y| {
            image::Rgb([(x * 20 + k * 7) as u8, (y * 20) as u8, (k * 40 % 256) as u8])
        });
        let name = match k % 3 {
            0 => format!("{k}.png"),
            1 => format!("nested/{k}.jpg"),
            _ => format!("{k}.bmp"),
        };
        img.save(images.join(name)).unwrap();
    }
    std::fs::write(images.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    images
}

/// `pgan train --no-progress` of `config` on `data` into `runs`; returns its output and the one
/// run directory it made there.
fn train_tiny(config: &Path, data: &Path, runs: &Path) -> (String, PathBuf) {
    let out = run_ok(
        pgan()
            .args(["train", "--no-progress", "--config"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .arg("--out-dir")
            .arg(runs),
    );
    let run = std::fs::read_dir(runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    (out, run)
}

/// `image_folder` prepared at 16x16 as `dir/tiny.pgan`, and `CONFIG` written to `dir/tiny.toml`.
fn tiny_dataset_and_config(dir: &Path) -> (PathBuf, PathBuf) {
    let images = image_folder(dir);
    let data = dir.join("tiny.pgan");
    run_ok(pgan().args(["prepare"]).arg(&images).arg(&data).args([
        "--resolution",
        "16",
        "--quiet",
    ]));
    let config = dir.join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    (data, config)
}

const CONFIG: &str = r#"
[run]
seed = 5
tick_kimg = 0.016
checkpoint_ticks = 1
sample_rows = 2
sample_cols = 3
[model]
preset = "cpu-small"
resolution = 16
latent_dim = 8
fmap_base = 16
fmap_max = 8
[schedule]
lod_training_kimg = 0.016
lod_transition_kimg = 0.016
total_kimg = 0.064
minibatch_default = 4
[eval]
every_kimg = 0.032
num_images = 16
msssim_pairs = 8
"#;

#[test]
fn prepare_train_render_eval_report() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    let data = dir.path().join("tiny.pgan");

    let out = run_ok(pgan().args(["prepare"]).arg(&images).arg(&data).args([
        "--resolution",
        "16",
        "--quiet",
    ]));
    assert!(
        out.contains("20"),
        "summary counts the written images: {out}"
    );
    assert!(
        out.contains("skipped 1"),
        "summary counts the skipped file: {out}"
    );
    let report = std::fs::read_to_string(dir.path().join("tiny.pgan.report.txt")).unwrap();
    assert!(
        report.contains("broken.png"),
        "the report names the skipped file: {report}"
    );
    let info = run_ok(pgan().arg("info").arg(&data));
    assert!(info.contains("8"), "{info}");
    run_ok(pgan().arg("verify").arg(&data));

    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let runs = dir.path().join("runs");
    let dry = run_ok(
        pgan()
            .args(["train", "--dry-run", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data),
    );
    assert!(dry.contains("fade") && dry.contains("16x16"), "{dry}");
    assert!(
        dry.contains("parameters: G ") && dry.contains("wgan-gp (lambda 10"),
        "{dry}"
    );
    assert!(
        dry.contains("0.048 – 0.064") && dry.contains("total: 0.064 kimg (64 images shown)"),
        "{dry}"
    );
    let ema = run_ok(
        pgan()
            .args(["train", "--dry-run", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .args(["--ema-half-life-kimg", "7.5"]),
    );
    assert!(
        ema.contains("half_life_kimg = 7.5"),
        "the flag overrides [ema]: {ema}"
    );
    let bad = run_err(
        pgan()
            .args(["train", "--dry-run", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .args(["--ema-half-life-kimg=-1"]),
    );
    assert!(
        bad.contains("--ema-half-life-kimg must be non-negative"),
        "{bad}"
    );

    let (out, run) = train_tiny(&config, &data, &runs);
    assert!(out.contains("sample sheet"), "{out}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("Metrics/msssim_fake"),
        "evaluation ran during training: {metrics}"
    );

    let sheet = dir.path().join("sheet.png");
    run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&sheet)
            .args([
                "--seeds",
                "0-3",
                "--rows",
                "2",
                "--cols",
                "2",
                "--truncation",
                "0.7",
            ]),
    );
    assert!(image::open(&sheet).is_ok());
    let interp = dir.path().join("interp.png");
    run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&interp)
            .args(["--seeds", "1,2,3", "--interpolate", "4"]),
    );
    assert!(image::open(&interp).is_ok());
    assert!(image::open(interp.with_extension("gif")).is_ok());
    let timeline = dir.path().join("timeline.png");
    run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&timeline)
            .args(["--seeds", "0-2", "--timeline"]),
    );
    let checkpoints = std::fs::read_dir(run.join("checkpoints")).unwrap().count() as u32;
    let tl = image::open(&timeline).unwrap();
    assert!(
        tl.height() > tl.width() / 3 * checkpoints.min(3) / 2,
        "one row per checkpoint"
    );

    let json = dir.path().join("eval.json");
    let out = run_ok(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "16", "--pairs", "8", "--json"])
            .arg(&json),
    );
    assert!(out.contains("MS-SSIM"), "{out}");
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(parsed["msssim_fake"].as_f64().is_some());

    // Export: a safetensors file whose header lists every parameter of the EMA generator.
    let exported = dir.path().join("g_ema.safetensors");
    let out = run_ok(pgan().arg("export").arg(&run).arg("--out").arg(&exported));
    let bytes = std::fs::read(&exported).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let header = header.as_object().unwrap();
    assert_eq!(header["__metadata__"]["pgan.network"], "g_ema");
    let mut params = 0u64;
    for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        assert_eq!(info["dtype"], "F32", "{name}");
        params += info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .product::<u64>();
    }
    assert!(
        out.contains(&format!(
            "{} tensors, {params} parameters",
            header.len() - 1
        )),
        "{out}"
    );
    let err = run_err(
        pgan()
            .arg("export")
            .arg(dir.path())
            .arg("--out")
            .arg(dir.path().join("x.safetensors")),
    );
    assert!(err.contains("no checkpoint"), "{err}");

    let out = run_ok(pgan().arg("report").arg(&run));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("data:image/png;base64"),
        "{out}"
    );
}

/// The mode-collapse benchmark's pieces end to end: `pgan synth` → prepare → train → `pgan eval
/// --modes`, which classifies the generated images and, as the ceiling to read them against, as
/// many reals.
#[test]
fn synth_train_eval_modes_reports_generated_and_real_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    let out = run_ok(pgan().arg("synth").arg(&synth).args([
        "--modes",
        "8",
        "--resolution",
        "16",
        "--count",
        "80",
        "--seed",
        "0",
    ]));
    assert!(out.contains("8 modes"), "{out}");
    let data = dir.path().join("synth.pgan");
    run_ok(
        pgan()
            .arg("prepare")
            .arg(&synth)
            .arg(&data)
            .args(["--resolution", "16", "--quiet"]),
    );
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (_, run) = train_tiny(&config, &data, &dir.path().join("runs"));
    let json = dir.path().join("eval.json");
    let out = run_ok(
        pgan()
            .arg("eval")
            .arg(&run)
            .arg("--modes")
            .arg(synth.join("modes.json"))
            .args(["--num", "64", "--pairs", "8", "--json"])
            .arg(&json),
    );
    assert!(
        out.contains("generated images:") && out.contains("the classifier's ceiling"),
        "{out}"
    );
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(parsed["modes"]["samples"], 64);
    assert_eq!(parsed["modes"]["modes"], 8);
    // Reals are drawn evenly from every mode and the classifier knows them: all 8 are covered
    // and nearly every real is recognised.
    let real = &parsed["modes_real"];
    assert_eq!(real["samples"], 64, "{real}");
    assert_eq!(real["covered"], 8, "{real}");
    assert!(real["unrecognised"].as_u64().unwrap() <= 6, "{real}");
    assert!(real["kl_to_uniform"].as_f64().unwrap() < 0.1, "{real}");
    // ... and split by attribute, the reals sit near the uniform share for every value.
    let attributes = real["attributes"].as_array().unwrap();
    assert_eq!(attributes.len(), 3, "{real}");
    for a in attributes {
        for share in a["shares"].as_array().unwrap() {
            let s = share[1].as_f64().unwrap();
            assert!((0.5..=1.5).contains(&s), "{a}");
        }
    }
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");

    // A long run, interrupted once the first tick is logged.
    let child = pgan()
        .args(["train", "--no-progress", "--total-kimg", "1000", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .arg("--out-dir")
        .arg(&runs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = wait_for_run(&runs, "a first tick", |run| {
        std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|m| m.lines().count() >= 1)
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        text(&out).contains("--resume"),
        "tells how to continue: {}",
        text(&out)
    );

    let out = run_ok(
        pgan()
            .args([
                "train",
                "--no-progress",
                "--total-kimg",
                "0.064",
                "--resume",
            ])
            .arg(&run),
    );
    assert!(out.contains("checkpoint"), "{out}");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("resumed") && log.contains("finished"), "{log}");
}

/// The run directory a background `pgan train` makes in `runs`, once `ready` holds for it
/// (polled every 5 ms, for at most 2 minutes).
fn wait_for_run(runs: &Path, what: &str, ready: impl Fn(&Path) -> bool) -> PathBuf {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {what} within 2 minutes"
        );
        let run = std::fs::read_dir(runs)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path());
        if let Some(run) = run.filter(|run| ready(run)) {
            return run;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The tensor bytes of a `.safetensors` file (what follows its JSON header), which hold every
/// weight; the header's metadata map has no fixed key order.
fn safetensors_data(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header_len..].to_vec()
}

#[test]
fn a_run_killed_mid_way_and_resumed_ends_bit_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    // Through both fades to 16x16 and on (checkpoints every 16-image tick).
    let total = ["--total-kimg", "0.4"];
    let train = |runs: &Path| {
        let mut cmd = pgan();
        cmd.args(["train", "--no-progress"])
            .args(total)
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg("--out-dir")
            .arg(runs);
        cmd
    };
    let straight_runs = dir.path().join("straight");
    run_ok(&mut train(&straight_runs));

    // The same run, killed with SIGKILL (no handler, no final checkpoint) once a few
    // checkpoints exist, wherever it is then: maybe in the middle of writing the next one.
    let killed_runs = dir.path().join("killed");
    let mut child = train(&killed_runs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = wait_for_run(&killed_runs, "a third checkpoint", |run| {
        std::fs::read_dir(run.join("checkpoints")).is_ok_and(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("ckpt-")
            })
            .count()
                >= 3
        })
    });
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "the run ended before it was killed ({status}); lengthen it"
    );

    let out = run_ok(
        pgan()
            .args(["train", "--no-progress", "--resume"])
            .arg(&run),
    );
    assert!(out.contains("finished"), "{out}");
    let leftovers: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ckpt-"))
        .collect();
    assert!(leftovers.is_empty(), "temp folders left: {leftovers:?}");

    let straight = std::fs::read_dir(&straight_runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for net in ["g", "d", "g-ema"] {
        let export = |run: &Path, name: &str| {
            let out = dir.path().join(format!("{name}-{net}.safetensors"));
            run_ok(
                pgan()
                    .arg("export")
                    .arg(run)
                    .args(["--net", net, "--out"])
                    .arg(&out),
            );
            safetensors_data(&out)
        };
        assert!(
            export(&run, "resumed") == export(&straight, "straight"),
            "{net}: weights differ between the killed-and-resumed and the uninterrupted run"
        );
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");

    let err = run_err(
        pgan()
            .arg("prepare")
            .arg(&missing)
            .arg(dir.path().join("x.pgan")),
    );
    assert!(err.contains("missing"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = run_err(
        pgan()
            .arg("prepare")
            .arg(&empty)
            .arg(dir.path().join("x.pgan")),
    );
    assert!(err.contains("empty"), "{err}");

    let garbage = dir.path().join("garbage.pgan");
    std::fs::write(&garbage, vec![7u8; 10_000]).unwrap();
    let err = run_err(pgan().arg("info").arg(&garbage));
    assert!(err.contains("garbage.pgan"), "{err}");

    let err = run_err(
        pgan()
            .args(["train", "--data"])
            .arg(dir.path().join("nope.pgan")),
    );
    assert!(err.contains("nope.pgan"), "{err}");

    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "[schedule]\nlod_trainig_kimg = 3\n").unwrap();
    let err = run_err(pgan().args(["train", "--config"]).arg(&bad_toml));
    assert!(
        err.contains("bad.toml") && err.contains("lod_trainig_kimg"),
        "{err}"
    );

    // A dataset prepared below the config's resolution: the model would need levels it lacks.
    let images = image_folder(dir.path());
    let small = dir.path().join("small.pgan");
    run_ok(pgan().args(["prepare"]).arg(&images).arg(&small).args([
        "--resolution",
        "8",
        "--quiet",
    ]));
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let err = run_err(
        pgan()
            .args(["train", "--no-progress", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&small)
            .arg("--out-dir")
            .arg(dir.path().join("runs")),
    );
    assert!(
        err.contains("small.pgan") && err.contains("below the config's model.resolution 16x16"),
        "{err}"
    );

    let err = run_err(pgan().args(["train", "--backend", "tpu"]));
    assert!(err.contains("--backend"), "{err}");

    let err = run_err(
        pgan()
            .args(["render"])
            .arg(&missing)
            .arg("--out")
            .arg(dir.path().join("x.png")),
    );
    assert!(err.contains("missing"), "{err}");

    let err = run_err(
        pgan()
            .args(["render", "."])
            .arg("--out")
            .arg("x.png")
            .args(["--seeds", "9-1"]),
    );
    assert!(err.contains("--seeds"), "{err}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_backend_that_is_not_compiled_in_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let err = run_err(
        pgan()
            .args(["train", "--backend", "cuda", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg("--out-dir")
            .arg(dir.path()),
    );
    assert!(err.contains("--features cuda"), "{err}");
}

#[cfg(feature = "wgpu")]
#[test]
fn a_wgpu_device_that_does_not_exist_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let err = run_err(
        pgan()
            .args([
                "train",
                "--no-progress",
                "--backend",
                "wgpu",
                "--device",
                "7",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg("--out-dir")
            .arg(dir.path().join("runs")),
    );
    assert!(
        err.contains("no usable device") && err.contains("--device"),
        "{err}"
    );
    assert!(
        !err.contains("panicked"),
        "the driver's panic leaks out: {err}"
    );
}

// =============================================================================================
// Data and prepare reliability (issue 22): bad and special files, signals, exit codes, datasets
// that change under a reader. Kept in one block, apart from the training tests above.
// =============================================================================================

/// Runs `cmd` and returns its exit code (None: killed by a signal) and output; a command still
/// running after `secs` is killed and fails the test (it hangs).
fn run_within(cmd: &mut Command, secs: u64) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(secs) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("{cmd:?} hangs (killed after {secs} s):\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out))
}

/// Makes a FIFO (named pipe) at `path`.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

/// Names in `dir` that start with `prefix` (temp files left behind).
fn names_starting(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// A PNG of a few dozen bytes whose header declares `w x h` pixels of `colour` (2 RGB, 6 RGBA)
/// at `depth` bits: a decompression bomb.
fn bomb_png(w: u32, h: u32, colour: u8, depth: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    // A zlib stream holding a few zero bytes (one stored block).
    chunk(
        &mut png,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0, 0, 0, 1,
        ],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn prepare_skips_decompression_bombs_with_a_reason_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    std::fs::write(images.join("bomb.png"), bomb_png(100_000, 100_000, 2, 8)).unwrap();
    // Under the pixel limit, over the decoder's memory limit: 144 MP of 16-bit RGBA (1.1 GiB).
    std::fs::write(images.join("deep.png"), bomb_png(12_000, 12_000, 6, 16)).unwrap();
    let data = dir.path().join("b.pgan");
    let mut child = pgan()
        .arg("prepare")
        .arg(&images)
        .arg(&data)
        .args(["--resolution", "8", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait4 reaps this very child and returns its own peak memory (not the other tests').
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid out-parameter.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our child; WNOHANG returns 0 while it runs.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut rusage) };
        if rc == pid {
            break (status, rusage);
        }
        assert_eq!(rc, 0, "wait4 failed");
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("prepare hangs on a decompression bomb");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "prepare failed (wait status {status}):\n{out}"
    );
    // ru_maxrss is in KiB on Linux.
    let peak = rusage.ru_maxrss as u64 * 1024;
    assert!(peak < 1 << 30, "peak memory {} MiB", peak >> 20);
    assert!(
        out.contains("skipped 3 files")
            && out.contains("note: 1 images have more than 178956970 pixels (--max-pixels)"),
        "{out}"
    );
    let report = std::fs::read_to_string(dir.path().join("b.pgan.report.txt")).unwrap();
    assert!(
        report.contains("bomb.png\ttoo many pixels: 100000x100000 is 10000000000 pixels")
            && report.contains("deep.png\ttoo large to decode: 12000x12000"),
        "{report}"
    );
    assert!(names_starting(dir.path(), ".b.pgan").is_empty());
    let err = run_err(
        pgan()
            .arg("prepare")
            .arg(&images)
            .arg(dir.path().join("c.pgan"))
            .args(["--max-pixels", "0"]),
    );
    assert!(err.contains("--max-pixels must be at least 1"), "{err}");
}

#[test]
fn special_files_are_skipped_by_prepare_and_refused_by_readers_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    mkfifo(&images.join("x.png"));
    std::os::unix::fs::symlink("/dev/zero", images.join("zero.jpg")).unwrap();
    let data = dir.path().join("d.pgan");
    let (code, out) = run_within(
        pgan()
            .arg("prepare")
            .arg(&images)
            .arg(&data)
            .args(["--resolution", "8", "--quiet"]),
        60,
    );
    assert_eq!(code, Some(0), "{out}");
    let report = std::fs::read_to_string(dir.path().join("d.pgan.report.txt")).unwrap();
    assert!(
        report.contains("x.png\tnot a regular file (a FIFO)")
            && report.contains("zero.jpg\tnot a regular file (a character device)"),
        "{report}"
    );

    let fifo = dir.path().join("fifo.pgan");
    mkfifo(&fifo);
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let runs = dir.path().join("runs");
    let mut info = pgan();
    info.arg("info").arg(&fifo);
    let mut verify = pgan();
    verify.arg("verify").arg(&fifo);
    let mut dry_run = pgan();
    dry_run
        .args(["train", "--dry-run", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&fifo);
    let mut train = pgan();
    train
        .args(["train", "--no-progress", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&fifo)
        .arg("--out-dir")
        .arg(&runs);
    let mut commands = [info, verify, dry_run, train];
    for cmd in &mut commands {
        let (code, out) = run_within(cmd, 60);
        assert_eq!(code, Some(2), "{cmd:?}:\n{out}");
        assert!(
            out.contains(&format!("{} is a FIFO, not a regular file", fifo.display())),
            "{cmd:?}:\n{out}"
        );
    }
}

#[test]
fn prepare_force_replaces_regular_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    let fifo = dir.path().join("pipe.pgan");
    mkfifo(&fifo);
    let link = dir.path().join("link.pgan");
    std::fs::write(dir.path().join("target.pgan"), b"keep").unwrap();
    std::os::unix::fs::symlink("target.pgan", &link).unwrap();
    for (out, kind) in [(&fifo, "a FIFO"), (&link, "a symbolic link")] {
        let err = run_err(pgan().arg("prepare").arg(&images).arg(out).args([
            "--resolution",
            "8",
            "--quiet",
            "--force",
        ]));
        assert!(
            err.contains(&format!("it is {kind}, not a regular file")),
            "{err}"
        );
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(
        std::fs::read(dir.path().join("target.pgan")).unwrap(),
        b"keep"
    );
    // A regular file is replaced.
    let file = dir.path().join("file.pgan");
    std::fs::write(&file, b"old").unwrap();
    run_ok(pgan().arg("prepare").arg(&images).arg(&file).args([
        "--resolution",
        "8",
        "--quiet",
        "--force",
    ]));
    run_ok(pgan().arg("verify").arg(&file));
}

#[test]
fn verify_exits_1_on_corruption_and_2_when_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    let data = dir.path().join("v.pgan");
    run_ok(
        pgan()
            .arg("prepare")
            .arg(&images)
            .arg(&data)
            .args(["--resolution", "8", "--quiet"]),
    );
    let out = run_ok(pgan().arg("verify").arg(&data));
    assert!(out.contains("all 2 levels ok"), "{out}");
    let good = std::fs::read(&data).unwrap();
    // A pixel of the 8x8 level (the second page after the header) and a header byte.
    for (at, what) in [(8192 + 5, "MISMATCH"), (13, "corrupt header")] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        let path = dir.path().join("bad.pgan");
        std::fs::write(&path, &bad).unwrap();
        let (code, out) = run_within(pgan().arg("verify").arg(&path), 60);
        assert_eq!(code, Some(1), "{what}:\n{out}");
        assert!(out.contains(what) && out.contains("bad.pgan"), "{out}");
    }
    let (code, out) = run_within(pgan().arg("verify").arg(dir.path().join("none.pgan")), 60);
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = run_within(pgan().arg("verify").arg(dir.path()), 60);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is a folder, not a regular file"), "{out}");
    let (code, _) = run_within(pgan().arg("verify"), 60);
    assert_eq!(code, Some(2), "usage error");
}

#[test]
fn prepare_removes_its_temporary_file_on_sigterm_and_sigint_and_stale_ones_at_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    // Slow enough to be caught mid-way: 120 copies (hard links) of a 1500x1500 noise PNG.
    let images = dir.path().join("big");
    std::fs::create_dir(&images).unwrap();
    let mut state = 1u32;
    let noise = image::RgbImage::from_fn(1500, 1500, |_, _| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        image::Rgb([(state >> 24) as u8, (state >> 16) as u8, (state >> 8) as u8])
    });
    noise.save(images.join("000.png")).unwrap();
    for k in 1..120 {
        std::fs::hard_link(images.join("000.png"), images.join(format!("{k:03}.png"))).unwrap();
    }
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let data = out_dir.join("s.pgan");
    for signal in ["-TERM", "-INT"] {
        let child = pgan()
            .arg("prepare")
            .arg(&images)
            .arg(&data)
            .args(["--resolution", "8", "--quiet"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while names_starting(&out_dir, ".s.pgan.tmp-").is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no temporary file"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{signal}: {}", text(&out));
        assert!(text(&out).contains("was not written"), "{}", text(&out));
        let left = std::fs::read_dir(&out_dir).unwrap().count();
        assert_eq!(left, 0, "{signal}: files left in the output folder");
    }
    // A run killed without a chance to clean up (SIGKILL) leaves its temporary file; the next
    // run for the same output removes it (its process is gone) and says so.
    let mut child = pgan()
        .arg("prepare")
        .arg(&images)
        .arg(&data)
        .args(["--resolution", "8", "--quiet"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while names_starting(&out_dir, ".s.pgan.tmp-").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temporary file"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(names_starting(&out_dir, ".s.pgan.tmp-").len(), 1);
    let small = image_folder(dir.path());
    let out =
        run_ok(
            pgan()
                .arg("prepare")
                .arg(&small)
                .arg(&data)
                .args(["--resolution", "8", "--quiet"]),
        );
    assert!(
        out.contains("removed 1 temporary files left by interrupted runs"),
        "{out}"
    );
    assert!(names_starting(&out_dir, ".s.pgan").is_empty());
}

#[test]
fn prepare_keeps_the_dataset_when_only_the_report_fails_and_a_stale_report_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    // The report's name is taken by a folder: the report cannot be written.
    let data = dir.path().join("r.pgan");
    std::fs::create_dir(dir.path().join("r.pgan.report.txt")).unwrap();
    let out = run_ok(pgan().arg("prepare").arg(&images).arg(&data).args([
        "--resolution",
        "8",
        "--quiet",
    ]));
    assert!(
        out.contains("warning: the report") && out.contains("the dataset is complete"),
        "{out}"
    );
    assert!(out.contains("skipped 1 files (the first: "), "{out}");
    run_ok(pgan().arg("verify").arg(&data));
    // An empty report left by an earlier run is replaced, never in the way.
    let data = dir.path().join("e.pgan");
    std::fs::write(dir.path().join("e.pgan.report.txt"), b"").unwrap();
    run_ok(
        pgan()
            .arg("prepare")
            .arg(&images)
            .arg(&data)
            .args(["--resolution", "8", "--quiet"]),
    );
    let report = std::fs::read_to_string(dir.path().join("e.pgan.report.txt")).unwrap();
    assert!(report.contains("broken.png"), "{report}");
    assert!(names_starting(dir.path(), ".").is_empty());
}

#[test]
fn info_shows_names_that_are_not_utf8_exactly() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let img = image::RgbImage::from_pixel(9, 9, image::Rgb([1, 2, 3]));
    img.save(images.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png")))
        .unwrap();
    img.save(images.join("plain.png")).unwrap();
    let data = dir.path().join("n.pgan");
    run_ok(
        pgan()
            .arg("prepare")
            .arg(&images)
            .arg(&data)
            .args(["--resolution", "8", "--quiet"]),
    );
    let info = run_ok(pgan().arg("info").arg(&data));
    assert!(
        info.contains("files:       caf\\xE9.png, plain.png"),
        "{info}"
    );
}

#[test]
fn train_refuses_a_dataset_whose_levels_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    // One pixel of the 8x8 level (the page after the 4x4 level's) flipped.
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[8192 + 100] ^= 0x10;
    std::fs::write(&data, &bytes).unwrap();
    let runs = dir.path().join("runs");
    let err = run_err(
        pgan()
            .args(["train", "--no-progress", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg("--out-dir")
            .arg(&runs),
    );
    assert!(
        err.contains("tiny.pgan") && err.contains("level 8x8 checksum mismatch"),
        "{err}"
    );
}

#[test]
fn a_dataset_truncated_while_training_is_a_clear_error_and_checkpoints_stay_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let copy = dir.path().join("copy.pgan");
    std::fs::copy(&data, &copy).unwrap();
    let runs = dir.path().join("runs");
    let child = pgan()
        .args(["train", "--no-progress", "--total-kimg", "1000", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&copy)
        .arg("--out-dir")
        .arg(&runs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = wait_for_run(&runs, "a first checkpoint", |run| {
        std::fs::read_dir(run.join("checkpoints")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
        })
    });
    // Keep only the header page: every level is gone from under the trainer's map.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "error: dataset file {} changed while in use",
            copy.display()
        )),
        "{}",
        text(&out)
    );
    // The last checkpoint loads.
    let exported = dir.path().join("g.safetensors");
    run_ok(pgan().arg("export").arg(&run).arg("--out").arg(&exported));
}
