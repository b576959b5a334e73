"""Rerankers: one protocol, in-process (a sentence-transformers CrossEncoder) or over HTTP (the rerank
ModelDeployment's `POST /v1/rerank`, Cohere/Jina shape)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from raylight.api.connections import RerankerConnection
from raylight.api.types import ModelSource

from raylight_pipelines import telemetry


class RerankerError(RuntimeError):
    """The reranker cannot be loaded or does not answer."""


@runtime_checkable
class Reranker(Protocol):
    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text, in the texts' order (higher is more relevant)."""
        ...


class LocalReranker:
    """A CrossEncoder in this process (what `raylight eval` uses without a running platform)."""

    def __init__(self, source: ModelSource) -> None:
        from raylight_pipelines.serving.runtimes.reranker import CrossEncoderReranker
        from raylight_pipelines.weights import resolve

        try:
            self.model = CrossEncoderReranker(resolve(source).path, 1, {})
        except Exception as exc:
            raise RerankerError(f"cannot load the reranker {source.source}: {exc}") from exc

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        values, _ = self.model.score([(query, t) for t in texts])
        return [float(v) for v in values]


class HttpReranker:
    """A `POST {base_url}/rerank` endpoint (RerankerConnection: base_url + model)."""

    def __init__(self, base_url: str, model: str, timeout: float = 30.0, http_client: Any = None) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.client = http_client or httpx.Client(timeout=timeout)

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        import httpx

        if not texts:
            return []
        try:
            resp = self.client.post(f"{self.base_url}/rerank", json={
                # truncate: a passage longer than the cross-encoder's window is scored by its first window
                "model": self.model, "query": query, "documents": list(texts), "return_documents": False,
                "truncate": True},
                headers=telemetry.inject())
            resp.raise_for_status()
            out = [0.0] * len(texts)
            for result in resp.json()["results"]:
                out[result["index"]] = float(result["relevance_score"])
            return out
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
            raise RerankerError(f"reranker {self.model} at {self.base_url}: {exc}") from exc



def from_connection(conn: RerankerConnection, local: bool = False) -> Reranker:
    """A RerankerConnection -> a reranker: HTTP when a base_url is given (and not `local`), else the model
    from its source in this process."""
    if conn.base_url and not local:
        return HttpReranker(conn.base_url, conn.model)
    if conn.source is None:
        raise RerankerError(f"reranker {conn.model}: neither a base_url nor a model source")
    return LocalReranker(conn.source)
