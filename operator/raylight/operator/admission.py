"""Admission checks (pure): the validators `raylight validate` uses, answered as one message per object
so `kubectl apply` of a bad manifest fails with `spec.FIELD: message`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raylight.api.manifests import parse_document
from raylight.api.types import FineTune, ModelDeployment
from raylight.api.validate import check_adapters, check_finetune, check_model
from raylight.governance.licenses import LicensePolicy

# Kopf routes an admission request by the URL path's last segment (the handler id): the chart's
# ValidatingWebhookConfiguration points each resource at its own path.
WEBHOOK_IDS = {"modeldeployments": "validate-modeldeployments", "pipelines": "validate-pipelines",
               "finetunes": "validate-finetunes"}

# What the API server adds and a manifest never carries.
_SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                    "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers", "ownerReferences",
                    "selfLink", "generateName")


def _without_metadata(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (obj or {}).items() if k not in ("metadata", "status")}


def exempt(operation: str | None, obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Admitted without checks: an UPDATE of an object being deleted (finalizer removal must never be
    blocked, or it stays Terminating forever), and an UPDATE that leaves everything but metadata as it was
    (finalizers, labels, Kopf's own annotations: refusing those protects nothing, as the object already
    exists, but blocks the operator and deletion whenever the policy has changed since it was admitted)."""
    if operation == "DELETE":
        return True
    if operation != "UPDATE":
        return False
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return old is not None and _without_metadata(old) == _without_metadata(obj)


def problems(obj: Mapping[str, Any], policy: LicensePolicy) -> list[str]:
    """`FIELD: message` for each problem of one object under admission; empty when it is acceptable.

    Cross-object references (a Pipeline's models) are not checked here: objects may be applied in any
    order, so a missing reference shows in the Pipeline's status instead."""
    doc = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(doc.get("metadata") or {})
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    doc["metadata"] = meta
    resource, found = parse_document(doc, "admission")
    out = [f"{p.field}: {p.message}" if p.field else p.message for p in found]
    if isinstance(resource, ModelDeployment):
        out += [f"{f}: {m}" for f, m in check_model(resource, policy)]
        out += [f"spec.adapters[{i}].name: '{a.name}' is this ModelDeployment's own name; a request's model "
                "would select both" for i, a in enumerate(resource.spec.adapters) if a.name == resource.metadata.name]
        # adapters: file:// sources cannot be read on a cluster; a source's recorded base is checked at load
        out += [f"{f}: {m}" for f, m in check_adapters(resource, {}, {}, cluster=True) if f.endswith(".source")]
    if isinstance(resource, FineTune):  # its base's ModelDeployment may come later: checked in its status then
        out += [f"{f}: {m}" for f, m in check_finetune(resource, {}, policy, check_refs=False, cluster=True)]
    return out


def message(found: list[str]) -> str:
    return "; ".join(found)
