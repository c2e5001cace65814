"""Backend-independent rules for extending the chain inside an insert transaction.

A recorder, holding the store's write lock, reads the genesis link and the head
(the link of the highest position), then asks `start` where to chain from and
`extend` for the links of the events it just stored, in position order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from adapters.auditchain.links import GENESIS_POSITION, AuditChainError, ChainKey, Link
from domain.errors import InvalidInput

# Environment keys the factories read (the application's env; bootstrap sets them).
ENV_KEY = "AUDIT_CHAIN_KEY"
ENV_STARTUP_CHECK = "AUDIT_CHAIN_STARTUP_CHECK"


class AuditKeyError(InvalidInput):
    """KEYLEDGER_AUDIT_KEY is missing or is not the key the store's chain was written with."""

    title = "Invalid audit key"


class StoredLike(Protocol):
    @property
    def originator_id(self) -> UUID | str: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


@dataclass(frozen=True)
class ChainStart:
    new_links: list[Link]  # the genesis link, when the chain is being started
    previous: Link  # what the next event chains from
    needs_backfill: bool  # a new chain must first cover the events already stored


def start(key: ChainKey, genesis: Link | None, head: Link | None) -> ChainStart:
    if genesis is None:
        if head is not None:
            raise AuditChainError(
                "the audit chain has lost its genesis link: the store was altered; run `keyledger audit verify`"
            )
        first = Link(GENESIS_POSITION, key.genesis())
        return ChainStart([first], first, needs_backfill=True)
    if not key.matches(key.genesis(), genesis.mac):
        raise AuditKeyError("KEYLEDGER_AUDIT_KEY is not the key this store's audit chain was written with")
    return ChainStart([], head or genesis, needs_backfill=False)


def extend(key: ChainKey, previous: Link, events: Iterable[tuple[int, StoredLike]]) -> list[Link]:
    """Links for events given in ascending position, each chained to the one before."""
    links: list[Link] = []
    for position, event in events:
        if position <= previous.position:
            # SQLite reuses the rowid of a deleted last row: refuse rather than fork the chain.
            raise AuditChainError(
                f"the audit chain already reaches position {previous.position} but a new event was "
                f"stored at position {position}: stored events were removed; run `keyledger audit verify`"
            )
        mac = key.link(previous.mac, position, event.originator_id, event.originator_version, event.topic, event.state)
        previous = Link(position, mac)
        links.append(previous)
    return links


def check_at_startup(key: ChainKey | None, genesis: Link | None, has_links: bool) -> None:
    """Refuse to start writing with a missing or wrong key on a store that has a chain."""
    if key is None:
        if has_links:
            raise AuditKeyError(
                "KEYLEDGER_AUDIT_KEY is not set but this store has an audit chain; set it to the key the "
                "chain was written with (events stored without it would break the chain)"
            )
        return
    if genesis is not None and not key.matches(key.genesis(), genesis.mac):
        raise AuditKeyError("KEYLEDGER_AUDIT_KEY is not the key this store's audit chain was written with")


def key_from_env(value: str | None) -> ChainKey | None:
    return ChainKey.from_setting(value) if value else None


class ChainRecorder(Protocol):
    """What the chained recorders of each backend offer beyond the library's recorder."""

    chain_key: ChainKey | None

    def select_links(self, gt: int, limit: int) -> list[Link]: ...

    def seal(self) -> None: ...


def open_chain(recorder: ChainRecorder, writes: bool) -> None:
    """At start-up of a process that writes: refuse a missing or wrong key, and start the chain
    over the events already stored. Audit tools only read: they skip both."""
    if not writes:
        return
    first = recorder.select_links(gt=GENESIS_POSITION - 1, limit=1)
    genesis = first[0] if first and first[0].position == GENESIS_POSITION else None
    check_at_startup(recorder.chain_key, genesis, has_links=bool(first))
    if recorder.chain_key is not None and not first:
        recorder.seal()


def chain_env(audit_key: str | None) -> dict[str, str]:
    """The library env entries that hand the factories the key (empty: no chain is written).

    Prefixed with the application's name so it wins over anything inherited from os.environ.
    """
    return {f"KEYLEDGER_{ENV_KEY}": audit_key or ""}
