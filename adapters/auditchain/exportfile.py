"""Exports with proofs (`keyledger audit export --proofs`) and their offline check (`verify-export`).

Each event line carries, beside what an auditor reads, its leaf and its RFC 9162
inclusion proof in the tree the last line signs:

    {"position": P, "version": V, ..., "leaf": {"index": I, "originator_id": "<uuid>",
     "topic": "<topic>", "state_sha256": "<hex>"}, "proof": ["<hex>", ...]}
    ...
    {"checkpoint": {origin, tree_size, root_hash, timestamp, signature}, "complete": true|false}

The leaf bytes are rebuilt from `position`, `version` and `leaf` (merkle.leaf_bytes). `complete`
is true when every event of the tree is a line (no --workspace or --since): the checker then
also requires leaf indexes 0, 1, 2, ... and can compare the tree of the first M lines with an
earlier checkpoint of size M. Checking needs only the file and the public key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from adapters.auditchain import merkle
from adapters.auditchain.auditlog import TreeReader
from adapters.auditchain.checkpoints import Checkpoint, CheckpointError
from adapters.auditchain.tree import Leaf, raw_state

KEEP_LEVEL = 8  # proof nodes at this level and above are kept for the whole export (a few per 256 events)


class ProofWriter:
    """Adds leaf and proof to export lines, batch by batch, in position order."""

    def __init__(self, recorder: TreeReader, checkpoint: Checkpoint) -> None:
        self.recorder = recorder
        self.size = checkpoint.tree_size
        self._leaves = self._all_leaves()
        self._leaf: Leaf | None = next(self._leaves, None)
        self._cache: dict[merkle.Node, bytes] = {}
        last = recorder.leaves(self.size - 2, 1) if self.size else []
        # Events after this one arrived after the checkpoint: not in the export.
        self.last_position = last[0].position if last else 0

    def _all_leaves(self) -> Iterator[Leaf]:
        after = -1
        while after + 1 < self.size and (batch := self.recorder.leaves(after, 1000)):
            yield from (leaf for leaf in batch if leaf.index < self.size)
            after = batch[-1].index

    def leaf_of(self, position: int) -> Leaf | None:
        while self._leaf is not None and self._leaf.position < position:
            self._leaf = next(self._leaves, None)
        return self._leaf if self._leaf is not None and self._leaf.position == position else None

    def decorate(self, batch: list[tuple[Notification, dict[str, Any]]]) -> None:
        plans: list[tuple[dict[str, Any], Leaf | None, list[list[merkle.Node]]]] = []
        for notification, entry in batch:
            leaf = self.leaf_of(notification.id)
            entry["leaf"] = {
                "index": leaf.index if leaf else None,
                "originator_id": str(notification.originator_id),
                "topic": notification.topic,
                "state_sha256": merkle.state_digest(raw_state(notification.state)).hex(),
            }
            plans.append((entry, leaf, merkle.inclusion_plan(leaf.index, self.size) if leaf else []))
        needed = {node for _, _, plan in plans for element in plan for node in element} - self._cache.keys()
        if needed:
            self._cache.update(self.recorder.tree_nodes(needed))
        for entry, _, plan in plans:
            if any(node not in self._cache for element in plan for node in element):
                entry["proof"] = []  # the stored tree lost a node: the check will name this line
                continue
            entry["proof"] = [merkle.fold([self._cache[node] for node in element]).hex() for element in plan]
        self._cache = {node: h for node, h in self._cache.items() if node[0] >= KEEP_LEVEL}


def trailer(checkpoint: Checkpoint, complete: bool) -> dict[str, Any]:
    return {"checkpoint": checkpoint.to_json(), "complete": complete}


# --- the offline check -------------------------------------------------------


@dataclass(frozen=True)
class ExportVerdict:
    lines: int  # event lines checked
    checkpoint: Checkpoint | None
    bad_line: int | None  # 1-based line number of the first bad line
    detail: str | None

    @property
    def ok(self) -> bool:
        return self.bad_line is None


class ExportFormatError(CheckpointError):
    title = "Invalid export file"


def _last_line(path: Path) -> tuple[int, str]:
    number, last = 0, ""
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):  # noqa: B007 - the last one is wanted
            if line.strip():
                last = line
    return number, last


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    with path.open(encoding="utf-8") as file:
        yield from enumerate(file, 1)


def _leaf_hash(entry: dict[str, Any]) -> tuple[int | None, bytes]:
    leaf = entry["leaf"]
    state = bytes.fromhex(leaf["state_sha256"])
    if len(state) != merkle.HASH_SIZE:
        raise ValueError("state_sha256 is not 32 bytes")
    data = merkle.leaf_bytes(
        int(entry["position"]), UUID(leaf["originator_id"]), int(entry["version"]), str(leaf["topic"]), state
    )
    index = leaf["index"]
    return (int(index) if index is not None else None), merkle.leaf_hash(data)


def verify_export(path: Path, public_key: bytes, after: Checkpoint | None = None) -> ExportVerdict:
    """Check an export with proofs; names the first bad line. Reads the file twice, in constant memory."""
    try:
        total, last = _last_line(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ExportFormatError(f"cannot read {path}: {error}") from None
    try:
        trailer_json = json.loads(last) if last else None
        checkpoint = Checkpoint.from_json(trailer_json["checkpoint"] if isinstance(trailer_json, dict) else None)
        complete = bool(trailer_json.get("complete")) if isinstance(trailer_json, dict) else False
    except (ValueError, KeyError, TypeError, CheckpointError):
        return ExportVerdict(0, None, total or 1, "the last line is not the signed tree head of an export --proofs")
    if not checkpoint.verify(public_key):
        return ExportVerdict(0, checkpoint, total, "the signed tree head's signature does not hold for this key")
    if after is not None:
        if not after.verify(public_key):
            return ExportVerdict(0, checkpoint, total, "the earlier checkpoint is not signed by this key")
        if after.tree_size > checkpoint.tree_size:
            detail = (
                f"the export's tree has {checkpoint.tree_size} events but the earlier checkpoint already signed "
                f"{after.tree_size}: the tail of the log was removed"
            )
            return ExportVerdict(0, checkpoint, total, detail)
        if not complete and after.tree_size:
            raise ExportFormatError(
                "--after needs a complete export (without --workspace or --since): a filtered one cannot show "
                "that the log extends the earlier checkpoint"
            )
    frontier = merkle.Frontier.empty()
    previous_index = -1
    lines = 0
    for number, text in _lines(path):
        if number == total or not text.strip():
            continue
        try:
            entry = json.loads(text)
            index, leaf = _leaf_hash(entry)
            proof = [bytes.fromhex(h) for h in entry["proof"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            return ExportVerdict(lines, checkpoint, number, "not an event line of an export --proofs")
        position = entry.get("position")
        if index is None:
            return ExportVerdict(lines, checkpoint, number, f"the event at position {position} is not in the tree")
        if index <= previous_index or (complete and index != previous_index + 1):
            what = "missing before it" if index > previous_index + 1 else "repeated or out of order"
            detail = f"leaf {index} (position {position}) follows leaf {previous_index}: events are {what}"
            return ExportVerdict(lines, checkpoint, number, detail)
        if not merkle.verify_inclusion(index, checkpoint.tree_size, leaf, proof, checkpoint.root_hash):
            detail = f"the event at position {position} is not in the signed tree (edited, moved or inserted)"
            return ExportVerdict(lines, checkpoint, number, detail)
        previous_index, lines = index, lines + 1
        if complete:
            frontier.append(leaf)
            if after is not None and frontier.size == after.tree_size and frontier.root() != after.root_hash:
                detail = (
                    f"the first {after.tree_size} events (lines 1 to {number}) do not form the tree of the earlier "
                    "checkpoint: the log was rewritten (and re-signed) at or before this line"
                )
                return ExportVerdict(lines, checkpoint, number, detail)
    if complete and frontier.size != checkpoint.tree_size:
        detail = (
            f"the file holds {frontier.size} events but its signed tree has {checkpoint.tree_size}: "
            "the last events were removed"
        )
        return ExportVerdict(lines, checkpoint, total, detail)
    return ExportVerdict(lines, checkpoint, None, None)
