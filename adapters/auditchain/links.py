"""The chain's arithmetic: key derivation, genesis and one link. No I/O."""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from uuid import UUID

MAC_SIZE = 32
# The genesis link sits at position 0; event positions start at 1.
GENESIS_POSITION = 0
_CONTEXT = b"keyledger audit chain v1"


class AuditChainError(Exception):
    """The chain cannot be extended safely: the store was altered or the key is wrong."""


@dataclass(frozen=True)
class Link:
    position: int
    mac: bytes


@dataclass(frozen=True)
class ChainKey:
    """The HMAC key, derived from KEYLEDGER_AUDIT_KEY so the raw setting is never used twice."""

    _key: bytes

    @classmethod
    def from_setting(cls, audit_key: str) -> ChainKey:
        return cls(hmac.new(audit_key.encode("utf-8"), _CONTEXT, hashlib.sha256).digest())

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return "ChainKey(***)"

    def genesis(self) -> bytes:
        """The value the first link chains from; stored at position 0, it also identifies the key."""
        return hmac.new(self._key, b"genesis", hashlib.sha256).digest()

    def link(
        self,
        previous_mac: bytes,
        position: int,
        originator_id: UUID | str,
        originator_version: int,
        topic: str,
        state: bytes,
    ) -> bytes:
        """The MAC binding one stored event to its position and to everything stored before it."""
        oid = originator_id.bytes if isinstance(originator_id, UUID) else originator_id.encode("utf-8")
        topic_bytes = topic.encode("utf-8")
        mac = hmac.new(self._key, previous_mac, hashlib.sha256)
        # Every variable-length field is length-prefixed so no two events encode alike.
        mac.update(struct.pack(">QQQ", position, len(oid), originator_version))
        mac.update(oid)
        mac.update(struct.pack(">Q", len(topic_bytes)))
        mac.update(topic_bytes)
        mac.update(struct.pack(">Q", len(state)))
        mac.update(state)
        return mac.digest()

    def matches(self, expected: bytes, stored: bytes) -> bool:
        return hmac.compare_digest(expected, stored)
