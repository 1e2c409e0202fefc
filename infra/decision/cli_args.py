"""Argument types for ``dsdeploy cost`` / ``report`` / ``compliance``: each bad value is one line naming the option.

argparse calls a type with the text only; it prefixes the message with ``argument --option:``. Ranges
(> 0, <= 1, ...) are checked once, by the request models; these types reject what is not a usable
number at all (text, ``nan``, ``inf``) and empty strings, which would otherwise fall back to a default.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn


def finite_number(text: str) -> float:
    """A finite decimal number (``1e6`` allowed); never ``nan`` / ``inf``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a finite number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; give a finite number")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of tokens") from None


def non_empty(text: str) -> str:
    """A name or path; an empty or blank value is an error, not the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty; leave the option out to use the default")
    return text


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad argument as one line on stderr (exit 2) instead of usage + message."""

    def error(message: str) -> NoReturn:
        print(f"error: {message} (see {parser.prog} --help)", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error  # type: ignore[method-assign]
    return parser
