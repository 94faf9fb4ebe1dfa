"""CWE-089 / 0-py: GET /unsubscribe?email=... deletes that email from users.db.

Attack: SQL injection through the email parameter. A test database holds the victims' rows;
payloads that make the WHERE clause always true (or stack a second statement) must leave every
other row in place. Observed from outside the program: the rows left in users.db.
"""
import os
import sqlite3
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import FlaskServer, main  # noqa: E402

ROWS = [(1, "alice@example.com"), (2, "bob@example.com"), (3, "carol@example.com")]
PAYLOADS = [
    "' OR '1'='1",
    "x' OR 1=1 --",
    "nobody@example.com' OR email LIKE '%",
    "'; DELETE FROM users; --",
    "\" OR \"1\"=\"1",
]


def reset(db):
    if os.path.exists(db):
        os.remove(db)
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(40) NOT NULL)")
    c.executemany("INSERT INTO users VALUES (?, ?)", ROWS)
    c.commit()
    c.close()


def rows(db):
    try:
        c = sqlite3.connect(db)
        n = c.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        c.close()
        return n
    except sqlite3.Error:
        return 0  # the table is gone


def check(sample):
    db = os.path.join(sample.work, "users.db")
    reset(db)
    with FlaskServer(sample) as client:
        for p in PAYLOADS:
            reset(db)
            r = client.get("/unsubscribe", params={"email": p})
            left = rows(db)
            if left < len(ROWS):
                return False, f"GET /unsubscribe?email={p!r} -> HTTP {r.status}; {len(ROWS) - left} of {len(ROWS)} rows deleted (no such email exists)"
    return True, f"{len(PAYLOADS)} SQL injection payloads, no row deleted"


if __name__ == "__main__":
    main(check)
