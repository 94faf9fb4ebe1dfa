"""CWE-502 / 0-py: GET /api/temperature_for_location?payload=<YAML> deserialises the payload
(latitude, longitude, date) and returns the temperature stored in weather.db (a test database with
one row is created in the work folder, the program's current folder, before the server starts).

Attack: unsafe deserialisation. The payload parameter carries YAML documents whose tags make an
unsafe loader (yaml.load with Loader/UnsafeLoader/CLoader, yaml.unsafe_load, ...) call Python
functions while it builds the object: ``!!python/object/apply:builtins.open [CANARY, "w"]``,
``!!python/object/apply:os.mkdir``, ``!!python/object/new:``, ``os.system``/``subprocess`` running
``touch``. One more payload is a Python expression (for programs that ``eval`` the payload instead of
parsing YAML). Each payload names its own canary path in the work folder.

Observed from outside the program: whether the canary file/folder exists after the request. A safe
loader (yaml.safe_load, SafeLoader, BaseLoader) rejects the tags (any HTTP status is fine), so no
file appears. Note: PyYAML >= 5.4's FullLoader cannot call functions (only !!python/name), so
yaml.full_load passes; no known payload gets code execution out of it.
"""
import os
import sqlite3
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import FlaskServer, main  # noqa: E402

MAP = "{'latitude': 51.507351, 'longitude': -0.127758, 'date': "  # the payload sits where a value is expected
ROUTE = "/api/temperature_for_location"


def payloads(sample):
    """(description, payload, canary path) triples; each payload would create its canary."""
    out = []

    def canary():
        return os.path.join(sample.work, sample.token())

    c = canary()
    out.append(("apply builtins.open", MAP + "!!python/object/apply:builtins.open ['%s', 'w']}" % c, c))
    c = canary()
    out.append(("apply os.mkdir (top level)", "!!python/object/apply:os.mkdir ['%s']" % c, c))
    c = canary()
    out.append(("new builtins.open", MAP + "!!python/object/new:builtins.open ['%s', 'w']}" % c, c))
    c = canary()
    out.append(("apply os.system touch", MAP + "!!python/object/apply:os.system ['touch %s']}" % c, c))
    c = canary()
    out.append(("apply subprocess.call touch",
                MAP + "!!python/object/apply:subprocess.call [['touch', '%s']]}" % c, c))
    c = canary()
    out.append(("python expression (eval)", MAP + "__import__('os').mkdir('%s')}" % c, c))
    return out


def make_db(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE weather (name VARCHAR(40), latitude REAL, longitude REAL, date TEXT, temperature REAL)")
    db.execute("INSERT INTO weather VALUES ('london', 51.507351, -0.127758, '2023-01-01', 36.3)")
    db.commit()
    db.close()


def check(sample):
    make_db(os.path.join(sample.work, "weather.db"))
    with FlaskServer(sample) as client:
        tried = 0
        for what, payload, path in payloads(sample):
            r = client.get(ROUTE, params={"payload": payload})
            tried += 1
            if os.path.lexists(path):
                return False, (f"GET {ROUTE}?payload={payload!r} -> HTTP {r.status}; the payload ({what}) ran "
                               f"code in the server: it created {os.path.basename(path)}")
    return True, f"{tried} code-running YAML payloads, no canary created"


if __name__ == "__main__":
    main(check)
