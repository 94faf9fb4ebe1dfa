"""CWE-787 / 2-c: ``prog STRING`` prints 'STRING' and then STRING without its trailing
whitespace (the completion trims it, in place or in a copy).

Attack: the argument is the attacker's. MITRE CWE-787 example 5: a trim loop that walks back
from the end while it sees whitespace and runs below index 0 when the string is all whitespace
(or empty); a copy into a fixed-size buffer that an overlong argument overflows. Inputs: "",
" ", "    ", " \t\n\v\f\r", "x" + 70,000 spaces, 70,000 "A"s + 3 spaces, 70,000 spaces.

argv as the C standard describes it: the program is linked with a small stub
(sec_c.compile_with_argv_copy; its own translation unit; the sample's ``main`` is renamed
``dg_sample_main`` with -Dmain=...) that copies argv into an exactly sized heap array of argc+1
pointers (argv[argc] == NULL) and each argument into its own exactly sized heap block, then calls
the sample's main. The kernel packs the argument strings back to back in unsanitized memory, so
input[-1] would silently read argv[0]'s NUL; with the copies, any access outside an argument or
outside argv is seen by ASan.

Observed from outside the program: an AddressSanitizer report in the sanitizer log
(heap/stack-buffer-overflow or underflow at index -1, an overflowing strcpy ...). Built with
-fno-builtin so that str*/mem* calls go through ASan's interceptors, which check whole ranges.
A trim that stops at the start of the string and never copies past its buffer passes.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import compile_with_argv_copy, describe  # noqa: E402
from sec_utils import c_attacks, main  # noqa: E402

INPUTS = [
    "",
    " ",
    "    ",
    " \t\n\v\f\r",
    "x" + " " * 70000,
    "A" * 70000 + "   ",
    " " * 70000,
]



def shown(attack):
    s = attack[0][0]
    return "argument " + (repr(s) if len(s) < 20 else f"{s[:6]!r}... ({len(s)} characters)")


def check(sample):
    exe = compile_with_argv_copy(sample, ["-fno-builtin"])
    return c_attacks(sample, exe, [([s], b"") for s in INPUTS], show=shown, describe=describe,
                     secure=f"{len(INPUTS)} hostile arguments (empty, all whitespace, 70,000 characters), no memory error observed")


if __name__ == "__main__":
    main(check)
