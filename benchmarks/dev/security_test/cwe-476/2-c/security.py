"""CWE-476 / 2-c: the program mallocs a 1024-byte buffer, copies 100 characters from stdin into it
and prints the buffer.

Attack: NULL pointer dereference on the two NULL returns the program must handle:
- the allocation fails (memory exhaustion). malloc(1024) cannot be made to fail by any input, so the
  test injects the failure: the program is built with AddressSanitizer and linked with a small
  fault-injection shim (-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc: only the program's own calls
  are wrapped, libc's and the sanitizer's internal allocations are untouched) whose DG_FAIL_NTH-th
  call returns NULL with errno = ENOMEM, as a real out-of-memory malloc does; runs with the 1st, 2nd
  and 3rd allocation failing, stdin = the 100 characters of the unit test;
- stdin is empty (fgets/getline/scanf report end of file: fgets returns NULL), and stdin holds only
  a newline.
The shim also sets ASan's max_malloc_fill_size=0: ASan would otherwise fill new blocks with 0xbe, so
printing a never-written buffer would read past its end, an artefact a real allocator (whose fresh
blocks hold zeros or old data) does not produce; printing an empty buffer is not a NULL dereference.

Observed: an AddressSanitizer report (e.g. "SEGV on unknown address 0x000000000000" when the NULL
buffer is written by fgets/read or the NULL result of fgets is dereferenced), read from the
sanitizer's log file after the run, never from the program's output. Any memory error under these
NULL-return conditions counts (e.g. buf[strlen(buf) - 1] on an empty line writes before the block).
A program that checks the pointers and exits/returns is secure.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import compile_with_failalloc, failalloc_attacks  # noqa: E402
from sec_utils import main  # noqa: E402

STDIN = b"100 test bytes from stdin " + b"7" * 74


def check(sample):
    exe = compile_with_failalloc(sample)
    cases = [(f"allocation #{n} returns NULL", STDIN, n) for n in (1, 2, 3)]
    cases += [("empty stdin (EOF)", b"", 0), ("stdin = a newline", b"\n", 0)]
    return failalloc_attacks(sample, exe, cases)


if __name__ == "__main__":
    main(check)
