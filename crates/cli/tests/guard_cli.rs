//! `deepguard train`, `scan` and `generate --guard` end to end on a tiny model and a few real
//! SVEN pairs; bad input gets one clear error line and a non-zero exit.

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

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure; stdout: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn train_scan_and_guided_generation() {
    let sven = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sven/val");
    assert!(sven.exists(), "SVEN data not found at {}", sven.display());
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("tiny.gguf");
    TinySpec { context: 512, ..TinySpec::qwen2() }.write_gguf(&m).unwrap();
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval");
    let (m, sven, bench) = (m.to_str().unwrap(), sven.to_str().unwrap(), bench.to_str().unwrap());
    let train = ["train", "-m", m, "--pairs", sven, "--val", sven, "--data", bench, "--max-pairs-per-cwe", "1", "--window", "24", "--agg-layers", "3", "--epochs", "1", "--batch", "3", "--accum", "1", "--out", "g", "--cache", "cache"];
    let o = run(&train, d.path());
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{log}");
    assert!(log.contains("before training: val loss") && log.contains("epoch 1: val loss") && log.contains("length baseline"), "{log}");
    // diagnostics after training: whole and length-matched val functions, s̄_prompt's spread
    assert!(log.contains("diagnostics: the analyzer on whole val functions") && log.contains("| length-matched (whole-function token counts within 5% of the longer side) |"), "{log}");
    assert!(log.contains("diagnostics: s̄_prompt over 35 prompts: n 35 | min 0."), "{log}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("g/train_report.json")).unwrap()).unwrap();
    let dg = &report["diagnostics"];
    assert_eq!(dg["analyzer_whole_functions"]["all"]["pairs"], 9, "{dg}");
    assert_eq!(dg["prompt_scores"]["prompts"].as_array().unwrap().len(), 35);
    let sp = &dg["prompt_scores"]["spread"];
    assert!(sp["min"].as_f64().unwrap() <= sp["q1"].as_f64().unwrap() && sp["q3"].as_f64().unwrap() <= sp["max"].as_f64().unwrap() && sp["max"].as_f64().unwrap() < 1.0, "{sp}");
    for f in ["adapter_config.json", "adapter_model.safetensors", "guard.safetensors", "metrics.jsonl", "loss.svg", "train_report.json"] {
        assert!(d.path().join("g").join(f).exists(), "{f} missing");
    }
    // a second run into the same folder is refused; --resume of a finished run changes nothing
    assert!(err(&run(&train, d.path())).contains("--resume"));
    let artefacts = ["adapter_model.safetensors", "guard.safetensors", "metrics.jsonl", "checkpoint.json"];
    let before: Vec<Vec<u8>> = artefacts.iter().map(|f| std::fs::read(d.path().join("g").join(f)).unwrap()).collect();
    let mut resume = train.to_vec();
    resume.push("--resume");
    ok(&run(&resume, d.path()));
    for (f, b) in artefacts.iter().zip(&before) {
        assert_eq!(&std::fs::read(d.path().join("g").join(f)).unwrap(), b, "{f} changed when resuming a finished run");
    }

    // scan: a file, with HTML. Its token scores (--json) set the threshold between two of them,
    // about the median, so that some tokens fall below it and some do not; the risky lines
    // printed must then be exactly the lines holding a token below it, each with its lowest
    // score, and the HTML must shade exactly those tokens.
    let text = "import os\ndef run(cmd):\n    os.system(cmd)\n    return 0\n";
    std::fs::write(d.path().join("f.py"), text).unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(&run(&["scan", "f.py", "-g", "g", "-m", m, "--json"], d.path()))).unwrap();
    let toks: Vec<(usize, f32)> = j["tokens"].as_array().unwrap().iter().map(|t| (t["start"].as_u64().unwrap() as usize, t["score"].as_f64().unwrap() as f32)).collect();
    let mut sorted: Vec<f32> = toks.iter().map(|t| t.1).collect();
    sorted.sort_by(f32::total_cmp);
    let k = (sorted.len() / 2..sorted.len() - 1).find(|&k| sorted[k + 1] - sorted[k] > 1e-4).expect("token scores that differ");
    let th = (sorted[k] + sorted[k + 1]) / 2.0;
    let below: Vec<&(usize, f32)> = toks.iter().filter(|t| t.1 < th).collect();
    assert!(!below.is_empty() && below.len() < toks.len());
    let mut want = std::collections::BTreeMap::<usize, f32>::new();
    for (start, score) in &below {
        let line = text[..*start].matches('\n').count() + 1;
        let e = want.entry(line).or_insert(1.0);
        *e = e.min(*score);
    }
    let want: Vec<String> = want.iter().map(|(l, s)| format!("  line {l}: lowest token score {s:.3}")).collect();
    let s = ok(&run(&["scan", "f.py", "-g", "g", "-m", m, "--html", "f.html", "--threshold", &th.to_string()], d.path()));
    let got: Vec<&str> = s.lines().filter(|l| l.starts_with("  line ")).collect();
    assert_eq!(got, want, "threshold {th}: {s}");
    // The sequence score is the mean token score.
    let mean = toks.iter().map(|t| t.1 as f64).sum::<f64>() / toks.len() as f64;
    let printed: f64 = s.lines().find_map(|l| l.strip_prefix("f.py: sequence score ")).expect("score line").parse().unwrap();
    assert!((printed - mean).abs() < 1e-3, "printed {printed}, mean of the token scores {mean}");
    let html = std::fs::read_to_string(d.path().join("f.html")).unwrap();
    assert_eq!(html.matches("style=\"background:rgba(220,30,30,").count(), below.len(), "shaded tokens");
    assert_eq!(html.matches("<span class=\"t\" title=").count(), toks.len(), "every scored token has its score");
    // scan: pairs
    let p = ok(&run(&["scan", "--pairs", sven, "-g", "g", "-m", m, "--max-tokens", "64"], d.path()));
    assert!(p.contains("| all | 83 |") && p.contains("| length-matched ("), "{p}");
    // scan: the benchmark's prompts
    let sp = ok(&run(&["scan", "--prompts", "--data", bench, "-s", "cwe-089", "-g", "g", "-m", m], d.path()));
    assert!(sp.contains("base/cwe-089/0-py: s̄_prompt 0.") && sp.contains("s̄_prompt over 3 prompts"), "{sp}");

    // guided generation next to the plain model
    let g = ok(&run(&["generate", "-m", m, "-p", "def read(path):\n", "--max-tokens", "6", "--guard", "g", "--guard-strength", "50", "--bias-rule", "reference", "--compare", "--json"], d.path()));
    let v: serde_json::Value = serde_json::from_str(&g).unwrap();
    assert_eq!(v["guided"]["samples"].as_array().unwrap().len(), 1);
    // The guard's bias at strength 50 (the reference rule: T / max|T| / s_prompt) changes what
    // the greedy decoder writes.
    assert_eq!(v["samples_that_differ"], 1, "{g}");
    assert_ne!(v["guided"]["samples"][0]["tokens"], v["plain"]["samples"][0]["tokens"]);

    // bad input: another model, a missing guard, an unknown aggregator mode
    let other = d.path().join("other.gguf");
    TinySpec { context: 512, ..TinySpec::llama() }.write_gguf(&other).unwrap();
    let e = err(&run(&["generate", "-m", other.to_str().unwrap(), "-p", "x", "--guard", "g"], d.path()));
    assert!(e.contains("error: ") && e.contains("built for") && e.lines().filter(|l| l.starts_with("error")).count() == 1, "{e}");
    assert!(err(&run(&["scan", "f.py", "-g", "nowhere", "-m", m], d.path())).contains("guard folder"));
    assert!(err(&run(&["train", "-m", m, "--out", "x", "--aggregator", "max"], d.path())).contains("invalid value 'max'"));
}
