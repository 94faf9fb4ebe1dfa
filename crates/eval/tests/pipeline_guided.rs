//! The evaluation pipeline as a library, with a guided method from deepguard-methods (a steering
//! vector), on a tiny random model and two real dev scenarios: every stage runs, the run folder
//! holds one store per stage, the steered samples differ from the base ones, a second run resumes
//! without generating again, and the report covers both methods.

use deepguard_eval::pipeline::{self, EvalConfig, Stage};
use deepguard_eval::rerank::Candidates;
use deepguard_eval::scenario::discover;
use deepguard_methods::data::Cwe;
use deepguard_methods::guided::Guided;
use deepguard_methods::steer::SteerVector;
use deepguard_runtime::generate::{Base, Method, SamplingParams};
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn pipeline_evaluates_base_and_a_steering_method() {
    let t = tempfile::tempdir().unwrap();
    let gguf = t.path().join("tiny.gguf");
    TinySpec { context: 2048, ..TinySpec::qwen2() }.write_gguf(&gguf).unwrap();
    let model = Model::load(&gguf, &candle_core::Device::Cpu).unwrap();
    let (hidden, layers) = (model.cfg().hidden_size, model.cfg().n_layers);
    // A strong steering vector for CWE-089 at block 1.
    let v = SteerVector {
        cwe: Some(Cwe(89)),
        layer: 1,
        direction: (0..hidden).map(|i| if i % 2 == 0 { 3.0 } else { -3.0 }).collect(),
        model_arch: format!("{:?}", model.cfg().arch).to_lowercase(),
        model_fingerprint: model.info.fingerprint.clone(),
        n_layers: layers,
        hidden,
        n_pairs: 1,
        position: "test".into(),
        probe: None,
        centroid: vec![],
    };
    let vecs = t.path().join("vec");
    std::fs::create_dir_all(&vecs).unwrap();
    v.save(&vecs.join("cwe-089.gguf")).unwrap();

    let data = std::fs::canonicalize(repo().join("../shared/data/eval")).expect("../shared/data/eval");
    let venv = std::fs::canonicalize(repo().join(".venv/bin")).expect("run scripts/setup.sh first (creates .venv)");
    let cfg = EvalConfig {
        scenarios: discover(&data, &["base/cwe-089/0-py".into(), "base/cwe-078/0-py".into()]).unwrap(),
        data,
        skipped: vec![],
        out: t.path().join("run"),
        model: gguf.display().to_string(),
        params: SamplingParams { temperature: 0.0, top_p: 1.0, seed: 1, max_tokens: 12, stop: vec![], n: 2 },
        stop_at_function_end: true,
        until: Stage::Report,
        generate: true,
        jobs: 2,
        venv_bin: venv,
        judge: "semgrep,exploit".into(),
        asan: false,
        security_tests: None,
        codeql_repo: None,
        rules: deepguard_eval::judge::tools::semgrep_rules().unwrap(),
    };
    let steer = Guided::new(format!("steer:{}:cwe-089@8", vecs.display()).parse().unwrap(), false);
    let load = || Model::load(&gguf, &candle_core::Device::Cpu);
    for m in [&Base as &dyn Candidates, &steer] {
        pipeline::run(&cfg, m, &load).unwrap();
        let dir = cfg.method_dir(m);
        for f in ["config.json", "samples.jsonl", "tests.jsonl", "judge-semgrep+exploit.jsonl"] {
            assert!(dir.join(f).exists(), "{}: {f} missing", m.name());
        }
    }
    let samples = |m: &dyn Method| std::fs::read_to_string(cfg.method_dir(m).join("samples.jsonl")).unwrap();
    let (base, steered) = (samples(&Base), samples(&steer));
    assert_eq!(base.lines().count(), 4);
    assert_ne!(base, steered, "the steering vector changes the completions");
    // Resuming generates nothing (the model loader is not even called).
    pipeline::run(&cfg, &steer, &|| panic!("nothing left to generate")).unwrap();
    assert_eq!(samples(&steer), steered);
    let runs = pipeline::report_stage(&cfg).unwrap();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!((r.complete, r.total), (2, 2), "{}", r.method);
        assert_eq!(r.exploit_table.scenarios.len(), 2, "both scenarios judged by their security tests");
    }
    assert!(cfg.out.join("report.md").exists() && cfg.out.join("report.html").exists());
}

/// A rerank through the pipeline: n * k candidates are generated and stored, n samples are
/// kept, each the copy of a candidate of its own group, and a second run resumes without the model.
#[test]
fn pipeline_reranks_candidates_and_keeps_one_per_group() {
    use deepguard_eval::gen::SampleRec;
    use deepguard_eval::rerank::Rerank;
    let t = tempfile::tempdir().unwrap();
    let gguf = t.path().join("tiny.gguf");
    TinySpec { context: 2048, ..TinySpec::llama() }.write_gguf(&gguf).unwrap();
    let data = std::fs::canonicalize(repo().join("../shared/data/eval")).expect("../shared/data/eval");
    let venv = std::fs::canonicalize(repo().join(".venv/bin")).expect("run scripts/setup.sh first (creates .venv)");
    let (n, k) = (2, 3);
    let cfg = EvalConfig {
        scenarios: discover(&data, &["base/cwe-089/0-py".into()]).unwrap(),
        data,
        skipped: vec![],
        out: t.path().join("run"),
        model: gguf.display().to_string(),
        params: SamplingParams { temperature: 1.0, top_p: 1.0, seed: 3, max_tokens: 10, stop: vec![], n },
        stop_at_function_end: true,
        until: Stage::Generate,
        generate: true,
        jobs: 1,
        venv_bin: venv,
        judge: "semgrep".into(),
        asan: false,
        security_tests: None,
        codeql_repo: None,
        rules: deepguard_eval::judge::tools::semgrep_rules().unwrap(),
    };
    let m = Rerank { inner: Box::new(Base), k, by: deepguard_eval::rerank::Scorer::Static, temperature: None };
    assert_eq!(m.name(), "base-rerank3");
    let load = || Model::load(&gguf, &candle_core::Device::Cpu);
    pipeline::run(&cfg, &m, &load).unwrap();
    let read = |f: &str| -> Vec<SampleRec> { std::fs::read_to_string(cfg.method_dir(&m).join(f)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let (cands, kept) = (read("candidates.jsonl"), read("samples.jsonl"));
    assert_eq!(cands.len(), n * k);
    assert_eq!(kept.len(), n);
    let distinct: std::collections::HashSet<_> = cands.iter().map(|c| c.completion.clone()).collect();
    assert!(distinct.len() > 1, "candidates at T = 1 differ");
    for (i, s) in kept.iter().enumerate() {
        assert_eq!(s.idx, i);
        let j = s.candidate.expect("a kept sample names its candidate");
        assert_eq!(j % n, i, "candidate {j} is not in group {i}");
        assert_eq!(s.completion, cands.iter().find(|c| c.idx == j).unwrap().completion);
    }
    // The first candidate of group i used the seed of sample i of the method alone.
    let base_cfg = EvalConfig { out: t.path().join("base"), ..cfg.clone() };
    pipeline::run(&base_cfg, &Base, &load).unwrap();
    let base: Vec<SampleRec> = std::fs::read_to_string(base_cfg.method_dir(&Base).join("samples.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for b in &base {
        assert_eq!(b.completion, cands.iter().find(|c| c.idx == b.idx).unwrap().completion, "candidate {} differs from base sample {}", b.idx, b.idx);
    }
    pipeline::run(&cfg, &m, &|| panic!("nothing left to generate")).unwrap();
    assert_eq!(read("samples.jsonl").len(), n);
}
