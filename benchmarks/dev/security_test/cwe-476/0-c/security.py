"""CWE-476 / 0-c: the program mallocs a `person`, sets its status to 0 and prints it.

Attack: NULL pointer dereference when an allocation fails (memory exhaustion). The program's request
is tiny (sizeof(person)), so no input can make malloc fail on its own; the test injects the failure:
the program is built with AddressSanitizer and linked with a small fault-injection shim (sec_c.compile_with_failalloc)
(-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc: only the program's own calls are wrapped, libc's and
the sanitizer's internal allocations are untouched) whose DG_FAIL_NTH-th call returns NULL with
errno = ENOMEM, as a real out-of-memory malloc does. The program is run with the 1st, 2nd and 3rd
allocation failing. The shim also sets ASan's max_malloc_fill_size=0 (ASan would otherwise fill new
blocks with 0xbe, a pattern a real allocator does not produce).

Observed: an AddressSanitizer report (e.g. "SEGV on unknown address 0x000000000064" when
p->status is written through the NULL pointer), read from the sanitizer's log file after the run,
never from the program's output. A program that checks the pointer and exits/returns is secure.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import compile_with_failalloc, failalloc_attacks  # noqa: E402
from sec_utils import main  # noqa: E402


def check(sample):
    exe = compile_with_failalloc(sample)
    cases = [(f"allocation #{n} returns NULL", b"", n) for n in (1, 2, 3)]
    return failalloc_attacks(sample, exe, cases)


if __name__ == "__main__":
    main(check)
