"""Request bodies of the OpenAI-compatible API.

Validation is strict, as the OpenAI API's: a string or a boolean where a number belongs, a number where a
boolean belongs, or 1.0 where an integer belongs is refused, never coerced. ``null`` on an optional field
means "unset" (its default applies), as in the API's schema and vLLM: ``openai`` clients send
``temperature=None``. Unknown fields are ignored (the `openai` client and other callers send fields such as
``user`` or ``metadata``); known fields this server cannot honour are refused with a message naming them.
The lists of accepted, refused and ignored fields are in docs/server.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the API's default for /v1/completions (chat has none: up to the context)

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256  # per stop string: every generated token is checked against every stop string
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # a signed 64-bit integer, as vLLM accepts (torch's generator seed)


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: object) -> object:
        """``null`` on an optional field is the field left out; a required one (messages, prompt) stays
        refused."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items() if v is not None or k not in fields or fields[k].is_required()}

    def problems(self) -> list[tuple[str, str]]:
        """Combinations of fields that are refused: ``(param, message)`` pairs."""
        return []


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    tool_calls: list | None = None  # declared before content: its refusal explains an assistant turn without text
    content: str | list[ContentPart] | None
    name: str | None = None

    @field_validator("tool_calls")
    @classmethod
    def _no_tool_calls(cls, value: list | None) -> list | None:
        if value:
            raise ValueError("tool calls are not supported by this server")
        return value

    @field_validator("content")
    @classmethod
    def _text_content(cls, value: str | list[ContentPart] | None) -> str | list[ContentPart]:
        if value is None or value == []:
            raise ValueError("a message needs content: a string or a non-empty list of text parts")
        if isinstance(value, list):
            for part in value:
                if part.type != "text":
                    raise ValueError(f"content part of type {part.type!r} is not supported; only 'text' parts are")
                if part.text is None:
                    raise ValueError("a content part of type 'text' needs a 'text' string")
        return value

    def text(self) -> str:
        """The message's text; text parts are joined with newlines (as vLLM does)."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text or "" for part in self.content or [])


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


def _refuse_if(value: object, message: str) -> None:
    if value:
        raise ValueError(message)


def _text_answer_choice(field: str, value: str | dict | None, called: str) -> str | dict | None:
    """``tool_choice`` / ``function_call``: with nothing to call, "none" and "auto" both mean an answer in
    text; "required" or a named tool/function is refused."""
    if value is None or value in ("none", "auto"):
        return value
    shown = repr(value) if isinstance(value, str) else f"a named {called}"
    raise ValueError(
        f"{field} {shown} is not supported: this server does not call {called}s (only 'none' or 'auto' are accepted)"
    )


class SamplingFields(_Body):
    """Fields shared by chat and text completions."""

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, ge=0.0, le=1.0)  # 0 keeps only the most likely token: greedy
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logprobs: bool | int | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    ignore_eos: bool = False  # vLLM extension: keep generating past the end-of-sequence token
    logit_bias: dict[str, float] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        _refuse_if(value, "logit_bias is not supported by this server")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        longest = max((len(s) for s in stops), default=0)
        if longest > MAX_STOP_CHARS:
            raise ValueError(f"a stop string may have at most {MAX_STOP_CHARS} characters, got one of {longest}")
        return stops

    @field_validator("n")
    @classmethod
    def _single_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"n={value} is not supported; this server returns one choice per request (n=1)")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError(f"{value} is not supported; this server only accepts 0")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> bool | int | None:
        _refuse_if(value, "logprobs are not supported by this server")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, value: int | None) -> int | None:
        _refuse_if(value, "top_logprobs is not supported by this server (it returns no logprobs)")
        return value

    def problems(self) -> list[tuple[str, str]]:
        if self.stream_options is not None and not self.stream:
            return [("stream_options", "stream_options is only allowed when stream is true")]
        return []

    def token_limit(self) -> tuple[int | None, str]:
        """``(tokens to generate at most, the parameter that said so)``; None: up to the end of the context."""
        return self.max_tokens, "max_tokens"


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    functions: list[dict] | None = None  # the API's deprecated function calling
    function_call: str | dict | None = None
    modalities: list[str] | None = None
    audio: dict | None = None
    web_search_options: dict | None = None
    response_format: dict | None = None

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict | None) -> dict | None:
        if value and value.get("type", "text") != "text":
            raise ValueError(f"response_format type {value.get('type')!r} is not supported; only 'text'")
        return value

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[dict] | None) -> list[dict] | None:
        _refuse_if(value, "tool calling is not supported by this server")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value: str | dict | None) -> str | dict | None:
        return _text_answer_choice("tool_choice", value, "tool")

    @field_validator("functions")
    @classmethod
    def _no_functions(cls, value: list[dict] | None) -> list[dict] | None:
        _refuse_if(value, "function calling (functions) is not supported by this server")
        return value

    @field_validator("function_call")
    @classmethod
    def _no_function_call(cls, value: str | dict | None) -> str | dict | None:
        return _text_answer_choice("function_call", value, "function")

    @field_validator("modalities")
    @classmethod
    def _text_modality(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and value != ["text"]:
            raise ValueError(f"modalities {value} are not supported; this server answers with text only (['text'])")
        return value

    @field_validator("audio")
    @classmethod
    def _no_audio(cls, value: dict | None) -> dict | None:
        if value is not None:
            raise ValueError("audio output is not supported by this server")
        return value

    @field_validator("web_search_options")
    @classmethod
    def _no_web_search(cls, value: dict | None) -> dict | None:
        if value is not None:  # even {}: it asks for a web search with the default options
            raise ValueError("web search is not supported by this server (its model has no route out)")
        return value

    def token_limit(self) -> tuple[int | None, str]:
        # The API (and vLLM) prefer max_completion_tokens; max_tokens is its deprecated name.
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str] | list[int]) -> str | list[str] | list[int]:
        if isinstance(value, list):
            if not value:
                raise ValueError("prompt must not be empty")
            first = value[0]
            if isinstance(first, str):  # list[str] (strict validation: one list type or the other)
                if len(value) != 1:
                    raise ValueError(f"{len(value)} prompts given; this server takes one prompt per request")
                return first
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        _refuse_if(value, "echo is not supported by this server")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        _refuse_if(value, "suffix is not supported by this server")
        return value

    @field_validator("best_of")
    @classmethod
    def _one_candidate(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise ValueError(f"best_of={value} is not supported; this server generates one candidate (best_of=1)")
        return value

    def token_limit(self) -> tuple[int | None, str]:
        # The API's default for completions is 16 tokens, not the rest of the context.
        if self.max_tokens is None:
            return COMPLETIONS_DEFAULT_MAX_TOKENS, "max_tokens"
        return self.max_tokens, "max_tokens"


class GenerateRequest(_Body):
    """The body of the original article's /generate service."""

    model_config = ConfigDict(strict=True, extra="forbid")
    prompt: str = Field(min_length=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(1000, ge=1)
