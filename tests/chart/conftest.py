"""Fixtures for the chart tests: a Helm binary (or a skip with the reason) and a cached renderer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmtool import CHART, NAMESPACE, RELEASE, Render, find_helm, helm_run


@pytest.fixture(scope="session")
def helm() -> str:
    path, why = find_helm()
    if path is None:
        pytest.skip(f"no Helm 3 binary: {why}")
    return path


@pytest.fixture(scope="session")
def render(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """`helm template` the chart with these values; the objects, parsed. Cached per values."""
    cache: dict[str, list[dict[str, Any]]] = {}
    workdir = tmp_path_factory.mktemp("values")

    def run(values: dict[str, Any] | None = None, chart: Path = CHART) -> list[dict[str, Any]]:
        key = json.dumps([str(chart), values or {}], sort_keys=True)
        if key not in cache:
            values_file = workdir / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.yaml"
            values_file.write_text(yaml.safe_dump(values or {}))
            out = helm_run(helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE,
                           "--values", str(values_file))
            cache[key] = [doc for doc in yaml.safe_load_all(out) if doc]
        return cache[key]

    return run
