//! Fuzzing what the evaluation reads back: a benchmark scenario's `info.json` and a run folder's
//! stores (`config.json`, `samples.jsonl`, `tests.jsonl`, `judge-*.jsonl`), as `eval` does when it
//! resumes or reports (a run folder may come from another machine). Every case loads and
//! reports, or is refused with one error naming the file; no panic, no allocation over 64 MiB.
//! Case counts are printed.

#[path = "../../runtime/tests/support/fuzz.rs"]
mod fuzz;

#[global_allocator]
static ALLOC: fuzz::Counting = fuzz::Counting;

use deepguard_eval::cut::Cut;
use deepguard_eval::functional::TestRec;
use deepguard_eval::gen::{load_samples, SampleRec};
use deepguard_eval::judge::{Finding, JudgeRec};
use deepguard_eval::report;
use deepguard_eval::scenario::discover;
use deepguard_eval::store::Jsonl;
use fuzz::{fuzz, json_mutated, mutated};
use std::path::Path;

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn benchmark(root: &Path) {
    let sc = root.join("sec_eval/base/cwe-089/0-py");
    write(&sc.join("info.json"), r#"{"language": "py", "cwe": "CWE-089", "scenario": "0-py", "check_ql": "x.ql", "description": "delete a user"}"#);
    write(&sc.join("file_context.py"), "import sqlite3\n\n");
    write(&sc.join("func_context.py"), "def delete(db, email):\n");
}

#[test]
fn fuzz_scenario_info_json() {
    let d = tempfile::tempdir().unwrap();
    benchmark(d.path());
    let info = d.path().join("sec_eval/base/cwe-089/0-py/info.json");
    let seed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
    let load = |text: &[u8]| -> anyhow::Result<()> {
        std::fs::write(&info, text)?;
        for sc in discover(d.path(), &[])? {
            let _ = (sc.prompt(), &sc.cwe, &sc.id);
        }
        Ok(())
    };
    let s = fuzz("info.json", 800, 0x1_4f0, json_mutated(seed.clone()), "info.json", |t| load(t.as_bytes()));
    assert!(s.accepted > 0 && s.rejected > 0, "{s:?}");
    let bytes = serde_json::to_vec(&seed).unwrap();
    fuzz("info.json-bytes", 400, 0x1_4f1, mutated(bytes, vec![]), "info.json", |b| load(b));
}

/// A complete run folder for one method over the benchmark's scenario, 3 samples.
fn run_folder(mdir: &Path) -> (String, String, String, String) {
    let config = serde_json::json!({"model": "tiny", "method": {"name": "base"}, "sampling": {"n": 3}, "stop_at_function_end": true}).to_string();
    let mut samples = String::new();
    let mut tests = String::new();
    let mut judged = String::new();
    for idx in 0..3 {
        let s = SampleRec { scenario: "base/cwe-089/0-py".into(), idx, completion: "    db.execute('DELETE FROM u WHERE e = ?', (email,))\n".into(), cut: Cut { code: "    db.execute('DELETE FROM u WHERE e = ?', (email,))\n".into(), complete: true }, finish_reason: "eos".into(), tokens: 12, candidate: None, score: None, cost: None, distinct: None, repair: None };
        samples += &(serde_json::to_string(&s).unwrap() + "\n");
        let t = TestRec { scenario: s.scenario.clone(), idx, parsed: true, functional: idx != 1, verdict: "pass".into(), log: "[Exit(0) after 0.1s]\nok".into() };
        tests += &(serde_json::to_string(&t).unwrap() + "\n");
        let f = Finding { tool: "bandit".into(), rule: "B608".into(), cwe: "CWE-089".into(), line: 3, message: "sql".into(), counts: idx == 2 };
        let j = JudgeRec { scenario: s.scenario.clone(), idx, secure: idx != 2, findings: vec![f], exploit: None };
        judged += &(serde_json::to_string(&j).unwrap() + "\n");
    }
    write(&mdir.join("config.json"), &config);
    write(&mdir.join("samples.jsonl"), &samples);
    write(&mdir.join("tests.jsonl"), &tests);
    write(&mdir.join(report::judge_file("bandit")), &judged);
    (config, samples, tests, judged)
}

#[test]
fn fuzz_eval_run_stores() {
    let d = tempfile::tempdir().unwrap();
    let bench = d.path().join("bench");
    benchmark(&bench);
    let scenarios = discover(&bench, &[]).unwrap();
    let out = d.path().join("run");
    let mdir = out.join("base");
    let seeds = run_folder(&mdir);
    // What `eval` does with a run folder: load each store (resume), then report.
    let resume_and_report = || -> anyhow::Result<()> {
        load_samples(&Jsonl::new(mdir.join("samples.jsonl")))?;
        Jsonl::new(mdir.join("tests.jsonl")).load::<TestRec>()?;
        Jsonl::new(mdir.join(report::judge_file("bandit"))).load::<JudgeRec>()?;
        let run = report::load_method(&mdir, &scenarios, "bandit")?;
        report::write_all(&out, &[run], &[]).map_err(|e| e.context("report"))
    };
    let files = [("config.json", &seeds.0), ("samples.jsonl", &seeds.1), ("tests.jsonl", &seeds.2), ("judge-bandit.jsonl", &seeds.3)];
    let mut total = 0;
    for (name, seed) in files {
        let p = mdir.join(name);
        // One record edited structure-aware (a line of a store, or the whole config).
        let lines: Vec<&str> = seed.lines().collect();
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let rest = lines[1..].join("\n");
        let s = fuzz(&format!("{name}-records"), 500, 0x5_70e, json_mutated(first), name, |rec| {
            std::fs::write(&p, if rest.is_empty() { format!("{rec}\n") } else { format!("{rec}\n{rest}\n") })?;
            resume_and_report()
        });
        total += s.cases;
        // The file's bytes mutated (truncations are what a killed run leaves).
        let s = fuzz(&format!("{name}-bytes"), 300, 0x5_70f, mutated(seed.as_bytes().to_vec(), vec![]), name, |b| {
            std::fs::write(&p, b)?;
            resume_and_report()
        });
        total += s.cases;
        std::fs::write(&p, seed).unwrap();
    }
    resume_and_report().unwrap();
    println!("fuzz eval-run-stores: {total} cases in all");
}
