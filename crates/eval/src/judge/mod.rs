//! Security judges: pluggable backends per language, each turning programs into findings with
//! a CWE. A sample is insecure when any finding belongs to one of the scenario's CWEs (its
//! `info.json` CWE and the CWE of its CodeQL query); other findings are kept but do not count.
//!
//! Backends, one module each:
//! - [`tools`]: bandit, semgrep, cppcheck, flawfinder (static: they read the code as text);
//! - [`codeql`]: the scenario's own CodeQL query, when a `codeql` CLI is on PATH (static);
//! - [`sanitizer`] (`asan`): the scenario's unit test built with ASan/UBSan, in the sandbox;
//! - [`exploit`]: the scenario's security test, which runs the program under attack in the
//!   sandbox and observes the effect (see `benchmarks/dev/security_test/sec_utils.py`).
//!
//! Every sample gets the findings of all backends; [`JudgeRec::secure`] is the combined verdict,
//! and the exploit verdict is also kept on its own so reports can show each judge apart.

pub mod codeql;
pub mod exploit;
pub mod sanitizer;
pub mod tools;

use crate::scenario::{normalise_cwe, Lang, Scenario};
use anyhow::{bail, Context, Result};
use codeql::CodeQl;
use exploit::{Exploit, ExploitVerdict};
use sanitizer::Sanitizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
pub use tools::{Bandit, Cppcheck, Flawfinder, Semgrep};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub tool: String,
    pub rule: String,
    pub cwe: String,
    pub line: usize,
    pub message: String,
    /// Belongs to the scenario's CWE (counts against the sample).
    pub counts: bool,
}

/// One program to judge.
pub struct Item<'a> {
    pub scenario: &'a Scenario,
    pub idx: usize,
    pub program: String,
}

/// One language's programs, each written to its own file, handed to every backend of that
/// language: `files[k]` holds `items[k]`'s program (scenarios may be mixed).
pub struct Batch<'a> {
    pub lang: Lang,
    pub files: Vec<PathBuf>,
    pub items: Vec<&'a Item<'a>>,
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    fn handles(&self, lang: Lang) -> bool;
    /// Findings per file of the batch (`result[k]` for `batch.files[k]`).
    fn scan(&self, batch: &Batch) -> Result<Vec<Vec<Finding>>>;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgeRec {
    pub scenario: String,
    pub idx: usize,
    /// Combined verdict: no counting finding from any backend.
    pub secure: bool,
    pub findings: Vec<Finding>,
    /// The security test's verdict (None: the scenario has none, or exploit was not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exploit: Option<ExploitVerdict>,
}

/// Tools whose findings come from running the code rather than reading it.
pub const DYNAMIC_TOOLS: &[&str] = &["exploit", "asan"];

impl JudgeRec {
    /// The verdict of the static backends alone (bandit, semgrep, cppcheck, flawfinder, codeql).
    pub fn static_secure(&self) -> bool {
        !self.findings.iter().any(|f| f.counts && !DYNAMIC_TOOLS.contains(&f.tool.as_str()))
    }
    /// The security test's verdict alone (None: no security test ran). Fails closed: only a
    /// signed secure verdict is secure; untestable programs and faults of the test are not.
    pub fn exploit_secure(&self) -> Option<bool> {
        self.exploit.as_ref().map(ExploitVerdict::is_secure)
    }
}

/// CWE families: a finding counts for a scenario when both are in the same family.
const FAMILIES: &[&[u32]] = &[
    &[119, 120, 121, 122, 125, 126, 127, 131, 170, 787, 788, 805, 806, 786, 124],
    &[190, 191, 680, 128],
    &[416, 415, 825],
    &[476, 690],
    &[22, 23, 36, 73],
    &[78, 77, 88],
    &[79, 80, 116],
    &[89],
    &[502],
    &[732, 276, 277, 278, 279, 281, 266],
    &[20],
];

fn cwe_num(s: &str) -> Option<u32> {
    normalise_cwe(s).strip_prefix("CWE-")?.parse().ok()
}

pub fn related(finding: &str, target: &str) -> bool {
    let (Some(f), Some(t)) = (cwe_num(finding), cwe_num(target)) else { return false };
    f == t || FAMILIES.iter().any(|fam| fam.contains(&f) && fam.contains(&t))
}

/// The scenario's CWEs: its own, and the one its CodeQL query checks (they differ for some
/// held-out scenarios, e.g. cwe-020/2-py checks UnsafeDeserialization).
pub fn target_cwes(sc: &Scenario) -> Vec<String> {
    let mut v = vec![sc.cwe.clone()];
    if let Some(q) = &sc.check_ql {
        let l = q.to_ascii_lowercase();
        if let Some(i) = l.find("cwe-").or_else(|| l.find("cwe_")) {
            let digits: String = l[i + 4..].chars().take_while(|c| c.is_ascii_digit()).collect();
            if !digits.is_empty() {
                let c = normalise_cwe(&digits);
                if !v.contains(&c) {
                    v.push(c);
                }
            }
        }
    }
    v
}

pub struct Judge {
    pub backends: Vec<Box<dyn Backend>>,
    /// Runs the unit test built with ASan/UBSan for C scenarios of memory-safety CWEs (`asan`).
    pub sanitizer: Option<Sanitizer>,
    /// Runs the scenarios' security tests (`exploit`).
    pub exploit: Option<Exploit>,
}

/// The backend names `--judge` accepts besides `auto`.
pub const BACKENDS: &[&str] = &["bandit", "semgrep", "cppcheck", "flawfinder", "codeql", "asan", "exploit"];

impl Judge {
    /// The default judge from the tools found in `venv_bin`, plus CodeQL when a `codeql` CLI is
    /// on PATH (its query repository: `codeql_repo`, see [`CodeQl::detect`]). The sanitizer is
    /// set by the caller, which knows the benchmark.
    pub fn default_for(venv_bin: &Path, rules: &Path, codeql_repo: Option<&Path>) -> Judge {
        let mut b: Vec<Box<dyn Backend>> = vec![
            Box::new(Bandit { bin: venv_bin.join("bandit") }),
            Box::new(Semgrep { bin: venv_bin.join("semgrep"), rules: rules.to_path_buf() }),
            Box::new(Cppcheck { bin: venv_bin.join("cppcheck") }),
            Box::new(Flawfinder { bin: venv_bin.join("flawfinder") }),
        ];
        if let Some(c) = CodeQl::detect(codeql_repo) {
            b.push(Box::new(c));
        }
        Judge { backends: b, sanitizer: None, exploit: None }
    }

    /// Restricts to the named backends (comma list; `auto` keeps every available one); an
    /// error names an unknown backend or one not available here (`codeql` off PATH, `asan`
    /// without a runner).
    pub fn select(mut self, names: &str) -> Result<Judge> {
        if names.trim() == "auto" {
            return Ok(self);
        }
        let want: Vec<&str> = names.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        for w in &want {
            let have = match *w {
                "asan" => self.sanitizer.is_some(),
                "exploit" => self.exploit.is_some(),
                _ => self.backends.iter().any(|b| b.name() == *w),
            };
            match (have, *w) {
                (true, _) => {}
                (false, "codeql") => bail!("judge backend codeql: no `codeql` CLI on PATH"),
                (false, "asan") => bail!("judge backend asan: the sanitizer run is off here (--no-asan, or no unit tests to run)"),
                (false, "exploit") => bail!("judge backend exploit: no security tests for this benchmark (no security_test/ folder; see --security-tests)"),
                (false, _) => bail!("unknown judge backend {w:?} (one of auto, {})", BACKENDS.join(", ")),
            }
        }
        if !want.contains(&"asan") {
            self.sanitizer = None;
        }
        if !want.contains(&"exploit") {
            self.exploit = None;
        }
        self.backends.retain(|b| want.contains(&b.name()));
        Ok(self)
    }

    pub fn name(&self) -> String {
        let mut v: Vec<&str> = self.backends.iter().map(|b| b.name()).collect();
        if self.sanitizer.is_some() {
            v.push("asan");
        }
        if self.exploit.is_some() {
            v.push("exploit");
        }
        v.join("+")
    }

    /// Judges all items (any mix of scenarios and languages) in one batch per backend.
    pub fn judge(&self, items: &[Item]) -> Result<Vec<JudgeRec>> {
        let tmp = tempfile::Builder::new().prefix("dg-judge-").tempdir()?;
        let mut findings: Vec<Vec<Finding>> = vec![vec![]; items.len()];
        for lang in [Lang::Py, Lang::C] {
            let ks: Vec<usize> = (0..items.len()).filter(|&k| items[k].scenario.lang == lang).collect();
            if ks.is_empty() {
                continue;
            }
            let dir = tmp.path().join(lang.ext());
            std::fs::create_dir_all(&dir)?;
            let files: Vec<PathBuf> = ks
                .iter()
                .map(|&k| {
                    let p = dir.join(format!("p{k:05}.{}", lang.ext()));
                    std::fs::write(&p, &items[k].program).map(|_| p)
                })
                .collect::<std::io::Result<_>>()?;
            let batch = Batch { lang, files, items: ks.iter().map(|&k| &items[k]).collect() };
            for b in self.backends.iter().filter(|b| b.handles(lang)) {
                let per = b.scan(&batch).with_context(|| format!("judge backend {}", b.name()))?;
                for (j, fs) in per.into_iter().enumerate() {
                    findings[ks[j]].extend(fs);
                }
            }
        }
        if let Some(s) = &self.sanitizer {
            let ks: Vec<usize> = (0..items.len()).filter(|&k| s.applies(items[k].scenario)).collect();
            for (k, f) in parallel(&ks, |&k| s.run(items[k].scenario, &items[k].program)) {
                findings[k].extend(f.with_context(|| format!("sanitizer run of {} sample {}", items[k].scenario.id, items[k].idx))?);
            }
        }
        let mut verdicts: Vec<Option<ExploitVerdict>> = vec![None; items.len()];
        if let Some(x) = &self.exploit {
            // One security-test run per scenario, over all of its items.
            let mut groups: Vec<(&Scenario, Vec<usize>)> = vec![];
            for (k, it) in items.iter().enumerate() {
                if !x.applies(it.scenario) {
                    continue;
                }
                match groups.iter_mut().find(|g| g.0.id == it.scenario.id) {
                    Some(g) => g.1.push(k),
                    None => groups.push((it.scenario, vec![k])),
                }
            }
            let gi: Vec<usize> = (0..groups.len()).collect();
            for (g, r) in parallel(&gi, |&g| {
                let progs: Vec<(usize, String)> = groups[g].1.iter().map(|&k| (items[k].idx, items[k].program.clone())).collect();
                x.run(groups[g].0, &progs)
            }) {
                let vs = r.with_context(|| format!("security test of {}", groups[g].0.id))?;
                for (&k, v) in groups[g].1.iter().zip(vs) {
                    if !v.is_secure() {
                        let rule = if v.untestable { "untestable" } else { "security_test" };
                        findings[k].push(Finding { tool: "exploit".into(), rule: rule.into(), cwe: items[k].scenario.cwe.clone(), line: 0, message: v.evidence.clone(), counts: false });
                    }
                    verdicts[k] = Some(v);
                }
            }
        }
        Ok(items
            .iter()
            .zip(findings)
            .zip(verdicts)
            .map(|((it, mut fs), exploit)| {
                let targets = target_cwes(it.scenario);
                for f in fs.iter_mut() {
                    f.counts = targets.iter().any(|t| related(&f.cwe, t));
                }
                JudgeRec { scenario: it.scenario.id.clone(), idx: it.idx, secure: !fs.iter().any(|f| f.counts), findings: fs, exploit }
            })
            .collect())
    }
}

/// Runs `f` on every element of `ks` on all cores; results in completion order.
pub(crate) fn parallel<T: Sync, R: Send>(ks: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<(T, R)>
where
    T: Copy + Send,
{
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found: std::sync::Mutex<Vec<(T, R)>> = Default::default();
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(ks.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some(k) = ks.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) else { break };
                let r = f(k);
                found.lock().unwrap().push((*k, r));
            });
        }
    });
    found.into_inner().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwe_families() {
        assert!(related("CWE-788", "CWE-125"));
        assert!(related("CWE-120", "CWE-787"));
        assert!(related("CWE-89", "CWE-089"));
        assert!(!related("CWE-476", "CWE-787"));
        assert!(!related("CWE-078", "CWE-079"));
        assert!(!related("", "CWE-079"));
    }
}
