//! Early warnings for the known GAN failure modes, computed from tick averages and evaluations:
//! divergence/imbalance (D(real) − D(fake) exploding), vanishing generator gradients, and mode
//! collapse (generated images more alike than real ones, or SWD jumping up).

use std::collections::BTreeMap;

use pgan_spec::metrics as key;

use crate::config::AlarmConfig;
use crate::eval::EvalReport;
use crate::stats::TickStats;

/// Checks tick statistics and evaluations against the configured thresholds.
#[derive(Clone, Debug)]
pub struct Alarms {
    config: AlarmConfig,
}

impl Alarms {
    /// Alarms with these thresholds.
    pub fn new(config: AlarmConfig) -> Self {
        Self { config }
    }

    /// Warnings raised by one tick's averages.
    pub fn check_tick(&self, tick: &TickStats) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(real), Some(fake)) = (tick.mean(key::D_REAL), tick.mean(key::D_FAKE)) {
            let gap = real - fake;
            if gap.abs() > self.config.max_d_gap {
                out.push(format!(
                    "D(real) - D(fake) = {gap:.1} exceeds {}: the discriminator is overpowering \
                     the generator (divergence); lower the learning rate or raise the penalty",
                    self.config.max_d_gap
                ));
            }
        }
        if let Some(norm) = tick.mean(key::GRAD_G_NORM) {
            if norm < self.config.min_g_grad_norm {
                out.push(format!(
                    "generator gradient norm {norm:.2e} is below {:.0e}: vanishing gradients, \
                     G has stopped learning",
                    self.config.min_g_grad_norm
                ));
            }
        }
        out
    }

    /// Warnings raised by an evaluation; updates the best SWD and MS-SSIM seen per resolution.
    ///
    /// The MS-SSIM alarm needs diversity to have *dropped*: generated pairs more alike than real
    /// ones by `msssim_margin`, and more alike than at this resolution's most diverse evaluation
    /// by the same margin. A generator early in a stage is always less diverse than the data;
    /// warning about that on every fresh run would teach users to ignore the alarm.
    pub fn check_eval(
        &self,
        report: &EvalReport,
        resolution: u32,
        best_swd: &mut BTreeMap<u32, f64>,
        best_msssim: &mut BTreeMap<u32, f64>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(fake), Some(real)) = (report.msssim_fake, report.msssim_real) {
            let best = best_msssim.entry(resolution).or_insert(fake);
            let margin = self.config.msssim_margin;
            if fake > real + margin && fake > *best + margin {
                out.push(format!(
                    "mode collapse suspected: generated pairs' MS-SSIM rose from {best:.3} to \
                     {fake:.3} at {resolution}x{resolution}, real pairs {real:.3} (diversity has \
                     dropped)"
                ));
            }
            *best = best.min(fake);
        }
        if let Some(swd) = report.swd_mean {
            let best = best_swd.entry(resolution).or_insert(swd);
            if swd > *best * self.config.swd_jump_factor {
                out.push(format!(
                    "SWD jumped to {swd:.2} from a best of {best:.2} at {resolution}x{resolution}: \
                     quality is collapsing"
                ));
            }
            *best = best.min(swd);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exploding_gap_and_vanishing_gradients_are_reported() {
        let alarms = Alarms::new(AlarmConfig::default());
        let mut tick = TickStats::default();
        tick.report("D/real", 150.0);
        tick.report("D/fake", -20.0);
        tick.report("Grad/G/norm", 1e-9);
        let w = alarms.check_tick(&tick);
        assert_eq!(w.len(), 2, "{w:?}");
        let mut healthy = TickStats::default();
        healthy.report("D/real", 1.0);
        healthy.report("D/fake", -1.0);
        healthy.report("Grad/G/norm", 0.5);
        assert!(alarms.check_tick(&healthy).is_empty());
    }

    #[test]
    fn collapse_is_reported_from_msssim_and_swd_jumps() {
        let alarms = Alarms::new(AlarmConfig::default());
        let (mut best, mut best_msssim) = (BTreeMap::new(), BTreeMap::new());
        let fine = EvalReport {
            swd_mean: Some(10.0),
            msssim_fake: Some(0.2),
            msssim_real: Some(0.2),
            ..Default::default()
        };
        assert!(alarms
            .check_eval(&fine, 16, &mut best, &mut best_msssim)
            .is_empty());
        let collapsed = EvalReport {
            swd_mean: Some(25.0),
            msssim_fake: Some(0.9),
            msssim_real: Some(0.2),
            ..Default::default()
        };
        assert_eq!(
            alarms
                .check_eval(&collapsed, 16, &mut best, &mut best_msssim)
                .len(),
            2
        );
        assert_eq!(best[&16], 10.0);
        assert_eq!(best_msssim[&16], 0.2);
    }

    #[test]
    fn a_generator_that_is_not_yet_diverse_is_not_a_collapse() {
        let alarms = Alarms::new(AlarmConfig::default());
        let (mut best, mut best_msssim) = (BTreeMap::new(), BTreeMap::new());
        let early = |fake| EvalReport {
            msssim_fake: Some(fake),
            msssim_real: Some(0.14),
            ..Default::default()
        };
        // First evaluation at 16x16: far less diverse than the reals, but nothing has dropped.
        assert!(alarms
            .check_eval(&early(0.45), 16, &mut best, &mut best_msssim)
            .is_empty());
        // Improving, then slipping back a little: still no alarm.
        assert!(alarms
            .check_eval(&early(0.35), 16, &mut best, &mut best_msssim)
            .is_empty());
        assert!(alarms
            .check_eval(&early(0.45), 16, &mut best, &mut best_msssim)
            .is_empty());
        // A new resolution starts its own memory; a real drop there is reported.
        assert!(alarms
            .check_eval(&early(0.30), 32, &mut best, &mut best_msssim)
            .is_empty());
        let warnings = alarms.check_eval(&early(0.60), 32, &mut best, &mut best_msssim);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("rose from 0.300 to 0.600"),
            "{}",
            warnings[0]
        );
    }
}
