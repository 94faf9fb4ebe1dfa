//! What a sandboxed run may use ([`Limits`], with the cgroup v2 memory limit) and how it ended
//! ([`Outcome`]).

use std::time::Duration;


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
