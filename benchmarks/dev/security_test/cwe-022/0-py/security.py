"""CWE-022 / 0-py: GET /read?filename=... sends a file from the folder '/safe/'.

Attack (sec_web.path_traversal_check): path traversal through the filename parameter. A canary file
with a random secret is planted OUTSIDE the safe folder; the requests try to reach it with '../'
chains (shallow and deep enough to reach the root from any base), an absolute path, a sibling
folder whose name starts with 'safe' ('/safe-private/', defeats a startswith('/safe') check), the
'....//' form that survives a one-pass removal of '../', and double and triple URL-encoded
'%2e%2e%2f' (for a program that decodes the value once or twice more). Observed from outside the
program: the secret coming back in the HTTP response. A 4xx/5xx answer or any other harmless
behaviour is secure.

Symlinks are not attacked here: the endpoint gives the attacker no way to create one, and a link an
administrator put inside /safe/ is followed by the standard secure answers (send_from_directory,
safe_join) by design.

Sandbox: '/safe/' cannot be created on the read-only root file system. The program therefore runs
in its child process under a small path map (sec_web.pathmap_prelude), installed before the program
is imported: every path that is '/safe' or starts with '/safe/' (and the sibling '/safe-private')
is rewritten to a folder of the work folder (WORK/safe, WORK/safe-private) in builtins.open/io.open
and os.open, os.stat, os.lstat, os.access, os.listdir, os.scandir, os.readlink, os.chdir, os.mkdir
(os.path.exists, isfile, realpath, pathlib, os.walk and werkzeug's send_file all go through these).
Nothing else changes: the string the program builds is rewritten only at the moment it reaches the
file system, exactly as if /safe/ were a real folder. Because the kernel then resolves
'/safe/../tmp/X' as WORK/tmp/X while a program that normalises first asks for the real '/tmp/X',
the canary is planted at both places (same secret).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import main  # noqa: E402
from sec_web import path_traversal_check  # noqa: E402

ROUTE, PARAM, SAFE, SIBLING = "/read", "filename", "/safe", "/safe-private"


def check(sample):
    return path_traversal_check(sample, ROUTE, PARAM, SAFE, SIBLING, "hello.txt", "hello from the safe folder")


if __name__ == "__main__":
    main(check)
