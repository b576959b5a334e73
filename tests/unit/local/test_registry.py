"""A command finds its platform from any directory: --data-dir, then $RAYLIGHT_DATA_DIR, then ./.raylight when
a platform runs from it, then the one platform this user runs; several are refused with their list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from raylight.cli import main
from raylight.local import registry
from raylight.local import state as st


def fake_platform(data_dir: Path, pid: int, url: str = "http://127.0.0.1:8123") -> dict:
    state = {"version": 1, "url": url, "port": 8123, "daemon_pid": pid, "processes": {}, "resources": {}}
    st.write_state(data_dir, state)
    registry.record(data_dir, state)
    return state


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.STATE_HOME_ENV, str(tmp_path / "state"))
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_the_one_running_platform_is_found_from_another_directory(tmp_path, sleeper, capsys):
    fake_platform(tmp_path / "proj" / ".raylight", sleeper)
    choice = registry.choose(None, "status")
    assert choice.data_dir == (tmp_path / "proj" / ".raylight").resolve()
    assert choice.reason


def test_an_explicit_data_dir_and_the_environment_win(tmp_path, sleeper, monkeypatch):
    fake_platform(tmp_path / "proj" / ".raylight", sleeper)
    assert registry.choose(tmp_path / "x", "status").data_dir == (tmp_path / "x").resolve()
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path / "y"))
    assert registry.choose(None, "status").data_dir == (tmp_path / "y").resolve()


def test_a_platform_in_the_current_directory_comes_before_others(tmp_path, sleeper):
    fake_platform(tmp_path / "proj" / ".raylight", sleeper)
    fake_platform(Path(".raylight"), sleeper)
    assert registry.choose(None, "ask").data_dir == Path(".raylight").resolve()


def test_up_always_starts_in_the_current_directory(tmp_path, sleeper):
    fake_platform(tmp_path / "proj" / ".raylight", sleeper)
    assert registry.choose(None, "up").data_dir == Path(".raylight").resolve()


def test_several_running_platforms_are_refused_with_their_list(tmp_path, sleeper, capsys):
    fake_platform(tmp_path / "a" / ".raylight", sleeper, "http://127.0.0.1:8001")
    fake_platform(tmp_path / "b" / ".raylight", sleeper, "http://127.0.0.1:8002")
    with pytest.raises(registry.AmbiguousPlatform, match="2 platforms are running"):
        registry.choose(None, "status")
    assert main(["down"]) == 1
    err = capsys.readouterr().err
    assert "8001" in err and "8002" in err and "--data-dir" in err


def test_a_dead_platform_is_forgotten(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    fake_platform(tmp_path / "gone" / ".raylight", proc.pid)
    assert registry.running() == []
    assert list(registry.home().glob("*.json")) == []
    assert registry.choose(None, "status").data_dir == Path(".raylight").resolve()


def test_down_forgets_the_platform(tmp_path, sleeper):
    data_dir = tmp_path / "proj" / ".raylight"
    fake_platform(data_dir, sleeper)
    registry.forget(data_dir)
    assert registry.running() == []
    assert os.path.exists(st.state_path(data_dir))
