"""What a platform team checks before accepting the chart: RBAC that is least privilege and equal to what
the operator's code declares it needs, a restricted pod, a webhook wired to the operator's Service with
a certificate the API server will trust, CRDs kept on uninstall when asked, the flags and environment the
chart passes being ones the operator actually reads, and the optional NetworkPolicy / ServiceMonitor /
external stores rendered as documented."""

from __future__ import annotations

import base64
import inspect
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmtool import CHART, COMBOS, NAMESPACE, RELEASE, Render, combo
from raylight import __version__
from raylight.cli import build_parser
from raylight.operator import admission
from raylight.operator import config as operator_config
from raylight.operator.config import OperatorConfig
from raylight.operator.rbac import required_rules, uninstall_rules
from raylight.operator.uninstall import build_parser as uninstall_parser
from raylight.settings import Settings

FULLNAME = f"{RELEASE}-raylight"
RBAC_KINDS = {"ClusterRole", "Role"}
# Resources the operator reaches at cluster scope; every other one it uses is namespaced.
CLUSTER_SCOPED_RESOURCES = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings", "gatewayclasses"}

Objects = list[dict[str, Any]]


def of_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o["kind"] == kind]


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def release(objects: Objects) -> Objects:
    """What the release runs (the operator and its RBAC), without Helm hooks."""
    return [o for o in objects if not is_hook(o)]


def one(objects: Objects, kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(objects: Objects) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    return dict(pod["containers"][0])


def operator_args(objects: Objects) -> Any:
    c = container(objects)
    assert c["command"] == ["raylight", "operator"]
    return build_parser().parse_args(["operator", *c["args"]])  # exits (fails the test) on an unknown flag


def literal_env(objects: Objects) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects).get("env", []) if "value" in e}


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.fixture(params=sorted(COMBOS))
def objects(request: pytest.FixtureRequest, render: Render) -> Objects:
    return render(combo(request.param))


# ---------------------------------------------------------------- RBAC


def test_no_rbac_rule_has_a_wildcard_or_lists_secrets(objects: Objects) -> None:
    for role in (o for o in objects if o["kind"] in RBAC_KINDS):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            # Only the uninstall hook names objects: the operator's Deployment and the webhook configuration.
            assert "resourceNames" not in rule or (is_hook(role) and rule["resourceNames"] == [FULLNAME])
            for field in ("apiGroups", "resources", "verbs"):
                assert not any("*" in item for item in rule[field]), (role["metadata"]["name"], rule)
            assert "secrets" not in rule["resources"] or rule["verbs"] == ["get"], "never listed or watched"
    for binding in (o for o in objects if o["kind"] in {"ClusterRoleBinding", "RoleBinding"}):
        assert binding["roleRef"]["name"].startswith(FULLNAME), "binds a role the chart did not create"
        account = f"{FULLNAME}-uninstall" if is_hook(binding) else FULLNAME
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


@pytest.mark.parametrize("name", ["defaults", "namespaced", "peering-cluster-wide", "peering-namespaced"])
def test_rbac_grants_exactly_what_the_operator_declares(render: Render, name: str) -> None:
    """Permission by permission equal to operator/raylight/operator/rbac.py, less what this mode does not use:
    kopf.dev without peering, the peering kind of the other scope, and `namespaces` when cluster-wide
    (Kopf lists namespaces only to resolve a namespace list: kopf/_core/reactor/observation.py)."""
    values = combo(name)
    cluster_wide = not values.get("watchNamespaces")
    peering = values.get("peering", {}).get("enabled", False)
    expected = {
        (g, r, v) for g, r, v in triples(required_rules())
        if (g != "kopf.dev" or peering)
        and r != ("kopfpeerings" if cluster_wide else "clusterkopfpeerings")
        and not (cluster_wide and r == "namespaces")
    }
    objects = release(render(values))
    granted = triples([rule for o in objects if o["kind"] in RBAC_KINDS for rule in o["rules"]])
    assert granted == expected, f"missing: {sorted(expected - granted)}; extra: {sorted(granted - expected)}"


def test_namespaced_mode_grants_nothing_outside_the_watched_namespaces(render: Render) -> None:
    values = combo("namespaced")
    objects = release(render(values))
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(values["watchNamespaces"])
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(values["watchNamespaces"])
    for role in roles:
        assert not {r for rule in role["rules"] for r in rule["resources"]} & CLUSTER_SCOPED_RESOURCES
    cluster_role = one(objects, "ClusterRole")
    for rule in cluster_role["rules"]:
        assert set(rule["resources"]) <= CLUSTER_SCOPED_RESOURCES
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, "only discovery is cluster-wide (reads)"
    assert sorted(operator_args(objects).namespaces) == sorted(values["watchNamespaces"])


# ---------------------------------------------------------------- the operator pod


def test_operator_pod_meets_the_restricted_pod_security_standard(objects: Objects) -> None:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not sc.get("privileged")
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


def test_probes_hit_the_operators_liveness_endpoint(objects: Objects) -> None:
    c = container(objects)
    liveness = operator_args(objects).liveness  # e.g. http://0.0.0.0:8080/healthz
    port = int(liveness.rsplit(":", 1)[1].split("/")[0])
    path = "/" + liveness.split("/", 3)[3]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["path"] == path
        assert ports[probe["httpGet"]["port"]] == port


def test_one_operator_at_a_time(objects: Objects) -> None:
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "Kopf has no leader election"


def test_image_tag_defaults_to_app_version_and_can_be_pinned(render: Render) -> None:
    assert container(render())["image"] == f"ghcr.io/raylight-io/raylight-operator:{__version__}"
    assert container(render({"image": {"tag": "0.2.0-rc1"}}))["image"].endswith(":0.2.0-rc1")
    digest = "sha256:" + "b" * 64
    image = container(render({"image": {"digest": digest}}))["image"]
    assert image == f"ghcr.io/raylight-io/raylight-operator@{digest}"


def test_flags_and_environment_are_ones_the_operator_reads(objects: Objects) -> None:
    args = operator_args(objects)
    env = literal_env(objects)
    config = OperatorConfig.from_env(env).with_args(args)
    source = inspect.getsource(operator_config) + inspect.getsource(Settings)
    unread = [name for name in (e["name"] for e in container(objects)["env"])
              if name.startswith("RAYLIGHT_") and f'"{name}"' not in source]
    assert not unread, f"the chart sets environment the operator never reads: {unread}"
    assert config.liveness and config.liveness.startswith("http://0.0.0.0:")
    assert config.settings.runtime_image == f"ghcr.io/raylight-io/raylight-runtime:{__version__}"
    if config.webhook_port:
        mounts = {m["mountPath"] for m in container(objects)["volumeMounts"]}
        for path in (config.webhook_certfile, config.webhook_keyfile):
            assert path and path.rsplit("/", 1)[0] in mounts, f"{path} is not mounted"


def test_peering_object_is_the_one_the_operator_joins(render: Render) -> None:
    for name, kind in [("peering-cluster-wide", "ClusterKopfPeering"), ("peering-namespaced", "KopfPeering")]:
        objects = render(combo(name))
        config = OperatorConfig.from_env(literal_env(objects)).with_args(operator_args(objects))
        assert not config.standalone and config.clusterwide == (kind == "ClusterKopfPeering")
        peerings = of_kind(objects, kind)
        assert peerings and {p["metadata"]["name"] for p in peerings} == {config.peering_name}
        # Created after install, once Helm has applied (and the API server established) the CRD.
        assert all("post-install" in p["metadata"]["annotations"]["helm.sh/hook"] for p in peerings)
    assert operator_args(render()).standalone, "without peering the operator must run --standalone"


# ---------------------------------------------------------------- webhook


def webhook_port(objects: Objects) -> tuple[dict[str, Any], int]:
    service = one(objects, "Service")
    port = next(p for p in service["spec"]["ports"] if p["name"] == "webhook")
    container_port = next(p for p in container(objects)["ports"] if p["name"] == port["targetPort"])
    return service, container_port["containerPort"]


@pytest.mark.parametrize(
    "name", ["defaults", "namespaced", "cert-manager", "cert-manager-cluster-issuer", "everything"])
def test_webhook_is_wired_to_the_operator_service_and_port(render: Render, name: str) -> None:
    values = combo(name)
    objects = render(values)
    service, port = webhook_port(objects)
    assert operator_args(objects).webhook_port == port
    assert service["spec"]["selector"].items() <= one(objects, "Deployment")["spec"]["template"]["metadata"][
        "labels"].items()
    hooks = one(objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert {h["clientConfig"]["service"]["path"] for h in hooks} == {f"/{i}" for i in admission.WEBHOOK_IDS.values()}
    for hook in hooks:
        svc = hook["clientConfig"]["service"]
        assert (svc["name"], svc["namespace"]) == (service["metadata"]["name"], NAMESPACE)
        assert svc["port"] in {p["port"] for p in service["spec"]["ports"] if p["name"] == "webhook"}
        [rule] = hook["rules"]
        plural = rule["resources"][0]
        assert svc["path"] == f"/{admission.WEBHOOK_IDS[plural]}"
        assert rule["apiGroups"] == ["raylight.io"] and rule["apiVersions"] == ["v1alpha1"]
        assert rule["operations"] == ["CREATE", "UPDATE"]
        assert hook["sideEffects"] == "None" and hook["failurePolicy"] == "Fail"
        if values.get("watchNamespaces"):
            [expr] = hook["namespaceSelector"]["matchExpressions"]
            assert expr["key"] == "kubernetes.io/metadata.name" and expr["values"] == values["watchNamespaces"]


def test_webhook_paths_route_to_the_handlers_kopf_serves(render: Render) -> None:
    """Kopf answers a request only with the handler whose id is the URL path's last segment; a path with no
    matching handler would admit everything silently."""
    from raylight.operator.handlers import build_registry

    objects = render()
    # The registry the operator builds from exactly the flags and environment the chart gives it.
    registry = build_registry(OperatorConfig.from_env(literal_env(objects)).with_args(operator_args(objects)))
    handlers = {h.id: h for h in registry._webhooks.get_all_handlers()}
    hooks = one(objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert {h["clientConfig"]["service"]["path"].lstrip("/") for h in hooks} == set(handlers)
    for hook in hooks:
        handler = handlers[hook["clientConfig"]["service"]["path"].lstrip("/")]
        assert handler.selector is not None
        assert hook["rules"][0]["resources"][0] in {handler.selector.any_name, handler.selector.plural}
        assert sorted(handler.operations or []) == sorted(hook["rules"][0]["operations"])


def test_self_signed_certificate_is_trusted_through_the_ca_bundle(render: Render) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    objects = render()
    secret = one(objects, "Secret")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert secret["metadata"]["name"] in {v.get("secret", {}).get("secretName") for v in pod["volumes"]}
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    for hook in one(objects, "ValidatingWebhookConfiguration")["webhooks"]:
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == data["ca.crt"]
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    cert.verify_directly_issued_by(ca)  # raises unless the CA in caBundle signed the serving certificate
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{FULLNAME}.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)  # the name the API server dials
    key = serialization.load_pem_private_key(data["tls.key"], password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == cert.public_key().public_bytes(
        serialization.Encoding.DER, spki)


@pytest.mark.parametrize("name", ["cert-manager", "cert-manager-cluster-issuer"])
def test_cert_manager_issues_the_mounted_certificate_and_injects_its_ca(render: Render, name: str) -> None:
    objects = render(combo(name))
    certificate = one([c for c in of_kind(objects, "Certificate") if not c["spec"].get("isCA")], "Certificate")
    config = one(objects, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/{certificate['metadata']['name']}")
    assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])
    assert not of_kind(objects, "Secret"), "cert-manager writes the Secret, the chart must not"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert certificate["spec"]["secretName"] in {v.get("secret", {}).get("secretName") for v in pod["volumes"]}
    assert f"{FULLNAME}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    issuer = certificate["spec"]["issuerRef"]
    if name == "cert-manager":  # serving certificate <- CA Issuer <- CA Certificate (key never rotates) <- self-signed
        ca_issuer = next(i for i in of_kind(objects, "Issuer") if "ca" in i["spec"])
        assert (issuer["kind"], issuer["name"]) == ("Issuer", ca_issuer["metadata"]["name"])
        ca = one([c for c in of_kind(objects, "Certificate") if c["spec"].get("isCA")], "Certificate")
        assert ca["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"]
        assert ca["spec"]["privateKey"]["rotationPolicy"] == "Never"
        self_signed = next(i for i in of_kind(objects, "Issuer") if "selfSigned" in i["spec"])
        assert ca["spec"]["issuerRef"]["name"] == self_signed["metadata"]["name"]
        assert certificate["spec"]["privateKey"]["rotationPolicy"] == "Always"  # the serving key rotates freely
    else:
        assert (issuer["kind"], issuer["name"]) == ("ClusterIssuer", "corp-ca") and not of_kind(objects, "Issuer")


def test_webhook_off_leaves_no_webhook_traces(render: Render) -> None:
    objects = render(combo("webhook-off"))
    assert not of_kind(objects, "ValidatingWebhookConfiguration") and not of_kind(objects, "Secret")
    assert operator_args(objects).webhook_port is None
    assert all(p["name"] != "webhook" for p in container(objects)["ports"])


# ---------------------------------------------------------------- CRDs


@pytest.mark.parametrize("name, keep", [("defaults", True), ("crds-not-kept", False),
                                        ("peering-cluster-wide", True), ("everything", False)])
def test_crds_are_kept_on_uninstall_only_when_asked(render: Render, name: str, keep: bool) -> None:
    crds = of_kind(render(combo(name)), "CustomResourceDefinition")
    assert {"modeldeployments.raylight.io", "pipelines.raylight.io"} <= {c["metadata"]["name"] for c in crds}
    for crd in crds:
        policy = crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
        assert policy == ("keep" if keep else None), crd["metadata"]["name"]


def test_crds_disabled_installs_no_crds(render: Render) -> None:
    assert not of_kind(render({"crds": {"enabled": False}, "peering": {"enabled": True}}), "CustomResourceDefinition")


# ---------------------------------------------------------------- optional parts


def test_operator_network_policy_allows_only_dns_api_server_and_qdrant(render: Render) -> None:
    objects = render(combo("network-policy"))
    policy = next(p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["namespace"] == NAMESPACE)
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = policy["spec"]["egress"]
    dns = [r for r in egress if {(p["port"], p["protocol"]) for p in r["ports"]} == {(53, "UDP"), (53, "TCP")}]
    assert dns and dns[0]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    api = [r for r in egress if {p["port"] for p in r["ports"]} == {443, 6443}]
    assert api and api[0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert len(egress) == 3  # DNS, API server, Qdrant: nothing else
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports <= {p["name"] for p in container(objects)["ports"]}


def test_model_network_policy_admits_namespace_clients_and_kuberay_only(render: Render) -> None:
    objects = render(combo("network-policy"))
    [policy] = [p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["namespace"] == "ai"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {}} in sources  # same namespace
    labelled = [s for s in sources if "namespaceSelector" in s]
    assert {tuple(s["podSelector"]["matchLabels"].items()) for s in labelled} == {
        (("raylight.io/client", "true"),), (("app.kubernetes.io/name", "kuberay-operator"),)}


def test_service_monitor_scrapes_the_operator_metrics_port(render: Render) -> None:
    objects = render(combo("service-monitor"))
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    [endpoint] = monitor["spec"]["endpoints"]
    metrics = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert any(p["name"] == metrics["targetPort"] for p in container(objects)["ports"])
    assert not of_kind(render(), "ServiceMonitor")


def test_external_qdrant_and_postgres_reach_the_operator_settings(render: Render) -> None:
    objects = render(combo("external-stores"))
    config = OperatorConfig.from_env(literal_env(objects))
    assert config.settings.qdrant_url == "https://qdrant.vector.svc:6333"
    assert config.settings.postgres_secret == "agent-threads"
    [key] = [e for e in container(objects)["env"] if e["name"] == "RAYLIGHT_QDRANT_API_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "qdrant-api-key", "key": "k"}
    defaults = OperatorConfig.from_env(literal_env(render()))
    assert defaults.settings.qdrant_url == Settings().qdrant_url and defaults.settings.postgres_secret is None


def test_licence_policy_values_reach_the_operator(render: Render) -> None:
    objects = render({"operator": {"licenseDeny": ["llama3", "cc-by-nc-4.0"], "licenseAllowUnknown": True}})
    policy = OperatorConfig.from_env(literal_env(objects)).settings.license_policy
    assert policy.deny == {"llama3", "cc-by-nc-4.0"} and policy.allow_unknown is True


class _FakeApiServer:
    """Just enough of the Kubernetes API for Helm's `lookup` (discovery of v1 and GET of one Secret)."""

    def __init__(self, secrets: dict[str, dict[str, Any]]) -> None:
        routes: dict[str, Any] = {
            "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.0"},
            "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
            "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                 "verbs": ["get", "list"]}]},
        }
        for name, secret in secrets.items():
            routes[f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}"] = secret

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = routes.get(self.path.split("?")[0])
                body = json.dumps(found or {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                            "reason": "NotFound", "code": 404}).encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("installed", [True, False], ids=["upgrade", "first-install"])
def test_self_signed_certificate_is_reused_on_upgrade(helm: str, tmp_path: Path, installed: bool) -> None:
    """On upgrade the chart looks the webhook Secret up and keeps its CA and certificate, so the caBundle the
    API server trusts never changes under a running operator; on a first install it generates them."""
    existing = {"ca.crt": base64.b64encode(b"existing CA").decode(), "tls.crt": base64.b64encode(b"cert").decode(),
                "tls.key": base64.b64encode(b"key").decode()}
    secret_name = f"{FULLNAME}-webhook-tls"
    secrets = {secret_name: {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "data": existing,
                             "metadata": {"name": secret_name, "namespace": NAMESPACE}}} if installed else {}
    with _FakeApiServer(secrets) as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
        out = subprocess.run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=server",
                              "--kubeconfig", str(kubeconfig), "--show-only", "templates/webhook.yaml"],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    objects = [d for d in yaml.safe_load_all(out.stdout) if d]
    data = one(objects, "Secret")["data"]
    bundles = {h["clientConfig"]["caBundle"] for h in one(objects, "ValidatingWebhookConfiguration")["webhooks"]}
    assert bundles == {data["ca.crt"]}
    if installed:
        assert data == existing
    else:
        assert data["ca.crt"] != existing["ca.crt"] and b"BEGIN CERTIFICATE" in base64.b64decode(data["ca.crt"])


# ---------------------------------------------------------------- uninstall hook


@pytest.mark.parametrize("policy", ["Orphan", "Delete"])
@pytest.mark.parametrize("name", ["defaults", "namespaced", "webhook-off"])
def test_uninstall_hook_grants_exactly_what_it_declares_where_it_releases(
        render: Render, name: str, policy: str) -> None:
    values = {**combo(name), "uninstall": {"enabled": True, "objects": policy, "timeoutSeconds": 120}}
    hooks = [o for o in render(values) if is_hook(o)]
    granted = triples([rule for o in hooks if o["kind"] in RBAC_KINDS for rule in o["rules"]])
    webhook = values.get("webhook", {}).get("enabled", True)
    assert granted == set(uninstall_rules(policy, webhook)), sorted(granted)
    watched = values.get("watchNamespaces")
    cr_roles = [o for o in hooks if o["kind"] in RBAC_KINDS and "raylight.io" in o["rules"][0]["apiGroups"]]
    if watched:  # objects are released only where the operator watches
        assert sorted(r["metadata"]["namespace"] for r in cr_roles) == sorted(watched)
    else:
        assert [r["kind"] for r in cr_roles] == ["ClusterRole"]

    job = one(hooks, "Job")
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hooks}
    assert all(w < weights["Job"] for k, w in weights.items() if k != "Job"), "RBAC exists before the Job runs"
    assert {o["metadata"]["annotations"]["helm.sh/hook"] for o in hooks} == {"pre-delete"}
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{FULLNAME}-uninstall"
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["command"] == ["python", "-m", "raylight.operator.uninstall"]
    args = uninstall_parser().parse_args(c["args"])  # exits (fails the test) on an unknown flag
    assert (args.policy, args.release_namespace, args.deployment) == (policy, NAMESPACE, FULLNAME)
    assert args.deployment == one(release(render(values)), "Deployment")["metadata"]["name"]
    assert args.webhook == (FULLNAME if webhook else None)
    assert sorted(args.namespaces) == sorted(watched or [])
    assert job["spec"]["activeDeadlineSeconds"] > args.timeout == 120


def test_uninstall_hook_can_be_turned_off(render: Render) -> None:
    assert not [o for o in render({"uninstall": {"enabled": False, "objects": "Orphan", "timeoutSeconds": 240}})
                if is_hook(o)]


def test_pod_monitor_scrapes_the_ray_pods_the_operator_labels(render: Render) -> None:
    """The PodMonitor selects the labels the builders put on every Ray pod and scrapes the ports they declare."""
    from raylight.api.types import ModelDeployment
    from raylight.desired.kubernetes import get_model_rayservice

    monitor = one(render(combo("service-monitor")), "PodMonitor")
    md = ModelDeployment.model_validate({"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment",
                                         "metadata": {"name": "emb", "namespace": NAMESPACE},
                                         "spec": {"task": "embed", "preset": "bge-m3",
                                                  "replicas": {"min": 1, "max": 2}}})
    rayservice = get_model_rayservice(md, NAMESPACE, Settings())
    cluster = rayservice["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]:
        template = group["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        for c in template["spec"]["containers"]:
            names = {p["name"] for p in c["ports"]}
            assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= names
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert not of_kind(render({"serviceMonitor": {"enabled": True, "rayPods": False}, "metrics": {"enabled": True}}),
                       "PodMonitor")


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(render: Render) -> None:
    from raylight_pipelines import telemetry

    [config_map] = [o for o in of_kind(render({"dashboards": {"enabled": True}}), "ConfigMap")
                    if o["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["raylight.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in ("raylight_agent_requests_total", "raylight_agent_request_duration_seconds_bucket",
                   "raylight_model_requests_total", "raylight_model_tokens_total",
                   "raylight_operator_reconciles_total"):
        assert metric in exprs
    served = {m.name for m in telemetry.REGISTRY.collect()}
    for name in ("raylight_agent_requests", "raylight_model_requests", "raylight_model_queue_depth"):
        assert name in served
    assert not [o for o in of_kind(render(), "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
