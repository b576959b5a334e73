"""Document sources: a Pipeline's sources -> text documents with stable ids. What is left out (skipped, with
its reason) and what cannot be read (failures) are reported, never raised.

What is a document: the same rules hold for path, PVC, ConfigMap and URL sources.
  - hidden files and folders (a name starting with `.`) are skipped unless the Source sets `hidden: true`;
  - version-control metadata (`.git`, `.hg`, `.svn`, ...) is never read;
  - files that commonly hold secrets (`.env*`, private keys, `*.pem`, credential files) and any text that
    holds a PEM private key are never ingested;
  - symbolic links are followed only where they lead inside the source root; only regular files are read
    (never a FIFO or a device), each real file once;
  - unsupported binary files and files with no text are skipped.
Text extraction (formats, encodings, headings, pages) is raylight_pipelines.ingest.extract's.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any

from raylight.api.names import CONFIGMAP_MOUNT_ROOT, PVC_MOUNT_ROOT
from raylight.api.types import Access, Source

from raylight_pipelines.ingest.extract import (
    MAX_BYTES,
    Extracted,
    ExtractError,
    Heading,
    Page,
    extract,
    format_of,
    parse_markdown,
)

log = logging.getLogger(__name__)

VCS_FOLDERS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", ".jj", "CVS"})
SECRET_NAMES = (
    ".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.ovpn",
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "*.ppk", ".netrc", "_netrc", ".npmrc", ".pypirc", ".pgpass",
    ".htpasswd", ".git-credentials", ".dockercfg", "credentials", "credentials.json", "kubeconfig",
    "secrets.yaml", "secrets.yml", "secrets.json", "*.tfstate", "*.tfstate.backup", "*.tfvars",
)
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
HIDDEN = "hidden (set hidden: true on the source to include hidden files)"
SECRET = "may hold secrets (.env files, private keys and credential files are never ingested)"
PRIVATE = "holds a private key (never ingested)"
VCS = "version-control metadata"
OUTSIDE = "symbolic link leads outside the source root"


@dataclass(frozen=True)
class Document:
    source_id: str  # stable across runs and machines: "<kind>:<locator>"
    source_key: str  # which Source of the Pipeline it came from (scopes deletions)
    text: str
    title: str | None = None
    pages: tuple[Page, ...] = ()  # (page number from 1, char offset where it starts)
    tenant: str | None = None
    groups: tuple[str, ...] = ()
    headings: tuple[Heading, ...] = ()  # (char offset, level, title), found by the format's parser

    def page_at(self, offset: int) -> int | None:
        page = None
        for number, start in self.pages:
            if start > offset:
                break
            page = number
        return page


@dataclass(frozen=True)
class Failure:
    """An input left out: skipped by the rules above, or failed (it should be a document but cannot be read)."""

    source_id: str
    source_key: str
    reason: str


@dataclass(frozen=True)
class Skipped(Failure):
    """An input that is not a document by the rules in the module doc."""


@dataclass
class Loaded:
    """What the sources yielded; `complete` lists source keys whose listing succeeded (only those may
    have their vanished documents deleted)."""

    documents: list[Document] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    complete: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)


class Skip(Exception):
    """This input is not a document (by the rules in the module doc); the message says why."""


def skip_reason(rel: str, hidden: bool = False) -> str | None:
    """Why a path relative to its source root (`/`-separated; a folder may end in `/`) is not a
    document, or None: `.git/config` is version-control metadata, `docs/.env` may hold secrets,
    `.github/a.md` is hidden (unless `hidden`)."""
    parts = [p for p in rel.split("/") if p and p != "."]
    if any(p in VCS_FOLDERS for p in parts):
        return VCS
    if parts and any(fnmatchcase(parts[-1].lower(), pattern) for pattern in SECRET_NAMES):
        return SECRET
    if not hidden and any(p.startswith(".") for p in parts):
        return HIDDEN
    return None


def extract_document(data: bytes, name: str, content_type: str | None = None) -> Extracted:
    """Bytes -> Extracted; raises Skip (no text, secret content, unsupported binary) or ExtractError."""
    fmt = format_of(name, content_type)
    try:
        got = extract(data, fmt, name)
    except ExtractError as exc:
        if fmt is None and str(exc).startswith("binary file"):
            raise Skip(str(exc)) from None
        raise
    if not got.text.strip():
        raise Skip("empty (no text)")
    if PRIVATE_KEY.search(got.text):
        raise Skip(PRIVATE)
    return got


# ---------------------------------------------------------------- globs


@functools.lru_cache(maxsize=512)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob for paths relative to a source root: `**/` any directories (or none), `*` and `?` within
    one name, `[...]` classes."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 1)) > i:
            out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def matches(rel: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    rel = rel.lstrip("./") if rel.startswith("./") else rel
    return any(glob_regex(p.removeprefix("./")).match(rel) for p in include) and not any(
        glob_regex(p.removeprefix("./")).match(rel) for p in exclude)


# ---------------------------------------------------------------- sources


def source_key(source: Source) -> str:
    """Identifies one Source of a Pipeline across runs (its kind and locator)."""
    if source.path is not None:
        return f"path:{source.path}"
    if source.config_map is not None:
        return f"configmap:{source.config_map.name}"
    if source.pvc is not None:
        return f"pvc:{source.pvc.claim}/{source.pvc.path.strip('/')}"
    if source.urls is not None:
        return "urls:" + ",".join(source.urls)
    return "inline"


@dataclass(frozen=True)
class Unit:
    """One input listed but not read yet: `load_unit` reads and parses it, in this process or in a Ray task
    on another node (so it is plain, picklable data: where to read, never an open file or client)."""

    source_id: str
    source_key: str
    access: Access
    name: str  # its file name: the suffix picks the format
    title: str  # the title when the format gives none
    path: str | None = None  # a file to read
    url: str | None = None  # a URL to fetch
    data: bytes | None = None  # bytes already in hand (a ConfigMap key)
    inline: str | None = None  # inline Markdown from the manifest
    inline_title: str | None = None


Item = Document | Failure  # a Skipped is a Failure
Listed = Unit | Failure  # what listing yields: inputs to read, or what is left out already
Entry = tuple[str, Path | None, str | None]  # (path relative to the root, file to read, skip reason)


def _doc(source_id: str, key: str, access: Access, got: Extracted, fallback: str,
         title: str | None = None) -> Document:
    return Document(source_id=source_id, source_key=key, text=got.text, title=title or got.title or fallback,
                    pages=got.pages, tenant=access.tenant, groups=tuple(sorted(set(access.groups))),
                    headings=got.headings)


def _item(source_id: str, key: str, access: Access, read: Callable[[], bytes], name: str, title: str,
          content_type: str | None = None) -> Item:
    """One input -> a Document, or why not (Skipped by the rules, Failure when it cannot be read)."""
    try:
        got = extract_document(read(), name, content_type)
    except Skip as exc:
        return Skipped(source_id, key, str(exc))
    except (OSError, ExtractError) as exc:
        return Failure(source_id, key, getattr(exc, "strerror", None) or str(exc))
    return _doc(source_id, key, access, got, title)


def walk(root: Path, hidden: bool) -> Iterator[Entry]:
    """Every entry under the folder root in name order, by the rules in the module doc: a file to read
    (with the reason to skip it, if any), or a skipped entry without a file (a skipped folder once, its
    path ending in `/`). Symbolic links are followed where they lead inside root, each real file once."""
    real_root = root.resolve()
    seen: dict[Path, str] = {}

    def visit(folder: Path, prefix: str, folders: frozenset[Path]) -> Iterator[Entry]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield prefix or "./", None, f"cannot list: {exc.strerror or exc}"
            return
        for entry in entries:
            rel, path = prefix + entry.name, Path(entry.path)
            try:
                real = path.resolve(strict=True)
                is_dir = entry.is_dir()
            except (OSError, RuntimeError):
                yield rel, None, "broken symbolic link"
                continue
            if entry.is_symlink() and not real.is_relative_to(real_root):
                yield rel + ("/" if is_dir else ""), None, OUTSIDE
                continue
            if is_dir:
                if reason := skip_reason(rel + "/", hidden):
                    yield rel + "/", None, reason
                elif real in folders:
                    yield rel + "/", None, "symbolic link loop"
                else:
                    yield from visit(path, rel + "/", folders | {real})
            elif not entry.is_file():
                yield rel, None, "not a regular file"
            elif real in seen:
                yield rel, None, f"same file as {seen[real]}"
            else:
                seen[real] = rel
                yield rel, path, skip_reason(rel, hidden)

    yield from visit(root, "", frozenset({real_root}))


def _read(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        if path.stat().st_size > MAX_BYTES:
            raise ExtractError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
        return path.read_bytes()
    return read


def iter_directory(root: Path, include: list[str], exclude: list[str], key: str, access: Access,
                   id_prefix: str, hidden: bool = False) -> Iterator[Listed]:
    """Documents under root, a folder (entries matched by the globs, relative to root) or one file named
    explicitly (which may be hidden, but never secret)."""
    if root.is_file():
        source_id = id_prefix.rstrip("/")
        reason = skip_reason(root.name, hidden=True)
        yield Skipped(source_id, key, reason) if reason else Unit(
            source_id, key, access, root.name, root.stem, path=str(root))
        return
    for rel, path, reason in walk(root, hidden):
        source_id = f"{id_prefix}{rel}"
        if path is None and reason is not None:
            if reason == OUTSIDE or rel.endswith("/") or matches(rel, include, exclude):
                yield Skipped(source_id, key, reason)
        elif path is not None and matches(rel, include, exclude):
            yield Skipped(source_id, key, reason) if reason else Unit(
                source_id, key, access, path.name, path.stem, path=str(path))


def iter_configmap(name: str, keys: list[str], namespace: str, key: str, access: Access,
                   api: Any = None, hidden: bool = False) -> Iterator[Listed]:
    """Each key of a ConfigMap (data and binaryData) is a document; the format follows the key's suffix.

    The operator's ingestion Job mounts the ConfigMap (so its pod needs no API access): a file per key
    beside the kubelet's own `..data` entries (keys never start with `..`). Elsewhere it is read through
    the Kubernetes API. A key named in `keys` may be hidden; a secret-looking one is still skipped."""
    mounted = Path(CONFIGMAP_MOUNT_ROOT) / name
    entries: dict[str, bytes]
    if api is None and mounted.is_dir():
        entries = {f.name: f.read_bytes() for f in mounted.iterdir()
                   if not f.name.startswith("..") and f.is_file()}
    else:
        entries = _configmap_entries(name, namespace, api)
    for k in keys or sorted(entries):
        source_id = f"configmap:{namespace}/{name}/{k}"
        if (reason := skip_reason(k, hidden or k in keys)) is not None:
            yield Skipped(source_id, key, reason)
        elif k not in entries:
            yield Failure(source_id, key, "no such key in the ConfigMap")
        else:
            yield Unit(source_id, key, access, k, k, data=entries[k])


def _configmap_entries(name: str, namespace: str, api: Any) -> dict[str, bytes]:
    if api is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.CoreV1Api()
    cm = api.read_namespaced_config_map(name, namespace)
    entries: dict[str, bytes] = {k: v.encode() for k, v in (cm.data or {}).items()}
    entries.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
    return entries


def iter_urls(urls: list[str], key: str, access: Access, hidden: bool = False) -> Iterator[Listed]:
    """Each URL is a document (fetched when read); the format follows the Content-Type, else the path's
    suffix. URL paths follow the same rules as files (`https://host/.env` is never fetched)."""
    import httpx

    for url in urls:
        source_id = f"url:{url}"
        path = httpx.URL(url).path
        if (reason := skip_reason(path, hidden)) is not None:
            yield Skipped(source_id, key, reason)
        else:
            yield Unit(source_id, key, access, PurePosixPath(path).name or "index.html", url, url=url)


def _inline(source: Source, key: str) -> Iterator[Listed]:
    """Inline documents are Markdown, written into the manifest on purpose: no rules apply."""
    for d in source.documents or []:
        yield Unit(f"inline:{d.id}", key, source.access, d.id, d.id, inline=d.text, inline_title=d.title)


def http_client() -> Any:
    import httpx

    return httpx.Client(timeout=30.0, follow_redirects=True, headers={"User-Agent": "raylight-ingest"})


def load_unit(unit: Unit, http: Any = None) -> Item:
    """Read and parse one listed input: a Document, or why not (Skipped by the rules in the module doc,
    Failure when it cannot be read). `http`: a client for URL inputs (default: one for this call)."""
    if unit.inline is not None:
        got = parse_markdown(unit.inline.replace("\r\n", "\n").replace("\r", "\n"))
        return _doc(unit.source_id, unit.source_key, unit.access, got, unit.name, title=unit.inline_title)
    if unit.path is not None:
        return _item(unit.source_id, unit.source_key, unit.access, _read(Path(unit.path)), unit.name, unit.title)
    if unit.data is not None:
        data = unit.data
        return _item(unit.source_id, unit.source_key, unit.access, lambda: data, unit.name, unit.title)
    assert unit.url is not None
    import httpx

    client = http or http_client()
    try:
        response = client.get(unit.url)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return Failure(unit.source_id, unit.source_key, str(exc) or type(exc).__name__)
    finally:
        if http is None:
            client.close()
    return _item(unit.source_id, unit.source_key, unit.access, lambda: response.content, unit.name, unit.title,
                 response.headers.get("content-type"))


@dataclass
class Listing:
    """What listing the sources found, in order: inputs to read and what is left out already; `complete`
    and `keys` as in Loaded."""

    entries: list[Listed] = field(default_factory=list)
    complete: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)

    @property
    def units(self) -> list[Unit]:
        return [e for e in self.entries if isinstance(e, Unit)]


def list_sources(sources: list[Source], base_dir: Path, namespace: str = "default",
                 k8s_api: Any = None) -> Listing:
    """List every source without reading its documents (ConfigMaps excepted: their keys come in one
    read); a source whose listing fails (missing directory, ConfigMap unreachable) is one failure and left
    out of `complete`, so its existing chunks are kept."""
    listing = Listing()
    for source in sources:
        key = source_key(source)
        listing.keys.add(key)
        items: list[Listed]
        try:
            if source.path is not None:
                root = (base_dir / source.path).resolve() if not Path(source.path).is_absolute() \
                    else Path(source.path)
                if not root.exists():
                    raise ExtractError(f"{root}: no such file or directory")
                prefix = f"path:{PurePosixPath(source.path.rstrip('/')).as_posix()}/"
                items = list(iter_directory(root, source.include, source.exclude, key, source.access, prefix,
                                            source.hidden))
            elif source.pvc is not None:
                root = Path(PVC_MOUNT_ROOT) / source.pvc.claim / source.pvc.path.strip("/")
                if not root.exists():
                    raise ExtractError(f"{root}: volume not mounted")
                items = list(iter_directory(root, source.pvc.include, source.pvc.exclude, key,
                                            source.access, f"{key}/", source.hidden))
            elif source.config_map is not None:
                items = list(iter_configmap(source.config_map.name, source.config_map.keys, namespace, key,
                                            source.access, k8s_api, source.hidden))
            elif source.urls is not None:
                items = list(iter_urls(source.urls, key, source.access, source.hidden))
            else:
                items = list(_inline(source, key))
        except Exception as exc:  # a listing failure must not abort the other sources
            listing.entries.append(Failure(key, key, f"cannot list source: {exc}"))
            continue
        listing.complete.add(key)
        listing.entries += items
    return listing


def classify(loaded: Loaded, item: Item) -> None:
    if isinstance(item, Skipped):
        loaded.skipped.append(item)
    elif isinstance(item, Document):
        loaded.documents.append(item)
    else:
        loaded.failures.append(item)


def load_sources(sources: list[Source], base_dir: Path, namespace: str = "default",
                 k8s_api: Any = None, http: Any = None) -> Loaded:
    """List and load every source in this process (`list_sources`, then `load_unit` for each input); the
    Ray Data path reads the same listing in parallel tasks instead."""
    listing = list_sources(sources, base_dir, namespace, k8s_api)
    loaded = Loaded(complete=listing.complete, keys=listing.keys)
    client = http if http is not None or not any(
        isinstance(e, Unit) and e.url for e in listing.entries) else http_client()
    try:
        for entry in listing.entries:
            classify(loaded, load_unit(entry, client) if isinstance(entry, Unit) else entry)
    finally:
        if client is not None and http is None:
            client.close()
    for failure in loaded.failures:
        log.warning("failed %s: %s", failure.source_id, failure.reason)
    for skipped in loaded.skipped:
        log.info("skipped %s: %s", skipped.source_id, skipped.reason)
    return loaded
