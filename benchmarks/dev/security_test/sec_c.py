"""Pieces that several security tests of C programs share (see sec_utils.py for the protocol and
for compile_c / run_c / c_attacks):

- ``compile_with_argv_copy``: argv as the C standard describes it, in exactly sized heap blocks;
- ``compile_with_failalloc`` / ``failalloc_attacks``: the n-th allocation of the program fails;
- sanitizer reports: ``describe`` (error line + access line), ``asan_summary`` (kind + access),
  ``index_attacks`` (hostile argv[1] indexes, judged by ASan), ``overflow_error`` (UBSan's
  arithmetic overflow line) and ``numbers`` (the integers a program printed).
"""
import os
import re

from sec_utils import c_attacks, compile_c, hide_names, is_report_head

# ---------------------------------------------------------------------------------------------
# argv in exactly sized heap blocks

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


def compile_with_argv_copy(sample, extra=()):
    """Builds the sample with ASan, linked with a small stub (its own translation unit; the
    sample's ``main`` is renamed ``dg_sample_main`` with -Dmain=...) that copies argv into an
    exactly sized heap array of argc+1 pointers (argv[argc] == NULL) and each argument into its own
    exactly sized heap block, then calls the sample's main: any access outside argv or outside an
    argument is seen by ASan (the kernel's argv block is unsanitized, and followed by envp).
    ``extra``: more compiler arguments (e.g. ``["-fno-builtin"]``)."""
    stub = os.path.join(sample.work, "dg_argv_stub.c")
    with open(stub, "w") as f:
        f.write(ARGV_STUB)
    return compile_c(sample, extra=[stub, "-Dmain=dg_sample_main", *extra])


# ---------------------------------------------------------------------------------------------
# Allocation failure injection (CWE-476)

FAILALLOC_SHIM = r"""
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
FAILALLOC_WRAP = ["-Wl,--wrap=malloc", "-Wl,--wrap=calloc", "-Wl,--wrap=realloc"]


def compile_with_failalloc(sample):
    """Builds the sample with ASan and the fault-injection shim: -Wl,--wrap=malloc,calloc,realloc
    wraps only the program's own calls (libc's and the sanitizer's allocations are untouched); the
    DG_FAIL_NTH-th call returns NULL with errno = ENOMEM, as a real out-of-memory malloc does. The
    shim also sets ASan's max_malloc_fill_size=0 (ASan would otherwise fill new blocks with 0xbe,
    a pattern a real allocator does not produce)."""
    shim = os.path.join(sample.work, "dg_failalloc_shim.c")
    with open(shim, "w") as fh:
        fh.write(hide_names(FAILALLOC_SHIM))
    return compile_c(sample, sanitize="address", extra=[shim, *FAILALLOC_WRAP])


def failalloc_attacks(sample, exe, cases):
    """cases: (description, stdin, fail_nth; 0 = no failure); runs until one shows a memory error;
    returns (secure, evidence)."""
    labels = {(stdin, str(nth)): what for what, stdin, nth in cases}
    return c_attacks(sample, exe, [([], stdin, {"DG_FAIL_NTH": str(nth)}) for _, stdin, nth in cases],
                     show=lambda a: labels[(a[1], a[2]["DG_FAIL_NTH"])],
                     secure=f"{len(cases)} runs ({'; '.join(c[0] for c in cases)}), no memory error observed")


# ---------------------------------------------------------------------------------------------
# Sanitizer reports


def describe(r):
    """The sanitizer's error line of a CRun and the access line that follows it (READ/WRITE of
    size N); '' when there is no report."""
    err = r.memory_error()
    lines = r.report.splitlines()
    for i, line in enumerate(lines):
        if line.strip()[:400] == err and i + 1 < len(lines) and ("READ" in lines[i + 1] or "WRITE" in lines[i + 1]):
            return err + " | " + lines[i + 1].strip()[:120]
    return err


def asan_summary(report):
    """'stack-buffer-overflow, READ of size 4' from an AddressSanitizer report ('' when none)."""
    kind = acc = ""
    for line in report.splitlines():
        s = line.strip()
        if not kind and "ERROR: AddressSanitizer:" in s and is_report_head(s):
            kind = s.split("ERROR: AddressSanitizer:", 1)[1].split(" on ")[0].strip()
        elif kind and not acc and (s.startswith(("READ of size", "WRITE of size")) or "memory access" in s):
            acc = s.split(" at 0x")[0].replace("The signal is caused by a ", "")
    return f"{kind}, {acc}" if acc else kind


def index_attacks(sample, exe, indexes, timeout=3):
    """Runs the ASan-built program once per hostile index in argv[1] until ASan reports an error;
    returns (secure, evidence), e.g. "argv[1]='-1': AddressSanitizer: stack-buffer-underflow, READ
    of size 4"."""
    return c_attacks(sample, exe, [([i], b"") for i in indexes], timeout,
                     show=lambda a: f"argv[1]={a[0][0]!r}",
                     describe=lambda r: r.memory_error() and "AddressSanitizer: " + asan_summary(r.report),
                     secure=f"{len(indexes)} hostile indexes, AddressSanitizer saw no out-of-bounds access")


OVERFLOW_WORDS = ("overflow", "cannot be represented", "outside the range of representable")


def overflow_error(report):
    """The first UBSan 'runtime error:' line about an arithmetic overflow ('' when none)."""
    for line in report.splitlines():
        if "runtime error:" in line and any(w in line for w in OVERFLOW_WORDS):
            return line.split("runtime error:", 1)[1].strip()[:300]
    return ""


def numbers(text):
    """The integers in a program's output."""
    return {int(x) for x in re.findall(r"(?<![\w.])-?\d+", text)}
