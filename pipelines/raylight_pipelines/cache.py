"""The weight cache on disk: a prefetch pulls pinned weights into `<root>/<entry>`, checks them and writes the
completion marker last; readers use an entry only when its marker is there and agrees with the pinned digests.

The root is the volume the operator mounts (`CACHE_MOUNT_ROOT`, told by `$RAYLIGHT_MODEL_CACHE`) in a pod, and
on one machine the one folder `raylight up`, `ingest` and `finetune` share (`$RAYLIGHT_MODEL_CACHE`, else
`~/.cache/raylight/models`). Nothing here deletes an entry someone else may read: `prune` removes only what
its caller names as unreferenced.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from raylight.api.cache import CachedFile, CacheMarker, CachePlan, sha256_problem
from raylight.api.names import CACHE_ENV, CACHE_MARKER, CACHE_PARTIAL, cache_entry
from raylight.api.types import ModelSource

from raylight_pipelines.weights import WeightsError, download_hf, download_s3

DEFAULT_ROOT = Path("~/.cache/raylight/models")
_SKIP_DIRS = (".cache",)  # huggingface_hub's own bookkeeping inside a local_dir download


class CacheError(WeightsError):
    """A cache entry is missing, incomplete or not the pinned weights; the message names the field to look at."""


def cache_root() -> Path:
    """The cache folder: `$RAYLIGHT_MODEL_CACHE` (the mounted claim in a pod), else ~/.cache/raylight/models."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_ROOT).expanduser()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def entry_files(folder: Path) -> list[Path]:
    """The entry's files (relative paths), without the marker and the downloader's bookkeeping."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in _SKIP_DIRS and rel.name not in (CACHE_MARKER, CACHE_PARTIAL):
            out.append(rel)
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_marker(folder: Path) -> CacheMarker | None:
    marker = folder / CACHE_MARKER
    if not marker.is_file():
        return None
    try:
        return CacheMarker.model_validate_json(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CacheError(f"{folder}: unreadable {CACHE_MARKER} ({exc}): remove the entry and pull again") from None


def pull(plan: CachePlan, root: Path | None = None, say: Callable[[str], None] | None = None) -> CacheMarker:
    """Pull `plan.source` at its revision into `<root>/<plan.entry>` (once: a complete entry that agrees with the
    pinned digests is kept as it is), hash every file, check the pinned digests (a mismatch removes the bad file
    so a retry fetches it again, and raises naming spec.cache.sha256 and the file), then write the marker last."""
    root = root or cache_root()
    folder = root / plan.entry
    source = f"{plan.source.source} at revision {plan.revision}"
    done = read_marker(folder)
    if done is not None:
        problem = sha256_problem(plan.sha256, done.files, f"the cache entry {folder}")
        if problem is None:
            return done
        (folder / CACHE_MARKER).unlink()  # pinned to other digests now: check the files afresh
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CACHE_PARTIAL).write_text(_now(), encoding="utf-8")
    scheme, _, rest = plan.source.source.partition("://")
    if say:
        say(f"pulling {source} into {folder}")
    if scheme == "hf":
        download_hf(rest, plan.revision, plan.source.source, local_dir=folder)
    elif scheme == "s3":
        download_s3(plan.source.source, folder)
    else:
        raise CacheError(f"spec.cache: {scheme}:// weights are not pre-pulled (only hf:// and s3://)")
    files = {rel.as_posix(): CachedFile(size=(folder / rel).stat().st_size, sha256=_digest(folder / rel))
             for rel in entry_files(folder)}
    if plan.source.file and plan.source.file not in files and not (folder / plan.source.file).is_dir():
        raise CacheError(f"spec.model.file: {plan.source.file} is not in {source}")
    problem = sha256_problem(plan.sha256, files, f"the download of {source}")
    if problem is not None:
        for file, digest in plan.sha256.items():
            if file in files and files[file].sha256 != digest:
                (folder / file).unlink()
        raise CacheError(problem)
    marker = CacheMarker(source=plan.source.source, revision=plan.revision, files=files, completed_at=_now())
    tmp = folder / f"{CACHE_MARKER}.tmp"
    tmp.write_text(marker.model_dump_json(by_alias=True, indent=2), encoding="utf-8")
    os.replace(tmp, folder / CACHE_MARKER)  # last: an entry without it is never read
    (folder / CACHE_PARTIAL).unlink(missing_ok=True)
    return marker


def cached(source: ModelSource, expected: dict[str, str] | None = None, root: Path | None = None,
           required: bool = False) -> Path | None:
    """The folder of `source`'s complete cache entry, checked: its marker is there, agrees with the `expected`
    digests (spec.cache.sha256) and every file it lists has its recorded size. None when there is no complete
    entry and it is not `required`; with `required` (a ModelDeployment with spec.cache) a missing or
    incomplete entry raises: the replica never falls back to downloading."""
    if not source.revision or source.source.partition("://")[0] not in ("hf", "s3"):
        if required:
            raise CacheError(f"spec.cache: {source.source} needs model.revision and an hf:// or s3:// source")
        return None
    folder = (root or cache_root()) / cache_entry(source.source, source.revision)
    where = f"{source.source} at revision {source.revision}"
    marker = read_marker(folder)
    if marker is None:
        if not required:
            return None
        state = ("is being written or its prefetch failed" if (folder / CACHE_PARTIAL).exists() else
                 "is incomplete" if folder.is_dir() else "is not there")
        raise CacheError(f"spec.cache: the cache entry for {where} ({folder}) {state} (no {CACHE_MARKER}); the "
                         "replica, ingestion or training run does not download it: the operator's prefetch Job (or "
                         "`raylight cache pull` on one machine) fills it")
    problem = sha256_problem(expected or {}, marker.files, f"the cache entry {folder}")
    if problem is not None:
        raise CacheError(problem)
    for rel, recorded in marker.files.items():
        path = folder / rel
        size = path.stat().st_size if path.is_file() else None
        if size != recorded.size:
            raise CacheError(f"spec.cache: the cache entry {folder} is damaged: {rel} "
                             f"{'is missing' if size is None else f'has {size} bytes'}, its marker says "
                             f"{recorded.size}: remove the entry (`raylight cache prune`) and pull again")
    return folder


def entries(root: Path | None = None) -> list[tuple[str, CacheMarker | None, int]]:
    """(entry, its marker or None while incomplete, bytes on disk) for every entry under the root: the folders
    holding a marker or a partial flag."""
    root = root or cache_root()
    found: list[tuple[str, CacheMarker | None, int]] = []
    for flag in sorted([*root.rglob(CACHE_MARKER), *root.rglob(CACHE_PARTIAL)]):
        folder = flag.parent
        rel = folder.relative_to(root).as_posix()
        if any(rel == e for e, _, _ in found):
            continue
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        found.append((rel, read_marker(folder), size))
    return found


def prune(keep: Iterable[str], root: Path | None = None) -> list[str]:
    """Remove every entry under the root that `keep` (entries some manifest references) does not name, and
    return them. The only thing that deletes cache entries; nothing calls it on its own."""
    root = root or cache_root()
    wanted = set(keep)
    removed = []
    for entry, _, _ in entries(root):
        if entry not in wanted:
            shutil.rmtree(root / entry)
            removed.append(entry)
    return removed
