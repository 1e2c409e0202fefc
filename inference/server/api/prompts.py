"""Prompt tokens of a request.

The chat template and the tokenizer run in a small thread pool, not on the event loop: the tokenizer
releases the GIL and Jinja gives it up every few milliseconds, so /health, /ready and streams stay
responsive while a large prompt is prepared. Before that, cheap checks on the parsed body refuse what
cannot fit without tokenizing it: more than ``MAX_MESSAGES`` messages, more characters than the context
could hold even if every token were the vocabulary's longest, or more token ids than the context.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from .errors import APIError

MAX_MESSAGES = 2048
CHAR_SLACK = 2  # on top of the bound: tokenizers that normalise text may drop some characters
PROMPT_WORKERS = 2


def context_exceeded(param: str, tokens: int, limit: int) -> APIError:
    return APIError(
        400,
        f"'{param}' is {tokens} tokens; the context is {limit} tokens and must leave room for at "
        "least one generated token",
        param,
        "context_length_exceeded",
    )


def longest_token_chars(tokenizer) -> int:
    """Characters of the vocabulary's longest token string: a byte-level token string has one character per
    byte, so it is never shorter than the text the token decodes to."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1)


class PromptBuilder:
    def __init__(self, tokenizer, max_model_len: int, workers: int = PROMPT_WORKERS) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.vocab_size = len(tokenizer)
        self.char_limit = max_model_len * longest_token_chars(tokenizer) * CHAR_SLACK
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsdeploy-prompt")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- checks on the parsed JSON, before validation -------------------------------------------
    def _check_chars(self, param: str, chars: int) -> None:
        if chars > self.char_limit:
            raise APIError(
                400,
                f"'{param}' holds {chars} characters, more than a {self.max_model_len}-token context "
                f"can take (at most {self.char_limit} characters are read)",
                param,
                "context_length_exceeded",
            )

    def precheck_chat(self, data: dict) -> None:
        messages = data.get("messages")
        if not isinstance(messages, list):
            return
        if len(messages) > MAX_MESSAGES:
            raise APIError(
                400,
                f"'messages': at most {MAX_MESSAGES} messages per request, got {len(messages)}",
                "messages",
                "invalid_value",
            )
        chars = 0  # counting stops once the answer is clear (and after a bounded number of parts)
        parts = 0
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    chars += len(text) if isinstance(text, str) else 0
                    parts += 1
                    if chars > self.char_limit or parts > self.char_limit:
                        break
            if chars > self.char_limit or parts > self.char_limit:
                break
        self._check_chars("messages", chars)

    def precheck_prompt(self, data: dict, param: str = "prompt") -> None:
        prompt = data.get(param)
        if isinstance(prompt, str):
            self._check_chars(param, len(prompt))
        elif isinstance(prompt, list) and len(prompt) >= self.max_model_len and not isinstance(prompt[0], str):
            raise context_exceeded(param, len(prompt), self.max_model_len)

    # ---- tokens, in the pool -------------------------------------------------------------------
    async def _in_pool(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _render(self, messages: list[dict]) -> tuple[str, list[int]]:
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # the model's Jinja template rejects this conversation
            raise APIError(
                400, f"'messages': the chat template rejected them: {exc}", "messages", "invalid_value"
            ) from exc
        return text, self._encode(text, "messages", add_special_tokens=False)

    def _encode(self, text: str, param: str, add_special_tokens: bool = True) -> list[int]:
        try:
            return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        except Exception as exc:  # text the tokenizer cannot take is the client's input, not a server fault
            raise APIError(
                400, f"'{param}' could not be tokenized: {type(exc).__name__}", param, "invalid_value"
            ) from exc

    async def chat(self, messages: list[dict]) -> tuple[str, list[int]]:
        """The rendered chat template and its token ids."""
        return await self._in_pool(self._render, messages)

    async def text(self, prompt: str | list[int], param: str = "prompt") -> list[int]:
        if isinstance(prompt, list):
            vocab = self.vocab_size
            bad = next((t for t in prompt if not 0 <= t < vocab), None)
            if bad is not None:
                raise APIError(400, f"'{param}': token ids must be in [0, {vocab}), got {bad}", param, "invalid_value")
            return list(prompt)
        if not prompt:
            raise APIError(400, f"'{param}' must not be empty", param, "invalid_value")
        return await self._in_pool(self._encode, prompt, param)
