"""The chart lints strictly, renders with every combination of options, and every object it renders is
one the API server accepts: built-in kinds against the Kubernetes OpenAPI schemas (kubernetes-validate,
offline), cert-manager / prometheus-operator / Kopf kinds against the shapes of their CRDs, and the
ModelDeployment/Pipeline CRDs equal to the ones generated from the pydantic types."""

from __future__ import annotations

import functools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helmtool import CHART, COMBOS, NAMESPACE, ROOT, Render, combo, helm_run
from raylight import __version__
from raylight.api import crds

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# Kinds that are not built in: checked against the parts of their CRDs that the chart uses.
_NAME = {"type": "string", "minLength": 1}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"}
CUSTOM_SPEC_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("cert-manager.io/v1", "Issuer"): {
        "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
        "properties": {"selfSigned": {"type": "object"}, "ca": {
            "type": "object", "additionalProperties": False, "required": ["secretName"],
            "properties": {"secretName": _NAME}}},
    },
    ("cert-manager.io/v1", "Certificate"): {
        "type": "object", "additionalProperties": False, "required": ["secretName", "issuerRef"],
        "anyOf": [{"required": ["dnsNames"]}, {"required": ["isCA"], "properties": {"isCA": {"const": True}}}],
        "properties": {
            "secretName": _NAME, "commonName": {"type": "string", "maxLength": 64}, "isCA": {"type": "boolean"},
            "duration": _DURATION, "renewBefore": _DURATION,
            "dnsNames": {"type": "array", "minItems": 1, "items": _NAME},
            "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                "rotationPolicy": {"enum": ["Never", "Always"]}}},
            "usages": {"type": "array", "items": {"enum": [
                "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
            "issuerRef": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                "name": _NAME, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": {"const": "cert-manager.io"}}},
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
        "properties": {
            "selector": {"type": "object", "required": ["matchLabels"], "properties": {
                "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                "matchNames": {"type": "array", "items": _NAME}, "any": {"type": "boolean"}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["port"], "properties": {
                    "port": _NAME, "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
                    "interval": _DURATION, "scrapeTimeout": _DURATION}}},
        },
    },
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "type": "object", "additionalProperties": False, "required": ["selector", "podMetricsEndpoints"],
        "properties": {
            "selector": {"type": "object", "required": ["matchLabels"], "properties": {
                "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                "matchNames": {"type": "array", "items": _NAME}, "any": {"type": "boolean"}}},
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["port"], "properties": {
                    "port": _NAME, "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
                    "interval": _DURATION, "scrapeTimeout": _DURATION}}},
        },
    },
    # Kopf's peering objects carry no spec (Kopf writes their status).
    ("kopf.dev/v1", "ClusterKopfPeering"): {"not": {}},
    ("kopf.dev/v1", "KopfPeering"): {"not": {}},
}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ValidatingWebhookConfiguration",
                  "ClusterKopfPeering"}
K8S_VERSIONS = ("1.25", kubernetes_validate.latest_version())  # the chart's kubeVersion floor, and the newest


@pytest.fixture(params=sorted(COMBOS))
def rendered(request: pytest.FixtureRequest, render: Render) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(combo(request.param))


def test_chart_version_and_app_version_follow_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["version"] == chart["appVersion"] == __version__ == project["version"]


@pytest.mark.parametrize("name", ["defaults", "namespaced", "everything", "webhook-off"])
def test_helm_lint_strict_passes(helm: str, name: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(combo(name)))
    out = helm_run(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--values", str(values),
                   check=False)
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out


def test_every_object_validates_offline(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendered
    crd_kinds = {o["spec"]["names"]["kind"] for o in objects if o["kind"] == "CustomResourceDefinition"}
    problems: list[str] = []
    for obj in objects:
        ident = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        meta = obj["metadata"]
        if not DNS1123.match(meta["name"]) or len(meta["name"]) > 253:
            problems.append(f"{ident}: name is not a DNS-1123 subdomain")
        if (obj["kind"] in CLUSTER_SCOPED) == ("namespace" in meta):
            problems.append(f"{ident}: namespace {'set on a cluster' if 'namespace' in meta else 'missing on a'}"
                            "-scoped object")
        if "app.kubernetes.io/managed-by" not in meta.get("labels", {}):
            problems.append(f"{ident}: no chart labels")
        key = (obj["apiVersion"], obj["kind"])
        if key in CUSTOM_SPEC_SCHEMAS:
            if obj["kind"].endswith("KopfPeering") and name != "crds-disabled":
                assert obj["kind"] in crd_kinds, f"{ident} rendered without its CRD"
            for error in jsonschema.Draft7Validator(CUSTOM_SPEC_SCHEMAS[key]).iter_errors(obj.get("spec")):
                if obj.get("spec") is None and obj["kind"].endswith("KopfPeering"):
                    continue
                problems.append(f"{ident}: spec.{'.'.join(map(str, error.absolute_path))}: {error.message}")
            continue
        problems += [f"{ident}{problem}" for problem in builtin_problems(json.dumps(obj, sort_keys=True))]
    assert not problems, f"[{name}]\n" + "\n".join(problems)


@functools.cache
def builtin_problems(obj_json: str) -> tuple[str, ...]:
    """kubernetes-validate's findings for one built-in object (cached: most objects recur across combos)."""
    obj = json.loads(obj_json)
    found: list[str] = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            found.append(": not a built-in kind and no schema in CUSTOM_SPEC_SCHEMAS")
        except kubernetes_validate.ValidationError as e:
            found.append(f" (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
    return tuple(found)


def test_object_names_are_unique(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))


def test_rendered_crds_are_the_generated_ones(render: Render) -> None:
    rendered = {o["metadata"]["name"]: o for o in render() if o["kind"] == "CustomResourceDefinition"
                and o["spec"]["group"] == "raylight.io"}
    generated = {c["metadata"]["name"]: c for c in crds.all_crds()}
    assert rendered.keys() == generated.keys()
    for name, crd in generated.items():
        assert rendered[name]["spec"] == crd["spec"], f"{name}: the chart's CRD differs from `raylight crds`"


def test_chart_crd_files_match_the_generator() -> None:
    for path, text in crds.chart_files(CHART).items():
        assert path.exists(), f"{path} missing: run `raylight crds --chart charts/raylight`"
        assert path.read_text() == text, f"{path} drifted: run `raylight crds --chart charts/raylight`"


def test_examples_validate_against_the_rendered_crd_schemas(render: Render) -> None:
    schemas = {
        o["spec"]["names"]["kind"]: o["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for o in render() if o["kind"] == "CustomResourceDefinition" and o["spec"]["group"] == "raylight.io"
    }
    checked = 0
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in schemas:
                # CRD schemas are OpenAPI v3.0: draft-4 semantics (a boolean exclusiveMinimum).
                errors = list(jsonschema.Draft4Validator(schemas[doc["kind"]]).iter_errors(doc))
                assert not errors, f"{path.name} {doc['metadata']['name']}: {errors[0].message}"
                checked += 1
    assert checked >= 4


def test_values_schema_rejects_unknown_and_mistyped_values(helm: str, tmp_path: Path) -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    # Every documented value is in the schema; `global` is what Helm passes down from a parent chart.
    assert set(schema["properties"]) == {"global", *yaml.safe_load((CHART / "values.yaml").read_text())}
    for bad, message in [
        ({"watchNamspaces": ["ai"]}, "Additional property watchNamspaces is not allowed"),
        ({"replicaCount": 2}, "replicaCount"),
        ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"qdrant": {"url": "qdrant:6333"}}, "qdrant.url"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
    ]:
        values = tmp_path / "bad.yaml"
        values.write_text(yaml.safe_dump(bad))
        out = helm_run(helm, "template", "rl", str(CHART), "--values", str(values), check=False)
        assert message in out and "kind: Deployment" not in out, (bad, out)


def test_model_network_policy_without_namespaces_fails_with_a_clear_message(helm: str, tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"networkPolicy": {"models": {"enabled": True}}}))
    out = helm_run(helm, "template", "rl", str(CHART), "--values", str(values), check=False)
    assert "networkPolicy.models.enabled needs networkPolicy.models.namespaces or watchNamespaces" in out


def test_notes_tell_how_to_apply_a_first_model_and_call_it(helm: str, tmp_path: Path) -> None:
    # `helm template` skips NOTES.txt and `helm install --dry-run` needs a cluster: render it through tpl
    # in a copy of the chart.
    import shutil

    chart = tmp_path / "raylight"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "NOTES.txt") . | quote }}\n')
    shutil.move(chart / "templates" / "NOTES.txt", chart / "NOTES.txt")
    out = helm_run(helm, "template", "rl", str(chart), "--namespace", NAMESPACE, "--show-only",
                   "templates/notes-probe.yaml")
    notes = yaml.safe_load(out)["data"]["notes"]
    for expected in ["kubectl -n raylight-system rollout status deploy/rl-raylight",
                     "kubectl -n ai apply -f examples/gpu-cluster/models.yaml",
                     "port-forward svc/qwen-7b-serve-svc 8000:8000",
                     "curl -s http://127.0.0.1:8000/v1/chat/completions",
                     '"model": "legal-assistant"', "legal-assistant-agent-serve-svc"]:
        assert expected in notes, expected
    for path in ("examples/gpu-cluster/models.yaml", "examples/gpu-cluster/pipeline.yaml"):
        assert (ROOT / path).exists(), f"NOTES.txt points at {path}, which does not exist"


def test_notes_and_install_guide_use_the_service_names_the_operator_creates() -> None:
    """KubeRay names a RayService's Serve Service `<rayservice>-serve-svc`; the operator names the RayServices."""
    from raylight.api.manifests import parse_document
    from raylight.api.names import agent_rayservice_name, serve_service_name
    from raylight.api.types import ModelDeployment, Pipeline

    notes = (CHART / "templates" / "NOTES.txt").read_text()
    guide = (ROOT / "docs" / "install-on-a-cluster.md").read_text()
    for path in sorted((ROOT / "examples" / "gpu-cluster").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            resource, problems = parse_document(doc, str(path))
            assert resource is not None and not problems, problems
            if isinstance(resource, Pipeline):
                service = serve_service_name(agent_rayservice_name(resource.metadata.name))
                assert f"svc/{service}" in notes and f"svc/{service}" in guide
                assert f"http://{service}.ai.svc:8000/v1" in guide
                assert f'"model": "{resource.metadata.name}"' in notes
            elif isinstance(resource, ModelDeployment) and resource.spec.task == "chat":
                assert f"svc/{resource.metadata.name}-serve-svc" in notes
                assert f"http://{resource.metadata.name}-serve-svc.ai.svc:8000/v1" in guide
