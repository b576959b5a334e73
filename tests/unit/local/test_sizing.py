"""The local Ray's limits follow from the machine (raylight.local.sizing): never more CPUs than the machine
or the replicas need, bounded workers, object store and memory-monitor reserve within stated ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raylight.local import sizing
from raylight.local.sizing import GIB, MIB, derive

cores = st.integers(min_value=1, max_value=512)
memory = st.integers(min_value=256 * MIB, max_value=4096 * GIB)
needed = st.integers(min_value=0, max_value=256)


@given(cores, memory, needed)
def test_every_limit_follows_the_rules(c: int, m: int, n: int) -> None:
    s = derive(c, m, n)
    assert s.num_cpus == max(c, n + 1)
    assert s.num_workers_soft_limit == s.num_cpus
    assert s.maximum_startup_concurrency == c  # never more workers starting than cores
    assert 256 * MIB <= s.object_store_bytes <= 2 * GIB
    assert s.object_store_bytes <= max(m // 32, 256 * MIB)
    assert s.schedulable_memory_bytes == m // 2
    assert 512 * MIB <= s.reserve_bytes <= 4 * GIB


def test_a_two_core_machine_offers_what_the_quickstart_needs_not_seven() -> None:
    s = derive(2, 24 * GIB, cpus_needed=3)  # minilm 1 + smollm 1 + the agent 1
    assert s.num_cpus == 4  # was max(2 x 2, 3 + 4) = 7
    assert s.object_store_bytes == 768 * MIB
    assert s.reserve_bytes == int(1.5 * GIB)
    assert s.system_config() == {"num_workers_soft_limit": 4, "min_memory_free_bytes": int(1.5 * GIB),
                                 "memory_monitor_refresh_ms": 250}


def test_init_kwargs_carry_every_limit_to_ray() -> None:
    s = derive(8, 64 * GIB, 2)
    kwargs = s.init_kwargs()
    assert kwargs["num_cpus"] == 8 and kwargs["object_store_memory"] == 2 * GIB
    assert kwargs["_memory"] == 32 * GIB and kwargs["_system_config"]["num_workers_soft_limit"] == 8


@pytest.mark.parametrize(("args", "field"), [((0, GIB, 0), "cores"), ((2, 0, 0), "memory_bytes"),
                                             ((2, GIB, -1), "cpus_needed")])
def test_a_non_positive_input_is_refused_with_its_name(args: tuple[int, int, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        derive(*args)


def test_ray_accepts_every_system_config_key() -> None:
    """Ray's GCS aborts on an unknown key (it did on maximum_startup_concurrency): each key must be one of the
    names compiled into the GCS binary."""
    from pathlib import Path

    import ray

    binary = (Path(ray.__file__).parent / "core/src/ray/gcs/gcs_server").read_bytes()
    for key in derive(2, 8 * GIB).system_config():
        assert key.encode() in binary, key


def test_this_machine_reads_psutil() -> None:
    import psutil

    s = sizing.this_machine(1)
    assert s.cores == psutil.cpu_count() and s.memory_bytes == psutil.virtual_memory().total
