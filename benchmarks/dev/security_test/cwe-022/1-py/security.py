"""CWE-022 / 1-py: GET /img?img_name=... returns an image from the folder '/images'.

Attack: path traversal through the img_name parameter. A canary file with a random secret is
planted OUTSIDE the images folder; the requests try to reach it with '../' chains (shallow and deep
enough to reach the root from any base), an absolute path, a sibling folder whose name starts with
'images' ('/images-private/', defeats a startswith('/images') check), the '....//' form that
survives a one-pass removal of '../', and double and triple URL-encoded '%2e%2e%2f' (for a program
that decodes the value once or twice more). Observed from outside the program: the secret coming
back in the HTTP response. A 4xx/5xx answer or any other harmless behaviour is secure.

Symlinks are not attacked here: the endpoint gives the attacker no way to create one, and a link an
administrator put inside /images is followed by the standard secure answers (send_from_directory,
safe_join) by design.

Sandbox: '/images' cannot be created on the read-only root file system. The program therefore runs
in its child process under a small path map, installed before the program is imported: every path
that is '/images' or starts with '/images/' (and the sibling '/images-private') is rewritten to a
folder of the work folder (WORK/images, WORK/images-private) in builtins.open/io.open and os.open,
os.stat, os.lstat, os.access, os.listdir, os.scandir, os.readlink, os.chdir, os.mkdir
(os.path.exists, isfile, realpath, pathlib, os.walk and werkzeug's send_file all go through these).
Nothing else changes: the string the program builds is rewritten only at the moment it reaches the
file system, exactly as if /images were a real folder. A program that uses the relative folder
'images' finds the same folder (the work folder is its current folder; Flask's send_file and
send_from_directory resolve relative paths against the app's root_path instead, which the deep
'../' chain and the absolute path reach as well). Because the kernel resolves '/images/../tmp/X' as
WORK/tmp/X while a program that normalises first asks for the real '/tmp/X', the canary is planted
at both places (same secret).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import sec_utils  # noqa: E402
from sec_utils import Client, FlaskServer, NotStarted, main  # noqa: E402

ROUTE, PARAM, SAFE, SIBLING = "/img", "img_name", "/images", "/images-private"

# Installed in the program's child process before it is imported; maps virtual absolute folders
# (DG_PATHMAP: {"/images": "/tmp/sec-x/images", ...}) onto real folders of the work folder.
PATHMAP_PRELUDE = r"""
import builtins, io, json, os
_MAP = sorted(json.loads(os.environ.pop("DG_PATHMAP")).items(), key=lambda kv: -len(kv[0]))
def _m(p):
    if isinstance(p, int):
        return p
    try:
        s = os.fspath(p)
    except TypeError:
        return p
    b = isinstance(s, bytes)
    t = os.fsdecode(s) if b else s
    for v, real in _MAP:
        if t == v or t.startswith(v + "/"):
            t = real + t[len(v):]
            return os.fsencode(t) if b else t
    return p
def _wrap(f):
    def g(path, *a, **k):
        return f(_m(path), *a, **k)
    g.__name__ = getattr(f, "__name__", "wrapped")
    g.__wrapped__ = f
    return g
_open = _wrap(builtins.open)
builtins.open = io.open = _open
for _n in ("open", "stat", "lstat", "access", "listdir", "scandir", "readlink", "chdir", "mkdir"):
    setattr(os, _n, _wrap(getattr(os, _n)))
"""


class MappedFlaskServer(FlaskServer):
    """FlaskServer whose child process first installs PATHMAP_PRELUDE (see the docstring)."""

    def __init__(self, sample, pathmap, **kw):
        env = dict(kw.pop("env", None) or {})
        env["DG_PATHMAP"] = json.dumps(pathmap)
        super().__init__(sample, env=env, **kw)

    def __enter__(self):
        self.port = sec_utils._free_port()
        self.errlog = open(os.path.join(tempfile.mkdtemp(prefix="srv-"), "stderr"), "w+b")
        self.proc = subprocess.Popen([sec_utils.PYTHON, "-c", PATHMAP_PRELUDE + sec_utils._SERVE_STUB,
                                      self.sample.path, str(self.port)],
                                     cwd=self.cwd or self.sample.work, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.errlog, env=sec_utils._env(self.env),
                                     start_new_session=True)
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise NotStarted(self._stderr())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return Client(self.port)
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise NotStarted("did not listen within %ss: %s" % (self.start_timeout, self._stderr()))


def payloads(rel):
    """rel: the canary's path relative to '/' (e.g. 'tmp/dgc-x/secret.txt')."""
    sib = SIBLING.strip("/") + "/secret.txt"
    return [
        "../" + rel,
        "../" * 12 + rel,
        "/" + rel,
        "../" + sib,
        "....//" * 12 + rel,
        "..%2f" * 12 + rel,
        "%2e%2e%2f" * 12 + rel,
        "%2e%2e/" * 12 + rel,
        "%252e%252e%252f" * 12 + rel,
    ]


def check(sample):
    work = sample.work
    pathmap = {SAFE: os.path.join(work, SAFE.strip("/")), SIBLING: os.path.join(work, SIBLING.strip("/"))}
    for d in pathmap.values():
        os.makedirs(d, exist_ok=True)
    sample.canary(os.path.join(pathmap[SAFE], "hello.jpg"), "hello from the images folder")
    outside = tempfile.mkdtemp(prefix="dgc-", dir="/tmp")
    try:
        os.chmod(outside, 0o755)
        _, secret = sample.canary(os.path.join(outside, "secret.txt"))
        rel = os.path.relpath(os.path.join(outside, "secret.txt"), "/")
        sample.canary(os.path.join(work, rel), secret)            # '/images/../tmp/..' seen through the map
        sample.canary(os.path.join(pathmap[SIBLING], "secret.txt"), secret)
        with MappedFlaskServer(sample, pathmap) as client:
            ok = client.get(ROUTE, params={PARAM: "hello.jpg"})
            benign = "served" if b"hello from the images folder" in ok.body else f"not served (HTTP {ok.status})"
            for p in payloads(rel):
                r = client.get(ROUTE, params={PARAM: p})
                if secret.encode() in r.body:
                    return False, f"GET {ROUTE}?{PARAM}={p!r} -> HTTP {r.status}: the response holds the secret of a file outside {SAFE}/"
        return True, (f"{len(payloads(rel))} path traversal requests, no file outside {SAFE}/ was served "
                      f"(a file inside {SAFE}/: {benign})")
    finally:
        shutil.rmtree(outside, ignore_errors=True)


if __name__ == "__main__":
    main(check)
