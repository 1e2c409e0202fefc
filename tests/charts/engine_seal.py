"""What "the engine is sealed off" means, checked on any set of rendered manifests (the chart's scenarios, the
values the Pulumi program hands the chart): the engine pods reach nothing but DNS and their own group, carry no
download and no cloud identity, and need a key only the router holds; the download pod has what it needs."""

from __future__ import annotations

from typing import Any

ENGINE = "engine"
DOWNLOAD = "model-download"
IDENTITY_ANNOTATIONS = (
    "eks.amazonaws.com/role-arn",
    "iam.gke.io/gcp-service-account",
    "azure.workload.identity/client-id",
)
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def component(doc: dict[str, Any]) -> str | None:
    return doc["metadata"]["labels"].get("app.kubernetes.io/component")


def _selects_engine(selector: dict[str, Any]) -> bool:
    return selector.get("matchLabels", {}).get("app.kubernetes.io/component") == ENGINE


def engine_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(role, pod template) of every engine pod: the Deployment's, or a LeaderWorkerSet's leader and worker."""
    out = []
    for d in docs:
        if d["kind"] == "Deployment" and component(d) == ENGINE:
            out.append(("", d["spec"]["template"]))
        elif d["kind"] == "LeaderWorkerSet":
            lwt = d["spec"]["leaderWorkerTemplate"]
            out += [("leader", lwt["leaderTemplate"]), ("worker", lwt["workerTemplate"])]
    return out


def engine_egress_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every egress rule of every NetworkPolicy that selects engine pods (NetworkPolicies add up)."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and _selects_engine(d["spec"]["podSelector"])]
    assert policies, "no NetworkPolicy selects the engine pods"
    for p in policies:
        assert "Egress" in p["spec"]["policyTypes"], p["metadata"]["name"]
    return [rule for p in policies for rule in p["spec"].get("egress", [])]


def assert_engine_sealed(docs: list[dict[str, Any]], dns_to: list[dict[str, Any]]) -> None:
    """The engine's whole egress is DNS (the ``dns_to`` peers, port 53) and the pods of its own group; its
    init containers only read the volume; its ServiceAccount has no cloud identity."""
    multi_node = any(d["kind"] == "LeaderWorkerSet" for d in docs)
    for rule in engine_egress_rules(docs):
        assert rule.get("to"), f"an engine egress rule without peers allows every destination: {rule}"
        if rule["ports"] == DNS_PORTS:
            assert rule["to"] == dns_to, rule
            continue
        assert multi_node, f"a one-node engine reaches nothing but DNS: {rule}"
        for peer in rule["to"]:  # a group's peers: engine pods of this release, nothing outside
            assert set(peer) == {"podSelector"} and _selects_engine(peer["podSelector"]), rule
    if not multi_node:
        assert engine_egress_rules(docs) == [], "a one-node engine needs no DNS either"
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for role, template in engine_templates(docs):
        spec = template["spec"]
        annotations = accounts[spec["serviceAccountName"]]["metadata"].get("annotations", {})
        assert not set(annotations) & set(IDENTITY_ANNOTATIONS), (role, annotations)
        assert not [v for v in spec["volumes"] if "secret" in v], "no hub token or credentials in the engine pod"
        claim = next(v for v in spec["volumes"] if v["name"] == "model-cache")["persistentVolumeClaim"]
        assert claim["readOnly"] is True, role
        for init in spec.get("initContainers", []):
            assert init["name"] == "wait-for-model", (role, init["name"])
            assert any(a.startswith(("--wait=", "--check-only")) for a in init["args"]), init["args"]
            assert not any(a.startswith("--attempts=") for a in init["args"]), "the wait downloads nothing"
            assert all(m.get("readOnly") for m in init["volumeMounts"]), init["volumeMounts"]
            assert "envFrom" not in init and not init.get("env"), init
        for c in spec["containers"]:
            assert "envFrom" not in c, (role, c["name"])


def assert_download_has_its_egress(docs: list[dict[str, Any]]) -> None:
    """When the weights are downloaded: one Job, in a pod of its own, with DNS and HTTPS out (the hub or store)."""
    jobs = [d for d in docs if d["kind"] == "Job" and component(d) == DOWNLOAD]
    assert len(jobs) == 1, [d["metadata"]["name"] for d in jobs]
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy" and component(d) == DOWNLOAD]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= jobs[0]["spec"]["template"]["metadata"]["labels"].items()
    egress = policy["spec"]["egress"]
    assert any(rule["ports"] == DNS_PORTS for rule in egress)
    assert any(
        peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
        for rule in egress
        for peer in rule["to"]
        if {"protocol": "TCP", "port": 443} in rule["ports"]
    )


def engine_key_refs(docs: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """{where: (Secret name, key)} of the engine key in the engine's API containers and the router's."""
    names = {"VLLM_API_KEY", "DSDEPLOY_ENGINE_KEY"}
    refs = {}
    pods = [(f"engine{('/' + role) if role else ''}", t["spec"]) for role, t in engine_templates(docs)]
    pods += [
        ("router", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] == "Deployment" and component(d) == "router"
    ]
    for where, spec in pods:
        for c in spec["containers"]:
            for env in c.get("env", []):
                if env["name"] in names:
                    ref = env["valueFrom"]["secretKeyRef"]
                    refs[where] = (ref["name"], ref["key"])
    return refs
