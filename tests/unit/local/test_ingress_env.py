"""The local platform's Serve environment: gRPC between replicas; HAProxy on free ports when asked for."""

from __future__ import annotations

import pytest
from raylight.local.serve import ingress_env

PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
         "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")


def test_haproxy_ingress_takes_free_ports_so_two_platforms_do_not_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLIGHT_SERVE_HAPROXY", "1")
    first, second = ingress_env(), ingress_env()
    assert first["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and first["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == "1"
    ports = [int(env[name]) for env in (first, second) for name in PORTS]
    assert all(p > 1024 for p in ports)
    assert {8404, 9101, 8500, 9500}.isdisjoint(ports)  # Ray's fixed defaults, shared by every Ray on the machine
    assert len({first[name] for name in PORTS}) == len(PORTS)


def test_by_default_serves_python_proxy_stays_and_handles_use_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    """HAProxy does not stop a generation whose non-streaming client went away: it is opt-in."""
    monkeypatch.delenv("RAYLIGHT_SERVE_HAPROXY", raising=False)
    assert ingress_env() == {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"}
