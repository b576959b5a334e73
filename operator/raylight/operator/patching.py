"""Minimal merge patches between a desired child and the live one (pure).

Only fields the operator sets are compared, and a desired value counts as present when the live object
holds it (extra keys the API server or a controller added are left alone). So an unchanged spec causes
no write, a Serve-config-only change patches `spec.serveConfigV2` alone (KubeRay applies it in place,
while a `rayClusterConfig` change starts a new Ray cluster), and a hand edit is put back."""

from __future__ import annotations

from typing import Any

_MISSING = object()


def contains(live: Any, desired: Any) -> bool:
    """True when every value in `desired` is in `live` (dicts: subset; lists: same length, elementwise)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            contains(a, b) for a, b in zip(live, desired, strict=True))
    return bool(live == desired)


def merge_patch(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The smallest JSON merge patch that makes `live` contain `desired` (lists are replaced whole)."""
    patch: dict[str, Any] = {}
    for key, want in desired.items():
        have = live.get(key, _MISSING)
        if contains(have, want):
            continue
        if isinstance(want, dict) and isinstance(have, dict):
            patch[key] = merge_patch(want, have)
        else:
            patch[key] = want
    return patch


MANAGED_METADATA = ("labels", "annotations", "ownerReferences")


def child_patch(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """Patch for a child object: its labels, annotations, owner references and spec/data."""
    want: dict[str, Any] = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata")}
    meta = {k: v for k, v in desired.get("metadata", {}).items() if k in MANAGED_METADATA}
    if meta:
        want["metadata"] = meta
    return merge_patch(want, live)
