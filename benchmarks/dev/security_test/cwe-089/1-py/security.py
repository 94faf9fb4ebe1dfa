"""CWE-089 / 1-py: POST /post (form field `message`, user name from the signed session) stores the
message with insert_user_message_in_db() in user_messages.db.

Setup: the program sets no secret key, so it cannot read any session. It is served through a tiny
wrapper module (in the work folder) that imports the program and gives its app a random secret
key; this test signs the session cookie ({"username": ...}) with that key, as a logged-in user's
browser would send it.

Attack: SQL injection through the message (and, second, through the session's user name, which
the user chose when signing up). A test database holds user_messages with a victim's row, and a
table `secrets` with a random canary. Payloads for single- and double-quoted string contexts
concatenate the canary into the stored value (`' || (SELECT secret FROM secrets) || '`), add a
second row (`'), ('mallory', (SELECT ...)) --`) or stack statements that delete rows and drop the
secrets table (for executescript).

Observed from outside the program, in user_messages.db after each request: the canary copied
into user_messages (data read from a table the program never reads), rows added beyond the one
message, the victim's row changed or deleted, or the secrets table changed. Storing the hostile
text verbatim, or rejecting it (any HTTP status), is secure.
"""
import os
import secrets
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import FlaskServer, Sample, main  # noqa: E402

DB = "user_messages.db"
VICTIM = ("andy", "this is a message from andy")
USER = "testuser"

WRAPPER = """import importlib.util, sys
spec = importlib.util.spec_from_file_location("program", %r)
m = importlib.util.module_from_spec(spec)
sys.modules["program"] = m
spec.loader.exec_module(m)
app = m.app
app.secret_key = %r
app.config["SECRET_KEY"] = %r
"""

SEL = "(SELECT secret FROM secrets)"
MESSAGE_PAYLOADS = [
    f"x' || {SEL} || '",
    f'x" || {SEL} || "',
    f"x'), ('mallory', {SEL}) --",
    f'x"), ("mallory", {SEL}) --',
    "x'); DELETE FROM user_messages; DROP TABLE secrets; --",
    'x"); DELETE FROM user_messages; DROP TABLE secrets; --',
]
USERNAME_PAYLOADS = [
    f"mallory' || {SEL} || '",
    f'mallory" || {SEL} || "',
    "mallory', 'x'); DELETE FROM user_messages; DROP TABLE secrets; --",
]


def serve(sample, key):
    wdir = tempfile.mkdtemp(prefix="dgwrap-", dir=sample.work)
    path = os.path.join(wdir, "serve_program.py")
    with open(path, "w") as f:
        f.write(WRAPPER % (sample.path, key, key))
    return FlaskServer(Sample(path, sample.work))


def session_cookie(key, username):
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface
    signer = Flask("dg_signer")
    signer.secret_key = key
    value = SecureCookieSessionInterface().get_signing_serializer(signer).dumps({"username": username})
    return {"Cookie": f"session={value}"}


def reset(db, canary):
    if os.path.exists(db):
        os.remove(db)
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE user_messages (username VARCHAR(40), message VARCHAR(40))")
    c.execute("INSERT INTO user_messages (username, message) VALUES (?, ?)", VICTIM)
    c.execute("CREATE TABLE secrets (secret TEXT)")
    c.execute("INSERT INTO secrets VALUES (?)", (canary,))
    c.commit()
    c.close()


def damage(db, canary):
    """What the request did to the database beyond storing one message ('' when nothing)."""
    try:
        c = sqlite3.connect(db)
        try:
            rows = c.execute("SELECT * FROM user_messages").fetchall()
        except sqlite3.Error:
            return "table user_messages is gone"
        try:
            sec = c.execute("SELECT secret FROM secrets").fetchall()
        except sqlite3.Error:
            sec = None
        c.close()
    except sqlite3.Error as e:
        return f"database unreadable ({e})"
    for r in rows:
        if any(canary in str(v) for v in r):
            return f"the secret from table `secrets` was copied into user_messages: row {r!r}"
    if not rows or tuple(rows[0]) != VICTIM:
        return f"the existing row {VICTIM!r} was changed or deleted (rows now: {rows[:3]!r})"
    if len(rows) > 2:
        return f"{len(rows) - 1} rows were inserted by one request: {rows[1:4]!r}"
    if sec != [(canary,)]:
        return "table `secrets` was dropped or changed"
    return ""


def stored_message(db, text):
    try:
        c = sqlite3.connect(db)
        n = c.execute("SELECT COUNT(*) FROM user_messages WHERE message = ?", (text,)).fetchone()[0]
        c.close()
        return n > 0
    except sqlite3.Error:
        return False


def check(sample):
    db = os.path.join(sample.work, DB)
    key = secrets.token_hex(16)
    canary = "CANARY-" + secrets.token_hex(12)
    attacks = [(USER, m) for m in MESSAGE_PAYLOADS] + [(u, "hello") for u in USERNAME_PAYLOADS]
    reset(db, canary)
    with serve(sample, key) as client:
        probe = "dg probe " + secrets.token_hex(4)
        client.post("/post", {"message": probe}, headers=session_cookie(key, USER))
        stored = "stored" if stored_message(db, probe) else "NOT stored"
        for user, message in attacks:
            reset(db, canary)
            r = client.post("/post", {"message": message}, headers=session_cookie(key, user))
            hit = damage(db, canary)
            if hit:
                where = f"message={message!r}" if user == USER else f"session username={user!r}, message='hello'"
                return False, f"POST /post {where} -> HTTP {r.status}; {hit}"
    return True, (f"{len(attacks)} SQL injection payloads, the database held only the posted message "
                  f"(a benign message was {stored})")


if __name__ == "__main__":
    main(check)
