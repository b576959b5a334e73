"""Ray Data's task stages are bounded by the Ray's CPUs, whatever the tasks claim (no worker storm)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raylight_pipelines.ingest.ray_data import stage_limits


@given(st.floats(min_value=0, max_value=10_000, allow_nan=False))
def test_tasks_at_once_are_one_per_cpu_and_at_least_one(cpus: float) -> None:
    n = stage_limits(cpus)
    assert n >= 1 and n <= max(1, cpus)


def test_a_negative_cpu_count_is_refused() -> None:
    with pytest.raises(ValueError, match="cluster_cpus"):
        stage_limits(-1)
