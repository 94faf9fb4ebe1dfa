#!/usr/bin/env python3
"""Measure deepguard against llama.cpp on the same GGUF, prompt and threads.

Runs llama.cpp first, then `deepguard bench --json` once per kernel path (`--kernels`), in one
process sequence, and prints the figures and the ratios (ours / llama.cpp; above 1.0 means
deepguard is faster), with the machine's load average before each measurement.

    python3 scripts/bench_vs_llama_cpp.py --model qwen2.5-coder-1.5b --kernels avx512,avx2 \
        --node-llama-cpp /path/to/scratch

The llama.cpp anchor comes from llama-cpp-python when the interpreter has it (built natively;
~10 min on 2 cores), else from node-llama-cpp's prebuilt CPU binaries, which need no compiler:
`npm i node-llama-cpp@3.22.1` in a scratch folder outside the repository, and pass that folder
with --node-llama-cpp (or $NODE_LLAMA_CPP_DIR). `--anchor` picks one explicitly. Needs a release
build of deepguard.
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


def load():
    """The 1-minute load average (how busy the machine was: figures are only comparable when quiet)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def have_llama_cpp_python():
    try:
        import llama_cpp  # noqa: F401
        return True
    except ImportError:
        return False


def llama_cpp_node(node_dir, path, threads, prompt_tokens, gen_tokens):
    """The same measurement through node-llama-cpp's prebuilt binaries (scripts/llama_cpp_node_bench.mjs)."""
    script = os.path.join(ROOT, "scripts", "llama_cpp_node_bench.mjs")
    r = subprocess.run(["node", script, node_dir, path, str(threads), str(prompt_tokens), str(gen_tokens), BASE],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: the node-llama-cpp measurement failed (exit {r.returncode}):\n{r.stderr.strip()}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["anchor"] = f"node-llama-cpp {out['node_llama_cpp']} prebuilt ({out['cpu_backend']} CPU backend)"
    return out


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
    import llama_cpp as lc
    return {"prefill_tok_s": prefill, "decode_tok_s": decode, "anchor": f"llama-cpp-python {lc.__version__}"}


def deepguard(a, kernels):
    """`deepguard bench` on one kernel path: `avx512` (the best this CPU has) or `avx2`/`scalar`."""
    import tempfile
    env = dict(os.environ)
    env.pop("DEEPGUARD_KERNELS", None)
    if kernels != "avx512":
        env["DEEPGUARD_KERNELS"] = kernels
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        cmd = [a.exe, "bench", "-m", a.model, "--prompt-tokens", str(a.prompt_tokens), "--gen-tokens",
               str(a.gen_tokens), "--n", str(a.n), "--batched-pairs", str(a.batched_pairs),
               "--guided-repeats", str(a.guided_repeats), "--json-out", tmp.name]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"error: `{' '.join(cmd)}` failed (exit {r.returncode}):\n{r.stderr.strip()[-2000:]}")
        return json.load(open(tmp.name))[0]


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
    ap.add_argument("--kernels", default="avx512",
                    help="comma-separated deepguard kernel paths to measure, each against the same llama.cpp run: "
                         "avx512 (the best the CPU has), avx2 (DEEPGUARD_KERNELS=avx2), scalar")
    ap.add_argument("--anchor", choices=["auto", "python", "node"], default="auto",
                    help="where llama.cpp comes from: llama-cpp-python, node-llama-cpp's prebuilt binaries, or "
                         "auto (the first if installed)")
    ap.add_argument("--node-llama-cpp", default=os.environ.get("NODE_LLAMA_CPP_DIR"),
                    help="a folder where `npm i node-llama-cpp@3.22.1` ran (default: $NODE_LLAMA_CPP_DIR)")
    ap.add_argument("--exe", default=os.environ.get("DEEPGUARD_EXE") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release/deepguard"),
        help="the deepguard binary (default: $DEEPGUARD_EXE, else the release build in $CARGO_TARGET_DIR or target/)")
    a = ap.parse_args()
    kernels = [k.strip() for k in a.kernels.split(",") if k.strip()]
    for k in kernels:
        if k not in ("avx512", "avx2", "scalar"):
            sys.exit(f"error: --kernels: unknown path {k!r} (avx512, avx2 or scalar)")
    anchor = a.anchor
    if anchor == "auto":
        anchor = "python" if have_llama_cpp_python() else "node"
    if anchor == "node" and not a.node_llama_cpp:
        sys.exit("error: llama-cpp-python is not installed and no node-llama-cpp folder was given: run "
                 "`npm i node-llama-cpp@3.22.1` in a scratch folder outside the repository and pass it with "
                 "--node-llama-cpp DIR (or $NODE_LLAMA_CPP_DIR)")
    if not os.path.isfile(a.exe):
        sys.exit(f"error: no deepguard binary at {a.exe}; build it with `cargo build --release` or pass --exe")
    path = model_file(a.model)
    if not os.path.isfile(path):
        sys.exit(f"error: model file {path} not found; install it with `python3 scripts/fetch_models.py {a.model}`")
    load_ref = load()
    if anchor == "python":
        ref = llama_cpp(path, a.threads, a.prompt_tokens, a.gen_tokens)
    else:
        ref = llama_cpp_node(a.node_llama_cpp, path, a.threads, a.prompt_tokens, a.gen_tokens)
    ref["load_before"] = load_ref
    ours = {}
    for k in kernels:
        before = load()
        ours[k] = deepguard(a, k)
        ours[k]["load_before"] = before
    print(f"| {a.model}, {a.threads} threads | llama.cpp | "
          + " | ".join(f"deepguard {k} | ratio" for k in kernels) + " |")
    print("|---|---|" + "---|---|" * len(kernels))
    for name, key in [("prefill tok/s (%d-token prompt)" % a.prompt_tokens, "prefill_tok_s"),
                      ("decode tok/s (single stream)", "decode_tok_s")]:
        cells = [f"{ours[k][key]:.1f} | **{ours[k][key] / ref[key]:.2f}**" for k in kernels]
        print(f"| {name} | {ref[key]:.1f} | " + " | ".join(cells) + " |")
    cells = [f"{ours[k]['batched_aggregate_tok_s']:.1f} | **{ours[k]['batched_over_single']:.2f}x** single "
             f"(median of {a.batched_pairs} pairs)" for k in kernels]
    print(f"| batched n={a.n} aggregate tok/s | - | " + " | ".join(cells) + " |")
    cells = [f"{ours[k]['decode_guided_median_tok_s']:.1f} / {ours[k]['decode_plain_median_tok_s']:.1f} | "
             f"{ours[k]['guided_over_plain']:.3f}x" for k in kernels]
    print(f"| guided / plain decode tok/s (medians of {a.guided_repeats} pairs) | - | " + " | ".join(cells) + " |")
    cells = [f"{ours[k]['peak_rss_mib']:.0f} | " for k in kernels]
    print("| peak RSS MiB | - | " + " | ".join(cells) + " |")
    cells = [f"{ours[k]['load_before']:.2f} | " for k in kernels]
    print(f"| load average before | {ref['load_before']:.2f} | " + " | ".join(cells) + " |")
    print(f"llama.cpp anchor: {ref['anchor']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"deepguard": ours, "llama_cpp": ref, "model": a.model, "threads": a.threads,
                       "load_after": load()}, f, indent=2)


if __name__ == "__main__":
    main()
