"""`dsdeploy images`: every image a deployment pulls, one per line, for mirroring into an air-gapped registry.

The app's images are read from the chart rendered with the deployment's values (``helm template``, the same
manifests ``dsdeploy render`` prints): every container, init container and ephemeral container of every pod
template, so whatever engine or component the chart renders is listed without this command knowing it.
GPU enablement is not in that chart: the device plugin (EKS) or the GPU operator and its operands (existing
clusters) come from the pinned upstream charts, whose images infra/gpu_platform/images.yaml records. GKE's
own driver installer and device plugin are managed by GKE and not listed.

    dsdeploy images -f values.yaml [--gpu-enablement gpu-operator --node-os ubuntu22.04]
    dsdeploy images --stack Pulumi.onprem.yaml --node-os ubuntu22.04
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXIT_OK, EXIT_BAD_INPUT = 0, 2
PLATFORM_IMAGES = Path(__file__).resolve().parent / "gpu_platform" / "images.yaml"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
ENABLEMENTS = ("none", "device-plugin", "gpu-operator")
NODE_OS_HELP = (
    "the GPU nodes' OS as the GPU operator tags its driver image: ID + VERSION_ID of /etc/os-release, "
    "e.g. ubuntu22.04, ubuntu24.04, rhel9.4"
)


class ImagesError(ValueError):
    pass


@dataclass(frozen=True)
class PulledImage:
    image: str
    origin: str  # what pulls it: "Deployment/dsdeploy-router router", "gpu-operator: NVIDIA driver"


def _containers(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, container) for every container list anywhere below ``node`` (pod templates of any kind)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in CONTAINER_LISTS and isinstance(value, list):
                found += [(where, c) for c in value if isinstance(c, dict) and c.get("image")]
            else:
                found += _containers(value, where)
    elif isinstance(node, list):
        for item in node:
            found += _containers(item, where)
    return found


def images_in_manifests(text: str) -> list[PulledImage]:
    """Every container image of the rendered manifests, in order of first appearance."""
    pulled: list[PulledImage] = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict):
            continue
        where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        pulled += [
            PulledImage(str(c["image"]), f"{where} {c.get('name', '')}".strip())
            for _, c in _containers(doc.get("spec"), where)
        ]
    return pulled


def platform_images(
    enablement: str, *, driver: bool = True, toolkit: bool = True, nfd: bool = True, node_os: str | None = None
) -> list[PulledImage]:
    """The images of the GPU enablement chart ``enablement`` (none, device-plugin, gpu-operator)."""
    if enablement == "none":
        return []
    chart = {"device-plugin": "nvidia-device-plugin", "gpu-operator": "gpu-operator"}[enablement]
    data = yaml.safe_load(PLATFORM_IMAGES.read_text())[chart]
    switches = {"driver": driver, "toolkit": toolkit, "nfd": nfd}
    pulled: list[PulledImage] = []
    for entry in data["images"]:
        if not switches.get(entry.get("when", ""), True):
            continue
        image = entry["image"]
        if "{node_os}" in image:
            if not node_os:
                raise ImagesError(
                    f"--node-os is required: the GPU operator installs the driver, and its image is "
                    f"tagged per node OS ({image}); give {NODE_OS_HELP}, or --no-driver when the "
                    "hosts have a driver"
                )
            image = image.replace("{node_os}", node_os)
        pulled.append(PulledImage(image, f"{chart} {data['version']}: {entry['role']}"))
    return pulled


def _unique(pulled: list[PulledImage]) -> list[PulledImage]:
    """One entry per image, in order of first appearance, naming everything that pulls it."""
    origins: dict[str, list[str]] = {}
    for item in pulled:
        seen = origins.setdefault(item.image, [])
        if item.origin not in seen:
            seen.append(item.origin)
    return [PulledImage(image, "; ".join(where)) for image, where in origins.items()]


def _stack_values(path: str, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Chart values and GPU enablement of a Pulumi stack file, computed as ``pulumi up`` would, and the
    repositories ``pulumi up`` builds itself (``images: build``), which need no mirroring."""
    from infra.app import chart_options, check_chart_values
    from infra.cloud import GpuNodeFacts
    from infra.program import make_plan
    from infra.stack_config import SECRET_KEYS, read_stack_file, validate_stack_config

    raw, _ = read_stack_file(path)
    # The secrets are set with `pulumi config set --secret`, often after the file is written; no image depends
    # on them, so they count as present here.
    cfg = validate_stack_config(raw, set(SECRET_KEYS))
    plan = make_plan(cfg)
    check_chart_values(cfg, plan)
    from infra.chart_values import chart_values

    values = chart_values(plan, chart_options(cfg, GpuNodeFacts(labels={}), cfg.storage_class))
    if cfg.platform == "eks":
        args.gpu_enablement = "device-plugin"
    elif cfg.platform == "existing" and not cfg.gpus_already_enabled:
        args.gpu_enablement = "gpu-operator"
        args.driver, args.toolkit, args.nfd = cfg.gpu_operator_driver, cfg.gpu_operator_toolkit, cfg.gpu_operator_nfd
    built: list[str] = []
    if cfg.images == "build":
        from dsdeploy.images import DEFAULT_REGISTRY
        from infra.registry import images_to_build

        built = [f"{DEFAULT_REGISTRY}/{image.name}" for image in images_to_build(cfg, plan.gpus_per_replica)]
    return values, built


def collect(args: argparse.Namespace) -> list[PulledImage]:
    from infra.chart_command import render_chart

    files = list(args.values)
    built: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.stack:
            values, built = _stack_values(args.stack, args)
            generated = Path(tmp) / "stack-values.yaml"
            generated.write_text(yaml.safe_dump(values))
            files.insert(0, str(generated))
        for f in files:
            if not Path(f).is_file():
                raise ImagesError(f"values file {f} does not exist")
        manifests = render_chart(files, namespace="dsdeploy", release="dsdeploy", api_versions=[], include_tests=True)
    pulled = [p for p in images_in_manifests(manifests) if p.image.rsplit(":", 1)[0] not in built]
    if built:
        print(
            f"dsdeploy images: images: build: pulumi up builds {', '.join(b.rsplit('/', 1)[1] for b in built)} "
            "into the cluster's own registry (not listed; `pulumi stack output images` shows the digests)",
            file=sys.stderr,
        )
    pulled += platform_images(
        args.gpu_enablement, driver=args.driver, toolkit=args.toolkit, nfd=args.nfd, node_os=args.node_os
    )
    return _unique(pulled)


def cmd_images(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from infra.chart_command import RenderUnavailable
    from infra.planner import PlanError
    from infra.stack_config import StackConfigError

    if not args.values and not args.stack:
        print(
            "dsdeploy images: give the deployment's values (-f values.yaml) or its stack (--stack Pulumi.<stack>.yaml)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        pulled = collect(args)
    except (ImagesError, RenderUnavailable, StackConfigError, PlanError, ValidationError, OSError) as exc:
        print(f"dsdeploy images: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as exc:  # helm refused the values
        print(f"dsdeploy images: the chart refused these values:\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    width = max((len(p.image) for p in pulled), default=0)
    for item in pulled:
        print(f"{item.image:<{width}}  # {item.origin}" if args.show_origin else item.image)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    images = subparsers.add_parser(
        "images",
        help="list every image a deployment pulls (for mirroring into an air-gapped registry)",
        description="Render the chart with the deployment's values and list every container image its pods pull, "
        "plus the GPU enablement's (device plugin or GPU operator operands), one per line with tag or "
        "digest. Exit 0: listed; 2: bad input or the chart refused the values.",
    )
    images.add_argument(
        "-f",
        "--values",
        action="append",
        default=[],
        metavar="FILE",
        help="values file of the deployment (repeatable; later files win)",
    )
    images.add_argument(
        "--stack",
        metavar="Pulumi.<stack>.yaml",
        help="a stack file: its chart values and GPU enablement, as `pulumi up` computes them",
    )
    images.add_argument(
        "--gpu-enablement",
        choices=ENABLEMENTS,
        default="none",
        help="with -f: what enables the GPUs (device-plugin on EKS, gpu-operator on clusters without "
        "it; none on GKE or where GPUs are already enabled). A stack decides it itself",
    )
    images.add_argument(
        "--no-driver",
        dest="driver",
        action="store_false",
        help="the GPU operator installs no driver (the hosts have one)",
    )
    images.add_argument(
        "--no-toolkit", dest="toolkit", action="store_false", help="the GPU operator installs no container toolkit"
    )
    images.add_argument(
        "--no-nfd", dest="nfd", action="store_false", help="the GPU operator deploys no node-feature-discovery"
    )
    images.add_argument("--node-os", help=NODE_OS_HELP + " (needed when the GPU operator installs the driver)")
    images.add_argument("--show-origin", action="store_true", help="say after each image what pulls it")
    images.set_defaults(func=cmd_images)
