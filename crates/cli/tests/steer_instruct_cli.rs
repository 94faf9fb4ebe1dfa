//! `deepguard steer build --contrast instruction` (the paper's vectors) end to end on a tiny
//! model and a few real SVEN pairs: the paper's layer by default, `--layer best` from a probe on
//! the same activations, and `generate --steer` loading the files.

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

#[test]
fn instruction_vectors_build_at_the_papers_layer_or_the_probes_best_and_steer() {
    let sven = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sven/val");
    assert!(sven.exists(), "SVEN data not found at {}", sven.display());
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("tiny.gguf");
    TinySpec { context: 512, ..TinySpec::llama() }.write_gguf(&m).unwrap();
    let (m, sven) = (m.to_str().unwrap(), sven.to_str().unwrap());
    let build = |extra: &[&str]| {
        let mut a = vec!["steer", "build", "-m", m, "--data", sven, "--window", "32", "--max-pairs-per-cwe", "3", "--contrast", "instruction"];
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
