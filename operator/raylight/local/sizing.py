"""How `raylight up` sizes the Ray it starts, from the machine it runs on (docs/performance.md, "Bounded on
one machine").

A local platform shares one machine with its user: its Ray must never start more processes, or hold more
memory, than the machine has. Every limit is derived from two numbers, the machine's logical cores `C`
(`psutil.cpu_count()`, at least 1) and its memory `M` (`psutil.virtual_memory().total`, bytes):

  logical CPUs Ray offers     max(C, N + 1), N = the CPUs the manifests' replicas claim (`cpus_needed`):
                              every replica can be placed, and one more for the work nobody claimed.
                              (It was max(2C, N + 4): 7 on 2 cores for one small model.)
  worker processes            num_workers_soft_limit = Ray's CPUs: idle workers beyond it are stopped;
                              maximum_startup_concurrency = C: never more than C workers starting at once
                              (each start imports Ray and the libraries: one core's work for a few seconds);
                              Ray's raylet sets it to min(cores, Ray's CPUs) = C itself, not configurable.
  object store                clamp(M / 32, 256 MiB, 2 GiB) (Ray's own default is 30% of M).
  memory Ray schedules        `memory` resource = M / 2: tasks and actors that declare `memory` (Ray Data's
                              stages do) never add up to more than half the machine.
  memory monitor              Ray kills a worker only when the host has less than
                              reserve = clamp(M / 16, 512 MiB, 4 GiB) free (min_memory_free_bytes; Ray's
                              default threshold is 95% of M used, 1.2 GiB on 24 GiB); it checks every 250 ms
                              and kills retriable work (Ray Data's tasks, started last) before actors.

Ray Data's own stages are bounded separately, from the CPUs of the Ray they run on (see
`raylight_pipelines.ingest.ray_data.stage_limits`), so the same rules hold on a cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

MIB = 1024**2
GIB = 1024**3
OBJECT_STORE_MIN = 256 * MIB
OBJECT_STORE_MAX = 2 * GIB
RESERVE_MIN = 512 * MIB
RESERVE_MAX = 4 * GIB
MONITOR_REFRESH_MS = 250


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


@dataclass(frozen=True)
class RaySizing:
    """The limits one local Ray runs under (all derived by `derive`). Bytes for memory, counts for the rest."""

    cores: int  # the machine's logical cores (C)
    memory_bytes: int  # the machine's memory (M)
    num_cpus: int  # logical CPUs Ray offers
    object_store_bytes: int
    schedulable_memory_bytes: int  # Ray's `memory` resource
    reserve_bytes: int  # the memory monitor kills only below this much free memory
    num_workers_soft_limit: int
    maximum_startup_concurrency: int

    def system_config(self) -> dict[str, Any]:
        """`ray.init(_system_config=...)`: the worker and memory-monitor limits (the startup concurrency is
        the raylet's min(cores, CPUs), not a system config)."""
        return {
            "num_workers_soft_limit": self.num_workers_soft_limit,
            "min_memory_free_bytes": self.reserve_bytes,
            "memory_monitor_refresh_ms": MONITOR_REFRESH_MS,
        }

    def init_kwargs(self) -> dict[str, Any]:
        """The sizing arguments of `ray.init` (address, namespace etc. are the caller's)."""
        return {"num_cpus": self.num_cpus, "object_store_memory": self.object_store_bytes,
                "_memory": self.schedulable_memory_bytes, "_system_config": self.system_config()}

    def summary(self) -> dict[str, Any]:
        """For platform.json and `raylight status --json`: the rules' inputs and outputs."""
        return {"cores": self.cores, "memory_gib": round(self.memory_bytes / GIB, 2), "num_cpus": self.num_cpus,
                "object_store_mib": self.object_store_bytes // MIB,
                "schedulable_memory_mib": self.schedulable_memory_bytes // MIB,
                "memory_monitor_reserve_mib": self.reserve_bytes // MIB,
                "num_workers_soft_limit": self.num_workers_soft_limit,
                "maximum_startup_concurrency": self.maximum_startup_concurrency}


def derive(cores: int, memory_bytes: int, cpus_needed: int = 0) -> RaySizing:
    """The limits for a machine of `cores` logical cores and `memory_bytes` of memory whose manifests'
    replicas claim `cpus_needed` CPUs. Raises ValueError naming the argument when one is not positive."""
    if cores < 1:
        raise ValueError(f"cores: must be at least 1, got {cores}")
    if memory_bytes < 1:
        raise ValueError(f"memory_bytes: must be positive, got {memory_bytes}")
    if cpus_needed < 0:
        raise ValueError(f"cpus_needed: must not be negative, got {cpus_needed}")
    num_cpus = max(cores, cpus_needed + 1)
    return RaySizing(
        cores=cores, memory_bytes=memory_bytes, num_cpus=num_cpus,
        object_store_bytes=_clamp(memory_bytes // 32, OBJECT_STORE_MIN, OBJECT_STORE_MAX),
        schedulable_memory_bytes=memory_bytes // 2,
        reserve_bytes=_clamp(memory_bytes // 16, RESERVE_MIN, RESERVE_MAX),
        num_workers_soft_limit=num_cpus,
        maximum_startup_concurrency=cores,
    )


def this_machine(cpus_needed: int = 0) -> RaySizing:
    """`derive` for the machine this process runs on (psutil; a cgroup CPU quota is not read)."""
    import psutil

    return derive(psutil.cpu_count() or os.cpu_count() or 1, int(psutil.virtual_memory().total), cpus_needed)
