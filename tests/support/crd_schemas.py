"""Validate custom resources (ServiceMonitor, ScaledObject, HTTPRoute, ...) against their upstream CRDs.

kubernetes-validate knows only the built-in kinds. This module reads every CustomResourceDefinition kept as
data in ``tests/support/crds/`` (one upstream file per CRD; the README there names source, version and
license) and checks an object as the API server would on create, strictly::

    validate_custom_resource(doc)   # raises CustomResourceError listing every error with its JSON path

What is checked, and how the Kubernetes extensions of OpenAPI v3 are read:

- the structural schema with ``jsonschema`` (types, enums, patterns, bounds, required, ``nullable``);
- unknown fields are errors wherever the schema does not set ``x-kubernetes-preserve-unknown-fields``
  (the API server would prune them silently, or refuse them under ``kubectl --validate=strict``);
- ``x-kubernetes-int-or-string``; ``x-kubernetes-list-type: set`` (unique items) and ``map`` (unique
  ``x-kubernetes-list-map-keys``); ``x-kubernetes-embedded-resource`` (apiVersion, kind, metadata);
- ``x-kubernetes-validations``: the CEL rules, evaluated with cel-python after the schema's defaults are
  applied (as the API server defaults before it validates). Transition rules (``oldSelf``) need the old
  object and are skipped; a rule this evaluator cannot run is reported as an error, never passed;
- ``metadata``: the ObjectMeta fields a manifest may set, names as DNS subdomains, labels and
  annotations as string maps.

Another CRD is supported by adding its upstream YAML to ``crds/`` (and a line to its README).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from jsonschema import Draft202012Validator, ValidationError

CRD_DIR = Path(__file__).resolve().parent / "crds"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the HTTPRoute CRD is 430 kB

# ObjectMeta fields a manifest may carry (the server-set ones, such as uid or resourceVersion, included:
# they are legal, only pointless in a chart).
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": "string"},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "managedFields": {"type": "array"},
        "selfLink": {"type": "string"},
    },
    "additionalProperties": False,
    "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
}

# Identifiers a CEL rule reaches through an escaped name (Kubernetes: "Escaping" of property names).
_CEL_RESERVED = {
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
}
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class CustomResourceError(AssertionError, ValueError):
    """An object that its CRD's schema refuses; the message lists every error with its JSON path."""


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """Raise CustomResourceError listing every schema error of ``obj`` (dispatched by apiVersion + kind)."""
    errors = custom_resource_errors(obj)
    if errors:
        name = (obj.get("metadata") or {}).get("name", "<no name>") if isinstance(obj, dict) else "<not a map>"
        kind = obj.get("kind") if isinstance(obj, dict) else None
        raise CustomResourceError(f"{kind}/{name}: {len(errors)} schema error(s):\n  " + "\n  ".join(errors))


def custom_resource_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema error of ``obj`` as ``"$.json.path: message"`` (empty when it validates)."""
    if not isinstance(obj, dict):
        return [f"$: a custom resource is a map, not {type(obj).__name__}"]
    key = (obj.get("apiVersion"), obj.get("kind"))
    schemas = _schemas()
    if key not in schemas:
        known = ", ".join(f"{a} {k}" for a, k in sorted(schemas))
        return [f"$: no CRD schema for apiVersion {key[0]!r} kind {key[1]!r} in {CRD_DIR} (known: {known})"]
    schema = schemas[key]
    instance = copy.deepcopy(obj)
    _apply_defaults(schema, instance)
    validator = _VALIDATOR(schema, format_checker=_FORMATS)
    found = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_json_path(e.absolute_path)}: {e.message}" for e in found]


def has_crd_schema(obj: dict[str, Any]) -> bool:
    """Whether ``obj``'s apiVersion and kind are those of a CRD kept in ``crds/``."""
    return (obj.get("apiVersion"), obj.get("kind")) in _schemas()


def known_kinds() -> list[tuple[str, str]]:
    """``(apiVersion, kind)`` of every served version of every CRD kept in ``crds/``."""
    return sorted(_schemas())


@functools.cache
def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=_YAML_LOADER):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                root.setdefault("properties", {})["metadata"] = OBJECT_META
                root["required"] = sorted({*root.get("required", []), "apiVersion", "kind", "metadata"})
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _to_json_schema(root)
    return out


def _to_json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes structural schema) to JSON Schema 2020-12, keeping the x-kubernetes-* keys."""
    if not isinstance(node, dict):
        return node
    if node is OBJECT_META:
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_to_json_schema(sub) for sub in value]
        elif key in ("description", "example", "externalDocs", "nullable"):
            continue
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", OBJECT_META)
        out["required"] = sorted({*out.get("required", []), "apiVersion", "kind"})
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _apply_defaults(schema: dict[str, Any], instance: Any) -> None:
    """Fill in ``default`` values the way the API server does before validation (in place)."""
    if isinstance(instance, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                _apply_defaults(sub, instance[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, value in instance.items():
                if name not in (schema.get("properties") or {}):
                    _apply_defaults(extra, value)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _apply_defaults(schema["items"], item)


def _list_map_keys(validator, keys: list[str], instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(instance, list):
        return
    seen: dict[tuple, int] = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        ident = tuple(repr(item.get(k)) for k in keys)
        if ident in seen:
            shown = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
            yield ValidationError(
                f"items {seen[ident]} and {index} have the same key ({shown}); "
                f"x-kubernetes-list-map-keys {keys} must be unique"
            )
        else:
            seen[ident] = index


def _cel_rules(
    validator, rules: list[dict[str, Any]], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not _shape_ok(validator, instance, schema):
        return  # its schema errors are reported already; CEL on a mistyped value would only add noise
    for rule in rules:
        text = rule["rule"]
        if re.search(r"\boldSelf\b", text):
            continue  # a transition rule: only checked on update, against the stored object
        where = f" (at {rule['fieldPath']})" if rule.get("fieldPath") else ""
        try:
            result = _cel_program(text).evaluate({"self": celpy.json_to_cel(_cel_escape(instance))})
        except Exception as exc:  # celpy raises its own error types, and some as values
            yield ValidationError(f"CEL rule {text!r} could not be evaluated: {exc}")
            continue
        if isinstance(result, celpy.CELEvalError):
            yield ValidationError(f"CEL rule {text!r} could not be evaluated: {result}")
        elif not bool(result):
            yield ValidationError(f"{rule.get('message') or 'failed rule: ' + text}{where}")


def _shape_ok(validator, instance: Any, schema: dict[str, Any]) -> bool:
    """Whether ``instance`` passes the structural schema (rules aside): CEL runs only on well-typed values."""
    return _STRUCTURAL(schema, format_checker=_FORMATS).is_valid(instance)


@functools.cache
def _cel_program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_escape(value: Any) -> Any:
    """Map keys as CEL rules name them (Kubernetes escapes reserved words and characters CEL cannot parse)."""
    if isinstance(value, dict):
        return {_cel_name(k): _cel_escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cel_escape(v) for v in value]
    return value


def _cel_name(name: str) -> str:
    if name in _CEL_RESERVED:
        return f"__{name}__"
    return (
        name.replace("__", "__underscores__").replace(".", "__dot__").replace("-", "__dash__").replace("/", "__slash__")
    )


def _json_path(parts) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_FORMATS = jsonschema.FormatChecker(formats=())
for _name, (_low, _high) in _INT_RANGES.items():
    _FORMATS.checks(_name)(lambda v, low=_low, high=_high: not isinstance(v, int) or low <= v <= high)

_STRUCTURAL = jsonschema.validators.extend(Draft202012Validator, {"x-kubernetes-list-map-keys": _list_map_keys})
_VALIDATOR = jsonschema.validators.extend(_STRUCTURAL, {"x-kubernetes-validations": _cel_rules})
