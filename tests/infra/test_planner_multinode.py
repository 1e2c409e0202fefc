"""Replicas that span nodes: hand-worked verdicts for the models no single node of a tier holds."""

from __future__ import annotations

import pytest

from infra.catalog import MachineMapping, load_catalog
from infra.planner import PlanDoesNotFit, PlanError, plan_deployment
from infra.planner.kv import kv_layout
from infra.planner.multinode import MAX_NODES_PER_REPLICA, evaluate_nodes
from infra.planner.quantization import QUANT_SPECS
from infra.planner.sizing import decode_tokens_per_s, evaluate
from infra.planner.stages import layer_params, pipeline_partition
from infra.planner.weights import weight_bytes, weight_groups

GIB = 1024**3
H100_USABLE = int(81_559 * 1024 * 1024 * 0.90)  # 76.97 GB per GPU at utilization 0.90
FP8_BYTES = (8 + 32 / (128 * 128)) / 8  # fp8 + one fp32 scale per 128x128 block
TABLE = 129_280 * 7168  # V3/R1 embedding (and output head) parameters
# V3/R1 reserve per GPU at TP 4: runtime + NCCL + activations of 8192 tokens + sampler logits
RESERVE_TP4 = int(1.5 * GIB) + int(0.5 * GIB) + 8192 * (8 * 7168 + 3 * 18_432 // 4) * 2 + 256 * 129_280 * 4
MLA_PER_LAYER = (512 + 64) * 2  # latent + rope key per token per layer, bf16


def test_pipeline_stages_split_layers_as_vllm_does() -> None:
    # vLLM get_pp_indices: layers // pp each, the remainder added to the stages before the last.
    assert pipeline_partition(61, 3) == [20, 21, 20]
    assert pipeline_partition(61, 4) == [15, 15, 16, 15]
    assert pipeline_partition(61, 2) == [31, 30]
    assert pipeline_partition(64, 3) == [21, 22, 21]
    assert pipeline_partition(62, 4) == [15, 16, 16, 15]
    assert pipeline_partition(8, 1) == [8]
    with pytest.raises(ValueError):
        pipeline_partition(3, 4)


def test_layer_parameters_of_v3_by_hand() -> None:
    v3 = load_catalog().model("v3")
    params = layer_params(v3)
    assert len(params) == 61 and 0 <= v3.total_params - 2 * TABLE - sum(params) < 61  # floor of the share
    # MLA attention + two RMSNorms: q_a, q_a_norm, q_b, kv_a (latent + rope key), kv_a_norm, kv_b, o
    attention = (
        7168 * 1536
        + 1536
        + 1536 * 128 * (128 + 64)
        + 7168 * (512 + 64)
        + 512
        + 512 * 128 * (128 + 128)
        + 128 * 128 * 7168
        + 2 * 7168
    )
    dense = 3 * 7168 * 18_432
    moe = 3 * 7168 * 2048 * (256 + 1) + 7168 * 256  # routed + shared experts, router
    assert params[0] == params[2] and params[3] == params[60]
    assert params[3] - params[0] == moe - dense
    assert abs(params[0] - dense - attention) < 1000  # the router's score bias (256 per MoE layer) is spread
    assert params[:3] == [params[0]] * 3  # first_k_dense_replace = 3 dense layers


def _stage_bytes(model: str, layers: range, last: bool = False) -> int:  # noqa: C901
    """Hand rule: each tensor group spread over the layers it belongs to; the draft and its own embedding and
    head copies on the last stage (the group bytes come from weights.py, tested against published sizes)."""
    spec = load_catalog().model(model)
    dense = spec.first_k_dense_replace
    total = 0.0
    for g in weight_groups(spec, QUANT_SPECS["fp8"]):
        if g.draft:
            total += g.bytes if last else 0
        elif g.name == "embedding + output head":
            total += g.bytes / 2 * ((0 in layers) + last)
        elif g.name == "dense MLP":
            total += g.bytes * len([i for i in layers if i < dense]) / dense
        elif g.name in ("routed experts", "shared experts", "router"):
            total += g.bytes * len([i for i in layers if i >= dense]) / (61 - dense)
        else:  # attention, norms, the V3.2 indexer: every layer alike
            total += g.bytes * len(layers) / 61
    return round(total)


# V3, R1 and their 2025 updates share one architecture (61 layers + the MTP layer, MLA 512 + 64, 256 experts).
V3_FAMILY = ["deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-R1", "deepseek-v3.1", "v3.1-terminus", "deepseek-r1-0528"]


@pytest.mark.parametrize("model", V3_FAMILY)
def test_671b_fp8_on_pro_spans_three_nodes_by_hand(model: str) -> None:
    plan = plan_deployment(model, "pro")
    # Two nodes: 31 layers (3 dense + 28 MoE) on stage 0 = 81.5 GB per GPU > 76.97 usable. Three nodes:
    # layers [20, 21, 20]; the last stage also runs the MTP draft (its layer, its own embedding and head),
    # so it holds the fewest KV tokens.
    stage1, stage2 = _stage_bytes(model, range(20, 41)), _stage_bytes(model, range(41, 61), last=True)
    assert stage1 / 4 / 1e9 == pytest.approx(60.44, abs=0.01) and stage2 / 4 / 1e9 == pytest.approx(61.88, abs=0.01)
    tokens = (H100_USABLE - stage2 // 4 - RESERVE_TP4) // ((20 + 1) * MLA_PER_LAYER)  # + the draft's layer
    assert tokens == 481_304
    assert (plan.nodes_per_replica, plan.pipeline_parallel_size, plan.tensor_parallel_size) == (3, 3, 4)
    assert plan.gpus_per_replica == 12 and plan.max_model_len == 32_768 and plan.speculative_decoding == "mtp"
    assert plan.kv_cache_tokens == tokens and plan.max_num_seqs == tokens // 32_768 == 14
    assert plan.kv_bytes_per_token_per_gpu == 21 * MLA_PER_LAYER
    assert plan.weight_bytes == _stage_bytes(model, range(0, 20)) + stage1 + stage2  # 688.57 GB on the 12 GPUs
    assert round(plan.weight_bytes / 1e9, 2) == 688.57
    assert plan.reserve_bytes == 12 * RESERVE_TP4
    assert any("the stages hold 3.71 GB more than one node would" in step for step in plan.explanation)
    same = plan_deployment(model, "pro", context=32_768, max_nodes=3)
    assert same.nodes_per_replica == 3 and same.kv_cache_tokens == tokens


def test_layout_flags_for_leader_and_workers() -> None:
    plan = plan_deployment("r1", "pro")
    assert plan.engine_args[:6] == ["--tensor-parallel-size", "4", "--pipeline-parallel-size", "3", "--nnodes", "3"]
    assert "--reasoning-parser" in plan.engine_args and "--headless" not in plan.engine_args
    assert plan.worker_engine_args == [*plan.engine_args, "--headless"]
    assert any("LeaderWorkerSet" in w for w in plan.warnings)


def test_a_lone_token_crosses_the_stages_in_turn() -> None:
    # One sequence: every stage reads its weights and KV in turn, which is the bound of one node of 4
    # GPUs holding everything; a full batch keeps 3 micro-batches in flight and does better.
    catalog = load_catalog()
    v3, h100 = catalog.model("v3"), catalog.gpu("H100-80GB")
    plan = plan_deployment("v3", "pro")
    one_node = evaluate(v3, QUANT_SPECS["fp8"], h100, 4, 32_768, 0.90, spec_decode=True)
    assert plan.decode_tokens_per_s_per_seq == pytest.approx(
        decode_tokens_per_s(v3, QUANT_SPECS["fp8"], h100, one_node, 1), rel=2e-3
    )
    assert plan.decode_tokens_per_s_batch > 3 * plan.decode_tokens_per_s_per_seq
    # prefill: 12 GPUs at the FP8 peak, 2 FLOPs per active parameter
    assert plan.prefill_tokens_per_s == pytest.approx(12 * 1979e12 / (2 * 37e9), abs=0.01)


def test_awq_v3_on_pro_needs_two_nodes() -> None:
    plan = plan_deployment("v3", "pro", "awq-int4")
    assert (plan.nodes_per_replica, plan.gpus_per_replica, plan.max_num_seqs) == (2, 8, 24)


def test_671b_on_base_is_refused_at_the_node_limit_with_the_shortfall() -> None:
    with pytest.raises(PlanDoesNotFit) as info:
        plan_deployment("r1", "base")
    message = str(info.value)
    # 4 stages of [15, 15, 16, 15] layers on one A100 40GB each: 673 GB of weights against 4 x 38.65 GB.
    assert f"not even across {MAX_NODES_PER_REPLICA} nodes (the most one replica may span" in message
    assert "154.6 GB usable" in message and "weights 688.6 GB" in message
    assert info.value.shortfall_bytes / 1e9 == pytest.approx(552.8, abs=0.05)  # the MTP draft included
    assert message.endswith("Would fit: tier pro (4x H100-80GB) across 3 nodes at fp8.")
    with pytest.raises(
        PlanDoesNotFit,
        match=r"not even across 2 nodes \(the most --max-nodes allows; the planner's "
        r"limit is 4",
    ):
        plan_deployment("v3", "pro", max_nodes=2)
    with pytest.raises(PlanDoesNotFit, match=r"Would fit: one replica across 3 nodes of tier pro \(--max-nodes 3\)"):
        plan_deployment("v3", "pro", max_nodes=1)


def test_bf16_v3_beyond_four_pro_nodes_points_at_fp8() -> None:
    with pytest.raises(PlanDoesNotFit) as info:
        plan_deployment("v3", "pro", "bf16")
    # stages [15, 15, 16, 15]: three MoE-only stages lack 53.4 + 76.5 + 55.2 GB; stage 0 fits
    assert info.value.shortfall_bytes / 1e9 == pytest.approx(185.2, abs=0.05)
    assert str(info.value).endswith("Would fit: --quantization fp8 on tier pro across 3 nodes (published weights).")


def test_a_small_model_over_several_nodes_names_the_one_node_quantization() -> None:
    plan = plan_deployment("r1-distill-qwen-32b", "base")  # 65.5 GB of bf16 weights, 38.65 GB per node
    assert (plan.nodes_per_replica, plan.tensor_parallel_size, plan.gpus_per_replica) == (3, 1, 3)
    assert any("--quantization gptq-int4 (published weights) fits one node of tier base" in w for w in plan.warnings)
    assert any(
        w.startswith("only 4 sequence(s) of 32768 tokens fit at once; 4 nodes would hold 7") for w in plan.warnings
    )
    # one node that fits at a shorter context wins over more nodes at the full one
    assert plan_deployment("r1-distill-qwen-14b", "base").nodes_per_replica == 1


@pytest.mark.parametrize("bad", [0, 5, -1, True, 2.0])
def test_max_nodes_is_bounded(bad: object) -> None:
    with pytest.raises(PlanError, match="max_nodes .* is out of range: allowed 1..4") as info:
        plan_deployment("r1", "pro", max_nodes=bad)  # type: ignore[arg-type]
    assert not isinstance(info.value, PlanDoesNotFit)


def test_machines_pack_the_pods_of_a_replica() -> None:
    plan = plan_deployment("r1", "pro")
    gke, eks, existing = plan.machine("gke"), plan.machine("eks"), plan.machine("existing")
    assert (gke.nodes_per_replica, gke.gpus_per_pod, gke.pods_per_node, gke.replicas_per_node) == (3, 4, 1, 0)
    assert [gke.nodes_for(r) for r in (1, 2, 3)] == [3, 6, 9]
    assert (eks.gpus_per_pod, eks.pods_per_node) == (4, 2)  # two 4-GPU pods per p5.48xlarge
    assert [eks.nodes_for(r) for r in (1, 2, 3)] == [2, 3, 5]
    assert "one p5.48xlarge runs 2 of these pods, so R replicas need ceil(3 x R / 2) machines" in eks.substitution
    assert gke.substitution.endswith("each pod takes one whole a3-highgpu-4g.")
    assert existing.nodes_for(2) == 6
    single = plan_deployment("r1-distill-qwen-7b", "pro").machine("eks")
    assert (single.pods_per_node, single.nodes_for(9)) == (8, 2)


def test_an_inconsistent_multi_node_mapping_is_refused() -> None:
    base = load_catalog().tier("pro").machine_for("gke").model_dump()
    with pytest.raises(ValueError, match="replicas_per_node must be 0 when a replica spans 3 nodes"):
        MachineMapping(**{**base, "gpus_per_replica": 12, "nodes_per_replica": 3, "replicas_per_node": 1})
    with pytest.raises(ValueError, match=r"gpus_per_replica \(10\) must split into nodes_per_replica \(3\)"):
        MachineMapping(**{**base, "gpus_per_replica": 10, "nodes_per_replica": 3, "replicas_per_node": 0})


@pytest.mark.parametrize("model", ["deepseek-v3.2-exp", "deepseek-v3.2", "deepseek-v3.2-speciale"])
def test_v32_on_pro_spans_three_nodes_by_hand(model: str) -> None:
    plan = plan_deployment(model, "pro")
    # As V3, plus the sparse-attention indexer in every layer and its 132-byte key per token and layer.
    stage1, stage2 = _stage_bytes(model, range(20, 41)), _stage_bytes(model, range(41, 61), last=True)
    kv_layer = MLA_PER_LAYER + 128 + 4
    tokens = min(
        (H100_USABLE - stage1 // 4 - RESERVE_TP4) // (21 * kv_layer),
        (H100_USABLE - stage2 // 4 - RESERVE_TP4) // ((20 + 1) * kv_layer),
    )
    assert tokens == 429_016  # stage 2, with the draft, holds the fewest
    assert (plan.nodes_per_replica, plan.gpus_per_replica, plan.kv_cache_tokens) == (3, 12, tokens)
    assert plan.max_num_seqs == tokens // 32_768 == 13
    with pytest.raises(
        PlanDoesNotFit, match="does not run on tier base.*Would fit: tier pro \\(4x H100-80GB\\) across 3 nodes at fp8"
    ):
        plan_deployment(model, "base")


def test_v4_pro_on_pro_spans_four_nodes() -> None:
    catalog = load_catalog()
    v4, h100 = catalog.model("deepseek-v4-pro"), catalog.gpu("H100-80GB")
    fp48 = QUANT_SPECS["fp4-fp8"]
    plan = plan_deployment("deepseek-v4-pro", "pro")
    assert (plan.nodes_per_replica, plan.tensor_parallel_size, plan.gpus_per_replica) == (4, 4, 16)
    three = evaluate_nodes(v4, fp48, h100, 4, 3, 32_768, 0.90, spec_decode=True)
    assert three.sequences == 0 and three.shortfall_bytes > 0  # 3 nodes do not hold it
    four = evaluate_nodes(v4, fp48, h100, 4, 4, 32_768, 0.90, spec_decode=True)
    assert [s.layers for s in four.stages] == pipeline_partition(61, 4) == [15, 15, 16, 15]
    # the stages hold the whole checkpoint, plus the draft's own embedding and output head on the last stage
    tables = 2 * v4.vocab_size * v4.hidden_size * 2
    assert four.weight_bytes == weight_bytes(v4, fp48, True) + tables == plan.weight_bytes
    # splitting the layers loses no KV: the stages' per-token and per-sequence bytes add up to the model's
    whole = kv_layout(v4, 4, True)
    assert sum(s.kv.per_token_bytes for s in four.stages) in range(whole.per_token_bytes, whole.per_token_bytes + 4)
    assert sum(s.kv.per_sequence_bytes for s in four.stages) == whole.per_sequence_bytes
    limiting = min(four.stages, key=lambda s: s.kv_tokens)
    assert plan.kv_cache_tokens == limiting.kv_tokens and plan.max_num_seqs == min(256, limiting.sequences) == 247
    assert plan.speculative_decoding == "mtp" and "--speculative-config" in plan.worker_engine_args


def test_v4_flash_needs_no_second_node() -> None:
    plan = plan_deployment("deepseek-v4-flash", "pro")
    assert (plan.nodes_per_replica, plan.worker_engine_args) == (1, [])


@pytest.mark.parametrize("model", V3_FAMILY + ["deepseek-v3.2"])
def test_stage_kv_adds_up_to_the_models(model: str) -> None:
    catalog = load_catalog()
    spec = catalog.model(model)
    fit = evaluate_nodes(spec, QUANT_SPECS["fp8"], catalog.gpu("H100-80GB"), 4, 3, 32_768, 0.90, spec_decode=True)
    assert sum(s.kv.per_token_bytes for s in fit.stages) == kv_layout(spec, 4, True).per_token_bytes
