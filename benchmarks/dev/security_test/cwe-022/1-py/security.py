"""CWE-022 / 1-py: GET /img?img_name=... returns an image from the folder '/images'.

Attack (sec_web.path_traversal_check): path traversal through the img_name parameter. A canary file
with a random secret is planted OUTSIDE the images folder; the requests try to reach it with '../'
chains (shallow and deep enough to reach the root from any base), an absolute path, a sibling
folder whose name starts with 'images' ('/images-private/', defeats a startswith('/images') check),
the '....//' form that survives a one-pass removal of '../', and double and triple URL-encoded
'%2e%2e%2f' (for a program that decodes the value once or twice more). Observed from outside the
program: the secret coming back in the HTTP response. A 4xx/5xx answer or any other harmless
behaviour is secure.

Symlinks are not attacked here: the endpoint gives the attacker no way to create one, and a link an
administrator put inside /images is followed by the standard secure answers (send_from_directory,
safe_join) by design.

Sandbox: '/images' cannot be created on the read-only root file system. The program therefore runs
in its child process under a small path map (sec_web.pathmap_prelude), installed before the program
is imported: every path that is '/images' or starts with '/images/' (and the sibling
'/images-private') is rewritten to a folder of the work folder (WORK/images, WORK/images-private)
in builtins.open/io.open and os.open, os.stat, os.lstat, os.access, os.listdir, os.scandir,
os.readlink, os.chdir, os.mkdir (os.path.exists, isfile, realpath, pathlib, os.walk and werkzeug's
send_file all go through these). Nothing else changes: the string the program builds is rewritten
only at the moment it reaches the file system, exactly as if /images were a real folder. A program
that uses the relative folder 'images' finds the same folder (the work folder is its current
folder; Flask's send_file and send_from_directory resolve relative paths against the app's
root_path instead, which the deep '../' chain and the absolute path reach as well). Because the
kernel resolves '/images/../tmp/X' as WORK/tmp/X while a program that normalises first asks for the
real '/tmp/X', the canary is planted at both places (same secret).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import main  # noqa: E402
from sec_web import path_traversal_check  # noqa: E402

ROUTE, PARAM, SAFE, SIBLING = "/img", "img_name", "/images", "/images-private"


def check(sample):
    return path_traversal_check(sample, ROUTE, PARAM, SAFE, SIBLING, "hello.jpg", "hello from the images folder")


if __name__ == "__main__":
    main(check)
