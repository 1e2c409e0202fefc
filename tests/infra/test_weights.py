"""Weight bytes of the native mixed-precision checkpoints, worked out by hand, against what the hub lists."""

from __future__ import annotations

import pytest

from infra.catalog import load_catalog
from infra.planner.quantization import QUANT_SPECS
from infra.planner.weights import checkpoint_bytes, checkpoint_elements, weight_bytes, weight_groups
from tests.support.deepseek_bytes import v4_flash_bytes

GIB = 1024**3


def test_v4_flash_weights_by_hand() -> None:
    v4 = load_catalog().model("deepseek-v4-flash")
    fp4_fp8 = QUANT_SPECS["fp4-fp8"]
    assert weight_bytes(v4, fp4_fp8) == v4_flash_bytes(draft=False) == 156_015_698_140
    assert weight_bytes(v4, fp4_fp8, spec_decode=True) == v4_flash_bytes(draft=True) == 159_609_485_896
    experts = {g.name: g for g in weight_groups(v4, fp4_fp8) if not g.draft}["routed experts"]
    assert experts.bytes == 43 * 256 * 13_369_344 and experts.params == 43 * 256 * 3 * 2048 * 4096
    assert experts.precision == "fp4 e2m1 + e8m0 scale per 32"
    # 92% of the checkpoint: a single bits-per-weight figure over 284B params would misstate it
    assert experts.bytes / checkpoint_bytes(v4, fp4_fp8) == pytest.approx(0.922, abs=0.001)


def test_v3_family_weights_by_hand() -> None:
    v3 = load_catalog().model("v3")
    per_layer_attention = (
        1536 * 7168
        + 24576 * 1536
        + 576 * 7168
        + 32768 * 512
        + 7168 * 16384
        + 4 * (12 * 56 + 192 * 12 + 5 * 56 + 256 * 4 + 56 * 128)
    )
    attention = {g.name: g for g in weight_groups(v3, QUANT_SPECS["fp8"]) if not g.draft}["attention (MLA) projections"]
    assert attention.bytes == 61 * per_layer_attention == 61 * 187_151_072
    # the MTP layer's embedding and head copies are on disk but shared on the GPUs (2 x 1.85 GB)
    assert (
        checkpoint_bytes(v3, QUANT_SPECS["fp8"]) - weight_bytes(v3, QUANT_SPECS["fp8"], True) == 2 * 129280 * 7168 * 2
    )


def test_stored_elements_match_the_released_checkpoints_exactly() -> None:
    """The hub's safetensors 'Model size' counts stored elements (FP4 pairs as one byte, scales as
    elements); the listings of the released files give these totals."""
    catalog = load_catalog()
    assert checkpoint_elements(catalog.model("v3"), QUANT_SPECS["fp8"]) == 684_531_386_000  # 684.53B
    assert checkpoint_elements(catalog.model("v4-flash"), QUANT_SPECS["fp4-fp8"]) == 158_069_433_298
    assert checkpoint_elements(catalog.model("v4-pro"), QUANT_SPECS["fp4-fp8"]) == 861_608_274_846
    # V4-Flash-0731: 48 shards whose tensors total 166,878,536,440 bytes (its safetensors index)
    assert checkpoint_bytes(catalog.model("v4-flash-0731"), QUANT_SPECS["fp4-fp8"]) == pytest.approx(
        166_878_536_440, rel=0.001
    )


PUBLISHED = [m for m in load_catalog().models.values() if m.published_size is not None]


def test_every_recorded_size_names_its_source() -> None:
    ids = {m.id for m in PUBLISHED}
    assert {
        "deepseek-ai/DeepSeek-V3",
        "deepseek-ai/DeepSeek-R1",
        "deepseek-ai/DeepSeek-V3.1",
        "deepseek-ai/DeepSeek-V3.2",
        "deepseek-ai/DeepSeek-V4-Flash",
        "deepseek-ai/DeepSeek-V4-Flash-0731",
        "deepseek-ai/DeepSeek-V4-Pro",
    } <= ids
    for m in PUBLISHED:
        assert "huggingface.co" in m.published_size.source or "deepseek-ai/" in m.published_size.source


@pytest.mark.parametrize("spec", PUBLISHED, ids=[m.id for m in PUBLISHED])
def test_planner_weights_are_within_5_percent_of_the_published_size(spec) -> None:
    quant = QUANT_SPECS[spec.native_dtype]
    size = spec.published_size
    if size.bytes is not None:
        assert abs(checkpoint_bytes(spec, quant) - size.bytes) / size.bytes < 0.05
    else:
        assert abs(checkpoint_elements(spec, quant) - size.params) / size.params < 0.05
    # what the GPUs hold is the checkpoint less what vLLM shares or does not load
    assert weight_bytes(spec, quant) <= weight_bytes(spec, quant, spec_decode=True) <= checkpoint_bytes(spec, quant)


def test_quantizations_other_than_the_native_one_use_the_formats_average_bits() -> None:
    v3 = load_catalog().model("v3")
    groups = weight_groups(v3, QUANT_SPECS["awq-int4"])
    assert [g.name for g in groups] == ["embedding + output head", "decoder layers"]
    body = 671_026_404_352 - 2 * 129280 * 7168
    assert sum(g.bytes for g in groups) == round(body * (4 + 20 / 128) / 8) + 2 * 129280 * 7168 * 2
    assert not any(g.draft for g in groups)  # re-quantizations carry no MTP layer
