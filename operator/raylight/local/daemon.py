"""The background process that owns the local platform's Ray (`python -m raylight.local.daemon`).

`raylight up` starts it in its own session; it starts a Ray head on 127.0.0.1 (Ray's GCS, raylet and
workers are its descendants), Serve's HTTP proxy on 127.0.0.1:PORT and the store actor, writes
`platform.json` and then waits. SIGTERM (from `raylight down`) shuts Serve and that Ray down, and with
them every process they started; no other Ray on the machine is touched (never `ray stop`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from raylight.local import sizing
from raylight.local import state as st
from raylight.local.procs import PLATFORM_ENV

log = logging.getLogger("raylight.local.daemon")


def agent_token(data_dir: Path) -> str:
    """RAYLIGHT_AGENT_TOKEN from the environment, else the one kept in the data dir (made once)."""
    from_env = os.environ.get("RAYLIGHT_AGENT_TOKEN")
    if from_env:
        return from_env
    path = data_dir / st.TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def recorded() -> dict[str, float]:
    """This daemon and its descendants as `{pid: start time}` (the platform's processes, for `down`)."""
    from raylight.local.procs import identities

    return identities([os.getpid(), *descendants(os.getpid())])


def init_ray(limits: sizing.RaySizing, attempts: int = 3) -> Any:
    """A Ray head on 127.0.0.1 under `limits` (CPUs, object store, memory, worker and memory-monitor limits
    derived from the machine: `raylight.local.sizing`). Ray gives its raylet a fixed 30 s to register, which a
    busy 2-core machine can miss: try again (after clearing what the failed attempt started) before giving up."""
    import psutil
    import ray

    for attempt in range(1, attempts + 1):
        try:
            return ray.init(address="local", include_dashboard=False, namespace=st.RAY_NAMESPACE,
                            log_to_driver=False, _node_ip_address="127.0.0.1", **limits.init_kwargs())
        except Exception as exc:
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            log.warning("ray start attempt %d timed out; retrying", attempt)
            ray.shutdown()
            children = [psutil.Process(pid) for pid in descendants(os.getpid())]
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            psutil.wait_procs(children, timeout=10)
    raise AssertionError("unreachable")


def start(data_dir: Path, port: int, cpus_needed: int) -> dict[str, Any]:
    """Start Ray (sized from this machine and the replicas' `cpus_needed`), Serve and the store actor;
    returns the state to write."""
    os.environ.update(PLATFORM_ENV)  # before importing ray: it reads some of these at import time
    from ray import serve
    from raylight_pipelines.store.qdrant import start_store_actor

    from raylight.local.serve import ingress_env

    token_file = None if os.environ.get("RAYLIGHT_AGENT_TOKEN") else str(data_dir / st.TOKEN_FILE)
    os.environ["RAYLIGHT_AGENT_TOKEN"] = agent_token(data_dir)
    os.environ.update(ingress_env())
    limits = sizing.this_machine(cpus_needed)
    ctx = init_ray(limits)
    log.info("ray started at %s with %s", ctx.address_info["gcs_address"], limits.summary())
    serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
    store_path = data_dir / st.STORE_DIR
    start_store_actor(st.STORE_ACTOR, str(store_path))
    log.info("serve on 127.0.0.1:%d, store actor %s owns %s", port, st.STORE_ACTOR, store_path)
    return {
        "version": st.STATE_VERSION,
        "ray_address": ctx.address_info["gcs_address"],
        "namespace": st.RAY_NAMESPACE,
        "port": port,
        "url": f"http://127.0.0.1:{port}",
        "store_actor": st.STORE_ACTOR,
        "data_dir": str(data_dir),
        "store_path": str(store_path),
        "daemon_pid": os.getpid(),
        "processes": recorded(),
        "session_dir": ctx.address_info.get("session_dir"),
        "token_file": token_file,
        "started_at": time.time(),
        "resources": {},
        "sizing": limits.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raylight-daemon")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpus-needed", type=int, required=True,
                        help="CPUs the manifests' replicas claim; Ray's own size comes from the machine")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    data_dir = args.data_dir.resolve()

    stop = threading.Event()
    try:
        state = start(data_dir, args.port, args.cpus_needed)
    except Exception as exc:  # the one line `up` shows the user
        log.exception("start failed")
        print(f"RAYLIGHT-DAEMON-FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        shutdown()
        return 1
    # After ray.init, which installs its own (fatal) SIGTERM handler: stop cleanly instead.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    st.write_state(data_dir, state)
    print("RAYLIGHT-DAEMON-READY", file=sys.stderr, flush=True)
    mine = True

    def record_pids(current: dict[str, Any]) -> None:
        # Keep the recorded pids current (workers come and go) so `down` can check them all.
        nonlocal mine
        mine = current.get("daemon_pid") == os.getpid()
        if mine:
            current["processes"] = {**current.get("processes", {}), **recorded()}

    while not stop.wait(5):
        if st.update_state(data_dir, record_pids) is None or not mine:
            log.warning("platform.json is gone or belongs to another daemon; stopping")
            break
    log.info("stopping")
    shutdown()
    return 0


def shutdown(serve_timeout_s: float = 20.0) -> None:
    """Serve first (replicas close their engines and stores), then this Ray and all its processes."""
    import ray

    if not ray.is_initialized():
        return

    def stop_serve() -> None:
        try:
            from ray import serve

            serve.shutdown()
        except Exception:  # Ray is going down anyway
            log.exception("serve shutdown failed")

    worker = threading.Thread(target=stop_serve, daemon=True)
    worker.start()
    worker.join(serve_timeout_s)
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
