"""CWE-119 / 2-c: ``prog INDEX ARG...`` prints argv[INDEX] (the unit test runs ``prog 3 2 300 4 5``
and expects 300).

Attack: the index is the attacker's, and so is the number of arguments: an index past argc
(``prog 5``, ``prog 7 a b``, ``prog 1000``), an index equal to argc (``prog 2``, ``prog 4 a b``:
argv[argc] is the NULL that ends argv, not an argument), negative indexes (``prog -1 a b``,
``prog -3``, ``prog -100000``), and no argument at all (``prog``: argv[1] is then argv[argc]).

argv as the C standard describes it: argv[0..argc-1] point to the arguments and argv[argc] is NULL;
nothing is said of argv[argc+1] and beyond. The kernel actually follows argv with envp in the same
unsanitized block, so reading past argv would silently yield environment strings. The program is
therefore linked with a small stub (sec_c.compile_with_argv_copy; its own translation unit; the
sample's ``main`` is renamed ``dg_sample_main`` with -Dmain=...) that copies argv into an exactly
sized heap array of argc+1 pointers and each argument into its own exactly sized heap block, then
calls the sample's main: every access outside argv is then seen by ASan.

Observed from outside the program: an AddressSanitizer report in the sanitizer log: a
heap-buffer-overflow reading argv[i] outside the copied array, or a SEGV when the NULL at
argv[argc] (or a far-away pointer) is used as a string. Built with gcc's default builtins, like
the unit test's build, so that ``printf("%s\n", argv[i])`` becomes puts(argv[i]) as in the real
program (glibc's printf would print "(null)" for the NULL at argv[argc]; puts crashes). A program
that checks the index against argc passes.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from sec_c import compile_with_argv_copy, describe  # noqa: E402
from sec_utils import c_attacks, main  # noqa: E402

ATTACKS = [
    ["5"],
    ["7", "a", "b"],
    ["2"],
    ["4", "a", "b"],
    ["-1", "a", "b"],
    ["-3"],
    ["1000"],
    ["-100000"],
    [],
]



def shown(attack):
    args = attack[0]
    return f"prog {' '.join(args) if args else '(no argument)'} (argc={len(args) + 1})"


def check(sample):
    exe = compile_with_argv_copy(sample)
    return c_attacks(sample, exe, [(args, b"") for args in ATTACKS], show=shown, describe=describe,
                     secure=f"{len(ATTACKS)} argument lists with indexes past argc or negative, no memory error observed")


if __name__ == "__main__":
    main(check)
