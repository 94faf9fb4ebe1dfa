//! Sharded evaluation end to end (docs/scale.md): `compare` split over 3 shards — by the
//! scheduler's variables, as the docs' Slurm and Kubernetes recipes run it, and by `--shard I/N`
//! — and joined by `deepguard merge` gives the stores, reports and comparison tables of an
//! unsharded run, byte for byte (report.html and the test records but for the unit tests' wall
//! times in their logs, which differ between any two runs); a killed shard resumes; a missing, unfinished, duplicated or
//! mismatched shard is refused with its name. On the tiny test model and on SmolLM2, with few
//! scenarios, n = 2 and a few tokens.

use deepguard_methods::steer::SteerVector;
use deepguard_runtime::testing::TinySpec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn shared(p: &str) -> PathBuf {
    let d = repo().join("../shared/data").join(p);
    assert!(d.exists(), "{} not found (CI runs with ../shared beside the repo)", d.display());
    d.canonicalize().unwrap()
}

/// The binary in `cwd`, with no scheduler variables of the environment the test runs in.
fn bin(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deepguard"));
    c.current_dir(cwd);
    for k in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX", "DEEPGUARD_SHARDS"] {
        c.env_remove(k);
    }
    c
}

fn ok(o: Output, what: &str) -> Output {
    assert!(o.status.success(), "{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn fails(o: Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{what} should fail with one error: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
    err
}

/// A steering vector for `model` at block 1, for every CWE (a second method for `compare`).
fn steer_vector(model: &Path, dir: &Path) -> PathBuf {
    let m = deepguard_runtime::Model::load(model, &candle_core::Device::Cpu).unwrap();
    let hidden = m.cfg().hidden_size;
    let v = SteerVector {
        cwe: None,
        layer: 1,
        direction: (0..hidden).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect(),
        model_arch: format!("{:?}", m.cfg().arch).to_lowercase(),
        model_fingerprint: m.info.fingerprint.clone(),
        n_layers: m.cfg().n_layers,
        hidden,
        n_pairs: 1,
        position: "test".into(),
        probe: None,
        centroid: vec![],
    };
    let p = dir.join("vec.gguf");
    v.save(&p).unwrap();
    p
}

/// The code block of `lang` in `doc` whose first line starts with `first`.
fn block(doc: &str, lang: &str, first: &str) -> String {
    let fence = format!("```{lang}\n");
    doc.split(&fence)
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .find(|b| b.starts_with(first))
        .unwrap_or_else(|| panic!("docs/scale.md has no ```{lang} block starting with {first:?}"))
}

const REPORTS: [&str; 5] = ["report.md", "report.json", "compare.md", "compare.json", "compare.svg"];

/// `text` with what differs between any two runs of the unit tests (unsharded ones included)
/// masked: the wall times in their logs ("[Exit(0) after 0.6s]", "Ran 1 test in 0.020s") and
/// the names of their temporary folders ("/tmp/dg-test-oN2B4q").
fn mask_times(text: &str) -> String {
    mask_tmp(&mask_secs(text))
}

/// `text` with the generation wall times masked: `"secs":N` in JSON records and reports, and
/// the seconds column of compare.md's cost table.
fn mask_secs(text: &str) -> String {
    let mut out = String::new();
    let mut in_cost = false;
    for line in text.split_inclusive('\n') {
        if line.contains("| seconds / sample |") {
            in_cost = true;
        } else if in_cost && line.starts_with("| ") && !line.starts_with("|---") {
            let mut cells: Vec<&str> = line.split(" | ").collect();
            if cells.len() > 3 {
                cells[3] = "#";
            }
            out += &cells.join(" | ");
            continue;
        } else if !line.starts_with('|') {
            in_cost = false;
        }
        let mut rest = line;
        while let Some(k) = rest.find("\"secs\":") {
            let after = &rest[k + 7..];
            let skip = after.len() - after.trim_start().len();
            let num = after[skip..].find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))).unwrap_or(after.len() - skip);
            out += &rest[..k];
            out += "\"secs\":#";
            rest = &after[skip + num..];
        }
        out += rest;
    }
    out
}

/// `text` with the unit tests' temporary folder names masked.
fn mask_tmp(text: &str) -> String {
    let mut parts = text.split("/tmp/dg-");
    let mut text = parts.next().unwrap_or("").to_string();
    for p in parts {
        // `<kind>-<6 random characters>`
        let cut = p.find('-').map(|k| (k + 1 + 6).min(p.len())).unwrap_or(0);
        text += "/tmp/dg-#";
        text += p.get(cut..).unwrap_or("");
    }
    mask_wall_times(&text)
}

fn mask_wall_times(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let start = i;
        if c[i].is_ascii_digit() && (i == 0 || c[i - 1] == ' ') {
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            if i < c.len() && c[i] == 's' {
                out.push('#');
                continue;
            }
            i = start;
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// The merged run `got` has the reports and comparison tables of `want` byte for byte, the
/// same report.html but for the test logs' wall times, and the same records in every method's
/// stores (test records but for those times).
fn assert_same_run(want: &Path, got: &Path) {
    for f in REPORTS {
        let (a, b) = (std::fs::read_to_string(want.join(f)).unwrap(), std::fs::read_to_string(got.join(f)).unwrap_or_else(|_| panic!("{} missing", got.join(f).display())));
        assert!(mask_secs(&a) == mask_secs(&b), "{f} differs between {} and {} (generation wall times aside)", want.display(), got.display());
    }
    let html = |d: &Path| mask_times(&std::fs::read_to_string(d.join("report.html")).unwrap());
    let (a, b) = (html(want), html(got));
    if a != b {
        let at = a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
        let around = |s: &str| s.get(at.saturating_sub(200)..(at + 200).min(s.len())).unwrap_or("").to_string();
        panic!("report.html differs beyond the test logs' wall times, at byte {at}:\n{}\n---\n{}", around(&a), around(&b));
    }
    let methods: Vec<String> = std::fs::read_dir(want).unwrap().flatten().filter(|e| e.path().join("config.json").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(methods.len(), 2, "{methods:?}");
    for m in &methods {
        assert_eq!(std::fs::read(want.join(m).join("config.json")).unwrap(), std::fs::read(got.join(m).join("config.json")).unwrap(), "{m}/config.json");
        for f in ["samples.jsonl", "tests.jsonl", "judge-bandit.jsonl"] {
            let sorted = |d: &Path| {
                let mut l: Vec<String> = std::fs::read_to_string(d.join(m).join(f)).unwrap().lines().map(mask_times).collect();
                l.sort();
                l
            };
            let (a, b) = (sorted(want), sorted(got));
            assert!(!a.is_empty(), "{m}/{f} is empty");
            assert_eq!(a, b, "{m}/{f}: the merged records differ from the unsharded run's");
        }
    }
}

/// Shard `i` of a run folder: its manifest's own scenarios.
fn own(run: &Path, i: usize, n: usize) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join(format!("shard-{i}-of-{n}/shard.json"))).unwrap()).unwrap();
    m["own"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Scenarios that the split puts in all three shards (checked below), Python and C.
const SCENARIOS: [&str; 5] = ["base/cwe-022/0-py", "base/cwe-078/0-py", "base/cwe-089/0-py", "base/cwe-089/1-py", "base/cwe-787/0-c"];

#[test]
fn docs_recipes_run_locally_and_merge_to_the_unsharded_run() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tiny.gguf");
    TinySpec { context: 2048, ..TinySpec::qwen2() }.write_gguf(&model).unwrap();
    let vec = steer_vector(&model, d.path());
    let doc = std::fs::read_to_string(repo().join("docs/scale.md")).unwrap();

    // The docs' settings file, with a tiny model, a few scenarios and small n instead of the
    // real sweep; every other key stays as the docs write it.
    let mut settings: toml::Table = toml::from_str(&block(&doc, "toml", "# sweep.toml")).unwrap();
    let out = PathBuf::from(settings["out"].as_str().expect("the docs' settings name the run folder"));
    let strs = |v: &[&str]| toml::Value::Array(v.iter().map(|s| toml::Value::String(s.to_string())).collect());
    let vec_method = format!("steer:{}@4", vec.display());
    for (k, v) in [
        ("model", toml::Value::String(model.display().to_string())),
        ("method", strs(&["base", &vec_method])),
        ("data", toml::Value::String(shared("eval").display().to_string())),
        ("venv", toml::Value::String(repo().join(".venv").display().to_string())),
        ("scenario", strs(&SCENARIOS)),
        ("n", toml::Value::Integer(2)),
        ("max-tokens", toml::Value::Integer(16)),
        ("temperature", toml::Value::Float(0.8)),
        ("judge", toml::Value::String("bandit".into())),
        ("no-asan", toml::Value::Boolean(true)),
        ("jobs", toml::Value::Integer(1)),
    ] {
        settings.insert(k.into(), v);
    }
    let dirs: BTreeMap<&str, PathBuf> = ["ref", "slurm", "k8s"].into_iter().map(|k| (k, d.path().join(k))).collect();
    for dir in dirs.values() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("sweep.toml"), toml::to_string(&settings).unwrap()).unwrap();
    }

    // The unsharded run: the same command with no scheduler variables.
    ok(bin(&dirs["ref"]).args(["compare", "--config", "sweep.toml"]).output().unwrap(), "unsharded compare");

    // Slurm: the script's `srun` line, as 3 tasks of an array, concurrently; then the merge the
    // docs submit after them.
    let script = block(&doc, "bash", "#!/bin/bash");
    assert!(script.contains("#SBATCH --array="), "{script}");
    let line = script.lines().find_map(|l| l.strip_prefix("srun ")).expect("the script runs deepguard with srun");
    let argv: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(argv[0], "deepguard");
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let mut c = bin(&dirs["slurm"]);
            c.args(&argv[1..]).env("SLURM_ARRAY_TASK_ID", i.to_string()).env("SLURM_ARRAY_TASK_MIN", "0").env("SLURM_ARRAY_TASK_COUNT", "3").stdout(Stdio::null()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for t in tasks {
        ok(t.wait_with_output().unwrap(), "a Slurm task");
    }
    let merge_line = doc.lines().find_map(|l| l.split("--wrap \"").nth(1).filter(|r| r.starts_with("deepguard merge"))).expect("the docs submit the merge with --wrap").trim_end_matches('"');
    let margv: Vec<&str> = merge_line.split_whitespace().collect();
    ok(bin(&dirs["slurm"]).args(&margv[1..]).output().unwrap(), "the Slurm merge");
    assert_same_run(&dirs["ref"].join(&out), &dirs["slurm"].join(&out));

    // Kubernetes: the Indexed Job's command with JOB_COMPLETION_INDEX and DEEPGUARD_SHARDS, then
    // the merge Job's command.
    let commands: Vec<Vec<String>> = doc.lines().filter_map(|l| l.trim().strip_prefix("command: ")).map(|a| serde_json::from_str(a).expect("command: a JSON array")).collect();
    assert_eq!(commands.len(), 2, "a shard Job and a merge Job");
    assert!(doc.contains("completionMode: Indexed") && doc.contains("name: DEEPGUARD_SHARDS"));
    let pods: Vec<_> = (0..3)
        .map(|i| {
            let mut c = bin(&dirs["k8s"]);
            c.args(&commands[0][1..]).env("JOB_COMPLETION_INDEX", i.to_string()).env("DEEPGUARD_SHARDS", "3").stdout(Stdio::null()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for p in pods {
        ok(p.wait_with_output().unwrap(), "a Kubernetes pod");
    }
    ok(bin(&dirs["k8s"]).args(&commands[1][1..]).output().unwrap(), "the Kubernetes merge");
    assert_same_run(&dirs["ref"].join(&out), &dirs["k8s"].join(&out));

    // The split: every shard has scenarios, and together exactly the selection.
    let run = dirs["slurm"].join(&out);
    let mut all: Vec<String> = (1..=3).flat_map(|i| own(&run, i, 3)).collect();
    assert!((1..=3).all(|i| !own(&run, i, 3).is_empty()), "every shard has work");
    all.sort();
    assert_eq!(all, SCENARIOS);

    refusals(&run, d.path());
}

/// merge names what is wrong: a missing shard (with its scenarios), an unfinished one, a
/// duplicated sample, shards of other settings.
fn refusals(run: &Path, tmp: &Path) {
    let case = |name: &str, shards: &[usize]| -> PathBuf {
        let dir = tmp.join("bad").join(name);
        for i in shards {
            copy_dir(&run.join(format!("shard-{i}-of-3")), &dir.join(format!("shard-{i}-of-3")));
        }
        dir
    };
    let merge = |dir: &Path| bin(dir).args(["merge", "."]).output().unwrap();
    let methods: Vec<String> = std::fs::read_dir(run.join("shard-2-of-3")).unwrap().flatten().filter(|e| e.path().join("config.json").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let base = methods.iter().find(|m| *m == "base").unwrap();

    let dir = case("missing", &[1, 3]);
    let err = fails(merge(&dir), "merge without shard 2");
    assert!(err.contains("shard 2/3 missing"), "{err}");
    for id in own(run, 2, 3) {
        assert!(err.contains(&id), "the missing shard's scenario {id} is named: {err}");
    }

    let dir = case("unfinished", &[1, 2, 3]);
    let tests = dir.join("shard-2-of-3").join(base).join("tests.jsonl");
    let text = std::fs::read_to_string(&tests).unwrap();
    let (keep, last) = text.trim_end().rsplit_once('\n').unwrap();
    std::fs::write(&tests, format!("{keep}\n")).unwrap();
    let last: serde_json::Value = serde_json::from_str(last).unwrap();
    let err = fails(merge(&dir), "merge with an unfinished shard");
    assert!(err.contains("shard 2/3") && err.contains(last["scenario"].as_str().unwrap()) && err.contains("1 of 2 samples tested"), "{err}");
    assert!(!dir.join("report.md").exists(), "nothing is written");

    let dir = case("duplicate", &[1, 2, 3]);
    let one = std::fs::read_to_string(dir.join("shard-1-of-3").join(base).join("samples.jsonl")).unwrap();
    let line = one.lines().next().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("shard-3-of-3").join(base).join("samples.jsonl")).unwrap();
    std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()).unwrap();
    let err = fails(merge(&dir), "merge with a duplicated sample");
    let sc: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(err.contains("duplicate") && err.contains(sc["scenario"].as_str().unwrap()) && err.contains("shard 1/3"), "{err}");

    let dir = case("settings", &[1, 2, 3]);
    let cfg = dir.join("shard-3-of-3").join(base).join("config.json");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["sampling"]["seed"] = 7.into();
    std::fs::write(&cfg, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    let err = fails(merge(&dir), "merge of shards with other settings");
    assert!(err.contains("other settings") && err.contains("shard 3/3") && err.contains("config.json"), "{err}");

    // A shard of another split (another count) in the same folder.
    let dir = case("counts", &[1, 2, 3]);
    copy_dir(&run.join("shard-1-of-3"), &dir.join("shard-1-of-4"));
    let m = dir.join("shard-1-of-4/shard.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    v["shard"]["count"] = 4.into();
    std::fs::write(&m, v.to_string()).unwrap();
    let err = fails(merge(&dir), "merge of two splits");
    assert!(err.contains("shard count") && err.contains("shard-1-of-4"), "{err}");
}

/// SmolLM2, 3 shards one after the other with `--shard I/3`; the first is killed while it
/// generates, merge names the shards missing, then the unfinished one; resumed, the merged run
/// is the unsharded one.
#[test]
fn smollm2_three_shards_with_a_killed_one_merge_to_the_unsharded_run() {
    let d = tempfile::tempdir().unwrap();
    let model = deepguard_runtime::models::resolve("smollm2-135m").expect("smollm2-135m is installed (scripts/setup.sh)");
    let vec = steer_vector(&model, d.path());
    let mut args: Vec<String> = ["compare", "-m", "smollm2-135m", "--method", "base", "--method", &format!("steer:{}@4", vec.display())].map(String::from).to_vec();
    args.extend(["--data".into(), shared("eval").display().to_string(), "--venv".into(), repo().join(".venv").display().to_string()]);
    for s in SCENARIOS.iter().filter(|s| s.ends_with("py")) {
        args.extend(["-s".into(), s.to_string()]);
    }
    args.extend(["-n", "2", "--max-tokens", "12", "--temperature", "0.8", "--judge", "bandit", "--no-asan", "-j", "1"].map(String::from));
    let with = |extra: &[&str]| -> Vec<String> { args.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect() };
    ok(bin(d.path()).args(with(&["--out", "ref"])).output().unwrap(), "unsharded compare");

    // Shard 1, killed once its first samples are stored.
    let run = d.path().join("sharded");
    let samples = run.join("shard-1-of-3/base/samples.jsonl");
    let mut child = bin(d.path()).args(with(&["--out", "sharded", "--shard", "1/3"])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        if std::fs::read_to_string(&samples).is_ok_and(|t| t.lines().count() >= 2) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "shard 1 ended before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(300), "shard 1 hangs");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let merge = || bin(d.path()).args(["merge", "sharded"]).output().unwrap();
    let err = fails(merge(), "merge with two shards never run");
    assert!(err.contains("shard 2/3, 3/3 missing") && err.contains(&format!("{} scenario(s) not evaluated", 4 - own(&run, 1, 3).len())), "{err}");
    for i in [2, 3] {
        ok(bin(d.path()).args(with(&["--out", "sharded", "--shard", &format!("{i}/3")])).output().unwrap(), "a shard");
    }
    let err = fails(merge(), "merge with a killed shard");
    assert!(err.contains("unfinished") && err.contains("shard 1/3"), "{err}");
    // Resumed: it continues (the samples stored before the kill stay as they were).
    let before = std::fs::read_to_string(&samples).unwrap();
    ok(bin(d.path()).args(with(&["--out", "sharded", "--shard", "1/3"])).output().unwrap(), "the resumed shard");
    assert!(std::fs::read_to_string(&samples).unwrap().starts_with(before.trim_end_matches(|c| c != '\n')));
    ok(merge(), "merge");
    assert_same_run(&d.path().join("ref"), &run);
    // Merging again changes nothing, report.html included.
    let before: Vec<Vec<u8>> = REPORTS.iter().chain(&["report.html"]).map(|f| std::fs::read(run.join(f)).unwrap()).collect();
    ok(merge(), "merge again");
    let after: Vec<Vec<u8>> = REPORTS.iter().chain(&["report.html"]).map(|f| std::fs::read(run.join(f)).unwrap()).collect();
    assert!(before == after, "a second merge rewrote the reports differently");
}
