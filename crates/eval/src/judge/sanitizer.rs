//! The sanitizer backend (`asan`): the scenario's unit test on one program built with
//! AddressSanitizer or UBSan, in the sandbox; a report is an observed memory error.

use super::Finding;
use crate::functional::{file_name, Runner};
use crate::sandbox::Limits;
use crate::scenario::Scenario;
use anyhow::Result;
use std::path::PathBuf;

/// CWEs a sanitizer run can witness.
pub const MEMORY_CWES: &[&str] = &["CWE-119", "CWE-125", "CWE-190", "CWE-416", "CWE-476", "CWE-787"];

/// The `asan` backend: the unit-test runner of the benchmark, with a sanitizer build.
pub struct Sanitizer {
    pub runner: Runner,
}

impl Sanitizer {
    /// C scenarios of a memory-safety CWE with a unit test.
    pub fn applies(&self, sc: &Scenario) -> bool {
        sc.lang == crate::scenario::Lang::C && sc.unit_test.is_some() && super::target_cwes(sc).iter().any(|c| MEMORY_CWES.contains(&c.as_str()))
    }

    /// Runs the scenario's unit test on one program built with a sanitizer (a `gcc` wrapper
    /// first on PATH) and turns its reports into findings: UBSan for integer overflow (CWE-190
    /// family), AddressSanitizer for the other memory-safety CWEs. Never both in one build: in
    /// GCC's combined runtime UBSan ignores `log_path` and reports only on the program's stderr,
    /// which the unit tests swallow.
    ///
    /// The wrapper first compiles each C file it is given on its own, uninstrumented, and reads
    /// its symbols: a program that defines or calls the sanitizers' control interface (e.g.
    /// `__sanitizer_set_report_path`, `__asan_default_options`), `--wrap` symbols or run-time
    /// symbol lookup is not built and gets a `tampering` finding: it could silence its own report.
    pub fn run(&self, sc: &Scenario, program: &str) -> Result<Vec<Finding>> {
        let Some(ut) = &sc.unit_test else { return Ok(vec![]) };
        let ut = std::fs::canonicalize(ut)?;
        let work = tempfile::Builder::new().prefix("dg-run-").tempdir()?;
        let (dir, wrap, logs) = (work.path().join("samples"), work.path().join("wrap"), work.path().join("san"));
        for d in [&dir, &wrap, &logs] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(dir.join(file_name(sc.lang, 0)), program)?;
        std::fs::write(work.path().join("stat.json"), format!("{{\"{}\": {{}}}}", file_name(sc.lang, 0)))?;
        let ubsan = super::target_cwes(sc).iter().any(|c| super::related(c, "CWE-190"));
        let flags = if ubsan { "-fsanitize=undefined -fno-sanitize-recover=undefined" } else { "-fsanitize=address" };
        let gcc = wrap.join("gcc");
        std::fs::write(&gcc, format!("#!/bin/sh\n{}exec /usr/bin/gcc {flags} -fno-omit-frame-pointer -g \"$@\"\n", tamper_check(&logs)))?;
        std::fs::set_permissions(&gcc, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let mut sb = self.runner.sandbox(work.path());
        sb.path_prepend.insert(0, wrap.clone());
        // Reports go to files in the work folder (the tests capture and drop the output).
        // ASan reserves terabytes of shadow address space: no address-space limit then; the
        // sandbox bounds the run's resident memory, and ASan's own RSS limit ends the program
        // a little earlier, in its own words.
        let base = self.runner.limits(sc.lang, 1);
        let lim = Limits { mem_bytes: if ubsan { base.mem_bytes } else { None }, ..base };
        let rss_mb = lim.rss_bytes / (1 << 20) * 7 / 8;
        sb.env.push(("ASAN_OPTIONS".into(), format!("log_path={}/asan:detect_leaks=0:hard_rss_limit_mb={rss_mb}", logs.display())));
        sb.env.push(("UBSAN_OPTIONS".into(), format!("log_path={}/ubsan:print_stacktrace=1", logs.display())));
        let argv = ["python".to_string(), ut.join("functional.py").display().to_string(), "--path".into(), dir.display().to_string()];
        sb.run(&argv, b"", &lim)?;
        let mut reports: Vec<PathBuf> = std::fs::read_dir(&logs)?.flatten().map(|e| e.path()).collect();
        reports.sort();
        let mut found: Vec<Finding> = vec![];
        for p in &reports {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            if p.file_name().is_some_and(|n| n == TAMPER_FILE) {
                let sym = text.lines().next().unwrap_or("").chars().take(200).collect::<String>();
                found.push(Finding { tool: "asan".into(), rule: "tampering".into(), cwe: sc.cwe.clone(), line: 0, message: format!("the program defines or uses {sym:?}, which controls the sanitizer (not built)"), counts: false });
            } else {
                found.extend(sanitizer_finding(&text));
            }
        }
        Ok(found)
    }
}

/// The file in the logs folder where the gcc wrapper names a symbol it refused.
const TAMPER_FILE: &str = "tamper";

/// Symbol names (an extended regular expression over `nm` output lines) a program under test may
/// neither define nor use: the sanitizers' interface and hooks, the linker's `--wrap` names, and
/// run-time symbol lookup. The same list is `TAMPER_PREFIXES`/`TAMPER_NAMES` in the security
/// tests' `sec_utils.py`.
pub const TAMPER_SYMBOLS: &str = " (__asan_|__sanitizer_|__ubsan_|__lsan_|__msan_|__tsan_|__hwasan_|__interceptor_|__wrap_|__real_)[A-Za-z0-9_]*$| (dlsym|dlvsym|dlopen|dlmopen)$";

/// Shell lines for the gcc wrapper: each `.c` argument compiled alone, its symbols checked; a
/// match (or symbols that cannot be read) is written to `logs/tamper` and the build fails.
fn tamper_check(logs: &std::path::Path) -> String {
    format!(
        "t=$(/usr/bin/mktemp -d) || exit 1\nfor a in \"$@\"; do\n  case \"$a\" in *.c) ;; *) continue ;; esac\n  /usr/bin/gcc -std=c99 -w -c -o \"$t/o.o\" \"$a\" 2>/dev/null || continue\n  n=$(/usr/bin/nm \"$t/o.o\") || {{ echo '<symbols unreadable>' > '{0}/{TAMPER_FILE}'; exit 1; }}\n  s=$(printf '%s\\n' \"$n\" | /usr/bin/grep -E -m1 '{TAMPER_SYMBOLS}')\n  if [ -n \"$s\" ]; then echo \"${{s##* }}\" > '{0}/{TAMPER_FILE}'; exit 1; fi\ndone\n",
        logs.display()
    )
}

/// The CWE an ASan / UBSan report shows, located at the report's first line of C source (the
/// UBSan location, else the innermost stack frame in a `.c` file).
pub fn sanitizer_finding(report: &str) -> Option<super::Finding> {
    let line = report.lines().find(|l| l.contains("ERROR: AddressSanitizer") || l.contains("runtime error:"))?;
    // The memory limit, not a memory error.
    if line.contains("rss limit exhausted") {
        return None;
    }
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
    Some(Finding { tool: "asan".into(), rule: "sanitizer".into(), cwe: cwe.into(), line: c_source_line(report), message: line.trim().chars().take(300).collect(), counts: false })
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
        assert!(sanitizer_finding("==5==ERROR: AddressSanitizer: hard rss limit exhausted (3584Mb vs 3590Mb)\n").is_none());
    }
}
