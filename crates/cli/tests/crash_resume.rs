//! Crash safety end to end on a tiny model: `deepguard eval` killed with SIGKILL at random
//! points of each stage (generate, test, judge, report) and resumed gives the report of an
//! uninterrupted run, with no sample lost or counted twice; the same for the activation cache of
//! `probe` and `steer build`, and for `train` killed in the middle of a checkpoint write; a full
//! disk gives one clear error and leaves what was written readable (and resumable). The kill
//! points are drawn from fixed seeds; each test prints how many it survived.

use deepguard_runtime::testing::TinySpec;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn shared(p: &str) -> PathBuf {
    let d = repo().join("../shared/data").join(p);
    assert!(d.exists(), "{} not found (CI runs with ../shared beside the repo)", d.display());
    d
}

fn cmd(args: &[String], cwd: &Path, env: &[(&str, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deepguard"));
    c.args(args).current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run_ok(args: &[String], cwd: &Path) -> Output {
    let o = cmd(args, cwd, &[]).output().unwrap();
    assert!(o.status.success(), "deepguard {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// xorshift64*: the kill points, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Starts `args`; once `when()` holds, waits `delay` and sends SIGKILL. Returns the label
/// `stage()` gives at the moment of the kill, or None when the run ended first (then it must
/// have succeeded).
fn kill_at(args: &[String], cwd: &Path, when: &dyn Fn() -> bool, delay: Duration, stage: &dyn Fn() -> &'static str) -> Option<&'static str> {
    let mut child = cmd(args, cwd, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let mut armed: Option<Instant> = None;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "deepguard {args:?} failed on its own ({st})");
            return None;
        }
        if armed.is_none() && when() {
            armed = Some(Instant::now());
        }
        if armed.is_some_and(|a| a.elapsed() >= delay) {
            let label = stage();
            child.kill().unwrap();
            child.wait().unwrap();
            return Some(label);
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "deepguard {args:?} hangs");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Complete lines (a killed write may leave a partial last one).
/// A report.json with the generation wall time per sample (`"secs"`, which differs between any
/// two runs) masked.
fn report_json(p: &Path) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    for m in v["methods"].as_array_mut().into_iter().flatten() {
        m["cost"]["secs"] = "#".into();
    }
    serde_json::to_string_pretty(&v).unwrap()
}

fn lines(p: &Path) -> usize {
    std::fs::read(p).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

/// Distinct (scenario, idx) keys of a store and its number of valid records.
fn keys(p: &Path) -> (BTreeSet<(String, u64)>, usize) {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let mut set = BTreeSet::new();
    let mut n = 0;
    for l in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
            set.insert((v["scenario"].as_str().unwrap().to_string(), v["idx"].as_u64().unwrap()));
            n += 1;
        }
    }
    (set, n)
}

fn eval_args(model: &Path, out: &str) -> Vec<String> {
    let data = shared("eval");
    let venv = repo().join(".venv");
    [
        "eval", "-m", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "-s", "base/cwe-089/0-py", "-s", "base/cwe-078/0-py", "-s", "base/cwe-022/0-py", "-n", "2",
        "--max-tokens", "24", "--temperature", "0.8", "--judge", "bandit", "--no-asan", "--venv", venv.to_str().unwrap(), "-j", "2", "--out", out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Copies the `files` of the reference run's method folder into a fresh run folder.
fn prepare(reference: &Path, out: &Path, files: &[&str]) {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out.join("base")).unwrap();
    for f in files {
        std::fs::copy(reference.join("base").join(f), out.join("base").join(f)).unwrap();
    }
}

#[test]
fn eval_killed_in_every_stage_resumes_to_the_same_report() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tiny.gguf");
    TinySpec { context: 2048, ..TinySpec::qwen2() }.write_gguf(&model).unwrap();
    let total = 6;
    run_ok(&eval_args(&model, "ref"), d.path());
    let reference = report_json(&d.path().join("ref/report.json"));
    let reference_md = std::fs::read_to_string(d.path().join("ref/report.md")).unwrap();
    let stores = ["samples.jsonl", "tests.jsonl", "judge-bandit.jsonl"];
    let mut rng = Rng(0x5eed_0e7a1);
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    // Each stage from the state the uninterrupted run had when it began (the earlier stages'
    // stores complete): an uninterrupted timing run, then 3 kills at random moments before the
    // stage's output is complete, resuming each time, then the run to its end.
    for (k, stage_name) in ["generate", "test", "judge", "report"].into_iter().enumerate() {
        let earlier: Vec<&str> = std::iter::once("config.json").chain(stores[..k].iter().copied()).collect();
        let reference_dir = d.path().join("ref");
        let timing = d.path().join(format!("time-{stage_name}"));
        prepare(&reference_dir, &timing, &earlier);
        let done = |out: &Path| -> bool {
            match stores.get(k) {
                Some(f) => lines(&out.join("base").join(f)) >= total,
                None => out.join("report.html").exists(),
            }
        };
        let args = eval_args(&model, timing.to_str().unwrap());
        let mut child = cmd(&args, d.path(), &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let t0 = Instant::now();
        let mut span = None;
        while child.try_wait().unwrap().is_none() {
            if span.is_none() && done(&timing) {
                span = Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let span = span.unwrap_or(t0.elapsed());
        assert_eq!(report_json(&timing.join("report.json")), reference);

        let out = d.path().join(format!("crash-{stage_name}"));
        prepare(&reference_dir, &out, &earlier);
        let args = eval_args(&model, out.to_str().unwrap());
        let label = || if done(&out) { "later" } else { stage_name };
        let mut landed = 0;
        // Attempts are cheap and stop at the third landed kill; a loaded machine makes more of
        // them outrun their kill (the stage timing above was taken on a quieter moment).
        for attempt in 0..40 {
            if landed == 3 {
                break;
            }
            if done(&out) {
                // The stage got finished by a run that outran its kill: start it over.
                prepare(&reference_dir, &out, &earlier);
            }
            let delay = Duration::from_micros(rng.below(span.as_micros() as u64));
            // One report kill in the middle of writing report.json (the atomic writer's crash
            // hook): the report stage is a few milliseconds long.
            let at = if stage_name == "report" && attempt == 0 {
                let o = cmd(&args, d.path(), &[("DEEPGUARD_CRASH_AT", "report.json:1".into())]).output().unwrap();
                assert_eq!(std::os::unix::process::ExitStatusExt::signal(&o.status), Some(9), "{}", String::from_utf8_lossy(&o.stderr));
                Some("report")
            } else {
                kill_at(&args, d.path(), &|| true, delay, &label)
            };
            if let Some(at) = at {
                match stage_name == "report" && attempt == 0 {
                    true => eprintln!("killed in report (while writing report.json)"),
                    false => eprintln!("killed in {at} (aimed at {stage_name}, {delay:?} after the start)"),
                }
                // A kill that lands after the stage is over is survived too (counted apart).
                *kills.entry(if at == stage_name { stage_name } else { "after its stage" }).or_default() += 1;
                if at == stage_name {
                    landed += 1;
                }
            }
        }
        assert_eq!(landed, 3, "kills landed in {stage_name}");
        // Resumed to the end: the same report as the uninterrupted run; every sample once in
        // each store's view (a re-generated scenario may repeat identical records; loading
        // keeps the first), none lost.
        run_ok(&args, d.path());
        let got = report_json(&out.join("report.json"));
        assert_eq!(got, reference, "{stage_name}: the resumed run's report differs from an uninterrupted run's");
        assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), reference_md);
        for f in stores {
            let (keys, _) = keys(&out.join("base").join(f));
            assert_eq!(keys.len(), total, "{stage_name}: {f}: {keys:?}");
        }
        let r: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(r["methods"][0]["complete"], 3, "{got}");
    }
    let n: usize = kills.values().sum();
    println!("crash eval: kill points survived {n}/{n} ({kills:?}); each final report equals the uninterrupted run's");
}

fn tiny_llama(dir: &Path) -> PathBuf {
    let m = dir.join("tiny.gguf");
    TinySpec { context: 512, ..TinySpec::llama() }.write_gguf(&m).unwrap();
    m
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// Every file under `dir` by relative path, with its bytes (temporary files of killed writes
/// left aside).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !e.file_name().to_string_lossy().contains(".tmp") {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn probe_and_steer_build_caches_survive_kills() {
    let sven = shared("sven/val");
    let d = tempfile::tempdir().unwrap();
    let m = tiny_llama(d.path());
    let (m, sven) = (m.to_str().unwrap().to_string(), sven.to_str().unwrap().to_string());
    let common = ["--data", &sven, "--window", "24", "--max-pairs-per-cwe", "2", "--cache", "cache"];
    let probe: Vec<String> = [&["probe", "-m", &m, "--out", "probe", "--folds", "3", "--min-pairs-per-cwe", "2"][..], &common[..]].concat().iter().map(|s| s.to_string()).collect();
    let steer: Vec<String> = [&["steer", "build", "-m", &m, "--probe", "probe/probe.json", "--out", "vec"][..], &common[..]].concat().iter().map(|s| s.to_string()).collect();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let t0 = Instant::now();
    run_ok(&probe, &a);
    let probe_ms = t0.elapsed().as_millis() as u64;
    let t0 = Instant::now();
    run_ok(&steer, &a);
    let steer_ms = t0.elapsed().as_millis() as u64;
    let mut rng = Rng(0xcac4e);
    let mut survived = 0;
    for (args, ms) in [(&probe, probe_ms), (&steer, steer_ms)] {
        // Random kill times within the uninterrupted run's duration; on a loaded machine some land
        // after the run has ended, so draw until two have landed (at most 12 draws).
        let mut landed = 0;
        for _ in 0..12 {
            let delay = Duration::from_millis(rng.below(ms));
            if kill_at(args, &b, &|| true, delay, &|| "run").is_some() {
                landed += 1;
                if landed == 2 {
                    break;
                }
            }
        }
        survived += landed;
        run_ok(args, &b);
    }
    // Byte for byte the same results and the same cache as the uninterrupted runs.
    for f in ["probe/probe.json", "probe/probe.md"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    assert_eq!(tree(&a.join("vec")), tree(&b.join("vec")), "steering vectors differ");
    assert_eq!(tree(&a.join("cache")), tree(&b.join("cache")), "activation caches differ");
    assert!(survived >= 2, "only {survived} kills landed in 24 draws");
    println!("crash probe/steer build: kill points survived {survived}/{survived}; results and caches equal the uninterrupted runs'");
}

#[test]
fn train_killed_during_checkpoint_writes_resumes_exactly() {
    let sven = shared("sven/val");
    let d = tempfile::tempdir().unwrap();
    let m = tiny_llama(d.path());
    let (m, sven) = (m.to_str().unwrap().to_string(), sven.to_str().unwrap().to_string());
    let train = |out: &str| -> Vec<String> {
        strings(&[
            "train", "-m", &m, "--train", &sven, "--val", &sven, "--max-pairs-per-cwe", "1", "--window", "24", "--agg-layers", "2", "--epochs", "2", "--batch", "3", "--accum", "1", "--out", out, "--cache", "cache",
            "--checkpoint-every", "1", "--rank", "4",
        ])
    };
    run_ok(&train("ref"), d.path());
    let artefacts = ["guard.safetensors", "adapter_model.safetensors", "adapter_config.json", "metrics.jsonl"];
    // metrics.jsonl without its timings (`secs`).
    let read = |out: &str, f: &str| -> Vec<u8> {
        let b = std::fs::read(d.path().join(out).join(f)).unwrap();
        if f.ends_with(".safetensors") {
            // The JSON header's key order is not fixed (a hash map): compare it parsed.
            let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
            let mut out = serde_json::to_vec(&h).unwrap();
            out.extend_from_slice(&b[8 + n..]);
            return out;
        }
        if f != "metrics.jsonl" {
            return b;
        }
        let text = String::from_utf8(b).unwrap();
        let v: Vec<serde_json::Value> = text.lines().map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("secs");
            v
        }).collect();
        serde_json::to_vec(&v).unwrap()
    };
    let mut survived = 0;
    // Killed halfway through writing the 2nd checkpoint's state, then the 3rd checkpoint's
    // pointer file, then at random moments; resumed each time.
    for (i, crash) in ["state.safetensors:2", "checkpoint.json:3"].iter().enumerate() {
        let out = format!("crash{i}");
        let o = cmd(&train(&out), d.path(), &[("DEEPGUARD_CRASH_AT", crash.to_string())]).output().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&o.status), Some(9), "{crash}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("crash test: killed while writing"));
        survived += 1;
        let mut resume = train(&out);
        resume.push("--resume".into());
        run_ok(&resume, d.path());
        for f in artefacts {
            assert_eq!(read("ref", f), read(&out, f), "{crash}: {f} differs after the resume");
        }
    }
    let mut rng = Rng(0x7a1_2);
    let t0 = Instant::now();
    run_ok(&train("timed"), d.path());
    let ms = t0.elapsed().as_millis() as u64;
    let mut resume = train("random");
    resume.push("--resume".into());
    let first = train("random");
    for k in 0..4 {
        let args = if k == 0 { &first } else { &resume };
        let delay = Duration::from_millis(rng.below(ms));
        if kill_at(args, d.path(), &|| true, delay, &|| "train").is_some() {
            survived += 1;
        }
        if !d.path().join("random/checkpoint.json").exists() {
            // Killed before the first checkpoint: nothing to resume from; start again.
            let _ = std::fs::remove_dir_all(d.path().join("random"));
        }
    }
    let args = if d.path().join("random").exists() { &resume } else { &first };
    run_ok(args, d.path());
    for f in artefacts {
        assert_eq!(read("ref", f), read("random", f), "random kills: {f} differs");
    }
    println!("crash train: kill points survived {survived}/{survived} (2 inside checkpoint writes); the guard's tensors and settings equal the uninterrupted run's bit for bit");
}

/// A full disk: `eval` writing into a small tmpfs stops with one clear error line; what it
/// wrote loads, and the run resumed on a roomy disk gives the uninterrupted report.
#[test]
fn a_full_disk_gives_one_clear_error_and_a_readable_run() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tiny.gguf");
    TinySpec { context: 2048, ..TinySpec::qwen2() }.write_gguf(&model).unwrap();
    run_ok(&eval_args(&model, "ref"), d.path());
    for size in ["12k", "24k"] {
        full_disk_run(d.path(), &model, size);
    }
}

fn full_disk_run(d: &Path, model: &Path, size: &str) {
    let small = d.join(format!("small-{size}"));
    std::fs::create_dir_all(&small).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "dgfull", small.to_str().unwrap()]).status().unwrap();
    assert!(st.success(), "mounting a small tmpfs needs root (as the sandbox does)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let o = cmd(&eval_args(model, small.join("run").to_str().unwrap()), d, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(last.starts_with("error:") && last.contains("No space left on device"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    // What was written is readable: every store loads (a cut last line is skipped) and the run
    // continues on a roomy disk to the uninterrupted report.
    let copy = d.join(format!("copy-{size}"));
    assert!(Command::new("cp").args(["-a", small.join("run").to_str().unwrap(), copy.to_str().unwrap()]).status().unwrap().success());
    let written: Vec<usize> = ["samples.jsonl", "tests.jsonl", "judge-bandit.jsonl"].iter().map(|f| keys(&copy.join("base").join(f)).0.len()).collect();
    assert!(written[0] > 0, "the disk filled before any sample was stored ({written:?})");
    run_ok(&eval_args(model, copy.to_str().unwrap()), d);
    assert_eq!(report_json(&copy.join("report.json")), report_json(&d.join("ref/report.json")));
    println!("full disk ({size} tmpfs): one error line ({last}); stored before it: {written:?} samples/tests/verdicts; resumed to the uninterrupted report");
}
