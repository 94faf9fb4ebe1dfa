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

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    /// Address-space limit per process (None: unlimited, needed by AddressSanitizer's shadow
    /// memory; [`Limits::rss_bytes`] still bounds such runs).
    pub mem_bytes: Option<u64>,
    /// Resident memory of the whole run (all its processes together, sanitizer shadow included).
    pub rss_bytes: u64,
    pub nproc: u64,
    /// Largest file a sandboxed process may write.
    pub fsize_bytes: u64,
    /// Size of the writable area (the work folder and `/tmp` together).
    pub disk_bytes: u64,
    /// Files and folders the writable area may hold.
    pub disk_files: u64,
    /// stdout + stderr beyond this kills the run.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall: Duration::from_secs(60),
            cpu_secs: 60,
            mem_bytes: Some(2 << 30),
            rss_bytes: 2 << 30,
            nproc: 64,
            fsize_bytes: 64 << 20,
            disk_bytes: 256 << 20,
            disk_files: 20_000,
            output_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Exited with this status (128 + n: killed by signal n, e.g. the CPU or file-size limit).
    Exit(i32),
    /// Killed by this signal.
    Signal(i32),
    WallTimeout,
    OutputLimit,
    /// The run's resident memory went over [`Limits::rss_bytes`].
    MemoryLimit,
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

    /// The end of the run's log (ending, wall time, stdout, stderr): its last `n` bytes or fewer,
    /// cut at a character boundary (compilers quote with multi-byte characters).
    pub fn log_tail(&self, n: usize) -> String {
        let s = format!("[{:?} after {:.1}s]\n{}{}", self.ending, self.wall.as_secs_f64(), self.stdout, self.stderr);
        let mut start = s.len().saturating_sub(n);
        while !s.is_char_boundary(start) {
            start += 1;
        }
        s[start..].to_string()
    }
}

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

/// Top-level system folders shown read-only (or re-created as the same symlinks).
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];
/// Host files of `/etc` shown read-only (if present); the rest of `/etc` is synthetic.
const ETC_FILES: &[&str] = &["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime"];

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

/// The setup script, run as root inside the namespaces before the program, and the clean-up
/// after it. Arguments: uid, work folder, tmpfs size, tmpfs inodes, then `SRC DEST` pairs of
/// staged binds (into the work folder or `/tmp`), `--`, then `env -i`'s arguments (the
/// program's environment, setpriv and the program). fd 3: the status pipe back to the harness
/// (`ready`, `rc=N`, `copied`), closed for the program. Every tool is named by its absolute
/// path: nothing the program leaves behind is ever run as root. To stop a run early the harness
/// kills the program's processes (by uid); the script then cleans up as after a normal end.
const INIT: &str = r#"set -u
umask 022
PATH=/usr/sbin:/usr/bin:/sbin:/bin
u=$1 w=$2 size=$3 inodes=$4
shift 4
fail() { echo "deepguard sandbox setup: $*" >&2; exit 125; }
/usr/bin/mount -t proc -o nosuid,nodev,noexec proc /proc || fail "cannot mount /proc"
/usr/bin/mount -t tmpfs -o "size=$size,nr_inodes=$inodes,mode=0755,nosuid,nodev" dgbox /run/dg/box || fail "cannot mount the work area"
/usr/bin/mkdir -m 1777 /run/dg/box/tmp && /usr/bin/mkdir /run/dg/box/work || fail "cannot create the work area"
/usr/bin/mount --bind /run/dg/box/tmp /tmp || fail "cannot mount /tmp"
/usr/bin/mkdir -p "$w" && /usr/bin/mount --bind /run/dg/box/work "$w" || fail "cannot mount the work folder"
/usr/bin/cp -a /run/dg/host/. "$w"/ || fail "cannot copy the work folder in (larger than the work area?)"
/usr/bin/mkdir -p "$w/.home" || fail "cannot create the home folder"
while [ "$1" != -- ]; do
  if [ -d "$1" ]; then /usr/bin/mkdir -p "$2"; else /usr/bin/mkdir -p "${2%/*}" && : > "$2"; fi || fail "cannot create $2"
  /usr/bin/mount --bind "$1" "$2" && /usr/bin/mount -o remount,bind,ro "$2" || fail "cannot bind $2"
  shift 2
done
shift
/usr/bin/find "$w" -xdev -exec /usr/bin/chown -h "$u:$u" {} + 2>/dev/null
printf 'root:x:0:0:root:/root:/bin/sh\nsandbox:x:%s:%s:sandbox:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' "$u" "$u" "$w/.home" > /etc/passwd
printf 'root:x:0:\nsandbox:x:%s:\nnogroup:x:65534:\n' "$u" > /etc/group
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > /etc/hosts
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' > /etc/nsswitch.conf
/usr/bin/mount -o remount,bind,ro / || fail "cannot make the root read-only"
cd "$w" || fail "cannot enter the work folder"
echo ready >&3
/usr/bin/env -i "$@" 3>&-
rc=$?
echo "rc=$rc" >&3
kill -s KILL -- -1 2>/dev/null
n=0
while [ $n -lt 500 ]; do
  set -- /proc/[0-9]*
  [ $# -le 2 ] && break
  n=$((n + 1))
  /usr/bin/sleep 0.01
done
/usr/bin/find "$w" -xdev ! -type f ! -type d -delete 2>/dev/null
/usr/bin/find /run/dg/host -mindepth 1 -delete 2>/dev/null
/usr/bin/cp -a -x "$w"/. /run/dg/host/ 2>/dev/null
echo copied >&3
exit $rc
"#;

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

    fn spawn_and_wait(&self, a: &[String], uid: u32, stdin: &[u8], limits: &Limits, mut cgroup: Option<cgroup::Cgroup>) -> Result<Outcome> {
        let (st_r, st_w) = pipe()?;
        let mut cmd = Command::new("bwrap");
        cmd.args(a).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let l = limits.clone();
        let st_fd = st_w.as_raw_fd();
        let procs = cgroup.as_ref().map(|c| c.procs_path());
        // Between fork and exec only async-signal-safe calls: no allocation.
        unsafe {
            cmd.pre_exec(move || {
                libc::setpgid(0, 0);
                if let Some(p) = &procs {
                    // Checked from the parent once the child runs (a failure must not abort
                    // the run: the watchdog takes over).
                    cgroup::join(p);
                }
                // The status pipe on fd 3; every other inherited descriptor closes at exec.
                let high = libc::fcntl(st_fd, libc::F_DUPFD, 64);
                if high < 0 || libc::dup2(high, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high);
                cloexec_from(4);
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
        let spawned = cmd.spawn();
        drop(st_w);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                let n: usize = a.iter().map(|s| s.len() + 1).sum();
                bail!("sandbox: the command line and environment ({n} bytes) are too large for the kernel");
            }
            Err(e) => return Err(e).context("cannot start bwrap (run scripts/setup.sh)"),
        };
        let pgid = child.id() as i32;
        if cgroup.as_ref().is_some_and(|c| !c.holds(child.id())) && child.try_wait()?.is_none() {
            // The child could not join its cgroup: no cgroups in this process from now on.
            cgroup::disable("a sandboxed process could not join its cgroup");
            cgroup = None;
        }
        let status_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::fs::File::from(st_r).read_to_string(&mut s);
            s
        });
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
                let _ = si.write_all(&data);
            });
        }
        let mut stopped: Option<(Ending, Instant)> = None;
        let mut last_check = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            match &stopped {
                None => {
                    let e = if over.load(Ordering::Relaxed) {
                        Some(Ending::OutputLimit)
                    } else if t0.elapsed() > limits.wall {
                        Some(Ending::WallTimeout)
                    } else if cgroup.is_none() && last_check.elapsed() >= Duration::from_millis(50) {
                        last_check = Instant::now();
                        (resident_bytes(uid) > limits.rss_bytes).then_some(Ending::MemoryLimit)
                    } else {
                        None
                    };
                    if let Some(e) = e {
                        // Kill the program's processes; the setup script then copies the work
                        // folder out and ends.
                        kill_uid(uid);
                        stopped = Some((e, Instant::now()));
                    }
                }
                Some((_, at)) if at.elapsed() > Duration::from_secs(15) => {
                    // The clean-up itself hangs: take the whole namespace down.
                    unsafe {
                        libc::kill(-pgid, libc::SIGKILL);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Some((_, at)) => {
                    // Processes started while the first pass ran.
                    if at.elapsed() > Duration::from_millis(200) {
                        kill_uid(uid);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Readers end when every writer is gone (the PID namespace dies with bwrap).
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let report = status_t.join().unwrap_or_default();
        let oom = cgroup.as_ref().map(|c| c.oom_kills() > 0).unwrap_or(false);
        drop(cgroup);
        if !report.lines().any(|l| l == "ready") && stopped.is_none() {
            let code = status.and_then(|s| s.code());
            bail!("the sandbox could not start (bwrap exit {code:?}): {}", stderr.trim());
        }
        let rc = report.lines().find_map(|l| l.strip_prefix("rc=")).and_then(|v| v.trim().parse::<i32>().ok());
        let ending = match (stopped, rc) {
            (Some((e, _)), _) => e,
            _ if over.load(Ordering::Relaxed) => Ending::OutputLimit,
            _ if oom => Ending::MemoryLimit,
            (None, Some(c)) => Ending::Exit(c),
            (None, None) => {
                use std::os::unix::process::ExitStatusExt;
                match status.map(|s| (s.code(), s.signal())) {
                    Some((Some(c), _)) => Ending::Exit(c),
                    Some((None, Some(s))) => Ending::Signal(s),
                    _ => Ending::Exit(-1),
                }
            }
        };
        Ok(Outcome { ending, stdout, stderr, wall: t0.elapsed(), uid })
    }

    /// bubblewrap's arguments: the minimal root, the namespaces, the setup script and its
    /// arguments.
    fn bwrap_args(&self, work: &Path, uid: u32, argv: &[String], limits: &Limits) -> Result<Vec<String>> {
        let mut a: Vec<String> = vec![];
        let mut arg = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        for d in SYSTEM_DIRS {
            let p = Path::new(d);
            match std::fs::read_link(p) {
                Ok(target) => arg(&["--symlink", &target.display().to_string(), d]),
                Err(_) if p.is_dir() => arg(&["--ro-bind", d, d]),
                Err(_) => {}
            }
        }
        // /proc is mounted by the setup script, plainly (bubblewrap's --proc covers parts of it,
        // which forbids the nested PID namespaces the security tests give each program).
        arg(&["--dev", "/dev", "--dir", "/proc", "--dir", "/tmp", "--dir", "/etc"]);
        for f in ETC_FILES {
            arg(&["--ro-bind-try", f, f]);
        }
        arg(&["--perms", "0700", "--dir", "/run/dg", "--dir", "/run/dg/box"]);
        // What the run may read: venvs (with the interpreter behind them) and exposed paths.
        let mut shown: Vec<PathBuf> = vec![];
        for bin in &self.path_prepend {
            let Ok(bin) = bin.canonicalize() else { continue };
            if under(&bin, work) {
                continue;
            }
            let venv = bin.parent().filter(|v| v.join("pyvenv.cfg").is_file()).map(Path::to_path_buf);
            shown.push(venv.unwrap_or_else(|| bin.clone()));
            if let Some(home) = python_home(&bin) {
                shown.push(home);
            }
        }
        for p in &self.expose {
            shown.push(p.canonicalize().with_context(|| format!("{}: exposed to the sandbox but missing", p.display()))?);
        }
        let mut staged: Vec<(PathBuf, PathBuf)> = vec![];
        let mut direct: Vec<(PathBuf, PathBuf)> = vec![];
        shown.sort();
        shown.dedup();
        let mut bound: Vec<&Path> = vec![];
        for p in &shown {
            if under(p, work) || SYSTEM_DIRS.iter().any(|d| under(p, Path::new(d))) || bound.iter().any(|b| under(p, b)) {
                continue;
            }
            if under(work, p) {
                bail!("{}: an exposed folder may not hold the sandbox's work folder {}", p.display(), work.display());
            }
            bound.push(p);
            direct.push((p.clone(), p.clone()));
        }
        for (o, i) in &self.ro_binds {
            let o = o.canonicalize().with_context(|| format!("{}: bound into the sandbox but missing", o.display()))?;
            let i = match i.strip_prefix(&self.work) {
                Ok(rest) => work.join(rest),
                Err(_) => i.clone(),
            };
            direct.push((o, i));
        }
        // Destinations in the work folder or /tmp lie on the capped tmpfs that the setup script
        // mounts: bound by the script from a staging path; the others by bubblewrap, after
        // their parent folders (bubblewrap would make those 0700, closed to the program).
        let mut made: Vec<PathBuf> = vec![];
        for (o, i) in direct {
            if under(&i, work) || under(&i, Path::new("/tmp")) {
                let stage = format!("/run/dg/s{}", staged.len());
                arg(&["--ro-bind", &o.display().to_string(), &stage]);
                staged.push((PathBuf::from(stage), i));
            } else {
                let mut parents: Vec<&Path> = i.ancestors().skip(1).take_while(|d| *d != Path::new("/")).collect();
                parents.reverse();
                for d in parents {
                    if !made.iter().any(|m| m == d) {
                        arg(&["--perms", "0755", "--dir", &d.display().to_string()]);
                        made.push(d.to_path_buf());
                    }
                }
                arg(&["--ro-bind", &o.display().to_string(), &i.display().to_string()]);
            }
        }
        let w = work.display().to_string();
        arg(&["--bind", &w, "/run/dg/host"]);
        arg(&["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]);
        arg(&["--die-with-parent", "--new-session", "--clearenv"]);
        for c in ["CAP_SETUID", "CAP_SETGID", "CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_FOWNER", "CAP_KILL"] {
            arg(&["--cap-add", c]);
        }
        arg(&["--", "/bin/sh", "-c", INIT, "deepguard-sandbox"]);
        a.extend([uid.to_string(), w.clone(), limits.disk_bytes.max(1 << 20).to_string(), limits.disk_files.max(64).to_string()]);
        for (s, d) in staged {
            a.extend([s.display().to_string(), d.display().to_string()]);
        }
        a.push("--".into());
        // The program's environment, then setpriv and the program.
        let mut path = self.path_prepend.iter().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()).display().to_string()).collect::<Vec<_>>();
        path.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from));
        let mut env = vec![
            ("PATH".to_string(), path.join(":")),
            ("HOME".to_string(), format!("{w}/.home")),
            ("TMPDIR".to_string(), "/tmp".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
        ];
        env.extend(self.env.iter().cloned());
        for (k, v) in env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                bail!("sandbox: bad environment variable {k:?}");
            }
            a.push(format!("{k}={v}"));
        }
        let u = uid.to_string();
        a.extend(["/usr/bin/setpriv".into(), format!("--reuid={u}"), format!("--regid={u}")]);
        a.extend(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"].map(String::from));
        // Absolute paths in argv are resolved on the host (a `repo/../shared` path would not
        // resolve inside, where the checkout is absent).
        a.extend(argv.iter().map(|s| match Path::new(s).canonicalize() {
            Ok(c) if s.starts_with('/') => c.display().to_string(),
            _ => s.clone(),
        }));
        Ok(a)
    }
}

fn under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}

/// The installation prefix of the interpreter behind a venv's `bin` folder (its `python3`),
/// when it lies outside the system folders (pyenv under `/root`, `/opt/python`, …).
fn python_home(bin: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(bin.join("python3")).or_else(|_| std::fs::canonicalize(bin.join("python"))).ok()?;
    let prefix = real.parent()?.parent()?.to_path_buf();
    (prefix != Path::new("/") && prefix.components().count() > 1).then_some(prefix)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sandbox: pipe");
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Kills every live process whose real uid is `uid` (the run's processes: the uid is unique to
/// the run), pass after pass until none is left (a fork bomb's children die with it: each pass
/// kills every process it saw, and only a live process can start another).
fn kill_uid(uid: u32) {
    for _ in 0..100 {
        let pids = processes_of(uid);
        if pids.is_empty() {
            return;
        }
        for (pid, _) in pids {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// (pid, RssAnon bytes) of every live (not zombie) process whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<(i32, u64)> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    let mut v = vec![];
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(s) = std::fs::read_to_string(e.path().join("status")) else { continue };
        let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        if field("Uid:").and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<u32>().ok()) != Some(uid) {
            continue;
        }
        if field("State:").is_some_and(|st| st.starts_with('Z') || st.starts_with('X')) {
            continue;
        }
        let rss = field("RssAnon:").and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) * 1024;
        v.push((pid, rss));
    }
    v
}

/// In the child before exec: every descriptor from `first` on closes at exec.
fn cloexec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r != 0 {
        for fd in first as i32..4096 {
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// Private anonymous memory (RssAnon) of the run's processes together, in bytes.
fn resident_bytes(uid: u32) -> u64 {
    processes_of(uid).iter().map(|p| p.1).sum()
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

/// Memory limits by cgroup v2: a child cgroup per run with `memory.max` (and `memory.swap.max`
/// 0, `pids.max`) under the harness's own cgroup, when that cgroup is writable and offers the
/// memory controller to its children. `DEEPGUARD_SANDBOX_CGROUP` names another delegated
/// cgroup v2 folder to use, or `off`.
pub mod cgroup {
    use super::Limits;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    static BROKEN: AtomicBool = AtomicBool::new(false);

    /// No more cgroups in this process (one could not be joined); says why once.
    pub fn disable(why: &str) {
        if !BROKEN.swap(true, Ordering::Relaxed) {
            eprintln!("warning: sandbox memory limits fall back to the watchdog ({why})");
        }
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);

    /// The cgroup v2 folder under which runs get their own cgroups, if there is a usable one.
    pub fn parent() -> Option<&'static Path> {
        static P: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        if BROKEN.load(Ordering::Relaxed) {
            return None;
        }
        P.get_or_init(find_parent).as_deref()
    }

    fn find_parent() -> Option<PathBuf> {
        let dir = match std::env::var("DEEPGUARD_SANDBOX_CGROUP") {
            Ok(v) if v == "off" => return None,
            Ok(v) if !v.is_empty() => PathBuf::from(v),
            _ => own_cgroup_dir(&std::fs::read_to_string("/proc/self/cgroup").ok()?, &std::fs::read_to_string("/proc/self/mountinfo").ok()?)?,
        };
        let has_memory = |d: &Path| std::fs::read_to_string(d.join("cgroup.subtree_control")).is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"));
        if !has_memory(&dir) {
            // Offer the memory controller to children; refused (EBUSY) when this cgroup holds
            // processes and is not the root, (EACCES) when it is not delegated to us.
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids");
        }
        has_memory(&dir).then_some(dir)
    }

    /// The harness's cgroup v2 folder, from `/proc/self/cgroup` (`0::/path`) and the cgroup2
    /// mount in `/proc/self/mountinfo`.
    pub fn own_cgroup_dir(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
        let rel = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
        let mount = mountinfo.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })?;
        Some(mount.join(rel.trim_start_matches('/')))
    }

    pub struct Cgroup {
        dir: PathBuf,
    }

    impl Cgroup {
        /// A fresh cgroup for one run (None: no usable cgroup v2 here; the watchdog applies).
        pub fn create(uid: u32, limits: &Limits) -> Option<Cgroup> {
            let parent = parent()?;
            let dir = parent.join(format!("deepguard-{}-{uid}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
            if std::fs::create_dir(&dir).is_err() {
                BROKEN.store(true, Ordering::Relaxed);
                return None;
            }
            let cg = Cgroup { dir };
            if std::fs::write(cg.dir.join("memory.max"), limits.rss_bytes.to_string()).is_err() {
                BROKEN.store(true, Ordering::Relaxed);
                return None;
            }
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
            let _ = std::fs::write(cg.dir.join("pids.max"), (limits.nproc + 16).to_string());
            Some(cg)
        }

        pub fn procs_path(&self) -> std::ffi::CString {
            std::ffi::CString::new(self.dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap_or_default()
        }

        /// Whether process `pid` is in this cgroup.
        pub fn holds(&self, pid: u32) -> bool {
            std::fs::read_to_string(self.dir.join("cgroup.procs")).is_ok_and(|s| s.lines().any(|l| l.trim() == pid.to_string()))
        }

        /// Processes the kernel's OOM killer ended in this cgroup.
        pub fn oom_kills(&self) -> u64 {
            std::fs::read_to_string(self.dir.join("memory.events"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok())))
                .unwrap_or(0)
        }
    }

    impl Drop for Cgroup {
        fn drop(&mut self) {
            let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
            // EBUSY while the killed processes are still leaving.
            for _ in 0..200 {
                match std::fs::remove_dir(&self.dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(10)),
                    _ => return,
                }
            }
        }
    }

    /// In the child before exec (async-signal-safe, no allocation): moves the calling process
    /// into the cgroup (`0` names the writer itself). The parent checks with [`Cgroup::holds`].
    pub fn join(procs: &std::ffi::CStr) {
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn finds_the_own_cgroup_v2_folder() {
            let mi = "24 1 0:22 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n30 24 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
            assert_eq!(super::own_cgroup_dir("4:memory:/a\n0::/user.slice/x\n", mi).unwrap(), std::path::PathBuf::from("/sys/fs/cgroup/unified/user.slice/x"));
            assert_eq!(super::own_cgroup_dir("0::/\n", mi).unwrap(), std::path::PathBuf::from("/sys/fs/cgroup/unified"));
            assert!(super::own_cgroup_dir("4:memory:/a\n", mi).is_none());
            assert!(super::own_cgroup_dir("0::/\n", "24 1 0:22 / /sys rw - sysfs sysfs rw\n").is_none());
        }
    }
}

#[cfg(test)]
mod log_tests {
    use super::{Ending, Outcome};

    #[test]
    fn a_log_tail_cuts_at_a_character_boundary() {
        // gcc quotes names with U+2018/U+2019 (3 bytes each); a byte cut can land inside one.
        let o = Outcome { ending: Ending::Exit(0), stdout: String::new(), stderr: "note: include \u{2018}<string.h>\u{2019}".into(), wall: std::time::Duration::ZERO, uid: 0 };
        let full = o.log_tail(10_000);
        assert!(full.starts_with("[Exit(0) after 0.0s]\n") && full.ends_with("\u{2019}"), "{full}");
        for n in 0..full.len() {
            let t = o.log_tail(n);
            // At most n bytes, a suffix of the log, and short by less than one character.
            assert!(t.len() <= n && full.ends_with(&t) && t.len() + 3 > n.min(full.len()), "{n}: {t:?}");
        }
    }
}
