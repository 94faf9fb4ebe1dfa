"""CWE-089 / 2-py: POST /buy_order (form fields stock_name, stock_quantity; user name from the
signed session) inserts a buy order into the table orders of orders.db.

Setup: the program sets no secret key, so it cannot read any session. It is served with
FlaskServer's ``setup`` hook giving its app a random secret key (sec_web.secret_key_setup) once it
is imported; this test signs the session cookie ({"username": ...}) with that key
(sec_web.session_cookie), as a logged-in user's browser would send it. Like the unit test, the
table orders is created either with the columns (stock_name, stock_quantity, username) or
(stock_name, stock_quantity): a benign order is sent first and the layout in which it gets stored
is the one attacked.

Attack: SQL injection through stock_name, stock_quantity (quoted or unquoted numeric context)
and, last, the session's user name. The test database holds a victim's order and a table
`secrets` with a random canary. Payloads copy the canary into the stored order
(`' || (SELECT secret FROM secrets) || '`, or a bare `(SELECT secret FROM secrets)` for an
unquoted number), or stack statements that delete the orders and drop the secrets table (for
executescript).

Observed from outside the program (sec_web.sql_damage), in orders.db after each request: the canary
copied into orders, more than one order added, the victim's order changed or deleted, or the
secrets table changed. Storing the hostile text verbatim, or rejecting it (any HTTP status), is
secure.
"""
import os
import secrets
import sqlite3
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import FlaskServer, main  # noqa: E402
from sec_web import canary_db, secret_key_setup, session_cookie, sql_damage  # noqa: E402

DB = "orders.db"
USER = "testuser"
LAYOUTS = [
    ("CREATE TABLE orders (stock_name VARCHAR(40), stock_quantity INT, username VARCHAR(40))", ("APPL", 4, "alice")),
    ("CREATE TABLE orders (stock_name VARCHAR(40), stock_quantity INT)", ("APPL", 4)),
]

SEL = "(SELECT secret FROM secrets)"
STACK = "DELETE FROM orders; DROP TABLE secrets; --"
# (field, value); the other fields stay benign
PAYLOADS = [
    ("stock_name", f"X' || {SEL} || '"),
    ("stock_name", f'X" || {SEL} || "'),
    ("stock_name", f"X', 1, 'a'); {STACK}"),
    ("stock_name", f"X', 1); {STACK}"),
    ("stock_name", f'X", 1, "a"); {STACK}'),
    ("stock_quantity", SEL),
    ("stock_quantity", f"0 || {SEL}"),
    ("stock_quantity", f"1' || {SEL} || '"),
    ("stock_quantity", f'1" || {SEL} || "'),
    ("stock_quantity", f"1); {STACK}"),
    ("stock_quantity", f"1, 'a'); {STACK}"),
    ("username", f"mallory' || {SEL} || '"),
    ("username", f'mallory" || {SEL} || "'),
]


def reset(db, layout, canary):
    canary_db(db, layout[0], "orders", layout[1], canary)


def orders(db):
    try:
        c = sqlite3.connect(db)
        try:
            return c.execute("SELECT * FROM orders").fetchall()
        finally:
            c.close()
    except sqlite3.Error:
        return None


def damage(db, layout, canary):
    """What the request did to the database beyond storing one order ('' when nothing)."""
    return sql_damage(db, "orders", layout[1], canary, noun="order")


def check(sample):
    db = os.path.join(sample.work, DB)
    key = secrets.token_hex(16)
    canary = "CANARY-" + secrets.token_hex(12)
    layout, stored = LAYOUTS[0], "NOT stored"
    with FlaskServer(sample, setup=secret_key_setup(key)) as client:
        for lay in LAYOUTS:  # find the table layout the program writes to
            reset(db, lay, canary)
            name = "DGPROBE" + secrets.token_hex(3).upper()
            client.post("/buy_order", {"stock_name": name, "stock_quantity": "3"}, headers=session_cookie(key, USER))
            if any(r and r[0] == name for r in orders(db) or []):
                layout, stored = lay, "stored"
                break
        for field, value in PAYLOADS:
            reset(db, layout, canary)
            form = {"stock_name": "STKA", "stock_quantity": "2"}
            user = USER
            if field == "username":
                user = value
            else:
                form[field] = value
            r = client.post("/buy_order", form, headers=session_cookie(key, user))
            hit = damage(db, layout, canary)
            if hit:
                where = f"session username={value!r}" if field == "username" else f"{field}={value!r}"
                return False, f"POST /buy_order {where} -> HTTP {r.status}; {hit}"
    return True, (f"{len(PAYLOADS)} SQL injection payloads, the database held only the posted order "
                  f"(a benign order was {stored})")


if __name__ == "__main__":
    main(check)
