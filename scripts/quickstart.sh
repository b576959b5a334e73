#!/usr/bin/env bash
# The quickstart in one command: install (if needed), run the quickstart manifests on this machine
# (local Ray on 127.0.0.1, embedded Qdrant, the models that ship in PyPI packages; no cluster, no GPU),
# then ask the handbook pipeline a documented question and print its cited answer.
# The platform keeps running afterwards; stop it with `raylight down` (the data in ./.raylight is kept).
#   PORT=8000 (default) picks the port; QUESTION="..." asks something else.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8000}"
QUESTION="${QUESTION:-What is the default chunk size and overlap?}"

start=$(date +%s)
bash scripts/install.sh
VENV="${RAYLIGHT_VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # an absolute RAYLIGHT_VENV stays as it is
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1
installed=$(date +%s)

echo "[quickstart] starting the platform: Ray, the two models, ingesting the handbook (usually 1-2 min on 2 cores the first time; about 10 s when it is already running and nothing changed)" >&2
raylight up -f examples/quickstart --port "$PORT"
up=$(date +%s)

echo
echo "\$ raylight ask handbook \"$QUESTION\""
raylight ask handbook "$QUESTION"
done_=$(date +%s)

echo >&2
echo "install $((installed - start)) s, up $((up - installed)) s, ask $((done_ - up)) s (total $((done_ - start)) s)" >&2
echo "The platform is still running on http://127.0.0.1:$PORT." >&2
echo "To use the raylight command from your shell (any directory finds this platform): . $VENV/bin/activate" >&2
echo "Then: raylight status, raylight ask handbook \"...\", raylight down" >&2
