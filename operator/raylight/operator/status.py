"""What is really running, as our status (pure): a KubeRay RayService's status -> health; health and
governance -> phase and conditions, with transition times kept while a condition does not change."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

APP_RUNNING = "RUNNING"
APP_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


@dataclass(frozen=True)
class Health:
    """A child's health: ready serves traffic; progressing is rolling out; degraded is failing."""

    ready: bool
    progressing: bool
    degraded: bool
    reason: str
    message: str
    ready_replicas: int = 0


@dataclass(frozen=True)
class Cond:
    type: str
    ok: bool | None  # None: Unknown
    reason: str
    message: str = ""


@dataclass
class Verdict:
    phase: str
    conditions: list[Cond] = field(default_factory=list)


def rayservice_health(rs: Mapping[str, Any] | None) -> Health:
    """Read a RayService: its Ready condition, its observedGeneration against its generation, and the
    status of each Serve application in the active cluster."""
    if rs is None:
        return Health(False, True, False, "RayServiceMissing", "the RayService does not exist (yet)")
    status = rs.get("status") or {}
    generation = rs.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    active = status.get("activeServiceStatus") or {}
    apps: dict[str, Any] = active.get("applicationStatuses") or {}
    cluster = active.get("rayClusterStatus") or {}
    replicas = int(cluster.get("readyWorkerReplicas") or status.get("numServeEndpoints") or 0)
    failed = {n: a for n, a in apps.items() if a.get("status") in APP_FAILED}
    pending = sorted(n for n, a in apps.items() if a.get("status") != APP_RUNNING and n not in failed)
    ready_cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    # KubeRay before the Ready condition reported serviceStatus.
    serving = (ready_cond.get("status") == "True" if ready_cond is not None
               else status.get("serviceStatus") == "Running")
    serving = serving and bool(apps)  # Ready with no application listed is not serving our model
    stale = generation is not None and (observed is None or int(observed) < int(generation))
    if failed:
        name, app = sorted(failed.items())[0]
        return Health(serving, False, True, "ApplicationFailed",
                      f"Serve application {name} is {app.get('status')}: {app.get('message', '')}".strip(),
                      replicas)
    if stale:
        return Health(serving, True, False, "Reconciling",
                      f"KubeRay has not yet observed generation {generation} of the RayService", replicas)
    if not apps:
        return Health(False, True, False, "ClusterStarting", "waiting for the Ray cluster and Serve", replicas)
    if pending:
        return Health(serving, True, False, "ApplicationsDeploying",
                      f"Serve applications deploying: {', '.join(pending)}", replicas)
    if not serving:
        reason = (ready_cond or {}).get("reason") or "NotReady"
        return Health(False, True, False, reason, (ready_cond or {}).get("message", "RayService not ready"),
                      replicas)
    return Health(True, False, False, "Serving", "all Serve applications are RUNNING", replicas)


def model_verdict(health: Health, license_problem: str | None, fit_problem: str | None) -> Verdict:
    """Phase and conditions of a ModelDeployment."""
    gates = [
        Cond("LicenseApproved", license_problem is None,
             "LicenseRejected" if license_problem else "LicenseApproved", license_problem or ""),
        Cond("Fits", fit_problem is None, "DoesNotFit" if fit_problem else "Fits", fit_problem or ""),
    ]
    if license_problem or fit_problem:
        why = license_problem or fit_problem or ""
        reason = "LicenseRejected" if license_problem else "DoesNotFit"
        return Verdict("Failed", [Cond("Ready", False, reason, f"not deployed: {why}"),
                                  Cond("Progressing", False, reason, ""),
                                  Cond("Degraded", False, reason, ""), *gates])
    return Verdict(_phase(health), [*_health_conditions(health), *gates])


def _phase(health: Health) -> str:
    if health.degraded:
        return "Degraded"
    if health.progressing:
        return "Progressing"
    return "Ready" if health.ready else "Pending"


def _health_conditions(health: Health) -> list[Cond]:
    return [
        Cond("Ready", health.ready, health.reason if not health.ready else "Serving", health.message),
        Cond("Progressing", health.progressing, health.reason if health.progressing else "Stable",
             health.message if health.progressing else ""),
        Cond("Degraded", health.degraded, health.reason if health.degraded else "Healthy",
             health.message if health.degraded else ""),
    ]


def pipeline_verdict(parts: Mapping[str, Health]) -> Verdict:
    """A Pipeline is Ready only when each part (models, agent, store, ingestion) is: one condition per
    part (e.g. ModelsReady) plus Ready/Progressing/Degraded over all of them."""
    conds = [Cond(f"{name}Ready", h.ready, h.reason, h.message) for name, h in parts.items()]
    degraded = [h for h in parts.values() if h.degraded]
    waiting = [h for h in parts.values() if not h.ready]
    if degraded:
        overall = Health(False, False, True, degraded[0].reason, degraded[0].message)
    elif waiting:
        overall = Health(False, True, False, waiting[0].reason, waiting[0].message)
    else:
        overall = Health(True, False, False, "AllReady", "models, agent, store and ingestion are ready")
    return Verdict(_phase(overall), [*_health_conditions(overall), *conds])


def _status_word(ok: bool | None) -> str:
    return "Unknown" if ok is None else ("True" if ok else "False")


def conditions(new: Iterable[Cond], old: Iterable[Mapping[str, Any]], generation: int | None,
               now: str) -> list[dict[str, Any]]:
    """Wire conditions; lastTransitionTime moves only when a condition's status changes."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        status = _status_word(c.ok)
        prev = before.get(c.type)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == status else None
        out.append({"type": c.type, "status": status, "reason": c.reason, "message": c.message,
                    "lastTransitionTime": since or now, "observedGeneration": generation})
    return out


def changed(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change the stored status (so an unchanged one causes no write)."""
    return any(old.get(k) != v for k, v in new.items())
