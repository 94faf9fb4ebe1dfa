//! Hostile programs run in the sandbox. Each test names one containment promise and asserts it
//! specifically (the errno the program met, what is left on the host), that the program is
//! reported as a failed sample where it misbehaves, and that the harness keeps going (every
//! test runs more programs after the hostile one, in the same process). docs/security.md lists
//! the promises and counts these tests.

use deepguard_eval::sandbox::{check_available, Ending, Limits, Outcome, Sandbox};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn limits() -> Limits {
    Limits {
        wall: Duration::from_secs(5),
        cpu_secs: 3,
        mem_bytes: Some(1 << 30),
        rss_bytes: 1 << 30,
        nproc: 32,
        fsize_bytes: 8 << 20,
        disk_bytes: 32 << 20,
        disk_files: 2000,
        output_bytes: 64 << 10,
    }
}

fn py_with(sb: &Sandbox, code: &str, lim: &Limits) -> Outcome {
    std::fs::write(sb.work.join("prog.py"), code).unwrap();
    // Unbuffered: what a program prints before it is killed still shows.
    sb.run(&["python3".into(), "-u".into(), "prog.py".into()], b"", lim).unwrap()
}

fn py(sb: &Sandbox, code: &str) -> Outcome {
    py_with(sb, code, &limits())
}

fn sandbox() -> (tempfile::TempDir, Sandbox) {
    check_available().expect("bubblewrap must work here (scripts/setup.sh installs it)");
    let t = tempfile::tempdir().unwrap();
    let sb = Sandbox::new(t.path());
    (t, sb)
}

/// The harness goes on after a hostile program: the next program runs normally.
fn still_works(sb: &Sandbox) {
    let o = py(sb, "print('next')\n");
    assert!(o.success() && o.stdout.trim() == "next", "the harness could not run the next program: {o:?}");
}

/// Processes still running as `uid` once the kernel has had up to 5 s to tear the namespace down.
fn leftover_processes(uid: u32) -> usize {
    for _ in 0..50 {
        if count_processes(uid) == 0 {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    count_processes(uid)
}

fn count_processes(uid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("status")) {
            let zombie = s.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
            if let Some(l) = s.lines().find(|l| l.starts_with("Uid:")) {
                let u: u32 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
                if u == uid && !zombie {
                    n += 1;
                }
            }
        }
    }
    n
}

/// Every file under `dir` (no symlinks followed), with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push((e.path(), std::fs::read(e.path()).unwrap_or_default()));
            } else {
                out.push((e.path(), vec![]));
            }
        }
    }
    out
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

#[test]
fn a_normal_program_runs_and_its_output_comes_back() {
    let (_t, sb) = sandbox();
    let o = py(&sb, "import sys, os\nprint('hello', sys.stdin.read())\nopen('out.txt','w').write('x')\nos.makedirs('/tmp/unpack')\nos.makedirs('sub/dir')\nopen('sub/dir/f', 'w').write('y')\n");
    assert!(o.success(), "{o:?}");
    assert_eq!(o.stdout.trim(), "hello");
    assert_eq!(std::fs::read_to_string(sb.work.join("out.txt")).unwrap(), "x", "the work folder comes back");
    assert_eq!(std::fs::read_to_string(sb.work.join("sub/dir/f")).unwrap(), "y");
    still_works(&sb);
}

/// The root holds the system folders, a synthetic /etc, the run's own paths, and nothing else.
#[test]
fn the_root_is_minimal_and_the_user_unprivileged() {
    let (_t, sb) = sandbox();
    let code = "import os, pwd\n\
        print('ROOT', sorted(os.listdir('/')))\n\
        print('ETC', sorted(os.listdir('/etc')))\n\
        for p in ['/home', '/var', '/sys', '/opt', '/srv', '/mnt', '/media', '/boot', '/etc/shadow', '/etc/ssh', '/etc/hostname', '/root/.bashrc', '/run/dg']:\n\
        \x20   try:\n\
        \x20       os.listdir(p) if os.path.isdir(p) else open(p).read()\n\
        \x20       print('VISIBLE', p)\n\
        \x20   except OSError as e:\n\
        \x20       print('ABSENT', p, e.errno)\n\
        s = open('/proc/self/status').read()\n\
        print('STATUS', [l for l in s.splitlines() if l.split(':')[0] in ('Uid', 'CapEff', 'CapPrm', 'CapBnd', 'CapAmb', 'NoNewPrivs')])\n\
        print('USER', pwd.getpwuid(os.getuid()).pw_name, os.getuid())\n";
    let o = py(&sb, code);
    assert!(o.success(), "{o:?}");
    let line = |k: &str| o.stdout.lines().find(|l| l.starts_with(k)).unwrap_or_default().to_string();
    let allowed_top = ["bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "root", "run", "sbin", "tmp", "usr", "work"];
    let work_top = sb.work.canonicalize().unwrap().components().nth(1).unwrap().as_os_str().to_string_lossy().into_owned();
    let root = line("ROOT");
    for name in root.trim_start_matches("ROOT [").trim_end_matches(']').split(", ") {
        let name = name.trim_matches('\'');
        assert!(allowed_top.contains(&name) || name == work_top, "unexpected /{name} in the sandbox's root: {root}");
    }
    let etc = line("ETC");
    for name in etc.trim_start_matches("ETC [").trim_end_matches(']').split(", ") {
        let name = name.trim_matches('\'');
        assert!(["alternatives", "group", "hosts", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd"].contains(&name), "unexpected /etc/{name}: {etc}");
    }
    assert!(!o.stdout.contains("VISIBLE"), "{}", o.stdout);
    assert_eq!(o.stdout.matches("ABSENT").count(), 13, "{}", o.stdout);
    // /run/dg (the harness's staging) exists but is closed to the program: EACCES, the rest ENOENT.
    assert!(o.stdout.contains("ABSENT /run/dg 13"), "{}", o.stdout);
    let status = line("STATUS");
    assert!(status.contains(&format!("Uid:\\t{u}\\t{u}\\t{u}\\t{u}", u = o.uid)), "{status}");
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert!(status.contains(&format!("{cap}:\\t0000000000000000")), "{cap} not empty: {status}");
    }
    assert!(status.contains("NoNewPrivs:\\t1"), "{status}");
    assert_eq!(line("USER"), format!("USER sandbox {}", o.uid));
    // A setuid-root binary does not elevate (no_new_privs).
    let o = sb.run(&["sh".into(), "-c".into(), "for b in /usr/bin/su /usr/bin/passwd /usr/bin/mount; do [ -u $b ] && echo setuid $b; done; /usr/bin/mount -t tmpfs x /tmp 2>&1; echo mount=$?".into()], b"", &limits()).unwrap();
    assert!(o.stdout.contains("mount=") && !o.stdout.contains("mount=0"), "{o:?}");
    still_works(&sb);
}

#[test]
fn infinite_loop_and_sleeping_children_are_killed() {
    let (_t, sb) = sandbox();
    // Killed by the CPU limit (soft = hard: the kernel's SIGKILL, 128 + 9), well before the
    // wall clock (generous here: on a loaded machine CPU time accrues slower than wall time).
    let o = py_with(&sb, "while True:\n    pass\n", &Limits { cpu_secs: 2, wall: Duration::from_secs(30), ..limits() });
    assert_eq!(o.ending, Ending::Exit(128 + libc::SIGKILL), "{o:?}");
    assert!(o.wall < Duration::from_secs(25), "{o:?}");
    // A program that leaves a child sleeping and then hangs: wall timeout, child gone too.
    let o = py(&sb, "import subprocess, time\nsubprocess.Popen(['sleep', '1000'])\ntime.sleep(1000)\n");
    assert_eq!(o.ending, Ending::WallTimeout);
    assert!(o.wall < Duration::from_secs(8), "{:?}", o.wall);
    assert_eq!(leftover_processes(o.uid), 0, "no sandboxed process survives");
    still_works(&sb);
}

#[test]
fn fork_bomb_is_contained() {
    let (_t, sb) = sandbox();
    // Forks until the process limit refuses: EAGAIN after fewer than nproc processes.
    let o = py(&sb, "import os, time\nn = 0\nwhile True:\n    try:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\n    except OSError as e:\n        print('refused', e.errno, n)\n        break\nos.kill(-1, 9)\n");
    assert!(o.stdout.contains(&format!("refused {} ", libc::EAGAIN)), "{o:?}");
    let n: u64 = o.stdout.split_whitespace().last().unwrap().parse().unwrap();
    assert!(n < limits().nproc, "{n} forks");
    // A real fork bomb (every process forks forever): ended by the wall clock, nothing left.
    let o = py(&sb, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n");
    assert_eq!(o.ending, Ending::WallTimeout, "{o:?}");
    assert!(o.wall < Duration::from_secs(9), "{:?}", o.wall);
    assert_eq!(leftover_processes(o.uid), 0);
    still_works(&sb);
}

#[test]
fn memory_bomb_fails() {
    let (_t, sb) = sandbox();
    // Address-space limit: the allocation itself fails.
    let o = py(&sb, "try:\n    x = bytearray(4 << 30)\n    print('allocated')\nexcept MemoryError:\n    print('refused')\n    raise SystemExit(3)\n");
    assert_eq!((o.ending.clone(), o.stdout.trim()), (Ending::Exit(3), "refused"), "{o:?}");
    let o = py(&sb, "xs = []\ntry:\n    while True:\n        xs.append(bytearray(50 << 20))\nexcept MemoryError:\n    print('refused', len(xs))\n    raise SystemExit(3)\n");
    assert_eq!(o.ending, Ending::Exit(3), "{o:?}");
    // No address-space limit (an AddressSanitizer run): the limit on the run's resident memory
    // ends it (cgroup memory.max where available, else the watchdog), across processes too.
    let lim = Limits { mem_bytes: None, rss_bytes: 300 << 20, wall: Duration::from_secs(20), cpu_secs: 20, ..limits() };
    let o = py_with(&sb, "import os, time\nos.fork()\nxs = []\nwhile True:\n    xs.append(bytearray(20 << 20))\n    time.sleep(0.02)\n", &lim);
    assert_eq!(o.ending, Ending::MemoryLimit, "{o:?}");
    assert!(o.wall < Duration::from_secs(15), "{:?}", o.wall);
    assert_eq!(leftover_processes(o.uid), 0);
    still_works(&sb);
}

#[test]
fn network_is_unreachable_but_loopback_works() {
    let (_t, sb) = sandbox();
    let code = "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('1.1.1.1', 80))\n    print('connected')\nexcept OSError as e:\n    print('blocked', e.errno)\n    raise SystemExit(3)\n";
    let o = py(&sb, code);
    assert_eq!(o.ending, Ending::Exit(3), "{o:?}");
    assert_eq!(o.stdout.trim(), format!("blocked {}", libc::ENETUNREACH));
    // Loopback is up (some tests start a local server), and localhost resolves.
    let lo = "import socket\nsrv = socket.socket()\nsrv.bind(('localhost', 0))\nsrv.listen()\nc = socket.create_connection(srv.getsockname())\nprint('ok')\n";
    let o = py(&sb, lo);
    assert!(o.success() && o.stdout.contains("ok"), "{o:?}");
    still_works(&sb);
}

/// A Unix socket (a path and an abstract name) and a TCP listener opened by the test on the
/// host: the program reaches none of them.
#[test]
fn host_sockets_are_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let (_t, sb) = sandbox();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("host.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    unix.set_nonblocking(true).unwrap();
    let name = format!("dg-hostile-{}", std::process::id());
    let abs = std::os::unix::net::UnixListener::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    abs.set_nonblocking(true).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let code = format!(
        "import socket\n\
        def tryit(label, fam, addr):\n\
        \x20   s = socket.socket(fam)\n\
        \x20   s.settimeout(2)\n\
        \x20   try:\n\
        \x20       s.connect(addr)\n\
        \x20       s.sendall(b'hello')\n\
        \x20       print(label, 'connected')\n\
        \x20   except OSError as e:\n\
        \x20       print(label, 'refused', e.errno)\n\
        tryit('unix', socket.AF_UNIX, {path:?})\n\
        tryit('abstract', socket.AF_UNIX, '\\0{name}')\n\
        tryit('tcp', socket.AF_INET, ('127.0.0.1', {port}))\n\
        tryit('tcp-localhost', socket.AF_INET, ('localhost', {port}))\n",
        path = path.display().to_string()
    );
    let o = py(&sb, &code);
    assert!(o.success(), "{o:?}");
    assert!(!o.stdout.contains("connected"), "{}", o.stdout);
    assert!(o.stdout.contains(&format!("unix refused {}", libc::ENOENT)), "{}", o.stdout);
    assert!(o.stdout.contains(&format!("abstract refused {}", libc::ECONNREFUSED)), "{}", o.stdout);
    assert!(o.stdout.contains(&format!("tcp refused {}", libc::ECONNREFUSED)), "{}", o.stdout);
    for (what, r) in [("unix", unix.accept().map(|_| ())), ("abstract", abs.accept().map(|_| ())), ("tcp", tcp.accept().map(|_| ()))] {
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "the {what} listener got a connection");
    }
    still_works(&sb);
}

/// A process of the host (this test's child) can be neither signalled nor traced.
#[test]
fn host_processes_cannot_be_signalled_or_traced() {
    let (_t, sb) = sandbox();
    let mut victim = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let pid = victim.id();
    let code = format!(
        "import ctypes, os, signal\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        for sig in (signal.SIGKILL, signal.SIGSTOP):\n\
        \x20   try:\n\
        \x20       os.kill({pid}, sig)\n\
        \x20       print('signalled')\n\
        \x20   except OSError as e:\n\
        \x20       print('kill', e.errno)\n\
        for target in ({pid}, 1):\n\
        \x20   r = libc.ptrace(16, target, None, None)\n\
        \x20   print('ptrace', target, r, ctypes.get_errno())\n\
        try:\n\
        \x20   os.kill(-1, signal.SIGKILL)\n\
        except OSError as e:\n\
        \x20   print('kill-all', e.errno)\n"
    );
    let o = py(&sb, &code);
    // kill(-1) reaches only the program's own processes (on Linux not the caller itself).
    assert!(o.success(), "{o:?}");
    assert!(!o.stdout.contains("signalled"), "{}", o.stdout);
    assert_eq!(o.stdout.matches(&format!("kill {}", libc::ESRCH)).count(), 2, "{}", o.stdout);
    assert!(o.stdout.contains(&format!("ptrace {pid} -1 {}", libc::ESRCH)), "{}", o.stdout);
    assert!(o.stdout.contains(&format!("ptrace 1 -1 {}", libc::EPERM)), "{}", o.stdout);
    std::thread::sleep(Duration::from_millis(200));
    assert!(victim.try_wait().unwrap().is_none(), "the host process was killed");
    victim.kill().unwrap();
    victim.wait().unwrap();
    still_works(&sb);
}

/// setsid + double fork: the daemon dies with the run and never writes anything afterwards.
#[test]
fn daemons_do_not_outlive_the_run() {
    let (_t, sb) = sandbox();
    let code = "import os, time\n\
        if os.fork() == 0:\n\
        \x20   os.setsid()\n\
        \x20   if os.fork() == 0:\n\
        \x20       time.sleep(2)\n\
        \x20       open('late.txt', 'w').write('still here')\n\
        \x20       os._exit(0)\n\
        \x20   os._exit(0)\n\
        print('parent done')\n";
    let o = py(&sb, code);
    assert!(o.success() && o.stdout.contains("parent done"), "{o:?}");
    assert_eq!(count_processes(o.uid), 0, "the daemon outlived the run");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!sb.work.join("late.txt").exists(), "the daemon wrote after the run");
    assert_eq!(leftover_processes(o.uid), 0);
    still_works(&sb);
}

#[test]
fn writing_and_deleting_outside_the_work_folder_fail() {
    let (_t, sb) = sandbox();
    let outside = tempfile::tempdir_in(repo().join("target").canonicalize().unwrap_or_else(|_| std::env::temp_dir())).unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "keep").unwrap();
    let new = outside.path().join("new.txt");
    let code = format!(
        "import os\n\
        for label, f in [('new', lambda: open({new:?}, 'w').write('x')), ('remove', lambda: os.remove({victim:?})), ('overwrite', lambda: open({victim:?}, 'w').write('gone')), ('etc', lambda: open('/etc/evil', 'w')), ('usr', lambda: open('/usr/evil', 'w')), ('passwd', lambda: open('/etc/passwd', 'a'))]:\n\
        \x20   try:\n\
        \x20       f()\n\
        \x20       print('did', label)\n\
        \x20   except OSError as e:\n\
        \x20       print('refused', label, e.errno)\n",
        new = new.display().to_string(),
        victim = victim.display().to_string()
    );
    let o = py(&sb, &code);
    assert!(o.success(), "{o:?}");
    assert!(!o.stdout.contains("did"), "{}", o.stdout);
    // The host folder is not there at all; the root and system folders are read-only; the
    // synthetic /etc/passwd belongs to root.
    for (label, errno) in [("new", libc::ENOENT), ("remove", libc::ENOENT), ("overwrite", libc::ENOENT), ("etc", libc::EROFS), ("usr", libc::EROFS), ("passwd", libc::EACCES)] {
        assert!(o.stdout.contains(&format!("refused {label} {errno}")), "{label}: {}", o.stdout);
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert!(!new.exists());
    assert!(!Path::new("/etc/evil").exists() && !Path::new("/usr/evil").exists());
    still_works(&sb);
}

/// Canary files planted outside the work folder (in the checkout, in /etc, under the user's
/// home, in the host's /tmp, next to the work folder, next to an exposed folder) are absent in
/// the sandbox; their secrets never appear in what comes back (output or work folder), neither
/// for a direct open nor for a search of everything the program can list.
#[test]
fn canaries_outside_the_work_folder_are_unread() {
    let (_t, sb) = sandbox();
    let mut sb = sb;
    let exposed = tempfile::tempdir().unwrap();
    std::fs::write(exposed.path().join("ok.txt"), "visible").unwrap();
    sb.expose.push(exposed.path().to_path_buf());
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let tag = format!("{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let mut places = vec![
        repo().join(format!(".dg-canary-{tag}")),
        home.join(format!(".dg-canary-{tag}")),
        std::env::temp_dir().join(format!("dg-canary-{tag}")),
        sb.work.parent().unwrap().join(format!("dg-canary-{tag}")),
        exposed.path().parent().unwrap().join(format!("dg-canary-x-{tag}")),
    ];
    if unsafe { libc::geteuid() } == 0 {
        places.push(PathBuf::from(format!("/etc/dg-canary-{tag}")));
    }
    let mut planted = vec![];
    for (i, p) in places.iter().enumerate() {
        let secret = format!("DGSECRET{i}x{tag}");
        if std::fs::write(p, &secret).is_ok() {
            planted.push((p.clone(), secret));
        }
    }
    struct Cleanup(Vec<PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let _cleanup = Cleanup(planted.iter().map(|p| p.0.clone()).collect());
    assert!(planted.len() >= 5, "could not plant the canaries");
    let paths: Vec<String> = planted.iter().map(|p| p.0.display().to_string()).collect();
    let readme = repo().join("README.md").display().to_string();
    let code = format!(
        "import os\n\
        for p in {paths:?} + [{readme:?}]:\n\
        \x20   try:\n\
        \x20       print('READ', p, open(p).read())\n\
        \x20   except OSError as e:\n\
        \x20       print('absent', e.errno)\n\
        found = 0\n\
        for top in ['/']:\n\
        \x20   for d, dirs, files in os.walk(top):\n\
        \x20       dirs[:] = [x for x in dirs if os.path.join(d, x) not in ('/proc', '/sys', '/dev', '/usr')]\n\
        \x20       for f in files:\n\
        \x20           found += 1\n\
        \x20           if 'canary' in f or f == 'README.md':\n\
        \x20               try:\n\
        \x20                   print('FOUND', os.path.join(d, f), open(os.path.join(d, f)).read()[:200])\n\
        \x20               except OSError:\n\
        \x20                   pass\n\
        open('copy.txt', 'w').write(str(found))\n\
        print('walked', found)\n\
        print(open({ok:?}).read())\n",
        ok = exposed.path().join("ok.txt").display().to_string()
    );
    let o = py(&sb, &code);
    assert!(o.success(), "{o:?}");
    assert!(o.stdout.contains("visible"), "the exposed folder is readable: {o:?}");
    assert_eq!(o.stdout.matches(&format!("absent {}", libc::ENOENT)).count(), planted.len() + 1, "{}", o.stdout);
    let back = files_under(&sb.work);
    for (p, secret) in &planted {
        assert!(!o.stdout.contains(secret.as_str()) && !o.stderr.contains(secret.as_str()), "canary {} was read: {o:?}", p.display());
        for (f, bytes) in &back {
            assert!(!String::from_utf8_lossy(bytes).contains(secret.as_str()), "canary {} in {}", p.display(), f.display());
        }
    }
    assert!(!o.stdout.contains("deepguard is a Rust toolkit"), "the checkout's README was read");
    still_works(&sb);
}

/// The issue's own path: a completion run by a benchmark's unit test (what `eval --no-generate`
/// does with a stored sample) cannot bring a file from outside into the test log.
#[test]
fn a_unit_tested_completion_cannot_leak_host_files_into_the_log() {
    use deepguard_eval::functional::Runner;
    use deepguard_eval::scenario::discover;
    check_available().unwrap();
    let data = repo().join("../shared/data/eval");
    let venv = repo().join(".venv/bin");
    assert!(venv.join("python").exists(), "run scripts/setup.sh first (creates .venv)");
    let runner = Runner { venv_bin: venv, root: data.clone(), slack: Duration::ZERO };
    let sc = discover(&data, &["base/cwe-089/0-py".to_string()]).unwrap().remove(0);
    let tag = format!("DGSECRET-log-{}", std::process::id());
    let canary = repo().join(format!(".dg-canary-log-{}", std::process::id()));
    std::fs::write(&canary, &tag).unwrap();
    let leak = format!(
        "\n    return 'ok'\n\nimport glob as _g\nfor _p in [{c:?}, {r:?}, '/etc/shadow', {sec:?}] + _g.glob('/work/*/README.md'):\n    try:\n        print('LEAK', open(_p).read()[:300])\n    except OSError as _e:\n        print('absent', _p, _e.errno)\n",
        c = canary.display().to_string(),
        r = repo().join("README.md").display().to_string(),
        sec = data.join("sec_eval/base/cwe-089/0-py/info.json").display().to_string(),
    );
    let program = format!("{}{leak}", sc.prompt());
    let recs = runner.test_programs(&sc, &[(0, program)]);
    let _ = std::fs::remove_file(&canary);
    let recs = recs.unwrap();
    assert!(!recs[0].functional, "the leaking completion is a failed sample");
    // The completion ran (its own report of each attempt is in the log) and found nothing.
    assert_eq!(recs[0].log.matches(&format!(" {}\n", libc::ENOENT)).count(), 4, "{}", recs[0].log);
    assert!(!recs[0].log.contains("LEAK"), "{}", recs[0].log);
    assert!(!recs[0].log.contains(&tag), "the canary reached the log: {}", recs[0].log);
    assert!(!recs[0].log.contains("deepguard is a Rust toolkit"), "the README reached the log: {}", recs[0].log);
    assert!(!recs[0].log.contains("\"cwe\""), "the benchmark's scenario files reached the log: {}", recs[0].log);
}

/// Filling the writable area (one large file, many small files, /tmp) fails with ENOSPC inside
/// the sandbox; the host gets back at most the area's size.
#[test]
fn filling_the_disk_fails_the_sample_not_the_host() {
    let (_t, sb) = sandbox();
    let lim = Limits { fsize_bytes: 64 << 20, ..limits() };
    let big = "import os\ni = 0\ntry:\n    while True:\n        with open(f'big{i}', 'wb') as f:\n            for _ in range(8):\n                f.write(b'x' * (1 << 20))\n        i += 1\nexcept OSError as e:\n    print('full', e.errno, i)\n    raise SystemExit(3)\n";
    let o = py_with(&sb, big, &lim);
    assert_eq!(o.ending, Ending::Exit(3), "{o:?}");
    assert!(o.stdout.starts_with(&format!("full {}", libc::ENOSPC)), "{}", o.stdout);
    let total: usize = files_under(&sb.work).iter().map(|f| f.1.len()).sum();
    assert!(total <= lim.disk_bytes as usize, "{total} bytes came back");
    let many = "import os\nos.makedirs('many', exist_ok=True)\ni = 0\ntry:\n    while True:\n        open(f'many/f{i}', 'w').close()\n        i += 1\nexcept OSError as e:\n    print('full', e.errno, i)\n    raise SystemExit(3)\n";
    let o = py_with(&sb, many, &lim);
    assert_eq!(o.ending, Ending::Exit(3), "{o:?}");
    assert!(o.stdout.starts_with(&format!("full {}", libc::ENOSPC)), "{}", o.stdout);
    let n = files_under(&sb.work).len();
    assert!(n <= lim.disk_files as usize, "{n} files came back");
    // /tmp is the same capped area.
    let tmp = "try:\n    with open('/tmp/fill', 'wb') as f:\n        while True:\n            f.write(b'x' * (1 << 20))\nexcept OSError as e:\n    print('full', e.errno)\n    raise SystemExit(3)\n";
    std::fs::remove_dir_all(sb.work.join("many")).unwrap();
    let o = py_with(&sb, tmp, &Limits { fsize_bytes: 1 << 30, ..lim });
    assert_eq!(o.ending, Ending::Exit(3), "{o:?}");
    assert_eq!(o.stdout.trim(), format!("full {}", libc::ENOSPC));
    still_works(&sb);
}

#[test]
fn dev_shm_is_not_writable() {
    let (_t, sb) = sandbox();
    let o = py(&sb, "import os\ntry:\n    open('/dev/shm/x', 'w').write('x')\n    print('wrote')\nexcept OSError as e:\n    print('refused', e.errno)\n    raise SystemExit(3)\n");
    assert_eq!(o.ending, Ending::Exit(3), "{o:?}");
    assert_eq!(o.stdout.trim(), format!("refused {}", libc::EACCES));
    still_works(&sb);
}

/// Symlinks out of the work folder resolve inside the sandbox's root (to nothing), and none
/// comes back: the harness never follows a link the program made (nor opens its FIFO).
#[test]
fn symlinks_out_of_the_work_folder_lead_nowhere() {
    let (_t, sb) = sandbox();
    let canary = std::env::temp_dir().join(format!("dg-canary-link-{}", std::process::id()));
    std::fs::write(&canary, "DGSECRET-link").unwrap();
    std::fs::write(sb.work.join("stat.json"), "{}").unwrap();
    let code = format!(
        "import os\n\
        os.remove('stat.json')\n\
        os.symlink({c:?}, 'stat.json')\n\
        os.symlink('/', 'root')\n\
        os.symlink('../../..', 'up')\n\
        os.makedirs('d')\n\
        os.symlink({c:?}, 'd/inner')\n\
        os.mkfifo('fifo')\n\
        for p in ['stat.json', 'd/inner', 'up/' + {rel:?}]:\n\
        \x20   try:\n\
        \x20       print('READ', open(p).read())\n\
        \x20   except OSError as e:\n\
        \x20       print('absent', e.errno)\n",
        c = canary.display().to_string(),
        rel = canary.strip_prefix("/").unwrap().display().to_string(),
    );
    let o = py(&sb, &code);
    let _ = std::fs::remove_file(&canary);
    assert!(o.success(), "{o:?}");
    assert!(!o.stdout.contains("DGSECRET"), "{}", o.stdout);
    assert_eq!(o.stdout.matches(&format!("absent {}", libc::ENOENT)).count(), 3, "{}", o.stdout);
    for name in ["stat.json", "root", "up", "d/inner", "fifo"] {
        assert!(std::fs::symlink_metadata(sb.work.join(name)).is_err(), "{name} came back");
    }
    assert!(sb.work.join("d").is_dir());
    still_works(&sb);
}

/// A huge argument list or environment: refused by the kernel inside (the program fails), and
/// refused with a clear error when the harness itself is asked for one; the harness goes on.
#[test]
fn huge_argv_and_environment_are_contained() {
    let (_t, sb) = sandbox();
    let code = "import os, subprocess\n\
        for label, kw in [('argv', dict(args=['true'] + ['x' * 100000] * 200)), ('env', dict(args=['true'], env={'X': 'y' * 300000})), ('envs', dict(args=['true'], env={f'K{i}': 'v' * 1000 for i in range(20000)}))]:\n\
        \x20   try:\n\
        \x20       subprocess.run(**kw)\n\
        \x20       print('ran', label)\n\
        \x20   except OSError as e:\n\
        \x20       print('refused', label, e.errno)\n";
    let o = py(&sb, code);
    assert!(o.success(), "{o:?}");
    for label in ["argv", "env", "envs"] {
        assert!(o.stdout.contains(&format!("refused {label} {}", libc::E2BIG)), "{label}: {}", o.stdout);
    }
    let huge: Vec<String> = std::iter::once("true".to_string()).chain(std::iter::repeat("x".repeat(100_000)).take(100)).collect();
    let e = sb.run(&huge, b"", &limits()).unwrap_err();
    assert!(format!("{e:#}").contains("too large"), "{e:#}");
    let mut sb2 = Sandbox::new(&sb.work);
    sb2.env.push(("BIG".into(), "y".repeat(300_000)));
    let e = sb2.run(&["true".into()], b"", &limits()).unwrap_err();
    assert!(format!("{e:#}").contains("too large"), "{e:#}");
    still_works(&sb);
}

#[test]
fn huge_output_is_capped_and_killed() {
    let (_t, sb) = sandbox();
    let o = py(&sb, "while True:\n    print('x' * 1000)\n");
    assert_eq!(o.ending, Ending::OutputLimit);
    assert!(o.stdout.len() <= 64 << 10);
    // A huge file: the file-size limit stops it (EFBIG; Python ignores SIGXFSZ, which kills a
    // program that does not: 128 + 25).
    let o = py(&sb, "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * (1 << 20))\n");
    assert_eq!(o.ending, Ending::Exit(1), "{o:?}");
    assert!(o.stderr.contains(&format!("[Errno {}] File too large", libc::EFBIG)), "{o:?}");
    let o = sb.run(&["sh".into(), "-c".into(), "exec head -c 100000000 /dev/zero > big2".into()], b"", &limits()).unwrap();
    assert_eq!(o.ending, Ending::Exit(128 + libc::SIGXFSZ), "{o:?}");
    assert_eq!(std::fs::metadata(sb.work.join("big2")).unwrap().len(), 8 << 20);
    assert!(std::fs::metadata(sb.work.join("big")).unwrap().len() <= 8 << 20);
    still_works(&sb);
}

/// A folder under the host's /tmp (a checkout, a venv, the benchmark) is absent unless the run
/// exposes it; exposed, it is readable but still not writable.
#[test]
fn folders_under_the_private_tmp_are_exposed_read_only() {
    check_available().unwrap();
    let data = tempfile::tempdir().unwrap();
    assert!(data.path().starts_with("/tmp"), "tempdir expected under /tmp");
    std::fs::write(data.path().join("x.txt"), "hello").unwrap();
    let file = data.path().join("x.txt").display().to_string();
    let work = tempfile::tempdir().unwrap();
    let hidden = Sandbox::new(work.path()).run(&["cat".into(), file.clone()], b"", &limits()).unwrap();
    assert_eq!(hidden.ending, Ending::Exit(1), "{hidden:?}");
    assert!(hidden.stderr.contains("No such file"), "{hidden:?}");
    let mut sb = Sandbox::new(work.path());
    sb.expose.push(data.path().to_path_buf());
    let shown = sb.run(&["cat".into(), file.clone()], b"", &limits()).unwrap();
    assert!(shown.success() && shown.stdout.contains("hello"), "{shown:?}");
    let write = sb.run(&["sh".into(), "-c".into(), format!("echo x > {}/y", data.path().display())], b"", &limits()).unwrap();
    assert!(!write.success());
    assert!(write.stderr.contains("Read-only file system"), "{write:?}");
    assert!(!data.path().join("y").exists());
}
