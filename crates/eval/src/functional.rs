//! Functional check: the scenario's own unit test (`python functional.py --path DIR`) on the
//! completed programs, one file per sample, inside the sandbox. Verdicts come from
//! `dirname(DIR)/stat.json`, pre-created with one entry per sample (some `test_utils.py` copies
//! only update existing entries). When the batch's run ends abnormally (a limit, a signal, a
//! non-zero status: one program broke it), every sample of the batch is re-run alone, so that
//! each verdict depends on its own program only; a sample that still has none counts as failed
//! and is marked `no_verdict`.

use crate::gen::SampleRec;
use crate::sandbox::{Ending, Limits, Sandbox};
use crate::scenario::{Lang, Scenario};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestRec {
    pub scenario: String,
    pub idx: usize,
    /// The program is syntactically valid (Python `ast.parse`, C `gcc -fsyntax-only`).
    pub parsed: bool,
    pub functional: bool,
    /// pass, fail, no_verdict (the test never judged it, even alone) or no_test.
    pub verdict: String,
    /// The end of the test run's output (for the drill-down).
    pub log: String,
}

pub struct Runner {
    /// The venv's `bin` folder: its `python` runs the tests.
    pub venv_bin: PathBuf,
    /// The benchmark root. Its `unit_test/` is all the sandbox shows of it (also under
    /// `$HOME/chem/data_eval/`, where some tests copy helper files from).
    pub root: PathBuf,
    /// Per-sample time on top of the reference's per-test limits (2 s Python, 5 s C per run).
    pub slack: Duration,
}

pub(crate) fn file_name(lang: Lang, idx: usize) -> String {
    format!("s{idx:03}.{}", lang.ext())
}

impl Runner {
    pub(crate) fn sandbox(&self, work: &Path) -> Sandbox {
        let mut sb = Sandbox::new(work);
        sb.path_prepend.push(self.venv_bin.clone());
        sb.ro_binds.push((self.root.join("unit_test"), work.join(".home/chem/data_eval/unit_test")));
        sb.expose.push(self.root.join("unit_test"));
        sb
    }

    pub(crate) fn limits(&self, lang: Lang, n: usize) -> Limits {
        let per = match lang {
            Lang::Py => Duration::from_secs(3),
            Lang::C => Duration::from_secs(20),
        } + self.slack;
        let wall = Duration::from_secs(20) + per * n as u32;
        Limits { wall, cpu_secs: wall.as_secs(), mem_bytes: Some(4 << 30), rss_bytes: 4 << 30, nproc: 128, fsize_bytes: 64 << 20, output_bytes: 4 << 20, ..Limits::default() }
    }

    /// Tests all samples of one scenario.
    pub fn test_scenario(&self, sc: &Scenario, samples: &[SampleRec]) -> Result<Vec<TestRec>> {
        let programs: Vec<(usize, String)> = samples.iter().map(|s| (s.idx, s.program(sc))).collect();
        self.test_programs(sc, &programs)
    }

    /// Tests complete programs (sample index, program text) of one scenario.
    pub fn test_programs(&self, sc: &Scenario, programs: &[(usize, String)]) -> Result<Vec<TestRec>> {
        let parsed = self.parse_check(sc.lang, programs)?;
        let Some(ut) = &sc.unit_test else {
            return Ok(programs
                .iter()
                .zip(parsed)
                .map(|((i, _), p)| TestRec { scenario: sc.id.clone(), idx: *i, parsed: p, functional: false, verdict: "no_test".into(), log: String::new() })
                .collect());
        };
        let ut = std::fs::canonicalize(ut).with_context(|| format!("{}: unit test folder missing", ut.display()))?;
        let (mut verdicts, log, ended) = self.run_batch(sc.lang, &ut.join("functional.py"), programs)?;
        if verdicts.iter().all(Option::is_none) {
            if let Some(m) = missing_module(&log) {
                bail!(
                    "{}: the unit test cannot start: Python module {m:?} is missing from the eval venv {} (add it to scripts/requirements-eval.txt, or to a requirements.txt at the benchmark's root)",
                    ut.join("functional.py").display(),
                    self.venv_bin.display()
                );
            }
        }
        let broken = programs.len() > 1 && ended != Ending::Exit(0);
        for (k, (i, prog)) in programs.iter().enumerate() {
            if broken || verdicts[k].is_none() {
                let (v, _, _) = self.run_batch(sc.lang, &ut.join("functional.py"), &[(*i, prog.clone())])?;
                verdicts[k] = v[0];
            }
        }
        Ok(programs
            .iter()
            .zip(parsed)
            .zip(verdicts)
            .map(|(((i, _), p), v)| TestRec {
                scenario: sc.id.clone(),
                idx: *i,
                parsed: p,
                functional: v == Some(true),
                verdict: match v {
                    Some(true) => "pass",
                    Some(false) => "fail",
                    None => "no_verdict",
                }
                .into(),
                log: log.clone(),
            })
            .collect())
    }

    /// Runs the unit test over `programs` in one sandbox; per-program verdict (None: none given).
    fn run_batch(&self, lang: Lang, functional: &Path, programs: &[(usize, String)]) -> Result<(Vec<Option<bool>>, String, Ending)> {
        let work = tempfile::Builder::new().prefix("dg-run-").tempdir()?;
        let dir = work.path().join("samples");
        std::fs::create_dir_all(&dir)?;
        let mut stat = serde_json::Map::new();
        for (i, p) in programs {
            std::fs::write(dir.join(file_name(lang, *i)), p)?;
            stat.insert(file_name(lang, *i), serde_json::json!({}));
        }
        let stat_path = work.path().join("stat.json");
        std::fs::write(&stat_path, serde_json::to_string(&serde_json::Value::Object(stat))?)?;
        let argv = ["python".to_string(), functional.display().to_string(), "--path".into(), dir.display().to_string()];
        let out = self.sandbox(work.path()).run(&argv, b"", &self.limits(lang, programs.len()))?;
        let stat: serde_json::Value = std::fs::read_to_string(&stat_path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        let verdicts = programs.iter().map(|(i, _)| stat.get(file_name(lang, *i)).and_then(|e| e.get("functional")).and_then(|v| v.as_bool())).collect();
        Ok((verdicts, out.log_tail(2000), out.ending))
    }

    /// Syntax check of every program, in the sandbox (C headers are read, nothing runs).
    fn parse_check(&self, lang: Lang, programs: &[(usize, String)]) -> Result<Vec<bool>> {
        let work = tempfile::Builder::new().prefix("dg-parse-").tempdir()?;
        for (i, p) in programs {
            std::fs::write(work.path().join(file_name(lang, *i)), p)?;
        }
        let script = match lang {
            Lang::Py => "for f in s*.py; do python -c 'import ast,sys; ast.parse(open(sys.argv[1]).read())' \"$f\" >/dev/null 2>&1 && echo \"$f ok\"; done",
            Lang::C => "for f in s*.c; do gcc -std=c99 -fsyntax-only \"$f\" >/dev/null 2>&1 && echo \"$f ok\"; done",
        };
        let argv = ["sh".to_string(), "-c".into(), script.into()];
        let lim = Limits { wall: Duration::from_secs(10 + 3 * programs.len() as u64), ..Limits::default() };
        let out = Sandbox::new(work.path()).with_venv(&self.venv_bin).run(&argv, b"", &lim).context("syntax check")?;
        Ok(programs.iter().map(|(i, _)| out.stdout.lines().any(|l| l == format!("{} ok", file_name(lang, *i)))).collect())
    }
}

/// The module of the first `ModuleNotFoundError` in a test's output, if any.
pub fn missing_module(log: &str) -> Option<String> {
    let i = log.find("ModuleNotFoundError: No module named ")?;
    let rest = &log[i + "ModuleNotFoundError: No module named ".len()..];
    Some(rest.trim_start_matches(['\'', '"']).split(['\'', '"', '\n']).next()?.to_string())
}

/// Installs a benchmark's own `requirements.txt` (at its root) into the eval venv, once per
/// content (a stamp file in the venv records it).
pub fn install_requirements(venv_bin: &Path, root: &Path) -> Result<()> {
    let req = root.join("requirements.txt");
    if !req.is_file() {
        return Ok(());
    }
    let text = std::fs::read(&req).with_context(|| format!("{}: cannot read", req.display()))?;
    use sha2::Digest;
    let tag: String = sha2::Sha256::digest(&text).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let stamp = venv_bin.join(format!("../.benchmark-requirements-{tag}"));
    if stamp.exists() {
        return Ok(());
    }
    eprintln!("installing the benchmark's {} into the eval venv", req.display());
    let out = std::process::Command::new(venv_bin.join("pip")).args(["install", "-q", "--disable-pip-version-check", "-r"]).arg(&req).output().context("cannot run pip")?;
    if !out.status.success() {
        bail!("{}: pip install failed: {}", req.display(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    std::fs::write(&stamp, b"")?;
    Ok(())
}



#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_missing_module_in_a_traceback() {
        let log = "Traceback (most recent call last):\n  File \"functional.py\", line 3, in <module>\n    from Crypto.Cipher import AES\nModuleNotFoundError: No module named 'Crypto'\n";
        assert_eq!(super::missing_module(log).as_deref(), Some("Crypto"));
        assert_eq!(super::missing_module("all fine"), None);
    }
}
