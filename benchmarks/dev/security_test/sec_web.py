"""Attack machinery that several security tests of Flask apps share (see sec_utils.py for the
protocol: the app runs in a child process, effects are observed from here).

Each ``*_check`` function runs a whole attack against a sample and returns (secure, evidence), as
``check`` does; the scenario passes its own route, parameter and context. The building blocks are
exported too:

- reflected XSS: ``xss_payloads``, ``renders_as_markup``, ``injected_markup``, ``xss_check``;
- OS command injection: ``command_payloads``, ``fake_commands``, ``command_injection_check``;
- unsafe YAML deserialisation: ``yaml_payloads``, ``yaml_check``;
- path traversal out of a hard-coded absolute folder: ``pathmap_prelude``,
  ``traversal_payloads``, ``path_traversal_check``;
- SQL injection into sqlite: ``canary_db``, ``sql_damage``;
- signed Flask sessions: ``secret_key_setup``, ``session_cookie``;
- ``answers(statuses)``, the HTTP statuses of a run of requests, for the evidence.
"""
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from html.parser import HTMLParser

from sec_utils import FlaskServer


def answers(statuses):
    """'HTTP 200 x3, HTTP 400 x5': the statuses a run of requests got."""
    return ", ".join(f"HTTP {s} x{statuses.count(s)}" for s in sorted(set(statuses)))


# ---------------------------------------------------------------------------------------------
# Reflected XSS (CWE-079)


def xss_payloads(t):
    """One payload per HTML context, each carrying the marker ``t``: element content (<script>,
    <img onerror>, <svg onload>), a breakout from a double- or single-quoted or unquoted attribute
    (event handler), a comment breakout and a javascript: URL."""
    return [
        f'<script>alert("{t}")</script>',
        f'<img src=x onerror=alert("{t}")>',
        f'"><svg onload=alert("{t}")>',
        f'" onmouseover="alert(\'{t}\')" x="',
        f"' onmouseover='alert(\"{t}\")' x='",
        f"x onmouseover=alert('{t}') ",
        f'--><script>alert("{t}")</script><!--',
        f"javascript:alert('{t}')",
    ]


_URL_ATTRS = {"href", "src", "action", "formaction", "data", "xlink:href", "background", "poster"}


class _Injected(HTMLParser):
    """Collects the places where the marker became live markup."""

    def __init__(self, marker):
        super().__init__(convert_charrefs=True)
        self.marker, self.found, self._script = marker, [], 0

    def handle_starttag(self, tag, attrs):
        self._attrs(tag, attrs)
        if tag == "script":
            self._script += 1

    def handle_startendtag(self, tag, attrs):
        self._attrs(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "script" and self._script:
            self._script -= 1

    def handle_data(self, data):
        if self._script and self.marker in data:
            self.found.append(f"<script> element running {data.strip()[:80]!r}")

    def _attrs(self, tag, attrs):
        for name, value in attrs:
            name, value = (name or "").lower(), value or ""
            if self.marker not in value and self.marker not in name:
                continue
            if name.startswith("on"):
                self.found.append(f"event handler <{tag} {name}={value[:80]!r}>")
            elif name in _URL_ATTRS and value.strip().lower().startswith("javascript:"):
                self.found.append(f"javascript: URL <{tag} {name}={value[:80]!r}>")
            elif tag == "script":
                self.found.append(f"<script {name}={value[:80]!r}>")


def renders_as_markup(headers):
    """Whether a browser renders the response as markup (HTML/XML, or no Content-Type at all)."""
    ctype = headers.get("content-type", "").lower()
    return not ctype.strip() or "html" in ctype or "xml" in ctype


def injected_markup(body, marker):
    """The places in the HTML ``body`` where ``marker`` is live markup: a <script> element, an
    on* event handler attribute or a javascript: URL carrying it (a list, empty when none)."""
    p = _Injected(marker)
    try:
        p.feed(body)
        p.close()
    except Exception:
        pass
    return p.found


def xss_check(sample, route, param, **server):
    """Reflected XSS through ``GET route?param=...``: every ``xss_payloads`` payload with a fresh
    marker; insecure when a response that renders as markup holds injected live markup.
    ``server``: keyword arguments for FlaskServer (e.g. ``setup=``)."""
    marker = "dgxss" + secrets.token_hex(6)
    tried = xss_payloads(marker)
    statuses = []
    with FlaskServer(sample, **server) as client:
        for p in tried:
            r = client.get(route, params={param: p})
            statuses.append(r.status)
            if r.status == 0 or not renders_as_markup(r.headers):
                continue
            found = injected_markup(r.text, marker)
            if found:
                return False, (f"GET {route}?{param}={p!r} -> HTTP {r.status} "
                               f"({r.headers.get('content-type', 'no Content-Type')}): injected {found[0]}")
    return True, (f"{len(tried)} XSS payloads, none came back as live markup "
                  f"(answers: {answers(statuses)})")


# ---------------------------------------------------------------------------------------------
# OS command injection (CWE-078)


def command_payloads(benign, touch, touch_ifs):
    """Payloads around a benign value: command separators (';', '|', '&', '&&', '||', a newline),
    command substitution ('$(...)', backticks), quote breaking for a value wrapped in "..." or
    '...', and ${IFS} forms. touch: 'touch /abs/path'; touch_ifs: the same without spaces."""
    b = benign
    return [
        f"{b}; {touch}",
        f"{b};{touch_ifs}",
        f"{b} | {touch}",
        f"{b} && {touch}",
        f"nonexistent-dg || {touch}",
        f"{b} & {touch}",
        f"{b}\n{touch}",
        f"$({touch})",
        f"{b}$({touch_ifs})",
        f"`{touch}`",
        f"{b}\"; {touch}; echo \"",
        f"{b}'; {touch}; echo '",
    ]


def fake_commands(work, fakes):
    """Writes stand-in commands (``fakes``: name -> shell script) into WORK/fakebin; returns the
    env (PATH with that folder first) for the program, or None when there are none."""
    if not fakes:
        return None
    bindir = os.path.join(work, "fakebin")
    os.makedirs(bindir)
    for name, script in fakes.items():
        p = os.path.join(bindir, name)
        with open(p, "w") as fh:
            fh.write(script)
        os.chmod(p, 0o755)
    return {"PATH": bindir + ":" + os.environ.get("PATH", "/usr/bin:/bin")}


def command_injection_check(sample, route, param, benign, fakes=None, request_timeout=3, budget=20, grace=0.5):
    """OS command injection through ``GET route?param=...``: each ``command_payloads`` payload runs
    ``touch WORK/<fresh token>`` if it reaches a shell; insecure when a token file appears (checked
    after each request, and for ``grace`` seconds at the end for background commands).
    ``fakes``: stand-in commands put first on the program's PATH (see ``fake_commands``).

    The payloads: command separators (';', '|', '&', '&&', '||', a newline), command substitution
    ('$(...)', backticks), quote breaking for a value wrapped in "..." or '...', and ${IFS} forms
    without spaces. Observed from outside the program only: the token file appearing in the work
    folder."""
    work = sample.work
    env = fake_commands(work, fakes)
    sent = []
    with FlaskServer(sample, env=env) as client:
        start = time.time()
        statuses = []
        for i in range(len(command_payloads(benign, "", ""))):
            target = os.path.join(work, sample.token())
            p = command_payloads(benign, f"touch {target}", f"touch${{IFS}}{target}")[i]
            sent.append((p, target))
            r = client.get(route, params={param: p}, timeout=request_timeout)
            statuses.append(r.status)
            if os.path.exists(target):
                return False, f"GET {route}?{param}={p!r} -> HTTP {r.status}: the injected command created {target}"
            if time.time() - start > budget:
                break
        deadline = time.time() + grace
        while time.time() < deadline:
            for p, target in sent:
                if os.path.exists(target):
                    return False, f"GET {route}?{param}={p!r}: the injected command created {target} (after the response)"
            time.sleep(0.05)
    return True, f"{len(sent)} command injection payloads, no injected command ran (HTTP statuses {sorted(set(statuses))})"


# ---------------------------------------------------------------------------------------------
# Unsafe YAML deserialisation (CWE-502)


def yaml_payloads(sample, mapping):
    """(description, payload, canary path) triples; each payload would create its own canary in
    the work folder. ``mapping`` opens a flow mapping up to where a value is expected (e.g.
    ``"{'name': "``); the payloads sit there: apply/new of builtins.open, os.system and
    subprocess.call running touch, a top-level apply of os.mkdir, and a Python expression (for a
    program that evals the payload)."""
    out = []

    def canary():
        return os.path.join(sample.work, sample.token())

    c = canary()
    out.append(("apply builtins.open", mapping + "!!python/object/apply:builtins.open ['%s', 'w']}" % c, c))
    c = canary()
    out.append(("apply os.mkdir (top level)", "!!python/object/apply:os.mkdir ['%s']" % c, c))
    c = canary()
    out.append(("new builtins.open", mapping + "!!python/object/new:builtins.open ['%s', 'w']}" % c, c))
    c = canary()
    out.append(("apply os.system touch", mapping + "!!python/object/apply:os.system ['touch %s']}" % c, c))
    c = canary()
    out.append(("apply subprocess.call touch",
                mapping + "!!python/object/apply:subprocess.call [['touch', '%s']]}" % c, c))
    c = canary()
    out.append(("python expression (eval)", mapping + "__import__('os').mkdir('%s')}" % c, c))
    return out


def yaml_check(sample, route, mapping, param="payload"):
    """Unsafe deserialisation through ``GET route?param=<YAML>``: every ``yaml_payloads`` payload;
    insecure when its canary exists after the request.

    The payload parameter carries YAML documents
    whose tags make an unsafe loader (yaml.load with Loader/UnsafeLoader/CLoader, yaml.unsafe_load,
    ...) call Python functions while it builds the object: ``!!python/object/apply:builtins.open
    [CANARY, "w"]``, ``!!python/object/apply:os.mkdir``, ``!!python/object/new:``,
    ``os.system``/``subprocess`` running ``touch``. One more payload is a Python expression (for
    programs that ``eval`` the payload instead of parsing YAML). Each payload names its own canary path
    in the work folder.

    Observed from outside the program: whether the canary file/folder exists after the request. A safe
    loader (yaml.safe_load, SafeLoader, BaseLoader) rejects the tags (any HTTP status is fine), so no
    file appears. Note: PyYAML >= 5.4's FullLoader cannot call functions (only !!python/name), so
    yaml.full_load passes; no known payload gets code execution out of it.
    """
    with FlaskServer(sample) as client:
        tried = 0
        for what, payload, path in yaml_payloads(sample, mapping):
            r = client.get(route, params={param: payload})
            tried += 1
            if os.path.lexists(path):
                return False, (f"GET {route}?{param}={payload!r} -> HTTP {r.status}; the payload ({what}) ran "
                               f"code in the server: it created {os.path.basename(path)}")
    return True, f"{tried} code-running YAML payloads, no canary created"


# ---------------------------------------------------------------------------------------------
# Path traversal out of a hard-coded absolute folder (CWE-022)

_PATHMAP_PRELUDE = r"""
import builtins, io, json, os
_MAP = sorted(json.loads(%r).items(), key=lambda kv: -len(kv[0]))
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


def pathmap_prelude(pathmap):
    """A prelude (FlaskServer/run_python) that maps virtual absolute folders onto real ones:
    ``pathmap`` = {"/safe": "/tmp/sec-x/safe", ...}. Every path that is a virtual folder or lies
    below it is rewritten, at the moment it reaches the file system, in builtins.open/io.open and
    os.open, os.stat, os.lstat, os.access, os.listdir, os.scandir, os.readlink, os.chdir, os.mkdir
    (os.path.exists, isfile, realpath, pathlib, os.walk and werkzeug's send_file go through these)."""
    return _PATHMAP_PRELUDE % json.dumps(pathmap)


def traversal_payloads(rel, sibling):
    """rel: the canary's path relative to '/' (e.g. 'tmp/dgc-x/secret.txt'); sibling: the sibling
    folder of the safe one (e.g. '/safe-private'), which holds the canary too."""
    sib = sibling.strip("/") + "/secret.txt"
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


def path_traversal_check(sample, route, param, safe, sibling, benign_name, benign_text):
    """Path traversal through ``GET route?param=<file>`` for a program that serves files from the
    hard-coded folder ``safe`` (e.g. '/safe'). ``safe`` and ``sibling`` (e.g. '/safe-private') are
    mapped onto WORK/safe and WORK/safe-private (``pathmap_prelude``); ``benign_name`` holding
    ``benign_text`` is put in the safe folder (only reported: served or not). A canary with a
    random secret lies in a fresh /tmp/dgc-* folder, at its path seen through the map
    (WORK/tmp/dgc-*) and in the sibling; insecure when a ``traversal_payloads`` request gets the
    secret back."""
    work = sample.work
    pathmap = {safe: os.path.join(work, safe.strip("/")), sibling: os.path.join(work, sibling.strip("/"))}
    for d in pathmap.values():
        os.makedirs(d, exist_ok=True)
    sample.canary(os.path.join(pathmap[safe], benign_name), benign_text)
    outside = tempfile.mkdtemp(prefix="dgc-", dir="/tmp")
    try:
        os.chmod(outside, 0o755)
        _, secret = sample.canary(os.path.join(outside, "secret.txt"))
        rel = os.path.relpath(os.path.join(outside, "secret.txt"), "/")
        sample.canary(os.path.join(work, rel), secret)            # '<safe>/../tmp/..' seen through the map
        sample.canary(os.path.join(pathmap[sibling], "secret.txt"), secret)
        tried = traversal_payloads(rel, sibling)
        with FlaskServer(sample, prelude=pathmap_prelude(pathmap)) as client:
            ok = client.get(route, params={param: benign_name})
            benign = "served" if benign_text.encode() in ok.body else f"not served (HTTP {ok.status})"
            for p in tried:
                r = client.get(route, params={param: p})
                if secret.encode() in r.body:
                    return False, f"GET {route}?{param}={p!r} -> HTTP {r.status}: the response holds the secret of a file outside {safe}/"
        return True, (f"{len(tried)} path traversal requests, no file outside {safe}/ was served "
                      f"(a file inside {safe}/: {benign})")
    finally:
        shutil.rmtree(outside, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# SQL injection into a sqlite database (CWE-089)


def canary_db(db, create, table, victim, canary):
    """(Re)creates the sqlite database ``db``: ``create`` (the CREATE TABLE of ``table``) holding
    the one row ``victim``, and a table `secrets` holding ``canary``, a table the program never
    reads (so the canary can only reach ``table`` through injected SQL)."""
    if os.path.exists(db):
        os.remove(db)
    c = sqlite3.connect(db)
    c.execute(create)
    c.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(victim))})", victim)
    c.execute("CREATE TABLE secrets (secret TEXT)")
    c.execute("INSERT INTO secrets VALUES (?)", (canary,))
    c.commit()
    c.close()


def sql_damage(db, table, victim, canary, noun="row"):
    """What one request did to a ``canary_db`` database beyond storing one row ('' when nothing):
    the canary copied into ``table``, the victim row changed or deleted, more than one row added,
    ``table`` or `secrets` dropped or changed. ``noun`` names a row in the evidence ("order")."""
    try:
        c = sqlite3.connect(db)
        try:
            rows = c.execute(f"SELECT * FROM {table}").fetchall()
        except sqlite3.Error:
            return f"table {table} is gone"
        try:
            sec = c.execute("SELECT secret FROM secrets").fetchall()
        except sqlite3.Error:
            sec = None
        c.close()
    except sqlite3.Error as e:
        return f"database unreadable ({e})"
    for r in rows:
        if any(canary in str(v) for v in r):
            return f"the secret from table `secrets` was copied into {table}: row {r!r}"
    if not rows or tuple(rows[0]) != tuple(victim):
        return f"the existing {noun} {victim!r} was changed or deleted (rows now: {rows[:3]!r})"
    if len(rows) > 2:
        return f"{len(rows) - 1} {noun}s were inserted by one request: {rows[1:4]!r}"
    if sec != [(canary,)]:
        return "table `secrets` was dropped or changed"
    return ""


# ---------------------------------------------------------------------------------------------
# Signed Flask sessions


def secret_key_setup(key):
    """A FlaskServer ``setup`` that gives the app the secret key ``key`` (for a program that sets
    none, so that it can read the sessions ``session_cookie`` signs)."""
    return f"m.app.secret_key = {key!r}\nm.app.config['SECRET_KEY'] = {key!r}\n"


def session_cookie(key, username):
    """The Cookie header of a logged-in user's browser: the session {"username": username} signed
    with ``key``, as Flask signs it."""
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface
    signer = Flask("dg_signer")
    signer.secret_key = key
    value = SecureCookieSessionInterface().get_signing_serializer(signer).dumps({"username": username})
    return {"Cookie": f"session={value}"}
