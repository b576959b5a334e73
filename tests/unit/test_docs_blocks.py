"""The docs' blocks, without a platform: the parser, the rule that every shell and Python block is run or marked
with its reason, YAML manifests and fragments validated and rendered, and cluster-only blocks checked as far as
one machine can (bash syntax, Python syntax, their `raylight validate|render` lines run). The runnable blocks
run against the quickstart platform in tests/integration/local/test_docs.py."""

from __future__ import annotations

import contextlib
import io
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from docs_blocks import ROOT, Block, check, collect, expected_labels, parse, raylight_commands, shell_script
from raylight.cli import main

BLOCKS, PROBLEMS = collect()
QUICKSTART_MODELS = ROOT / "examples" / "quickstart" / "models.yaml"
# The smallest valid manifest of each kind a fragment can be part of; the fragment's spec keys replace its own.
BASES: dict[str, dict[str, Any]] = {
    "Pipeline": {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
                 "sources": [{"path": "./docs"}]},
    "ModelDeployment": {"task": "chat", "preset": "qwen2.5-7b-instruct",
                        "resources": {"gpus": 1, "acceleratorType": "H100", "cpus": 8, "memory": "64Gi"}},
}
SAMPLE = """# Title

```bash
echo run me
```

<!-- docs-test: cluster-only: needs kubectl and a cluster -->
```sh
kubectl get md
```

- a list item
  <!-- docs-test: skip: changes the shared state -->
  ```python
  print("x")
  ```

```text
output
```

<!-- docs-test: fragment: Pipeline -->
```yaml
retrieval: {topK: 3}
```
"""


def blocks_of(text: str) -> list[Block]:
    found, problems = parse(text, "x.md")
    assert not problems, problems
    return found


def test_the_parser_finds_every_fenced_block_with_its_language_line_and_marker() -> None:
    found = blocks_of(SAMPLE)
    assert [(b.line, b.lang, b.action) for b in found] == [
        (3, "bash", "run"), (8, "sh", "cluster-only"), (14, "python", "skip"), (18, "text", "none"),
        (23, "yaml", "fragment")]
    assert found[0].code == "echo run me\n"
    assert found[1].marker is not None and found[1].marker.reason == "needs kubectl and a cluster"
    assert found[4].marker is not None and found[4].marker.reason == "Pipeline"
    assert all(not check(b) for b in found)


@pytest.mark.parametrize(("text", "problem"), [
    ("<!-- docs-test: skip: why -->\n\nSome prose.\n\n```bash\ntrue\n```\n", "right before a fenced block"),
    ("Prose <!-- docs-test: skip: why --> inline.\n\n```bash\ntrue\n```\n", "on its own line"),
    ("<!-- docs-test: skip -->\n```bash\ntrue\n```\n", "needs a reason"),
    ("<!-- docs-test: later: why -->\n```bash\ntrue\n```\n", "unknown docs-test action"),
    ("```bash\ntrue\n```\n<!-- docs-test: skip: why -->\n", "right before a fenced block"),
])
def test_a_marker_that_is_misplaced_or_gives_no_reason_is_a_problem(text: str, problem: str) -> None:
    _, problems = parse(text, "x.md")
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_marker_in_a_code_span_is_prose_not_a_marker() -> None:
    _, problems = parse("Write `<!-- docs-test: skip: why -->` before a block.\n", "x.md")
    assert problems == []


@pytest.mark.parametrize(("text", "problem"), [
    ("```\nsome code\n```\n", "fence the block and give it a language"),
    ("Run:\n\n    raylight up -f examples/quickstart\n", "fence the block and give it a language"),
    ("```ruby\nputs 1\n```\n", "fence the block and give it a language"),
    ("```bash\nkubectl apply -f examples/gpu-cluster/\n```\n", "cluster-only"),
    ("```sh\nREGISTRY=r PUSH=1 helm install x charts/raylight\n```\n", "cluster-only"),
    ("```python\nOpenAI(base_url='http://qwen-7b-serve-svc.ai.svc:8000/v1')\n```\n", "cluster-only"),
    ("<!-- docs-test: skip: why -->\n```json\n{}\n```\n", "not code"),
    ("<!-- docs-test: fragment: Secret -->\n```yaml\na: 1\n```\n", "names the kind"),
    ("<!-- docs-test: fragment: Pipeline -->\n```bash\ntrue\n```\n", "only a YAML block"),
])
def test_an_unmarked_block_that_cannot_run_here_breaks_the_rules(text: str, problem: str) -> None:
    [block] = parse(text, "x.md")[0]
    problems = check(block)
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_console_block_runs_its_prompted_commands_and_checks_its_labels() -> None:
    [block] = blocks_of('```console\n$ raylight ask handbook \\\n  "Why?"\nIt is so.\n\nSources:\n  [1] a.md\n```\n')
    assert shell_script(block) == 'raylight ask handbook \\\n  "Why?"\n'
    assert expected_labels(block) == ["Sources:"]


def test_every_block_of_the_docs_is_run_or_marked_with_a_reason() -> None:
    assert PROBLEMS == [], "\n".join(PROBLEMS)
    runs = [b for b in BLOCKS if b.action == "run"]
    assert {b.kind for b in runs} == {"shell", "python"}, "the docs must keep runnable shell and Python examples"


PYTHON = [b for b in BLOCKS if b.kind == "python"]
SHELL = [b for b in BLOCKS if b.kind == "shell"]
MANIFESTS = [b for b in BLOCKS if b.kind == "yaml" and b.action in ("validate", "fragment", "cluster-only")]


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_every_python_block_is_a_python_program(block: Block) -> None:
    compile(block.code, block.id, "exec")  # a top-level `await` or a typo fails here, marked or not


@pytest.mark.parametrize("block", SHELL, ids=[b.id for b in SHELL])
def test_every_shell_block_is_valid_bash(block: Block) -> None:
    out = subprocess.run(["bash", "-n"], input=shell_script(block), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


CLUSTER_RAYLIGHT = [(b, c) for b in SHELL if b.action == "cluster-only" for c in raylight_commands(b.code)]


@pytest.mark.parametrize(("block", "command"), CLUSTER_RAYLIGHT, ids=[b.id for b, _ in CLUSTER_RAYLIGHT])
def test_the_raylight_commands_of_cluster_only_blocks_succeed_here(block: Block, command: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(shlex.split(command)[1:]) == 0, command


def manifest_files(block: Block, folder: Path) -> Path:
    """The block as a manifest folder: as written, or (a fragment) inside the smallest valid one of its kind,
    beside the quickstart's models for a Pipeline to name."""
    if block.action != "fragment":
        (folder / "docs.yaml").write_text(block.code)
        return folder
    assert block.marker is not None
    kind = block.marker.reason
    fragment = yaml.safe_load(block.code)
    own = fragment.get("spec", fragment)
    spec = {**BASES[kind], **own}
    if "model" in own:  # a model of its own, not the base's preset
        spec.pop("preset", None)
    doc = {"apiVersion": "raylight.io/v1alpha1", "kind": kind, "metadata": {"name": "docs"}, "spec": spec}
    (folder / "docs.yaml").write_text(yaml.safe_dump(doc))
    (folder / "models.yaml").write_text(QUICKSTART_MODELS.read_text())
    return folder


def render(folder: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["render", "-f", str(folder)]) == 0
    return [o for o in yaml.safe_load_all(out.getvalue()) if o]


@pytest.mark.parametrize("block", MANIFESTS, ids=[b.id for b in MANIFESTS])
def test_every_manifest_in_the_docs_validates_and_renders(block: Block, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = manifest_files(block, tmp_path)
    assert main(["validate", "--cluster", "-f", str(folder)]) == 0, capsys.readouterr().err
    assert any(o["kind"] == "RayService" for o in render(folder))


@pytest.mark.parametrize("block", MANIFESTS, ids=[b.id for b in MANIFESTS])
def test_the_rayservices_the_docs_manifests_render_are_valid_for_kuberay(
        block: Block, tmp_path: Path, validate_rayservice: Callable[[dict[str, Any]], None]) -> None:
    for obj in render(manifest_files(block, tmp_path)):
        if obj["kind"] == "RayService":
            validate_rayservice(obj)
