"""Router configuration: one YAML file, validated by pydantic, unknown keys are errors.

``load_router_config(path) -> RouterConfig`` reads the file, expands ``${ENV}`` references in
string values and validates the result. Secrets (``cloud.api_key``) must be written as a
``${NAME}`` reference; a literal there is refused so a key never sits in a ConfigMap.
Every key and its default is documented in docs/router.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from inference.router.env_refs import RouterConfigError, check_secret_refs, expand_env
from inference.router.limits_config import BudgetLimits, BudgetsConfig, CaFile, RedisUrl

DATA_CLASSES: tuple[str, ...] = ("public", "internal", "restricted")
DataClass = Literal["public", "internal", "restricted"]


def strictest(*classes: str) -> str:
    """The strictest of the data classes given (their order in DATA_CLASSES, loosest first)."""
    return max(classes, key=DATA_CLASSES.index)


_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL with a host (e.g. http://127.0.0.1:8001)")
    if parts.username is not None or parts.password is not None:
        # never echo the value: it holds a credential
        raise ValueError(
            "credentials in the URL (user:password@) are not allowed: the address is shown in "
            "/ready, metrics and the audit log; give the key as api_key: ${ENV_NAME}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: a query string or fragment is not allowed")
    return value.rstrip("/")


def _check_path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in "?# "):
        raise ValueError(f"{value!r} must be a URL path starting with '/' (e.g. /health), without ? or #")
    return value


UrlPath = Annotated[str, AfterValidator(_check_path)]


class Upstream(_Strict):
    url: str
    name: str | None = None  # label in metrics and audit; default host:port
    max_in_flight: int | None = Field(default=None, ge=1)  # overrides saturation.max_in_flight_per_upstream
    api_key: str | None = None  # ${ENV} reference when the upstream wants a key (vLLM --api-key)
    discover: bool = False  # every address the host resolves to is an upstream (a headless Service: each pod)
    discover_interval_s: float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = _check_http_url(v)
        if urlsplit(v).path.rstrip("/").endswith("/v1"):
            raise ValueError(f"{v!r}: give the server root; /v1/... is appended by the router")
        return v

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return parts.netloc


# The currency of cloud.prices and limits.budgets: the DeepSeek API's list prices for the router's models are
# in USD (infra/decision/api_prices.yaml, preset "deepseek"; a test checks the two agree).
PRICE_CURRENCY = "USD"


class ModelPrice(_Strict):
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_usd_per_mtok + completion_tokens * self.output_usd_per_mtok) / 1e6


def _default_prices() -> dict[str, ModelPrice]:
    # DeepSeek list prices (cache miss) as published for deepseek-chat / deepseek-reasoner (V3.2).
    price = ModelPrice(input_usd_per_mtok=0.28, output_usd_per_mtok=0.42)
    return {"deepseek-chat": price, "deepseek-reasoner": price}


def _default_max_tokens() -> dict[str, int]:
    # The DeepSeek API's output length when a request sets no max_tokens, reasoning included: "MAX OUTPUT
    # DEFAULT: 4K" for deepseek-chat and "DEFAULT: 32K" for deepseek-reasoner (https://api-docs.deepseek.com/
    # quick_start/pricing; "the default value 4096 is used" in the API reference's max_tokens).
    return {"deepseek-chat": 4096, "deepseek-reasoner": 32768}


class CloudConfig(_Strict):
    base_url: str = "https://api.deepseek.com"
    api_key: str = Field(min_length=1)  # must be a ${ENV} reference in the file
    models: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=lambda: {"*": "deepseek-chat"})
    allow_insecure_http: bool = False  # http:// to a non-loopback cloud sends the key in clear text
    attempts: int = Field(default=3, ge=1, le=10)  # tries per request, with backoff between them
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_byte_timeout_s: float = Field(default=60.0, gt=0)
    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)
    # What a cloud model answers at most for a request without max_tokens: the budgets hold that much for it.
    default_max_tokens: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=_default_max_tokens)
    # A stream cut after its first byte is continued from here with the DeepSeek API's chat prefix completion
    # (https://api-docs.deepseek.com/guides/chat_prefix_completion: base_url .../beta, last message the
    # assistant's with "prefix": true); null: never continued (the stream ends with an error event).
    prefix_completion_path: UrlPath | None = "/beta/chat/completions"

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        v = _check_http_url(v)
        return v[:-3] if v.endswith("/v1") else v  # the router appends /v1/...

    @field_validator("models")
    @classmethod
    def _models(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError('must map at least "*" to a cloud model, e.g. {"*": "deepseek-chat"}')
        return v

    @model_validator(mode="after")
    def _tls(self) -> CloudConfig:
        parts = urlsplit(self.base_url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or "") and not self.allow_insecure_http:
            raise ValueError(
                f"base_url {self.base_url!r} is plain http to a remote host: the API key would travel "
                "in clear text; use https, or set cloud.allow_insecure_http: true"
            )
        return self

    def cloud_model(self, local_model: str | None) -> str | None:
        """Cloud model for a local model name; None when there is no mapping and no "*"."""
        if local_model is not None and local_model in self.models:
            return self.models[local_model]
        return self.models.get("*")


class PolicyConfig(_Strict):
    default_class: DataClass = "internal"
    cloud_allowed: list[DataClass] = Field(default_factory=lambda: list[DataClass](["public"]))

    @field_validator("cloud_allowed")
    @classmethod
    def _allowed(cls, v: list[str]) -> list[str]:
        if "restricted" in v:
            raise ValueError(
                "'restricted' may never leave the premises: it is the class for data that must stay "
                "home; allow 'public' and, if you must, 'internal'"
            )
        for looser, stricter in zip(DATA_CLASSES, DATA_CLASSES[1:], strict=False):
            if stricter in v and looser not in v:
                raise ValueError(
                    f"allows '{stricter}' but not the looser '{looser}': a class may leave only if "
                    f"every looser class may; add '{looser}'"
                )
        return sorted(set(v), key=DATA_CLASSES.index)


class ApiKey(_Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    sha256: str
    tenant: str | None = None  # cache partition; default: the key id
    default_class: DataClass | None = None  # overrides policy.default_class for this key
    min_class: DataClass | None = None  # floor: a header naming a looser class is raised to this one
    rpm: int | None = Field(default=None, ge=1)  # overrides limits.rpm_per_key
    budget: BudgetLimits | None = None  # overrides limits.budgets.per_key

    @field_validator("sha256")
    @classmethod
    def _digest(cls, v: str) -> str:
        return _check_digest(v)

    @model_validator(mode="after")
    def _floor(self) -> ApiKey:
        if (
            self.min_class is not None
            and self.default_class is not None
            and strictest(self.default_class, self.min_class) != self.default_class
        ):
            raise ValueError(
                f"key {self.id!r}: default_class {self.default_class!r} is looser than its min_class {self.min_class!r}"
            )
        return self


def digest_key_id(digest: str) -> str:
    """The key id of a ``keys_sha256`` entry (audit lines, the rate-limit bucket)."""
    return "sha256:" + digest[:12]


def _check_digest(v: str) -> str:
    v = v.strip().lower()
    if not _SHA256_HEX.match(v):
        raise ValueError("must be a SHA-256 hex digest (64 hex characters) of the key, not the key itself")
    return v


class AuthConfig(_Strict):
    keys_sha256: list[str] = Field(default_factory=list)
    keys: list[ApiKey] = Field(default_factory=list)
    allow_unauthenticated_non_loopback: bool = False

    @field_validator("keys_sha256")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        return [_check_digest(d) for d in v]

    @model_validator(mode="after")
    def _unique(self) -> AuthConfig:
        # every key id (the rate-limit bucket), including the ones keys_sha256 entries get, must be distinct
        ids = [digest_key_id(d) for d in self.keys_sha256] + [k.id for k in self.keys]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(
                f"key ids must be unique (each is one rate-limit bucket), but {repeated} is used by "
                "more than one key (a keys_sha256 entry's id is 'sha256:' + its first 12 hex digits)"
            )
        if "anonymous" in ids:
            raise ValueError("'anonymous' is the id of requests when auth is off; give the key another id")
        digests = self.keys_sha256 + [k.sha256 for k in self.keys]
        if len(digests) != len(set(digests)):
            raise ValueError("auth: the same key digest is listed twice")
        return self

    def warnings(self) -> list[str]:
        """Settings that are allowed but may not mean what they look like."""
        implicit = {k.id for k in self.keys if k.tenant is None}
        return [
            f"auth.keys[{i}].tenant: {k.tenant!r} is also the id of a key without a tenant of its own, so "
            f"key {k.id!r} shares that key's cache partition; set a tenant on both if this is meant"
            for i, k in enumerate(self.keys)
            if k.tenant is not None and k.tenant in implicit and k.tenant != k.id
        ]

    @property
    def enabled(self) -> bool:
        return bool(self.keys_sha256 or self.keys)


class TimeoutsConfig(_Strict):
    connect_s: float = Field(default=1.0, gt=0)  # TCP connect to a local upstream
    # local stream: the first event must arrive by then (plus the prompt's prefill time), when there is
    # somewhere else to go; 10 s leaves room for the cloud to answer a stalled request within 15 s
    first_byte_s: float = Field(default=10.0, gt=0)
    prefill_tokens_per_s: float = Field(default=2000.0, gt=0)  # assumed until the engine's metrics say
    response_s: float = Field(default=300.0, gt=0)  # local non-streamed answer must be complete by then
    request_s: float = Field(default=600.0, gt=0)  # whole request, any route (streams included)
    stream_idle_s: float = Field(default=60.0, gt=0)  # longest silence inside a stream (either way)
    stream_stall_s: float = Field(default=8.0, gt=0)  # silence after which a stream that may leave is continued
    body_s: float = Field(default=30.0, gt=0)  # the whole request body must arrive by then (else 408)


class HealthConfig(_Strict):
    path: UrlPath = "/health"
    interval_s: float = Field(default=0.25, gt=0)
    timeout_s: float = Field(default=0.75, gt=0)  # a frozen upstream is found within interval+timeout
    failures_to_open: int = Field(default=1, ge=1)  # failed probes that open the circuit


class CircuitConfig(_Strict):
    failures_to_open: int = Field(default=3, ge=1)  # consecutive request failures that open it
    open_s: float = Field(default=2.0, gt=0)  # wait before a half-open probe


class SaturationConfig(_Strict):
    max_waiting: int | None = Field(default=8, ge=0)  # vllm:num_requests_waiting above this = saturated
    metrics_path: UrlPath = "/metrics"
    poll_interval_s: float = Field(default=1.0, gt=0)
    max_in_flight_per_upstream: int | None = Field(default=None, ge=1)  # router's own count


class WaitQueueConfig(_Strict):
    """Requests that may not leave wait here while no local engine is ready (cold start, all pods restarting)."""

    enabled: bool = True
    max_requests: int = Field(default=256, ge=1, le=100_000)  # waiting at once; the next one gets a 503 at once
    deadline_s: float = Field(default=30.0, gt=0, le=600)  # longest wait; then a 503 with Retry-After
    retry_after_s: float = Field(default=10.0, gt=0, le=3600)  # Retry-After of those 503s


class SloConfig(_Strict):
    """Overflow by latency target: data that may leave goes to the cloud while every local engine's
    estimated time to first token is over ``ttft_s`` (entered above it, left below ``leave_ratio`` x it)."""

    ttft_s: float | None = Field(default=None, gt=0, le=600)  # null: off (only the fixed saturation thresholds)
    leave_ratio: float = Field(default=0.8, gt=0, lt=1)  # hysteresis: back to local below this share of ttft_s


class RetriesConfig(_Strict):
    local_attempts: int = Field(default=3, ge=1, le=16)  # distinct local upstreams tried before cloud
    same_upstream: int = Field(default=1, ge=0, le=5)  # retries on one upstream (5xx, 429, reset) when no other
    backoff_base_s: float = Field(default=0.2, gt=0)  # full-jitter backoff before such a retry
    backoff_max_s: float = Field(default=1.0, gt=0)
    retry_after_max_s: float = Field(default=5.0, ge=0)  # a local 429's Retry-After up to this is waited out


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_answer_bytes: int = Field(default=16 * 1024 * 1024, ge=4096)  # an upstream's answer (or stream text)
    rpm_per_key: int | None = Field(default=None, ge=1)
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)  # cloud spend, in PRICE_CURRENCY
    # Shared state (rate limits, budgets) of several router replicas; None: each replica counts alone
    redis_url: RedisUrl | None = None
    redis_password: str | None = None  # must be a ${ENV} reference (a Secret)
    redis_timeout_s: float = Field(default=0.5, gt=0, le=10)  # one Redis call (connect, command)
    redis_retry_s: float = Field(default=2.0, gt=0, le=300)  # after a failure, Redis is left alone this long
    redis_max_connections: int = Field(default=32, ge=1, le=1024)
    redis_key_prefix: str = Field(default="dsdeploy", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:{}-]+$")
    # rediss:// only: the CAs that sign the Redis server's certificate (a private CA in the cluster); None: the
    # system's CA store. The server's name is always checked against its certificate.
    redis_tls_ca_file: CaFile | None = None

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> LimitsConfig:
        if self.redis_tls_ca_file is not None and not (self.redis_url or "").startswith("rediss://"):
            raise ValueError(
                "limits.redis_tls_ca_file is set but limits.redis_url is not a rediss:// (TLS) URL: "
                "use rediss://HOST:PORT/DB, or drop the CA file"
            )
        return self


class CacheConfig(_Strict):
    enabled: bool = False
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    ttl_s: float = Field(default=300.0, gt=0)


class AuditConfig(_Strict):
    enabled: bool = True
    path: str = "-"  # "-" = stdout, else a file (appended)
    prompts: Literal["off", "hash", "full"] = "off"
    flush_interval_s: float = Field(default=0.5, gt=0)
    max_buffered: int = Field(default=100_000, ge=100)  # records held while the writer is behind; more are dropped


class MetricsConfig(_Strict):
    enabled: bool = True
    require_key: bool = False  # /metrics (cloud spend, upstream addresses) only with a router key


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_connections: int = Field(default=1024, ge=1)  # open client connections per process; more are refused
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)  # request line and headers (else 431)
    max_headers: int = Field(default=100, ge=8)  # header fields per request (else 431)
    header_timeout_s: float = Field(default=10.0, gt=0)  # a request's headers must arrive by then (else 408)
    keepalive_s: float = Field(default=30.0, gt=0)  # an idle keep-alive connection is closed after this
    # Browsers may post a "simple" request to any address without asking first (CORS): a request with an
    # Origin header is refused unless the origin is listed here
    allowed_origins: list[str] = Field(default_factory=list)


class RouterConfig(_Strict):
    upstreams: list[Upstream] = Field(default_factory=list)
    cloud: CloudConfig | None = None
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    saturation: SaturationConfig = Field(default_factory=SaturationConfig)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    wait_queue: WaitQueueConfig = Field(default_factory=WaitQueueConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)

    def warnings(self) -> list[str]:
        """Settings the router accepts but an operator should look at again (printed at start)."""
        return self.auth.warnings()

    @model_validator(mode="after")
    def _routable(self) -> RouterConfig:
        if not self.upstreams and self.cloud is None:
            raise ValueError("no route: give at least one entry in upstreams or a cloud section")
        labels = [u.label for u in self.upstreams]
        if len(labels) != len(set(labels)):
            raise ValueError(f"upstreams: names/addresses must be unique, got {labels}")
        budgeted = self.limits.budgets.any or any(k.budget is not None and k.budget.any for k in self.auth.keys)
        if budgeted and self.cloud is not None:
            unpriced = sorted({m for m in self.cloud.models.values() if m not in self.cloud.prices})
            if unpriced:
                raise ValueError(
                    f"limits.budgets: cloud model(s) {unpriced} have no entry in cloud.prices, so their "
                    "spend cannot be counted; add their prices (USD per million tokens)"
                )
        return self

    def check_bind(self, host: str, *, allow_insecure: bool = False) -> None:
        """Refuse a non-loopback bind without auth unless told explicitly."""
        if self.auth.enabled or allow_insecure or self.auth.allow_unauthenticated_non_loopback:
            return
        if not is_loopback(host):
            raise RouterConfigError(
                f"refusing to listen on {host!r} without auth: set auth.keys_sha256 (or auth.keys), "
                "bind to 127.0.0.1, or set auth.allow_unauthenticated_non_loopback: true"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raw_at(raw: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        found = (
            isinstance(raw, Mapping)
            and part in raw
            or isinstance(raw, list)
            and isinstance(part, int)
            and 0 <= part < len(raw)
        )
        if not found:
            return None
        raw = raw[part]
    return raw


def _may_show(value: Any, raw_value: Any, loc: str) -> bool:
    """Echo a bad value in the error unless it is, or may hold, a secret."""
    if isinstance(value, dict | list) or "api_key" in loc or "password" in loc:
        return False
    if isinstance(raw_value, str) and "${" in raw_value:
        return False  # expanded from the environment: it may be a secret put in the wrong field
    return not (isinstance(value, str) and "@" in value and "://" in value)  # user:password@ in a URL


def _format_errors(exc: ValidationError, source: str, raw: Mapping[str, Any] | None = None) -> str:
    lines = [f"invalid router config {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        show = _may_show(value, _raw_at(raw, err["loc"]), loc)
        lines.append(f"  {loc}: {err['msg']}{f' (got {value!r})' if show else ''}")
    return "\n".join(lines)


def parse_router_config(
    data: Mapping[str, Any] | None,
    *,
    source: str = "<dict>",
    environ: Mapping[str, str] | None = None,
    resolve_env: bool = True,
) -> RouterConfig:
    """Validate an already-parsed config mapping (same rules as the file loader)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RouterConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    raw = dict(data)
    check_secret_refs(raw)
    env = os.environ if environ is None else environ
    expanded = expand_env(raw, "", env, resolve_env)
    try:
        return RouterConfig.model_validate(expanded)
    except ValidationError as exc:
        raise RouterConfigError(_format_errors(exc, source, raw)) from None


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (the second would silently win)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_router_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    resolve_env: bool = True,
) -> RouterConfig:
    """Read and validate a router YAML file.

    ``environ`` replaces ``os.environ`` for ``${NAME}`` expansion; ``resolve_env=False`` checks the
    file's shape (and that secrets are references) without needing the variables set (chart tests).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RouterConfigError(f"cannot read router config {p}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise RouterConfigError(f"router config {p} is not valid YAML: {exc}") from None
    return parse_router_config(data, source=str(p), environ=environ, resolve_env=resolve_env)
