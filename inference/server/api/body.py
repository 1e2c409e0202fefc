"""From request bytes to a validated body: a JSON object sent as application/json, of bounded structure, in
valid Unicode, validated strictly. Every failure is an APIError 400 naming the parameter where there is one.

The checks before pydantic run on the event loop and are linear in the body (which the gate middleware
already bounds by ``--max-body-bytes``); they stop early, so a body of a million values costs no more than
the limit does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError
from starlette.requests import Request

from .errors import APIError, validation_message

if TYPE_CHECKING:
    from .schemas import _Body

MAX_DEPTH = 64  # JSON nesting; no field this server reads is nested more than a few levels
EXTRA_VALUES = 65536  # JSON values allowed beside a prompt of token ids (see value_limit)

Body = TypeVar("Body", bound="_Body")  # the request bodies of schemas.py, with their problems() check


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param, code if param else "invalid_body")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes, content_type: str | None) -> dict:
    """The body as a JSON object. Only ``application/json`` (or ``application/*+json``) is read: a browser
    can post other types to a local server without asking first, and a JSON type makes it ask (CORS)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = f"'{media}'" if media else "none"
        raise _bad(f"the request body must be JSON sent with Content-Type: application/json (got {shown})")
    if not raw.strip():
        raise _bad("the request body is empty; it must be a JSON object")
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise _bad(f"the request body is nested too deeply (more than {MAX_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad(f"the request body must be a JSON object, not a JSON {type(data).__name__}")
    return data


def _path(parts: tuple) -> str | None:
    return ".".join(str(p) for p in parts) or None


def check_structure(data: dict, max_values: int) -> None:
    """At most ``max_values`` JSON values and ``MAX_DEPTH`` levels; every string valid Unicode (JSON's
    ``\\ud800`` escapes decode to lone surrogates, which no tokenizer takes)."""
    stack: list[tuple[object, tuple]] = [(data, ())]
    seen = 0
    while stack:
        value, path = stack.pop()
        seen += 1
        if seen > max_values:
            raise _bad(f"the request body holds more than {max_values} JSON values")
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict | list):
            if len(path) >= MAX_DEPTH:
                raise _bad(f"the request body is nested more than {MAX_DEPTH} levels deep", _path(path[:1]))
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(key, path)
                    stack.append((item, (*path, key)))
            else:
                stack.extend((item, (*path, i)) for i, item in enumerate(value))


def _check_text(text: str, path: tuple) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        param = _path(path)
        raise _bad(
            f"'{param}' holds a lone UTF-16 surrogate (\\u{code:04x}), which is not valid Unicode", param
        ) from None


def validate(model: type[Body], data: dict) -> Body:
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise _bad(message, param) from None
    for param, message in body.problems():
        raise _bad(f"'{param}': {message}", param)
    return body


async def read_body(request: Request, model: type[Body], max_values: int, precheck=None) -> Body:
    """Parse, check and validate the body of ``request``; ``precheck(data)`` runs on the parsed JSON first
    (cheap size checks with precise messages, before anything walks the whole body)."""
    data = parse_json(await request.body(), request.headers.get("content-type"))
    if precheck is not None:
        precheck(data)
    check_structure(data, max_values)
    return validate(model, data)


def value_limit(max_model_len: int) -> int:
    """JSON values a body may hold: a prompt of token ids filling the context, plus room for the rest."""
    return max_model_len + EXTRA_VALUES
