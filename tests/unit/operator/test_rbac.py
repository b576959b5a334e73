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
