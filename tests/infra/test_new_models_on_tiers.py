"""Hand-worked verdicts for the 2025-2026 DeepSeek releases on both tiers (base: 1x A100 40GB, pro: 4x H100 80GB).

Every expected figure is computed here from config.json numbers, the tier's GPUs and the planner's
documented rules (docs/planner.md), never by calling the code under test. Models that no single node of a
tier holds are refused on one node (`max_nodes=1`) with the single-node shortfall checked here; their
replicas over several nodes are worked by hand in tests/infra/test_planner_multinode.py.
"""

from __future__ import annotations

import pytest

from infra.planner import PlanDoesNotFit, plan_deployment
from infra.planner.errors import PlanUnsupported
from tests.support.deepseek_bytes import v3_native_fp8_bytes, v4_flash_bytes, v32_indexer_bytes

GIB = 1024**3
A100_USABLE = int(40960 * 1024**2 * 0.90)  # 38,654,705,664 bytes
H100_USABLE = int(81559 * 1024**2 * 0.90)  # 76,968,728,985 bytes per GPU
RUNTIME, NCCL, TOKENS, SAMPLER = int(1.5 * GIB), int(0.5 * GIB), 8192, 256


def reserve(hidden: int, streams: int, ffn: int, tp: int, vocab: int) -> int:
    """Runtime + NCCL (TP > 1) + activations of 8192 batched tokens + fp32 sampler logits of 256 sequences."""
    return RUNTIME + (NCCL if tp > 1 else 0) + TOKENS * (8 * hidden * streams + 3 * ffn // tp) * 2 + SAMPLER * vocab * 4


# V3 family (V3.1, V3.1-Terminus, R1-0528): 61 layers + the MTP layer, all MLA 512 + 64 in bf16
V3_WEIGHTS = v3_native_fp8_bytes(61, 3, 1)[0]  # 684,868,123,200 bytes with the MTP layer on the GPUs
V3_KV = 62 * 576 * 2  # 71,424 bytes per token
V3_FFN = max(18432, 2048 * (8 + 1))  # dense MLP vs 8 routed + 1 shared experts: 18,432


@pytest.mark.parametrize("model", ["deepseek-v3.1", "v3.1-terminus", "deepseek-r1-0528", "r1"])
def test_v3_family_fits_no_single_node(model: str) -> None:
    assert V3_WEIGHTS == 684_868_123_200
    # base, TP 1: weights + reserve + one 32,768-token sequence against 38.65 GB
    need = V3_WEIGHTS + reserve(7168, 1, V3_FFN, 1, 129280) + 32768 * V3_KV
    with pytest.raises(PlanDoesNotFit) as base:
        plan_deployment(model, "base", max_nodes=1)
    assert base.value.shortfall_bytes == need - A100_USABLE == 652_142_328_384
    assert "weights 684.9 GB" in str(base.value) and "short by 652.1 GB" in str(base.value)
    # pro, widest TP 4: the MLA cache is replicated, so each GPU holds the sequence's whole 2.34 GB
    need = V3_WEIGHTS + 4 * (reserve(7168, 1, V3_FFN, 4, 129280) + 32768 * V3_KV)
    with pytest.raises(PlanDoesNotFit) as pro:
        plan_deployment(model, "pro", max_nodes=1)
    assert pro.value.shortfall_bytes == need - 4 * H100_USABLE == 400_138_425_308
    assert "307.9 GB usable" in str(pro.value) and "short by 400.1 GB" in str(pro.value)
    assert "Would fit: one replica across 3 nodes of tier pro (--max-nodes 3)" in str(pro.value)


@pytest.mark.parametrize("model", ["deepseek-v3.2-exp", "deepseek-v3.2", "deepseek-v3.2-speciale"])
def test_v32_family_needs_hopper_and_more_than_one_pro_node(model: str) -> None:
    with pytest.raises(
        PlanDoesNotFit,
        match=r"does not run on tier base: vLLM 0\.32\.0 has no kernels .* "
        r"A100-40GB \(ampere\)",
    ) as base:
        plan_deployment(model, "base")
    assert base.value.shortfall_bytes == 0
    weights = V3_WEIGHTS + 62 * v32_indexer_bytes()  # + the indexer in 61 layers and the MTP layer
    assert weights == 685_762_270_336
    kv = 62 * (576 * 2 + 128 + 4)  # + 132-byte indexer key: 79,608 per token
    need = weights + 4 * (reserve(7168, 1, V3_FFN, 4, 129280) + 32768 * kv)
    with pytest.raises(PlanDoesNotFit) as pro:
        plan_deployment(model, "pro", max_nodes=1)
    assert pro.value.shortfall_bytes == need - 4 * H100_USABLE == 402_105_265_692
    assert "weights 685.8 GB" in str(pro.value) and "10.4 GB" in str(pro.value)  # 4 x 32,768 x 79,608


def test_r1_0528_qwen3_8b_fits_both_tiers_on_one_gpu() -> None:
    weights = 8_190_735_360 * 2  # bf16: 16,381,470,720 bytes
    kv = 2 * 36 * 8 * 128 * 2  # GQA, 8 KV heads: 147,456 bytes per token
    res = reserve(4096, 1, 12288, 1, 151936)  # 2,907,045,888
    base = plan_deployment("deepseek-r1-0528-qwen3-8b", "base")
    assert (base.tensor_parallel_size, base.weight_bytes, base.kv_bytes_per_token) == (1, weights, kv)
    assert base.kv_cache_tokens == (A100_USABLE - weights - res) // kv == 131_335
    assert base.max_num_seqs == 131_335 // 32768 == 4 and base.max_model_len == 32768
    assert any("only 4 sequence(s)" in w for w in base.warnings)
    pro = plan_deployment("deepseek-r1-0528-qwen3-8b", "pro")
    assert pro.kv_cache_tokens == (H100_USABLE - weights - res) // kv == 391_168
    assert (pro.tensor_parallel_size, pro.max_num_seqs) == (1, 11)  # TP 1 already holds 8+: 4 replicas a node
    assert pro.machine("gke").replicas_per_node == 4
    assert pro.engine_args[-2:] == ["--reasoning-parser", "deepseek_r1"] and pro.speculative_decoding is None


V4_KV_PER_TOKEN = 3915  # 21 x (146.25 + 33.75) + 20 x 6.75 (tests/infra/test_kv.py)
V4_KV_PER_SEQ_MTP = 18_605_376 + 3 * 37_440  # windows + compressor rings, + the MTP block's window


def test_v4_flash_fits_one_pro_node_at_tp4() -> None:
    with pytest.raises(
        PlanDoesNotFit,
        match=r"does not run on tier base: .*Would fit: tier pro \(4x H100-80GB\) "
        r"at fp4-fp8\.$",
    ):
        plan_deployment("deepseek-v4-flash", "base")
    plan = plan_deployment("deepseek-v4-flash", "pro")
    weights = v4_flash_bytes(draft=True)  # FP4 experts + FP8 rest + MTP: 159.61 GB
    assert plan.weight_bytes == weights == 159_609_485_896
    # TP 1 (159.6 GB) and TP 2 (79.8 GB a GPU) exceed an H100's 76.97 GB: TP 4, 39.90 GB of weights a GPU
    assert (plan.tensor_parallel_size, plan.gpus_per_replica) == (4, 4)
    res = reserve(4096, 4, 2048 * (6 + 1), 4, 129280)  # 4 residual streams (hc_mult): 4,603,510,784
    assert plan.reserve_bytes == 4 * res
    budget = H100_USABLE - weights // 4 - res  # 32,462,846,727 bytes of KV a GPU
    per_sequence = 32768 * V4_KV_PER_TOKEN + V4_KV_PER_SEQ_MTP  # 147,004,416 bytes at 32,768 tokens
    assert plan.max_num_seqs == budget // per_sequence == 220
    assert plan.kv_cache_tokens == budget * 32768 // per_sequence == 7_236_126
    assert (plan.kv_bytes_per_token, plan.kv_bytes_per_sequence) == (V4_KV_PER_TOKEN, V4_KV_PER_SEQ_MTP)
    assert plan.speculative_decoding == "mtp" and plan.reasoning_parser == "deepseek_v4"
    assert plan.tool_call_parser == "deepseek_v4"


def test_v4_flash_full_million_token_context_on_pro() -> None:
    plan = plan_deployment("deepseek-v4-flash", "pro", context=1_048_576)
    per_sequence = 1_048_576 * V4_KV_PER_TOKEN + V4_KV_PER_SEQ_MTP  # 4.12 GB a GPU for one 1M sequence
    assert plan.max_num_seqs == 32_462_846_727 // per_sequence == 7
    assert any("1,048,576 tokens 4.12 GB" in step for step in plan.explanation)


def test_v4_flash_0731_adds_its_three_dspark_stages() -> None:
    plan = plan_deployment("deepseek-v4-flash-0731", "pro")
    stage = v4_flash_bytes(draft=True) - v4_flash_bytes(draft=False)  # one draft block: 3,593,787,756 bytes
    weights = v4_flash_bytes(draft=False) + 3 * stage
    assert plan.weight_bytes == weights == 166_797_061_408 and plan.tensor_parallel_size == 4
    budget = H100_USABLE - weights // 4 - reserve(4096, 4, 14336, 4, 129280)
    per_sequence = 32768 * V4_KV_PER_TOKEN + 18_605_376 + 3 * 3 * 37_440  # three window-only stages
    assert plan.max_num_seqs == budget // per_sequence == 208
    assert plan.speculative_decoding == "dspark"
    assert plan.engine_args[-2:] == [
        "--speculative-config",
        '{"method":"dspark","num_speculative_tokens":7,"draft_sample_method":"probabilistic"}',
    ]


def test_v4_pro_fits_no_single_node() -> None:
    with pytest.raises(PlanDoesNotFit, match="does not run on tier base"):
        plan_deployment("deepseek-v4-pro", "base")
    with pytest.raises(PlanDoesNotFit) as pro:
        plan_deployment("deepseek-v4-pro", "pro", max_nodes=1)
    # 864.7 GB of FP4 + FP8 weights (with the MTP block) against 307.9 GB usable: no TP size helps
    assert "weights 864.7 GB" in str(pro.value) and pro.value.shortfall_bytes > 550e9


@pytest.mark.parametrize("model", ["deepseek-v4-pro-0813", "deepseek-v4.1-flash"])
@pytest.mark.parametrize("tier", ["base", "pro"])
def test_models_with_unknown_facts_are_refused_not_guessed(model: str, tier: str) -> None:
    with pytest.raises(
        PlanUnsupported,
        match=r"cannot be planned: the catalog has no source for these facts, and "
        r"the planner does not guess them: config\.json \(not read: .*num_hidden_layers, hidden_size, "
        r"num_attention_heads, .*\(from config\.json\)",
    ):
        plan_deployment(model, tier)
