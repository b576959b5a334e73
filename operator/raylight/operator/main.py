"""`raylight operator`: run the Kopf operator in this process."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from raylight.operator.config import OperatorConfig
from raylight.operator.handlers import build_registry


async def run(config: OperatorConfig, registry: kopf.OperatorRegistry | None = None, **kwargs: object) -> None:
    """The operator until stopped (kwargs: Kopf's stop_flag, ready_flag, ... for tests and embedding)."""
    await kopf.operator(
        registry=registry or build_registry(config),
        clusterwide=config.clusterwide,
        namespaces=list(config.namespaces),
        standalone=config.standalone,
        # A peering name makes peering mandatory, which Kopf enforces even when standalone.
        peering_name=None if config.standalone else config.peering_name,
        liveness_endpoint=config.liveness,
        **kwargs,  # type: ignore[arg-type]
    )


def operator_command(args: argparse.Namespace) -> int:
    config = OperatorConfig.from_env().with_args(args)
    kopf.configure(verbose=False, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("raylight").setLevel(logging.INFO)
    asyncio.run(run(config))
    return 0
