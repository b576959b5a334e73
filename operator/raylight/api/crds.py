"""CustomResourceDefinitions generated from the pydantic API types (never edited by hand).

`raylight crds` prints them; `raylight crds --chart charts/raylight` writes the chart's templated copies,
and a test fails when those drift from what this module generates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from raylight import yamlio
from raylight.api.types import GROUP, VERSION, FineTune, ModelDeployment, Pipeline

# JSON-schema keys that a Kubernetes structural schema accepts (others are dropped).
_KEEP = {
    "type", "properties", "items", "required", "enum", "description", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "format",
    "additionalProperties", "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields",
}
_READY = '.status.conditions[?(@.type=="Ready")].status'

_CRDS: dict[str, dict[str, Any]] = {
    "ModelDeployment": {
        "model": ModelDeployment,
        "plural": "modeldeployments",
        "singular": "modeldeployment",
        "shortNames": ["md", "mdep"],
        "columns": [
            {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
            {"name": "Runtime", "type": "string", "jsonPath": ".status.runtime"},
            {"name": "GPUs", "type": "integer", "jsonPath": ".spec.resources.gpus"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    "Pipeline": {
        "model": Pipeline,
        "plural": "pipelines",
        "singular": "pipeline",
        "shortNames": ["rlp", "rlpipe"],
        "columns": [
            {"name": "Graph", "type": "string", "jsonPath": ".spec.agent.graph"},
            {"name": "Points", "type": "integer", "jsonPath": ".status.points"},
            {"name": "Ingest", "type": "string", "jsonPath": ".status.ingestion.phase"},
            {"name": "Docs", "type": "integer", "jsonPath": ".status.ingestion.documentsDone"},
            {"name": "Failed", "type": "integer", "jsonPath": ".status.ingestion.documentsFailed",
             "priority": 1},
            {"name": "Chunks/s", "type": "number", "jsonPath": ".status.ingestion.chunksPerSecond", "priority": 1},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    "FineTune": {
        "model": FineTune,
        "plural": "finetunes",
        "singular": "finetune",
        "shortNames": ["ft"],
        "columns": [
            {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Step", "type": "integer", "jsonPath": ".status.step"},
            {"name": "Total", "type": "integer", "jsonPath": ".status.totalSteps"},
            {"name": "Loss", "type": "number", "jsonPath": ".status.trainLoss"},
            {"name": "Adapter", "type": "string", "jsonPath": ".status.adapterUri", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Turn pydantic's JSON schema into a Kubernetes structural schema: inline $refs, collapse
    Optional[X] to X, map Literal to enum, open dicts of Any to preserve-unknown-fields."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _structural(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        if "description" in node:
            target = {**target, "description": node["description"]}
        return target
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [b for b in node[key] if b.get("type") != "null"]
            if len(branches) == 1:  # Optional[X]: X, with what the field adds (description, enum)
                siblings = {k: v for k, v in node.items() if k != key}
                return _structural({**branches[0], **siblings}, defs)
            # A union of several non-null types: let the API server keep it, pydantic validates it.
            return {"x-kubernetes-preserve-unknown-fields": True, **(
                {"description": node["description"]} if "description" in node else {})}
    out: dict[str, Any] = {}
    if "const" in node:
        out["enum"] = [node["const"]]
        out["type"] = node.get("type", "string")
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema's numeric form; Kubernetes wants the bound plus a boolean flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "additionalProperties":
            if value is False:
                continue  # unknown fields are pruned by the API server and rejected by the webhook
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and "enum" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    root = _structural(schema, schema.get("$defs", {}))
    props = root["properties"]
    # apiVersion, kind and metadata are the API server's; the spec and status are ours.
    return {
        "type": "object",
        "description": root.get("description", ""),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": props["spec"],
            "status": {**props["status"], "x-kubernetes-preserve-unknown-fields": True},
        },
    }


def crd(kind: str) -> dict[str, Any]:
    info = _CRDS[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info['plural']}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": info["plural"],
                "singular": info["singular"],
                "shortNames": info["shortNames"],
                "categories": ["raylight"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": info["columns"],
                "schema": {"openAPIV3Schema": openapi_schema(info["model"])},
            }],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(kind) for kind in _CRDS]


def chart_template(kind: str) -> str:
    """The chart's copy: the same CRD, switched by crds.enabled and kept on uninstall by crds.keep."""
    obj = crd(kind)
    spec = yamlio.dump({"spec": obj["spec"]})
    return (
        "{{- if .Values.crds.enabled }}\n"
        "# Generated by `raylight crds --chart` from operator/raylight/api/types.py: do not edit.\n"
        "apiVersion: apiextensions.k8s.io/v1\n"
        "kind: CustomResourceDefinition\n"
        "metadata:\n"
        f"  name: {obj['metadata']['name']}\n"
        "  labels:\n"
        "    {{- include \"raylight.labels\" . | nindent 4 }}\n"
        "  {{- if .Values.crds.keep }}\n"
        "  annotations:\n"
        "    helm.sh/resource-policy: keep\n"
        "  {{- end }}\n"
        f"{spec}"
        "{{- end }}\n"
    )


def chart_files(chart: Path) -> dict[Path, str]:
    return {chart / "templates" / "crds" / f"{_CRDS[k]['plural']}.yaml": chart_template(k) for k in _CRDS}


def write_chart(chart: Path) -> list[Path]:
    files = chart_files(chart)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
