//! Functional check: the scenario's own unit test (`python functional.py --path DIR`) on the
//! completed programs, one file per sample, inside the sandbox. Verdicts come from
//! `dirname(DIR)/stat.json`, pre-created with one entry per sample (some `test_utils.py` copies
//! only update existing entries). A sample the batch leaves without a verdict is re-run alone;
//! if it still has none it counts as failed and is marked `no_verdict`.

use crate::gen::SampleRec;
use crate::sandbox::{Limits, Outcome, Sandbox};
use crate::scenario::{Lang, Scenario};
use anyhow::{Context, Result};
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
    /// The benchmark root (its `unit_test/` is also shown under `$HOME/chem/data_eval/`, where
    /// some tests copy helper files from).
    pub root: PathBuf,
    /// Per-sample time on top of the reference's per-test limits (2 s Python, 5 s C per run).
    pub slack: Duration,
}

fn file_name(lang: Lang, idx: usize) -> String {
    format!("s{idx:03}.{}", lang.ext())
}

impl Runner {
    fn sandbox(&self, work: &Path) -> Sandbox {
        let mut sb = Sandbox::new(work);
        sb.path_prepend.push(self.venv_bin.clone());
        sb.ro_binds.push((self.root.join("unit_test"), work.join(".home/chem/data_eval/unit_test")));
        sb.expose.push(self.root.clone());
        sb
    }

    fn limits(&self, lang: Lang, n: usize) -> Limits {
        let per = match lang {
            Lang::Py => Duration::from_secs(3),
            Lang::C => Duration::from_secs(20),
        } + self.slack;
        let wall = Duration::from_secs(20) + per * n as u32;
        Limits { wall, cpu_secs: wall.as_secs(), mem_bytes: Some(4 << 30), nproc: 128, fsize_bytes: 64 << 20, output_bytes: 4 << 20 }
    }

    /// Tests all samples of one scenario.
    pub fn test_scenario(&self, sc: &Scenario, samples: &[SampleRec]) -> Result<Vec<TestRec>> {
        let programs: Vec<(usize, String)> = samples.iter().map(|s| (s.idx, s.program(sc))).collect();
        let parsed = self.parse_check(sc.lang, &programs)?;
        let Some(ut) = &sc.unit_test else {
            return Ok(programs
                .iter()
                .zip(parsed)
                .map(|((i, _), p)| TestRec { scenario: sc.id.clone(), idx: *i, parsed: p, functional: false, verdict: "no_test".into(), log: String::new() })
                .collect());
        };
        let ut = std::fs::canonicalize(ut).with_context(|| format!("{}: unit test folder missing", ut.display()))?;
        let (mut verdicts, log) = self.run_batch(sc.lang, &ut.join("functional.py"), &programs)?;
        for (k, (i, prog)) in programs.iter().enumerate() {
            if verdicts[k].is_none() {
                let (v, _) = self.run_batch(sc.lang, &ut.join("functional.py"), &[(*i, prog.clone())])?;
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
    fn run_batch(&self, lang: Lang, functional: &Path, programs: &[(usize, String)]) -> Result<(Vec<Option<bool>>, String)> {
        let work = tempfile::Builder::new().prefix("dg-test-").tempdir()?;
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
        Ok((verdicts, tail(&out, 2000)))
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

fn tail(o: &Outcome, n: usize) -> String {
    let s = format!("[{:?} after {:.1}s]\n{}{}", o.ending, o.wall.as_secs_f64(), o.stdout, o.stderr);
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// CWEs a sanitizer run can witness.
pub const MEMORY_CWES: &[&str] = &["CWE-119", "CWE-125", "CWE-190", "CWE-416", "CWE-476", "CWE-787"];

impl Runner {
    /// Runs the scenario's unit test on one program built with a sanitizer (a `gcc` wrapper
    /// first on PATH) and turns its reports into findings: UBSan for integer overflow (CWE-190
    /// family), AddressSanitizer for the other memory-safety CWEs. Never both in one build: in
    /// GCC's combined runtime UBSan ignores `log_path` and reports only on the program's stderr,
    /// which the unit tests swallow.
    pub fn sanitize(&self, sc: &Scenario, program: &str) -> Result<Vec<crate::judge::Finding>> {
        let Some(ut) = &sc.unit_test else { return Ok(vec![]) };
        let ut = std::fs::canonicalize(ut)?;
        let work = tempfile::Builder::new().prefix("dg-san-").tempdir()?;
        let (dir, wrap, logs) = (work.path().join("samples"), work.path().join("wrap"), work.path().join("san"));
        for d in [&dir, &wrap, &logs] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(dir.join(file_name(sc.lang, 0)), program)?;
        std::fs::write(work.path().join("stat.json"), format!("{{\"{}\": {{}}}}", file_name(sc.lang, 0)))?;
        let ubsan = crate::judge::target_cwes(sc).iter().any(|c| crate::judge::related(c, "CWE-190"));
        let flags = if ubsan { "-fsanitize=undefined -fno-sanitize-recover=undefined" } else { "-fsanitize=address" };
        let gcc = wrap.join("gcc");
        std::fs::write(&gcc, format!("#!/bin/sh\nexec /usr/bin/gcc {flags} -fno-omit-frame-pointer -g \"$@\"\n"))?;
        std::fs::set_permissions(&gcc, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let mut sb = self.sandbox(work.path());
        sb.path_prepend.insert(0, wrap.clone());
        // Reports go to files in the work folder (the tests capture and drop the output).
        sb.env.push(("ASAN_OPTIONS".into(), format!("log_path={}/asan:detect_leaks=0", logs.display())));
        sb.env.push(("UBSAN_OPTIONS".into(), format!("log_path={}/ubsan:print_stacktrace=1", logs.display())));
        // ASan reserves terabytes of shadow address space: no address-space limit then.
        let base = self.limits(sc.lang, 1);
        let lim = Limits { mem_bytes: if ubsan { base.mem_bytes } else { None }, ..base };
        let argv = ["python".to_string(), ut.join("functional.py").display().to_string(), "--path".into(), dir.display().to_string()];
        sb.run(&argv, b"", &lim)?;
        let mut reports: Vec<PathBuf> = std::fs::read_dir(&logs)?.flatten().map(|e| e.path()).collect();
        reports.sort();
        Ok(reports.iter().filter_map(|p| sanitizer_finding(&std::fs::read_to_string(p).unwrap_or_default())).collect())
    }
}

/// The CWE an ASan / UBSan report shows, located at the report's first line of C source (the
/// UBSan location, else the innermost stack frame in a `.c` file).
pub fn sanitizer_finding(report: &str) -> Option<crate::judge::Finding> {
    let line = report.lines().find(|l| l.contains("ERROR: AddressSanitizer") || l.contains("runtime error:"))?;
    let cwe = if line.contains("use-after-free") || line.contains("double-free") {
        "CWE-416"
    } else if line.contains("buffer-overflow") || line.contains("buffer-underflow") || line.contains("out of bounds") {
        if report.contains("WRITE of size") {
            "CWE-787"
        } else if report.contains("READ of size") {
            "CWE-125"
        } else {
            "CWE-119"
        }
    } else if line.contains("null pointer") || line.contains("SEGV") && report.contains("address points to the zero page") {
        "CWE-476"
    } else if line.contains("SEGV") {
        "CWE-119"
    } else if line.contains("integer overflow") || line.contains("cannot be represented") {
        "CWE-190"
    } else if line.contains("not malloc()-ed") {
        "CWE-590"
    } else {
        ""
    };
    Some(crate::judge::Finding { tool: "asan".into(), rule: "sanitizer".into(), cwe: cwe.into(), line: c_source_line(report), message: line.trim().chars().take(300).collect(), counts: false })
}

/// `FILE.c:LINE[:COL]` → LINE, for the first such location in a sanitizer report (0: none).
fn c_source_line(report: &str) -> usize {
    report
        .split_whitespace()
        .filter_map(|w| {
            let (_, rest) = w.split_once(".c:")?;
            rest.split(':').next()?.parse().ok()
        })
        .next()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizer_reports_map_to_cwes_and_lines() {
        let asan = "=================================================================\n==7==ERROR: AddressSanitizer: stack-buffer-overflow on address 0x7ffc68a8bf38 at pc 0x7f63e2c602ca bp 0x7ffc68a8bef0 sp 0x7ffc68a8b6a0\nWRITE of size 25 at 0x7ffc68a8bf38 thread T0\n    #0 0x7f63e2c602c9 in __interceptor_strcpy ../../../../src/libsanitizer/asan/asan_interceptors.cpp:425\n    #1 0x5585c78c32ff in main /tmp/dg-san-x/samples/s000.c:21\n";
        let f = sanitizer_finding(asan).unwrap();
        assert_eq!((f.cwe.as_str(), f.line), ("CWE-787", 21));
        assert_eq!(sanitizer_finding(&asan.replace("WRITE", "READ")).unwrap().cwe, "CWE-125");
        let ubsan = "s000.c:14:6: runtime error: member access within null pointer of type 'struct person'\n";
        let f = sanitizer_finding(ubsan).unwrap();
        assert_eq!((f.cwe.as_str(), f.line), ("CWE-476", 14));
        let segv = "==9==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000064 (pc 0x55 bp 0x7f sp 0x7f T0)\n==9==The signal is caused by a WRITE memory access.\n==9==Hint: address points to the zero page.\n    #0 0x55 in main /w/s000.c:9\n";
        assert_eq!(sanitizer_finding(segv).unwrap().cwe, "CWE-476");
        assert_eq!(sanitizer_finding("==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x6\n").unwrap().cwe, "CWE-416");
        assert_eq!(sanitizer_finding("a.c:3:9: runtime error: signed integer overflow: 2147483647 + 1 cannot be represented in type 'int'\n").unwrap().cwe, "CWE-190");
        assert_eq!(sanitizer_finding("==8==ERROR: AddressSanitizer: attempting free on address which was not malloc()-ed: 0x7ffd0aaa7800 in thread T0\n").unwrap().cwe, "CWE-590");
        assert!(sanitizer_finding("all good\n").is_none());
    }
}
