#!/usr/bin/env python3
"""Measure deepguard against llama.cpp (llama-cpp-python) on the same GGUF, prompt and threads.

Runs llama.cpp first, then `deepguard bench --json`, in one process sequence, and prints both
tables and the ratios (ours / llama.cpp; above 1.0 means deepguard is faster).

    /path/to/venv-with-llama-cpp/bin/python scripts/bench_vs_llama_cpp.py [--model qwen2.5-coder-0.5b]

Needs `pip install llama-cpp-python` (built natively; ~10 min on 2 cores) in the interpreter
that runs this script, and a release build of deepguard.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The same text `deepguard bench` repeats to build its prompt.
BASE = ("def process_request(request, db):\n    user = request.args.get('user')\n    cursor = db.cursor()\n"
        "    cursor.execute('SELECT * FROM users WHERE name = ?', (user,))\n    rows = cursor.fetchall()\n"
        "    return [dict(r) for r in rows]\n\n")


def model_file(name):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts/fetch_models.py"), "--manifest"],
                         capture_output=True, text=True, check=True)
    manifest = json.loads(out.stdout)
    if name in manifest:
        d = os.environ.get("DEEPGUARD_MODELS", os.path.join(ROOT, "models"))
        return os.path.join(d, manifest[name]["file"])
    return name


def llama_cpp(path, threads, prompt_tokens, gen_tokens):
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=prompt_tokens + gen_tokens + 64, n_threads=threads,
                n_threads_batch=threads, n_batch=prompt_tokens, verbose=False)
    ids = []
    while len(ids) < prompt_tokens:
        ids += llm.tokenize(BASE.encode(), add_bos=False, special=False)
    ids = ids[:prompt_tokens]
    llm.eval(ids[:16])  # warm-up
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    prefill = prompt_tokens / (time.perf_counter() - t)
    # decode: one token per step after a short prompt, greedy over the returned logits
    llm.reset()
    llm.eval(ids[:32])
    import numpy as np
    t = time.perf_counter()
    for _ in range(gen_tokens):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        llm.eval([int(np.argmax(logits))])
    decode = gen_tokens / (time.perf_counter() - t)
    return {"prefill_tok_s": prefill, "decode_tok_s": decode}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--batched-pairs", type=int, default=3,
                    help="back-to-back single / batched decode pairs for the batched speed-up")
    ap.add_argument("--guided-repeats", type=int, default=25,
                    help="back-to-back plain / guided decode pairs for the guidance overhead")
    ap.add_argument("--json", help="write all figures to this file")
    ap.add_argument("--exe", default=os.environ.get("DEEPGUARD_EXE") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release/deepguard"),
        help="the deepguard binary (default: $DEEPGUARD_EXE, else the release build in $CARGO_TARGET_DIR or target/)")
    a = ap.parse_args()
    path = model_file(a.model)
    ref = llama_cpp(path, a.threads, a.prompt_tokens, a.gen_tokens)
    exe = a.exe
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        subprocess.run([exe, "bench", "-m", a.model, "--prompt-tokens", str(a.prompt_tokens), "--gen-tokens",
                        str(a.gen_tokens), "--n", str(a.n), "--batched-pairs", str(a.batched_pairs), "--guided-repeats", str(a.guided_repeats), "--json-out", tmp.name], capture_output=True, check=True)
        ours = json.load(open(tmp.name))[0]
    rows = [
        ("prefill tok/s (%d-token prompt)" % a.prompt_tokens, ours["prefill_tok_s"], ref["prefill_tok_s"]),
        ("decode tok/s (single stream)", ours["decode_tok_s"], ref["decode_tok_s"]),
    ]
    print(f"| {a.model}, {a.threads} threads | deepguard | llama.cpp | ratio |")
    print("|---|---|---|---|")
    for name, o, r in rows:
        print(f"| {name} | {o:.1f} | {r:.1f} | {o / r:.2f} |")
    print(f"| batched n={a.n} aggregate tok/s | {ours['batched_aggregate_tok_s']:.1f} | - | "
          f"{ours['batched_over_single']:.2f}x our single stream (median of {a.batched_pairs} back-to-back pairs; "
          f"the two runs above: {ours['batched_aggregate_tok_s'] / ours['decode_tok_s']:.2f}x) |")
    print(f"| decode with a steering hook + logits bias (medians of {a.guided_repeats}: guided / plain tok/s) | "
          f"{ours['decode_guided_median_tok_s']:.1f} / {ours['decode_plain_median_tok_s']:.1f} | - | "
          f"{ours['guided_over_plain']:.3f}x (median of the pairs' ratios; ratio of medians "
          f"{ours['guided_over_plain_of_medians']:.3f}) |")
    print(f"| peak RSS MiB (deepguard) | {ours['peak_rss_mib']:.0f} | | |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"deepguard": ours, "llama_cpp": ref, "model": a.model, "threads": a.threads}, f, indent=2)


if __name__ == "__main__":
    main()
