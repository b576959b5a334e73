"""`raylight up | status | ask | down`: the local platform's commands (its work is in `raylight.local`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from raylight.api.types import Pipeline
from raylight.cli.output import fail, load_manifests
from raylight.local import registry
from raylight.local import state as st
from raylight.local.console import say
from raylight.local.plan import Plan, cpus_needed, local_problems
from raylight.local.platform import (
    UpError,
    agent_token,
    apply,
    bearer,
    check_weights,
    join_as_driver,
    running_state,
    start_platform,
)

log = logging.getLogger("raylight.local")

ASK_TIMEOUT_S = 600.0


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser().resolve()


def _on_path_hint() -> str | None:
    """The one line that puts `raylight` on PATH, when this shell would not find this installation's command.

    The command lives in the scripts folder of the interpreter that runs us (`sysconfig`'s "scripts" path:
    the venv's bin/), whether we were started as `raylight` or as `python -m raylight.cli`."""
    import shutil
    import sysconfig

    here = Path(sysconfig.get_path("scripts"))
    found = shutil.which("raylight")
    if found and Path(found).parent.resolve() == here.resolve():
        return None
    activate = here / "activate"
    return f". {activate}" if activate.exists() else f"export PATH={here}:$PATH"


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
    from raylight.local import procs

    data_dir = _data_dir(args)
    join_as_driver(data_dir / st.LOG_DIR / "up.log")
    manifests, rc = load_manifests(list(args.files), local_problems)
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
            say(f"applying to the platform running on {state['url']} (pid {state['daemon_pid']})")
        else:
            if state is not None:  # left over from a platform that died: clear it first
                procs.stop_platform(state)
                st.remove_state(data_dir)
            state = start_platform(data_dir, args.port, cpus_needed(manifests))
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
    registry.record(data_dir, state)
    print_endpoints(plan, state, data_dir)
    hint = _on_path_hint()
    if hint:
        print(f"  raylight is not on this shell's PATH; to use it from any directory: {hint}")
    return 0


def _cleanup_failed(state: dict[str, Any] | None, data_dir: Path, message: str) -> int:
    """A failed first `up` stops the platform it started; a failed re-apply leaves the running one."""
    _disconnect()
    if state is not None:
        from raylight.local import procs

        procs.stop_platform(state)
        st.remove_state(data_dir)
    return fail(message)


def _disconnect() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


# ---------------------------------------------------------------- status, ask, down



def status_command(args: argparse.Namespace) -> int:
    import httpx

    data_dir = _data_dir(args)
    try:
        state = running_state(data_dir)
    except UpError as exc:
        return fail(str(exc))
    try:
        readyz = httpx.get(f"{state['url']}/readyz", timeout=30, headers=bearer(state)).json()
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
                          "ready": bool(readyz.get("ready")), "resources": resources,
                          "sizing": state.get("sizing", {})}))
        return 0
    rows = [("KIND", "NAME", "READY", "ENDPOINT")]
    rows += [(r["kind"], r["name"], "yes" if r["ready"] else "no", r["endpoint"]) for r in resources]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"platform on {state['url']} (pid {state['daemon_pid']}, data {data_dir})")
    for row in rows:
        print(f"{row[0]:<{width[0]}}  {row[1]:<{width[1]}}  {row[2]:<{width[2]}}  {row[3]}")
    return 0


def ask_command(args: argparse.Namespace) -> int:
    import httpx

    data_dir = _data_dir(args)
    try:
        state = running_state(data_dir)
    except UpError as exc:
        return fail(str(exc))
    if st.resource_key("Pipeline", args.pipeline) not in state.get("resources", {}):
        known = sorted(e["name"] for e in state.get("resources", {}).values() if e["kind"] == "Pipeline")
        return fail(f"no pipeline named {args.pipeline!r} is running; running: {', '.join(known) or 'none'}")
    body: dict[str, Any] = {"input": args.question}
    if args.thread:
        body["thread_id"] = args.thread
    token = agent_token(state)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.post(f"{state['url']}/v1/pipelines/{args.pipeline}/invoke", json=body, headers=headers,
                          timeout=ASK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return fail(f"the pipeline {args.pipeline} did not answer: {exc}")
    try:
        answer = resp.json()
    except ValueError:
        return fail(f"the pipeline {args.pipeline} answered HTTP {resp.status_code} with a body that is not JSON")
    if resp.status_code != 200:
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else None
        return fail(f"the pipeline {args.pipeline} refused (HTTP {resp.status_code}): {message or answer}")
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
        say(f"(thread {answer['thread_id']}: continue with --thread {answer['thread_id']})")
    return 0


def down_command(args: argparse.Namespace) -> int:
    from raylight.local import procs

    data_dir = _data_dir(args)
    state = st.read_state(data_dir)
    if state is None:
        say(f"no platform is running from {data_dir}; nothing to stop")
        return 0
    say(f"stopping the platform on {state.get('url')} (pid {state.get('daemon_pid')}) ...")
    count = procs.stop_platform(state)
    left = procs.platform_processes(state)
    if left:
        return fail(f"could not stop {len(left)} process(es) of the platform: "
                     f"{', '.join(str(p.pid) for p in left)}")
    st.remove_state(data_dir)
    registry.forget(data_dir)
    session = state.get("session_dir")
    kept = f"; Ray's session folder {session} holds its logs" if session and Path(session).exists() else ""
    say(f"stopped {count} process(es); kept on disk: the data directory {data_dir} (store, threads, logs; "
        f"`rm -r {data_dir}` removes it){kept}")
    return 0
