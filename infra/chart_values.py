"""Values for the Helm chart ``charts/dsdeploy``, computed from a deployment plan.

One function, two callers: ``dsdeploy values`` (writes a values file for GitOps and kubectl users)
and the Pulumi program (hands the same dict to ``helm.v4.Chart``). The chart never re-derives what
the planner decided; it takes tensor parallelism, context length, GPU count and engine flags from
here. Everything not set here keeps the chart's documented default (charts/dsdeploy/values.yaml).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from infra.catalog.schema import CLOUD_PLATFORMS
from infra.chart_options import Option, StackChartOptions
from infra.planner.machines import ENGINE_CPU_MILLIS_PER_GPU, ENGINE_MEMORY_GIB, engine_shm_gib
from infra.quantity import QUANTITY_RULE, is_quantity

if TYPE_CHECKING:  # the planner is pure Python too, but keep this module importable on its own
    from infra.planner import DeploymentPlan

CHART_DIR: Path = Path(__file__).resolve().parent.parent / "charts" / "dsdeploy"

GIB = 1024**3
# DNS-1123 subdomain: what Kubernetes accepts as a Secret name.
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Things that look like a credential rather than the name of a Secret holding one.
_LOOKS_LIKE_KEY = re.compile(r"^(sk-|hf_|ghp_|AKIA)|^[A-Za-z0-9_]{32,}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

# The toleration GPU node pools carry on GKE, EKS (NVIDIA AMI node groups) and most on-prem clusters.
DEFAULT_GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
]
# The planner's quantizations our own server (`dsdeploy serve`) runs, each under the server's name for it (the
# same name: the planner's "bf16", "bnb-8bit" and "bnb-4bit" are the server's); anything else needs vLLM.
SERVER_QUANTIZATION = {name: name for name in ("bf16", "bnb-8bit", "bnb-4bit")}
NATIVE_BYTES_PER_PARAM = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1}
# vLLM flags the chart renders from its own values; every other planner flag goes to engine.extraArgs.
CHART_RENDERED_FLAGS = frozenset(
    {
        "--tensor-parallel-size",
        "--max-model-len",
        "--gpu-memory-utilization",
        "--max-num-seqs",
        "--quantization",
        "--reasoning-parser",
        "--served-model-name",
        "--host",
        "--port",
        "--model",
    }
)


class ChartValuesError(ValueError):
    """The plan and options cannot be turned into chart values (message says why and what to change).

    A message that tells the user to set the checkpoint holds the placeholder ``CHECKPOINT``; each caller
    words it as its users set that option (``worded``); ``str()`` names the ChartOptions field."""

    CHECKPOINT = "{checkpoint}"

    def __init__(self, message: str) -> None:
        self.template = message
        super().__init__(self.worded("ChartOptions(checkpoint=...)"))

    def worded(self, checkpoint_option: str) -> str:
        return self.template.replace(self.CHECKPOINT, checkpoint_option)


def _check_secret_name(value: str | None) -> str | None:
    if value is None:
        return None
    if _LOOKS_LIKE_KEY.search(value):
        raise ValueError(
            "this looks like a credential, not the name of a Kubernetes Secret; "
            "create a Secret holding the key and give its name here"
        )
    if len(value) > 253 or not _SECRET_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid Secret name (lowercase DNS-1123 subdomain)")
    return value


class ChartOptions(StackChartOptions):
    """Deployment choices the plan does not make: the stack's (StackChartOptions), and what the program takes
    from the cloud and platform layers (platform, GPU placement, storage class, the API key Secret's name).
    Fields are set by name (the aliases are the stack's keys), and errors name the field."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        validate_by_name=True,
        validate_by_alias=False,
        loc_by_alias=False,
    )

    gpu_node_selector: Annotated[
        dict[str, str],
        Option(
            "engine.gpu.nodeSelector",
            {"pool": "gpu"},
            flag="--gpu-node-selector",
            metavar="KEY=VALUE",
            bespoke=True,
            stack_key="gpuNodeLabels",
        ),
    ] = Field(default_factory=dict, description="node label of the GPU pool (existing clusters; repeatable)")
    gpu_tolerations: Annotated[
        list[dict[str, Any]] | None,
        Option(
            "engine.gpu.tolerations",
            [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            stack_key="gpuNodeTaints",
        ),
    ] = Field(default=None, description="tolerations of the GPU nodes' taints")
    storage_class: Annotated[
        str | None, Option("modelCache.storageClass", "fast-rwx", flag="--storage-class", stack_key="storageClass")
    ] = Field(default=None, description="StorageClass of the model cache")
    # The smallest volume the cache's storage class provisions (Filestore Basic SSD: 2560 GiB); a larger
    # computed size wins, an explicit model_cache_size is used as given.
    model_cache_min_gib: Annotated[int | None, Option("modelCache.size", 2560, rendered="2560Gi")] = Field(
        default=None, ge=1, description="the smallest volume the cache's storage class provisions, in GiB"
    )
    cloud_api_key_secret: Annotated[
        str, Option("router.cloud.apiKeySecret.name", "team-deepseek", flag="--cloud-api-key-secret")
    ] = Field(default="dsdeploy-deepseek", description="name of the Secret holding the DeepSeek API key (key api-key)")
    # The Secret holding the engine's API key (key "api-key"); None: the chart makes and keeps its own (lookup).
    engine_api_key_secret: Annotated[
        str | None, Option("engine.apiKey.existingSecret", "team-engine-key", flag="--engine-api-key-secret")
    ] = Field(
        default=None,
        description="name of a Secret holding the engine's API key (key api-key); default: the chart "
        "makes one and keeps it with helm lookup, which GitOps renders lack (docs/gitops.md)",
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint(cls, v: str | None) -> str | None:
        if v is not None and not _REPO_ID.match(v):
            raise ValueError(f"{v!r} is not a hub repository id such as org/DeepSeek-R1-Distill-Qwen-32B-AWQ")
        return v

    @field_validator("cloud_api_key_secret")
    @classmethod
    def _cloud_secret(cls, v: str) -> str:
        return _check_secret_name(v) or v

    @field_validator("engine_api_key_secret")
    @classmethod
    def _engine_secret(cls, v: str | None) -> str | None:
        return _check_secret_name(v)

    @field_validator("hf_token_secret")
    @classmethod
    def _hf_secret(cls, v: str | None) -> str | None:
        return _check_secret_name(v)

    @field_validator("model_cache_size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and not is_quantity(v):
            raise ValueError(f"{v!r} is not {QUANTITY_RULE}")
        return v

    @field_validator("hf_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL such as https://hf-mirror.com")
        return v.rstrip("/") if v else v

    @field_validator("gpu_node_selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid label key")
        return v

    @model_validator(mode="after")
    def _replicas(self) -> ChartOptions:
        if self.engine_replicas_max < self.engine_replicas_min:
            raise ValueError(
                f"engine_replicas_max ({self.engine_replicas_max}) is below "
                f"engine_replicas_min ({self.engine_replicas_min})"
            )
        return self


def _gib(n_bytes: float) -> int:
    return max(1, math.ceil(n_bytes / GIB))


def _gpu_placement(plan: DeploymentPlan, options: ChartOptions) -> dict[str, Any]:
    selector = dict(options.gpu_node_selector)
    if not selector and options.platform in CLOUD_PLATFORMS:
        selector = dict(plan.machine(options.platform).node_labels)
    if not selector and options.platform == "existing":
        selector = dict(plan.machine("existing").node_labels or {})
    tolerations = DEFAULT_GPU_TOLERATIONS if options.gpu_tolerations is None else options.gpu_tolerations
    return {"nodeSelector": selector, "tolerations": [dict(t) for t in tolerations]}


def _engine_resources(plan: DeploymentPlan, shm_gib: int) -> dict[str, Any]:
    """Host CPU and memory for one engine pod (the emptyDir at /dev/shm counts against memory); a pod of a
    multi-node replica loads its pipeline stage, about weights / nodes."""
    gpus = plan.gpus_per_replica // plan.nodes_per_replica
    weights = _gib(plan.weight_bytes / plan.nodes_per_replica)
    if gpus == 0:  # CPU serving: the weights live in host memory
        mem_req = weights + 2
        return {
            "requests": {"cpu": "2", "memory": f"{mem_req}Gi"},
            "limits": {"cpu": "8", "memory": f"{mem_req * 2 + shm_gib}Gi"},
        }
    return {
        "requests": {
            "cpu": f"{ENGINE_CPU_MILLIS_PER_GPU * gpus // 1000}",
            "memory": f"{ENGINE_MEMORY_GIB + shm_gib}Gi",
        },
        "limits": {
            "cpu": str(2 * ENGINE_CPU_MILLIS_PER_GPU * gpus // 1000),
            "memory": f"{weights + ENGINE_MEMORY_GIB + shm_gib}Gi",
        },
    }


def _extra_engine_args(engine_args: list[str]) -> list[str]:
    """The planner's vLLM flags that the chart has no dedicated value for, as `--flag=value` items."""
    extra: list[str] = []
    i = 0
    while i < len(engine_args):
        token = engine_args[i]
        flag, _, value = token.partition("=")
        if not value and i + 1 < len(engine_args) and not engine_args[i + 1].startswith("--"):
            value = engine_args[i + 1]
            i += 1
        i += 1
        if flag not in CHART_RENDERED_FLAGS:
            extra.append(f"{flag}={value}" if value else flag)
    return extra


def _checkpoint(plan: DeploymentPlan, options: ChartOptions) -> str:
    """The repository the engine loads: the caller's pre-quantized checkpoint, else the plan's.

    A quantization with no published weights that the engine cannot apply while loading is an error:
    falling back to the original repository would load the full-precision weights (a 32B model in
    bf16 is ~64 GB) onto GPUs sized for the quantized ones.
    """
    if options.checkpoint:
        return options.checkpoint
    if plan.checkpoint:
        return plan.checkpoint
    if options.engine_type == "server" and plan.quantization in SERVER_QUANTIZATION:
        return plan.model_id  # the server quantizes the original weights while loading (bitsandbytes)
    from infra.catalog import load_catalog

    published = load_catalog().model(plan.model_id).published
    known = ", ".join(f"{q} ({', '.join(ids)})" for q, ids in published.items() if q != "gguf-q4") or "none"
    raise ChartValuesError(
        f"quantization {plan.quantization!r}: no pre-quantized {plan.quantization} weights of {plan.model_id} "
        f"are recorded in the catalog, and vLLM does not quantize to {plan.quantization} while loading, so "
        f"the engine would load the original full-precision weights that the plan did not size for. "
        f"Pass the hub id of pre-quantized {plan.quantization} weights of this model "
        f"({ChartValuesError.CHECKPOINT}), or choose a published quantization "
        f"(dsdeploy plan shows which fit the tier): {known}"
    )


def _download_bytes(plan: DeploymentPlan, checkpoint: str) -> int:
    """Bytes the cache must hold: the checkpoint on disk, which is the original weights (not the smaller
    in-GPU size) when vLLM quantizes while loading (fp8, bitsandbytes on the original repo)."""
    if plan.vllm_quantization and checkpoint == plan.model_id:
        from infra.catalog import load_catalog
        from infra.catalog.schema import known

        spec = load_catalog().model(plan.model_id)
        per_param = NATIVE_BYTES_PER_PARAM.get(spec.native_dtype, 2)
        return max(plan.weight_bytes, int(known(spec.total_params, "total_params") * per_param))
    return plan.weight_bytes


def _startup_failure_threshold(plan: DeploymentPlan, period_s: int = 10) -> int:
    """10 minutes plus one minute per 10 GiB of weights read (load, compile, CUDA graphs). Every pod of a
    multi-node group reads the whole checkpoint from the one shared volume (vLLM's loader reads each tensor,
    then keeps its stage's), so the group's leader waits for nodes x the weights."""
    seconds = 600 + 60 * _gib(plan.weight_bytes) * plan.nodes_per_replica / 10
    return math.ceil(seconds / period_s)


def _multi_node(plan: DeploymentPlan) -> dict[str, Any]:
    """The workers' own flags: what the plan gives them beyond the leader's (vLLM --headless)."""
    leader = set(plan.engine_args)
    return {"workerArgs": [arg for arg in plan.worker_engine_args if arg not in leader]}


def _engine_values(plan: DeploymentPlan, options: ChartOptions) -> dict[str, Any]:
    gpus = plan.gpus_per_replica
    if plan.quantization == "gguf-q4":
        raise ChartValuesError(
            "quantization 'gguf-q4' needs one GGUF file chosen from the repository; the chart does not pick it. "
            "Use another quantization, or write the values by hand with model.allowPatterns and model.ggufFile"
        )
    if plan.engine == "server" and options.engine_type == "vllm":
        raise ChartValuesError(
            f"quantization {plan.quantization!r}: the pinned vLLM loads no bitsandbytes or GGUF weights (vLLM removed "
            "both, RFC #39583); this plan runs on the project's server. Use engine_type='server'"
        )
    if gpus == 0 and options.engine_type == "vllm":
        raise ChartValuesError(
            f"tier {plan.tier!r} has no GPU, and the planner sizes GPU tiers only; for CPU nodes write the values "
            "by hand (the chart runs vLLM's CPU image when engine.gpusPerReplica is 0), or use engine_type='server'"
        )
    shm_gib = engine_shm_gib(plan)
    engine: dict[str, Any] = {
        "type": options.engine_type,
        "replicas": options.engine_replicas_min,
        "gpusPerReplica": gpus,
        "tensorParallelSize": plan.tensor_parallel_size if gpus else 1,
        "nodesPerReplica": plan.nodes_per_replica,
        "maxModelLen": plan.max_model_len,
        "gpuMemoryUtilization": plan.gpu_memory_utilization,
        "maxNumSeqs": plan.max_num_seqs,
        "quantization": plan.vllm_quantization or "",
        "reasoningParser": plan.reasoning_parser or "",
        "extraArgs": _extra_engine_args(plan.engine_args) if options.engine_type == "vllm" else [],
        "resources": _engine_resources(plan, shm_gib),
        "shm": {"sizeLimit": f"{shm_gib}Gi"},
        "startupProbe": {"failureThreshold": _startup_failure_threshold(plan)},
        "gpu": _gpu_placement(plan, options) if gpus else {"nodeSelector": {}, "tolerations": []},
        "autoscaling": {
            "enabled": options.engine_replicas_max > options.engine_replicas_min,
            "minReplicas": options.engine_replicas_min,
            "maxReplicas": options.engine_replicas_max,
        },
    }
    if options.engine_api_key_secret:
        engine["apiKey"] = {"existingSecret": options.engine_api_key_secret, "key": "api-key"}
    if plan.nodes_per_replica > 1:
        if options.engine_type != "vllm":
            raise ChartValuesError(
                f"the plan spans {plan.nodes_per_replica} nodes per replica, which only vLLM's multi-node mode "
                "serves. Use engine_type='vllm'"
            )
        engine["multiNode"] = _multi_node(plan)
    if options.engine_type == "server":
        if plan.quantization not in SERVER_QUANTIZATION:
            raise ChartValuesError(
                f"quantization {plan.quantization!r} is not served by the project's server; "
                f"it runs {sorted(SERVER_QUANTIZATION)}. Use engine_type='vllm'"
            )
        engine["server"] = {
            "quantization": SERVER_QUANTIZATION[plan.quantization],
            "device": "cuda" if gpus else "cpu",
        }
    return engine


def chart_values(plan: DeploymentPlan, options: ChartOptions) -> dict[str, Any]:
    """Values for charts/dsdeploy from a plan; the same dict for `dsdeploy values` and Pulumi."""
    engine = _engine_values(plan, options)
    checkpoint = _checkpoint(plan, options)
    computed_gib = math.ceil(_gib(_download_bytes(plan, checkpoint)) * 1.3) + 10
    cache_size = options.model_cache_size or f"{max(computed_gib, options.model_cache_min_gib or 0)}Gi"
    model: dict[str, Any] = {
        "id": checkpoint,
        "servedModelName": plan.served_model_name,
        "source": "none" if options.airgapped else "hf",
    }
    if options.hf_endpoint:
        model["hfEndpoint"] = options.hf_endpoint
    if options.hf_token_secret:
        model["tokenSecret"] = {"name": options.hf_token_secret, "key": "token"}
    model_cache: dict[str, Any] = {"size": cache_size, "airgapped": options.airgapped}
    if options.storage_class:
        model_cache["storageClass"] = options.storage_class
    if options.engine_replicas_max > 1 or plan.nodes_per_replica > 1:
        # Several engine pods on several nodes read one cache (more replicas, or the nodes of one replica): the
        # volume must be shared, and one download Job fills it for all of them.
        model_cache["accessMode"] = "ReadWriteMany"
    router: dict[str, Any] = {
        "replicas": options.router_replicas,
        # A budget of one available pod would block every node drain when there is only one.
        "pdb": {"enabled": options.router_replicas > 1},
        "autoscaling": {
            "minReplicas": options.router_replicas,
            "maxReplicas": max(options.router_replicas, 2 * options.router_replicas),
        },
        "cloud": {
            "enabled": options.cloud_fallback,
            "apiKeySecret": {"name": options.cloud_api_key_secret, "key": "api-key"},
        },
    }
    return {
        "platform": options.platform,
        "model": model,
        "engine": engine,
        "modelCache": model_cache,
        "router": router,
    }
