//! Supervising a run from the outside: spawning bubblewrap, feeding stdin, draining capped
//! output, the wall clock, the memory watchdog, and killing every process of the run's uid.

use super::{cgroup, Ending, Limits, Outcome, Sandbox};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Sandbox {
    pub(super) fn spawn_and_wait(&self, a: &[String], uid: u32, stdin: &[u8], limits: &Limits, mut cgroup: Option<cgroup::Cgroup>) -> Result<Outcome> {
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
