"""Every cloud-layer component is a ClusterLayer: the interface the program reads, with no attribute guessing."""

from __future__ import annotations

import pulumi
import pytest
from pulumi_harness import run_program
from pulumi_stacks import STACKS

import infra.program
from infra.cloud import ClusterLayer

GPU_NODES = {"gke": "gcp:container/nodePool:NodePool", "eks": "aws:eks/nodeGroup:NodeGroup", "existing": None}


@pytest.mark.parametrize("platform", ["gke", "eks", "existing"])
def test_each_cluster_class_is_a_cluster_layer(platform, monkeypatch):
    built: list[object] = []
    original = infra.program._cluster

    def recording(*args, **kwargs):
        cluster = original(*args, **kwargs)
        built.append(cluster)
        return cluster

    monkeypatch.setattr(infra.program, "_cluster", recording)
    raw, secrets = STACKS[(platform, "base")]
    run_program(raw, secrets)
    [cluster] = built
    assert isinstance(cluster, ClusterLayer), f"{type(cluster).__name__} lacks a ClusterLayer member"
    expected = GPU_NODES[platform]
    if expected is None:
        assert cluster.gpu_nodes is None  # the user's own nodes: nothing to wait for
    else:
        assert isinstance(cluster.gpu_nodes, pulumi.CustomResource)
        # the one GPU pool / node group the program declared is what the platform layer waits for
        assert type(cluster.gpu_nodes).__module__.startswith(("pulumi_gcp", "pulumi_aws"))


def test_a_class_without_the_gpu_nodes_member_is_not_a_cluster_layer():
    class Partial:  # every member but gpu_nodes
        provider = kubeconfig = gpu_facts = provisioning_note = shared_cache = None
        block_cache_zone = storage_ready = min_cache_gib = None

    assert not isinstance(Partial(), ClusterLayer)
