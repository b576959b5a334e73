"""`raylight down` stops exactly the processes its state file records (and their descendants): never its
caller, never a process that merely names the data directory, never a pid reused by another process.

Stand-ins for the platform's processes (a "daemon" with a child) keep this fast and free of Ray; the full
`up`/`down` cycle on a real Ray is in tests/integration/local/test_up.py. About 10 s (`down` gives
processes left after the daemon stops 5 s to exit before it kills them).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from raylight.local import procs

SLEEP = "import time; time.sleep(300)"
# A daemon stand-in that starts a child, as the real daemon starts Ray's processes.
DAEMON = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
          "time.sleep(300)")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    spawned: list[subprocess.Popen[bytes]] = []
    yield spawned
    for proc in spawned:
        for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            child.kill()
        proc.kill()
        proc.wait()


def spawn(started: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, *args])
    started.append(proc)
    return proc


def write_state(data_dir: Path, daemon: int, processes: dict[str, float]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    state = {"version": 1, "daemon_pid": daemon, "processes": processes, "url": "http://127.0.0.1:1",
             "data_dir": str(data_dir), "session_dir": str(data_dir / "session")}
    (data_dir / "platform.json").write_text(json.dumps(state))


def children_of(pid: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while not (kids := psutil.Process(pid).children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return kids


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_down_from_a_script_under_timeout_stops_the_platform_and_spares_its_callers(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    data_dir = tmp_path / "data dir"
    daemon = spawn(started, "-c", DAEMON)
    (worker,) = children_of(daemon.pid)
    bystander = spawn(started, "-c", SLEEP, "--data-dir", str(data_dir))  # names the path, is not ours
    write_state(data_dir, daemon.pid, procs.identities([daemon.pid]))

    down = f"{shlex.quote(sys.executable)} -m raylight.cli down --data-dir {shlex.quote(str(data_dir))}"
    out = subprocess.run(["timeout", "60", "bash", "-c", f"{down}; echo rc=$?"], capture_output=True, text=True,
                         timeout=90)

    assert out.returncode == 0 and out.stdout.strip() == "rc=0", out.stderr
    assert daemon.wait(10) is not None and not running(worker.pid)
    assert running(bystander.pid)
    assert not (data_dir / "platform.json").exists()


def test_a_recorded_pid_now_used_by_another_process_is_left_alone(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    other = spawn(started, "-c", SLEEP)
    recorded_start = psutil.Process(other.pid).create_time() - 100  # the platform's process had this pid
    write_state(tmp_path, other.pid, {str(other.pid): recorded_start})

    out = subprocess.run([sys.executable, "-m", "raylight.cli", "down", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)

    assert out.returncode == 0, out.stderr
    assert running(other.pid)
    assert procs.platform_processes({"processes": {str(other.pid): recorded_start}}) == []
