//! The resolution schedule as pure functions of the number of images shown.
//!
//! Follows `TrainingSchedule` in the official ProGAN code (tkarras/progressive_growing_of_gans,
//! `train.py`): every resolution is first stabilized for `lod_training_kimg`, then the next
//! resolution is faded in over `lod_transition_kimg`, alpha rising linearly with images shown.
//! Training starts at `start_resolution` and, once the maximum resolution is stable, stays there
//! until `total_kimg`.

use serde::{Deserialize, Serialize};

use crate::config::ScheduleConfig;

/// Whether the current stage is being faded in or trained at full strength.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseKind {
    /// The newest block is blended in with weight `alpha` < 1.
    Fade,
    /// The newest block is fully in use (`alpha` = 1).
    Stable,
}

impl std::fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PhaseKind::Fade => "fade",
            PhaseKind::Stable => "stable",
        })
    }
}

/// Where training stands at a given number of images shown.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Network stage: 0 is 4x4, stage `s` is `4 * 2^s`.
    pub stage: usize,
    /// Resolution of the reals and of the generator output (`4 * 2^stage`).
    pub resolution: u32,
    /// Fade-in weight of the newest block, in `[0, 1]`.
    pub alpha: f32,
    /// Fade-in or stable.
    pub kind: PhaseKind,
    /// Index of the phase (each fade and each stable period is one phase).
    pub index: usize,
    /// Minibatch size at this resolution.
    pub batch: usize,
    /// Learning rate at this resolution (G and D).
    pub lr: f64,
}

/// One row of the resolved schedule, for `--dry-run` and the log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleRow {
    /// Phase kind.
    pub kind: PhaseKind,
    /// Network stage.
    pub stage: usize,
    /// Resolution trained at.
    pub resolution: u32,
    /// First kimg of the phase.
    pub start_kimg: f64,
    /// Last kimg of the phase (exclusive).
    pub end_kimg: f64,
    /// Minibatch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
}

/// The stage schedule of a run: maps images shown to stage, alpha, batch and learning rate.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSchedule {
    config: ScheduleConfig,
    start_stage: usize,
    max_stage: usize,
}

impl StageSchedule {
    /// Schedule from `start_resolution` up to `max_resolution` (both powers of two, validated by
    /// the config).
    pub fn new(config: ScheduleConfig, max_resolution: u32) -> Self {
        let start_stage = stage_of(config.start_resolution);
        let max_stage = stage_of(max_resolution);
        Self {
            config,
            start_stage,
            max_stage,
        }
    }

    /// The highest stage this schedule grows to.
    pub fn max_stage(&self) -> usize {
        self.max_stage
    }

    /// The schedule's configuration.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// Total length of the run in kimg.
    pub fn total_kimg(&self) -> f64 {
        self.config.total_kimg
    }

    /// The phase after `images_shown` real images have gone through the discriminator.
    pub fn at(&self, images_shown: u64) -> Phase {
        let kimg = images_shown as f64 / 1000.0;
        let train = self.config.lod_training_kimg;
        let fade = self.config.lod_transition_kimg;
        let period = train + fade;
        let growth_steps = self.max_stage - self.start_stage;

        // Which stabilize+fade period are we in, and how far into it.
        let period_index = if period > 0.0 {
            (kimg / period).floor() as usize
        } else {
            growth_steps
        };
        let into = kimg - period_index as f64 * period;

        let (stage, alpha, kind, index) = if period_index >= growth_steps {
            (self.max_stage, 1.0, PhaseKind::Stable, 2 * growth_steps)
        } else if into < train || fade <= 0.0 {
            (
                self.start_stage + period_index,
                1.0,
                PhaseKind::Stable,
                2 * period_index,
            )
        } else {
            let alpha = ((into - train) / fade).clamp(0.0, 1.0) as f32;
            (
                self.start_stage + period_index + 1,
                alpha,
                PhaseKind::Fade,
                2 * period_index + 1,
            )
        };
        let resolution = resolution_of(stage);
        Phase {
            stage,
            resolution,
            alpha,
            kind,
            index,
            batch: self.config.batch_for(resolution),
            lr: self.config.lr_for(resolution),
        }
    }

    /// The kimg at which `phase` began (a stable period first, then each fade-in).
    pub fn phase_start_kimg(&self, phase: &Phase) -> f64 {
        let train = self.config.lod_training_kimg;
        let period = train + self.config.lod_transition_kimg;
        let start = (phase.index / 2) as f64 * period;
        match phase.kind {
            PhaseKind::Fade => start + train,
            PhaseKind::Stable => start,
        }
    }

    /// The minibatch of the phase with index `index` (that of its resolution).
    pub fn batch_of_phase(&self, index: usize) -> usize {
        // Phase 0 is the start stage's stable one; each later stage has a fade (odd index)
        // and a stable phase (even index).
        let stage = (self.start_stage + index.div_ceil(2)).min(self.max_stage);
        self.config.batch_for(resolution_of(stage))
    }

    /// The kimg at which `stage` is fully grown: its fade-in has ended (0 for the start stage).
    pub fn grown_at_kimg(&self, stage: usize) -> f64 {
        let period = self.config.lod_training_kimg + self.config.lod_transition_kimg;
        stage.saturating_sub(self.start_stage) as f64 * period
    }

    /// The images shown when a run of this schedule ends: the loop takes whole steps of
    /// `batch x d_steps` images until `total_kimg` is reached, so the last one may pass it.
    /// `None` when that takes more steps than are worth counting here.
    pub fn images_at_end(&self, d_steps: u32) -> Option<u64> {
        let total = (self.config.total_kimg * 1000.0).round() as u64;
        let mut images = 0u64;
        for _ in 0..50_000_000u64 {
            if images >= total {
                return Some(images);
            }
            images += self.at(images).batch as u64 * u64::from(d_steps.max(1));
        }
        None
    }

    /// Said when the run ends before its last stage has faded in: its checkpoints, samples and
    /// evaluations are then of a lower resolution than `model.resolution`.
    pub fn ends_short_of_the_model(&self) -> Option<String> {
        let grown = self.grown_at_kimg(self.max_stage);
        let total = self.config.total_kimg;
        if total >= grown - 1e-9 {
            return None;
        }
        let end = self.at((total * 1000.0).round() as u64);
        let top = resolution_of(self.max_stage);
        let reached = if end.kind == PhaseKind::Fade {
            format!("mid-way through the fade-in to {0}x{0}", end.resolution)
        } else {
            format!("at {0}x{0}", end.resolution)
        };
        Some(format!(
            "schedule.total_kimg {total} ends the run {reached}, before the {top}x{top} network \
             (model.resolution) is fully grown: its last checkpoint, samples and evaluations are \
             not of it; it is fully faded in at {grown} kimg"
        ))
    }

    /// Every phase of the run in order, with its kimg range.
    pub fn rows(&self) -> Vec<ScheduleRow> {
        let train = self.config.lod_training_kimg;
        let fade = self.config.lod_transition_kimg;
        let total = self.config.total_kimg;
        let mut rows = Vec::new();
        let mut start = 0.0;
        for stage in self.start_stage..=self.max_stage {
            if stage > self.start_stage && fade > 0.0 {
                rows.push(self.row(PhaseKind::Fade, stage, start, start + fade));
                start += fade;
            }
            let end = if stage == self.max_stage {
                total.max(start)
            } else {
                start + train
            };
            rows.push(self.row(PhaseKind::Stable, stage, start, end));
            start = end;
        }
        rows.retain(|r| r.start_kimg < total || r.start_kimg == 0.0);
        if let Some(last) = rows.last_mut() {
            last.end_kimg = last.end_kimg.min(total).max(last.start_kimg);
        }
        rows
    }

    fn row(&self, kind: PhaseKind, stage: usize, start: f64, end: f64) -> ScheduleRow {
        let resolution = resolution_of(stage);
        ScheduleRow {
            kind,
            stage,
            resolution,
            start_kimg: start,
            end_kimg: end,
            batch: self.config.batch_for(resolution),
            lr: self.config.lr_for(resolution),
        }
    }
}

/// Stage index of a power-of-two resolution (4 → 0, 8 → 1, ...).
pub fn stage_of(resolution: u32) -> usize {
    (resolution.max(4).trailing_zeros() - 2) as usize
}

/// Resolution of a stage (0 → 4, 1 → 8, ...).
pub fn resolution_of(stage: usize) -> u32 {
    4u32 << stage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(train: f64, fade: f64, max_res: u32) -> StageSchedule {
        let config = ScheduleConfig {
            lod_training_kimg: train,
            lod_transition_kimg: fade,
            total_kimg: 100.0,
            ..ScheduleConfig::default()
        };
        StageSchedule::new(config, max_res)
    }

    #[test]
    fn stabilizes_then_fades_like_the_official_schedule() {
        let s = schedule(10.0, 10.0, 32);
        let p = s.at(0);
        assert_eq!(
            (p.stage, p.resolution, p.kind, p.alpha),
            (0, 4, PhaseKind::Stable, 1.0)
        );
        let p = s.at(9_999);
        assert_eq!((p.stage, p.kind), (0, PhaseKind::Stable));
        let p = s.at(10_000);
        assert_eq!(
            (p.stage, p.resolution, p.kind, p.alpha),
            (1, 8, PhaseKind::Fade, 0.0)
        );
        let p = s.at(15_000);
        assert_eq!((p.stage, p.kind), (1, PhaseKind::Fade));
        assert!((p.alpha - 0.5).abs() < 1e-6);
        let p = s.at(20_000);
        assert_eq!((p.stage, p.kind, p.alpha), (1, PhaseKind::Stable, 1.0));
        // 32x32 is stage 3: reached after three fades, then stable forever.
        let p = s.at(55_000);
        assert_eq!((p.stage, p.resolution, p.kind), (3, 32, PhaseKind::Fade));
        let p = s.at(60_000);
        assert_eq!((p.stage, p.kind, p.alpha), (3, PhaseKind::Stable, 1.0));
        let p = s.at(1_000_000);
        assert_eq!((p.stage, p.kind, p.alpha), (3, PhaseKind::Stable, 1.0));
    }

    #[test]
    fn alpha_rises_monotonically_during_a_fade() {
        let s = schedule(2.0, 4.0, 16);
        let mut last = -1.0;
        for n in (2_000..6_000).step_by(100) {
            let p = s.at(n);
            assert_eq!(p.kind, PhaseKind::Fade);
            assert!(p.alpha >= last);
            last = p.alpha;
        }
    }

    #[test]
    fn each_phase_starts_where_the_resolved_schedule_says() {
        let s = schedule(3.0, 2.0, 32);
        for row in s.rows() {
            for kimg in [row.start_kimg, (row.start_kimg + row.end_kimg) / 2.0] {
                let phase = s.at((kimg * 1000.0).round() as u64);
                assert_eq!((phase.kind, phase.stage), (row.kind, row.stage), "{kimg}");
                assert_eq!(s.phase_start_kimg(&phase), row.start_kimg, "{kimg}");
            }
        }
    }

    #[test]
    fn phase_index_counts_fades_and_stables() {
        let s = schedule(1.0, 1.0, 16);
        let indices: Vec<usize> = (0..6).map(|k| s.at(k * 1000 + 500).index).collect();
        assert_eq!(indices, vec![0, 1, 2, 3, 4, 4]);
    }

    #[test]
    fn each_phase_has_its_resolutions_minibatch() {
        let mut config = ScheduleConfig::default();
        config.minibatch.insert("4".into(), 16);
        config.minibatch.insert("8".into(), 8);
        config.minibatch.insert("16".into(), 4);
        config.lod_training_kimg = 1.0;
        config.lod_transition_kimg = 1.0;
        config.total_kimg = 6.0;
        let s = StageSchedule::new(config, 16);
        for images in (0..6_000).step_by(250) {
            let p = s.at(images);
            assert_eq!(s.batch_of_phase(p.index), p.batch, "at {images}: {p:?}");
        }
    }

    #[test]
    fn batch_and_lr_follow_the_resolution_tables() {
        let mut config = ScheduleConfig::default();
        config.minibatch.insert("4".into(), 128);
        config.minibatch.insert("8".into(), 64);
        config.lr.insert("8".into(), 0.002);
        config.lod_training_kimg = 1.0;
        config.lod_transition_kimg = 1.0;
        let s = StageSchedule::new(config.clone(), 16);
        assert_eq!(s.at(0).batch, 128);
        // During the fade into 8x8 the batch already comes from 8x8.
        assert_eq!(s.at(1_500).batch, 64);
        assert_eq!(s.at(1_500).lr, 0.002);
        assert_eq!(s.at(0).lr, config.lr_default);
        assert_eq!(s.at(10_000).batch, config.minibatch_default);
    }

    #[test]
    fn rows_cover_the_run_without_gaps() {
        let s = schedule(10.0, 5.0, 32);
        let rows = s.rows();
        let kinds: Vec<(PhaseKind, u32)> = rows.iter().map(|r| (r.kind, r.resolution)).collect();
        assert_eq!(
            kinds,
            vec![
                (PhaseKind::Stable, 4),
                (PhaseKind::Fade, 8),
                (PhaseKind::Stable, 8),
                (PhaseKind::Fade, 16),
                (PhaseKind::Stable, 16),
                (PhaseKind::Fade, 32),
                (PhaseKind::Stable, 32),
            ]
        );
        for pair in rows.windows(2) {
            assert_eq!(pair[0].end_kimg, pair[1].start_kimg);
        }
        assert_eq!(rows.last().unwrap().end_kimg, 100.0);
        // Each row agrees with the point-wise schedule at its midpoint.
        for r in &rows {
            let mid = ((r.start_kimg + r.end_kimg) / 2.0 * 1000.0) as u64;
            let p = s.at(mid);
            assert_eq!((p.kind, p.resolution), (r.kind, r.resolution));
        }
    }

    #[test]
    fn a_start_resolution_above_4_skips_the_small_stages() {
        let config = ScheduleConfig {
            start_resolution: 16,
            lod_training_kimg: 1.0,
            lod_transition_kimg: 1.0,
            ..ScheduleConfig::default()
        };
        let s = StageSchedule::new(config, 32);
        assert_eq!(s.at(0).resolution, 16);
        assert_eq!(s.at(1_500).resolution, 32);
        assert_eq!(s.at(1_500).kind, PhaseKind::Fade);
    }

    #[test]
    fn a_stage_is_grown_where_the_schedule_says_its_fade_in_ends() {
        let s = schedule(600.0, 300.0, 64);
        assert_eq!(s.grown_at_kimg(0), 0.0);
        for stage in 1..=s.max_stage() {
            let grown = s.grown_at_kimg(stage);
            let just_before = s.at((grown * 1000.0) as u64 - 1);
            assert_eq!(
                (just_before.stage, just_before.kind),
                (stage, PhaseKind::Fade)
            );
            let at = s.at((grown * 1000.0) as u64);
            assert_eq!(
                (at.stage, at.kind, at.alpha),
                (stage, PhaseKind::Stable, 1.0)
            );
        }
        let late_start = StageSchedule::new(
            ScheduleConfig {
                start_resolution: 16,
                ..s.config().clone()
            },
            64,
        );
        assert_eq!(late_start.grown_at_kimg(2), 0.0);
        assert_eq!(late_start.grown_at_kimg(3), 900.0);
    }

    #[test]
    fn stage_and_resolution_are_inverse() {
        for stage in 0..9 {
            assert_eq!(stage_of(resolution_of(stage)), stage);
        }
    }
}
