"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
KUBERAY_SCHEMAS = SHARED / "schemas" / "kuberay"

# Query-serving code and torch compete for 2 cores; BLAS threads make it slower, not faster.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# The per-user record of running platforms (raylight.local.registry): the tests' own, never the user's.
os.environ.setdefault("RAYLIGHT_STATE_HOME", tempfile.mkdtemp(prefix="raylight-state-"))


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys the API server would silently prune: declared neither in properties nor additionalProperties."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None or extra is False:
                found.append(f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


@pytest.fixture(scope="session")
def rayservice_schema() -> dict[str, Any]:
    return _kuberay_schema("ray.io_rayservices.yaml")


@pytest.fixture(scope="session")
def validate_rayservice(rayservice_schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Assert a RayService is what the API server would accept and keep: schema-valid, nothing pruned."""
    import jsonschema

    validator = jsonschema.Draft7Validator(rayservice_schema)

    def check(obj: dict[str, Any]) -> None:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, "RayService invalid against the KubeRay CRD:\n" + "\n".join(errors)
        pruned = unknown_fields({k: v for k, v in obj.items() if k != "metadata"}, rayservice_schema)
        assert not pruned, f"fields the API server would prune: {pruned}"
        assert len(obj["metadata"]["name"]) <= 47, "KubeRay needs RayService names of at most 47 characters"

    return check


@pytest.fixture(scope="session")
def validate_rayservice_status(rayservice_schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Assert a RayService status has a shape KubeRay writes: schema-valid, nothing the API server would prune."""
    import jsonschema

    schema = rayservice_schema["properties"]["status"]
    validator = jsonschema.Draft7Validator(schema)

    def check(status: dict[str, Any]) -> None:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(status)]
        assert not errors, "RayService status invalid against the KubeRay CRD:\n" + "\n".join(errors)
        assert not unknown_fields(status, schema), "fields the API server would prune"

    return check


def _kuberay_schema(file: str) -> dict[str, Any]:
    crd_file = KUBERAY_SCHEMAS / file
    if not crd_file.exists():
        pytest.skip(f"KubeRay CRD schemas not found at {KUBERAY_SCHEMAS} (../shared is absent in a plain clone)")
    crd = yaml.load(crd_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _validator(schema: dict[str, Any], kind: str, max_name: int | None) -> Callable[[dict[str, Any]], None]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)

    def check(obj: dict[str, Any]) -> None:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"{kind} invalid against the KubeRay CRD:\n" + "\n".join(errors)
        pruned = unknown_fields({k: v for k, v in obj.items() if k != "metadata"}, schema)
        assert not pruned, f"fields the API server would prune: {pruned}"
        if max_name is not None:
            assert len(obj["metadata"]["name"]) <= max_name, f"KubeRay needs {kind} names of at most {max_name}"

    return check


@pytest.fixture(scope="session")
def rayjob_schema() -> dict[str, Any]:
    return _kuberay_schema("ray.io_rayjobs.yaml")


@pytest.fixture(scope="session")
def validate_rayjob(rayjob_schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Assert a RayJob is what the API server would accept and keep: schema-valid, nothing pruned."""
    return _validator(rayjob_schema, "RayJob", 47)


@pytest.fixture(scope="session")
def validate_rayjob_status(rayjob_schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Assert a RayJob status has a shape KubeRay writes: schema-valid, nothing the API server would prune."""
    return _validator(rayjob_schema["properties"]["status"], "RayJob status", None)


@pytest.fixture(scope="session")
def validate_raycronjob() -> Callable[[dict[str, Any]], None]:
    """Assert a RayCronJob is what the API server would accept and keep: schema-valid, nothing pruned."""
    return _validator(_kuberay_schema("ray.io_raycronjobs.yaml"), "RayCronJob", 36)
