"""Starting and stopping exactly the processes of one local platform (never a machine-wide `ray stop`)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from raylight.local import state as st

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


def spawn_daemon(data_dir: Path, port: int, num_cpus: int) -> tuple[subprocess.Popen[bytes], Path]:
    """The daemon in its own session, so the terminal's Ctrl-C after `up` returns cannot reach it."""
    from raylight.local.daemon import PLATFORM_ENV

    log_path = data_dir / st.LOG_DIR / "platform.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raylight.local.daemon", "--data-dir", str(data_dir), "--port", str(port),
             "--num-cpus", str(num_cpus)],
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


def platform_processes(state: dict[str, Any]) -> list[psutil.Process]:
    """The platform's live processes: recorded pids still running Ray/raylight code, the daemon's
    descendants, and anything naming the platform's Ray session folder or data dir."""
    found: dict[int, psutil.Process] = {}
    session = state.get("session_dir") or ""
    data_dir = state.get("data_dir") or ""
    daemon = state.get("daemon_pid")
    if alive(daemon):
        proc = psutil.Process(daemon)
        found[proc.pid] = proc
        for child in proc.children(recursive=True):
            found[child.pid] = child
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if (session and session in cmd) or (data_dir and f"--data-dir {data_dir}" in cmd):
            found[proc.pid] = proc
    return [p for p in found.values() if p.pid != os.getpid()]


def stop_platform(state: dict[str, Any], timeout: float = 60.0) -> int:
    """SIGTERM the daemon (it shuts Serve and its Ray down), then kill whatever is left; returns how
    many processes were stopped."""
    procs = platform_processes(state)
    daemon = state.get("daemon_pid")
    if daemon and alive(daemon):
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(daemon):
        time.sleep(0.2)
    _, left = psutil.wait_procs([p for p in procs if _is_running(p)], timeout=5)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=5)
    # Anything that escaped the tree but names our session (a worker re-parented to init).
    stray = platform_processes({**state, "daemon_pid": None})
    for proc in stray:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(stray, timeout=5)
    return len({p.pid for p in procs} | {p.pid for p in stray})


def _is_running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
