"""Reading manifests: multi-document YAML files or directories -> typed resources and field-level problems."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raylight.api.types import API_VERSION, GROUP, KINDS, Resource

MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one manifest, printed as `FILE: KIND/NAME: FIELD: message`."""

    file: str
    kind: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}: {self.kind}/{self.name}: {where}{self.message}"


@dataclass
class Manifest:
    """A parsed resource and the file it came from (source paths are relative to that file)."""

    resource: Resource
    file: Path


@dataclass
class LoadResult:
    manifests: list[Manifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # "Kind/name" of other APIs' objects found beside ours

    @property
    def ok(self) -> bool:
        return not self.problems


def manifest_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
    return [path]


def field_path(loc: Iterable[int | str]) -> str:
    """('spec', 'sources', 0, 'path') -> 'spec.sources[0].path'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("function-") and "[" not in part:  # skip pydantic's internal loc parts
            out += f".{part}" if out else part
    return out


_DNS_LABEL_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _message(error: Any) -> str:
    msg = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    last = error["loc"][-1] if error["loc"] else None
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "literal_error":
        return msg.replace("Input should be", "must be one of")
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == _DNS_LABEL_PATTERN:
        return ("must be a DNS label: lower-case letters, digits and '-', starting with a letter and ending with a "
                f"letter or digit (got {error['input']!r})")
    if error["type"] == "float_parsing" and last in ("cpus", "cpusPerWorker"):
        return f"must be a number of CPUs, e.g. 0.25 for Kubernetes' 250m (got {error['input']!r})"
    return msg


def _field(error: Any) -> str:
    """The field a problem names; a validator on an object that names one of its fields (`name: ...`) names it."""
    path = field_path(error["loc"])
    msg = _message(error)
    head, sep, _ = msg.partition(": ")
    if sep and head.isidentifier() and head.islower() and path == "metadata":
        return f"{path}.{head}"
    return path


def _text(error: Any) -> str:
    msg = _message(error)
    head, sep, rest = msg.partition(": ")
    return rest if sep and head.isidentifier() and head.islower() and field_path(error["loc"]) == "metadata" else msg


def parse_document(doc: Any, file: str) -> tuple[Resource | None, list[Problem]]:
    """Validate one YAML document; returns the resource or the problems, never raises."""
    if not isinstance(doc, dict):
        return None, [Problem(file, "?", "?", "", "a manifest must be a mapping with apiVersion, kind, metadata, spec")]
    kind = str(doc.get("kind", "?"))
    meta = doc.get("metadata")
    name = str(meta.get("name", "?")) if isinstance(meta, dict) else "?"
    if doc.get("apiVersion") != API_VERSION:
        return None, [Problem(file, kind, name, "apiVersion", f"must be {API_VERSION}")]
    if kind not in KINDS:
        return None, [Problem(file, kind, name, "kind", f"must be one of {', '.join(KINDS)}")]
    try:
        return KINDS[kind].model_validate(doc), []
    except ValidationError as exc:
        return None, [Problem(file, kind, name, _field(e), _text(e)) for e in exc.errors()]


def iter_documents(path: Path) -> Iterator[tuple[Any, str]]:
    """(document, file) for each non-empty YAML document; a YAML error yields (exception, file)."""
    for file in manifest_files(path):
        try:
            docs = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            yield exc, str(file)
            continue
        for doc in docs:
            if doc is not None:
                yield doc, str(file)


def foreign(doc: Any) -> bool:
    """Another API's object (a ConfigMap, a PVC kept beside the manifests, as `kubectl apply -f DIR` takes them):
    an apiVersion outside raylight.io and none of our kinds. A Raylight kind under a wrong apiVersion is not."""
    api_version = doc.get("apiVersion") if isinstance(doc, dict) else None
    return (isinstance(api_version, str) and bool(api_version) and api_version.split("/")[0] != GROUP
            and doc.get("kind") not in KINDS)


def load(paths: Iterable[Path]) -> LoadResult:
    """Every Raylight manifest under `paths`, every problem, and the other APIs' objects (left to kubectl)."""
    result = LoadResult()
    for path in paths:
        if not path.exists():
            result.problems.append(Problem(str(path), "?", "?", "", "no such file or directory"))
            continue
        for doc, file in iter_documents(path):
            if isinstance(doc, Exception):
                detail = str(doc).splitlines()[0] if str(doc) else type(doc).__name__
                result.problems.append(Problem(file, "?", "?", "", f"cannot read YAML: {detail}"))
                continue
            if foreign(doc):
                meta = doc.get("metadata")
                result.others.append(f"{doc.get('kind')}/{meta.get('name') if isinstance(meta, dict) else '?'}")
                continue
            resource, problems = parse_document(doc, file)
            result.problems.extend(problems)
            if resource is not None:
                result.manifests.append(Manifest(resource, Path(file)))
    return result
