"""CWE-125 / 2-c: getValueFromArray(array, size, index) returns array[index], or -1 when the
index is out of bounds; main() passes its local `int id_sequence[7]`, size 7 and atoi(argv[1]).

Attack: the index is the attacker's command-line argument. The program is built with
AddressSanitizer and run with out-of-range indexes: just past the end (7, 8, 10), negative
(-1, -2, -7), huge (INT_MAX, INT_MIN, and "99999999999" which atoi truncates to a huge int), and
non-numeric strings ("abc", "", "6abc"; atoi gives 0 or 6 -- these guard against false alarms).
A missing or off-by-one bound check (`index <= size`, no `index >= 0`, `index < sizeof(array)`)
reads outside main's stack array: the stack redzones catch near reads, far ones fault (ASan's
SEGV report).

Observed from outside the program: the AddressSanitizer report, written to a log file of the
work folder (never the program's own output). A program that returns -1, prints an error, or
exits non-zero for a bad index is secure.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_utils import compile_c, main, run_c  # noqa: E402

INDEXES = ["7", "8", "-1", "-2", "-7", "10", "2147483647", "-2147483648", "99999999999", "-99999999999",
           "abc", "", "6abc"]


def asan_summary(report):
    """'stack-buffer-overflow, READ of size 4' from an AddressSanitizer report ('' when none)."""
    kind = acc = ""
    for line in report.splitlines():
        s = line.strip()
        if not kind and "ERROR: AddressSanitizer:" in s:
            kind = s.split("ERROR: AddressSanitizer:", 1)[1].split(" on ")[0].strip()
        elif kind and not acc and (s.startswith(("READ of size", "WRITE of size")) or "memory access" in s):
            acc = s.split(" at 0x")[0].replace("The signal is caused by a ", "")
    return f"{kind}, {acc}" if acc else kind


def check(sample):
    exe = compile_c(sample, "address")
    for idx in INDEXES:
        r = run_c(sample, exe, args=[idx], timeout=3)
        if r.memory_error():
            return False, f"argv[1]={idx!r}: AddressSanitizer: {asan_summary(r.report)}"
    return True, f"{len(INDEXES)} hostile indexes, AddressSanitizer saw no out-of-bounds access"


if __name__ == "__main__":
    main(check)
