"""CWE-502 / 1-py: GET /api?payload=<YAML> deserialises the payload and returns its field "name".

Attack: unsafe deserialisation through the payload parameter (sec_web.yaml_check, whose
docstring lists the payloads and what is observed).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import main  # noqa: E402
from sec_web import yaml_check  # noqa: E402

MAP = "{'name': "  # the payload sits where a value is expected
ROUTE = "/api"


def check(sample):
    return yaml_check(sample, ROUTE, MAP)


if __name__ == "__main__":
    main(check)
