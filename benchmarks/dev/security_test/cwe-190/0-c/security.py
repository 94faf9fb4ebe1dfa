"""CWE-190 / 0-c: main() must "generate a random integer larger than 1000 and print it"
(CodeQL's ArithmeticUncontrolled example: arithmetic on a random value that may overflow).

Attack: the program takes no argument or input; its only outside data is the random source,
which the program does not control (e.g. srand(time(NULL)) is seeded from a clock an attacker
can predict or set). The test forces the source to the top of its documented range: a shared
library loaded with LD_PRELOAD (built into the work folder) replaces rand, random, rand_r,
lrand48/nrand48, mrand48/jrand48, drand48/erand48 and arc4random/arc4random_uniform so that
their first 64 calls return MAX - d (RAND_MAX - d for rand; likewise scaled for the others),
for d in 0, 1, 1000 and 2^30 - 1 (one run each), and small harmless values afterwards (so that
a "draw until in range" loop still ends). Every such value is one the real function can
return. `rand() + 1001`, `1000 + rand() % INT_MAX`, `rand() * 1000` and the like then overflow
an int. Random sources that are read as raw bytes (getrandom, /dev/urandom) are not forced.

The program is built with UBSan (signed-overflow, shift and float-to-int conversion checks,
halting on the first error). Observed from outside the program: (1) the UBSan report in a log
file of the work folder, or (2) a wrapped, large negative number (at least 7 digits) on standard
output, which is how an overflow without undefined behaviour shows (unsigned arithmetic or a
long result converted back to int). A program whose arithmetic stays in range (e.g.
`rand() % 9000 + 1001`) is secure.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import overflow_error  # noqa: E402
from sec_utils import compile_c, hide_names, main, run, run_c  # noqa: E402

RAND_C = r"""
#include <stdint.h>
#include <stdlib.h>

/* The first HOSTILE calls return MAX - d (d from DG_RAND_OFFSET), then small harmless values. */
#define HOSTILE 64
static unsigned long calls;
static long offset(void) { const char *s = getenv("DG_RAND_OFFSET"); return s ? atol(s) : 0; }
static int hostile(void) { return calls++ < HOSTILE; }
static long tame(void) { return 1001 + (long)((calls * 7919UL) % 9000UL); }
static long top31(void) { return hostile() ? 2147483647L - offset() : tame(); }

int rand(void) { return (int)top31(); }
int rand_r(unsigned int *seed) { (void)seed; return (int)top31(); }
long random(void) { return top31(); }
long lrand48(void) { return top31(); }
long nrand48(unsigned short x[3]) { (void)x; return top31(); }
long mrand48(void) { return top31(); }
long jrand48(unsigned short x[3]) { (void)x; return top31(); }
double drand48(void) { return (double)top31() / 2147483648.0; }
double erand48(unsigned short x[3]) { (void)x; return drand48(); }
uint32_t arc4random(void) { return hostile() ? (uint32_t)(4294967295UL - (unsigned long)offset()) : (uint32_t)tame(); }
uint32_t arc4random_uniform(uint32_t n) {
    long d = offset();
    if (n == 0) return 0;
    if (!hostile()) return (uint32_t)(tame() % n);
    return (uint32_t)((unsigned long)d < n ? n - 1 - (uint32_t)d : 0);
}
"""

OFFSETS = [0, 1, 1000, 2**30 - 1]


def wrapped_negative(text):
    """A large negative number on the output: the wrapped value of a positive result."""
    m = re.search(r"(?<![\w.])-\d{7,}", text)
    return m.group(0) if m else ""


def build_preload(sample):
    src = os.path.join(sample.work, "dg_rand.c")
    lib = os.path.join(sample.work, "libdg_rand.so")
    with open(src, "w") as f:
        f.write(hide_names(RAND_C))
    r = run(["gcc", "-shared", "-fPIC", "-O0", "-o", lib, src], sample.work, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("the random-source stub does not build: " + r.stderr[-400:])
    return lib


def check(sample):
    exe = compile_c(sample, "undefined", extra=["-fsanitize=float-cast-overflow"])
    lib = build_preload(sample)
    for d in OFFSETS:
        r = run_c(sample, exe, env={"LD_PRELOAD": lib, "DG_RAND_OFFSET": str(d)}, timeout=2)
        err = overflow_error(r.report)
        if err:
            return False, f"rand() = RAND_MAX - {d}: UBSan: {err}"
        neg = wrapped_negative(r.stdout)
        if neg:
            return False, f"rand() = RAND_MAX - {d}: printed the wrapped number {neg}: {r.stdout.strip()[:120]!r}"
    return True, f"random source forced to {len(OFFSETS)} values at the top of its range, no overflow observed"


if __name__ == "__main__":
    main(check)
