"""The local platform's state file: `<data-dir>/platform.json`, written by `raylight up`, removed by
`raylight down`. Every command that talks to a running platform (`status`, `ask`, `ingest`, `search`,
`down`) reads it; nothing else is shared between those processes.

    {
      "version": 1,
      "ray_address": "127.0.0.1:53321",        # GCS address; ray.init(address=...) joins this Ray only
      "namespace": "raylight",                  # Ray namespace of the store actor and Serve clients
      "port": 8000,                             # Serve's HTTP proxy on 127.0.0.1 (the single port)
      "url": "http://127.0.0.1:8000",
      "store_actor": "raylight-store",          # named detached actor that owns <data-dir>/qdrant
      "store_path": "/abs/.raylight/qdrant",
      "daemon_pid": 1234,                       # the process that owns Ray (SIGTERM to stop it all)
      "pids": [1234, 1240, ...],                # daemon + the Ray processes it started (for `down`)
      "session_dir": "/tmp/ray/session_...",    # Ray's session folder (its processes name it)
      "token_file": "/abs/.raylight/agent-token",  # bearer token for Pipelines with spec.agent.auth
      "started_at": 1700000000.0,
      "resources": {                            # what `up` applied last, keyed "Kind/name"
        "ModelDeployment/minilm": {"kind": "ModelDeployment", "name": "minilm", "app": "minilm",
                                   "spec_hash": "ab12...", "endpoint": "http://127.0.0.1:8000/v1"},
        "Pipeline/handbook": {"kind": "Pipeline", "name": "handbook", "app": "handbook",
                              "spec_hash": "cd34...",
                              "endpoint": "http://127.0.0.1:8000/v1/pipelines/handbook"}
      }
    }
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

PLATFORM_FILE = "platform.json"
STORE_DIR = "qdrant"
THREADS_DIR = "threads"
LOG_DIR = "logs"
TOKEN_FILE = "agent-token"
RAY_NAMESPACE = "raylight"
STORE_ACTOR = "raylight-store"
STATE_VERSION = 1


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / PLATFORM_FILE


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The running platform's state, or None when no `up` has written one."""
    try:
        state = json.loads(state_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    """Atomic write, so a reader never sees half a file."""
    path = state_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def remove_state(data_dir: Path) -> None:
    state_path(data_dir).unlink(missing_ok=True)


def spec_hash(app_config: dict[str, Any]) -> str:
    """A stable digest of a Serve application config: equal hashes mean nothing to redeploy."""
    return hashlib.sha256(json.dumps(app_config, sort_keys=True).encode()).hexdigest()[:16]


def resource_key(kind: str, name: str) -> str:
    return f"{kind}/{name}"
