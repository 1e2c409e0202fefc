"""Incremental detokenization and stop strings with the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from inference.server.engine.text_stream import TextStream


def _run(tokenizer, text: str, stop: list[str]) -> tuple[list[str], TextStream]:
    stream = TextStream(tokenizer, stop)
    pieces = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        pieces.append(stream.push(token))
        if stream.stopped:
            break
    pieces.append(stream.finish())
    return pieces, stream


def test_pieces_join_to_the_decoded_text(tokenizer):
    text = "Héllo wörld — 你好, emoji 🎉 done."
    pieces, stream = _run(tokenizer, text, [])
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (["Paris"], "The capital of France is "),
        ([" is", "Paris"], "The capital of France"),
        (["France is Pa"], "The capital of "),
        (["nowhere"], "The capital of France is Paris."),
    ],
)
def test_stop_strings_cut_and_are_never_shown(tokenizer, stop, expected):
    pieces, stream = _run(tokenizer, "The capital of France is Paris.", stop)
    assert "".join(pieces) == expected
    assert stream.stopped is (expected != "The capital of France is Paris.")


def test_partial_stop_string_is_held_back_then_released(tokenizer):
    stream = TextStream(tokenizer, ["France!"])
    shown = "".join(stream.push(t) for t in tokenizer("I love France", add_special_tokens=False)["input_ids"])
    assert shown == "I love "  # "France" might still become "France!"
    assert stream.push(tokenizer(".", add_special_tokens=False)["input_ids"][0]) == "France."
    assert stream.finish() == ""
