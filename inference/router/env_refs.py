"""``${NAME}`` references in the router config: expansion, and secrets that must be references."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# Fields that hold secrets: their raw YAML value must be exactly one ${NAME} reference.
SECRET_FIELDS: tuple[tuple[str, ...], ...] = (("cloud", "api_key"), ("limits", "redis_password"))


class RouterConfigError(ValueError):
    """The router config file is missing, unreadable or invalid (message names field and value)."""


def expand_env(value: Any, where: str, environ: Mapping[str, str], resolve: bool) -> Any:
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k), environ, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]", environ, resolve) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if not resolve:
                return f"unresolved-{name}"
            if name not in environ:
                raise RouterConfigError(f"{where}: environment variable {name} is not set")
            if not environ[name]:
                raise RouterConfigError(f"{where}: environment variable {name} is set but empty")
            return environ[name]

        return _ENV_REF.sub(repl, value)
    return value


def _secret_values(raw: dict[str, Any]) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for path in SECRET_FIELDS:
        node: Any = raw
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            found.append((".".join(path), node))
    upstreams = raw.get("upstreams")
    if isinstance(upstreams, list):
        for i, up in enumerate(upstreams):
            if isinstance(up, dict) and up.get("api_key") is not None:
                found.append((f"upstreams[{i}].api_key", up["api_key"]))
    return found


def check_secret_refs(raw: dict[str, Any]) -> None:
    for dotted, node in _secret_values(raw):
        if not isinstance(node, str) or not _SECRET_REF.match(node.strip()):
            raise RouterConfigError(
                f"{dotted}: must be an environment reference like ${{DEEPSEEK_API_KEY}}; "
                "a literal secret is not allowed in the config file"
            )
