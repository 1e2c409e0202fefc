"""The chart: expected series and labels in the figure, then a valid PNG on disk."""

from __future__ import annotations

import struct

import pytest

from infra.decision.currency import DecisionInputError
from infra.decision.plot import build_figure, save_plot
from infra.decision.study import CostRequest, run_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study():
    return run_study(CostRequest(tiers=["base"], throughput_tokens_per_s=1000))


def test_figure_has_api_and_local_series_and_marked_break_evens(study):
    fig = build_figure(study)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0].startswith("API (article-flat / flat)")
    priced = [o.key for o in study.options if o.priced]
    assert priced == ["base on-prem", "base gke on-demand", "base gke spot", "base eks on-demand"]
    for key in priced:
        assert key in labels
    markers = [line for line in ax.get_lines() if line.get_label().startswith("_break-even")]
    expected = {b.option: b for b in study.break_evens if b.volume is not None}
    assert {m.get_label().removeprefix("_break-even ") for m in markers} == set(expected)
    for m in markers:
        be = expected[m.get_label().removeprefix("_break-even ")]
        assert list(m.get_xdata()) == [pytest.approx(be.volume)]
        assert list(m.get_ydata()) == [pytest.approx(be.annual_cost)]
    texts = [t.get_text() for t in ax.texts]
    # numbered markers, and the numbered list beside the chart: "1  base on-prem: 510k calls/yr, ¥61,149/yr"
    assert any(t.startswith("1  base on-prem: 510k calls/yr") for t in texts)
    assert "1" in texts and str(len(markers)) in texts
    assert any(t.startswith("not priced") for t in texts) and "  base eks spot" in texts
    # the API line is the API cost: check one point
    api = ax.get_lines()[0]
    x, y = api.get_xdata()[10], api.get_ydata()[10]
    assert y == pytest.approx(study.api_cost_per_call * x)
    assert ax.get_xscale() == "log" and "calls per year" in ax.get_xlabel() and "CNY" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "base on-prem" in legend and not any(t.startswith("_") for t in legend)


def test_png_is_valid_with_expected_dimensions(study, tmp_path):
    path = save_plot(build_figure(study), tmp_path / "cost.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1210, 715)  # 11 x 6.5 inches at 110 dpi
    assert len(data) > 20_000


def test_plot_path_errors(study, tmp_path):
    fig = build_figure(study)
    with pytest.raises(DecisionInputError, match="ending in .png"):
        save_plot(fig, tmp_path / "cost.svg")
    with pytest.raises(DecisionInputError, match="does not exist"):
        save_plot(fig, tmp_path / "missing" / "cost.png")


def test_options_without_break_even_are_listed_beside_the_chart():
    # deepseek-chat at 7.1918 CNY/USD: (500 x 0.28 + 500 x 0.42) / 1e6 x 7.1918 = 0.00251713 CNY per call;
    # one replica at 472 tokens/s serves 472 x 0.6 x 31,536,000 / 1,000 = 8.93M calls = CNY 22,480 on the API,
    # less than the base server's CNY 61,149 a year: no break-even
    study = run_study(
        CostRequest(tiers=["base"], platforms=["gke"], throughput_tokens_per_s=472, api_prices="deepseek")
    )
    assert study.api_cost_per_call == pytest.approx(0.00251713, rel=1e-4)
    onprem = next(b for b in study.break_evens if b.option == "base on-prem")
    assert onprem.volume is None and "¥61,149/year" in onprem.reason
    texts = [t.get_text() for t in build_figure(study).axes[0].texts]
    assert any(t.startswith("no break-even") for t in texts) and "  base on-prem" in texts
