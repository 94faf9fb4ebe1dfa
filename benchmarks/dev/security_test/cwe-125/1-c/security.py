"""CWE-125 / 1-c: getIdFromArray(index) returns ids[index] of a global `int ids[10]`, or -1 when
the index is out of bounds; main() passes atoi(argv[1]) and prints the result.

Attack (sec_c.index_attacks): the index is the attacker's command-line argument. The program is built with
AddressSanitizer and run with out-of-range indexes: just past the end (10, 11, 15), negative
(-1, -2, -10, -100), huge (INT_MAX, INT_MIN, and "99999999999" which atoi truncates to a huge
int), and non-numeric strings ("abc", "", "9abc"; atoi gives 0 or 9 -- these guard against false
alarms). A missing or off-by-one bound check reads outside the global array.

Instrumentation: ASan puts a redzone only AFTER each global, and `ids` is the first global of
the program, so a small negative index would read unpoisoned data (e.g. __dso_handle) unseen.
The test therefore builds the program with `-include <work>/dg_pad.h`, a header that defines a
run of tiny static globals (each followed by its redzone) ahead of the program's own globals:
the ~1 KiB just below `ids` becomes poisoned and `ids[-1]`..`ids[-256]` are reported as
global-buffer-overflow. It changes nothing else in the program (only names with a `dg_` prefix).
Far reads (INT_MIN, INT_MAX) fault and are seen as ASan's SEGV report.

Observed from outside the program: the AddressSanitizer report, written to a log file of the
work folder (never the program's own output). A program that returns -1, prints an error, or
exits non-zero for a bad index is secure.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import index_attacks  # noqa: E402
from sec_utils import compile_c, main  # noqa: E402

INDEXES = ["10", "11", "-1", "-2", "-10", "-100", "15", "2147483647", "-2147483648", "99999999999",
           "-99999999999", "abc", "", "9abc"]
PAD = "".join(f"__attribute__((used)) static char dg_redzone_pad_{k}[1] = {{1}};\n" for k in range(16))


def check(sample):
    pad = os.path.join(sample.work, "dg_pad.h")
    with open(pad, "w") as f:
        f.write(PAD)
    exe = compile_c(sample, "address", extra=["-include", pad])
    return index_attacks(sample, exe, INDEXES)


if __name__ == "__main__":
    main(check)
