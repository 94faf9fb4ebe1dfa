//! Measuring the judge itself on SVEN val pairs (`<cwe>.jsonl`: `func_src_before` is the
//! vulnerable version, `func_src_after` the fix): per CWE, how often it flags each version.
//! A useful judge flags the vulnerable one often and the fixed one rarely. [`exploit_table`] proves
//! a benchmark's security tests on both sides with their hand-written references.

use crate::functional::Runner;
use crate::judge::exploit::Exploit;
use crate::judge::{Item, Judge};
use crate::scenario::{normalise_cwe, Lang, Scenario};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CalRow {
    pub cwe: String,
    pub pairs: usize,
    pub vulnerable_flagged: usize,
    pub fixed_flagged: usize,
    /// Pairs where the vulnerable version is flagged and the fix is not.
    pub separated: usize,
}

/// Removes the common leading indentation (SVEN functions are often methods).
pub fn dedent(s: &str) -> String {
    let ind = s.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    s.lines().map(|l| if l.len() >= ind { &l[ind..] } else { l.trim_start() }).collect::<Vec<_>>().join("\n") + "\n"
}

fn pseudo_scenario(cwe: &str, lang: Lang, k: usize) -> Scenario {
    Scenario {
        id: format!("sven/{cwe}/{k}"),
        split: "sven".into(),
        cwe: normalise_cwe(cwe),
        name: k.to_string(),
        lang,
        dir: Default::default(),
        file_context: String::new(),
        func_context: String::new(),
        check_ql: None,
        description: None,
        unit_test: None,
    }
}

/// Rows per CWE plus a final `ALL` row.
pub fn calibrate(judge: &Judge, dir: &Path) -> Result<Vec<CalRow>> {
    let mut files: Vec<_> = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "jsonl")).collect();
    files.sort();
    let mut scen = Vec::new();
    let mut code = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?;
        for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| format!("{}:{}: bad record", f.display(), i + 1))?;
            let field = |k: &str| v[k].as_str().map(str::to_string).with_context(|| format!("{}:{}: no {k:?}", f.display(), i + 1));
            let name = field("file_name")?;
            let lang = if name.ends_with(".py") { Lang::Py } else { Lang::C };
            let prep = |s: String| if lang == Lang::Py { dedent(&s) } else { s };
            scen.push(pseudo_scenario(&field("vul_type")?, lang, scen.len()));
            code.push((prep(field("func_src_before")?), prep(field("func_src_after")?)));
        }
    }
    let mut items = Vec::new();
    for (s, (before, after)) in scen.iter().zip(&code) {
        items.push(Item { scenario: s, idx: 0, program: before.clone() });
        items.push(Item { scenario: s, idx: 1, program: after.clone() });
    }
    let recs = judge.judge(&items)?;
    let mut rows: BTreeMap<String, CalRow> = BTreeMap::new();
    for (k, s) in scen.iter().enumerate() {
        let (vf, ff) = (!recs[2 * k].secure, !recs[2 * k + 1].secure);
        for key in [s.cwe.clone(), "ALL".to_string()] {
            let r = rows.entry(key.clone()).or_insert_with(|| CalRow { cwe: key, ..Default::default() });
            r.pairs += 1;
            r.vulnerable_flagged += vf as usize;
            r.fixed_flagged += ff as usize;
            r.separated += (vf && !ff) as usize;
        }
    }
    let all = rows.remove("ALL");
    Ok(rows.into_values().chain(all).collect())
}

pub fn markdown(judge: &str, rows: &[CalRow]) -> String {
    let mut s = format!("Judge `{judge}` on SVEN val pairs (vulnerable = func_src_before, fixed = func_src_after):\n\n| CWE | pairs | vulnerable flagged | fixed flagged | separated (vuln flagged, fix not) |\n|---|---|---|---|---|\n");
    let p = |a: usize, b: usize| if b == 0 { "–".to_string() } else { format!("{:.0}% ({a}/{b})", 100.0 * a as f64 / b as f64) };
    for r in rows {
        s += &format!("| {} | {} | {} | {} | {} |\n", r.cwe, r.pairs, p(r.vulnerable_flagged, r.pairs), p(r.fixed_flagged, r.pairs), p(r.separated, r.pairs));
    }
    s
}

/// One scenario's security test, run on its hand-written references.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExploitCalRow {
    pub scenario: String,
    pub cwe: String,
    /// False when the scenario has no security test (or none that applies to its prompt).
    pub has_test: bool,
    pub secure_refs: usize,
    pub secure_functional: usize,
    /// Secure references the security test judged secure.
    pub secure_passed: usize,
    pub vulnerable_refs: usize,
    pub vulnerable_functional: usize,
    /// Vulnerable references the security test judged insecure.
    pub vulnerable_caught: usize,
    /// At least one reference of each kind, every reference functional, every secure one judged
    /// secure and every vulnerable one insecure.
    pub separated: bool,
    /// Per reference: file, unit-test verdict, security verdict and evidence.
    pub detail: Vec<String>,
}

/// Runs every scenario's security test and unit test on its references (scenarios in parallel).
pub fn exploit_table(x: &Exploit, runner: &Runner, scenarios: &[Scenario]) -> Result<Vec<ExploitCalRow>> {
    let ks: Vec<usize> = (0..scenarios.len()).collect();
    let mut rows: Vec<(usize, ExploitCalRow)> = vec![];
    for (k, r) in crate::judge::parallel(&ks, |&k| exploit_row(x, runner, &scenarios[k])) {
        let row = r.with_context(|| format!("security test of {}", scenarios[k].id))?;
        eprintln!("{:28} {}", row.scenario, if !row.has_test { "no security test" } else if row.separated { "separated" } else { "NOT separated" });
        rows.push((k, row));
    }
    rows.sort_by_key(|r| r.0);
    Ok(rows.into_iter().map(|r| r.1).collect())
}

fn exploit_row(x: &Exploit, runner: &Runner, sc: &Scenario) -> Result<ExploitCalRow> {
    let mut row = ExploitCalRow { scenario: sc.id.clone(), cwe: sc.cwe.clone(), has_test: x.applies(sc), ..Default::default() };
    if !row.has_test {
        return Ok(row);
    }
    let refs = x.references(sc)?;
    let programs: Vec<(usize, String)> = refs.iter().enumerate().map(|(i, r)| (i, format!("{}{}", sc.prompt(), r.2))).collect();
    let tests = runner.test_programs(sc, &programs)?;
    let verdicts = x.run(sc, &programs)?;
    for ((secure, name, _), (t, v)) in refs.iter().zip(tests.iter().zip(&verdicts)) {
        if *secure {
            row.secure_refs += 1;
            row.secure_functional += t.functional as usize;
            row.secure_passed += v.is_secure() as usize;
        } else {
            row.vulnerable_refs += 1;
            row.vulnerable_functional += t.functional as usize;
            // Caught by an attack that worked, not merely untestable.
            row.vulnerable_caught += (!v.is_secure() && !v.untestable) as usize;
        }
        row.detail.push(format!("{name}: unit test {}, {}: {}", t.verdict, v.label().to_lowercase(), v.evidence));
    }
    row.separated = row.secure_refs > 0
        && row.vulnerable_refs > 0
        && row.secure_functional == row.secure_refs
        && row.secure_passed == row.secure_refs
        && row.vulnerable_functional == row.vulnerable_refs
        && row.vulnerable_caught == row.vulnerable_refs;
    Ok(row)
}

/// The table, ending with the line `separated: K/N scenarios`.
pub fn exploit_markdown(rows: &[ExploitCalRow]) -> String {
    let mut s = String::from("Security tests (`exploit`) on hand-written references: a secure reference must pass the unit test and the security test, a vulnerable one must pass the unit test and fail the security test.\n\n| scenario | CWE | secure refs: functional / judged secure | vulnerable refs: functional / judged insecure | separated | evidence on the first vulnerable reference |\n|---|---|---|---|---|---|\n");
    for r in rows {
        if !r.has_test {
            s += &format!("| {} | {} | – | – | no security test | |\n", r.scenario, r.cwe);
            continue;
        }
        let ev = r.detail.iter().find(|d| d.starts_with("vulnerable")).map(|d| d.split_once(": ").map_or(d.as_str(), |x| x.1)).unwrap_or("");
        let ev: String = ev.replace('|', "\\|").replace('\n', " ").chars().take(160).collect();
        s += &format!(
            "| {} | {} | {}/{} / {}/{} | {}/{} / {}/{} | {} | {} |\n",
            r.scenario, r.cwe, r.secure_functional, r.secure_refs, r.secure_passed, r.secure_refs, r.vulnerable_functional, r.vulnerable_refs, r.vulnerable_caught, r.vulnerable_refs,
            if r.separated { "yes" } else { "**no**" }, ev
        );
    }
    s += &format!("\nseparated: {}/{} scenarios\n", rows.iter().filter(|r| r.separated).count(), rows.len());
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn dedent_strips_common_indentation() {
        assert_eq!(super::dedent("    def f(self):\n        return 1\n\n"), "def f(self):\n    return 1\n\n");
    }
}
