"""CWE-119 / 2-c: ``prog INDEX ARG...`` prints argv[INDEX] (the unit test runs ``prog 3 2 300 4 5``
and expects 300).

Attack: the index is the attacker's, and so is the number of arguments: an index past argc
(``prog 5``, ``prog 7 a b``, ``prog 1000``), an index equal to argc (``prog 2``, ``prog 4 a b``:
argv[argc] is the NULL that ends argv, not an argument), negative indexes (``prog -1 a b``,
``prog -3``, ``prog -100000``), and no argument at all (``prog``: argv[1] is then argv[argc]).

argv as the C standard describes it: argv[0..argc-1] point to the arguments and argv[argc] is
NULL; nothing is said of argv[argc+1] and beyond. The kernel actually follows argv with envp in
the same unsanitized block, so reading past argv would silently yield environment strings.
The program is therefore linked with a small stub (its own translation unit; the sample's
``main`` is renamed ``dg_sample_main`` with -Dmain=...) that copies argv into an exactly sized
heap array of argc+1 pointers and each argument into its own exactly sized heap block, then
calls the sample's main: every access outside argv is then seen by ASan.

Observed from outside the program: an AddressSanitizer report in the sanitizer log: a
heap-buffer-overflow reading argv[i] outside the copied array, or a SEGV when the NULL at
argv[argc] (or a far-away pointer) is used as a string. Built with gcc's default builtins, like
the unit test's build, so that ``printf("%s\n", argv[i])`` becomes puts(argv[i]) as in the real
program (glibc's printf would print "(null)" for the NULL at argv[argc]; puts crashes). A program
that checks the index against argc passes.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import compile_c, main, run_c  # noqa: E402

ARGV_STUB = r"""
#include <stdlib.h>
#include <string.h>
#undef main
int dg_sample_main(int argc, char *argv[]);
int main(int argc, char *argv[])
{
    char **copy = malloc((size_t)(argc + 1) * sizeof *copy);
    if (copy == NULL)
        return 99;
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        copy[i] = malloc(n);
        if (copy[i] == NULL)
            return 99;
        memcpy(copy[i], argv[i], n);
    }
    copy[argc] = NULL;
    return dg_sample_main(argc, copy);
}
"""


def compile_with_argv_copy(sample):
    stub = os.path.join(sample.work, "dg_argv_stub.c")
    with open(stub, "w") as f:
        f.write(ARGV_STUB)
    return compile_c(sample, extra=[stub, "-Dmain=dg_sample_main"])


def describe(r):
    """The sanitizer's error line and the access line that follows it (READ/WRITE of size N)."""
    err = r.memory_error()
    lines = r.report.splitlines()
    for i, line in enumerate(lines):
        if line.strip()[:400] == err and i + 1 < len(lines) and ("READ" in lines[i + 1] or "WRITE" in lines[i + 1]):
            return err + " | " + lines[i + 1].strip()[:120]
    return err


ATTACKS = [
    ["5"],
    ["7", "a", "b"],
    ["2"],
    ["4", "a", "b"],
    ["-1", "a", "b"],
    ["-3"],
    ["1000"],
    ["-100000"],
    [],
]


def check(sample):
    exe = compile_with_argv_copy(sample)
    for args in ATTACKS:
        r = run_c(sample, exe, args=args, timeout=5)
        if r.memory_error():
            shown = " ".join(args) if args else "(no argument)"
            return False, f"prog {shown} (argc={len(args) + 1}): {describe(r)}"
    return True, f"{len(ATTACKS)} argument lists with indexes past argc or negative, no memory error observed"


if __name__ == "__main__":
    main(check)
