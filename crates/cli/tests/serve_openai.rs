//! `deepguard serve` on SmolLM2-135M, on a free loopback port, driven by real clients:
//! - the official `openai` Python package (tests/serve/openai_client.py): completion, chat,
//!   streaming, n > 1, stop strings, a guard and a steering vector on and off, concurrent =
//!   alone, auth, bad input, disconnects, metrics, SIGTERM mid-stream;
//! - the bounded load test (scripts/serve_load.py): a fixed number of streamed requests from
//!   concurrent clients; no failure, every response complete.
//!
//! - tests/serve/repair_client.py: prompt variants and the check-repair loop per request (the
//!   venv's static tools), a streamed repair refused, other requests served during the checks.
//!
//! Only 127.0.0.1 is ever contacted. A missing model, venv or `openai` package fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_deepguard")
}

/// The model's short name (served under that id), after checking that it is installed.
fn smollm2() -> String {
    deepguard_runtime::models::resolve("smollm2-135m").unwrap_or_else(|e| panic!("SmolLM2-135M is needed: {e:#}"));
    "smollm2-135m".into()
}

/// The venv's python, with `openai` importable.
fn python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(py.exists(), "{} missing: run scripts/setup.sh (it installs scripts/requirements-eval.txt, openai included)", py.display());
    let o = Command::new(&py).args(["-c", "import openai; print(openai.__version__)"]).output().unwrap();
    assert!(o.status.success(), "the venv lacks the openai package (scripts/setup.sh installs it): {}", String::from_utf8_lossy(&o.stderr));
    py
}

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(exe()).args(args).current_dir(cwd).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A running `deepguard serve` and what it printed so far.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(args: &[&str], cwd: &Path) -> Server {
        let mut child = Command::new(exe()).arg("serve").args(args).args(["--host", "127.0.0.1", "--port", "0"]).current_dir(cwd).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                l2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start: {}", log.lock().unwrap());
            }
        };
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Server { child, url, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits for the process to exit by itself; its exit status.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn openai_client_against_guarded_and_steered_server() {
    let py = python();
    let model = smollm2();
    let sven = repo().join("../shared/data/sven/val");
    assert!(sven.exists(), "SVEN data not found at {}", sven.display());
    let d = tempfile::tempdir().unwrap();
    let sven = sven.to_str().unwrap();
    // a small guard and steering vectors for this model, as the other CLI tests make them (the
    // training settings are pinned: this test checks the server, not the training defaults)
    let t = Instant::now();
    ok(&run(&["train", "-m", &model, "--train", sven, "--val", sven, "--max-pairs-per-cwe", "1", "--window", "24", "--agg-layers", "2", "--epochs", "1", "--batch", "3", "--accum", "1", "--out", "g", "--cache", "cache", "--lora-layers", "top2", "--lr", "2e-5"], d.path()));
    ok(&run(&["steer", "build", "-m", &model, "--data", sven, "--window", "24", "--max-pairs-per-cwe", "2", "--layer", "15", "--out", "vec", "--cache", "cache"], d.path()));
    assert!(d.path().join("vec/cwe-089.gguf").exists());
    eprintln!("guard and vectors built in {:.0}s", t.elapsed().as_secs_f64());

    let key = "test-key-123";
    let mut server = Server::start(&["-m", &model, "--guard", "g", "--steer", "vec:cwe-089", "--alpha", "8", "--api-key", key, "--ctx", "2048", "--max-body-bytes", "262144"], d.path());
    let script = repo().join("crates/cli/tests/serve/openai_client.py");
    let out = Command::new(&py).arg(&script).arg(format!("{}/v1", server.url)).arg(key).arg(server.child.id().to_string()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "openai client checks failed:\n{stdout}\n{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains("all openai-client checks passed"));
    // the script ended with SIGTERM: the server exits cleanly
    let status = server.wait(Duration::from_secs(30)).unwrap_or_else(|| panic!("the server did not exit after SIGTERM:\n{}", server.log()));
    assert!(status.success(), "exit status {status:?}:\n{}", server.log());
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[test]
fn openai_client_prompt_variants_and_repair() {
    let py = python();
    let model = smollm2();
    let d = tempfile::tempdir().unwrap();
    let venv = repo().join(".venv");
    let server = Server::start(&["-m", &model, "--venv", venv.to_str().unwrap(), "--ctx", "2048"], d.path());
    let out = Command::new(&py).arg(repo().join("crates/cli/tests/serve/repair_client.py")).arg(format!("{}/v1", server.url)).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "repair client checks failed:\n{stdout}\n{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains("all repair-client checks passed"));
    assert!(server.log().contains("repairs checked by bandit"), "{}", server.log());
}

#[test]
fn a_default_repair_without_tools_fails_at_start_up() {
    smollm2();
    let d = tempfile::tempdir().unwrap();
    let o = run(&["serve", "-m", "smollm2-135m", "--method", "repair:2", "--venv", "no-venv", "--port", "0"], d.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("repair loop needs the static tools") && err.contains("no-venv"), "{err}");
}

#[test]
fn bounded_load_test() {
    let py = python();
    let model = smollm2();
    let d = tempfile::tempdir().unwrap();
    let mut server = Server::start(&["-m", &model, "--max-batch", "8"], d.path());
    let out = Command::new(&py)
        .arg(repo().join("scripts/serve_load.py"))
        .args(["--base-url", &format!("{}/v1", server.url), "--clients", "4", "--requests", "12", "--max-tokens", "32", "--baseline", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "load test failed:\n{stdout}\n{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains("12/12 requests from 4 clients") && stdout.contains("OK: every request completed"), "{stdout}");
    sigterm(server.child.id());
    let status = server.wait(Duration::from_secs(30)).expect("the server exits on SIGTERM");
    assert!(status.success());
}

fn sigterm(pid: u32) {
    let s = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(s.success());
}
