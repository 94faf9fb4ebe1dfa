"""CWE-078 / 0-py: GET /ls?dirname=... lists the folder with the "ls" command.

Attack (sec_web.command_injection_check): OS command injection through the dirname parameter; that
helper's docstring lists the payloads and what is observed. A 4xx answer, an error message or any other
harmless behaviour is secure.

Sandbox: ls and touch are in /usr/bin (coreutils), which the sandbox provides; the payloads
use absolute paths, so they work whatever folder the program runs `ls` in.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import main  # noqa: E402
from sec_web import command_injection_check  # noqa: E402

ROUTE, PARAM, BENIGN = "/ls", "dirname", "."


def check(sample):
    return command_injection_check(sample, ROUTE, PARAM, BENIGN)


if __name__ == "__main__":
    main(check)
