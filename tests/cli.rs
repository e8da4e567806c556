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
    // Preparing onto an existing file: the library says what, the CLI names the flag.
    let err = run_err(pgan().args(["prepare"]).arg(&images).arg(&small).args([
        "--resolution",
        "8",
        "--quiet",
    ]));
    assert!(
        err.contains("small.pgan") && err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
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
        err.contains("small.pgan")
            && err.contains("below the config's model.resolution 16x16")
            && err.contains("--resolution 16"),
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
