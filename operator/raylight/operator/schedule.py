"""Scheduled ingestion runs, one at a time (pure): which RayJobs of a Pipeline to start, skip, stop and prune.

KubeRay's RayCronJob has no concurrency policy (ray-project/kuberay#4159): on its schedule it creates a RayJob
named `<cron>-<random>`, labelled only `ray.io/cronjob-name`, whatever is still running. Two runs of one
Pipeline would then write its collection at once. So the RayCronJob's job template is suspended
(`spec.suspend: true`: KubeRay creates no Ray cluster for it) and the operator is the lease: in each pass it
lists every ingestion RayJob of the Pipeline (its own plan runs, labelled `raylight.io/pipeline`, and the
scheduled ones, labelled `ray.io/cronjob-name`) and un-suspends a waiting run only when no other run is
unfinished and unsuspended, like a CronJob's `concurrencyPolicy: Forbid`: scheduled runs that come while one
runs are skipped (deleted, with an Event and a metric). At most one run of a Pipeline ever runs: the invariant
`at_most_one_running` states it and the tests check it over any set of runs. Finished scheduled runs are pruned
to a history limit (a CronJob's defaults: 3 succeeded, 1 failed); a run's outcome is recorded in the Pipeline's
status before its successor starts, so every run's outcome shows there, in an Event and in the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raylight.operator.status import rayjob_finished, rayjob_phase

CRONJOB_LABEL = "ray.io/cronjob-name"  # what KubeRay's RayCronJob puts on each RayJob it creates
PLAN_LABEL = "raylight.io/plan"
SUCCEEDED_HISTORY = 3  # finished scheduled runs kept (a CronJob's successfulJobsHistoryLimit default)
FAILED_HISTORY = 1  # (its failedJobsHistoryLimit default)

Obj = Mapping[str, Any]


def plan_of(job: Obj) -> str | None:
    """The plan checksum a run carries: on the RayJob (the operator's own runs) or on its submitter pod's
    template (scheduled runs, whose RayJob metadata KubeRay writes)."""
    labels = (job.get("metadata") or {}).get("labels") or {}
    if PLAN_LABEL in labels:
        return str(labels[PLAN_LABEL])
    template = ((job.get("spec") or {}).get("submitterPodTemplate") or {}).get("metadata") or {}
    value = (template.get("labels") or {}).get(PLAN_LABEL)
    return str(value) if value is not None else None


def scheduled(job: Obj) -> bool:
    return CRONJOB_LABEL in ((job.get("metadata") or {}).get("labels") or {})


def suspended(job: Obj) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def running(job: Obj) -> bool:
    """Unfinished and not suspended: a run that has (or may at any moment have) a Ray cluster writing."""
    return not rayjob_finished(job) and not suspended(job)


def _order(job: Obj) -> tuple[str, str]:
    meta = job.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def _ended(job: Obj) -> tuple[str, str, str]:
    status = job.get("status") or {}
    return (str(status.get("endTime") or ""), *_order(job))


@dataclass
class Decisions:
    """What one pass does with a Pipeline's ingestion RayJobs (names)."""

    admit: str | None = None  # un-suspend: it starts
    skip: list[str] = field(default_factory=list)  # scheduled runs that came while another ran: deleted
    stop: list[str] = field(default_factory=list)  # unfinished runs of a superseded plan: deleted
    prune: list[str] = field(default_factory=list)  # finished scheduled runs past the history limits: deleted
    running: str | None = None  # the run that is writing after this pass (admitted or already running)
    latest: str | None = None  # the run the Pipeline's status shows: the running one, else the newest finished


def gate(jobs: Sequence[Obj], plan: str, recorded: str | None) -> Decisions:
    """Decide for one Pipeline's ingestion RayJobs under plan checksum `plan`. `recorded` is the run whose
    final outcome the status already shows (status.ingestion.job when its phase is final): a waiting run is
    admitted only once the newest finished run is recorded, so no outcome is overwritten unseen."""
    out = Decisions()
    live = []
    for job in jobs:
        name = str(job["metadata"]["name"])
        if not rayjob_finished(job) and plan_of(job) not in (plan, None):
            out.stop.append(name)
        else:
            live.append(job)
    active = sorted((j for j in live if running(j)), key=_order)
    waiting = sorted((j for j in live if suspended(j) and not rayjob_finished(j)), key=_order)
    finished = sorted((j for j in live if rayjob_finished(j)), key=_ended)
    newest_finished = str(finished[-1]["metadata"]["name"]) if finished else None
    if active:  # more than one (left by a release without this gate): the oldest, furthest along, goes on
        out.running = str(active[0]["metadata"]["name"])
        out.skip = [str(j["metadata"]["name"]) for j in (*active[1:], *waiting)]
    elif waiting:
        if newest_finished is None or newest_finished == recorded:
            out.admit = out.running = str(waiting[-1]["metadata"]["name"])
            out.skip = [str(j["metadata"]["name"]) for j in waiting[:-1]]
        else:  # record the finished run's outcome first; the next pass starts the newest waiting run
            out.skip = [str(j["metadata"]["name"]) for j in waiting[:-1]]
    out.latest = out.running or newest_finished
    done_scheduled = [j for j in reversed(finished) if scheduled(j)]  # newest first
    kept_ok = [j for j in done_scheduled if rayjob_phase(j) == "Succeeded"][:SUCCEEDED_HISTORY]
    kept_failed = [j for j in done_scheduled if rayjob_phase(j) != "Succeeded"][:FAILED_HISTORY]
    keep = {str(j["metadata"]["name"]) for j in (*kept_ok, *kept_failed)} | {out.latest or ""}
    out.prune = [str(j["metadata"]["name"]) for j in done_scheduled if str(j["metadata"]["name"]) not in keep]
    return out


def at_most_one_running(jobs: Sequence[Obj], decisions: Decisions) -> bool:
    """The invariant: after a pass applies `decisions`, at most one run of the Pipeline is running."""
    gone = {*decisions.skip, *decisions.stop, *decisions.prune}
    left = [j for j in jobs if j["metadata"]["name"] not in gone]
    return sum(1 for j in left if running(j) or j["metadata"]["name"] == decisions.admit) <= 1
