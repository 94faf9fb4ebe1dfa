#!/usr/bin/env python3
"""Bounded load test of `deepguard serve` with the official `openai` client.

A fixed number of streamed completion requests from a fixed number of concurrent clients, then
it stops. Every request asks for exactly --max-tokens tokens (`ignore_eos`), so a complete
response is one that reports finish_reason "length", usage.completion_tokens == --max-tokens and
as many streamed tokens of text. Prints requests/s, p50/p99 latency, time to first token (TTFT)
and aggregate generated tokens/s; with --baseline N, first runs N requests from one client
(single-request decoding) and prints the concurrent/single throughput ratio.

Exit status 1 if any request failed or came back incomplete (or --min-ratio is not met).
Only talks to the --base-url it is given (the tests use 127.0.0.1).

  python scripts/serve_load.py --base-url http://127.0.0.1:8080/v1 --clients 8 --requests 32 \
      --max-tokens 128 --baseline 4
"""

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai

# Code prompts of similar length (completion mode), cycled over the requests.
PROMPTS = [
    "import sqlite3\n\ndef get_user(db_path, username):\n    \"\"\"Return the row of `username` from the users table.\"\"\"\n",
    "import os\nimport subprocess\n\ndef list_directory(path):\n    \"\"\"Return the output of `ls -l` on path.\"\"\"\n",
    "from flask import Flask, request\n\napp = Flask(__name__)\n\n@app.route('/hello')\ndef hello():\n    \"\"\"Greet the user named in the query string.\"\"\"\n",
    "import hashlib\n\ndef store_password(db, username, password):\n    \"\"\"Hash the password and store it for username.\"\"\"\n",
    "import yaml\n\ndef load_config(path):\n    \"\"\"Read the YAML configuration file at path.\"\"\"\n",
    "import tarfile\n\ndef extract(archive, dest):\n    \"\"\"Extract the tar archive into dest.\"\"\"\n",
    "#include <stdio.h>\n#include <string.h>\n\nvoid copy_name(char *dst, const char *src) {\n",
    "import pickle\n\ndef load_session(data):\n    \"\"\"Restore a session object from bytes sent by the client.\"\"\"\n",
]


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_request(client, model, i, args):
    """One streamed completion; returns its measurements, raises on any failure."""
    t0 = time.perf_counter()
    ttft = None
    text = []
    finish = None
    usage = None
    stream = client.completions.create(
        model=model,
        prompt=PROMPTS[i % len(PROMPTS)],
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=i,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, **({"deepguard": json.loads(args.deepguard)} if args.deepguard else {})},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.text:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                text.append(c.text)
            if c.finish_reason is not None:
                finish = c.finish_reason
    latency = time.perf_counter() - t0
    problems = []
    if finish != "length":
        problems.append(f"finish_reason {finish!r}")
    if usage is None or usage.completion_tokens != args.max_tokens:
        problems.append(f"usage {usage}")
    if not text:
        problems.append("no text")
    if problems:
        raise RuntimeError(f"request {i} incomplete: " + ", ".join(problems))
    return {"latency": latency, "ttft": ttft if ttft is not None else latency, "tokens": usage.completion_tokens, "prompt_tokens": usage.prompt_tokens}


def phase(client, model, clients, requests, args, offset=0):
    results, failures = [], []
    lock = threading.Lock()

    def work(i):
        try:
            r = one_request(client, model, offset + i, args)
            with lock:
                results.append(r)
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            with lock:
                failures.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as ex:
        list(ex.map(work, range(requests)))
    wall = time.perf_counter() - t0
    lat = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "requests": requests,
        "completed": len(results),
        "failed": len(failures),
        "failures": failures[:5],
        "wall_s": wall,
        "requests_per_s": len(results) / wall,
        "latency_p50_s": percentile(lat, 0.5),
        "latency_p99_s": percentile(lat, 0.99),
        "ttft_p50_s": percentile(ttft, 0.5),
        "ttft_p99_s": percentile(ttft, 0.99),
        "generated_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "prompt_tokens_mean": statistics.mean(r["prompt_tokens"] for r in results) if results else 0,
    }


def show(name, r):
    print(
        f"{name}: {r['completed']}/{r['requests']} requests from {r['clients']} clients in {r['wall_s']:.1f}s: "
        f"{r['requests_per_s']:.2f} req/s, latency p50 {r['latency_p50_s']:.2f}s p99 {r['latency_p99_s']:.2f}s, "
        f"TTFT p50 {r['ttft_p50_s']:.2f}s p99 {r['ttft_p99_s']:.2f}s, {r['generated_tokens']} tokens, "
        f"{r['tokens_per_s']:.1f} tok/s aggregate",
        flush=True,
    )
    for f in r["failures"]:
        print(f"  failure: {f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--baseline", type=int, default=0, help="first run this many requests from a single client")
    ap.add_argument("--deepguard", default="", help='the requests\' deepguard field, as JSON (e.g. \'{"guard": false}\')')
    ap.add_argument("--min-ratio", type=float, default=0.0, help="fail unless concurrent/single tok/s >= this")
    ap.add_argument("--json-out", help="also write the figures here")
    args = ap.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    out = {"model": model, "max_tokens": args.max_tokens, "temperature": args.temperature, "openai": openai.__version__}
    ok = True
    if args.baseline:
        single = phase(client, model, 1, args.baseline, args, offset=10_000)
        show("single client", single)
        out["single"] = single
        ok &= single["failed"] == 0
    conc = phase(client, model, args.clients, args.requests, args)
    show(f"{args.clients} clients", conc)
    out["concurrent"] = conc
    ok &= conc["failed"] == 0 and conc["completed"] == args.requests
    if args.baseline and out["single"]["tokens_per_s"] > 0:
        ratio = conc["tokens_per_s"] / out["single"]["tokens_per_s"]
        out["ratio"] = ratio
        print(f"aggregate throughput: {conc['tokens_per_s']:.1f} tok/s with {args.clients} clients vs {out['single']['tokens_per_s']:.1f} tok/s single: {ratio:.2f}x", flush=True)
        if ratio < args.min_ratio:
            print(f"FAIL: ratio {ratio:.2f} < --min-ratio {args.min_ratio}", flush=True)
            ok = False
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)
    if not ok:
        print("FAIL: some requests failed or were incomplete", flush=True)
        sys.exit(1)
    print("OK: every request completed", flush=True)


if __name__ == "__main__":
    main()
