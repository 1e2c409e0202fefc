"""The stack configuration of the Pulumi program: typed, validated before any resource exists.

Keys live in the project namespace (``dsdeploy:<key>``). ``Pulumi.yaml`` declares the required
keys (no default: the Pulumi CLI refuses a stack without them) and every key with a fixed default
(the same default as here); keys whose default depends on other keys, or that are secret, are left
undeclared there, because the CLI treats every declared key without a ``default`` as required.
:func:`validate_stack_config` turns the raw key/value mapping
(strings from the Pulumi engine, or YAML values from a stack file) into a :class:`StackConfig`
or raises one :class:`StackConfigError` that names the key, the value and what is allowed.

The two secrets (``deepseekApiKey``, ``kubeconfig``) never enter this model: only whether they
are present does; their values stay Pulumi secret Outputs (see :mod:`infra.program`), and a value
set without ``--secret`` is refused. :class:`StackConfigError` is a ``pulumi.RunError``, so the
Pulumi CLI prints its message alone, without a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pulumi.errors import RunError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from infra.catalog import load_catalog
from infra.chart_options import StackChartOptions
from infra.planner import GPU_MEMORY_UTILIZATION, GPU_MEMORY_UTILIZATION_RANGE, MAX_NODES_PER_REPLICA
from infra.quantity import QUANTITY_RULE, is_quantity
from infra.stack_rules import consistency_problems

PROJECT = "dsdeploy"
SECRET_KEYS = ("deepseekApiKey", "kubeconfig")
PROVISIONING = ("on-demand", "spot", "flex-start", "reservation", "capacity-block")
_CAPACITY_RESERVATION = re.compile(r"^cr-[0-9a-f]{8,17}$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class StackConfigError(RunError, ValueError):
    """A stack configuration the program refuses; the message is meant for the user.

    A ``pulumi.RunError``: the Python language host prints only its message (no "unhandled
    exception", no traceback). A ``ValueError`` too, so pydantic validators may raise it.
    """


class Taint(BaseModel):
    """A taint on the GPU nodes of an existing cluster (the chart tolerates it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


def _parse_taint(text: str) -> dict[str, Any]:
    head, sep, effect = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} is not a taint in kubectl syntax key=value:Effect")
    key, has_value, value = head.partition("=")
    return {"key": key, "value": value if has_value else None, "effect": effect}


class StackConfig(StackChartOptions):
    """Every non-secret key of a dsdeploy stack (aliases are the Pulumi config keys). The keys that are chart
    options (platform, storageSize, replicasMin/Max, routerReplicas, engineType, ...) are declared once, in
    infra/chart_options.py; the ones below are the plan's, the cloud's and the platform's."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tier: str  # a tier of infra/catalog/tiers.yaml (checked below)
    model: str = Field(min_length=1)
    quantization: str | None = None
    context: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float = Field(
        default=GPU_MEMORY_UTILIZATION,
        ge=GPU_MEMORY_UTILIZATION_RANGE[0],
        le=GPU_MEMORY_UTILIZATION_RANGE[1],
        alias="gpuMemoryUtilization",
    )
    provisioning: Literal["on-demand", "spot", "flex-start", "reservation", "capacity-block"] | None = None
    reservation_name: str | None = Field(default=None, alias="reservationName")
    capacity_reservation_id: str | None = Field(default=None, alias="capacityReservationId")
    region: str | None = None
    zone: str | None = None
    gcp_project: str | None = Field(default=None, alias="gcpProject")
    cluster_name: str = Field(default="dsdeploy", pattern=r"^[a-z][-a-z0-9]{0,30}$", alias="clusterName")
    kubernetes_version: str | None = Field(default=None, alias="kubernetesVersion")
    namespace: str = Field(default="dsdeploy", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    storage_class: str | None = Field(default=None, alias="storageClass")
    gpu_driver_version: Literal["LATEST", "DEFAULT"] = Field(default="LATEST", alias="gpuDriverVersion")
    deletion_protection: bool = Field(default=False, alias="deletionProtection")
    gpu_node_labels: dict[str, str] = Field(default_factory=dict, alias="gpuNodeLabels")
    gpu_node_taints: list[Taint] = Field(default_factory=list, alias="gpuNodeTaints")
    gpus_already_enabled: bool = Field(default=False, alias="gpusAlreadyEnabled")
    gpu_operator_driver: bool = Field(default=True, alias="gpuOperatorDriver")
    gpu_operator_nfd: bool = Field(default=True, alias="gpuOperatorNfd")
    gpu_operator_toolkit: bool = Field(default=True, alias="gpuOperatorToolkit")
    wait_for_app: bool = Field(default=False, alias="waitForApp")
    # Replicas over several nodes (a model no node of the tier holds): docs/pulumi.md.
    max_nodes_per_replica: int = Field(
        default=MAX_NODES_PER_REPLICA, ge=1, le=MAX_NODES_PER_REPLICA, alias="maxNodesPerReplica"
    )
    compact_placement: bool = Field(default=True, alias="compactPlacement")
    lws_already_installed: bool = Field(default=False, alias="lwsAlreadyInstalled")
    # published: the chart pulls the released images; build: `pulumi up` builds them into the cluster's registry
    images: Literal["published", "build"] = "published"
    image_registry: str | None = Field(default=None, alias="imageRegistry")
    # eks: pin the GPU nodes' EC2 instance type (default: the cheapest shape that holds the plan, infra/planner/machines.py)
    instance_type: str | None = Field(default=None, min_length=1, alias="instanceType")

    @staticmethod
    def _json_text(value: Any) -> Any:
        # The Pulumi engine hands structured values over as JSON text.
        return json.loads(value) if isinstance(value, str) and value.strip()[:1] in "[{" else value

    @field_validator("gpu_node_labels", mode="before")
    @classmethod
    def _label_list(cls, value: Any) -> Any:
        # Pulumi.yaml types this key as an array of "key=value" strings.
        value = cls._json_text(value)
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            pairs = [item.partition("=") for item in value]
            bad = [item for item, (_, sep, _v) in zip(value, pairs, strict=True) if not sep]
            if bad:
                raise ValueError(f"{bad[0]!r} is not key=value")
            return {key: val for key, _, val in pairs}
        return value

    @field_validator("gpu_node_taints", mode="before")
    @classmethod
    def _taint_list(cls, value: Any) -> Any:
        # kubectl syntax "key=value:Effect" or "key:Effect", as Pulumi.yaml types it.
        value = cls._json_text(value)
        if isinstance(value, list):
            return [_parse_taint(item) if isinstance(item, str) else item for item in value]
        return value

    @field_validator("tier")
    @classmethod
    def _tier(cls, value: str) -> str:
        names = list(load_catalog().tiers)
        if value not in names:
            shown = [repr(name) for name in names]
            raise ValueError("must be " + (", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]))
        return value

    @field_validator("model_cache_size")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not is_quantity(value):
            raise ValueError(f"must be {QUANTITY_RULE}")
        return value

    @field_validator("capacity_reservation_id")
    @classmethod
    def _reservation_id(cls, value: str | None) -> str | None:
        if value is not None and not _CAPACITY_RESERVATION.match(value):
            raise ValueError("an EC2 capacity reservation id such as cr-0123456789abcdef0")
        return value

    @field_validator("image_registry")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        from dsdeploy.images import check_prefix

        return check_prefix(value) if value is not None else None

    @field_validator("gpu_node_labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [key for key in value if not _LABEL_KEY.match(key)]
        if bad:
            raise ValueError(f"label key(s) {bad} are not valid Kubernetes label keys")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        checks = consistency_problems(self)
        if checks:
            key, value, allowed = checks[0]
            raise StackConfigError(_message(key, value, allowed))
        return self

    @property
    def replicas_min(self) -> int:
        """``replicasMin``: the fewest engine replicas (the GPU pool's and the chart's)."""
        return self.engine_replicas_min

    @property
    def replicas_max(self) -> int:
        """``replicasMax``: the most engine replicas."""
        return self.engine_replicas_max

    @property
    def effective_provisioning(self) -> str:
        """The provisioning model the GPU pool uses (the tier's obtainable default when unset)."""
        if self.provisioning is not None:
            return self.provisioning
        # a3-highgpu-{1,2,4}g (GKE pro) is sold as Spot or Flex-start only; see docs/pulumi.md.
        return "flex-start" if (self.platform, self.tier) == ("gke", "pro") else "on-demand"


def _message(key: str, value: Any, allowed: str) -> str:
    shown = "missing" if value is None else f"{value!r} is not valid"
    top, _, rest = key.partition(".")
    setter = f"pulumi config set {key}" if not rest else f"pulumi config set --path '{top}[{rest.replace('.', '].')}'"
    return f"{PROJECT}:{key}: {shown}; allowed: {allowed}. Fix with `{setter} <value>`."


def _field_alias(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "(config)"
    name = str(loc[0])
    field = StackConfig.model_fields.get(name)
    alias = field.alias if field and field.alias else name
    return ".".join([alias, *(str(part) for part in loc[1:])])


def validate_stack_config(raw: dict[str, Any], secrets_present: set[str] | frozenset[str] = frozenset()) -> StackConfig:
    """Validate the raw ``key -> value`` mapping (keys without the ``dsdeploy:`` prefix).

    ``secrets_present`` names the secret keys that are set; their values are never passed here.
    """
    unknown = sorted(set(raw) - _known_keys())
    if unknown:
        raise StackConfigError(
            f"{PROJECT}:{unknown[0]}: is not a known key; allowed keys: {', '.join(sorted(_known_keys()))}."
        )
    plain = {key: value for key, value in raw.items() if key not in SECRET_KEYS and value is not None}
    try:
        cfg = StackConfig.model_validate(plain)
    except ValidationError as exc:
        err = exc.errors()[0]
        if isinstance(err.get("ctx", {}).get("error"), StackConfigError):
            raise err["ctx"]["error"] from None
        key = _field_alias(tuple(err["loc"]))
        value = err.get("input") if err["type"] != "missing" else None
        raise StackConfigError(_message(key, value, _allowed_text(err))) from None
    _check_secrets(cfg, set(secrets_present) | {key for key in SECRET_KEYS if raw.get(key) is not None})
    return cfg


def _allowed_text(err: ErrorDetails) -> str:
    if err["type"] == "literal_error":
        return str(err["ctx"]["expected"])
    if err["type"] == "missing":
        return "a value (this key is required)"
    return str(err["msg"]).removeprefix("Value error, ").removeprefix("must be ")


def _check_secrets(cfg: StackConfig, present: set[str]) -> None:
    if cfg.cloud_fallback and "deepseekApiKey" not in present:
        raise StackConfigError(
            f"{PROJECT}:deepseekApiKey: missing; cloudFallback is true, so the DeepSeek API key is required "
            "as a secret. Set it with `pulumi config set --secret deepseekApiKey` (or set cloudFallback false)."
        )
    if cfg.platform == "existing" and "kubeconfig" not in present:
        raise StackConfigError(
            f"{PROJECT}:kubeconfig: missing; platform existing needs the cluster's kubeconfig as a secret. "
            'Set it with `pulumi config set --secret kubeconfig "$(cat ~/.kube/config)"`.'
        )


def _known_keys() -> set[str]:
    return {field.alias or name for name, field in StackConfig.model_fields.items()} | set(SECRET_KEYS)


def read_stack_file(path: str | Path) -> tuple[dict[str, Any], set[str]]:
    """The ``dsdeploy:`` keys of a ``Pulumi.<stack>.yaml`` file and the names of its secure ones."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    values: dict[str, Any] = {}
    secure: set[str] = set()
    for full_key, value in (data.get("config") or {}).items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != PROJECT:
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            secure.add(key)
            continue
        values[key] = value
    return values, secure


def read_pulumi_config() -> tuple[StackConfig, dict[str, Any]]:
    """Read and validate this stack's config from the Pulumi engine.

    Returns the validated config and the secret Outputs (``deepseekApiKey``, ``kubeconfig``) that are set.
    """
    import pulumi
    from pulumi.runtime import config as runtime_config

    prefix = PROJECT + ":"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env() or {})
    raw = {key[len(prefix) :]: runtime_config.get_config(key) for key in keys if key.startswith(prefix)}
    plain_secrets = [
        key for key in SECRET_KEYS if raw.get(key) is not None and not runtime_config.is_config_secret(prefix + key)
    ]
    if plain_secrets:
        key = plain_secrets[0]
        raise StackConfigError(
            f"{PROJECT}:{key}: is stored in plain text in the stack file; allowed: a Pulumi secret only. "
            f"Fix with `pulumi config rm {key}` and `pulumi config set --secret {key}` (and rotate the value)."
        )
    conf = pulumi.Config(PROJECT)
    secrets = {key: conf.get_secret(key) for key in SECRET_KEYS if raw.get(key) is not None}
    cfg = validate_stack_config({k: v for k, v in raw.items() if k not in SECRET_KEYS}, set(secrets))
    if cfg.platform == "gke" and not cfg.gcp_project and not runtime_config.get_config("gcp:project"):
        raise StackConfigError(
            f"{PROJECT}:gcpProject: missing; platform gke needs a GCP project id. Set it with "
            "`pulumi config set gcp:project <project-id>` (or `pulumi config set gcpProject <project-id>`)."
        )
    return cfg, secrets
