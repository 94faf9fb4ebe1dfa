//! Does the code build? The repair loop's check of what it regenerates: a Python program with a
//! syntax error or a name it never defines or imports (pyflakes), or a C program the compiler
//! rejects (`gcc -fsyntax-only`), is broken, whatever the security checks say. Nothing runs:
//! both only read the code.

use crate::judge::{Finding, Item};
use crate::scenario::Lang;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// Messages of a build check that make a program broken, per item.
pub fn check(venv_bin: &Path, items: &[Item]) -> Result<Vec<Vec<Finding>>> {
    let dir = tempfile::Builder::new().prefix("dg-build-").tempdir().context("cannot create a folder for the build check")?;
    let mut out = vec![vec![]; items.len()];
    let mut py = Vec::new();
    for (k, it) in items.iter().enumerate() {
        let file = dir.path().join(format!("p{k}.{}", it.scenario.lang.ext()));
        std::fs::write(&file, &it.program).with_context(|| format!("{}: cannot write", file.display()))?;
        match it.scenario.lang {
            Lang::Py => py.push(file),
            Lang::C => {
                let o = Command::new("gcc").args(["-fsyntax-only", "-std=gnu11", "-w"]).arg(&file).output().context("cannot run gcc (the build check of C code)")?;
                out[k] = parse(&String::from_utf8_lossy(&o.stderr), "gcc", true).into_iter().filter(|(f, _)| *f == k).map(|(_, m)| m).collect();
            }
        }
    }
    if !py.is_empty() {
        let o = Command::new(venv_bin.join("pyflakes")).args(&py).output().with_context(|| format!("cannot run {} (run scripts/setup.sh)", venv_bin.join("pyflakes").display()))?;
        // 0: nothing found, 1: messages; anything else is pyflakes failing, not a clean build.
        if !matches!(o.status.code(), Some(0 | 1)) {
            anyhow::bail!("pyflakes failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).chars().take(300).collect::<String>());
        }
        // Syntax errors go to stderr; undefined names are the only warnings that break a run.
        let found = parse(&String::from_utf8_lossy(&o.stderr), "pyflakes", true).into_iter().chain(parse(&String::from_utf8_lossy(&o.stdout), "pyflakes", false));
        for (k, f) in found {
            out[k].push(f);
        }
    }
    Ok(out)
}

/// `p<K>.<ext>:LINE:COL: MESSAGE` lines: (K, finding). With `all`, every message counts (gcc's
/// errors, pyflakes' syntax errors); else only undefined names.
fn parse(text: &str, tool: &str, all: bool) -> Vec<(usize, Finding)> {
    text.lines()
        .filter_map(|l| {
            let (file, rest) = l.split_once(':')?;
            let k: usize = Path::new(file).file_stem()?.to_str()?.strip_prefix('p')?.parse().ok()?;
            let mut parts = rest.splitn(3, ':');
            let line: usize = parts.next()?.trim().parse().ok()?;
            let _col = parts.next()?;
            let msg = parts.next()?.trim().trim_start_matches("error:").trim().to_string();
            if tool == "gcc" && !l.contains("error:") {
                return None;
            }
            if !all && !msg.starts_with("undefined name") {
                return None;
            }
            let rule = if msg.starts_with("undefined name") { "undefined-name" } else { "syntax" };
            Some((k, Finding { tool: tool.into(), rule: rule.into(), cwe: String::new(), line, message: msg, counts: false }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pyflakes_and_gcc_messages() {
        let out = "/tmp/x/p1.py:3:12: undefined name 'escape'\n/tmp/x/p0.py:1:1: 'os' imported but unused\n";
        let f = parse(out, "pyflakes", false);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].0, f[0].1.line, f[0].1.rule.as_str(), f[0].1.message.as_str()), (1, 3, "undefined-name", "undefined name 'escape'"));
        let err = "/tmp/x/p2.py:2:12: '(' was never closed\n    return (x\n           ^\n";
        assert_eq!(parse(err, "pyflakes", true)[0].1.rule, "syntax");
        let gcc = "/tmp/x/p4.c: In function 'f':\n/tmp/x/p4.c:5:3: error: expected ';' before '}' token\n/tmp/x/p4.c:6:1: warning: x\n";
        let g = parse(gcc, "gcc", true);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].0, g[0].1.line, g[0].1.message.as_str()), (4, 5, "expected ';' before '}' token"));
    }
}
