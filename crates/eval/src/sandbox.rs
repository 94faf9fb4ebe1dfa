//! Running untrusted programs: bubblewrap namespaces (no network but a loopback, private PID /
//! IPC / UTS namespaces, private `/tmp`, read-only view of the whole file system except one work
//! folder, `/root` hidden) and, inside, an unprivileged user (so the process-count limit
//! applies even when the harness runs as root) with no capabilities; rlimits on CPU time,
//! address space, processes and file size; a wall-clock limit and an output cap, after which the
//! whole process tree is killed (killing bwrap takes its PID namespace down with it).

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Limits {
    pub wall: Duration,
    pub cpu_secs: u64,
    /// Address-space limit (None: unlimited, needed by AddressSanitizer's shadow memory).
    pub mem_bytes: Option<u64>,
    pub nproc: u64,
    /// Largest file a sandboxed process may write.
    pub fsize_bytes: u64,
    /// stdout + stderr beyond this kills the run.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { wall: Duration::from_secs(60), cpu_secs: 60, mem_bytes: Some(2 << 30), nproc: 64, fsize_bytes: 64 << 20, output_bytes: 1 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Exited with this status.
    Exit(i32),
    /// Killed by this signal (including CPU-time SIGXCPU/SIGKILL and file-size SIGXFSZ).
    Signal(i32),
    WallTimeout,
    OutputLimit,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    pub stdout: String,
    pub stderr: String,
    pub wall: Duration,
    /// The unprivileged uid the program ran as (unique among concurrent runs).
    pub uid: u32,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.ending == Ending::Exit(0)
    }
}

pub struct Sandbox {
    /// The one writable folder (bound at the same path inside); the program starts there.
    pub work: PathBuf,
    /// Extra read-only binds: (outside, inside).
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    pub env: Vec<(String, String)>,
    /// Folders put in front of PATH (e.g. the venv's bin).
    pub path_prepend: Vec<PathBuf>,
    /// Host folders the run reads (e.g. the benchmark). They are visible anyway, except under
    /// the private `/tmp` and `/root`: there they are bound back read-only at the same path.
    pub expose: Vec<PathBuf>,
}

/// Sandboxed runs use uids 61000 .. 61000 + UID_SPAN (below nobody = 65534).
const UID_SPAN: u32 = 4000;
static NEXT_UID: AtomicU32 = AtomicU32::new(0);

/// Checks that bubblewrap is installed and can create the namespaces here.
pub fn check_available() -> Result<()> {
    let ok = Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ok {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => bail!("bubblewrap (bwrap) cannot create namespaces on this machine; the sandbox needs them"),
        Err(_) => bail!("bubblewrap (bwrap) not found: run scripts/setup.sh (apt-get install bubblewrap)"),
    }
}

impl Sandbox {
    pub fn new(work: impl Into<PathBuf>) -> Self {
        Self { work: work.into(), ro_binds: vec![], env: vec![], path_prepend: vec![], expose: vec![] }
    }

    /// Puts a venv's `bin` folder in front of PATH (its `python` becomes `python`).
    pub fn with_venv(mut self, bin: &Path) -> Self {
        self.path_prepend.push(bin.to_path_buf());
        self
    }

    /// Runs `argv` inside the sandbox with `stdin`, under `limits`.
    pub fn run(&self, argv: &[String], stdin: &[u8], limits: &Limits) -> Result<Outcome> {
        if argv.is_empty() {
            bail!("sandbox: empty command");
        }
        // A fresh unprivileged uid per run: RLIMIT_NPROC counts processes per uid. The sequence
        // starts at an offset drawn from the process id, so that two processes sandboxing at
        // the same time (two evals, or tests run as separate processes) do not start on the same
        // uid: a fork bomb in one would exhaust the other's process limit.
        static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let base = *BASE.get_or_init(|| ((std::process::id() as u64).wrapping_mul(2_654_435_761) % UID_SPAN as u64) as u32);
        let uid = 61000 + (base + NEXT_UID.fetch_add(1, Ordering::Relaxed)) % UID_SPAN;
        let work = self.work.canonicalize().with_context(|| format!("{}: sandbox work folder missing", self.work.display()))?;
        // Mount points inside the work folder are made here, traversable by the sandbox's uid.
        for (_, inside) in &self.ro_binds {
            if inside.starts_with(&self.work) || inside.starts_with(&work) {
                std::fs::create_dir_all(inside).with_context(|| format!("{}: cannot create", inside.display()))?;
            }
        }
        chown_tree(&work, uid)?;
        let home = work.join(".home");
        std::fs::create_dir_all(&home)?;
        chown_tree(&home, uid)?;
        let mut path = self.path_prepend.iter().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()).display().to_string()).collect::<Vec<_>>();
        path.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from));
        let mut a: Vec<String> = vec![];
        fn push(a: &mut Vec<String>, xs: &[&str]) {
            a.extend(xs.iter().map(|s| s.to_string()));
        }
        push(&mut a, &["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/root"]);
        push(&mut a, &["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]);
        push(&mut a, &["--die-with-parent", "--new-session", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--clearenv"]);
        // The interpreter behind a venv may live under /root (pyenv): expose just that.
        for p in &self.path_prepend {
            if let Some(real) = real_python_home(p) {
                // bwrap would create the folders in between as 0700: make them traversable.
                let mut dirs: Vec<&Path> = real.ancestors().skip(1).take_while(|d| *d != Path::new("/root")).collect();
                dirs.reverse();
                for d in dirs {
                    a.extend(["--perms".into(), "0755".into(), "--dir".into(), d.display().to_string()]);
                }
                a.extend(["--ro-bind".into(), real.display().to_string(), real.display().to_string()]);
            }
        }
        // Folders this run reads that the private /tmp and /root would hide (a checkout or venv
        // under /tmp, say): bind them back read-only at the same path.
        let venvs = self.path_prepend.iter().filter_map(|b| b.canonicalize().ok()?.parent().map(Path::to_path_buf));
        let mut shown: Vec<PathBuf> = vec![];
        for p in venvs.chain(self.expose.iter().filter_map(|p| p.canonicalize().ok())) {
            let top = ["/tmp", "/root"].into_iter().find(|t| p.starts_with(t));
            if let Some(top) = top {
                if p.starts_with(&work) || shown.iter().any(|s| p.starts_with(s)) {
                    continue;
                }
                let mut dirs: Vec<&Path> = p.ancestors().skip(1).take_while(|d| *d != Path::new(top)).collect();
                dirs.reverse();
                for d in dirs {
                    a.extend(["--perms".into(), "0755".into(), "--dir".into(), d.display().to_string()]);
                }
                a.extend(["--ro-bind".into(), p.display().to_string(), p.display().to_string()]);
                shown.push(p);
            }
        }
        let w = work.display().to_string();
        a.extend(["--bind".into(), w.clone(), w.clone(), "--chdir".into(), w]);
        // After the work bind, so that binds inside the work folder (e.g. under $HOME) show.
        for (o, i) in &self.ro_binds {
            a.extend(["--ro-bind".into(), o.display().to_string(), i.display().to_string()]);
        }
        let mut env = vec![
            ("PATH".to_string(), path.join(":")),
            ("HOME".to_string(), home.display().to_string()),
            ("TMPDIR".to_string(), "/tmp".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
        ];
        env.extend(self.env.iter().cloned());
        for (k, v) in env {
            a.extend(["--setenv".into(), k, v]);
        }
        let (u, g) = (uid.to_string(), uid.to_string());
        a.extend(["--".into(), "setpriv".into(), "--reuid".into(), u, "--regid".into(), g]);
        push(&mut a, &["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"]);
        // Absolute paths in argv are resolved on the host (a `repo/../shared` path would not
        // resolve inside when the checkout itself is hidden under the private /tmp).
        a.extend(argv.iter().map(|s| match Path::new(s).canonicalize() {
            Ok(c) if s.starts_with('/') => c.display().to_string(),
            _ => s.clone(),
        }));

        let mut cmd = Command::new("bwrap");
        cmd.args(&a).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let l = limits.clone();
        unsafe {
            cmd.pre_exec(move || {
                libc::setpgid(0, 0);
                let set = |r, v: u64| {
                    let lim = libc::rlimit { rlim_cur: v, rlim_max: v };
                    libc::setrlimit(r, &lim);
                };
                set(libc::RLIMIT_CPU, l.cpu_secs);
                if let Some(m) = l.mem_bytes {
                    set(libc::RLIMIT_AS, m);
                }
                set(libc::RLIMIT_NPROC, l.nproc);
                set(libc::RLIMIT_FSIZE, l.fsize_bytes);
                set(libc::RLIMIT_CORE, 0);
                Ok(())
            });
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("cannot start bwrap (run scripts/setup.sh)")?;
        let pgid = child.id() as i32;
        let over = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(AtomicU32::new(limits.output_bytes.min(u32::MAX as usize) as u32));
        let reader = |r: Box<dyn Read + Send>| {
            let over = over.clone();
            let budget = budget.clone();
            std::thread::spawn(move || drain(r, &over, &budget))
        };
        let out_t = reader(Box::new(child.stdout.take().unwrap()));
        let err_t = reader(Box::new(child.stderr.take().unwrap()));
        if let Some(mut si) = child.stdin.take() {
            let data = stdin.to_vec();
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut si, &data);
            });
        }
        let ending = loop {
            if let Some(st) = child.try_wait()? {
                use std::os::unix::process::ExitStatusExt;
                break match (st.code(), st.signal()) {
                    (Some(c), _) => Ending::Exit(c),
                    (None, Some(s)) => Ending::Signal(s),
                    _ => Ending::Exit(-1),
                };
            }
            let e = if over.load(Ordering::Relaxed) {
                Some(Ending::OutputLimit)
            } else if t0.elapsed() > limits.wall {
                Some(Ending::WallTimeout)
            } else {
                None
            };
            if let Some(e) = e {
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                break e;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Readers end when every writer is gone (the PID namespace dies with bwrap).
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let ending = if over.load(Ordering::Relaxed) && ending != Ending::WallTimeout { Ending::OutputLimit } else { ending };
        Ok(Outcome { ending, stdout, stderr, wall: t0.elapsed(), uid })
    }
}

/// Reads everything, keeping what fits in the shared budget; sets `over` when it runs out.
fn drain(mut r: Box<dyn Read + Send>, over: &AtomicBool, budget: &AtomicU32) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        let left = budget.load(Ordering::Relaxed) as usize;
        let take = k.min(left);
        kept.extend_from_slice(&buf[..take]);
        budget.fetch_sub(take as u32, Ordering::Relaxed);
        if take < k {
            over.store(true, Ordering::Relaxed);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn chown_tree(p: &Path, uid: u32) -> Result<()> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())?;
    unsafe {
        libc::lchown(c.as_ptr(), uid, uid);
    }
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid)?;
        }
    }
    Ok(())
}

/// For a venv `bin` folder whose interpreter resolves under `/root` (hidden in the sandbox),
/// the interpreter's installation prefix, to bind read-only.
fn real_python_home(bin: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(bin.join("python3")).ok()?;
    if !real.starts_with("/root") {
        return None;
    }
    real.parent()?.parent().map(Path::to_path_buf)
}
