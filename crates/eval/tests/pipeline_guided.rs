//! The evaluation pipeline as a library, with a guided method from deepguard-methods (a steering
//! vector), on a tiny random model and two real dev scenarios: every stage runs, the run folder
//! holds one store per stage, the steered samples differ from the base ones, a second run resumes
//! without generating again, and the report covers both methods.

use deepguard_eval::pipeline::{self, EvalConfig, Stage};
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
    let steer = Guided::new(Some((format!("{}:cwe-089", vecs.display()), 8.0)), None, false);
    let load = || Model::load(&gguf, &candle_core::Device::Cpu);
    for m in [&Base as &dyn Method, &steer] {
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
