//! Running untrusted programs with least privilege (see docs/security.md for the promises and
//! how each is tested).
//!
//! - **Minimal root.** The program sees a fresh root holding only the system folders (`/usr`
//!   and the `/bin`, `/lib*`, `/sbin` links or folders), a synthetic `/etc` (passwd, group and
//!   hosts for its user; the dynamic linker's cache; `/etc/alternatives`), a private `/proc` and
//!   a minimal `/dev`, the venvs on its PATH with their interpreter, the folders the run
//!   [`Sandbox::expose`]s, and its work folder. Everything else (the checkout, `/home`, `/root`,
//!   the rest of `/etc`, `/var`, `/sys`, other runs' folders) is absent, not merely read-only.
//! - **A capped writable area.** The work folder and `/tmp` live on one tmpfs of
//!   [`Limits::disk_bytes`] and [`Limits::disk_files`]: filling it fails the program (ENOSPC),
//!   never the host. The work folder's files are copied in before the run and copied back out
//!   after it (regular files and folders only: symlinks, FIFOs and sockets the program left are
//!   dropped, so the harness never follows a link out), when every process of the run is gone.
//! - **Namespaces, an unprivileged user, no capabilities.** bubblewrap: no network but a private
//!   loopback, private PID / IPC / UTS (and cgroup, where possible) namespaces. Inside, a small
//!   setup script runs as root (mounts, copies), then the program runs as a fresh unprivileged
//!   uid with no capabilities and `no_new_privs` (setuid binaries do not elevate).
//! - **Limits.** rlimits on CPU time, address space, processes and file size; a wall-clock
//!   limit and an output cap, after which every process of the run is killed and the work folder
//!   still comes back; a memory limit on the whole run that also holds for AddressSanitizer
//!   builds (which need an unlimited address space): cgroup v2 `memory.max` where a writable
//!   cgroup with the memory controller exists, else a watchdog on the run's resident memory.


mod bwrap;
mod limits;
mod supervise;

pub use limits::{cgroup, Ending, Limits, Outcome};

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct Sandbox {
    /// The work folder: copied into the sandbox's capped tmpfs (at the same path) before the
    /// run, and back out after it. The program starts there.
    pub work: PathBuf,
    /// Extra read-only binds: (outside, inside); inside may lie in the work folder or `/tmp`.
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    pub env: Vec<(String, String)>,
    /// Folders put in front of PATH (e.g. the venv's bin); a venv is shown with its interpreter.
    pub path_prepend: Vec<PathBuf>,
    /// Host files or folders the run reads (e.g. the benchmark's tests), shown read-only at the
    /// same path. Nothing else of the host's file system is there.
    pub expose: Vec<PathBuf>,
}
/// Sandboxed runs use uids 61000 .. 61000 + UID_SPAN (below nobody = 65534).
const UID_SPAN: u32 = 4000;
static NEXT_UID: AtomicU32 = AtomicU32::new(0);
/// Checks, once per process, that bubblewrap is installed and that a sandboxed run works here
/// (namespaces, the capped tmpfs, the unprivileged user).
pub fn check_available() -> Result<()> {
    static OK: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    OK.get_or_init(|| {
        match Command::new("bwrap").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Ok(s) if s.success() => {}
            _ => return Err("bubblewrap (bwrap) not found: run scripts/setup.sh (apt-get install bubblewrap)".into()),
        }
        let t = tempfile::tempdir().map_err(|e| e.to_string())?;
        let lim = Limits { wall: Duration::from_secs(20), ..Limits::default() };
        match Sandbox::new(t.path()).run(&["sh".into(), "-c".into(), "echo ok > probe".into()], b"", &lim) {
            Ok(o) if o.success() && t.path().join("probe").exists() => Ok(()),
            Ok(o) => Err(format!("the sandbox does not work on this machine ({:?}): {}", o.ending, o.stderr.trim())),
            Err(e) => Err(format!("the sandbox does not work on this machine: {e:#}")),
        }
    })
    .clone()
    .map_err(anyhow::Error::msg)
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

    /// Runs `argv` inside the sandbox with `stdin`, under `limits`. An error only when the
    /// sandbox itself cannot run (bubblewrap missing, the work folder too large for the work
    /// area, an argument list the kernel refuses); whatever the program does is an [`Outcome`].
    pub fn run(&self, argv: &[String], stdin: &[u8], limits: &Limits) -> Result<Outcome> {
        if argv.is_empty() {
            bail!("sandbox: empty command");
        }
        // A fresh unprivileged uid per run: RLIMIT_NPROC counts processes per uid, and the
        // clean-up kills by uid. The sequence starts at an offset drawn from the process id, so
        // that two processes sandboxing at the same time do not start on the same uid.
        static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let base = *BASE.get_or_init(|| ((std::process::id() as u64).wrapping_mul(2_654_435_761) % UID_SPAN as u64) as u32);
        let uid = 61000 + (base + NEXT_UID.fetch_add(1, Ordering::Relaxed)) % UID_SPAN;
        let work = self.work.canonicalize().with_context(|| format!("{}: sandbox work folder missing", self.work.display()))?;
        if work == Path::new("/") || under(&work, Path::new("/run/dg")) {
            bail!("{}: cannot be a sandbox work folder", work.display());
        }
        let a = self.bwrap_args(&work, uid, argv, limits)?;
        let cgroup = cgroup::Cgroup::create(uid, limits);
        self.spawn_and_wait(&a, uid, stdin, limits, cgroup)
    }
}

fn under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}
