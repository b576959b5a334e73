"""The Kubernetes API's own limits that a manifest meets on its way through the operator and Kopf, checked
where a manifest is validated (so `raylight validate`, the admission webhook and the operator refuse it with
the field named) and again on every object the operator writes (so nothing is sent that the API server or
etcd would refuse).

Where each limit comes from:
  - all annotations of an object together: 256 KiB (keys and values; apimachinery's
    `TotalAnnotationSizeLimitB`). Kopf keeps a copy of each handled object's spec, labels and annotations in
    the annotation `kopf.zalando.org/last-handled-configuration`, and a client-side `kubectl apply` keeps the
    whole manifest in `kubectl.kubernetes.io/last-applied-configuration`: a spec over what is left makes
    Kopf's own patch fail on every pass;
  - a ConfigMap's or Secret's data: 1 MiB (`MaxSecretSize`, and the same for ConfigMaps);
  - a whole object: etcd's request limit, 1.5 MiB by default (`--max-request-bytes`); a RayService carries
    its Serve config (`serveConfigV2`, the spec again) and KubeRay copies it into its status;
  - a label value: at most 63 characters, alphanumerics with `-`, `_`, `.` inside; a volume name: a DNS label
    (at most 63 characters).
A manifest's spec is bounded by `MAX_SPEC_BYTES` (its JSON), which keeps every object derived from it inside
the limits above; large document collections belong in a ConfigMap, PVC or path source, not inline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

KIB: Final = 1024
MAX_ANNOTATIONS_BYTES: Final = 256 * KIB  # all annotations of one object, keys and values
MAX_CONFIGMAP_BYTES: Final = 1024 * KIB  # a ConfigMap's data and binaryData together (and a Secret's)
MAX_OBJECT_BYTES: Final = 1536 * KIB  # etcd's default request limit: one object, as JSON
MAX_SPEC_BYTES: Final = 192 * KIB  # a ModelDeployment's, Pipeline's or FineTune's spec, as JSON
MAX_LABEL_VALUE: Final = 63
KOPF_ANNOTATION: Final = "kopf.zalando.org/last-handled-configuration"
KUBECTL_ANNOTATION: Final = "kubectl.kubernetes.io/last-applied-configuration"
KOPF_OVERHEAD_BYTES: Final = 4 * KIB  # Kopf's progress annotations and the copy's own keys while a handler runs
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")


def json_bytes(value: Any) -> int:
    """Bytes of value as compact JSON (what the API server stores and Kopf copies)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def annotations_bytes(annotations: Mapping[str, Any] | None) -> int:
    return sum(len(str(k).encode()) + len(str(v).encode()) for k, v in (annotations or {}).items())


def spec_problem(spec: Any, annotations: Mapping[str, Any] | None = None,
                 labels: Mapping[str, Any] | None = None) -> str | None:
    """Why a resource's spec (as given) cannot pass through the API server and Kopf, or None.

    Measured: the spec's JSON against MAX_SPEC_BYTES, and the annotations once Kopf has added its copy
    (spec, labels and the annotations other than kubectl's, plus KOPF_OVERHEAD_BYTES) against
    MAX_ANNOTATIONS_BYTES."""
    size = json_bytes(spec)
    if size > MAX_SPEC_BYTES:
        return (f"{size} bytes as JSON; at most {MAX_SPEC_BYTES} ({MAX_SPEC_BYTES // KIB} KiB): the operator's "
                f"Kopf keeps a copy in the annotation {KOPF_ANNOTATION} and Kubernetes allows "
                f"{MAX_ANNOTATIONS_BYTES // KIB} KiB of annotations per object. Move large inline documents to "
                "a configMap, pvc or path source")
    own = annotations_bytes(annotations)
    copied = {k: v for k, v in (annotations or {}).items() if k != KUBECTL_ANNOTATION and not k.startswith("kopf.")}
    kopf_copy = len(KOPF_ANNOTATION) + size + json_bytes(dict(labels or {})) + json_bytes(copied)
    total = own + kopf_copy + KOPF_OVERHEAD_BYTES
    if total > MAX_ANNOTATIONS_BYTES:
        return (f"with metadata.annotations ({own} bytes, kubectl's {KUBECTL_ANNOTATION} included) and the copy "
                f"the operator's Kopf keeps in {KOPF_ANNOTATION} ({kopf_copy} bytes), the object's annotations "
                f"would be {total} bytes; Kubernetes allows {MAX_ANNOTATIONS_BYTES} ({MAX_ANNOTATIONS_BYTES // KIB} "
                "KiB). Apply with `kubectl apply --server-side` (no last-applied annotation) or make the spec "
                "smaller")
    return None


def object_problems(obj: Mapping[str, Any]) -> list[str]:
    """Why the API server (or etcd) would refuse this object as written, each naming the field; empty when
    it fits. Checked on every object the operator writes."""
    kind = obj.get("kind", "object")
    meta = obj.get("metadata") or {}
    where = f"{kind} {meta.get('name', '?')}"
    out = []
    if (size := json_bytes(obj)) > MAX_OBJECT_BYTES:
        out.append(f"{where}: {size} bytes as JSON; etcd accepts at most {MAX_OBJECT_BYTES}")
    if (size := annotations_bytes(meta.get("annotations"))) > MAX_ANNOTATIONS_BYTES:
        out.append(f"{where}: metadata.annotations: {size} bytes; at most {MAX_ANNOTATIONS_BYTES}")
    for key, value in (meta.get("labels") or {}).items():
        if len(str(value)) > MAX_LABEL_VALUE or not _LABEL_VALUE.fullmatch(str(value)):
            out.append(f"{where}: metadata.labels[{key}]: {value!r} is not a label value (at most "
                       f"{MAX_LABEL_VALUE} characters: letters, digits, '-', '_', '.', starting and ending "
                       "alphanumeric)")
    if kind in ("ConfigMap", "Secret"):
        size = sum(len(str(v).encode()) for part in ("data", "binaryData", "stringData")
                   for v in (obj.get(part) or {}).values())
        if size > MAX_CONFIGMAP_BYTES:
            out.append(f"{where}: data: {size} bytes; a {kind} holds at most {MAX_CONFIGMAP_BYTES}")
    for path, volume in _volumes(obj):
        name = str(volume.get("name", ""))
        if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            out.append(f"{where}: {path}.name: {name!r} is not a DNS label (volume names: at most 63 "
                       "lowercase letters, digits and '-')")
    return out


def _volumes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(path, volume) for every pod volume anywhere in a (nested) object."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "volumes" and isinstance(value, list):
                found += [(f"{path}.volumes[{i}]", v) for i, v in enumerate(value) if isinstance(v, dict)]
            else:
                found += _volumes(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _volumes(value, f"{path}[{i}]")
    return found


class LimitExceeded(ValueError):
    """An object the operator was about to write exceeds a Kubernetes limit (the message names it)."""
