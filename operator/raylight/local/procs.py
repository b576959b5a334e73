"""Starting and stopping exactly the processes of one local platform (never a machine-wide `ray stop`)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from raylight.local import state as st

# Environment every Ray process of the platform inherits (workers are started by the raylet, which
# inherits the driver's environment).
PLATFORM_ENV = {
    "RAY_AUTH_MODE": "disabled",  # a loopback-only Ray for one user; the agents do their own auth
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node IP = 127.0.0.1, not the machine's address
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OPENBLAS_NUM_THREADS": "1",  # numpy's BLAS threads fight torch on small machines
}

READY_MARK = "RAYLIGHT-DAEMON-READY"
FAILED_MARK = "RAYLIGHT-DAEMON-FAILED:"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like Serve's server: connections of a stopped server (TIME_WAIT) do not block, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def platform_running(state: dict[str, Any] | None) -> bool:
    return state is not None and alive(state.get("daemon_pid"))


def spawn_daemon(data_dir: Path, port: int, cpus_needed: int) -> tuple[subprocess.Popen[bytes], Path]:
    """The daemon in its own session, so the terminal's Ctrl-C after `up` returns cannot reach it; it sizes
    its Ray from the machine and the `cpus_needed` of the replicas (`raylight.local.sizing`)."""
    log_path = data_dir / st.LOG_DIR / "platform.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raylight.local.daemon", "--data-dir", str(data_dir), "--port", str(port),
             "--cpus-needed", str(cpus_needed)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, **PLATFORM_ENV},
        )
    return proc, log_path


def daemon_failure(log_path: Path, offset: int) -> str | None:
    """The daemon's one-line reason, if it wrote one after `offset` in its log."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(FAILED_MARK):
            return line[len(FAILED_MARK):].strip()
    return None


def identities(pids: list[int]) -> dict[str, float]:
    """`{pid: start time}` of the live processes among `pids`: what the state file records, so that a
    recorded pid later reused by an unrelated process is never mistaken for the platform's."""
    found: dict[str, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found[str(pid)] = psutil.Process(pid).create_time()
    return found


def platform_processes(state: dict[str, Any]) -> list[psutil.Process]:
    """The platform's live processes: those recorded in `state["processes"]` that still are the process
    recorded (same pid, same start time), and their descendants.

    Nothing is found by matching command lines, so a process that merely names the data directory (the
    shell or `timeout` that runs `raylight down --data-dir D`) is never included; neither is this process
    nor any of its ancestors."""
    spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found: dict[int, psutil.Process] = {}
    for pid, started in (state.get("processes") or {}).items():
        try:
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - started) > 0.05 or not _is_running(proc):
                continue
            found[proc.pid] = proc
            found.update((child.pid, child) for child in proc.children(recursive=True))
        except psutil.Error:
            continue
    return [p for pid, p in found.items() if pid not in spared]


def stop_platform(state: dict[str, Any], timeout: float = 60.0) -> int:
    """SIGTERM the daemon (it shuts Serve and its Ray down), then kill whatever is left of the platform's
    processes; returns how many processes were stopped."""
    procs = platform_processes(state)
    daemon = next((p for p in procs if p.pid == state.get("daemon_pid")), None)
    if daemon is not None:
        with contextlib.suppress(psutil.Error):
            daemon.terminate()
        deadline = time.monotonic() + timeout
        while _is_running(daemon) and time.monotonic() < deadline:  # a zombie has stopped too
            time.sleep(0.2)
    # Workers started since the state was last written are descendants of recorded processes: look again.
    left = [p for p in {p.pid: p for p in [*procs, *platform_processes(state)]}.values() if _is_running(p)]
    _, left = psutil.wait_procs(left, timeout=5)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=5)
    return len({p.pid for p in procs})


def _is_running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
