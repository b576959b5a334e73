#!/usr/bin/env bash
# Install (if needed) and run the whole test suite: unit, integration (local Ray, embedded Qdrant, the models
# that ship in PyPI, PostgreSQL on 127.0.0.1:5432 where one answers) and operator tests (Kopf + API mock).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. "${RAYLIGHT_VENV:-.venv}/bin/activate"
export OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
# Fast layers first; the integration tests (real Ray, models, Postgres) last. The Kopf runtime tests must run
# before them: after the Ray-based modules in the same process the operator never sees the API mock (a test
# isolation problem under investigation, not a product one; in their own process they pass).
if [ "$#" -eq 0 ]; then set -- tests/unit tests/chart tests/operator tests/integration; fi
echo "[test] running $* (the whole suite usually takes 13-18 minutes on 2 cores)" >&2
python -m pytest -q -ra --durations=15 "$@"
