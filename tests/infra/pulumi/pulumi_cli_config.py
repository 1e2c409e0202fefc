"""The Pulumi CLI's checks of a stack's config against ``Pulumi.yaml``, reproduced (no CLI runs here).

Source: pulumi/pulumi ``sdk/go/common/workspace/config.go`` (``mergeConfig``,
``validateStackConfigValue``) and ``project.go`` (``Project.Validate``, ``ValidateConfigValue``):

- a project-namespaced key declared without ``default`` (or ``value``) must be set in the stack,
  typed or not: "Stack 'S' is missing configuration value(s) 'k'";
- a declared default must match the declared type; an array type needs ``items``;
- a stack value (or an applied default) of a typed key must match its type, and a typed key with
  ``secret: true`` must be stored encrypted ("must be encrypted as it's secret");
- defaults reach the program as text: ``fmt.Sprintf("%v")`` for strings, ints and bools, JSON otherwise.
"""

from __future__ import annotations

import json
from typing import Any

TYPES = ("string", "integer", "boolean", "array")


def _valid(type_name: str, items: dict | None, value: Any) -> bool:
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return True
        return isinstance(value, str) and value.lstrip("+-").isdigit()
    if type_name == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if type_name == "array" and isinstance(value, list) and items:
        return all(_valid(items["type"], items.get("items"), item) for item in value)
    return False


def _stack_value(value: Any) -> Any:
    """A stack file value as the CLI sees it: scalars as text (YAML `true` is "true"), structures as objects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return value


def engine_text(value: Any) -> str:
    """How the CLI hands a value to the program (``createConfigValue``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def project_errors(project: dict[str, Any]) -> list[str]:
    """``Project.Validate`` for project-namespaced keys."""
    errors = []
    for key, spec in (project.get("config") or {}).items():
        if "type" in spec and spec["type"] not in TYPES:
            errors.append(f"configuration key '{key}' has unknown type {spec['type']!r}")
        if spec.get("type") == "array" and "items" not in spec:
            errors.append(f"The configuration key '{key}' declares an array but does not specify the underlying type")
        if "type" in spec and "default" in spec and not _valid(spec["type"], spec.get("items"), spec["default"]):
            errors.append(f"The default value specified for configuration key '{key}' is not of the expected type")
    return errors


def merge_stack_config(
    project: dict[str, Any], stack: dict[str, Any], stack_name: str
) -> tuple[dict[str, str], list[str]]:
    """The config the program would get (``dsdeploy:key -> text``) and the CLI's errors, for one stack file."""
    name = project["name"]
    config = dict(stack.get("config") or {})
    merged: dict[str, str] = {}
    missing, errors = [], []
    for full_key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            merged[full_key] = "<secure>"
        else:
            merged[full_key] = engine_text(value)
    for key, spec in sorted((project.get("config") or {}).items()):
        full_key = key if ":" in key else f"{name}:{key}"
        if not full_key.startswith(f"{name}:"):
            continue
        if full_key not in config:
            if "default" not in spec and "value" not in spec:
                missing.append(key)
                continue
            config[full_key] = spec.get("default", spec.get("value"))
            merged[full_key] = engine_text(config[full_key])
        if "type" not in spec:
            continue
        value = config[full_key]
        secure = isinstance(value, dict) and set(value) == {"secure"}
        if spec.get("secret") and not secure:
            errors.append(f"Stack '{stack_name}' with configuration key '{key}' must be encrypted as it's secret")
        elif not secure and not _valid(spec["type"], spec.get("items"), _stack_value(value)):
            errors.append(f"Stack '{stack_name}' with configuration key '{key}' must be of type '{spec['type']}'")
    if missing:
        errors.insert(0, f"Stack '{stack_name}' is missing configuration {_missing_text(missing)}")
    return merged, errors


def _missing_text(keys: list[str]) -> str:
    """``formatMissingKeys``: value 'a' / values 'a' and 'b' / values 'a', 'b' and 'c' (sorted)."""
    quoted = [f"'{key}'" for key in sorted(keys)]
    if len(quoted) == 1:
        return f"value {quoted[0]}"
    return f"values {', '.join(quoted[:-1])} and {quoted[-1]}"
