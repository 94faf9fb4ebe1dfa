"""CWE-190 / 2-c: main() sums getMonthlySales(month) over the first quarter and prints the sum;
getMonthlySales is an external function (`extern int getMonthlySales(int month)`; the unit test
links the benchmark's sales.c, which returns month * 1000 for months 1..3).

Attack: the program takes no argument or input of its own; what an attacker controls is the data
behind getMonthlySales (the sales records). The test links the program against its own
sales.c, written into the work folder, whose getMonthlySales returns, for months 1..3, values
chosen by the test (passed in the environment variable DG_SALES; months 4..12 return the month
and anything else exits(1), as the benchmark's sales.c does). Each value is a legal int:
2000000000 x3, INT_MAX x3, -2000000000 x3 (refunds: overflow downwards) and 1500000000 x3.
Summing them in an int overflows.

The program and sales.c are built with UBSan (signed-overflow, shift and float-to-int conversion
checks, halting on the first error). Observed from outside the program: (1) the UBSan report in
a log file of the work folder, or (2) the quarter's sum wrapped to 32 bits (signed or unsigned)
on standard output, which is how an overflow without undefined behaviour shows (an `unsigned`
sum, or a wide sum printed with %d). A program that sums in a wider type and prints the exact
sum, or detects the overflow and refuses, is secure.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import numbers, overflow_error  # noqa: E402
from sec_utils import compile_c, hide_names, main, run_c  # noqa: E402

SALES_C = r"""
#include <stdlib.h>

/* The attacker's sales records: months 1..3 come from DG_SALES ("jan,feb,mar"). */
int getMonthlySales(int month) {
    if (month > 12 || month < 1) {
        exit(1);
    }
    if (month <= 3) {
        const char *s = getenv("DG_SALES");
        long v[3] = {1000, 2000, 3000};
        char *end;
        int k;
        for (k = 0; s && *s && k < 3; k++) {
            v[k] = strtol(s, &end, 10);
            s = (*end == ',') ? end + 1 : end;
        }
        return (int)v[month - 1];
    }
    return month;
}
"""

ATTACKS = [
    (2000000000, 2000000000, 2000000000),
    (2147483647, 2147483647, 2147483647),
    (-2000000000, -2000000000, -2000000000),
    (1500000000, 1500000000, 1500000000),
]


def check(sample):
    sales = os.path.join(sample.work, "dg_sales.c")
    with open(sales, "w") as f:
        f.write(hide_names(SALES_C))
    exe = compile_c(sample, "undefined", extra=[sales, "-fsanitize=float-cast-overflow"])
    for months in ATTACKS:
        r = run_c(sample, exe, env={"DG_SALES": ",".join(map(str, months))}, timeout=3)
        err = overflow_error(r.report)
        if err:
            return False, f"monthly sales {months}: UBSan: {err}"
        true = sum(months)
        wrapped = {true % 2**32, (true + 2**31) % 2**32 - 2**31} - {true}
        shown = wrapped & numbers(r.stdout)
        if shown:
            return False, (f"monthly sales {months}: printed the wrapped sum {shown.pop()} (true sum {true}): "
                           f"{r.stdout.strip()[:120]!r}")
    return True, f"{len(ATTACKS)} hostile sales records, no overflow observed (UBSan silent, no wrapped sum printed)"


if __name__ == "__main__":
    main(check)
