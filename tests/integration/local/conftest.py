"""One quickstart platform for tests/integration/local/: test_docs.py runs the docs' examples on it, then
test_up.py checks it and ends with `raylight down` (modules run in name order; the platform never starts twice)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_platform import QUICKSTART, UP_TIMEOUT_S, VAULT, raylight
from support import free_port


@pytest.fixture(scope="package")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("quickstart") / "quickstart"
    shutil.copytree(QUICKSTART, dest)
    (dest / "vault.yaml").write_text(VAULT)
    return dest


@pytest.fixture(scope="package")
def platform(manifests: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("data") / "rl"
    port = free_port()
    up = raylight("up", "-f", str(manifests), "--data-dir", str(data_dir), "--port", str(port),
                  timeout=UP_TIMEOUT_S)
    state = json.loads((data_dir / "platform.json").read_text()) if up.returncode == 0 else {}
    info = {"data_dir": data_dir, "port": port, "up": up, "state": state, "manifests": manifests}
    yield info
    if (data_dir / "platform.json").exists():  # a failed test must not leave a platform running
        raylight("down", "--data-dir", str(data_dir), timeout=180)
