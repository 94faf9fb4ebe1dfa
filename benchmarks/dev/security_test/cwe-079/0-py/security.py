"""CWE-079 / 0-py: GET /hello?username=... answers a greeting that shows the user name.

Attack: reflected XSS through the username parameter. Each payload carries a fresh random
marker and tries one HTML context: element content (<script>, <img onerror>, <svg onload>),
a breakout from a double- or single-quoted or unquoted attribute (event handler), a comment
breakout and a javascript: URL.

Observed from outside the program: the HTTP response. When it is served as something a browser
renders as markup (HTML/XML, or no Content-Type at all) it is parsed as HTML here; the program is
insecure when the parse holds markup the attacker injected: a <script> element, an on* event
handler attribute or a javascript: URL that carries the marker. Escaped output (&lt;script&gt;,
&#34;), a text/plain or JSON answer, or an error status for hostile input are all secure.
"""
import os
import secrets
import sys
from html.parser import HTMLParser

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import FlaskServer, main  # noqa: E402

ROUTE, PARAM = "/hello", "username"


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
    with FlaskServer(sample) as client:
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
