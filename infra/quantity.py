"""The Kubernetes resource quantity (``200Gi``, ``500k``, ``1.5``, ``12e6``), declared once.

Every place that checks a quantity uses :data:`QUANTITY_PATTERN`: the stack config
(``storageSize``), the chart options (``model_cache_size``) and the chart's own
``values.schema.json`` (``$defs.quantity``, whose pattern a test holds equal to this one).

The grammar is Kubernetes' own, from the comment on ``type Quantity`` in
k8s.io/apimachinery/pkg/api/resource/quantity.go::

    <quantity>        ::= <signedNumber><suffix>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <sign>            ::= "+" | "-"
    <signedNumber>    ::= <number> | <sign><number>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>

so ``500k`` is a quantity and ``500K`` is not (``k`` is the only lower-case decimal multiple,
"I didn't choose the capitalization", says the comment). One narrowing, where the grammar is
looser than the parser beside it: ``parseQuantityString`` reads an exponent as an optional sign
and digits only, so ``ParseQuantity("1e1.5")`` fails; the exponent here is an integer too.
No white space anywhere: the parser has none.

The pattern is written for both regex dialects that read it: Python's ``re`` (here, and the
``jsonschema`` tests) and Go's RE2 (Helm validates values.schema.json with it); so no look-around.
"""

from __future__ import annotations

import re

_NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_BINARY_SI = r"[KMGTPE]i"
_DECIMAL_SI = r"[numkMGTPE]"
_DECIMAL_EXPONENT = r"[eE][+-]?[0-9]+"
QUANTITY_PATTERN = rf"^[+-]?{_NUMBER}({_BINARY_SI}|{_DECIMAL_SI}|{_DECIMAL_EXPONENT})?$"
# What the error messages say is allowed.
QUANTITY_RULE = (
    "a Kubernetes quantity such as 200Gi, 500M or 1.5Ti "
    "(a number, then one of Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent such as e3)"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)


def is_quantity(text: str) -> bool:
    """Whether ``text`` is a Kubernetes quantity (the whole string: a trailing newline is not)."""
    return _QUANTITY.fullmatch(text) is not None
