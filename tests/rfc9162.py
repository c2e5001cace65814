"""An independent RFC 9162 (Certificate Transparency 2.0) Merkle tree, written from the RFC for the tests.

Nothing here comes from `adapters.auditchain`: the tree hash, audit paths and consistency
proofs follow the recursive definitions of RFC 9162 section 2.1.1, 2.1.3.1 and 2.1.4.1 over a
plain list of leaves, the checks follow the algorithms of sections 2.1.3.2 and 2.1.4.2, and
the leaf bytes follow the README's "Leaf bytes" table.
"""

from __future__ import annotations

import hashlib
import uuid


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_bytes_from_readme(position: int, originator_id: uuid.UUID, version: int, topic: str, state: bytes) -> bytes:
    topic_utf8 = topic.encode("utf-8")
    return (
        b"KL1"
        + position.to_bytes(8, "big")
        + originator_id.bytes
        + version.to_bytes(8, "big")
        + len(topic_utf8).to_bytes(2, "big")
        + topic_utf8
        + sha256(state)
    )


def hash_leaf(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def hash_children(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]) of section 2.1.1, over leaf *hashes* already computed (entries are leaf hashes)."""
    n = len(entries)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return entries[0]
    k = largest_power_of_two_below(n)
    return hash_children(mth(entries[:k]), mth(entries[k:]))


def path(m: int, entries: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of section 2.1.3.1."""
    n = len(entries)
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def proof(m: int, entries: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of section 2.1.4.1."""
    return _subproof(m, entries, True)


def _subproof(m: int, entries: list[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [mth(entries)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof(m, entries[:k], b), mth(entries[k:])]
    return [*_subproof(m - k, entries[k:], False), mth(entries[:k])]


def check_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, inclusion_path: list[bytes], root: bytes
) -> bool:
    """Section 2.1.3.2, step by step."""
    if leaf_index >= tree_size:
        return False
    fn = leaf_index
    sn = tree_size - 1
    r = leaf_hash
    for p in inclusion_path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = hash_children(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            r = hash_children(r, p)
        fn //= 2
        sn //= 2
    return sn == 0 and r == root


def check_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes, consistency: list[bytes]) -> bool:
    """Section 2.1.4.2, step by step."""
    if first == second:
        return consistency == [] and first_hash == second_hash
    if first > second or first == 0 or not consistency:
        return False
    if first & (first - 1) == 0:  # an exact power of two
        consistency = [first_hash, *consistency]
    fn = first - 1
    sn = second - 1
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    fr = consistency[0]
    sr = consistency[0]
    for c in consistency[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            sr = hash_children(sr, c)
        fn //= 2
        sn //= 2
    return sn == 0 and fr == first_hash and sr == second_hash
