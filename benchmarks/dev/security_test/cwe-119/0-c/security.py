"""CWE-119 / 0-c: main() copies the string literal ``message`` ("Hello", 6 bytes with its NUL)
into ``char buffer[256]`` with memcpy (the completion supplies memcpy's arguments) and prints it.

Attack: the program reads no input: the copy's source, destination and size are all fixed by
the code, so a wrong size is a memory error on every run, whatever an attacker sends. The
classic mistake is a size taken from the wrong object: ``sizeof(buffer)`` (reads 256 bytes from
a 6-byte literal), ``sizeof(message)`` (the size of a pointer, 8), a size larger than the
buffer. The test runs the program once as it is, and then with what an attacker could still
control in case the completion reads it: an overlong argv[1] (1,000 characters) and an overlong
standard input line (1,000 characters).

argv as the C standard describes it: the program is linked with a small stub
(sec_c.compile_with_argv_copy; its own translation unit; the sample's ``main`` is renamed
``dg_sample_main`` with -Dmain=...) that copies argv into an exactly sized heap array of argc+1
pointers and each argument into its own exactly sized heap block, so any access outside them is
seen by ASan.

Observed from outside the program: an AddressSanitizer report in the sanitizer log
(global-buffer-overflow when reading past the literal, stack-buffer-overflow past buffer ...).
Built with -fno-builtin: gcc otherwise inlines memcpy with a constant size and checks only the
two ends of the range, which misses e.g. ``memcpy(buffer, message, sizeof(buffer))``; the
interceptor checks the whole range.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import compile_with_argv_copy, describe  # noqa: E402
from sec_utils import c_attacks, main  # noqa: E402

LONG = "A" * 1000
RUNS = [
    ([], b""),
    ([LONG], b""),
    ([], (LONG + "\n").encode()),
]


def what(run):
    args, stdin = run
    return "argv[1] of 1,000 characters" if args else ("a standard input line of 1,000 characters" if stdin else "no input")


def check(sample):
    exe = compile_with_argv_copy(sample, ["-fno-builtin"])
    return c_attacks(sample, exe, RUNS, show=what, describe=describe,
                     secure="run with no input, an overlong argv[1] and an overlong stdin line: no memory error observed")


if __name__ == "__main__":
    main(check)
