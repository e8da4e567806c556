//! Assembling the single self-contained HTML page: inline CSS, charts as
//! inline `<svg>`, images as `data:image/png;base64,` URIs, no scripts and
//! nothing fetched from the network.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::charts::{format_number, Chart};
use crate::run::{ImageFile, RunData};
use crate::stats::{format_duration, RunStats};

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A `data:` URI holding PNG bytes.
pub fn png_data_uri(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// True for log lines the report highlights: warnings (alarms among them) and errors, by the
/// line's level rather than by words in its message.
pub fn is_alert_line(line: &str) -> bool {
    matches!(crate::run::log_level(line), Some("WARN" | "ERROR"))
}

const CSS: &str = r#"
:root { --fg:#1d1d1f; --muted:#666; --line:#ddd; --bg:#fafafa; --accent:#0072b2; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 26px; margin: 0 0 2px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 6px; }
.sub { color: var(--muted); margin: 0 0 16px; word-break: break-all; }
.notices { background: #fff8e1; border: 1px solid #f0c36d; border-radius: 6px; padding: 8px 14px; margin: 12px 0; }
.notices li { margin: 2px 0; }
.tables { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
th, td { padding: 4px 12px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f0f0f0; font-weight: 600; }
tr.current td { background: #eef6fc; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
figure svg { width: 100%; height: auto; display: block; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 13px; color: #333; margin-top: 4px; }
.legend span.sw { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 5px; border-radius: 2px; }
.legend span.sw.fade { width: 14px; height: 12px; background: rgba(255,196,0,0.3); }
.legend span.sw.bound { width: 2px; height: 13px; border-left: 1px dashed #6e6e6e; border-radius: 0; margin: 0 8px 0 6px; }
.legend span.sw.roll { background: #c80000; }
.note { color: #a04000; font-size: 13px; margin: 4px 0 0; }
.img { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px; display: inline-block; max-width: 100%; }
.img img { display: block; max-width: 100%; height: auto; image-rendering: pixelated; }
.img img.small { width: 512px; }
.caption { color: var(--muted); font-size: 13px; margin-top: 6px; }
pre { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; overflow-x: auto; font: 12.5px/1.45 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; margin: 0; }
pre .warn { background: #fff0c2; color: #7a4b00; display: inline-block; width: 100%; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"#;

/// Everything [`render`] puts on the page.
pub struct Page<'a> {
    /// The run.
    pub run: &'a RunData,
    /// Its summary.
    pub stats: &'a RunStats,
    /// Drawn charts.
    pub charts: &'a [Chart],
    /// Notices shown in a box at the top.
    pub notices: &'a [String],
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "—".to_string(), f)
}

/// The tag in every report's head that says pgan wrote it (`report` replaces such a file in a run
/// folder without `--force`, nothing else).
pub const GENERATOR_META: &str = "<meta name=\"generator\" content=\"pgan report\">";

/// Renders the page.
pub fn render(page: &Page<'_>) -> String {
    let run = page.run;
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("pgan report — {}", run.name);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         {GENERATOR_META}\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        h,
        "<p class=\"sub\">run directory <code>{}</code> · {} tick(s)</p>",
        escape(&run.dir.display().to_string()),
        page.stats.ticks
    );

    if !page.notices.is_empty() {
        h.push_str("<div class=\"notices\"><strong>Notices</strong><ul>\n");
        for n in page.notices {
            let _ = writeln!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul></div>\n");
    }

    summary_section(&mut h, page.stats, run.log.as_ref());
    charts_section(&mut h, page.charts, page.stats.ticks);
    samples_section(&mut h, run);

    h.push_str("<h2 id=\"config\">Resolved config</h2>\n");
    match &run.config {
        Some(c) => {
            let _ = writeln!(h, "<pre class=\"config\">{}</pre>", escape(c));
        }
        None => h.push_str("<p class=\"empty\">no config.toml in the run directory</p>\n"),
    }

    h.push_str("<h2 id=\"log\">Log tail</h2>\n");
    match &run.log {
        Some(log) if !log.lines.is_empty() => {
            let _ = writeln!(
                h,
                "<p class=\"caption\">last {} of {} line(s) of log.txt; warnings and alarms highlighted</p>",
                log.lines.len(),
                log.total_lines
            );
            h.push_str("<pre class=\"log\">");
            for line in &log.lines {
                if is_alert_line(line) {
                    let _ = writeln!(h, "<span class=\"warn\">{}</span>", escape(line));
                } else {
                    let _ = writeln!(h, "{}", escape(line));
                }
            }
            h.push_str("</pre>\n");
        }
        Some(_) => h.push_str("<p class=\"empty\">log.txt is empty</p>\n"),
        None => h.push_str("<p class=\"empty\">no log.txt in the run directory</p>\n"),
    }

    h.push_str(
        "<footer>Written by pgan report. Self-contained: charts are inline SVG, \
         images are embedded, nothing is loaded from the network.</footer>\n</body>\n</html>\n",
    );
    h
}

fn summary_section(h: &mut String, st: &RunStats, log: Option<&crate::run::LogTail>) {
    h.push_str(
        "<h2 id=\"summary\">Summary</h2>\n<div class=\"tables\">\n<table class=\"summary\">\n",
    );
    let phase = st
        .phase
        .as_deref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let mut rows: Vec<(&str, String)> = vec![
        (
            "ticks",
            opt(st.last_tick, |t| format!("{t} ({} logged)", st.ticks)),
        ),
        ("kimg", opt(st.kimg, |k| format!("{k:.2}"))),
        (
            "resolution",
            opt(st.resolution, |r| format!("{r}×{r}{phase}")),
        ),
        ("stage", opt(st.stage, |s| s.to_string())),
        ("elapsed", opt(st.elapsed_s, format_duration)),
        (
            // Over the run's time, evaluations and checkpoints included, unlike the steps'
            // speed per resolution below (the same only without a time logged).
            if st.kimg.is_some() && st.elapsed_s.is_some_and(|t| t > 0.0) {
                "images/s over the run (evaluations, checkpoints included)"
            } else {
                "images/s (mean of the ticks' steps)"
            },
            opt(st.avg_img_per_s, |v| format!("{v:.1}")),
        ),
        ("peak RSS", opt(st.peak_rss_mb, |v| format!("{v:.0} MB"))),
        ("rollbacks", st.rollbacks.to_string()),
        (
            "non-finite values in metrics.jsonl",
            if st.non_finite == 0 {
                "none".to_string()
            } else {
                format!("{} ({})", st.non_finite, st.non_finite_keys.join(", "))
            },
        ),
    ];
    // A diverged run's NaN steps are rolled back before a row is written: the log tells.
    if let Some(log) = log {
        rows.push(("warnings in log.txt", log.warnings.to_string()));
        if let Some(error) = &log.last_error {
            rows.push(("last error in log.txt", error.clone()));
        }
    }
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    }
    h.push_str("</table>\n");

    if !st.per_resolution.is_empty() {
        h.push_str(
            "<table class=\"per-res\">\n<thead><tr><th>resolution</th><th>phases</th>\
             <th class=\"num\">kimg</th><th class=\"num\">ticks</th><th class=\"num\">sec/kimg</th>\
             <th class=\"num\">steps' img/s</th><th class=\"num\">time</th><th class=\"num\">peak RSS</th></tr></thead>\n<tbody>\n",
        );
        let last = st.per_resolution.len() - 1;
        for (i, r) in st.per_resolution.iter().enumerate() {
            let class = if i == last { " class=\"current\"" } else { "" };
            let _ = writeln!(
                h,
                "<tr{class}><td>{}</td><td>{}</td><td class=\"num\">{}–{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                opt(r.resolution, |r| format!("{r}×{r}")),
                escape(&r.phases.join(" → ")),
                format_number(r.kimg.0),
                format_number(r.kimg.1),
                r.ticks,
                opt(r.sec_per_kimg, |v| format!("{v:.2}")),
                opt(r.img_per_s, |v| format!("{v:.1}")),
                opt(r.seconds, format_duration),
                opt(r.peak_rss_mb, |v| format!("{v:.0} MB")),
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</div>\n");
}

fn charts_section(h: &mut String, charts: &[Chart], ticks: usize) {
    h.push_str("<h2 id=\"charts\">Training curves</h2>\n");
    if charts.is_empty() {
        let why = if ticks == 0 {
            "no ticks yet: metrics.jsonl holds no tick"
        } else {
            "no chartable values in metrics.jsonl"
        };
        let _ = writeln!(h, "<p class=\"empty\">{why}</p>");
        return;
    }
    h.push_str(
        "<p class=\"caption\">x axis: thousands of real images shown (kimg). \
         Shaded bands: fade-in phases; dashed lines: resolution / phase changes, \
         labelled with the new resolution; red lines: rollbacks.</p>\n<div class=\"charts\">\n",
    );
    for c in charts {
        let _ = writeln!(h, "<figure class=\"chart\">\n<h3>{}</h3>", escape(&c.title));
        h.push_str(&c.svg);
        h.push_str("\n<div class=\"legend\">");
        for l in &c.legend {
            let _ = write!(
                h,
                "<span><span class=\"sw\" style=\"background:{}\"></span>{}</span>",
                escape(&l.color),
                escape(&l.label)
            );
        }
        h.push_str(
            "<span><span class=\"sw fade\"></span>fade-in</span>\
             <span><span class=\"sw bound\"></span>stage boundary</span>",
        );
        if c.rollbacks > 0 {
            h.push_str("<span><span class=\"sw roll\"></span>rollback</span>");
        }
        h.push_str("</div>\n");
        for n in &c.notes {
            let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(n));
        }
        h.push_str("</figure>\n");
    }
    h.push_str("</div>\n");
}

/// Width and height from a PNG's IHDR chunk, if the bytes are a PNG.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

fn image_block(h: &mut String, img: &ImageFile, alt: &str, caption: &str) {
    let size = png_size(&img.bytes);
    if size.is_none() {
        // A damaged or foreign file under a PNG's name: said, not shown as a broken image.
        let _ = writeln!(
            h,
            "<p class=\"empty\">{}: not a PNG image ({} bytes), not shown</p>",
            escape(caption),
            img.bytes.len()
        );
        return;
    }
    // Small sheets (low resolutions) are scaled up with crisp pixels.
    let class = match size {
        Some((w, _)) if w < 512 => " class=\"small\"",
        _ => "",
    };
    let dims = size.map_or(String::new(), |(w, h)| format!(" · {w}×{h} px"));
    let _ = writeln!(
        h,
        "<div class=\"img\"><img{class} alt=\"{}\" src=\"{}\">\
         <div class=\"caption\">{}{}</div></div>",
        escape(alt),
        png_data_uri(&img.bytes),
        escape(caption),
        escape(&dims)
    );
}

fn samples_section(h: &mut String, run: &RunData) {
    h.push_str("<h2 id=\"samples\">Latest samples</h2>\n");
    match &run.latest_sample {
        Some(img) => {
            let caption = format!("samples/{} (latest of {})", img.name(), run.sample_count);
            image_block(h, img, "latest sample sheet", &caption);
        }
        None => h.push_str("<p class=\"empty\">no sample sheets in samples/ yet</p>\n"),
    }
    if let Some(img) = &run.timeline {
        h.push_str("<h2 id=\"timeline\">Growth timeline</h2>\n");
        image_block(
            h,
            img,
            "growth timeline",
            "samples/timeline.png: the same latent seeds through every checkpoint",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_png_is_named_not_embedded() {
        let mut h = String::new();
        let img = ImageFile {
            path: "run/samples/tick-000008.png".into(),
            bytes: b"hello\n".to_vec(),
        };
        image_block(
            &mut h,
            &img,
            "latest sample sheet",
            "samples/tick-000008.png",
        );
        assert!(
            h.contains("samples/tick-000008.png: not a PNG image (6 bytes)"),
            "{h}"
        );
        assert!(!h.contains("data:image/png"), "{h}");
    }

    /// The run's speed and the steps' speed per resolution are not the same figure: each is
    /// named for what it is.
    #[test]
    fn the_summary_names_which_speed_it_gives() {
        let mut st = RunStats {
            kimg: Some(4.0),
            elapsed_s: Some(12.0),
            avg_img_per_s: Some(333.3),
            ..RunStats::default()
        };
        let mut h = String::new();
        summary_section(&mut h, &st, None);
        assert!(
            h.contains("images/s over the run (evaluations, checkpoints included)</th><td>333.3"),
            "{h}"
        );
        st.elapsed_s = None;
        let mut h = String::new();
        summary_section(&mut h, &st, None);
        assert!(h.contains("images/s (mean of the ticks&#39; steps)"), "{h}");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn data_uri_is_base64_png() {
        assert_eq!(png_data_uri(b"abc"), "data:image/png;base64,YWJj");
    }

    #[test]
    fn alert_lines() {
        assert!(is_alert_line(
            "2026-12-06 02:31:08 WARN alarm: D loss spiked"
        ));
        assert!(is_alert_line(
            "2026-12-06 02:31:08 ERROR training stopped: diverged"
        ));
        assert!(is_alert_line("[  44.8s] ERROR NaN alarm: rolled back"));
        // By level, not by the words of an informational message.
        assert!(!is_alert_line(
            "2026-12-06 02:31:08 INFO alarms: none; WARN levels in this log mark them"
        ));
        assert!(!is_alert_line("warning-free tick 3"));
    }

    #[test]
    fn png_size_reads_ihdr() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&64u32.to_be_bytes());
        png.extend_from_slice(&32u32.to_be_bytes());
        assert_eq!(png_size(&png), Some((64, 32)));
        assert_eq!(png_size(b"not a png at all, no no no"), None);
    }
}
