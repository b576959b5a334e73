"""The operator's Prometheus metrics (prometheus-client), served on `$RAYLIGHT_METRICS_PORT` at /metrics.

  raylight_operator_reconciles_total{kind, result}              passes by kind, result ok | error
  raylight_operator_reconcile_duration_seconds{kind}            histogram of a pass
  raylight_operator_api_writes_total{kind, verb}                writes to the API (created, patched, deleted)
  raylight_operator_objects{kind, phase}                        objects by status.phase
  raylight_operator_drift_repairs_total{kind}                   children restored after a hand edit
  raylight_operator_admission_rejections_total{kind}            objects the admission webhook refused
  raylight_operator_last_status_refresh_timestamp_seconds{kind} when a pass last refreshed a status
                                                                (time() - it: time since the last refresh)
  raylight_operator_ingestion_runs_total{namespace, pipeline, result}     finished runs, Succeeded | Failed
  raylight_operator_ingestion_documents_total{namespace, pipeline, outcome} their documents: done | skipped | failed
  raylight_operator_ingestion_chunks_total{namespace, pipeline, kind}     their chunks: embedded | reused
  raylight_operator_ingestion_duration_seconds{namespace, pipeline}       histogram of their durations
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
PORT_ENV = "RAYLIGHT_METRICS_PORT"

RECONCILES = Counter("raylight_operator_reconciles_total", "Reconcile passes by kind and result.",
                     ["kind", "result"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("raylight_operator_reconcile_duration_seconds", "Duration of a reconcile pass.",
                              ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                              registry=REGISTRY)
API_WRITES = Counter("raylight_operator_api_writes_total", "Writes to the Kubernetes API (and collections) by "
                     "child kind and verb.", ["kind", "verb"], registry=REGISTRY)
OBJECTS = Gauge("raylight_operator_objects", "ModelDeployments and Pipelines by status.phase.", ["kind", "phase"],
                registry=REGISTRY)
DRIFT_REPAIRS = Counter("raylight_operator_drift_repairs_total", "Children restored after they were edited by "
                        "hand.", ["kind"], registry=REGISTRY)
ADMISSION_REJECTIONS = Counter("raylight_operator_admission_rejections_total", "Objects refused by the "
                               "admission webhook.", ["kind"], registry=REGISTRY)
LAST_REFRESH = Gauge("raylight_operator_last_status_refresh_timestamp_seconds", "When a reconcile pass last "
                     "refreshed an object's status (Unix time).", ["kind"], registry=REGISTRY)

_RUN = ["namespace", "pipeline"]
INGESTION_RUNS = Counter("raylight_operator_ingestion_runs_total", "Finished ingestion runs by result (Succeeded, "
                         "Failed; Skipped: a scheduled run that came while another run of the Pipeline wrote).",
                         [*_RUN, "result"], registry=REGISTRY)
INGESTION_DOCUMENTS = Counter("raylight_operator_ingestion_documents_total", "Documents of finished ingestion "
                              "runs by outcome (done, skipped, failed).", [*_RUN, "outcome"], registry=REGISTRY)
INGESTION_CHUNKS = Counter("raylight_operator_ingestion_chunks_total", "Chunks of finished ingestion runs, "
                           "embedded or reused.", [*_RUN, "kind"], registry=REGISTRY)
INGESTION_SECONDS = Histogram("raylight_operator_ingestion_duration_seconds", "Duration of finished ingestion "
                              "runs.", _RUN, buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
                              registry=REGISTRY)


def ingestion_finished(namespace: str, pipeline: str, progress: Mapping[str, Any]) -> None:
    """Count one finished run from its status.ingestion (camelCase, as the operator writes it)."""
    run = (namespace, pipeline)
    INGESTION_RUNS.labels(*run, progress.get("phase") or "unknown").inc()
    for outcome in ("done", "skipped", "failed"):
        INGESTION_DOCUMENTS.labels(*run, outcome).inc(progress.get(f"documents{outcome.title()}") or 0)
    for kind in ("embedded", "reused"):
        INGESTION_CHUNKS.labels(*run, kind).inc(progress.get(f"chunks{kind.title()}") or 0)
    if progress.get("durationSeconds") is not None:
        INGESTION_SECONDS.labels(*run).observe(float(progress["durationSeconds"]))


def ingestion_skipped(namespace: str, pipeline: str) -> None:
    """Count one scheduled run skipped because another run of the Pipeline was writing (result Skipped)."""
    INGESTION_RUNS.labels(namespace, pipeline, "Skipped").inc()


class _Result(Protocol):
    status: dict[str, Any]
    writes: list[str]


_phases: dict[str, tuple[str, str]] = {}  # uid -> (kind, phase)
_lock = threading.Lock()


def _set_phase(kind: str, uid: str, phase: str | None) -> None:
    with _lock:
        if phase is None:
            _phases.pop(uid, None)
        else:
            _phases[uid] = (kind, phase)
        counts: dict[tuple[str, str], int] = {}
        for key in _phases.values():
            counts[key] = counts.get(key, 0) + 1
        for k, p in list(_known):
            if k == kind and (k, p) not in counts:
                OBJECTS.labels(k, p).set(0)
        for (k, p), n in counts.items():
            _known.add((k, p))
            OBJECTS.labels(k, p).set(n)


_known: set[tuple[str, str]] = set()


def observe(kind: str, body: Mapping[str, Any], run: Callable[[], Any]) -> Any:
    """Run one reconcile pass, counting it, its writes and the object's phase."""
    started = time.perf_counter()
    try:
        result: _Result = run()
    except BaseException:
        RECONCILES.labels(kind, "error").inc()
        raise
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
    RECONCILES.labels(kind, "ok").inc()
    for write in result.writes:
        verb, _, rest = write.partition(" ")
        API_WRITES.labels(rest.split(" ", 1)[0] or "unknown", verb).inc()
    phase = result.status.get("phase")
    if phase:
        _set_phase(kind, body["metadata"].get("uid", ""), phase)
        LAST_REFRESH.labels(kind).set(time.time())
    return result


def forget(body: Mapping[str, Any]) -> None:
    """An object was deleted: it leaves the phase counts."""
    _set_phase(body.get("kind", ""), body["metadata"].get("uid", ""), None)


_server: Any = None


def serve(port: int, addr: str = "0.0.0.0") -> int:
    """Serve /metrics on `port` (0: any free port); returns the port. Once per process."""
    global _server
    if _server is None:
        server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
        _server = server
    return int(_server.server_port)
