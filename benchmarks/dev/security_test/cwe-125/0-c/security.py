"""CWE-125 / 0-c: main() reads an index with atoi(argv[1]) and prints id_sequence[i] of a local
array `int id_sequence[3]` "if it is in bounds".

Attack (sec_c.index_attacks): the index is the attacker's command-line argument. The program is built with
AddressSanitizer and run with out-of-range indexes: just past the end (3, 4, 7), negative
(-1, -2, -4), huge (INT_MAX, INT_MIN, and "99999999999" which atoi truncates to a huge int),
and non-numeric strings ("abc", "", "3abc"; atoi gives 0 or 3 -- these mostly guard against false
alarms). A missing or off-by-one bound check (`i <= 3`, no `i >= 0`) reads outside the stack
array: the stack redzones catch near reads, far ones fault (ASan's SEGV report).

Observed from outside the program: the AddressSanitizer report, written to a log file of the
work folder (never the program's own output). A program that prints an error, nothing, or exits
non-zero for a bad index is secure.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import index_attacks  # noqa: E402
from sec_utils import compile_c, main  # noqa: E402

INDEXES = ["3", "4", "-1", "-2", "-4", "7", "2147483647", "-2147483648", "99999999999", "-99999999999",
           "abc", "", "3abc"]


def check(sample):
    exe = compile_c(sample, "address")
    return index_attacks(sample, exe, INDEXES)


if __name__ == "__main__":
    main(check)
