//! The pictures people open in a browser: `compare.svg` and the report page's chart and settings,
//! for a benchmark with security tests and one without. Each SVG is parsed as a browser reads it
//! (well-formed, no `null`/`NaN` text or geometry, every label inside the view box) and its panels
//! are those with data.

#[path = "../../runtime/tests/support/svg.rs"]
mod svg;

use deepguard_eval::compare::{compare, svg as compare_svg, Groups};
use deepguard_eval::metrics::{table, Outcome};
use deepguard_eval::report::{chart, html, MethodRun};

/// A run from per-scenario (functional, secure) outcomes; with `exploit`, every scenario has a
/// security test (and the same verdicts under it), without, none has.
fn run(method: &str, outcomes: &[(&str, Vec<(bool, bool)>)], exploit: bool) -> MethodRun {
    let rows: Vec<(String, String, Vec<Outcome>)> =
        outcomes.iter().map(|(id, o)| (id.to_string(), "CWE-089".to_string(), o.iter().map(|&(functional, secure)| Outcome { parsed: true, functional, secure }).collect())).collect();
    let t = table(&rows);
    MethodRun {
        method: method.into(),
        config: serde_json::json!({"model": "tiny.gguf", "method": {"guard": {"dir": "g", "strength": 2.0, "bias_rule": "paper"}, "steer": null}, "sampling": {"n": 4, "temperature": 0.2, "top_p": 0.95, "seed": 1}, "stop_at_function_end": true, "tags": ["a", "b"]}),
        judge: "bandit+semgrep".into(),
        table: t.clone(),
        static_table: t.clone(),
        exploit_table: if exploit { t } else { table(&[]) },
        agreement: Default::default(),
        per_backend: Default::default(),
        static_only: if exploit { vec![] } else { rows.iter().map(|r| r.0.clone()).collect() },
        complete: outcomes.len(),
        total: outcomes.len(),
        cost: Default::default(),
        detail: vec![],
    }
}

/// A baseline and three methods (one with a name longer than any label should be) over six
/// scenarios, outcomes varied enough for intervals of both signs.
fn runs(exploit: bool) -> Vec<MethodRun> {
    let ids = ["base/cwe-089/0-py", "base/cwe-089/1-py", "base/cwe-079/0-py", "untrain/cwe-022/0-py", "untrain/cwe-022/1-c", "base/cwe-125/0-c"];
    let (w, v, b) = ((true, true), (true, false), (false, true));
    let base: Vec<(&str, Vec<(bool, bool)>)> = ids.iter().map(|id| (*id, vec![v, v, w, b])).collect();
    let better: Vec<(&str, Vec<(bool, bool)>)> = ids.iter().map(|id| (*id, vec![w, w, w, v])).collect();
    let worse: Vec<(&str, Vec<(bool, bool)>)> = ids.iter().enumerate().map(|(i, id)| (*id, if i % 2 == 0 { vec![b, b, b, v] } else { vec![v, v, w, b] })).collect();
    vec![
        run("base", &base, exploit),
        run("guard:../shared/runs/deepguard-qwen2.5-coder-0.5b-top8-epoch3@2", &better, exploit),
        run("steer:../shared/vectors/qwen-coder-0.5b-cwe-all:auto@3+guard:../shared/runs/deepguard-qwen2.5-coder-0.5b-top8-epoch3@1+rerank:4:both", &worse, exploit),
        run("rerank:4", &better, exploit),
    ]
}

fn texts(labels: &[svg::Label]) -> Vec<&str> {
    labels.iter().map(|l| l.text.as_str()).collect()
}

#[test]
fn compare_svg_has_a_panel_per_metric_with_data_and_every_label_in_view() {
    for exploit in [true, false] {
        let mut rs = runs(exploit);
        for (i, r) in rs.iter_mut().enumerate() {
            r.cost = deepguard_eval::report::CostSummary { samples: 24, tokens: 100.0 * (i + 1) as f64, ..Default::default() };
        }
        let diffs: Vec<_> = rs[1..].iter().map(|r| compare(&rs[0], r, &Groups::default(), 2000, 1)).collect();
        let doc = compare_svg(&diffs, Some(100.0));
        let labels = svg::check_svg(&doc).unwrap_or_else(|e| panic!("exploit={exploit}:\n{e}\n{doc}"));
        let t = texts(&labels);
        let has = |s: &str| t.iter().any(|x| *x == s);
        assert!(has("Δ pass@1") && has("Δ sec-pass@1") && has("Δ security rate"), "exploit={exploit}: {t:?}");
        assert_eq!(has("Δ sec-pass@1 exploit"), exploit, "the exploit panel is drawn exactly when there are security tests: {t:?}");
        // Every method is named; the long one is cut, with its whole name as a tooltip.
        assert!(has("rerank:4") && t.iter().any(|x| x.starts_with("steer:../shared") && x.ends_with('…')), "{t:?}");
        // Each method's cost under its name, against the baseline's tokens.
        assert!(has("400 tok/sample (4.0× base)") && has("200 tok/sample (2.0× base)"), "{t:?}");
        assert!(doc.contains("<title>steer:../shared/vectors/qwen-coder-0.5b-cwe-all:auto@3+guard:"), "the cut name's tooltip");
        // One figure per method and panel; no "–" placeholders when every method has data.
        let figures = t.iter().filter(|x| (x.starts_with('+') || x.starts_with('-')) && x.contains('.')).count();
        assert_eq!(figures, 3 * if exploit { 4 } else { 3 }, "{t:?}");
        // Fits a 1280-pixel window.
        let width: f64 = doc.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(width <= 1200.0, "exploit={exploit}: {width} px wide");
    }
    // No method at all has data: a line saying so, still a valid drawing.
    let empty = compare_svg(&[], None);
    assert_eq!(texts(&svg::check_svg(&empty).unwrap()), ["no metric has scenarios in both runs"]);
}

#[test]
fn report_chart_and_settings_read_as_a_page() {
    for exploit in [true, false] {
        let rs = runs(exploit);
        let c = chart(&rs);
        let labels = svg::check_svg(&c).unwrap_or_else(|e| panic!("{e}\n{c}"));
        let t = texts(&labels);
        for m in ["pass@1", "sec@1_pass", "sec-pass@1", "security rate", "base", "rerank:4"] {
            assert!(t.contains(&m), "{m} missing: {t:?}");
        }
    }
    // A method with no functional sample has no sec@1_pass: a dash, not a bar at 0.
    let broken = run("broken", &[("base/cwe-089/0-py", vec![(false, true), (false, false)])], false);
    let labels = svg::check_svg(&chart(&[broken])).unwrap();
    assert_eq!(texts(&labels).iter().filter(|x| **x == "–").count(), 1, "{:?}", texts(&labels));

    // The settings are a table of dotted keys, not JSON.
    let page = html(&runs(false));
    for row in ["<tr><td>method.guard.strength</td><td>2.0</td></tr>", "<tr><td>sampling.temperature</td><td>0.2</td></tr>", "<tr><td>method.steer</td><td>none</td></tr>", "<tr><td>tags</td><td>a, b</td></tr>"] {
        assert!(page.contains(row), "{row} missing");
    }
    assert!(!page.contains("{&quot;") && !page.contains("{\"model"), "raw JSON on the page");
}
