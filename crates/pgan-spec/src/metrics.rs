//! The keys of `metrics.jsonl`: one flat JSON object per line, written by the trainer
//! (`pgan-train`) at the end of every tick and read by the report (`pgan-report`).
//!
//! Values reported during a tick are averaged over it; names follow stylegan2's slash keys
//! (`Loss/D`, `Loss/G/reg`). The groups at the bottom say when each key is written, and both
//! sides test against them: the trainer's runs write exactly these keys, and every series the
//! report charts is one of them.

/// The metrics file inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// The longest `metrics.jsonl` read: a run writes a row of about 2 KB per tick, so ten million
/// ticks stay below it; a runaway file is refused before it is read (and a sparse one, whose
/// holes no writer of rows leaves, by the readers' own check).
pub const MAX_METRICS_BYTES: u64 = 32 << 30;

/// Ticks completed.
pub const TICK: &str = "tick";
/// Thousands of real images shown to D (the x axis of every chart).
pub const KIMG: &str = "kimg";
/// Network stage (0 is 4x4).
pub const STAGE: &str = "stage";
/// Output resolution of the stage.
pub const RESOLUTION: &str = "resolution";
/// `fade` or `stable`.
pub const PHASE: &str = "phase";
/// kimg at which the tick's phase began, from the schedule: the report draws the phases from
/// it (a tick that crossed into a phase is labelled with it, and began before it).
pub const PHASE_START_KIMG: &str = "phase_start_kimg";
/// Fade-in weight of the newest block (1 when stable).
pub const ALPHA: &str = "alpha";
/// Minibatch size.
pub const BATCH: &str = "batch";
/// Generator learning rate: the schedule's (after a rollback's reduction) times
/// `optim.lr_g_mult`.
pub const LR_G: &str = "lr_g";
/// Discriminator learning rate: the schedule's (after a rollback's reduction) times
/// `optim.lr_d_mult`.
pub const LR_D: &str = "lr_d";
/// Training seconds over all sessions of the run.
pub const TIME_S: &str = "time_s";

/// Discriminator loss, penalty and drift included.
pub const LOSS_D: &str = "Loss/D";
/// Generator loss, the feature-matching term included.
pub const LOSS_G: &str = "Loss/G";
/// Gradient penalty term of the D loss (WGAN-GP or R1), weighted.
pub const LOSS_D_PENALTY: &str = "Loss/D/penalty";
/// Drift term of the D loss (WGAN-GP's ε·D(x)²), weighted.
pub const LOSS_D_DRIFT: &str = "Loss/D/drift";
/// Feature-matching term of the G loss (`loss.feature_matching`, Salimans et al. 2016),
/// weighted; 0 when it is off.
pub const LOSS_G_FEATURE_MATCHING: &str = "Loss/G/feature_matching";
/// Norm of D's input gradient that the penalty is taken on.
pub const PENALTY_GRAD_NORM: &str = "Penalty/grad_norm";
/// Mean D score of reals.
pub const D_REAL: &str = "D/real";
/// Mean D score of fakes.
pub const D_FAKE: &str = "D/fake";
/// L2 norm of D's parameter gradients.
pub const GRAD_D_NORM: &str = "Grad/D/norm";
/// L2 norm of G's parameter gradients.
pub const GRAD_G_NORM: &str = "Grad/G/norm";
/// Images per second over the tick.
pub const IMG_PER_S: &str = "Speed/img_per_s";
/// Seconds per 1000 images over the tick.
pub const SEC_PER_KIMG: &str = "Speed/sec_per_kimg";
/// Peers training data-parallel (`run.devices`, times the nodes).
pub const PEERS: &str = "Peers/count";
/// Seconds per step on a peer, mean over the tick and the peers.
pub const PEER_STEP_S: &str = "Peers/step_s";
/// Seconds per step on the slowest peer of each step, mean over the tick.
pub const PEER_STEP_S_SLOWEST: &str = "Peers/step_s_slowest";
/// Seconds per step a peer spent in the gradient all-reduce, mean over the tick and the peers.
pub const PEER_ALLREDUCE_S: &str = "Peers/allreduce_s";
/// Peak resident memory of the training process, MiB (Linux).
pub const PEAK_RSS_MB: &str = "Mem/peak_rss_mb";
/// GPU pool memory in use at the tick end, MiB.
pub const DEVICE_IN_USE_MB: &str = "Mem/device_in_use_mb";
/// GPU pool memory reserved at the tick end, MiB.
pub const DEVICE_RESERVED_MB: &str = "Mem/device_reserved_mb";
/// Most GPU pool memory reserved at any tick end of this process, MiB.
pub const DEVICE_PEAK_RESERVED_MB: &str = "Mem/device_peak_reserved_mb";
/// Mean sliced Wasserstein distance (x1e3) of generated vs real images.
pub const SWD: &str = "Metrics/swd";
/// Mean MS-SSIM of random generated pairs (higher is less diverse).
pub const MSSSIM_FAKE: &str = "Metrics/msssim_fake";
/// Mean MS-SSIM of random real pairs (the reference).
pub const MSSSIM_REAL: &str = "Metrics/msssim_real";
/// Fréchet Inception Distance of `eval.fid_num` generated images against every real image of
/// the current resolution.
pub const FID: &str = "Metrics/fid";
/// Alarms raised at this tick.
pub const ALARM_COUNT: &str = "Alarm/count";
/// Set on the row written when the run rolled back to a checkpoint: the failure's number in a row.
pub const ROLLBACK: &str = "Event/rollback";

/// Written on every tick row.
pub const EVERY_TICK: &[&str] = &[
    TICK,
    KIMG,
    STAGE,
    RESOLUTION,
    PHASE,
    PHASE_START_KIMG,
    ALPHA,
    BATCH,
    LR_G,
    LR_D,
    TIME_S,
    LOSS_D,
    LOSS_G,
    LOSS_D_PENALTY,
    LOSS_D_DRIFT,
    LOSS_G_FEATURE_MATCHING,
    PENALTY_GRAD_NORM,
    D_REAL,
    D_FAKE,
    GRAD_D_NORM,
    GRAD_G_NORM,
    IMG_PER_S,
    SEC_PER_KIMG,
];
/// Written on tick rows where the platform tells (Linux).
pub const WHEN_KNOWN: &[&str] = &[PEAK_RSS_MB];
/// Written on tick rows of GPU runs.
pub const ON_GPU: &[&str] = &[
    DEVICE_IN_USE_MB,
    DEVICE_RESERVED_MB,
    DEVICE_PEAK_RESERVED_MB,
];
/// Written on tick rows of data-parallel runs (more than one peer).
pub const ON_PEERS: &[&str] = &[PEERS, PEER_STEP_S, PEER_STEP_S_SLOWEST, PEER_ALLREDUCE_S];
/// Written on tick rows with an evaluation (`eval.every_kimg`): SWD from 16x16, MS-SSIM from
/// the metric's smallest size.
pub const ON_EVAL: &[&str] = &[SWD, MSSSIM_FAKE, MSSSIM_REAL];
/// Written on tick rows with a FID (`eval.fid_every_kimg`).
pub const ON_FID: &[&str] = &[FID];
/// Written on tick rows that raised alarms.
pub const ON_ALARM: &[&str] = &[ALARM_COUNT];
/// The row written at a rollback: [`KIMG`] (where the run went back to) and [`ROLLBACK`].
pub const ON_ROLLBACK: &[&str] = &[KIMG, ROLLBACK];

/// Every group above: together, every key the trainer writes.
pub const GROUPS: &[&[&str]] = &[
    EVERY_TICK,
    WHEN_KNOWN,
    ON_GPU,
    ON_PEERS,
    ON_EVAL,
    ON_FID,
    ON_ALARM,
    ON_ROLLBACK,
];

/// Whether the trainer writes `key` (in one of the [`GROUPS`]).
pub fn is_written(key: &str) -> bool {
    GROUPS.iter().any(|group| group.contains(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_in_one_group_except_kimg_in_the_rollback_row() {
        let mut all: Vec<&str> = GROUPS.concat();
        all.sort_unstable();
        let len = all.len();
        all.dedup();
        assert_eq!(all.len(), len - 1, "only KIMG is listed twice");
        assert!(
            is_written(ROLLBACK)
                && is_written(SWD)
                && is_written(FID)
                && !is_written("Metrics/swd_real")
        );
    }
}
