"""`dsdeploy cost` / `dsdeploy report` through the real CLI entry point: output, files, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dsdeploy.cli import main
from infra.decision.currency import DecisionInputError
from infra.decision.prices import load_api_prices, load_local_prices
from infra.decision.study import CostRequest, run_study


def _json(capsys, *argv):
    assert main(["cost", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_default_cost_reproduces_the_article_basis(capsys):
    data = _json(capsys)
    assert [r["calls_per_year"] for r in data["rows"]] == [100_000, 1_000_000, 10_000_000]
    assert [r["api"] for r in data["rows"]] == pytest.approx([12_000, 120_000, 1_200_000])
    assert data["currency"] == "CNY" and data["api_sheet"] == "article-flat"
    assert data["article_table"]["reproduces_basis"] is True
    assert {c["tier"] for c in data["capacities"]} == {"base", "pro"}
    assert all("planner" in c["source"] for c in data["capacities"])
    keys = {o["key"] for o in data["options"]}
    assert {"base on-prem", "pro gke spot", "pro eks on-demand"} <= keys
    assert {b["option"] for b in data["break_evens"]} == keys


def test_cost_table_output_and_plot(capsys, tmp_path):
    png = tmp_path / "cost.png"
    assert main(["cost", "--tier", "base", "--calls-per-month", "50000", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "600k calls/yr" in out and "base on-prem" in out and "Break-even" in out and "cheapest" in out
    assert "-18.3%" in out  # the article's 1M row against its basis
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measured_throughput_and_deepseek_prices_in_usd(capsys):
    data = _json(
        capsys,
        "--tier",
        "pro",
        "--platform",
        "eks",
        "--throughput-tokens-per-s",
        "2000",
        "--api-prices",
        "deepseek",
        "--api-model",
        "deepseek-reasoner",
        "--currency",
        "USD",
        "--spot-hourly",
        "20",
        "--volumes",
        "1e6",
        "--electricity-per-kwh",
        "0.15USD",
        "--ops-per-year",
        "70000CNY",
        "--hosting-per-server-year",
        "1000",
        "--power-kw",
        "5",
        "--pue",
        "1.2",
        "--usd-cny",
        "7",
    )
    # reasoner (V3.2, same prices as chat): (500 x 0.28 + 500 x 0.42) / 1e6 = 0.00035 USD per call
    assert data["api_cost_per_call"] == pytest.approx(0.00035)
    spot = next(o for o in data["options"] if o["key"] == "pro eks spot")
    assert spot["unit_cost_per_year"] == pytest.approx(20 * 8760)
    assert data["capacities"][0]["source"].startswith("measured")
    assert data["article_table"]["reproduces_basis"] is False
    # on-prem: power 5 kW x 1.2 x 8,760 h x 0.15 USD = 7,884 USD; hosting 1,000 USD; ops 70,000 CNY / 7 = 10,000 USD
    onprem = next(o for o in data["options"] if o["key"] == "pro on-prem")
    assert onprem["breakdown"]["power"] == pytest.approx(7884) and onprem["breakdown"]["hosting"] == pytest.approx(1000)
    assert onprem["fixed_cost_per_year"] == pytest.approx(10_000)
    assert any("operations per year 70000 CNY (given on the command line)" in a for a in data["assumptions"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--volumes", "-100"], "--volumes: -100.0 is not allowed"),
        (["--calls-per-month", "-5"], "--calls-per-month"),
        (["--tier", "gold"], "--tier 'gold'"),
        (["--api-prices", "nowhere.yaml"], "neither a preset"),
        # the former name of the article's preset says what to write instead
        (["--api-prices", "mission-flat"], "--api-prices 'mission-flat' was renamed: use 'article-flat'"),
        (["--api-prices", "deepseek", "--api-model", "gpt-4"], "--api-model 'gpt-4' is not in price sheet"),
        (["--utilization", "1.5"], "--utilization"),
        (["--throughput-tokens-per-s", "100"], "give exactly one --tier"),
        (["--tier", "base", "--hardware-price", "lots"], "--hardware-price 'lots'"),
        (["--tier", "base", "--model", "no-such-model"], "no-such-model"),
    ],
)
def test_bad_inputs_exit_2_with_a_clear_message(capsys, argv, message):
    assert main(["cost", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_missing_price_in_a_custom_sheet_is_named(tmp_path, capsys):
    sheet = tmp_path / "api.yaml"
    sheet.write_text(
        "description: mine\ndefault_model: m\nmodels:\n  m:\n    currency: CNY\n"
        "    input_cache_miss_per_mtok: 2\n    output_per_mtok: 3\n    source: quote\n    read_on: 2026-11-01\n"
    )
    assert main(["cost", "--api-prices", str(sheet)]) == 2
    err = capsys.readouterr().err
    assert "models.m.input_cache_hit_per_mtok" in err and "Field required" in err


def test_missing_cloud_price_is_reported_not_guessed(capsys):
    data = _json(capsys, "--tier", "base", "--platform", "eks")
    spot = next(o for o in data["options"] if o["key"] == "base eks spot")
    assert spot["priced"] is False and "g6e.2xlarge" in spot["missing_price"]  # the cheapest shape that holds base
    assert all(r["local"]["base eks spot"] is None for r in data["rows"])


def test_shipped_price_sheets_carry_source_and_date_for_every_price():
    for preset in ("article-flat", "deepseek"):
        for name, p in load_api_prices(preset).models.items():
            assert p.source and p.read_on, name
    deepseek = load_api_prices("deepseek").models
    assert {"deepseek-chat", "deepseek-reasoner"} <= set(deepseek)
    local = load_local_prices()
    for machine in ("a2-highgpu-1g", "a3-highgpu-4g", "p4d.24xlarge", "p5.48xlarge"):
        entry = local.cloud[machine]
        assert entry.source and entry.read_on and entry.on_demand_per_hour
    for tier in ("base", "pro"):
        assert local.hardware[tier].gpu.source and local.hardware[tier].host.basis
    assert local.exchange_rate.as_of.isoformat() == "2024-11-25"


def test_custom_local_sheet_with_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "local.yaml"
    bad.write_text(
        "exchange_rate: {usd_cny: 7, as_of: 2026-01-01, source: x}\nhardware: {}\ncloud: {}\n"
        "running: {pue: 1.2}\nsurprise: 1\n"
    )
    with pytest.raises(DecisionInputError, match="surprise"):
        run_study(CostRequest(local_prices=str(bad), throughput_tokens_per_s=100, tiers=["base"]))


def test_tiers_the_model_does_not_fit_are_left_out_or_refused(capsys):
    # a 70B model in bf16 does not fit one A100 40GB: base is left out with a warning, pro is priced
    data = _json(capsys, "--model", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "--volumes", "1e7")
    assert {c["tier"] for c in data["capacities"]} == {"pro"}
    assert any("tier base" in w and "does not fit" in w for w in data["warnings"])
    # DeepSeek-V3 fits no single A100: nothing to price -> exit 2 naming the shortfall
    assert main(["cost", "--model", "deepseek-ai/DeepSeek-V3", "--tier", "base"]) == 2
    err = capsys.readouterr().err
    assert "no tier can serve the model" in err and "short by" in err


def test_tier_without_hardware_price_and_explicit_exchange_rate(tmp_path, capsys):
    sheet = tmp_path / "local.yaml"
    text = (Path(__file__).resolve().parents[3] / "infra/decision/local_prices.yaml").read_text()
    data = yaml.safe_load(text)
    del data["hardware"]["pro"]
    sheet.write_text(yaml.safe_dump(data))
    out = _json(
        capsys,
        "--local-prices",
        str(sheet),
        "--tier",
        "pro",
        "--platform",
        "gke",
        "--throughput-tokens-per-s",
        "1000",
        "--usd-cny",
        "7.0",
        "--volumes",
        "1e6",
    )
    onprem = next(o for o in out["options"] if o["key"] == "pro on-prem")
    assert onprem["priced"] is False and "no hardware price for tier 'pro'" in onprem["missing_price"]
    assert "--hardware-price" in onprem["missing_price"]
    # a3-highgpu-4g spot 17.6978748493151 USD/h x 8,760 h x 7.0 CNY/USD
    spot = next(o for o in out["options"] if o["key"] == "pro gke spot")
    assert spot["unit_cost_per_year"] == pytest.approx(17.6978748493151 * 8760 * 7.0)
    assert out["exchange_rate"]["usd_cny"] == 7.0 and out["exchange_rate"]["source"] == "given with --usd-cny"
    assert any(a.startswith("exchange rate: 1 USD = 7 CNY") for a in out["assumptions"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--amortization-years", "inf"],
        ["--usd-cny", "inf"],
        ["--power-kw", "inf", "--tier", "base"],
        ["--prompt-tokens", "inf"],
        ["--peak-to-average", "inf"],
        ["--completion-tokens", "inf"],
        ["--calls-per-month", "nan"],
        ["--volumes", "1e6", "inf"],
        ["--volumes=-inf"],
        ["--utilization", "nan"],
        ["--throughput-tokens-per-s", "inf", "--tier", "base"],
        ["--cache-hit-ratio", "NaN"],
        ["--pue", "inf"],
    ],
)
def test_non_finite_numbers_are_refused_naming_the_option(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(["cost", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    flag = next(a for a in argv if a.startswith("--") and a != "--tier").split("=")[0]
    assert err.count("\n") == 1 and f"error: argument {flag}: " in err and "give a finite number" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prompt-tokens", "abc"], "argument --prompt-tokens: 'abc' is not a number"),
        (["--volumes", "1e6", "lots"], "argument --volumes: 'lots' is not a number"),
        (["--context", "4k"], "argument --context: '4k' is not a whole number"),
        (["--model", ""], "argument --model: must not be empty"),
        (["--tier", " "], "argument --tier: must not be empty"),
        (["--quantization", ""], "argument --quantization: must not be empty"),
        (["--api-prices", ""], "argument --api-prices: must not be empty"),
        (["--api-model", ""], "argument --api-model: must not be empty"),
        (["--local-prices", ""], "argument --local-prices: must not be empty"),
    ],
)
def test_non_numeric_and_empty_arguments_are_one_line_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["cost", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--completion-tokens", "2e7"], "--completion-tokens: Input should be less than or equal to 10000000"),
        (["--peak-to-average", "0.5"], "--peak-to-average: Input should be greater than or equal to 1"),
        (["--amortization-years", "0"], "--amortization-years: Input should be greater than 0"),
    ],
)
def test_out_of_range_numbers_name_their_option(capsys, argv, message):
    assert main(["cost", *argv]) == 2
    assert message in capsys.readouterr().err


def test_missing_field_in_the_local_price_sheet_is_named(tmp_path, capsys):
    data = yaml.safe_load((Path(__file__).resolve().parents[3] / "infra/decision/local_prices.yaml").read_text())
    del data["hardware"]["base"]["power_kw"]
    data["cloud"]["a2-highgpu-1g"]["on_demand_per_hour"] = float("inf")
    sheet = tmp_path / "local.yaml"
    sheet.write_text(yaml.safe_dump(data))
    assert main(["cost", "--local-prices", str(sheet)]) == 2
    err = capsys.readouterr().err
    assert "hardware.base.power_kw: Field required" in err
    assert "cloud.a2-highgpu-1g.on_demand_per_hour: Input should be a finite number (got inf)" in err


def test_tco_over_the_amortization_period_beside_the_annual_cost(capsys):
    data = _json(capsys, "--tier", "base", "--platform", "eks")
    row = data["rows"][0]  # 100k calls per year
    assert row["api_tco"] == pytest.approx(3 * 12_000)
    # base on-prem over 3 years: purchase (1 x USD 10,000 + USD 12,000) x 7.1918 = CNY 158,219.6, plus
    # 3 years of power 0.8 kW x PUE 1.5 x 8,760 h x CNY 0.8 = 3 x 8,409.6: CNY 183,448.4
    assert row["local_tco"]["base on-prem"] == pytest.approx(22_000 * 7.1918 + 3 * 0.8 * 1.5 * 8760 * 0.8)
    assert row["local_tco"]["base eks spot"] is None
    spot = next(o for o in data["options"] if o["key"] == "base eks spot")
    assert "user-supplied: pass --spot-hourly PRICE" in spot["missing_price"]
    assert "per region and availability zone" in spot["missing_price"]
    assert main(["cost", "--tier", "base", "--amortization-years", "5"]) == 0
    assert "Total cost over 5 years, the amortization period" in capsys.readouterr().out
