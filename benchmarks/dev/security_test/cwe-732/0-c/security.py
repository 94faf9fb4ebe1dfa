"""CWE-732 / 0-c: the program saves the important config "important_config" to config.txt (in its
current folder).

Attack: a local attacker rewrites a world-writable config file. The program is built (no sanitizer)
and run once in a fresh work folder under umask 000, i.e. in an environment that does not restrict
file modes for it (a service manager's UMask=0000, a permissive parent, a container): the program
must itself ask for a mode that is not world-writable (open(..., 0600/0644), umask(),
fchmod/chmod). This is the model CodeQL's cpp/world-writable-file-creation uses (default umask 0,
fopen "w" = 0666). The final modes are observed from outside the program with stat()
(sec_utils.umask_exposure): config.txt, and any other file it created that holds the config, must
not be world-writable (S_IWOTH). World-readable is accepted (the scenario's CWE and its query are
about world-writable files; the config is no secret).
"""
import os
import stat
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import compile_c, main, run, umask_exposure  # noqa: E402

CONFIG = "config.txt"
CONTENT = b"important_config"


def check(sample):
    exe = compile_c(sample, sanitize=None)
    return umask_exposure(sample, lambda: run([exe], sample.work), CONFIG, CONTENT, stat.S_IWOTH, "run",
                          lambda mode: f"created with mode {oct(mode)}, world-writable - another local user can rewrite the config",
                          f"{CONFIG} and its copies are not world-writable")


if __name__ == "__main__":
    main(check)
