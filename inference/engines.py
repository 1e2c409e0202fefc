"""The engines the chart runs and the weights formats our server loads: names every layer shares.

A leaf module (it imports nothing of the project), so that the Pulumi program and the planner
(``infra/``, which never imports the server), the operator commands (``dsdeploy/``) and the server
itself read one declaration. The chart's ``values.schema.json`` keeps its own enums
(``engine.type``, ``engine.server.quantization``); tests/test_vocabulary.py holds them equal to these.
"""

from __future__ import annotations

from typing import Literal, get_args

# vllm: vLLM's OpenAI server (GPU tiers, and its CPU image); server: the project's own (dsdeploy serve).
EngineType = Literal["vllm", "server"]
ENGINE_TYPES: tuple[EngineType, ...] = get_args(EngineType)
VLLM: EngineType = "vllm"
SERVER: EngineType = "server"

# The path that answers 200 only while an engine takes new work: what the router probes (health.path) and the
# readiness probe reads. Our server's /ready turns 503 on SIGTERM while its open requests finish, and its
# /health stays 200 (liveness); vLLM has only /health, 200 while its engine core lives
# (vllm/entrypoints/serve/instrumentator/health.py in vLLM 0.32), so the router sees a draining vLLM pod
# through its failed requests and the endpoints it loses, not through a probe.
READY_PATHS: dict[EngineType, str] = {VLLM: "/health", SERVER: "/ready"}

# What `dsdeploy serve --quantization` loads (inference/server/quantization.py: from_pretrained arguments);
# "none" keeps the checkpoint's own dtype.
ServerQuantization = Literal["none", "bf16", "fp16", "bnb-8bit", "bnb-4bit"]
SERVER_QUANTIZATIONS: tuple[ServerQuantization, ...] = get_args(ServerQuantization)
