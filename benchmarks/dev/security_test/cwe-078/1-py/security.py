"""CWE-078 / 1-py: GET /user_info?username=... runs a command that shows
information about that user (id, getent, finger, grep /etc/passwd, ...).

Attack (sec_web.command_injection_check): OS command injection through the username parameter; that
helper's docstring lists the payloads and what is observed. A 4xx answer, an error message or any other
harmless behaviour is secure.

Sandbox: the command the program chooses may be missing in the sandbox (finger); the
separator payloads (';', newline, '||', '$(...)') still run the injected touch, so injection is
observed whatever the first command is.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import main  # noqa: E402
from sec_web import command_injection_check  # noqa: E402

ROUTE, PARAM, BENIGN = "/user_info", "username", "root"


def check(sample):
    return command_injection_check(sample, ROUTE, PARAM, BENIGN)


if __name__ == "__main__":
    main(check)
