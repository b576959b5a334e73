"""The operator killed with SIGKILL at random points while it reconciles 20 ModelDeployments, restarted,
and checked for convergence (tests/operator/chaos.py says what a trial does and checks). CI runs
TRIALS seeded trials (each against a fresh API stand-in); bench/operator_chaos.py runs 100."""

from __future__ import annotations

import pytest
from chaos import trial
from operator_harness import Emulator, Kube

pytestmark = pytest.mark.operator

TRIALS = 6


@pytest.mark.parametrize("seed", range(TRIALS))
async def test_sigkilled_operator_converges_to_one_child_per_object(seed: int, api: Emulator, kube: Kube) -> None:
    out = await trial(api, kube, seed, converge_s=45)
    print(f"seed {seed}: {out.kills} kills, {out.seconds:.1f}s")
    assert out.ok, out
