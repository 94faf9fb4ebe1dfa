"""CWE-502 / 0-py: GET /api/temperature_for_location?payload=<YAML> deserialises the payload
(latitude, longitude, date) and returns the temperature stored in weather.db (a test database with
one row is created in the work folder, the program's current folder, before the server starts).

Attack: unsafe deserialisation through the payload parameter (sec_web.yaml_check, whose
docstring lists the payloads and what is observed).
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
