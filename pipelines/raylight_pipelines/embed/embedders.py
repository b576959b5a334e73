"""Embedders: one protocol, in-process (sentence-transformers, its transformer on PyTorch or ONNX Runtime) or
over HTTP (an OpenAI-compatible /v1/embeddings, e.g. the embedder ModelDeployment's Serve app)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from raylight.api.connections import EmbedderConnection
from raylight.api.types import ModelCache, ModelSource

from raylight_pipelines import telemetry


class EmbedderError(RuntimeError):
    """The embedder cannot be loaded or does not answer."""


@runtime_checkable
class Embedder(Protocol):
    @property
    def dimensions(self) -> int: ...

    @property
    def model_id(self) -> str:
        """Names the model; stored with every point so a model change re-embeds everything."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


LOCAL_BATCH_SIZE = 32  # passages per forward pass of a LocalEmbedder unless its caller says otherwise


class LocalEmbedder:
    """A SentenceTransformer in this process; vectors are L2-normalised (cosine == dot)."""

    def __init__(self, path: str | Path, model_id: str | None = None, device: str = "cpu",
                 batch_size: int = LOCAL_BATCH_SIZE, backend: str = "torch") -> None:
        """`backend` onnx runs the model's transformer on ONNX Runtime (serving.runtimes.onnx: the same
        vectors, about 3x faster per query on CPUs); raises EmbedderError when the model cannot load."""
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
            if backend == "onnx":
                import torch

                from raylight_pipelines.serving.runtimes.onnx import use_onnx_runtime

                use_onnx_runtime(self.model, Path(path), threads=torch.get_num_threads())
        except Exception as exc:
            raise EmbedderError(f"cannot load the embedding model at {path}: {exc}") from exc
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model_id = model_id or str(path)
        get_dims = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        dims = get_dims()
        if not dims:
            dims = len(self.embed(["probe"])[0])
        self._dimensions = int(dims)

    @classmethod
    def from_source(cls, source: ModelSource, device: str = "cpu", backend: str = "torch",
                    batch_size: int = LOCAL_BATCH_SIZE, cache: ModelCache | None = None) -> LocalEmbedder:
        """The model at `source` (with `cache`, an embedder ModelDeployment's spec.cache: its checked cache entry
        or a WeightsError, never a download)."""
        from raylight_pipelines.weights import resolve

        return cls(resolve(source, cache=cache).path, model_id=source.source, device=device, batch_size=batch_size,
                   backend=backend)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int | None:
        return int(self.model.max_seq_length) if self.model.max_seq_length else None

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Thread-safe (callers' threads take turns: a Rust tokenizer refuses concurrent use, and one encode
        already uses every thread of the process's pool)."""
        if not texts:
            return []
        with self._lock:
            vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return [v.tolist() for v in vectors]


class HttpEmbedder:
    """An OpenAI-compatible embeddings endpoint (EmbedderConnection: base_url + model)."""

    def __init__(self, base_url: str, model: str, dimensions: int | None = None, api_key: str | None = None,
                 timeout: float = 60.0, batch_size: int = 64, http_client: Any = None,
                 model_id: str | None = None) -> None:
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "none"),
                             timeout=timeout, max_retries=2, http_client=http_client)
        self.model = model
        self.base_url = base_url
        self.batch_size = batch_size
        self._dimensions = dimensions
        self._model_id = model_id or model  # EmbedderConnection.identity

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            self._dimensions = len(self.embed(["probe"])[0])
        return self._dimensions

    @property
    def model_id(self) -> str:
        return self._model_id

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import openai

        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i:i + self.batch_size])
            try:
                # truncate: the endpoint is a Raylight embedder (refuses over-window input otherwise); a
                # chunk is sized to the window already, a long query is embedded by its first window.
                response = self.client.embeddings.create(model=self.model, input=batch,
                                                         extra_body={"truncate": True},
                                                         extra_headers=telemetry.inject() or None)
            except openai.OpenAIError as exc:
                raise EmbedderError(f"embedder {self.model} at {self.base_url}: {exc}") from exc
            out += [list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)]
        return out


def from_connection(conn: EmbedderConnection, local: bool = False) -> Embedder:
    """An EmbedderConnection -> an embedder: HTTP when a base_url is given (and not `local`), else the model
    from its source in this process (with the connection's backend)."""
    if conn.base_url and not local:
        return HttpEmbedder(conn.base_url, conn.model, conn.dimensions, model_id=conn.identity)
    if conn.source is None:
        raise EmbedderError(f"embedder {conn.model}: neither a base_url nor a model source")
    return LocalEmbedder.from_source(conn.source, backend=conn.backend, cache=conn.cache)
