"""The scheduled-ingestion gate (raylight.operator.schedule.gate) over any set of a Pipeline's RayJobs: after a
pass applies its decisions, at most one run writes; runs of a superseded plan are stopped; a finished run's
outcome is recorded before a waiting run starts; finished scheduled runs are pruned to the history limits."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from raylight.operator import schedule
from raylight.operator.status import rayjob_finished

STATES = {
    "waiting": ({"suspend": True}, {"jobDeploymentStatus": "Suspended"}),
    "new": ({}, {}),
    "running": ({"suspend": False}, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}),
    "succeeded": ({"suspend": False}, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}),
    "failed": ({}, {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED"}),
}


def job(name: str, state: str, plan: str = "p1", scheduled: bool = True, minute: int = 0) -> dict[str, Any]:
    spec, status = STATES[state]
    labels = {schedule.CRONJOB_LABEL: "wiki-ingest"} if scheduled else {"raylight.io/plan": plan}
    spec = {**spec, "submitterPodTemplate": {"metadata": {"labels": {"raylight.io/plan": plan}}}}
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": f"2026-12-04T10:{minute:02d}:00Z"},
            "spec": spec, "status": {**status, **({"endTime": f"2026-12-04T11:{minute:02d}:00Z"}
                                              if state in ("succeeded", "failed") else {})}}


runs = st.lists(st.tuples(st.sampled_from(sorted(STATES)), st.sampled_from(["p1", "p0"]), st.booleans()),
                max_size=12)


@settings(max_examples=300, deadline=None)
@given(runs=runs, recorded=st.booleans())
def test_at_most_one_run_writes_after_any_pass(runs: list[tuple[str, str, bool]], recorded: bool) -> None:
    jobs = [job(f"r{i}", state, plan, sched, minute=i) for i, (state, plan, sched) in enumerate(runs)]
    finished = [j for j in jobs if rayjob_finished(j)]
    newest = max(finished, key=lambda j: (j["status"]["endTime"], j["metadata"]["name"]))["metadata"]["name"] \
        if finished else None
    decided = schedule.gate(jobs, "p1", newest if recorded else None)
    assert schedule.at_most_one_running(jobs, decided)
    for j in jobs:  # every unfinished run of the old plan is stopped
        if not rayjob_finished(j) and schedule.plan_of(j) == "p0":
            assert j["metadata"]["name"] in decided.stop
    if decided.admit is not None:
        assert newest is None or recorded
    pruned = {*decided.prune}
    kept = [j for j in finished if schedule.scheduled(j) and j["metadata"]["name"] not in pruned]
    assert sum(1 for j in kept if j["status"]["jobStatus"] == "SUCCEEDED") <= schedule.SUCCEEDED_HISTORY + 1
    assert decided.latest not in pruned


def test_a_run_that_comes_while_one_writes_is_skipped() -> None:
    jobs = [job("own", "running", scheduled=False), job("cron-a", "waiting", minute=5)]
    decided = schedule.gate(jobs, "p1", None)
    assert (decided.admit, decided.skip, decided.running) == (None, ["cron-a"], "own")


def test_the_newest_waiting_run_starts_once_the_last_outcome_is_recorded() -> None:
    jobs = [job("own", "succeeded", scheduled=False), job("cron-a", "waiting", minute=5),
            job("cron-b", "waiting", minute=10)]
    assert schedule.gate(jobs, "p1", None).admit is None  # own's outcome not in the status yet
    decided = schedule.gate(jobs, "p1", "own")
    assert (decided.admit, decided.skip) == ("cron-b", ["cron-a"])


def test_finished_scheduled_runs_are_pruned_to_three_succeeded_and_one_failed() -> None:
    jobs = [job(f"ok{i}", "succeeded", minute=i) for i in range(5)] + [
        job(f"bad{i}", "failed", minute=10 + i) for i in range(3)]
    decided = schedule.gate(jobs, "p1", "bad2")
    assert sorted(decided.prune) == ["bad0", "bad1", "ok0", "ok1"]
    assert decided.latest == "bad2"
