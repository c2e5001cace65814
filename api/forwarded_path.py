"""The path a backend will serve, as forward-auth must judge it (RFC 3986 section 6.2.2, SPEC 8.5).

A gateway forwards the raw request URI; the backend behind it decodes and normalises it before
routing. Judging the raw text would let `/nodes/../events` pass as `read:nodes` and reach
`/events`. So: percent-encoded unreserved characters are decoded (`%2e` is `.`), dot segments are
removed (a segment's `;` parameters ignored when deciding whether it is `.` or `..`, since some
servers strip them), and the first segment of the result names the resource.

Encoded `/` and `\\` (and a raw `\\`) are left alone by RFC 3986 but decoded by some backends. If
decoding them too would give another first segment, no answer is safe: the request is refused.
"""

from __future__ import annotations

import re

_UNRESERVED = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")
_SEPARATORS = re.compile(r"%(2[fF]|5[cC])|\\")


# What the OpenAPI document admits for X-Forwarded-Uri: URIs whose first segment nothing above can
# empty or change. Each segment holds a character other than `.` before any `;` parameter (so it is
# no dot segment), no `\\`, and no escape but of unreserved characters other than `.`, or of
# characters outside the path syntax (`%2E`, `%2F` and `%5C` are left out); the first is not empty.
# The server judges more than this (it resolves dot segments, decodes `%2E`): a safe subset.
_ESCAPE = "%(?:[0-13-46-9A-Fa-f][0-9A-Fa-f]|2[0-9A-Da-d]|5[0-9ABD-Fabd-f])"
_SEGMENT = f"\\.*(?:[^/?#%\\\\.;\\x00-\\x20\\x7f]|{_ESCAPE})(?:[^/?#%\\\\.\\x00-\\x20\\x7f]|{_ESCAPE}|\\.)*"
FORWARDED_URI_PATTERN = f"^/?{_SEGMENT}(?:/(?:{_SEGMENT})?)*(?:[?#].*)?$"


class AmbiguousPath(ValueError):
    """Answered 400 (`api.problems`): the request itself is malformed, whatever the key."""


def _decode_unreserved(text: str) -> str:
    return _UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), text)


def _remove_dot_segments(path: str) -> list[str]:
    """The path's segments with `.` and `..` resolved (RFC 3986 section 5.2.4), parameters ignored for that."""
    kept: list[str] = []
    for segment in path.split("/")[1:]:
        name = segment.split(";", 1)[0]
        if name == ".":
            continue
        if name == "..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    return kept


def _first(segments: list[str]) -> str:
    return segments[0].split(";", 1)[0] if segments else ""


def normalise(uri: str) -> tuple[str, str]:
    """The normalised path (no query, no fragment) and its first segment; AmbiguousPath when unsafe."""
    path = uri.split("#", 1)[0].split("?", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    segments = _remove_dot_segments(_decode_unreserved(path))
    if _SEPARATORS.search(path):
        loose = _remove_dot_segments(_SEPARATORS.sub("/", _decode_unreserved(path)))
        if _first(loose) != _first(segments):
            raise AmbiguousPath("the forwarded path holds an encoded '/' or '\\' that would change its first segment")
    return "/" + "/".join(segments), _first(segments)
