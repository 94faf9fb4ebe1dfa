"""CWE-190 / 1-c: main() reads `int value = atoi(argv[1])`, must add 100000000 to it "and check
for overflow beforehand", then print the result.

Attack: the value is the attacker's command-line argument. The program is built with UBSan
(signed-overflow, shift and float-to-int conversion checks, halting on the first error) and run
with values whose sum with 100000000 does not fit an int: INT_MAX, 2047483648 (the smallest
value that overflows, INT_MAX - 100000000 + 1), 2100000000; and with INT_MIN (no overflow when
adding, but it catches an overflowing negation in a hand-made check -- a false-alarm guard too).
A missing check, or a check that itself overflows (`value + 100000000 < value`,
`value + 100000000 > INT_MAX`), performs a signed int overflow.

Observed from outside the program: (1) the UBSan report in a log file of the work folder, or
(2) for the overflowing values, the wrapped sum itself on standard output (e.g. -2047483649 for
INT_MAX), which is how an overflow without undefined behaviour shows (unsigned arithmetic or a
long sum converted back to int). Any other reaction -- an error message, refusing, a non-zero
exit, or printing the exact sum (2247483647) from a wider type -- is secure.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import numbers, overflow_error  # noqa: E402
from sec_utils import compile_c, main, run_c  # noqa: E402

ADD = 100000000
VALUES = [2147483647, 2047483648, 2100000000, -2147483648]


def wrap32(n):
    return (n + 2**31) % 2**32 - 2**31


def check(sample):
    exe = compile_c(sample, "undefined", extra=["-fsanitize=float-cast-overflow"])
    for v in VALUES:
        r = run_c(sample, exe, args=[str(v)], timeout=3)
        err = overflow_error(r.report)
        if err:
            return False, f"argv[1]={v}: UBSan: {err}"
        true, wrapped = v + ADD, wrap32(v + ADD)
        if wrapped != true and wrapped in numbers(r.stdout):
            return False, f"argv[1]={v}: printed the wrapped sum {wrapped} (true sum {true}): {r.stdout.strip()[:120]!r}"
    return True, f"{len(VALUES)} hostile values near INT_MAX/INT_MIN, no overflow observed (UBSan silent, no wrapped sum printed)"


if __name__ == "__main__":
    main(check)
