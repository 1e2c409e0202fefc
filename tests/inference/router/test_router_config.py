"""The router config file: validation, ${ENV} secrets, and docs/router.md naming every key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from inference.router.config import RouterConfig, RouterConfigError, load_router_config

DOCS = Path(__file__).resolve().parents[3] / "docs" / "router.md"

ISSUE_EXAMPLE = """
upstreams:
  - url: http://127.0.0.1:8001
cloud:
  base_url: https://api.deepseek.com
  api_key: ${DEEPSEEK_API_KEY}
  models: {"*": deepseek-chat}
policy:
  default_class: internal
  cloud_allowed: [public]
auth:
  keys_sha256: []
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return path


def test_issue_example_loads_with_env_secret(tmp_path):
    cfg = load_router_config(write(tmp_path, ISSUE_EXAMPLE), environ={"DEEPSEEK_API_KEY": "sk-live"})
    assert cfg.cloud is not None and cfg.cloud.api_key == "sk-live"
    assert cfg.cloud.cloud_model("anything") == "deepseek-chat"
    with_v1 = load_router_config(
        write(tmp_path, ISSUE_EXAMPLE.replace("deepseek.com", "deepseek.com/v1")), environ={"DEEPSEEK_API_KEY": "k"}
    )
    assert with_v1.cloud is not None and with_v1.cloud.base_url == "https://api.deepseek.com"
    assert cfg.upstreams[0].label == "127.0.0.1:8001" and not cfg.auth.enabled
    shape_only = load_router_config(write(tmp_path, ISSUE_EXAMPLE), environ={}, resolve_env=False)
    assert shape_only.cloud is not None and "sk-live" not in shape_only.model_dump_json()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ISSUE_EXAMPLE.replace("${DEEPSEEK_API_KEY}", "sk-123456"), "cloud.api_key: must be an environment reference"),
        (ISSUE_EXAMPLE, "cloud.api_key: environment variable DEEPSEEK_API_KEY is not set"),
        ("upstreams: [{url: 'http://h:1'}]\nretry: {}\n", "retry: Extra inputs are not permitted"),
        ("upstreams: [{url: 'ftp://h:1'}]\n", "upstreams.0.url"),
        ("upstreams: [{url: 'http://h:1/v1'}]\n", "/v1/... is appended"),
        ("upstreams: []\n", "no route"),
        ("upstreams: [{url: 'http://h:1'}, {url: 'http://h:1'}]\n", "must be unique"),
        ("upstreams: [{url: 'http://h:1'}]\npolicy: {default_class: secret}\n", "policy.default_class"),
        ("upstreams: [{url: 'http://h:1'}]\nauth: {keys_sha256: [my-key]}\n", "SHA-256 hex digest"),
        ("upstreams: [{url: 'http://h:1'}]\ntimeouts: {connect_s: -1}\n", "timeouts.connect_s"),
        (
            "upstreams: [{url: 'http://h:1', api_key: plain}]\n",
            "upstreams[0].api_key: must be an environment reference",
        ),
        ("- a\n- b\n", "top level must be a mapping"),
        ("upstreams: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, text, message):
    with pytest.raises(RouterConfigError) as info:
        load_router_config(write(tmp_path, text), environ={})
    assert message in str(info.value)
    assert "sk-123456" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upstreams: [{url: 'http://admin:hunter2@127.0.0.1:8001'}]\n", "credentials in the URL"),
        (
            ISSUE_EXAMPLE.replace("https://api.deepseek.com", "https://u:hunter2@api.deepseek.com"),
            "cloud.base_url: Value error, credentials in the URL",
        ),
        (ISSUE_EXAMPLE.replace("https://api.deepseek.com", "http://api.deepseek.com"), "plain http to a remote host"),
        (ISSUE_EXAMPLE.replace('{"*": deepseek-chat}', "{\"*\": ''}"), "cloud.models.*"),
        (
            "upstreams: [{url: 'http://h:1'}]\nhealth: {path: health}\n",
            "health.path: Value error, 'health' must be a URL path",
        ),
        ("upstreams: [{url: 'http://h:1'}]\nsaturation: {metrics_path: 'metrics'}\n", "saturation.metrics_path"),
        (
            "upstreams: [{url: 'http://h:1'}]\npolicy: {cloud_allowed: [public]}\npolicy: {cloud_allowed: [restricted]}\n",
            "key 'policy' appears twice",
        ),
        # a ${ENV} value put in a non-secret field fails validation without being echoed
        (ISSUE_EXAMPLE.replace("  models:", "  attempts: ${SECRET_IN_WRONG_PLACE}\n  models:"), "cloud.attempts"),
    ],
)
def test_configs_that_would_fail_silently_or_leak_are_refused(tmp_path, text, message):
    env = {"DEEPSEEK_API_KEY": "sk-live-key", "SECRET_IN_WRONG_PLACE": "hunter2"}
    with pytest.raises(RouterConfigError) as info:
        load_router_config(write(tmp_path, text), environ=env)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value) and "sk-live-key" not in str(info.value)


def test_plain_http_cloud_is_allowed_on_loopback_or_when_told(tmp_path):
    local = ISSUE_EXAMPLE.replace("https://api.deepseek.com", "http://127.0.0.1:9999")
    assert load_router_config(write(tmp_path, local), environ={"DEEPSEEK_API_KEY": "k"}).cloud is not None
    told = ISSUE_EXAMPLE.replace("https://api.deepseek.com", "http://gateway.internal").replace(
        "  models:", "  allow_insecure_http: true\n  models:"
    )
    assert load_router_config(write(tmp_path, told), environ={"DEEPSEEK_API_KEY": "k"}).cloud is not None


def test_an_empty_secret_variable_is_an_error(tmp_path):
    with pytest.raises(RouterConfigError, match="DEEPSEEK_API_KEY is set but empty"):
        load_router_config(write(tmp_path, ISSUE_EXAMPLE), environ={"DEEPSEEK_API_KEY": ""})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RouterConfigError, match="cannot read router config"):
        load_router_config(tmp_path / "nope.yaml")


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        dotted = prefix + name
        nested = False
        for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            inner = getattr(arg, "__args__", (arg,))
            for candidate in inner:
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    sep = "[]." if "list" in str(field.annotation) else "."
                    out.extend(_keys(candidate, dotted + sep))
                    nested = True
        if not nested:
            out.append(dotted)
    return out


def test_docs_document_every_key():
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOCS.read_text(), re.MULTILINE))
    missing = [k for k in _keys(RouterConfig) if k not in documented and not k.startswith("cloud.prices.")]
    assert missing == []
