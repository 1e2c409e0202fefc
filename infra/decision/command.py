"""``dsdeploy cost``, ``dsdeploy report`` and ``dsdeploy compliance``.

Exit codes: 0 done; 2 bad input (the message names the option, the value and what is allowed).
matplotlib is imported only when a chart is asked for.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from infra.catalog.schema import CLOUD_PLATFORMS
from infra.decision.cli_args import finite_number, non_empty, one_line_errors, whole_number
from infra.decision.currency import DecisionInputError
from infra.decision.prices import ARTICLE_PRESET

_MONEY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(CNY|USD|RMB|¥|\$)?\s*$", re.IGNORECASE)


def parse_money(text: str, flag: str, default_currency: str) -> dict[str, Any]:
    """``12000``, ``12000CNY``, ``3.5 USD`` -> {"amount", "currency"}; a bare number takes ``default_currency``."""
    m = _MONEY.match(text)
    if not m:
        raise DecisionInputError(
            f"{flag} {text!r}: give an amount >= 0 with an optional currency, e.g. 150000CNY or 3.67USD"
        )
    cur = (m.group(2) or default_currency).upper()
    cur = {"RMB": "CNY", "¥": "CNY", "$": "USD"}.get(cur, cur)
    return {"amount": float(m.group(1)), "currency": cur}


def _add_cost_options(p: argparse.ArgumentParser, *, volumes: bool = True) -> None:
    if volumes:
        _add_volume_options(p)
    _add_price_options(p)


def _add_volume_options(p: argparse.ArgumentParser) -> None:
    vol = p.add_mutually_exclusive_group()
    vol.add_argument(
        "--volumes",
        type=finite_number,
        nargs="+",
        metavar="CALLS_PER_YEAR",
        help="calls per year to compare (default: the article's 100000 1000000 10000000)",
    )
    vol.add_argument("--calls-per-month", type=finite_number, nargs="+", metavar="N", help="calls per month (x12)")


def _add_price_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompt-tokens", type=finite_number, default=500, help="average prompt tokens per call (default 500)"
    )
    p.add_argument(
        "--completion-tokens", type=finite_number, default=500, help="average completion tokens per call (default 500)"
    )
    p.add_argument(
        "--cache-hit-ratio",
        type=finite_number,
        default=0.0,
        help="share of prompt tokens billed as API cache hits (0-1)",
    )
    p.add_argument(
        "--peak-to-average", type=finite_number, default=2.0, help="peak traffic / average traffic (default 2)"
    )
    p.add_argument(
        "--api-prices",
        type=non_empty,
        default=ARTICLE_PRESET,
        metavar="PRESET|FILE",
        help="API price sheet: article-flat (article: CNY 0.12/1K tokens), deepseek (published), or a YAML file",
    )
    p.add_argument("--api-model", type=non_empty, help="model in the price sheet (default: the sheet's default_model)")
    p.add_argument("--currency", choices=["CNY", "USD"], default="CNY", help="report currency (default CNY)")
    p.add_argument(
        "--usd-cny", type=finite_number, help="exchange rate, CNY per USD (default: the price sheet's dated rate)"
    )
    p.add_argument(
        "--local-prices", type=non_empty, metavar="FILE", help="local price sheet YAML (default: the shipped sheet)"
    )
    p.add_argument("--platform", action="append", choices=CLOUD_PLATFORMS, help="cloud(s) to price (default both)")
    p.add_argument("--no-onprem", action="store_true", help="leave out the bought-hardware option")
    p.add_argument(
        "--quantization", type=non_empty, help="quantization for the planner (default: the planner's choice)"
    )
    p.add_argument(
        "--context",
        type=whole_number,
        help="max model length the replica is planned for (default: prompt + completion tokens, "
        "rounded up to a power of two)",
    )
    p.add_argument(
        "--throughput-tokens-per-s",
        type=finite_number,
        help="measured decode tokens/s of ONE replica (replaces the planner's bound; needs one --tier)",
    )
    p.add_argument(
        "--amortization-years", type=finite_number, default=3.0, help="hardware depreciation period (default 3)"
    )
    p.add_argument(
        "--utilization",
        type=finite_number,
        default=0.6,
        help="share of a replica's throughput used at peak (0-1, default 0.6)",
    )
    p.add_argument(
        "--hardware-price",
        type=non_empty,
        metavar="AMOUNT[CUR]",
        help="one server of the tier's shape, bought (report currency if no unit)",
    )
    p.add_argument("--power-kw", type=finite_number, help="average draw of one server, kW")
    p.add_argument("--electricity-per-kwh", type=non_empty, metavar="AMOUNT[CUR]", help="electricity tariff")
    p.add_argument("--pue", type=finite_number, help="data-centre PUE (1.0-3.0)")
    p.add_argument(
        "--hosting-per-server-year", type=non_empty, metavar="AMOUNT[CUR]", help="rack/colocation per server-year"
    )
    p.add_argument(
        "--ops-per-year", type=non_empty, metavar="AMOUNT[CUR]", help="operations staff time per year (all options)"
    )
    p.add_argument(
        "--on-demand-hourly",
        type=non_empty,
        metavar="AMOUNT[CUR]",
        help="cloud node on-demand price per hour (USD if no unit)",
    )
    p.add_argument(
        "--spot-hourly", type=non_empty, metavar="AMOUNT[CUR]", help="cloud node spot price per hour (USD if no unit)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    cost = subparsers.add_parser(
        "cost",
        help="API vs local cost, break-even volume and chart",
        description="Compare the API's annual cost with running the model yourself "
        "(bought, cloud on-demand, cloud spot). With no options: the "
        "article's basis (100k / 1M / 10M calls per year, 1,000 tokens per "
        "call, CNY 0.12 per 1K tokens, 3-year amortization).",
    )
    cost.add_argument(
        "--model", type=non_empty, default=None, help="model for the planner (default DeepSeek-R1-Distill-Qwen-7B)"
    )
    cost.add_argument(
        "--tier", type=non_empty, action="append", help="tier(s) to price (default: every tier of the catalog)"
    )
    _add_cost_options(cost)
    cost.add_argument("--json", action="store_true", help="print the study as JSON")
    cost.add_argument(
        "--plot", type=non_empty, metavar="FILE.png", help="write the annual-cost chart with break-even points"
    )
    cost.set_defaults(func=run_cost)
    one_line_errors(cost)

    rep = subparsers.add_parser("report", help="one Markdown decision document: plan, cost (with chart), compliance")
    rep.add_argument("--model", type=non_empty, required=True, help="model (Hugging Face id or alias)")
    rep.add_argument("--tier", type=non_empty, required=True, action="append", help="tier (repeat to compare tiers)")
    rep.add_argument(
        "--volume",
        type=finite_number,
        nargs="+",
        required=True,
        metavar="CALLS_PER_YEAR",
        help="expected calls per year (one or more)",
    )
    rep.add_argument(
        "--mode",
        choices=["local-only", "hybrid", "cloud-only"],
        default="hybrid",
        help="deployment mode for the compliance matrix (default hybrid)",
    )
    rep.add_argument(
        "--router-config", type=non_empty, metavar="FILE", help="router YAML whose policy and audit settings to report"
    )
    rep.add_argument(
        "-o",
        "--output",
        type=non_empty,
        metavar="report.md",
        help="write here (the chart goes next to it); default stdout",
    )
    _add_cost_options(rep, volumes=False)
    rep.set_defaults(func=run_report)
    one_line_errors(rep)
    _register_compliance(subparsers)


def _register_compliance(subparsers: argparse._SubParsersAction) -> None:
    from infra.decision.compliance import MODES

    comp = subparsers.add_parser(
        "compliance",
        help="compliance matrix of a deployment mode (what leaves, audit, keys, models, export control)",
        description="State, for a deployment mode, what data can leave and under which "
        "rule, where audit records live and at what granularity, who controls "
        "keys and models, and the export-control note for the catalog's GPUs. "
        "Hybrid rules are read from the router's own config file.",
    )
    comp.add_argument(
        "--mode", required=True, choices=MODES, help="local-only, hybrid (router data-class policy) or cloud-only"
    )
    comp.add_argument(
        "--router-config",
        type=non_empty,
        metavar="FILE",
        help="router YAML whose policy and audit settings to report (default: the router's defaults)",
    )
    comp.add_argument("--json", action="store_true", help="print the matrix as JSON")
    comp.set_defaults(func=run_compliance)
    one_line_errors(comp)


def request_from_args(args: argparse.Namespace, volumes: list[float] | None) -> Any:
    from infra.decision.cost_model import Workload
    from infra.decision.study import DEFAULT_MODEL, CostRequest

    fields: dict[str, Any] = {
        "workload": Workload(
            prompt_tokens=args.prompt_tokens,
            completion_tokens=args.completion_tokens,
            cache_hit_ratio=args.cache_hit_ratio,
            peak_to_average=args.peak_to_average,
        ),
        "api_prices": args.api_prices,
        "api_model": args.api_model,
        "currency": args.currency,
        "usd_cny": args.usd_cny,
        "local_prices": args.local_prices,
        "onprem": not args.no_onprem,
        "model": DEFAULT_MODEL if args.model is None else args.model,
        "quantization": args.quantization,
        "context": args.context,
        "throughput_tokens_per_s": args.throughput_tokens_per_s,
        "amortization_years": args.amortization_years,
        "utilization": args.utilization,
        "power_kw": args.power_kw,
        "pue": args.pue,
    }
    if volumes is not None:
        fields["volumes"] = volumes
    if args.tier:
        fields["tiers"] = args.tier
    if args.platform:
        fields["platforms"] = args.platform
    for name, default_cur in (
        ("hardware_price", args.currency),
        ("electricity_per_kwh", args.currency),
        ("hosting_per_server_year", args.currency),
        ("ops_per_year", args.currency),
        ("on_demand_hourly", "USD"),
        ("spot_hourly", "USD"),
    ):
        value = getattr(args, name)
        if value is not None:
            fields[name] = parse_money(value, "--" + name.replace("_", "-"), default_cur)
    return CostRequest(**fields)


_FLAGS = {"tiers": "--tier", "platforms": "--platform"}  # request fields whose option is named otherwise


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "input"
        flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
        parts.append(f"{flag}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input -> one line on stderr and exit code 2."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except DecisionInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except ValidationError as exc:
            print(f"error: {_validation_message(exc)}", file=sys.stderr)
            return 2

    return wrapper


@_guarded
def run_cost(args: argparse.Namespace) -> int:
    from infra.decision.cost_model import check_volumes
    from infra.decision.study import run_study

    volumes = args.volumes
    if args.calls_per_month is not None:
        check_volumes(args.calls_per_month, "--calls-per-month", per="month")
        volumes = [v * 12 for v in args.calls_per_month]
    study = run_study(request_from_args(args, volumes))
    plot_path = None
    if args.plot:
        from infra.decision.plot import build_figure, save_plot

        plot_path = save_plot(build_figure(study), args.plot)
    if args.json:
        data = study.model_dump(mode="json")
        data["plot"] = str(plot_path) if plot_path else None
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        from infra.decision.terminal import print_study

        print_study(study)
        if plot_path:
            print(f"chart written to {plot_path}")
    return 0


@_guarded
def run_report(args: argparse.Namespace) -> int:
    from infra.decision.cost_model import check_volumes
    from infra.decision.report import build_report

    check_volumes(args.volume, "--volume")
    text, written = build_report(
        request_from_args(args, args.volume), mode=args.mode, router_config=args.router_config, output=args.output
    )
    if args.output is None:
        print(text)
    else:
        print(f"report written to {written[0]}" + (f", chart {written[1]}" if len(written) > 1 else ""))
    return 0


@_guarded
def run_compliance(args: argparse.Namespace) -> int:
    from infra.decision.compliance import compliance_matrix

    matrix = compliance_matrix(args.mode, args.router_config)
    if args.json:
        print(json.dumps(matrix.model_dump(mode="json"), indent=2, ensure_ascii=False))
    else:
        from infra.decision.terminal import print_compliance

        print_compliance(matrix)
    return 0
