"""Validate custom resources against their CRD's OpenAPI v3 schema (the CRD files in tests/support/crds/).

    from tests.support.crd_schemas import validate_custom_resource
    validate_custom_resource(rendered_object)   # raises CustomResourceInvalid naming each error's JSON path

Strict, like ``kubectl apply --validate=strict``: a field the schema does not declare is an error (the API
server would silently drop it), unless the schema preserves unknown fields there.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parent / "crds"


class CustomResourceInvalid(ValueError):
    """The object breaks its CRD's schema; the message lists every error with its JSON path."""


def _strict(schema: Any) -> Any:
    """The schema with additionalProperties: false on every object that lists its properties."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict schema of every served version of every CRD in CRD_DIR."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    schema = version["schema"]["openAPIV3Schema"]
                    out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _strict(schema)
    return out


def known_kinds() -> set[tuple[str, str]]:
    return set(_schemas())


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """Raise CustomResourceInvalid unless `obj` validates against its CRD (KeyError-free: unknown kinds raise too)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = _schemas().get(key)
    if schema is None:
        raise CustomResourceInvalid(f"no CRD in {CRD_DIR} for {key[0]} {key[1]}; known: {sorted(_schemas())}")
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        name = obj.get("metadata", {}).get("name", "?")
        lines = [f"{e.json_path}: {e.message}" for e in errors]
        raise CustomResourceInvalid(f"{key[1]}/{name} breaks its CRD schema:\n" + "\n".join(lines))
