"""The `helm install` and `helm upgrade` commands the docs show for charts/raylight, rendered with `helm template`
and the very same flags: a value the chart does not have (the chart's schema refuses it), or a `--set` that
breaks a template, fails here. The blocks are cluster-only under docs/testing.md's docs-test rules; this is how
one machine checks them."""

from __future__ import annotations

import shlex

import pytest
import yaml
from docs_blocks import Block, collect, commands
from helmtool import ROOT, helm_run

DROPPED = {"--create-namespace", "--reuse-values", "--wait", "--atomic"}  # what only a release on a cluster means
INSTALLS = [(b, c) for b in collect()[0] if b.kind == "shell" and b.action == "cluster-only"
            for c in commands(b.code) if c.startswith(("helm install ", "helm upgrade ")) and " charts/raylight " in c]


def test_the_docs_show_helm_installs_of_the_chart() -> None:
    files = {b.file for b, _ in INSTALLS}
    assert files == {"README.md", "docs/install-on-a-cluster.md"}, INSTALLS


@pytest.mark.parametrize(("block", "command"), INSTALLS, ids=[f"{b.id}:{c.split()[1]}" for b, c in INSTALLS])
def test_each_helm_command_of_the_docs_renders_the_chart(helm: str, block: Block, command: str) -> None:
    args = [str(ROOT / a) if a == "charts/raylight" else a for a in shlex.split(command)[2:] if a not in DROPPED]
    objects = [o for o in yaml.safe_load_all(helm_run(helm, "template", *args)) if o]
    assert any(o["kind"] == "Deployment" for o in objects), f"{block.id}: no operator Deployment"
