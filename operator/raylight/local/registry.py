"""Which local platforms run on this machine, for this user, so a command finds one from any directory.

`raylight up` records its data directory here once the platform serves; `raylight down` removes it. One JSON
file per platform, named by a digest of its data directory, in `$RAYLIGHT_STATE_HOME` (default
`$XDG_STATE_HOME/raylight/platforms`, else `~/.local/state/raylight/platforms`):

    {"data_dir": "/abs/.raylight", "url": "http://127.0.0.1:8000", "daemon_pid": 1234, "started_at": 1.7e9}

A record is only a pointer: the platform's own state file (`<data_dir>/platform.json`) and its daemon being
alive decide whether it runs, so a platform that died leaves a record that is ignored and then removed.

Which data directory a command uses (`choose`): `--data-dir` when given; else `$RAYLIGHT_DATA_DIR`; else
`./.raylight` when a platform runs from it (or when the command starts one: `up`); else the one platform this
user runs anywhere; with several, the command must say which (an error lists them).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raylight.local import state as st

DEFAULT_DATA_DIR = Path(".raylight")
DATA_DIR_ENV = "RAYLIGHT_DATA_DIR"
STATE_HOME_ENV = "RAYLIGHT_STATE_HOME"


class AmbiguousPlatform(ValueError):
    """Several platforms run and nothing says which one a command means."""


@dataclass(frozen=True)
class Choice:
    """The data directory a command uses, and why (`reason` is printed when it is not the obvious one)."""

    data_dir: Path
    reason: str | None = None


def home() -> Path:
    """The folder holding one record per running platform."""
    if os.environ.get(STATE_HOME_ENV):
        return Path(os.environ[STATE_HOME_ENV]).expanduser()
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state").expanduser()
    return base / "raylight" / "platforms"


def _record_path(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    return home() / f"{digest}.json"


def record(data_dir: Path, state: dict[str, Any]) -> None:
    """Note a platform that serves from `data_dir` (written atomically; best effort: a read-only home only
    means other directories will not find it)."""
    path = _record_path(data_dir)
    entry = {"data_dir": str(Path(data_dir).resolve()), "url": state.get("url"),
             "daemon_pid": state.get("daemon_pid"), "started_at": state.get("started_at")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)
    except OSError:
        pass


def forget(data_dir: Path) -> None:
    _record_path(data_dir).unlink(missing_ok=True)


def _running_from(data_dir: Path) -> bool:
    from raylight.local.procs import platform_running

    return platform_running(st.read_state(data_dir))


def running() -> list[dict[str, Any]]:
    """The records of platforms that really run now (a record whose platform is gone is removed)."""
    found = []
    for path in sorted(home().glob("*.json")) if home().is_dir() else []:
        try:
            entry = json.loads(path.read_text())
            data_dir = Path(entry["data_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if _running_from(data_dir):
            found.append(entry)
        else:
            path.unlink(missing_ok=True)
    return found


def choose(explicit: Path | None, command: str) -> Choice:
    """The data directory `command` uses (see the module's docstring for the order).

    Raises:
        AmbiguousPlatform: nothing names a directory, none runs from `./.raylight` and several run elsewhere.
    """
    if explicit is not None:
        return Choice(Path(explicit).expanduser().resolve())
    if os.environ.get(DATA_DIR_ENV):
        return Choice(Path(os.environ[DATA_DIR_ENV]).expanduser().resolve(), f"${DATA_DIR_ENV}")
    local = DEFAULT_DATA_DIR.resolve()
    if command == "up" or _running_from(local):
        return Choice(local)
    others = running()
    if len(others) == 1:
        return Choice(Path(others[0]["data_dir"]), "the platform running on this machine")
    if len(others) > 1:
        listed = "; ".join(f"{e['data_dir']} ({e.get('url')})" for e in others)
        raise AmbiguousPlatform(f"{len(others)} platforms are running: {listed}. Say which with --data-dir "
                                f"DIR or ${DATA_DIR_ENV}")
    return Choice(local)
