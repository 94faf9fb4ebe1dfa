//! Check, repair and choose: a loop around any method, past both papers. Each kept sample (the
//! draft) is checked by the verifiers a user has at hand — the static tools for its language
//! (bandit, semgrep, cppcheck, flawfinder); a finding that names a CWE flags it, whatever the
//! weakness (the loop does not know the benchmark's label). A flagged draft is generated again
//! by the same method with the findings (rule, line, message and the line itself) as a comment
//! right above the function, and the remedy for each flagged CWE ([`crate::remedies`]) as a
//! comment where the model resumes writing, until a version is unflagged or `rounds` rounds are
//! spent; the loop keeps the complete version with the fewest flags (ties: the earliest, i.e.
//! the draft).
//!
//! The benchmark's unit tests and security tests are never run or shown here: they judge the
//! result afterwards. Read a repair's gain through the security tests as well as the combined
//! judge, since the static tools it is steered by are also part of the combined verdict.

use crate::gen::{generate_scenario, Cost, SampleRec};
use crate::judge::{Finding, Item, Judge};
use crate::rerank::Candidates;
use crate::scenario::Scenario;
use anyhow::Result;
use deepguard_methods::spec::RepairSpec;
use deepguard_runtime::generate::{Method, SamplingParams};
use deepguard_runtime::Model;
use serde::{Deserialize, Serialize};

/// What checks a version: the static security tools and the build check.
pub struct Checks {
    pub judge: Judge,
    /// The venv's `bin` folder (pyflakes).
    pub venv_bin: std::path::PathBuf,
}

/// At most this many findings are shown to the model per round.
pub const MAX_SHOWN: usize = 5;

/// `inner`, with its kept samples checked and repaired.
pub struct Repair {
    pub inner: Box<dyn Candidates>,
    pub spec: RepairSpec,
}

impl Method for Repair {
    fn name(&self) -> String {
        match self.spec.temperature {
            Some(t) => format!("{}-repair{}-t{t}", self.inner.name(), self.spec.rounds),
            None => format!("{}-repair{}", self.inner.name(), self.spec.rounds),
        }
    }
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"method": self.inner.settings(), "repair": {"rounds": self.spec.rounds, "temperature": self.spec.temperature}})
    }
    crate::rerank::pass_through!();
}

impl Candidates for Repair {
    fn candidates(&self) -> usize {
        self.inner.candidates()
    }
    fn candidates_judged(&self) -> bool {
        self.inner.candidates_judged()
    }
    fn candidate_temperature(&self) -> Option<f64> {
        self.inner.candidate_temperature()
    }
    fn code_score(&self, model: &Model, code: &str) -> Result<Option<f32>> {
        self.inner.code_score(model, code)
    }
    fn repair(&self) -> Option<RepairSpec> {
        Some(self.spec)
    }
}

/// One version a repair loop produced (version 0 is the draft) and what the checks found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Version {
    pub code: String,
    pub complete: bool,
    pub tokens: usize,
    /// The findings that flag it (each names a CWE).
    pub flags: Vec<Finding>,
    /// What the build check found wrong ([`crate::builds`]): syntax errors, undefined names.
    #[serde(default)]
    pub broken: Vec<Finding>,
}

/// The loop's record of one kept sample: every version, and the one kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trace {
    pub versions: Vec<Version>,
    pub kept: usize,
}

/// The findings that flag a program: those that name a CWE.
pub fn flags(findings: &[Finding]) -> Vec<Finding> {
    findings.iter().filter(|f| !f.cwe.is_empty() && f.tool != "exploit").cloned().collect()
}

/// At most this many remedies are given per round.
pub const MAX_REMEDIES: usize = 2;

/// The remedies for the flagged CWEs (one per remedy, at most [`MAX_REMEDIES`]).
pub fn remedies(lang: crate::scenario::Lang, flags: &[Finding]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for f in flags {
        if let Some(r) = crate::remedies::remedy(&f.cwe, lang) {
            if !out.contains(&r) && out.len() < MAX_REMEDIES {
                out.push(r);
            }
        }
    }
    out
}

/// The comment put above the function for the next round: each finding (at most [`MAX_SHOWN`],
/// one per rule and line) with its line of `program`, in the scenario's comment syntax.
pub fn feedback(comment: &str, program: &str, flags: &[Finding]) -> String {
    let lines: Vec<&str> = program.lines().collect();
    let mut seen = Vec::new();
    let mut s = format!("{comment} A security review of an earlier draft of the function below found:\n");
    for f in flags {
        if seen.contains(&(&f.rule, f.line)) || seen.len() == MAX_SHOWN {
            continue;
        }
        seen.push((&f.rule, f.line));
        let msg: String = f.message.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
        let cwe = if f.cwe.is_empty() { String::new() } else { format!(" ({})", f.cwe) };
        s += &format!("{comment} - line {}: {} {}{cwe}: {msg}\n", f.line, f.tool, f.rule);
        if let Some(l) = f.line.checked_sub(1).and_then(|i| lines.get(i)).map(|l| l.trim()).filter(|l| !l.is_empty()) {
            let l: String = l.chars().take(160).collect();
            s += &format!("{comment}     {l}\n");
        }
    }
    s += &format!("{comment} Write the function again without these problems, keeping what it does.\n");
    s
}

/// Whether text can follow the last line of `code` on a line of its own: that line is a
/// comment or ends a statement or a block header.
fn ends_a_line(code: &str, comment: &str) -> bool {
    let last = code.lines().last().unwrap_or("").trim();
    last.is_empty() || last.starts_with(comment) || last.ends_with([';', ')', ':', '{', '}', ']']) || last.ends_with("'''") || last.ends_with("\"\"\"")
}

/// The scenario as the repair round shows it, and the text that joins the scenario's own prompt
/// to what the model writes after the shown one: the findings go right above the function; the
/// remedies go as comment lines where the model resumes (inside the function, at its
/// indentation, the prompt then ending with a new line: the join is that line break), or above
/// the function too when the prompt stops mid-statement (no join).
pub fn with_feedback(sc: &Scenario, feedback: &str, remedies: &[&str]) -> (Scenario, &'static str) {
    let mut s = sc.clone();
    let c = sc.lang.comment();
    if !s.file_context.is_empty() && !s.file_context.ends_with('\n') {
        s.file_context.push('\n');
    }
    s.file_context.push_str(feedback);
    if remedies.is_empty() {
        return (s, "");
    }
    if ends_a_line(&s.func_context, c) && !s.func_context.ends_with('\n') {
        let last = s.func_context.lines().last().unwrap_or("");
        let mut indent: String = last.chars().take_while(|c| c.is_whitespace()).collect();
        if last.trim_end().ends_with([':', '{']) {
            indent.push_str("    ");
        }
        for r in remedies {
            s.func_context.push_str(&format!("\n{indent}{c} Security fix: {r}."));
        }
        if sc.lang == crate::scenario::Lang::Py {
            s.func_context.push_str(&format!("\n{indent}{c} (Import what the fix needs inside the function.)"));
        }
        s.func_context.push('\n');
        (s, "\n")
    } else {
        for r in remedies {
            s.file_context.push_str(&format!("{c} Security fix: {r}.\n"));
        }
        (s, "")
    }
}

/// The version a finished loop keeps: complete functions first (an unfinished one fails its
/// tests whatever the checks say), then those that build, then the fewest flags; ties go to the
/// earliest.
pub fn choose(versions: &[Version]) -> usize {
    let key = |v: &Version| (!v.complete, !v.broken.is_empty(), v.flags.len());
    (0..versions.len()).min_by_key(|&i| key(&versions[i])).unwrap_or(0)
}

/// The seed of round `round` of kept sample `idx`: apart from every sample's and candidate's.
fn round_seed(seed: u64, idx: usize, round: usize) -> u64 {
    seed ^ 0xA5A5_5A5A_0F0F_F0F0u64.wrapping_mul(round as u64 + 1).wrapping_add((idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One loop in progress.
struct Open<'a> {
    sc: &'a Scenario,
    draft: SampleRec,
    versions: Vec<Version>,
    cost: Cost,
    /// The latest version (code after the prompt, complete, tokens) and its program, to be checked.
    latest: (String, bool, usize),
    program: String,
    done: bool,
}

/// Runs the loop on `drafts` (every draft of these scenarios), checking each round's versions
/// in one batch per tool. `method` generates the repaired versions (the model as its
/// `prepare` left it). Returns the kept samples, each with its [`Trace`] and its whole cost.
pub fn repair(model: &Model, method: &dyn Method, checks: &Checks, spec: &RepairSpec, params: &SamplingParams, stop_at_end: bool, drafts: &[(&Scenario, Vec<SampleRec>)]) -> Result<Vec<SampleRec>> {
    let mut open: Vec<Open> = drafts
        .iter()
        .flat_map(|(sc, ds)| {
            ds.iter().map(move |d| Open {
                sc,
                draft: d.clone(),
                versions: vec![],
                cost: d.cost(),
                latest: (d.cut.code.clone(), d.cut.complete, d.tokens),
                program: d.program(sc),
                done: false,
            })
        })
        .collect();
    for round in 0..=spec.rounds {
        let todo: Vec<usize> = (0..open.len()).filter(|&i| !open[i].done).collect();
        if todo.is_empty() {
            break;
        }
        let items: Vec<Item> = todo.iter().map(|&i| Item { scenario: open[i].sc, idx: i, program: open[i].program.clone() }).collect();
        let verdicts = checks.judge.judge(&items)?;
        let builds = crate::builds::check(&checks.venv_bin, &items)?;
        for (&i, broken) in todo.iter().zip(builds) {
            // A program the tools gave no verdict on is not taken for clean.
            let fs = match verdicts.iter().find(|v| v.idx == i && v.scenario == open[i].sc.id) {
                Some(v) => flags(&v.findings),
                None => anyhow::bail!("{} sample {}: the static tools returned no verdict for a repair round", open[i].sc.id, open[i].draft.idx),
            };
            let o = &mut open[i];
            let (code, complete, tokens) = o.latest.clone();
            o.versions.push(Version { code, complete, tokens, flags: fs, broken });
            // A draft is repaired when a security check flags it; a repaired version also when
            // it no longer builds.
            let v = o.versions.last().unwrap();
            if (v.flags.is_empty() && (round == 0 || v.broken.is_empty())) || round == spec.rounds {
                o.done = true;
                continue;
            }
            let last: Vec<Finding> = v.flags.iter().chain(if round > 0 { &v.broken[..] } else { &[] }).cloned().collect();
            let last = &last;
            let (shown, join) = with_feedback(o.sc, &feedback(o.sc.lang.comment(), &o.program, last), &remedies(o.sc.lang, last));
            let p = SamplingParams { n: 1, seed: round_seed(params.seed, o.draft.idx, round), temperature: spec.temperature.unwrap_or(params.temperature), ..params.clone() };
            let r = generate_scenario(model, method, &shown, &p, stop_at_end)?.remove(0);
            o.cost = o.cost.plus(r.cost());
            let code = format!("{join}{}", r.cut.code);
            o.program = format!("{}{code}", o.sc.prompt());
            o.latest = (code, r.cut.complete, r.tokens);
        }
    }
    Ok(open
        .into_iter()
        .map(|o| {
            let kept = choose(&o.versions);
            let mut s = o.draft.clone();
            if kept > 0 {
                let v = &o.versions[kept];
                s.cut = crate::cut::Cut { code: v.code.clone(), complete: v.complete };
                s.completion = v.code.clone();
                s.tokens = v.tokens;
                s.finish_reason = "repair".into();
            }
            s.cost = Some(o.cost);
            s.repair = Some(Trace { versions: o.versions, kept });
            s
        })
        .collect())
}

/// A program from outside a benchmark (a server's request) as a scenario the loop can check and
/// repair: `prompt` is the whole prompt (the function context, so the findings go above it), and
/// there are no benchmark files, CWE label or tests.
pub fn scenario_for(lang: crate::scenario::Lang, prompt: &str) -> Scenario {
    Scenario {
        id: format!("request/0-{}", lang.ext()),
        split: "request".into(),
        cwe: String::new(),
        name: format!("0-{}", lang.ext()),
        lang,
        dir: std::path::PathBuf::new(),
        file_context: String::new(),
        func_context: prompt.to_string(),
        check_ql: None,
        description: None,
        unit_test: None,
    }
}

/// Checks one program as the loop checks each version: the findings that flag it ([`flags`])
/// and what the build check found wrong.
pub fn check_one(checks: &Checks, sc: &Scenario, program: &str) -> Result<(Vec<Finding>, Vec<Finding>)> {
    let items = [Item { scenario: sc, idx: 0, program: program.to_string() }];
    let verdicts = checks.judge.judge(&items)?;
    let found = verdicts.iter().find(|v| v.idx == 0).map(|v| flags(&v.findings)).unwrap_or_default();
    let broken = crate::builds::check(&checks.venv_bin, &items)?.pop().unwrap_or_default();
    Ok((found, broken))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(tool: &str, rule: &str, cwe: &str, line: usize) -> Finding {
        Finding { tool: tool.into(), rule: rule.into(), cwe: cwe.into(), line, message: format!("{rule}  is\n bad"), counts: false }
    }
    fn version(flags: usize, complete: bool) -> Version {
        Version { code: String::new(), complete, tokens: 1, flags: (0..flags).map(|i| finding("bandit", "B1", "CWE-78", i)).collect(), broken: vec![] }
    }

    #[test]
    fn only_findings_that_name_a_cwe_flag_a_program() {
        let fs = vec![finding("bandit", "B404", "", 1), finding("semgrep", "sqli", "CWE-89", 3), finding("exploit", "x", "CWE-89", 0)];
        let f = flags(&fs);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "sqli");
    }

    #[test]
    fn feedback_names_rule_line_message_and_quotes_the_line_in_the_languages_comments() {
        let program = "import os\n\ndef f(x):\n    os.system('ls ' + x)\n";
        let fs = vec![finding("bandit", "B605", "CWE-78", 4), finding("bandit", "B605", "CWE-78", 4), finding("semgrep", "s", "CWE-78", 99)];
        let fb = feedback("#", program, &fs);
        assert!(fb.lines().all(|l| l.starts_with('#')), "{fb}");
        assert!(fb.contains("- line 4: bandit B605 (CWE-78): B605 is bad"), "{fb}");
        assert!(fb.contains("#     os.system('ls ' + x)"), "the flagged line is quoted: {fb}");
        assert_eq!(fb.matches("B605 (CWE-78)").count(), 1, "one entry per rule and line: {fb}");
        assert!(fb.contains("line 99: semgrep s"), "a line past the program is named, not quoted: {fb}");
        let many: Vec<Finding> = (1..20).map(|i| finding("cppcheck", "r", "CWE-787", i)).collect();
        assert_eq!(feedback("//", "", &many).matches("// - line").count(), MAX_SHOWN);
    }

    #[test]
    fn the_feedback_goes_right_above_the_function() {
        let sc = Scenario {
            id: "base/cwe-078/0-py".into(),
            split: "base".into(),
            cwe: "CWE-078".into(),
            name: "0-py".into(),
            lang: crate::scenario::Lang::Py,
            dir: "/nonexistent".into(),
            file_context: "import os".into(),
            func_context: "def f(x):\n".into(),
            check_ql: None,
            description: None,
            unit_test: None,
        };
        let (s, join) = with_feedback(&sc, "# fix it\n", &[]);
        assert_eq!((s.prompt().as_str(), join), ("import os\n# fix it\ndef f(x):\n", ""));
        assert_eq!(sc.prompt(), "import osdef f(x):\n", "the scenario itself is unchanged");
        // Remedies go where the model resumes, at the body's indentation...
        let body = Scenario { func_context: "def f(x):\n    # run it".into(), ..sc.clone() };
        // (the prompt then ends with a line break, which joins the scenario's prompt to the code).
        let (s, join) = with_feedback(&body, "# fix it\n", &["use a list"]);
        assert_eq!(s.prompt(), "import os\n# fix it\ndef f(x):\n    # run it\n    # Security fix: use a list.\n    # (Import what the fix needs inside the function.)\n");
        assert_eq!(join, "\n");
        let header = Scenario { lang: crate::scenario::Lang::C, func_context: "int f(int x) {".into(), ..sc.clone() };
        assert!(with_feedback(&header, "", &["r"]).0.prompt().ends_with("int f(int x) {\n    // Security fix: r.\n"));
        // ...unless the prompt stops mid-statement: then above the function, with nothing to join.
        let mid = Scenario { lang: crate::scenario::Lang::C, file_context: "int main() {\n".into(), func_context: "    char b[8];\n    memcpy".into(), ..sc.clone() };
        let (m, join) = with_feedback(&mid, "// fix it\n", &["check sizes"]);
        assert_eq!((m.prompt().as_str(), join), ("int main() {\n// fix it\n// Security fix: check sizes.\n    char b[8];\n    memcpy", ""));
    }

    #[test]
    fn remedies_follow_the_flagged_cwes_once_each() {
        let fs = vec![finding("semgrep", "a", "CWE-089", 1), finding("bandit", "b", "CWE-89", 2), finding("x", "c", "CWE-78", 3), finding("y", "d", "CWE-79", 4)];
        let r = remedies(crate::scenario::Lang::Py, &fs);
        assert_eq!(r.len(), MAX_REMEDIES);
        assert!(r[0].contains("parameterized") && r[1].contains("subprocess"), "{r:?}");
    }

    #[test]
    fn keeps_the_first_clean_version_else_the_least_flagged_complete_one() {
        assert_eq!(choose(&[version(2, true), version(1, true), version(0, true)]), 2, "the unflagged version wins");
        assert_eq!(choose(&[version(2, true), version(0, false)]), 0, "an unfinished function loses to a complete flagged one");
        assert_eq!(choose(&[version(2, true), version(1, true), version(1, true)]), 1, "fewest flags; ties go to the earliest");
        assert_eq!(choose(&[version(2, true), version(1, false)]), 0, "a complete version beats an incomplete one");
        assert_eq!(choose(&[version(0, true)]), 0);
        let mut broken = version(0, true);
        broken.broken.push(finding("pyflakes", "undefined-name", "", 3));
        assert_eq!(choose(&[version(1, true), broken]), 0, "a version that does not build loses to a flagged one that does");
    }

    #[test]
    fn round_seeds_differ_by_round_and_sample() {
        let s: std::collections::HashSet<u64> = (0..4).flat_map(|i| (0..3).map(move |r| round_seed(42, i, r))).collect();
        assert_eq!(s.len(), 12);
    }

    #[test]
    fn a_requests_program_is_a_scenario_whose_prompt_is_the_text() {
        let sc = scenario_for(crate::scenario::Lang::Py, "import os\ndef f(d):\n");
        assert_eq!(sc.prompt(), "import os\ndef f(d):\n");
        assert_eq!((sc.lang.comment(), sc.cwe.as_str(), sc.unit_test.is_none()), ("#", "", true));
        let (shown, _) = with_feedback(&sc, "# found x\n", &[]);
        assert!(shown.prompt().starts_with("# found x\nimport os"), "the findings go above the prompt: {}", shown.prompt());
    }
}
