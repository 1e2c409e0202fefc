"""router.limits: cloud budgets and an existing Redis, rendered into the router's config, env and NetworkPolicy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inference.router.config import load_router_config
from tests.charts.conftest import helm_template, parse
from tests.support.fake_secrets import FAKE_KEY
from tests.support.manifests import manifest_errors

LIMITS = {
    "budgets": {"total": {"dayUsd": 50, "monthUsd": 900.5}, "perKey": {"dayUsd": 2.5}},
    "redis": {
        "host": "redis-master.cache.svc.cluster.local",
        "port": 6380,
        "db": 2,
        "tls": True,
        "passwordSecret": {"name": "redis-auth", "key": "redis-password"},
        "egressTo": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cache"}}}],
    },
}


def render(tmp: Path, limits: dict[str, Any], cloud: bool = True) -> Any:
    values = {"router": {"limits": limits, "cloud": {"enabled": cloud}}}
    proc = helm_template(values=values, tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    return parse(proc.stdout)


def router_parts(r: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    text = r.one("ConfigMap", "router")["data"]["router.yaml"]
    container = r.one("Deployment", "router")["spec"]["template"]["spec"]["containers"][0]
    policy = [p for p in r.kind("NetworkPolicy") if p["metadata"]["name"] == "ds-dsdeploy-router"][0]
    return text, container, policy


def test_budgets_and_redis_reach_the_router_config_env_and_network_policy(tmp_path: Path) -> None:
    r = render(tmp_path, LIMITS)
    text, container, policy = router_parts(r)
    path = tmp_path / "router.yaml"
    path.write_text(text)
    cfg = load_router_config(
        path,
        environ={
            "DEEPSEEK_API_KEY": "test-key-not-real",
            "REDIS_PASSWORD": "pw-not-real",
            "DSDEPLOY_ENGINE_KEY": "engine-key-not-real",
        },
    )
    limits = cfg.limits
    assert limits.redis_url == "rediss://redis-master.cache.svc.cluster.local:6380/2"
    assert limits.redis_password == "pw-not-real" and "${REDIS_PASSWORD}" in text
    assert (limits.budgets.total.day_usd, limits.budgets.total.month_usd) == (50, 900.5)
    assert (limits.budgets.per_key.day_usd, limits.budgets.per_key.month_usd) == (2.5, None)
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["REDIS_PASSWORD"] == {"name": "redis-auth", "key": "redis-password"}
    assert "DEEPSEEK_API_KEY" in env
    to_redis = [e for e in policy["spec"]["egress"] if e["ports"] == [{"protocol": "TCP", "port": 6380}]]
    assert to_redis == [{"ports": [{"protocol": "TCP", "port": 6380}], "to": LIMITS["redis"]["egressTo"]}]
    for doc in (r.one("Deployment", "router"), policy, r.one("ConfigMap", "router")):
        assert manifest_errors(doc) == []


def test_a_private_ca_for_redis_tls_is_mounted_where_the_router_config_names_it(tmp_path: Path) -> None:
    ca = {"name": "redis-ca", "key": "ca.pem"}
    r = render(tmp_path, {"redis": {**LIMITS["redis"], "tlsCaSecret": ca}})
    text, container, _ = router_parts(r)
    ca_file = yaml.safe_load(text)["limits"]["redis_tls_ca_file"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in r.one("Deployment", "router")["spec"]["template"]["spec"]["volumes"]}
    mount, volume = mounts["redis-ca"], volumes["redis-ca"]["secret"]
    assert mount["readOnly"] is True and volume["secretName"] == "redis-ca"
    assert [f"{mount['mountPath']}/{item['path']}" for item in volume["items"]] == [ca_file]
    assert volume["items"][0]["key"] == "ca.pem"
    local = tmp_path / "ca.pem"  # the router reads it there: the same config, with the file here
    local.write_text("")
    path = tmp_path / "router.yaml"
    path.write_text(text.replace(ca_file, str(local)))
    env = {"DEEPSEEK_API_KEY": "k", "REDIS_PASSWORD": "p", "DSDEPLOY_ENGINE_KEY": "e"}
    assert load_router_config(path, environ=env).limits.redis_tls_ca_file == str(local)
    assert manifest_errors(r.one("Deployment", "router")) == []
    plain = render(tmp_path, LIMITS)  # no CA Secret: nothing mounted, the system store
    _, container, _ = router_parts(plain)
    assert "redis_tls_ca_file" not in router_parts(plain)[0]
    assert "redis-ca" not in {m["name"] for m in container["volumeMounts"]}


def test_a_redis_ca_without_tls_is_refused(tmp_path: Path) -> None:
    values = {"router": {"limits": {"redis": {"host": "r", "tlsCaSecret": {"name": "redis-ca"}}}}}
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode != 0 and "router.limits.redis.tlsCaSecret.name is set but" in proc.stderr


def test_redis_password_without_the_cloud_still_gets_its_env(tmp_path: Path) -> None:
    r = render(tmp_path, {"redis": {"host": "10.0.0.5", "passwordSecret": {"name": "redis-auth"}}}, cloud=False)
    text, container, policy = router_parts(r)
    assert "redis://10.0.0.5:6379/0" in text
    assert [e["name"] for e in container["env"]] == ["DSDEPLOY_ENGINE_KEY", "REDIS_PASSWORD"]  # the engine key always
    assert {"ports": [{"protocol": "TCP", "port": 6379}]} in policy["spec"]["egress"]  # any address, that port
    assert manifest_errors(r.one("Deployment", "router")) == []


def test_without_redis_nothing_of_it_is_rendered(tmp_path: Path) -> None:
    r = render(tmp_path, {}, cloud=False)
    text, container, policy = router_parts(r)
    assert "redis" not in text and "budgets" not in text
    assert [e["name"] for e in container["env"]] == ["DSDEPLOY_ENGINE_KEY"]  # only the engine key, always there
    assert not [e for e in policy["spec"]["egress"] if e["ports"][0]["port"] == 6379]


@pytest.mark.parametrize(
    ("limits", "where"),
    [
        ({"budgets": {"total": {"dayUsd": -1}}}, "/router/limits/budgets/total/dayUsd"),
        ({"budgets": {"perKey": {"weeklyUsd": 1}}}, "'weeklyUsd' not allowed"),
        ({"redis": {"host": "redis://redis:6379"}}, "/router/limits/redis/host"),
        ({"redis": {"host": "user:pw@redis"}}, "/router/limits/redis/host"),
        ({"redis": {"port": 0}}, "/router/limits/redis/port"),
        (
            {"redis": {"passwordSecret": {"name": FAKE_KEY}}},
            "/router/limits/redis/passwordSecret/name",
        ),
        ({"redis": {"password": "hunter2"}}, "'password' not allowed"),
    ],
)
def test_schema_rejects_bad_limits(tmp_path: Path, limits: dict[str, Any], where: str) -> None:
    proc = helm_template(values={"router": {"limits": limits}}, tmp=tmp_path)
    assert proc.returncode != 0 and where in proc.stderr, proc.stderr


def test_optional_valkey_subchart_is_off_by_default_and_wired_to_the_router_when_on(tmp_path: Path) -> None:
    proc = helm_template(values={"router": {"cloud": {"enabled": True}}}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valkey" not in proc.stdout
    proc = helm_template(values={"valkey": {"enabled": True}, "router": {"cloud": {"enabled": True}}}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = parse(proc.stdout)
    text, container, policy = router_parts(r)
    assert "redis_url: redis://ds-valkey:6379/0" in text and "redis_password: ${REDIS_PASSWORD}" in text
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["REDIS_PASSWORD"] == {"name": "dsdeploy-valkey", "key": "default"}
    [valkey] = [d for d in r.kind("Deployment") if d["metadata"]["name"] == "ds-valkey"]
    valkey_labels = valkey["spec"]["template"]["metadata"]["labels"]
    [to_valkey] = [e for e in policy["spec"]["egress"] if e["ports"] == [{"protocol": "TCP", "port": 6379}]]
    assert all(valkey_labels[k] == v for k, v in to_valkey["to"][0]["podSelector"]["matchLabels"].items())
    [service] = [d for d in r.kind("Service") if d["metadata"]["name"] == "ds-valkey"]
    assert service["spec"]["ports"][0]["port"] == 6379
    # Valkey admits the router pods only
    [vk_policy] = [p for p in r.kind("NetworkPolicy") if p["metadata"]["name"] == "ds-valkey"]
    router_labels = r.one("Deployment", "router")["spec"]["template"]["metadata"]["labels"]
    [rule] = vk_policy["spec"]["ingress"]
    assert all(router_labels[k] == v for k, v in rule["from"][0]["podSelector"]["matchLabels"].items())
    assert vk_policy["spec"]["policyTypes"] == ["Ingress"]
    for doc in r.docs:
        assert manifest_errors(doc) == [], doc["metadata"]["name"]
