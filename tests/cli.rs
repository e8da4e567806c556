//! End-to-end runs of the `pgan` binary: prepare → train → render → eval → report on a tiny
//! dataset, Ctrl-C and resume, and the errors a user meets on bad input.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgan_data::test_files::bomb_png;

mod common;
use common::{first_run, pgan, text};

/// `pgan prepare IMAGES OUT --resolution RES --quiet`, which must succeed; its output.
fn prepare_quietly(images: &Path, out: &Path, resolution: u32) -> String {
    run_ok(pgan().arg("prepare").arg(images).arg(out).args([
        "--resolution",
        &resolution.to_string(),
        "--quiet",
    ]))
}

/// `cmd` (a `pgan` command) given `prepare IMAGES OUT --resolution 8 --quiet`, its output
/// piped: for a prepare that runs beside something else (a signal, another prepare).
fn prepare_at_8_piped<'a>(cmd: &'a mut Command, images: &Path, out: &Path) -> &'a mut Command {
    cmd.arg("prepare")
        .arg(images)
        .arg(out)
        .args(["--resolution", "8", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
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

/// `pgan train --no-progress` of `config` on `data` into `runs`, plus `extra` flags; returns its
/// output and the one run directory it made there.
fn train_tiny(config: &Path, data: &Path, runs: &Path, extra: &[&str]) -> (String, PathBuf) {
    let out = run_ok(&mut train_cmd(config, data, runs, extra));
    let run = first_run(runs);
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

/// The exit code of a command stopped by `signal` (as `kill` names it): 128 + its number, as
/// shells report it.
fn exit_code(signal: &str) -> i32 {
    match signal {
        "-INT" => 130,
        "-TERM" => 143,
        "-HUP" => 129,
        other => panic!("no exit code known for {other}"),
    }
}

/// `cmd` with SIGHUP at its default action, whatever this test inherited: a job started under
/// `nohup` ignores it, and an ignored signal stays ignored in the processes it starts (which
/// pgan respects, as `nohup` asks).
fn with_default_sighup(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: `signal` is async-signal-safe, so it may run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        })
    }
}

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
    // `pgan train --dry-run --config CONFIG --data DATA EXTRA...`
    let dry_run = |config: &Path, extra: &[&str]| {
        let mut cmd = pgan();
        cmd.args(["train", "--dry-run", "--config"])
            .arg(config)
            .arg("--data")
            .arg(&data)
            .args(extra);
        cmd
    };
    let dry = run_ok(&mut dry_run(&config, &[]));
    assert!(dry.contains("fade") && dry.contains("16x16"), "{dry}");
    assert!(
        dry.contains("parameters: G ") && dry.contains("wgan-gp (lambda 10"),
        "{dry}"
    );
    assert!(
        dry.contains("0.048 – 0.064") && dry.contains("total: 0.064 kimg (64 images shown)"),
        "{dry}"
    );
    let stopping = run_ok(&mut dry_run(&config, &["--stop-after-kimg", "0.032"]));
    assert!(
        stopping.contains("stop: after 0.032 kimg (--stop-after-kimg)"),
        "{stopping}"
    );
    let ema = run_ok(&mut dry_run(&config, &["--ema-half-life-kimg", "7.5"]));
    assert!(
        ema.contains("half_life_kimg = 7.5"),
        "the flag overrides [ema]: {ema}"
    );
    let bad = run_err(&mut dry_run(&config, &["--ema-half-life-kimg=-1"]));
    assert!(
        bad.contains("--ema-half-life-kimg must be non-negative"),
        "{bad}"
    );
    // The dry run makes the checks of a real start: a model above the dataset's resolution,
    // FID without its weights.
    let bad = run_err(&mut dry_run(&config, &["--resolution", "32"]));
    assert!(
        bad.contains("below the config's model.resolution 32x32"),
        "{bad}"
    );
    let fid_config = dir.path().join("fid.toml");
    std::fs::write(
        &fid_config,
        CONFIG.replace("[eval]\n", "[eval]\nfid_every_kimg = 0.032\n"),
    )
    .unwrap();
    let missing = dir.path().join("no-inception.safetensors");
    let bad = run_err(dry_run(&fid_config, &[]).env("PGAN_INCEPTION", &missing));
    assert!(bad.contains("inception weights not found"), "{bad}");
    // ... a CPU device that does not exist, an output folder that is a file.
    let bad = run_err(&mut dry_run(&config, &["--device", "5"]));
    assert!(bad.contains("device 5 does not exist"), "{bad}");
    let bad = run_err(dry_run(&config, &["--out-dir"]).arg(&fid_config));
    assert!(bad.contains("is a regular file, not a folder"), "{bad}");
    let typo = dir.path().join("typo.pgan");
    let bad = run_err(
        pgan()
            .args(["train", "--dry-run", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&typo),
    );
    assert!(
        bad.contains(&format!("--data {}: does not exist", typo.display())),
        "{bad}"
    );
    // A key the run would not use: an error in the file, a warning when a flag caused it.
    let r1_config = dir.path().join("r1.toml");
    std::fs::write(&r1_config, format!("{CONFIG}[loss]\nr1_gamma = 5.0\n")).unwrap();
    let dry = |extra: &[&str]| dry_run(&r1_config, extra).output().unwrap();
    let bad = dry(&[]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success()
            && stderr.contains("keys without effect")
            && stderr.contains("loss.r1_gamma weights"),
        "{stderr}"
    );
    std::fs::write(
        &r1_config,
        format!("{CONFIG}[loss]\nkind = \"logistic-r1\"\nr1_gamma = 5.0\n"),
    )
    .unwrap();
    let warned = dry(&["--loss", "wgan-gp"]);
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        warned.status.success()
            && stderr.contains("warning: --config")
            && stderr.contains("as the flags set it"),
        "{stderr}"
    );
    assert!(!runs.exists(), "a dry run writes nothing");

    let (out, run) = train_tiny(&config, &data, &runs, &[]);
    let bad = run_err(
        pgan()
            .args(["train", "--dry-run", "--resume"])
            .arg(&run)
            .args(["--resolution", "8"]),
    );
    assert!(bad.contains("was made with a different model"), "{bad}");
    assert!(out.contains("sample sheet"), "{out}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("Metrics/msssim_fake"),
        "evaluation ran during training: {metrics}"
    );

    let sheet = dir.path().join("sheet.png");
    let out = run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&sheet)
            .args(["--seeds", "0-3", "--rows", "2", "--cols", "2"]),
    );
    assert!(image::open(&sheet).is_ok());
    // The run's own checkpoint is its config's model: nothing to say.
    assert!(!out.contains("warning"), "{out}");
    // ProGAN's generator normalizes its latent: a truncation would change nothing, so it is
    // refused rather than labelled on untruncated images.
    let err = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(dir.path().join("truncated.png"))
            .args(["--truncation", "0.7"]),
    );
    assert!(err.contains("has no effect on a ProGAN generator"), "{err}");
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
    // A checkpoint named as the source ends the timeline there; an entry named as a checkpoint
    // that is not a folder is left out with a word; rows and columns are the timeline's own.
    let mut ckpts: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ckpts.sort();
    assert!(ckpts.len() >= 3, "{ckpts:?}");
    let stray = run.join("checkpoints/ckpt-000000000001");
    std::fs::write(&stray, b"not a checkpoint").unwrap();
    let beyond = run.join("checkpoints/ckpt-999999999999");
    std::fs::write(&beyond, b"after the end").unwrap();
    let upto = dir.path().join("timeline-upto.png");
    let out = run_ok(
        pgan()
            .arg("render")
            .arg(&ckpts[1])
            .arg("--out")
            .arg(&upto)
            .args(["--seeds", "0-2", "--timeline"]),
    );
    assert!(
        out.contains("ckpt-000000000001 is a regular file, not a checkpoint folder")
            && !out.contains("ckpt-999999999999"),
        "{out}"
    );
    let two_rows = image::open(&upto).unwrap();
    assert_eq!(two_rows.width(), tl.width());
    assert!(
        two_rows.height() < tl.height() && two_rows.height() > tl.height() / checkpoints,
        "two of {checkpoints} rows: {out}"
    );
    std::fs::remove_file(&stray).unwrap();
    std::fs::remove_file(&beyond).unwrap();
    // A checkpoint made with another model (copied in from another run) is left out of the
    // timeline with a word, not drawn as one of the run's rows.
    let mut foreign = pgan_train::checkpoint::read_state(&ckpts[1]).unwrap();
    foreign.model["latent_dim"] = serde_json::json!(16);
    foreign.images_shown += 1;
    let copied = pgan_train::checkpoint::write_checkpoint(&run, &foreign, |folder| {
        for entry in std::fs::read_dir(&ckpts[1]).unwrap() {
            let file = entry.unwrap().path();
            if file.extension().is_some_and(|e| e == "mpk") {
                std::fs::copy(&file, folder.join(file.file_name().unwrap())).unwrap();
            }
        }
        Ok(())
    })
    .unwrap();
    let out = run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&timeline)
            .args(["--seeds", "0-2", "--timeline", "--force"]),
    );
    let copied_name = copied.file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains("left out of the timeline")
            && out.contains(copied_name)
            && out.contains("model.latent_dim differ"),
        "{out}"
    );
    assert_eq!(image::open(&timeline).unwrap().height(), tl.height());
    // Named alone (or as the run's newest), it is said to be foreign to the run before it is
    // read (here its weights do not fit the model it claims, which loading then refuses).
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&copied)
            .arg("--out")
            .arg(dir.path().join("foreign.png")),
    );
    assert!(
        out.contains("was made with another model than its run's config.toml describes")
            && out.contains("model.latent_dim = 16 in the checkpoint, 8 in the config"),
        "{out}"
    );
    std::fs::remove_dir_all(&copied).unwrap();
    let err = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(dir.path().join("x.png"))
            .args(["--seeds", "0-2", "--timeline", "--rows", "2"]),
    );
    assert!(
        err.contains("--rows") && err.contains("--timeline"),
        "{err}"
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
    assert!(
        parsed["units"]["swd"].as_str().unwrap().starts_with("x1e3"),
        "{parsed}"
    );

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
    // An existing file is replaced only with --force, and the same checkpoint always exports
    // to the same bytes (the header's keys are sorted).
    let err = run_err(pgan().arg("export").arg(&run).arg("--out").arg(&exported));
    assert!(err.contains("already exists; pass --force"), "{err}");
    run_ok(
        pgan()
            .arg("export")
            .arg(&run)
            .arg("--out")
            .arg(&exported)
            .arg("--force"),
    );
    assert_eq!(std::fs::read(&exported).unwrap(), bytes);
    // Never over the run's own files, nor over a dataset (even with --force).
    for (target, why) in [
        (run.join("config.toml"), "a file of the run"),
        (run.join("train.lock"), "a file of the run"),
        (data.clone(), "that is a pgan dataset"),
    ] {
        let before = std::fs::read(&target).unwrap_or_default();
        let err = run_err(
            pgan()
                .arg("export")
                .arg(&run)
                .arg("--out")
                .arg(&target)
                .arg("--force"),
        );
        assert!(err.contains(why), "{err}");
        assert_eq!(std::fs::read(&target).unwrap_or_default(), before);
    }

    let out = run_ok(pgan().arg("report").arg(&run));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("data:image/png;base64"),
        "{out}"
    );
    // A checkpoint given for its run is named as such, with the run to give.
    let ckpt = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("state.json").is_file())
        .unwrap();
    let err = run_err(pgan().arg("report").arg(&ckpt));
    assert!(
        err.contains("is a checkpoint: a report is of a run, so give its run directory"),
        "{err}"
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
    prepare_quietly(&synth, &data, 16);
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (_, run) = train_tiny(&config, &data, &dir.path().join("runs"), &[]);
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
    // 64 images are enough for 8 modes; the 80 reals are too few for two disjoint draws of 64.
    let warnings: Vec<&str> = parsed["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("holds 80 images, fewer than the 128 reals drawn")),
        "{parsed}"
    );
    assert!(!warnings.iter().any(|w| w.contains("modes")), "{parsed}");
    // Too few images for 8 modes, and reals that are not the spec's: both warned about.
    let gradients = dir.path().join("gradients");
    std::fs::create_dir_all(&gradients).unwrap();
    for k in 0..24u32 {
        image::RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, (k * 10) as u8])
        })
        .save(gradients.join(format!("{k}.png")))
        .unwrap();
    }
    let other = dir.path().join("gradients.pgan");
    prepare_quietly(&gradients, &other, 16);
    let out = run_ok(
        pgan()
            .arg("eval")
            .arg(&run)
            .arg("--modes")
            .arg(synth.join("modes.json"))
            .arg("--data")
            .arg(&other)
            .args(["--num", "16", "--pairs", "8"]),
    );
    assert!(
        out.contains("warning: --num 16 against 8 modes") && out.contains("use --num 35 or more"),
        "{out}"
    );
    assert!(
        out.contains("reals from") && out.contains("were recognised as modes"),
        "{out}"
    );
    // Greyscale images cannot be classified: refused before any image is generated.
    let grey = dir.path().join("grey.pgan");
    run_ok(pgan().arg("prepare").arg(&synth).arg(&grey).args([
        "--resolution",
        "16",
        "--channels",
        "1",
        "--quiet",
    ]));
    let (_, grey_run) = train_tiny(&config, &grey, &dir.path().join("grey-runs"), &[]);
    let err = run_err(
        pgan()
            .arg("eval")
            .arg(&grey_run)
            .arg("--modes")
            .arg(synth.join("modes.json"))
            .args(["--num", "16", "--pairs", "8"]),
    );
    assert!(
        err.contains("needs RGB images") && !err.contains("SWD"),
        "{err}"
    );
    // At 8x8 the classifier mistakes squares for discs: refused, not reported.
    let synth8 = dir.path().join("synth8");
    run_ok(pgan().arg("synth").arg(&synth8).args([
        "--modes",
        "8",
        "--resolution",
        "8",
        "--count",
        "40",
    ]));
    let data8 = dir.path().join("synth8.pgan");
    prepare_quietly(&synth8, &data8, 8);
    let (_, run8) = train_tiny(
        &config,
        &data8,
        &dir.path().join("runs8"),
        &["--resolution", "8", "--total-kimg", "0.032"],
    );
    let err = run_err(
        pgan()
            .arg("eval")
            .arg(&run8)
            .arg("--modes")
            .arg(synth8.join("modes.json"))
            .args(["--num", "16"]),
    );
    assert!(err.contains("mistakes most squares for discs"), "{err}");
}

#[test]
fn a_stop_signal_writes_a_checkpoint_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");

    // A long run, stopped as a scheduler stops a job (SIGTERM; Ctrl-C's SIGINT takes the same
    // way, `nodes.rs`) once the first tick is logged.
    let mut child = spawn_long_run(&config, &data, &runs, &[]);
    let run = wait_for_run(&mut child, &runs, "a first tick", |run| {
        std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|m| m.lines().count() >= 1)
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(exit_code("-TERM")),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("--resume"),
        "tells how to continue: {}",
        text(&out)
    );

    // Past wherever the stop came (a loaded machine may take a few ticks to deliver it).
    let stopped_at: u64 = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("ckpt-")?.parse().ok()
        })
        .max()
        .unwrap();
    let total_kimg = format!("{}", (stopped_at + 32) as f64 / 1000.0);
    let out = run_ok(
        pgan()
            .args([
                "train",
                "--no-progress",
                "--total-kimg",
                &total_kimg,
                "--resume",
            ])
            .arg(&run),
    );
    assert!(out.contains("checkpoint"), "{out}");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("resumed") && log.contains("finished"), "{log}");
}

/// A stop signal that arrives while a command renames its outputs into place (strace delivers
/// SIGINT at every rename): the handler waits for the renames, and then, the outputs being
/// written, lets the command end as it would have (exit 0), rather than exit 130 as if the old
/// files stood. Skipped, saying so, where strace cannot run (`.ci/run` installs it).
#[test]
fn a_stop_signal_during_the_renames_lets_the_written_outputs_stand() {
    let strace_runs = Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !strace_runs {
        eprintln!("skipped: strace cannot run here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let (_, run) = train_tiny(&config, &data, &dir.path().join("runs"), &[]);
    let with_sigint_at_renames = |args: &[&str]| {
        let mut cmd = Command::new("strace");
        cmd.args([
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "trace=rename,renameat,renameat2",
        ])
        .args(["-e", "inject=rename,renameat,renameat2:signal=SIGINT"])
        .arg(env!("CARGO_BIN_EXE_pgan"))
        .args(args);
        cmd.output().unwrap()
    };
    let run = run.to_str().unwrap();
    for (command, out) in [("export", "g.safetensors"), ("report", "r.html")] {
        let path = dir.path().join(out);
        std::fs::write(&path, b"old").unwrap();
        let path_arg = path.to_str().unwrap();
        let done = with_sigint_at_renames(&[command, run, "--out", path_arg, "--force"]);
        assert_eq!(done.status.code(), Some(0), "{command}: {}", text(&done));
        assert!(
            text(&done).contains("they are written, so the command finishes"),
            "{command}: {}",
            text(&done)
        );
        assert_ne!(std::fs::read(&path).unwrap(), b"old");
    }
    assert_eq!(names_starting(dir.path(), "."), Vec::<String>::new());
}

/// A run started under `nohup` goes on when SIGHUP comes (its terminal closed), as `nohup`
/// promises, and still stops on Ctrl-C.
#[test]
fn a_run_under_nohup_survives_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");
    let train = train_cmd(&config, &data, &runs, &["--total-kimg", "1000"]);
    let mut child = Command::new("nohup")
        .arg(train.get_program())
        .args(train.get_args())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rows = |run: &Path| {
        std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count())
    };
    let run = wait_for_run(&mut child, &runs, "a first tick", |run| rows(run) >= 1);
    let pid = child.id().to_string();
    let signal = |name: &str| {
        let sent = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(sent.success());
    };
    signal("-HUP");
    let after = rows(&run);
    wait_for_run(&mut child, &runs, "two more ticks after SIGHUP", |run| {
        rows(run) >= after + 2
    });
    signal("-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(exit_code("-INT")), "{}", text(&out));
    assert!(!text(&out).contains("interrupted twice"), "{}", text(&out));
}

/// An alarm raised every tick is counted in every row, and said in the log when raised and
/// every tenth tick after, not each tick.
#[test]
fn a_tick_alarm_that_holds_is_counted_every_tick_and_said_every_tenth() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = tiny_dataset_and_config(dir.path());
    let config = dir.path().join("alarmed.toml");
    // Any gap between D's scores exceeds this limit: the divergence alarm holds all run.
    std::fs::write(&config, format!("{CONFIG}[alarms]\nmax_d_gap = 1e-9\n")).unwrap();
    let runs = dir.path().join("runs");
    let (_, run) = train_tiny(&config, &data, &runs, &["--total-kimg", "0.192"]);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let counts: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|row| row.get("tick").is_some())
        .map(|row| row["Alarm/count"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(counts.len(), 12, "{metrics}");
    assert!(counts.iter().all(|&c| c >= 1), "{counts:?}");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("alarm: D(real) - D(fake)"))
        .collect();
    assert_eq!(said.len(), 2, "{log}");
    assert!(!said[0].contains("still raised"), "{log}");
    assert!(
        said[1].ends_with("[still raised: 10 ticks in a row]"),
        "{log}"
    );
}

#[test]
fn a_dataset_written_or_replaced_while_training_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");
    // Another name for the file the run opens: still that file once another is renamed to its
    // path.
    let opened = dir.path().join("opened.pgan");
    std::fs::hard_link(&data, &opened).unwrap();
    let original = std::fs::read(&data).unwrap();
    let mut child = spawn_long_run(&config, &data, &runs, &[]);
    let log = |run: &Path| std::fs::read_to_string(run.join("log.txt")).unwrap_or_default();
    let run = wait_for_run(&mut child, &runs, "a first tick", |run| {
        std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|m| m.lines().count() >= 1)
    });
    // The run's own files removed under it: its metrics and log are written back with what
    // they held (each said in the log), its sheets' folder is made again, and training goes on.
    let first_row = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    std::fs::remove_file(run.join("metrics.jsonl")).unwrap();
    std::fs::remove_file(run.join("log.txt")).unwrap();
    // The run may write a sheet into it meanwhile (a removal is not one call): tried again.
    let mut tries = 0;
    while let Err(e) = std::fs::remove_dir_all(run.join("samples")) {
        tries += 1;
        assert!(tries < 100, "cannot remove samples/: {e}");
    }
    wait_for_run(&mut child, &runs, "the notes of the removed files", |run| {
        let log = log(run);
        log.contains("metrics.jsonl was removed while the run wrote it")
            && log.contains("log.txt was removed while the run wrote it")
            && std::fs::read_dir(run.join("samples")).is_ok_and(|mut d| d.next().is_some())
    });
    assert!(
        log(&run).contains("INFO new run "),
        "the log's first lines are back"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.starts_with(&first_row), "{metrics}");
    // The same bytes written again: the checksums still match, and training goes on.
    write_in_place(&opened, 0, &original);
    wait_for_run(&mut child, &runs, "the note of a rewrite", |run| {
        log(run).contains("still match their checksums: training goes on")
    });
    // Another file renamed into its path: said once, and the run goes on with the one it opened.
    let other = dir.path().join("other.pgan");
    std::fs::copy(&data, &other).unwrap();
    std::fs::rename(&other, &data).unwrap();
    wait_for_run(&mut child, &runs, "the note of a replaced file", |run| {
        log(run).contains("replaced on disk while training")
    });
    // A pixel of the 4x4 level changed in place: the run stops, naming the file.
    let at = level4_offset(&opened);
    write_in_place(&opened, at, &[!original[at as usize]]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the run went on after its dataset changed: {}", log(&run));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("tiny.pgan")
            && said.contains("written in place while training")
            && said.contains("4x4")
            && said.contains("put the original file back"),
        "{said}"
    );
    let log = log(&run);
    assert!(log.contains("training stopped by an error"), "{log}");
    assert_eq!(
        log.matches("replaced on disk while training").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_stop_after_the_dataset_was_written_in_place_writes_no_checkpoint_of_it() {
    // The steps are not observable from outside: a stop before the first step is a stop at
    // the run's start (nothing read, exit 130); each try waits longer.
    for (attempt, wait_ms) in [500u64, 2000, 8000].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let (data, config) = tiny_dataset_and_config(dir.path());
        let runs = dir.path().join("runs");
        // Ticks longer than the test: the stop, not a tick end, is the first look at the file.
        let mut child = spawn_long_run(&config, &data, &runs, &["--tick-kimg", "500"]);
        let run = wait_for_run(&mut child, &runs, "the first phase", |run| {
            std::fs::read_to_string(run.join("log.txt")).is_ok_and(|l| l.contains("phase 1"))
        });
        std::thread::sleep(Duration::from_millis(wait_ms));
        let at = level4_offset(&data);
        let byte = std::fs::read(&data).unwrap()[at as usize];
        write_in_place(&data, at, &[!byte]);
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let said = text(&out);
        if out.status.code() == Some(130) && attempt < 2 {
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(
            said.contains("written in place while training") && said.contains("4x4"),
            "{said}"
        );
        let names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ckpt-000000000000"], "only the run's start");
        return;
    }
}

/// A background `pgan train` of `config` on `data` into `runs` that runs far past any test
/// (`--total-kimg 1000`), its output captured; `extra` flags after the others.
fn spawn_long_run(config: &Path, data: &Path, runs: &Path, extra: &[&str]) -> std::process::Child {
    train_cmd(
        config,
        data,
        runs,
        &[&["--total-kimg", "1000"], extra].concat(),
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

/// Writes `bytes` at `offset` of the file at `path` in place, as `dd conv=notrunc` does (no
/// truncation first, whose lost pages are the map guard's case).
fn write_in_place(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

/// Where the 4x4 level of the dataset at `path` starts (every run reads it).
fn level4_offset(path: &Path) -> u64 {
    let reader = pgan_data::PyramidReader::open(path).unwrap();
    let level = reader.header().levels.iter().find(|l| l.resolution == 4);
    level.unwrap().offset
}

/// The run directory the background `pgan train` `child` makes in `runs`, once `ready` holds for
/// it (polled every 5 ms, for at most 2 minutes). A run that ends first, or the timeout, fails
/// the test with the run's log, its folder's files and, once it ended, what it printed.
fn wait_for_run(
    child: &mut std::process::Child,
    runs: &Path,
    what: &str,
    ready: impl Fn(&Path) -> bool,
) -> PathBuf {
    let start = Instant::now();
    loop {
        let run = std::fs::read_dir(runs)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path());
        if let Some(run) = run.as_deref().filter(|run| ready(run)) {
            return run.to_path_buf();
        }
        let ended = child.try_wait().unwrap();
        // A run that got there and then ended between the two looks is ready.
        if let Some(run) = run.as_deref().filter(|run| ended.is_some() && ready(run)) {
            return run.to_path_buf();
        }
        if ended.is_some() || start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let mut printed = String::new();
            if let Some(mut out) = child.stdout.take() {
                let _ = out.read_to_string(&mut printed);
            }
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut printed);
            }
            let (files, log) = match &run {
                Some(run) => (
                    walk_names(run),
                    std::fs::read_to_string(run.join("log.txt")).unwrap_or_default(),
                ),
                None => (Vec::new(), String::new()),
            };
            panic!(
                "no {what}: the run {} ({status})\nfiles: {files:?}\nlog.txt:\n{log}\nprinted:\n{printed}",
                if ended.is_some() { "ended first" } else { "took over 2 minutes" }
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The paths of the files under `dir`, relative to it, sorted.
fn walk_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            names.push(path.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    names.sort();
    names
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
    let run = wait_for_run(&mut child, &killed_runs, "a third checkpoint", |run| {
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

    let straight = first_run(&straight_runs);
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

/// bf16 on the CPU (and on wgpu where it is compiled in) stops before any run folder exists,
/// naming the option, the backend and the flags that fix it.
#[test]
fn bf16_on_a_backend_without_it_is_refused_with_the_flag_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");
    let mut backends = vec!["cpu"];
    if cfg!(feature = "wgpu") {
        backends.push("wgpu");
    }
    for backend in backends {
        let err = run_err(&mut train_cmd(
            &config,
            &data,
            &runs,
            &["--backend", backend, "--precision", "bf16"],
        ));
        assert!(
            err.contains("run.precision")
                && err.contains(&format!("backend {backend}"))
                && err.contains("--precision f32")
                && !err.contains("panicked"),
            "{err}"
        );
        assert!(
            !runs.exists() || first_run_absent(&runs),
            "a run folder was made"
        );
    }
    let err = run_err(&mut train_cmd(
        &config,
        &data,
        &runs,
        &["--precision", "fp8"],
    ));
    assert!(
        err.contains("--precision") && err.contains("f32 or bf16"),
        "{err}"
    );
}

fn first_run_absent(runs: &Path) -> bool {
    std::fs::read_dir(runs).map_or(true, |mut d| d.next().is_none())
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

// ------------------------------------------------------------------------------------------
// Issue 22, train/render/eval side: nothing lost, nothing hangs, nothing crashes.
// ------------------------------------------------------------------------------------------

/// `pgan train --no-progress` with the tiny config and dataset, plus `extra` flags.
fn train_cmd(config: &Path, data: &Path, runs: &Path, extra: &[&str]) -> Command {
    let mut cmd = pgan();
    cmd.args(["train", "--no-progress", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .arg("--out-dir")
        .arg(runs)
        .args(extra);
    cmd
}

/// `pgan train --no-progress --resume run`, plus `extra` flags.
fn resume_cmd(run: &Path, extra: &[&str]) -> Command {
    let mut cmd = pgan();
    cmd.args(["train", "--no-progress", "--resume"])
        .arg(run)
        .args(extra);
    cmd
}

/// The `kimg` of every row of a run's metrics.jsonl.
fn metrics_kimg(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kimg"].as_f64())
        .collect()
}

/// The checkpoint folders of a run, oldest first.
fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ckpt-")
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_requested_stop_exits_0_and_the_resumed_run_keeps_writing_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");
    let (out, run) = train_tiny(&config, &data, &runs, &["--stop-after-kimg", "0.032"]);
    assert!(out.contains("--resume"), "tells how to continue: {out}");
    let before = metrics_kimg(&run);
    assert_eq!(before.last().copied(), Some(0.032), "{before:?}");

    run_ok(&mut resume_cmd(&run, &[]));
    let after = metrics_kimg(&run);
    assert!(after.len() > before.len(), "{before:?} -> {after:?}");
    assert_eq!(after.last().copied(), Some(0.064), "{after:?}");

    // A total below what the run has trained is refused, the run's config left as it was.
    let recorded = std::fs::read(run.join("config.toml")).unwrap();
    let err = run_err(&mut resume_cmd(
        &run,
        &["--total-kimg", "0.048", "--loss", "logistic-r1"],
    ));
    assert!(
        err.contains("schedule.total_kimg (--total-kimg) is 0.048")
            && err.contains("at 0.064 kimg already: nothing would be trained"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("config.toml")).unwrap(), recorded);
    assert_eq!(metrics_kimg(&run), after);
}

/// A run stopped inside what becomes its last tick, resumed with that stop as its total, ends
/// with the rows and sample sheets of a run that went there in one go (the open tick is
/// closed), once: a further resume adds nothing.
#[test]
fn a_stop_inside_the_last_tick_resumed_at_its_end_closes_the_tick() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let (_, straight) = train_tiny(
        &config,
        &data,
        &dir.path().join("straight"),
        &["--total-kimg", "0.056"],
    );
    let (_, run) = train_tiny(
        &config,
        &data,
        &dir.path().join("stopped"),
        &["--total-kimg", "1", "--stop-after-kimg", "0.056"],
    );
    assert_eq!(metrics_kimg(&run), [0.016, 0.032, 0.048]);
    let out = run_ok(&mut resume_cmd(&run, &["--total-kimg", "0.056"]));
    assert!(out.contains("finished at 0.056 kimg"), "{out}");
    let sheets = |run: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(run.join("samples"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(metrics_kimg(&straight), [0.016, 0.032, 0.048, 0.056]);
    assert_eq!(metrics_kimg(&run), metrics_kimg(&straight));
    assert_eq!(sheets(&run), sheets(&straight));
    // The closed tick's row holds the steps before the stop, where the schedule had them.
    let last_row = |run: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let (a, b) = (last_row(&run), last_row(&straight));
    for key in [
        "tick",
        "stage",
        "resolution",
        "phase",
        "alpha",
        "batch",
        "Loss/D",
        "Loss/G",
    ] {
        assert_eq!(a[key], b[key], "{key}: {a} vs {b}");
    }
    run_ok(&mut resume_cmd(&run, &["--total-kimg", "0.056"]));
    assert_eq!(metrics_kimg(&run), metrics_kimg(&straight));

    // With checkpoints every 3 ticks the closed tick 4 writes none of its own: the stop's
    // checkpoint is written again without its open tick (a resume would close it twice).
    let sparse = dir.path().join("sparse.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("checkpoint_ticks = 1"));
    std::fs::write(
        &sparse,
        text.replace("checkpoint_ticks = 1", "checkpoint_ticks = 3"),
    )
    .unwrap();
    let (_, run) = train_tiny(
        &sparse,
        &data,
        &dir.path().join("sparse"),
        &["--total-kimg", "1", "--stop-after-kimg", "0.056"],
    );
    let open_tick = |run: &Path| -> serde_json::Value {
        let state = run.join("checkpoints/ckpt-000000000056/state.json");
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
        state.get("open_tick").cloned().unwrap_or_default()
    };
    assert!(!open_tick(&run).is_null(), "the stop keeps its tick's part");
    run_ok(&mut resume_cmd(&run, &["--total-kimg", "0.056"]));
    assert!(open_tick(&run).is_null(), "{}", open_tick(&run));
    assert_eq!(metrics_kimg(&run), metrics_kimg(&straight));
    run_ok(&mut resume_cmd(&run, &["--total-kimg", "0.056"]));
    assert_eq!(metrics_kimg(&run), metrics_kimg(&straight));
}

#[test]
fn a_run_folder_has_one_trainer_and_new_runs_get_their_own_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());

    // Two new runs started at once in one --out-dir: two folders with their own numbers.
    let runs = dir.path().join("runs");
    let children: Vec<_> = (0..2)
        .map(|_| {
            train_cmd(&config, &data, &runs, &["--stop-after-kimg", "0.016"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut made: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(made, ["00000-tiny-16", "00001-tiny-16"]);

    // A second trainer in a folder that one is training in is refused, naming the owner.
    let long_runs = dir.path().join("long");
    let mut owner = train_cmd(&config, &data, &long_runs, &["--total-kimg", "1000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = wait_for_run(&mut owner, &long_runs, "a first tick", |run| {
        std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|m| m.lines().count() >= 1)
    });
    let config_before = std::fs::read(run.join("config.toml")).unwrap();
    let err = run_err(&mut resume_cmd(&run, &["--total-kimg", "2000"]));
    assert!(
        err.contains(&format!(
            "is in use by another pgan train (pid {})",
            owner.id()
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read(run.join("config.toml")).unwrap(),
        config_before,
        "the refused trainer wrote into the run"
    );
    // Its --dry-run says so too (a dry run that passes is a run that starts).
    let err = run_err(&mut resume_cmd(&run, &["--dry-run"]));
    assert!(
        err.contains(&format!(
            "is in use by another pgan train (pid {})",
            owner.id()
        )),
        "{err}"
    );

    // The OS drops the lock with its owner, however it ends: no stale lock after kill -9.
    owner.kill().unwrap();
    owner.wait().unwrap();
    // One image past the newest checkpoint, wherever the killed trainer got to.
    let newest = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_prefix("ckpt-")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0u64);
    let stop = format!("{}", (newest + 1) as f64 / 1000.0);
    let out = run_ok(&mut resume_cmd(
        &run,
        &["--total-kimg", "1000", "--stop-after-kimg", &stop],
    ));
    assert!(out.contains("checkpoint"), "{out}");
}

#[test]
fn resuming_on_another_dataset_needs_data_changed_ok() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    // The same images in another order: same size and resolution, other bytes.
    let other = dir.path().join("other.pgan");
    run_ok(
        pgan()
            .arg("prepare")
            .arg(dir.path().join("images"))
            .arg(&other)
            .args(["--resolution", "16", "--quiet", "--shuffle-seed", "3"]),
    );
    let runs = dir.path().join("runs");
    let (_, run) = train_tiny(&config, &data, &runs, &["--stop-after-kimg", "0.016"]);
    let resume_on_other = |extra: &[&str]| {
        let mut cmd = resume_cmd(&run, &["--total-kimg", "0.032", "--data"]);
        cmd.arg(&other).args(extra);
        cmd
    };
    let err = run_err(&mut resume_on_other(&[]));
    assert!(
        err.contains("was trained on another dataset") && err.contains("--data-changed-ok"),
        "{err}"
    );
    // The two datasets' content CRCs, as the message gives them, differ.
    let crcs: Vec<&str> = err
        .split("content crc32 ")
        .skip(1)
        .map(|rest| &rest[..10])
        .collect();
    assert!(crcs.len() == 2 && crcs[0] != crcs[1], "{err}");
    // The dry run says what the real start says.
    let dry = run_ok(&mut resume_on_other(&["--data-changed-ok", "--dry-run"]));
    assert_eq!(
        dry.matches("continuing on another dataset").count(),
        1,
        "{dry}"
    );
    let out = run_ok(&mut resume_on_other(&["--data-changed-ok"]));
    assert_eq!(
        out.matches("continuing on another dataset").count(),
        1,
        "said once: {out}"
    );
    // The checkpoints from now on record the new dataset: no flag needed to go on with it.
    run_ok(&mut resume_cmd(&run, &["--total-kimg", "0.048"]));
    // Flags a resumed run cannot honour are refused, not recorded in its config.toml.
    let recorded = std::fs::read_to_string(run.join("config.toml")).unwrap();
    for flag in [
        ["--seed", "99"],
        ["--desc", "zzz"],
        ["--out-dir", "elsewhere"],
    ] {
        let err = run_err(&mut resume_cmd(&run, &flag));
        assert!(
            err.contains(flag[0]) && err.contains("cannot be combined with --resume"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        recorded
    );
}

#[test]
fn corrupt_or_edited_latest_checkpoints_fall_back_to_the_newest_intact_one() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");
    let (_, run) = train_tiny(&config, &data, &runs, &[]);
    let ckpts = checkpoints(&run);
    assert_eq!(ckpts.len(), 3, "{ckpts:?}");
    // The newest: a record corrupted on disk. The one before: its state.json edited by hand.
    let record = ckpts[2].join("generator_ema.mpk");
    let mut bytes = std::fs::read(&record).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&record, bytes).unwrap();
    let state = ckpts[1].join("state.json");
    let edited =
        std::fs::read_to_string(&state)
            .unwrap()
            .replacen("\"position\": ", "\"position\": 1", 1);
    std::fs::write(&state, edited).unwrap();

    let name = |c: &Path| c.file_name().unwrap().to_string_lossy().into_owned();
    let warned = |out: &str| {
        out.contains(&format!("skipped checkpoint {}", ckpts[2].display()))
            && out.contains("generator_ema.mpk is corrupt")
            && out.contains("state.json was changed after it was written")
            && out.contains(&format!(
                "using the newest intact checkpoint, {}",
                ckpts[0].display()
            ))
    };
    let sheet = dir.path().join("sheet.png");
    let out = run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&sheet)
            .args(["--rows", "1", "--cols", "2"]),
    );
    assert!(warned(&out) && out.contains(&name(&ckpts[0])), "{out}");
    let out = run_ok(
        pgan()
            .arg("export")
            .arg(&run)
            .arg("--out")
            .arg(dir.path().join("g.safetensors")),
    );
    assert!(warned(&out), "{out}");
    let out = run_ok(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "16", "--pairs", "8"]),
    );
    assert!(warned(&out), "{out}");

    // Named explicitly, the edited checkpoint is an error, not a panic.
    let err = run_err(&mut resume_cmd(&ckpts[1], &[]));
    assert!(
        err.contains("state.json was changed after it was written"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // The dry run of that resume says it as the real start will.
    let out = run_ok(&mut resume_cmd(&run, &["--dry-run"]));
    assert!(warned(&out), "{out}");
    // Resuming the run continues from the intact one, and says so in the log.
    run_ok(&mut resume_cmd(&run, &[]));
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(warned(&log), "{log}");
    let skipped = format!("skipped checkpoint {}", ckpts[2].display());
    assert_eq!(log.matches(&skipped).count(), 1, "said once: {log}");
}

#[test]
fn out_of_range_sizes_seeds_and_truncations_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let render = |args: &[&str]| {
        run_err(
            pgan()
                .args(["render", "."])
                .arg("--out")
                .arg(dir.path().join("x.png"))
                .args(args),
        )
    };
    for args in [
        &["--rows", "100000", "--cols", "100000"][..],
        &["--rows", "100000"],
        &["--cell-px", "100000"],
        &["--cell-px", "4294967295"],
        &["--seeds", "0-9", "--interpolate", "1000000"],
    ] {
        let err = render(args);
        assert!(
            err.contains("above the limit of 256 megapixels"),
            "{args:?}: {err}"
        );
    }
    let err = render(&["--seeds", "0-47", "--rows", "1", "--cols", "1"]);
    assert!(err.contains("48 seeds do not fit a 1 x 1 sheet"), "{err}");
    for psi in ["0", "-1", "NaN"] {
        let flag = format!("--truncation={psi}");
        for err in [render(&[&flag]), run_err(pgan().args(["eval", ".", &flag]))] {
            assert!(
                err.contains("--truncation") && err.contains("at least 0.05"),
                "{psi}: {err}"
            );
        }
    }
    let err = run_err(
        pgan()
            .arg("synth")
            .arg(dir.path().join("s"))
            .args(["--resolution", "100000"]),
    );
    assert!(err.contains("above the maximum 1024"), "{err}");
    assert!(!dir.path().join("s").exists());
}

#[test]
fn an_mbstd_group_that_does_not_divide_the_minibatch_is_an_error() {
    let err = run_err(pgan().args([
        "train",
        "--dry-run",
        "--data",
        "x.pgan",
        "--mbstd-group",
        "7",
        "--batch",
        "16",
    ]));
    assert!(
        err.contains("model.mbstd_group_size 7 does not divide the minibatch 16 at 4x4"),
        "{err}"
    );
}

#[test]
fn eval_at_8x8_says_what_it_cannot_measure_and_outputs_go_into_new_folders() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    // Every command that writes a file creates the folders above it.
    let data = dir.path().join("new/data/tiny.pgan");
    run_ok(pgan().args(["prepare"]).arg(&images).arg(&data).args([
        "--resolution",
        "16",
        "--quiet",
    ]));
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let runs = dir.path().join("runs");
    let (_, run) = train_tiny(
        &config,
        &data,
        &runs,
        &["--resolution", "8", "--total-kimg", "0.032"],
    );

    let json = dir.path().join("new/eval/eval.json");
    let out = run_ok(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "8", "--pairs", "4", "--json"])
            .arg(&json),
    );
    assert!(
        out.contains("not measured: swd: SWD needs images of at least 16x16")
            && out.contains("generates 8x8")
            && out.contains("not measured: msssim_fake"),
        "{out}"
    );
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let unmeasured = unmeasured_metrics(&parsed);
    assert_eq!(
        unmeasured,
        ["msssim_fake", "swd", "msssim_real"],
        "{parsed}"
    );
    // A dataset with bytes after its data (which verify calls corrupt) is measured against,
    // and said.
    let longer = dir.path().join("longer.pgan");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes.extend_from_slice(b"extra\n");
    std::fs::write(&longer, bytes).unwrap();
    let out = run_ok(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "8", "--pairs", "4", "--data"])
            .arg(&longer),
    );
    assert!(
        out.contains("longer.pgan: 6 bytes follow its data"),
        "{out}"
    );

    let exported = dir.path().join("new/export/g.safetensors");
    run_ok(pgan().arg("export").arg(&run).arg("--out").arg(&exported));
    assert!(exported.is_file());
    let report = dir.path().join("new/report/r.html");
    run_ok(pgan().arg("report").arg(&run).arg("--out").arg(&report));
    assert!(report.is_file());
    let sheet = dir.path().join("new/render/s.png");
    run_ok(pgan().arg("render").arg(&run).arg("--out").arg(&sheet));
    assert!(sheet.is_file());
}

#[test]
fn outputs_replace_only_regular_files_outside_checkpoints_and_bad_values_fail_early() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");
    let (_, run) = train_tiny(
        &config,
        &data,
        &runs,
        &["--resolution", "8", "--total-kimg", "0.032"],
    );
    let eval_json = |json: &Path| {
        let mut cmd = pgan();
        cmd.arg("eval")
            .arg(&run)
            .args(["--num", "8", "--pairs", "4", "--json"])
            .arg(json);
        cmd
    };

    // A FIFO, a link to a device and a checkpoint's own file are refused and left as they are
    // (a rename would have replaced the FIFO and the link, and the record in the checkpoint).
    let fifo = dir.path().join("fifo.json");
    mkfifo(&fifo);
    let out = run_err(&mut eval_json(&fifo));
    assert!(out.contains("it is a FIFO, not a regular file"), "{out}");
    assert!(!out.contains("SWD"), "refused before measuring: {out}");
    let full = dir.path().join("full.png");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let out = run_err(pgan().arg("render").arg(&run).arg("--out").arg(&full));
    assert!(
        out.contains("it links to /dev/full, a character device"),
        "{out}"
    );
    let record = checkpoints(&run).pop().unwrap().join("generator_ema.mpk");
    let before = std::fs::read(&record).unwrap();
    let out = run_err(pgan().arg("export").arg(&run).arg("--out").arg(&record));
    assert!(out.contains("that folder is a checkpoint"), "{out}");
    assert_eq!(std::fs::read(&record).unwrap(), before);
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }
    // A link to a regular file is written through and stays a link.
    let target = dir.path().join("target.json");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink("target.json", &link).unwrap();
    // What is there may be the user's: replaced only with --force.
    let out = run_err(&mut eval_json(&link));
    assert!(
        out.contains("already exists; pass --force to replace it"),
        "{out}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"old");
    run_ok(eval_json(&link).arg("--force"));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert!(written["num_images"].as_u64() == Some(8), "{written}");
    // The settings that change the numbers are recorded with them, paths absolute.
    // An 8x8 run: no MS-SSIM was measured, so no pairs are claimed.
    assert_eq!(written["msssim_pairs"].as_u64(), Some(0), "{written}");
    assert!(
        written["seed"].is_u64() && written["truncation"].is_null(),
        "{written}"
    );
    for key in ["checkpoint", "data"] {
        assert!(
            written[key]
                .as_str()
                .is_some_and(|p| Path::new(p).is_absolute()),
            "{key}: {written}"
        );
    }

    // The strip and its GIF cannot share a name; the latents need their own file.
    let walk = dir.path().join("walk.gif");
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&walk)
            .args(["--seeds", "1,2", "--interpolate", "2"]),
    );
    assert!(out.contains("name the strip .png"), "{out}");
    let sheet = dir.path().join("sheet.png");
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&sheet)
            .arg("--save-latents")
            .arg(&sheet),
    );
    assert!(out.contains("give the latents their own file"), "{out}");
    let dotted = dir.path().join("sub/../sheet.png");
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&sheet)
            .arg("--save-latents")
            .arg(&dotted),
    );
    assert!(out.contains("give the latents their own file"), "{out}");
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(dir.path().join("walk.GIF"))
            .args(["--seeds", "1,2", "--interpolate", "2"]),
    );
    assert!(out.contains("name the strip .png"), "{out}");
    let inside = checkpoints(&run).pop().unwrap().join("mine/x.png");
    let out = run_err(pgan().arg("render").arg(&run).arg("--out").arg(&inside));
    assert!(out.contains("that folder is a checkpoint"), "{out}");
    let out = run_err(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", &u64::MAX.to_string()]),
    );
    assert!(out.contains("GiB"), "a figure, not an overflow: {out}");
    let out = run_err(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "8", "--data"])
            .arg(dir.path().join("nosuch.pgan")),
    );
    assert!(
        out.contains("nosuch.pgan: no such file") && !out.contains("generating"),
        "{out}"
    );
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&sheet)
            .args(["--seeds", "1,2", "--interpolate", "1"]),
    );
    assert!(out.contains("--interpolate"), "{out}");
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&sheet)
            .arg("--no-gif"),
    );
    assert!(out.contains("--interpolate"), "{out}");
    // A temp file a killed render left beside its output goes at the next write of it.
    let dead = pgan_data::test_files::dead_pid();
    let stale = dir.path().join(format!(".sheet.png.tmp-{dead}-1"));
    std::fs::write(&stale, b"half a png").unwrap();
    run_ok(pgan().arg("render").arg(&run).arg("--out").arg(&sheet));
    assert!(sheet.is_file() && !stale.exists());

    // An evaluation during training larger than memory is refused before the run starts.
    let huge_eval = dir.path().join("huge-eval.toml");
    std::fs::write(
        &huge_eval,
        CONFIG.replace("num_images = 16", "num_images = 100000000000"),
    )
    .unwrap();
    let out = run_err(&mut train_cmd(
        &huge_eval,
        &data,
        &dir.path().join("huge"),
        &[],
    ));
    assert!(
        out.contains("eval.num_images 100000000000: evaluations during training hold"),
        "{out}"
    );

    // NaN in a config or a flag is named, before any run folder is made.
    let nan_config = dir.path().join("nan.toml");
    std::fs::write(&nan_config, format!("{CONFIG}[loss]\ngp_lambda = nan\n")).unwrap();
    let fresh = dir.path().join("fresh-runs");
    let out = run_err(&mut train_cmd(&nan_config, &data, &fresh, &[]));
    assert!(
        out.contains("loss.gp_lambda NaN must be a non-negative weight"),
        "{out}"
    );
    let out = run_err(&mut train_cmd(
        &config,
        &data,
        &fresh,
        &["--stop-after-kimg", "nan"],
    ));
    assert!(out.contains("--stop-after-kimg NaN"), "{out}");
    assert!(!fresh.exists(), "no run folder for a refused config");

    // Training whose terminal went away finishes its run all the same.
    let mut child = train_cmd(&config, &data, &fresh, &["--total-kimg", "0.032"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let last = checkpoints(&first_run(&fresh)).pop().unwrap();
    assert!(last.ends_with("checkpoints/ckpt-000000000032"), "{last:?}");

    // A reader that goes away ends a command quietly, not with a panic.
    let mut child = pgan()
        .arg("info")
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && out.status.code() != Some(101),
        "{:?}: {stderr}",
        out.status
    );
}

#[test]
fn a_run_finds_its_data_from_any_folder_and_odd_paths_and_counts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = tiny_dataset_and_config(dir.path());
    // Started from `dir` with a relative dataset path...
    let runs = dir.path().join("runs");
    run_ok(
        pgan()
            .current_dir(dir.path())
            .args(["train", "--no-progress", "--data", "tiny.pgan", "--config"])
            .arg(&config)
            .arg("--out-dir")
            .arg(&runs)
            .args(["--resolution", "8", "--total-kimg", "0.032"]),
    );
    let run = first_run(&runs);
    let recorded = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let absolute = std::fs::canonicalize(dir.path().join("tiny.pgan")).unwrap();
    assert!(
        recorded.contains(&format!("path = \"{}\"", absolute.display())),
        "{recorded}"
    );
    // ...resumed and evaluated from another folder.
    run_ok(resume_cmd(&run, &["--total-kimg", "0.048"]).current_dir("/"));
    let out = run_ok(
        pgan()
            .current_dir("/")
            .arg("eval")
            .arg(&run)
            .args(["--num", "16", "--pairs", "4"]),
    );
    // 20 images are fewer than 2 x 16 reals, but at 8x8 no metric reads them: nothing said of
    // the draws, only what is not measured (the warning at a measured size:
    // `synth_train_eval_modes_reports_generated_and_real_coverage`).
    assert!(
        !out.contains("reals drawn") && out.contains("not measured: swd"),
        "{out}"
    );
    let out = run_err(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "4", "--pairs", "7"]),
    );
    assert!(
        out.contains("--pairs 7: 4 images make 6 distinct pairs"),
        "{out}"
    );
    // Without --pairs, a few images use the pairs they make (the default 512 needs 33).
    run_ok(pgan().arg("eval").arg(&run).args(["--num", "4"]));

    // A branch from the oldest checkpoint sets the newer ones aside. One of those is measured
    // against its run's dataset; --resume of it says what to do instead.
    let mut ckpts: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ckpts.sort();
    // A dry run says what the branch sets aside, and moves nothing.
    let names: Vec<String> = ckpts[1..]
        .iter()
        .map(|c| c.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let plan = run_ok(
        pgan()
            .args(["train", "--dry-run", "--resume"])
            .arg(&ckpts[0])
            .args(["--total-kimg", "0.048"]),
    );
    assert!(
        plan.contains(&format!(
            "starts a new branch: the {} newer checkpoint(s) ({})",
            names.len(),
            names.join(", ")
        )) && plan.contains("abandoned-1")
            && plan.contains("learning rate: as configured"),
        "{plan}"
    );
    assert!(ckpts.iter().all(|c| c.is_dir()), "a dry run moves nothing");
    run_ok(resume_cmd(&ckpts[0], &["--total-kimg", "0.048"]).current_dir("/"));
    let set_aside = run
        .join("checkpoints/abandoned-1")
        .join(ckpts.last().unwrap().file_name().unwrap());
    assert!(set_aside.join("state.json").is_file());
    // Its timeline is the run's up to where the branch left it, then the branch's own.
    let timeline_rows = |source: &Path| {
        let out = dir.path().join("branch-timeline.png");
        let printed = run_ok(
            pgan()
                .arg("render")
                .arg(source)
                .arg("--out")
                .arg(&out)
                .args(["--seeds", "0-1", "--timeline", "--force"]),
        );
        let image = image::open(&out).unwrap();
        // Two columns of square cells with 2-pixel gaps around them.
        let cell = (image.width() - 6) / 2;
        ((image.height() - 2) / (cell + 2), printed)
    };
    let branch = set_aside.parent().unwrap();
    let counted = |folder: &Path, up_to: &str| {
        std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ckpt-") && n.as_str() <= up_to)
            .count() as u32
    };
    let point = ckpts[0].file_name().unwrap().to_string_lossy().into_owned();
    let shared = counted(&run.join("checkpoints"), &point);
    let own = counted(branch, "ckpt-999999999999");
    assert!(shared >= 1 && own >= 2, "{shared} {own}");
    assert_eq!(timeline_rows(&set_aside).0, shared + own);
    // A branch set aside without the record (an older pgan's): its own checkpoints, said so.
    std::fs::remove_file(branch.join("branch.json")).unwrap();
    let (rows, printed) = timeline_rows(&set_aside);
    assert!(
        rows == own && printed.contains("did not record where it left the run"),
        "{rows} {printed}"
    );
    let out = run_ok(
        pgan()
            .current_dir("/")
            .arg("eval")
            .arg(&set_aside)
            .args(["--num", "4"]),
    );
    assert!(out.contains("SWD") && !out.contains("no dataset"), "{out}");
    let err = run_err(&mut resume_cmd(&set_aside, &[]));
    assert!(
        err.contains("a branch an earlier resume set aside") && err.contains("abandoned-1"),
        "{err}"
    );

    // A file where a run folder or an output folder belongs.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = run_err(
        pgan()
            .arg("export")
            .arg(&file)
            .arg("--out")
            .arg(dir.path().join("g.safetensors")),
    );
    assert!(
        out.contains("is a regular file: give a run directory or one of its checkpoint folders"),
        "{out}"
    );
    let out = run_err(&mut train_cmd(
        &config,
        &dir.path().join("tiny.pgan"),
        &file,
        &[],
    ));
    assert!(
        out.contains("is a regular file, not a folder for run directories"),
        "{out}"
    );
    // ...and one in an output's folder path is named as such.
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(file.join("sub/x.png"))
            .args(["--seeds", "0"]),
    );
    assert!(
        out.contains(&format!("{} is a file, not a folder", file.display())),
        "{out}"
    );
    // A modes.json whose figures no synth wrote is refused before anything is generated.
    let modes = dir.path().join("modes.json");
    run_ok(pgan().arg("synth").arg(dir.path().join("s")).args([
        "--modes",
        "4",
        "--resolution",
        "8",
        "--count",
        "4",
    ]));
    // The empty folder a user stands in, named `.`: replacing it would leave the shell in a
    // deleted folder.
    let here = dir.path().join("here");
    std::fs::create_dir(&here).unwrap();
    let err = run_err(pgan().current_dir(&here).args([
        "synth",
        ".",
        "--modes",
        "2",
        "--resolution",
        "8",
        "--count",
        "2",
    ]));
    assert!(err.contains("cannot be the folder you are in"), "{err}");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("s/modes.json")).unwrap())
            .unwrap();
    spec["table"][1]["centre"] = serde_json::json!([50.0, -50.0]);
    std::fs::write(&modes, spec.to_string()).unwrap();
    // ...and before the output folders are made: a refused command leaves nothing behind.
    let outputs = dir.path().join("not-made");
    let out = run_err(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "4", "--modes"])
            .arg(&modes)
            .arg("--json")
            .arg(outputs.join("eval.json")),
    );
    assert!(
        out.contains("--modes")
            && out.contains("mode 1's centre [50.0, -50.0] is outside the image"),
        "{out}"
    );
    assert!(
        !out.contains("generating"),
        "checked before any work: {out}"
    );
    assert!(
        !outputs.exists(),
        "output folders made for a refused command"
    );
    let out = run_err(
        pgan()
            .arg("eval")
            .arg("--fake")
            .arg(dir.path().join("missing"))
            .arg("--data")
            .arg(dir.path().join("tiny.pgan"))
            .arg("--fid")
            .arg("--inception")
            .arg(&modes) // any file: the weights are not read before the inputs are checked
            .arg("--save-features")
            .arg(outputs.join("features/set")),
    );
    assert!(
        out.contains("--fake") && out.contains("no such file"),
        "{out}"
    );
    // A folder as the features' prefix would hide them as `-real.npy` in it.
    let out = run_err(
        pgan()
            .arg("eval")
            .arg("--fake")
            .arg(dir.path().join("tiny.pgan"))
            .arg("--real")
            .arg(dir.path().join("tiny.pgan"))
            .arg("--fid")
            .arg("--inception")
            .arg(&modes)
            .arg("--save-features")
            .arg(format!("{}/", outputs.display())),
    );
    assert!(
        out.contains("--save-features") && out.contains("a folder; give a file name prefix"),
        "{out}"
    );
    // Without the reference set: named as the README teaches it, --real.
    let out = run_err(
        pgan()
            .arg("eval")
            .arg("--fake")
            .arg(dir.path().join("tiny.pgan"))
            .arg("--fid"),
    );
    assert!(out.contains("--fake needs --real"), "{out}");
    assert!(
        !outputs.exists(),
        "output folders made for a refused command"
    );
    // An output that is one of the command's inputs is refused, the input left as it was.
    let data = dir.path().join("tiny.pgan");
    let before = std::fs::read(&data).unwrap();
    let out = run_err(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "4", "--pairs", "2", "--data"])
            .arg(&data)
            .arg("--json")
            .arg(&data),
    );
    assert!(
        out.contains("--json") && out.contains("must not replace an input"),
        "{out}"
    );
    assert_eq!(std::fs::read(&data).unwrap(), before);
    let metrics = run.join("metrics.jsonl");
    let before = std::fs::read(&metrics).unwrap();
    let mut report = pgan();
    report.arg("report").arg(&run).arg("--out").arg(&metrics);
    let mut eval = pgan();
    eval.arg("eval")
        .arg(&run)
        .args(["--num", "4", "--pairs", "2", "--json"])
        .arg(&metrics);
    // prepare replaces a dataset with --force, never a run's own file.
    let mut prepare = pgan();
    prepare
        .arg("prepare")
        .arg(dir.path().join("images"))
        .arg(&metrics)
        .args(["--resolution", "8", "--quiet", "--force"]);
    for cmd in [&mut report, &mut eval, &mut prepare] {
        let out = run_err(cmd);
        assert!(out.contains("a file of the run"), "{out}");
    }
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
    // Nor render, whichever output names them, nor any writer over a sample sheet.
    let config_toml = run.join("config.toml");
    let before_config = std::fs::read(&config_toml).unwrap();
    let render = |out: &Path, latents: &Path| {
        let mut cmd = pgan();
        cmd.arg("render")
            .arg(&run)
            .arg("--out")
            .arg(out)
            .args(["--seeds", "0"])
            .arg("--save-latents")
            .arg(latents);
        cmd
    };
    let elsewhere = dir.path().join("elsewhere");
    let sheet = run.join("samples").join("tick-000001.png");
    for (out, latents, why) in [
        // Refused before it is looked up: not a PNG's name.
        (
            &config_toml,
            &elsewhere.join("z.npy"),
            "render writes PNG images",
        ),
        (
            &elsewhere.join("x.png"),
            &run.join("log.txt"),
            "a file of the run",
        ),
        (
            &sheet,
            &elsewhere.join("z.npy"),
            "in the samples folder of the run",
        ),
    ] {
        let out = run_err(&mut render(out, latents));
        assert!(out.contains(why), "{out}");
    }
    let out = run_err(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "4", "--json"])
            .arg(&sheet),
    );
    assert!(out.contains("in the samples folder of the run"), "{out}");
    // Render writes PNGs: a .jpg name is refused rather than filled with PNG bytes.
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(elsewhere.join("sheet.JPG"))
            .args(["--seeds", "0"]),
    );
    assert!(out.contains("render writes PNG images"), "{out}");
    // So is a name without an extension, and a folder (which would have been replaced).
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(elsewhere.join("sheet"))
            .args(["--seeds", "0"]),
    );
    assert!(
        out.contains("render writes PNG images") && out.contains("sheet.png"),
        "{out}"
    );
    // A name that is all extension gets a stem in the example, not a second extension.
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(elsewhere.join(".png"))
            .args(["--seeds", "0"]),
    );
    assert!(
        out.contains("(e.g. ") && out.contains("samples.png)") && !out.contains(".png.png"),
        "{out}"
    );
    // A strip's animation that is there already is named as such, not as --out.
    std::fs::write(elsewhere.join("strip.gif"), b"mine").unwrap();
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(elsewhere.join("strip.png"))
            .args(["--seeds", "0,1", "--interpolate", "2"]),
    );
    assert!(
        out.contains("--out's animation (.gif beside it)") && out.contains("already exists"),
        "{out}"
    );
    std::fs::remove_file(elsewhere.join("strip.gif")).unwrap();
    let out = run_err(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&elsewhere)
            .args(["--seeds", "0", "--force"]),
    );
    assert!(out.contains("a folder; give a file name in it"), "{out}");
    assert!(elsewhere.is_dir());
    std::fs::remove_dir(&elsewhere).unwrap();
    // Other names in samples/ are the user's: the timeline the report shows goes there (as the
    // quick start writes it).
    run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(run.join("samples/timeline.png"))
            .args(["--seeds", "0-1", "--timeline"]),
    );
    let branch = run.join("checkpoints/abandoned-1/metrics.jsonl");
    let out = run_err(pgan().arg("report").arg(&run).arg("--out").arg(&branch));
    assert!(
        out.contains("in the checkpoints folder of the run"),
        "{out}"
    );
    assert_eq!(std::fs::read(&config_toml).unwrap(), before_config);
    // convert-inception checks its output as every writer does: not a dataset, not its input.
    let tiny_ts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pgan-inception/testdata/tiny_torchscript.pt");
    let before_data = std::fs::read(&data).unwrap();
    let out = run_err(
        pgan()
            .arg("convert-inception")
            .arg(&tiny_ts)
            .arg("--out")
            .arg(&data),
    );
    assert!(out.contains("that is a pgan dataset"), "{out}");
    assert_eq!(std::fs::read(&data).unwrap(), before_data);
    let out = run_err(
        pgan()
            .arg("convert-inception")
            .arg(&tiny_ts)
            .arg("--out")
            .arg(&tiny_ts),
    );
    assert!(out.contains("must not replace an input"), "{out}");
    // The dataset is checked before any image is generated: one of other channels, and the
    // run's own once it is gone (named with where it came from).
    let gray = dir.path().join("gray.pgan");
    run_ok(
        pgan()
            .arg("prepare")
            .arg(dir.path().join("images"))
            .arg(&gray)
            .args(["--resolution", "8", "--channels", "1", "--quiet"]),
    );
    let out = run_err(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "4", "--data"])
            .arg(&gray),
    );
    assert!(
        out.contains("--data") && out.contains("1-channel") && !out.contains("generating"),
        "{out}"
    );
    let config = run.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let data_section = text.find("[data]").unwrap();
    let line = data_section + text[data_section..].find("\npath = ").unwrap() + 1;
    let end = line + text[line..].find('\n').unwrap();
    let gone = dir.path().join("gone.pgan");
    let edited = format!(
        "{}path = {:?}{}",
        &text[..line],
        gone.to_str().unwrap(),
        &text[end..]
    );
    std::fs::write(&config, edited).unwrap();
    let out = run_err(pgan().arg("eval").arg(&run).args(["--num", "4"]));
    assert!(
        out.contains("data.path in") && out.contains("gone.pgan") && out.contains("does not exist"),
        "{out}"
    );
    assert!(!out.contains("generating"), "{out}");
}

/// The FID `pgan eval` printed in `out` (its `FID ` line).
fn fid_of(out: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix("FID "))
        .expect("FID line")
        .trim()
        .parse()
        .unwrap()
}

/// `count` 16x16 PNGs of smooth colour ramps (distinct per `variant`) in `dir/name/`.
fn ramp_folder(dir: &Path, name: &str, count: u32, variant: u32) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    for k in 0..count {
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([
                (x * 15 + k * 11) as u8,
                (y * 15 + variant * 60) as u8,
                ((x + y) * 7 + k * 30) as u8,
            ])
        });
        img.save(folder.join(format!("{k:02}.png"))).unwrap();
    }
    folder
}

/// FID/KID/precision-recall end to end with network-shaped stand-in weights (the real ones are
/// a download CI does not make): a checkpoint against a dataset (features cached beside it and
/// reused), two image sets without a checkpoint, and the errors around them.
#[test]
fn eval_fid_kid_pr_against_a_dataset_and_between_two_sets() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("inception.safetensors");
    pgan_inception::InceptionWeights::synthetic(3)
        .save(&weights, "test stand-in")
        .unwrap();
    // Five reals keep the network's work small: the metrics compare all of them.
    let reals_dir = ramp_folder(dir.path(), "reals", 5, 0);
    let reals = dir.path().join("reals.pgan");
    prepare_quietly(&reals_dir, &reals, 16);

    // Training with FID every 0.032 kimg: missing weights stop it before the first step;
    // with them, metrics.jsonl and the report carry FID.
    let config = dir.path().join("fid.toml");
    std::fs::write(
        &config,
        format!("{CONFIG}fid_every_kimg = 0.032\nfid_num = 4\n"),
    )
    .unwrap();
    let train = |weights: &Path| {
        let mut cmd = pgan();
        cmd.args(["train", "--no-progress", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&reals)
            .arg("--out-dir")
            .arg(dir.path().join("runs"))
            .env("PGAN_INCEPTION", weights);
        cmd
    };
    let err = run_err(&mut train(&dir.path().join("absent.safetensors")));
    assert!(
        err.contains("absent.safetensors") && err.contains("scripts/fetch-inception.sh"),
        "{err}"
    );
    assert!(
        !dir.path().join("runs").exists(),
        "no run directory for a run that never started"
    );
    run_ok(&mut train(&weights));
    let run = first_run(&dir.path().join("runs"));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let fids = metrics.matches("\"Metrics/fid\":").count();
    assert_eq!(fids, 2, "FID at 0.032 and 0.064 kimg: {metrics}");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(
        log.contains("FID of 4 generated images is biased upward"),
        "{log}"
    );
    // Weights other than the standard ones are said once, at the start.
    assert_eq!(
        log.matches("not the standard FID Inception weights")
            .count(),
        1,
        "{log}"
    );
    run_ok(pgan().arg("report").arg(&run));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("Fréchet Inception Distance"));

    let json = dir.path().join("fid.json");
    let eval_num = |num: &str, extra: &[&str]| {
        let mut cmd = pgan();
        cmd.arg("eval")
            .arg(&run)
            .args(["--fid", "--kid", "--pr", "--num", num, "--real"])
            .arg(&reals)
            .arg("--inception")
            .arg(&weights)
            .args(extra);
        cmd
    };
    let eval = |extra: &[&str]| eval_num("4", extra);
    let out = run_ok(eval(&[]).arg("--json").arg(&json));
    assert!(out.contains("FID") && out.contains("precision"), "{out}");
    assert!(
        out.contains("warning: FID of 4 generated images is biased upward"),
        "{out}"
    );
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let fid = parsed["fid"].as_f64().expect("fid in the JSON");
    assert!(fid.is_finite() && fid > 0.0, "{parsed}");
    // The report names the weights that measured it, and says these are not the standard ones.
    let crc = pgan_inception::InceptionWeights::synthetic(3).checksum;
    assert_eq!(
        parsed["inception_weights_crc32"],
        format!("{crc:08x}"),
        "{parsed}"
    );
    assert!(
        out.contains("inception.safetensors: not the standard FID Inception weights")
            && out.contains(&format!("{:08x}", pgan_inception::STANDARD_WEIGHTS_CRC32)),
        "{out}"
    );
    // The JSON names its units: KID raw, which the text output shows x1e3.
    let kid = parsed["kid"].as_f64().expect("kid in the JSON");
    assert!(out.contains(&format!("KID x1e3 {:.4}", kid * 1e3)), "{out}");
    assert_eq!(
        parsed["units"]["kid"],
        "raw (the text output shows it x1e3)"
    );
    for key in ["precision", "recall"] {
        let v = parsed[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} {v}");
    }
    assert_eq!(parsed["num_real_features"].as_u64(), Some(5));
    // What this run did not measure is listed, not left as silent nulls.
    let unmeasured = unmeasured_metrics(&parsed);
    assert_eq!(
        unmeasured,
        ["swd", "msssim_fake", "msssim_real"],
        "{parsed}"
    );
    assert_eq!(parsed["msssim_pairs"].as_u64(), Some(0), "{parsed}");
    let cache = dir.path().join("reals.pgan.fid-16.safetensors");
    assert!(cache.is_file(), "real features cached beside the dataset");

    // The second evaluation reads the cache and gives the same FID.
    let out = run_ok(&mut eval(&[]));
    assert!(out.contains("real features from"), "{out}");
    assert!(out.contains(&format!("FID {fid:.4}")), "{out}");

    // Two image sets without a checkpoint: the dataset against a folder, then against itself.
    let fakes = ramp_folder(dir.path(), "fakes", 4, 2);
    // `eval --fid` of `fake` against `real`, with the Inception weights at `weights`.
    let fid_with = |real: &Path, fake: &Path, weights: &Path| {
        let mut cmd = pgan();
        cmd.args(["eval", "--fid", "--real"])
            .arg(real)
            .arg("--fake")
            .arg(fake)
            .arg("--inception")
            .arg(weights);
        cmd
    };
    let fid_between = |real: &Path, fake: &Path| fid_with(real, fake, &weights);
    let compare_with = |fake: &Path, weights: &Path| fid_with(&reals, fake, weights);
    let compare = |fake: &Path| compare_with(fake, &weights);
    let out = run_ok(&mut compare(&fakes));
    assert!(out.contains("4 generated") && out.contains("FID"), "{out}");
    assert!(
        out.contains("warning: FID of 4 generated images is biased upward"),
        "{out}"
    );
    // A folder is read as `pgan prepare` reads it: a link back up is not a loop that counts
    // every image again, and a FIFO with an image's name is an error, not a wait forever.
    std::os::unix::fs::symlink(".", fakes.join("loop")).unwrap();
    std::os::unix::fs::symlink(".", fakes.join("loop2")).unwrap();
    let out = run_ok(&mut compare(&fakes));
    assert!(out.contains("4 generated"), "{out}");
    // Files that cannot be decoded (a FIFO, a damaged image) are left out, as `prepare` leaves
    // them out, and named in a warning; a pixel limit leaves out the larger ones.
    let fifo = fakes.join("zz.png");
    mkfifo(&fifo);
    std::fs::write(fakes.join("zy.png"), b"\x89PNG\r\n\x1a\n cut short").unwrap();
    for k in 0..3 {
        std::fs::write(fakes.join(format!("zx{k}.png")), b"").unwrap();
    }
    let compared = dir.path().join("compared.json");
    let out = run_ok(compare(&fakes).args(["--kid", "--json"]).arg(&compared));
    assert!(
        out.contains("4 generated")
            && out.contains("warning: 5 of the 9 images under")
            && out.contains("left out (the metrics measure the other 4)")
            && out.contains("zx0.png: ")
            && out.contains("and 2 more (every one, with why, in the --json report's `left_out`)"),
        "{out}"
    );
    // The JSON of a comparison names both sets and KID's seed, and only its own units, and
    // every image left out, with why.
    let parsed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&compared).unwrap()).unwrap();
    let left_out = parsed["left_out"].as_array().unwrap();
    assert_eq!(left_out.len(), 5, "{parsed}");
    let named = |name: &str| {
        left_out
            .iter()
            .find(|l| l["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not in {parsed}"))
    };
    assert_eq!(named("zy.png")["set"], "fake");
    assert!(named("zz.png")["why"]
        .as_str()
        .unwrap()
        .contains("not a regular file (a FIFO)"));
    for k in 0..3 {
        named(&format!("zx{k}.png"));
    }
    assert_eq!(parsed["real"], reals.to_str().unwrap(), "{parsed}");
    assert_eq!(parsed["fake"], fakes.to_str().unwrap(), "{parsed}");
    assert_eq!(parsed["seed"], 123, "{parsed}");
    assert!(parsed["units"].get("swd").is_none(), "{parsed}");
    let err = run_err(compare(&fakes).args(["--max-pixels", "100"]));
    assert!(
        err.contains("has 0 images") && err.contains("too many pixels"),
        "{err}"
    );
    std::fs::remove_file(&fifo).unwrap();
    std::fs::remove_file(fakes.join("zy.png")).unwrap();
    for k in 0..3 {
        std::fs::remove_file(fakes.join(format!("zx{k}.png"))).unwrap();
    }
    // Files of kinds pgan does not decode are named by extension, not passed over in silence.
    std::fs::write(fakes.join("a.ppm"), b"P6 1 1 255 \0\0\0").unwrap();
    std::fs::write(fakes.join("b.PPM"), b"P6 1 1 255 \0\0\0").unwrap();
    std::fs::write(fakes.join("notes.txt"), b"x").unwrap();
    std::os::unix::fs::symlink("loop-b", fakes.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", fakes.join("loop-b")).unwrap();
    let out = run_ok(&mut compare(&fakes));
    assert!(
        out.contains("note: 3 files under")
            && out.contains("were not read")
            && out.contains(": 2 .ppm, 1 .txt; 2 links under")
            && out.contains("leading nowhere"),
        "{out}"
    );
    for name in ["a.ppm", "b.PPM", "notes.txt", "loop-a", "loop-b"] {
        std::fs::remove_file(fakes.join(name)).unwrap();
    }
    // A folder of such files alone: the error says what it held instead of images.
    let others = dir.path().join("others");
    std::fs::create_dir(&others).unwrap();
    std::fs::write(others.join("x.heic"), b"x").unwrap();
    let err = run_err(&mut compare(&others));
    assert!(
        err.contains("has 0 images") && err.contains("1 file under") && err.contains("1 .heic"),
        "{err}"
    );
    let out = run_ok(&mut compare(&reals));
    let same = fid_of(&out);
    assert!(same.abs() < 1e-3, "a set against itself: {out}");

    // Transparent images read from a folder are composited as `pgan prepare` composited them:
    // by default onto the background the .pgan they are compared with was prepared on, so the
    // folder and the file made from it are one set; another colour is another set.
    let clear = dir.path().join("clear");
    std::fs::create_dir_all(&clear).unwrap();
    for k in 0..4u32 {
        image::RgbaImage::from_fn(16, 16, |x, y| {
            image::Rgba([
                (x * 15) as u8,
                (y * 15 + k * 20) as u8,
                90,
                ((x + y) * 8) as u8,
            ])
        })
        .save(clear.join(format!("{k}.png")))
        .unwrap();
    }
    let clear_pgan = dir.path().join("clear.pgan");
    run_ok(pgan().arg("prepare").arg(&clear).arg(&clear_pgan).args([
        "--resolution",
        "16",
        "--quiet",
        "--background",
        "ff0000",
    ]));
    let clear_against_its_file = |extra: &[&str]| {
        let out = run_ok(fid_between(&clear_pgan, &clear).args(extra));
        let fid = fid_of(&out);
        (fid, out)
    };
    let (fid, out) = clear_against_its_file(&[]);
    assert!(fid.abs() < 1e-3, "{out}");
    assert!(
        out.contains("compared: 4 images with an alpha channel composited onto #ff0000"),
        "{out}"
    );
    let (fid, out) = clear_against_its_file(&["--background", "000000"]);
    assert!(
        fid > 1.0,
        "black under the folder, red under the file: {out}"
    );
    assert!(out.contains("onto #000000"), "{out}");
    // A greyscale .pgan holds the luma of each composite: the folder beside it is read so too,
    // on either side.
    let clear_grey = dir.path().join("clear-grey.pgan");
    run_ok(pgan().arg("prepare").arg(&clear).arg(&clear_grey).args([
        "--resolution",
        "16",
        "--quiet",
        "--background",
        "ff0000",
        "--channels",
        "1",
    ]));
    for (real, fake, side) in [
        (&clear_grey, &clear, "compared"),
        (&clear, &clear_grey, "real"),
    ] {
        let out = run_ok(&mut fid_between(real, fake));
        let fid = fid_of(&out);
        assert!(fid.abs() < 1e-3, "{out}");
        assert!(
            out.contains(&format!("note: {side}: the image folder"))
                && out.contains("read as greyscale (luma)"),
            "{out}"
        );
    }
    // So is a folder beside a greyscale checkpoint: its FID is the one against the file.
    let grey_config = dir.path().join("grey.toml");
    std::fs::write(&grey_config, CONFIG).unwrap();
    let (_, grey_run) = train_tiny(
        &grey_config,
        &clear_grey,
        &dir.path().join("grey-runs"),
        &[],
    );
    let grey_fid = |real: &Path| {
        let out = run_ok(
            pgan()
                .arg("eval")
                .arg(&grey_run)
                .args(["--fid", "--num", "4", "--real"])
                .arg(real)
                .arg("--inception")
                .arg(&weights),
        );
        let fid = fid_of(&out);
        (fid, out)
    };
    let (from_folder, out) = grey_fid(&clear);
    assert!(
        out.contains("note: real: the image folder")
            && out.contains("as the checkpoint generates 1-channel images"),
        "{out}"
    );
    assert!(!out.contains("299x299"), "{out}");
    let (from_file, _) = grey_fid(&clear_grey);
    assert!(
        (from_folder - from_file).abs() < 1e-6 * from_file.abs().max(1.0),
        "{from_folder} from the folder, {from_file} from the file it was prepared into"
    );
    // Two files of different channels or resolutions are compared, and it is said what that
    // measures besides the images.
    let out = run_ok(&mut fid_between(&clear_pgan, &clear_grey));
    assert!(
        out.contains("warning: the real set holds 3-channel images and the compared set 1-channel"),
        "{out}"
    );
    let clear8 = dir.path().join("clear8.pgan");
    prepare_quietly(&clear, &clear8, 8);
    let out = run_ok(&mut fid_between(&clear8, &clear_pgan));
    assert!(
        out.contains("warning: the real set is 8x8 and the compared set 16x16"),
        "{out}"
    );
    assert!(!out.contains("channel"), "{out}");
    // A folder of other sizes than the set it is compared with: measured, and remarked on.
    let big = dir.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    for k in 0..5u32 {
        let side = if k == 0 { 16 } else { 32 };
        image::RgbImage::from_fn(side, side, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 7 + k * 40) as u8, 90])
        })
        .save(big.join(format!("{k}.png")))
        .unwrap();
    }
    let expected = "4 of its 5 images are not 16x16 (most often 32x32)";
    let out = run_ok(&mut fid_between(&clear_pgan, &big));
    assert!(
        out.contains(&format!(
            "warning: compared: {expected} and the real set is 16x16"
        )),
        "{out}"
    );
    // Two folders: their most common sizes are compared.
    let out = run_ok(&mut fid_between(&big, &clear));
    assert!(
        out.contains(
            "warning: the real set's images are most often 32x32 (4 of 5) and the compared \
             set's 16x16"
        ),
        "{out}"
    );
    // A subfolder that cannot be read: an error naming it, not a smaller set measured.
    let too_deep = pgan_data::test_files::unreadable_folder(&big);
    let err = run_err(&mut fid_between(&clear_pgan, &big));
    assert!(
        err.contains("cannot read folder") && err.contains(&*too_deep.to_string_lossy()),
        "{err:.200}"
    );
    let below = too_deep.strip_prefix(&big).unwrap().components().next();
    std::fs::remove_dir_all(big.join(below.unwrap())).unwrap();
    let (_, out) = grey_fid(&big);
    assert!(
        out.contains(&format!(
            "warning: real: {expected} and the generated images are 16x16"
        )),
        "{out}"
    );
    let err = run_err(
        pgan()
            .args(["eval", "--fid", "--background", "red", "--real"])
            .arg(&clear_pgan)
            .arg("--fake")
            .arg(&clear),
    );
    assert!(
        err.contains("--background") && err.contains("'red'"),
        "{err}"
    );
    // Flags that shape a checkpoint's generated images mean nothing between two sets.
    for flag in [
        ["--num", "8"],
        ["--pairs", "8"],
        ["--truncation", "1"],
        ["--modes", "modes.json"],
    ] {
        let err = run_err(
            pgan()
                .args(["eval", "--fid", "--real"])
                .arg(&reals)
                .arg("--fake")
                .arg(&fakes)
                .args(flag),
        );
        assert!(err.contains(flag[0]) && err.contains("--fake"), "{err}");
    }

    // Errors: missing and corrupt weights, too few images, a dataset below the checkpoint.
    let missing = dir.path().join("nowhere.safetensors");
    let err = run_err(&mut compare_with(&fakes, &missing));
    assert!(
        err.contains("nowhere.safetensors") && err.contains("scripts/fetch-inception.sh"),
        "{err}"
    );
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not weights").unwrap();
    let err = run_err(&mut compare_with(&fakes, &corrupt));
    assert!(
        err.contains("corrupt inception weights") && err.contains("corrupt.safetensors"),
        "{err}"
    );
    let err = run_err(&mut eval_num("3", &[]));
    assert!(
        err.contains("has 3 images") && err.contains("at least 4"),
        "{err}"
    );
    let small = dir.path().join("reals8.pgan");
    prepare_quietly(&reals_dir, &small, 8);
    let err = run_err(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--fid", "--num", "4", "--real"])
            .arg(&small)
            .arg("--inception")
            .arg(&weights),
    );
    assert!(err.contains("below the checkpoint's 16"), "{err}");
    let err = run_err(
        pgan()
            .args(["eval", "--real"])
            .arg(&reals)
            .arg("--fake")
            .arg(&fakes),
    );
    assert!(err.contains("--fid, --kid or --pr"), "{err}");
    // A TorchScript file that is not the Inception network.
    let tiny_ts = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../pgan-inception/testdata/tiny_torchscript.pt");
    let err = run_err(
        pgan()
            .arg("convert-inception")
            .arg(&tiny_ts)
            .arg("--out")
            .arg(dir.path().join("x.safetensors")),
    );
    assert!(
        err.contains("tiny_torchscript.pt") && err.contains("net.layers"),
        "{err}"
    );
}

/// The metrics an `eval --json` file lists as not measured, in its order.
fn unmeasured_metrics(parsed: &serde_json::Value) -> Vec<&str> {
    parsed["unmeasured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["metric"].as_str().unwrap())
        .collect()
}

/// `scripts/pgan_torch.py` draws what `pgan render` draws for the latents it saved. Runs when
/// Python can import torch, numpy and PIL; says it skipped otherwise.
#[test]
fn exported_generator_in_pytorch_matches_pgan_render() {
    let probe = Command::new("python3")
        .args(["-c", "import torch, numpy, PIL"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("skipped: python3 cannot import torch, numpy and PIL (pip install -r scripts/requirements-bench.txt)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let (_, run) = train_tiny(&config, &data, &dir.path().join("runs"), &[]);
    let sheet = dir.path().join("sheet.png");
    let latents = dir.path().join("z.npy");
    run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&sheet)
            .args([
                "--seeds",
                "0-5",
                "--rows",
                "1",
                "--cols",
                "6",
                "--cell-px",
                "1",
            ])
            .arg("--save-latents")
            .arg(&latents),
    );
    let exported = dir.path().join("g_ema.safetensors");
    run_ok(pgan().arg("export").arg(&run).arg("--out").arg(&exported));
    let scripts = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../scripts");
    // Sheet cells sit at (2 + k·(r + 2), 2): the grid's 2-pixel gap.
    let check = r#"
import sys
import numpy as np, torch
from PIL import Image
sys.path.insert(0, sys.argv[1])
from pgan_torch import load_generator, to_uint8
g = load_generator(sys.argv[2])
z = np.load(sys.argv[3])
assert z.dtype == np.float32 and z.shape == (6, g.latent_dim), (z.dtype, z.shape)
ours = to_uint8(g(torch.from_numpy(z)))
sheet = np.asarray(Image.open(sys.argv[4]).convert("RGB")).astype(int)
r = ours.shape[1]
worst = max(
    int(np.abs(sheet[2 : 2 + r, 2 + k * (r + 2) : 2 + k * (r + 2) + r] - ours[k].astype(int)).max())
    for k in range(len(z))
)
print("resolution", r, "max_diff", worst)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(check)
        .arg(&scripts)
        .arg(&exported)
        .arg(&latents)
        .arg(&sheet)
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    let worst: u32 = printed
        .split("max_diff")
        .nth(1)
        .expect("max_diff printed")
        .trim()
        .parse()
        .unwrap();
    assert!(printed.contains("resolution 16"), "{printed}");
    assert!(worst <= 1, "pixels differ by up to {worst}/255: {printed}");
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

#[test]
fn prepare_skips_decompression_bombs_with_a_reason_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    std::fs::write(images.join("bomb.png"), bomb_png(100_000, 100_000, 2, 8)).unwrap();
    // Under the pixel limit, over the decoder's memory limit: 144 MP of 16-bit RGBA (1.1 GiB).
    std::fs::write(images.join("deep.png"), bomb_png(12_000, 12_000, 6, 16)).unwrap();
    let data = dir.path().join("b.pgan");
    // Reaped by the wait4 below, which clippy does not see.
    #[allow(clippy::zombie_processes)]
    let mut child = prepare_at_8_piped(&mut pgan(), &images, &data)
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

/// A checkpoint or run file that is not a regular file is an error naming it, not a read that
/// waits for ever; a full disk behind stdout is an error, not a panic.
#[test]
fn checkpoint_files_that_are_fifos_and_a_full_stdout_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let (_, run) = train_tiny(&config, &data, &dir.path().join("runs"), &[]);
    let ckpt = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let full = pgan()
        .arg("info")
        .arg(&data)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let (code, out) = (full.status.code(), text(&full));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("cannot write to standard output"), "{out}");
    // Nor does a full stderr turn an error (or a failed verify) into a panic: the exit status
    // is the command's.
    for (args, expected) in [
        (vec!["verify", "absent.pgan"], 2),
        (vec!["info", "absent.pgan"], 2),
    ] {
        let full = pgan()
            .args(&args)
            .stderr(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(full.status.code(), Some(expected), "{args:?}");
    }
    // The help and the version are output too; asked for where they fit, they exit 0.
    for args in [
        &["--help"][..],
        &["--version"],
        &["help", "train"],
        &["prepare", "--help"],
    ] {
        let full = pgan()
            .args(args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let (code, out) = (full.status.code(), text(&full));
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(
            out.contains("cannot write to standard output"),
            "{args:?}: {out}"
        );
        let fits = pgan().args(args).output().unwrap();
        assert_eq!(fits.status.code(), Some(0), "{args:?}: {}", text(&fits));
        assert!(!fits.stdout.is_empty(), "{args:?}");
    }
    for name in ["generator_ema.mpk", "state.json"] {
        let file = ckpt.join(name);
        let kept = dir.path().join(format!("kept-{name}"));
        std::fs::rename(&file, &kept).unwrap();
        mkfifo(&file);
        for command in ["export", "render"] {
            let out_file = dir.path().join(format!("{command}-{name}.png"));
            let (code, out) = run_within(
                pgan().arg(command).arg(&ckpt).arg("--out").arg(&out_file),
                60,
            );
            assert_eq!(code, Some(2), "{out}");
            assert!(
                out.contains(&format!("{name} is a FIFO, not a regular file"))
                    || out.contains(&format!("{name}: it is a FIFO, not a regular file")),
                "{out}"
            );
        }
        std::fs::remove_file(&file).unwrap();
        std::fs::rename(&kept, &file).unwrap();
    }
    // The run's config.toml, read by eval for the dataset: measured without it, and said why.
    let config_toml = run.join("config.toml");
    std::fs::remove_file(&config_toml).unwrap();
    mkfifo(&config_toml);
    let (code, out) = run_within(pgan().arg("eval").arg(&run).args(["--num", "4"]), 60);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("no dataset from the run's config")
            && out.contains("it is a FIFO, not a regular file"),
        "{out}"
    );
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
    prepare_quietly(&images, &data, 8);
    let out = run_ok(pgan().arg("verify").arg(&data));
    assert!(out.contains("all 2 levels ok"), "{out}");
    let good = std::fs::read(&data).unwrap();
    // A pixel of the 8x8 level (the second page after the header), a header byte, and a byte
    // of the header's zero padding (no checksum covers it).
    for (at, what) in [
        (8192 + 5, "MISMATCH"),
        (13, "corrupt header"),
        (2000, "1 nonzero bytes in the header's padding"),
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        let path = dir.path().join("bad.pgan");
        std::fs::write(&path, &bad).unwrap();
        let (code, out) = run_within(pgan().arg("verify").arg(&path), 60);
        assert_eq!(code, Some(1), "{what}:\n{out}");
        assert!(out.contains(what) && out.contains("bad.pgan"), "{out}");
    }
    // Bytes appended after the last section (the manifest), which ends the file (docs/FORMAT.md).
    let longer = dir.path().join("longer.pgan");
    std::fs::write(&longer, [&good[..], b"extra\n"].concat()).unwrap();
    let (code, out) = run_within(pgan().arg("verify").arg(&longer), 60);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("6 bytes after the last section") && out.contains("bytes follow its data"),
        "{out}"
    );
    // info and train read such a file (its levels are intact) and say what verify would;
    // train also says when the dataset is smaller than a minibatch.
    let out = run_ok(pgan().arg("info").arg(&longer));
    assert!(out.contains("6 bytes follow the last section"), "{out}");
    let dry_run = |batch: &str| {
        run_ok(
            pgan()
                .args(["train", "--dry-run", "--resolution", "8", "--batch", batch])
                .arg("--data")
                .arg(&longer),
        )
    };
    let out = dry_run("32");
    assert!(
        out.contains("6 bytes follow its data") && out.contains("`pgan verify` calls it corrupt"),
        "{out}"
    );
    assert!(
        out.contains("longer.pgan holds 20 image(s), fewer than the minibatch of 32 at 4x4"),
        "{out}"
    );
    assert!(!dry_run("16").contains("fewer than the minibatch"));
    let (code, out) = run_within(pgan().arg("verify").arg(dir.path().join("none.pgan")), 60);
    assert_eq!(code, Some(2), "{out}");
    // A file that is not a pgan dataset at all is not a corrupt one: 2, as for info.
    let text_file = dir.path().join("notes.pgan");
    std::fs::write(&text_file, b"my notes\n").unwrap();
    let empty = dir.path().join("empty.pgan");
    std::fs::write(&empty, b"").unwrap();
    for (path, what) in [(&text_file, "bad magic bytes"), (&empty, "empty file")] {
        for command in ["verify", "info"] {
            let (code, out) = run_within(pgan().arg(command).arg(path), 60);
            assert_eq!(code, Some(2), "{command}: {out}");
            assert!(
                out.contains("is not a pgan dataset") && out.contains(what),
                "{out}"
            );
        }
    }
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
    for signal in ["-TERM", "-INT", "-HUP"] {
        let child = prepare_at_8_piped(with_default_sighup(&mut pgan()), &images, &data)
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
        assert_eq!(
            out.status.code(),
            Some(exit_code(signal)),
            "{signal}: {}",
            text(&out)
        );
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
    let out = prepare_quietly(&small, &data, 8);
    assert!(
        out.contains("removed 1 temporary files left by interrupted runs"),
        "{out}"
    );
    assert!(names_starting(&out_dir, ".s.pgan").is_empty());
}

/// Two prepares of one output started together: exactly one writes it, every time; the other
/// names the writer (or, having come after it, the file it wrote). Neither leaves a temporary
/// file.
#[test]
fn two_prepares_of_one_output_at_once_leave_exactly_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    // Enough work (a few hundred ms) that the two overlap.
    let images = dir.path().join("many");
    std::fs::create_dir(&images).unwrap();
    for k in 0..300u32 {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4 + k) as u8, (y * 4) as u8, (k % 256) as u8])
        });
        img.save(images.join(format!("{k:03}.png"))).unwrap();
    }
    let data = dir.path().join("d.pgan");
    let mut overlapped = 0;
    for round in 0..40 {
        let _ = std::fs::remove_file(&data);
        let _ = std::fs::remove_file(dir.path().join("d.pgan.report.txt"));
        let children: Vec<_> = (0..2)
            .map(|_| {
                prepare_at_8_piped(&mut pgan(), &images, &data)
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let said = format!("round {round}:\n{}\n{}", text(&outs[0]), text(&outs[1]));
        let winners: Vec<usize> = (0..2).filter(|&k| outs[k].status.success()).collect();
        assert_eq!(winners.len(), 1, "{said}");
        let (winner, loser) = (winners[0], 1 - winners[0]);
        assert_eq!(outs[loser].status.code(), Some(2), "{said}");
        let refused = text(&outs[loser]);
        assert!(
            refused.contains(&format!(
                "another process (pid {}) is writing it now",
                pids[winner]
            )) || refused.contains("already exists"),
            "{said}"
        );
        overlapped += usize::from(refused.contains("is writing it now"));
        run_ok(pgan().arg("verify").arg(&data));
    }
    // The rounds met the case they test: two writers at work at once.
    assert!(overlapped >= 20, "{overlapped} of 40 rounds overlapped");
    assert_eq!(names_starting(dir.path(), ".d.pgan"), Vec::<String>::new());
}

#[test]
fn prepare_keeps_the_dataset_when_only_the_report_fails_and_a_stale_report_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let images = image_folder(dir.path());
    // The report's name is taken by a folder: the report cannot be written.
    let data = dir.path().join("r.pgan");
    std::fs::create_dir(dir.path().join("r.pgan.report.txt")).unwrap();
    let out = prepare_quietly(&images, &data, 8);
    assert!(
        out.contains("warning: the report") && out.contains("the dataset is complete"),
        "{out}"
    );
    assert!(out.contains("skipped 1 files (the first: "), "{out}");
    run_ok(pgan().arg("verify").arg(&data));
    // An empty report left by an earlier run is replaced, never in the way.
    let data = dir.path().join("e.pgan");
    std::fs::write(dir.path().join("e.pgan.report.txt"), b"").unwrap();
    prepare_quietly(&images, &data, 8);
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
    prepare_quietly(&images, &data, 8);
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
    let mut child = spawn_long_run(&config, &copy, &runs, &[]);
    let run = wait_for_run(&mut child, &runs, "a first checkpoint", |run| {
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
    // Printed once, however many sampler threads met the lost pages.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("changed while in use").count(),
        1,
        "{stderr}"
    );
    // The last checkpoint loads.
    let exported = dir.path().join("g.safetensors");
    run_ok(pgan().arg("export").arg(&run).arg("--out").arg(&exported));
}
#[test]
fn remedy_flags_reach_the_plan_and_a_run_and_bad_values_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let remedies = [
        "--loss",
        "minimax",
        "--real-label",
        "0.9",
        "--feature-matching",
        "0.5",
        "--instance-noise",
        "0.2",
        "--instance-noise-kimg",
        "0.032",
        "--lr-g-mult",
        "0.5",
        "--lr-d-mult",
        "2",
        "--d-steps",
        "2",
        "--minibatch",
        "discrimination",
    ];
    let dry = run_ok(
        pgan()
            .args(["train", "--dry-run", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .args(remedies),
    );
    for said in [
        "kind = \"minimax\"",
        "real_label = 0.9",
        "d_steps = 2",
        "feature_matching = 0.5",
        "minibatch = \"discrimination\"",
        "minibatch layer: discrimination (100 kernels x 5 dims)",
        "loss: minimax (saturating, no penalty), real label 0.9, feature matching 0.5",
        "updates: lr x G 0.5 x D 2 (times the lr column), 2 D steps per G step   \
         instance noise: sigma 0.2 -> 0 over 0.032 kimg",
    ] {
        assert!(dry.contains(said), "'{said}' missing from:\n{dry}");
    }

    let runs = dir.path().join("runs");
    run_ok(
        pgan()
            .args([
                "train",
                "--no-progress",
                "--total-kimg",
                "0.032",
                "--config",
            ])
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg("--out-dir")
            .arg(&runs)
            .args(remedies),
    );
    let run = first_run(&runs);
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains("lr_d_mult = 2.0") && saved.contains("sigma = 0.2"),
        "{saved}"
    );
    let rows = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 2, "two ticks of 16 images:\n{rows}");

    for (flags, said) in [
        (
            &["--loss", "hinge"][..],
            "--loss: unknown loss 'hinge' (expected wgan-gp, logistic-r1, non-saturating, minimax)",
        ),
        (
            &["--real-label", "0"][..],
            "--real-label 0 must be in (0, 1]",
        ),
        (
            &["--instance-noise=-1"][..],
            "--instance-noise -1 must be a non-negative sigma",
        ),
        (
            &["--instance-noise", "0.1"][..],
            "instance_noise.anneal_kimg must be positive",
        ),
        (&["--lr-g-mult", "0"][..], "--lr-g-mult 0 must be positive"),
        (
            &["--feature-matching=-1"][..],
            "--feature-matching -1 must be a non-negative weight",
        ),
        (&["--lr-d-mult=-1"][..], "--lr-d-mult -1 must be positive"),
        (&["--d-steps", "0"][..], "--d-steps must be at least 1"),
        (
            &["--minibatch", "batchnorm"][..],
            "--minibatch: unknown minibatch layer 'batchnorm' (expected stddev, discrimination, none)",
        ),
        (
            &["--real-label", "0.9"][..],
            "loss.real_label 0.9 applies to the logistic losses",
        ),
    ] {
        let err = run_err(
            pgan()
                .args(["train", "--dry-run", "--config"])
                .arg(&config)
                .arg("--data")
                .arg(&data)
                .args(flags),
        );
        assert!(
            err.contains(said),
            "{flags:?}: '{said}' missing from:\n{err}"
        );
    }
}

/// `pgan train --devices 0,1`: two peers (threads on the CPU) train a run through a fade-in,
/// and a minibatch that does not split over the devices is a clear error.
#[cfg(feature = "collective")]
#[test]
fn two_devices_train_a_run_and_a_minibatch_that_does_not_split_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");
    let (_, run) = train_tiny(
        &config,
        &data,
        &runs,
        &["--devices", "0,1", "--total-kimg", "0.032"],
    );
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(
        log.contains("2 peers on devices [0, 1], 2 per device"),
        "{log}"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["kimg"], 0.032);
    assert_eq!(last["Peers/count"], 2.0);
    assert!(last["Peers/step_s"].as_f64().unwrap() > 0.0);

    let err = run_err(pgan().args([
        "train",
        "--dry-run",
        "--data",
        "x.pgan",
        "--devices",
        "0,1,2",
        "--batch",
        "16",
    ]));
    assert!(
        err.contains("the minibatch of 16 at 4x4 does not divide over 3 devices"),
        "{err}"
    );
}

/// Without the `collective` feature, `--devices` with more than one device says how to build it.
#[cfg(not(feature = "collective"))]
#[test]
fn several_devices_without_the_collective_feature_say_how_to_get_it() {
    let err = run_err(pgan().args(["train", "--dry-run", "--data", "x.pgan", "--devices", "0,1"]));
    assert!(
        err.contains("built without data-parallel training")
            && err.contains("--features collective"),
        "{err}"
    );
}

#[test]
fn an_interrupted_synth_leaves_nothing_and_a_link_to_a_folder_is_written_through() {
    let dir = tempfile::tempdir().unwrap();
    for signal in ["-INT", "-TERM"] {
        let child = pgan()
            .current_dir(dir.path())
            .args(["synth", "big", "--count", "200000", "--resolution", "64"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let building = dir.path().join(format!(".big.tmp-{}", child.id()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::read_dir(&building).map_or(0, |d| d.count()) < 20 {
            assert!(std::time::Instant::now() < deadline, "synth wrote nothing");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(exit_code(signal)),
            "{signal}: {}",
            text(&out)
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{signal}: {left:?}");
    }
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("real", &link).unwrap();
    run_ok(
        pgan()
            .arg("synth")
            .arg(&link)
            .args(["--count", "8", "--modes", "4"]),
    );
    assert!(real.join("labels.json").is_file());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A render stopped while it draws or encodes leaves the earlier strip, animation and latents
/// as they were: never a set of files from two requests (the latents new, the GIF old).
#[test]
fn an_interrupted_render_leaves_the_earlier_outputs_together() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let (_, run) = train_tiny(&config, &data, &dir.path().join("runs"), &[]);
    let out = dir.path().join("w.png");
    let files = [
        out.clone(),
        out.with_extension("gif"),
        dir.path().join("w.npy"),
    ];
    let render = |seeds: &str, steps: &str, cell: &str| {
        let mut cmd = pgan();
        cmd.arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&out)
            .args(["--seeds", seeds, "--interpolate", steps, "--cell-px", cell])
            .arg("--save-latents")
            .arg(&files[2])
            .arg("--force");
        cmd
    };
    let said = run_ok(&mut render("3,4", "4", "8"));
    assert!(
        said.contains(&format!(
            "wrote {} (the latents, one per frame)",
            files[2].display()
        )),
        "{said}"
    );
    let contents = || -> Vec<Vec<u8>> { files.iter().map(|f| std::fs::read(f).unwrap()).collect() };
    let before = contents();
    let child = render("1,2", "40", "600")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = child.wait_with_output().unwrap();
    let after = contents();
    let all_new = after.iter().zip(&before).all(|(a, b)| a != b);
    if std::os::unix::process::ExitStatusExt::signal(&done.status) == Some(libc::SIGINT) {
        // On a loaded machine the signal can come before the handler is installed.
        assert!(
            after == before,
            "a render ended by the signal changed its outputs"
        );
    } else if done.status.code() == Some(130) {
        // Stopped before its outputs were placed, or (the signal late) just after.
        assert!(
            after == before || all_new,
            "an interrupted render mixed old and new outputs"
        );
    } else {
        // It finished before the signal: every file is the new request's.
        assert!(done.status.success(), "{}", text(&done));
        assert!(all_new, "a finished render left an old file");
    }
    // The folders an interrupted render made for its output go with it.
    let nested = dir.path().join("new").join("deep").join("w.png");
    let child = pgan()
        .arg("render")
        .arg(&run)
        .arg("--out")
        .arg(&nested)
        .args(["--seeds", "1,2", "--interpolate", "40", "--cell-px", "600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let done = child.wait_with_output().unwrap();
    // Ended by the signal itself (it came before the handler): nothing was made yet.
    let by_signal =
        std::os::unix::process::ExitStatusExt::signal(&done.status) == Some(libc::SIGINT);
    if done.status.code() == Some(130) || by_signal {
        assert!(
            !dir.path().join("new").exists(),
            "the interrupted render left its folders"
        );
    } else {
        assert!(nested.is_file(), "{}", text(&done));
    }
}

/// A run whose config.toml is gone: eval says that, not that the config names no dataset.
#[test]
fn eval_of_a_run_without_its_config_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let (_, run) = train_tiny(&config, &data, &dir.path().join("runs"), &[]);
    std::fs::remove_file(run.join("config.toml")).unwrap();
    let out = run_ok(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "4", "--pairs", "2"]),
    );
    assert!(
        out.contains("has no config.toml") && out.contains("swd: no dataset to compare with"),
        "{out}"
    );
    // A pair list past the memory is refused before any image is generated (it aborted): the
    // 300,000 images fit (under 1 GB at 16x16), their 4.5e10 pairs (2 TB) do not.
    let out =
        run_err(
            pgan()
                .arg("eval")
                .arg(&run)
                .args(["--num", "300000", "--pairs", "44999850000"]),
        );
    assert!(
        out.contains("--num 300000 --pairs 44999850000:")
            && out.contains("the MS-SSIM pair list in memory")
            && !out.contains("generating"),
        "{out}"
    );
    // With --data it measures.
    let out = run_ok(
        pgan()
            .arg("eval")
            .arg(&run)
            .args(["--num", "4", "--pairs", "2", "--data"])
            .arg(&data),
    );
    assert!(!out.contains("not measured: swd"), "{out}");
}

/// What a hostile run of the CLI found, refused or said: a user's file where an output goes, a
/// stop or total that trains nothing, flags the run would not use, a name that is empty, a run
/// that ends below its model's resolution, and checkpoint entries that are not what their names
/// say (a folder copied in under a later name, a file).
#[test]
fn files_values_and_checkpoint_entries_a_user_got_wrong_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (data, config) = tiny_dataset_and_config(dir.path());
    let runs = dir.path().join("runs");
    let (_, run) = train_tiny(&config, &data, &runs, &["--stop-after-kimg", "0.032"]);

    // A user's file is replaced only with --force.
    let notes = dir.path().join("notes.png");
    std::fs::write(&notes, b"mine").unwrap();
    for command in ["render", "report"] {
        let err = run_err(pgan().arg(command).arg(&run).arg("--out").arg(&notes));
        assert!(
            err.contains("already exists; pass --force to replace it"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&notes).unwrap(), b"mine");
    // Multi-machine settings on a one-machine run are refused, not recorded and ignored.
    for flag in [
        ["--orchestrator", "10.0.0.1:9000"],
        ["--node-address", "10.0.0.2:9001"],
        ["--join-timeout", "5"],
        ["--peer-timeout", "5"],
    ] {
        let err = run_err(
            pgan()
                .args(["train", "--dry-run", "--config"])
                .arg(&config)
                .arg("--data")
                .arg(&data)
                .args(flag),
        );
        assert!(
            err.contains(&format!("{} sets up a run on several machines", flag[0])),
            "{err}"
        );
    }
    // A command that fails after readying its output leaves none of the folders it made for it.
    let typo = dir.path().join("typo");
    let err = run_err(pgan().arg("report").arg(typo.join("run")));
    assert!(
        err.contains("run directory") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!typo.exists(), "the report made the missing run's folder");
    let broken = dir.path().join("broken-ckpt");
    let newest = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    std::fs::create_dir(&broken).unwrap();
    for entry in std::fs::read_dir(&newest).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), broken.join(entry.file_name())).unwrap();
    }
    std::fs::write(broken.join("generator_ema.mpk"), b"bitrot").unwrap();
    let nested = dir.path().join("new").join("a").join("g.safetensors");
    let err = run_err(pgan().arg("export").arg(&broken).arg("--out").arg(&nested));
    assert!(err.contains("generator_ema.mpk is corrupt"), "{err}");
    assert!(
        !dir.path().join("new").exists(),
        "export left the folders it made"
    );
    run_ok(
        pgan()
            .arg("render")
            .arg(&run)
            .arg("--out")
            .arg(&notes)
            .arg("--force"),
    );
    assert!(std::fs::read(&notes).unwrap().starts_with(b"\x89PNG"));
    // The run's own report.html is replaced without --force, but not through a link to a file
    // of the run or a dataset (not even with it), and neither a link to another file nor a file
    // pgan did not write is replaced without it.
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    for target in [run.join("metrics.jsonl"), data.clone()] {
        std::os::unix::fs::symlink(&target, run.join("report.html")).unwrap();
        for force in [false, true] {
            let err = run_err(
                pgan()
                    .arg("report")
                    .arg(&run)
                    .args(force.then_some("--force")),
            );
            assert!(err.contains("the run's report.html"), "{err}");
        }
        std::fs::remove_file(run.join("report.html")).unwrap();
    }
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics);
    run_ok(pgan().arg("verify").arg(&data));
    std::os::unix::fs::symlink(&notes, run.join("report.html")).unwrap();
    let err = run_err(pgan().arg("report").arg(&run));
    assert!(
        err.contains("the run's report.html is a link (to ")
            && err.contains("pass --force to write through it, or --out to write elsewhere"),
        "{err}"
    );
    std::fs::remove_file(run.join("report.html")).unwrap();
    std::fs::write(run.join("report.html"), b"my own notes").unwrap();
    let err = run_err(pgan().arg("report").arg(&run));
    assert!(
        err.contains("holds something other than a pgan report"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(run.join("report.html")).unwrap(),
        b"my own notes"
    );
    run_ok(pgan().arg("report").arg(&run).arg("--force"));
    // Now the run's own report: replaced without --force.
    run_ok(pgan().arg("report").arg(&run));
    assert!(pgan_report::is_pgan_report(&run.join("report.html")));
    std::fs::remove_file(run.join("report.html")).unwrap();
    // A folder there is said to be one: no --force replaces it, so none is suggested.
    std::fs::create_dir(run.join("report.html")).unwrap();
    for force in [&[][..], &["--force"][..]] {
        let err = run_err(pgan().arg("report").arg(&run).args(force));
        assert!(
            err.contains("is a folder, not a regular file") && !err.contains("pass --force"),
            "{err}"
        );
    }
    std::fs::remove_dir(run.join("report.html")).unwrap();

    // A stop at or before the resumed position, a total of less than one image.
    let err = run_err(&mut resume_cmd(&run, &["--stop-after-kimg", "0.016"]));
    assert!(
        err.contains("--stop-after-kimg 0.016 is not beyond") && err.contains("not an amount more"),
        "{err}"
    );
    for (extra, said) in [
        (
            &["--total-kimg", "0.0004"][..],
            "schedule.total_kimg 0.0004 is less than one image (0.001 kimg)",
        ),
        (&["--desc", " "][..], "run.desc is empty"),
        (
            &["--desc", &"x".repeat(241)][..],
            "run.desc is 241 characters: a run folder's name takes at most 240",
        ),
        (
            &["--minibatch", "none", "--mbstd-group", "4"][..],
            "--mbstd-group sizes the minibatch-stddev layer, and the minibatch layer is none",
        ),
        (
            &["--instance-noise-kimg", "2"][..],
            "--instance-noise-kimg anneals the instance noise, and its sigma is 0",
        ),
        // A value refused by the checks names the flag that set it.
        (
            &["--batch", "5000"][..],
            "schedule.minibatch_default 5000 must be in 1..=4096 (set by --batch)",
        ),
    ] {
        let err = run_err(&mut train_cmd(&config, &data, &runs, extra));
        assert!(err.contains(said), "{extra:?}: {err}");
    }
    // The run's own config.toml is named when a resume's value is refused.
    let run_config = run.join("config.toml");
    let text = std::fs::read_to_string(&run_config).unwrap();
    std::fs::write(
        &run_config,
        text.replace("tick_kimg = 0.016", "tick_kimg = -1.0"),
    )
    .unwrap();
    let err = run_err(&mut resume_cmd(&run, &[]));
    assert!(
        err.contains(&format!(
            "invalid config {}: run.tick_kimg -1",
            run_config.display()
        )),
        "{err}"
    );
    std::fs::write(&run_config, text).unwrap();

    // A run that ends before its last stage has grown says so (dry run and log).
    let out = run_ok(&mut train_cmd(
        &config,
        &data,
        &runs,
        &["--total-kimg", "0.02", "--dry-run"],
    ));
    assert!(
        out.contains(
            "warning: schedule.total_kimg 0.02 ends the run mid-way through the \
                      fade-in to 8x8, before the 16x16 network"
        ),
        "{out}"
    );

    // A checkpoint folder copied in under a later name, and a file named as a checkpoint: both
    // passed over with a word, and the run goes on from its real newest checkpoint.
    let ckpts = checkpoints(&run);
    let newest = ckpts.last().unwrap().clone();
    let copied = run.join("checkpoints/ckpt-000000009999");
    run_ok(Command::new("cp").arg("-a").arg(&ckpts[0]).arg(&copied));
    std::fs::write(run.join("checkpoints/ckpt-000000099999"), b"not a folder").unwrap();
    let out = run_ok(
        pgan()
            .arg("export")
            .arg(&run)
            .arg("--out")
            .arg(dir.path().join("g.safetensors")),
    );
    assert!(
        out.contains(&format!(
            "{}: is named for 9999 images shown, but its state.json is at",
            copied.display()
        )) && out.contains("ckpt-000000099999: is a regular file, not a checkpoint folder")
            && out.contains(&format!("from {}", newest.display())),
        "{out}"
    );
}

/// From a hostile review of `eval`'s feature metrics: `--save-features` beside a checkpoint is
/// refused (it wrote nothing); two outputs in one file, an output inside an image folder being
/// read, and the weights found through $PGAN_INCEPTION are refused as outputs; an image 30
/// million pixels wide and one high is measured (its resize once asked for a 36 GB matrix).
#[test]
fn eval_outputs_never_replace_inputs_and_odd_images_are_measured() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("inception.safetensors");
    pgan_inception::InceptionWeights::synthetic(3)
        .save(&weights, "test stand-in")
        .unwrap();
    let reals = ramp_folder(dir.path(), "reals", 4, 0);
    let fakes = ramp_folder(dir.path(), "fakes", 3, 2);
    image::GrayImage::new(30_000_000, 1)
        .save(fakes.join("wide.png"))
        .unwrap();
    let eval = |extra: &[&str]| {
        let mut cmd = pgan();
        cmd.args(["eval", "--fid", "--real"])
            .arg(&reals)
            .arg("--fake")
            .arg(&fakes)
            .env("PGAN_INCEPTION", &weights)
            .args(extra);
        cmd
    };
    let out = run_ok(&mut eval(&[]));
    assert!(out.contains("4 generated") && out.contains("FID"), "{out}");

    let err = run_err(
        pgan()
            .args(["eval", "no-such-run", "--fid", "--save-features"])
            .arg(dir.path().join("f")),
    );
    assert!(
        err.contains("--save-features") && err.contains("--fake"),
        "{err}"
    );
    let prefix = dir.path().join("w");
    let clash = dir.path().join("w-fake.npy");
    let err = run_err(
        eval(&["--save-features", prefix.to_str().unwrap()])
            .arg("--json")
            .arg(&clash),
    );
    assert!(err.contains("also --json's output"), "{err}");
    let err = run_err(eval(&["--force", "--json"]).arg(fakes.join("00.png")));
    assert!(err.contains("an image inside --fake"), "{err}");
    // Beside the images, a file no walk reads as one is fine.
    run_ok(eval(&["--json"]).arg(fakes.join("fid.json")));
    let err = run_err(eval(&["--force", "--json"]).arg(&weights));
    assert!(err.contains("that is the Inception weights"), "{err}");
    // One image is not a set: said naming the flag, before any warning about it.
    let err = run_err(
        pgan()
            .args(["eval", "--fid", "--real"])
            .arg(reals.join("00.png"))
            .arg("--fake")
            .arg(&fakes)
            .env("PGAN_INCEPTION", &weights),
    );
    assert!(
        err.contains("--real")
            && err.contains("a single image; give a folder of images")
            && !err.contains("warning"),
        "{err}"
    );
    assert!(pgan_inception::InceptionWeights::load(&weights).is_ok());

    // A dataset file's feature cache, which the command writes before its report, is not an
    // output either; and a dataset whose path is not UTF-8 still gets its JSON report (the path
    // escaped), not an error after the measuring.
    use std::os::unix::ffi::OsStrExt;
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"r\xff.pgan"));
    prepare_quietly(&reals, &odd, 16);
    let compare = |json: &Path| {
        let mut cmd = pgan();
        cmd.args(["eval", "--fid", "--real"])
            .arg(&odd)
            .arg("--fake")
            .arg(&fakes)
            .env("PGAN_INCEPTION", &weights)
            .arg("--json")
            .arg(json);
        cmd
    };
    let cache = pgan_train::inception_metrics::cache_path(&odd, 16);
    let err = run_err(compare(&cache).arg("--force"));
    assert!(
        err.contains("that is the dataset's Inception feature cache"),
        "{err}"
    );
    let json = dir.path().join("odd.json");
    run_ok(&mut compare(&json));
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(report.contains(r#"r\\xFF.pgan""#), "{report}");
}
