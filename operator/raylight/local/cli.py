"""`raylight up | status | ask | down`: the same manifests on one machine, no cluster.

`up` validates the manifests, starts (or reuses) the platform daemon that owns a Ray on 127.0.0.1, applies
every ModelDeployment and Pipeline as Serve applications built by the operator's own builders, ingests the
Pipelines' sources into the embedded Qdrant and puts one gateway in front of everything on one port.
Applying again after an edit redeploys only applications whose config changed (Serve keeps the others
running untouched) and removes resources that are gone from the manifests, like `kubectl apply`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylight.api.manifests import Manifest, load
from raylight.api.types import ModelDeployment, Pipeline
from raylight.api.validate import check_set
from raylight.local import state as st
from raylight.local.plan import Plan, build_plan, cpus_needed, local_problems
from raylight.settings import Settings

log = logging.getLogger("raylight.local")

DAEMON_START_TIMEOUT_S = 300.0
APPS_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 180.0
ASK_TIMEOUT_S = 600.0


class UpError(Exception):
    """One sentence for the user; `up` prints it and exits 1."""


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _setup() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from raylight.local.daemon import PLATFORM_ENV

    for key, value in PLATFORM_ENV.items():  # this process joins the platform's Ray as a driver
        os.environ.setdefault(key, value)


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser().resolve()


# ---------------------------------------------------------------- up


def load_manifests(files: list[Path]) -> tuple[list[Manifest], int]:
    """Parse and check as one set; each problem printed as `FILE: KIND/NAME: FIELD: message`."""
    result = load(files)
    problems = result.problems or (check_set(result.manifests, Settings.from_env().license_policy)
                                   + local_problems(result.manifests))
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems and not result.manifests:
        print(f"no manifests found in {', '.join(str(f) for f in files)}", file=sys.stderr)
        return [], 1
    return result.manifests, 1 if problems else 0


def check_weights(manifests: list[Manifest]) -> None:
    """Every model's weights are on this machine (before anything starts)."""
    from raylight_pipelines.weights import WeightsError, resolve

    from raylight.desired.serve import resolve_spec

    for m in manifests:
        if isinstance(m.resource, ModelDeployment):
            spec = resolve_spec(m.resource.spec)
            assert spec.model is not None
            try:
                resolve(spec.model)
            except WeightsError as exc:
                raise UpError(f"ModelDeployment {m.resource.metadata.name}: {exc}") from None


def start_platform(data_dir: Path, port: int, num_cpus: int) -> dict[str, Any]:
    """Start the daemon and wait for its state file; on failure nothing it started is left running."""
    from raylight.local import procs

    if procs.port_in_use(port):
        raise UpError(f"port {port} on 127.0.0.1 is already in use; stop what uses it or pick another "
                      "with --port")
    log_path = data_dir / st.LOG_DIR / "platform.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    _say(f"starting Ray on 127.0.0.1 (Serve on port {port}, logs in {log_path}) ...")
    t0 = time.monotonic()
    proc, log_path = procs.spawn_daemon(data_dir, port, num_cpus)
    while time.monotonic() - t0 < DAEMON_START_TIMEOUT_S:
        state = st.read_state(data_dir)
        if state and state.get("daemon_pid") == proc.pid:
            _say(f"  Ray ready in {time.monotonic() - t0:.0f} s")
            return state
        if proc.poll() is not None:
            reason = procs.daemon_failure(log_path, offset) or f"it exited with status {proc.returncode}"
            raise UpError(f"Ray did not start: {reason} (see {log_path})")
        time.sleep(0.3)
    procs.stop_platform({"daemon_pid": proc.pid, "processes": procs.identities([proc.pid])})
    raise UpError(f"Ray did not start within {DAEMON_START_TIMEOUT_S:.0f} s (see {log_path})")


def _connect_ray(state: dict[str, Any]) -> None:
    st.join_ray(state["ray_address"])


def _wait_http(url: str, timeout: float) -> None:
    """The gateway answers through Serve's proxy (the proxy's route table fills a moment after deploy)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise UpError(f"Serve's HTTP proxy did not answer on {url} within {timeout:.0f} s")


def _reason(message: str) -> str:
    """The most telling line of a Serve failure message (usually the exception at the end)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:400]
    return (lines[-1] if lines else "no reason given")[:400]


def wait_apps(names: dict[str, str], timeout: float = APPS_TIMEOUT_S) -> None:
    """Wait until each Serve application (name -> label) is RUNNING, printing transitions."""
    from ray import serve

    t0 = time.monotonic()
    seen: dict[str, str] = {}
    pending = dict(names)
    while pending:
        apps = serve.status().applications
        for name, label in list(pending.items()):
            app = apps.get(name)
            status = str(getattr(app.status, "value", app.status)) if app else "NOT_STARTED"
            if status != seen.get(name):
                seen[name] = status
                if status == "RUNNING":
                    _say(f"  {label}: ready ({time.monotonic() - t0:.0f} s)")
                    del pending[name]
                elif status == "DEPLOYING":
                    _say(f"  {label}: starting (loading the model or agent) ...")
            if app is not None and status in ("DEPLOY_FAILED", "UNHEALTHY"):
                details = [app.message] + [d.message for d in app.deployments.values() if d.message]
                raise UpError(f"{label} failed to start: {_reason(chr(10).join(details))}")
        if pending and time.monotonic() - t0 > timeout:
            raise UpError(f"{', '.join(pending.values())} not ready after {timeout:.0f} s")
        if pending:
            time.sleep(1)


def _progress(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A bar on a terminal, else a line every 10 %."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar: dict[str, Any] = {}

        def update_bar(done: int, total: int) -> None:
            if "bar" not in bar:
                bar["bar"] = tqdm(total=total, desc=f"  ingest {label}", unit="chunk", file=sys.stderr)
            bar["bar"].n = done
            bar["bar"].refresh()

        return update_bar, lambda: bar["bar"].close() if "bar" in bar else None

    last = {"step": -1}

    def update_line(done: int, total: int) -> None:
        step = 10 * done // max(total, 1)
        if step != last["step"]:
            last["step"] = step
            _say(f"  ingest {label}: {done}/{total} chunks embedded")

    return update_line, lambda: None


def ingest(plan: Plan, state: dict[str, Any], data_dir: Path) -> None:
    """Sync every Pipeline's sources into its collection (incremental: unchanged chunks are kept)."""
    from raylight_pipelines.chunking import TokenizerError
    from raylight_pipelines.embedders import EmbedderError, HttpEmbedder
    from raylight_pipelines.ingest import run_ingestion, save_pipeline_info, tokenizer_for
    from raylight_pipelines.store import StoreUnavailable

    models = {r.name: r.manifest.resource for r in plan.models()}
    for r in plan.pipelines():
        pipeline = r.manifest.resource
        assert isinstance(pipeline, Pipeline)
        conns = r.app["args"]["connections"]
        emb = conns["embedder"]
        base_dir = r.manifest.file.parent.resolve()
        update, close = _progress(r.name)
        t0 = time.monotonic()
        try:
            embedder = HttpEmbedder(emb["base_url"], emb["model"], emb.get("dimensions"), timeout=300)
            report = run_ingestion(r.name, pipeline.spec, base_dir,
                                   {**conns["store"], "ray_address": state["ray_address"]},
                                   embedder, tokenizer_for(embedder, emb.get("source")), progress=update)
        except (EmbedderError, StoreUnavailable, TokenizerError) as exc:
            raise UpError(f"Pipeline {r.name}: ingestion failed: {exc}") from None
        finally:
            close()
        embedder_md = models.get(pipeline.spec.embedder.model_deployment)
        if isinstance(embedder_md, ModelDeployment):
            save_pipeline_info(data_dir, pipeline, embedder_md, base_dir)
        c = report.counts()
        _say(f"  ingest {r.name}: {c['added']} added, {c['updated']} updated, {c['unchanged']} unchanged, "
             f"{c['deleted']} deleted, {c['skipped']} skipped, {c['failed']} failed; {c['points']} chunks in "
             f"the collection ({time.monotonic() - t0:.1f} s)")
        for skip in c.get("skips", []):
            _say(f"    skipped {skip['source']}: {skip['reason']}")
        for failure in c.get("failures", []):
            _say(f"    failed {failure['source']}: {failure['reason']}")


def drop_collections(removed: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """Pipelines removed from the manifests with deletionPolicy Delete lose their collection."""
    from raylight_pipelines.store import connect

    for entry in removed:
        if entry.get("kind") == "Pipeline" and entry.get("deletion_policy") == "Delete":
            client = connect({"actor": state["store_actor"], "ray_address": state["ray_address"]})
            if client.collection_exists(entry["collection"]):
                client.delete_collection(entry["collection"])
                _say(f"  deleted collection {entry['collection']} (deletionPolicy Delete)")


def _bearer(state: dict[str, Any]) -> dict[str, str]:
    """The header that lets the local CLI see its own protected pipelines in /readyz."""
    token = _token(state)
    return {"Authorization": f"Bearer {token}"} if token else {}


def wait_ready(url: str, headers: dict[str, str], timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{url}/readyz", timeout=30, headers=headers)
            report = resp.json()
            if resp.status_code == 200:
                return report
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    waiting = [f"{r['kind']}/{r['name']}" for r in report.get("resources", []) if not r.get("ready")]
    raise UpError(f"not ready after {timeout:.0f} s: {', '.join(waiting) or 'the gateway'} "
                  "(see `raylight status --json`)")


def apply(manifests: list[Manifest], state: dict[str, Any], data_dir: Path) -> Plan:
    from ray.serve.context import _connect
    from ray.serve.schema import ServeDeploySchema

    _connect_ray(state)
    url = state["url"]
    plan = build_plan(manifests, data_dir, state["port"])
    old: dict[str, Any] = state.get("resources", {})
    new = plan.record()
    changed: dict[str, str] = {}
    for r in plan.resources:
        before = old.get(r.key)
        what = "created" if before is None else "unchanged" if before["spec_hash"] == r.spec_hash else "updated"
        if what != "unchanged":
            changed[r.app["name"]] = f"{r.kind} {r.name}"
        _say(f"{r.kind}/{r.name} {what}")
    removed = [entry for key, entry in old.items() if key not in new]
    for entry in removed:
        _say(f"{entry['kind']}/{entry['name']} deleted")

    _connect().deploy_apps(ServeDeploySchema.model_validate({"applications": plan.apps}))
    st.update_state(data_dir, lambda s: s.update(resources=new, applied_at=time.time()))

    models = {r.app["name"]: f"ModelDeployment {r.name}" for r in plan.models()}
    wait_apps({**models, st.GATEWAY_APP: "the gateway"})
    _wait_http(url, 120)
    ingest(plan, state, data_dir)
    drop_collections(removed, state)
    wait_apps({r.app["name"]: f"Pipeline {r.name}" for r in plan.pipelines()})
    wait_ready(url, _bearer(state))
    return plan


def print_endpoints(plan: Plan, state: dict[str, Any], data_dir: Path) -> None:
    url = state["url"]
    rows = [("KIND", "NAME", "ENDPOINT")]
    for r in plan.resources:
        if r.kind == "Pipeline":
            rows.append((r.kind, r.name, f"{url}/v1/pipelines/{r.name}/invoke   (or model {r.name!r} "
                         f"on {url}/v1/chat/completions)"))
        else:
            task = r.manifest.resource.spec.task  # type: ignore[union-attr]
            path = {"embed": "embeddings", "rerank": "rerank"}.get(task, "chat/completions")
            rows.append((r.kind, r.name, f"{url}/v1/{path}   (model {r.name!r})"))
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    print(f"Raylight is up on {url}  (data: {data_dir})")
    for row in rows:
        print(f"  {row[0]:<{width[0]}}  {row[1]:<{width[1]}}  {row[2]}")
    print(f"  models: {url}/v1/models   health: {url}/healthz, {url}/readyz")
    if any(isinstance(r.manifest.resource, Pipeline) and r.manifest.resource.spec.agent.auth
           for r in plan.resources):
        where = state.get("token_file") or "$RAYLIGHT_AGENT_TOKEN"
        print(f"  agent token (Authorization: Bearer ...): {where}")
    pipelines = plan.pipelines()
    dd = "" if data_dir == Path(".raylight").resolve() else f" --data-dir {data_dir}"
    if pipelines:
        print(f"  ask:  raylight ask {pipelines[0].name} \"your question\"{dd}")
    print(f"  stop: raylight down{dd}")


def up_command(args: argparse.Namespace) -> int:
    _setup()
    from raylight.local import procs

    data_dir = _data_dir(args)
    manifests, rc = load_manifests(list(args.files))
    if rc:
        return rc
    state = st.read_state(data_dir)
    started_here = False
    try:
        check_weights(manifests)
        if procs.platform_running(state):
            assert state is not None
            if state["port"] != args.port:
                raise UpError(f"a platform from {data_dir} is already running on port {state['port']}; "
                              f"run `raylight down --data-dir {data_dir}` first to move it to port {args.port}")
            _say(f"applying to the platform running on {state['url']} (pid {state['daemon_pid']})")
        else:
            if state is not None:  # left over from a platform that died: clear it first
                procs.stop_platform(state)
                st.remove_state(data_dir)
            num_cpus = max(2 * (os.cpu_count() or 2), cpus_needed(manifests) + 4)
            state = start_platform(data_dir, args.port, num_cpus)
            started_here = True
        plan = apply(manifests, state, data_dir)
    except UpError as exc:
        return _cleanup_failed(state if started_here else None, data_dir, str(exc))
    except KeyboardInterrupt:
        _cleanup_failed(state if started_here else None, data_dir, "interrupted")
        raise
    except Exception as exc:  # an unexpected error still leaves no processes behind
        log.debug("up failed", exc_info=True)
        return _cleanup_failed(state if started_here else None, data_dir,
                               f"up failed: {type(exc).__name__}: {exc}")
    print_endpoints(plan, state, data_dir)
    return 0


def _cleanup_failed(state: dict[str, Any] | None, data_dir: Path, message: str) -> int:
    """A failed first `up` stops the platform it started; a failed re-apply leaves the running one."""
    _disconnect()
    if state is not None:
        from raylight.local import procs

        procs.stop_platform(state)
        st.remove_state(data_dir)
    return _fail(message)


def _disconnect() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


# ---------------------------------------------------------------- status, ask, down


def _running_state(data_dir: Path) -> dict[str, Any]:
    from raylight.local import procs

    state = st.read_state(data_dir)
    if state is None:
        raise UpError(f"no platform is running from {data_dir}; start one with `raylight up -f FILE|DIR"
                      f"{'' if data_dir == Path('.raylight').resolve() else f' --data-dir {data_dir}'}`")
    if not procs.platform_running(state):
        raise UpError(f"the platform from {data_dir} is not running any more (its process "
                      f"{state.get('daemon_pid')} is gone); run `raylight down` to clean up, then `raylight up`")
    return state


def status_command(args: argparse.Namespace) -> int:
    import httpx

    data_dir = _data_dir(args)
    try:
        state = _running_state(data_dir)
    except UpError as exc:
        return _fail(str(exc))
    try:
        readyz = httpx.get(f"{state['url']}/readyz", timeout=30, headers=_bearer(state)).json()
    except (httpx.HTTPError, ValueError) as exc:
        readyz = {"ready": False, "resources": [], "error": str(exc)}
    ready = {(r["kind"], r["name"]): r for r in readyz.get("resources", [])}
    resources = []
    for entry in sorted(state.get("resources", {}).values(), key=lambda e: (e["kind"], e["name"])):
        check = ready.get((entry["kind"], entry["name"]), {})
        resources.append({**entry, "ready": bool(check.get("ready")),
                          **({"detail": check["detail"]} if not check.get("ready") and "detail" in check else {})})
    if args.json:
        print(json.dumps({"url": state["url"], "port": state["port"], "ray_address": state["ray_address"],
                          "daemon_pid": state["daemon_pid"], "data_dir": str(data_dir),
                          "ready": bool(readyz.get("ready")), "resources": resources}))
        return 0
    rows = [("KIND", "NAME", "READY", "ENDPOINT")]
    rows += [(r["kind"], r["name"], "yes" if r["ready"] else "no", r["endpoint"]) for r in resources]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"platform on {state['url']} (pid {state['daemon_pid']}, data {data_dir})")
    for row in rows:
        print(f"{row[0]:<{width[0]}}  {row[1]:<{width[1]}}  {row[2]:<{width[2]}}  {row[3]}")
    return 0


def _token(state: dict[str, Any]) -> str | None:
    token = os.environ.get("RAYLIGHT_AGENT_TOKEN")
    if token:
        return token
    path = state.get("token_file")
    if path and Path(path).exists():
        return Path(path).read_text().strip()
    return None


def ask_command(args: argparse.Namespace) -> int:
    import httpx

    data_dir = _data_dir(args)
    try:
        state = _running_state(data_dir)
    except UpError as exc:
        return _fail(str(exc))
    if st.resource_key("Pipeline", args.pipeline) not in state.get("resources", {}):
        known = sorted(e["name"] for e in state.get("resources", {}).values() if e["kind"] == "Pipeline")
        return _fail(f"no pipeline named {args.pipeline!r} is running; running: {', '.join(known) or 'none'}")
    body: dict[str, Any] = {"input": args.question}
    if args.thread:
        body["thread_id"] = args.thread
    token = _token(state)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.post(f"{state['url']}/v1/pipelines/{args.pipeline}/invoke", json=body, headers=headers,
                          timeout=ASK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return _fail(f"the pipeline {args.pipeline} did not answer: {exc}")
    try:
        answer = resp.json()
    except ValueError:
        return _fail(f"the pipeline {args.pipeline} answered HTTP {resp.status_code} with a body that is not JSON")
    if resp.status_code != 200:
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else None
        return _fail(f"the pipeline {args.pipeline} refused (HTTP {resp.status_code}): {message or answer}")
    if args.json:
        print(json.dumps(answer))
        return 0
    print(answer.get("answer", "").strip())
    citations = answer.get("citations") or []
    if citations:
        print("\nSources:")
        for c in citations:
            print(f"  [{c.get('ref')}] {c.get('source')}")
    if answer.get("thread_id"):
        _say(f"(thread {answer['thread_id']}: continue with --thread {answer['thread_id']})")
    return 0


def down_command(args: argparse.Namespace) -> int:
    from raylight.local import procs

    data_dir = _data_dir(args)
    state = st.read_state(data_dir)
    if state is None:
        _say(f"no platform is running from {data_dir}; nothing to stop")
        return 0
    _say(f"stopping the platform on {state.get('url')} (pid {state.get('daemon_pid')}) ...")
    count = procs.stop_platform(state)
    left = procs.platform_processes(state)
    if left:
        return _fail(f"could not stop {len(left)} process(es) of the platform: "
                     f"{', '.join(str(p.pid) for p in left)}")
    st.remove_state(data_dir)
    _say(f"stopped {count} process(es); the data directory {data_dir} is kept")
    return 0
