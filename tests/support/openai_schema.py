"""Check answers against the official OpenAI OpenAPI document (a subset kept in ``openai_openapi/``)::

    validate_openai("CreateChatCompletionResponse", reply)   # raises AssertionError listing every error

The document is OpenAPI 3.1 but still marks some fields ``nullable: true`` (3.0 style); those are read as
"or null". Unknown fields are allowed where the document allows them (it rarely closes an object), so
the server's extensions (``reasoning_content``, ``max_model_len``) pass. Regenerate the subset with
``python -m tests.support.openai_schema <openapi.json from github.com/openai/openai-openapi>``.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema

SUBSET = Path(__file__).resolve().parent / "openai_openapi" / "openapi-subset.json"
# The schemas the tests use; the subset holds them and every schema they reference.
ROOTS = (
    "CreateChatCompletionRequest",
    "CreateCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
)


def validate_openai(schema_name: str, instance: Any) -> None:
    _validate(schema_name, {"$ref": f"#/components/schemas/{schema_name}"}, instance)


def validate_completion_chunk(instance: Any) -> None:
    """A streamed /v1/completions chunk. The document has no schema of its own for them: they are
    CreateCompletionResponse objects whose choices carry ``finish_reason: null`` until the last, and whose
    ``usage`` is null but in the usage chunk (as the API streams them). Only those two are relaxed."""
    relaxed = copy.deepcopy(_document()["components"]["schemas"]["CreateCompletionResponse"])
    choice = relaxed["properties"]["choices"]["items"]["properties"]
    choice["finish_reason"] = {"anyOf": [choice["finish_reason"], {"type": "null"}]}
    relaxed["properties"]["usage"] = {"anyOf": [relaxed["properties"]["usage"], {"type": "null"}]}
    _validate("CreateCompletionResponse (a streamed chunk)", relaxed, instance)


def _validate(name: str, root: dict, instance: Any) -> None:
    validator = jsonschema.Draft202012Validator(_document() | root)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    assert not errors, f"not a valid {name}:\n  " + "\n  ".join(
        f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def schema(name: str) -> dict:
    """One schema of the subset, as kept (nullable marks unconverted)."""
    return _raw()["components"]["schemas"][name]


@functools.cache
def _raw() -> dict:
    return json.loads(SUBSET.read_text())


@functools.cache
def _document() -> dict:
    return {"components": {"schemas": {k: _nullable(v) for k, v in _raw()["components"]["schemas"].items()}}}


def _nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def extract(openapi: dict, roots: tuple[str, ...] = ROOTS) -> dict:
    """The named schemas of a full OpenAPI document and every schema they reference, unmodified."""
    schemas = openapi["components"]["schemas"]
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        refs: list[str] = []

        def walk(node: Any, refs: list[str] = refs) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "$ref" and isinstance(value, str):
                        refs.append(value.rsplit("/", 1)[-1])
                    else:
                        walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(schemas[name])
        stack += refs
    return {
        "openapi": openapi["openapi"],
        "info": copy.deepcopy(openapi["info"]),
        "components": {"schemas": {name: schemas[name] for name in sorted(seen)}},
    }


if __name__ == "__main__":
    full = json.loads(Path(sys.argv[1]).read_text())
    SUBSET.write_text(json.dumps(extract(full), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {SUBSET} ({len(extract(full)['components']['schemas'])} schemas)")
