"""The stacks the tests run (one program run per platform x tier, shared: Pulumi mocks runs are slowish)."""

from __future__ import annotations

from pulumi_harness import ProgramRun, run_program

API_KEY = "test-deepseek-key-not-real-0123"
KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n"
R1_7B = "deepseek-r1-distill-qwen-7b"
R1_70B = "deepseek-r1-distill-llama-70b"

# Each stack exercises different options; together they cover every platform x tier.
STACKS: dict[tuple[str, str], tuple[dict, dict]] = {
    ("gke", "base"): (
        {
            "platform": "gke",
            "tier": "base",
            "model": R1_7B,
            "quantization": "bf16",
            "region": "us-central1",
            "zone": "us-central1-a",
            "replicasMin": "1",
            "replicasMax": "2",
            "provisioning": "on-demand",
        },
        {},
    ),
    ("gke", "pro"): (
        {
            "platform": "gke",
            "tier": "pro",
            "model": R1_70B,
            "region": "us-central1",
            "zone": "us-central1-a",
            "cloudFallback": "true",
            "deletionProtection": "true",
        },
        {"deepseekApiKey": API_KEY},
    ),
    ("eks", "base"): (
        {"platform": "eks", "tier": "base", "model": R1_7B, "region": "us-east-1", "provisioning": "spot"},
        {},
    ),
    ("eks", "pro"): (
        {
            "platform": "eks",
            "tier": "pro",
            "model": R1_70B,
            "region": "us-east-1",
            "replicasMin": 2,
            "replicasMax": 4,
            "cloudFallback": True,
        },
        {"deepseekApiKey": API_KEY},
    ),
    ("existing", "base"): (
        {
            "platform": "existing",
            "tier": "base",
            "model": R1_7B,
            "storageClass": "local-path",
            "gpuNodeLabels": '["gpu.example.com/model=a100"]',
            "gpuNodeTaints": '["gpu.example.com/dedicated=inference:NoSchedule"]',
        },
        {"kubeconfig": KUBECONFIG},
    ),
    ("existing", "pro"): (
        {"platform": "existing", "tier": "pro", "model": R1_70B, "gpusAlreadyEnabled": True, "waitForApp": True},
        {"kubeconfig": KUBECONFIG},
    ),
}

_RUNS: dict[tuple[str, str], ProgramRun] = {}


def stack_run(platform: str, tier: str) -> ProgramRun:
    """The program run for one platform x tier (runs once per session)."""
    if (platform, tier) not in _RUNS:
        raw, secrets = STACKS[(platform, tier)]
        _RUNS[(platform, tier)] = run_program(raw, secrets)
    return _RUNS[(platform, tier)]
