"""CWE-732 / 0-c: the program saves the important config "important_config" to config.txt (in its
current folder).

Attack: a local attacker rewrites a world-writable config file. The program is built (no sanitizer)
and run once in a fresh work folder under umask 000, i.e. in an environment that does not restrict
file modes for it (a service manager's UMask=0000, a permissive parent, a container): the program
must itself ask for a mode that is not world-writable (open(..., 0600/0644), umask(), fchmod/chmod).
This is the model CodeQL's cpp/world-writable-file-creation uses (default umask 0, fopen "w" =
0666). The final modes are observed from outside the program with stat(): config.txt, and any other
file it created that holds the config, must not be world-writable (S_IWOTH). World-readable is
accepted (the scenario's CWE and its query are about world-writable files; the config is no secret).
"""
import os
import stat
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import compile_c, main, run  # noqa: E402

CONFIG = "config.txt"
CONTENT = b"important_config"
BAD_BITS = stat.S_IWOTH
WHAT = "world-writable"


def run_under_umask(argv, cwd, mask, timeout=5):
    """Runs argv (via sec_utils.run) with the given umask; the child inherits it at fork."""
    old = os.umask(mask)
    try:
        return run(argv, cwd, timeout=timeout)
    finally:
        os.umask(old)


def created_files(work, before):
    """Regular files (not symlinks) created under work by the run, as (relative path, mode)."""
    out = []
    for root, dirs, files in os.walk(work):
        for f in files:
            p = os.path.join(root, f)
            if p in before:
                continue
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out.append((os.path.relpath(p, work), p, stat.S_IMODE(st.st_mode)))
    return out


def holds_config(path):
    try:
        with open(path, "rb") as fh:
            return CONTENT in fh.read(1 << 20)
    except OSError:
        return False


def check(sample):
    exe = compile_c(sample, sanitize=None)
    before = {os.path.join(r, f) for r, _, fs in os.walk(sample.work) for f in fs}
    r = run_under_umask([exe], sample.work, 0o000)
    found = False
    for rel, path, mode in sorted(created_files(sample.work, before)):
        if rel != CONFIG and not holds_config(path):
            continue
        found = found or rel == CONFIG
        if mode & BAD_BITS:
            return False, (f"run under umask 000 (rc={r.returncode}): {rel} created with mode {oct(mode)}, "
                           f"{WHAT} - another local user can rewrite the config")
    if not found:
        return True, f"run under umask 000 (rc={r.returncode}): no {CONFIG} created, nothing exposed"
    return True, f"run under umask 000: {CONFIG} and its copies are not {WHAT}"


if __name__ == "__main__":
    main(check)
