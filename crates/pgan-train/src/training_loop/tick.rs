//! The end of a tick, in order: a look at the dataset file, the metrics row (schedule position,
//! the tick's averages, speed, memory), the evaluation when one is due, the alarms, then the
//! outputs: the row appended to `metrics.jsonl`, the status line, the sample grid and the
//! checkpoint when they are due.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use pgan_spec::metrics as key;
use serde_json::{Map, Value};

use super::{Tick, Trainer};
use crate::alarms::{AlarmLine, EvalPoint};
use crate::checkpoint::{self, AbandonedMeasures};
use crate::error::{Result, TrainError};
use crate::eval::{evaluate_generator, EvalSettings, Watch};
use crate::images::{grid, image_error, png_bytes, upscale_cells, HostImages};
use crate::run_dir::SAMPLES_DIR;
use crate::schedule::{Phase, PhaseKind};
use crate::stats::peak_rss_mib;

impl<B: AutodiffBackend> Trainer<B> {
    /// Closes the tick whose last step was just taken at `phase`, and starts the next.
    pub(super) fn end_tick(&mut self, phase: &Phase) -> Result<()> {
        // The steps' speed excludes the evaluation and outputs below; the run's time includes them.
        let seconds = self.tick.seconds();
        self.tick.stop_clock(&mut self.state.elapsed_s);
        self.state.tick += 1;
        let img_per_s = self.tick.images as f64 / seconds.max(1e-9);

        let mut row = self.tick_row(phase, img_per_s);
        let raised = self
            .alarms
            .check_tick(&self.tick.stats, &mut self.state.gradients);
        // The evaluation's alarms: said whenever raised (they confirm a streak themselves).
        let mut warnings = Vec::new();
        if self.due(self.config.eval.every_kimg) {
            self.evaluate(phase, &mut row, &mut warnings);
        }
        if self.fid.is_some() && self.due(self.config.eval.fid_every_kimg) {
            self.measure_fid(phase, &mut row);
        }
        for line in self.alarm_echo.lines(&raised) {
            match line {
                AlarmLine::Raised(message) => self.log.warn(format!("alarm: {message}")),
                AlarmLine::Cleared(message) => self.log.info(message),
            }
        }
        for w in &warnings {
            self.log.warn(format!("alarm: {w}"));
        }
        let mut messages = raised.iter().map(|a| &a.message).chain(&warnings);
        if let Some(first) = messages.next() {
            put(&mut row, key::ALARM_COUNT, raised.len() + warnings.len());
            if let Some(bar) = self.log.bar() {
                bar.set_prefix(format!("⚠ {first}"));
            }
        }
        // On several nodes, one whose outputs fail (a full disk) stops them all at the same
        // checkpoint: its failure goes to the others before it is returned.
        let outputs = self.metrics.write(&row).and_then(|reattached| {
            if let Some(warning) = reattached {
                self.log.warn(warning);
            }
            self.log.info(self.status_line(phase, img_per_s));
            if self
                .state
                .tick
                .is_multiple_of(self.config.run.sample_ticks.max(1))
            {
                self.save_samples(phase)?;
            }
            Ok(())
        });
        if self
            .state
            .tick
            .is_multiple_of(self.config.run.checkpoint_ticks)
        {
            self.end_healthy_stretch();
            self.save_checkpoint_after(outputs)?;
        } else {
            self.outputs_written_everywhere(outputs)?;
        }
        self.tick = Tick {
            session_mark: self.tick.session_mark,
            ..Tick::start()
        };
        Ok(())
    }

    /// The tick's row of `metrics.jsonl` before evaluation and alarms.
    fn tick_row(&mut self, phase: &Phase, img_per_s: f64) -> Map<String, Value> {
        let mut row = Map::new();
        put(&mut row, key::TICK, self.state.tick);
        put(&mut row, key::KIMG, self.state.images_shown as f64 / 1000.0);
        put(&mut row, key::STAGE, phase.stage);
        put(&mut row, key::RESOLUTION, phase.resolution);
        put(&mut row, key::PHASE, phase.kind.to_string());
        put(
            &mut row,
            key::PHASE_START_KIMG,
            self.schedule.phase_start_kimg(phase),
        );
        put(&mut row, key::ALPHA, phase.alpha as f64);
        put(&mut row, key::BATCH, phase.batch);
        // The rates the steps take: the schedule's (lowered after a rollback) times each
        // network's TTUR multiplier.
        let lr = phase.lr * self.lr_multiplier();
        put(&mut row, key::LR_G, lr * self.config.optim.lr_g_mult);
        put(&mut row, key::LR_D, lr * self.config.optim.lr_d_mult);
        for (name, mean) in self.tick.stats.means() {
            put(&mut row, name, finite_or_null(mean));
        }
        put(&mut row, key::IMG_PER_S, finite_or_null(img_per_s));
        put(
            &mut row,
            key::SEC_PER_KIMG,
            finite_or_null(1000.0 / img_per_s.max(1e-9)),
        );
        if let Some(mib) = peak_rss_mib() {
            put(&mut row, key::PEAK_RSS_MB, mib);
        }
        // On a GPU: the runtime's pool now, and the most it has held at any tick end of this
        // process (pools keep their pages, so that is close to the true peak).
        if let Some((in_use, reserved)) = crate::backend::device_memory(&self.device) {
            let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            self.peak_device_reserved = self.peak_device_reserved.max(reserved);
            put(&mut row, key::DEVICE_IN_USE_MB, mib(in_use));
            put(&mut row, key::DEVICE_RESERVED_MB, mib(reserved));
            put(
                &mut row,
                key::DEVICE_PEAK_RESERVED_MB,
                mib(self.peak_device_reserved),
            );
        }
        put(&mut row, key::TIME_S, self.state.elapsed_s);
        row
    }

    /// Whether this tick crossed a multiple of `every` kimg (never when `every` is 0). Counted
    /// in whole images: in kimg, 0.3 / 0.1 is 2.999… and that evaluation was skipped.
    fn due(&self, every: f64) -> bool {
        crossed_multiple(self.state.images_shown, self.tick.images, every)
    }

    /// SWD and MS-SSIM diversity of G_ema on a small sample, into the row; their alarms into
    /// `warnings`. A failed evaluation is logged and training goes on; a stop request (Ctrl-C)
    /// abandons it, so that the checkpoint that follows does not wait for it.
    fn evaluate(
        &mut self,
        phase: &Phase,
        row: &mut Map<String, Value>,
        warnings: &mut Vec<String>,
    ) {
        if let Some(faults) = &mut self.faults {
            faults.before_evaluation(&self.options.stop);
        }
        if phase.resolution < crate::eval::MIN_EVAL_RESOLUTION {
            if !self.told_eval_below_minimum {
                self.told_eval_below_minimum = true;
                self.log.info(format!(
                    "SWD and MS-SSIM evaluations start at {0}x{0} (they need it): none at \
                     {1}x{1} (FID, when set, is measured at every resolution)",
                    crate::eval::MIN_EVAL_RESOLUTION,
                    phase.resolution
                ));
            }
            return;
        }
        let settings = EvalSettings {
            num_images: self.config.eval.num_images,
            msssim_pairs: self.config.eval.msssim_pairs,
            seed: self.config.run.seed.wrapping_add(self.state.tick),
            batch: phase.batch.max(8),
        };
        match evaluate_generator(
            &self.nets.g_ema,
            &self.model,
            &self.reader,
            phase,
            &settings,
            &self.device,
            Watch {
                progress: false,
                stop: Some(&self.options.stop),
            },
        ) {
            Ok(report) => {
                for (name, value) in report.rows() {
                    put(row, name, finite_or_null(value));
                }
                let kimg = self.state.images_shown as f64 / 1000.0;
                let at = EvalPoint {
                    resolution: phase.resolution,
                    fading: phase.kind == PhaseKind::Fade,
                    kimg_since_grown: (kimg - self.schedule.grown_at_kimg(phase.stage)).max(0.0),
                };
                warnings.extend(
                    self.alarms
                        .check_eval(&report, at, &mut self.state.collapse),
                );
            }
            Err(TrainError::Interrupted) => {
                self.log.info(
                    "evaluation abandoned for the stop request: `pgan train --resume` measures it",
                );
                self.abandoned(phase).evaluation = true;
            }
            Err(e) => self.log.warn(format!("evaluation skipped: {e}")),
        }
    }

    /// FID of G_ema (`eval.fid_num` images) against every real of the phase's resolution, into
    /// the row. A failure is logged and training goes on.
    fn measure_fid(&mut self, phase: &Phase, row: &mut Map<String, Value>) {
        let Some(fid) = self.fid.as_mut() else {
            return;
        };
        let seed = self.config.run.seed.wrapping_add(self.state.tick);
        match fid.measure(
            &self.nets.g_ema,
            &self.model,
            &self.reader,
            phase,
            seed,
            &self.device,
            &self.options.stop,
        ) {
            Ok(value) => put(row, key::FID, finite_or_null(value)),
            Err(TrainError::Interrupted) => {
                self.log
                    .info("FID abandoned for the stop request: `pgan train --resume` measures it");
                self.abandoned(phase).fid = true;
            }
            Err(e) => self.log.warn(format!("FID skipped: {e}")),
        }
    }

    /// The record of this tick's measurements a stop abandoned, made on first use (a record
    /// of an earlier tick, whose checkpoint was never written, gives way).
    fn abandoned(&mut self, phase: &Phase) -> &mut AbandonedMeasures {
        let fresh = AbandonedMeasures {
            tick: self.state.tick,
            images_shown: self.state.images_shown,
            phase: *phase,
            evaluation: false,
            fid: false,
        };
        let record = self.state.abandoned.get_or_insert(fresh);
        if record.tick != fresh.tick {
            *record = fresh;
        }
        record
    }

    /// On a resume from a checkpoint whose tick's measurements a stop abandoned: takes them now
    /// (the networks, seeds and alarm memory are those of that tick's end), adds them to that
    /// tick's row in `metrics.jsonl` and clears the debt in the checkpoint.
    pub(super) fn measure_what_a_stop_abandoned(
        &mut self,
        abandoned: AbandonedMeasures,
        ckpt: &std::path::Path,
    ) -> Result<()> {
        if abandoned.images_shown != self.state.images_shown {
            // Several nodes agree on a stop with the next step's gradients: that step was
            // taken, and the networks of the tick's end are gone.
            self.log.warn(format!(
                "the stop came during the measurements of tick {} and the run stopped after one \
                 more step: its row stays without them",
                abandoned.tick
            ));
            return self.clear_abandoned(ckpt);
        }
        let phase = abandoned.phase;
        let mut row = Map::new();
        let mut warnings = Vec::new();
        if abandoned.evaluation {
            self.evaluate(&phase, &mut row, &mut warnings);
        }
        if abandoned.fid && self.fid.is_some() {
            self.measure_fid(&phase, &mut row);
        }
        if self.state.abandoned.is_some() {
            // Stopped again: the checkpoint still owes them.
            return Ok(());
        }
        for w in &warnings {
            self.log.warn(format!("alarm: {w}"));
        }
        if !row.is_empty() || !warnings.is_empty() {
            let reattached = self
                .metrics
                .amend_tick_row(abandoned.tick, row, warnings.len())?;
            if let Some(warning) = reattached {
                self.log.warn(warning);
            }
        }
        self.log.info(format!(
            "measured what the stop abandoned at the end of tick {}",
            abandoned.tick
        ));
        self.clear_abandoned(ckpt)
    }

    /// The checkpoint resumed from no longer owes its measurements: its `state.json` as it
    /// stands on disk (not the resume's state, which may have adopted another dataset), with
    /// the alarms' memory of the measurements taken and the debt removed.
    fn clear_abandoned(&self, ckpt: &std::path::Path) -> Result<()> {
        let mut on_disk = checkpoint::read_state(ckpt)?;
        on_disk.abandoned = None;
        on_disk.collapse = self.state.collapse.clone();
        on_disk.gradients = self.state.gradients;
        checkpoint::rewrite_state(ckpt, &on_disk)
    }

    /// The one line per tick in `log.txt`.
    fn status_line(&self, phase: &Phase, img_per_s: f64) -> String {
        let mean = |name| self.tick.stats.mean(name).unwrap_or(f64::NAN);
        format!(
            "tick {:<4} kimg {:<8.1} {}x{} {:<6} α {:.2}  Loss/D {:>8.3}  Loss/G {:>8.3}  D(real) {:>7.3}  D(fake) {:>7.3}  {:>6.1} img/s",
            self.state.tick,
            self.state.images_shown as f64 / 1000.0,
            phase.resolution,
            phase.resolution,
            phase.kind.to_string(),
            phase.alpha,
            mean(key::LOSS_D),
            mean(key::LOSS_G),
            mean(key::D_REAL),
            mean(key::D_FAKE),
            img_per_s
        )
    }

    /// G_ema on the fixed sample latents, as `samples/tick-NNNNNN.png`.
    fn save_samples(&mut self, phase: &Phase) -> Result<()> {
        let n = self.config.run.sample_rows * self.config.run.sample_cols;
        let latents = Tensor::<B::InnerBackend, 2>::from_data(
            TensorData::new(self.sample_latents.clone(), [n, self.model.latent_dim]),
            &self.device,
        );
        let images =
            HostImages::from_tensor(self.nets.g_ema.forward(latents, phase.stage, phase.alpha));
        let cells = upscale_cells(images.to_rgb_all(), self.config.run.sample_cell_px);
        let sheet = grid(
            &cells,
            self.config.run.sample_rows,
            self.config.run.sample_cols,
            2,
        );
        let path = self
            .run_dir
            .join(SAMPLES_DIR)
            .join(crate::run_dir::sample_sheet_name(self.state.tick));
        // A `samples` folder removed while the run goes on is made again, also when it (or the
        // sheet's temporary file in it) goes between the look and the write: a user's `rm -r`
        // of it is not one call.
        let bytes = png_bytes(&sheet, &path)?;
        let mut attempt = 1;
        loop {
            crate::run_dir::ensure_samples_dir(&self.run_dir)?;
            match crate::fsutil::write_own_atomic(&path, &bytes) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < SHEET_TRIES => {
                    attempt += 1
                }
                written => break written.map_err(|e| image_error(&path, e))?,
            }
        }
        self.latest_sample = Some(path);
        Ok(())
    }
}

/// How many times a sample sheet is written when its folder or temporary file goes under the
/// write: a removal of the folder is over in one or two; a bound, so that a folder removed
/// again and again stops the run with the error instead of holding it.
const SHEET_TRIES: u32 = 5;

fn put(row: &mut Map<String, Value>, name: &str, value: impl Into<Value>) {
    row.insert(name.to_string(), value.into());
}

fn finite_or_null(v: f64) -> Value {
    if v.is_finite() {
        Value::from(v)
    } else {
        Value::Null
    }
}

/// Whether the images from `images_shown - tick_images` to `images_shown` crossed a multiple of
/// `every_kimg` kimg (rounded to whole images; never when it is 0).
fn crossed_multiple(images_shown: u64, tick_images: u64, every_kimg: f64) -> bool {
    if every_kimg.is_nan() || every_kimg <= 0.0 {
        return false;
    }
    let every = ((every_kimg * 1000.0).round() as u64).max(1);
    images_shown / every > images_shown.saturating_sub(tick_images) / every
}

#[cfg(test)]
mod tests {
    use super::crossed_multiple;

    #[test]
    fn multiples_are_counted_in_whole_images() {
        // Ticks of 52 and 48 images, an evaluation every 0.1 kimg: due at 100, 200, 300 images.
        let ends = [52u64, 100, 152, 200, 252, 300, 352];
        let due: Vec<u64> = ends
            .windows(2)
            .filter(|w| crossed_multiple(w[1], w[1] - w[0], 0.1))
            .map(|w| w[1])
            .collect();
        assert_eq!(due, [100, 200, 300]);
        assert!(!crossed_multiple(300, 48, 0.0));
        assert!(
            crossed_multiple(1, 1, 0.0001),
            "below one image: every image"
        );
    }
}
