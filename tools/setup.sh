#!/usr/bin/env bash
# Create .venv (if missing) and install vidrec with its test tools and the extras the tests exercise ([flow]: OpenCV
# contrib for optical flow), on the pinned fast path (constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,flow,bench]"
# aeon (MiniRocket/MultiRocket peers, bench extra) without its dependencies: its pins conflict with this stack
.venv/bin/python -m pip install -q -c constraints.txt --no-deps aeon==1.6.0
