#!/usr/bin/env python3
"""`deepguard serve` driven by the official `openai` client (and raw HTTP where a client would
hide what is checked). Started by crates/cli/tests/serve_openai.rs with a server on SmolLM2-135M
(a guard and steering vectors loaded, both on by default); every check asserts; the last one
sends SIGTERM mid-stream and checks the stream still completes.

  openai_client.py BASE_URL API_KEY SERVER_PID
"""

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

BASE, KEY, PID = sys.argv[1], sys.argv[2], int(sys.argv[3])
ROOT = BASE.rsplit("/v1", 1)[0]
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=300)
CODE = "import sqlite3\n\ndef get_user(db, name):\n    cur = db.cursor()\n"
OFF = {"guard": False, "steer": False}


def check(name):
    def wrap(f):
        t = time.perf_counter()
        f()
        print(f"ok   {name} ({time.perf_counter() - t:.1f}s)", flush=True)

    return wrap


def raw(method, path, body=None, key=KEY, headers=None):
    """(status, parsed JSON or text) of a raw request."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(ROOT + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def metric(name):
    _, text = raw("GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def complete(prompt=CODE, dg=None, **kw):
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    extra = dict(kw.pop("extra_body", None) or {})
    if dg is not None:
        extra["deepguard"] = dg
    return client.completions.create(model=MODEL, prompt=prompt, extra_body=extra or None, **kw)


MODEL = client.models.list().data[0].id


@check("models and health")
def _():
    models = client.models.list()
    assert models.data[0].id == "smollm2-135m", models
    info = models.data[0].model_extra["deepguard"]
    assert "guard" in info["methods"]["default_method"] and "steer" in info["methods"]["default_method"], info
    assert raw("GET", "/health", key=None) == (200, {"status": "ok"})


@check("completion (default method: guard + steering, reported back)")
def _():
    r = complete()
    c = r.choices[0]
    assert r.object == "text_completion" and c.text and c.finish_reason in ("stop", "length"), r
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 16, r.usage
    dg = r.model_extra["deepguard"]
    assert dg["method"].startswith("guard-g-s") and "+steer-vec-cwe-089-a" in dg["method"], dg
    assert 0.0 <= dg["guard"]["prompt_score"] <= 1.0 and dg["steer"]["applied"] is True, dg


@check("chat completion with the model's template")
def _():
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Write a function that reads a file."}], max_tokens=20, temperature=0)
    m = r.choices[0].message
    assert r.object == "chat.completion" and m.role == "assistant" and m.content, r
    assert "<|im_start|>" not in m.content and "<|im_end|>" not in m.content, m.content
    assert r.model_extra["deepguard"]["method"] != "base"


@check("streaming completion = the same request unstreamed; ends with [DONE]")
def _():
    whole = complete(dg=OFF, max_tokens=24).choices[0].text
    chunks = list(complete(dg=OFF, max_tokens=24, stream=True))
    assert chunks[0].model_extra["deepguard"]["method"] == "base", chunks[0]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # the raw stream: OpenAI's chunk format, data: [DONE] last
    req = urllib.request.Request(BASE + "/completions", data=json.dumps({"model": MODEL, "prompt": CODE, "max_tokens": 8, "stream": True, "deepguard": OFF}).encode(), headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        data = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and all(json.loads(d)["object"] == "text_completion" for d in data[:-1]), data


@check("streaming chat with usage = unstreamed chat")
def _():
    msgs = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    whole = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=24, temperature=0, extra_body={"deepguard": OFF}).choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}, extra_body={"deepguard": OFF}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []


@check("n > 1: seeded samples, streamed and not")
def _():
    r = complete(n=3, temperature=1.0, seed=5, max_tokens=12, dg=OFF)
    texts = [c.text for c in sorted(r.choices, key=lambda c: c.index)]
    assert [c.index for c in sorted(r.choices, key=lambda c: c.index)] == [0, 1, 2] and len(set(texts)) >= 2, texts
    assert r.usage.completion_tokens > 0
    streamed = ["", "", ""]
    for ch in complete(n=3, temperature=1.0, seed=5, max_tokens=12, dg=OFF, stream=True):
        for c in ch.choices:
            streamed[c.index] += c.text
    assert streamed == texts, (streamed, texts)


@check("stop strings cut the text")
def _():
    full = complete(dg=OFF, max_tokens=24).choices[0].text
    stop = full[6:9]
    assert len(stop) == 3, full
    r = complete(dg=OFF, max_tokens=24, stop=[stop, "@@never@@"])
    assert r.choices[0].text == full[: full.index(stop)] and r.choices[0].finish_reason == "stop", (full, stop, r.choices[0])


@check("guard on vs off: different text, the response says which ran")
def _():
    on = complete(dg={"guard": True, "guard_strength": 60, "steer": False}, max_tokens=24)
    off = complete(dg=OFF, max_tokens=24)
    dg_on, dg_off = on.model_extra["deepguard"], off.model_extra["deepguard"]
    assert dg_on["method"] == "guard-g-s60" and dg_on["guard"]["strength"] == 60 and dg_on["steer"] is None, dg_on
    assert dg_off["method"] == "base" and dg_off["guard"] is None and dg_off["steer"] is None, dg_off
    assert on.choices[0].text != off.choices[0].text, (on.choices[0].text, off.choices[0].text)
    print(f"     guard off: {off.choices[0].text!r}\n     guard on:  {on.choices[0].text!r} (prompt score {dg_on['guard']['prompt_score']:.3f})")


@check("steering on vs off: different text, the response says which ran")
def _():
    on = complete(dg={"guard": False, "steer": "CWE-89", "alpha": 12}, max_tokens=24)
    off = complete(dg=OFF, max_tokens=24)
    dg_on = on.model_extra["deepguard"]
    assert dg_on["method"] == "steer-vec-cwe-089-a12", dg_on
    assert dg_on["steer"]["applied"] is True and dg_on["guard"] is None, dg_on
    assert on.choices[0].text != off.choices[0].text, (on.choices[0].text, off.choices[0].text)
    auto = complete(dg={"guard": False, "steer": "auto"}, max_tokens=4).model_extra["deepguard"]
    assert auto["method"].startswith("steer-vec-auto") and "probe-then-steer" in auto["steer"]["note"], auto


@check("concurrent requests = the same requests alone (same seeds)")
def _():
    reqs = [dict(prompt=CODE + "    " * i, seed=i, temperature=0.8, max_tokens=10 + 3 * i, dg=[OFF, {"guard": True, "steer": False}, {"guard": False, "steer": True}, None][i % 4]) for i in range(6)]
    alone = [complete(**r).choices[0].text for r in reqs]
    together = [None] * len(reqs)

    def go(i):
        together[i] = complete(**reqs[i]).choices[0].text

    ts = [threading.Thread(target=go, args=(i,)) for i in range(len(reqs))]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert together == alone, (together, alone)


@check("auth: wrong or missing key is 401")
def _():
    bad = openai.OpenAI(base_url=BASE, api_key="wrong-key", max_retries=0)
    try:
        bad.completions.create(model=MODEL, prompt="x", max_tokens=1)
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.body["code"] == "invalid_api_key", e.body
    status, body = raw("POST", "/v1/completions", {"prompt": "x"}, key=None)
    assert status == 401 and body["error"]["type"] == "authentication_error", body
    assert raw("GET", "/metrics", key=None)[0] == 401


@check("bad input: 400 with OpenAI's error object, never a crash")
def _():
    for body, param in [
        (b"{not json", None),
        (b"[1, 2]", None),
        ({"prompt": CODE, "max_tokens": "ten"}, "max_tokens"),
        ({"prompt": CODE, "temperature": 7}, "temperature"),
        ({"prompt": CODE, "n": 0}, "n"),
        ({"prompt": CODE, "stop": 5}, "stop"),
        ({"prompt": {"a": 1}}, "prompt"),
        ({}, "prompt"),
        ({"prompt": CODE, "seed": "x"}, "seed"),
        ({"prompt": CODE, "deepguard": {"guard": "yes"}}, "deepguard.guard"),
        ({"prompt": CODE, "deepguard": {"gaurd": True}}, "deepguard"),
        ({"prompt": CODE, "deepguard": {"steer": "CWE-9999"}}, "deepguard.steer"),
        ({"prompt": [1, -2]}, "prompt"),
    ]:
        status, r = raw("POST", "/v1/completions", body)
        assert status == 400 and r["error"]["type"] == "invalid_request_error", (body, status, r)
        if param:
            assert (r["error"]["param"] or "").startswith(param), (body, r)
    status, r = raw("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]})
    assert status == 400 and "messages.[0].content" in r["error"]["message"], r
    status, r = raw("POST", "/v1/chat/completions", {"messages": "hi"})
    assert status == 400, r
    # context overflow, with the numbers
    try:
        complete(max_tokens=10**6)
        raise AssertionError("an over-long request was accepted")
    except openai.BadRequestError as e:
        assert e.body["code"] == "context_length_exceeded" and "maximum context length is 2048 tokens" in e.body["message"] and "1000000 for the completion" in e.body["message"], e.body
    # body size cap
    status, r = raw("POST", "/v1/completions", {"prompt": "x" * (300 << 10)})
    assert status == 413 and "error" in r, (status, r)
    assert raw("GET", "/v1/nothing")[0] == 404
    assert raw("GET", "/health", key=None)[0] == 200, "the server survived"


@check("a client that disconnects (mid-stream, or waiting for a whole answer) frees its slot")
def _():
    for stream in (True, False):
        cancelled = metric('deepguard_requests_total{outcome="cancelled"}')
        s = socket.create_connection((ROOT.split("//")[1].split(":")[0], int(ROOT.rsplit(":", 1)[1])))
        body = json.dumps({"model": MODEL, "prompt": CODE, "max_tokens": 1500, "stream": stream, "ignore_eos": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        if stream:
            got = b""
            while got.count(b"data: ") < 4:
                got += s.recv(4096)
        else:
            t = time.time()
            while metric("deepguard_active_requests") != 1:
                assert time.time() - t < 30, "the request did not start"
                time.sleep(0.05)
            time.sleep(0.3)
        assert metric("deepguard_active_requests") == 1
        s.close()
        t = time.time()
        while metric("deepguard_active_requests") != 0 or metric("deepguard_batch_rows") != 0:
            assert time.time() - t < 5, f"the disconnected request (stream={stream}) still holds its slot"
            time.sleep(0.05)
        assert metric('deepguard_requests_total{outcome="cancelled"}') == cancelled + 1


@check("metrics: Prometheus text with requests, tokens, queue depth, TTFT, tokens/s")
def _():
    _, text = raw("GET", "/metrics")
    for name in ["deepguard_requests_total{outcome=\"ok\"}", "deepguard_generated_tokens_total", "deepguard_queue_depth", "deepguard_time_to_first_token_seconds_bucket", "deepguard_tokens_per_second", "# TYPE deepguard_time_to_first_token_seconds histogram"]:
        assert name in text, name
    assert metric('deepguard_requests_total{outcome="ok"}') >= 20 and metric("deepguard_generated_tokens_total") > 100


@check("SIGTERM mid-stream: the running request completes, then the server exits")
def _():
    stream = complete(dg=OFF, max_tokens=48, stream=True, extra_body={"ignore_eos": True})
    it = iter(stream)
    first = next(it)
    os.kill(PID, signal.SIGTERM)
    rest = list(it)
    text = "".join(c.choices[0].text for c in [first, *rest] if c.choices)
    assert rest[-1].choices[0].finish_reason == "length" and text, rest[-1]
    t = time.time()
    while True:
        try:
            client.models.list()
        except openai.APIConnectionError:
            break
        except openai.APIStatusError as e:
            assert e.status_code == 503, e
        assert time.time() - t < 10, "still serving after SIGTERM"
        time.sleep(0.1)


print("all openai-client checks passed", flush=True)
