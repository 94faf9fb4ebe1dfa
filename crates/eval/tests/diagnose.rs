//! `compare`'s diagnostics: every method is asked what it would do to each benchmark prompt; the
//! plain model reports nothing, probe-then-steer reports where it routed every prompt.

use candle_core::Device;
use deepguard_eval::diagnose::diagnose;
use deepguard_eval::scenario::discover_all;
use deepguard_methods::data::{Cwe, Pair};
use deepguard_methods::guided::Guided;
use deepguard_methods::steer;
use deepguard_methods::steer_instruct::{self, Instructions};
use deepguard_runtime::generate::{Base, Method};
use deepguard_runtime::testing::TinySpec;
use deepguard_runtime::Model;
use std::path::PathBuf;

#[test]
fn probe_then_steer_reports_the_routing_of_every_benchmark_prompt() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval");
    assert!(data.exists(), "benchmark not found at {}", data.display());
    let (scenarios, _) = discover_all(&data, &["cwe-0".to_string()]).unwrap();
    assert!(scenarios.len() >= 5, "{} scenarios", scenarios.len());
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("m.gguf");
    TinySpec { context: 2048, ..TinySpec::qwen2() }.write_gguf(&mp).unwrap();
    let m = Model::load(&mp, &Device::Cpu).unwrap();
    let pair = |c: u32, lang: &str, v: &str, f: &str| Pair { source: format!("t:{c}"), language: lang.into(), cwe: Cwe(c), vulnerable: v.into(), fixed: f.into(), vulnerable_spans: vec![], fixed_spans: vec![], description: None };
    let pairs = vec![
        pair(89, "python", "def g(db, n):\n    db.run('x' + n)\n", "def g(db, n):\n    db.run('?', n)\n"),
        pair(89, "python", "def h(c, n):\n    c.q(n)\n", "def h(c, n):\n    c.q(e(n))\n"),
        pair(79, "python", "def p(r):\n    return r.args['x']\n", "def p(r):\n    return esc(r.args['x'])\n"),
        pair(79, "python", "def s(r):\n    w(r)\n", "def s(r):\n    w(esc(r))\n"),
    ];
    let acts = steer_instruct::collect(&m, &pairs, &Instructions::default(), 32, |_| {}).unwrap();
    let dir = d.path().join("vec");
    std::fs::create_dir_all(&dir).unwrap();
    for v in steer_instruct::build(&m, &acts, 2, 32, 0.1).unwrap() {
        v.save(&dir.join(steer::file_name(v.cwe))).unwrap();
    }
    let steered = Guided::new(format!("steer:{}:auto@2", dir.display()).parse().unwrap(), false);
    let methods: Vec<&dyn Method> = vec![&Base, &steered];
    let out = diagnose(&scenarios, &methods, &|| Model::load(&mp, &Device::Cpu)).unwrap();
    assert_eq!(out.len(), 1, "the plain model has nothing to report");
    let (name, dg) = &out[0];
    assert_eq!(name, &steered.name());
    let r = &dg.json["routing"];
    assert_eq!(r["prompts"], scenarios.len());
    assert_eq!(r["steered"].as_u64().unwrap() + r["left_alone"].as_u64().unwrap(), scenarios.len() as u64);
    let routed: u64 = r["by_cwe"].as_object().unwrap().values().map(|x| x[0].as_u64().unwrap()).sum();
    assert_eq!(routed, scenarios.len() as u64, "every prompt has a nearest CWE: {r}");
    let own = scenarios.iter().filter(|s| s.cwe == "CWE-089" || s.cwe == "CWE-079").count();
    assert_eq!(r["own_cwe_has_vector"], own);
    assert!(dg.text.contains(&format!("probe-then-steer over {} prompts", scenarios.len())), "{}", dg.text);
}
