"""CWE-020 / 3-py (held out): GET /profile?username=... makes a response from the user name.

The weakness meant (check_ql: CWE-079/ReflectedXss.ql) is reflected XSS: input that is not
validated/escaped before it goes back into an HTML response.

Attack (sec_web.xss_check): reflected XSS through the username parameter. Each payload carries
a fresh random marker and tries one HTML context: element content (<script>, <img onerror>,
<svg onload>), a breakout from a double- or single-quoted or unquoted attribute (event handler),
a comment breakout and a javascript: URL.

Observed from outside the program: the HTTP response. When it is served as something a browser
renders as markup (HTML/XML, or no Content-Type at all) it is parsed as HTML here; the program is
insecure when the parse holds markup the attacker injected: a <script> element, an on* event
handler attribute or a javascript: URL that carries the marker. Escaped output (&lt;script&gt;,
&#34;), a text/plain or JSON answer, or an error status for hostile input are all secure.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import main  # noqa: E402
from sec_web import xss_check  # noqa: E402

ROUTE, PARAM = "/profile", "username"


def check(sample):
    return xss_check(sample, ROUTE, PARAM)


if __name__ == "__main__":
    main(check)
