"""Keys imported from another system (SPEC 8.1): their secret, or its SHA-256, and the claim on that digest.

An imported secret is not in keyledger's format, so it names no key id: the key is found through
its digest. A `SecretClaim` aggregate, whose id is derived from the digest, holds the digest's key:
creating it in the same save as the key makes a second import of the same digest conflict (409),
so a digest can never name two keys, and a verifier finds an imported key by reading that claim.
The claim holds the key id only; neither the digest nor the secret is in its events.
"""

from __future__ import annotations

import re
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain import credentials as secrets
from domain.effects import credentials
from domain.errors import InvalidSecret

MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 256
_PRINTABLE = re.compile(f"[\\x20-\\x7e]{{{MIN_SECRET_LENGTH},{MAX_SECRET_LENGTH}}}")
_SHA256 = re.compile("[0-9a-fA-F]{64}")
# Any constant works; it must never change (claims of stored imports are found through it).
_CLAIMS = UUID("6b6c5f63-6c61-696d-8000-000000000001")


def importable(secret: str) -> bool:
    """Whether a presented secret could be an imported one (no lookup is made for others)."""
    return _PRINTABLE.fullmatch(secret) is not None and not secret.startswith(secrets.PREFIX)


def import_digest(secret: object = None, sha256: object = None) -> str:
    """The digest an import keeps: of `secret`, or `sha256` itself (lower case); exactly one of them."""
    if (secret is None) == (sha256 is None):
        raise InvalidSecret("give exactly one of secret and sha256")
    if secret is not None:
        if not isinstance(secret, str) or _PRINTABLE.fullmatch(secret) is None:
            raise InvalidSecret(f"secret must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} printable ASCII characters")
        if secret.startswith(secrets.PREFIX):
            raise InvalidSecret(f"a secret starting with {secrets.PREFIX!r} is keyledger's own: issue a key instead")
        return secrets.digest(secret)
    if not isinstance(sha256, str) or _SHA256.fullmatch(sha256) is None:
        raise InvalidSecret("sha256 must be 64 hexadecimal digits")
    return sha256.lower()


def claim_id(digest: str) -> UUID:
    return uuid5(_CLAIMS, digest)


class SecretClaim(Aggregate):
    # Its id is published when created, so every verifier's remembered absence of the digest ends.
    @credentials(changes=True)
    class SecretClaimed(Aggregate.Created):
        key_id: UUID
        workspace_id: UUID
        actor: str

    def __init__(self, key_id: UUID, workspace_id: UUID, actor: str) -> None:
        self.key_id = key_id
        self.workspace_id = workspace_id
        self.claimed_by = actor

    @classmethod
    def claim(cls, digest: str, key_id: UUID, workspace_id: UUID, actor: str) -> SecretClaim:
        return cls._create(
            cls.SecretClaimed, id=claim_id(digest), key_id=key_id, workspace_id=workspace_id, actor=actor
        )
