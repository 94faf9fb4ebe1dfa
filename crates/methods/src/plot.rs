//! Hand-written SVG line charts: probe accuracy and direction norm against layer.

use crate::probe::ProbeReport;
use std::fmt::Write;

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One series of (x, y) points.
pub struct Series<'a> {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    pub color: &'a str,
}

/// A line chart with a left axis over `y_range` and series drawn as polylines; horizontal
/// reference lines (label, y) are drawn dotted across the whole plot.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, y_range: (f64, f64), series: &[Series], refs: &[(String, f64, &str)]) -> String {
    // The legend sits right of the plot, as wide as its longest label (0.6 em per character,
    // a little wider than the average glyph) and as tall as its lines; the title is cut to the
    // drawing's width.
    let (left, top, bottom, pw, ph) = (60.0, 40.0, 50.0, 500.0, 350.0);
    let legend_chars = refs.iter().map(|(l, y, _)| format!("{l} ({y:.2})").chars().count()).chain(series.iter().map(|s| s.label.chars().count())).max().unwrap_or(0);
    let w = (left + pw + 42.0 + 7.2 * legend_chars as f64 + 12.0).max(940.0).ceil();
    let h = (top + 6.0 + 18.0 * (refs.len() + series.len()) as f64 + 10.0).max(top + ph + bottom);
    let title_chars = ((w - 16.0) / 9.0) as usize;
    let title: String = if title.chars().count() > title_chars { title.chars().take(title_chars - 1).chain(['…']).collect() } else { title.to_string() };
    let xmax = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(1.0, f64::max);
    let (y0, y1) = y_range;
    let px = |x: f64| ((left + pw * x / xmax) * 10.0).round() / 10.0;
    let py = |y: f64| ((top + ph * (1.0 - ((y - y0) / (y1 - y0)).clamp(0.0, 1.0))) * 10.0).round() / 10.0;
    let mut s = String::new();
    let _ = writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#, w / 2.0, esc(&title));
    // grid and axes
    for i in 0..=5 {
        let y = y0 + (y1 - y0) * i as f64 / 5.0;
        let (x2, yy, tx) = (left + pw, py(y), left - 6.0);
        let _ = writeln!(s, r##"<line x1="{left}" x2="{x2}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{tx}" y="{}" text-anchor="end">{y:.2}</text>"##, yy + 4.0);
    }
    // About ten ticks, at 1, 2 or 5 times a power of ten.
    let raw = (xmax / 10.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag) as usize;
    for x in (0..=xmax as usize).step_by(step) {
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{x}</text>"#, px(x as f64), top + ph + 16.0);
    }
    let _ = writeln!(s, r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, left + pw / 2.0, top + ph + 38.0, esc(x_label));
    let _ = writeln!(s, r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#, top + ph / 2.0, top + ph / 2.0, esc(y_label));
    let mut legend_y = top + 6.0;
    let mut legend = |s: &mut String, label: &str, color: &str, dash: &str| {
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{}</text>"#,
            left + pw + 12.0,
            left + pw + 36.0,
            left + pw + 42.0,
            legend_y + 4.0,
            esc(label)
        );
        legend_y += 18.0;
    };
    for (label, y, color) in refs {
        let (x2, yy) = (left + pw, py(*y));
        let _ = writeln!(s, r#"<line x1="{left}" x2="{x2}" y1="{yy}" y2="{yy}" stroke="{color}" stroke-dasharray="2 3"/>"#);
        legend(&mut s, &format!("{label} ({y:.2})"), color, "2 3");
    }
    for se in series {
        // A point without a value (a NaN loss) is left out rather than drawn at "NaN".
        let finite: Vec<(f64, f64)> = se.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        let pts: Vec<String> = finite.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let dash = if se.dashed { "6 4" } else { "none" };
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#, se.color, pts.join(" "));
        for &(x, y) in &finite {
            let _ = writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#, px(x), py(y), se.color);
        }
        legend(&mut s, &se.label, se.color, dash);
    }
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The probe chart: pooled accuracy per pooling (solid), the direction norm scaled to [0, 1]
/// (dashed), the length baselines (dotted), the peak marked in the legend.
pub fn probe_svg(r: &ProbeReport) -> String {
    let mut series = Vec::new();
    let mut refs = Vec::new();
    for (i, p) in r.poolings.iter().enumerate() {
        let g = &p.groups[0];
        let color = COLORS[i % COLORS.len()];
        let peak = g.peak();
        series.push(Series {
            label: format!("{} accuracy (peak L{} {:.2}, last {:.2})", p.pooling.name(), peak.layer, peak.accuracy, g.last().accuracy),
            points: g.layers.iter().map(|l| (l.layer as f64, l.accuracy)).collect(),
            dashed: false,
            color,
        });
        let max = g.layers.iter().map(|l| l.diff_norm).fold(1e-12, f64::max);
        series.push(Series {
            label: format!("{} norm / max ({:.1})", p.pooling.name(), max),
            points: g.layers.iter().map(|l| (l.layer as f64, l.diff_norm / max)).collect(),
            dashed: true,
            color,
        });
        if i == 0 {
            refs.push(("longer side is fixed (pairs)".to_string(), g.length.longer_is_fixed, "#555"));
            refs.push(("token-count probe acc.".to_string(), g.length.count_probe.accuracy, "#aaa"));
        }
    }
    let title = format!("Secure vs vulnerable probes by layer: {} ({} pairs)", r.model, r.n_pairs);
    line_chart(&title, "layer (output of decoder block)", "accuracy  /  norm (scaled)", (0.0, 1.0), &series, &refs)
}
