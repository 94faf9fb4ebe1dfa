#!/usr/bin/env python3
"""Prompt variants and the repair loop per request, driven by the official `openai` client.
Started by crates/cli/tests/serve_openai.rs with a server on SmolLM2-135M and the venv's static
tools (--venv), base model by default. Every check asserts.

  repair_client.py BASE_URL
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

BASE = sys.argv[1]
client = openai.OpenAI(base_url=BASE, api_key="none", max_retries=0, timeout=300)
MODEL = client.models.list().data[0].id
# The program is the prompt + the completion: this prompt is flagged (a shell command built from
# input) whatever the model writes after it.
FLAGGED = 'import os\n\ndef list_dir(d):\n    os.system("ls " + d)\n'
CLEAN = "def add(a, b):\n    return a + b\n"


def check(name):
    def wrap(f):
        t = time.perf_counter()
        f()
        print(f"ok   {name} ({time.perf_counter() - t:.1f}s)", flush=True)

    return wrap


def complete(prompt, dg, **kw):
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return client.completions.create(model=MODEL, prompt=prompt, extra_body={"deepguard": dg}, **kw)


def raw(body, path="/completions"):
    req = urllib.request.Request(BASE + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@check("the server says it has the repair checks")
def _():
    info = client.models.list().data[0].model_extra["deepguard"]["methods"]
    assert "bandit" in json.dumps(info["repair_checks"]), info


@check("repair:1 on a flagged prompt: round 0 flagged with that finding, round 1 ran, usage counts both")
def _():
    r = complete(FLAGGED, {"method": "repair:1"})
    dg = r.model_extra["deepguard"]
    rep = dg["repair"]
    assert dg["method"] == "base-repair1" and dg["language"] == "python", dg
    assert rep["rounds"] == 1 and len(rep["ran"]) == 2, rep
    r0, r1 = rep["ran"]
    assert r0["round"] == 0 and r0["flagged"] and r0["checked"], r0
    shell = [f for f in r0["findings"] if f["line"] == 4 and f["cwe"].replace("-0", "-").upper() in ("CWE-78",)]
    assert shell, f"the os.system line (4) is flagged with CWE-78: {r0['findings']}"
    assert all(set(f) == {"tool", "rule", "cwe", "line", "message"} for f in r0["findings"]), r0
    assert r1["round"] == 1 and r1["checked"] and r1["prompt_tokens"] > r0["prompt_tokens"], (r0, r1)
    assert r1["flagged"], "the prompt itself stays in the program: still flagged"
    assert rep["kept"] in (0, 1), rep
    u = r.usage
    assert u.prompt_tokens == r0["prompt_tokens"] + r1["prompt_tokens"], (u, rep)
    assert u.completion_tokens == r0["completion_tokens"] + r1["completion_tokens"] and u.completion_tokens > 16, (u, rep)
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert r.choices[0].text, r


@check("a clean prompt: one round, no findings")
def _():
    r = complete(CLEAN, {"repair": 2}, max_tokens=8)
    rep = r.model_extra["deepguard"]["repair"]
    assert len(rep["ran"]) == 1 and rep["kept"] == 0, rep
    assert rep["ran"][0]["findings"] == [] and not rep["ran"][0]["flagged"], rep
    assert r.usage.prompt_tokens == rep["ran"][0]["prompt_tokens"], (r.usage, rep)


@check("the language is guessed from the prompt (an #include: C) or given")
def _():
    r = complete("#include <stdio.h>\n\nint main(void) {\n", {"repair": 1}, max_tokens=8)
    assert r.model_extra["deepguard"]["language"] == "c", r.model_extra
    r = complete(CLEAN, {"repair": 1, "language": "c"}, max_tokens=4)
    assert r.model_extra["deepguard"]["language"] == "c", r.model_extra
    status, body = raw({"prompt": CLEAN, "max_tokens": 4, "deepguard": {"repair": 1, "language": "rust"}})
    assert status == 400 and body["error"]["param"] == "deepguard.language", body


@check("a streaming repair request is a 400 naming 'stream'; repair with n > 1 names 'n'")
def _():
    try:
        list(complete(FLAGGED, {"method": "repair:1"}, stream=True))
        raise AssertionError("accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "stream" and "not streamed" in e.body["message"], e.body
    status, body = raw({"prompt": FLAGGED, "n": 2, "max_tokens": 4, "deepguard": {"repair": 1}})
    assert status == 400 and body["error"]["param"] == "n", body


@check("other requests are served while a repair's checks run")
def _():
    done = {}

    def slow():
        t = time.perf_counter()
        complete(FLAGGED, {"method": "repair:2"})
        done["repair"] = time.perf_counter() - t

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(1.0)
    quick = []
    while th.is_alive() and len(quick) < 3:
        t = time.perf_counter()
        complete(CLEAN, {}, max_tokens=2)
        quick.append(time.perf_counter() - t)
    alive_after = th.is_alive()
    th.join()
    assert quick, "the repair ended before a plain request was sent"
    assert alive_after or len(quick) == 3, (quick, done)
    assert max(quick) < done["repair"] / 2, f"plain requests waited on the checks: {quick} vs {done}"
    print(f"     repair:2 took {done['repair']:.1f}s; {len(quick)} plain requests meanwhile took {', '.join(f'{q:.2f}s' for q in quick)}", flush=True)


@check("chat with prompt:secure: the system line is added and the method echoed")
def _():
    msgs = [{"role": "user", "content": "Write a function that lists a folder."}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, temperature=0, extra_body={"deepguard": {"method": "prompt:secure"}})
    dg = r.model_extra["deepguard"]
    assert dg["method"] == "prompt-secure", dg
    assert dg["prompt"]["variant"] == "secure" and dg["prompt"]["system"].startswith("Write secure code"), dg
    # appended to the request's own system message (the model saw it: more prompt tokens)
    sys_msgs = [{"role": "system", "content": "You are terse."}] + msgs
    plain = client.chat.completions.create(model=MODEL, messages=sys_msgs, max_tokens=8, temperature=0)
    r = client.chat.completions.create(model=MODEL, messages=sys_msgs, max_tokens=8, temperature=0, extra_body={"deepguard": {"prompt": "secure"}})
    assert r.model_extra["deepguard"]["prompt"]["system"].startswith("You are terse.\nWrite secure code"), r.model_extra
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 10, (r.usage, plain.usage)


@check("a completion with prompt:secure gets a comment line in its language")
def _():
    plain = complete(CLEAN, {}, max_tokens=2)
    r = complete(CLEAN, {"prompt": "secure"}, max_tokens=2)
    assert r.model_extra["deepguard"]["prompt"] == {"variant": "secure"} and r.model_extra["deepguard"]["language"] == "python", r.model_extra
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 10, (r.usage, plain.usage)


@check("chat repair: the reply's code block is checked (or said to be missing)")
def _():
    msgs = [{"role": "user", "content": "Complete this code:\n```python\n" + FLAGGED + "```"}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=48, temperature=0, extra_body={"deepguard": {"repair": 1}})
    rep = r.model_extra["deepguard"]["repair"]
    r0 = rep["ran"][0]
    assert r0["round"] == 0 and ("findings" in r0) == r0["checked"], rep
    if not r0["checked"]:
        assert "no fenced code block" in r0["note"], r0
    assert r.usage.completion_tokens == sum(x["completion_tokens"] for x in rep["ran"]), (r.usage, rep)


@check("rerank stays refused per request")
def _():
    status, body = raw({"prompt": CLEAN, "max_tokens": 2, "deepguard": {"method": "rerank:2"}})
    assert status == 400 and "rerank" in body["error"]["message"], body


print("all repair-client checks passed", flush=True)
