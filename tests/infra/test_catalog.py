"""The shipped catalogs load and hold the agreed entries; broken copies fail naming file, entry, field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from infra.catalog import CATALOG_DIR, PLATFORMS, CatalogError, load_catalog, read_catalog

MODEL_IDS = [
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
    "deepseek-ai/DeepSeek-V2-Lite-Chat",
    "deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct",
    "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1",
    "deepseek-ai/DeepSeek-V3.1",
    "deepseek-ai/DeepSeek-V3.1-Terminus",
    "deepseek-ai/DeepSeek-R1-0528",
    "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B",
    "deepseek-ai/DeepSeek-V3.2-Exp",
    "deepseek-ai/DeepSeek-V3.2",
    "deepseek-ai/DeepSeek-V3.2-Speciale",
    "deepseek-ai/DeepSeek-V4-Flash",
    "deepseek-ai/DeepSeek-V4-Flash-0731",
    "deepseek-ai/DeepSeek-V4-Pro",
    "deepseek-ai/DeepSeek-V4-Pro-0813",
    "deepseek-ai/DeepSeek-V4.1-Flash",
]
UNPLANNABLE = {"deepseek-ai/DeepSeek-V4-Pro-0813", "deepseek-ai/DeepSeek-V4.1-Flash"}
PLANNABLE = [m for m in MODEL_IDS if m not in UNPLANNABLE]


def test_shipped_catalog_has_every_gpu_tier_and_model() -> None:
    catalog = load_catalog()
    assert set(catalog.gpus) == {"A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB", "L40S-48GB", "L4-24GB"}
    assert set(catalog.tiers) == {"base", "pro"}
    assert list(catalog.models) == MODEL_IDS
    assert load_catalog() is catalog  # cached


def test_gpu_figures() -> None:
    gpus = load_catalog().gpus
    assert gpus["A100-40GB"].fp8_tflops is None and not gpus["A100-40GB"].fp8_native
    assert gpus["H100-80GB"].memory_bandwidth_gbps == 3350 and gpus["H100-80GB"].fp8_tflops == 1979
    assert gpus["H200-141GB"].memory_bandwidth_gbps == 4800
    assert gpus["A100-40GB"].memory_bytes == 40 * 1024**3
    for gpu in gpus.values():
        assert gpu.interconnect and gpu.interconnect_gbps > 0


def test_tiers_follow_the_articles_hardware_table() -> None:
    catalog = load_catalog()
    base, pro = catalog.tier("base"), catalog.tier("pro")
    assert (base.gpu, base.gpus_per_replica, base.ram_gb, base.storage_tb) == ("A100-40GB", 1, 128, 2)
    assert "8380" in base.cpu
    assert (pro.gpu, pro.gpus_per_replica, pro.ram_gb, pro.storage_tb) == ("H100-80GB", 4, 512, 10)
    assert "7V73X" in pro.cpu


def test_machine_mappings() -> None:
    catalog = load_catalog()
    gke_base = catalog.tier("base").machine_for("gke")
    assert (gke_base.machine_type, gke_base.accelerator_type, gke_base.accelerator_count) == (
        "a2-highgpu-1g",
        "nvidia-tesla-a100",
        1,
    )
    assert gke_base.node_labels == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    gke_pro = catalog.tier("pro").machine_for("gke")
    assert (gke_pro.machine_type, gke_pro.accelerator_type, gke_pro.accelerator_count) == (
        "a3-highgpu-4g",
        "nvidia-h100-80gb",
        4,
    )
    assert gke_pro.provisioning_note and gke_pro.local_ssd_count == 8
    eks_pro = catalog.tier("pro").machine_for("eks")
    assert (eks_pro.machine_type, eks_pro.accelerator_count, eks_pro.gpus_per_replica, eks_pro.replicas_per_node) == (
        "p5.48xlarge",
        8,
        4,
        2,
    )
    # the catalog's mapping is for a 4-GPU pro replica; the note says how smaller plans pack
    assert "two 4-GPU pro replicas per node" in eks_pro.substitution
    assert "8 / GPUs-per-replica replicas per node" in eks_pro.substitution
    eks_base = catalog.tier("base").machine_for("eks")
    assert eks_base.machine_type == "p4d.24xlarge" and eks_base.replicas_per_node == 8
    assert "no single-A100 instance" in eks_base.substitution
    for tier in catalog.tiers.values():
        assert set(tier.machines) == set(PLATFORMS)
        assert tier.machine_for("existing").node_labels == {"dsdeploy.io/gpu-tier": tier.key}
    with pytest.raises(CatalogError, match="unknown platform 'azure'; allowed: gke, eks, existing"):
        catalog.tier("base").machine_for("azure")


def test_lookup_by_id_alias_and_errors() -> None:
    catalog = load_catalog()
    assert catalog.model("r1-distill-qwen-7b").id == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert catalog.model("DeepSeek-AI/deepseek-v3").id == "deepseek-ai/DeepSeek-V3"
    assert catalog.model("r1").id == "deepseek-ai/DeepSeek-R1"
    with pytest.raises(CatalogError, match=r"unknown model 'gpt-4'; allowed: .*DeepSeek-V3 \(v3\)"):
        catalog.model("gpt-4")
    with pytest.raises(CatalogError, match="unknown tier 'ultra'; allowed: base, pro"):
        catalog.tier("ultra")


def _dense_params(m) -> int:
    """Parameter count from config.json numbers: Qwen2 has q/k/v biases, Qwen3 a per-head q/k RMSNorm."""
    h, kv_dim, q_dim = m.hidden_size, m.num_key_value_heads * m.head_dim, m.num_attention_heads * m.head_dim
    bias = q_dim + 2 * kv_dim if m.attention_bias else 0
    qk_norm = 2 * m.head_dim if m.qk_norm else 0
    attention = h * q_dim + 2 * h * kv_dim + q_dim * h + bias + qk_norm
    layer = attention + 3 * h * m.intermediate_size + 2 * h
    return m.num_hidden_layers * layer + m.embedding_params + h


def _mla_moe_params(m) -> tuple[int, int]:
    """(total, activated incl. output head but not the input embedding) from config.json numbers."""
    h, heads = m.hidden_size, m.num_attention_heads
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    q = h * heads * qk if m.q_lora_rank is None else h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * heads * qk
    kv = (
        h * (m.kv_lora_rank + m.qk_rope_head_dim)
        + m.kv_lora_rank
        + m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
    )
    attention = q + kv + heads * m.v_head_dim * h + 2 * h
    if m.attention == "mla-dsa":  # lightning indexer: wq_b, wk, weights_proj, k_norm (weight + bias)
        ih, idim = m.index_n_heads, m.index_head_dim
        attention += m.q_lora_rank * ih * idim + h * idim + h * ih + 2 * idim
    expert = 3 * h * m.moe_intermediate_size
    moe_layers = m.num_hidden_layers - m.first_k_dense_replace
    shared_and_gate = m.n_shared_experts * expert + m.n_routed_experts * h
    common = m.num_hidden_layers * attention + m.first_k_dense_replace * 3 * h * m.intermediate_size + h
    total = common + moe_layers * (m.n_routed_experts * expert + shared_and_gate) + m.embedding_params
    active = common + moe_layers * (m.num_experts_per_tok * expert + shared_and_gate) + m.vocab_size * h
    return total, active


def _v4_params(m) -> int:
    """DeepSeek-V4 main-model parameters from config.json numbers (the released inference/ layout)."""
    h, heads, hd, hc = m.hidden_size, m.num_attention_heads, m.head_dim, m.hc_mult
    ih, idim, mi = m.index_n_heads, m.index_head_dim, m.moe_intermediate_size
    total = 2 * m.vocab_size * h + h + hc * hc * h + hc + 1  # embed, head, norm, hc_head
    for i, ratio in enumerate(m.compress_ratios[: m.num_hidden_layers]):
        attention = (
            h * m.q_lora_rank
            + m.q_lora_rank * heads * hd
            + h * hd
            + heads * hd * m.o_lora_rank
            + m.o_groups * m.o_lora_rank * h  # wo_a (grouped), wo_b
            + m.q_lora_rank
            + hd
            + heads
        )  # q_norm, kv_norm, sinks
        if ratio:
            width = hd * (2 if ratio == 4 else 1)  # the ratio-4 compressor overlaps windows
            attention += 2 * width * h + ratio * width + hd  # wkv, wgate, ape, norm
        if ratio == 4:  # indexer: wq_b, weights_proj, its compressor
            attention += m.q_lora_rank * ih * idim + h * ih + 2 * 2 * idim * h + 4 * 2 * idim + idim
        ffn = (m.n_routed_experts + m.n_shared_experts) * 3 * h * mi + m.n_routed_experts * h
        ffn += m.vocab_size * m.num_experts_per_tok if i < m.num_hash_layers else m.n_routed_experts
        mix = (2 + hc) * hc
        total += attention + ffn + 2 * h + 2 * (mix * hc * h + mix + 3)  # + attn/ffn norms, hyper-connections
    return total


@pytest.mark.parametrize("model_id", PLANNABLE)
def test_param_counts_follow_from_the_architecture(model_id: str) -> None:
    m = load_catalog().models[model_id]
    if m.attention == "gqa":
        assert _dense_params(m) == m.total_params
        assert m.head_dim * m.num_attention_heads == m.hidden_size
    elif m.attention == "v4-hybrid":
        assert _v4_params(m) == m.total_params
        assert abs(m.total_params - {4096: 284e9, 7168: 1.6e12}[m.hidden_size]) / m.total_params < 0.02  # cards
    else:
        total, active = _mla_moe_params(m)
        assert total == m.total_params
        assert abs(active - m.active_params) / m.active_params < 0.05  # card: 2.4B / 37B activated
        assert (
            m.routed_expert_params
            == (m.num_hidden_layers - m.first_k_dense_replace)
            * m.n_routed_experts
            * 3
            * m.hidden_size
            * m.moe_intermediate_size
        )


def test_the_2025_2026_releases_are_found_by_their_aliases() -> None:
    catalog = load_catalog()
    for alias, repo in [
        ("deepseek-v3.1", "DeepSeek-V3.1"),
        ("deepseek-v3.2", "DeepSeek-V3.2"),
        ("deepseek-r1-0528", "DeepSeek-R1-0528"),
        ("deepseek-v4-flash", "DeepSeek-V4-Flash"),
        ("deepseek-v4-pro", "DeepSeek-V4-Pro"),
        ("v3.2-speciale", "DeepSeek-V3.2-Speciale"),
        ("r1-0528-qwen3-8b", "DeepSeek-R1-0528-Qwen3-8B"),
        ("v4-flash-0731", "DeepSeek-V4-Flash-0731"),
        ("deepseek-v4.1-flash", "DeepSeek-V4.1-Flash"),
    ]:
        assert catalog.model(alias).id == f"deepseek-ai/{repo}"
    v4 = catalog.model("deepseek-v4-flash")
    assert v4.native_dtype == "fp4-fp8" and v4.published["fp4-fp8"] == ["deepseek-ai/DeepSeek-V4-Flash"]
    assert (v4.compress_ratios[:4], v4.compress_ratios[-2:], len(v4.compress_ratios)) == ([0, 0, 4, 128], [4, 0], 44)
    assert catalog.model("v4-pro").compress_ratios[:3] == [128, 128, 4]  # V4-Pro starts with two HCA layers
    assert catalog.model("v4-flash-0731").compress_ratios[-3:] == [0, 0, 0]  # the three DSpark stages


def test_facts_without_a_source_are_recorded_as_unknown() -> None:
    catalog = load_catalog()
    for model_id in UNPLANNABLE:
        spec = catalog.models[model_id]
        assert spec.unknown and not spec.plannable and spec.num_hidden_layers is None
        assert "config.json" in spec.unknown
    assert "kv_cache_layout" in catalog.model("v4.1-flash").unknown
    assert all(catalog.models[m].plannable for m in PLANNABLE)


def test_mla_models_carry_latent_dims() -> None:
    r1 = load_catalog().model("r1")
    assert (r1.kv_lora_rank, r1.qk_rope_head_dim, r1.num_hidden_layers) == (512, 64, 61)
    assert r1.native_dtype == "fp8" and r1.reasoning and r1.published["fp8"] == ["deepseek-ai/DeepSeek-R1"]


# --- broken copies -------------------------------------------------------------------------------


@pytest.fixture()
def catalog_copy(tmp_path: Path) -> Path:
    for name in ("gpus.yaml", "tiers.yaml", "models.yaml"):
        shutil.copy(CATALOG_DIR / name, tmp_path / name)
    return tmp_path


def _edit(directory: Path, file: str, change) -> None:
    path = directory / file
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_copy_of_the_catalog_loads(catalog_copy: Path) -> None:
    assert read_catalog(catalog_copy).model("v3").kv_lora_rank == 512


@pytest.mark.parametrize(
    ("file", "change", "expected"),
    [
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-V3"].update(num_attention_heads="many"),
            r"models\.yaml: entry 'deepseek-ai/DeepSeek-V3': field 'num_attention_heads': .*integer.*'many'",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-R1"].pop("kv_lora_rank"),
            r"models\.yaml: entry 'deepseek-ai/DeepSeek-R1': .*attention 'mla' needs \['kv_lora_rank'\]",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-V3"]["published"].update({"int3": ["x/y"]}),
            r"entry 'deepseek-ai/DeepSeek-V3': .*unknown quantization\(s\) \['int3'\]; allowed: .*'bf16'",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-R1"]["aliases"].append("v3"),
            r"entry 'deepseek-ai/DeepSeek-R1': field 'aliases': 'v3' is already used by 'deepseek-ai/DeepSeek-V3'",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-V3"].update(colour="blue"),
            r"entry 'deepseek-ai/DeepSeek-V3': field 'colour': Extra inputs are not permitted",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"].update(num_key_value_heads=5),
            r"entry 'deepseek-ai/DeepSeek-R1-Distill-Qwen-7B': .*num_attention_heads \(28\) must be a multiple of num_key_value_heads \(5\)",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-V3"].pop("hidden_size"),
            r"entry 'deepseek-ai/DeepSeek-V3': .*architecture fields \['hidden_size'\] are neither given nor listed in 'unknown'",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-V4.1-Flash"].update(hidden_size=5120),
            r"entry 'deepseek-ai/DeepSeek-V4.1-Flash': .*field 'hidden_size' is listed in 'unknown' \(from config.json\) but also given",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-V4-Flash"]["compress_ratios"].append(4),
            r"entry 'deepseek-ai/DeepSeek-V4-Flash': .*compress_ratios has 45 entries; num_hidden_layers \+ draft_blocks = 44",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-V4-Flash"]["vllm"].pop("block_size"),
            r"entry 'deepseek-ai/DeepSeek-V4-Flash': .*sized for vLLM's fp8_ds_mla cache",
        ),
        (
            "models.yaml",
            lambda d: d["deepseek-ai/DeepSeek-V3.2"]["published_size"].update(bytes=1),
            r"entry 'deepseek-ai/DeepSeek-V3.2': field 'published_size': .*give exactly one of bytes or params",
        ),
        (
            "gpus.yaml",
            lambda d: d["H100-80GB"].pop("memory_mib"),
            r"gpus\.yaml: entry 'H100-80GB': field 'memory_mib': Field required",
        ),
        (
            "gpus.yaml",
            lambda d: d["L4-24GB"].update(memory_bandwidth_gbps=-1),
            r"gpus\.yaml: entry 'L4-24GB': field 'memory_bandwidth_gbps': .*greater than 0 \(got -1\)",
        ),
        (
            "tiers.yaml",
            lambda d: d["pro"].update(gpu="H100-94GB"),
            r"tiers\.yaml: entry 'pro': field 'gpu': unknown GPU 'H100-94GB'; allowed: A100-40GB",
        ),
        (
            "tiers.yaml",
            lambda d: d["pro"]["machines"]["eks"].update(replicas_per_node=3),
            r"tiers\.yaml: entry 'pro': .*accelerator_count \(8\) must equal gpus_per_replica \(4\) x replicas_per_node \(3\)",
        ),
        (
            "tiers.yaml",
            lambda d: d["base"]["machines"].pop("existing"),
            r"tiers\.yaml: entry 'base': .*lacks platform\(s\) \['existing'\]",
        ),
        (
            "tiers.yaml",
            lambda d: d["base"]["machines"]["gke"].update(node_labels={}),
            r"tiers\.yaml: entry 'base': field 'machines\.gke\.node_labels'",
        ),
        (
            "tiers.yaml",
            lambda d: d["base"]["alternatives"]["eks"][0].update(gpu="A10G-24GB"),
            r"tiers\.yaml: entry 'base': field 'alternatives\.eks\[0\]\.gpu': 'A10G-24GB' is not a GPU of the catalog",
        ),
        (
            "tiers.yaml",
            lambda d: d["base"]["alternatives"]["eks"][1].update(gpus_per_replica=2),
            r"tiers\.yaml: entry 'base': field 'alternatives\.eks\[1\]\.gpus_per_replica' comes from the tier's",
        ),
    ],
)
def test_broken_entry_is_an_error_naming_file_entry_and_field(catalog_copy: Path, file, change, expected) -> None:
    _edit(catalog_copy, file, change)
    with pytest.raises(CatalogError, match=expected) as info:
        read_catalog(catalog_copy)
    assert str(catalog_copy / file) in str(info.value)


def test_not_yaml_and_not_a_mapping(catalog_copy: Path) -> None:
    (catalog_copy / "gpus.yaml").write_text("A100: [unclosed\n")
    with pytest.raises(CatalogError, match=r"gpus\.yaml: not valid YAML"):
        read_catalog(catalog_copy)
    (catalog_copy / "gpus.yaml").write_text("- just\n- a list\n")
    with pytest.raises(CatalogError, match=r"gpus\.yaml: expected a mapping of entries keyed by name, got list"):
        read_catalog(catalog_copy)
    (catalog_copy / "gpus.yaml").write_text("A100-40GB: 42\n")
    with pytest.raises(CatalogError, match=r"gpus\.yaml: entry 'A100-40GB': expected a mapping of fields, got int"):
        read_catalog(catalog_copy)


def test_missing_file_and_reserved_fields(catalog_copy: Path) -> None:
    _edit(catalog_copy, "tiers.yaml", lambda d: d["pro"]["machines"]["gke"].update(gpus_per_replica=2))
    with pytest.raises(CatalogError, match=r"entry 'pro': field 'machines\.gke\.gpus_per_replica' comes from"):
        read_catalog(catalog_copy)
    shutil.copy(CATALOG_DIR / "tiers.yaml", catalog_copy / "tiers.yaml")
    (catalog_copy / "models.yaml").unlink()
    with pytest.raises(CatalogError, match=r"models\.yaml: cannot read catalog file"):
        read_catalog(catalog_copy)


def test_an_entry_given_twice_is_an_error(catalog_copy: Path) -> None:
    text = (catalog_copy / "gpus.yaml").read_text()
    (catalog_copy / "gpus.yaml").write_text(text + "\nL4-24GB:\n  name: again\n")
    with pytest.raises(CatalogError, match=r"gpus\.yaml: not valid YAML: .*duplicate key 'L4-24GB'"):
        read_catalog(catalog_copy)
