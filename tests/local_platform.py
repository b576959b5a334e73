"""The quickstart platform the local integration tests share: `raylight up` on a temp copy of the quickstart (plus a
token-protected Pipeline) with a temp data dir and a free port, started once for tests/integration/local/
(its conftest.py) and run as a user runs it (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
UP_TIMEOUT_S = 1200
# A token-protected Pipeline beside the quickstart's: public routes must not reveal it.
VAULT = """apiVersion: raylight.io/v1alpha1
kind: Pipeline
metadata: {name: vault}
spec:
  embedder: {modelDeployment: minilm}
  llm: {modelDeployment: smollm}
  sources:
    - documents: [{id: plan, title: Merger plan, text: "The merger closes in March; only acme may read this."}]
      access: {tenant: acme}
  agent: {auth: {secret: vault-token}}
"""


def raylight(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RAYLIGHT_AGENT_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "raylight.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
