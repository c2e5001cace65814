"""What a key's owner says about it (SPEC 8.1): free-form `meta` and an `owner_id`.

`meta` travels in events as its compact JSON text, not as an object: the event store's
transcoder reads any object of exactly the keys `_type_` and `_data_` as one of its own
encodings, so a caller's object stored as such could make the key unreadable.
"""

from __future__ import annotations

import json
import re
from typing import Any

from domain.errors import InvalidMeta, InvalidOwner
from domain.text import check_text

MAX_META_BYTES = 4096
MAX_OWNER_ID_LENGTH = 200


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: Any) -> None:
    """No string in `value` (keys too) holds an unpaired surrogate: no UTF-8 answer could carry it."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise InvalidMeta("meta must not contain unpaired surrogates")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)


def meta_text(meta: object) -> str | None:
    """The compact JSON text of a valid `meta` (None for none); InvalidMeta otherwise."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise InvalidMeta("meta must be a JSON object")
    _storable(meta)
    try:
        text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidMeta("meta must hold JSON values only") from None
    if len(text.encode("utf-8")) > MAX_META_BYTES:
        raise InvalidMeta(f"meta must be at most {MAX_META_BYTES} bytes serialised as JSON")
    # Kept escaped to ASCII: a NUL in a string is then `\u0000`, text every backend stores.
    return json.dumps(meta, separators=(",", ":"), allow_nan=False)


def parse_meta(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))


def check_owner_id(owner_id: object) -> str | None:
    if owner_id is None:
        return None
    text = check_text(owner_id, "owner_id", MAX_OWNER_ID_LENGTH, error=InvalidOwner)
    if not text:
        raise InvalidOwner(f"owner_id must be 1 to {MAX_OWNER_ID_LENGTH} characters")
    return text
