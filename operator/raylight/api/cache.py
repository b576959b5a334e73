"""The weight cache's contract (spec.cache): what a prefetch pulls and the completion marker it writes last.

The operator's prefetch Job runs `raylight cache pull --plan-json <CachePlan>`; a replica (and, on one machine,
`raylight up`, `ingest` and `finetune`) finds an entry at `<cache root>/<CachePlan.entry>` and trusts it only when
its marker (`CacheMarker`, in `CACHE_MARKER`) is there and agrees with the digests the manifest pins.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from raylight.api.names import cache_entry
from raylight.api.types import ApiModel, ModelDeploymentSpec, ModelSource

CACHE_KEY_CHARS = 10  # hex digits of the plan's sha256 in the prefetch Job's name


class CachePlan(ApiModel):
    """One prefetch: `source` (with its pinned revision) into `<root>/<entry>`, checked against `sha256`."""

    source: ModelSource
    sha256: dict[str, str] = Field(default_factory=dict, description="Expected digest per file (spec.cache.sha256).")

    @property
    def revision(self) -> str:
        assert self.source.revision, "a cache plan holds pinned weights (validated: spec.cache needs a revision)"
        return self.source.revision

    @property
    def entry(self) -> str:
        return cache_entry(self.source.source, self.revision)

    def key(self) -> str:
        """A short hash of what is pulled and checked: a new pin or digest is a new prefetch."""
        what = {"source": self.source.source, "revision": self.revision, "file": self.source.file,
                "sha256": self.sha256}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:CACHE_KEY_CHARS]


def cache_plan(spec: ModelDeploymentSpec) -> CachePlan | None:
    """The prefetch a ModelDeployment's spec.cache asks for, or None without one (the spec is validated: a cached
    model has an hf:// or s3:// source and a revision)."""
    resolved = spec.resolved()
    if resolved.cache is None or resolved.model is None:
        return None
    return CachePlan(source=resolved.model, sha256=dict(resolved.cache.sha256))


class CachedFile(ApiModel):
    size: int = Field(ge=0)
    sha256: str


class CacheMarker(ApiModel):
    """The completion marker: written last (atomically) once every file is on the volume and checked."""

    source: str
    revision: str
    files: dict[str, CachedFile] = Field(description="Every file of the entry, by its path inside it.")
    completed_at: str

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    def report(self, path: str) -> dict[str, Any]:
        """The prefetch's summary line (the Job's termination message; the operator reads it into status.cache)."""
        return {"phase": "Succeeded", "path": path, "files": len(self.files), "bytes": self.bytes}


def sha256_problem(expected: dict[str, str], files: dict[str, CachedFile], where: str) -> str | None:
    """Why the files (of a download or a cache entry, `where`) do not carry the pinned digests, naming the field
    and the file; None when every pinned file is there with its digest."""
    for file, digest in sorted(expected.items()):
        found = files.get(file)
        if found is None:
            return f"spec.cache.sha256: {file}: no such file in {where}"
        if found.sha256 != digest:
            return f"spec.cache.sha256: {file}: expected sha256 {digest}, {where} has {found.sha256}"
    return None
