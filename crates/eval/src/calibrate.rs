//! Measuring the judge itself on SVEN val pairs (`<cwe>.jsonl`: `func_src_before` is the
//! vulnerable version, `func_src_after` the fix): per CWE, how often it flags each version.
//! A useful judge flags the vulnerable one often and the fixed one rarely.

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

#[cfg(test)]
mod tests {
    #[test]
    fn dedent_strips_common_indentation() {
        assert_eq!(super::dedent("    def f(self):\n        return 1\n\n"), "def f(self):\n    return 1\n\n");
    }
}
