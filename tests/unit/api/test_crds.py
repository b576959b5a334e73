"""The CRDs are generated from the pydantic types, structurally valid, and the chart's copy never drifts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from raylight.api import crds

ROOT = Path(__file__).resolve().parents[3]


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out += walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_chart_crds_match_the_generated_ones() -> None:
    for path, text in crds.chart_files(ROOT / "charts" / "raylight").items():
        assert path.exists(), f"{path} missing: run `raylight crds --chart charts/raylight`"
        assert path.read_text() == text, f"{path} drifted: run `raylight crds --chart charts/raylight`"


@pytest.mark.parametrize("crd", crds.all_crds(), ids=lambda c: c["metadata"]["name"])
def test_crd_schema_is_structural(crd: dict[str, Any]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties and additionalProperties together"


def test_crds_have_status_printer_columns_short_names_and_cel_rules() -> None:
    md, pipeline, finetune = crds.all_crds()
    assert finetune["spec"]["names"]["shortNames"] == ["ft"] and finetune["metadata"]["name"] == "finetunes.raylight.io"
    version = md["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Endpoint"] == ".status.endpoint"
    assert md["spec"]["names"]["shortNames"] == ["md", "mdep"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["x-kubernetes-validations"][0]["rule"] == "has(self.model) != has(self.preset)"
    assert spec["properties"]["engineArgs"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["properties"]["runtime"]["enum"] == ["vllm", "llama-cpp", "transformers", "sentence-transformers"]
    llm = pipeline["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["llm"]
    assert "has(self.modelDeployment) != has(self.external)" in llm["x-kubernetes-validations"][0]["rule"]


def test_examples_are_valid_against_the_generated_schema() -> None:
    schemas = {c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
               for c in crds.all_crds()}
    docs = [d for f in sorted((ROOT / "examples").rglob("*.yaml")) for d in yaml.safe_load_all(f.read_text())
            if d and d["kind"] in schemas]  # the Kubernetes objects kept beside them are kubectl's
    assert len(docs) >= 5
    for doc in docs:
        jsonschema.Draft4Validator(schemas[doc["kind"]]).validate(doc)  # OpenAPI v3.0 is draft-4 style
