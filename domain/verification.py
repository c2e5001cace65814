"""Answering "may this presented secret do this?" as a pure function.

The same rule serves the CLI (from an aggregate) and the API's in-memory
cache (from a read-model row): both reduce a key to `KeyCredentials`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from domain.credentials import digests_match
from domain.keycredits import Credits
from domain.scopes import has_scope


class VerifyCode(StrEnum):
    VALID = "VALID"
    NOT_FOUND = "NOT_FOUND"
    REVOKED = "REVOKED"
    SUSPENDED = "SUSPENDED"
    EXPIRED = "EXPIRED"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    RATE_LIMITED = "RATE_LIMITED"
    USAGE_EXCEEDED = "USAGE_EXCEEDED"


@dataclass(frozen=True)
class KeyCredentials:
    """What verification needs to know about a key, and nothing more."""

    key_id: UUID
    workspace_id: UUID
    secret_digest: str
    previous_digest: str | None
    previous_valid_until: datetime | None
    expires_at: datetime | None
    revoked: bool
    effective_scopes: frozenset[str]
    suspended: bool = False
    credits: Credits | None = None


def check_credentials(
    credentials: KeyCredentials | None, presented_digest: str, needed_scope: str | None, now: datetime
) -> VerifyCode:
    """The verdict for a presented secret's digest; never RATE_LIMITED or USAGE_EXCEEDED (counted apart).

    A secret that matches neither the current nor the previous digest is
    NOT_FOUND, so a wrong secret learns nothing about the key's state.
    """
    if credentials is None:
        return VerifyCode.NOT_FOUND
    is_current = digests_match(presented_digest, credentials.secret_digest)
    is_previous = not is_current and digests_match(presented_digest, credentials.previous_digest)
    if not (is_current or is_previous):
        return VerifyCode.NOT_FOUND
    if credentials.revoked:
        return VerifyCode.REVOKED
    if credentials.suspended:
        return VerifyCode.SUSPENDED
    if credentials.expires_at is not None and credentials.expires_at <= now:
        return VerifyCode.EXPIRED
    if is_previous and (credentials.previous_valid_until is None or credentials.previous_valid_until <= now):
        return VerifyCode.EXPIRED
    if needed_scope is not None and not has_scope(credentials.effective_scopes, needed_scope):
        return VerifyCode.INSUFFICIENT_SCOPE
    return VerifyCode.VALID
