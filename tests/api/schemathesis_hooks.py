"""Schemathesis hooks of `test_openapi_conformance`: the rules JSON Schema cannot state.

Schemathesis checks that every request the OpenAPI document calls valid is accepted. Three rules of
the domain compare a value with another one, with stored state or with the clock, which a schema
cannot express (the document says them in words): an enterprise plan's `requests_per_minute` may not
exceed its `requests_per_day`, a key's own limits may not exceed its plan's (valid cases ask for 1),
and a key's `expires_at` lies in the future. Cases generated as valid are
changed, just before they are sent, into requests that keep those rules; cases generated as invalid
are left as they are. A webhook's URL must name a public address, also through what its host name
resolves to (SPEC 8.3): a valid case's URL is pointed at a public address, written as such.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis

# The form of the document's `date-time` values, with an offset.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _past(value: Any) -> bool:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        return False
    text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", value.upper())  # fromisoformat reads microseconds at most
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment <= datetime.now(UTC) + timedelta(minutes=1)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    """Just before sending (in every phase, after stateful links filled values in), keep the two rules."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return
    body = case.body
    minute, day = body.get("requests_per_minute"), body.get("requests_per_day")
    if body.get("plan") == "enterprise" and _number(minute) and _number(day) and minute > day:
        body["requests_per_minute"], body["requests_per_day"] = day, minute
    if case.method.upper() == "POST" and case.path.endswith("/webhooks") and isinstance(body.get("url"), str):
        body["url"] = "https://93.184.215.14/hook"  # nothing listens: deliveries fail, in the background
    if case.operation.path.endswith("/keys/{key}/limits"):
        for name in ("requests_per_minute", "requests_per_day"):
            if _number(body.get(name)) and body[name] > 1:
                body[name] = 1
    if _past(body.get("expires_at")):
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
