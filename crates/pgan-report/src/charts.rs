//! Training curves over kimg, drawn with plotters' SVG backend into strings
//! that the HTML page inlines.
//!
//! Every chart shades the fade-in phases, draws a dashed vertical line where
//! the resolution or phase changes and labels each new resolution at the top
//! of the plot, so a loss spike can be read against the growth schedule.
//! NaN and infinite values are not drawn: the line is broken there and the
//! chart carries a note listing where they were. Ticks with
//! `"Event/rollback"` set are marked with a red line.
//!
//! The series keys are the trainer's own ([`pgan_spec::metrics`]); a test checks that every
//! series is a key the trainer writes.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::error::{ReportError, Result};
use crate::run::{Segment, Tick};

/// Pixel size of each chart's SVG (the page scales it to its column width).
pub const CHART_SIZE: (u32, u32) = (720, 320);

use pgan_spec::metrics as key;

/// Key marking a tick on which the trainer rolled back to a checkpoint.
pub const ROLLBACK_KEY: &str = key::ROLLBACK;

/// What one chart plots.
#[derive(Debug, Clone, Copy)]
pub struct ChartSpec {
    /// Title shown above the chart.
    pub title: &'static str,
    /// Y-axis description.
    pub y_desc: &'static str,
    /// `(metrics key, legend label)` of each series.
    pub series: &'static [(&'static str, &'static str)],
    /// Optional charts (evaluation metrics) are left out silently when none
    /// of their keys has a value; the others get a "no data" notice.
    pub optional: bool,
    /// A series whose every value is 0 is a term the run's loss does not have (the penalties
    /// of the logistic losses without R1, the drift of all but WGAN-GP): left out, not drawn
    /// as a flat line that reads as a measurement.
    pub zero_is_absent: bool,
}

/// The report's charts, in page order.
pub const CHARTS: &[ChartSpec] = &[
    ChartSpec {
        title: "Losses",
        y_desc: "loss",
        series: &[(key::LOSS_D, "D loss"), (key::LOSS_G, "G loss")],
        optional: false,
        zero_is_absent: false,
    },
    ChartSpec {
        title: "Loss terms",
        y_desc: "loss term",
        series: &[
            (key::LOSS_D_PENALTY, "D: gradient penalty"),
            (key::LOSS_D_DRIFT, "D: drift"),
            (key::LOSS_G_FEATURE_MATCHING, "G: feature matching"),
        ],
        optional: false,
        zero_is_absent: true,
    },
    ChartSpec {
        title: "Discriminator outputs",
        y_desc: "mean D(x)",
        series: &[(key::D_REAL, "D(real)"), (key::D_FAKE, "D(fake)")],
        optional: false,
        zero_is_absent: false,
    },
    ChartSpec {
        title: "Gradient norms",
        y_desc: "L2 norm",
        series: &[(key::GRAD_G_NORM, "G"), (key::GRAD_D_NORM, "D")],
        optional: false,
        zero_is_absent: false,
    },
    ChartSpec {
        title: "Sliced Wasserstein distance",
        y_desc: "SWD (lower is better)",
        series: &[(key::SWD, "fake vs real")],
        optional: true,
        zero_is_absent: false,
    },
    ChartSpec {
        title: "Fréchet Inception Distance",
        y_desc: "FID (lower is better)",
        series: &[(key::FID, "FID")],
        optional: true,
        zero_is_absent: false,
    },
    ChartSpec {
        title: "MS-SSIM between samples",
        y_desc: "MS-SSIM",
        series: &[(key::MSSSIM_FAKE, "fake"), (key::MSSSIM_REAL, "real")],
        optional: true,
        zero_is_absent: false,
    },
    ChartSpec {
        title: "Training speed",
        y_desc: "images / s",
        series: &[(key::IMG_PER_S, "images/s")],
        optional: false,
        zero_is_absent: false,
    },
];

/// Series colours (Okabe–Ito, readable by colour-blind viewers).
const PALETTE: [RGBColor; 4] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
];
const FADE_BAND: RGBColor = RGBColor(255, 196, 0);
const BOUNDARY: RGBColor = RGBColor(110, 110, 110);
const ROLLBACK: RGBColor = RGBColor(200, 0, 0);

/// One legend entry, rendered by the page next to the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    /// Series label.
    pub label: String,
    /// CSS colour, `#rrggbb`.
    pub color: String,
    /// How many finite points were drawn.
    pub points: usize,
}

/// A drawn chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title, from the [`ChartSpec`].
    pub title: String,
    /// The `<svg>` element.
    pub svg: String,
    /// Series shown.
    pub legend: Vec<LegendEntry>,
    /// Notes to print under the chart (skipped non-finite values).
    pub notes: Vec<String>,
    /// Rollback events marked on the chart.
    pub rollbacks: usize,
}

/// Draws every chart of [`CHARTS`] that has data. Returns the charts and
/// notices for charts left out for lack of data.
pub fn draw_all(ticks: &[Tick], segments: &[Segment]) -> Result<(Vec<Chart>, Vec<String>)> {
    let mut charts = Vec::new();
    let mut notices = Vec::new();
    for spec in CHARTS {
        // A series no row has (a run from before its key was written) is no term either.
        let absent = spec.zero_is_absent && {
            let data: Vec<SeriesData> = spec
                .series
                .iter()
                .map(|(key, _)| collect_series(ticks, key))
                .collect();
            data.iter().any(|d| d.points > 0)
                && data.iter().all(|d| {
                    d.non_finite.is_empty() && d.runs.iter().flatten().all(|&(_, v)| v == 0.0)
                })
        };
        if absent {
            notices.push(format!(
                "chart '{}' left out: every value is 0 (the run's loss has no such terms)",
                spec.title
            ));
            continue;
        }
        match draw_chart(spec, ticks, segments)? {
            Some(c) => charts.push(c),
            None if !spec.optional => notices.push(format!(
                "chart '{}' left out: no drawable values (finite, within the f32 range) of {} yet",
                spec.title,
                spec.series
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => {}
        }
    }
    Ok((charts, notices))
}

/// The points of one series: runs of consecutive finite values (a
/// non-finite value breaks the line), plus where the non-finite ones were.
struct SeriesData {
    runs: Vec<Vec<(f64, f64)>>,
    points: usize,
    non_finite: Vec<(usize, f64)>, // (line, kimg)
}

fn collect_series(ticks: &[Tick], key: &str) -> SeriesData {
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    let mut non_finite = Vec::new();
    let mut points = 0;
    for t in ticks {
        let (Some(x), Some(v)) = (t.kimg(), t.get(key)) else {
            continue;
        };
        if plottable(x) && plottable(v) {
            runs.last_mut().expect("never empty").push((x, v));
            points += 1;
        } else {
            non_finite.push((t.line, x));
            if !runs.last().expect("never empty").is_empty() {
                runs.push(Vec::new());
            }
        }
    }
    runs.retain(|r| !r.is_empty());
    SeriesData {
        runs,
        points,
        non_finite,
    }
}

/// Whether a value can be drawn (the others are noted as non-finite): finite and within f32's
/// range. The trainer logs f32 values; a larger one (a hand-edited or damaged file) would
/// overflow the axis range, and the axis tick generation would never end.
fn plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= f32::MAX as f64
}

/// `(min, max)` widened so that the range is never empty, plus `pad` of
/// its width on both sides.
fn padded_range(min: f64, max: f64, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (min, max);
    if hi - lo <= f64::EPSILON * lo.abs().max(hi.abs()).max(1.0) {
        let half = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= half;
        hi += half;
    }
    let w = hi - lo;
    (lo - w * pad, hi + w * pad)
}

/// Tick label text: few digits, no trailing zeros, scientific for extremes.
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let decimals = if a >= 100.0 {
            0
        } else if a >= 10.0 {
            1
        } else if a >= 1.0 {
            2
        } else {
            3
        };
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

fn css_color(c: &RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn chart_err(title: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Chart {
        chart: title.to_string(),
        message,
    }
}

/// Draws one chart; `None` when none of its series has a finite point.
pub fn draw_chart(spec: &ChartSpec, ticks: &[Tick], segments: &[Segment]) -> Result<Option<Chart>> {
    let data: Vec<SeriesData> = spec
        .series
        .iter()
        .map(|(key, _)| collect_series(ticks, key))
        .map(|data| {
            match spec.zero_is_absent && data.runs.iter().flatten().all(|&(_, v)| v == 0.0) {
                true => SeriesData {
                    runs: vec![Vec::new()],
                    points: 0,
                    non_finite: data.non_finite,
                },
                false => data,
            }
        })
        .collect();
    let all_points = || data.iter().flat_map(|d| d.runs.iter().flatten());
    if all_points().next().is_none() {
        return Ok(None);
    }

    // x spans the whole run (not just this series) so that charts line up.
    let xs = ticks
        .iter()
        .filter_map(Tick::kimg)
        .filter(|&x| plottable(x));
    let (x_min, x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let x_min = segments
        .first()
        .filter(|s| plottable(s.start_kimg))
        .map_or(x_min, |s| s.start_kimg.min(x_min));
    let (x0, x1) = padded_range(x_min, x_max, 0.01);
    let (y_min, y_max) = all_points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    // Headroom at the top for the resolution labels.
    let (y0, mut y1) = padded_range(y_min, y_max, 0.05);
    y1 += (y1 - y0) * 0.08;

    let mut svg = String::new();
    let err = chart_err(spec.title);
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        draw_into(&root, spec, &data, segments, ticks, (x0, x1), (y0, y1))
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }

    let legend = spec
        .series
        .iter()
        .zip(&data)
        .enumerate()
        .filter(|(_, (_, d))| d.points > 0 || !d.non_finite.is_empty())
        .map(|(i, ((_, label), d))| LegendEntry {
            label: label.to_string(),
            color: css_color(&PALETTE[i % PALETTE.len()]),
            points: d.points,
        })
        .collect();
    let notes = spec
        .series
        .iter()
        .zip(&data)
        .filter(|(_, d)| !d.non_finite.is_empty())
        .map(|((key, _), d)| {
            let shown: Vec<String> = d
                .non_finite
                .iter()
                .take(8)
                .map(|(line, kimg)| format!("line {line} (kimg {})", format_number(*kimg)))
                .collect();
            let more = d.non_finite.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!(
                "{key}: {} value(s) not drawn (not finite, or beyond the f32 range): {}{more}",
                d.non_finite.len(),
                shown.join(", ")
            )
        })
        .collect();
    let rollbacks = rollback_kimgs(ticks).count();
    Ok(Some(Chart {
        title: spec.title.to_string(),
        svg,
        legend,
        notes,
        rollbacks,
    }))
}

/// kimg of the ticks that carry a rollback event.
fn rollback_kimgs(ticks: &[Tick]) -> impl Iterator<Item = f64> + '_ {
    ticks
        .iter()
        .filter(|t| t.finite(ROLLBACK_KEY).is_some_and(|v| v != 0.0))
        .filter_map(Tick::kimg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw_into(
    root: &Area<'_>,
    spec: &ChartSpec,
    data: &[SeriesData],
    segments: &[Segment],
    ticks: &[Tick],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> std::result::Result<(), Box<dyn std::error::Error + 'static>> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(root)
        .margin_top(8)
        .margin_right(16)
        .margin_left(6)
        .margin_bottom(4)
        .x_label_area_size(50)
        .y_label_area_size(76)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;

    // Fade-in phases as shaded bands (behind everything else).
    chart
        .draw_series(segments.iter().filter(|s| s.is_fade()).map(|s| {
            Rectangle::new(
                [(s.start_kimg.max(x0), y0), (s.end_kimg.min(x1), y1)],
                FADE_BAND.mix(0.18).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;

    let label_font = ("sans-serif", 20).into_font();
    chart
        .configure_mesh()
        .x_desc("kimg")
        .y_desc(spec.y_desc)
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|v| format_number(*v))
        .y_label_formatter(&|v| format_number(*v))
        .label_style(label_font.clone())
        .axis_desc_style(("sans-serif", 20))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(244, 244, 244))
        .draw()
        .map_err(|e| e.to_string())?;

    // Stage boundaries: dashed lines where resolution or phase changes.
    for s in segments.iter().skip(1) {
        chart
            .draw_series(std::iter::once(DashedPathElement::new(
                vec![(s.start_kimg, y0), (s.start_kimg, y1)],
                5,
                4,
                BOUNDARY.stroke_width(1),
            )))
            .map_err(|e| e.to_string())?;
    }

    // Resolution labels at the top, at the start of each resolution, where they fit before the
    // next resolution begins: a stage too short for its label gets none rather than one that
    // reads as the next stage's.
    let text_style = ("sans-serif", 20)
        .into_font()
        .style(FontStyle::Bold)
        .color(&RGBColor(70, 70, 70));
    let mut starts: Vec<(u32, f64)> = Vec::new();
    for s in segments {
        if let Some(r) = s.resolution {
            if starts.last().is_none_or(|&(last, _)| last != r) {
                starts.push((r, s.start_kimg.max(x0)));
            }
        }
    }
    let mut last_label_end = i32::MIN;
    for (i, &(r, start)) in starts.iter().enumerate() {
        let text = format!("{r}²");
        let (px, _) = chart.backend_coord(&(start, y1));
        let next_px = starts
            .get(i + 1)
            .map_or(chart.backend_coord(&(x1, y1)).0, |&(_, next)| {
                chart.backend_coord(&(next, y1)).0
            });
        let width = 10 * text.chars().count() as i32 + 6;
        if px < last_label_end || px.saturating_add(width) > next_px {
            continue;
        }
        last_label_end = px.saturating_add(width + 4);
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((start, y1)) + Text::new(text, (4, 4), text_style.clone()),
            ))
            .map_err(|e| e.to_string())?;
    }

    // Rollback events.
    for x in rollback_kimgs(ticks) {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, y0), (x, y1)],
                ROLLBACK.stroke_width(2),
            )))
            .map_err(|e| e.to_string())?;
    }

    for (i, d) in data.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        for run in &d.runs {
            if run.len() == 1 {
                chart
                    .draw_series(PointSeries::of_element(
                        run.iter().copied(),
                        3,
                        color.filled(),
                        &|c, s, st| Circle::new(c, s, st),
                    ))
                    .map_err(|e| e.to_string())?;
            } else {
                chart
                    .draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Test helpers that read back what a chart's SVG contains.
#[cfg(test)]
pub(crate) mod inspect {
    /// The trimmed content of every `<text>` element.
    pub fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    /// Distinct x pixel positions of the dashed stage-boundary lines.
    pub fn boundary_xs(svg: &str) -> Vec<i32> {
        let mut xs: Vec<i32> = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#6E6E6E\""))
            .filter_map(|l| {
                let pts = l.split("points=\"").nth(1)?;
                let mut it = pts
                    .split_whitespace()
                    .map(|p| p.split(',').next().unwrap_or(""));
                let (a, b) = (it.next()?, it.next()?);
                (a == b).then(|| a.parse().ok()).flatten()
            })
            .collect();
        xs.sort_unstable();
        xs.dedup();
        xs
    }
}

#[cfg(test)]
mod tests {
    use super::inspect::{boundary_xs, texts};
    use super::*;
    use crate::run::{parse_metrics, segments};

    fn ticks(text: &str) -> Vec<Tick> {
        parse_metrics(text).ticks
    }

    #[test]
    fn number_format_is_short() {
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(1.5), "1.5");
        assert_eq!(format_number(2.0), "2");
        assert_eq!(format_number(250.0), "250");
        assert_eq!(format_number(12.34), "12.3");
        assert_eq!(format_number(-0.125), "-0.125");
        assert_eq!(format_number(0.0001), "1.0e-4");
        assert_eq!(format_number(2.5e6), "2.5e6");
    }

    #[test]
    fn padded_range_never_empty() {
        let (lo, hi) = padded_range(3.0, 3.0, 0.0);
        assert!(lo < 3.0 && hi > 3.0);
        let (lo, hi) = padded_range(0.0, 0.0, 0.0);
        assert_eq!((lo, hi), (-1.0, 1.0));
        let (lo, hi) = padded_range(0.0, 10.0, 0.1);
        assert_eq!((lo, hi), (-1.0, 11.0));
    }

    /// A loss without a term writes 0 for it: that series is left out of the loss terms'
    /// chart, and the chart too when no term is there (a key no row has, as in runs from
    /// before it was written, counts as none), with a notice saying why.
    #[test]
    fn terms_the_loss_does_not_have_are_left_out() {
        let (penalty, drift) = (key::LOSS_D_PENALTY, key::LOSS_D_DRIFT);
        let r1 = ticks(&format!(
            "{{\"kimg\":1,\"{penalty}\":0.5,\"{drift}\":0}}\n\
             {{\"kimg\":2,\"{penalty}\":0.25,\"{drift}\":0}}\n"
        ));
        let spec = CHARTS.iter().find(|c| c.zero_is_absent).unwrap();
        let chart = draw_chart(spec, &r1, &segments(&r1)).unwrap().unwrap();
        let labels: Vec<&str> = chart.legend.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["D: gradient penalty"]);
        // G's feature-matching term joins D's terms when the run has it.
        let matching = key::LOSS_G_FEATURE_MATCHING;
        let matched = ticks(&format!(
            "{{\"kimg\":1,\"{penalty}\":0.5,\"{drift}\":0,\"{matching}\":0.1}}\n"
        ));
        let chart = draw_chart(spec, &matched, &segments(&matched));
        let chart = chart.unwrap().unwrap();
        let labels: Vec<&str> = chart.legend.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["D: gradient penalty", "G: feature matching"]);
        let none = ticks(&format!("{{\"kimg\":1,\"{penalty}\":0,\"{drift}\":0}}\n"));
        let (charts, notices) = draw_all(&none, &segments(&none)).unwrap();
        assert!(charts.iter().all(|c| c.title != spec.title));
        assert!(
            notices
                .iter()
                .any(|n| n.contains(spec.title) && n.contains("every value is 0")),
            "{notices:?}"
        );
    }

    #[test]
    fn values_beyond_f32s_range_are_noted_not_drawn() {
        let t = ticks(
            "{\"kimg\":1,\"D/real\":0.0}\n\
             {\"kimg\":2,\"D/real\":1.7e308}\n\
             {\"kimg\":1e308,\"D/real\":1.0}\n\
             {\"kimg\":3,\"D/real\":2.0}\n",
        );
        let s = collect_series(&t, "D/real");
        assert_eq!(s.points, 2);
        assert_eq!(s.non_finite.len(), 2);
        for spec in CHARTS.iter() {
            // Draws (or leaves out) every chart without hanging on an overflowing axis.
            let _ = draw_chart(spec, &t, &segments(&t)).unwrap();
        }
    }

    #[test]
    fn non_finite_values_break_the_line_and_are_noted() {
        let t = ticks(
            "{\"kimg\":1,\"Loss/D\":1.0,\"Loss/G\":2}\n\
             {\"kimg\":2,\"Loss/D\":NaN,\"Loss/G\":2}\n\
             {\"kimg\":3,\"Loss/D\":3.0,\"Loss/G\":2}\n\
             {\"kimg\":4,\"Loss/D\":4.0,\"Loss/G\":null}\n",
        );
        let s = collect_series(&t, "Loss/D");
        assert_eq!(s.points, 3);
        assert_eq!(s.runs, vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]);
        assert_eq!(s.non_finite, vec![(2, 2.0)]);

        let chart = draw_chart(&CHARTS[0], &t, &segments(&t)).unwrap().unwrap();
        assert!(chart.svg.starts_with("<svg"), "{}", &chart.svg[..40]);
        assert!(!chart.svg.contains("NaN"));
        assert_eq!(chart.notes.len(), 2);
        assert!(
            chart.notes[0].starts_with("Loss/D: 1 value(s) not drawn (not finite"),
            "{:?}",
            chart.notes
        );
        assert!(chart.notes[0].contains("line 2 (kimg 2)"));
        assert!(chart.notes[1].contains("line 4"));
        assert_eq!(chart.legend.len(), 2);
        assert_eq!(chart.legend[0].points, 3);
    }

    /// A series whose key the trainer never writes would be an empty chart line in every report.
    #[test]
    fn every_chart_series_is_a_key_the_trainer_writes() {
        for chart in CHARTS {
            assert!(!chart.series.is_empty(), "{} has no series", chart.title);
            for (series, _) in chart.series {
                assert!(
                    key::is_written(series),
                    "{}: the trainer never writes {series}",
                    chart.title
                );
                // A chart shown on every report must have data on every healthy tick.
                assert!(
                    chart.optional || key::EVERY_TICK.contains(series),
                    "{}: {series} is not written every tick, so the chart must be optional",
                    chart.title
                );
            }
        }
    }

    #[test]
    fn charts_without_data_are_left_out_with_a_notice() {
        let t = ticks("{\"kimg\":1,\"Loss/D\":1.0}\n{\"kimg\":2,\"Loss/D\":0.5}\n");
        let (charts, notices) = draw_all(&t, &segments(&t)).unwrap();
        assert_eq!(charts.len(), 1);
        assert_eq!(charts[0].title, "Losses");
        assert_eq!(charts[0].legend.len(), 1, "G loss has no values");
        // penalty, D outputs, grads, speed; optional metric charts are silent
        assert_eq!(notices.len(), 4, "{notices:?}");
        assert!(notices.iter().all(|n| n.contains("no drawable values")));
    }

    #[test]
    fn stage_markers_are_drawn() {
        let mut text = String::new();
        for i in 0..12 {
            let (res, phase) = match i {
                0..=3 => (4, "stable"),
                4..=5 => (8, "fade"),
                6..=7 => (8, "stable"),
                8..=9 => (16, "fade"),
                _ => (16, "stable"),
            };
            text.push_str(&format!(
                "{{\"kimg\":{},\"resolution\":{res},\"phase\":\"{phase}\",\"Loss/D\":{},\"Event/rollback\":{}}}\n",
                i as f64 * 0.5 + 0.5,
                1.0 / (i as f64 + 1.0),
                u8::from(i == 7)
            ));
        }
        let t = ticks(&text);
        let segs = segments(&t);
        let chart = draw_chart(&CHARTS[0], &t, &segs).unwrap().unwrap();
        let texts = texts(&chart.svg);
        for label in ["4²", "8²", "16²"] {
            assert_eq!(
                texts.iter().filter(|t| *t == label).count(),
                1,
                "{label} in {texts:?}"
            );
        }
        // four boundaries (4→8 fade, →8 stable, →16 fade, →16 stable)
        assert_eq!(
            boundary_xs(&chart.svg).len(),
            4,
            "{:?}",
            boundary_xs(&chart.svg)
        );
        // two fade bands
        assert_eq!(chart.svg.matches("fill=\"#FFC400\"").count(), 2);
        assert!(chart.svg.contains("stroke=\"#C80000\""), "rollback line");
        assert_eq!(chart.rollbacks, 1);
    }

    #[test]
    fn a_stage_too_short_for_its_label_gets_none() {
        // 4x4 for 0.05 of 20 kimg: its label would cover the 8x8 fade's boundary.
        let mut text = String::new();
        for i in 1..=40 {
            let kimg = i as f64 * 0.5;
            let (res, phase, start) = match kimg {
                k if k <= 0.05 => (4, "stable", 0.0),
                k if k <= 10.0 => (8, "fade", 0.05),
                _ => (8, "stable", 10.0),
            };
            text.push_str(&format!(
                "{{\"kimg\":{kimg},\"resolution\":{res},\"phase\":\"{phase}\",\
                 \"phase_start_kimg\":{start},\"Loss/D\":1.0}}\n"
            ));
        }
        text.insert_str(0, "{\"kimg\":0.04,\"resolution\":4,\"phase\":\"stable\",\"phase_start_kimg\":0,\"Loss/D\":1.0}\n");
        let t = ticks(&text);
        let chart = draw_chart(&CHARTS[0], &t, &segments(&t)).unwrap().unwrap();
        let texts = texts(&chart.svg);
        assert!(!texts.iter().any(|t| t == "4²"), "{texts:?}");
        assert_eq!(texts.iter().filter(|t| *t == "8²").count(), 1, "{texts:?}");
    }
}
