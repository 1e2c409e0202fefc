"""`dsdeploy values` (planner -> chart values file) and `dsdeploy render` (values -> plain manifests).

`values` writes exactly what the Pulumi program hands the chart (same `chart_values` function), for
GitOps repositories; `render` runs `helm template` on the bundled chart so kubectl users can
`dsdeploy render -f values.yaml | kubectl apply -f -`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from dsdeploy.cli import key_value_pairs
from infra.chart_options import add_option_flags
from infra.chart_values import CHART_DIR, ChartOptions
from infra.plan_command import add_plan_arguments, plan_from_args

EXIT_OK, EXIT_DOES_NOT_FIT, EXIT_BAD_INPUT = 0, 1, 2


class RenderUnavailable(RuntimeError):
    """No helm binary (next to the Python interpreter or on PATH), or no chart folder to render."""


def find_helm() -> str:
    """helm from the project's venv (scripts/install_tools.py puts it there), else from PATH."""
    beside = Path(sys.executable).parent / "helm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("helm")
    if found:
        return found
    raise RenderUnavailable(
        "helm is not installed: run `python scripts/install_tools.py --bin-dir .venv/bin` "
        "(or `make install-test`), or put helm v3.14+/v4 on PATH"
    )


def render_chart(
    values_files: Sequence[str | os.PathLike[str]] = (),
    *,
    namespace: str = "dsdeploy",
    release: str = "dsdeploy",
    api_versions: Sequence[str] = (),
    include_tests: bool = False,
    kube_version: str | None = None,
) -> str:
    """`helm template` of charts/dsdeploy; raises RuntimeError with helm's message when it refuses."""
    if not (CHART_DIR / "Chart.yaml").is_file():
        raise RenderUnavailable(
            f"the chart is not at {CHART_DIR}: run dsdeploy from a checkout of the repository "
            "(pip install -e .), or use helm on charts/dsdeploy directly"
        )
    cmd = [find_helm(), "template", release, str(CHART_DIR), "--namespace", namespace]
    for f in values_files:
        cmd += ["-f", str(f)]
    for api in api_versions:
        cmd += ["--api-versions", api]
    if kube_version:
        cmd += ["--kube-version", kube_version]
    if not include_tests:
        cmd.append("--skip-tests")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"helm template exited {proc.returncode}")
    return proc.stdout


def _selector(items: list[str]) -> dict[str, str]:
    return key_value_pairs(items, "--gpu-node-selector", "dsdeploy.io/gpu-tier=pro")


def _replicas(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    try:
        low, high = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"--engine-replicas {text!r}: expected N or MIN:MAX, e.g. 1:3") from None
    return low, high


def plan_warnings(plan, options) -> list[str]:  # noqa: ANN001 - lazily imported types
    """The plan's warnings, each once; the missing-checkpoint one is settled when --checkpoint is given."""
    warnings = list(dict.fromkeys(plan.warnings))
    if options.checkpoint:
        warnings = [w for w in warnings if not w.startswith(f"no published {plan.quantization} weights")]
    return warnings


def _header(plan, options) -> str:  # noqa: ANN001 - plan/options types come from lazily imported modules
    lines = [
        "# dsdeploy chart values, written by `dsdeploy values` from the capacity plan.",
        f"# model {plan.model_id} ({plan.quantization}) on tier {plan.tier} ({plan.gpus_per_replica}x {plan.gpu}),"
        f" platform {options.platform}",
        f"# TP {plan.tensor_parallel_size}, context {plan.max_model_len}, {plan.max_num_seqs} concurrent sequences,"
        f" ~{plan.decode_tokens_per_s_per_seq:.0f} tok/s per sequence",
    ]
    if plan.nodes_per_replica > 1:
        lines.append(
            f"# one replica spans {plan.nodes_per_replica} nodes (pipeline parallel {plan.pipeline_parallel_size}):"
            " a LeaderWorkerSet; install the LWS controller first (docs/kubectl.md)"
        )
    lines += [f"# warning: {w}" for w in plan_warnings(plan, options)]
    lines.append("# Render: dsdeploy render -f THIS_FILE | kubectl apply -f -   (or point Argo CD / Flux at the chart)")
    return "\n".join(lines) + "\n"


def _pinned_machine(plan, options, instance_type: str | None):  # noqa: ANN001, ANN202 - lazily imported types
    """The options with the GPU node selector of the pinned EC2 instance type (what the stack's
    ``dsdeploy:instanceType`` gives the node group), so that values written for GitOps select the nodes
    `pulumi up` made; refused with the allowed shapes when the type does not hold the plan."""
    from infra.planner import PlanError

    if instance_type is None:
        return options
    if options.platform != "eks":
        raise PlanError(
            f"--instance-type: applies to --platform eks only (the EC2 instance type of the GPU node group); "
            f"got --platform {options.platform}"
        )
    if options.gpu_node_selector:
        raise PlanError("--instance-type: give it or --gpu-node-selector, not both (the type selects its nodes)")
    try:
        machine = plan.machine("eks", instance_type)
    except PlanError as exc:
        raise PlanError(f"--instance-type: {exc}") from None
    return options.model_copy(update={"gpu_node_selector": dict(machine.node_labels)})


def cmd_values(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from infra.chart_options import flag_values
    from infra.chart_values import ChartOptions, ChartValuesError, chart_values
    from infra.planner import PlanDoesNotFit, PlanError

    try:
        low, high = _replicas(args.engine_replicas)
        options = ChartOptions(
            **flag_values(args, ChartOptions),  # one flag per option (infra/chart_options.py); two more below
            gpu_node_selector=_selector(args.gpu_node_selector),
            engine_replicas_min=low,
            engine_replicas_max=high,
        )
        plan = plan_from_args(args)
        options = _pinned_machine(plan, options, args.instance_type)
        values = chart_values(plan, options)
    except PlanDoesNotFit as exc:
        print(f"dsdeploy values: {exc}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "options"
            msg = str(err["msg"]).removeprefix("Value error, ")
            print(f"dsdeploy values: {field}: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ChartValuesError as exc:
        print(f"dsdeploy values: {exc.worded('dsdeploy values --checkpoint ORG/REPO')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (PlanError, ValueError) as exc:
        print(f"dsdeploy values: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    text = _header(plan, options) + yaml.safe_dump(values, sort_keys=False)
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
        for warning in plan_warnings(plan, options):  # the file's header has them; say them once here too
            print(f"dsdeploy values: warning: {warning}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    for f in args.values:
        if not Path(f).is_file():
            print(f"dsdeploy render: values file {f} does not exist", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        out = render_chart(
            args.values,
            namespace=args.namespace,
            release=args.release,
            api_versions=args.api_versions,
            include_tests=args.include_tests,
        )
    except RenderUnavailable as exc:
        print(f"dsdeploy render: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as exc:
        print(f"dsdeploy render: the chart refused these values:\n{exc}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    sys.stdout.write(out)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    values = subparsers.add_parser(
        "values",
        help="write chart values for a model and tier (what Pulumi installs; for GitOps/kubectl)",
        description="Plan a model on a tier and write the Helm values for charts/dsdeploy. "
        "Exit 0: written; 1: the model does not fit; 2: bad input.",
    )
    add_plan_arguments(values)  # --model --tier --quantization --context --gpu-memory-utilization --max-nodes
    values.add_argument("-o", "--output", help="file to write (default: stdout)")
    # The chart options, one flag each, from their declarations (infra/chart_options.py); two parsed here.
    add_option_flags(values, ChartOptions)
    fields = ChartOptions.model_fields
    values.add_argument(
        "--gpu-node-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=fields["gpu_node_selector"].description,
    )
    values.add_argument(
        "--engine-replicas", default="1", metavar="N|MIN:MAX", help=fields["engine_replicas_min"].description
    )
    values.add_argument(
        "--instance-type",
        metavar="TYPE",
        help="eks: the GPU nodes' EC2 instance type, as the stack's dsdeploy:instanceType pins it "
        "(default: the cheapest shape that holds the plan; `dsdeploy plan` lists them)",
    )
    values.set_defaults(func=cmd_values)

    render = subparsers.add_parser(
        "render",
        help="print plain manifests of the chart for `kubectl apply -f -`",
        description="Render charts/dsdeploy with helm template (no cluster needed). "
        "Exit 0: manifests on stdout; 1: the chart refused the values; 2: bad input or no helm.",
    )
    render.add_argument(
        "-f",
        "--values",
        action="append",
        required=True,
        metavar="FILE",
        help="values file (repeatable; later files win)",
    )
    render.add_argument("-n", "--namespace", default="dsdeploy")
    render.add_argument("--release", default="dsdeploy", help="release name (prefix of resource names)")
    render.add_argument(
        "--api-versions",
        action="append",
        default=[],
        metavar="GROUP/VERSION[/KIND]",
        help="APIs the target cluster has, e.g. monitoring.coreos.com/v1/ServiceMonitor, keda.sh/v1alpha1",
    )
    render.add_argument(
        "--include-tests",
        action="store_true",
        help="also print the helm test Pod and its ServiceAccount and NetworkPolicy",
    )
    render.set_defaults(func=cmd_render)
