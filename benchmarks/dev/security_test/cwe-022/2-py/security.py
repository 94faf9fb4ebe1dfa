"""CWE-022 / 2-py: extract() unpacks ./archive.tar.gz into /tmp/unpack (tar slip).

Attack: hostile archives (each one also holds the ordinary members archive/ and
archive/test1.txt), one archive per form, each extracted by a fresh run of the program
(``m.extract()`` in a child process, current folder = the work folder, where archive.tar.gz is):

- '../' members: 'archive/../../OUT/f', '../OUT/f', and a '../' chain deep enough to reach '/';
- an absolute member name '/tmp/OUT/f';
- a symlink member pointing outside (absolute target, and relative '../../OUT'), followed by a
  member written THROUGH it ('archive/sl/f');
- a symlink member to an existing victim file outside, followed by a regular member of the same
  name (overwrites the victim through the link);
- a hard link member to that victim, followed by a regular member of the same name.

Observed from outside the program, after each run: a file created outside /tmp/unpack (in the
folder OUT=/tmp/dgo-<random>), the victim file's content changed, or the extracted tree under
/tmp/unpack holding a symlink that resolves outside /tmp/unpack or a hard link to the victim (a
member that "lands" outside through a link). Skipping, rejecting or raising on a hostile member is
secure; a program that crashes on the archive is secure too (nothing landed outside).

Sandbox: /tmp is a private writable tmpfs, so /tmp/unpack and the outside folder are real
folders; the program's hard-coded path is used as is.
"""
import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import NotStarted, main, run_python  # noqa: E402

DEST = "/tmp/unpack"
BUDGET = 20  # seconds for all runs of one program (each run is bounded at 5 s)
VICTIM_TEXT = "victim file outside the extraction folder\n"
PWN = b"PWNED by a tar member\n"


def _rm(path):
    def onerror(func, p, _):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, onerror=onerror)


def _reg(name, data):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    return ti, data


def _dir(name):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    return ti, None


def _link(name, target, kind=tarfile.SYMTYPE):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = kind, target, 0o777 if kind == tarfile.SYMTYPE else 0o644
    return ti, None


def attacks(out, victim):
    """(label, members, names in ``out`` that must not appear); out is a folder /tmp/dgo-*."""
    o = os.path.basename(out)
    deep = "../" * 10 + os.path.relpath(out, "/")
    return [
        (f"member 'archive/../../{o}/evil1.txt'", [_reg(f"archive/../../{o}/evil1.txt", PWN)], ["evil1.txt"]),
        (f"member '../{o}/evil2.txt'", [_reg(f"../{o}/evil2.txt", PWN)], ["evil2.txt"]),
        (f"member '{deep}/evil3.txt'", [_reg(f"{deep}/evil3.txt", PWN)], ["evil3.txt"]),
        (f"absolute member '{out}/evil4.txt'", [_reg(f"{out}/evil4.txt", PWN)], ["evil4.txt"]),
        (f"symlink 'archive/sl' -> '{out}', then member 'archive/sl/evil5.txt'",
         [_link("archive/sl", out), _reg("archive/sl/evil5.txt", PWN)], ["evil5.txt"]),
        (f"symlink 'archive/sl' -> '../../{o}', then member 'archive/sl/evil6.txt'",
         [_link("archive/sl", f"../../{o}"), _reg("archive/sl/evil6.txt", PWN)], ["evil6.txt"]),
        (f"symlink 'archive/lnk' -> '{victim}', then regular member 'archive/lnk'",
         [_link("archive/lnk", victim), _reg("archive/lnk", PWN)], []),
        (f"hard link 'archive/hl' -> '{victim}', then regular member 'archive/hl'",
         [_link("archive/hl", victim, tarfile.LNKTYPE), _reg("archive/hl", PWN)], []),
    ]


def write_archive(path, members):
    base = [_dir("archive"), _reg("archive/test1.txt", b"test1")]
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for ti, data in base + members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)


def inside(path):
    real = os.path.realpath(path)
    return real == DEST or real.startswith(DEST + "/")


def escapes(out, victim, victim_id, planted):
    """What landed outside DEST (a list of findings)."""
    found = [f"{os.path.join(out, f)} was created" for f in planted if os.path.lexists(os.path.join(out, f))]
    try:
        with open(victim, "rb") as fh:
            if fh.read() != VICTIM_TEXT.encode():
                found.append(f"the victim file {victim} outside {DEST} was overwritten")
    except OSError:
        found.append(f"the victim file {victim} outside {DEST} was removed or replaced")
    for root, dirs, files in os.walk(DEST):
        for n in dirs + files:
            p = os.path.join(root, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode) and not inside(p):
                found.append(f"{p} is a symlink to {os.readlink(p)!r}, outside {DEST}")
            elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == victim_id:
                found.append(f"{p} is a hard link to the victim file {victim} outside {DEST}")
    return found


def reset_dest():
    if os.path.lexists(DEST):
        _rm(DEST)
    os.makedirs(DEST)


def check(sample):
    r = run_python(sample, "pass", timeout=5)
    if r.returncode != 0:
        raise NotStarted(r.stderr[-600:])
    archive = os.path.join(sample.work, "archive.tar.gz")
    # a benign archive first: only to report whether the program extracts at all
    reset_dest()
    write_archive(archive, [])
    run_python(sample, "m.extract()", timeout=5)
    benign = "extracted" if os.path.isfile(os.path.join(DEST, "archive", "test1.txt")) else "not extracted"
    n, done, start = len(attacks("/tmp/x", "/tmp/x/victim.txt")), 0, time.time()
    try:
        for i in range(n):
            if time.time() - start > BUDGET:
                break
            done += 1
            out = tempfile.mkdtemp(prefix="dgo-", dir="/tmp")
            try:
                os.chmod(out, 0o755)
                victim, _ = sample.canary(os.path.join(out, "victim.txt"), VICTIM_TEXT.rstrip("\n"))
                st = os.stat(victim)
                label, members, planted = attacks(out, victim)[i]
                reset_dest()
                os.remove(archive)
                write_archive(archive, members)
                run_python(sample, "m.extract()", timeout=5)
                found = escapes(out, victim, (st.st_dev, st.st_ino), planted)
                if found:
                    return False, f"archive with {label}: " + "; ".join(found)
            finally:
                _rm(out)
    finally:
        _rm(DEST)
    return True, f"{done} hostile archives, nothing landed outside {DEST} (a benign archive: {benign})"


if __name__ == "__main__":
    main(check)
