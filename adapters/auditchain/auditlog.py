"""The verifiable audit log over a recorder's Merkle tree: checkpoints and proofs (SPEC 8.4)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from adapters.auditchain import merkle
from adapters.auditchain.checkpoints import Checkpoint, Signer
from adapters.auditchain.tree import Head, Leaf, Reading
from domain.errors import InvalidInput, NotFound
from domain.timefmt import clamp_utc

log = logging.getLogger(__name__)

# Checkpoints are made this often while events arrive (SPEC: at least every minute).
CHECKPOINT_EVERY = 30.0


class NoCheckpoint(NotFound):
    title = "No checkpoint"


class NotInTree(NotFound):
    title = "Not in the audit tree"


class NoSuchTree(NotFound):
    """A size no checkpoint has reached yet, or sizes no proof joins: there is nothing to prove (404)."""

    title = "No such tree"


@runtime_checkable
class TreeReader(Protocol):
    """What the audited recorders of both backends offer."""

    def reading(self) -> AbstractContextManager[Reading]: ...

    def tree_head(self) -> Head | None: ...
    def tree_nodes(self, nodes: Iterable[merkle.Node]) -> dict[merkle.Node, bytes]: ...
    def tree_level(self, level: int, first: int, last: int) -> dict[int, bytes]: ...
    def leaf_index(self, position: int) -> int | None: ...
    def leaves(self, after_index: int, limit: int) -> list[Leaf]: ...
    def insert_checkpoint(self, tree_size: int, document: str) -> None: ...
    def checkpoints(self, latest_only: bool = False) -> list[str]: ...


@dataclass(frozen=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    hashes: list[bytes]


class AuditLog:
    def __init__(self, recorder: TreeReader, signer: Signer | None, clock: Callable[[], datetime]) -> None:
        self.recorder = recorder
        self.signer = signer  # None: a reader (checks proofs, signs nothing)
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- checkpoints ------------------------------------------------------

    def latest(self) -> Checkpoint | None:
        found = self.recorder.checkpoints(latest_only=True)
        return Checkpoint.from_json(json.loads(found[0])) if found else None

    def all_checkpoints(self) -> list[Checkpoint]:
        return [Checkpoint.from_json(json.loads(document)) for document in self.recorder.checkpoints()]

    def checkpoint(self) -> Checkpoint:
        """Sign the tree as it stands now, store the checkpoint and answer it."""
        if self.signer is None:
            raise InvalidInput("this process has no audit signing key")
        head = self.recorder.tree_head()
        size, root = (head.frontier.size, head.frontier.root()) if head else (0, merkle.EMPTY_ROOT)
        # Whole seconds: the signed time line is exactly the JSON timestamp.
        timestamp = clamp_utc(self.clock()).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        made = self.signer.sign(size, root, timestamp)
        self.recorder.insert_checkpoint(size, json.dumps(made.to_json()))
        return made

    def checkpoint_if_grown(self) -> Checkpoint | None:
        """A new checkpoint when events arrived since the latest one (made by any process)."""
        head = self.recorder.tree_head()
        latest = self.latest()
        if head is None or (latest is not None and latest.tree_size >= head.frontier.size):
            return None
        return self.checkpoint()

    def start(self, every: float = CHECKPOINT_EVERY) -> None:
        def run() -> None:
            while not self._stop.wait(every):
                try:
                    self.checkpoint_if_grown()
                except Exception as error:  # the store may be down: try again next time
                    log.warning("audit checkpoint failed (retrying in %ss): %s", every, error)

        self._thread = threading.Thread(target=run, name="audit-checkpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:  # what arrived since the last tick is signed before the process goes
            self.checkpoint_if_grown()
        except Exception as error:
            log.warning("audit checkpoint at shutdown failed: %s", error)

    # --- proofs -------------------------------------------------------------

    @staticmethod
    def _signed_size(reading: Reading, tree_size: int | None) -> int:
        latest = reading.latest_checkpoint()
        if latest is None:
            raise NoCheckpoint("no checkpoint has been made yet (POST /v1/audit/checkpoint)")
        signed = Checkpoint.from_json(json.loads(latest)).tree_size
        if tree_size is None:
            return signed
        if tree_size > signed:
            raise NoSuchTree(f"tree_size {tree_size} exceeds the latest checkpoint's size {signed}")
        return tree_size

    def inclusion(self, position: int, tree_size: int | None = None) -> InclusionProof:
        """The proof for the event at `position`: three reads in one transaction."""
        with self.recorder.reading() as reading:
            size = self._signed_size(reading, tree_size)
            index = reading.leaf_index(position)
            if index is None or index >= size:
                raise NotInTree(f"no event at position {position} in the tree of size {size}")
            plan = merkle.inclusion_plan(index, size)
            found = reading.nodes({(0, index), *(node for element in plan for node in element)})
        leaf = found.get((0, index))
        if leaf is None:
            raise NotInTree(f"the leaf of position {position} is missing from the stored tree")
        return InclusionProof(index, size, leaf, merkle.resolve(plan, lambda wanted: found))

    def consistency(self, old: int, new: int) -> list[bytes]:
        with self.recorder.reading() as reading:
            size = self._signed_size(reading, new)
            if not 1 <= old <= size:
                raise NoSuchTree(f"no consistency proof from size {old} to size {size}: from must not exceed to")
            return merkle.resolve(merkle.consistency_plan(old, size), reading.nodes)

    def root(self, size: int) -> bytes:
        return merkle.root_of(size, self.recorder.tree_nodes)
