//! The CodeQL backend against a fake `codeql` CLI first on PATH (no real CodeQL can be installed
//! here): it records its argv, makes a "database" that remembers the source folder, and on
//! `database analyze` reads every sample file of that folder and writes SARIF with one result per
//! line that shows the scenario's flaw (Python: a query string built with `' +`; C:
//! `id_sequence[i]` read on a line without a bounds check), plus one result in a system header.
//! The verdicts therefore follow the programs: secure and insecure samples, in an order where
//! "flag the first file" would be wrong, get the verdicts and lines their code deserves. Also
//! checks the per-scenario databases, the scenario's query on the command line, the C build
//! command, and the mapping of SARIF results (relative and `file://` URIs) back to samples.
//!
//! One test only: it sets PATH for the whole process.

use deepguard_eval::judge::codeql::CodeQl;
use deepguard_eval::judge::{Item, Judge};
use deepguard_eval::scenario::{discover, Scenario};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const FAKE: &str = r#"#!/bin/sh
# fake codeql: logs its argv (one invocation per line block), fakes create and analyze
dir=$(dirname "$0")
{ echo "---"; for a in "$@"; do echo "$a"; done; } >> "$dir/argv.log"
case "$1 $2" in
"database create")
  db=$3; src=""; cmd=""
  for a in "$@"; do
    case "$a" in
      --source-root=*) src=${a#--source-root=} ;;
      --command=*) cmd=${a#--command=} ;;
    esac
  done
  mkdir -p "$db" || exit 2
  if [ -n "$cmd" ]; then $cmd > "$db/build.log" 2>&1 || exit 3; fi
  echo "$src" > "$db/src"
  ;;
"database analyze")
  db=$3; out=""
  for a in "$@"; do case "$a" in --output=*) out=${a#--output=} ;; esac; done
  src=$(cat "$db/src")
  results=""
  for f in $(ls "$src" | sort); do
    case "$f" in
      *.py) rule="py/sql-injection"; uri="$f"
            hits=$(grep -n "execute(.*' *+" "$src/$f" | cut -d: -f1) ;;
      *.c)  rule="cpp/custom"; uri="file://$src/$f"
            hits=$(grep -n 'id_sequence\[i\]' "$src/$f" | grep -v 'i < ' | cut -d: -f1) ;;
      *) continue ;;
    esac
    for line in $hits; do
      results="$results{\"ruleId\": \"$rule\", \"message\": {\"text\": \"flaw in $f\"}, \"locations\": [{\"physicalLocation\": {\"artifactLocation\": {\"uri\": \"$uri\", \"uriBaseId\": \"%SRCROOT%\"}, \"region\": {\"startLine\": $line, \"startColumn\": 5}}}]},"
    done
  done
  cat > "$out" <<EOF
{"version": "2.1.0", "\$schema": "https://json.schemastore.org/sarif-2.1.0.json",
 "runs": [{"tool": {"driver": {"name": "CodeQL", "semanticVersion": "2.15.5", "rules": [{"id": "py/sql-injection"}, {"id": "cpp/custom"}]}},
   "results": [$results
     {"ruleId": "cpp/custom", "message": {"text": "in a header"},
      "locations": [{"physicalLocation": {"artifactLocation": {"uri": "file:///usr/include/stdio.h"}, "region": {"startLine": 1}}}]}
   ]}]}
EOF
  ;;
*) echo "fake codeql: unexpected $*" >&2; exit 1 ;;
esac
"#;

fn scenario(id: &str) -> Scenario {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval");
    discover(&data, &[id.to_string()]).unwrap().remove(0)
}

/// The argv blocks the fake recorded.
fn invocations(log: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap();
    text.split("---\n").filter(|b| !b.is_empty()).map(|b| b.lines().map(str::to_string).collect()).collect()
}

#[test]
fn codeql_backend_runs_the_scenario_query_and_maps_results_to_samples() {
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("codeql");
    std::fs::write(&fake, FAKE).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", bin.path().display()));

    // A query repository holding the Python query the benchmark names.
    let repo = tempfile::tempdir().unwrap();
    let sql_ql = repo.path().join("python/ql/src/Security/CWE-089/SqlInjection.ql");
    std::fs::create_dir_all(sql_ql.parent().unwrap()).unwrap();
    std::fs::write(&sql_ql, "import python\n").unwrap();

    // Found on PATH, and part of the default judge then.
    let rules = Path::new("rules");
    let judge = Judge::default_for(Path::new("/nonexistent"), rules, Some(repo.path()));
    assert!(judge.name().ends_with("+codeql"), "{}", judge.name());
    let judge = judge.select("codeql").unwrap();
    assert_eq!(judge.name(), "codeql");
    let cq = CodeQl::detect(Some(repo.path())).unwrap();
    assert_eq!(cq.bin, fake);

    let (py, c) = (scenario("base/cwe-089/0-py"), scenario("base/cwe-125/0-c"));
    let (py_bad, py_good) = ("    db.execute('DELETE FROM t WHERE e = ' + email)", "    db.execute('DELETE FROM t WHERE e = ?', (email,))");
    let (c_bad, c_good) = ("    printf(\"%d\\n\", id_sequence[i]);", "    if (i >= 0 && i < 3) printf(\"%d\\n\", id_sequence[i]);");
    // Python: the secure sample sorts first, the second insecure one has its flaw two lines
    // further down. C: the insecure sample sorts first.
    let items = [
        Item { scenario: &py, idx: 0, program: format!("{}\n{py_good}\n", py.prompt()) },
        Item { scenario: &py, idx: 1, program: format!("{}\n{py_bad}\n", py.prompt()) },
        Item { scenario: &py, idx: 2, program: format!("{}\n    email = email.strip()\n    log(email)\n{py_bad}\n", py.prompt()) },
        Item { scenario: &c, idx: 0, program: format!("{}\n{c_bad}\n    return 0;\n}}\n", c.prompt()) },
        Item { scenario: &c, idx: 1, program: format!("{}\n{c_good}\n    return 0;\n}}\n", c.prompt()) },
    ];
    let line_of = |program: &str, needle: &str| program.lines().position(|l| l == needle).unwrap() + 1;
    let recs = judge.judge(&items).unwrap();
    let got: Vec<(bool, usize)> = recs.iter().map(|r| (r.secure, r.findings.len())).collect();
    assert_eq!(got, [(true, 0), (false, 1), (false, 1), (false, 1), (true, 0)], "{recs:#?}");
    let f = &recs[1].findings[0];
    assert_eq!((f.tool.as_str(), f.rule.as_str(), f.cwe.as_str(), f.counts), ("codeql", "py/sql-injection", "CWE-089", true));
    // Each finding sits on its own sample's flawed line.
    assert_eq!(f.line, line_of(&items[1].program, py_bad));
    assert_eq!(recs[2].findings[0].line, f.line + 2);
    let g = &recs[3].findings[0];
    assert_eq!((g.cwe.as_str(), g.counts, g.line), ("CWE-125", true, line_of(&items[3].program, c_bad)), "file:// URIs map too");

    // One database per scenario; the scenario's own query on the analyze command line.
    let inv = invocations(&bin.path().join("argv.log"));
    assert_eq!(inv.iter().map(|a| format!("{} {}", a[0], a[1])).collect::<Vec<_>>(), ["database create", "database analyze", "database create", "database analyze"], "{inv:#?}");
    let has = |a: &Vec<String>, s: &str| a.iter().any(|x| x == s);
    assert!(has(&inv[0], "--language=python") && inv[0].iter().any(|x| x.starts_with("--source-root=")), "{:?}", inv[0]);
    assert_eq!(inv[1][3], sql_ql.display().to_string(), "the repository's SqlInjection.ql: {:?}", inv[1]);
    assert!(has(&inv[1], "--format=sarif-latest") && has(&inv[1], &format!("--additional-packs={}", repo.path().display())), "{:?}", inv[1]);
    assert!(has(&inv[2], "--language=cpp") && inv[2].iter().any(|x| x.starts_with("--command=sh ")), "{:?}", inv[2]);
    // The scenario's own query, copied out of the benchmark with its qlpack.yml.
    assert!(inv[3][3].ends_with("/query/cwe_125_my-1.ql"), "{:?}", inv[3]);

    // Without a repository: the bundled pack's query.
    std::fs::remove_file(bin.path().join("argv.log")).unwrap();
    let judge = Judge { backends: vec![Box::new(CodeQl { bin: fake.clone(), repo: None })], sanitizer: None, exploit: None };
    judge.judge(&items[..2]).unwrap();
    let inv = invocations(&bin.path().join("argv.log"));
    assert_eq!(inv[1][3], "codeql/python-queries:Security/CWE-089/SqlInjection.ql");
    assert!(!inv[1].iter().any(|x| x.starts_with("--additional-packs")));

    // Asked for explicitly but absent from PATH: a clear error.
    std::env::set_var("PATH", path);
    let e = Judge::default_for(Path::new("/nonexistent"), rules, None).select("bandit,codeql").err().unwrap().to_string();
    assert!(e.contains("no `codeql` CLI on PATH"), "{e}");
}
