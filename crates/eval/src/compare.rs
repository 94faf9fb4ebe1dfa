//! Comparing methods evaluated on the same scenarios with the same seeds: per-scenario paired
//! differences against a baseline, and a paired bootstrap over scenarios for a 95% interval of
//! the mean change. Scenarios are the unit of resampling (samples of one scenario are not
//! independent draws of the benchmark), so the interval says how much of a gain would survive
//! another draw of scenarios like these. Scenarios of CWEs absent from the training data are
//! reported apart as the `held-out` group ([`Groups`]).

use crate::metrics::{Rates, Table};
use crate::report::MethodRun;
use deepguard_runtime::files::write_atomic;
use deepguard_runtime::generate::SamplingParams;
use deepguard_runtime::rng::SplitMix;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

/// A compared metric: its name, the verdict table it is read from, and the rate.
pub type Metric = (&'static str, fn(&MethodRun) -> &Table, fn(&Rates) -> Option<f64>);

/// The metrics compared: pass@1, sec-pass@1 under the combined judge, sec-pass@1 under the
/// security tests alone (over the scenarios that have one: a method tuned against the static
/// tools, e.g. a rerank, is read through a judge it never saw), and the security rate (secure
/// among parsed samples, working or not: "fewer insecure samples", the steering paper's measure).
pub const METRICS: &[Metric] = &[
    ("pass@1", |r| &r.table, |r| r.pass_at_1),
    ("sec-pass@1", |r| &r.table, |r| r.sec_pass_at_1),
    ("sec-pass@1 exploit", |r| &r.exploit_table, |r| r.sec_pass_at_1),
    ("security rate", |r| &r.table, |r| r.security_rate),
];

/// A method's mean change against the baseline on one metric over a group of scenarios.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diff {
    pub metric: String,
    /// Scenarios complete in both runs.
    pub scenarios: usize,
    /// Samples behind the figures (both runs together).
    pub samples: usize,
    /// Mean over scenarios of the baseline's and the method's rate.
    pub base: f64,
    pub method: f64,
    /// Mean paired difference (method − base), and its 95% bootstrap interval.
    pub delta: f64,
    pub lo: f64,
    pub hi: f64,
    /// Scenarios where the method is better / worse / equal.
    pub better: usize,
    pub worse: usize,
    pub equal: usize,
}

impl Diff {
    /// The interval excludes 0.
    pub fn significant(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// One method's comparison: per group (`all`, `trained` = split base, `held-out` = untrain).
#[derive(Debug, Clone, Serialize)]
pub struct MethodDiffs {
    pub method: String,
    pub groups: BTreeMap<String, Vec<Diff>>,
    /// Per scenario: (id, [metric deltas]).
    pub per_scenario: Vec<(String, Vec<f64>)>,
    /// What the method's kept samples cost.
    pub cost: crate::report::CostSummary,
}

/// Per-scenario rates of one of a run's tables, by scenario id.
fn rates(table: &Table) -> BTreeMap<String, (Rates, usize)> {
    table.scenarios.iter().map(|r| (r.name.clone(), (r.rates, r.counts.n))).collect()
}

/// What makes a scenario `held-out`: its CWE is absent from the training data. Without a known
/// training set, the benchmark's own split folders say it (`untrain/...`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Groups {
    /// CWE numbers of the training data (None: by split folder).
    pub trained: Option<BTreeSet<u32>>,
    /// Where the set came from, as the table says it.
    pub source: String,
}

/// The CWE number in a scenario id (`<split>/cwe-089/<name>`).
fn cwe_number(id: &str) -> Option<u32> {
    id.split('/').find_map(|p| p.to_ascii_lowercase().strip_prefix("cwe-").and_then(|n| n.parse().ok()))
}

impl Groups {
    /// The group a scenario belongs to.
    pub fn group_of(&self, id: &str) -> &'static str {
        let held_out = match &self.trained {
            Some(t) => cwe_number(id).is_none_or(|c| !t.contains(&c)),
            None => id.starts_with("untrain/"),
        };
        if held_out {
            "held-out"
        } else {
            "trained"
        }
    }

    /// The sentence the table prints.
    pub fn describe(&self) -> String {
        match &self.trained {
            Some(t) => format!("`held-out`: scenarios whose CWE is absent from the training data ({}: CWE {})", self.source, t.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")),
            None => "`held-out`: the benchmark's `untrain/` scenarios (no training data was named)".into(),
        }
    }
}

/// Paired bootstrap of the mean of `d` (B resamples with a fixed seed): (mean, lo, hi).
pub fn bootstrap(d: &[f64], resamples: usize, seed: u64) -> (f64, f64, f64) {
    if d.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix(seed);
    let mut means: Vec<f64> = (0..resamples).map(|_| (0..n).map(|_| d[(rng.next() % n as u64) as usize]).sum::<f64>() / n as f64).collect();
    means.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| means[((p * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (mean, q(0.025), q(0.975))
}

/// Compares `other` with `base` over the scenarios complete in both.
pub fn compare(base: &MethodRun, other: &MethodRun, groups_of: &Groups, resamples: usize, seed: u64) -> MethodDiffs {
    let per_metric: Vec<_> = METRICS.iter().map(|(_, t, _)| (rates(t(base)), rates(t(other)))).collect();
    // Scenarios complete in both runs: those of the combined table (the first metric's).
    let (b, o) = &per_metric[0];
    let ids: Vec<&String> = b.keys().filter(|k| o.contains_key(*k)).collect();
    let mut groups = BTreeMap::new();
    for group in ["all", "trained", "held-out"] {
        let sel: Vec<&String> = ids.iter().copied().filter(|id| group == "all" || groups_of.group_of(id) == group).collect();
        if sel.is_empty() {
            continue;
        }
        let diffs = METRICS
            .iter()
            .zip(&per_metric)
            .map(|((name, _, f), (b, o))| {
                let pairs: Vec<(f64, f64, usize)> = sel.iter().filter_map(|id| Some((f(&b.get(*id)?.0)?, f(&o.get(*id)?.0)?, b[*id].1 + o[*id].1))).collect();
                let d: Vec<f64> = pairs.iter().map(|p| p.1 - p.0).collect();
                let (delta, lo, hi) = bootstrap(&d, resamples, seed);
                let k = pairs.len().max(1) as f64;
                Diff {
                    metric: name.to_string(),
                    scenarios: pairs.len(),
                    samples: pairs.iter().map(|p| p.2).sum(),
                    base: pairs.iter().map(|p| p.0).sum::<f64>() / k,
                    method: pairs.iter().map(|p| p.1).sum::<f64>() / k,
                    delta,
                    lo,
                    hi,
                    better: d.iter().filter(|x| **x > 1e-12).count(),
                    worse: d.iter().filter(|x| **x < -1e-12).count(),
                    equal: d.iter().filter(|x| x.abs() <= 1e-12).count(),
                }
            })
            .collect();
        groups.insert(group.to_string(), diffs);
    }
    let per_scenario = ids
        .iter()
        .map(|id| {
            let d = METRICS.iter().zip(&per_metric).map(|((_, _, f), (b, o))| {
                let d = || Some(f(&o.get(*id)?.0)? - f(&b.get(*id)?.0)?);
                d().unwrap_or(0.0)
            });
            ((*id).clone(), d.collect())
        })
        .collect();
    MethodDiffs { method: other.method.clone(), groups, per_scenario, cost: other.cost.clone() }
}

fn pp(x: f64) -> String {
    format!("{:+.1}", 100.0 * x)
}

/// A cost cell: the mean per kept sample, and its ratio to the baseline's.
fn cost_cell(v: Option<f64>, base: Option<f64>, digits: usize) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{v:.digits$} ({:.2}×)", v / b),
        (Some(v), _) => format!("{v:.digits$}"),
        _ => "–".into(),
    }
}

/// The comparison table (markdown): one row per method and group, then the cost of each method.
pub fn markdown(base: &crate::report::CostSummary, base_name: &str, all: &[MethodDiffs], judge: &str, groups: &Groups) -> String {
    let mut s = format!("# deepguard compare\n\nBaseline `{base_name}`; judge `{judge}` (a sample is insecure when any counting backend flags it). Figures are means over scenarios of per-scenario rates, in points; Δ is the paired change against the baseline with its 95% bootstrap interval over scenarios (10,000 resamples). Security rate: secure among parsed samples, working or not. An interval that contains 0 is within noise. {}.\n\n", groups.describe());
    s += "| method | scenarios | group | samples | pass@1 base → method | Δ pass@1 [95% CI] | sec-pass@1 base → method | Δ sec-pass@1 [95% CI] | scenarios better / worse / equal (sec-pass@1) | Δ sec-pass@1, security tests only [95% CI] (scenarios) | security rate base → method | Δ security rate [95% CI] |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for m in all {
        for (g, ds) in &m.groups {
            let (p, sp, x, sr) = (&ds[0], &ds[1], &ds[2], &ds[3]);
            let ci = |d: &Diff| format!("{} [{}, {}]{}", pp(d.delta), pp(d.lo), pp(d.hi), if d.significant() { " *" } else { "" });
            let xs = if x.scenarios == 0 { "–".to_string() } else { format!("{} ({})", ci(x), x.scenarios) };
            let _ = writeln!(
                s,
                "| {} | {} | {g} | {} | {:.1} → {:.1} | {} | {:.1} → {:.1} | {} | {} / {} / {} | {xs} | {:.1} → {:.1} | {} |",
                m.method,
                sp.scenarios,
                sp.samples,
                100.0 * p.base,
                100.0 * p.method,
                ci(p),
                100.0 * sp.base,
                100.0 * sp.method,
                ci(sp),
                sp.better,
                sp.worse,
                sp.equal,
                100.0 * sr.base,
                100.0 * sr.method,
                ci(sr)
            );
        }
    }
    s += "\n`*`: the 95% interval excludes 0.\n\n## Cost per kept sample\n\nTokens generated (every candidate and repair round behind a kept sample) and wall time on this machine, means over the kept samples of the complete scenarios, with the ratio to the baseline's. Distinct: different programs among a rerank's candidates per group. Repaired: drafts the repair's checks flagged, and how many of them it left unflagged.\n\n| method | samples | tokens / sample | seconds / sample | distinct / group | repaired / flagged |\n|---|---|---|---|---|---|\n";
    let row = |name: &str, c: &crate::report::CostSummary| {
        let d = c.distinct.map_or("–".into(), |d| format!("{d:.2}"));
        let r = match (c.repaired, c.flagged) {
            (Some(r), Some(f)) => format!("{r} / {f}"),
            _ => "–".into(),
        };
        format!("| {name} | {} | {} | {} | {d} | {r} |\n", c.samples, cost_cell(Some(c.tokens), Some(base.tokens), 1), cost_cell(c.secs, base.secs, 2))
    };
    s += &row(base_name, base);
    for m in all {
        s += &row(&m.method, &m.cost);
    }
    s
}

/// Width of a label of `chars` characters at `font` px: 0.6 em per character, a little wider
/// than the average sans-serif glyph, so that the estimate errs on the side of room.
fn text_width(chars: usize, font: f64) -> f64 {
    0.6 * font * chars as f64
}

/// `s` cut to at most `max` characters (an ellipsis marks the cut), escaped for XML.
fn label(s: &str, max: usize) -> String {
    let cut: String = if s.chars().count() > max { s.chars().take(max.max(2) - 1).chain(['…']).collect() } else { s.to_string() };
    xml(&cut)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Widest drawing: fits a 1280-pixel browser window with its scroll bar and margins.
const SVG_MAX_WIDTH: f64 = 1200.0;
/// Longest method name drawn in full (longer ones are cut; the tooltip has the whole name).
const NAME_CHARS: usize = 40;

/// A chart of Δ with its interval per method (group `all`), one panel per metric that has data
/// (a benchmark without security tests has no "exploit" panel). The drawing fits
/// [`SVG_MAX_WIDTH`] and every label stays inside its view box.
pub fn svg(all: &[MethodDiffs], base_tokens: Option<f64>) -> String {
    const FONT: f64 = 11.0;
    fn diff(m: &MethodDiffs, k: usize) -> Option<&Diff> {
        m.groups.get("all").map(|g| &g[k]).filter(|d| d.scenarios > 0 && d.delta.is_finite())
    }
    let panels: Vec<usize> = (0..METRICS.len()).filter(|&k| all.iter().any(|m| diff(m, k).is_some())).collect();
    let names: Vec<String> = all.iter().map(|m| label(&m.method, NAME_CHARS)).collect();
    // The method's cost under its name: tokens per kept sample, and times the baseline's.
    let costs: Vec<Option<String>> = all
        .iter()
        .map(|m| base_tokens.filter(|b| *b > 0.0 && m.cost.samples > 0).map(|b| format!("{:.0} tok/sample ({:.1}× base)", m.cost.tokens, m.cost.tokens / b)))
        .collect();
    let left = 12.0
        + all
            .iter()
            .zip(&costs)
            .map(|(m, c)| text_width(m.method.chars().count().min(NAME_CHARS), FONT).max(c.as_ref().map_or(0.0, |c| text_width(c.chars().count(), 9.0))))
            .fold(40.0, f64::max);
    let (row, top, gap) = (26.0, 56.0, 20.0);
    let w = ((SVG_MAX_WIDTH - left) / panels.len().max(1) as f64 - gap).clamp(150.0, 360.0);
    const EMPTY: &str = "no metric has scenarios in both runs";
    let width = if panels.is_empty() { (left + text_width(EMPTY.chars().count(), FONT) + 8.0).ceil() } else { (left + panels.len() as f64 * (w + gap)).ceil() };
    // Rows, then a line of scale figures (−lim, 0, +lim) under each panel.
    let h = top + row * all.len() as f64 + 14.0;
    let lim = all.iter().flat_map(|m| panels.iter().filter_map(|&k| diff(m, k))).flat_map(|d| [d.lo.abs(), d.hi.abs()]).filter(|x| x.is_finite()).fold(0.05f64, f64::max);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{h}\" viewBox=\"0 0 {width} {h}\" font-family=\"sans-serif\" font-size=\"{FONT}\">");
    let _ = write!(s, "<rect width=\"{width}\" height=\"{h}\" fill=\"white\"/>");
    for (i, name) in names.iter().enumerate() {
        let _ = write!(s, "<text x=\"4\" y=\"{}\">{name}<title>{}</title></text>", top - 10.0 + row * i as f64, xml(&all[i].method));
        if let Some(c) = &costs[i] {
            let _ = write!(s, "<text x=\"4\" y=\"{}\" font-size=\"9\" fill=\"#777\">{}</text>", top + 1.0 + row * i as f64, xml(c));
        }
    }
    if panels.is_empty() {
        let _ = write!(s, "<text x=\"{left}\" y=\"14\">{EMPTY}</text>");
    }
    for (p, &k) in panels.iter().enumerate() {
        let name = METRICS[k].0;
        let x0 = left + p as f64 * (w + gap);
        let x = |v: f64| x0 + w / 2.0 + v / lim * (w / 2.0 - 10.0);
        let title = label(&format!("Δ {name}"), (w / text_width(1, FONT)) as usize);
        let _ = write!(s, "<text x=\"{}\" y=\"14\" text-anchor=\"middle\">{title}</text>", x0 + w / 2.0);
        let _ = write!(s, "<text x=\"{}\" y=\"27\" text-anchor=\"middle\" fill=\"#666\">{}</text>", x0 + w / 2.0, label("vs base, points, 95% CI", (w / text_width(1, FONT)) as usize));
        let _ = write!(s, "<line x1=\"{}\" y1=\"34\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"3,3\"/>", x(0.0), x(0.0), h - 22.0);
        for v in [-lim, 0.0, lim] {
            let _ = write!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#777\" font-size=\"10\">{}</text>", x(v), h - 4.0, if v == 0.0 { "0".to_string() } else { format!("{:+.0}", 100.0 * v) });
        }
        for (i, m) in all.iter().enumerate() {
            let y = top - 14.0 + row * i as f64;
            let Some(d) = diff(m, k) else {
                let _ = write!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#999\">–</text>", x(0.0) + 10.0, y + 4.0);
                continue;
            };
            let color = if d.significant() { if d.delta > 0.0 { "#2a7" } else { "#c33" } } else { "#555" };
            let _ = write!(s, "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"2\"/>", x(d.lo), x(d.hi));
            let _ = write!(s, "<circle cx=\"{}\" cy=\"{y}\" r=\"4\" fill=\"{color}\"><title>{} {name}: {} [{}, {}] over {} scenarios</title></circle>", x(d.delta), xml(&m.method), pp(d.delta), pp(d.lo), pp(d.hi), d.scenarios);
            // The figure beside the interval on the side away from 0 (off the dashed line),
            // else on the other side, else above the point.
            let text = pp(d.delta);
            let tw = text_width(text.chars().count(), FONT);
            let right = x(d.hi) + 4.0 + tw <= x0 + w;
            let left = x(d.lo) - 4.0 - tw >= x0;
            if right && (d.delta >= 0.0 || !left) {
                let _ = write!(s, "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{text}</text>", x(d.hi) + 4.0, y + 4.0);
            } else if left {
                let _ = write!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"{color}\">{text}</text>", x(d.lo) - 4.0, y + 4.0);
            } else {
                let _ = write!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{color}\">{text}</text>", x(d.delta), y - 6.0);
            }
        }
    }
    s + "</svg>"
}

/// Compares every run after the first with the first (the baseline) and writes `compare.md`,
/// `compare.svg` and `compare.json` into `out`. Returns the markdown and the JSON.
pub fn write_tables(out: &Path, runs: &[MethodRun], resamples: usize, sampling: &SamplingParams, judge: &str, groups: &Groups) -> anyhow::Result<(String, serde_json::Value)> {
    let Some(base) = runs.first() else { anyhow::bail!("nothing to compare: no method") };
    let diffs: Vec<MethodDiffs> = runs[1..].iter().map(|r| compare(base, r, groups, resamples, sampling.seed)).collect();
    let md = markdown(&base.cost, &base.method, &diffs, judge, groups);
    write_atomic(&out.join("compare.md"), md.as_bytes())?;
    let base_tokens = (base.cost.samples > 0).then_some(base.cost.tokens);
    write_atomic(&out.join("compare.svg"), svg(&diffs, base_tokens).as_bytes())?;
    let json = serde_json::json!({"baseline": base.method, "baseline_cost": base.cost, "judge": judge, "sampling": sampling, "groups": groups, "methods": diffs});
    write_atomic(&out.join("compare.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok((md, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{table, Outcome};

    /// A run from per-scenario (functional, secure) outcomes; every sample parses.
    fn run(method: &str, outcomes: &[(&str, &[(bool, bool)])]) -> MethodRun {
        let rows: Vec<(String, String, Vec<Outcome>)> = outcomes
            .iter()
            .map(|(id, o)| (id.to_string(), "CWE-089".to_string(), o.iter().map(|&(functional, secure)| Outcome { parsed: true, functional, secure }).collect()))
            .collect();
        let t = table(&rows);
        MethodRun {
            method: method.into(),
            config: serde_json::Value::Null,
            judge: "j".into(),
            table: t.clone(),
            static_table: t.clone(),
            exploit_table: t,
            agreement: Default::default(),
            per_backend: Default::default(),
            static_only: vec![],
            complete: outcomes.len(),
            total: outcomes.len(),
            cost: Default::default(),
            detail: vec![],
        }
    }

    #[test]
    fn compare_pairs_scenarios_splits_held_out_and_reports_every_metric() {
        const W: (bool, bool) = (true, true); // works, secure
        const V: (bool, bool) = (true, false); // works, insecure
        const B: (bool, bool) = (false, true); // broken, secure
        let base = run("base", &[("base/cwe-089/0-py", &[V, V]), ("base/cwe-089/1-py", &[W, V]), ("untrain/cwe-089/2-py", &[W, W]), ("base/only-in-base", &[V, V])]);
        let m = run("m", &[("base/cwe-089/0-py", &[W, W]), ("base/cwe-089/1-py", &[W, B]), ("untrain/cwe-089/2-py", &[W, V])]);
        let d = compare(&base, &m, &Groups::default(), 2000, 1);
        // The scenario missing from the method is left out of every figure.
        assert_eq!(d.per_scenario.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["base/cwe-089/0-py", "base/cwe-089/1-py", "untrain/cwe-089/2-py"]);
        let names: Vec<&str> = d.groups["all"].iter().map(|x| x.metric.as_str()).collect();
        assert_eq!(names, ["pass@1", "sec-pass@1", "sec-pass@1 exploit", "security rate"]);
        let all = &d.groups["all"];
        // pass@1: 1, 1, 1 -> 1, 0.5, 1; sec-pass@1: 0, 0.5, 1 -> 1, 0.5, 0.5; security rate: 0, 0.5, 1 -> 1, 1, 0.5.
        assert!((all[0].delta - (-0.5 / 3.0)).abs() < 1e-12);
        assert!((all[1].delta - (0.5 / 3.0)).abs() < 1e-12);
        assert!((all[3].delta - (1.0 / 3.0)).abs() < 1e-12);
        assert_eq!((all[1].better, all[1].worse, all[1].equal), (1, 1, 1));
        assert_eq!((all[1].scenarios, all[1].samples), (3, 12));
        // Held-out and trained apart.
        assert_eq!(d.groups["held-out"][1].scenarios, 1);
        assert!((d.groups["held-out"][1].delta + 0.5).abs() < 1e-12);
        assert!((d.groups["trained"][1].delta - 0.5).abs() < 1e-12);
        // The table has the security-rate column, with the base and method means.
        // With the training CWEs known, held-out means "CWE absent from them".
        let by_cwe = Groups { trained: Some([22, 78].into_iter().collect()), source: "guard g".into() };
        let d2 = compare(&base, &m, &by_cwe, 2000, 1);
        assert_eq!(d2.groups["held-out"][1].scenarios, 3, "CWE-089 is in no training pair, untrain/ or not");
        assert!(!d2.groups.contains_key("trained"));
        assert_eq!(by_cwe.group_of("base/cwe-078/1-py"), "trained");
        assert_eq!(by_cwe.group_of("untrain/cwe-022/0-py"), "trained", "a CWE in training is trained whatever its folder");
        // The table has the security-rate column, with the base and method means.
        let mut m_cost = d.clone();
        m_cost.cost = crate::report::CostSummary { samples: 6, tokens: 300.0, secs: Some(3.0), distinct: Some(2.5), flagged: Some(4), repaired: Some(3) };
        let base_cost = crate::report::CostSummary { samples: 8, tokens: 100.0, secs: Some(1.5), ..Default::default() };
        let md = markdown(&base_cost, "base", &[m_cost], "j", &by_cwe);
        let row = md.lines().find(|l| l.starts_with("| m | 3 | all |")).expect("row for group all");
        assert!(row.contains("| 50.0 → 83.3 | +33.3 ["), "{row}");
        assert!(md.contains("CWE 22, 78"), "the table says what held-out means: {md}");
        let cost = md.lines().find(|l| l.starts_with("| m | 6 |")).expect("cost row");
        assert_eq!(cost, "| m | 6 | 300.0 (3.00×) | 3.00 (2.00×) | 2.50 | 3 / 4 |");
        assert!(md.contains("| base | 8 | 100.0 (1.00×) | 1.50 (1.00×) | – | – |"), "{md}");
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_shrinks_with_agreement() {
        let d = [0.1, 0.2, 0.0, 0.3, 0.1, 0.2, 0.1, 0.0, 0.2, 0.3];
        let (m, lo, hi) = bootstrap(&d, 10_000, 7);
        assert!((m - 0.15).abs() < 1e-12);
        assert!(lo > 0.0 && lo < m && m < hi && hi < 0.3, "{lo} {m} {hi}");
        // Same seed, same interval.
        assert_eq!(bootstrap(&d, 10_000, 7), (m, lo, hi));
        // Differences of both signs: the interval contains 0.
        let mixed = [0.3, -0.3, 0.2, -0.2, 0.1, -0.1, 0.0];
        let (_, lo, hi) = bootstrap(&mixed, 10_000, 7);
        assert!(lo < 0.0 && hi > 0.0);
        // All equal: a point interval.
        assert_eq!(bootstrap(&[0.25; 5], 1000, 1), (0.25, 0.25, 0.25));
    }
}
