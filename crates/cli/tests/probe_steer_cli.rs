//! `deepguard probe`, `steer build` and `generate --steer` end to end on a tiny model and a few
//! real SVEN pairs; `steer build --contrast instruction` (the paper's vectors) too: the paper's
//! layer by default, `--layer best` from a probe on the same activations, and `generate --steer`
//! loading the files.

use deepguard_runtime::testing::TinySpec;
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deepguard")).args(args).current_dir(cwd).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// A work folder holding a tiny Llama model, its path, and the SVEN val pairs' path.
fn setup() -> (tempfile::TempDir, String, String) {
    let sven = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sven/val");
    assert!(sven.exists(), "SVEN data not found at {}", sven.display());
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("tiny.gguf");
    TinySpec { context: 512, ..TinySpec::llama() }.write_gguf(&m).unwrap();
    let (m, sven) = (m.to_str().unwrap().to_string(), sven.to_str().unwrap().to_string());
    (d, m, sven)
}

#[test]
fn probe_then_build_then_steered_generation() {
    let (d, m, sven) = setup();
    let (m, sven) = (m.as_str(), sven.as_str());
    let data = ["--data", sven, "--window", "24", "--max-pairs-per-cwe", "2", "--cache", "cache"];
    let args = |extra: &[&'static str]| -> Vec<String> { data.iter().chain(extra).map(|s| s.to_string()).collect() };

    let mut a = vec!["probe".to_string(), "-m".into(), m.into(), "--out".into(), "probe".into(), "--folds".into(), "3".into(), "--min-pairs-per-cwe".into(), "2".into()];
    a.extend(args(&[]));
    let md = ok(&run(&a.iter().map(String::as_str).collect::<Vec<_>>(), d.path()));
    assert!(md.contains("| layer | accuracy | AUC |") && md.contains("Length baselines") && md.contains("CWE-89"), "{md}");
    for f in ["probe.json", "probe.md", "probe.svg"] {
        assert!(d.path().join("probe").join(f).exists(), "{f}");
    }
    let svg = std::fs::read_to_string(d.path().join("probe/probe.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.trim_end().ends_with("</svg>"));
    let js: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("probe/probe.json")).unwrap()).unwrap();
    assert_eq!(js["n_pairs"], 18);
    assert_eq!(js["poolings"][0]["groups"][0]["layers"].as_array().unwrap().len(), 3);

    // vectors: layer from the probe (reads the activation cache)
    let mut b = vec!["steer".to_string(), "build".into(), "-m".into(), m.into(), "--probe".into(), "probe/probe.json".into(), "--out".into(), "vec".into()];
    b.extend(args(&[]));
    let out = ok(&run(&b.iter().map(String::as_str).collect::<Vec<_>>(), d.path()));
    assert_eq!(out.lines().count(), 10, "all + 9 CWEs: {out}");
    assert!(d.path().join("vec/cwe-089.gguf").exists() && d.path().join("vec/all.gguf").exists());

    // steered generation differs from the unsteered one
    let g = ok(&run(&["generate", "-m", m, "-p", "def get_user(db, name):\n    cur = db.cursor()\n", "--max-tokens", "8", "--steer", "vec:cwe-089", "--alpha", "20", "--compare", "--json"], d.path()));
    let v: serde_json::Value = serde_json::from_str(&g).unwrap();
    assert_eq!(v["samples_that_differ"], 1, "{g}");
    assert_ne!(v["guided"]["samples"][0]["tokens"], v["plain"]["samples"][0]["tokens"]);
    let auto = run(&["generate", "-m", m, "-p", "def f(x):\n", "--max-tokens", "2", "--steer", "vec:auto"], d.path());
    assert!(ok(&auto).starts_with("def f(x):\n"));
    assert!(String::from_utf8_lossy(&auto.stderr).contains("probe-then-steer: nearest CWE"));

    // another model is refused with one clear line
    let other = d.path().join("other.gguf");
    TinySpec { context: 1024, ..TinySpec::llama() }.write_gguf(&other).unwrap();
    let o = run(&["generate", "-m", other.to_str().unwrap(), "-p", "x", "--steer", "vec:cwe-089"], d.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    let last = err.trim().lines().last().unwrap();
    assert!(last.starts_with("error:") && last.contains("cwe-089.gguf") && last.contains("fingerprint"), "{err}");
}

#[test]
fn instruction_vectors_build_at_the_papers_layer_or_the_probes_best_and_steer() {
    let (d, m, sven) = setup();
    let (m, sven) = (m.as_str(), sven.as_str());
    let build = |extra: &[&str]| {
        let mut a = vec!["steer", "build", "-m", m, "--pairs", sven, "--window", "32", "--max-pairs-per-cwe", "3", "--contrast", "instruction"];
        a.extend_from_slice(extra);
        run(&a, d.path())
    };
    let o = build(&["--out", "paper"]);
    let out = ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("steering block 2 (the paper's layer: the last of the model's 3 blocks)"));
    assert_eq!(out.lines().count(), 10, "all + 9 CWEs: {out}");
    assert!(out.lines().all(|l| l.contains("layer 2")), "{out}");
    let js: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("paper/vectors.json")).unwrap()).unwrap();
    assert!(js[0]["vector"]["position"].as_str().unwrap().contains("secure minus insecure instruction"), "{js}");

    let o = build(&["--out", "best", "--layer", "best"]);
    ok(&o);
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(log.contains("chosen by a probe on these activations"), "{log}");
    assert!(d.path().join("best/cwe-089.gguf").exists());
    let bad = build(&["--out", "x", "--layer", "top"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not a block number, `last` or `best`"));

    // `--steer` loads them: one CWE's vector changes greedy decoding at a large alpha; auto routes
    let g = ok(&run(&["generate", "-m", m, "-p", "def get_user(db, name):\n    cur = db.cursor()\n", "--max-tokens", "8", "--steer", "paper:cwe-089", "--alpha", "40", "--compare", "--json"], d.path()));
    let v: serde_json::Value = serde_json::from_str(&g).unwrap();
    assert_eq!(v["samples_that_differ"], 1, "{g}");
    let auto = run(&["generate", "-m", m, "-p", "def f(x):\n", "--max-tokens", "2", "--steer", "paper:auto"], d.path());
    ok(&auto);
    assert!(String::from_utf8_lossy(&auto.stderr).contains("probe-then-steer: nearest CWE"));
}
