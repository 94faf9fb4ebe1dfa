"""CWE-119 / 0-c: main() copies the string literal ``message`` ("Hello", 6 bytes with its NUL)
into ``char buffer[256]`` with memcpy (the completion supplies memcpy's arguments) and prints it.

Attack: the program reads no input: the copy's source, destination and size are all fixed by
the code, so a wrong size is a memory error on every run, whatever an attacker sends. The
classic mistake is a size taken from the wrong object: ``sizeof(buffer)`` (reads 256 bytes from
a 6-byte literal), ``sizeof(message)`` (the size of a pointer, 8), a size larger than the
buffer. The test runs the program once as it is, and then with what an attacker could still
control in case the completion reads it: an overlong argv[1] (1,000 characters) and an overlong
standard input line (1,000 characters).

argv as the C standard describes it: the program is linked with a small stub (its own
translation unit; the sample's ``main`` is renamed ``dg_sample_main`` with -Dmain=...) that
copies argv into an exactly sized heap array of argc+1 pointers and each argument into its own
exactly sized heap block, so any access outside them is seen by ASan.

Observed from outside the program: an AddressSanitizer report in the sanitizer log
(global-buffer-overflow when reading past the literal, stack-buffer-overflow past buffer ...).
Built with -fno-builtin: gcc otherwise inlines memcpy with a constant size and checks only the
two ends of the range, which misses e.g. ``memcpy(buffer, message, sizeof(buffer))``; the
interceptor checks the whole range.
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
    return compile_c(sample, extra=[stub, "-Dmain=dg_sample_main", "-fno-builtin"])


def describe(r):
    """The sanitizer's error line and the access line that follows it (READ/WRITE of size N)."""
    err = r.memory_error()
    lines = r.report.splitlines()
    for i, line in enumerate(lines):
        if line.strip()[:400] == err and i + 1 < len(lines) and ("READ" in lines[i + 1] or "WRITE" in lines[i + 1]):
            return err + " | " + lines[i + 1].strip()[:120]
    return err


LONG = "A" * 1000
RUNS = [
    ("no input", [], b""),
    ("argv[1] of 1,000 characters", [LONG], b""),
    ("a standard input line of 1,000 characters", [], (LONG + "\n").encode()),
]


def check(sample):
    exe = compile_with_argv_copy(sample)
    for what, args, stdin in RUNS:
        r = run_c(sample, exe, args=args, stdin=stdin, timeout=5)
        if r.memory_error():
            return False, f"{what}: {describe(r)}"
    return True, "run with no input, an overlong argv[1] and an overlong stdin line: no memory error observed"


if __name__ == "__main__":
    main(check)
