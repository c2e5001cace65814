"""The Merkle tree arithmetic against an independent RFC 9162 implementation (tests/rfc9162.py).

Random trees of 1 to 2,000 leaves: the tree kept as stored subtree hashes gives the RFC's
root, audit paths and consistency proofs exactly, the RFC's checks accept them, and both
checkers refuse any altered proof.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable

import pytest

from adapters.auditchain import merkle
from adapters.auditchain.checkpoints import Checkpoint
from adapters.auditchain.exportfile import ProofWriter
from adapters.auditchain.exportrows import StoredRow
from adapters.auditchain.tree import Leaf
from tests import rfc9162

SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 1023, 1024, 1025, 2000]
SIZES += random.Random(9162).sample(range(1, 2001), 20)


def stored_tree(leaves: list[bytes]) -> dict[merkle.Node, bytes]:
    """The nodes a store keeps, made as the write path makes them: one leaf at a time."""
    frontier = merkle.Frontier.empty()
    nodes: dict[merkle.Node, bytes] = {}
    for leaf in leaves:
        nodes.update(frontier.append(leaf))
    return nodes


def lookup(nodes: dict[merkle.Node, bytes]):  # type: ignore[no-untyped-def]
    return lambda wanted: {node: nodes[node] for node in wanted if node in nodes}


def random_leaves(n: int, rng: random.Random) -> list[bytes]:
    return [rfc9162.hash_leaf(rng.randbytes(rng.randint(0, 64))) for _ in range(n)]


def altered(proof: list[bytes], rng: random.Random) -> list[bytes]:
    """The proof with one hash flipped in one bit, or one hash dropped or added."""
    changed = list(proof)
    choice = rng.randrange(3) if proof else 2
    if choice == 0:
        i = rng.randrange(len(changed))
        changed[i] = bytes([changed[i][0] ^ 1]) + changed[i][1:]
    elif choice == 1:
        changed.pop(rng.randrange(len(changed)))
    else:
        changed.insert(rng.randrange(len(changed) + 1), rng.randbytes(32))
    return changed


@pytest.mark.parametrize("size", SIZES)
def test_root_and_inclusion_proofs_are_the_rfcs(size: int):
    rng = random.Random(size)
    leaves = random_leaves(size, rng)
    nodes = stored_tree(leaves)
    root = rfc9162.mth(leaves)
    tree_sizes = {size, rng.randint(1, size)}

    assert merkle.root_of(size, lookup(nodes)) == root
    for n in tree_sizes:
        sub_root = rfc9162.mth(leaves[:n])
        for m in {0, n - 1, rng.randrange(n), rng.randrange(n)}:
            hashes = merkle.resolve(merkle.inclusion_plan(m, n), lookup(nodes))

            assert hashes == rfc9162.path(m, leaves[:n])
            assert rfc9162.check_inclusion(m, n, leaves[m], hashes, sub_root)
            assert merkle.verify_inclusion(m, n, leaves[m], hashes, sub_root)
            bad = altered(hashes, rng)
            assert not rfc9162.check_inclusion(m, n, leaves[m], bad, sub_root)
            assert not merkle.verify_inclusion(m, n, leaves[m], bad, sub_root)
            if n > 1:
                other = (m + 1) % n
                assert not merkle.verify_inclusion(m, n, leaves[other], hashes, sub_root)
                assert not merkle.verify_inclusion(other, n, leaves[m], hashes, sub_root)


@pytest.mark.parametrize("size", SIZES)
def test_consistency_proofs_are_the_rfcs(size: int):
    rng = random.Random(-size)
    leaves = random_leaves(size, rng)
    nodes = stored_tree(leaves)
    pairs = {(size, size), (1, size), (rng.randint(1, size), size)}
    second = rng.randint(1, size)
    pairs.add((rng.randint(1, second), second))

    for old, new in pairs:
        hashes = merkle.resolve(merkle.consistency_plan(old, new), lookup(nodes))
        old_root, new_root = rfc9162.mth(leaves[:old]), rfc9162.mth(leaves[:new])

        assert hashes == rfc9162.proof(old, leaves[:new])
        assert rfc9162.check_consistency(old, new, old_root, new_root, hashes)
        assert merkle.verify_consistency(old, new, old_root, new_root, hashes)
        if old < new:
            bad = altered(hashes, rng)
            assert not rfc9162.check_consistency(old, new, old_root, new_root, bad)
            assert not merkle.verify_consistency(old, new, old_root, new_root, bad)
            forged_root = rfc9162.hash_children(old_root, old_root)
            assert not merkle.verify_consistency(old, new, forged_root, new_root, hashes)


def test_a_proof_needs_log_n_stored_nodes():
    size = 1_000_000
    worst = max(
        len({node for element in merkle.inclusion_plan(m, size) for node in element})
        for m in (0, 1, size // 2, size - 2, size - 1, 777_777)
    )

    assert worst <= 2 * size.bit_length()
    assert len({n for e in merkle.consistency_plan(333_333, size) for n in e}) <= 2 * size.bit_length()


def test_leaf_bytes_are_the_readmes():
    oid = uuid.uuid4()
    state = b'{"scopes":["read:nodes"]}'

    ours = merkle.leaf_bytes(42, oid, 3, "domain.keys:ApiKey.Issued", merkle.state_digest(state))

    assert ours == rfc9162.leaf_bytes_from_readme(42, oid, 3, "domain.keys:ApiKey.Issued", state)
    assert merkle.event_leaf_hash(42, oid, 3, "domain.keys:ApiKey.Issued", state) == rfc9162.hash_leaf(ours)
    assert merkle.event_leaf_hash(42, str(oid), 3, "domain.keys:ApiKey.Issued", state) == rfc9162.hash_leaf(ours)


def test_an_empty_tree_has_the_rfcs_root():
    assert merkle.Frontier.empty().root() == rfc9162.mth([]) == merkle.root_of(0, lambda wanted: {})


class StoredTree:
    """The reads `ProofWriter` makes of a store holding these leaves (positions 1, 2, ...)."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaf_hashes, self.nodes = leaves, stored_tree(leaves)

    def leaves(self, after_index: int, limit: int) -> list[Leaf]:
        chosen = range(after_index + 1, min(after_index + 1 + limit, len(self.leaf_hashes)))
        return [Leaf(i, i + 1, self.leaf_hashes[i]) for i in chosen]

    def tree_nodes(self, nodes: Iterable[merkle.Node]) -> dict[merkle.Node, bytes]:
        return lookup(self.nodes)(nodes)  # type: ignore[no-any-return]

    def tree_level(self, level: int, first: int, last: int) -> dict[int, bytes]:
        return {i: self.nodes[(level, i)] for i in range(first, last + 1) if (level, i) in self.nodes}


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 129, 257])
def test_export_proofs_walking_the_leaves_are_the_rfcs(size: int):
    rng = random.Random(size)
    leaves = random_leaves(size, rng)
    for n in {size, rng.randint(1, size)}:  # the checkpoint's tree, and the store beyond it
        every = list(range(n))
        some = sorted(rng.sample(every, rng.randint(1, n)))  # a filtered export: leaves skipped
        for indexes in (every, some):
            writer = ProofWriter(StoredTree(leaves), Checkpoint("test", n, rfc9162.mth(leaves[:n]), "", b""))
            batch = [(StoredRow(i + 1, str(uuid.uuid4()), 1, "topic", b""), {"position": i + 1}) for i in indexes]
            for start in range(0, len(batch), 7):  # several batches
                for line, index in zip(writer.lines(batch[start : start + 7]), indexes[start : start + 7], strict=True):
                    proof = [bytes.fromhex(h) for h in json.loads(line)["proof"]]

                    assert proof == rfc9162.path(index, leaves[:n])
