"""Issue 13, items 7 and 8: admission never blocks a deletion, and an operator without its peering says
what it waits for within seconds."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from raylight.governance.licenses import LicensePolicy
from raylight.operator.admission import exempt, problems
from raylight.operator.config import OperatorConfig
from raylight.operator.main import peering_problem, watch_peering

LLAMA: dict[str, Any] = {
    "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "llama", "namespace": "ai", "uid": "u-1", "finalizers": ["raylight.io/finalizer"]},
    "spec": {"task": "chat", "preset": "llama-3.1-8b-instruct", "licenseAccepted": True,
             "resources": {"gpus": 1}},
}
DENY = LicensePolicy(deny=frozenset({"llama3.1"}))


def test_7_a_denied_licence_does_not_block_finalizer_removal_or_deletion() -> None:
    assert problems(LLAMA, DENY)  # the policy changed after the object was admitted
    terminating = copy.deepcopy(LLAMA)
    terminating["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    released = copy.deepcopy(terminating)
    released["metadata"]["finalizers"] = []
    assert exempt("UPDATE", released, terminating)  # the operator removes its finalizer
    assert exempt("UPDATE", terminating, LLAMA)  # deletionTimestamp set: any update is allowed
    relabelled = copy.deepcopy(LLAMA)
    relabelled["metadata"]["annotations"] = {"kopf.zalando.org/last-handled-configuration": "{}"}
    assert exempt("UPDATE", relabelled, LLAMA)  # metadata only (Kopf's own annotations, finalizers)
    assert exempt("DELETE", LLAMA, LLAMA)


def test_7_spec_changes_and_creations_are_still_checked() -> None:
    changed = copy.deepcopy(LLAMA)
    changed["spec"]["replicas"] = {"min": 1, "max": 2}
    assert not exempt("UPDATE", changed, LLAMA)
    assert not exempt("CREATE", LLAMA, None)
    assert not exempt("UPDATE", LLAMA, None)  # no old object to compare with: check


async def test_7_the_registered_webhook_admits_the_finalizer_removal() -> None:
    import kopf
    from raylight.operator.config import OperatorConfig as Config
    from raylight.operator.handlers import build_registry
    from raylight.settings import Settings

    config = Config(settings=Settings(license_policy=DENY), standalone=True, webhook_port=1)
    registry = build_registry(config, kube=object(), stores=object())  # type: ignore[arg-type]
    handlers = [h for h in registry._webhooks.get_all_handlers()]
    assert handlers
    terminating = copy.deepcopy(LLAMA)
    terminating["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    released = copy.deepcopy(terminating)
    released["metadata"]["finalizers"] = []
    for handler in handlers:
        await handler.fn(body=kopf.Body(released), operation="UPDATE", old=terminating)
        with pytest.raises(kopf.AdmissionError):
            await handler.fn(body=kopf.Body(LLAMA), operation="CREATE", old=None)


class FakeApi:
    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects

    def __call__(self, path: str) -> Any:
        return self.objects.get(path)


GROUP = "/apis/kopf.dev/v1"
SERVED = {GROUP: {"resources": [{"name": "clusterkopfpeerings"}, {"name": "kopfpeerings"}]}}


def test_8_peering_problems_say_what_is_missing_and_how_to_fix_it() -> None:
    config = OperatorConfig()
    no_crd = peering_problem(config, FakeApi({}))
    assert no_crd and "ClusterKopfPeering CRD" in no_crd and "--standalone" in no_crd and "chart" in no_crd
    no_object = peering_problem(config, FakeApi(SERVED))
    assert no_object and "no ClusterKopfPeering named 'raylight'" in no_object and "--standalone" in no_object
    assert peering_problem(config, FakeApi({**SERVED, f"{GROUP}/clusterkopfpeerings/raylight": {}})) is None
    namespaced = OperatorConfig(namespaces=("a", "b"))
    found = peering_problem(namespaced, FakeApi({**SERVED, f"{GROUP}/namespaces/a/kopfpeerings/raylight": {}}))
    assert found and "KopfPeering named 'raylight' in namespace(s) b" in found
    assert peering_problem(OperatorConfig(standalone=True), FakeApi({})) is None


async def test_8_the_watchdog_logs_within_seconds_and_stops_once_the_peering_exists(
        caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi(dict(SERVED))
    caplog.set_level(logging.WARNING, logger="raylight.operator")
    task = asyncio.create_task(watch_peering(OperatorConfig(), api, delay=0.01, interval=0.05))
    await asyncio.sleep(0.1)
    assert any("waiting for Kopf peering" in r.message for r in caplog.records)
    api.objects[f"{GROUP}/clusterkopfpeerings/raylight"] = {}
    await asyncio.wait_for(task, 2)
