"""The operator's /metrics (RAYLIGHT_METRICS_PORT) scraped by a real Prometheus while the real Kopf runtime
reconciles against kmock: after creating and then changing a ModelDeployment, PromQL sees the reconciles,
the RayService created and patched, the object's phase and a recent status refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from operator_harness import Emulator, Kube, eventually, operator_config
from prometheus_support import Prometheus, prometheus_or_skip
from raylight.operator import metrics
from test_operator_runtime import EMBEDDER, md

pytestmark = pytest.mark.operator


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_prometheus_sees_reconciles_writes_and_phases(
        api: Emulator, kube: Kube, start_operator: Callable[..., Any]) -> None:
    prometheus_or_skip()
    port = metrics.serve(0)  # once per process; the operator's run() finds it started
    created_before = sample("raylight_operator_api_writes_total", kind="RayService", verb="created")
    patched_before = sample("raylight_operator_api_writes_total", kind="RayService", verb="patched")
    with Prometheus({"operator": [f"127.0.0.1:{port}"]}) as prom:
        async with start_operator(operator_config(metrics_port=port)):
            assert "raylight_operator_reconciles_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
            await kube.create(md(EMBEDDER))
            await eventually(lambda: kube.get("RayService", "minilm"))
            await kube.patch("ModelDeployment", "minilm", {"spec": {"replicas": {"targetOngoingRequests": 4}}})

            # The API stand-in runs in this event loop: PromQL polls in a thread.
            def until(expr: str, ok: Callable[[float], bool]) -> Any:
                return asyncio.to_thread(prom.eventually, expr, ok)
            ok = await until('sum(raylight_operator_reconciles_total{kind="ModelDeployment",result="ok"})',
                             lambda v: v >= 2)
            created = await until('raylight_operator_api_writes_total{kind="RayService",verb="created"}',
                                  lambda v: v >= created_before + 1)
            patched_n = await until('raylight_operator_api_writes_total{kind="RayService",verb="patched"}',
                                    lambda v: v >= patched_before + 1)
            phases = await until('sum(raylight_operator_objects{kind="ModelDeployment"})', lambda v: v >= 1)
            age = await until('time() - raylight_operator_last_status_refresh_timestamp_seconds'
                              '{kind="ModelDeployment"}', lambda v: v < 30)
            p95 = await asyncio.to_thread(prom.scalar, 'histogram_quantile(0.95, sum by (le) (rate('
                                          'raylight_operator_reconcile_duration_seconds_bucket[30s])))')
    print(f"\nPromQL: reconciles ok={ok} RayService created={created} (before {created_before}) "
          f"patched={patched_n} (before {patched_before}) objects={phases} refresh age={age:.1f}s "
          f"reconcile p95={p95}")
    assert created == created_before + 1  # created once, then only patched
