"""Document sources: a Pipeline's sources -> text documents with stable ids. What is left out (skipped, with
its reason) and what cannot be read (failures) are reported, never raised.

What is a document: the same rules hold for path, PVC, ConfigMap and URL sources.
  - hidden files and folders (a name starting with `.`) are skipped unless the Source sets `hidden: true`;
  - version-control metadata (`.git`, `.hg`, `.svn`, ...) is never read;
  - files that commonly hold secrets (`.env*`, private keys, `*.pem`, credential files) and any text that
    holds a PEM private key are never ingested;
  - the rules above apply to the name a file is listed under AND to where it really is: a symbolic link
    (or a link to a folder above it) whose target is hidden, secret or version-control metadata is skipped
    like its target (`notes.md -> .env`, `cloud.md -> .aws/credentials`), and so is a hard link to such a
    file inside the source root; symbolic links are followed only where they lead inside the source root;
    only regular files are read (never a FIFO or a device), each real file once, and what is read is the
    file that was listed (opened without following a link, its inode checked);
  - URLs: a redirect is followed only to the listed URL's own origin or one named in the source's
    `redirectOrigins`, at most 5 times, and the rules above apply to every URL on the way; loopback,
    link-local, private and other non-public addresses are refused (checked on the connected socket, so
    no name or DNS answer leads there) unless the source names them in `privateNetworks`; proxies from
    the environment are not used;
  - unsupported binary files and files with no text are skipped.
Text extraction (formats, encodings, headings, pages) is raylight_pipelines.ingest.extract's.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
import socket
import stat
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
MAX_REDIRECTS = 5


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
    # (host, st_dev, st_ino) of `path` when listed: read on the same host, it must still be that file
    file_id: tuple[str, int, int] | None = None
    redirect_origins: tuple[str, ...] = ()  # a URL's redirects may lead here besides its own origin
    private_networks: tuple[str, ...] = ()  # non-public addresses a URL may reach
    hidden: bool = False  # the source's `hidden` (redirect targets follow the same rules)


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


def _target_reason(real: Path, real_root: Path, rel: str, hidden: bool, folder: bool = False) -> str | None:
    """Why the entry listed as `rel` is not a document judged by where it really is (`real`, inside the
    root): `notes.md -> .env` may hold secrets like `.env` itself."""
    target = real.relative_to(real_root).as_posix() + ("/" if folder else "")
    if target.rstrip("/") == rel.rstrip("/"):
        return None
    reason = skip_reason(target, hidden)
    return f"{reason} (a link to {target})" if reason else None


def walk(root: Path, hidden: bool) -> Iterator[Entry]:
    """Every entry under the folder root in name order, by the rules in the module doc: a file to read
    (with the reason to skip it, if any), or a skipped entry without a file (a skipped folder once, its
    path ending in `/`). Symbolic links are followed where they lead inside root, each real file once; the
    rules apply to each link's target as to its name, and a hard link to a skipped file is skipped too."""
    real_root = root.resolve()
    seen: dict[Path, str] = {}
    skipped_folders: list[Path] = []
    entries: list[Entry] = []

    def visit(folder: Path, prefix: str, folders: frozenset[Path]) -> Iterator[Entry]:
        try:
            listed = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield prefix or "./", None, f"cannot list: {exc.strerror or exc}"
            return
        for entry in listed:
            rel, path = prefix + entry.name, Path(entry.path)
            try:
                real = path.resolve(strict=True)
                is_dir = entry.is_dir()
            except (OSError, RuntimeError):
                yield rel, None, "broken symbolic link"
                continue
            if not real.is_relative_to(real_root):
                yield rel + ("/" if is_dir else ""), None, OUTSIDE
                continue
            if is_dir:
                if reason := skip_reason(rel + "/", hidden) or _target_reason(real, real_root, rel, hidden, True):
                    skipped_folders.append(real)
                    yield rel + "/", None, reason
                elif real in folders:
                    yield rel + "/", None, "symbolic link loop"
                else:
                    yield from visit(path, rel + "/", folders | {real})
            elif not entry.is_file():
                yield rel, None, "not a regular file"
            else:
                reason = skip_reason(rel, hidden) or _target_reason(real, real_root, rel, hidden)
                if real in seen:
                    yield rel, None, reason or f"same file as {seen[real]}"
                else:
                    seen[real] = rel
                    yield rel, real, reason

    entries = list(visit(root, "", frozenset({real_root})))
    # hard links: a readable file that is also a skipped one (the same inode) is skipped with it
    skipped_ids: dict[tuple[int, int], str] = {}
    readable: list[tuple[int, Path]] = []
    for i, (rel, path, reason) in enumerate(entries):
        if path is None:
            continue
        st = path.stat()
        if reason is not None:
            skipped_ids[(st.st_dev, st.st_ino)] = rel
        elif st.st_nlink > 1:
            readable.append((i, path))
    if readable:
        for folder in skipped_folders:
            for dirpath, _, files in os.walk(folder):
                for name in files:
                    try:
                        st = os.lstat(os.path.join(dirpath, name))
                    except OSError:
                        continue
                    rel = Path(dirpath, name).relative_to(real_root).as_posix()
                    skipped_ids.setdefault((st.st_dev, st.st_ino), rel)
        for i, path in readable:
            st = path.stat()
            if (other := skipped_ids.get((st.st_dev, st.st_ino))) is not None:
                rel = entries[i][0]
                entries[i] = (rel, path, f"{skip_reason(other, hidden) or 'skipped'} (a hard link to {other})")
    yield from entries


def _read(path: Path, file_id: tuple[str, int, int] | None = None) -> Callable[[], bytes]:
    """Reads the regular file at path (the real path found when listing), which must still be the listed
    one: no component of it a link now, the file itself opened without following one, and - read on the host
    that listed it - the same device and inode (another node's mount of a volume numbers them its own way).
    So a file swapped for a link after listing is never read."""
    def read() -> bytes:
        if os.path.realpath(path) != str(path):
            raise ExtractError("changed since it was listed (a symbolic link is on its path now)")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ExtractError("not a regular file")
            if file_id is not None and file_id[0] == socket.gethostname() and (st.st_dev, st.st_ino) != file_id[1:]:
                raise ExtractError("changed since it was listed (another file is there now)")
            if st.st_size > MAX_BYTES:
                raise ExtractError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
            return fh.read(MAX_BYTES + 1)[:MAX_BYTES]
    return read


def _file_id(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return socket.gethostname(), st.st_dev, st.st_ino


def iter_directory(root: Path, include: list[str], exclude: list[str], key: str, access: Access,
                   id_prefix: str, hidden: bool = False) -> Iterator[Listed]:
    """Documents under root, a folder (entries matched by the globs, relative to root) or one file named
    explicitly (which may be hidden, but never secret)."""
    if root.is_file():
        source_id = id_prefix.rstrip("/")
        real = root.resolve()
        reason = skip_reason(root.name, hidden=True) or skip_reason(real.name, hidden=True) or (
            None if real.parent == root.parent.resolve() else skip_reason(real.as_posix(), hidden=True))
        yield Skipped(source_id, key, reason) if reason else Unit(
            source_id, key, access, root.name, root.stem, path=str(real), file_id=_file_id(real))
        return
    for rel, path, reason in walk(root, hidden):
        source_id = f"{id_prefix}{rel}"
        name = PurePosixPath(rel)
        if path is None and reason is not None:
            if reason == OUTSIDE or rel.endswith("/") or matches(rel, include, exclude):
                yield Skipped(source_id, key, reason)
        elif path is not None and matches(rel, include, exclude):
            yield Skipped(source_id, key, reason) if reason else Unit(
                source_id, key, access, name.name, name.stem, path=str(path), file_id=_file_id(path))


def iter_configmap(name: str, keys: list[str], namespace: str, key: str, access: Access,
                   api: Any = None, hidden: bool = False) -> Iterator[Listed]:
    """Each key of a ConfigMap (data and binaryData) is a document; the format follows the key's suffix.

    The operator's ingestion Job mounts the ConfigMap (so its pod needs no API access): a file per key
    beside the kubelet's own `..data` entries (keys never start with `..`). Elsewhere it is read through
    the Kubernetes API. A key named in `keys` may be hidden; a secret-looking one is still skipped."""
    mounted = Path(CONFIGMAP_MOUNT_ROOT) / name
    entries: dict[str, bytes]
    if api is None and mounted.is_dir():
        # the kubelet's keys are links into its own `..data` folder; one leading anywhere else is not a key
        real_mount = mounted.resolve()
        entries = {f.name: f.read_bytes() for f in mounted.iterdir()
                   if not f.name.startswith("..") and f.is_file() and f.resolve().is_relative_to(real_mount)}
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


def iter_urls(urls: list[str], key: str, access: Access, hidden: bool = False,
              redirect_origins: Iterable[str] = (), private_networks: Iterable[str] = ()) -> Iterator[Listed]:
    """Each URL is a document (fetched when read); the format follows the Content-Type, else the path's
    suffix. URL paths follow the same rules as files (`https://host/.env` is never fetched); redirects and
    addresses follow the rules in the module doc."""
    import httpx

    for url in urls:
        source_id = f"url:{url}"
        path = httpx.URL(url).path
        if (reason := skip_reason(path, hidden)) is not None:
            yield Skipped(source_id, key, reason)
        else:
            yield Unit(source_id, key, access, PurePosixPath(path).name or "index.html", url, url=url,
                       redirect_origins=tuple(redirect_origins), private_networks=tuple(private_networks),
                       hidden=hidden)


class AddressRefused(Exception):
    """A URL source reached an address its rules refuse (raised on the connected socket)."""


def origin(url: Any) -> str:
    """`scheme://host[:port]` of an httpx.URL or a string, the port given only when not the scheme's default."""
    import httpx

    u = httpx.URL(str(url))
    port = u.port
    return f"{u.scheme}://{u.host}" + (f":{port}" if port is not None else "")


def address_refusal(ip: str, private_networks: Iterable[str]) -> str | None:
    """Why a URL source may not connect to `ip`, or None: every address that is not globally routable
    (loopback, link-local, private, shared, reserved, multicast, unspecified; IPv4 inside IPv6 judged as
    IPv4) unless it is in one of `private_networks`."""
    import ipaddress

    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip.split("%", 1)[0])
    forms = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
        forms.append(addr)
    networks = [ipaddress.ip_network(n, strict=False) for n in private_networks]
    if any(form in net for form in forms for net in networks if form.version == net.version):
        return None
    if addr.is_global and not addr.is_multicast:
        return None
    kind = ("a loopback" if addr.is_loopback else "a link-local" if addr.is_link_local else
            "a private" if addr.is_private else "a non-public")
    return (f"{addr} is {kind} address (name it in the source's privateNetworks to allow it)")


def _guard(private_networks: tuple[str, ...]) -> Callable[[str, dict[str, Any]], None]:
    """An httpcore `trace` extension that checks the peer of every connection the request makes, so no
    hostname, DNS answer or redirect reaches a refused address."""
    def trace(event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream: Any = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if stream is None or sock is None:
            return
        peer = sock.getpeername()[0]
        if (refusal := address_refusal(peer, private_networks)) is not None:
            stream.close()
            raise AddressRefused(refusal)
    return trace


def _resolve(host: str, port: int) -> list[str]:
    """The addresses a host name resolves to (empty when it does not resolve)."""
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (OSError, UnicodeError):
        return []


def _resolved_refusal(url: str, private_networks: tuple[str, ...]) -> str | None:
    """Why url's host may not be fetched, judged before connecting (so a refused address is never even
    contacted); the connected socket is checked again (`_guard`), whatever DNS answers then."""
    import httpx

    u = httpx.URL(url)
    for ip in _resolve(u.host, u.port or (443 if u.scheme == "https" else 80)):
        if (refusal := address_refusal(ip, private_networks)) is not None:
            return refusal
    return None


def fetch(url: str, client: Any, *, hidden: bool = False, redirect_origins: Iterable[str] = (),
          private_networks: Iterable[str] = ()) -> tuple[Any, str | None]:
    """GET url by the rules in the module doc: (the final response, None), or (None, why it was refused),
    following at most MAX_REDIRECTS redirects. Raises httpx.HTTPError when the server cannot be read."""
    allowed = {origin(url), *(origin(o) for o in redirect_origins)}
    trace = _guard(tuple(private_networks))
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        if (refusal := _resolved_refusal(current, tuple(private_networks))) is not None:
            return None, f"{current}: {refusal}"
        try:
            response = client.get(current, follow_redirects=False, extensions={"trace": trace})
        except AddressRefused as exc:
            return None, f"{current}: {exc}"
        if not response.is_redirect:
            return response, None
        target = response.next_request.url if response.next_request is not None else None
        response.close()
        if target is None:
            return None, f"{current}: a redirect without a usable Location"
        if origin(target) not in allowed:
            return None, (f"redirected to {target}, another origin than {origin(url)} (name it in the source's "
                          f"redirectOrigins to allow it)")
        if (reason := skip_reason(target.path, hidden)) is not None:
            return None, f"redirected to {target}: {reason}"
        current = str(target)
    return None, f"more than {MAX_REDIRECTS} redirects"


def _inline(source: Source, key: str) -> Iterator[Listed]:
    """Inline documents are Markdown, written into the manifest on purpose: no rules apply."""
    for d in source.documents or []:
        yield Unit(f"inline:{d.id}", key, source.access, d.id, d.id, inline=d.text, inline_title=d.title)


def http_client() -> Any:
    import httpx

    # redirects are followed by `fetch` (one hop at a time, each checked); no proxy from the environment (a
    # proxy would connect to addresses the rules refuse on our behalf)
    return httpx.Client(timeout=30.0, follow_redirects=False, trust_env=False,
                        headers={"User-Agent": "raylight-ingest"})


def load_unit(unit: Unit, http: Any = None) -> Item:
    """Read and parse one listed input: a Document, or why not (Skipped by the rules in the module doc,
    Failure when it cannot be read). `http`: a client for URL inputs (default: one for this call)."""
    if unit.inline is not None:
        got = parse_markdown(unit.inline.replace("\r\n", "\n").replace("\r", "\n"))
        return _doc(unit.source_id, unit.source_key, unit.access, got, unit.name, title=unit.inline_title)
    if unit.path is not None:
        return _item(unit.source_id, unit.source_key, unit.access, _read(Path(unit.path), unit.file_id),
                     unit.name, unit.title)
    if unit.data is not None:
        data = unit.data
        return _item(unit.source_id, unit.source_key, unit.access, lambda: data, unit.name, unit.title)
    assert unit.url is not None
    import httpx

    client = http or http_client()
    try:
        response, refusal = fetch(unit.url, client, hidden=unit.hidden, redirect_origins=unit.redirect_origins,
                                  private_networks=unit.private_networks)
        if refusal is not None:
            return Skipped(unit.source_id, unit.source_key, refusal)
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
                items = list(iter_urls(source.urls, key, source.access, source.hidden, source.redirect_origins,
                                       source.private_networks))
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
