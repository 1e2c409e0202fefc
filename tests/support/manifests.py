"""Validate a rendered manifest as the API server would: built-in kinds against the Kubernetes schemas
(kubernetes-validate, strict), custom resources against their upstream CRDs (crd_schemas)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from tests.support.crd_schemas import custom_resource_errors, has_crd_schema


def manifest_errors(doc: dict[str, Any], kubernetes_version: str | None = None) -> list[str]:
    """Every error found in ``doc`` (kubernetes-validate reports only the first one per object)."""
    if has_crd_schema(doc):
        return custom_resource_errors(doc)
    try:
        kubernetes_validate.validate(doc, kubernetes_version or kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path) or '$'}: {exc.message}"]
    return []


def validate_manifest(doc: dict[str, Any], kubernetes_version: str | None = None) -> None:
    """Raise AssertionError naming the object and every error :func:`manifest_errors` finds."""
    errors = manifest_errors(doc, kubernetes_version)
    assert not errors, f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}:\n  " + "\n  ".join(errors)
