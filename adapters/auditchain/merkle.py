"""RFC 9162 Merkle tree arithmetic over stored events. No I/O.

Leaves are the stored events in position order; a leaf's index is its ordinal.
The store keeps the hash of every *complete* subtree: node (level, index) covers
leaves [index * 2**level, (index + 1) * 2**level). Any range the RFC's recursion
asks for is a run of such nodes, so a proof is O(log n) node reads.

Leaf bytes (README, "Verifiable audit log"), all integers big-endian:
    b"KL1" || u64 position || 16-byte originator id (UUID) || u64 originator version
    || u16 length of topic || topic (UTF-8) || SHA-256(stored state bytes)
The state enters through its SHA-256, so an export can prove a line's event is in
the tree without carrying the stored state (which holds secret digests).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID

HASH_SIZE = 32
LEAF_PREFIX = b"KL1"
Node = tuple[int, int]  # (level, index) of a complete subtree


class ProofError(ValueError):
    """A proof that does not check out (or cannot be computed for the sizes asked)."""


def state_digest(state: bytes) -> bytes:
    return hashlib.sha256(state).digest()


_LEAF_HEAD = struct.Struct(">3sQ16sQH")  # prefix, position, originator id, version, topic length


@lru_cache(maxsize=1024)  # a store has a few dozen topics
def _utf8(topic: str) -> bytes:
    return topic.encode("utf-8")


def leaf_bytes(position: int, originator_id: UUID | str, version: int, topic: str, state_sha256: bytes) -> bytes:
    oid = originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
    topic_bytes = _utf8(topic)
    return _LEAF_HEAD.pack(LEAF_PREFIX, position, oid.bytes, version, len(topic_bytes)) + topic_bytes + state_sha256


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def event_leaf_hash(position: int, originator_id: UUID | str, version: int, topic: str, state: bytes) -> bytes:
    return leaf_hash(leaf_bytes(position, originator_id, version, topic, state_digest(state)))


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees whose right fold is MTH(D[start:end]), for ranges the RFC's recursion visits."""
    nodes: list[Node] = []
    while end - start > 0:
        size = end - start
        if size & (size - 1) == 0:
            nodes.append((size.bit_length() - 1, start // size))
            break
        k = _split(size)
        nodes.append((k.bit_length() - 1, start // k))
        start += k
    return nodes


def fold(hashes: list[bytes]) -> bytes:
    """MTH of a run of complete subtrees of decreasing size: a right fold."""
    if len(hashes) == 1:
        return hashes[0]
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_plan(index: int, size: int) -> list[list[Node]]:
    """PATH(index, D[0:size]) (RFC 9162 2.1.3.1), each element as the nodes to fold, from the leaf up.

    Walks the aligned levels: at each, the ancestor's sibling is a stored node when it lies within
    the tree, a run of nodes on the right edge when it is cut by `size`, and absent (the RFC
    promotes the node) when it starts past the end. Equal to the RFC's recursion (tests check it).
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    plan: list[list[Node]] = []
    level = 0
    while (1 << level) < size:
        sibling = (index >> level) ^ 1
        start = sibling << level
        if start < size:
            end = start + (1 << level)
            plan.append([(level, sibling)] if end <= size else range_nodes(start, size))
        level += 1
    return plan


def consistency_plan(old: int, new: int) -> list[list[Node]]:
    """PROOF(old, D[0:new]) (RFC 9162 2.1.4.1), each element as the nodes to fold."""
    if not 0 < old <= new:
        raise ProofError(f"no consistency proof from size {old} to size {new}")
    plan: list[list[Node]] = []
    start, end, m, whole = 0, new, old, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            plan.append(range_nodes(start + k, end))
            end = start + k
        else:
            plan.append(range_nodes(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        plan.append(range_nodes(start, end))
    plan.reverse()
    return plan


def resolve(plan: list[list[Node]], lookup: Callable[[Iterable[Node]], dict[Node, bytes]]) -> list[bytes]:
    """The proof's hashes, reading every node the plan needs in one lookup."""
    needed = {node for element in plan for node in element}
    found = lookup(needed)
    missing = needed - found.keys()
    if missing:
        raise ProofError(f"the stored tree lacks {len(missing)} node(s) the proof needs")
    return [fold([found[node] for node in element]) for element in plan]


def root_of(size: int, lookup: Callable[[Iterable[Node]], dict[Node, bytes]]) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    nodes = range_nodes(0, size)
    found = lookup(nodes)
    if len(found) != len(nodes):
        raise ProofError("the stored tree lacks nodes of its root")
    return fold([found[node] for node in nodes])


@dataclass
class Frontier:
    """The right edge of a tree being built: the complete subtrees of sizes given by the bits of `size`.

    Appending a leaf completes parents; `completed` lists every node made, for storing.
    """

    size: int
    hashes: list[bytes]  # largest subtree first

    @classmethod
    def empty(cls) -> Frontier:
        return cls(0, [])

    def nodes(self) -> list[Node]:
        return range_nodes(0, self.size)

    def append(self, leaf: bytes) -> list[tuple[Node, bytes]]:
        completed: list[tuple[Node, bytes]] = [((0, self.size), leaf)]
        current, level, index = leaf, 0, self.size
        while index & 1:  # a left sibling of the same size waits on the frontier
            current = node_hash(self.hashes.pop(), current)
            level, index = level + 1, index >> 1
            completed.append(((level, index), current))
        self.hashes.append(current)
        self.size += 1
        return completed

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT

    def pack(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def unpack(cls, size: int, packed: bytes) -> Frontier:
        hashes = [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]
        if len(hashes) != size.bit_count():
            raise ProofError("the stored tree head is damaged")
        return cls(size, hashes)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if old == new:
        return not proof and old_root == new_root
    if old <= 0 or old > new or not proof:
        return False
    if old & (old - 1) == 0:
        proof = [old_root, *proof]
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
