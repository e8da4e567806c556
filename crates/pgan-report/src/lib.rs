//! `pgan report RUN_DIR`: turns a training run directory into one
//! self-contained HTML file.
//!
//! This crate owns reading a run directory written by the trainer
//! (`metrics.jsonl`, `config.toml`, `log.txt`, `samples/*.png`; see [`run`]),
//! the summary numbers ([`stats`]), the training-curve charts drawn to SVG
//! with plotters ([`charts`]) and the HTML page ([`html`]). The page needs
//! nothing from the network to be viewed: CSS is inline, charts are inline
//! `<svg>`, sample sheets are `data:` URIs, and there is no script.
//!
//! Policy for imperfect input: a missing run directory or `metrics.jsonl`
//! are errors ([`ReportError`]); an empty `metrics.jsonl` (no tick written
//! yet), lines of it that are not rows, missing config, log or samples, and
//! NaN/inf values all still produce a report, with notices saying what is
//! missing or left out.
//!
//! ```no_run
//! # fn main() -> Result<(), pgan_report::ReportError> {
//! let run = std::path::Path::new("runs/emoji-64");
//! let summary = pgan_report::write_report(run, &pgan_report::default_output_path(run))?;
//! println!("wrote {} ({} bytes)", summary.path.display(), summary.bytes);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod charts;
pub mod error;
pub mod html;
pub mod run;
pub mod stats;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub use error::{ReportError, Result};
pub use run::RunData;

/// File name of the report inside the run directory, when the caller does
/// not choose another output path.
pub const REPORT_FILE: &str = "report.html";

/// `RUN_DIR/report.html`.
pub fn default_output_path(run_dir: &Path) -> PathBuf {
    run_dir.join(REPORT_FILE)
}

/// Whether `path` holds a report this crate wrote: its first KiB has the generator tag (or,
/// written before the tag, the title every report has). Reads no more than that.
pub fn is_pgan_report(path: &Path) -> bool {
    use std::io::Read as _;
    let Ok((file, _)) = run::open_regular(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(1024);
    if file.take(1024).read_to_end(&mut head).is_err() {
        return false;
    }
    let head = String::from_utf8_lossy(&head);
    head.starts_with("<!DOCTYPE html>")
        && (head.contains(html::GENERATOR_META) || head.contains("<title>pgan report — "))
}

/// A rendered report.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run's name (its directory name).
    pub run_name: String,
    /// The whole HTML page.
    pub html: String,
    /// Number of metrics lines (ticks) read.
    pub ticks: usize,
    /// Number of charts drawn.
    pub charts: usize,
    /// Notices shown at the top of the page (missing files, charts left out,
    /// non-finite values).
    pub notices: Vec<String>,
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    /// The output file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Number of ticks in the report.
    pub ticks: usize,
    /// Number of charts in the report.
    pub charts: usize,
    /// The report's notices.
    pub notices: Vec<String>,
}

/// How many lines of `metrics.jsonl` are not rows, the first of them named.
fn not_rows_notice(not_rows: &[run::NotARow]) -> Option<String> {
    const NAMED: usize = 3;
    let first = not_rows.first()?;
    let mut named = format!("line {} ({})", first.line, first.why);
    for n in not_rows.iter().skip(1).take(NAMED - 1) {
        named.push_str(&format!(", line {} ({})", n.line, n.why));
    }
    if not_rows.len() > NAMED {
        named.push_str(&format!(" and {} more", not_rows.len() - NAMED));
    }
    Some(format!(
        "{} line(s) of metrics.jsonl are not rows (a note, a row edited by hand) and were left \
         out: {named}",
        not_rows.len()
    ))
}

/// The most phases the charts mark (bands, boundaries, labels in every chart): a run's schedule
/// has at most 19, a stable and a fade phase per resolution. Rows that change phase more often
/// are not one run's (joined or edited by hand), and marking each change would swell the page
/// by kilobytes per row.
const MAX_MARKED_PHASES: usize = 64;

/// Reads `run_dir` and renders the report in memory.
pub fn build_report(run_dir: &Path) -> Result<Report> {
    let data = RunData::load(run_dir)?;
    let segments = run::segments(&data.ticks);
    let stats = stats::compute(&data.ticks, &segments);
    let mut notices = Vec::new();
    let marked = if segments.len() > MAX_MARKED_PHASES {
        notices.push(format!(
            "metrics.jsonl changes resolution or phase {} times (a run's schedule has at most \
             19 phases): its rows are not one run's, and the charts do not mark the phases",
            segments.len() - 1
        ));
        &segments[..0]
    } else {
        &segments[..]
    };
    let (charts, chart_notices) = charts::draw_all(&data.ticks, marked)?;

    if let Some(line) = data.torn_last_line {
        notices.push(format!(
            "the last line of metrics.jsonl (line {line}) is incomplete, as a run killed or out \
             of disk while writing it leaves it, and was left out"
        ));
    }
    if let Some(notice) = not_rows_notice(&data.not_rows) {
        notices.push(notice);
    }
    if run::tick_count(&data.ticks) == 0 {
        notices.push(
            "no ticks yet: metrics.jsonl holds no tick (the trainer has not finished its first \
             one)"
                .to_string(),
        );
    } else {
        notices.extend(chart_notices);
        let without_kimg = data.ticks.iter().filter(|t| t.kimg().is_none()).count();
        if without_kimg > 0 {
            notices.push(format!(
                "{without_kimg} tick(s) have no finite kimg and are not in the charts"
            ));
        }
    }
    if stats.non_finite > 0 {
        notices.push(format!(
            "{} non-finite value(s) (NaN/inf) in metrics.jsonl, not drawn: {}",
            stats.non_finite,
            stats.non_finite_keys.join(", ")
        ));
    }
    notices.extend(data.file_notices.iter().cloned());
    if data.config.is_none() {
        notices.push("no config.toml in the run directory".to_string());
    }
    if data.log.is_none() {
        notices.push("no log.txt in the run directory".to_string());
    }
    if data.sample_count == 0 {
        notices.push("no sample sheets in samples/".to_string());
    }

    let html = html::render(&html::Page {
        run: &data,
        stats: &stats,
        charts: &charts,
        notices: &notices,
    });
    Ok(Report {
        run_name: data.name,
        html,
        ticks: run::tick_count(&data.ticks),
        charts: charts.len(),
        notices,
    })
}

/// Builds the report for `run_dir` and writes it to `out` atomically: the
/// page goes to a temporary file next to `out`, which is then renamed over
/// it, so a browser never sees half a report.
pub fn write_report(run_dir: &Path, out: &Path) -> Result<ReportSummary> {
    let report = build_report(run_dir)?;
    write_atomic(out, report.html.as_bytes())?;
    Ok(ReportSummary {
        path: out.to_path_buf(),
        bytes: report.html.len() as u64,
        ticks: report.ticks,
        charts: report.charts,
        notices: report.notices,
    })
}

fn write_atomic(out: &Path, bytes: &[u8]) -> Result<()> {
    let target = pgan_spec::output::replaceable_file(out).map_err(|e| ReportError::io(out, e))?;
    let file_name = target
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| REPORT_FILE.into());
    // `.<name>.tmp-<pid>`, the name every pgan command gives its temporary files, so that the
    // CLI's signal handler and a later run's clean-up recognise it.
    let mut tmp_name = pgan_spec::output::temp_prefix(&file_name);
    tmp_name.push(std::process::id().to_string());
    let tmp = target.with_file_name(tmp_name);
    let result = (|| {
        let mut f = pgan_spec::output::create_temp(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        pgan_spec::output::placing(&[out], || pgan_spec::output::place(&tmp, &target, out))
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ReportError::io(out, e)
    })
}

#[cfg(test)]
mod fixture;

#[cfg(test)]
mod tests {
    use super::*;

    /// A link placed at the report's temporary name is not written through.
    #[cfg(unix)]
    #[test]
    fn a_link_at_the_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("report.html");
        let mut name = pgan_spec::output::temp_prefix(std::ffi::OsStr::new("report.html"));
        name.push(std::process::id().to_string());
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        write_atomic(&out, b"<html>").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&out).unwrap(), b"<html>");
    }

    fn fixture_run() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("emoji-16");
        fixture::write_run(&run, None);
        (dir, run)
    }

    #[test]
    fn full_report_from_fixture() {
        let (_dir, run) = fixture_run();
        let report = build_report(&run).unwrap();
        let h = &report.html;
        assert_eq!(report.run_name, "emoji-16");
        assert_eq!(report.ticks, fixture::TICKS);
        // losses, penalty, D outputs, grads, SWD, FID, MS-SSIM, speed
        assert_eq!(report.charts, 8);
        assert_eq!(h.matches("<svg").count(), 8);
        assert!(h.contains("Fréchet Inception Distance"));
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.contains("<title>pgan report — emoji-16</title>"));

        // Latest sample (tick-000040), the timeline, and nothing else embedded.
        let latest = fs::read(run.join("samples/tick-000040.png")).unwrap();
        assert!(
            h.contains(&html::png_data_uri(&latest)),
            "latest sample not embedded"
        );
        let older = fs::read(run.join("samples/tick-000020.png")).unwrap();
        assert!(!h.contains(&html::png_data_uri(&older)));
        let timeline = fs::read(run.join("samples/timeline.png")).unwrap();
        assert!(h.contains(&html::png_data_uri(&timeline)));
        assert_eq!(h.matches("data:image/png;base64,").count(), 2);
        assert!(h.contains("latest of 2"));

        // Config verbatim but escaped.
        assert!(
            h.contains("loss = &quot;wgan-gp&quot;   # &lt;lambda&gt; = 10 &amp; drift = 0.001")
        );
        assert!(!h.contains("<lambda>"));

        // Stage boundary markers: every chart labels 4², 8², 16² and shades
        // the two fade phases.
        let svgs: Vec<&str> = h.split("<svg").skip(1).collect();
        for svg in &svgs {
            let texts = charts::inspect::texts(svg);
            for label in ["4²", "8²", "16²"] {
                assert!(
                    texts.iter().any(|t| t == label),
                    "{label} missing in {texts:?}"
                );
            }
            assert_eq!(
                charts::inspect::boundary_xs(svg).len(),
                4,
                "4 boundaries per chart"
            );
        }
        assert!(h.contains("<span class=\"sw roll\"></span>rollback"));

        // Summary and per-resolution table.
        assert!(h.contains("<th>kimg</th><td>10.00</td>"));
        assert!(h.contains("16×16 (stable)"));
        assert!(h.contains("<td>8×8</td><td>fade → stable</td>"));
        assert!(h.contains("<th>rollbacks</th><td>1</td>"));
        // The log's warnings counted over all of it, and the error that ended a session.
        assert!(h.contains("<th>warnings in log.txt</th><td>1</td>"), "{h}");
        assert!(h.contains("<th>last error in log.txt</th><td>[  44.8s] ERROR NaN alarm"));

        // NaN noted, not drawn.
        assert!(h.contains("Grad/G/norm: 1 value(s) not drawn (not finite, or beyond the f32 range): line 30 (kimg 7.5)"));
        assert!(report
            .notices
            .iter()
            .any(|n| n.contains("1 non-finite value(s)")));

        // Log tail: last 50 lines, alerts highlighted, escaped.
        assert!(h.contains("last 50 of 72 line(s)"));
        assert!(h.contains("<span class=\"warn\">[  42.0s] WARN D loss spiked"));
        assert!(h.contains("<span class=\"warn\">[  44.8s] ERROR NaN alarm"));
        assert!(h.contains("&lt;ok&gt;"));
        assert!(!h.contains("tick   1 kimg"), "only the tail");

        // Self-contained: nothing fetched.
        // (the only URL is the SVG namespace, which is a name, not a fetch)
        let without_ns = h.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
        assert!(!h.contains("<script"));
        assert!(!h.contains("<link"));
    }

    #[test]
    fn write_report_is_atomic_and_reports_size() {
        let (dir, run) = fixture_run();
        let out = dir.path().join("out.html");
        fs::write(&out, "old").unwrap();
        let summary = write_report(&run, &out).unwrap();
        let written = fs::read_to_string(&out).unwrap();
        assert_eq!(summary.bytes, written.len() as u64);
        assert_eq!(summary.charts, 8);
        assert_eq!(summary.ticks, fixture::TICKS);
        assert!(written.contains("<svg"));
        // no temp file left behind
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(default_output_path(&run), run.join("report.html"));
        // What it wrote is known as a report; the file it replaced, or a page of another
        // tool, is not.
        assert!(is_pgan_report(&out));
        fs::write(&out, "old").unwrap();
        assert!(!is_pgan_report(&out));
        fs::write(&out, "<!DOCTYPE html>\n<html><head><title>notes</title>").unwrap();
        assert!(!is_pgan_report(&out));
        assert!(!is_pgan_report(dir.path()));
    }

    /// `--out` found absent is not written over a file that appeared there during the work.
    #[test]
    fn a_report_never_replaces_a_file_that_appeared_during_the_work() {
        let (dir, run) = fixture_run();
        let out = dir.path().join("new.html");
        pgan_spec::output::expect_new(&out);
        fs::write(&out, "the user's").unwrap();
        let err = write_report(&run, &out).unwrap_err().to_string();
        assert!(
            err.contains("new.html") && err.contains("appeared"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&out).unwrap(), "the user's");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no temp left");
    }

    /// Rows that change resolution at every tick (not one run's) are charted without phase
    /// marks, said once, in a page that does not grow by kilobytes per row.
    #[test]
    fn rows_that_change_phase_at_every_tick_are_charted_without_marks() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("joined");
        fs::create_dir(&run).unwrap();
        let rows: String = (1..=4000)
            .map(|i| {
                let r = if i % 2 == 0 { 8 } else { 16 };
                format!(
                    "{{\"tick\":{i},\"kimg\":{},\"resolution\":{r},\"phase\":\"stable\",\
                     \"Loss/D\":0.5,\"Loss/G\":0.1}}\n",
                    i as f64 * 0.1
                )
            })
            .collect();
        fs::write(run.join("metrics.jsonl"), rows).unwrap();
        let report = build_report(&run).unwrap();
        assert!(
            report.notices.iter().any(|n| n.contains("3999 times")),
            "{:?}",
            report.notices
        );
        assert!(report.html.len() < 4 << 20, "{} bytes", report.html.len());
    }

    #[test]
    fn write_into_missing_folder_names_the_path() {
        let (dir, run) = fixture_run();
        let out = dir.path().join("no/such/dir/report.html");
        let err = write_report(&run, &out).unwrap_err();
        assert!(err.to_string().contains("no/such/dir/report.html"), "{err}");
    }

    #[test]
    fn a_torn_last_line_is_left_out_with_a_notice() {
        let (_dir, run) = fixture_run();
        let mut text = fixture::metrics_jsonl();
        // A row cut short by a crash: no closing brace, no newline.
        text.push_str("{\"tick\":41,\"kimg\":10.25,\"Loss/D\":0.");
        fs::write(run.join("metrics.jsonl"), text).unwrap();
        let report = build_report(&run).unwrap();
        assert_eq!(report.ticks, fixture::TICKS);
        assert!(
            report
                .notices
                .iter()
                .any(|n| n.contains("line 41") && n.contains("incomplete")),
            "{:?}",
            report.notices
        );
    }

    #[test]
    fn lines_that_are_not_rows_are_left_out_and_named() {
        let (_dir, run) = fixture_run();
        let mut text = fixture::metrics_jsonl();
        text.insert_str(0, "lowered the lr here\n");
        text.push_str("{\"tick\":41,\"kimg\":10.25,\n");
        for _ in 0..3 {
            text.push_str("[1]\n");
        }
        fs::write(run.join("metrics.jsonl"), text).unwrap();
        let report = build_report(&run).unwrap();
        assert_eq!(report.ticks, fixture::TICKS);
        let notice = report
            .notices
            .iter()
            .find(|n| n.contains("not rows"))
            .unwrap_or_else(|| panic!("{:?}", report.notices));
        assert!(notice.starts_with("5 line(s) of metrics.jsonl"), "{notice}");
        assert!(notice.contains("line 1 (not JSON: "), "{notice}");
        assert!(
            notice.contains("line 42 (not JSON: EOF while parsing"),
            "{notice}"
        );
        assert!(notice.contains("line 43 (a JSON array"), "{notice}");
        assert!(notice.ends_with("and 2 more"), "{notice}");
        assert!(report.html.contains("not rows"));
    }

    #[test]
    fn missing_dir_and_missing_metrics_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = build_report(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, ReportError::MissingRunDir(_)));
        assert!(err.to_string().contains("absent"));
        let err = build_report(dir.path()).unwrap_err();
        assert!(matches!(err, ReportError::MissingMetrics(_)), "{err}");
    }

    #[test]
    fn empty_metrics_still_gives_a_report_with_a_notice() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("metrics.jsonl"), "\n").unwrap();
        let report = build_report(dir.path()).unwrap();
        assert_eq!(report.ticks, 0);
        assert_eq!(report.charts, 0);
        assert!(!report.html.contains("<svg"));
        assert!(report.html.contains("no ticks yet"));
        assert!(report.notices[0].starts_with("no ticks yet"));
        assert!(report.notices.iter().any(|n| n.contains("no config.toml")));
        assert!(report.notices.iter().any(|n| n.contains("no log.txt")));
        assert!(report
            .notices
            .iter()
            .any(|n| n.contains("no sample sheets")));
        assert!(report.html.contains("no sample sheets in samples/ yet"));
        // A run that rolled back before its first tick's end holds only rollback rows.
        fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"kimg\":0,\"Event/rollback\":1}\n{\"kimg\":0,\"Event/rollback\":2}\n",
        )
        .unwrap();
        let report = build_report(dir.path()).unwrap();
        assert_eq!(report.ticks, 0);
        assert!(
            report.notices[0].starts_with("no ticks yet"),
            "{:?}",
            report.notices
        );
    }

    #[test]
    fn a_long_run_gives_a_small_page() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 1..=5000 {
            let res = 4u32 << (i * 5 / 5001);
            let phase = if i % 1000 < 300 { "fade" } else { "stable" };
            text.push_str(&format!(
                "{{\"tick\":{i},\"kimg\":{},\"resolution\":{res},\"phase\":\"{phase}\",\
                 \"Loss/D\":{},\"Loss/G\":{},\"Speed/img_per_s\":{}}}\n",
                i as f64 * 2.0,
                (i as f64).sin(),
                (i as f64).cos(),
                1e4 / f64::from(res),
            ));
        }
        fs::write(dir.path().join("metrics.jsonl"), text).unwrap();
        let report = build_report(dir.path()).unwrap();
        assert_eq!(report.ticks, 5000);
        assert_eq!(report.charts, 2);
        assert!(report.html.len() < 2_000_000, "{} bytes", report.html.len());
    }

    /// Writes a demo report to /tmp/pgan-report-demo/report.html (sample
    /// sheets made from the bundled emoji) for looking at in a browser:
    /// `cargo test -p pgan-report -- --ignored demo_report`.
    #[test]
    #[ignore]
    fn demo_report() {
        let run = Path::new("/tmp/pgan-report-demo");
        let _ = fs::remove_dir_all(run);
        let emoji = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../data/emoji");
        fixture::write_run(run, emoji.is_dir().then_some(emoji.as_path()));
        let s = write_report(run, &default_output_path(run)).unwrap();
        eprintln!(
            "wrote {} ({} bytes, {} charts)",
            s.path.display(),
            s.bytes,
            s.charts
        );
    }
}
