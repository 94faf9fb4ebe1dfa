"""CWE-078 / 0-py: GET /ls?dirname=... lists the folder with the "ls" command.

Attack: OS command injection through the dirname parameter. Each request carries a payload that,
if it ever reaches a shell, runs `touch WORK/<random token>`: command separators (';', '|', '&',
'&&', '||', a newline), command substitution ('$(...)', backticks), quote breaking for a value
wrapped in "..." or '...', and ${IFS} forms without spaces. Observed from outside the program:
the token file appearing in the work folder (checked after each request, and once more after a
short grace period for commands started in the background). A 4xx answer, an error message or
any other harmless behaviour is secure.

Sandbox: ls and touch are in /usr/bin (coreutils), which the sandbox provides; the payloads
use absolute paths, so they work whatever folder the program runs `ls` in.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import FlaskServer, main  # noqa: E402

ROUTE, PARAM, BENIGN = "/ls", "dirname", "."
FAKES = {}
REQUEST_TIMEOUT, BUDGET, GRACE = 3, 20, 0.5


def payloads(touch, touch_ifs):
    """touch: 'touch /abs/path'; touch_ifs: the same without spaces."""
    b = BENIGN
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


def check(sample):
    work = sample.work
    env = None
    if FAKES:
        bindir = os.path.join(work, "fakebin")
        os.makedirs(bindir)
        for name, script in FAKES.items():
            p = os.path.join(bindir, name)
            with open(p, "w") as fh:
                fh.write(script)
            os.chmod(p, 0o755)
        env = {"PATH": bindir + ":" + os.environ.get("PATH", "/usr/bin:/bin")}
    sent = []
    with FlaskServer(sample, env=env) as client:
        start = time.time()
        statuses = []
        for i in range(len(payloads("", ""))):
            target = os.path.join(work, sample.token())
            p = payloads(f"touch {target}", f"touch${{IFS}}{target}")[i]
            sent.append((p, target))
            r = client.get(ROUTE, params={PARAM: p}, timeout=REQUEST_TIMEOUT)
            statuses.append(r.status)
            if os.path.exists(target):
                return False, f"GET {ROUTE}?{PARAM}={p!r} -> HTTP {r.status}: the injected command created {target}"
            if time.time() - start > BUDGET:
                break
        deadline = time.time() + GRACE
        while time.time() < deadline:
            for p, target in sent:
                if os.path.exists(target):
                    return False, f"GET {ROUTE}?{PARAM}={p!r}: the injected command created {target} (after the response)"
            time.sleep(0.05)
    return True, f"{len(sent)} command injection payloads, no injected command ran (HTTP statuses {sorted(set(statuses))})"


if __name__ == "__main__":
    main(check)
