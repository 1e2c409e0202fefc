"""Each chart option declared once: its type, default, bounds, help, stack key, CLI flag and chart path.

A chart option is a deployment choice the plan does not make (storage, secrets, scaling, the engine).
Each is one annotated field below; everything else is derived from it:

- :class:`StackChartOptions` holds the options a Pulumi stack sets (its field alias is the stack key,
  ``dsdeploy:<alias>``); :class:`infra.stack_config.StackConfig` inherits it, so the stack parses them;
- :class:`infra.chart_values.ChartOptions` inherits it too and adds what the program takes from the
  cloud and platform layers (GPU placement, the storage class, the API key Secret's name);
- the app's mapping (:func:`stack_option_values`, :data:`STACK_OPTION_KEYS`) reads the stack's options by field;
- ``dsdeploy values`` adds one flag per option (:func:`add_option_flags`);
- tests/charts/test_chart_options.py sets each option's ``example`` through the CLI and the stack and
  finds it in the chart values at its ``chart`` path, which values.schema.json must know, with the bounds
  declared here.

A new option: one field here (or in ChartOptions when the program, not the stack, chooses it), the line in
:func:`infra.chart_values.chart_values` that puts it at its path, and the chart (values.yaml, the schema,
the templates).
"""

from __future__ import annotations

import argparse
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from inference.engines import VLLM, EngineType
from infra.catalog.schema import Platform


@dataclass(frozen=True)
class Option:
    """Where an option goes and how the CLI spells it (metadata of a ChartOptions field)."""

    chart: str  # dotted path in the chart values, e.g. "router.replicas"
    example: Any  # a valid value other than the default (the tests set it and look for it at `chart`)
    flag: str | None = None  # `dsdeploy values` flag; None: no flag of its own (see `bespoke`)
    metavar: str | None = None
    bespoke: bool = False  # the flag is parsed by hand (chart_command.py): several values or one for two fields
    rendered: Any = None  # the chart value `example` becomes, when not `example` itself
    stack_key: str | None = None  # for an option the program computes from this stack key (error messages)


class StackChartOptions(BaseModel):
    """The chart options a stack sets; the alias is the stack config key."""

    platform: Annotated[Platform, Option("platform", "eks", flag="--platform")] = Field(
        description="where to run: gke, eks or existing (a cluster of your own)"
    )

    model_cache_size: Annotated[str | None, Option("modelCache.size", "300Gi", flag="--cache-size")] = Field(
        default=None, alias="storageSize", description="model cache size, e.g. 200Gi (default: weights + 30% + 10Gi)"
    )
    airgapped: Annotated[bool, Option("modelCache.airgapped", True, flag="--airgapped")] = Field(
        default=False, description="no download; the volume is pre-filled"
    )
    cloud_fallback: Annotated[bool, Option("router.cloud.enabled", True, flag="--cloud-fallback")] = Field(
        default=False, alias="cloudFallback", description="fall back to the DeepSeek API"
    )
    engine_replicas_min: Annotated[
        int, Option("engine.autoscaling.minReplicas", 2, flag="--engine-replicas", metavar="N|MIN:MAX", bespoke=True)
    ] = Field(
        default=1,
        ge=1,
        le=100,
        alias="replicasMin",
        description="engine replicas; MIN:MAX turns on queue-depth autoscaling",
    )
    engine_replicas_max: Annotated[
        int, Option("engine.autoscaling.maxReplicas", 3, flag="--engine-replicas", metavar="N|MIN:MAX", bespoke=True)
    ] = Field(
        default=1, ge=1, le=100, alias="replicasMax", description="most engine replicas (the autoscaler's maximum)"
    )
    router_replicas: Annotated[int, Option("router.replicas", 3, flag="--router-replicas")] = Field(
        default=2,
        ge=1,
        le=50,
        alias="routerReplicas",
        description="router replicas (the router is stateless; two keep it up through a node drain)",
    )
    hf_token_secret: Annotated[str | None, Option("model.tokenSecret.name", "hub-token", flag="--hf-token-secret")] = (
        Field(
            default=None,
            alias="hfTokenSecret",
            description="name of the Secret holding a Hugging Face token (key token)",
        )
    )
    hf_endpoint: Annotated[str | None, Option("model.hfEndpoint", "https://hf-mirror.com", flag="--hf-endpoint")] = (
        Field(default=None, alias="hfEndpoint", description="Hugging Face mirror, e.g. https://hf-mirror.com")
    )
    engine_type: Annotated[EngineType, Option("engine.type", "server", flag="--engine")] = Field(
        default=VLLM, alias="engineType", description="vllm (default) or the project's server"
    )
    # Hub repo id of pre-quantized weights for the plan's quantization, when the catalog records none.
    checkpoint: Annotated[
        str | None,
        Option("model.id", "example-org/DeepSeek-R1-Distill-Qwen-7B-bf16", flag="--checkpoint", metavar="ORG/REPO"),
    ] = Field(
        default=None,
        description="hub id of pre-quantized weights for --quantization when the catalog records none "
        "(e.g. an AWQ or bnb-8bit export of the model)",
    )


def option_of(field: FieldInfo) -> Option | None:
    return next((m for m in field.metadata if isinstance(m, Option)), None)


def options_of(model: type[BaseModel]) -> dict[str, tuple[FieldInfo, Option]]:
    """Each field of ``model`` that is a chart option, with its declaration."""
    found = {}
    for name, field in model.model_fields.items():
        option = option_of(field)
        if option is not None:
            found[name] = (field, option)
    return found


STACK_OPTIONS: tuple[str, ...] = tuple(options_of(StackChartOptions))
# The stack config key behind each ChartOptions field a user controls (for error messages).
STACK_OPTION_KEYS: dict[str, str] = {
    name: field.alias or name for name, field in StackChartOptions.model_fields.items()
}


def stack_option_values(cfg: StackChartOptions) -> dict[str, Any]:
    """The chart options a validated stack config sets, by ChartOptions field."""
    return {name: getattr(cfg, name) for name in STACK_OPTIONS}


def _plain(annotation: Any) -> Any:
    """``X`` of ``X | None``; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _has_own_flag(option: Option) -> bool:
    return option.flag is not None and not option.bespoke


def flag_values(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The options of ``model`` as :func:`add_option_flags`' flags set them (by field name)."""
    return {name: getattr(args, name) for name, (_, option) in options_of(model).items() if _has_own_flag(option)}


def add_option_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag per option of ``model`` that has one and is not parsed by hand; dest is the field name."""
    for name, (field, option) in options_of(model).items():
        flag = option.flag
        if flag is None or option.bespoke:
            continue
        kind = _plain(field.annotation)
        helptext = (field.description or "").replace("%", "%%")  # argparse formats help with %
        metavar = option.metavar or flag.lstrip("-").upper().replace("-", "_")
        if field.is_required():
            parser.add_argument(flag, dest=name, required=True, choices=get_args(kind) or None, help=helptext)
        elif kind is bool:
            parser.add_argument(flag, dest=name, action="store_true", help=helptext)
        elif get_origin(kind) is Literal:
            parser.add_argument(flag, dest=name, choices=get_args(kind), default=field.default, help=helptext)
        elif kind in (int, str, float):
            parser.add_argument(flag, dest=name, type=kind, default=field.default, metavar=metavar, help=helptext)
        else:
            raise TypeError(f"option {name}: no flag for {kind!r}; parse it by hand (bespoke=True)")
