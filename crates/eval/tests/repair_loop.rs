//! The check-repair-choose loop in the pipeline, on a tiny random model and a real dev scenario:
//! a draft the static tools flag (a shell command built from request input) is regenerated with
//! its findings; a clean draft is kept as it is; the trace and the whole cost are stored; a
//! second run resumes without generating; and a rerank at its own temperature keeps the method's
//! own sample as the first of each group.

use deepguard_eval::cut::Cut;
use deepguard_eval::gen::SampleRec;
use deepguard_eval::pipeline::{self, EvalConfig, Stage};
use deepguard_eval::repair::Repair;
use deepguard_eval::rerank::{Candidates, Rerank, Scorer};
use deepguard_eval::scenario::discover;
use deepguard_methods::spec::RepairSpec;
use deepguard_runtime::generate::{Base, Method, SamplingParams};
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config(t: &std::path::Path, gguf: &std::path::Path, ids: &[&str], params: SamplingParams) -> EvalConfig {
    let data = std::fs::canonicalize(repo().join("../shared/data/eval")).expect("../shared/data/eval");
    let venv = std::fs::canonicalize(repo().join(".venv/bin")).expect("run scripts/setup.sh first (creates .venv)");
    EvalConfig {
        scenarios: discover(&data, &ids.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
        data,
        skipped: vec![],
        out: t.join("run"),
        model: gguf.display().to_string(),
        params,
        stop_at_function_end: true,
        until: Stage::Generate,
        generate: true,
        jobs: 1,
        venv_bin: venv,
        judge: "bandit".into(),
        asan: false,
        security_tests: None,
        codeql_repo: None,
        rules: deepguard_eval::judge::tools::semgrep_rules().unwrap(),
    }
}

fn read(path: &std::path::Path) -> Vec<SampleRec> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn tiny(t: &std::path::Path) -> PathBuf {
    let gguf = t.join("tiny.gguf");
    TinySpec { context: 2048, ..TinySpec::qwen2() }.write_gguf(&gguf).unwrap();
    gguf
}

#[test]
fn a_flagged_draft_is_regenerated_with_its_findings_and_a_clean_one_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let gguf = tiny(t.path());
    let params = SamplingParams { temperature: 0.0, top_p: 1.0, seed: 5, max_tokens: 12, stop: vec![], n: 2 };
    let cfg = config(t.path(), &gguf, &["base/cwe-078/0-py"], params);
    let m = Repair { inner: Box::new(Base), spec: RepairSpec { rounds: 2, temperature: Some(0.7) } };
    assert_eq!(m.name(), "base-repair2-t0.7");
    assert_eq!(m.repair(), Some(RepairSpec { rounds: 2, temperature: Some(0.7) }));
    // The drafts, as if the method had generated them: 0 runs a shell command built from the
    // request (bandit: B605, CWE-78), 1 lists the folder without a shell.
    let mdir = cfg.method_dir(&m);
    std::fs::create_dir_all(&mdir).unwrap();
    let draft = |idx: usize, code: &str| SampleRec {
        scenario: "base/cwe-078/0-py".into(),
        idx,
        completion: code.into(),
        cut: Cut { code: code.into(), complete: true },
        finish_reason: "eos".into(),
        tokens: 20,
        candidate: None,
        score: None,
        cost: Some(deepguard_eval::gen::Cost { tokens: 20, secs: 0.5 }),
        distinct: None,
        repair: None,
    };
    let bad = "\n    os.system(\"ls \" + dirname)\n    return 'ok'\n";
    let good = "\n    subprocess.run([\"ls\", \"--\", dirname], check=False)\n    return 'listed'\n";
    let drafts: String = [draft(0, bad), draft(1, good)].iter().map(|d| serde_json::to_string(d).unwrap() + "\n").collect();
    std::fs::write(mdir.join("drafts.jsonl"), drafts).unwrap();

    let load = || Model::load(&gguf, &candle_core::Device::Cpu);
    pipeline::run(&cfg, &m, &load).unwrap();
    let kept = read(&mdir.join("samples.jsonl"));
    assert_eq!(kept.len(), 2);
    let s0 = kept.iter().find(|s| s.idx == 0).unwrap();
    let tr = s0.repair.as_ref().expect("a repaired sample keeps its trace");
    assert!(tr.versions.len() >= 2, "the flagged draft was generated again: {tr:?}");
    assert_eq!(tr.versions[0].code, bad);
    assert!(tr.versions[0].flags.iter().any(|f| f.tool == "bandit" && f.cwe == "CWE-078"), "{:?}", tr.versions[0].flags);
    // What is kept is the version the loop chose, and the cost covers the draft and every round.
    assert_eq!(s0.cut.code, tr.versions[tr.kept].code);
    let round_tokens: usize = tr.versions[1..].iter().map(|v| v.tokens).sum();
    assert_eq!(s0.cost.unwrap().tokens, 20 + round_tokens);
    assert!(s0.cost.unwrap().secs > 0.5);
    // The clean draft was checked once and kept as it was, at the draft's cost.
    let s1 = kept.iter().find(|s| s.idx == 1).unwrap();
    let tr1 = s1.repair.as_ref().unwrap();
    assert_eq!((tr1.versions.len(), tr1.kept), (1, 0), "{tr1:?}");
    assert!(tr1.versions[0].flags.is_empty());
    assert_eq!(s1.cut.code, good);
    assert_eq!(s1.cost.unwrap().tokens, 20);
    // Resumes: nothing is generated again.
    pipeline::run(&cfg, &m, &|| panic!("nothing left to generate")).unwrap();
    assert_eq!(read(&mdir.join("samples.jsonl")).len(), 2);
}

#[test]
fn a_rerank_at_its_own_temperature_keeps_the_methods_sample_first_in_each_group() {
    let t = tempfile::tempdir().unwrap();
    let gguf = tiny(t.path());
    let (n, k) = (2, 3);
    // Greedy samples; candidates 2..k at T = 1.
    let params = SamplingParams { temperature: 0.0, top_p: 1.0, seed: 9, max_tokens: 10, stop: vec![], n };
    let cfg = config(t.path(), &gguf, &["base/cwe-089/0-py"], params);
    let m = Rerank { inner: Box::new(Base), k, by: Scorer::Static, temperature: Some(1.0) };
    assert_eq!(m.name(), "base-rerank3-t1");
    let load = || Model::load(&gguf, &candle_core::Device::Cpu);
    pipeline::run(&cfg, &m, &load).unwrap();
    let cands = read(&cfg.method_dir(&m).join("candidates.jsonl"));
    assert_eq!(cands.len(), n * k);
    let base_cfg = EvalConfig { out: t.path().join("base"), ..cfg.clone() };
    pipeline::run(&base_cfg, &Base, &load).unwrap();
    let base = read(&base_cfg.method_dir(&Base).join("samples.jsonl"));
    for b in &base {
        assert_eq!(b.completion, cands.iter().find(|c| c.idx == b.idx).unwrap().completion, "candidate {} is the greedy sample", b.idx);
    }
    // Greedy decoding gives both first candidates the same text; the hot ones differ from it.
    let hot: std::collections::HashSet<&str> = cands.iter().filter(|c| c.idx >= n).map(|c| c.completion.as_str()).collect();
    assert!(hot.iter().any(|h| *h != base[0].completion), "candidates at T = 1 differ from the greedy one");
    let kept = read(&cfg.method_dir(&m).join("samples.jsonl"));
    for s in &kept {
        let d = s.distinct.expect("a kept sample says how many distinct programs its group had");
        assert!((1..=k).contains(&d));
        let group: usize = cands.iter().filter(|c| c.idx % n == s.idx).map(|c| c.tokens).sum();
        assert_eq!(s.cost.unwrap().tokens, group, "a kept sample costs its whole group");
    }
}

#[test]
fn the_build_check_flags_undefined_names_and_syntax_errors_and_passes_clean_code() {
    use deepguard_eval::judge::Item;
    let data = std::fs::canonicalize(repo().join("../shared/data/eval")).unwrap();
    let venv = std::fs::canonicalize(repo().join(".venv/bin")).expect("run scripts/setup.sh first (creates .venv)");
    let py = &discover(&data, &["base/cwe-079/0-py".into()]).unwrap()[0];
    let c = &discover(&data, &["base/cwe-476/0-c".into()]).unwrap()[0];
    let item = |sc, code: &str| Item { scenario: sc, idx: 0, program: format!("{}{code}", sc.prompt()) };
    let items = [
        item(py, "\n    return f\"Hello, {html_escape(username)}!\"\n"),
        item(py, "\n    return (username\n"),
        item(py, "\n    return f\"Hello, {username}!\"\n"),
        item(c, "\n    if (p == NULL) return 1;\n    p->status = 0;\n    return 0;\n}\n"),
        item(c, "\n    p->status = 0\n}\n"),
    ];
    let found = deepguard_eval::builds::check(&venv, &items).unwrap();
    assert_eq!(found.len(), 5);
    assert!(found[0].iter().any(|f| f.tool == "pyflakes" && f.rule == "undefined-name" && f.message.contains("html_escape")), "{:?}", found[0]);
    assert!(found[1].iter().any(|f| f.rule == "syntax"), "{:?}", found[1]);
    assert!(found[2].is_empty(), "{:?}", found[2]);
    assert!(found[3].is_empty(), "{:?}", found[3]);
    assert!(found[4].iter().any(|f| f.tool == "gcc" && f.rule == "syntax"), "{:?}", found[4]);
}
