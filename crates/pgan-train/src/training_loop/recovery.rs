//! Recovery from NaN/Inf: a non-finite loss or gradient norm (every step) or weight (every tick
//! end) sends the run back to its last checkpoint with the learning rate multiplied by
//! `recovery.lr_factor` for `recovery.cooldown_kimg`, measured in images shown (the run's own
//! clock, saved in every checkpoint). `recovery.max_consecutive_failures` rollbacks without a
//! healthy checkpoint in between stop the run with advice.

use burn::tensor::backend::AutodiffBackend;
use pgan_spec::metrics as key;
use serde_json::Map;

use super::{Tick, Trainer};
use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::nets::params_finite;

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

    /// Whether every weight of G, D and G_ema is finite; logs the finding when not.
    pub(super) fn weights_finite(&mut self) -> bool {
        let nets = &self.nets;
        let finite = params_finite(&nets.g) && params_finite(&nets.d) && params_finite(&nets.g_ema);
        if !finite {
            self.log.warn(format!(
                "non-finite weights at step {} ({:.3} kimg) with finite losses",
                self.state.step,
                self.state.images_shown as f64 / 1000.0
            ));
        }
        finite
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
            let resolution = self.schedule.at(self.state.images_shown).resolution;
            return Err(TrainError::Diverged(format!(
                "{max} rollbacks in a row did not get past {:.3} kimg at {resolution}x{resolution}. \
                 Try a lower learning rate (schedule.lr_default), a smaller minibatch, a larger \
                 loss.gp_lambda, or resume from an earlier checkpoint in {}",
                self.state.images_shown as f64 / 1000.0,
                self.run_dir.join(checkpoint::CHECKPOINTS_DIR).display()
            )));
        }
        let ckpt = checkpoint::list_checkpoints(&self.run_dir)?
            .pop()
            .ok_or_else(|| TrainError::Diverged("no checkpoint to roll back to".into()))?;
        self.restore(&ckpt)?;
        self.state.consecutive_failures = failures;
        self.state.lr_multiplier = multiplier;
        self.state.cooldown_until =
            self.state.images_shown + (self.config.recovery.cooldown_kimg * 1000.0) as u64;
        self.rollbacks += 1;
        self.tick = Tick::start();
        self.metrics.truncate_after(self.state.images_shown)?;
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
        self.metrics.write(&row)?;
        Ok(())
    }
}
