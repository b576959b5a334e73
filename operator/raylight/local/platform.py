"""The local platform: the same manifests on one machine, no cluster (`raylight up | status | ask | down`
are its commands, in `raylight.cli.platform`).

`up` validates the manifests, starts (or reuses) the platform daemon that owns a Ray on 127.0.0.1, applies
every ModelDeployment and Pipeline as Serve applications built by the operator's own builders, ingests the
Pipelines' sources into the embedded Qdrant and puts one gateway in front of everything on one port.
Applying again after an edit redeploys only applications whose config changed (Serve keeps the others
running untouched) and removes resources that are gone from the manifests, like `kubectl apply`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from raylight.api.connections import IngestionPlan
from raylight.api.manifests import Manifest
from raylight.api.types import ModelDeployment, Pipeline
from raylight.local import state as st
from raylight.local.console import progress, say
from raylight.local.plan import Plan, build_plan, local_ingestion_plan

log = logging.getLogger("raylight.local")

DAEMON_START_TIMEOUT_S = 300.0
APPS_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 180.0


class UpError(Exception):
    """One sentence for the user; `up` prints it and exits 1."""


class RayNotices(io.TextIOBase):
    """A driver's standard output that sends the lines Ray prints on its raylet's behalf ("(raylet) WARNING: 10
    PYTHON worker processes have been started ...": pushed to every driver whatever `log_to_driver` says) to
    `log`, and everything else to `terminal`, line by line."""

    def __init__(self, terminal: TextIO, log: TextIO) -> None:
        self.terminal, self.log = terminal, log
        self._line = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def fileno(self) -> int:
        return self.terminal.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.terminal.encoding

    @property
    def buffer(self) -> Any:  # bytes written here are not filtered (Ray writes text)
        return self.terminal.buffer

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            (self.log if "(raylet)" in line else self.terminal).write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self._line and "(raylet)" not in self._line:  # a prompt or progress piece without its newline yet
            self.terminal.write(self._line)
            self._line = ""
        self.terminal.flush()
        self.log.flush()


def join_as_driver(log_path: Path) -> None:
    """Make this process a quiet driver of the platform's Ray: what Ray says that a user cannot act on goes to
    `log_path` (e.g. `DATA_DIR/logs/up.log`), the terminal keeps Raylight's own lines.

    Ray's native code (the core worker's "max_restarts > 0" notice about Ray Data's actors, logging.cc's
    level line) writes to file descriptor 2, so fd 2 is pointed at the log while Python's `sys.stderr` keeps
    a duplicate of the terminal; Python warnings (Ray Data's concurrency notices) go to the same log, and so do
    the raylet's notices Ray prints on standard output (`RayNotices`)."""
    from raylight.local.procs import PLATFORM_ENV

    for key, value in PLATFORM_ENV.items():  # this process joins the platform's Ray as a driver
        os.environ.setdefault(key, value)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = terminal
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    to_log = logging.FileHandler(log_path)
    to_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    warnings = logging.getLogger("py.warnings")
    warnings.addHandler(to_log)
    warnings.propagate = False
    # Ray Data configures its own loggers when it first runs; its notice that progress bars are off (`up` draws
    # its own) is the one line of it to drop.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    sys.stdout = RayNotices(sys.stdout, open(log_path, "a", buffering=1, encoding="utf-8"))  # noqa: SIM115


def check_weights(manifests: list[Manifest]) -> None:
    """Every model's weights are on this machine (before anything starts). A model with spec.cache is pulled
    into this machine's weight cache first (once: a complete entry with the pinned digests is kept), the folder
    that `ingest` and `finetune` read the same pinned weights from."""
    from raylight_pipelines.cache import cache_root, pull
    from raylight_pipelines.weights import WeightsError, resolve

    from raylight.api.cache import cache_plan

    for m in manifests:
        if isinstance(m.resource, ModelDeployment):
            spec = m.resource.spec.resolved()
            assert spec.model is not None
            try:
                plan = cache_plan(spec)
                if plan is not None:
                    pull(plan, cache_root(), say=say)
                resolve(spec.model, cache=spec.cache)
            except WeightsError as exc:
                raise UpError(f"ModelDeployment {m.resource.metadata.name}: {exc}") from None


def start_platform(data_dir: Path, port: int, cpus_needed: int) -> dict[str, Any]:
    """Start the daemon (its Ray sized from this machine and the `cpus_needed` of the manifests' replicas:
    `raylight.local.sizing`) and wait for its state file; on failure nothing it started is left running."""
    from raylight.local import procs

    if procs.port_in_use(port):
        raise UpError(f"port {port} on 127.0.0.1 is already in use; stop what uses it or pick another "
                      "with --port")
    log_path = data_dir / st.LOG_DIR / "platform.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    say(f"starting Ray on 127.0.0.1 (Serve on port {port}, logs in {log_path}) ...")
    t0 = time.monotonic()
    proc, log_path = procs.spawn_daemon(data_dir, port, cpus_needed)
    while time.monotonic() - t0 < DAEMON_START_TIMEOUT_S:
        state = st.read_state(data_dir)
        if state and state.get("daemon_pid") == proc.pid:
            say(f"  Ray ready in {time.monotonic() - t0:.0f} s")
            return state
        if proc.poll() is not None:
            reason = procs.daemon_failure(log_path, offset) or f"it exited with status {proc.returncode}"
            raise UpError(f"Ray did not start: {reason} (see {log_path})")
        time.sleep(0.3)
    procs.stop_platform({"daemon_pid": proc.pid, "processes": procs.identities([proc.pid])})
    raise UpError(f"Ray did not start within {DAEMON_START_TIMEOUT_S:.0f} s (see {log_path})")


def connect_ray(state: dict[str, Any]) -> None:
    st.join_ray(state["ray_address"])


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
                    say(f"  {label}: ready ({time.monotonic() - t0:.0f} s)")
                    del pending[name]
                elif status == "DEPLOYING":
                    say(f"  {label}: starting (loading the model or agent) ...")
            if app is not None and status in ("DEPLOY_FAILED", "UNHEALTHY"):
                details = [app.message] + [d.message for d in app.deployments.values() if d.message]
                raise UpError(f"{label} failed to start: {_reason(chr(10).join(details))}")
        if pending and time.monotonic() - t0 > timeout:
            raise UpError(f"{', '.join(pending.values())} not ready after {timeout:.0f} s")
        if pending:
            time.sleep(1)


def corpus_fingerprint(run: IngestionPlan, base_dir: Path) -> str | None:
    """A digest of everything an ingestion's outcome depends on, known without reading a document: the
    ingestion plan (sources, chunking, embedder, collection) and each listed file's id, path, size and
    modification time (ns), inline texts by their bytes. None when only reading can tell (a URL or ConfigMap
    source) or a source cannot be listed (its failure must be reported again)."""
    from raylight_pipelines.ingest.documents import Unit, list_sources

    digest = hashlib.sha256(json.dumps(run.to_wire(), sort_keys=True, default=str).encode())
    digest.update(str(base_dir).encode())
    listing = list_sources(list(run.spec.sources), base_dir, run.namespace)
    for entry in listing.entries:
        if not isinstance(entry, Unit) or entry.url is not None or entry.data is not None:
            return None
        digest.update(b"\0" + entry.source_id.encode())
        if entry.inline is not None:
            digest.update(b"\0" + entry.inline.encode() + b"\0" + (entry.inline_title or "").encode())
        elif entry.path is not None:
            try:
                info = os.stat(entry.path)
            except OSError:
                return None
            digest.update(f"\0{entry.path}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ino}".encode())
        else:
            return None
    return digest.hexdigest()


def _unchanged_corpus(run: IngestionPlan, base_dir: Path, data_dir: Path, name: str) -> tuple[str | None, bool]:
    """(the corpus fingerprint, whether the collection already holds exactly this corpus: the same
    fingerprint as the last complete ingestion and still that many points)."""
    from raylight_pipelines.store.qdrant import connect

    fingerprint = corpus_fingerprint(run, base_dir)
    saved = st.saved_corpus(data_dir, name)
    if fingerprint is None or saved is None or saved[0] != fingerprint:
        return fingerprint, False
    store = connect(run.store)
    try:
        return fingerprint, store.count(run.store.collection, run.pipeline) == saved[1]
    finally:
        store.close()


def ingest(plan: Plan, state: dict[str, Any], data_dir: Path) -> None:
    """Sync every Pipeline's sources into its collection (incremental: unchanged chunks are kept), with the
    embedder's replica behind the gateway embedding and the store actor writing."""
    from raylight_pipelines.embed.embedders import EmbedderError, HttpEmbedder
    from raylight_pipelines.ingest import runner as ingestion
    from raylight_pipelines.ingest.chunking import TokenizerError
    from raylight_pipelines.store.qdrant import StoreUnavailable

    models = {r.name: r.manifest.resource for r in plan.models()}
    for r in plan.pipelines():
        pipeline = r.manifest.resource
        assert isinstance(pipeline, Pipeline)
        embedder_md = models.get(pipeline.spec.embedder.model_deployment)
        run = local_ingestion_plan(pipeline, embedder_md if isinstance(embedder_md, ModelDeployment) else None,
                                   data_dir, state, state["url"])
        base_dir = r.manifest.file.parent.resolve()
        t0 = time.monotonic()
        try:
            fingerprint, unchanged = _unchanged_corpus(run, base_dir, data_dir, r.name)
        except StoreUnavailable as exc:
            raise UpError(f"Pipeline {r.name}: ingestion failed: {exc}") from None
        if unchanged:  # no Ray Data run (its workers and actors cost tens of seconds) for nothing to do
            saved = st.saved_corpus(data_dir, r.name)
            say(f"  ingest {r.name}: sources unchanged since the last ingestion ({saved[1] if saved else 0} "
                f"chunks in the collection; {time.monotonic() - t0:.1f} s)")
            continue
        update, close = progress(f"  ingest {r.name}", "document" if ingestion.on_ray_data(run) else "chunk")
        try:
            assert run.embedder.base_url is not None
            embedder = HttpEmbedder(run.embedder.base_url, run.embedder.model, run.embedder.dimensions, timeout=300,
                                    model_id=run.embedder.identity)
            report = ingestion.run(run, base_dir, embedder, progress=update)
        except (EmbedderError, StoreUnavailable, TokenizerError) as exc:
            raise UpError(f"Pipeline {r.name}: ingestion failed: {exc}") from None
        finally:
            close()
        st.save_pipeline_info(data_dir, run, base_dir)
        c = report.counts()
        if fingerprint is not None and not c["failed"] and not c["skipped"]:
            st.save_corpus(data_dir, r.name, fingerprint, int(c["points"]))
        say(f"  ingest {r.name}: {c['added']} added, {c['updated']} updated, {c['unchanged']} unchanged, "
            f"{c['deleted']} deleted, {c['skipped']} skipped, {c['failed']} failed; {c['points']} chunks in "
            f"the collection ({time.monotonic() - t0:.1f} s)")
        for skip in c.get("skips", []):
            say(f"    skipped {skip['source']}: {skip['reason']}")
        for failure in c.get("failures", []):
            say(f"    failed {failure['source']}: {failure['reason']}")


def drop_collections(removed: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """Pipelines removed from the manifests with deletionPolicy Delete lose their collection."""
    from raylight_pipelines.store.qdrant import connect

    from raylight.api.connections import StoreConnection

    for entry in removed:
        if entry.get("kind") == "Pipeline" and entry.get("deletion_policy") == "Delete":
            store = connect(StoreConnection(collection=entry["collection"], actor=state["store_actor"]))
            if store.delete_collection(entry["collection"]):
                say(f"  deleted collection {entry['collection']} (deletionPolicy Delete)")


def bearer(state: dict[str, Any]) -> dict[str, str]:
    """The header that lets the local CLI see its own protected pipelines in /readyz."""
    token = agent_token(state)
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

    from raylight.local.serve import wait_routed

    connect_ray(state)
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
        say(f"{r.kind}/{r.name} {what}")
    removed = [entry for key, entry in old.items() if key not in new]
    for entry in removed:
        say(f"{entry['kind']}/{entry['name']} deleted")

    _connect().deploy_apps(ServeDeploySchema.model_validate({"applications": plan.apps}))
    st.update_state(data_dir, lambda s: s.update(resources=new, applied_at=time.time()))

    models = {r.app["name"]: f"ModelDeployment {r.name}" for r in plan.models()}
    wait_apps({**models, st.GATEWAY_APP: "the gateway"})
    if not wait_routed(url):
        raise UpError(f"Serve's ingress did not answer on {url} within 120 s")
    ingest(plan, state, data_dir)
    drop_collections(removed, state)
    wait_apps({r.app["name"]: f"Pipeline {r.name}" for r in plan.pipelines()})
    wait_ready(url, bearer(state))
    return plan


def running_state(data_dir: Path) -> dict[str, Any]:
    from raylight.local import procs

    state = st.read_state(data_dir)
    if state is None:
        raise UpError(f"no platform is running from {data_dir}; start one with `raylight up -f FILE|DIR"
                      f"{'' if data_dir == Path('.raylight').resolve() else f' --data-dir {data_dir}'}`")
    if not procs.platform_running(state):
        raise UpError(f"the platform from {data_dir} is not running any more (its process "
                      f"{state.get('daemon_pid')} is gone); run `raylight down` to clean up, then `raylight up`")
    return state


def agent_token(state: dict[str, Any]) -> str | None:
    token = os.environ.get("RAYLIGHT_AGENT_TOKEN")
    if token:
        return token
    path = state.get("token_file")
    if path and Path(path).exists():
        return Path(path).read_text().strip()
    return None
