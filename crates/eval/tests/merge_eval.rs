//! Merging the shards of a sharded `eval` (the report covers every method folder), as a library,
//! on stores written by hand (no model, no tools): the merged run folder holds every shard's
//! records and its reports are byte-identical to those of one folder holding the same records;
//! merging again is a no-op; a merged folder holding a record the shards do not is refused.

use deepguard_eval::cut::Cut;
use deepguard_eval::functional::TestRec;
use deepguard_eval::gen::SampleRec;
use deepguard_eval::judge::JudgeRec;
use deepguard_eval::merge::{merge, shard_folders};
use deepguard_eval::pipeline::report_folder;
use deepguard_eval::report::judge_file;
use deepguard_eval::scenario::{discover, Scenario};
use deepguard_eval::shard::{select, Command, Manifest, Shard};
use deepguard_eval::store::Jsonl;
use deepguard_runtime::generate::SamplingParams;
use std::path::Path;

fn benchmark(root: &Path) {
    for (cwe, i) in [("089", 0), ("089", 1), ("078", 0), ("022", 0), ("022", 1)] {
        let d = root.join(format!("sec_eval/base/cwe-{cwe}/{i}-py"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("info.json"), format!("{{\"language\": \"py\", \"cwe\": \"CWE-{cwe}\"}}")).unwrap();
        std::fs::write(d.join("file_context.py"), "import os\n").unwrap();
        std::fs::write(d.join("func_context.py"), format!("def f{i}():\n")).unwrap();
    }
}

/// One method's records for `scenarios`, appended to the stores of `mdir`; outcomes vary with
/// the scenario, sample and method.
fn write_method(mdir: &Path, method: &str, scenarios: &[Scenario], params: &SamplingParams) {
    std::fs::create_dir_all(mdir).unwrap();
    let config = serde_json::json!({"model": "m", "method": {"method": method}, "sampling": params, "stop_at_function_end": true});
    std::fs::write(mdir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    for sc in scenarios {
        // Outcomes depend on the scenario itself, not on its place in a shard.
        let k: usize = sc.id.bytes().map(usize::from).sum();
        for idx in 0..params.n {
            let code = format!("    return {k}{idx}\n");
            let s = SampleRec { scenario: sc.id.clone(), idx, completion: code.clone(), cut: Cut { code, complete: true }, finish_reason: "eos".into(), tokens: 3, candidate: None, score: None, cost: None, distinct: None, repair: None };
            Jsonl::new(mdir.join("samples.jsonl")).append(&s).unwrap();
            let functional = (k + idx + method.len()) % 2 == 0;
            Jsonl::new(mdir.join("tests.jsonl")).append(&TestRec { scenario: sc.id.clone(), idx, parsed: true, functional, verdict: "pass".into(), log: "ok".into() }).unwrap();
            Jsonl::new(mdir.join(judge_file("bandit"))).append(&JudgeRec { scenario: sc.id.clone(), idx, secure: (k * 3 + idx) % 4 != 0, findings: vec![], exploit: None }).unwrap();
        }
    }
}

#[test]
fn merged_eval_shards_report_like_one_folder() {
    let t = tempfile::tempdir().unwrap();
    let bench = t.path().join("bench");
    benchmark(&bench);
    let all = discover(&bench, &[]).unwrap();
    let params = SamplingParams { n: 2, ..Default::default() };
    let methods = ["base", "other"];
    // The unsharded folder.
    let whole = t.path().join("whole");
    for m in methods {
        write_method(&whole.join(m), m, &all, &params);
    }
    let want = report_folder(&whole, &all, &[], "bandit").unwrap();
    assert_eq!(want.len(), 2);
    // Two shards, as `eval --shard I/2` writes them (manifest + method folders).
    let run = t.path().join("run");
    for i in 1..=2 {
        let shard = Shard { index: i, count: 2 };
        let own = select(&bench, &all, shard).unwrap();
        assert!(!own.is_empty() && own.len() < all.len());
        let dir = run.join(shard.folder());
        Manifest { shard, command: Command::Eval, judge: "bandit".into(), sampling: params.clone(), skipped: vec![], scenarios: all.clone(), own: own.iter().map(|s| s.id.clone()).collect() }.write(&dir).unwrap();
        for m in methods {
            write_method(&dir.join(m), m, &own, &params);
        }
    }
    let shards = shard_folders(std::slice::from_ref(&run)).unwrap();
    assert_eq!(shards.len(), 2);
    let merged = merge(&shards, &run).unwrap();
    assert_eq!(merged.methods, ["base", "other"]);
    assert!(merged.compare.is_none());
    for f in ["report.md", "report.json", "report.html"] {
        assert!(std::fs::read(whole.join(f)).unwrap() == std::fs::read(run.join(f)).unwrap(), "{f} differs");
    }
    for m in methods {
        for f in ["samples.jsonl", "tests.jsonl", "judge-bandit.jsonl"] {
            let sorted = |d: &Path| {
                let mut l: Vec<String> = std::fs::read_to_string(d.join(m).join(f)).unwrap().lines().map(String::from).collect();
                l.sort();
                l
            };
            assert_eq!(sorted(&whole), sorted(&run), "{m}/{f}");
        }
    }
    // Again: nothing changes.
    let md = std::fs::read(run.join("report.md")).unwrap();
    merge(&shards, &run).unwrap();
    assert_eq!(std::fs::read(run.join("report.md")).unwrap(), md);
    // A merged folder holding another run's record is never overwritten.
    let extra = r#"{"scenario":"base/cwe-999/0-py","idx":0,"parsed":true,"functional":true,"verdict":"pass","log":""}"#;
    let tests = run.join("base/tests.jsonl");
    std::fs::write(&tests, format!("{}{extra}\n", std::fs::read_to_string(&tests).unwrap())).unwrap();
    let e = format!("{:#}", merge(&shards, &run).err().expect("refused"));
    assert!(e.contains("base/tests.jsonl") && e.contains("cwe-999"), "{e}");
}
