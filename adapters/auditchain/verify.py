"""Walking events and chain links together, in position order, to find the first bad position."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from eventsourcing.persistence import Notification

from adapters.auditchain.links import GENESIS_POSITION, ChainKey, Link

BATCH = 1000


class Problem(StrEnum):
    NO_CHAIN = "no-chain"
    GENESIS = "genesis"
    ALTERED = "altered"
    REMOVED = "removed"
    INSERTED = "inserted"
    TRUNCATED = "truncated"
    SNAPSHOT = "snapshot"
    NO_TREE = "no-tree"
    CHECKPOINT = "checkpoint"  # a checkpoint whose signature does not hold
    REWRITTEN = "rewritten"  # events and tree rewritten together: a prefix no longer forms a signed tree


@dataclass(frozen=True)
class Finding:
    position: int
    problem: Problem
    detail: str


@dataclass(frozen=True)
class Verdict:
    events: int  # events whose link checked out
    head: Link | None  # the last verified link: export it to anchor a later verify
    finding: Finding | None

    @property
    def ok(self) -> bool:
        return self.finding is None


@runtime_checkable
class ChainReader(Protocol):
    def select_links(self, gt: int, limit: int) -> list[Link]: ...

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]: ...


def _events(reader: ChainReader) -> Iterator[Notification]:
    after = 0
    while batch := reader.select_notifications(after, BATCH, inclusive_of_start=False):
        yield from batch
        after = batch[-1].id


def _links(reader: ChainReader) -> Iterator[Link]:
    after = GENESIS_POSITION - 1
    while batch := reader.select_links(after, BATCH):
        yield from batch
        after = batch[-1].position


def verify_chain(
    reader: ChainReader,
    key: ChainKey,
    anchor: Link | None = None,
    progress: Callable[[int], None] = lambda position: None,
) -> Verdict:
    """Check every stored event against its link; stop at the first disagreement.

    `anchor` is a head exported by an earlier verify: the chain must still reach it
    unchanged, which catches a tail removed from both tables.
    """
    events, links = _events(reader), _links(reader)
    event, link = next(events, None), next(links, None)
    if link is None:
        if event is None:
            return _with_anchor(Verdict(0, None, None), anchor, anchor_seen=False)
        return Verdict(0, None, Finding(event.id, Problem.NO_CHAIN, _NO_CHAIN))
    if link.position != GENESIS_POSITION or not key.matches(key.genesis(), link.mac):
        return Verdict(0, None, Finding(GENESIS_POSITION, Problem.GENESIS, _GENESIS))
    previous, link = link, next(links, None)
    count, anchor_seen = 0, anchor is not None and anchor.position == GENESIS_POSITION
    while event is not None or link is not None:
        if event is not None and (link is None or event.id < link.position):
            detail = f"the event at position {event.id} has no chain link: it was inserted outside keyledger"
            return Verdict(count, previous, Finding(event.id, Problem.INSERTED, detail))
        if link is not None and (event is None or link.position < event.id):
            if event is None:
                detail = (
                    f"the events from position {link.position} on are missing but the chain reaches "
                    f"position {_last(link, links)}: the tail of the store was removed"
                )
                return Verdict(count, previous, Finding(link.position, Problem.TRUNCATED, detail))
            detail = f"the event at position {link.position} was removed (its chain link remains)"
            return Verdict(count, previous, Finding(link.position, Problem.REMOVED, detail))
        if event is None or link is None:  # unreachable: the two branches above cover it
            break
        expected = key.link(
            previous.mac,
            event.id,
            event.originator_id,
            event.originator_version,
            event.topic,
            _raw(event.state),
        )
        if not key.matches(expected, link.mac):
            detail = (
                f"the event at position {event.id} does not match its chain link: it was edited or moved "
                f"here, or events after position {previous.position} were removed with their links"
            )
            return Verdict(count, previous, Finding(event.id, Problem.ALTERED, detail))
        if anchor is not None and link.position == anchor.position:
            if not key.matches(anchor.mac, link.mac):
                detail = f"the chain link at position {link.position} differs from the anchor given"
                return Verdict(count, previous, Finding(link.position, Problem.ALTERED, detail))
            anchor_seen = True
        previous, count = link, count + 1
        progress(event.id)
        event, link = next(events, None), next(links, None)
    return _with_anchor(Verdict(count, previous, None), anchor, anchor_seen)


def _with_anchor(verdict: Verdict, anchor: Link | None, anchor_seen: bool) -> Verdict:
    if anchor is None or anchor_seen:
        return verdict
    end = verdict.head.position if verdict.head else GENESIS_POSITION
    detail = (
        f"the anchor names position {anchor.position} but the chain has no such link (it ends at "
        f"position {end}): the tail of the store was removed, or the anchor is from another store"
    )
    return Verdict(verdict.events, verdict.head, Finding(anchor.position, Problem.TRUNCATED, detail))


def _raw(state: object) -> bytes:
    # An edit can change a column's type (SQLite's replace() turns a BLOB into TEXT): still bytes to MAC.
    return state if isinstance(state, bytes) else str(state).encode("utf-8")


def _last(link: Link, links: Iterator[Link]) -> int:
    last = link.position
    for later in links:
        last = later.position
    return last


_NO_CHAIN = (
    "the store has events but no audit chain: they were written without KEYLEDGER_AUDIT_KEY "
    "(start keyledger once with the key set to chain them), or the chain table was emptied"
)
_GENESIS = (
    "the chain's genesis link does not match KEYLEDGER_AUDIT_KEY: the key is not the one the chain was "
    "written with, or the genesis link was removed or altered"
)
