"""A real Prometheus server for tests: started with a config that scrapes the given targets every 0.5 s,
queried with PromQL over its HTTP API. Tests call `prometheus_or_skip()` first: without the `prometheus`
binary (Debian's package; `.ci/run` installs it) they skip with that reason."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support import free_port


def prometheus_or_skip() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no `prometheus` binary (apt-get install -y prometheus; .ci/run installs it)")
    return binary


class Prometheus:
    def __init__(self, jobs: dict[str, list[str]], metrics_path: str = "/metrics") -> None:
        self.binary = prometheus_or_skip()
        self.dir = Path(tempfile.mkdtemp(prefix="raylight-prom-"))
        self.port = free_port()
        config = {"global": {"scrape_interval": "500ms", "scrape_timeout": "400ms", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": job, "metrics_path": metrics_path,
                                      "static_configs": [{"targets": targets}]} for job, targets in jobs.items()]}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "log.txt", "wb"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not start: {(self.dir / 'log.txt').read_text()[-2000:]}")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        resp.raise_for_status()
        return list(resp.json()["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        """The value of a query that returns one series (None: no series)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> dict[str, str]:
        resp = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()
        return {t["scrapeUrl"]: t["health"] for t in resp["data"]["activeTargets"]}

    def eventually(self, expr: str, ok: Callable[[float], bool], timeout: float = 20.0) -> float:
        """Query until the single series' value satisfies `ok`; returns it."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            last = self.scalar(expr)
            if last is not None and ok(last):
                return last
            time.sleep(0.3)
        raise AssertionError(f"{expr} = {last} after {timeout} s; targets: {self.targets_up()}")
