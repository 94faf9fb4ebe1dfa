//! bubblewrap's side of a run: the minimal root, the namespaces, and the setup script that
//! runs as root inside them before the program (mounts, the capped work area, the user).

use super::{under, Limits, Sandbox};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Top-level system folders shown read-only (or re-created as the same symlinks).
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];
/// Host files of `/etc` shown read-only (if present); the rest of `/etc` is synthetic.
const ETC_FILES: &[&str] = &["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime"];
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
    /// bubblewrap's arguments: the minimal root, the namespaces, the setup script and its
    /// arguments.
    pub(super) fn bwrap_args(&self, work: &Path, uid: u32, argv: &[String], limits: &Limits) -> Result<Vec<String>> {
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


/// The installation prefix of the interpreter behind a venv's `bin` folder (its `python3`),
/// when it lies outside the system folders (pyenv under `/root`, `/opt/python`, …).
fn python_home(bin: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(bin.join("python3")).or_else(|_| std::fs::canonicalize(bin.join("python"))).ok()?;
    let prefix = real.parent()?.parent()?.to_path_buf();
    (prefix != Path::new("/") && prefix.components().count() > 1).then_some(prefix)
}
