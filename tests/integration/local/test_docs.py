"""Docs that run: every shell and Python block of README.md and docs/*.md that no docs-test marker exempts runs
against the quickstart platform (the one tests/integration/local shares, see conftest.py) as a reader would run
it: shell through `bash -euo pipefail` from the repository root with this Python's bin first on PATH, Python with
this Python. The one change: the docs' address of the local platform, http://127.0.0.1:8000, becomes the test
platform's (it runs on a free port); `raylight` commands find it through $RAYLIGHT_DATA_DIR. The rules and the
markers: docs/testing.md; blocks that do not run here are checked in tests/unit/test_docs_blocks.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from docs_blocks import DOCS_URL, ROOT, Block, collect, expected_labels, shell_script

pytestmark = pytest.mark.integration

RUN = [b for b in collect()[0] if b.action == "run"]
BLOCK_TIMEOUT_S = 600


def reader_env(platform: dict[str, Any]) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAYLIGHT_DATA_DIR": str(platform["data_dir"])}
    for secret in ("RAYLIGHT_AGENT_TOKEN", "HANDBOOK_TOKEN", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(secret, None)  # what a reader of the quickstart has not set
    return env


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_the_docs_example_runs_against_the_quickstart_platform(platform: dict[str, Any], block: Block,
                                                               tmp_path: Path) -> None:
    assert platform["up"].returncode == 0, f"the quickstart platform did not start: {platform['up'].stderr[-2000:]}"
    url = f"http://127.0.0.1:{platform['port']}"
    if block.kind == "shell":
        script = tmp_path / "block.sh"
        script.write_text(shell_script(block).replace(DOCS_URL, url))
        command = ["bash", "-euo", "pipefail", str(script)]
    else:
        script = tmp_path / "block.py"
        script.write_text(block.code.replace(DOCS_URL, url))
        command = [sys.executable, str(script)]
    out = subprocess.run(command, cwd=ROOT, env=reader_env(platform), capture_output=True, text=True,
                         timeout=BLOCK_TIMEOUT_S)
    assert out.returncode == 0, f"{block.id} exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    for label in expected_labels(block):
        assert label in out.stdout.splitlines(), f"{block.id}: {label!r} not in its output:\n{out.stdout[-2000:]}"
