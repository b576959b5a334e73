"""The operator's RBAC lives in one list the chart renders from; these checks keep it well-formed and
complete for what Kopf itself needs."""

from __future__ import annotations

from raylight.operator.rbac import required_rules

KUBE_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def _allowed(group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               for r in required_rules())


def test_rules_are_well_formed_and_stable() -> None:
    rules = required_rules()
    assert rules == required_rules()  # deterministic: the chart test compares it verbatim
    seen = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}
        assert rule["verbs"] and set(rule["verbs"]) <= KUBE_VERBS
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in seen, f"{group}/{resource} appears in two rules"
                seen.add((group, resource))


def test_rules_cover_what_kopf_itself_needs() -> None:
    assert _allowed("", "events", "create")
    for verb in ("list", "watch"):
        assert _allowed("apiextensions.k8s.io", "customresourcedefinitions", verb)
    for plural in ("clusterkopfpeerings", "kopfpeerings"):
        for verb in ("get", "list", "watch", "patch"):
            assert _allowed("kopf.dev", plural, verb)
    for plural in ("modeldeployments", "pipelines"):
        for verb in ("list", "watch", "patch"):
            assert _allowed("raylight.io", plural, verb)
        assert _allowed("raylight.io", f"{plural}/status", "patch")


def test_no_admission_or_wildcard_permissions() -> None:
    for rule in required_rules():
        assert "admissionregistration.k8s.io" not in rule["apiGroups"]  # the chart owns the webhook config
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
    assert not _allowed("", "secrets", "list") and not _allowed("", "secrets", "watch")


def test_every_call_the_reconciler_makes_is_allowed() -> None:
    """Drive the reconciler through models, a pipeline (with a schedule, a Secret, a new plan) and a delete;
    each (resource, verb) it used must be in the rules the chart renders."""
    import sys
    from pathlib import Path

    from qdrant_client import QdrantClient

    sys.path.insert(0, str(Path(__file__).parent))
    from raylight.operator.clients import KINDS, QdrantCollections
    from raylight.operator.config import OperatorConfig
    from raylight.operator.reconcile import Deps, Reconciler
    from raylight.settings import Settings
    from test_operator_reconcile import CHAT, EMBED, PIPE, FakeKube, add

    calls: set[tuple[str, str]] = set()

    class Recording(FakeKube):
        def get(self, kind: str, namespace: str, name: str):  # type: ignore[no-untyped-def]
            calls.add((kind, "get"))
            return super().get(kind, namespace, name)

        def create(self, kind: str, namespace: str, body: dict):  # type: ignore[no-untyped-def,type-arg]
            calls.add((kind, "create"))
            return super().create(kind, namespace, body)

        def patch(self, kind: str, namespace: str, name: str, patch: dict):  # type: ignore[no-untyped-def,type-arg]
            calls.add((kind, "patch"))
            return super().patch(kind, namespace, name, patch)

        def delete(self, kind: str, namespace: str, name: str) -> bool:
            calls.add((kind, "delete"))
            return super().delete(kind, namespace, name)

        def list(self, kind: str, namespace: str, labels: dict):  # type: ignore[no-untyped-def,type-arg]
            calls.add((kind, "list"))
            return super().list(kind, namespace, labels)

    kube = Recording()
    store = QdrantCollections(QdrantClient(":memory:"))
    rec = Reconciler(Deps(kube, lambda url, key: store, OperatorConfig(settings=Settings())))
    kube.objects[("Secret", "ns", "q")] = {"metadata": {"name": "q"}, "data": {"token": "eA=="}}
    models = [add(kube, "ModelDeployment", "minilm", EMBED, phase="Ready"),
              add(kube, "ModelDeployment", "smollm", CHAT, phase="Ready")]
    spec = {**PIPE, "schedule": "0 * * * *", "deletionPolicy": "Delete",
            "vectorStore": {"qdrant": {"apiKeySecret": {"name": "q"}}}}
    pipe = add(kube, "Pipeline", "handbook", spec)
    from test_weight_cache_reconcile import CACHED

    kube.objects[("PersistentVolumeClaim", "ns", "models")] = {"metadata": {"name": "models"}}
    cached = add(kube, "ModelDeployment", "cached", CACHED)
    calls.clear()  # the test's own setup writes are not the operator's
    for md in models:
        rec.model(md)
    rec.pipeline(pipe)
    pipe["spec"] = {**spec, "schedule": None, "sources": []}
    rec.pipeline(pipe)
    rec.pipeline_deleted(pipe)
    # spec.cache: the claim is read, the prefetch Job created, listed, and deleted when a new pin supersedes it
    rec.model(cached)
    cached["spec"] = {**CACHED, "model": {**CACHED["model"], "revision": "next"}}
    rec.model(cached)
    assert ("Job", "delete") in calls and ("PersistentVolumeClaim", "get") in calls
    assert {verb for _, verb in calls} >= {"get", "create", "delete", "list"}
    for kind, verb in sorted(calls):
        api_version, plural = KINDS[kind]
        group = api_version.rpartition("/")[0]
        assert _allowed(group, plural, verb), f"{verb} {group}/{plural} is not in rbac.required_rules()"
