"""Operator settings from the environment, overridden by `raylight operator` flags."""

from __future__ import annotations

import argparse

from raylight.operator.config import OperatorConfig


def test_environment_then_flags() -> None:
    config = OperatorConfig.from_env({
        "RAYLIGHT_WATCH_NAMESPACES": "team-a, team-b", "RAYLIGHT_STANDALONE": "true",
        "RAYLIGHT_QDRANT_URL": "http://q:6333", "RAYLIGHT_LICENSE_DENY": "gpl-3.0",
        "RAYLIGHT_RUNTIME_IMAGE": "img:1", "RAYLIGHT_STATUS_INTERVAL": "5", "RAYLIGHT_WEBHOOK_PORT": "9443",
    })
    assert config.namespaces == ("team-a", "team-b") and not config.clusterwide
    assert config.standalone and config.status_interval == 5 and config.webhook_port == 9443
    assert config.settings.qdrant_url == "http://q:6333" and config.settings.runtime_image == "img:1"
    assert "gpl-3.0" in config.settings.license_policy.deny
    flags = argparse.Namespace(namespaces=["x"], standalone=False, liveness="http://0.0.0.0:8080/healthz",
                               webhook_port=None)
    merged = config.with_args(flags)
    assert merged.namespaces == ("x",) and merged.standalone and merged.webhook_port == 9443
    assert merged.liveness == "http://0.0.0.0:8080/healthz"
    assert OperatorConfig.from_env({}).clusterwide


def test_raylight_operator_runs_this_package() -> None:
    from raylight.cli import HANDLERS, build_parser, resolve
    from raylight.operator.main import operator_command

    assert resolve(HANDLERS["operator"]) is operator_command
    args = build_parser().parse_args(["operator", "--standalone", "--namespace", "a", "--webhook-port", "9443"])
    config = OperatorConfig.from_env({}).with_args(args)
    assert config.standalone and config.namespaces == ("a",) and config.webhook_port == 9443
