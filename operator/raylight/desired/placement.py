"""Can a rendered RayService ever become Ready? A pure placement check (the way Ray's scheduler and
KubeRay's autoscaler would see it): every Serve deployment's replica must fit one Ray node (a worker group's
pod, or the head where no workers take replicas), and `max` replicas of every deployment together must fit
the nodes the worker groups can grow to (`maxReplicas`, or `replicas` without the autoscaler).

What a node offers follows KubeRay: `rayStartParams` (num-cpus, num-gpus, memory) where set, else the
container's limits (CPUs rounded up, memory in bytes, GPUs from the vendor's device resource). What a replica
asks for follows the application's builder: `model_deployment_options`/`agent_deployment_options` for the
project's own applications, and ray.serve.llm's placement bundles (one CPU for the replica, plus
tensor_parallel_size x pipeline_parallel_size GPUs) for vLLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from raylight.api.names import AGENT_APP_IMPORT, GATEWAY_IMPORT, MODEL_APP_IMPORT, VLLM_APP_IMPORT
from raylight.api.quantity import quantity_bytes
from raylight.api.serve import (
    AgentAppArgs,
    GatewayArgs,
    ModelAppArgs,
    agent_deployment_options,
    gateway_deployment_options,
    model_deployment_options,
)
from raylight.governance.accelerators import VENDORS, Vendor, vendor_of

Aspect = Literal["resources", "replicas", "cluster"]
_ACCEL = "accelerator_type:"


@dataclass(frozen=True)
class PlacementProblem:
    """`aspect` says what to change: a replica's resources, the replica count, or the cluster itself."""

    aspect: Aspect
    message: str


@dataclass
class Node:
    group: str
    cpus: float
    gpus: float
    memory: int | None  # bytes; None: unlimited (no memory limit on the container)
    vendor: Vendor | None  # whose devices the pod asks for
    free: dict[str, float] = field(default_factory=dict)

    def offers(self) -> str:
        gpus = f", {self.gpus:g} {self.vendor.k8s_resource}" if self.vendor and self.gpus else ""
        memory = f", {self.memory / 2**30:.3g} GiB" if self.memory is not None else ""
        return f"{self.cpus:g} CPU{gpus}{memory}"


@dataclass(frozen=True)
class Deployment:
    name: str  # app/deployment, for messages
    cpus: float
    gpus: float
    memory: int
    accelerator_type: str | None
    max_replicas: int

    def asks(self) -> str:
        parts = [f"{self.cpus:g} CPU"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU" + (f" ({self.accelerator_type})" if self.accelerator_type else ""))
        if self.memory:
            parts.append(f"{self.memory / 2**30:.3g} GiB")
        return ", ".join(parts)


def _cpu_quantity(value: Any) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _node(group: str, spec: dict[str, Any], problems: list[PlacementProblem]) -> Node:
    start = spec.get("rayStartParams") or {}
    containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
    limits = (containers[0].get("resources") or {}).get("limits") or {} if containers else {}
    devices = {v.k8s_resource: v for v in VENDORS}
    asked = [(devices[k], int(v)) for k, v in limits.items() if k in devices and int(v) > 0]
    if len(asked) > 1:
        problems.append(PlacementProblem("cluster", f"{group}: a pod asks for devices of several vendors {asked}"))
    vendor, device_count = asked[0] if asked else (None, 0)
    limit_cpus = math.ceil(_cpu_quantity(limits["cpu"]) - 1e-9) if "cpu" in limits else None
    cpus = float(start["num-cpus"]) if "num-cpus" in start else float(limit_cpus or 0)
    if limit_cpus is not None and cpus > limit_cpus:
        problems.append(PlacementProblem("cluster", f"{group}: Ray is told num-cpus {cpus:g}, but the pod has "
                                         f"{limits['cpu']} CPU"))
    gpus = float(start["num-gpus"]) if "num-gpus" in start else float(
        device_count if vendor and vendor.ray_resource == "GPU" else 0)
    if gpus > device_count:
        problems.append(PlacementProblem("cluster", f"{group}: Ray is told num-gpus {gpus:g}, but the pod asks "
                                         f"for {device_count} GPU device(s)"))
    memory = int(start["memory"]) if "memory" in start else (
        quantity_bytes(str(limits["memory"])) if "memory" in limits else None)
    return Node(group, cpus, gpus, memory, vendor)


def _nodes(rayservice: dict[str, Any], problems: list[PlacementProblem]) -> list[tuple[Node, int]]:
    """(node, how many) for the head and each worker group, at their largest."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    out = [(_node("head", cluster["headGroupSpec"], problems), 1)]
    for group in cluster.get("workerGroupSpecs") or []:
        count = group.get("maxReplicas", group.get("replicas", 0)) if autoscaling else group.get("replicas", 0)
        if group.get("suspend"):
            count = 0
        out.append((_node(group["groupName"], group, problems), int(count)))
    return out


def _replicas(options: dict[str, Any]) -> int:
    if "autoscaling_config" in options:
        return int(options["autoscaling_config"].get("max_replicas", 1))
    return int(options.get("num_replicas", 1))


def _from_options(name: str, options: dict[str, Any]) -> Deployment:
    actor = options.get("ray_actor_options") or {}
    return Deployment(name, float(actor.get("num_cpus", 1)), float(actor.get("num_gpus", 0)),
                      int(actor.get("memory", 0)), actor.get("accelerator_type"), _replicas(options))


def _vllm(app: str, config: dict[str, Any]) -> Deployment:
    engine = config.get("engine_kwargs") or {}
    devices = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
    deployment = config.get("deployment_config") or {}
    actor = deployment.get("ray_actor_options") or {}
    # ray.serve.llm: the replica actor (1 CPU unless ray_actor_options say otherwise) joins the first of
    # tensor_parallel x pipeline_parallel GPU bundles; one replica is placed on one node here (one pod each).
    return Deployment(f"{app}/LLMServer", float(actor.get("num_cpus", 1)),
                      float(actor.get("num_gpus", 0)) + devices, int(actor.get("memory", 0)),
                      config.get("accelerator_type"), _replicas(deployment))


def deployments(rayservice: dict[str, Any]) -> list[Deployment]:
    """What each Serve deployment of a rendered RayService asks per replica, and its most replicas."""
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"]) or {}
    out: list[Deployment] = []
    for app in config.get("applications") or []:
        name, import_path, args = app.get("name", "?"), app.get("import_path"), app.get("args") or {}
        if import_path == MODEL_APP_IMPORT:
            out.append(_from_options(f"{name}/ModelServer",
                                     model_deployment_options(ModelAppArgs.model_validate(args).spec)))
        elif import_path == AGENT_APP_IMPORT:
            out.append(_from_options(f"{name}/AgentServer",
                                     agent_deployment_options(AgentAppArgs.model_validate(args).spec)))
        elif import_path == GATEWAY_IMPORT:  # on the head, no CPU
            out.append(_from_options(f"{name}/Gateway", gateway_deployment_options(GatewayArgs.model_validate(args))))
        elif import_path == VLLM_APP_IMPORT:
            out += [_vllm(name, c) for c in args.get("llm_configs") or []]
        else:
            raise ValueError(f"unknown Serve application {import_path!r}: cannot say what it asks for")
        for d in app.get("deployments") or []:  # options written into the config override the builder's
            if d.get("ray_actor_options") or "num_replicas" in d or "autoscaling_config" in d:
                raise ValueError(f"{name}: deployment options in the Serve config are not checked")
    return out


def _fits(d: Deployment, node: Node, free: dict[str, float]) -> bool:
    if d.accelerator_type and (node.vendor is None or vendor_of(d.accelerator_type) is not node.vendor):
        return False
    if d.gpus and not node.gpus:
        return False
    need = {"CPU": d.cpus, "GPU": d.gpus, "memory": float(d.memory)}
    return all(need[k] <= free[k] + 1e-9 for k in need if need[k])


def check_placement(rayservice: dict[str, Any]) -> list[PlacementProblem]:
    """Empty when every Serve replica of this RayService can be placed at its most replicas."""
    problems: list[PlacementProblem] = []
    nodes = _nodes(rayservice, problems)
    wanted = deployments(rayservice)
    pool: list[tuple[Node, dict[str, float]]] = [
        (node, {"CPU": node.cpus, "GPU": node.gpus, "memory": math.inf if node.memory is None else node.memory})
        for node, count in nodes for _ in range(count)]
    name = rayservice["metadata"]["name"]
    for d in sorted(wanted, key=lambda d: (d.gpus, d.cpus, d.memory), reverse=True):
        kinds = [node for node, _ in nodes]
        fitting = [n for n in kinds if _fits(d, n, {"CPU": n.cpus, "GPU": n.gpus,
                                                    "memory": math.inf if n.memory is None else n.memory})]
        if not fitting:
            vendor = f" of {vendor_of(d.accelerator_type).name}" if d.accelerator_type else ""
            offers = "; ".join(f"{n.group}: {n.offers()}" for n in kinds)
            problems.append(PlacementProblem("resources", f"RayService {name}: a {d.name} replica asks for "
                                             f"{d.asks()}{vendor}, more than any Ray node offers ({offers})"))
            continue
        placed = 0
        for node, free in pool:
            while placed < d.max_replicas and _fits(d, node, free):
                free["CPU"] -= d.cpus
                free["GPU"] -= d.gpus
                free["memory"] -= d.memory
                placed += 1
            if placed == d.max_replicas:
                break
        if placed < d.max_replicas:
            groups = ", ".join(f"{n.group} x{c}" for n, c in nodes if c and n in fitting)
            problems.append(PlacementProblem("replicas", f"RayService {name}: {d.max_replicas} {d.name} replicas "
                                             f"at most, but its Ray nodes ({groups or 'none'}) hold only {placed}"))
    return problems
