//! The `deepguard` binary end to end on a tiny model: output formats, exit codes, error messages.

use deepguard_runtime::testing::TinySpec;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deepguard"))
}

fn tiny(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.gguf");
    TinySpec::qwen2().write_gguf(&p).unwrap();
    p
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn generate_json_n_samples_and_greedy_determinism() {
    let d = tempfile::tempdir().unwrap();
    // the untied tiny llama: the tied tiny qwen2 mostly repeats its last token
    let m = d.path().join("llama.gguf");
    TinySpec::llama().write_gguf(&m).unwrap();
    let m = m.to_str().unwrap();
    let v = json(&run(&["generate", "-m", m, "-p", "def f(x):", "--n", "4", "--temperature", "0.9", "--max-tokens", "8", "--json"]));
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    assert!(v["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["params"]["n"], 4);
    let texts: std::collections::HashSet<_> = samples.iter().map(|s| s["tokens"].to_string()).collect();
    assert!(texts.len() >= 3, "samples should differ at temperature 0.9");
    let g1 = json(&run(&["generate", "-m", m, "-p", "def f(x):", "--max-tokens", "8", "--json"]));
    let g2 = json(&run(&["generate", "-m", m, "-p", "def f(x):", "--max-tokens", "8", "--json"]));
    assert_eq!(g1["samples"], g2["samples"]);
}

#[test]
fn completion_mode_streams_prompt_then_continuation() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let o = run(&["generate", "-m", m.to_str().unwrap(), "-p", "import os\n", "--max-tokens", "5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with("import os\n") && out.len() > "import os\n".len(), "{out:?}");
}

#[test]
fn scenario_generation_continues_its_prompt_and_ends_with_the_function() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval");
    let scen = data.join("sec_eval/base/cwe-089/0-py");
    assert!(scen.exists(), "benchmark data not found at {} (CI runs with ../shared beside the repo)", scen.display());
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("long.gguf");
    TinySpec { context: 2048, ..TinySpec::qwen2() }.write_gguf(&m).unwrap();
    let v = json(&run(&["generate", "-m", m.to_str().unwrap(), "--data", data.to_str().unwrap(), "-s", "base/cwe-089/0-py", "--max-tokens", "6", "-n", "2", "--json"]));
    assert_eq!(v["scenario"], "base/cwe-089/0-py");
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        // The cut code is the completion up to the end of the function (never more).
        let (full, cut) = (s["completion"].as_str().unwrap(), s["cut"]["code"].as_str().unwrap());
        assert!(full.starts_with(cut), "{cut:?} is a prefix of {full:?}");
        assert!(s["tokens"].as_u64().unwrap() <= 6);
    }
    // A filter that matches several scenarios is refused with their names.
    let o = run(&["generate", "-m", m.to_str().unwrap(), "--data", data.to_str().unwrap(), "-s", "cwe-089", "--max-tokens", "2"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 scenarios match"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn chat_mode_uses_the_template() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let v = json(&run(&["generate", "-m", m.to_str().unwrap(), "-p", "hi", "--chat", "--max-tokens", "2", "--json"]));
    // "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n": 3 special tokens + text bytes
    let model = deepguard_runtime::Model::load(&m, &candle_core::Device::Cpu).unwrap();
    let n = model.tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n").unwrap().len();
    assert_eq!(v["prompt_tokens"].as_u64().unwrap() as usize, n);
}

#[test]
fn inspect_reports_architecture() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    let v = json(&run(&["inspect", m.to_str().unwrap(), "--json"]));
    assert_eq!(v["config"]["arch"], "qwen2");
    assert_eq!(v["config"]["n_layers"], 3);
    assert_eq!(v["config"]["n_kv_heads"], 2);
    assert!(v["tokenizer"]["chat_template"].as_str().unwrap().contains("im_start"));
    let text = String::from_utf8(run(&["inspect", m.to_str().unwrap()]).stdout).unwrap();
    assert!(text.contains("GQA x2") && text.contains("Q8_0"), "{text}");
}

#[test]
fn bad_inputs_exit_nonzero_with_one_clear_line() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny(d.path());
    // corrupt model
    let bad = d.path().join("broken.gguf");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["generate", "-m", bad.to_str().unwrap(), "-p", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error:") && err.contains("broken.gguf") && err.contains("truncated"), "{err}");
    // prompt + max tokens beyond the context (tiny context: 256)
    let o = run(&["generate", "-m", m.to_str().unwrap(), "-p", &"x ".repeat(200), "--max-tokens", "100"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("exceeds the model's context of 256 tokens"), "{err}");
    // unknown model name
    let o = run(&["generate", "-m", "no-such-model", "-p", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8(o.stderr).unwrap().contains("neither a known name"));
    // no prompt at all
    let o = run(&["generate", "-m", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.starts_with("error: give a prompt") && err.contains("--prompt") && err.contains("--scenario"), "{err}");
    // an enum flag with a value outside its list names the allowed ones
    let o = run(&["eval", "--until", "later"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("invalid value 'later'") && err.contains("generate") && err.contains("report"), "{err}");
}

#[test]
fn every_flag_of_every_command_has_help_text() {
    let top = String::from_utf8(run(&["--help"]).stdout).unwrap();
    let cmds: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(cmds.len() >= 10, "{top}");
    let mut missing = vec![];
    for c in &cmds {
        let sub = String::from_utf8(run(&[c, "--help"]).stdout).unwrap();
        // Nested subcommands (steer, judge): check theirs too.
        let nested: Vec<String> = sub.lines().skip_while(|l| !l.starts_with("Commands:")).skip(1).take_while(|l| l.starts_with("  ")).filter_map(|l| l.split_whitespace().next().map(str::to_string)).filter(|x| x != "help").collect();
        let pages: Vec<(String, String)> = if nested.is_empty() { vec![(c.clone(), sub)] } else { nested.iter().map(|n| (format!("{c} {n}"), String::from_utf8(run(&[c, n, "--help"]).stdout).unwrap())).collect() };
        for (name, page) in pages {
            // Long help: an option line ("  -m, --model <MODEL>"), its text inline or indented
            // deeper below; "[default: ...]" and "[possible values: ...]" alone are no help.
            let lines: Vec<&str> = page.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                let rest = l.trim_start();
                let ind = l.len() - rest.len();
                if !rest.starts_with('-') || ind > 6 || rest.starts_with("-h,") || rest.starts_with("-V,") {
                    continue;
                }
                let mut text: String = rest.split("  ").filter(|x| !x.trim().is_empty()).skip(1).collect::<Vec<_>>().join(" ");
                for next in lines[i + 1..].iter().take_while(|n| n.len() - n.trim_start().len() > ind && !n.trim_start().starts_with('-')) {
                    text.push(' ');
                    text.push_str(next.trim());
                }
                let mut bare = String::new();
                let mut depth = 0;
                for ch in text.chars() {
                    match ch {
                        '[' => depth += 1,
                        ']' => depth -= 1,
                        c if depth == 0 => bare.push(c),
                        _ => {}
                    }
                }
                if bare.trim().is_empty() {
                    missing.push(format!("{name}: {rest}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "flags without help text:\n{}", missing.join("\n"));
}

/// `--print-config` writes the settings in effect as TOML; `--config` reads such a file back,
/// with the command line winning over the file; an unknown key or a bad value is one error
/// naming the file.
#[test]
fn settings_files_round_trip_and_the_command_line_wins() {
    let d = tempfile::tempdir().unwrap();
    let text = |o: &Output| {
        assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout.clone()).unwrap()
    };
    let printed = text(&run(&["train", "--lora-layers", "top4", "--lr", "0.0003", "--epochs", "2", "--aggregator", "mean", "--analyzer-only", "--print-config"]));
    let table: toml::Table = toml::from_str(&printed).unwrap_or_else(|e| panic!("not TOML: {e}\n{printed}"));
    assert_eq!(table["lora-layers"].as_str(), Some("top4"));
    assert_eq!(table["lr"].as_float(), Some(0.0003));
    assert_eq!(table["epochs"].as_integer(), Some(2));
    assert_eq!(table["aggregator"].as_str(), Some("mean"));
    assert_eq!(table["analyzer-only"].as_bool(), Some(true));
    assert_eq!(table["resume"].as_bool(), Some(false));
    assert!(!table.contains_key("config") && !table.contains_key("print-config") && !table.contains_key("help"));

    // Read back: the same settings, except what the command line overrides.
    let f = d.path().join("train.toml");
    std::fs::write(&f, &printed).unwrap();
    let again: toml::Table = toml::from_str(&text(&run(&["train", "--config", f.to_str().unwrap(), "--print-config"]))).unwrap();
    assert_eq!(again, table);
    let over: toml::Table = toml::from_str(&text(&run(&["train", "--config", f.to_str().unwrap(), "--epochs", "7", "--print-config"]))).unwrap();
    assert_eq!(over["epochs"].as_integer(), Some(7));
    assert_eq!(over["lora-layers"].as_str(), Some("top4"));

    // eval: list-valued flags are arrays and come back as repeated flags.
    std::fs::write(&f, "scenario = [\"cwe-089\", \"cwe-078\"]\nno-asan = true\nn = 3\n").unwrap();
    let ev: toml::Table = toml::from_str(&text(&run(&["eval", "--config", f.to_str().unwrap(), "--print-config"]))).unwrap();
    assert_eq!(ev["scenario"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>(), ["cwe-089", "cwe-078"]);
    assert_eq!(ev["no-asan"].as_bool(), Some(true));
    assert_eq!(ev["n"].as_integer(), Some(3));

    // Errors name the file and the key, and exit non-zero.
    for (body, want) in [("epoch = 3\n", "unknown key `epoch`"), ("epochs = \"many\"\n", "invalid value 'many'"), ("aggregator = \"max\"\n", "invalid value 'max'"), ("resume = 1\n", "`resume` is a switch"), ("lr = [\n", "not a valid TOML")] {
        std::fs::write(&f, body).unwrap();
        let o = run(&["train", "--config", f.to_str().unwrap(), "--print-config"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{body:?} was accepted");
        assert!(err.contains(f.to_str().unwrap()) && err.contains(want), "{body:?}: {err}");
    }
}

/// Choice flags list their values and refuse others (clap value enums).
#[test]
fn choice_flags_list_their_values() {
    let o = run(&["train", "--prior", "median"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("counts") && err.contains("running"), "{err}");
    let help = String::from_utf8(run(&["eval", "--help"]).stdout).unwrap();
    assert!(help.contains("[possible values: paper, reference]") && help.contains("--rerank <K>"), "{help}");
}
