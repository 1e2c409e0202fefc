"""The vLLM flags each catalog model is planned with, and (where vLLM 0.32.0 is installed) that the pinned
engine's own argument parser and registries accept them."""

from __future__ import annotations

import json

import pytest

from infra.catalog import load_catalog
from infra.planner import PlanDoesNotFit, plan_deployment
from infra.planner.engine import engine_args, speculative_decoding
from infra.planner.quantization import QUANT_SPECS
from infra.planner.sizing import evaluate

CATALOG = load_catalog()
PLANNABLE = [m for m in CATALOG.models.values() if m.plannable]

# model: (reasoning parser, tool-call parser, tokenizer mode, speculative method) as vLLM 0.32.0 names them
EXPECTED = {
    "deepseek-ai/DeepSeek-V3": (None, None, None, "mtp"),
    "deepseek-ai/DeepSeek-R1": ("deepseek_r1", None, None, "mtp"),
    "deepseek-ai/DeepSeek-V3.1": ("deepseek_v3", None, None, "mtp"),
    "deepseek-ai/DeepSeek-V3.1-Terminus": ("deepseek_v3", None, None, "mtp"),
    "deepseek-ai/DeepSeek-R1-0528": ("deepseek_r1", None, None, "mtp"),
    "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B": ("deepseek_r1", None, None, None),
    "deepseek-ai/DeepSeek-V3.2-Exp": ("deepseek_v3", "deepseek_v32", "deepseek_v32", "mtp"),
    "deepseek-ai/DeepSeek-V3.2": ("deepseek_v3", "deepseek_v32", "deepseek_v32", "mtp"),
    "deepseek-ai/DeepSeek-V3.2-Speciale": ("deepseek_v3", None, "deepseek_v32", "mtp"),  # no tool calling
    "deepseek-ai/DeepSeek-V4-Flash": ("deepseek_v4", "deepseek_v4", "deepseek_v4", "mtp"),
    "deepseek-ai/DeepSeek-V4-Flash-0731": ("deepseek_v4", "deepseek_v4", "deepseek_v4", "dspark"),
    "deepseek-ai/DeepSeek-V4-Pro": ("deepseek_v4", "deepseek_v4", "deepseek_v4", "mtp"),
}


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _args(spec) -> list[str]:
    """The flags the planner gives a model, on whatever GPU group holds it (8x H200 for the 671B+ ones)."""
    quant = spec.native_dtype
    spec_decode = speculative_decoding(spec, quant)
    fit = evaluate(spec, QUANT_SPECS[quant], CATALOG.gpu("H200-141GB"), 8, 32768, 0.9, spec_decode is not None)
    assert fit.sequences >= 1, spec.id
    return engine_args(spec, fit, 0.9, min(fit.sequences, 256), None, spec_decode)


@pytest.mark.parametrize("model_id", sorted(EXPECTED))
def test_each_model_gets_its_parsers_tokenizer_mode_and_draft(model_id: str) -> None:
    spec = CATALOG.models[model_id]
    args = _args(spec)
    reasoning, tool, tokenizer, speculative = EXPECTED[model_id]
    assert (_flag(args, "--reasoning-parser"), _flag(args, "--tool-call-parser"), _flag(args, "--tokenizer-mode")) == (
        reasoning,
        tool,
        tokenizer,
    )
    assert ("--enable-auto-tool-choice" in args) == (tool is not None)
    config = _flag(args, "--speculative-config")
    assert (json.loads(config)["method"] if config else None) == speculative
    if spec.attention == "v4-hybrid":  # the planner sizes the fp8_ds_mla cache in 256-token blocks
        assert (_flag(args, "--kv-cache-dtype"), _flag(args, "--block-size")) == ("fp8", "256")
    else:
        assert "--kv-cache-dtype" not in args and "--block-size" not in args


def test_every_plannable_model_is_covered() -> None:
    distills = {m.id for m in PLANNABLE if m.family == "r1-distill" and "0528" not in m.id}
    lite = {"deepseek-ai/DeepSeek-V2-Lite-Chat", "deepseek-ai/DeepSeek-Coder-V2-Lite-Instruct"}
    assert {m.id for m in PLANNABLE} == set(EXPECTED) | distills | lite


def test_community_checkpoints_run_without_the_draft_and_say_why() -> None:
    plan = plan_deployment("deepseek-r1-0528-qwen3-8b", "base", "gguf-q4")
    assert any("has no 'gguf' quantization method" in w for w in plan.warnings)
    with pytest.raises(PlanDoesNotFit):
        plan_deployment("deepseek-v3.1", "pro", "awq-int4", max_nodes=1)  # 4-bit V3.1 is still ~350 GB
    over_two = plan_deployment("deepseek-v3.1", "pro", "awq-int4")  # two pro nodes hold it
    assert over_two.nodes_per_replica == 2 and over_two.speculative_decoding is None
    assert "--speculative-config" not in over_two.worker_engine_args
    assert speculative_decoding(CATALOG.model("v3.1"), "awq-int4") is None
    v31 = CATALOG.model("v3.1")
    assert any("tool_chat_template_deepseekv31.jinja" in note for note in v31.vllm.notes)


# Against the pinned engine itself: tests/vllm/test_vllm_flags.py (vLLM's own parser, in .venv-vllm).
