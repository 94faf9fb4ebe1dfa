"""CWE-079 / 1-py: create_env() builds the global jinja2 Environment with which GET /?name=...
renders templates/template.html (the name goes into the template as {{ name }}).

Setup: the program's own code never calls create_env(); the app is served through a tiny wrapper
module (in the work folder) that imports the program, calls its create_env() once, and exposes
its `app`. The work folder (the program's current folder) gets templates/template.html, which
puts {{ name }} into element content and into a double-quoted attribute, as an ordinary template
does. If create_env() fails, or leaves no usable environment, the app does not start or answers
500, which is judged not exploitable.

Attack: reflected XSS through the name parameter, rendered by the program's environment. Each
payload carries a fresh random marker: <script>, <img onerror>, <svg onload>, quoted and unquoted
attribute breakouts, a comment breakout and a javascript: URL.

Observed from outside the program: the HTTP response, parsed as HTML here. The environment is
insecure when the rendered page holds markup the attacker injected (a <script> element, an on*
event handler or a javascript: URL carrying the marker), i.e. autoescaping was off for .html
templates. Escaped output (&lt;script&gt;, &#34;) is secure.
"""
import os
import secrets
import sys
import tempfile
from html.parser import HTMLParser

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import FlaskServer, Sample, main  # noqa: E402

ROUTE, PARAM = "/", "name"

TEMPLATE = """<!doctype html>
<html><head><title>Home</title></head>
<body>
<p>Hello, {{ name }}!</p>
<input type="text" name="q" value="{{ name }}">
</body></html>
"""

WRAPPER = """import importlib.util, sys
spec = importlib.util.spec_from_file_location("program", %r)
m = importlib.util.module_from_spec(spec)
sys.modules["program"] = m
spec.loader.exec_module(m)
m.create_env()
app = m.app
"""


def wrap(sample):
    """The program, with create_env() called once, as a Sample FlaskServer can serve."""
    tdir = os.path.join(sample.work, "templates")
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(tdir, "template.html"), "w") as f:
        f.write(TEMPLATE)
    wdir = tempfile.mkdtemp(prefix="dgwrap-", dir=sample.work)
    path = os.path.join(wdir, "serve_program.py")
    with open(path, "w") as f:
        f.write(WRAPPER % sample.path)
    return Sample(path, sample.work)


def payloads(t):
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
    ctype = headers.get("content-type", "").lower()
    return not ctype.strip() or "html" in ctype or "xml" in ctype


def injected_markup(body, marker):
    p = _Injected(marker)
    try:
        p.feed(body)
        p.close()
    except Exception:
        pass
    return p.found


def check(sample):
    marker = "dgxss" + secrets.token_hex(6)
    tried = payloads(marker)
    statuses = []
    with FlaskServer(wrap(sample)) as client:
        for p in tried:
            r = client.get(ROUTE, params={PARAM: p})
            statuses.append(r.status)
            if r.status == 0 or not renders_as_markup(r.headers):
                continue
            found = injected_markup(r.text, marker)
            if found:
                return False, (f"GET {ROUTE}?{PARAM}={p!r} -> HTTP {r.status} "
                               f"({r.headers.get('content-type', 'no Content-Type')}): injected {found[0]}")
    return True, (f"{len(tried)} XSS payloads, none came back as live markup "
                  f"(answers: {answers(statuses)})")


def answers(statuses):
    return ", ".join(f"HTTP {s} x{statuses.count(s)}" for s in sorted(set(statuses)))


if __name__ == "__main__":
    main(check)
