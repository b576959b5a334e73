"""What `helm uninstall` runs before it removes the operator (the chart's pre-delete hook), so that no
ModelDeployment or Pipeline, CRD or namespace is ever left Terminating behind an operator that is gone.

Why a hook and not a drain when the operator stops: only the hook knows the operator is going away for
good; a drain on every stop would strip finalizers on each restart and rolling upgrade too.

Two policies (the chart's `uninstall.objects`):
- Delete: delete every ModelDeployment and Pipeline while the operator still runs, and wait until they are
  gone: each Pipeline's collection is kept or dropped by its deletionPolicy, the Ray clusters go with them.
- Orphan: stop the operator (scale its Deployment to zero and wait for its pods), then remove the
  operator's finalizer from every object: they keep serving, and deleting them (or their CRDs) later
  finishes at once; a collection is then always kept, whatever its deletionPolicy.
Both first delete the validating webhook configuration, whose server is about to go: an admission call to
it could otherwise refuse the very patches that release the objects.

    python -m raylight.operator.uninstall --policy Delete|Orphan --release-namespace NS \
        --deployment NAME [--webhook NAME] [--namespace NS ...] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence

from raylight.operator.clients import KubeClient, Obj, RestKube
from raylight.operator.handlers import FINALIZER

KINDS = ("Pipeline", "ModelDeployment")  # Pipelines first: they use the models
OPERATOR_POD = {"app.kubernetes.io/component": "operator"}
log = logging.getLogger("raylight.uninstall")


class UninstallError(Exception):
    """The objects could not be released in time; the message names them and what they wait for."""


def _objects(kube: KubeClient, namespaces: Sequence[str]) -> list[Obj]:
    return [o for kind in KINDS for ns in (namespaces or [""]) for o in kube.list(kind, ns, {})]


def _name(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{obj.get('kind', '')} {meta.get('namespace', '')}/{meta['name']}"


def _wait(done: Callable[[], list[str]], timeout: float, poll: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while left := done():
        if time.monotonic() > deadline:
            raise UninstallError(f"{what} after {timeout:.0f}s: {', '.join(left[:20])}")
        time.sleep(poll)


def uninstall(kube: KubeClient, policy: str, release_namespace: str, deployment: str,
              webhook: str | None = None, namespaces: Sequence[str] = (), timeout: float = 240.0,
              poll: float = 2.0) -> list[str]:
    """Release every ModelDeployment and Pipeline in `namespaces` (empty: all) by `policy`; returns what
    was done, one line each. Raises UninstallError naming what is still there after `timeout` seconds."""
    if policy not in ("Delete", "Orphan"):
        raise ValueError(f"policy must be Delete or Orphan, not {policy!r}")
    done: list[str] = []
    if webhook and kube.delete("ValidatingWebhookConfiguration", "", webhook):
        done.append(f"deleted ValidatingWebhookConfiguration {webhook}")

    if policy == "Delete":
        def remaining() -> list[str]:
            left = _objects(kube, namespaces)
            for obj in left:
                if not obj["metadata"].get("deletionTimestamp"):
                    kube.delete(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
                    done.append(f"deleted {_name(obj)}")
            return [_name(o) for o in left]
        _wait(remaining, timeout, poll, "still being deleted (see their conditions and the operator's log)")
        return done

    if kube.patch("Deployment", release_namespace, deployment, {"spec": {"replicas": 0}}) is not None:
        done.append(f"scaled Deployment {deployment} to 0")
    _wait(lambda: [p["metadata"]["name"] for p in kube.list("Pod", release_namespace, OPERATOR_POD)
                   if p["metadata"].get("name", "").startswith(f"{deployment}-")],
          timeout, poll, "operator pods still running")
    def holding() -> list[str]:
        left = []
        for obj in _objects(kube, namespaces):
            meta = obj["metadata"]
            finalizers = meta.get("finalizers") or []
            if FINALIZER not in finalizers:
                continue
            kept = [f for f in finalizers if f != FINALIZER]
            try:  # resourceVersion makes it a compare-and-swap: a concurrent change answers 409, tried again
                kube.patch(obj["kind"], meta["namespace"], meta["name"],
                           {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}})
                done.append(f"released {_name(obj)}")
            except Exception as exc:  # reported by name below if it persists
                log.warning(f"{_name(obj)}: {exc}")
                left.append(_name(obj))
        return left
    _wait(holding, timeout, poll, f"still carrying {FINALIZER}")
    return done


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m raylight.operator.uninstall",
                                     description="release every ModelDeployment and Pipeline before uninstall")
    parser.add_argument("--policy", choices=("Delete", "Orphan"), required=True)
    parser.add_argument("--release-namespace", required=True)
    parser.add_argument("--deployment", required=True, help="the operator's Deployment")
    parser.add_argument("--webhook", help="the chart's ValidatingWebhookConfiguration")
    parser.add_argument("--namespace", dest="namespaces", action="append", default=[],
                        help="a watched namespace (repeat; none: every namespace)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        for line in uninstall(RestKube(), args.policy, args.release_namespace, args.deployment, args.webhook,
                              args.namespaces, args.timeout):
            log.info(line)
    except UninstallError as exc:
        log.error(f"uninstall cannot finish: {exc}. Fix that, or run `helm uninstall --no-hooks` and release "
                  "the objects by hand (docs/install-on-a-cluster.md, Uninstall).")
        return 1
    log.info("every ModelDeployment and Pipeline is released")
    return 0


if __name__ == "__main__":
    sys.exit(main())
