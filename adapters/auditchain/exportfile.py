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

from adapters.auditchain import merkle
from adapters.auditchain.auditlog import TreeReader
from adapters.auditchain.checkpoints import Checkpoint, CheckpointError
from adapters.auditchain.exportrows import Entry, StoredRow, uuid_text
from adapters.auditchain.tree import Leaf, raw_state

_ENCODER = json.JSONEncoder()  # one for every line: json.dumps builds an encoder per call
SIBLING_WINDOW = 8192  # nodes of one level read at once
_MISSING = object()  # a proof element whose stored node is lost
_LOW = 4  # proof levels joined anew for every leaf


class ProofWriter:
    """Export lines with leaf and proof, batch by batch, in position order.

    The proofs are not computed leaf by leaf: walking the leaves in order, the sibling at level L
    changes only when the leaf index's bits from L up change, so each level's proof element is
    kept as JSON text and only the levels below the highest changed bit are redone (about two per
    leaf). A batch's siblings are read as one range per level. Equal to `merkle.inclusion_plan`
    folded over the stored nodes (tests check it).
    """

    def __init__(self, recorder: TreeReader, checkpoint: Checkpoint) -> None:
        self.recorder = recorder
        self.size = checkpoint.tree_size
        self._leaves = self._all_leaves()
        self._leaf: Leaf | None = next(self._leaves, None)
        self._levels = max(0, (self.size - 1).bit_length())  # proof levels: those where 2**L < size
        self._nodes: list[dict[int, bytes]] = [{} for _ in range(self._levels)]  # per level: index -> hash
        self._edges: dict[merkle.Node, Any] = {}  # right-edge siblings (folded runs), by (level, index)
        self._proof: list[Any] = [None] * self._levels  # per level: the element's JSON text, None when absent
        self._index: int | None = None  # the leaf `_proof` is for
        self._high: Any = None  # the joined text of the proof's levels from _LOW up (None: not yet made)
        self._topics: dict[str, str] = {}  # topic -> its JSON text
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

    def lines(self, batch: list[tuple[StoredRow, Entry]]) -> list[str]:
        """Each entry as its export line: its JSON with the leaf, then the proof."""
        leaves = [self.leaf_of(row.position) for row, _ in batch]
        indexes = [leaf.index for leaf in leaves if leaf is not None]
        if indexes:
            self._read_siblings(indexes[0], indexes[-1])
        lines = []
        for (row, entry), leaf in zip(batch, leaves, strict=True):
            # The JSON of {..., "leaf": {...}, "proof": [...]}, the last two written as text.
            index, proof = (leaf.index, self._proof_of(leaf.index)) if leaf is not None else ("null", "[]")
            digest = merkle.state_digest(raw_state(row.state)).hex()
            leaf_text = (
                f'{{"index": {index}, "originator_id": "{uuid_text(row.originator_id)}", '
                f'"topic": {self._topic_json(row.topic)}, "state_sha256": "{digest}"}}'
            )
            lines.append(f'{_ENCODER.encode(entry)[:-1]}, "leaf": {leaf_text}, "proof": {proof}}}')
        return lines

    def _topic_json(self, topic: str) -> str:
        if topic not in self._topics:
            self._topics[topic] = _ENCODER.encode(topic)
        return self._topics[topic]

    def _read_siblings(self, first: int, last: int) -> None:
        """Have the stored siblings of leaves `first` to `last` (complete subtrees only) at hand.

        Read a window of each level at a time: constant memory, and few reads of the low levels."""
        for level, known in enumerate(self._nodes):
            low, high = (first >> level) & ~1, min((last >> level) | 1, (self.size >> level) - 1)
            if low <= high and not (low in known and high in known):
                known.clear()  # those of earlier leaves are not needed again
                end = min(max(high, low + SIBLING_WINDOW - 1), (self.size >> level) - 1)
                known.update(self.recorder.tree_level(level, low, end))

    def _proof_of(self, index: int) -> str:
        redo = self._levels if self._index is None else (index ^ self._index).bit_length()
        self._index = index
        for level in range(min(redo, self._levels)):
            sibling = (index >> level) ^ 1
            start, end = sibling << level, (sibling + 1) << level
            if start >= self.size:
                self._proof[level] = None  # RFC 9162 promotes the node: no element at this level
            elif end <= self.size:
                node = self._nodes[level].get(sibling)
                self._proof[level] = _MISSING if node is None else f'"{node.hex()}"'
            else:
                self._proof[level] = self._edge(level, sibling, start)
        # The levels above the lowest few change once in 2**_LOW leaves: their text is joined then only.
        if redo > _LOW or self._high is None:
            high = [element for element in self._proof[_LOW:] if element is not None]
            self._high = _MISSING if _MISSING in high else ", ".join(high)
        elements = [element for element in self._proof[:_LOW] if element is not None]
        if self._high is _MISSING or _MISSING in elements:
            return "[]"  # the stored tree lost a node: the check will name this line
        if self._high:
            elements.append(self._high)
        return f"[{', '.join(elements)}]"

    def _edge(self, level: int, sibling: int, start: int) -> Any:
        """A sibling cut by the tree's right edge: the fold of the complete subtrees it holds."""
        if (level, sibling) not in self._edges:
            run = merkle.range_nodes(start, self.size)
            found = self.recorder.tree_nodes(run)
            folded = merkle.fold([found[n] for n in run]) if all(n in found for n in run) else None
            self._edges[(level, sibling)] = _MISSING if folded is None else f'"{folded.hex()}"'
        return self._edges[(level, sibling)]


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
