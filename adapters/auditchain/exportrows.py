"""Export entries straight from stored rows: each event's stored JSON decoded once, no domain event built.

The reference is `domain.auditlog.describe` of the event the library's mapper makes (`reference` below);
`Describer` gives the same entry, byte for byte once encoded, for every event it fully understands:
a topic's current class version, the library's JSON transcodings of UUIDs and times, and times stored
in UTC within years 1970-9999. Anything else (an older class version to upcast, another transcoding,
JSON that msgspec reads differently, such as NaN or a lone surrogate) goes to the reference, so
unusual rows cost as much as before and no more. Tests compare both on stores with every event type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import resolve_topic

from domain.alerts import Alert
from domain.auditlog import ENVELOPE, EventInfo, describe
from domain.credentials import fingerprint
from domain.imports import SecretClaim
from domain.keyinfo import parse_meta
from domain.keys import ApiKey
from domain.timefmt import to_rfc3339
from domain.workspace import Workspace

Entry = dict[str, Any]  # an export line's JSON, ready to encode


class StoredRow(NamedTuple):
    """A stored event as read for an export: its position and columns as stored."""

    position: int
    originator_id: str  # as stored (hex on SQLite, text on PostgreSQL): `uuid_text` gives str(UUID)
    originator_version: int
    topic: str
    state: bytes


@lru_cache(maxsize=16384)  # bounded: an export of many aggregates stays in constant memory
def uuid_text(value: str) -> str:
    """str(UUID(value)), as the mapper and the entry make it (hex from SQLite, text from PostgreSQL)."""
    return str(UUID(value))


def entry_of(position: int | None, info: EventInfo) -> Entry:
    """An event as the CLI prints it; JSON-ready, so an export encodes its lines with no call back per value."""
    return {
        "position": position,
        "occurred_at": to_rfc3339(info.occurred_at),
        "type": info.type,
        "workspace_id": None if info.workspace_id is None else str(info.workspace_id),
        "key_id": None if info.key_id is None else str(info.key_id),
        "actor": info.actor,
        "version": info.version,
        "data": info.data,
    }


def reference(mapper: Mapper[UUID]) -> Callable[[StoredRow], tuple[Entry, datetime]]:
    """The entry of a row through the library's mapper and `describe` (and the event's time)."""

    def entry(row: StoredRow) -> tuple[Entry, datetime]:
        stored = StoredEvent(UUID(row.originator_id), row.originator_version, row.topic, row.state)
        info = describe(mapper.to_domain_event(stored))
        return entry_of(row.position, info), info.occurred_at

    return entry


class _Unusual(Exception):
    """A row the fast path leaves to the reference."""


_decode = msgspec.json.decode
_from_iso = datetime.fromisoformat
# What datetime.isoformat() writes for a UTC time: exactly that text is its RFC 3339 form with "Z".
_UTC_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00")
_KEY, _ALERT, _WORKSPACE, _CLAIM, _OTHER = range(5)
_ABSENT = object()


def _time(value: Any) -> tuple[str, datetime]:
    """A transcoded time's RFC 3339 text (to_rfc3339 of the decoded datetime) and the datetime."""
    if type(value) is not dict or len(value) != 2 or value.get("_type_") != "datetime_iso":
        raise _Unusual
    text = value["_data_"]
    moment = _from_iso(text)  # also what rejects a malformed time, as the mapper would
    match = _UTC_ISO.fullmatch(text)
    # isoformat() drops a zero fraction; a year before 1970 is clamped.
    if match is not None and text >= "1970" and (match.group(1) is None) == (moment.microsecond == 0):
        return text[:-6] + "Z", moment
    return to_rfc3339(moment) or "", moment


def _plain(value: Any) -> Any:
    """`_jsonable` of the value the library's transcoder would have decoded from this raw JSON value."""
    kind = type(value)
    if kind is str or kind is int or value is None or kind is bool or kind is float:
        return value
    if kind is list:
        return [_plain(item) for item in value]
    if kind is dict:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            name = value["_type_"]
            if name == "uuid_hex" and type(value["_data_"]) is str:
                return uuid_text(value["_data_"])
            if name == "datetime_iso":
                return _time(value)[0]
            raise _Unusual  # another transcoding (or an unknown one): the reference decides
        return {key: _plain(item) for key, item in value.items()}
    raise _Unusual


def _id_text(value: Any) -> str | None:
    """The entry's text of an id attribute (a transcoded UUID or None)."""
    if value is None:
        return None
    if type(value) is dict and len(value) == 2 and value.get("_type_") == "uuid_hex" and type(value["_data_"]) is str:
        return uuid_text(value["_data_"])
    raise _Unusual


class _Topic(NamedTuple):
    cls: type
    name: str
    kind: int
    class_version: int


class Describer:
    """Entries of stored rows, as `reference` gives them, at a fraction of the cost."""

    def __init__(self, reference: Callable[[StoredRow], tuple[Entry, datetime]]) -> None:
        self.reference = reference
        self._topics: dict[str, _Topic | None] = {}  # None: always the reference

    def entry(self, row: StoredRow) -> tuple[Entry, datetime]:
        if row.topic not in self._topics:
            self._topics[row.topic] = _topic(row.topic)
        topic = self._topics[row.topic]
        if topic is None:
            return self.reference(row)
        try:
            return self._fast(row, topic)
        except Exception:  # the reference gives the answer (or the error) for this row
            return self.reference(row)

    @staticmethod
    def _fast(row: StoredRow, topic: _Topic) -> tuple[Entry, datetime]:
        if type(row.state) is not bytes:
            raise _Unusual  # an edited SQLite row can hold text: the mapper's decoding decides
        state = _decode(row.state)
        if type(state) is not dict:
            raise _Unusual
        if state.pop("class_version", 1) < topic.class_version:
            raise _Unusual  # the mapper upcasts it
        occurred_at, moment = _time(state["timestamp"])
        actor = _attribute(state, topic.cls, "actor", None)
        if actor is not None and type(actor) is not str:
            raise _Unusual
        key_id, workspace_id = _subject(row, topic, state)
        data: dict[str, Any] = {}
        for name, value in state.items():
            if name in ENVELOPE or (name == "workspace_id" and value is None):
                continue
            if name == "secret_digest":
                if type(value) is not str:
                    raise _Unusual
                data["secret_fingerprint"] = fingerprint(value)
            elif name == "meta" and type(value) is str:
                data[name] = parse_meta(value)
            elif "digest" in name or "secret" in name:
                continue
            else:
                data[name] = _plain(value)
        entry = {
            "position": row.position,
            "occurred_at": occurred_at,
            "type": topic.name,
            "workspace_id": workspace_id,
            "key_id": key_id,
            "actor": actor,
            "version": row.originator_version,
            "data": data,
        }
        return entry, moment


def _topic(topic: str) -> _Topic | None:
    try:
        cls = resolve_topic(topic)
    except Exception:
        return None
    if not isinstance(cls, type) or any(
        hasattr(getattr(cls, name, None), "__set__") for name in ("actor", "key_id", "workspace_id", "timestamp")
    ):
        return None  # a property would shadow the stored value: leave such classes to the reference
    version = getattr(cls, "class_version", 1)
    if type(version) is not int:
        return None
    if issubclass(cls, ApiKey.Event):
        kind = _KEY
    elif issubclass(cls, Alert.Event):
        kind = _ALERT
    elif issubclass(cls, Workspace.Event):
        kind = _WORKSPACE
    elif issubclass(cls, SecretClaim.SecretClaimed):
        kind = _CLAIM
    else:
        kind = _OTHER
    return _Topic(cls, cls.__name__, kind, version)


def _attribute(state: dict[str, Any], cls: type, name: str, default: Any = _ABSENT) -> Any:
    """getattr(event, name[, default]) of the event the mapper would make from this state."""
    if name in state:
        return state[name]
    found = getattr(cls, name, default)
    if found is _ABSENT:
        raise _Unusual  # AttributeError in the reference
    return found


def _subject(row: StoredRow, topic: _Topic, state: dict[str, Any]) -> tuple[str | None, str | None]:
    """(key id, workspace id) as `describe` names them, as text."""
    kind, cls = topic.kind, topic.cls
    if kind == _KEY:
        return uuid_text(row.originator_id), _id_text(_attribute(state, cls, "workspace_id"))
    if kind in (_ALERT, _CLAIM):
        return _id_text(_attribute(state, cls, "key_id")), _id_text(_attribute(state, cls, "workspace_id"))
    if kind == _WORKSPACE:
        return _id_text(_attribute(state, cls, "key_id", None)), uuid_text(row.originator_id)
    return None, None
