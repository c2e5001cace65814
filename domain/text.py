"""Text as every backend can store it: one definition for names, reasons and endpoints.

PostgreSQL refuses NUL in text ("invalid byte sequence for encoding UTF8: 0x00") and
UTF-8 has no lone surrogates (`\\ud800` in JSON decodes to one), so such text is refused
where it enters (`check_text`). Text stored by older code that let NUL through is made
storable when a read model writes it (`storable_text`).
"""

from __future__ import annotations

import re

from domain.errors import InvalidInput

MAX_ENDPOINT_LENGTH = 200  # an endpoint as usage records it: `METHOD /path`, or verify's `endpoint`
MAX_REASON_LENGTH = 500

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def check_text(
    value: object,
    what: str,
    max_length: int,
    *,
    error: type[InvalidInput] = InvalidInput,
    controls: bool = False,
) -> str:
    """`value` as given, or `error` when it is not a string, too long, or holds what no backend stores.

    Without `controls`, control characters (tabs, newlines) are refused too.
    """
    if not isinstance(value, str):
        raise error(f"{what} must be a string")
    if len(value) > max_length:
        raise error(f"{what} must be at most {max_length} characters")
    if (_UNSTORABLE if controls else _CONTROL).search(value):
        raise error(
            f"{what} must not contain NUL or unpaired surrogates"
            if controls
            else f"{what} must not contain control characters or unpaired surrogates"
        )
    return value


def storable_text(value: str) -> str:
    """The text with NUL and unpaired surrogates replaced by U+FFFD (for values already stored)."""
    return _UNSTORABLE.sub("\ufffd", value)


def excerpt(text: object, length: int = 40) -> str:
    """At most `length` characters of an input, for an error message (never the whole of a huge one)."""
    shown = str(text)
    return shown if len(shown) <= length else shown[:length] + "..."
