"""Scale-out embedding on Ray Data: `map_batches` over embedder actors sized from the embedder's
ModelDeployment (replicas -> actor pool size, resources -> num_gpus / num_cpus per actor). The driver
still does the upserts, in the same order as an in-process run, so sync's guarantees are unchanged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from raylight.api.types import ModelDeployment
from raylight.desired.serve import resolve_spec

from raylight_pipelines.sync import PendingPoint, Vectorize


class EmbedBatch:
    """One Ray Data actor: loads the model once, embeds batches of passages."""

    def __init__(self, source: dict[str, Any], device: str = "cpu") -> None:
        from raylight_pipelines.embedders import LocalEmbedder

        self.embedder = LocalEmbedder.from_source(source, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.embedder.embed([str(p) for p in batch["passage"]])
        return {"i": batch["i"], "vector": np.asarray(vectors, dtype=np.float32)}


def resources(md: ModelDeployment) -> dict[str, Any]:
    """map_batches options from the embedder's ModelDeployment."""
    spec = resolve_spec(md.spec)
    low, high = max(spec.replicas.min, 1), max(spec.replicas.max, 1)
    return {
        "concurrency": (low, high) if high > low else low,
        "num_gpus": float(spec.resources.gpus),
        "num_cpus": float(spec.resources.cpus),
    }


def ray_vectorize(source: dict[str, Any], concurrency: int | tuple[int, int] = 1, num_gpus: float = 0,
                  num_cpus: float = 1, batch_size: int = 64) -> Vectorize:
    """A sync Vectorize that embeds on the Ray cluster the driver is connected to (ray.init first)."""

    def run(points: Sequence[PendingPoint]) -> Iterator[tuple[Sequence[PendingPoint], list[list[float]]]]:
        if not points:
            return
        import ray.data

        items = ray.data.from_items([{"i": i, "passage": p.passage} for i, p in enumerate(points)])
        ds = items.map_batches(
            EmbedBatch,
            fn_constructor_kwargs={"source": source, "device": "cuda" if num_gpus else "cpu"},
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=concurrency,
            num_gpus=num_gpus,
            num_cpus=num_cpus,
        )
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield [points[int(i)] for i in batch["i"]], [v.tolist() for v in batch["vector"]]

    return run
