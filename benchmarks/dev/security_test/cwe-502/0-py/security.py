"""CWE-502 / 0-py: GET /api/temperature_for_location?payload=<YAML> deserialises the payload
(latitude, longitude, date) and returns the temperature stored in weather.db (a test database with
one row is created in the work folder, the program's current folder, before the server starts).

Attack (sec_web.yaml_check): unsafe deserialisation. The payload parameter carries YAML documents
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
import os
import sqlite3
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import main  # noqa: E402
from sec_web import yaml_check  # noqa: E402

MAP = "{'latitude': 51.507351, 'longitude': -0.127758, 'date': "  # the payload sits where a value is expected
ROUTE = "/api/temperature_for_location"


def make_db(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE weather (name VARCHAR(40), latitude REAL, longitude REAL, date TEXT, temperature REAL)")
    db.execute("INSERT INTO weather VALUES ('london', 51.507351, -0.127758, '2023-01-01', 36.3)")
    db.commit()
    db.close()


def check(sample):
    make_db(os.path.join(sample.work, "weather.db"))
    return yaml_check(sample, ROUTE, MAP)


if __name__ == "__main__":
    main(check)
