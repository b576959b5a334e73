"""`raylight finetune`: train a FineTune's LoRA adapter on Ray Train (the local Ray, or the cluster of the
RayJob that runs `raylight finetune --plan`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raylight.api.training import FineTunePlan
from raylight.api.types import FineTune, ModelDeployment
from raylight.cli.output import fail, load_manifests, quiet_logging
from raylight.local.console import say


def finetune_command(args: argparse.Namespace) -> int:
    quiet_logging()
    if args.plan:
        try:
            plans = [FineTunePlan.model_validate_json(Path(args.plan).read_text(encoding="utf-8"))]
        except (OSError, ValueError) as exc:
            return fail(f"{args.plan}: not a fine-tuning plan: {str(exc).splitlines()[0]}")
    else:
        if not args.files:
            return fail("give manifests with -f FILE|DIR (or a training plan with --plan FILE)")
        manifests, rc = load_manifests(args.files)
        if rc:
            return rc
        from raylight.desired.training import get_finetune_plan

        models = {m.resource.metadata.name: m.resource for m in manifests if isinstance(m.resource, ModelDeployment)}
        tunes = [m.resource for m in manifests if isinstance(m.resource, FineTune)
                 and (not args.name or m.resource.metadata.name == args.name)]
        if not tunes:
            return fail(f"no FineTune{' named ' + repr(args.name) if args.name else ''} in the manifests")
        plans = [get_finetune_plan(ft, "default", models.get(ft.spec.base.model_deployment or "")) for ft in tunes]

    from raylight_pipelines.training.lora import TrainingError, run
    from raylight_pipelines.weights import WeightsError

    results = []
    for plan in plans:
        try:
            summary = run(plan, progress=say)
        except (TrainingError, WeightsError, OSError) as exc:
            step = getattr(exc, "step", None)  # where a started run stopped (a non-finite loss)
            print(json.dumps({"name": plan.name, "phase": "Failed", "message": str(exc),
                              **({"step": step} if step is not None else {})}))
            return fail(f"{plan.name}: {exc}")
        say(f"{plan.name}: {summary['step']} steps, train loss {summary['trainLoss']:.4f}, "
            f"{summary['stepsPerSecond']} steps/s; adapter {summary['adapterUri']}")
        results.append({"name": plan.name, **summary})
    if args.json or args.plan:  # the RayJob's submitter keeps the last JSON line as the run's report
        print(json.dumps(results[0] if len(results) == 1 else {"runs": results}))
    return 0
