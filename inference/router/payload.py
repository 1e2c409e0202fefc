"""Validation of OpenAI request bodies before they reach any upstream (400s name the field)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from inference.router.errors import RouterError


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    stream: StrictBool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[Any] | None = None


class ChatBody(_Body):
    messages: list[_Message] = Field(min_length=1)


class CompletionBody(_Body):
    prompt: str | list[str] | list[int] | list[list[int]]


def _param(data: Any, loc: tuple[Any, ...]) -> str | None:
    """The field path of an error, without pydantic's union-member tags (``prompt.str`` -> ``prompt``)."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            parts.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            parts.append(str(part))
            node = node[part] if part < len(node) else None
        else:
            break
    return ".".join(parts) or None


_MODELS: dict[str, type[_Body]] = {"/v1/chat/completions": ChatBody, "/v1/completions": CompletionBody}


def parse_body(path: str, raw: bytes) -> dict[str, Any]:
    """Return the request as a dict, or raise a 400 RouterError naming the field and what is allowed."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RouterError(400, f"Request body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RouterError(400, f"Request body must be a JSON object, got {type(data).__name__}.", code="invalid_json")
    try:
        _MODELS[path].model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = _param(data, err["loc"])
        shown = err.get("input")
        got = "" if isinstance(shown, dict | list) or err["type"] == "missing" else f" (got {shown!r:.60})"
        raise RouterError(400, f"Invalid value for '{param}': {err['msg']}{got}.", code="invalid_value", param=param) from None
    return data
