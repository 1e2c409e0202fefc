"""The machine a plan runs on: the cheapest listed shape that holds it (EKS base: single-GPU EC2 shapes), a
pinned one refused with the reason when it does not hold the plan, and `dsdeploy cost` pricing that shape."""

from __future__ import annotations

import json

import pytest

from dsdeploy.cli import main
from infra.catalog import MachineMapping, load_catalog
from infra.chart_values import ChartOptions, chart_values
from infra.decision.prices import load_local_prices
from infra.planner import plan_deployment
from infra.planner.machines import MachineChoiceError, engine_pod_requests, on_demand_price, why_not

R1_7B = "r1-distill-qwen-7b"


def shapes() -> dict[str, MachineMapping]:
    return {str(s.machine_type): s for s in load_catalog().tier("base").alternatives["eks"]}


def test_base_on_eks_runs_on_the_cheapest_single_gpu_shape_that_holds_the_plan():
    plan = plan_deployment(R1_7B, "base")
    chosen = plan.machine("eks")
    holding = [s for s in shapes().values() if why_not(plan, s) is None]
    prices = {str(s.machine_type): on_demand_price(s.machine_type)[0] for s in holding}  # type: ignore[index]
    assert chosen.machine_type == min(prices, key=prices.__getitem__) == "g6e.2xlarge"
    assert prices["g6e.2xlarge"] < on_demand_price("p4d.24xlarge")[0] / 8  # type: ignore[index]  # even per GPU
    assert chosen.accelerator_count == 1 and chosen.gpu == "L40S-48GB"
    assert chosen.node_labels == {"node.kubernetes.io/instance-type": "g6e.2xlarge"}
    text = chosen.substitution or ""
    assert "instead of the tier's A100 40GB" in text and "cheapest shape that holds this plan" in text
    assert "decode runs at about 56% of the plan's figures" in text and "p5.4xlarge at USD 6.88/h" in text
    assert plan.machine("gke").machine_type == "a2-highgpu-1g"  # GKE sells the tier's own shape


def test_a_replica_over_several_nodes_stays_on_the_tier_shape():
    plan = plan_deployment("r1-distill-qwen-32b", "base")
    assert plan.nodes_per_replica > 1
    assert plan.machine("eks").machine_type == "p4d.24xlarge"
    assert "spans" in (why_not(plan, shapes()["g6e.2xlarge"]) or "")


def test_why_a_shape_does_not_hold_a_plan():
    plan = plan_deployment(R1_7B, "base")
    cpu, memory = engine_pod_requests(plan)
    assert (cpu, memory) == (4000, 20 * 1024)
    assert why_not(plan, shapes()["g6e.xlarge"]) == (
        "its 3,920m allocatable CPU cannot hold the engine pod's request of 4,000m"
    )
    small = shapes()["g6e.2xlarge"].model_copy(update={"machine_type": "g6.xlarge", "gpu": "L4-24GB"})
    assert "L4-24GB has 23,034 MiB; the plan is sized for the A100-40GB's 40,960 MiB" in (why_not(plan, small) or "")
    # A model whose vLLM kernels need Hopper never lands on an L40S (Ada), but may on the H100 of a p5.4xlarge.
    hopper_only = plan.model_copy(update={"model_id": load_catalog().model("deepseek-v3.2").id})
    assert "hopper or newer" in (why_not(hopper_only, shapes()["g6e.2xlarge"]) or "")
    assert why_not(hopper_only, shapes()["p5.4xlarge"]) is None


def test_the_engine_pod_requests_checked_are_the_charts():
    plan = plan_deployment(R1_7B, "base")
    requests = chart_values(plan, ChartOptions(platform="eks"))["engine"]["resources"]["requests"]
    cpu, memory = engine_pod_requests(plan)
    assert int(requests["cpu"]) * 1000 == cpu and int(requests["memory"].removesuffix("Gi")) * 1024 == memory


def test_a_pinned_shape_is_used_and_one_that_does_not_hold_the_plan_is_refused():
    plan = plan_deployment(R1_7B, "base")
    pinned = plan.machine("eks", "p5.4xlarge")
    assert pinned.machine_type == "p5.4xlarge" and pinned.gpu == "H100-80GB"
    assert "Pinned by the stack (p5.4xlarge at USD 6.88/h" in (pinned.substitution or "")
    assert plan.machine("eks", "p4d.24xlarge").machine_type == "p4d.24xlarge"
    with pytest.raises(
        MachineChoiceError,
        match=r"'g6e\.xlarge' does not hold this plan: its 3,920m allocatable "
        r"CPU.*allowed for this plan: p4d\.24xlarge, g6e\.2xlarge",
    ):
        plan.machine("eks", "g6e.xlarge")
    with pytest.raises(MachineChoiceError, match=r"'m5\.large' is not offered for tier base on eks"):
        plan.machine("eks", "m5.large")


def test_every_listed_shape_has_a_sourced_price():
    cloud = load_local_prices().cloud
    for name in shapes():
        price = cloud[name]
        assert price.platform == "eks" and price.on_demand_per_hour and "karpenter-provider-aws" in price.source


def test_cost_for_base_on_eks_prices_the_single_gpu_shape_with_its_own_throughput(capsys):
    assert main(["cost", "--tier", "base", "--platform", "eks", "--platform", "gke", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    options = {o["key"]: o for o in data["options"]}
    eks, gke = options["base eks on-demand"], options["base gke on-demand"]
    assert eks["machine_type"] == "g6e.2xlarge"
    sheet = load_local_prices()
    usd = sheet.cloud["g6e.2xlarge"].on_demand_per_hour * 8760
    assert eks["unit_cost_per_year"] == pytest.approx(usd * sheet.exchange_rate.usd_cny, rel=1e-6)
    assert eks["unit_cost_per_year"] < gke["unit_cost_per_year"] / 1.5  # was ~6x GKE's on a whole p4d.24xlarge
    # the L40S decodes at 864 / 1,555 of the A100's bound: fewer calls per replica-year than on GKE's A100
    assert eks["calls_per_replica_year"] < gke["calls_per_replica_year"]


def test_values_for_a_pinned_instance_type_select_the_nodes_that_type_makes(capsys):
    """`dsdeploy values --instance-type` = the stack's dsdeploy:instanceType: the values select the nodes of the
    pinned type (not the cheapest shape's, where the pods of a GitOps install would stay Pending)."""
    import yaml

    base = ["values", "--model", R1_7B, "--tier", "base", "--platform", "eks"]
    assert main(base) == 0
    selector = yaml.safe_load(capsys.readouterr().out)["engine"]["gpu"]["nodeSelector"]
    assert selector == {"node.kubernetes.io/instance-type": "g6e.2xlarge"}  # unpinned: the cheapest
    assert main([*base, "--instance-type", "p5.4xlarge"]) == 0
    selector = yaml.safe_load(capsys.readouterr().out)["engine"]["gpu"]["nodeSelector"]
    assert selector == {"node.kubernetes.io/instance-type": "p5.4xlarge"}
    for argv, words in (
        ([*base, "--instance-type", "g6e.xlarge"], "--instance-type: machine type 'g6e.xlarge' does not hold this"),
        ([*base, "--instance-type", "m5.large"], "--instance-type: machine type 'm5.large' is not offered"),
        ([*base[:-1], "gke", "--instance-type", "p5.4xlarge"], "--instance-type: applies to --platform eks only"),
        ([*base, "--instance-type", "p5.4xlarge", "--gpu-node-selector", "a=b"], "not both"),
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert words in captured.err and captured.out == "", (argv, captured.err)
