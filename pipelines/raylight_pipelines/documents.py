"""Document loaders: a Pipeline's sources -> text documents with stable ids, and failures reported, never raised.

Every loader turns its input into plain text in which Markdown-style `#` headings mark sections (HTML
headings are rewritten that way), so the chunker needs only one notion of structure. PDF pages are
kept as (page number, character offset) marks.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from raylight.api.types import Access, Source
from raylight.desired.kubernetes import CONFIGMAP_MOUNT_ROOT

log = logging.getLogger(__name__)

Format = Literal["markdown", "text", "html", "pdf"]
MAX_BYTES = 50 * 1024 * 1024  # larger files are reported, not loaded
SUFFIXES: dict[str, Format] = {
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".txt": "text", ".text": "text", ".rst": "text", ".log": "text", ".csv": "text",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf",
}


@dataclass(frozen=True)
class Document:
    source_id: str  # stable across runs and machines: "<kind>:<locator>"
    source_key: str  # which Source of the Pipeline it came from (scopes deletions)
    text: str
    title: str | None = None
    pages: tuple[tuple[int, int], ...] = ()  # (page number from 1, char offset where it starts)
    tenant: str | None = None
    groups: tuple[str, ...] = ()

    def page_at(self, offset: int) -> int | None:
        page = None
        for number, start in self.pages:
            if start > offset:
                break
            page = number
        return page


@dataclass(frozen=True)
class Failure:
    source_id: str
    source_key: str
    reason: str


@dataclass
class Loaded:
    """What the sources yielded; `complete` lists source keys whose listing succeeded (only those may
    have their vanished documents deleted)."""

    documents: list[Document] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)
    complete: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)


class LoadError(Exception):
    """One input cannot be turned into text; the message says why."""


# ---------------------------------------------------------------- bytes -> text


def looks_binary(data: bytes) -> bool:
    head = data[:8192]
    if not head:
        return False
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 BOM: text with NULs
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls / len(head) > 0.1


def decode(data: bytes) -> str:
    """Bytes in any common encoding -> str with \\n line ends (UTF-8 first, then detection, then cp1252)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = _detect(data)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _detect(data: bytes) -> str:
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is not None:
            return str(best)
    except ImportError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ---------------------------------------------------------------- formats

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FRONT_TITLE = re.compile(r"^title:\s*['\"]?(.+?)['\"]?\s*$", re.MULTILINE)


def markdown_title(text: str) -> str | None:
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end > 0 and (m := _FRONT_TITLE.search(text[4:end])):
            return m.group(1)
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        elif not in_code and (m := _ATX.match(line)) and len(m.group(1)) == 1:
            return m.group(2).strip()
    return None


def html_to_text(data: bytes | str) -> tuple[str, str | None]:
    """HTML -> text with `#` headings; scripts, styles and navigation dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(["script", "style", "noscript", "nav", "template", "head", "svg"]):
        tag.decompose()
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            text = " ".join(h.get_text(" ", strip=True).split())
            h.replace_with(f"\n\n{'#' * level} {text}\n\n")
            if title is None and level == 1:
                title = text
    for tag in soup.find_all(["p", "div", "section", "article", "li", "tr", "pre", "blockquote", "br"]):
        tag.insert_before("\n\n" if tag.name != "li" and tag.name != "br" else "\n")
    lines = [" ".join(line.split()) for line in soup.get_text().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text, title or None


def pdf_to_text(data: bytes) -> tuple[str, str | None, tuple[tuple[int, int], ...]]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            reader.decrypt("")
        parts: list[str] = []
        pages: list[tuple[int, int]] = []
        offset = 0
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").replace("\r\n", "\n").replace("\x00", "").strip()
            pages.append((number, offset))
            parts.append(text)
            offset += len(text) + 2
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception as exc:  # pypdf raises many types for broken files
        raise LoadError(f"cannot read PDF: {exc}") from exc
    text = "\n\n".join(parts)
    if not text.strip():
        raise LoadError("PDF has no extractable text (scanned images?)")
    return text, (str(meta_title) if meta_title else None), tuple(pages)


def to_text(data: bytes, fmt: Format | None, name: str) -> tuple[str, str | None, tuple[tuple[int, int], ...]]:
    """(text, title, pages) for one file's bytes; raises LoadError for binary or broken input."""
    if len(data) > MAX_BYTES:
        raise LoadError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
    if fmt == "pdf" or (fmt is None and data.startswith(b"%PDF-")):
        return pdf_to_text(data)
    if looks_binary(data):
        raise LoadError("binary file" + (f" (unsupported type {Path(name).suffix})" if fmt is None else ""))
    if fmt == "html":
        text, title = html_to_text(decode(data))
        return text, title, ()
    text = decode(data)
    title = markdown_title(text) if fmt in ("markdown", None) else None
    return text, title, ()


def format_of(name: str, content_type: str | None = None) -> Format | None:
    if content_type:
        ct = content_type.split(";")[0].strip().lower()
        by_type: dict[str, Format] = {"text/html": "html", "application/xhtml+xml": "html",
                                      "application/pdf": "pdf", "text/markdown": "markdown",
                                      "text/plain": "text"}
        if ct in by_type:
            return by_type[ct]
    return SUFFIXES.get(PurePosixPath(name).suffix.lower())


# ---------------------------------------------------------------- globs


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


def _doc(source_id: str, key: str, access: Access, text: str, title: str | None,
         pages: tuple[tuple[int, int], ...] = ()) -> Document:
    return Document(source_id=source_id, source_key=key, text=text, title=title, pages=pages,
                    tenant=access.tenant, groups=tuple(sorted(set(access.groups))))


Item = Document | Failure


def iter_directory(root: Path, include: list[str], exclude: list[str], key: str, access: Access,
                   id_prefix: str) -> Iterator[Item | tuple[str, str]]:
    """Documents under root (a directory or one file); ("skip", reason) tuples for unsupported binaries."""
    if root.is_file():
        files = [(root, root.name)]
    else:
        files = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                if matches(rel, include, exclude):
                    files.append((path, rel))
    for path, rel in files:
        source_id = f"{id_prefix}{rel}" if not root.is_file() else f"{id_prefix.rstrip('/')}"
        fmt = format_of(path.name)
        try:
            data = path.read_bytes()
            text, title, pages = to_text(data, fmt, path.name)
        except (OSError, LoadError) as exc:
            if fmt is None and isinstance(exc, LoadError) and str(exc).startswith("binary file"):
                yield ("skip", f"{source_id}: {exc}")
                continue
            yield Failure(source_id, key, str(exc))
            continue
        yield _doc(source_id, key, access, text, title or path.stem, pages)


def iter_configmap(name: str, keys: list[str], namespace: str, key: str, access: Access,
                   api: Any = None) -> Iterator[Item]:
    """Each key of a ConfigMap (data and binaryData) is a document; the format follows the key's suffix.

    The operator's ingestion Job mounts the ConfigMap (so its pod needs no API access); elsewhere it is read
    through the Kubernetes API."""
    mounted = Path(CONFIGMAP_MOUNT_ROOT) / name
    entries: dict[str, bytes]
    if api is None and mounted.is_dir():
        entries = {f.name: f.read_bytes() for f in mounted.iterdir() if not f.name.startswith(".") and f.is_file()}
    else:
        entries = _configmap_entries(name, namespace, api)
    wanted = keys or sorted(entries)
    for k in wanted:
        source_id = f"configmap:{namespace}/{name}/{k}"
        if k not in entries:
            yield Failure(source_id, key, "no such key in the ConfigMap")
            continue
        try:
            text, title, pages = to_text(entries[k], format_of(k) or "text", k)
        except LoadError as exc:
            yield Failure(source_id, key, str(exc))
            continue
        yield _doc(source_id, key, access, text, title or k, pages)


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


def iter_urls(urls: list[str], key: str, access: Access, http: Any = None) -> Iterator[Item]:
    import httpx

    client = http or httpx.Client(timeout=30.0, follow_redirects=True,
                                  headers={"User-Agent": "raylight-ingest"})
    try:
        for url in urls:
            source_id = f"url:{url}"
            try:
                response = client.get(url)
                response.raise_for_status()
                fmt = format_of(PurePosixPath(httpx.URL(url).path).name,
                                response.headers.get("content-type"))
                text, title, pages = to_text(response.content, fmt or "text", url)
            except (httpx.HTTPError, LoadError) as exc:
                yield Failure(source_id, key, str(exc) or type(exc).__name__)
                continue
            yield _doc(source_id, key, access, text, title or url, pages)
    finally:
        if http is None:
            client.close()


def load_sources(sources: list[Source], base_dir: Path, namespace: str = "default",
                 k8s_api: Any = None, http: Any = None,
                 on_item: Callable[[Item], None] | None = None) -> Loaded:
    """Load every source; a source whose listing fails (missing directory, ConfigMap unreachable) is
    recorded as one failure and left out of `complete`, so its existing chunks are kept."""
    loaded = Loaded()
    for source in sources:
        key = source_key(source)
        loaded.keys.add(key)
        items: Iterable[Item | tuple[str, str]]
        try:
            if source.path is not None:
                root = (base_dir / source.path).resolve() if not Path(source.path).is_absolute() \
                    else Path(source.path)
                if not root.exists():
                    raise LoadError(f"{root}: no such file or directory")
                prefix = f"path:{PurePosixPath(source.path.rstrip('/')).as_posix()}/"
                items = list(iter_directory(root, source.include, source.exclude, key, source.access, prefix))
            elif source.pvc is not None:
                from raylight.desired.serve import PVC_MOUNT_ROOT

                root = Path(PVC_MOUNT_ROOT) / source.pvc.claim / source.pvc.path.strip("/")
                if not root.exists():
                    raise LoadError(f"{root}: volume not mounted")
                items = list(iter_directory(root, source.pvc.include, source.pvc.exclude, key,
                                            source.access, f"{key}/"))
            elif source.config_map is not None:
                items = list(iter_configmap(source.config_map.name, source.config_map.keys, namespace, key,
                                            source.access, k8s_api))
            elif source.urls is not None:
                items = list(iter_urls(source.urls, key, source.access, http))
            else:
                items = [_doc(f"inline:{d.id}", key, source.access, decode(d.text.encode()),
                              d.title or markdown_title(d.text) or d.id) for d in source.documents or []]
        except Exception as exc:  # a listing failure must not abort the other sources
            loaded.failures.append(Failure(key, key, f"cannot list source: {exc}"))
            continue
        loaded.complete.add(key)
        for item in items:
            if isinstance(item, tuple):
                loaded.skipped.append(Failure(item[1].split(": ", 1)[0], key, item[1].split(": ", 1)[-1]))
                continue
            if isinstance(item, Document):
                loaded.documents.append(item)
            else:
                loaded.failures.append(item)
            if on_item:
                on_item(item)
    for failure in loaded.failures:
        log.warning("skipped %s: %s", failure.source_id, failure.reason)
    return loaded
