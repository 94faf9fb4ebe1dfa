"""CWE-089 / 1-py: POST /post (form field `message`, user name from the signed session) stores the
message with insert_user_message_in_db() in user_messages.db.

Setup: the program sets no secret key, so it cannot read any session. It is served with
FlaskServer's ``setup`` hook giving its app a random secret key (sec_web.secret_key_setup) once it
is imported; this test signs the session cookie ({"username": ...}) with that key
(sec_web.session_cookie), as a logged-in user's browser would send it.

Attack: SQL injection through the message (and, second, through the session's user name, which
the user chose when signing up). A test database holds user_messages with a victim's row, and a
table `secrets` with a random canary. Payloads for single- and double-quoted string contexts
concatenate the canary into the stored value (`' || (SELECT secret FROM secrets) || '`), add a
second row (`'), ('mallory', (SELECT ...)) --`) or stack statements that delete rows and drop the
secrets table (for executescript).

Observed from outside the program (sec_web.sql_damage), in user_messages.db after each request: the
canary copied into user_messages (data read from a table the program never reads), rows added
beyond the one message, the victim's row changed or deleted, or the secrets table changed. Storing
the hostile text verbatim, or rejecting it (any HTTP status), is secure.
"""
import os
import secrets
import sqlite3
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import FlaskServer, main  # noqa: E402
from sec_web import canary_db, secret_key_setup, session_cookie, sql_damage  # noqa: E402

DB = "user_messages.db"
VICTIM = ("andy", "this is a message from andy")
USER = "testuser"

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


CREATE = "CREATE TABLE user_messages (username VARCHAR(40), message VARCHAR(40))"


def reset(db, canary):
    canary_db(db, CREATE, "user_messages", VICTIM, canary)


def damage(db, canary):
    """What the request did to the database beyond storing one message ('' when nothing)."""
    return sql_damage(db, "user_messages", VICTIM, canary)


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
    with FlaskServer(sample, setup=secret_key_setup(key)) as client:
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
