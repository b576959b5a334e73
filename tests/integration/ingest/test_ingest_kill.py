"""A real ingestion process SIGKILLed mid-run, then re-run: the embedded store (Qdrant's engine: its write-ahead
log is what survives the kill) ends with exactly the points of a clean run (same ids, payloads, dense and sparse
vectors), nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from raylight_pipelines.store.edge import EdgeStore

pytestmark = pytest.mark.integration
HELPER = Path(__file__).with_name("kill_helper.py")


def section(name: str, n: int) -> str:
    return f"# {name}\n\n" + "\n\n".join(f"Paragraph {i} of {name} covers case {i} of the {name} module in "
                                         "plain words." for i in range(n))


V1 = {"a.md": section("Alpha", 6), "b.md": section("Beta", 5), "c.md": section("Gamma", 4)}
V2 = {"a.md": section("Alpha", 3), "b.md": section("Beta", 5).replace("plain", "simple"), "d.md": section("Delta", 5)}


def write(docs: Path, files: dict[str, str]) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    for p in docs.glob("*.md"):
        p.unlink()
    for name, text in files.items():
        (docs / name).write_text(text)


def ingest(store: Path, docs: Path, kill_after: int = 0) -> tuple[int, dict[str, Any] | None]:
    proc = subprocess.run([sys.executable, str(HELPER), str(store), str(docs), str(kill_after)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc.returncode, out


def snapshot(store: Path) -> dict[str, Any]:
    client = EdgeStore(store)
    try:
        return {p.id: (p.payload, [round(x, 5) for x in p.dense], p.sparse) for p in client.points("col")}
    finally:
        client.close()


def test_killed_ingestion_rerun_converges_to_exact_points(tmp_path):
    docs = tmp_path / "docs"
    write(docs, V2)
    rc, _ = ingest(tmp_path / "clean", docs)
    assert rc == 0
    expected = snapshot(tmp_path / "clean")
    write(docs, V1)
    rc, probe = ingest(tmp_path / "probe", docs)
    write(docs, V2)
    rc, probe = ingest(tmp_path / "probe", docs)
    assert rc == 0 and probe is not None
    total = probe["writes"]
    assert total >= 4
    for kill_after in sorted({2, total - 1}):  # mid-upserts, and between upserts and deletes
        store = tmp_path / f"store-{kill_after}"
        write(docs, V1)
        assert ingest(store, docs)[0] == 0
        write(docs, V2)
        rc, _ = ingest(store, docs, kill_after)
        assert rc == -signal.SIGKILL, f"the run was meant to die after write {kill_after}"
        rc, again = ingest(store, docs)
        assert rc == 0 and again is not None and again["failed"] == 0
        assert snapshot(store) == expected, f"diverged after a kill at write {kill_after}"
        rc, final = ingest(store, docs)
        assert final is not None and final["unchanged"] == 3 and final["chunks_embedded"] == 0
