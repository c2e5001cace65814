"""Checking the store against its Merkle tree and signed checkpoints, without KEYLEDGER_AUDIT_KEY.

Walks the events and the stored leaves together in position order, recomputing every
leaf from its event and the root at every checkpoint's size: the first event that
differs from its leaf, a leaf without its event, an event without a leaf, or a prefix
that no longer forms a signed tree names the first bad position.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from eventsourcing.persistence import Notification

from adapters.auditchain import merkle
from adapters.auditchain.auditlog import TreeReader
from adapters.auditchain.checkpoints import Checkpoint
from adapters.auditchain.tree import Leaf, raw_state
from adapters.auditchain.verify import ChainReader, Finding, Problem

BATCH = 1000


@dataclass(frozen=True)
class TreeVerdict:
    events: int  # leaves checked against their events
    checkpoint: Checkpoint | None  # the latest checkpoint the store was checked against
    finding: Finding | None


class AuditedStore(TreeReader, ChainReader, Protocol):
    """A recorder with the tree and the events."""


def _leaves(store: TreeReader) -> Iterator[Leaf]:
    after = -1
    while batch := store.leaves(after, BATCH):
        yield from batch
        after = batch[-1].index


def _events(store: ChainReader) -> Iterator[Notification]:
    after = 0
    while batch := store.select_notifications(after, BATCH, inclusive_of_start=False):
        yield from batch
        after = batch[-1].id


def verify_tree(
    store: AuditedStore,
    public_key: bytes,
    after: Checkpoint | None = None,
    progress: Callable[[int], None] = lambda position: None,
) -> TreeVerdict:
    """Check every event against its leaf and every prefix against the checkpoints of its size.

    `after` is a checkpoint kept outside the store (an auditor's): the store's tree must extend it.
    """
    checkpoints = [Checkpoint.from_json(json.loads(document)) for document in store.checkpoints()]
    for number, checkpoint in enumerate(checkpoints, 1):
        if not checkpoint.verify(public_key):
            detail = f"stored checkpoint #{number} (tree size {checkpoint.tree_size}) is not signed by this key"
            return TreeVerdict(0, None, Finding(0, Problem.CHECKPOINT, detail))
    if after is not None:
        if not after.verify(public_key):
            detail = "the earlier checkpoint given is not signed by this key"
            return TreeVerdict(0, None, Finding(0, Problem.CHECKPOINT, detail))
        checkpoints.append(after)
    by_size: dict[int, list[Checkpoint]] = defaultdict(list)
    for checkpoint in checkpoints:
        by_size[checkpoint.tree_size].append(checkpoint)
    latest = max(checkpoints[: len(checkpoints) - (after is not None)], key=lambda c: c.tree_size, default=None)

    frontier = merkle.Frontier.empty()
    unverified_from = 1  # the first position after the last prefix that matched a checkpoint
    last_position = 0
    events, leaves = _events(store), _leaves(store)
    event, leaf = next(events, None), next(leaves, None)
    count = 0

    def bad(position: int, problem: Problem, detail: str) -> TreeVerdict:
        return TreeVerdict(count, latest, Finding(position, problem, detail))

    if event is not None and leaf is None:
        detail = (
            "the store has events but no audit tree: it was written by older keyledger code (start keyledger "
            "or run `keyledger audit checkpoint` once to build it), or the tree's tables were emptied"
        )
        return TreeVerdict(0, latest, Finding(event.id, Problem.NO_TREE, detail))
    while event is not None or leaf is not None:
        if event is not None and (leaf is None or event.id < leaf.position):
            detail = (
                f"the event at position {event.id} has no leaf in the audit tree: it was inserted outside keyledger"
            )
            return bad(event.id, Problem.INSERTED, detail)
        if leaf is None:  # unreachable: the branch above takes every event without a leaf
            break
        if event is None or leaf.position < event.id:
            if event is None:
                detail = f"the events from position {leaf.position} on are missing but the audit tree holds them"
                return bad(leaf.position, Problem.TRUNCATED, detail)
            detail = f"the event at position {leaf.position} was removed (its leaf remains in the audit tree)"
            return bad(leaf.position, Problem.REMOVED, detail)
        if leaf.index != frontier.size:
            detail = f"the audit tree has no leaf {frontier.size} (the next holds position {leaf.position})"
            return bad(leaf.position, Problem.ALTERED, detail)
        computed = merkle.event_leaf_hash(
            event.id, event.originator_id, event.originator_version, event.topic, raw_state(event.state)
        )
        if computed != leaf.hash:
            detail = f"the event at position {event.id} does not match its leaf: it was edited or moved here"
            return bad(event.id, Problem.ALTERED, detail)
        frontier.append(computed)
        count += 1
        for checkpoint in by_size.get(frontier.size, ()):
            if checkpoint.root_hash != frontier.root():
                if checkpoint is after:
                    # The store's own checkpoints may have been re-signed with a stolen key: trust none of them.
                    detail = (
                        f"the first {frontier.size} events (to position {event.id}) do not form the tree of the "
                        "earlier checkpoint given: the log was rewritten and re-signed; which of these events "
                        "changed, the tree cannot tell"
                    )
                    return bad(1, Problem.REWRITTEN, detail)
                detail = (
                    f"the first {frontier.size} events (to position {event.id}) do not form the tree the "
                    f"checkpoint of {checkpoint.timestamp} signed: events from position {unverified_from} on "
                    "were rewritten together with the tree"
                )
                return bad(unverified_from, Problem.REWRITTEN, detail)
        if frontier.size in by_size:
            unverified_from = event.id + 1
        last_position = event.id
        progress(event.id)
        event, leaf = next(events, None), next(leaves, None)
    for checkpoint in sorted(checkpoints, key=lambda c: c.tree_size):
        if checkpoint.tree_size > frontier.size:
            detail = (
                f"a checkpoint signs {checkpoint.tree_size} events but the store holds {frontier.size}: "
                "the tail of the store was removed"
            )
            return bad(last_position + 1, Problem.TRUNCATED, detail)
    if frontier.size and merkle.root_of(frontier.size, store.tree_nodes) != frontier.root():
        detail = "the stored tree's interior nodes do not match its leaves: proofs served from it are wrong"
        return bad(0, Problem.ALTERED, detail)
    return TreeVerdict(count, latest, None)
