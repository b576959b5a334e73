"""Metrics and traces of the data plane and the agents (prometheus-client, OpenTelemetry).

Metrics live in one prometheus-client registry per process, `REGISTRY`, named `raylight_*` (Ray Serve's own
`ray_serve_*` metrics are exported by Ray on each node's port 8080 and are not repeated here). Why a
prometheus-client registry and not `ray.util.metrics`: Ray's metrics agent prefixes every custom metric with
`ray_`, and an in-process agent (tests, `bench/`, `raylight eval`) has no metrics agent at all; the same
registry works in a replica, in-process and on one machine. Exposure:

- on a cluster each replica serves `REGISTRY` on `$RAYLIGHT_APP_METRICS_PORT` (the builders set it and
  declare the port `app-metrics` on every Ray container; replicas run one per pod, so it is one scrape per
  pod beside Ray's own `metrics` port);
- on one machine the gateway's `GET /metrics` asks each app for `exposition()` over its DeploymentHandle and
  merges the answers (`merge`).

Traces: `tracer` is OpenTelemetry's API tracer. `configure_tracing(service)` installs the SDK's provider with an
OTLP/HTTP exporter only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise nothing is installed and every span
is the API's no-op (free). W3C `traceparent` goes out with `inject()` and comes in with `extract()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from raylight.api.names import APP_METRICS_PORT_ENV

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
METRICS_PORT_ENV = APP_METRICS_PORT_ENV
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

# ------------------------------------------------------------------ agent apps
AGENT_REQUESTS = Counter("raylight_agent_requests_total", "Agent requests by route and HTTP status.",
                         ["pipeline", "route", "status"], registry=REGISTRY)
AGENT_REQUEST_SECONDS = Histogram("raylight_agent_request_duration_seconds",
                                  "Agent requests, end to end (the whole stream for streaming routes).",
                                  ["pipeline", "route"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
STAGE_SECONDS = Histogram("raylight_agent_stage_duration_seconds",
                          "Time in each stage of an agent request: embed, search, rerank, generate, checkpoint.",
                          ["pipeline", "stage"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
AGENT_TOKENS = Counter("raylight_agent_tokens_total", "Model tokens spent by agent requests (kind: prompt or "
                       "completion).", ["pipeline", "kind"], registry=REGISTRY)
AGENT_CHUNKS = Counter("raylight_agent_chunks_total", "Chunks retrieved and cited by agent answers.",
                       ["pipeline", "kind"], registry=REGISTRY)
AGENT_DONT_KNOW = Counter("raylight_agent_dont_know_total", "Answers that said \"I don't know\" (no relevant "
                          "source).", ["pipeline"], registry=REGISTRY)
AGENT_AUTH_FAILURES = Counter("raylight_agent_auth_failures_total", "Requests refused for a missing or wrong "
                              "token (401).", ["pipeline"], registry=REGISTRY)
AGENT_ACL_FILTERED = Counter("raylight_agent_acl_filtered_requests_total", "Retrievals run with a caller's "
                             "tenant or groups filter.", ["pipeline"], registry=REGISTRY)
AGENT_QUOTA_REJECTIONS = Counter("raylight_agent_quota_rejections_total", "Requests refused with 429 by "
                                 "agent.limits (limit: requests or tokens).", ["pipeline", "limit"],
                                 registry=REGISTRY)

# ------------------------------------------------------------------ model apps
MODEL_REQUESTS = Counter("raylight_model_requests_total", "Model requests by route and HTTP status.",
                         ["model", "route", "status"], registry=REGISTRY)
MODEL_REQUEST_SECONDS = Histogram("raylight_model_request_duration_seconds", "Model requests, end to end.",
                                  ["model", "route"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
MODEL_BATCH_SIZE = Histogram("raylight_model_batch_size", "Inputs per forward pass (@serve.batch): texts for "
                             "embed, pairs for rerank.", ["model", "task"], buckets=BATCH_BUCKETS,
                             registry=REGISTRY)
MODEL_TOKENS = Counter("raylight_model_tokens_total", "Tokens processed (kind: prompt or completion).",
                       ["model", "kind"], registry=REGISTRY)
MODEL_TOKENS_PER_SECOND = Histogram("raylight_model_generation_tokens_per_second", "Completion tokens per second "
                                    "of each generation.", ["model"],
                                    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=REGISTRY)
MODEL_QUEUE_DEPTH = Gauge("raylight_model_queue_depth", "Chat requests waiting for the engine (one generation "
                          "runs at a time).", ["model"], registry=REGISTRY)

tracer = trace.get_tracer("raylight")
_configured = False
_server_lock = threading.Lock()
_server_started = False


def configure_tracing(service: str) -> bool:
    """Install the SDK's tracer provider exporting over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
    (the standard `OTEL_*` variables apply); a no-op otherwise or when a provider is already installed.
    Returns whether spans are exported."""
    global _configured
    if _configured or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return _configured
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                          service)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def serve_metrics() -> int | None:
    """Serve `REGISTRY` on `$RAYLIGHT_APP_METRICS_PORT` (once per process; a port already taken is logged, not
    fatal). Returns the port, or None when not configured or not bound."""
    global _server_started
    port = os.environ.get(METRICS_PORT_ENV)
    if not port:
        return None
    with _server_lock:
        if not _server_started:
            from prometheus_client import start_http_server
            try:
                start_http_server(int(port), registry=REGISTRY)
            except OSError as exc:
                log.warning("cannot serve metrics on port %s: %s", port, exc)
                return None
            _server_started = True
    return int(port)


def exposition() -> str:
    """This process's metrics in the Prometheus text format."""
    return generate_latest(REGISTRY).decode()


class _Families:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def merge(texts: list[str], hide: Mapping[str, Collection[str]] | None = None) -> str:
    """Several processes' expositions as one (each family once, samples of all), for one scrape. `hide`:
    label -> values whose samples are left out (`{"pipeline": {"sec"}}`: nothing about that pipeline)."""
    merged: dict[str, Any] = {}
    hidden = {k: set(v) for k, v in (hide or {}).items() if v}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if hidden:
                family.samples = [s for s in family.samples
                                  if not any(s.labels.get(k) in v for k, v in hidden.items())]
            if family.name in merged:
                merged[family.name].samples.extend(family.samples)
            else:
                merged[family.name] = family
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(merged.values())))
    return generate_latest(registry).decode()


# ------------------------------------------------------------------ traces


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current trace (`traceparent`, W3C); empty when there is none."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The trace context sent with a request (its `traceparent`), or None."""
    if not headers:
        return None
    return propagate.extract({k.lower(): v for k, v in headers.items()})


@contextlib.contextmanager
def attached(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Run the block inside the trace the headers carry (none: unchanged)."""
    ctx = extract(headers)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), or None outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


@contextlib.contextmanager
def stage(pipeline: str | None, name: str, span_name: str | None = None, **attributes: Any) -> Iterator[trace.Span]:
    """A span (`span_name`, default the stage's name) and the stage's duration in
    `raylight_agent_stage_duration_seconds`."""
    started = time.perf_counter()
    with tracer.start_as_current_span(span_name or name, attributes=attributes) as span:
        try:
            yield span
        finally:
            STAGE_SECONDS.labels(pipeline or "", name).observe(time.perf_counter() - started)
