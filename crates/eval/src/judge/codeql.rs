//! CodeQL backend: the judge the benchmark's authors used. Per scenario, the samples go into one
//! source folder, `codeql database create` builds a database from it (Python: extracted as is;
//! C: each file compiled with `gcc -std=c99 -c` under CodeQL's tracer), and `codeql database
//! analyze` runs the scenario's own query (`check_ql` in info.json) with SARIF output. Every
//! result located in a sample file counts against that sample: the query is the scenario's CWE
//! check, so its findings carry the scenario's CWE.
//!
//! Used when a `codeql` CLI is on PATH. Not run against a real CodeQL on the project's machines
//! (none can be installed there); tested with a fake CLI and real-shaped SARIF.

use crate::judge::{Backend, Batch, Finding};
use crate::scenario::{Lang, Scenario};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the query repository (a github/codeql checkout).
pub const REPO_ENV: &str = "DEEPGUARD_CODEQL_REPO";

pub struct CodeQl {
    /// The `codeql` CLI.
    pub bin: PathBuf,
    /// A github/codeql checkout (holding `python/ql/src`, `cpp/ql/src`): where the benchmark's
    /// `../codeql/codeql-repo/...` queries live, also passed as `--additional-packs` so that the
    /// scenarios' own queries find their libraries. None: the CLI's bundled query packs
    /// (`codeql/python-queries:Security/...`).
    pub repo: Option<PathBuf>,
}

/// An executable `name` in one of the PATH folders.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file() && p.metadata().is_ok_and(|m| m.permissions().mode() & 0o111 != 0))
}

impl CodeQl {
    /// The `codeql` on PATH, if any. Its query repository: `repo`, else `$DEEPGUARD_CODEQL_REPO`,
    /// else a `codeql-repo` folder next to the CLI (the SVEN layout `codeql/{codeql,codeql-repo}`),
    /// else none (bundled packs).
    pub fn detect(repo: Option<&Path>) -> Option<CodeQl> {
        let bin = find_on_path("codeql")?;
        let repo = repo.map(Path::to_path_buf).or_else(|| std::env::var_os(REPO_ENV).map(PathBuf::from)).or_else(|| {
            let sibling = std::fs::canonicalize(&bin).ok()?.parent()?.join("codeql-repo");
            sibling.is_dir().then_some(sibling)
        });
        Some(CodeQl { bin, repo })
    }

    fn run(&self, args: &[String], what: &str) -> Result<std::process::Output> {
        Command::new(&self.bin).args(args).output().with_context(|| format!("cannot run {} ({what})", self.bin.display()))
    }

    /// Database + analysis of one scenario's samples (`files`, all of `sc`); findings per file.
    fn scan_scenario(&self, sc: &Scenario, files: &[&PathBuf], dir: &Path) -> Result<Vec<Vec<Finding>>> {
        let mut per = vec![vec![]; files.len()];
        let Some(query) = resolve_query(sc, self.repo.as_deref())? else { return Ok(per) };
        let (src, db, sarif) = (dir.join("src"), dir.join("db"), dir.join("results.sarif"));
        std::fs::create_dir_all(&src)?;
        for f in files {
            std::fs::copy(f, src.join(f.file_name().context("sample file without a name")?))?;
        }
        let query = match query {
            Query::Local(q) => copy_local_query(&q, &dir.join("query"))?.display().to_string(),
            Query::File(q) => q.display().to_string(),
            Query::Pack(p) => p,
        };
        let mut create = vec!["database".into(), "create".into(), db.display().to_string(), "--overwrite".into(), format!("--source-root={}", src.display())];
        match sc.lang {
            Lang::Py => create.push("--language=python".into()),
            Lang::C => {
                // CodeQL traces the compilations; a sample that does not compile is not extracted.
                let build = dir.join("build.sh");
                std::fs::write(&build, format!("cd '{}' || exit 1\nfor f in *.c; do gcc -std=c99 -c \"$f\" -o /dev/null || true; done\nexit 0\n", src.display()))?;
                create.extend(["--language=cpp".into(), format!("--command=sh {}", build.display())]);
            }
        }
        let out = self.run(&create, "database create")?;
        if !out.status.success() {
            // E.g. no C sample compiles: nothing to analyse. Kept as a note, it does not count.
            let note = Finding {
                tool: "codeql".into(),
                rule: "database-create-failed".into(),
                cwe: String::new(),
                line: 0,
                message: tail(&String::from_utf8_lossy(&out.stderr), 300),
                counts: false,
            };
            return Ok(vec![vec![note]; files.len()]);
        }
        let mut analyze = vec!["database".into(), "analyze".into(), db.display().to_string(), query, "--format=sarif-latest".into(), format!("--output={}", sarif.display())];
        if let Some(r) = &self.repo {
            analyze.push(format!("--additional-packs={}", r.display()));
        }
        let out = self.run(&analyze, "database analyze")?;
        if !out.status.success() {
            bail!("codeql database analyze for {} failed: {}", sc.id, tail(&String::from_utf8_lossy(&out.stderr), 2000));
        }
        let text = std::fs::read_to_string(&sarif).with_context(|| format!("{}: codeql wrote no SARIF", sarif.display()))?;
        for r in parse_sarif(&text)? {
            let name = Path::new(r.uri.strip_prefix("file://").unwrap_or(&r.uri)).file_name().map(|n| n.to_owned());
            let Some(k) = files.iter().position(|f| f.file_name() == name.as_deref()) else { continue };
            per[k].push(Finding { tool: "codeql".into(), rule: r.rule, cwe: sc.cwe.clone(), line: r.line, message: r.message, counts: false });
        }
        Ok(per)
    }
}

impl Backend for CodeQl {
    fn name(&self) -> &'static str {
        "codeql"
    }
    fn handles(&self, _lang: Lang) -> bool {
        true
    }
    fn scan(&self, batch: &Batch) -> Result<Vec<Vec<Finding>>> {
        let tmp = tempfile::Builder::new().prefix("dg-codeql-").tempdir()?;
        let mut per = vec![vec![]; batch.files.len()];
        // One database per scenario: the query is the scenario's.
        let mut groups: Vec<(&Scenario, Vec<usize>)> = vec![];
        for (k, it) in batch.items.iter().enumerate() {
            match groups.iter_mut().find(|(s, _)| s.id == it.scenario.id) {
                Some((_, ks)) => ks.push(k),
                None => groups.push((it.scenario, vec![k])),
            }
        }
        for (g, (sc, ks)) in groups.iter().enumerate() {
            let files: Vec<&PathBuf> = ks.iter().map(|&k| &batch.files[k]).collect();
            let found = self.scan_scenario(sc, &files, &tmp.path().join(g.to_string())).with_context(|| format!("codeql on {}", sc.id))?;
            for (j, fs) in found.into_iter().enumerate() {
                per[ks[j]] = fs;
            }
        }
        Ok(per)
    }
}

/// Where a scenario's query comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Shipped in the scenario folder (`../data_eval/sec_eval/.../x.ql`).
    Local(PathBuf),
    /// A file of the query repository (`../codeql/codeql-repo/python/ql/src/...`).
    File(PathBuf),
    /// The same query in the CLI's bundled pack: `codeql/python-queries:Security/...`.
    Pack(String),
}

/// Resolves `check_ql` the way the original scripts did (paths relative to their `scripts/`
/// folder: `../codeql/codeql-repo/<lang>/ql/src/...` in the CodeQL checkout, `../data_eval/...`
/// in the benchmark itself), the shell escapes (`Likely\ Bugs`) undone. None: no query.
pub fn resolve_query(sc: &Scenario, repo: Option<&Path>) -> Result<Option<Query>> {
    let Some(raw) = &sc.check_ql else { return Ok(None) };
    let q = raw.replace("\\ ", " ");
    let local = Path::new(&q).file_name().map(|n| sc.dir.join(n));
    if let Some(l) = local.filter(|l| l.is_file()) {
        return Ok(Some(Query::Local(l)));
    }
    let Some(i) = q.find("/ql/src/") else { bail!("{}: cannot resolve CodeQL query {raw:?}", sc.id) };
    let lang_dir = q[..i].rsplit('/').next().unwrap_or("");
    let in_src = &q[i + "/ql/src/".len()..];
    Ok(Some(match repo {
        Some(r) => {
            let p = r.join(lang_dir).join("ql/src").join(in_src);
            if !p.is_file() {
                bail!("{}: query {} not found (is {} a github/codeql checkout? set {REPO_ENV})", sc.id, p.display(), r.display());
            }
            Query::File(p)
        }
        None => Query::Pack(format!("codeql/{lang_dir}-queries:{in_src}")),
    }))
}

/// Copies a scenario's query with its pack files (the benchmark folder stays untouched by the
/// compilation); the copied `.ql`.
fn copy_local_query(q: &Path, to: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(to)?;
    let from = q.parent().context("query without a folder")?;
    for e in std::fs::read_dir(from)?.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if n.ends_with(".ql") || n.ends_with(".qll") || n == "qlpack.yml" || n == "codeql-pack.lock.yml" {
            std::fs::copy(e.path(), to.join(&n))?;
        }
    }
    Ok(to.join(q.file_name().context("query without a name")?))
}

fn tail(s: &str, n: usize) -> String {
    let t: Vec<char> = s.trim().chars().collect();
    t[t.len().saturating_sub(n)..].iter().collect()
}

/// One SARIF result: the file (URI as written), 1-based line, rule id and message.
#[derive(Debug, Clone, PartialEq)]
pub struct SarifResult {
    pub uri: String,
    pub line: usize,
    pub rule: String,
    pub message: String,
}

/// The results of a SARIF 2.1.0 log, located by their first location. A location may name its
/// file through an index into the run's `artifacts`; results with no location are dropped.
pub fn parse_sarif(text: &str) -> Result<Vec<SarifResult>> {
    let v: serde_json::Value = serde_json::from_str(text).context("SARIF is not JSON")?;
    let runs = v["runs"].as_array().context("SARIF without runs")?;
    let mut out = vec![];
    for run in runs {
        let rules = &run["tool"]["driver"]["rules"];
        for r in run["results"].as_array().into_iter().flatten() {
            let loc = &r["locations"][0]["physicalLocation"];
            let art = &loc["artifactLocation"];
            let uri = art["uri"].as_str().or_else(|| art["index"].as_u64().and_then(|i| run["artifacts"][i as usize]["location"]["uri"].as_str()));
            let Some(uri) = uri else { continue };
            let rule = r["ruleId"]
                .as_str()
                .or_else(|| r["rule"]["id"].as_str())
                .or_else(|| r["ruleIndex"].as_u64().and_then(|i| rules[i as usize]["id"].as_str()))
                .unwrap_or("");
            out.push(SarifResult {
                uri: uri.to_string(),
                line: loc["region"]["startLine"].as_u64().unwrap_or(0) as usize,
                rule: rule.to_string(),
                message: r["message"]["text"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::discover;

    /// Shaped like `codeql database analyze --format=sarif-latest` output (CLI 2.15): a
    /// path-problem result with a code flow and related locations, one result naming its file
    /// through the artifacts index only, notifications in the invocation.
    const SARIF: &str = r#"{
  "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
  "version": "2.1.0",
  "runs": [{
    "tool": {
      "driver": {
        "name": "CodeQL", "organization": "GitHub", "semanticVersion": "2.15.5",
        "rules": [{
          "id": "py/sql-injection", "name": "py/sql-injection",
          "shortDescription": {"text": "SQL query built from user-controlled sources"},
          "properties": {"tags": ["security", "external/cwe/cwe-089"], "kind": "path-problem", "precision": "high", "security-severity": "8.8"}
        }]
      },
      "extensions": [{"name": "codeql/python-queries", "semanticVersion": "0.6.2"}]
    },
    "invocations": [{"toolExecutionNotifications": [], "executionSuccessful": true}],
    "artifacts": [
      {"location": {"uri": "p00001.py", "uriBaseId": "%SRCROOT%", "index": 0}},
      {"location": {"uri": "p00004.py", "uriBaseId": "%SRCROOT%", "index": 1}}
    ],
    "results": [
      {
        "ruleId": "py/sql-injection", "ruleIndex": 0,
        "rule": {"id": "py/sql-injection", "index": 0},
        "message": {"text": "This SQL query depends on a [user-provided value](1)."},
        "locations": [{"physicalLocation": {
          "artifactLocation": {"uri": "p00001.py", "uriBaseId": "%SRCROOT%", "index": 0},
          "region": {"startLine": 17, "startColumn": 20, "endColumn": 66}
        }}],
        "partialFingerprints": {"primaryLocationLineHash": "8ce0dca6a5c8e0d3:1"},
        "codeFlows": [{"threadFlows": [{"locations": [{"location": {"physicalLocation": {
          "artifactLocation": {"uri": "p00001.py", "uriBaseId": "%SRCROOT%", "index": 0},
          "region": {"startLine": 14, "startColumn": 13, "endColumn": 20}}, "message": {"text": "ControlFlowNode for request"}}}]}]}],
        "relatedLocations": [{"id": 1, "physicalLocation": {
          "artifactLocation": {"uri": "p00001.py", "uriBaseId": "%SRCROOT%", "index": 0},
          "region": {"startLine": 14, "startColumn": 13, "endColumn": 20}}, "message": {"text": "user-provided value"}}]
      },
      {
        "ruleIndex": 0,
        "message": {"text": "This SQL query depends on a [user-provided value](1)."},
        "locations": [{"physicalLocation": {"artifactLocation": {"index": 1}, "region": {"startLine": 9}}}]
      },
      {"ruleId": "py/sql-injection", "message": {"text": "no location"}}
    ]
  }]
}"#;

    #[test]
    fn parses_real_shaped_sarif() {
        let r = parse_sarif(SARIF).unwrap();
        assert_eq!(
            r,
            [
                SarifResult { uri: "p00001.py".into(), line: 17, rule: "py/sql-injection".into(), message: "This SQL query depends on a [user-provided value](1).".into() },
                SarifResult { uri: "p00004.py".into(), line: 9, rule: "py/sql-injection".into(), message: "This SQL query depends on a [user-provided value](1).".into() },
            ]
        );
        assert!(parse_sarif("{}").is_err());
        assert_eq!(parse_sarif(r#"{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "CodeQL"}}, "results": []}]}"#).unwrap(), []);
    }

    #[test]
    fn resolves_every_benchmark_query() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval");
        let all = discover(&data, &[]).unwrap();
        let repo = tempfile::tempdir().unwrap();
        for sc in &all {
            match resolve_query(sc, None).unwrap().unwrap() {
                Query::Local(p) => assert!(p.is_file() && p.starts_with(&sc.dir), "{}: {p:?}", sc.id),
                Query::Pack(p) => {
                    assert!(p.starts_with(if sc.lang == Lang::Py { "codeql/python-queries:" } else { "codeql/cpp-queries:" }), "{p}");
                    // The same query from a checkout: its file, and an error naming it when absent.
                    let rel = p.split_once(':').unwrap().1;
                    let dir = if sc.lang == Lang::Py { "python" } else { "cpp" };
                    let f = repo.path().join(dir).join("ql/src").join(rel);
                    if !f.exists() {
                        let e = resolve_query(sc, Some(repo.path())).unwrap_err().to_string();
                        assert!(e.contains(&f.display().to_string()), "{e}");
                    }
                    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                    std::fs::write(&f, "").unwrap();
                    assert_eq!(resolve_query(sc, Some(repo.path())).unwrap(), Some(Query::File(f)));
                }
                Query::File(_) => unreachable!(),
            }
        }
        let pick = |id: &str| all.iter().find(|s| s.id == id).unwrap();
        assert_eq!(resolve_query(pick("base/cwe-089/0-py"), None).unwrap(), Some(Query::Pack("codeql/python-queries:Security/CWE-089/SqlInjection.ql".into())));
        assert_eq!(
            resolve_query(pick("base/cwe-787/0-c"), None).unwrap(),
            Some(Query::Pack("codeql/cpp-queries:Likely Bugs/Memory Management/PotentialBufferOverflow.ql".into())),
            "shell escapes undone"
        );
        assert_eq!(resolve_query(pick("base/cwe-125/0-c"), None).unwrap(), Some(Query::Local(pick("base/cwe-125/0-c").dir.join("cwe_125_my-1.ql"))));
    }
}
