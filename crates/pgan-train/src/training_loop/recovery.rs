//! Recovery from NaN/Inf: a non-finite loss or gradient norm of any step of a tick, or a
//! non-finite weight, sends the run back to its last checkpoint with the learning rate
//! multiplied by `recovery.lr_factor` for `recovery.cooldown_kimg`, measured in images shown
//! (the run's own clock, saved in every checkpoint). `recovery.max_consecutive_failures`
//! rollbacks without a healthy checkpoint in between stop the run with advice.
//!
//! Both are found at the tick's end, in the one read of the tick's values (a step reads
//! nothing). Checkpoints are only written at tick ends that found the tick healthy, so the
//! checkpoint restored is the one a check after every step would have restored; the failure is
//! dated to the first non-finite step, so the learning-rate cooldown is computed as then.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use pgan_spec::metrics as key;
use serde_json::Map;

use super::Trainer;
use crate::checkpoint;
use crate::config::LossConfig;
use crate::error::{Result, TrainError};
use crate::nets::params_finite_flag;
use crate::stats::Cut;

impl<B: AutodiffBackend> Trainer<B> {
    /// The learning-rate multiplier now: reduced until the cooldown after a rollback ends.
    pub(super) fn lr_multiplier(&self) -> f64 {
        if self.state.images_shown < self.state.cooldown_until {
            self.state.lr_multiplier
        } else {
            1.0
        }
    }

    /// Called before each checkpoint: one written once the cooldown is over closes a healthy
    /// stretch, so the failures in a row start again from zero (and are stored so).
    pub(super) fn end_healthy_stretch(&mut self) {
        if self.state.images_shown >= self.state.cooldown_until {
            self.state.consecutive_failures = 0;
        }
    }

    /// Reads the values of the tick's steps and a finiteness flag of every weight of G, D and
    /// G_ema (one read), and reports the values to the tick's statistics when all are finite.
    /// When not, logs the finding and returns false; a non-finite step also moves the run's
    /// position back to that step, where the rollback counts from.
    pub(super) fn tick_values_healthy(&mut self) -> bool {
        let nets = &self.nets;
        let weights = [
            params_finite_flag(&nets.g.valid()),
            params_finite_flag(&nets.d.valid()),
            params_finite_flag(&nets.g_ema),
        ]
        .into_iter()
        .flatten()
        .reduce(|a, b| a + b);
        let (rows, weights) = self.tick.steps.read(weights);
        if let Some(bad) = rows.iter().find(|r| !r.is_healthy()) {
            self.state.step = bad.at.step;
            self.state.images_shown = bad.at.images_shown;
            let value = |name| bad.get(name).unwrap_or(f32::NAN);
            self.log.warn(format!(
                "non-finite values at step {} ({:.3} kimg): Loss/D {}, Loss/G {}, grad norms D {} G {}",
                self.state.step,
                self.state.images_shown as f64 / 1000.0,
                value(key::LOSS_D),
                value(key::LOSS_G),
                value(key::GRAD_D_NORM),
                value(key::GRAD_G_NORM),
            ));
            return false;
        }
        if weights.iter().any(|w| !w.is_finite()) {
            self.log.warn(format!(
                "non-finite weights at step {} ({:.3} kimg) with finite losses",
                self.state.step,
                self.state.images_shown as f64 / 1000.0
            ));
            return false;
        }
        for row in &rows {
            self.tick.stats.report_step(row);
        }
        true
    }

    /// Back to the last checkpoint with a smaller learning rate, or give up. The tick in
    /// progress is dropped with its timers; its rows after the checkpoint are removed from
    /// `metrics.jsonl` and a rollback row is written.
    pub(super) fn rollback(&mut self) -> Result<()> {
        let failures = self.state.consecutive_failures + 1;
        // Compounds only while a reduced rate is still in force: a failure long after the
        // last cooldown ended starts again from the configured rate.
        let multiplier = self.lr_multiplier() * self.config.recovery.lr_factor;
        let max = self.config.recovery.max_consecutive_failures;
        if failures > max {
            // With no rollback allowed there is no reduced rate to leave behind.
            if max > 0 {
                self.mark_given_up(max);
            }
            let resolution = self.schedule.at(self.state.images_shown).resolution;
            let kimg = self.state.images_shown as f64 / 1000.0;
            let what = if max == 0 {
                format!(
                    "a non-finite value by {kimg:.3} kimg at {resolution}x{resolution}, and \
                     recovery.max_consecutive_failures = 0 allows no rollback (1 or more lets the run \
                     go back to its last checkpoint at a lower rate)"
                )
            } else {
                format!(
                    "{max} rollbacks in a row did not get past {kimg:.3} kimg at \
                     {resolution}x{resolution}"
                )
            };
            return Err(TrainError::Diverged(format!(
                "{what}. Try {}",
                self.advice(resolution)
            )));
        }
        let found = checkpoint::find_checkpoint(&self.run_dir)
            .map_err(|e| TrainError::Diverged(format!("no checkpoint to roll back to: {e}")))?;
        for warning in found.warnings() {
            self.log.warn(warning);
        }
        let ckpt = found.path;
        self.restore(&ckpt)?;
        // The ticks after the checkpoint are trained again: a raised alarm is said afresh, and
        // no streak counts a tick twice.
        self.alarm_echo = crate::alarms::AlarmEcho::default();
        // A rollback trains the stretch after the checkpoint again, tick ends included.
        self.state.abandoned = None;
        // This session goes on from it: an earlier session's giving up there is history.
        self.state.gave_up = None;
        self.state.consecutive_failures = failures;
        self.state.lr_multiplier = multiplier;
        self.state.cooldown_until =
            self.state.images_shown + (self.config.recovery.cooldown_kimg * 1000.0) as u64;
        self.rollbacks += 1;
        self.metrics
            .truncate_after(self.state.images_shown, Cut::Rollback)?;
        self.log.warn(format!(
            "rolled back to {} ({:.3} kimg); learning rate x{} for {} kimg (failure {failures} of {max})",
            ckpt.display(),
            self.state.images_shown as f64 / 1000.0,
            multiplier,
            self.config.recovery.cooldown_kimg
        ));
        let mut row = Map::new();
        row.insert(
            key::KIMG.into(),
            (self.state.images_shown as f64 / 1000.0).into(),
        );
        row.insert(key::ROLLBACK.into(), failures.into());
        if let Some(warning) = self.metrics.write(&row)? {
            self.log.warn(warning);
        }
        // The checkpoint now says how the run goes on from it (after the row: a kill between
        // the two leaves a row that a resume drops, as it does every row after the state).
        let mut state = self.state.clone();
        state.open_tick = self.tick.open();
        checkpoint::rewrite_state(&ckpt, &state)?;
        Ok(())
    }

    /// Records in the checkpoint the rollbacks went back to that the run gave up there (see
    /// `TrainState::gave_up`); a failure to is said, not fatal: the resume then goes on with
    /// the reduced rate, as a kill's would.
    fn mark_given_up(&mut self, failures: u32) {
        let marked = checkpoint::find_checkpoint(&self.run_dir).and_then(|found| {
            let mut state = checkpoint::read_state(&found.path)?;
            state.gave_up = Some(failures);
            checkpoint::rewrite_state(&found.path, &state)
        });
        if let Err(e) = marked {
            self.log.warn(format!(
                "cannot record in the checkpoint that the run gave up there ({e}): a resume \
                 from it starts with the last rollback's reduced learning rate"
            ));
        }
    }

    /// What to try when a run keeps diverging at `resolution`: the settings this run changed
    /// first, then the usual suspects, each named by the key that sets it there.
    fn advice(&self, resolution: u32) -> String {
        let schedule = &self.config.schedule;
        let lr_key = if schedule.lr.contains_key(&resolution.to_string()) {
            format!("schedule.lr.\"{resolution}\"")
        } else {
            "schedule.lr_default".to_string()
        };
        let mut usual = vec![
            format!("a lower learning rate ({lr_key})"),
            "a smaller minibatch".to_string(),
        ];
        let loss = &self.config.loss;
        if loss.kind == crate::config::LossKind::WganGp
            && loss.gp_lambda <= LossConfig::default().gp_lambda
        {
            usual.push("a larger loss.gp_lambda".to_string());
        }
        // A checkpoint before the one the rollbacks went to (the newest), other than kimg 0's
        // (starting again is as good).
        let earlier = checkpoint::list_checkpoints(&self.run_dir).is_ok_and(|all| {
            let start = checkpoint::checkpoint_name(0);
            all.iter()
                .rev()
                .skip(1)
                .any(|c| c.file_name().is_some_and(|n| *n != *start))
        });
        let last = if earlier {
            format!(
                "or resume from an earlier checkpoint in {}",
                self.run_dir.join(checkpoint::CHECKPOINTS_DIR).display()
            )
        } else {
            "then start the run again".to_string()
        };
        format!(
            "{}{}, {last}",
            self.unusual_settings_to_check(),
            usual.join(", ")
        )
    }

    /// The remedies set away from their neutral values, for the advice of a run that keeps
    /// diverging ("the settings you changed first, then the usual suspects").
    fn unusual_settings_to_check(&self) -> String {
        let o = &self.config.optim;
        // Values as `{:?}` writes them: 1e30 in exponent form, not thirty-one digits.
        let mut set = Vec::new();
        let (loss, neutral) = (&self.config.loss, LossConfig::default());
        for (key, value, default) in [
            ("loss.gp_lambda", loss.gp_lambda, neutral.gp_lambda),
            (
                "loss.drift_epsilon",
                loss.drift_epsilon,
                neutral.drift_epsilon,
            ),
        ] {
            if loss.kind == crate::config::LossKind::WganGp && value != default {
                set.push(format!("{key} {value:?}"));
            }
        }
        for (key, value) in [
            ("optim.lr_g_mult", o.lr_g_mult),
            ("optim.lr_d_mult", o.lr_d_mult),
        ] {
            if value != 1.0 {
                set.push(format!("{key} {value:?}"));
            }
        }
        if self.config.instance_noise.sigma > 0.0 {
            set.push(format!(
                "instance_noise.sigma {:?}",
                self.config.instance_noise.sigma
            ));
        }
        if self.config.loss.feature_matching > 0.0 {
            set.push(format!(
                "loss.feature_matching {:?}",
                self.config.loss.feature_matching
            ));
        }
        if set.is_empty() {
            String::new()
        } else {
            format!("the settings this run changes ({}), then ", set.join(", "))
        }
    }
}
