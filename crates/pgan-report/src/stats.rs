//! The numbers in the report's summary tables: where the run is, how fast
//! it went, and a per-resolution breakdown.

use crate::run::{Segment, Tick};

use pgan_spec::metrics::{
    IMG_PER_S, KIMG, PEAK_RSS_MB as PEAK_RSS, SEC_PER_KIMG, TICK, TIME_S as TIME,
};

/// One row of the per-resolution table.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolutionRow {
    /// Resolution (side in pixels), if logged.
    pub resolution: Option<u32>,
    /// Phases seen at this resolution, in order (`fade`, `stable`).
    pub phases: Vec<String>,
    /// Ticks logged at this resolution.
    pub ticks: usize,
    /// kimg where this resolution started and where it is now / ended.
    pub kimg: (f64, f64),
    /// Mean of `Speed/sec_per_kimg` (or `1000 / Speed/img_per_s`).
    pub sec_per_kimg: Option<f64>,
    /// Mean of `Speed/img_per_s`.
    pub img_per_s: Option<f64>,
    /// Wall-clock seconds spent at this resolution (from `time_s`).
    pub seconds: Option<f64>,
    /// Highest `Mem/peak_rss_mb`.
    pub peak_rss_mb: Option<f64>,
}

/// Summary of a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunStats {
    /// Number of ticks (metrics lines).
    pub ticks: usize,
    /// The last tick's `tick` value.
    pub last_tick: Option<i64>,
    /// Latest kimg.
    pub kimg: Option<f64>,
    /// Latest resolution.
    pub resolution: Option<u32>,
    /// Latest stage index.
    pub stage: Option<i64>,
    /// Latest phase.
    pub phase: Option<String>,
    /// Latest `time_s`.
    pub elapsed_s: Option<f64>,
    /// Images per second over the whole run: `kimg * 1000 / time_s`, or
    /// the mean of `Speed/img_per_s` when time is not logged.
    pub avg_img_per_s: Option<f64>,
    /// Highest `Mem/peak_rss_mb`.
    pub peak_rss_mb: Option<f64>,
    /// Ticks that carry `Event/rollback`.
    pub rollbacks: usize,
    /// Non-finite values across all keys and ticks.
    pub non_finite: usize,
    /// Keys that had at least one non-finite value.
    pub non_finite_keys: Vec<String>,
    /// One row per resolution, in training order.
    pub per_resolution: Vec<ResolutionRow>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn max(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

/// Latest finite value of `key`.
fn latest(ticks: &[Tick], key: &str) -> Option<f64> {
    ticks.iter().rev().find_map(|t| t.finite(key))
}

/// Computes the summary.
pub fn compute(ticks: &[Tick], segments: &[Segment]) -> RunStats {
    let mut non_finite_keys: Vec<String> = Vec::new();
    let mut non_finite = 0;
    for t in ticks {
        for k in t.non_finite_keys() {
            non_finite += 1;
            if !non_finite_keys.iter().any(|x| x == k) {
                non_finite_keys.push(k.to_string());
            }
        }
    }
    non_finite_keys.sort();

    let kimg = latest(ticks, KIMG);
    let elapsed_s = latest(ticks, TIME);
    let avg_img_per_s = match (kimg, elapsed_s) {
        (Some(k), Some(t)) if t > 0.0 => Some(k * 1000.0 / t),
        _ => mean(ticks.iter().filter_map(|t| t.finite(IMG_PER_S))),
    };

    RunStats {
        ticks: crate::run::tick_count(ticks),
        last_tick: latest(ticks, TICK).map(|v| v.round() as i64),
        kimg,
        resolution: ticks.iter().rev().find_map(Tick::resolution),
        stage: ticks.iter().rev().find_map(Tick::stage),
        phase: ticks
            .iter()
            .rev()
            .find_map(|t| t.phase().map(str::to_string)),
        elapsed_s,
        avg_img_per_s,
        peak_rss_mb: max(ticks.iter().filter_map(|t| t.finite(PEAK_RSS))),
        rollbacks: ticks
            .iter()
            .filter(|t| {
                t.finite(pgan_spec::metrics::ROLLBACK)
                    .is_some_and(|v| v != 0.0)
            })
            .count(),
        non_finite,
        non_finite_keys,
        per_resolution: per_resolution(ticks, segments),
    }
}

fn per_resolution(ticks: &[Tick], segments: &[Segment]) -> Vec<ResolutionRow> {
    let mut rows: Vec<(ResolutionRow, Vec<usize>)> = Vec::new();
    for s in segments {
        let idx = match rows.last_mut() {
            Some((row, idx)) if row.resolution == s.resolution => {
                row.kimg.1 = s.end_kimg;
                idx
            }
            _ => {
                rows.push((
                    ResolutionRow {
                        resolution: s.resolution,
                        phases: Vec::new(),
                        ticks: 0,
                        kimg: (s.start_kimg, s.end_kimg),
                        sec_per_kimg: None,
                        img_per_s: None,
                        seconds: None,
                        peak_rss_mb: None,
                    },
                    Vec::new(),
                ));
                &mut rows.last_mut().expect("just pushed").1
            }
        };
        idx.extend(s.ticks.clone().filter(|&i| !ticks[i].is_event()));
        let row = &mut rows.last_mut().expect("exists").0;
        if let Some(p) = &s.phase {
            if !row.phases.contains(p) {
                row.phases.push(p.clone());
            }
        }
    }
    // Wall-clock at the end of the previous resolution, to measure each
    // resolution's duration from the time at its boundaries.
    let mut prev_end_time: Option<f64> = ticks
        .iter()
        .find(|t| !t.is_event())
        .and_then(|t| t.finite(TIME))
        .map(|_| 0.0);
    rows.into_iter()
        .map(|(mut row, idx)| {
            let ts = || idx.iter().map(|&i| &ticks[i]);
            row.ticks = idx.len();
            // Weighted by the images of each tick: all the images over all the steps' time,
            // not a mean of rates (a short tick would count as much as a long one).
            let (images, seconds) = idx
                .iter()
                .filter_map(|&i| {
                    let rate = ticks[i].finite(IMG_PER_S).filter(|r| *r > 0.0)?;
                    Some((tick_images(ticks, i)?, rate))
                })
                .fold((0.0, 0.0), |(n, s), (images, rate)| {
                    (n + images, s + images / rate)
                });
            row.img_per_s = (seconds > 0.0)
                .then(|| images / seconds)
                .or_else(|| mean(ts().filter_map(|t| t.finite(IMG_PER_S))));
            row.sec_per_kimg = row
                .img_per_s
                .filter(|v| *v > 0.0)
                .map(|v| 1000.0 / v)
                .or_else(|| mean(ts().filter_map(|t| t.finite(SEC_PER_KIMG))));
            row.peak_rss_mb = max(ts().filter_map(|t| t.finite(PEAK_RSS)));
            let end_time = ts().rev().find_map(|t| t.finite(TIME));
            row.seconds = match (prev_end_time, end_time) {
                (Some(a), Some(b)) if b >= a => Some(b - a),
                _ => None,
            };
            if end_time.is_some() {
                prev_end_time = end_time;
            }
            row
        })
        .collect()
}

/// The images of tick row `i`: its kimg less the previous tick row's (0 before the first).
fn tick_images(ticks: &[Tick], i: usize) -> Option<f64> {
    let kimg = ticks[i].finite(KIMG)?;
    let before = ticks[..i]
        .iter()
        .rev()
        .find(|t| t.finite(IMG_PER_S).is_some())
        .and_then(|t| t.finite(KIMG))
        .unwrap_or(0.0);
    Some((kimg - before) * 1000.0).filter(|n| *n > 0.0)
}

/// `3h 05m 12s`, `4m 02s`, `12.3s`.
pub fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".to_string();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let s = seconds.round() as u64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else {
        format!("{m}m {s:02}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{parse_metrics, segments};

    #[test]
    fn summary_and_per_resolution_rows() {
        let text = "\
{\"tick\":1,\"kimg\":1,\"resolution\":4,\"stage\":0,\"phase\":\"stable\",\"Speed/img_per_s\":500,\"Speed/sec_per_kimg\":2,\"time_s\":2,\"Mem/peak_rss_mb\":100}
{\"tick\":2,\"kimg\":2,\"resolution\":4,\"stage\":0,\"phase\":\"stable\",\"Speed/img_per_s\":500,\"Speed/sec_per_kimg\":2,\"time_s\":4,\"Mem/peak_rss_mb\":120}
{\"tick\":3,\"kimg\":3,\"resolution\":8,\"stage\":1,\"phase\":\"fade\",\"Speed/img_per_s\":250,\"time_s\":8,\"Loss/D\":NaN}
{\"tick\":4,\"kimg\":4,\"resolution\":8,\"stage\":1,\"phase\":\"stable\",\"Speed/img_per_s\":250,\"time_s\":12,\"Event/rollback\":1,\"Loss/G\":null}
";
        let ticks = parse_metrics(text).ticks;
        let st = compute(&ticks, &segments(&ticks));
        assert_eq!(st.ticks, 4);
        assert_eq!(st.last_tick, Some(4));
        assert_eq!(st.kimg, Some(4.0));
        assert_eq!(st.resolution, Some(8));
        assert_eq!(st.stage, Some(1));
        assert_eq!(st.phase.as_deref(), Some("stable"));
        assert_eq!(st.elapsed_s, Some(12.0));
        assert!((st.avg_img_per_s.unwrap() - 4000.0 / 12.0).abs() < 1e-9);
        assert_eq!(st.peak_rss_mb, Some(120.0));
        assert_eq!(st.rollbacks, 1);
        assert_eq!(st.non_finite, 2);
        assert_eq!(st.non_finite_keys, ["Loss/D", "Loss/G"]);

        let rows = &st.per_resolution;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].resolution, Some(4));
        assert_eq!(rows[0].ticks, 2);
        assert_eq!(rows[0].sec_per_kimg, Some(2.0));
        assert_eq!(rows[0].seconds, Some(4.0));
        assert_eq!(rows[1].phases, ["fade", "stable"]);
        assert_eq!(rows[1].kimg, (2.0, 4.0));
        assert_eq!(rows[1].sec_per_kimg, Some(4.0), "from img/s");
        assert_eq!(rows[1].seconds, Some(8.0));
        assert_eq!(rows[1].peak_rss_mb, None);
    }

    /// Ticks of 64, 64 and 48 images at 129.08, 82.20 and 83.93 img/s: 176 images in
    /// 1.846 s, 95.3 img/s (a mean of the rates would say 98.4).
    #[test]
    fn speed_per_resolution_is_weighted_by_each_ticks_images() {
        let text = "\
{\"tick\":1,\"kimg\":0.064,\"resolution\":16,\"Speed/img_per_s\":129.08,\"Speed/sec_per_kimg\":7.747}
{\"tick\":2,\"kimg\":0.128,\"resolution\":16,\"Speed/img_per_s\":82.20,\"Speed/sec_per_kimg\":12.165}
{\"tick\":3,\"kimg\":0.176,\"resolution\":16,\"Speed/img_per_s\":83.93,\"Speed/sec_per_kimg\":11.915}
";
        let ticks = parse_metrics(text).ticks;
        let row = &compute(&ticks, &segments(&ticks)).per_resolution[0];
        let seconds = 64.0 / 129.08 + 64.0 / 82.20 + 48.0 / 83.93;
        let img_per_s = row.img_per_s.unwrap();
        assert!((img_per_s - 176.0 / seconds).abs() < 1e-9, "{img_per_s}");
        assert!((row.sec_per_kimg.unwrap() * img_per_s - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn empty_run_has_empty_stats() {
        let st = compute(&[], &[]);
        assert_eq!(st, RunStats::default());
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(12.34), "12.3s");
        assert_eq!(format_duration(242.0), "4m 02s");
        assert_eq!(
            format_duration(3.0 * 3600.0 + 5.0 * 60.0 + 12.0),
            "3h 05m 12s"
        );
        assert_eq!(format_duration(f64::NAN), "—");
    }
}
