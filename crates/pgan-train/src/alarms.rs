//! Early warnings for the known GAN failure modes, computed from tick averages and evaluations:
//! divergence/imbalance (D(real) − D(fake) exploding), vanishing generator gradients, and mode
//! collapse (generated images more alike than real ones, or SWD jumping up), judged so that the
//! transient loss of diversity after each new resolution does not raise it.

use std::collections::BTreeMap;

use pgan_spec::metrics as key;
use serde::{Deserialize, Serialize};

use crate::config::{AlarmConfig, LossKind};
use crate::eval::EvalReport;
use crate::stats::{Mean, TickStats};

/// Checks tick statistics and evaluations against the configured thresholds.
#[derive(Clone, Debug)]
pub struct Alarms {
    config: AlarmConfig,
    /// The advice a divergence alarm gives: the run's loss's own knob.
    divergence_remedy: &'static str,
    /// What a vanishing-gradient alarm adds for a loss that saturates.
    vanishing_remedy: &'static str,
}

impl Alarms {
    /// Alarms with these thresholds (their advice for WGAN-GP until [`Self::for_loss`]).
    pub fn new(config: AlarmConfig) -> Self {
        Self {
            config,
            divergence_remedy: "",
            vanishing_remedy: "",
        }
        .for_loss(LossKind::WganGp)
    }

    /// The alarms' advice for the run's loss: the penalty a loss has, a penalised loss for one
    /// without.
    pub fn for_loss(mut self, kind: LossKind) -> Self {
        (self.divergence_remedy, self.vanishing_remedy) = match kind {
            LossKind::WganGp => (
                "lower the learning rate or raise the penalty (loss.gp_lambda)",
                "",
            ),
            LossKind::LogisticR1 => (
                "lower the learning rate or raise the penalty (loss.r1_gamma)",
                "",
            ),
            LossKind::NonSaturating => (
                "lower the learning rate (D's alone: optim.lr_d_mult), or train with a \
                 penalised loss (wgan-gp, logistic-r1)",
                "",
            ),
            LossKind::Minimax => (
                "lower the learning rate (D's alone: optim.lr_d_mult), or train with a \
                 penalised loss (wgan-gp, logistic-r1)",
                "; a loss that does not saturate (non-saturating, wgan-gp, logistic-r1) keeps \
                 it learning",
            ),
        };
        self
    }

    /// Warnings raised by one tick's averages; updates `memory`.
    ///
    /// Vanishing gradients are judged two ways: the generator's gradient norm below an absolute
    /// floor (`min_g_grad_norm`), or fallen below `min_g_grad_ratio` of the largest tick average
    /// of this run. The second does not depend on the networks' or the loss's scale: a
    /// saturated loss shrinks the gradient by orders of magnitude from wherever it was, while
    /// healthy runs stay within a small factor of their peak.
    pub fn check_tick(&self, tick: &TickStats, memory: &mut GradientMemory) -> Vec<TickAlarm> {
        let c = &self.config;
        let mut out = Vec::new();
        if let (Some(real), Some(fake)) = (tick.mean(key::D_REAL), tick.mean(key::D_FAKE)) {
            let gap = real - fake;
            if gap > c.max_d_gap {
                out.push(TickAlarm::divergence(format!(
                    "D(real) - D(fake) = {gap:.1} exceeds {}: the discriminator is overpowering \
                     the generator (divergence); {}",
                    c.max_d_gap, self.divergence_remedy
                )));
            } else if gap < -c.max_d_gap {
                out.push(TickAlarm::divergence(format!(
                    "D(real) - D(fake) = {gap:.1} is below -{}: the discriminator scores the \
                     fakes far above the reals (divergence); {}",
                    c.max_d_gap, self.divergence_remedy
                )));
            }
        }
        if let Some(norm) = tick.mean(key::GRAD_G_NORM) {
            let peak = memory.g_norm_peak;
            if norm < c.min_g_grad_norm {
                out.push(TickAlarm::vanishing(format!(
                    "generator gradient norm {norm:.2e} is below {:.0e}: vanishing gradients, \
                     G has stopped learning{}",
                    c.min_g_grad_norm, self.vanishing_remedy
                )));
            } else if let Some(peak) = peak.filter(|&p| norm < p * c.min_g_grad_ratio) {
                out.push(TickAlarm::vanishing(format!(
                    "generator gradient norm {norm:.2e} is {:.0e} of this run's peak {peak:.2e} \
                     (below {}): vanishing gradients, G has stopped learning (D rejects the \
                     fakes so surely that the loss saturates; wgan-gp and logistic-r1 do not)",
                    norm / peak,
                    c.min_g_grad_ratio
                )));
            }
            if norm.is_finite() {
                memory.g_norm_peak = Some(peak.map_or(norm, |p| p.max(norm)));
            }
        }
        out
    }

    /// Warnings raised by an evaluation at `at`; updates `memory`.
    ///
    /// A collapse shows as generated images more alike than real ones (their pairs' MS-SSIM
    /// above the reals') or as SWD jumping up. Three things keep healthy runs quiet:
    /// - evaluations during a fade-in are recorded but not judged: the output is a blend of the
    ///   previous stage's generator and the new one, so its diversity belongs to neither;
    /// - a freshly grown generator loses diversity for a while before it gains it back, so the
    ///   absolute test (`msssim_gap`) waits `collapse_grace_kimg` after the fade-in ends, while
    ///   the relative ones (diversity dropping from this stage's best by `msssim_margin`, SWD
    ///   rising `swd_jump_factor`-fold) need a best to compare with;
    /// - one evaluation's MS-SSIM comes from a few dozen pairs, so the reals' figure is the mean
    ///   over every evaluation at the resolution, and the alarm fires only once
    ///   `collapse_confirm_evals` judged evaluations in a row show a sign.
    pub fn check_eval(
        &self,
        report: &EvalReport,
        at: EvalPoint,
        memory: &mut CollapseMemory,
    ) -> Vec<String> {
        let res = at.resolution;
        if let Some(real) = report.msssim_real {
            memory.real_msssim.entry(res).or_default().add(real);
        }
        if at.fading {
            return Vec::new();
        }
        let c = &self.config;
        let mut signs = Vec::new();
        let real = memory.real_msssim.get(&res).and_then(Mean::value);
        if let (Some(fake), Some(real)) = (report.msssim_fake, real) {
            let best = memory.best_msssim.get(&res).copied();
            match best {
                Some(best) if fake > real + c.msssim_margin && fake > best + c.msssim_margin => {
                    signs.push(format!(
                        "mode collapse suspected: generated pairs' MS-SSIM rose from {best:.3} to \
                         {fake:.3} at {res}x{res}, real pairs {real:.3} (diversity has dropped)"
                    ))
                }
                _ if at.kimg_since_grown >= c.collapse_grace_kimg && fake > real + c.msssim_gap => {
                    signs.push(format!(
                        "mode collapse suspected: generated pairs' MS-SSIM {fake:.3} is more \
                         than {} above real pairs' {real:.3} at {res}x{res}, {:.1} kimg after \
                         its fade-in ended (the generator is not diverse)",
                        c.msssim_gap, at.kimg_since_grown
                    ))
                }
                _ => {}
            }
            memory
                .best_msssim
                .insert(res, best.map_or(fake, |b| b.min(fake)));
        }
        if let Some(swd) = report.swd_mean {
            let best = memory.best_swd.get(&res).copied();
            if let Some(best) = best.filter(|&b| swd > b * c.swd_jump_factor) {
                signs.push(format!(
                    "SWD jumped to {swd:.2} from a best of {best:.2} at {res}x{res}: quality is \
                     collapsing"
                ));
            }
            memory
                .best_swd
                .insert(res, best.map_or(swd, |b| b.min(swd)));
        }
        let streak = memory.suspect_evals.entry(res).or_insert(0);
        *streak = if signs.is_empty() { 0 } else { *streak + 1 };
        if *streak < c.collapse_confirm_evals {
            return Vec::new();
        }
        let streak = *streak;
        signs
            .into_iter()
            .map(|sign| format!("{sign} [{streak} evaluations in a row]"))
            .collect()
    }
}

/// One of the failure modes a tick's averages are judged for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TickAlarmKind {
    /// D(real) − D(fake) beyond `max_d_gap`, either way.
    Divergence,
    /// The generator's gradient norm below the floor or far below its peak.
    VanishingGradients,
}

impl TickAlarmKind {
    fn name(self) -> &'static str {
        match self {
            TickAlarmKind::Divergence => "divergence",
            TickAlarmKind::VanishingGradients => "vanishing gradients",
        }
    }
}

/// An alarm a tick raised: which failure mode, and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct TickAlarm {
    /// The failure mode.
    pub kind: TickAlarmKind,
    /// What the log says (the figures, the threshold, the advice).
    pub message: String,
}

impl TickAlarm {
    fn divergence(message: String) -> Self {
        Self {
            kind: TickAlarmKind::Divergence,
            message,
        }
    }

    fn vanishing(message: String) -> Self {
        Self {
            kind: TickAlarmKind::VanishingGradients,
            message,
        }
    }
}

/// How often an alarm raised tick after tick is said again in the log.
pub const REMIND_EVERY_TICKS: u64 = 10;

/// What the log says of the tick alarms: one that holds tick after tick is said when it is
/// first raised, again every [`REMIND_EVERY_TICKS`] ticks with how long it has held, and once
/// when it clears, so a run's log is not the same warning a thousand times (every tick's alarms
/// are still counted in its `metrics.jsonl` row). Not in the checkpoint: a resumed session says
/// a raised alarm afresh.
#[derive(Debug, Default)]
pub struct AlarmEcho {
    /// The raised alarms, and how many ticks in a row each has been.
    held: BTreeMap<TickAlarmKind, u64>,
}

/// A line [`AlarmEcho`] has the log say.
#[derive(Clone, Debug, PartialEq)]
pub enum AlarmLine {
    /// An alarm raised (first, or a reminder).
    Raised(String),
    /// An alarm that held until the tick before this one.
    Cleared(String),
}

impl AlarmEcho {
    /// The lines for one tick's `raised` alarms.
    pub fn lines(&mut self, raised: &[TickAlarm]) -> Vec<AlarmLine> {
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        for (kind, ticks) in &held {
            if !raised.iter().any(|a| a.kind == *kind) {
                out.push(AlarmLine::Cleared(format!(
                    "{} alarm cleared: it held {ticks} tick{} in a row",
                    kind.name(),
                    if *ticks == 1 { "" } else { "s" }
                )));
            }
        }
        for alarm in raised {
            if self.held.contains_key(&alarm.kind) {
                continue; // one line per kind (the checks raise at most one of each)
            }
            let ticks = held.get(&alarm.kind).map_or(1, |t| t + 1);
            self.held.insert(alarm.kind, ticks);
            if ticks == 1 {
                out.push(AlarmLine::Raised(alarm.message.clone()));
            } else if ticks.is_multiple_of(REMIND_EVERY_TICKS) {
                out.push(AlarmLine::Raised(format!(
                    "{} [still raised: {ticks} ticks in a row]",
                    alarm.message
                )));
            }
        }
        out
    }
}

/// Where in the schedule an evaluation was taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalPoint {
    /// Resolution the generator was evaluated at.
    pub resolution: u32,
    /// Whether the newest block was still being faded in.
    pub fading: bool,
    /// kimg since this resolution's fade-in ended (0 while fading).
    pub kimg_since_grown: f64,
}

/// What the vanishing-gradient alarm remembers. It lives in the checkpoint, so a resumed run
/// compares with the same peak as an uninterrupted one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GradientMemory {
    /// Largest tick-mean generator gradient norm of the run (finite ticks only).
    pub g_norm_peak: Option<f64>,
}

impl GradientMemory {
    /// The peak, named, if it is not a finite non-negative number (for checkpoint validation).
    pub fn invalid(&self) -> Option<String> {
        self.g_norm_peak
            .filter(|p| !(p.is_finite() && *p >= 0.0))
            .map(|p| format!("g_norm_peak {p} is not a gradient norm"))
    }
}

/// What the collapse alarm remembers per resolution. It lives in the checkpoint, so a resumed
/// run judges its evaluations exactly as an uninterrupted one would.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollapseMemory {
    /// Lowest SWD of a judged evaluation.
    pub best_swd: BTreeMap<u32, f64>,
    /// Lowest (most diverse) generated-pair MS-SSIM of a judged evaluation.
    pub best_msssim: BTreeMap<u32, f64>,
    /// Real pairs' MS-SSIM over every evaluation, fades included (the reals are the same
    /// images, cross-faded the same way).
    pub real_msssim: BTreeMap<u32, Mean>,
    /// Judged evaluations in a row that showed a sign of collapse.
    pub suspect_evals: BTreeMap<u32, u32>,
}

impl CollapseMemory {
    /// The first non-finite figure, named, if any (for checkpoint validation).
    pub fn non_finite(&self) -> Option<String> {
        let maps = [
            ("best_swd", &self.best_swd),
            ("best_msssim", &self.best_msssim),
        ];
        for (name, map) in maps {
            if let Some((res, v)) = map.iter().find(|(_, v)| !v.is_finite()) {
                return Some(format!("{name} at {res} is {v}"));
            }
        }
        self.real_msssim
            .iter()
            .find(|(_, m)| !m.sum.is_finite())
            .map(|(res, m)| format!("real_msssim at {res} sums to {}", m.sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick_with_g_norm(norm: f64) -> TickStats {
        let mut tick = TickStats::default();
        tick.report("D/real", 1.0);
        tick.report("D/fake", -1.0);
        tick.report("Grad/G/norm", norm);
        tick
    }

    #[test]
    fn an_exploding_gap_and_vanishing_gradients_are_reported() {
        let alarms = Alarms::new(AlarmConfig::default());
        let mut memory = GradientMemory::default();
        let mut tick = TickStats::default();
        tick.report("D/real", 150.0);
        tick.report("D/fake", -20.0);
        tick.report("Grad/G/norm", 1e-9);
        let w = alarms.check_tick(&tick, &mut memory);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[1].message.contains("below 1e-6"), "{w:?}");
        assert!(w[0].message.contains("overpowering"), "{w:?}");
        let mut memory = GradientMemory::default();
        assert!(alarms
            .check_tick(&tick_with_g_norm(0.5), &mut memory)
            .is_empty());
        // D scoring the fakes above the reals is the other divergence, said as such.
        let mut tick = TickStats::default();
        tick.report("D/real", -150.0);
        tick.report("D/fake", 20.0);
        let w = alarms.check_tick(&tick, &mut memory);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].message.contains("-170.0 is below -100")
                && w[0].message.contains("fakes far above"),
            "{w:?}"
        );
        // The advice is the loss's own: its penalty, or a penalised loss for one without.
        let mut exploding = TickStats::default();
        exploding.report("D/real", 150.0);
        exploding.report("D/fake", -20.0);
        exploding.report("Grad/G/norm", 1e-9);
        for (kind, advice) in [
            (LossKind::WganGp, "loss.gp_lambda"),
            (LossKind::LogisticR1, "loss.r1_gamma"),
            (LossKind::NonSaturating, "train with a penalised loss"),
            (LossKind::Minimax, "train with a penalised loss"),
        ] {
            let alarms = Alarms::new(AlarmConfig::default()).for_loss(kind);
            let w = alarms.check_tick(&exploding, &mut GradientMemory::default());
            assert!(w[0].message.contains(advice), "{kind:?}: {w:?}");
            let saturates = w[1].message.contains("does not saturate");
            assert_eq!(saturates, kind == LossKind::Minimax, "{kind:?}: {w:?}");
        }
    }

    #[test]
    fn an_alarm_that_holds_is_said_when_raised_every_tenth_tick_and_when_cleared() {
        let alarms = Alarms::new(AlarmConfig::default());
        let mut memory = GradientMemory::default();
        let mut echo = AlarmEcho::default();
        let exploding = tick_with_d(150.0, -20.0);
        let mut said = Vec::new();
        for tick in 1..=25u64 {
            let raised = alarms.check_tick(&exploding, &mut memory);
            assert_eq!(raised.len(), 1, "every tick's alarm is counted");
            said.extend(echo.lines(&raised).into_iter().map(|l| (tick, l)));
        }
        let healthy = tick_with_d(1.0, -1.0);
        said.extend(
            echo.lines(&alarms.check_tick(&healthy, &mut memory))
                .into_iter()
                .map(|l| (26, l)),
        );
        let ticks: Vec<u64> = said.iter().map(|(t, _)| *t).collect();
        assert_eq!(ticks, [1, 10, 20, 26], "{said:?}");
        let AlarmLine::Raised(first) = &said[0].1 else {
            panic!("{said:?}")
        };
        assert!(
            first.contains("overpowering") && !first.contains("still"),
            "{first}"
        );
        let AlarmLine::Raised(reminder) = &said[2].1 else {
            panic!("{said:?}")
        };
        assert!(
            reminder.ends_with("[still raised: 20 ticks in a row]"),
            "{reminder}"
        );
        assert_eq!(
            said[3].1,
            AlarmLine::Cleared("divergence alarm cleared: it held 25 ticks in a row".into())
        );
        // Raised again later: said afresh; another kind alongside is its own.
        let mut both = tick_with_d(150.0, -20.0);
        both.report("Grad/G/norm", 1e-9);
        let lines = echo.lines(&alarms.check_tick(&both, &mut memory));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines
            .iter()
            .all(|l| matches!(l, AlarmLine::Raised(m) if !m.contains("still"))));
    }

    fn tick_with_d(real: f64, fake: f64) -> TickStats {
        let mut tick = TickStats::default();
        tick.report("D/real", real);
        tick.report("D/fake", fake);
        tick
    }

    #[test]
    fn a_gradient_fallen_far_below_the_runs_peak_is_vanishing() {
        let alarms = Alarms::new(AlarmConfig::default());
        let mut memory = GradientMemory::default();
        // A healthy run's norm moves within a small factor of its peak (here down to 1/50)...
        for norm in [2.0, 5.0, 0.1, 3.0] {
            let w = alarms.check_tick(&tick_with_g_norm(norm), &mut memory);
            assert!(w.is_empty(), "{norm}: {w:?}");
        }
        assert_eq!(memory.g_norm_peak, Some(5.0));
        // ...a saturated loss drops it by orders of magnitude, far above the absolute floor.
        let w = alarms.check_tick(&tick_with_g_norm(4e-3), &mut memory);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].message
                .starts_with("generator gradient norm 4.00e-3 is 8e-4 of this run's peak 5.00e0"),
            "{}",
            w[0].message
        );
        // Below the floor too: one warning, the absolute one.
        let w = alarms.check_tick(&tick_with_g_norm(1e-8), &mut memory);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].message.contains("is below 1e-6"), "{w:?}");
        // A non-finite tick (rolled back by the trainer) leaves the peak alone.
        alarms.check_tick(&tick_with_g_norm(f64::NAN), &mut memory);
        alarms.check_tick(&tick_with_g_norm(f64::INFINITY), &mut memory);
        assert_eq!(memory.g_norm_peak, Some(5.0));
        assert_eq!(memory.invalid(), None);
        // 0 turns the relative test off.
        let off = Alarms::new(AlarmConfig {
            min_g_grad_ratio: 0.0,
            ..AlarmConfig::default()
        });
        assert!(off
            .check_tick(&tick_with_g_norm(4e-3), &mut memory)
            .is_empty());
    }

    fn eval(fake: f64, real: f64, swd: Option<f64>) -> EvalReport {
        EvalReport {
            swd_mean: swd,
            msssim_fake: Some(fake),
            msssim_real: Some(real),
            ..Default::default()
        }
    }

    fn stable(resolution: u32, kimg_since_grown: f64) -> EvalPoint {
        EvalPoint {
            resolution,
            fading: false,
            kimg_since_grown,
        }
    }

    const FADING_16: EvalPoint = EvalPoint {
        resolution: 16,
        fading: true,
        kimg_since_grown: 0.0,
    };

    #[test]
    fn collapse_is_reported_once_two_evaluations_in_a_row_show_it() {
        let alarms = Alarms::new(AlarmConfig::default());
        let mut memory = CollapseMemory::default();
        let fine = eval(0.2, 0.2, Some(10.0));
        let collapsed = eval(0.9, 0.2, Some(25.0));
        let at = stable(16, 10.0);
        assert!(alarms.check_eval(&fine, at, &mut memory).is_empty());
        // One evaluation's figures are noisy: the first bad one is held back...
        assert!(alarms.check_eval(&collapsed, at, &mut memory).is_empty());
        assert_eq!(memory.suspect_evals[&16], 1);
        // ...the second in a row is reported, each sign on its own line.
        let warnings = alarms.check_eval(&collapsed, at, &mut memory);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("rose from 0.200 to 0.900"),
            "{warnings:?}"
        );
        assert!(
            warnings[0].ends_with("[2 evaluations in a row]"),
            "{warnings:?}"
        );
        assert!(warnings[1].starts_with("SWD jumped to 25.00 from a best of 10.00"));
        assert_eq!(memory.best_swd[&16], 10.0);
        assert_eq!(memory.best_msssim[&16], 0.2);
        // A healthy evaluation resets the count.
        assert!(alarms.check_eval(&fine, at, &mut memory).is_empty());
        assert!(alarms.check_eval(&collapsed, at, &mut memory).is_empty());
    }

    #[test]
    fn evaluations_during_a_fade_in_are_not_judged_and_set_no_best() {
        let alarms = Alarms::new(AlarmConfig::default());
        let mut memory = CollapseMemory::default();
        // Mid fade-in the output is mostly the upsampled previous stage: diverse, low SWD.
        for _ in 0..3 {
            let w = alarms.check_eval(&eval(0.30, 0.20, Some(5.0)), FADING_16, &mut memory);
            assert!(w.is_empty(), "{w:?}");
        }
        assert!(memory.best_msssim.is_empty() && memory.best_swd.is_empty());
        assert_eq!(
            memory.real_msssim[&16].count, 3,
            "the reals' figure still counts"
        );
        // Grown: the new layers start less diverse and worse than the blend was. Measured
        // against the fade-in's figures that would be a drop (0.30 → 0.70, SWD x6); it is not.
        for (fake, since) in [
            (0.63, 0.5),
            (0.70, 1.5),
            (0.73, 2.5),
            (0.60, 3.5),
            (0.5, 4.5),
        ] {
            let w = alarms.check_eval(&eval(fake, 0.2, Some(30.0)), stable(16, since), &mut memory);
            assert!(w.is_empty(), "{fake} at {since}: {w:?}");
        }
        assert_eq!(memory.best_msssim[&16], 0.5);
    }

    #[test]
    fn a_generator_that_never_becomes_diverse_is_reported_after_the_grace_period() {
        let config = AlarmConfig::default();
        let grace = config.collapse_grace_kimg;
        let alarms = Alarms::new(config);
        let mut memory = CollapseMemory::default();
        // Far less diverse than the reals from its first evaluation, but never *more* alike than
        // at its best by the margin: only the gap test can see it, once the grace period is over.
        let stuck = eval(0.80, 0.20, None);
        for since in [0.0, 1.0, grace - 0.5] {
            let w = alarms.check_eval(&stuck, stable(16, since), &mut memory);
            assert!(w.is_empty(), "within the grace period at {since}: {w:?}");
        }
        assert!(alarms
            .check_eval(&stuck, stable(16, grace), &mut memory)
            .is_empty());
        let w = alarms.check_eval(&stuck, stable(16, grace + 1.0), &mut memory);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("MS-SSIM 0.800 is more than 0.35 above real pairs' 0.200 at 16x16"),
            "{}",
            w[0]
        );
        // A generator as diverse as the data, give or take the gap, is left alone.
        let mut memory = CollapseMemory::default();
        for since in [5.0, 6.0, 7.0, 8.0] {
            let w = alarms.check_eval(&eval(0.50, 0.20, None), stable(16, since), &mut memory);
            assert!(w.is_empty(), "{w:?}");
        }
    }

    #[test]
    fn the_reals_figure_is_the_mean_over_the_resolutions_evaluations() {
        let alarms = Alarms::new(AlarmConfig::default());
        let mut memory = CollapseMemory::default();
        // The reals' estimates scatter; a low one alone would turn 0.50 into a 0.40 gap.
        let at = stable(16, 10.0);
        for real in [0.30, 0.10, 0.20] {
            assert!(alarms
                .check_eval(&eval(0.50, real, None), at, &mut memory)
                .is_empty());
        }
        assert!((memory.real_msssim[&16].value().unwrap() - 0.2).abs() < 1e-12);
        assert!(!memory.real_msssim.contains_key(&32));
        // Each resolution keeps its own memory.
        let w = alarms.check_eval(&eval(0.9, 0.2, None), stable(32, 0.0), &mut memory);
        assert!(w.is_empty() && memory.best_msssim[&32] == 0.9);
        assert_eq!(memory.best_msssim[&16], 0.5);
    }
}
