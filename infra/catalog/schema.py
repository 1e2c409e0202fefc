"""Typed entries of the GPU, tier and model catalogs (validated with pydantic on load)."""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

# Quantizations the planner knows; the models catalog's `published` keys must be among them.
QUANTIZATION_NAMES: tuple[str, ...] = (
    "bf16",
    "fp8",
    "fp4-fp8",
    "int8",
    "awq-int4",
    "gptq-int4",
    "bnb-8bit",
    "bnb-4bit",
    "gguf-q4",
)
# Where a deployment runs: a new GKE or EKS cluster, or an existing cluster (on-prem) from a kubeconfig.
Platform = Literal["gke", "eks", "existing"]
PLATFORMS: tuple[Platform, ...] = get_args(Platform)
# The clouds with prices and machine mappings of their own (existing clusters bring their own nodes).
CloudPlatform = Literal["gke", "eks"]
CLOUD_PLATFORMS: tuple[CloudPlatform, ...] = get_args(CloudPlatform)

MIB = 1024 * 1024
T = TypeVar("T")


def known(value: T | None, field: str = "an architecture fact") -> T:
    """A catalog fact the planner needs, narrowed from optional: ModelSpec validates that a plannable model
    carries every architecture field and the fields of its attention and MoE kind, so None here is a bug."""
    if value is None:
        raise CatalogError(f"{field} is unknown for this model; the planner needs it")
    return value


class CatalogError(ValueError):
    """A catalog file is malformed or a lookup names nothing in the catalog."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gpu(_Entry):
    """One accelerator: memory, bandwidth, dense tensor throughput, interconnect."""

    key: str = ""
    name: str
    architecture: Literal["ampere", "hopper", "ada", "blackwell"]
    memory_mib: PositiveInt
    memory_bandwidth_gbps: PositiveFloat
    bf16_tflops: PositiveFloat
    fp8_tflops: PositiveFloat | None
    fp8_native: bool
    interconnect: str
    interconnect_gbps: PositiveFloat

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @model_validator(mode="after")
    def _fp8_consistent(self) -> Gpu:
        if self.fp8_native and self.fp8_tflops is None:
            raise ValueError("fp8_native is true but fp8_tflops is null")
        if not self.fp8_native and self.fp8_tflops is not None:
            raise ValueError("fp8_tflops is set but fp8_native is false")
        return self


class MachineMapping(_Entry):
    """How one tier replica lands on a platform's nodes.

    A replica runs as ``nodes_per_replica`` engine pods of ``gpus_per_pod`` GPUs each (one pod when it
    fits one node; the catalog's mappings are all one-pod). ``replicas_per_node`` is 0 when a replica
    spans nodes; ``pods_per_node`` and :meth:`nodes_for` hold for both."""

    machine_type: str | None
    accelerator_type: str | None
    accelerator_count: PositiveInt = Field(description="GPUs per node")
    gpus_per_replica: PositiveInt = 1
    replicas_per_node: int = Field(ge=0)
    nodes_per_replica: PositiveInt = 1
    substitution: str | None = None
    provisioning_note: str | None = None
    local_ssd_count: int = Field(default=0, ge=0)
    node_labels: dict[str, str] = Field(min_length=1)
    # A tier's alternative shapes (Tier.alternatives) name their own GPU and what the kubelet leaves
    # allocatable to pods (the planner checks the engine pod's requests against it); None: the tier's GPU.
    gpu: str | None = None
    allocatable_cpu_millis: PositiveInt | None = None
    allocatable_memory_mib: PositiveInt | None = None

    @property
    def gpus_per_pod(self) -> int:
        return self.gpus_per_replica // self.nodes_per_replica

    @property
    def pods_per_node(self) -> int:
        return self.accelerator_count // self.gpus_per_pod

    def nodes_for(self, replicas: int) -> int:
        """Machines that hold `replicas` engine replicas (their pods packed pods_per_node to a machine)."""
        return -(-replicas * self.nodes_per_replica // self.pods_per_node)

    @model_validator(mode="after")
    def _counts_consistent(self) -> MachineMapping:
        if self.nodes_per_replica == 1:
            if self.accelerator_count != self.gpus_per_replica * self.replicas_per_node:
                raise ValueError(
                    f"accelerator_count ({self.accelerator_count}) must equal gpus_per_replica "
                    f"({self.gpus_per_replica}) x replicas_per_node ({self.replicas_per_node})"
                )
            return self
        if self.gpus_per_replica % self.nodes_per_replica or self.accelerator_count % self.gpus_per_pod:
            raise ValueError(
                f"gpus_per_replica ({self.gpus_per_replica}) must split into nodes_per_replica "
                f"({self.nodes_per_replica}) pods whose GPUs divide accelerator_count ({self.accelerator_count})"
            )
        if self.replicas_per_node != 0:
            raise ValueError(f"replicas_per_node must be 0 when a replica spans {self.nodes_per_replica} nodes")
        return self


class Tier(_Entry):
    """One engine replica's hardware, and its mapping per platform."""

    key: str = ""
    description: str
    gpu: str
    gpus_per_replica: PositiveInt
    cpu: str
    ram_gb: PositiveInt
    ram_type: str
    storage: str
    storage_tb: PositiveFloat
    machines: dict[Platform, MachineMapping]
    # Other shapes of a platform that may hold a plan of the tier (e.g. single-GPU EC2 instances for base);
    # the planner offers those that hold the plan and picks the cheapest (infra/planner/machines.py).
    alternatives: dict[Platform, list[MachineMapping]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _all_platforms(self) -> Tier:
        missing = [p for p in PLATFORMS if p not in self.machines]
        if missing:
            raise ValueError(f"machines lacks platform(s) {missing}; required: {list(PLATFORMS)}")
        return self

    def alternatives_for(self, platform: str) -> list[MachineMapping]:
        """The other shapes listed for ``platform`` (none for most tiers and platforms)."""
        return [shape for key, listed in self.alternatives.items() if key == platform for shape in listed]

    def machine_for(self, platform: str) -> MachineMapping:
        if platform not in PLATFORMS:
            raise CatalogError(f"unknown platform {platform!r}; allowed: {', '.join(PLATFORMS)}")
        return self.machines[platform]


ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "total_params",
    "active_params",
)


class PublishedSize(_Entry):
    """The checkpoint's size as the hub lists it: bytes of its files, or its safetensors parameter count."""

    bytes: PositiveInt | None = None
    params: PositiveInt | None = None
    source: str = Field(min_length=10)

    @model_validator(mode="after")
    def _one_figure(self) -> PublishedSize:
        if (self.bytes is None) == (self.params is None):
            raise ValueError("give exactly one of bytes or params")
        return self


class VllmSupport(_Entry):
    """How the pinned vLLM release serves the model (its registries and model code are the source)."""

    reasoning_parser: str | None = None  # --reasoning-parser (vllm/reasoning/__init__.py)
    tool_call_parser: str | None = None  # --tool-call-parser + --enable-auto-tool-choice
    tokenizer_mode: str | None = None  # --tokenizer-mode (vllm/tokenizers/registry.py)
    speculative: Literal["mtp", "dspark"] | None = None  # draft the native checkpoint carries
    num_speculative_tokens: PositiveInt = 1
    draft_sample_method: Literal["greedy", "probabilistic"] | None = None
    kv_cache_dtype: Literal["fp8"] | None = None  # --kv-cache-dtype the planner passes and sizes
    block_size: PositiveInt | None = None  # --block-size the planner passes and sizes
    min_architecture: Literal["ampere", "hopper"] = "ampere"  # oldest GPU generation with kernels
    notes: list[str] = Field(default_factory=list)  # caveats repeated as plan warnings


class ModelSpec(_Entry):
    """Architecture numbers of one model (from its config.json) and its published checkpoints.

    A number no source gives is listed in `unknown` (field: why) and left out; the planner refuses to
    plan such a model and says which facts are missing."""

    id: str = ""
    aliases: list[str] = Field(min_length=1)
    served_model_name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$")
    family: Literal["r1-distill", "v2", "v3", "r1", "v3.2", "v4", "v4.1"]
    reasoning: bool
    attention: Literal["gqa", "mla", "mla-dsa", "v4-hybrid", "csa2"]
    num_hidden_layers: PositiveInt | None = None
    hidden_size: PositiveInt | None = None
    intermediate_size: PositiveInt | None = None
    num_attention_heads: PositiveInt | None = None
    num_key_value_heads: PositiveInt | None = None
    head_dim: PositiveInt | None = None
    vocab_size: PositiveInt | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projection biases (Qwen2)
    qk_norm: bool = False  # per-head q/k RMSNorm (Qwen3)
    total_params: PositiveInt | None = None
    active_params: PositiveInt | None = None
    native_dtype: Literal["bf16", "fp8", "fp4-fp8"]
    max_context: PositiveInt
    published: dict[str, list[str]] = Field(min_length=1)
    published_size: PublishedSize | None = None
    vllm: VllmSupport = Field(default_factory=VllmSupport)
    unknown: dict[str, str] = Field(default_factory=dict)
    # MLA (DeepSeek-V2/V3)
    q_lora_rank: PositiveInt | None = None
    kv_lora_rank: PositiveInt | None = None
    qk_rope_head_dim: PositiveInt | None = None
    qk_nope_head_dim: PositiveInt | None = None
    v_head_dim: PositiveInt | None = None
    # MoE (DeepSeekMoE)
    moe_intermediate_size: PositiveInt | None = None
    n_routed_experts: PositiveInt | None = None
    num_experts_per_tok: PositiveInt | None = None
    n_shared_experts: int | None = Field(default=None, ge=0)
    first_k_dense_replace: int | None = Field(default=None, ge=0)
    # Speculative-decoding draft blocks in the checkpoint (MTP layers, or DSpark stages)
    draft_blocks: int = Field(default=0, ge=0)  # config num_nextn_predict_layers (MTP), or DSpark stages
    # DeepSeek Sparse Attention lightning indexer (V3.2, V4)
    index_n_heads: PositiveInt | None = None
    index_head_dim: PositiveInt | None = None
    index_topk: PositiveInt | None = None
    # DeepSeek-V4 hybrid attention (CSA/HCA + sliding window), grouped output, hyper-connections
    o_lora_rank: PositiveInt | None = None
    o_groups: PositiveInt | None = None
    sliding_window: PositiveInt | None = None
    compress_ratios: list[int] | None = None  # per layer, then per draft block: 0 (window only), 4, 128
    num_hash_layers: int | None = Field(default=None, ge=0)
    hc_mult: PositiveInt | None = None

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts is not None

    @property
    def plannable(self) -> bool:
        return not self.unknown

    @property
    def routed_expert_params(self) -> int:
        """Parameters of all routed experts (gate, up, down projections) over the MoE layers."""
        if not self.is_moe:
            return 0
        moe_layers = self.num_hidden_layers - (self.first_k_dense_replace or 0)  # type: ignore[operator]
        return moe_layers * self.n_routed_experts * 3 * self.hidden_size * self.moe_intermediate_size  # type: ignore[operator]

    @property
    def embedding_params(self) -> int:
        """Input embedding plus output head (one table when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)  # type: ignore[operator]

    @model_validator(mode="after")
    def _architecture_consistent(self) -> ModelSpec:
        missing = [f for f in ARCHITECTURE_FIELDS if getattr(self, f) is None and f not in self.unknown]
        if missing:
            raise ValueError(f"architecture fields {missing} are neither given nor listed in 'unknown'")
        for field, why in self.unknown.items():
            if field in type(self).model_fields and getattr(self, field) not in (None, [], {}):
                raise ValueError(f"field {field!r} is listed in 'unknown' ({why}) but also given")
        unknown_q = [q for q in self.published if q not in QUANTIZATION_NAMES]
        if unknown_q:
            raise ValueError(f"published has unknown quantization(s) {unknown_q}; allowed: {list(QUANTIZATION_NAMES)}")
        if self.native_dtype not in self.published:
            raise ValueError(f"published must list the native dtype {self.native_dtype!r}")
        if self.unknown:
            return self  # not plannable: the remaining checks need the full architecture
        self._attention_fields_present()
        if self.is_moe:
            if self.num_experts_per_tok > self.n_routed_experts:  # type: ignore[operator]
                raise ValueError("num_experts_per_tok exceeds n_routed_experts")
            if self.first_k_dense_replace > self.num_hidden_layers:  # type: ignore[operator]
                raise ValueError("first_k_dense_replace exceeds num_hidden_layers")
        if self.active_params > self.total_params:  # type: ignore[operator]
            raise ValueError("active_params exceeds total_params")
        return self

    def _attention_fields_present(self) -> None:
        mla = ["kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"]
        needs = {
            "mla": mla,
            "mla-dsa": mla + ["q_lora_rank", "index_n_heads", "index_head_dim", "index_topk"],
            "v4-hybrid": [
                "q_lora_rank",
                "qk_rope_head_dim",
                "o_lora_rank",
                "o_groups",
                "sliding_window",
                "compress_ratios",
                "num_hash_layers",
                "hc_mult",
                "index_n_heads",
                "index_head_dim",
                "index_topk",
            ],
        }.get(self.attention, [])
        missing = [f for f in needs if getattr(self, f) is None]
        if missing:
            raise ValueError(f"attention {self.attention!r} needs {missing}")
        if self.attention == "gqa" and self.num_attention_heads % self.num_key_value_heads:  # type: ignore[operator]
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        moe = (
            "moe_intermediate_size",
            "n_routed_experts",
            "num_experts_per_tok",
            "n_shared_experts",
            "first_k_dense_replace",
        )
        present = [f for f in moe if getattr(self, f) is not None]
        if present and len(present) != len(moe):
            raise ValueError(f"MoE fields must all be set or all be absent; set: {present}")
        dense_layers = self.num_hidden_layers if not present else self.first_k_dense_replace
        if dense_layers and self.intermediate_size is None:
            raise ValueError(f"intermediate_size is needed: {dense_layers} layer(s) have a dense MLP")
        if self.compress_ratios is not None:
            blocks = self.num_hidden_layers + self.draft_blocks  # type: ignore[operator]
            if len(self.compress_ratios) != blocks:
                raise ValueError(
                    f"compress_ratios has {len(self.compress_ratios)} entries; num_hidden_layers + "
                    f"draft_blocks = {blocks}"
                )
            bad = sorted({r for r in self.compress_ratios if r not in (0, 4, 128)})
            if bad:
                raise ValueError(f"compress_ratios holds {bad}; allowed: 0, 4, 128")
        if self.attention == "v4-hybrid" and (self.vllm.block_size is None or self.vllm.kv_cache_dtype != "fp8"):
            raise ValueError(
                "attention 'v4-hybrid' is sized for vLLM's fp8_ds_mla cache: set vllm.kv_cache_dtype "
                "fp8 and vllm.block_size"
            )
        if self.vllm.speculative and not self.draft_blocks:
            raise ValueError("vllm.speculative is set but the checkpoint has no draft blocks (draft_blocks is 0)")
