"""One ingestion run for one Pipeline, and the local data-directory contract shared with `raylight up`.

Data directory layout (default ./.raylight):
  qdrant/                 the embedded Qdrant folder (owned by one process: this CLI, or the store actor)
  pipelines/<name>.json   what `raylight search` needs later: spec, collection, embedder model source
  platform.json           written by `raylight up` while a platform runs, removed by `raylight down`:
                          {"ray_address": "127.0.0.1:6379", "store_actor": "raylight-store", ...}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylight.api.types import ModelDeployment, Pipeline, PipelineSpec
from raylight.desired.pipeline import collection_name, embedder_model

from raylight_pipelines.chunking import HFTokenizer, Tokenizer, TokenizerError, load_tokenizer, tokenizer_from_service
from raylight_pipelines.documents import load_sources
from raylight_pipelines.embedders import Embedder, HttpEmbedder, LocalEmbedder
from raylight_pipelines.store import connect
from raylight_pipelines.sync import SyncReport, Vectorize, sync

log = logging.getLogger(__name__)

PLATFORM_FILE = "platform.json"
STORE_DIR = "qdrant"


def platform_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((Path(data_dir) / PLATFORM_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def local_store_conn(data_dir: Path, pipeline: Pipeline | str) -> dict[str, Any]:
    """connections["store"] on one machine: through the platform's store actor while `raylight up` runs,
    else the embedded folder directly. `ray_address` (extra key) tells connect() which Ray to join."""
    data_dir = Path(data_dir)
    if isinstance(pipeline, Pipeline):
        collection = collection_name(pipeline)
    else:
        info = pipeline_info(data_dir, pipeline)
        collection = info["collection"] if info else pipeline
    state = platform_state(data_dir) or {}
    return {
        "url": None,
        "path": str((data_dir / STORE_DIR).resolve()),
        "actor": state.get("store_actor"),
        "ray_address": state.get("ray_address"),
        "collection": collection,
        "api_key_env": None,
    }


def save_pipeline_info(data_dir: Path, pipeline: Pipeline, embedder: ModelDeployment, base_dir: Path) -> Path:
    path = Path(data_dir) / "pipelines" / f"{pipeline.metadata.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "name": pipeline.metadata.name,
        "spec": pipeline.spec.to_wire(),
        "collection": collection_name(pipeline),
        "embedder": {"model": embedder.metadata.name, "source": embedder_model(embedder)},
        "base_dir": str(base_dir),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path)
    return path


def pipeline_info(data_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads((Path(data_dir) / "pipelines" / f"{name}.json").read_text())
        return info
    except (OSError, ValueError):
        return None


def tokenizer_for(embedder: Embedder, source: dict[str, Any] | None) -> Tokenizer:
    """The embedder's own tokenizer and window: the in-process model's; for an embedder service, the one
    it reports (GET /v1/tokenizer), else the one of its model source. Raises TokenizerError saying what
    was tried: chunks are never sized with an approximation."""
    if isinstance(embedder, LocalEmbedder):
        if not embedder.max_tokens:
            raise TokenizerError(f"{embedder.model_id}: the model's input window is unknown")
        return HFTokenizer.from_transformers(embedder.tokenizer, embedder.max_tokens, name=embedder.model_id)
    tried = []
    if isinstance(embedder, HttpEmbedder):
        try:
            return tokenizer_from_service(embedder.base_url, embedder.model)
        except TokenizerError as exc:
            tried.append(str(exc))
    try:
        return load_tokenizer(source)
    except TokenizerError as exc:
        raise TokenizerError("; ".join([*tried, str(exc)])) from None


def run_ingestion(name: str, spec: PipelineSpec, base_dir: Path, store_conn: dict[str, Any], embedder: Embedder,
                  tokenizer: Tokenizer, namespace: str = "default", vectorize: Vectorize | None = None,
                  progress: Callable[[int, int], None] | None = None, client: Any = None) -> SyncReport:
    """Load the Pipeline's sources (paths relative to base_dir) and sync them into its collection."""
    loaded = load_sources(list(spec.sources), base_dir, namespace)
    own = client is None
    client = client or connect(store_conn)
    size, window = spec.chunking.size, tokenizer.max_tokens - tokenizer.count("")
    if size > window:
        log.warning("chunk size %d exceeds the embedder's input window; chunks get at most %d tokens",
                    size, window)
    try:
        return sync(client, store_conn["collection"], name, loaded, embedder, tokenizer, size,
                    min(spec.chunking.overlap, size // 2), vectorize=vectorize, progress=progress)
    finally:
        if own:
            client.close()
