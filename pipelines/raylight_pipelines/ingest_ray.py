"""Scale-out embedding on Ray Data: `map_batches` over embedder actors sized by the plan's RayDataOptions
(from the embedder's ModelDeployment: replicas -> actor pool size, resources -> num_gpus / num_cpus per
actor). The driver still does the upserts, in the same order as an in-process run, so sync's guarantees are
unchanged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from raylight.api.connections import RayDataOptions
from raylight.api.types import ModelSource

from raylight_pipelines.sync import PendingPoint, Vectorize


class EmbedBatch:
    """One Ray Data actor: loads the model once, embeds batches of passages."""

    def __init__(self, source: ModelSource, device: str = "cpu") -> None:
        from raylight_pipelines.embedders import LocalEmbedder

        self.embedder = LocalEmbedder.from_source(source, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.embedder.embed([str(p) for p in batch["passage"]])
        return {"i": batch["i"], "vector": np.asarray(vectors, dtype=np.float32)}


def ray_vectorize(source: ModelSource, options: RayDataOptions | None = None) -> Vectorize:
    """A sync Vectorize that embeds on the Ray cluster the driver is connected to (ray.init first)."""
    opts = options or RayDataOptions()

    def run(points: Sequence[PendingPoint]) -> Iterator[tuple[Sequence[PendingPoint], list[list[float]]]]:
        if not points:
            return
        import ray.data

        items = ray.data.from_items([{"i": i, "passage": p.passage} for i, p in enumerate(points)])
        ds = items.map_batches(
            EmbedBatch,
            fn_constructor_kwargs={"source": source, "device": "cuda" if opts.num_gpus else "cpu"},
            batch_size=opts.batch_size,
            batch_format="numpy",
            concurrency=opts.concurrency,
            num_gpus=opts.num_gpus,
            num_cpus=opts.num_cpus,
        )
        for batch in ds.iter_batches(batch_size=opts.batch_size, batch_format="numpy"):
            yield [points[int(i)] for i in batch["i"]], [v.tolist() for v in batch["vector"]]

    return run
