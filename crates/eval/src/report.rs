//! Reports over a run folder (one subfolder per method): a markdown table, JSON, and an HTML page
//! with a bar chart comparing methods and a per-scenario drill-down (prompt, samples, test
//! result, judge findings). Only scenarios with samples, test results and judge verdicts for
//! every sample enter the metrics; the report says how many that is.

use crate::functional::TestRec;
use crate::gen::{load_samples, SampleRec};
use crate::judge::JudgeRec;
use crate::metrics::{table, Counts, Outcome, Rates, Row, Table};
use crate::scenario::Scenario;
use crate::store::Jsonl;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Everything known about one method's run.
#[derive(Serialize)]
pub struct MethodRun {
    pub method: String,
    pub config: serde_json::Value,
    pub judge: String,
    pub table: Table,
    /// The same samples judged by the static backends alone.
    pub static_table: Table,
    /// The same samples judged by the security tests alone, over the scenarios that have one
    /// (and a verdict for every sample).
    pub exploit_table: Table,
    /// Per-sample agreement of the exploit and static verdicts, where both exist.
    pub agreement: Agreement,
    /// Per backend (tool): samples it flags, and how many of those the security test flags too
    /// (over samples with an exploit verdict).
    pub per_backend: BTreeMap<String, (usize, usize)>,
    /// Scenario ids judged by static analysis only (no security test).
    pub static_only: Vec<String>,
    /// Scenarios complete (generated, tested, judged) / asked for.
    pub complete: usize,
    pub total: usize,
    /// What the kept samples of the complete scenarios cost.
    pub cost: CostSummary,
    #[serde(skip)]
    pub detail: Vec<ScenarioDetail>,
}

/// Means per kept sample: generated tokens (every candidate and repair round behind it) and
/// wall time; a rerank's distinct programs per group; a repair's flagged drafts and how many
/// the loop left unflagged.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CostSummary {
    pub samples: usize,
    pub tokens: f64,
    /// None when a sample has no recorded time (runs of earlier releases).
    pub secs: Option<f64>,
    pub distinct: Option<f64>,
    /// Drafts the repair loop's checks flagged, and of those, how many it repaired until
    /// nothing flagged them.
    pub flagged: Option<usize>,
    pub repaired: Option<usize>,
}

impl CostSummary {
    pub fn of(samples: &[&SampleRec]) -> CostSummary {
        let n = samples.len();
        if n == 0 {
            return CostSummary::default();
        }
        let mean = |f: &dyn Fn(&SampleRec) -> f64| samples.iter().map(|s| f(s)).sum::<f64>() / n as f64;
        let all = |f: &dyn Fn(&SampleRec) -> Option<f64>| samples.iter().map(|s| f(s)).collect::<Option<Vec<f64>>>().map(|v| v.iter().sum::<f64>() / n as f64);
        let traces: Vec<&crate::repair::Trace> = samples.iter().filter_map(|s| s.repair.as_ref()).collect();
        let repair = (traces.len() == n).then(|| {
            let flagged: Vec<_> = traces.iter().filter(|t| !t.versions[0].flags.is_empty()).collect();
            (flagged.len(), flagged.iter().filter(|t| t.versions[t.kept].flags.is_empty() && t.versions[t.kept].broken.is_empty()).count())
        });
        CostSummary {
            samples: n,
            tokens: mean(&|s| s.cost().tokens as f64),
            secs: all(&|s| s.cost.map(|c| c.secs)),
            distinct: all(&|s| s.distinct.map(|d| d as f64)),
            flagged: repair.map(|r| r.0),
            repaired: repair.map(|r| r.1),
        }
    }
}

pub struct ScenarioDetail {
    pub scenario: Scenario,
    pub samples: Vec<(SampleRec, TestRec, JudgeRec)>,
}

/// How the exploit and static verdicts of the same samples agree ("flag": judged insecure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Agreement {
    pub both_flag: usize,
    pub exploit_only: usize,
    pub static_only: usize,
    pub neither: usize,
}

pub fn judge_file(judge: &str) -> String {
    format!("judge-{judge}.jsonl")
}

/// Loads one method's folder.
pub fn load_method(mdir: &Path, scenarios: &[Scenario], judge: &str) -> Result<MethodRun> {
    let cfg_path = mdir.join("config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).with_context(|| format!("{}: cannot read", cfg_path.display()))?)
        .with_context(|| format!("{}: not valid JSON", cfg_path.display()))?;
    let samples = load_samples(&Jsonl::new(mdir.join("samples.jsonl")))?;
    let key = |s: &str, i: usize| format!("{s}#{i}");
    let tests: BTreeMap<String, TestRec> = Jsonl::new(mdir.join("tests.jsonl")).load::<TestRec>()?.into_iter().map(|t| (key(&t.scenario, t.idx), t)).collect();
    let judged: BTreeMap<String, JudgeRec> = Jsonl::new(mdir.join(judge_file(judge))).load::<JudgeRec>()?.into_iter().map(|t| (key(&t.scenario, t.idx), t)).collect();
    let mut rows = Vec::new();
    let mut static_rows = Vec::new();
    let mut exploit_rows = Vec::new();
    let mut static_only = Vec::new();
    let mut agreement = Agreement::default();
    let mut per_backend: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut detail = Vec::new();
    for sc in scenarios {
        let Some(ss) = samples.get(&sc.id) else { continue };
        let mut full = Vec::new();
        for s in ss {
            let k = key(&sc.id, s.idx);
            if let (Some(t), Some(j)) = (tests.get(&k), judged.get(&k)) {
                full.push((s.clone(), t.clone(), j.clone()));
            }
        }
        if full.len() < ss.len() || full.is_empty() {
            continue;
        }
        let outcomes = |f: &dyn Fn(&JudgeRec) -> bool| full.iter().map(|(_, t, j)| Outcome { parsed: t.parsed, functional: t.functional, secure: f(j) }).collect::<Vec<_>>();
        rows.push((sc.id.clone(), sc.cwe.clone(), outcomes(&|j| j.secure)));
        static_rows.push((sc.id.clone(), sc.cwe.clone(), outcomes(&|j| j.static_secure())));
        if full.iter().all(|(_, _, j)| j.exploit_secure().is_some()) {
            exploit_rows.push((sc.id.clone(), sc.cwe.clone(), outcomes(&|j| j.exploit_secure() == Some(true))));
            for (_, _, j) in &full {
                let mut tools: Vec<&str> = j.findings.iter().filter(|f| f.counts && f.tool != "exploit").map(|f| f.tool.as_str()).collect();
                tools.sort();
                tools.dedup();
                for t in tools {
                    let e = per_backend.entry(t.to_string()).or_default();
                    e.0 += 1;
                    e.1 += (j.exploit_secure() == Some(false)) as usize;
                }
                match (j.exploit_secure() == Some(false), !j.static_secure()) {
                    (true, true) => agreement.both_flag += 1,
                    (true, false) => agreement.exploit_only += 1,
                    (false, true) => agreement.static_only += 1,
                    (false, false) => agreement.neither += 1,
                }
            }
        } else {
            static_only.push(sc.id.clone());
        }
        detail.push(ScenarioDetail { scenario: sc.clone(), samples: full });
    }
    let cost = CostSummary::of(&detail.iter().flat_map(|d| d.samples.iter().map(|s| &s.0)).collect::<Vec<_>>());
    Ok(MethodRun {
        method: mdir.file_name().unwrap().to_string_lossy().into(),
        config,
        judge: judge.into(),
        table: table(&rows),
        static_table: table(&static_rows),
        exploit_table: table(&exploit_rows),
        agreement,
        per_backend,
        static_only,
        complete: rows.len(),
        total: scenarios.len(),
        cost,
        detail,
    })
}

fn pct(r: Option<f64>) -> String {
    r.map(|x| format!("{:.1}%", 100.0 * x)).unwrap_or_else(|| "–".into())
}

fn row_md(r: &Row) -> String {
    let c: &Counts = &r.counts;
    let a: &Rates = &r.rates;
    format!(
        "| {} | {} | {} ({}/{}) | {} ({}/{}) | {} ({}/{}) | {} ({}/{}) |",
        r.name, r.scenarios, pct(a.pass_at_1), c.functional, c.n, pct(a.sec_at_1_pass), c.func_secure, c.functional, pct(a.sec_pass_at_1), c.func_secure, c.n, pct(a.security_rate), c.secure_parsed, c.parsed
    )
}

const HEAD: &str = "| | scenarios | pass@1 | sec@1_pass | sec-pass@1 | security rate |\n|---|---|---|---|---|---|\n";

pub fn markdown(runs: &[MethodRun], skipped: &[String]) -> String {
    let mut s = String::from("# deepguard eval report\n\n");
    if !skipped.is_empty() {
        let _ = writeln!(s, "Skipped {} scenario(s) the harness cannot run:\n", skipped.len());
        for k in skipped {
            let _ = writeln!(s, "- {k}");
        }
        s.push('\n');
    }
    for m in runs {
        let _ = writeln!(s, "## method `{}` — judge `{}`\n", m.method, m.judge);
        let _ = writeln!(s, "settings: `{}`\n", m.config);
        let _ = writeln!(s, "{} of {} scenarios complete (generated, tested, judged). Counts in parentheses; AVERAGE counts are the pooled ones.\n", m.complete, m.total);
        s += HEAD;
        let _ = writeln!(s, "{}\n{}\n", row_md(&m.table.overall), row_md(&m.table.average));
        let _ = writeln!(s, "### sec-pass@1 by judge\n");
        let _ = writeln!(
            s,
            "A sample is insecure when any counting backend flags it (combined). `exploit`: the security tests alone, over the {} scenarios that have one; `static`: bandit/semgrep/cppcheck/flawfinder/codeql alone. Scenarios judged by static analysis only: {}.\n",
            m.exploit_table.scenarios.len(),
            if m.static_only.is_empty() { "none".to_string() } else { m.static_only.join(", ") }
        );
        s += &by_judge_md(m);
        let g = &m.agreement;
        let _ = writeln!(s, "\nPer-sample agreement where both judged: both flag {}, only exploit {}, only static {}, neither {}.\n", g.both_flag, g.exploit_only, g.static_only, g.neither);
        if !m.per_backend.is_empty() {
            s += "| backend | samples it flags (counting) | of those, the security test flags too |\n|---|---|---|\n";
            for (t, (n, k)) in &m.per_backend {
                let _ = writeln!(s, "| {t} | {n} | {k} ({}) |", pct((*n > 0).then(|| *k as f64 / *n as f64)));
            }
            s.push('\n');
        }
        let _ = writeln!(s, "### per CWE\n");
        s += HEAD;
        for r in &m.table.cwes {
            let _ = writeln!(s, "{}", row_md(r));
        }
        let _ = writeln!(s, "\n### per scenario\n");
        s += HEAD;
        for r in &m.table.scenarios {
            let _ = writeln!(s, "{}", row_md(r));
        }
        s.push('\n');
    }
    s
}

/// Per CWE and OVERALL: pass@1 and sec-pass@1 by static analysis, by exploit tests, combined.
fn by_judge_md(m: &MethodRun) -> String {
    let mut s = String::from("| | pass@1 | sec-pass@1 static | sec-pass@1 exploit | sec-pass@1 combined |\n|---|---|---|---|---|\n");
    let find = |t: &Table, name: &str| -> Option<Row> { t.cwes.iter().chain([&t.overall]).find(|r| r.name == name).cloned() };
    let cell = |r: Option<Row>| r.map(|r| format!("{} ({}/{})", pct(r.rates.sec_pass_at_1), r.counts.func_secure, r.counts.n)).unwrap_or_else(|| "–".into());
    for r in m.table.cwes.iter().chain([&m.table.overall]) {
        let _ = writeln!(
            s,
            "| {} | {} ({}/{}) | {} | {} | {} |",
            r.name,
            pct(r.rates.pass_at_1),
            r.counts.functional,
            r.counts.n,
            cell(find(&m.static_table, &r.name)),
            cell(find(&m.exploit_table, &r.name)),
            cell(Some(r.clone()))
        );
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Bar chart (inline SVG): OVERALL metrics, one bar per method, a legend line per method
/// below. A metric a method has no figure for gets no bar and a dash.
pub fn chart(runs: &[MethodRun]) -> String {
    let metrics: [(&str, fn(&Rates) -> Option<f64>); 4] =
        [("pass@1", |r| r.pass_at_1), ("sec@1_pass", |r| r.sec_at_1_pass), ("sec-pass@1", |r| r.sec_pass_at_1), ("security rate", |r| r.security_rate)];
    let colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948"];
    // 0.6 em per character at 11 px: a little wider than the average glyph.
    let text_w = |t: &str| 6.6 * t.chars().count() as f64;
    let names: Vec<String> = runs.iter().map(|m| if m.method.chars().count() > 80 { m.method.chars().take(79).chain(['…']).collect() } else { m.method.clone() }).collect();
    let (gw, bw, h) = (40.0 + 30.0 * runs.len() as f64, 26.0, 200.0);
    let width = names.iter().map(|n| 60.0 + text_w(n)).fold(60.0 + gw * 4.0, f64::max).ceil();
    let height = h + 56.0 + 16.0 * runs.len() as f64;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">");
    for (mi, (name, f)) in metrics.iter().enumerate() {
        let x0 = 40.0 + gw * mi as f64;
        for (ri, m) in runs.iter().enumerate() {
            let x = x0 + 30.0 * ri as f64;
            let Some(v) = f(&m.table.overall.rates) else {
                let _ = write!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#999\">–</text>", x + bw / 2.0, 15.0 + h);
                continue;
            };
            let bh = v * h;
            let _ = write!(
                s,
                "<rect x=\"{x}\" y=\"{}\" width=\"{bw}\" height=\"{bh}\" fill=\"{}\"><title>{} {name}: {}</title></rect><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.0}</text>",
                20.0 + h - bh,
                colors[ri % colors.len()],
                esc(&m.method),
                pct(Some(v)),
                x + bw / 2.0,
                15.0 + h - bh,
                100.0 * v
            );
        }
        let _ = write!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{name}</text>", x0 + 15.0 * runs.len() as f64, h + 38.0);
    }
    for (ri, name) in names.iter().enumerate() {
        let y = h + 48.0 + 16.0 * ri as f64;
        let _ = write!(s, "<rect x=\"40\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"55\" y=\"{}\">{}</text>", colors[ri % colors.len()], y + 9.0, esc(name));
    }
    s + "</svg>"
}

/// A run's settings (`config.json`) as a table: one row per value, nested keys joined by dots
/// (`sampling.temperature`), lists joined by commas, absent values as "none".
pub fn settings_html(config: &serde_json::Value) -> String {
    fn scalar(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Null => "none".into(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) if a.is_empty() => "none".into(),
            serde_json::Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
            serde_json::Value::Object(m) if m.is_empty() => "none".into(),
            other => other.to_string(),
        }
    }
    fn flatten(key: &str, v: &serde_json::Value, rows: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    flatten(&if key.is_empty() { k.clone() } else { format!("{key}.{k}") }, v, rows);
                }
            }
            _ => rows.push((if key.is_empty() { "settings".into() } else { key.to_string() }, scalar(v))),
        }
    }
    let mut rows = Vec::new();
    flatten("", config, &mut rows);
    let mut s = String::from("<table class=\"settings\"><tr><th>setting</th><th>value</th></tr>");
    for (k, v) in rows {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(&k), esc(&v));
    }
    s + "</table>"
}

pub fn html(runs: &[MethodRun]) -> String {
    let mut s = String::from("<!doctype html><meta charset=\"utf-8\"><title>deepguard eval</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}pre{background:#f6f6f6;padding:6px;overflow:auto;max-height:30em}.pass{color:#080}.fail{color:#b00}</style><h1>deepguard eval</h1><h2>OVERALL by method</h2>");
    s += &chart(runs);
    for m in runs {
        let _ = write!(s, "<h2>method {} — judge {}</h2><h3>settings</h3>{}<p>{} of {} scenarios complete</p>", esc(&m.method), esc(&m.judge), settings_html(&m.config), m.complete, m.total);
        s += "<table><tr><th></th><th>scenarios</th><th>pass@1</th><th>sec@1_pass</th><th>sec-pass@1</th><th>security rate</th></tr>";
        for r in [&m.table.overall, &m.table.average].into_iter().chain(&m.table.cwes).chain(&m.table.scenarios) {
            let c = &r.counts;
            let a = &r.rates;
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{} ({}/{})</td><td>{} ({}/{})</td><td>{} ({}/{})</td><td>{} ({}/{})</td></tr>",
                esc(&r.name), r.scenarios, pct(a.pass_at_1), c.functional, c.n, pct(a.sec_at_1_pass), c.func_secure, c.functional, pct(a.sec_pass_at_1), c.func_secure, c.n, pct(a.security_rate), c.secure_parsed, c.parsed
            );
        }
        s += "</table><h3>drill-down</h3>";
        for d in &m.detail {
            let _ = write!(s, "<details><summary>{} ({})</summary><p>prompt:</p><pre>{}</pre>", esc(&d.scenario.id), esc(&d.scenario.cwe), esc(&d.scenario.prompt()));
            for (smp, t, j) in &d.samples {
                let cls = if t.functional { "pass" } else { "fail" };
                let _ = write!(
                    s,
                    "<details><summary>sample {} — <span class=\"{cls}\">{}</span>, {}{}, {}</summary><pre>{}</pre>",
                    smp.idx,
                    esc(&t.verdict),
                    if t.parsed { "parsed" } else { "does not parse" },
                    if smp.cut.complete { "" } else { ", function never ended" },
                    if j.secure { "secure" } else { "INSECURE" },
                    esc(&smp.cut.code)
                );
                if let Some(x) = &j.exploit {
                    let _ = write!(s, "<p>security test: <b>{}</b> — {}</p>", x.label(), esc(&x.evidence));
                }
                if !j.findings.is_empty() {
                    s += "<ul>";
                    for f in &j.findings {
                        let _ = write!(s, "<li>{}{} {} {} line {}: {}</li>", if f.counts { "<b>counts</b> " } else { "" }, esc(&f.tool), esc(&f.rule), esc(&f.cwe), f.line, esc(&f.message));
                    }
                    s += "</ul>";
                }
                let _ = write!(s, "<p>test log (batch):</p><pre>{}</pre></details>", esc(&t.log));
            }
            s += "</details>";
        }
    }
    s
}

/// Writes report.md, report.json and report.html into `out`.
pub fn write_all(out: &Path, runs: &[MethodRun], skipped: &[String]) -> Result<()> {
    let w = |name: &str, text: String| deepguard_runtime::files::write_atomic(&out.join(name), text.as_bytes());
    w("report.md", markdown(runs, skipped))?;
    w("report.json", serde_json::to_string_pretty(&serde_json::json!({ "methods": runs, "skipped": skipped }))?)?;
    w("report.html", html(runs))
}
