"""`raylight cache`: the weight cache (spec.cache). `pull` fills entries (the operator's prefetch Job runs
`pull --plan-json`; on one machine `up` pulls by itself), `list` shows them and which manifests use them, and
`prune` removes the entries no given manifest references: the only way an entry is ever deleted."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from raylight.api.cache import CachePlan, cache_plan
from raylight.api.types import ModelDeployment
from raylight.cli.output import fail, load_manifests, quiet_logging
from raylight.local.console import say


def _plans(files: list[Path] | None) -> tuple[dict[str, list[str]], list[CachePlan], int]:
    """(entry -> the ModelDeployments pinning it, their plans, exit code) from the manifests."""
    users: dict[str, list[str]] = {}
    plans: list[CachePlan] = []
    if not files:
        return users, plans, 0
    manifests, rc = load_manifests(files)
    if rc:
        return users, plans, rc
    for m in manifests:
        if isinstance(m.resource, ModelDeployment) and (plan := cache_plan(m.resource.spec)) is not None:
            users.setdefault(plan.entry, []).append(m.resource.metadata.name)
            plans.append(plan)
    return users, plans, 0


def cache_command(args: argparse.Namespace) -> int:
    quiet_logging()
    from raylight_pipelines.cache import CacheError, cache_root, entries, prune, pull
    from raylight_pipelines.weights import WeightsError

    root = Path(args.root).expanduser() if args.root else cache_root()
    users, plans, rc = _plans(args.files)
    if rc:
        return rc
    if args.action == "pull":
        if args.plan_json:
            try:
                plans = [CachePlan.model_validate_json(args.plan_json)]
            except ValueError as exc:
                return fail(f"--plan-json: not a cache plan: {str(exc).splitlines()[0]}")
        if not plans:
            return fail("nothing to pull: give manifests with -f whose ModelDeployments set spec.cache "
                        "(or a plan with --plan-json)")
        reports: list[dict[str, Any]] = []
        for plan in plans:
            try:
                marker = pull(plan, root, say=say)
            except (CacheError, WeightsError, OSError) as exc:
                report = {"phase": "Failed", "path": plan.entry, "error": str(exc)[:3000]}
                _report(args, report)
                return fail(str(exc))
            reports.append(marker.report(plan.entry))
            say(f"{plan.entry}: complete ({len(marker.files)} files, {marker.bytes} bytes)")
        _report(args, reports[0] if len(reports) == 1 else {"phase": "Succeeded", "entries": reports})
        return 0
    found = entries(root) if root.is_dir() else []
    if args.action == "list":
        rows: list[dict[str, Any]] = [{"entry": e, "complete": m is not None, "bytes": size,
                                       "usedBy": users.get(e, [])} for e, m, size in found]
        if args.json:
            print(json.dumps({"root": str(root), "entries": rows}))
        else:
            print(f"{root}:")
            for r in rows:
                used = ", ".join(r["usedBy"]) if args.files else "-"
                print(f"  {r['entry']}  {'complete' if r['complete'] else 'INCOMPLETE'}  {r['bytes']} bytes  "
                      f"used by: {used or 'nothing in the manifests'}")
        return 0
    if not args.files:
        return fail("prune removes the entries no manifest references: give every manifest that uses this cache "
                    "with -f FILE|DIR")
    removed = [e for e, _, _ in found if e not in users] if args.dry_run else prune(users, root)
    if args.json:
        print(json.dumps({"root": str(root), "removed" if not args.dry_run else "wouldRemove": removed}))
    else:
        for e in removed:
            print(f"{'would remove' if args.dry_run else 'removed'} {e}")
    return 0


def _report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The last line on stdout and, with --report, the file the operator reads back (a Job's termination log)."""
    line = json.dumps(report)
    if args.json:
        print(line, flush=True)
    if args.report:
        with contextlib.suppress(OSError):
            Path(args.report).write_text(line[:4096], encoding="utf-8")
