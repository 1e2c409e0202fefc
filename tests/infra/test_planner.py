"""Planner figures against cases computed by hand (the arithmetic is written out in each test)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infra.catalog import load_catalog
from infra.planner import QUANTIZATIONS, PlanDoesNotFit, PlanError, plan_deployment
from infra.planner.errors import PlanUnsupported
from infra.planner.quantization import QUANT_SPECS
from infra.planner.sizing import evaluate, kv_bytes_per_token_per_gpu, valid_tp_sizes
from tests.support.deepseek_bytes import v3_native_fp8_bytes

GIB = 1024**3
A100_40_USABLE = int(40960 * 1024 * 1024 * 0.90)  # 38,654,705,664 bytes at utilization 0.90
RUNTIME = int(1.5 * GIB)  # 1,610,612,736
BATCHED_TOKENS = 8192
SAMPLER_SEQS = 256


def test_dense_r1_distill_qwen_7b_on_base_by_hand() -> None:
    plan = plan_deployment("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "base")
    # config.json: 28 layers, hidden 3584, intermediate 18944, 28 heads, 4 KV heads, head_dim 128,
    # vocab 152064, untied embeddings; 7,615,616,512 parameters.
    weights = 7_615_616_512 * 2  # bf16
    assert weights == 15_231_233_024 == plan.weight_bytes
    kv_per_token = 2 * 28 * 4 * 128 * 2  # K and V, layers, KV heads, head_dim, bf16
    assert kv_per_token == 57_344 == plan.kv_bytes_per_token
    activations = BATCHED_TOKENS * (8 * 3584 + 3 * 18944) * 2  # 8192 x 171,008 = 1,400,897,536
    sampler = SAMPLER_SEQS * 152_064 * 4  # fp32 logits: 155,713,536
    reserve = RUNTIME + activations + sampler  # TP 1: no NCCL buffers
    assert reserve == 3_167_223_808 == plan.reserve_bytes
    kv_budget = A100_40_USABLE - weights - reserve  # 20,256,248,832 bytes
    kv_tokens = kv_budget // kv_per_token  # 353,240 tokens
    assert kv_tokens == 353_240 == plan.kv_cache_tokens
    assert plan.max_model_len == 32_768  # default: min(131072, 32768)
    assert plan.max_num_seqs == kv_tokens // 32_768 == 10
    assert (plan.tensor_parallel_size, plan.gpus_per_replica, plan.gpu) == (1, 1, "A100-40GB")
    # Decode bound: weights minus the input embedding table (not streamed), plus the KV cache of the
    # sequence(s) at 32,768 tokens, over 1,555 GB/s.
    streamed = weights - 152_064 * 3584 * 2  # 14,141,238,272 bytes
    kv_seq = 32_768 * kv_per_token  # 1,879,048,192 bytes
    per_seq = 1_555e9 / (streamed + kv_seq)  # 97.06 tokens/s
    batch = 10 * 1_555e9 / (streamed + 10 * kv_seq)  # 472.19 tokens/s
    assert plan.decode_tokens_per_s_per_seq == pytest.approx(per_seq, abs=0.01)
    assert plan.decode_tokens_per_s_batch == pytest.approx(batch, abs=0.01)
    assert round(per_seq, 2) == 97.06 and round(batch, 2) == 472.19
    # Prefill bound: 2 FLOPs per active parameter per prompt token at the A100's dense BF16 peak.
    prefill = 312e12 / (2 * 7_615_616_512)  # 20,484.2 tokens/s
    assert plan.prefill_tokens_per_s == pytest.approx(prefill, abs=0.01) and round(prefill) == 20_484
    assert plan.engine_args == [
        "--tensor-parallel-size",
        "1",
        "--max-model-len",
        "32768",
        "--gpu-memory-utilization",
        "0.90",
        "--max-num-seqs",
        "10",
        "--max-num-batched-tokens",
        "8192",
        "--reasoning-parser",
        "deepseek_r1",
    ]
    assert plan.reasoning and plan.vllm_quantization is None and plan.warnings == []
    assert plan.served_model_name == "deepseek-r1-distill-qwen-7b"
    assert plan.checkpoint == plan.model_id == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


def test_mla_moe_coder_v2_lite_on_base_by_hand() -> None:
    plan = plan_deployment("coder-v2-lite", "base", context=32_768)
    # config.json: 27 layers, hidden 2048, dense intermediate 10944 (first layer), MLA kv_lora_rank 512,
    # qk_rope_head_dim 64, 64 routed experts (6 per token, moe_intermediate 1408) + 2 shared, vocab 102400.
    weights = 15_706_484_224 * 2
    assert plan.weight_bytes == weights == 31_412_968_448
    kv_per_token = 27 * (512 + 64) * 2  # one latent + RoPE key per layer, bf16
    assert kv_per_token == 31_104 == plan.kv_bytes_per_token
    ffn = max(10_944, 1_408 * (6 + 2))  # 11,264: routed + shared experts per token
    reserve = RUNTIME + BATCHED_TOKENS * (8 * 2048 + 3 * ffn) * 2 + SAMPLER_SEQS * 102_400 * 4
    assert reserve == 2_537_553_920 == plan.reserve_bytes
    kv_tokens = (A100_40_USABLE - weights - reserve) // kv_per_token  # 4,704,183,296 // 31,104
    assert kv_tokens == 151_240 == plan.kv_cache_tokens
    assert plan.max_num_seqs == 151_240 // 32_768 == 4
    # Decode: a token reads the non-expert weights and 6 of 64 routed experts per layer.
    routed = 26 * 64 * 3 * 2048 * 1408 * 2  # 26 MoE layers, bf16: 28,789,702,656 bytes
    embed_in = 102_400 * 2048 * 2  # input embedding, not streamed
    streamed_1 = weights - embed_in - routed * (1 - 6 / 64)  # 4,902,870,016 bytes
    kv_seq = 32_768 * kv_per_token
    assert plan.decode_tokens_per_s_per_seq == pytest.approx(1_555e9 / (streamed_1 + kv_seq), abs=0.01)
    touched_4 = 1 - (1 - 6 / 64) ** 4  # expected share of experts 4 tokens touch
    streamed_4 = weights - embed_in - routed * (1 - touched_4)
    assert plan.decode_tokens_per_s_batch == pytest.approx(4 * 1_555e9 / (streamed_4 + 4 * kv_seq), abs=0.01)
    assert plan.decode_tokens_per_s_per_seq == pytest.approx(262.58, abs=0.01)
    assert not plan.reasoning and "--reasoning-parser" not in plan.engine_args


def test_mla_kv_is_held_whole_by_every_gpu_and_gqa_is_sharded() -> None:
    catalog = load_catalog()
    v3 = catalog.model("v3")
    assert kv_bytes_per_token_per_gpu(v3, 8) == 61 * (512 + 64) * 2 == 70_272
    qwen32 = catalog.model("r1-distill-qwen-32b")  # 64 layers, 8 KV heads
    assert kv_bytes_per_token_per_gpu(qwen32, 1) == 2 * 64 * 8 * 128 * 2
    assert kv_bytes_per_token_per_gpu(qwen32, 4) == 2 * 64 * 2 * 128 * 2
    qwen15 = catalog.model("r1-distill-qwen-1.5b")  # 2 KV heads: TP 4 replicates them
    assert kv_bytes_per_token_per_gpu(qwen15, 4) == 2 * 28 * 1 * 128 * 2


def test_v3_fp8_on_eight_h200_by_hand() -> None:
    catalog = load_catalog()
    v3, h200 = catalog.model("v3"), catalog.gpu("H200-141GB")
    resident, checkpoint = v3_native_fp8_bytes(61, 3, 1)
    assert resident == 684_868_123_200 and checkpoint == 688_574_839_360  # ~684.9 GB on the GPUs
    fit = evaluate(v3, QUANT_SPECS["fp8"], h200, 8, 32_768, 0.90, spec_decode=True)
    assert fit.weight_bytes == resident
    assert evaluate(v3, QUANT_SPECS["fp8"], h200, 8, 32_768, 0.90).weight_bytes == v3_native_fp8_bytes(61, 3, 0)[0]
    usable = int(143_771 * 1024 * 1024 * 0.90)
    reserve = RUNTIME + int(0.5 * GIB) + BATCHED_TOKENS * (8 * 7168 + 3 * 18_432 // 8) * 2 + SAMPLER_SEQS * 129_280 * 4
    assert fit.reserve_bytes_per_gpu == reserve
    kv = 62 * (512 + 64) * 2  # 61 layers + the MTP layer, bf16: 71,424
    assert fit.kv_tokens == (usable - resident // 8 - reserve) // kv
    assert fit.sequences == fit.kv_tokens // 32_768 >= 8


def test_tensor_parallel_choice() -> None:
    catalog = load_catalog()
    assert valid_tp_sizes(catalog.model("r1-distill-qwen-7b"), 8) == [1, 2, 4]  # 28 heads: 8 does not divide
    assert valid_tp_sizes(catalog.model("r1-distill-qwen-1.5b"), 8) == [1, 2, 4]  # 12 heads
    assert valid_tp_sizes(catalog.model("v3"), 8) == [1, 2, 4, 8]
    assert valid_tp_sizes(catalog.model("r1-distill-qwen-14b"), 4) == [1, 2, 4]  # 40 heads, 8 KV heads
    # 70B bf16 on 4x H100: TP 2 leaves no room for a 32K sequence, TP 4 does.
    big = plan_deployment("r1-distill-llama-70b", "pro")
    assert big.tensor_parallel_size == 4 and big.max_num_seqs >= 8
    # 32B bf16: TP 1 fits fewer than 8 sequences, so the planner takes TP 2 (two replicas per node).
    mid = plan_deployment("r1-distill-qwen-32b", "pro")
    assert mid.tensor_parallel_size == 2 and mid.max_num_seqs >= 8
    assert mid.machine("gke").replicas_per_node == 2 and mid.machine("gke").gpus_per_replica == 2
    assert mid.machine("eks").replicas_per_node == 4
    small = plan_deployment("r1-distill-qwen-7b", "pro")
    assert small.tensor_parallel_size == 1 and small.machine("gke").replicas_per_node == 4
    assert small.machine("existing").node_labels == {"dsdeploy.io/gpu-tier": "pro"}
    assert small.machine("eks").node_labels == {"node.kubernetes.io/instance-type": "p5.48xlarge"}


def test_v3_bf16_on_pro_does_not_fit_and_says_by_how_much() -> None:
    with pytest.raises(PlanDoesNotFit) as info:  # one node only (the multi-node verdicts: test_planner_multinode)
        plan_deployment("deepseek-ai/DeepSeek-V3", "pro", "bf16", max_nodes=1)
    message = str(info.value)
    # 671.03B x 2 bytes = 1342.1 GB of weights against 4 x 85.5 GB x 0.90 = 307.9 GB usable.
    assert "weights 1342.1 GB" in message and "307.9 GB usable" in message
    assert info.value.shortfall_bytes / 1e9 == pytest.approx(1057.2, abs=0.1)
    assert "short by 1057.2 GB" in message
    assert "8x H200-141GB" in message and "No tier or quantization in the catalog fits" in message


def test_does_not_fit_names_the_nearest_fitting_quantization_and_tier() -> None:
    # One node only: the advice names the node count that would hold it first, then what fits one node.
    with pytest.raises(
        PlanDoesNotFit,
        match=r"short by 39\.3 GB\. Shorter contexts were tried too \(16,384, 8,192, "
        r"4,096 tokens\): no sequence fits at any of them\. Would fit: one "
        r"replica across 3 nodes of tier base \(--max-nodes 3\); or "
        r"--quantization gptq-int4 on tier base \(published weights\); or tier "
        r"pro \(4x H100-80GB\) at bf16",
    ):
        plan_deployment("r1-distill-qwen-32b", "base", max_nodes=1)
    with pytest.raises(PlanDoesNotFit) as info:  # an explicit context is the only one tried
        plan_deployment("r1-distill-qwen-32b", "base", context=4096, max_nodes=1)
    assert "Shorter contexts" not in str(info.value) and "one 4096-token sequence" in str(info.value)
    with pytest.raises(
        PlanDoesNotFit,
        match=r"Would fit: one replica across 2 nodes of tier base \(--max-nodes 2\); "
        r"or tier pro \(4x H100-80GB\) at awq-int4\.$",
    ):
        plan_deployment("r1-distill-llama-70b", "base", "awq-int4", max_nodes=1)


def test_default_context_shrinks_with_a_warning_but_an_explicit_one_does_not() -> None:
    plan = plan_deployment("r1-distill-qwen-14b", "base")
    assert plan.max_model_len == 16_384 and plan.max_num_seqs >= 1
    assert any("context reduced from the default 32768 to 16384" in w for w in plan.warnings)
    assert any("only 1 sequence(s)" in w for w in plan.warnings)
    with pytest.raises(PlanDoesNotFit, match="one 32768-token sequence"):
        plan_deployment("r1-distill-qwen-14b", "base", context=32_768, max_nodes=1)
    # Across nodes the explicit context is kept: two base nodes hold a 32K sequence of the 14B.
    assert plan_deployment("r1-distill-qwen-14b", "base", context=32_768).nodes_per_replica == 2
    assert plan_deployment("v2-lite", "pro").max_model_len == 32_768  # the model's own maximum


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"model": "llama-3-8b", "tier": "base"}, r"unknown model 'llama-3-8b'; allowed: .*\(r1-distill-qwen-7b\)"),
        ({"model": "v3", "tier": "mega"}, r"unknown tier 'mega'; allowed: base, pro"),
        ({"model": "v3", "tier": "pro", "quantization": "int3"}, r"unknown quantization 'int3'; allowed: bf16, fp8"),
        ({"model": "v3", "tier": "pro", "quantization": ""}, r"unknown quantization ''; allowed: bf16, fp8"),
        ({"model": "v3", "tier": "pro", "quantization": "  "}, r"unknown quantization '  '; allowed: bf16, fp8"),
        ({"model": "v2-lite", "tier": "pro", "context": 65_536}, r"context 65536 is out of range for .*256\.\.32768"),
        ({"model": "v2-lite", "tier": "pro", "context": 10}, r"context 10 is out of range"),
        (
            {"model": "v2-lite", "tier": "pro", "gpu_memory_utilization": 1.5},
            r"gpu_memory_utilization 1\.5 .*0\.10\.\.0\.99",
        ),
    ],
)
def test_bad_input_is_a_plan_error(kwargs: dict, expected: str) -> None:
    with pytest.raises(PlanError, match=expected) as info:
        plan_deployment(**kwargs)
    assert not isinstance(info.value, PlanDoesNotFit)


def test_quantization_sources_and_warnings() -> None:
    runtime = plan_deployment("r1-distill-qwen-7b", "base", "fp8")  # vLLM quantizes bf16 at load
    assert runtime.checkpoint == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" and runtime.vllm_quantization == "fp8"
    assert runtime.engine_args[-4:-2] == ["--quantization", "fp8"]
    assert any("no FP8 tensor cores" in w for w in runtime.warnings)  # A100
    assert not plan_deployment("r1-distill-qwen-7b", "pro", "fp8").warnings
    gptq = plan_deployment("r1-distill-qwen-7b", "base", "gptq-int4")  # published checkpoint
    assert gptq.checkpoint == "RedHatAI/DeepSeek-R1-Distill-Qwen-7B-quantized.w4a16"
    assert gptq.vllm_quantization is None and "--quantization" not in gptq.engine_args
    missing = plan_deployment("v2-lite", "base", "awq-int4")  # nothing published: a warning
    assert missing.checkpoint is None
    assert any("no published awq-int4 weights" in w and "AutoAWQ" in w for w in missing.warnings)
    # The pinned vLLM loads neither GGUF nor bitsandbytes: those plans run on dsdeploy serve, with no vLLM flags.
    gguf = plan_deployment("r1-distill-llama-8b", "base", "gguf-q4")
    assert (gguf.engine, gguf.vllm_quantization, gguf.engine_args) == ("server", None, [])
    assert gguf.checkpoint == "unsloth/DeepSeek-R1-Distill-Llama-8B-GGUF"
    assert any("dsdeploy serve --gguf-file" in w for w in gguf.warnings)
    bnb = plan_deployment("r1-distill-llama-8b", "base", "bnb-4bit")
    assert (bnb.engine, bnb.vllm_quantization, bnb.engine_args) == ("server", None, [])
    assert bnb.checkpoint == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"  # quantized while the server loads it
    assert any("RFC #39583" in w for w in bnb.warnings)
    assert (gptq.engine, runtime.engine) == ("vllm", "vllm")
    # 4-bit weights are about a quarter of bf16 plus 16-bit embeddings:
    # (8,030,261,248 - 2 x 128,256 x 4096) x 4.5 / 8 + 2 x 128,256 x 4096 x 2
    body = 8_030_261_248 - 2 * 128_256 * 4096
    assert bnb.weight_bytes == round(body * 4.5 / 8 + 2 * 128_256 * 4096 * 2)


H100_USABLE = int(81559 * 1024 * 1024 * 0.90)  # 76,969,567,641 bytes at utilization 0.90
QWEN_7B_PARAMS, QWEN_7B_VOCAB, QWEN_7B_HIDDEN = 7_615_616_512, 152_064, 3584


def test_fp4_fp8_is_the_v4_format_only() -> None:
    with pytest.raises(
        PlanError,
        match=r"'fp4-fp8' is the native format of the DeepSeek-V4 checkpoints; "
        r"deepseek-ai/DeepSeek-R1-Distill-Qwen-7B is published in bf16",
    ):
        plan_deployment("r1-distill-qwen-7b", "pro", "fp4-fp8")


@pytest.mark.parametrize("quant", [q for q in QUANTIZATIONS if q != "fp4-fp8"])
def test_every_quantization_plans_the_7b_on_pro(quant: str) -> None:
    plan = plan_deployment("r1-distill-qwen-7b", "pro", quant)
    spec = QUANT_SPECS[quant]
    assert plan.quantization == quant
    # weights: every parameter at the format's bits, except embeddings + output head kept 16-bit
    table = QWEN_7B_VOCAB * QWEN_7B_HIDDEN  # one embedding table (untied: two)
    if spec.embeddings_16bit:
        weights = (QWEN_7B_PARAMS - 2 * table) * spec.bits_per_weight / 8 + 2 * table * 2
    else:
        weights = QWEN_7B_PARAMS * spec.bits_per_weight / 8
    assert plan.weight_bytes == round(weights)
    # one H100 holds the 7B in every format: TP 1, so a 4-GPU pro slot runs 4 replicas, a p5.48xlarge 8
    assert (plan.tensor_parallel_size, plan.gpus_per_replica) == (1, 1)
    assert plan.machine("eks").replicas_per_node == 8 and plan.machine("gke").replicas_per_node == 4
    # KV: the same reserve as on base (TP 1: runtime + activations + sampler), the rest of one H100 for KV
    reserve = RUNTIME + BATCHED_TOKENS * (8 * 3584 + 3 * 18944) * 2 + SAMPLER_SEQS * QWEN_7B_VOCAB * 4
    kv_tokens = (H100_USABLE - plan.weight_bytes - reserve) // 57_344
    assert plan.kv_cache_tokens == kv_tokens
    assert plan.max_model_len == 32_768 and plan.max_num_seqs == min(256, kv_tokens // 32_768)
    # decode bound for one sequence: streamed weights (input table not read) + its KV, over 3,350 GB/s
    input_table = table * (2 if spec.embeddings_16bit else spec.bits_per_weight / 8)
    per_seq = 3_350e9 / (plan.weight_bytes - input_table + 32_768 * 57_344)
    assert plan.decode_tokens_per_s_per_seq == pytest.approx(per_seq, abs=0.01)
    assert plan.decode_tokens_per_s_batch > plan.decode_tokens_per_s_per_seq
    tflops = 1979 if quant == "fp8" else 989  # FP8 tensor cores only for fp8
    assert plan.prefill_tokens_per_s == pytest.approx(tflops * 1e12 / (2 * QWEN_7B_PARAMS), abs=0.01)


def test_machine_mapping_and_its_note_follow_the_plans_gpus_per_replica() -> None:
    small = plan_deployment("r1-distill-qwen-7b", "pro")  # TP 1: 8 replicas on a p5.48xlarge
    eks = small.machine("eks")
    assert (eks.gpus_per_replica, eks.replicas_per_node) == (1, 8)
    assert eks.substitution.endswith(
        "This plan needs 1 GPU(s) per replica (tensor parallel 1), so one p5.48xlarge runs 8 replicas."
    )
    assert small.machine("gke").replicas_per_node == 4 and small.machine("gke").substitution is None
    full = plan_deployment("r1-distill-llama-70b", "pro")  # TP 4: the tier's own mapping
    assert full.tensor_parallel_size == 4
    assert full.machine("eks") == load_catalog().tier("pro").machine_for("eks")
    assert full.machine("eks").replicas_per_node == 2 and "two 4-GPU pro replicas" in full.machine("eks").substitution


def test_plan_is_frozen_and_explains_itself() -> None:
    plan = plan_deployment("v2-lite", "base")
    with pytest.raises(Exception, match="frozen"):
        plan.max_num_seqs = 1  # type: ignore[misc]
    assert any(
        step.startswith(
            "KV cache per token (grows with the sequence): MLA 27 layers x (512 + 64) x 2 "
            "bytes = 31,104 bytes; replicated whole on every GPU"
        )
        for step in plan.explanation
    )
    assert "KV cache of one sequence per GPU, growing linearly with its length: 32,768 tokens 1.02 GB" in " ".join(
        plan.explanation
    )  # 32,768 x 31,104 bytes


def test_planner_imports_neither_torch_nor_pulumi() -> None:
    code = (
        "import sys, infra.planner, infra.plan_command; "
        "bad = [m for m in ('torch', 'pulumi', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_model_tier_and_quantization_plans_or_explains_the_shortfall() -> None:
    catalog = load_catalog()
    outcomes = {"fits": 0, "short": 0, "no kernels": 0, "unsupported": 0, "spans": 0}
    for model, spec in catalog.models.items():
        for tier in catalog.tiers:
            for quant in QUANTIZATIONS:
                if quant == "fp4-fp8" and spec.native_dtype != "fp4-fp8":
                    continue  # refused as bad input (test_fp4_fp8_is_the_v4_format_only)
                try:
                    plan = plan_deployment(model, tier, quant)
                except PlanUnsupported as exc:
                    assert spec.unknown and "has no source for these facts" in str(exc)
                    outcomes["unsupported"] += 1
                    continue
                except PlanDoesNotFit as exc:
                    assert "Would fit:" in str(exc) or "No tier or quantization" in str(exc)
                    if "does not run on tier" in str(exc):
                        assert exc.shortfall_bytes == 0 and spec.vllm.min_architecture == "hopper"
                        outcomes["no kernels"] += 1
                        continue
                    assert exc.shortfall_bytes > 0 and "short by" in str(exc)
                    outcomes["short"] += 1
                    continue
                outcomes["fits"] += 1
                outcomes["spans"] += plan.nodes_per_replica > 1
                assert 1 <= plan.max_num_seqs <= 256
                assert plan.tensor_parallel_size <= catalog.tier(tier).gpus_per_replica
                assert plan.gpus_per_replica == plan.tensor_parallel_size * plan.nodes_per_replica
                assert plan.decode_tokens_per_s_batch >= plan.decode_tokens_per_s_per_seq > 0
    assert outcomes["fits"] > 100 and outcomes["short"] > 15 and outcomes["spans"] > 15
    assert outcomes["no kernels"] > 10 and outcomes["unsupported"] == 2 * 2 * len(
        QUANTIZATIONS
    )  # V4-Pro-0813, V4.1-Flash


def test_utilization_flag_is_never_rounded_up() -> None:
    plan = plan_deployment("r1-distill-qwen-7b", "base", gpu_memory_utilization=0.925)
    flag = plan.engine_args[plan.engine_args.index("--gpu-memory-utilization") + 1]
    assert flag == "0.925" and plan.gpu_memory_utilization == 0.925
    # less memory for the KV cache than at 0.95, more than at 0.90
    assert (
        plan_deployment("r1-distill-qwen-7b", "base").kv_cache_tokens
        < plan.kv_cache_tokens
        < plan_deployment("r1-distill-qwen-7b", "base", gpu_memory_utilization=0.95).kv_cache_tokens
    )
