//! Hostile programs run in the sandbox: each is contained, reported as a failure, and the
//! harness keeps going (every test runs several programs in sequence in one process).

use deepguard_eval::sandbox::{check_available, Ending, Limits, Sandbox};
use std::path::Path;
use std::time::Duration;

fn limits() -> Limits {
    Limits { wall: Duration::from_secs(5), cpu_secs: 3, mem_bytes: Some(1 << 30), nproc: 32, fsize_bytes: 8 << 20, output_bytes: 64 << 10 }
}

fn py(sb: &Sandbox, code: &str) -> deepguard_eval::sandbox::Outcome {
    std::fs::write(sb.work.join("prog.py"), code).unwrap();
    sb.run(&["python3".into(), "prog.py".into()], b"", &limits()).unwrap()
}

fn sandbox() -> (tempfile::TempDir, Sandbox) {
    check_available().expect("bubblewrap must work here (scripts/setup.sh installs it)");
    let t = tempfile::tempdir().unwrap();
    let sb = Sandbox::new(t.path());
    (t, sb)
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
            if let Some(l) = s.lines().find(|l| l.starts_with("Uid:")) {
                let u: u32 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
                if u == uid {
                    n += 1;
                }
            }
        }
    }
    n
}

#[test]
fn a_normal_program_runs_and_its_output_comes_back() {
    let (_t, sb) = sandbox();
    let o = py(&sb, "import sys, os\nprint('hello', sys.stdin.read())\nopen('out.txt','w').write('x')\nos.makedirs('/tmp/unpack')\n");
    assert!(o.success(), "{o:?}");
    assert_eq!(o.stdout.trim(), "hello");
    assert_eq!(std::fs::read_to_string(sb.work.join("out.txt")).unwrap(), "x", "the work folder is writable");
}

#[test]
fn infinite_loop_and_sleeping_children_are_killed() {
    let (_t, sb) = sandbox();
    let o = py(&sb, "while True:\n    pass\n");
    assert!(!o.success());
    // Killed by the CPU limit (bwrap relays the signal as exit 128+n) or by the wall clock.
    assert!(matches!(o.ending, Ending::Signal(_) | Ending::WallTimeout | Ending::Exit(129..)), "{:?}", o.ending);
    assert!(o.wall < Duration::from_secs(8), "{:?}", o.wall);
    // A program that leaves a child sleeping and then hangs: wall timeout, child gone too.
    let o = py(&sb, "import subprocess, time\nsubprocess.Popen(['sleep', '1000'])\ntime.sleep(1000)\n");
    assert_eq!(o.ending, Ending::WallTimeout);
    assert_eq!(leftover_processes(o.uid), 0, "no sandboxed process survives");
    // and the harness goes on
    assert!(py(&sb, "print(1)\n").success());
}

#[test]
fn fork_bomb_is_contained() {
    let (_t, sb) = sandbox();
    let o = py(&sb, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n");
    assert!(!o.success(), "{o:?}");
    assert!(o.wall < Duration::from_secs(9), "{:?}", o.wall);
    assert_eq!(leftover_processes(o.uid), 0);
    assert!(py(&sb, "print(1)\n").success());
}

#[test]
fn memory_bomb_fails() {
    let (_t, sb) = sandbox();
    let o = py(&sb, "x = bytearray(4 << 30)\nprint('allocated')\n");
    assert!(!o.success());
    assert!(!o.stdout.contains("allocated"));
    let o = py(&sb, "xs = []\nwhile True:\n    xs.append(bytearray(50 << 20))\n");
    assert!(!o.success());
}

#[test]
fn network_is_unreachable_but_loopback_works() {
    let (_t, sb) = sandbox();
    let code = "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('1.1.1.1', 80))\n    print('connected')\nexcept OSError as e:\n    print('blocked', e)\n    raise SystemExit(3)\n";
    let o = py(&sb, code);
    assert_eq!(o.ending, Ending::Exit(3), "{o:?}");
    assert!(o.stdout.contains("blocked"));
    // Loopback is up (some tests start a local server).
    let lo = "import socket\nsrv = socket.socket()\nsrv.bind(('127.0.0.1', 0))\nsrv.listen()\nc = socket.create_connection(srv.getsockname())\nprint('ok')\n";
    let o = py(&sb, lo);
    assert!(o.success() && o.stdout.contains("ok"), "{o:?}");
}

#[test]
fn writing_and_deleting_outside_the_work_folder_fail() {
    let (_t, sb) = sandbox();
    let outside = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "keep").unwrap();
    let new = outside.path().join("new.txt");
    let code = format!(
        "import os\nfor f in [lambda: open({new:?}, 'w').write('x'), lambda: os.remove({victim:?}), lambda: open({victim:?}, 'w').write('gone'), lambda: open('/etc/evil', 'w')]:\n    try:\n        f()\n        print('did it')\n    except OSError:\n        pass\n",
        new = new.display().to_string(),
        victim = victim.display().to_string()
    );
    let o = py(&sb, &code);
    assert!(o.success(), "{o:?}");
    assert!(!o.stdout.contains("did it"), "{}", o.stdout);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert!(!new.exists());
    assert!(!Path::new("/etc/evil").exists());
    // /root (credentials, caches) is not visible.
    let o = py(&sb, "import os\nprint(os.listdir('/root'))\n");
    assert_eq!(o.stdout.trim(), "[]", "{o:?}");
}

#[test]
fn huge_output_is_capped_and_killed() {
    let (_t, sb) = sandbox();
    let o = py(&sb, "while True:\n    print('x' * 1000)\n");
    assert_eq!(o.ending, Ending::OutputLimit);
    assert!(o.stdout.len() <= 64 << 10);
    // A huge file: the file-size limit stops it.
    let o = py(&sb, "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * (1 << 20))\n");
    assert!(!o.success());
    assert!(std::fs::metadata(sb.work.join("big")).unwrap().len() <= 8 << 20);
}

/// A folder under the host's /tmp (a checkout, a venv, the benchmark) is hidden by the private
/// /tmp unless the run exposes it; exposed, it is readable but still not writable.
#[test]
fn folders_under_the_private_tmp_are_exposed_read_only() {
    check_available().unwrap();
    let data = tempfile::tempdir().unwrap();
    assert!(data.path().starts_with("/tmp"), "tempdir expected under /tmp");
    std::fs::write(data.path().join("x.txt"), "hello").unwrap();
    let file = data.path().join("x.txt").display().to_string();
    let work = tempfile::tempdir().unwrap();
    let hidden = Sandbox::new(work.path()).run(&["cat".into(), file.clone()], b"", &limits()).unwrap();
    assert!(!hidden.success(), "the private /tmp hides host folders");
    let mut sb = Sandbox::new(work.path());
    sb.expose.push(data.path().to_path_buf());
    let shown = sb.run(&["cat".into(), file.clone()], b"", &limits()).unwrap();
    assert!(shown.success() && shown.stdout.contains("hello"), "{shown:?}");
    let write = sb.run(&["sh".into(), "-c".into(), format!("echo x > {}/y", data.path().display())], b"", &limits()).unwrap();
    assert!(!write.success());
    assert!(!data.path().join("y").exists());
}
