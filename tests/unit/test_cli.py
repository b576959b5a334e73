"""`raylight validate` and `raylight render` as users run them: exit codes, stdout and stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def raylight(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raylight.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_validate_accepts_the_examples() -> None:
    result = raylight("validate", "-f", "examples/")
    assert result.returncode == 0, result.stderr
    assert "9 manifest(s) valid for one machine" in result.stderr  # examples/eval/ferry adds a Pipeline
    # the gpu-cluster example's sources are plain Kubernetes objects, left to kubectl
    assert "not Raylight's, left to kubectl: ConfigMap/legal-faq, PersistentVolumeClaim/legal-docs" in result.stderr


def test_validate_prints_one_line_per_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: raylight.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: m}\n"
        "spec: {task: chat, model: {source: 'hf://a/b', license: mit}, resources: {memory: lots}, colour: red}\n"
        "---\n"
        "apiVersion: raylight.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec: {embedder: {modelDeployment: e}, llm: {modelDeployment: m}, chunking: {size: 10}}\n"
    )
    result = raylight("validate", "-f", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert f"{bad}: ModelDeployment/m: spec.resources.memory: must be a Kubernetes quantity such as 500m, 4Gi or 16G" \
        in lines
    assert f"{bad}: ModelDeployment/m: spec.colour: unknown field" in lines
    assert any(line.startswith(f"{bad}: Pipeline/p: spec.chunking.size: ") for line in lines)
    assert result.stdout == ""


def test_render_prints_a_yaml_stream_of_kubernetes_objects() -> None:
    result = raylight("render", "-f", "examples/quickstart", "--namespace", "team-a")
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("RayService", "minilm"), ("RayService", "smollm"), ("RayService", "handbook-agent"),
        ("ConfigMap", "handbook-ingest-plan"), ("RayJob", objects[-1]["metadata"]["name"])]
    assert all(o["metadata"]["namespace"] == "team-a" for o in objects)


def test_render_refuses_invalid_input_with_the_same_messages(tmp_path: Path) -> None:
    manifest = "apiVersion: raylight.io/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec: {}\n"
    (tmp_path / "m.yaml").write_text(manifest)
    result = raylight("render", "-f", str(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    assert f"{tmp_path / 'm.yaml'}: Pipeline/p: spec.embedder: Field required" in result.stderr


def test_missing_file_is_one_clear_line() -> None:
    result = raylight("validate", "-f", "does-not-exist.yaml")
    assert result.returncode == 1
    assert result.stderr.strip() == "does-not-exist.yaml: ?/?: no such file or directory"


def test_path_hint_names_this_interpreters_scripts_folder_however_the_cli_was_started(monkeypatch) -> None:
    import sysconfig

    from raylight.cli.platform import _on_path_hint

    scripts = Path(sysconfig.get_path("scripts"))
    monkeypatch.setattr(sys, "argv", [str(ROOT / "operator/raylight/cli/__main__.py")])  # `python -m raylight.cli`
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    hint = _on_path_hint()
    assert hint is not None and str(scripts) in hint
    if (scripts / "raylight").exists():  # installed: on PATH, no hint
        monkeypatch.setenv("PATH", f"{scripts}:/usr/bin:/bin")
        assert _on_path_hint() is None
