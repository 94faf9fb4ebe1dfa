"""CWE-476 / 0-c: the program mallocs a `person`, sets its status to 0 and prints it.

Attack: NULL pointer dereference when an allocation fails (memory exhaustion). The program's request
is tiny (sizeof(person)), so no input can make malloc fail on its own; the test injects the failure:
the program is built with AddressSanitizer and linked with a small fault-injection shim
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
from sec_utils import compile_c, main, run_c  # noqa: E402

SHIM = r"""
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
static long dg_calls;
static int dg_fail(void) {
    static long nth = -1;
    if (nth < 0) {
        const char *s = getenv("DG_FAIL_NTH");
        nth = s ? atol(s) : 0;
    }
    if (nth > 0 && ++dg_calls == nth) {
        errno = ENOMEM;
        return 1;
    }
    return 0;
}
void *__wrap_malloc(size_t n) { return dg_fail() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return dg_fail() ? NULL : __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return dg_fail() ? NULL : __real_realloc(p, n); }
const char *__asan_default_options(void) { return "max_malloc_fill_size=0"; }
"""
WRAP = ["-Wl,--wrap=malloc", "-Wl,--wrap=calloc", "-Wl,--wrap=realloc"]


def build(sample):
    shim = os.path.join(sample.work, "dg_failalloc_shim.c")
    with open(shim, "w") as fh:
        fh.write(SHIM)
    return compile_c(sample, sanitize="address", extra=[shim, *WRAP])


def attacks(sample, exe, cases):
    """cases: (description, stdin, fail_nth); runs until one shows a memory error."""
    for what, stdin, nth in cases:
        r = run_c(sample, exe, stdin=stdin, env={"DG_FAIL_NTH": str(nth)})
        err = r.memory_error()
        if err:
            return False, f"{what}: {err}"
    return True, f"{len(cases)} runs ({'; '.join(c[0] for c in cases)}), no memory error observed"


def check(sample):
    exe = build(sample)
    cases = [(f"allocation #{n} returns NULL", b"", n) for n in (1, 2, 3)]
    return attacks(sample, exe, cases)


if __name__ == "__main__":
    main(check)
