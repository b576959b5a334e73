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
      "processes": {"1234": 1700000000.12, ...},  # daemon + the Ray processes it started, pid -> start
                                                # time (`down` stops these and their descendants only)
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

Beside it: `qdrant/` (the embedded store; one process owns it: the store actor while a platform runs, else
the `raylight ingest` or `search` process), `threads/<pipeline>.sqlite`, `logs/`, and
`pipelines/<name>.json`, the IngestionPlan (camelCase) of the Pipeline's last ingestion plus `baseDir`,
so `raylight search NAME` works later without the manifests.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raylight.api.connections import IngestionPlan, StoreConnection
from raylight.api.names import RAY_NAMESPACE

PLATFORM_FILE = "platform.json"
STORE_DIR = "qdrant"
THREADS_DIR = "threads"
LOG_DIR = "logs"
TOKEN_FILE = "agent-token"
RESPONSES_FILE = "responses.sqlite"  # the models' /v1/responses store
PIPELINES_DIR = "pipelines"
STORE_ACTOR = "raylight-store"
STATE_VERSION = 1
GATEWAY_APP = "raylight-gateway"  # the Serve application at "/" in front of every model and agent


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


@contextmanager
def _lock(data_dir: Path) -> Iterator[None]:
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(data_dir) / ".platform.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def update_state(data_dir: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
    """Read-modify-write under a lock (the daemon and `up` both write); None when there is no state."""
    with _lock(data_dir):
        state = read_state(data_dir)
        if state is None:
            return None
        change(state)
        write_state(data_dir, state)
        return state


def remove_state(data_dir: Path) -> None:
    state_path(data_dir).unlink(missing_ok=True)


def spec_hash(app_config: dict[str, Any]) -> str:
    """A stable digest of a Serve application config: equal hashes mean nothing to redeploy."""
    return hashlib.sha256(json.dumps(app_config, sort_keys=True).encode()).hexdigest()[:16]


def resource_key(kind: str, name: str) -> str:
    return f"{kind}/{name}"


def join_ray(address: str, namespace: str = RAY_NAMESPACE) -> None:
    """Join the platform's Ray (bound to 127.0.0.1) as a driver from any process.

    Ray rewrites a loopback address to the machine's address unless it is told this is a one-machine Ray
    (the daemon sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for its own processes); that setting is read when
    `ray` is imported, so set it on the imported module too.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    if not ray.is_initialized():
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)


def store_connection(data_dir: Path, collection: str, state: dict[str, Any] | None = None) -> StoreConnection:
    """The embedded store under data_dir: through the platform's store actor while one runs (`state`; the
    caller joins its Ray first), else the folder itself (this process then owns it)."""
    actor = state.get("store_actor") if state else None
    return StoreConnection(collection=collection, path=str((Path(data_dir) / STORE_DIR).resolve()), actor=actor)


def save_pipeline_info(data_dir: Path, plan: IngestionPlan, base_dir: Path) -> Path:
    """Keep a Pipeline's last ingestion plan, so `raylight search NAME` finds its store and embedder."""
    path = Path(data_dir) / PIPELINES_DIR / f"{plan.pipeline}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({**plan.to_wire(), "baseDir": str(base_dir)}, indent=2))
    os.replace(tmp, path)
    return path


def pipeline_info(data_dir: Path, name: str) -> IngestionPlan | None:
    """The plan `save_pipeline_info` kept for this Pipeline, or None."""
    try:
        info = json.loads((Path(data_dir) / PIPELINES_DIR / f"{name}.json").read_text())
        info.pop("baseDir", None)
        return IngestionPlan.model_validate(info)
    except (OSError, ValueError):
        return None
